//! `>From ` quoting (mboxrd): the detector of `>*From ` lines shared by the scanner, the
//! `--mbox-unquote` reader and delivery's quoting, so that sizes and bytes always agree.

use std::io::{self, Read, Write};

use memchr::memchr;

use crate::limits::{FILE_CHUNK, MIN_FILTER_BUFFER};

/// One step of [`FromQuote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The byte was taken; not decided yet.
    Pending,
    /// The byte completed `>{gts}From ` and was taken.
    Matched {
        /// How many `>` came before `From `.
        gts: u64,
    },
    /// The line is no `>*From ` line; the byte was NOT taken. What was taken before is
    /// `gts` times `>` followed by the first `from` bytes of `From `.
    Mismatch,
}

/// Recognises `>*From ` at the start of a line, one byte at a time, in constant memory (a
/// line of a billion `>` is only a counter). Shared by the scanner, the `--mbox-unquote`
/// reader and delivery's quoting, so sizes and bytes always agree.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromQuote {
    /// `>` bytes taken.
    pub gts: u64,
    /// Bytes of `From ` taken after them.
    pub from: usize,
}

impl FromQuote {
    /// Feeds the next byte of the line.
    pub fn step(&mut self, b: u8) -> Step {
        const FROM: &[u8; 5] = b"From ";
        if self.from == 0 && b == b'>' {
            self.gts += 1;
            return Step::Pending;
        }
        if b != FROM[self.from] {
            return Step::Mismatch;
        }
        self.from += 1;
        if self.from == FROM.len() {
            Step::Matched { gts: self.gts }
        } else {
            Step::Pending
        }
    }
}

/// Undoes mboxrd quoting while reading a message: one `>` fewer on every `>+From ` line.
/// Line ends and every other byte pass unchanged; memory is one chunk.
pub struct Unquote<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    at_line_start: bool,
    quote: FromQuote,
    /// Bytes owed to the reader after a decision: `>` count, then `From `[from_done..from_end].
    owed_gts: u64,
    owed_from: (usize, usize),
    eof: bool,
}

impl<R: Read> Unquote<R> {
    /// Wraps the stored bytes of one message.
    pub fn new(inner: R) -> Unquote<R> {
        Unquote::with_capacity(inner, FILE_CHUNK)
    }

    /// [`new`](Self::new) with a read buffer of `capacity` octets (at least
    /// [`MIN_FILTER_BUFFER`], at most [`FILE_CHUNK`]): as `HideBookkeeping::with_capacity`.
    pub fn with_capacity(inner: R, capacity: usize) -> Unquote<R> {
        Unquote {
            inner,
            buf: vec![0u8; capacity.clamp(MIN_FILTER_BUFFER, FILE_CHUNK)],
            pos: 0,
            len: 0,
            at_line_start: true,
            quote: FromQuote::default(),
            owed_gts: 0,
            owed_from: (0, 0),
            eof: false,
        }
    }

    fn pay(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while self.owed_gts > 0 && n < out.len() {
            out[n] = b'>';
            self.owed_gts -= 1;
            n += 1;
        }
        while self.owed_gts == 0 && self.owed_from.0 < self.owed_from.1 && n < out.len() {
            out[n] = b"From "[self.owed_from.0];
            self.owed_from.0 += 1;
            n += 1;
        }
        n
    }

    /// Turns what the detector took into owed bytes, less `drop_gt` of the `>`.
    fn owe(&mut self, drop_gt: u64) {
        self.owed_gts = self.quote.gts - drop_gt;
        self.owed_from = (0, self.quote.from);
        self.quote = FromQuote::default();
    }
}

impl<R: Read> Read for Unquote<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = self.pay(out);
        while n < out.len() {
            if self.pos == self.len {
                if self.eof || n > 0 {
                    break;
                }
                self.len = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                if self.len == 0 {
                    self.eof = true;
                    // The message ended inside an undecided `>*From` prefix: no quote.
                    self.owe(0);
                    n += self.pay(&mut out[n..]);
                    break;
                }
            }
            let b = self.buf[self.pos];
            if self.at_line_start {
                match self.quote.step(b) {
                    Step::Pending => {
                        self.pos += 1;
                        continue;
                    }
                    Step::Matched { gts } => {
                        self.pos += 1;
                        self.owe(u64::from(gts > 0));
                    }
                    Step::Mismatch => self.owe(0),
                }
                self.at_line_start = false;
                n += self.pay(&mut out[n..]);
                continue;
            }
            // Inside a line: copy up to and including the next newline.
            let rest = &self.buf[self.pos..self.len];
            let take = match memchr(b'\n', rest) {
                Some(i) => i + 1,
                None => rest.len(),
            }
            .min(out.len() - n);
            out[n..n + take].copy_from_slice(&rest[..take]);
            if rest[take - 1] == b'\n' {
                self.at_line_start = true;
            }
            self.pos += take;
            n += take;
        }
        Ok(n)
    }
}

/// mboxrd quoting: a `>` before every line that matches `>*From `, streamed.
#[derive(Default)]
pub struct Quoter {
    inside: bool,
    q: FromQuote,
    /// The last byte taken (to know whether the message ended with a newline).
    pub last: u8,
}

impl Quoter {
    /// Writes the next bytes of the message, quoted, to `out`.
    pub fn write(&mut self, mut bytes: &[u8], out: &mut impl Write) -> io::Result<()> {
        while let Some(&b) = bytes.first() {
            if !self.inside {
                match self.q.step(b) {
                    Step::Pending => {
                        bytes = &bytes[1..];
                        self.last = b;
                        continue;
                    }
                    Step::Matched { .. } => {
                        out.write_all(b">")?;
                        self.release(out)?;
                        bytes = &bytes[1..];
                        self.last = b;
                        continue;
                    }
                    Step::Mismatch => self.release(out)?,
                }
            }
            let take = memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
            out.write_all(&bytes[..take])?;
            self.last = bytes[take - 1];
            self.inside = self.last != b'\n';
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Writes what the detector held back and goes inside the line.
    fn release(&mut self, out: &mut impl Write) -> io::Result<()> {
        let gts = [b'>'; 256];
        let mut left = self.q.gts;
        while left > 0 {
            let n = left.min(256);
            out.write_all(&gts[..n as usize])?;
            left -= n;
        }
        out.write_all(&b"From "[..self.q.from])?;
        self.q = FromQuote::default();
        self.inside = true;
        Ok(())
    }

    /// Writes what is held back at the end of the message.
    pub fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.inside && (self.q.gts > 0 || self.q.from > 0) {
            self.release(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut q = Quoter::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            q.write(c, &mut out).unwrap();
        }
        q.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn quoting_adds_one_gt_to_every_gt_from_line_in_any_chunking() {
        let input = b"From a\n>From b\nx From c\n>>From d\n>Fro\nFrom";
        let want = b">From a\n>>From b\nx From c\n>>>From d\n>Fro\nFrom";
        for chunk in 1..9 {
            assert_eq!(quote(input, chunk), want, "chunk {chunk}");
        }
    }
}
