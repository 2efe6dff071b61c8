//! The one-pass mbox scanner (RFC 4155): message boundaries, sizes as sent (stored and
//! unquoted), and the digest that identifies a message across rewrites.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use memchr::memchr;
use xxhash_rust::xxh3::xxh3_128;

use super::quote::{FromQuote, Step};
use crate::limits::{FILE_CHUNK, MAX_UID_HEADER_BYTES, SPLIT_SCAN_MIN, SPLIT_SCAN_SEARCH};
use crate::line_ends;

/// One message found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Offset of the `From ` line.
    pub start: u64,
    /// Offset of the first byte after the `From ` line.
    pub data: u64,
    /// Offset just past the message data (the separating blank line is not included).
    pub end: u64,
    /// Octets as sent with the bytes as stored: CRLF line ends, before dot-stuffing.
    pub size: u64,
    /// Octets as sent with `--mbox-unquote`: one `>` fewer on each `>+From ` line.
    pub unquoted_size: u64,
    /// XXH3-128 over the `From ` line and the headers that mail readers do not rewrite.
    pub digest: [u8; 16],
    /// A well-formed `X-UIDL:` value, if the headers hold one (used only on request).
    pub header_uid: Option<String>,
}

/// Scans `file` from `from` to its end, handing each message to `each` in file order, and
/// returns the offset where it stopped (the file's length when it was read). `from` must be
/// 0 or the offset of a message's `From ` line (where a message may start without a blank
/// line before it). Memory stays at one chunk plus the messages found in one chunk,
/// whatever the file holds; a scan of [`SPLIT_SCAN_MIN`] bytes or more also holds the
/// messages of its second half, which a second thread scans meanwhile.
pub fn scan(
    file: &File,
    from: u64,
    mut each: impl FnMut(Found) -> io::Result<()>,
) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    if two_cores && len.saturating_sub(from) >= SPLIT_SCAN_MIN {
        let middle = from + (len - from) / 2;
        if let Some(split) = boundary_after(file, middle, SPLIT_SCAN_SEARCH, FILE_CHUNK)? {
            return scan_split(file, from, split, each);
        }
    }
    scan_range(file, from, u64::MAX, &mut each)
}

/// Scans `from..until` (or to the end of the file, if sooner) as [`scan`] does.
fn scan_range(
    file: &File,
    from: u64,
    until: u64,
    each: &mut impl FnMut(Found) -> io::Result<()>,
) -> io::Result<u64> {
    let mut s = Scanner::new(from);
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut pos = from;
    while pos < until {
        let want = usize::try_from(until - pos).map_or(buf.len(), |w| w.min(buf.len()));
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        s.feed(&buf[..n]);
        pos += n as u64;
        s.found.drain(..).try_for_each(&mut *each)?;
    }
    s.finish();
    s.found.drain(..).try_for_each(each)?;
    Ok(pos)
}

/// Scans `from..split` here and `split..` on a second thread, and hands out the first half's
/// messages, then the second's. `split` must be where a `From ` line follows a blank line:
/// there one message ends and the next starts whatever came before, so the halves find
/// exactly what one scan would.
fn scan_split(
    file: &File,
    from: u64,
    split: u64,
    mut each: impl FnMut(Found) -> io::Result<()>,
) -> io::Result<u64> {
    std::thread::scope(|scope| {
        let second = std::thread::Builder::new()
            .name("scan".into())
            .spawn_scoped(scope, || {
                let mut found = Vec::new();
                let end = scan_range(file, split, u64::MAX, &mut |f| {
                    found.push(f);
                    Ok(())
                })?;
                Ok::<_, io::Error>((found, end))
            });
        let Ok(second) = second else {
            // No thread to be had (a process limit): one scan does it all.
            return scan_range(file, from, u64::MAX, &mut each);
        };
        scan_range(file, from, split, &mut each)?;
        let (found, end) = second
            .join()
            .map_err(|_| io::Error::other("the scan's second thread panicked"))??;
        found.into_iter().try_for_each(&mut each)?;
        Ok(end)
    })
}

/// The first offset after `near`, and before `near + search`, where a `From ` line follows a
/// blank line (the start of a message, whatever precedes it), if there is one; the file is
/// read `window` octets at a time.
fn boundary_after(file: &File, near: u64, search: u64, window: usize) -> io::Result<Option<u64>> {
    // Each window starts a little before the last one ended, so a boundary across the two
    // is seen whole: the `\n` ending the line before the blank one, the blank line, `From `.
    const OVERLAP: u64 = 8;
    let finder = memchr::memmem::Finder::new(b"\nFrom ");
    let mut buf = vec![0u8; window.max(2 * OVERLAP as usize)];
    let mut at = near.saturating_sub(OVERLAP);
    while at < near + search {
        let n = match file.read_at(&mut buf, at) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let window = &buf[..n];
        for i in finder.find_iter(window) {
            // The line the `\n` at `i` ends is blank: `\n` alone, or `\r\n`, after a line end.
            let blank_before = matches!(window[..i], [.., b'\n'] | [.., b'\n', b'\r']);
            // Only a complete `From ` line starts a message: one the file's end cuts is text.
            let complete = memchr(b'\n', &window[i + 1..]).is_some();
            let split = at + i as u64 + 1;
            if blank_before && complete && split > near {
                return Ok(Some(split));
            }
        }
        if (n as u64) <= OVERLAP {
            return Ok(None);
        }
        at += n as u64 - OVERLAP;
    }
    Ok(None)
}

/// Headers that local mail readers add or rewrite; they must not change a digest.
const VOLATILE_HEADERS: [&[u8]; 6] = [
    b"status:",
    b"x-status:",
    b"x-keywords:",
    b"x-uid:",
    b"content-length:",
    b"lines:",
];

/// Bytes of a body line kept to recognise `From `.
const FROM_PREFIX: usize = 5;

/// The message being scanned.
struct Open {
    start: u64,
    data: u64,
    size: u64,
    quoted_lines: u64,
    in_headers: bool,
    header_bytes: usize,
    header_uid: Option<String>,
}

/// The scanner, fed the file a chunk at a time: complete lines are taken straight from the
/// chunk, and only a line cut by a chunk's end goes through the line buffer, piece by piece.
struct Scanner {
    /// Messages closed since they were last handed out.
    found: Vec<Found>,
    open: Option<Open>,
    /// What the open message's digest covers so far (its From_ line's first bytes and stable
    /// header lines, at most `MAX_UID_HEADER_BYTES` and a little): hashed in one go when it
    /// closes, which is cheaper than feeding a streaming hasher line by line.
    digested: Vec<u8>,
    /// Offset of the current line's first byte.
    line_start: u64,
    /// The first bytes of a line cut by a chunk's end: enough to see `From `, or a whole
    /// header line up to the digest cap.
    line: Vec<u8>,
    line_len: u64,
    /// The current line's octets as sent (CRLF line end).
    line_sent: u64,
    /// Whether the current line is `>+From ` (decided within its first bytes).
    quote: FromQuote,
    quoted: Option<bool>,
    prev_byte_cr: bool,
    /// The previous complete line was empty (`\n` or `\r\n`).
    prev_blank: bool,
    /// The stored length of the previous complete line.
    prev_len: u64,
}

impl Scanner {
    fn new(from: u64) -> Scanner {
        Scanner {
            found: Vec::new(),
            open: None,
            digested: Vec::new(),
            line_start: from,
            line: Vec::new(),
            line_len: 0,
            line_sent: 0,
            quote: FromQuote::default(),
            quoted: None,
            prev_byte_cr: false,
            prev_blank: false,
            prev_len: 0,
        }
    }

    fn feed(&mut self, mut chunk: &[u8]) {
        if self.line_len > 0 {
            // The rest of a line the previous chunk cut.
            let (piece, complete) = match memchr(b'\n', chunk) {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            self.add_piece(piece);
            if !complete {
                return;
            }
            self.end_line();
            chunk = &chunk[piece.len()..];
        }
        // Every complete line from here on is taken straight from the chunk, with one search
        // for line ends over the whole chunk rather than one call per line.
        let mut start = 0;
        for lf in line_ends::positions(b'\n', chunk) {
            self.whole_line(&chunk[start..=lf]);
            start = lf + 1;
        }
        if start < chunk.len() {
            self.add_piece(&chunk[start..]);
        }
    }

    /// Takes one complete line that starts a line (nothing of it was fed before), exactly as
    /// `add_piece` and `end_line` would, without copying it into the line buffer. A body line
    /// of at least 3 octets that starts with neither `F` (no `From ` line) nor `>` (no
    /// `>+From ` quoting) changes only the message's size.
    fn whole_line(&mut self, line: &[u8]) {
        let len = line.len();
        // Size as sent: an LF without a CR before it becomes CRLF. No CR of this line came
        // in an earlier piece, as the line starts here.
        let sent = len as u64 + u64::from(len < 2 || line[len - 2] != b'\r');
        let plain_body = len >= 3 && !matches!(line[0], b'F' | b'>');
        if let Some(o) = self.open.as_mut().filter(|o| plain_body && !o.in_headers) {
            o.size += sent;
            self.line_start += len as u64;
            self.prev_blank = false;
            self.prev_len = len as u64;
            return;
        }
        let quoted = line[0] == b'>' && quoted_from(line);
        let kept = &line[..len.min(self.keep_limit())];
        self.line_done(kept, len as u64, sent, quoted);
    }

    fn keep_limit(&self) -> usize {
        match &self.open {
            Some(o) if o.in_headers => MAX_UID_HEADER_BYTES
                .saturating_sub(o.header_bytes)
                .max(FROM_PREFIX),
            _ => FROM_PREFIX,
        }
    }

    fn add_piece(&mut self, piece: &[u8]) {
        let keep = self
            .keep_limit()
            .saturating_sub(self.line.len())
            .min(piece.len());
        self.line.extend_from_slice(&piece[..keep]);
        let mut i = 0;
        while self.quoted.is_none() && i < piece.len() {
            match self.quote.step(piece[i]) {
                Step::Pending => i += 1,
                Step::Matched { gts } => self.quoted = Some(gts > 0),
                Step::Mismatch => self.quoted = Some(false),
            }
        }
        self.line_len += piece.len() as u64;
        // Size as sent: every LF not preceded by CR becomes CRLF.
        self.line_sent += piece.len() as u64;
        if piece.last() == Some(&b'\n') {
            let cr = if piece.len() >= 2 {
                piece[piece.len() - 2] == b'\r'
            } else {
                self.prev_byte_cr
            };
            if !cr {
                self.line_sent += 1;
            }
        }
        self.prev_byte_cr = piece.last() == Some(&b'\r');
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.line_done(
            &line,
            self.line_len,
            self.line_sent,
            self.quoted == Some(true),
        );
        self.line = line;
        self.line.clear();
        self.line_len = 0;
        self.line_sent = 0;
        self.quote = FromQuote::default();
        self.quoted = None;
    }

    /// Ends a line of `len` stored octets, `sent` as sent, whose first bytes (as many as
    /// `keep_limit` allowed before it) are `kept`; `quoted` says it is a `>+From ` line.
    fn line_done(&mut self, kept: &[u8], len: u64, sent: u64, quoted: bool) {
        let blank = kept == b"\n" || kept == b"\r\n";
        // A From_ line starts a message at the start of the scan, after a blank line, or
        // wherever no message is open yet (text before the first From_ line is no message).
        let is_from = kept.starts_with(b"From ") && (self.open.is_none() || self.prev_blank);
        let line_end = self.line_start + len;
        if is_from {
            // The blank line before this From_ line belongs to neither message.
            let sep = if self.prev_blank { self.prev_len } else { 0 };
            self.close(self.line_start - sep, self.prev_blank);
            self.digested.clear();
            self.digested.extend_from_slice(kept);
            self.open = Some(Open {
                start: self.line_start,
                data: line_end,
                size: 0,
                quoted_lines: 0,
                in_headers: true,
                header_bytes: kept.len(),
                header_uid: None,
            });
        } else if let Some(o) = self.open.as_mut() {
            o.size += sent;
            if quoted {
                o.quoted_lines += 1;
            }
            if o.in_headers && blank {
                o.in_headers = false;
            } else if o.in_headers && o.header_bytes < MAX_UID_HEADER_BYTES {
                o.header_bytes += kept.len();
                if o.header_uid.is_none() {
                    o.header_uid = header_uid(kept);
                }
                if !is_volatile(kept) {
                    self.digested.extend_from_slice(kept);
                }
            }
        }
        self.prev_blank = blank;
        self.prev_len = len;
        self.line_start = line_end;
    }

    /// Closes the open message at `end`; `blank_sep` says a blank separator line (two octets
    /// as sent) came off its end.
    fn close(&mut self, end: u64, blank_sep: bool) {
        let Some(o) = self.open.take() else { return };
        let size = o.size.saturating_sub(if blank_sep { 2 } else { 0 });
        self.found.push(Found {
            start: o.start,
            data: o.data,
            end: end.max(o.data),
            size,
            unquoted_size: size - o.quoted_lines.min(size),
            digest: xxh3_128(&self.digested).to_le_bytes(),
            header_uid: o.header_uid,
        });
    }

    fn finish(&mut self) {
        if self.line_len > 0 {
            // An unterminated last line is sent with a CRLF (or just LF after a stored CR).
            if let Some(o) = self.open.as_mut() {
                o.size += self.line_sent + if self.prev_byte_cr { 1 } else { 2 };
                if self.quoted == Some(true) {
                    o.quoted_lines += 1;
                }
            }
            self.prev_blank = false;
            self.line_start += self.line_len;
        }
        let end = if self.prev_blank {
            self.line_start - self.prev_len
        } else {
            self.line_start
        };
        self.close(end, self.prev_blank);
    }
}

/// Whether a complete line is `>+From ` (a `>*From ` line with at least one `>`), decided as
/// the byte-at-a-time path decides it.
fn quoted_from(line: &[u8]) -> bool {
    let mut q = FromQuote::default();
    for &b in line {
        match q.step(b) {
            Step::Pending => {}
            Step::Matched { gts } => return gts > 0,
            Step::Mismatch => return false,
        }
    }
    false
}

fn is_volatile(line: &[u8]) -> bool {
    // Most header lines start with a letter no volatile name starts with.
    if !matches!(
        line.first(),
        Some(b's' | b'S' | b'x' | b'X' | b'c' | b'C' | b'l' | b'L')
    ) {
        return false;
    }
    VOLATILE_HEADERS
        .iter()
        .any(|h| line.len() >= h.len() && line[..h.len()].eq_ignore_ascii_case(h))
}

/// The value of an `X-UIDL:` header line if it is a valid unique-id (RFC 1939 §7: 1 to 70
/// characters in 0x21..0x7E).
fn header_uid(line: &[u8]) -> Option<String> {
    const NAME: &[u8] = b"x-uidl:";
    // Most header lines start with another letter: the cheap test first.
    if !matches!(line.first(), Some(b'x' | b'X'))
        || line.len() < NAME.len()
        || !line[..NAME.len()].eq_ignore_ascii_case(NAME)
    {
        return None;
    }
    let value = line[NAME.len()..].trim_ascii();
    let ok = (1..=70).contains(&value.len()) && value.iter().all(|b| (0x21..=0x7e).contains(b));
    ok.then(|| String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests;
