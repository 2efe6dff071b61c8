//! Making client-supplied bytes safe to log: escaped and truncated, so no CR/LF or terminal
//! escape can forge or garble a log line.

use std::fmt::Write as _;

/// Longest client string shown in a log line, in input bytes.
const MAX_LOGGED: usize = 64;

/// Escapes `bytes` for a log line: printable ASCII as is, everything else as `\xNN`; longer
/// input is cut at `MAX_LOGGED` bytes and marked with `...`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().min(MAX_LOGGED) + 3);
    for &b in bytes.iter().take(MAX_LOGGED) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if bytes.len() > MAX_LOGGED {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_and_escapes_cannot_reach_the_log() {
        assert_eq!(escape(b"bob\r\nFAKE"), "bob\\x0d\\x0aFAKE");
        assert_eq!(escape(b"\x1b[31m"), "\\x1b[31m");
        assert_eq!(escape(b"a\\b"), "a\\x5cb");
        assert_eq!(escape("ö".as_bytes()), "\\xc3\\xb6");
    }

    #[test]
    fn long_input_is_truncated() {
        let s = escape(&[b'a'; 1000]);
        assert_eq!(s.len(), MAX_LOGGED + 3);
        assert!(s.ends_with("..."));
    }
}
