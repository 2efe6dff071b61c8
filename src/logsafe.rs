//! Making client-supplied bytes safe to log: escaped and truncated, so no CR/LF or terminal
//! escape can forge or garble a log line.

use std::fmt::Write as _;

use crate::limits::MAX_LOGGED;

/// Escapes `bytes` for a log line: printable ASCII as is, everything else as `\xNN`; longer
/// input is cut at `MAX_LOGGED` bytes and marked with `...`.
pub fn escape(bytes: &[u8]) -> String {
    escape_with(bytes, |_| false)
}

/// Escapes `bytes` as one `key=value` token: like [`escape`], with space, `=` and `"` escaped
/// too, so the value never splits or fakes a field.
pub fn token(bytes: &[u8]) -> String {
    escape_with(bytes, |b| matches!(b, b' ' | b'=' | b'"'))
}

fn escape_with(bytes: &[u8], also: impl Fn(u8) -> bool) -> String {
    let mut s = String::with_capacity(bytes.len().min(MAX_LOGGED) + 3);
    for &b in bytes.iter().take(MAX_LOGGED) {
        if (0x20..0x7f).contains(&b) && b != b'\\' && !also(b) {
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
    fn tokens_cannot_split_a_key_value_line() {
        assert_eq!(token(b"a b=c\"d"), "a\\x20b\\x3dc\\x22d");
        assert_eq!(token(b"alice@example.com"), "alice@example.com");
    }

    #[test]
    fn long_input_is_truncated() {
        let s = escape(&[b'a'; 1000]);
        assert_eq!(s.len(), MAX_LOGGED + 3);
        assert!(s.ends_with("..."));
    }
}
