//! The store's bookkeeping headers (`Status:`, `X-UID:`, `Content-Length:` ...) taken out of a
//! message as RETR and TOP stream it, line by line in bounded memory, exactly as the scanner
//! left them out of the message's size.

use std::io::{self, Read};

use memchr::memchr;

use super::scan::{BOOKKEEPING_NAME_MAX, is_bookkeeping};
use crate::limits::{FILE_CHUNK, MIN_FILTER_BUFFER};

/// Where the filter is in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a header line, collecting the octets that decide it.
    HeaderStart,
    /// Inside a header line that is sent.
    Sending,
    /// Inside a header line that is bookkeeping: dropped.
    Dropping,
    /// Past the blank line that ends the headers: everything is sent.
    Body,
}

/// Reads a message's stored bytes (from the octet after its From_ line) without the header
/// lines that [`is_bookkeeping`] names, or their continuation lines.
pub struct HideBookkeeping<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    at: At,
    /// The first octets of the current header line, until they decide it; then, if it is
    /// sent, what of them is still owed to the reader (`head[paid..head_len]`).
    head: [u8; BOOKKEEPING_NAME_MAX + 1],
    head_len: usize,
    paid: usize,
    owing: bool,
    /// The last header line was dropped (its continuation lines go with it).
    hiding: bool,
    eof: bool,
}

impl<R: Read> HideBookkeeping<R> {
    /// Wraps the stored bytes of one message, starting with its first header line.
    pub fn new(inner: R) -> HideBookkeeping<R> {
        HideBookkeeping::with_capacity(inner, FILE_CHUNK)
    }

    /// [`new`](Self::new) with a read buffer of `capacity` octets (at least
    /// [`MIN_FILTER_BUFFER`]): a message shorter than [`FILE_CHUNK`] needs no more than its
    /// length, and zeroing 64 KiB for every RETR of a small message is work wasted (with
    /// jemalloc, a page purge per RETR).
    pub fn with_capacity(inner: R, capacity: usize) -> HideBookkeeping<R> {
        HideBookkeeping {
            inner,
            buf: vec![0u8; capacity.clamp(MIN_FILTER_BUFFER, FILE_CHUNK)],
            pos: 0,
            len: 0,
            at: At::HeaderStart,
            head: [0; BOOKKEEPING_NAME_MAX + 1],
            head_len: 0,
            paid: 0,
            owing: false,
            hiding: false,
            eof: false,
        }
    }

    /// Decides the header line whose first octets are in `head` (the whole line if it ended
    /// there) as the scanner decides it, and says what comes next.
    fn decide(&mut self) {
        let head = &self.head[..self.head_len];
        let ended = head.last() == Some(&b'\n');
        if head == b"\n" || head == b"\r\n" {
            self.at = At::Body;
            self.owing = true;
            return;
        }
        let hidden = if matches!(head.first(), Some(b' ' | b'\t')) {
            self.hiding
        } else {
            is_bookkeeping(head)
        };
        self.hiding = hidden;
        self.at = match (hidden, ended) {
            (_, true) => At::HeaderStart,
            (true, false) => At::Dropping,
            (false, false) => At::Sending,
        };
        if hidden {
            self.head_len = 0;
        } else {
            self.owing = true;
        }
    }

    /// Hands out what is owed of a sent line's start; `true` when all of it is.
    fn pay(&mut self, out: &mut [u8]) -> (usize, bool) {
        let owed = &self.head[self.paid..self.head_len];
        let n = owed.len().min(out.len());
        out[..n].copy_from_slice(&owed[..n]);
        self.paid += n;
        let done = self.paid == self.head_len;
        if done {
            (self.head_len, self.paid, self.owing) = (0, 0, false);
        }
        (n, done)
    }
}

impl<R: Read> Read for HideBookkeeping<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.owing {
                let (paid, done) = self.pay(&mut out[n..]);
                n += paid;
                if !done {
                    break;
                }
                continue;
            }
            if self.pos == self.len {
                if self.eof || n > 0 {
                    break;
                }
                if self.at == At::Body {
                    // Past the headers, straight through: no copy into our buffer.
                    return self.inner.read(out);
                }
                self.len = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                if self.len == 0 {
                    self.eof = true;
                    if self.head_len > 0 {
                        // A last header line cut by the end: decided on what there is.
                        self.decide();
                        continue;
                    }
                    break;
                }
            }
            let rest = &self.buf[self.pos..self.len];
            match self.at {
                At::HeaderStart => {
                    let room = self.head.len() - self.head_len;
                    let take = memchr(b'\n', rest).map_or(rest.len(), |i| i + 1).min(room);
                    self.head[self.head_len..self.head_len + take].copy_from_slice(&rest[..take]);
                    self.head_len += take;
                    self.pos += take;
                    if self.head[self.head_len - 1] == b'\n' || self.head_len == self.head.len() {
                        self.decide();
                    }
                }
                At::Sending | At::Body => {
                    let line = match self.at {
                        At::Body => rest.len(),
                        _ => memchr(b'\n', rest).map_or(rest.len(), |i| i + 1),
                    };
                    let take = line.min(out.len() - n);
                    out[n..n + take].copy_from_slice(&rest[..take]);
                    if self.at == At::Sending && rest[take - 1] == b'\n' {
                        self.at = At::HeaderStart;
                    }
                    self.pos += take;
                    n += take;
                }
                At::Dropping => {
                    let line = memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                    if rest[line - 1] == b'\n' {
                        self.at = At::HeaderStart;
                    }
                    self.pos += line;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads everything through the filter, `chunk` octets per read at most.
    fn filtered(stored: &[u8], chunk: usize) -> Vec<u8> {
        let whole = filtered_through(stored, chunk, FILE_CHUNK);
        assert_eq!(whole, filtered_through(stored, chunk, MIN_FILTER_BUFFER));
        whole
    }

    /// [`filtered`] through a filter whose own buffer holds `capacity` octets.
    fn filtered_through(stored: &[u8], chunk: usize, capacity: usize) -> Vec<u8> {
        let mut r = HideBookkeeping::with_capacity(stored, capacity);
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn bookkeeping_headers_and_their_continuations_are_dropped_in_any_read_size() {
        let stored: &[u8] = b"From: a@x\nX-IMAPbase: 1796402539 0000000003\nX-UID: 1\n\
            Status: RO\nX-Keywords: $Junk\n   more keywords\nX-Status-Not: kept\n\
            Subject: a subject line longer than sixteen octets\n\tfolded\n\
            Content-Length: 12\r\nSTATUS:x\n\nStatus: in the body\nx\n";
        let want: &[u8] = b"From: a@x\nX-Status-Not: kept\n\
            Subject: a subject line longer than sixteen octets\n\tfolded\n\
            \nStatus: in the body\nx\n";
        for chunk in 1..40 {
            assert_eq!(filtered(stored, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn a_message_cut_inside_its_headers_is_filtered_as_scanned() {
        assert_eq!(filtered(b"Subject: s\nStatus: R", 3), b"Subject: s\n");
        assert_eq!(filtered(b"Subject: s\nSta", 3), b"Subject: s\nSta");
        assert_eq!(filtered(b"\r\nX-UID: 1\n", 2), b"\r\nX-UID: 1\n");
    }
}
