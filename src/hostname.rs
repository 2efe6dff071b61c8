//! This host's name, for APOP timestamps and for the owner line of dotlocks and delivery notes.

/// This host's name; `localhost` if it cannot be read or would not fit in an APOP timestamp.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'>' && b != b'<')
        })
        .unwrap_or_else(|| "localhost".into())
}
