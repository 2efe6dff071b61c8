//! Bytes on the wire: the bounded command-line reader, status and multi-line replies, and the
//! message writer that turns stored bytes into CRLF lines with dot-stuffing.

use std::io::{self, BufRead, Write};
use std::time::Instant;

use memchr::memchr;

use crate::line_ends;

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
    /// A temporary system problem; retrying later may help (RFC 3206 §4).
    SysTemp,
    /// A permanent system problem (RFC 3206 §4).
    SysPerm,
}

impl RespCode {
    fn as_str(self) -> &'static str {
        match self {
            RespCode::Auth => "AUTH",
            RespCode::InUse => "IN-USE",
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

/// `n` and `noun`, plural unless `n` is 1: "1 message", "2 messages".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
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

/// RETR renders stored bytes this many at a time, and hands each rendered piece to its writer
/// in one `write_all`: one large write per file chunk, and a small message plus its status
/// line still gather in one session write buffer.
pub const RENDER_BLOCK: usize = crate::limits::RETR_CHUNK;

/// Lines up to this long are copied with one fixed-size copy (most mail lines are shorter).
const COPY_WINDOW: usize = 80;

/// How much of a message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The whole message (RETR).
    Whole,
    /// The headers, the blank line, and this many body lines (TOP).
    Top(u32),
}

/// Streams one message as a multi-line response body: LF becomes CRLF (a stored CRLF stays),
/// a line starting with `.` gets another `.`, and [`finish`](MessageWriter::finish) ends an
/// unterminated last line and writes the terminator. For TOP it stops after the requested
/// body lines.
///
/// A whole message (RETR) is rendered into a block of its own, [`RENDER_BLOCK`] stored octets
/// at a time, and each block goes to `out` in one `write_all`: line ends are found 64 octets
/// at a time ([`line_ends`](crate::line_ends)), and per line that costs two copies into the block, no call into
/// `out` (profiling showed the per-line
/// `write_all`s as the largest share of poplar's own CPU time in RETR). Whatever a `write`
/// call was given has reached `out` when it returns. TOP, rare and short, goes line by line
/// to `out`; give it a buffered writer.
pub struct MessageWriter<'w, W: Write + ?Sized> {
    out: &'w mut W,
    /// RETR: the block each piece is rendered into (zeroed once, when it grows, not for
    /// every piece).
    rendered: Vec<u8>,
    at_line_start: bool,
    prev_cr: bool,
    /// `Some(n)`: TOP, with `n` body lines still to send once the headers are done.
    remaining_body_lines: Option<u32>,
    in_headers: bool,
    line_blank: bool,
    done: bool,
}

impl<'w, W: Write + ?Sized> MessageWriter<'w, W> {
    /// A writer for one message onto `out`.
    pub fn new(out: &'w mut W, extent: Extent) -> Self {
        let remaining_body_lines = match extent {
            Extent::Whole => None,
            Extent::Top(n) => Some(n),
        };
        MessageWriter {
            out,
            rendered: Vec::new(),
            at_line_start: true,
            prev_cr: false,
            remaining_body_lines,
            in_headers: true,
            line_blank: true,
            done: false,
        }
    }

    /// Whether the writer wants no more bytes (TOP has sent all it should).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Sends the next stored bytes of the message. Bytes after TOP's last line are ignored.
    pub fn write(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        if self.remaining_body_lines.is_none() {
            for piece in chunk.chunks(RENDER_BLOCK) {
                let len = self.render_whole(piece);
                self.out.write_all(&self.rendered[..len])?;
            }
            return Ok(());
        }
        while !chunk.is_empty() && !self.done {
            if self.at_line_start {
                if chunk[0] == b'.' {
                    self.out.write_all(b".")?;
                }
                self.at_line_start = false;
                self.line_blank = true;
            }
            match memchr(b'\n', chunk) {
                None => {
                    self.out.write_all(chunk)?;
                    self.note_content(chunk);
                    self.prev_cr = chunk.last() == Some(&b'\r');
                    return Ok(());
                }
                Some(i) => {
                    let segment = &chunk[..i];
                    self.out.write_all(segment)?;
                    self.note_content(segment);
                    let cr_before = if i > 0 {
                        chunk[i - 1] == b'\r'
                    } else {
                        self.prev_cr
                    };
                    self.out
                        .write_all(if cr_before { b"\n" } else { b"\r\n" })?;
                    self.prev_cr = false;
                    self.at_line_start = true;
                    self.end_line();
                    chunk = &chunk[i + 1..];
                }
            }
        }
        Ok(())
    }

    /// Ends the message: a CRLF if the last line had none, then `.` CRLF. Not flushed.
    pub fn finish(self) -> io::Result<()> {
        if !self.at_line_start {
            // A stored CR at the very end is already out; only its LF is missing.
            self.out
                .write_all(if self.prev_cr { b"\n" } else { b"\r\n" })?;
        }
        self.out.write_all(b".\r\n")
    }

    /// RETR's fast path: renders `piece` into `rendered` and returns the rendered length.
    /// `at_line_start` means the piece's first byte starts a line that has not been checked
    /// for a leading dot yet; `prev_cr` that the previous piece ended in a CR (whose LF may
    /// start this one).
    fn render_whole(&mut self, piece: &[u8]) -> usize {
        let Some(&last) = piece.last() else { return 0 };
        let mut pos = 0;
        // Worst case: every octet an LF that gains a CR, or a line-starting dot doubled;
        // plus room for the fixed-size copies below to run past the end.
        let room = 2 * piece.len() + 1 + COPY_WINDOW;
        if self.rendered.len() < room {
            self.rendered.resize(room, 0);
        }
        let out = &mut self.rendered[..];
        if self.at_line_start && piece[0] == b'.' {
            out[pos] = b'.';
            pos += 1;
        }
        let mut start = 0;
        for lf in line_ends::positions(b'\n', piece) {
            let cr_before = if lf > 0 {
                piece[lf - 1] == b'\r'
            } else {
                self.prev_cr
            };
            let len = lf - start;
            if len <= COPY_WINDOW && start + COPY_WINDOW <= piece.len() {
                // A fixed-size copy compiles to a few vector moves instead of a call to
                // memcpy; the bytes past `len` are overwritten next.
                out[pos..pos + COPY_WINDOW].copy_from_slice(&piece[start..start + COPY_WINDOW]);
            } else {
                out[pos..pos + len].copy_from_slice(&piece[start..lf]);
            }
            pos += len;
            if !cr_before {
                out[pos] = b'\r';
                pos += 1;
            }
            out[pos] = b'\n';
            pos += 1;
            start = lf + 1;
            if piece.get(start) == Some(&b'.') {
                out[pos] = b'.';
                pos += 1;
            }
        }
        let tail = piece.len() - start;
        out[pos..pos + tail].copy_from_slice(&piece[start..]);
        self.at_line_start = last == b'\n';
        self.prev_cr = last == b'\r';
        pos + tail
    }

    fn note_content(&mut self, bytes: &[u8]) {
        if self.line_blank && bytes.iter().any(|&b| b != b'\r') {
            self.line_blank = false;
        }
    }

    fn end_line(&mut self) {
        let Some(remaining) = self.remaining_body_lines.as_mut() else {
            return;
        };
        if self.in_headers {
            if self.line_blank {
                self.in_headers = false;
                self.done = *remaining == 0;
            }
        } else {
            *remaining -= 1;
            self.done = *remaining == 0;
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
    fn counts_are_plural_except_for_one() {
        assert_eq!(count(0, "message"), "0 messages");
        assert_eq!(count(1, "'>From ' line"), "1 '>From ' line");
        assert_eq!(count(2, "message"), "2 messages");
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

    /// The obvious, slow rendering of RETR/TOP, line by line.
    fn naive(stored: &[u8], extent: Extent) -> Vec<u8> {
        let mut lines: Vec<&[u8]> = stored.split(|&b| b == b'\n').collect();
        if stored.ends_with(b"\n") || stored.is_empty() {
            lines.pop();
        }
        let mut out = Vec::new();
        let mut in_headers = true;
        let mut body = 0u32;
        for line in lines {
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            if let Extent::Top(n) = extent {
                if !in_headers && body >= n {
                    break;
                }
                if in_headers {
                    if content.iter().all(|&b| b == b'\r') {
                        in_headers = false;
                    }
                } else {
                    body += 1;
                }
            }
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn render(stored: &[u8], extent: Extent, split: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, extent);
        for part in [&stored[..split], &stored[split..]] {
            if !w.is_done() {
                w.write(part).unwrap();
            }
        }
        w.finish().unwrap();
        out
    }

    /// Every string over `a . \r \n` up to 7 bytes, split at every point.
    #[test]
    fn message_writer_matches_naive_reference_exhaustively() {
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        let mut inputs: Vec<Vec<u8>> = vec![vec![]];
        let mut last = vec![vec![]];
        for _ in 0..7 {
            let mut next = Vec::new();
            for s in &last {
                for &c in &alphabet {
                    let mut t: Vec<u8> = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            inputs.extend(next.iter().cloned());
            last = next;
        }
        for s in &inputs {
            // The naive reference treats a lone CR mid-line as content, as the writer does;
            // only a CR right before LF is part of the line end.
            if s.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') || s.ends_with(b"\r") {
                continue;
            }
            for extent in [
                Extent::Whole,
                Extent::Top(0),
                Extent::Top(1),
                Extent::Top(2),
            ] {
                let want = naive(s, extent);
                for split in 0..=s.len() {
                    assert_eq!(
                        render(s, extent, split),
                        want,
                        "input {:?} extent {extent:?} split {split}",
                        String::from_utf8_lossy(s)
                    );
                }
            }
        }
    }

    /// RETR's block rendering over inputs larger than a block, with lines shorter and longer
    /// than the fixed-size copy window, CRLF and LF ends, and leading dots, fed in pieces of
    /// many sizes (so line ends and dots fall on every kind of piece boundary).
    #[test]
    fn whole_messages_render_like_the_reference_across_blocks_and_pieces() {
        let mut stored = Vec::new();
        let mut x = 7u32;
        while stored.len() < 3 * RENDER_BLOCK {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (x >> 8) as usize % 200;
            if x.is_multiple_of(5) {
                stored.push(b'.');
            }
            stored.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            stored.extend_from_slice(if x.is_multiple_of(3) { b"\r\n" } else { b"\n" });
        }
        stored.extend_from_slice(b"no line end");
        let want = naive(&stored, Extent::Whole);
        for piece in [
            1,
            2,
            3,
            79,
            80,
            81,
            4096,
            RENDER_BLOCK,
            RENDER_BLOCK + 1,
            stored.len(),
        ] {
            let mut out = Vec::new();
            let mut w = MessageWriter::new(&mut out, Extent::Whole);
            for chunk in stored.chunks(piece) {
                w.write(chunk).unwrap();
            }
            w.finish().unwrap();
            assert!(out == want, "pieces of {piece}");
        }
    }

    #[test]
    fn lone_cr_is_content_and_unterminated_last_line_gets_crlf() {
        assert_eq!(render(b"a\rb", Extent::Whole, 1), b"a\rb\r\n.\r\n");
        assert_eq!(render(b"a\r", Extent::Whole, 2), b"a\r\n.\r\n");
        assert_eq!(render(b"", Extent::Whole, 0), b".\r\n");
        assert_eq!(render(b".", Extent::Whole, 0), b"..\r\n.\r\n");
    }

    #[test]
    fn top_sends_headers_blank_line_and_n_body_lines() {
        let msg = b"Subject: x\nFrom: y\n\nline1\n.line2\nline3\n";
        assert_eq!(
            render(msg, Extent::Top(0), 3),
            b"Subject: x\r\nFrom: y\r\n\r\n.\r\n"
        );
        assert_eq!(
            render(msg, Extent::Top(2), 20),
            b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n..line2\r\n.\r\n"
        );
        assert_eq!(
            render(msg, Extent::Top(99), 5),
            render(msg, Extent::Whole, 5)
        );
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
