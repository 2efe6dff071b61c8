//! The RETR/TOP renderer: stored message bytes to CRLF lines with dot-stuffing and the
//! terminator, streamed a block at a time.

use std::io::{self, Write};

use memchr::memchr;

use crate::limits::RENDER_COPY_WINDOW;
use crate::line_ends;

/// RETR renders stored bytes this many at a time, and hands each rendered piece to its writer
/// in one `write_all`: one large write per file chunk, and a small message plus its status
/// line still gather in one session write buffer.
pub const RENDER_BLOCK: usize = crate::limits::RETR_CHUNK;

/// How much of a message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Portion {
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
    pub fn new(out: &'w mut W, portion: Portion) -> Self {
        let remaining_body_lines = match portion {
            Portion::Whole => None,
            Portion::Top(n) => Some(n),
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
        let room = 2 * piece.len() + 1 + RENDER_COPY_WINDOW;
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
            if len <= RENDER_COPY_WINDOW && start + RENDER_COPY_WINDOW <= piece.len() {
                // A fixed-size copy compiles to a few vector moves instead of a call to
                // memcpy; the bytes past `len` are overwritten next.
                out[pos..pos + RENDER_COPY_WINDOW]
                    .copy_from_slice(&piece[start..start + RENDER_COPY_WINDOW]);
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

    /// The obvious, slow rendering of RETR/TOP, line by line.
    fn naive(stored: &[u8], portion: Portion) -> Vec<u8> {
        let mut lines: Vec<&[u8]> = stored.split(|&b| b == b'\n').collect();
        if stored.ends_with(b"\n") || stored.is_empty() {
            lines.pop();
        }
        let mut out = Vec::new();
        let mut in_headers = true;
        let mut body = 0u32;
        for line in lines {
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            if let Portion::Top(n) = portion {
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

    fn render(stored: &[u8], portion: Portion, split: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, portion);
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
            for portion in [
                Portion::Whole,
                Portion::Top(0),
                Portion::Top(1),
                Portion::Top(2),
            ] {
                let want = naive(s, portion);
                for split in 0..=s.len() {
                    assert_eq!(
                        render(s, portion, split),
                        want,
                        "input {:?} portion {portion:?} split {split}",
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
        let want = naive(&stored, Portion::Whole);
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
            let mut w = MessageWriter::new(&mut out, Portion::Whole);
            for chunk in stored.chunks(piece) {
                w.write(chunk).unwrap();
            }
            w.finish().unwrap();
            assert!(out == want, "pieces of {piece}");
        }
    }

    #[test]
    fn lone_cr_is_content_and_unterminated_last_line_gets_crlf() {
        assert_eq!(render(b"a\rb", Portion::Whole, 1), b"a\rb\r\n.\r\n");
        assert_eq!(render(b"a\r", Portion::Whole, 2), b"a\r\n.\r\n");
        assert_eq!(render(b"", Portion::Whole, 0), b".\r\n");
        assert_eq!(render(b".", Portion::Whole, 0), b"..\r\n.\r\n");
    }

    #[test]
    fn top_sends_headers_blank_line_and_n_body_lines() {
        let msg = b"Subject: x\nFrom: y\n\nline1\n.line2\nline3\n";
        assert_eq!(
            render(msg, Portion::Top(0), 3),
            b"Subject: x\r\nFrom: y\r\n\r\n.\r\n"
        );
        assert_eq!(
            render(msg, Portion::Top(2), 20),
            b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n..line2\r\n.\r\n"
        );
        assert_eq!(
            render(msg, Portion::Top(99), 5),
            render(msg, Portion::Whole, 5)
        );
    }
}
