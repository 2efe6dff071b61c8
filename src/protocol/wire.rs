//! Bytes on the wire: the bounded command-line reader, and status and multi-line replies.

use std::io::{self, BufRead, Write};
use std::time::Instant;

use memchr::memchr;

/// What one call to [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line is in the buffer, without its line end.
    Complete,
    /// The line was longer than allowed; it was read to its end and discarded.
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line ending in LF (CRLF or a bare LF) into `buf`, holding at most `max` octets
/// including the line end. An overlong line is consumed to its LF without being stored, so it
/// gets exactly one reply and its tail never runs as a command. A line still incomplete at
/// `deadline` is a `TimedOut` error: each read may wait only the transport's own timeout, so a
/// client trickling a byte at a time cannot hold the session open forever (RFC 1939 §3: a
/// command, not any byte, resets the autologout timer).
pub fn read_line<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Option<Instant>,
) -> io::Result<Line> {
    buf.clear();
    let mut seen = 0usize;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if seen + take <= max {
            buf.extend_from_slice(&chunk[..take]);
        }
        seen = seen.saturating_add(take);
        r.consume(take);
        if done {
            if seen > max {
                buf.clear();
                return Ok(Line::TooLong);
            }
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Complete);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "command line not completed in time",
            ));
        }
    }
}

/// An RFC 2449 §8 / RFC 3206 response code, shown in brackets after `-ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// The failure is due to the user's credentials (RFC 3206 §5).
    Auth,
    /// Authenticated, but the maildrop is in use (RFC 2449 §8.1.2).
    InUse,
    /// Authenticated, but the user logged in too recently (RFC 2449 §8.1.1).
    LoginDelay,
    /// A temporary system problem; retrying later may help (RFC 3206 §4).
    SysTemp,
    /// A permanent system problem (RFC 3206 §4).
    SysPerm,
}

impl RespCode {
    /// Every code, for parsers of configuration that names one.
    pub const ALL: [RespCode; 5] = [
        RespCode::Auth,
        RespCode::InUse,
        RespCode::LoginDelay,
        RespCode::SysTemp,
        RespCode::SysPerm,
    ];

    /// The code as written between the brackets (`SYS/TEMP`).
    pub fn as_str(self) -> &'static str {
        match self {
            RespCode::Auth => "AUTH",
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
        }
    }
}

/// A reply decided by a handler, not yet written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK text`.
    Ok(String),
    /// `-ERR [code] text`.
    Err(Option<RespCode>, String),
    /// `+OK first`, then each line of `lines` (already CRLF-terminated, no line starting
    /// with `.`), then `.`.
    Multi {
        /// The text after `+OK`.
        first: String,
        /// The body lines, each ending in CRLF.
        lines: String,
    },
    /// `+ text`: a SASL challenge, already base64 (RFC 5034 §4; `+ ` alone when empty).
    Challenge(String),
}

impl Reply {
    /// `+OK text`.
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply::Ok(text.into())
    }

    /// `-ERR text` without a response code.
    pub fn err(text: impl Into<String>) -> Reply {
        Reply::Err(None, text.into())
    }

    /// `-ERR [code] text`.
    pub fn err_code(code: RespCode, text: impl Into<String>) -> Reply {
        Reply::Err(Some(code), text.into())
    }

    /// Whether this is a positive reply.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Reply::Err(..))
    }
}

/// Writes the status line `+OK text` (or `+OK` alone when `text` is empty).
pub fn write_ok<W: Write + ?Sized>(w: &mut W, text: &str) -> io::Result<()> {
    write_status(w, "+OK", None, text)
}

fn write_status<W: Write + ?Sized>(
    w: &mut W,
    status: &str,
    code: Option<RespCode>,
    text: &str,
) -> io::Result<()> {
    let mut line = String::with_capacity(status.len() + text.len() + 16);
    line.push_str(status);
    if let Some(c) = code {
        line.push_str(" [");
        line.push_str(c.as_str());
        line.push(']');
    }
    if !text.is_empty() {
        line.push(' ');
        line.push_str(text);
    }
    // RFC 2449 §4: a response's first line is at most 512 octets with its CRLF. Our texts are
    // short and never contain client bytes, so this only guards against our own mistakes.
    let mut end = line.len().min(crate::limits::MAX_RESPONSE_LINE - 2);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line.push_str("\r\n");
    w.write_all(line.as_bytes())
}

/// Writes a whole reply (not flushed).
pub fn write_reply<W: Write + ?Sized>(w: &mut W, reply: &Reply) -> io::Result<()> {
    match reply {
        Reply::Ok(text) => write_status(w, "+OK", None, text),
        Reply::Err(code, text) => write_status(w, "-ERR", *code, text),
        Reply::Multi { first, lines } => {
            write_status(w, "+OK", None, first)?;
            w.write_all(lines.as_bytes())?;
            w.write_all(b".\r\n")
        }
        Reply::Challenge(text) => {
            // Not through write_status: the space stays even when the challenge is empty.
            w.write_all(b"+ ")?;
            w.write_all(text.as_bytes())?;
            w.write_all(b"\r\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Reads every line of `input` fed through a reader that returns at most `chunk` bytes
    /// per fill, as a slow client would send them.
    fn lines_in_chunks(input: &[u8], chunk: usize, max: usize) -> Vec<Result<Vec<u8>, Line>> {
        struct Trickle<'a> {
            data: &'a [u8],
            chunk: usize,
        }
        impl io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.chunk.min(buf.len()).min(self.data.len());
                buf[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
        }
        let mut r = io::BufReader::with_capacity(chunk, Trickle { data: input, chunk });
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            match read_line(&mut r, &mut buf, max, None).unwrap() {
                Line::Complete => out.push(Ok(buf.clone())),
                Line::Eof => return out,
                other => out.push(Err(other)),
            }
        }
    }

    #[test]
    fn lines_are_the_same_whatever_the_chunking() {
        let mut input = b"USER a\r\nPASS b c\nSTAT\r\n\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 300]);
        input.extend_from_slice(b"\r\nNOOP\r\npartial");
        let want: Vec<Result<Vec<u8>, Line>> = vec![
            Ok(b"USER a".to_vec()),
            Ok(b"PASS b c".to_vec()),
            Ok(b"STAT".to_vec()),
            Ok(b"".to_vec()),
            Err(Line::TooLong),
            Ok(b"NOOP".to_vec()),
        ];
        for chunk in [1, 2, 3, 4, 7, 16, 64, 512, 4096] {
            assert_eq!(lines_in_chunks(&input, chunk, 255), want, "chunk {chunk}");
        }
    }

    #[test]
    fn line_limit_counts_the_line_end() {
        let mut ok = vec![b'a'; 253];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(lines_in_chunks(&ok, 8, 255), vec![Ok(vec![b'a'; 253])]);
        let mut long = vec![b'a'; 254];
        long.extend_from_slice(b"\r\n");
        assert_eq!(lines_in_chunks(&long, 8, 255), vec![Err(Line::TooLong)]);
    }

    #[test]
    fn replies_render_exactly() {
        let mut out = Vec::new();
        write_reply(&mut out, &Reply::ok("2 320")).unwrap();
        write_reply(&mut out, &Reply::ok("")).unwrap();
        write_reply(&mut out, &Reply::err("no such message")).unwrap();
        write_reply(&mut out, &Reply::err_code(RespCode::InUse, "busy")).unwrap();
        write_reply(&mut out, &Reply::Challenge(String::new())).unwrap();
        write_reply(&mut out, &Reply::Challenge("VXNlcm5hbWU6".into())).unwrap();
        write_reply(
            &mut out,
            &Reply::Multi {
                first: "2 messages".into(),
                lines: "1 120\r\n2 200\r\n".into(),
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+OK 2 320\r\n+OK\r\n-ERR no such message\r\n-ERR [IN-USE] busy\r\n+ \r\n+ VXNlcm5hbWU6\r\n\
             +OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"
        );
    }

    #[test]
    fn status_lines_never_exceed_512_octets() {
        let mut out = Vec::new();
        write_reply(&mut out, &Reply::ok("é".repeat(600))).unwrap();
        assert!(out.len() <= 512);
        assert!(out.ends_with(b"\r\n"));
        assert!(std::str::from_utf8(&out).is_ok());
    }

    #[test]
    fn reader_errors_propagate() {
        struct Broken;
        impl io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let mut r = io::BufReader::new(Broken);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf, 255, None).is_err());
        let mut c = Cursor::new(b"NOOP".to_vec());
        assert_eq!(read_line(&mut c, &mut buf, 255, None).unwrap(), Line::Eof);
    }

    #[test]
    fn a_line_not_completed_by_its_deadline_times_out() {
        let mut buf = Vec::new();
        let past = Some(Instant::now());
        // A whole line already there is fine, however late.
        let mut c = Cursor::new(b"NOOP\r\n".to_vec());
        assert_eq!(
            read_line(&mut c, &mut buf, 255, past).unwrap(),
            Line::Complete
        );
        // A line that arrives in pieces is cut off once the deadline has passed.
        let mut r = io::BufReader::with_capacity(1, Cursor::new(b"NOOP\r\n".to_vec()));
        let e = read_line(&mut r, &mut buf, 255, past).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let mut r = io::BufReader::with_capacity(1, Cursor::new(b"NOOP\r\n".to_vec()));
        let later = Some(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(
            read_line(&mut r, &mut buf, 255, later).unwrap(),
            Line::Complete
        );
    }
}
