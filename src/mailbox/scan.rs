//! The one-pass mbox scanner (RFC 4155): message boundaries (a From_ line after a blank
//! line, or a Content-Length that ends exactly at one), sizes as sent without the store's
//! bookkeeping headers, the folder-internal pseudo-message, and the digest that identifies a
//! message across rewrites.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use memchr::memchr;
use xxhash_rust::xxh3::xxh3_128;

use super::quote::{FromQuote, Step};
use crate::limits::{
    FILE_CHUNK, HEADER_PEEK, MAX_UID_HEADER_BYTES, SPLIT_SCAN_MIN, SPLIT_SCAN_SEARCH,
};
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
    /// The `X-UID:` an IMAP server (Dovecot, UW-IMAP) gave the message, if any.
    pub imap_uid: Option<u32>,
    /// The folder's UID state from an `X-IMAPbase:` (or the pseudo-message's `X-IMAP:`)
    /// header, which counts only in the first message of the file.
    pub imap_base: Option<ImapBase>,
    /// The folder-internal pseudo-message ("DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL
    /// DATA", with `X-IMAP:`) at the start of the file: not mail, never served, always kept.
    pub internal: bool,
    /// The message has a `Content-Length:` header.
    pub content_length: bool,
    /// Body `From ` lines after a blank line that its Content-Length kept inside it.
    pub unsplit: u64,
}

/// An IMAP folder's UID state as Dovecot and UW-IMAP keep it in the mbox itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapBase {
    /// UIDVALIDITY: the folder's UIDs are only valid with this value.
    pub validity: u32,
    /// The highest UID given so far (0: none yet).
    pub last: u32,
}

/// Reads past what the scan has been fed: a Content-Length is checked by looking at the few
/// octets where it says the message ends.
pub trait Ahead {
    /// Reads up to `buf.len()` octets at `offset`: fewer only at the end of the file.
    fn read_ahead(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

impl Ahead for File {
    fn read_ahead(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

impl Ahead for &[u8] {
    fn read_ahead(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let from = usize::try_from(offset).map_or(self.len(), |o| o.min(self.len()));
        let n = buf.len().min(self.len() - from);
        buf[..n].copy_from_slice(&self[from..from + n]);
        Ok(n)
    }
}

/// Scans `file` from `from` to its end, handing each message to `each` in file order, and
/// returns the offset where it stopped (the file's length when it was read). `from` must be
/// 0 or the offset of a message's `From ` line (where a message may start without a blank
/// line before it). Memory stays at one chunk plus the messages found in one chunk,
/// whatever the file holds; a scan of [`SPLIT_SCAN_MIN`] bytes or more also holds the
/// messages of its second half, which a second thread scans meanwhile.
///
/// Every message is handed out, the folder-internal pseudo-message too (`Found::internal`):
/// the caller decides what to show.
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
    Ok(scan_range(file, from, u64::MAX, &mut each)?.0)
}

/// Scans `from..until` (or to the end of the file, if sooner) as [`scan`] does, and returns
/// where it stopped. Stopped at `until` where a trusted Content-Length says the message goes
/// on, it goes on to the end of the file instead, and says so (`true`).
fn scan_range(
    file: &File,
    from: u64,
    until: u64,
    each: &mut impl FnMut(Found) -> io::Result<()>,
) -> io::Result<(u64, bool)> {
    let mut s = Scanner::new(from, file);
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut pos = from;
    let mut until = until;
    let mut went_on = false;
    loop {
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
            s.take_error()?;
            s.found.drain(..).try_for_each(&mut *each)?;
        }
        if pos != until || until == u64::MAX || !s.swallows_next_line() {
            break;
        }
        s.take_error()?;
        went_on = true;
        until = u64::MAX;
    }
    s.take_error()?;
    s.finish();
    s.found.drain(..).try_for_each(each)?;
    Ok((pos, went_on))
}

/// Scans `from..split` here and `split..` on a second thread, and hands out the first half's
/// messages, then the second's. `split` must be where a `From ` line follows a blank line:
/// there one message ends and the next starts, unless a Content-Length that holds says the
/// message before goes on past it; only the first half can know that, so when it does, the
/// first half scans on to the end and the second half's work is thrown away. Either way the
/// messages are exactly what one scan finds.
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
                let (end, _) = scan_range(file, split, u64::MAX, &mut |f| {
                    found.push(f);
                    Ok(())
                })?;
                Ok::<_, io::Error>((found, end))
            });
        let Ok(second) = second else {
            // No thread to be had (a process limit): one scan does it all.
            return Ok(scan_range(file, from, u64::MAX, &mut each)?.0);
        };
        let (first_end, went_on) = scan_range(file, from, split, &mut each)?;
        let (found, end) = second
            .join()
            .map_err(|_| io::Error::other("the scan's second thread panicked"))??;
        if went_on {
            return Ok(first_end);
        }
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
const VOLATILE_HEADERS: [&[u8]; 8] = [
    b"status:",
    b"x-status:",
    b"x-keywords:",
    b"x-uid:",
    b"x-imapbase:",
    b"x-imap:",
    b"content-length:",
    b"lines:",
];

/// The mail store's own bookkeeping (mbox readers' flags, IMAP UIDs, message lengths): what
/// Dovecot and UW-IMAP hide from clients, so poplar sends neither them nor their octets.
const BOOKKEEPING_HEADERS: [&[u8]; 7] = [
    b"status:",
    b"x-status:",
    b"x-keywords:",
    b"x-uid:",
    b"x-imapbase:",
    b"x-imap:",
    b"content-length:",
];

/// Octets of a header line that decide whether it is bookkeeping: the longest name above.
pub const BOOKKEEPING_NAME_MAX: usize = 15;

/// The subject of the folder-internal pseudo-message that Dovecot, UW-IMAP and Pine write.
const INTERNAL_SUBJECT: &[u8] = b"subject: don't delete this message -- folder internal data";

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
    /// The last header line was bookkeeping (its continuation lines are too).
    hiding: bool,
    content_length: Option<u64>,
    /// Where the Content-Length says the body ends, once the headers have ended.
    body_end: Option<u64>,
    /// Whether that end holds (decided the first time a `From ` line inside asks).
    length_holds: Option<bool>,
    unsplit: u64,
    imap_uid: Option<u32>,
    imap_base: Option<ImapBase>,
    x_imap: bool,
    internal_subject: bool,
}

impl Open {
    fn new(start: u64, data: u64, header_bytes: usize) -> Open {
        Open {
            start,
            data,
            size: 0,
            quoted_lines: 0,
            in_headers: true,
            header_bytes,
            header_uid: None,
            hiding: false,
            content_length: None,
            body_end: None,
            length_holds: None,
            unsplit: 0,
            imap_uid: None,
            imap_base: None,
            x_imap: false,
            internal_subject: false,
        }
    }

    /// Notes what a header line (its first octets, `kept`) says about the store's
    /// bookkeeping; returns whether the line is bookkeeping, hidden from clients.
    fn header_line(&mut self, kept: &[u8]) -> bool {
        let hidden = if matches!(kept.first(), Some(b' ' | b'\t')) {
            self.hiding
        } else {
            is_bookkeeping(kept)
        };
        self.hiding = hidden;
        if hidden {
            let value = |name: &[u8]| {
                (kept.len() >= name.len() && kept[..name.len()].eq_ignore_ascii_case(name))
                    .then(|| &kept[name.len()..])
            };
            if let Some(v) = value(b"content-length:") {
                self.content_length = self.content_length.or_else(|| number(v));
            } else if let Some(v) = value(b"x-uid:") {
                self.imap_uid = self.imap_uid.or_else(|| number(v).and_then(to_u32));
            } else if let Some(v) = value(b"x-imapbase:") {
                self.imap_base = self.imap_base.or_else(|| imap_base(v));
            } else if let Some(v) = value(b"x-imap:") {
                self.x_imap = true;
                self.imap_base = self.imap_base.or_else(|| imap_base(v));
            }
        } else if kept.len() >= INTERNAL_SUBJECT.len()
            && kept[..INTERNAL_SUBJECT.len()].eq_ignore_ascii_case(INTERNAL_SUBJECT)
        {
            self.internal_subject = true;
        }
        hidden
    }
}

/// The scanner, fed the file a chunk at a time: complete lines are taken straight from the
/// chunk, and only a line cut by a chunk's end goes through the line buffer, piece by piece.
struct Scanner<'a> {
    /// Where a Content-Length's end is checked.
    ahead: &'a dyn Ahead,
    /// A read error of that check, handed to the caller after the chunk.
    error: Option<io::Error>,
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

impl<'a> Scanner<'a> {
    fn new(from: u64, ahead: &'a dyn Ahead) -> Scanner<'a> {
        Scanner {
            ahead,
            error: None,
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
            Some(o) if o.in_headers => digest_limit(o).max(HEADER_PEEK),
            _ => FROM_PREFIX,
        }
    }

    fn take_error(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    /// Whether a `From ` line at `line_start` lies inside the open message's body as a
    /// Content-Length that holds gives it, and so starts no message.
    fn inside_length(&mut self, line_start: u64) -> bool {
        let Some(o) = self.open.as_mut() else {
            return false;
        };
        let Some(end) = o.body_end.filter(|&e| line_start < e) else {
            return false;
        };
        if o.length_holds.is_none() {
            let holds = match length_holds(self.ahead, end) {
                Ok(h) => h,
                Err(e) => {
                    self.error = Some(e);
                    false
                }
            };
            o.length_holds = Some(holds);
        }
        o.length_holds == Some(true)
    }

    /// Stopped at a line start after a blank line: whether a `From ` line there would be
    /// kept inside the open message by its Content-Length.
    fn swallows_next_line(&mut self) -> bool {
        self.prev_blank && self.inside_length(self.line_start)
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
        // wherever no message is open yet (text before the first From_ line is no message),
        // unless a Content-Length that holds puts it inside the open message's body.
        let mut is_from = kept.starts_with(b"From ") && (self.open.is_none() || self.prev_blank);
        if is_from && self.inside_length(self.line_start) {
            is_from = false;
            if let Some(o) = self.open.as_mut() {
                o.unsplit += 1;
            }
        }
        let line_end = self.line_start + len;
        if is_from {
            // The blank line before this From_ line belongs to neither message.
            let sep = if self.prev_blank { self.prev_len } else { 0 };
            self.close(self.line_start - sep, self.prev_blank);
            self.digested.clear();
            self.digested.extend_from_slice(kept);
            self.open = Some(Open::new(self.line_start, line_end, kept.len()));
        } else if let Some(o) = self.open.as_mut() {
            let hidden = o.in_headers && !blank && o.header_line(kept);
            if !hidden {
                o.size += sent;
                if quoted {
                    o.quoted_lines += 1;
                }
            }
            if o.in_headers && blank {
                o.in_headers = false;
                o.body_end = o.content_length.and_then(|n| line_end.checked_add(n));
            } else if o.in_headers && o.header_bytes < MAX_UID_HEADER_BYTES {
                // What the digest takes of this line: as much as fitted under its cap.
                let part = &kept[..kept.len().min(digest_limit(o))];
                o.header_bytes += part.len();
                if o.header_uid.is_none() {
                    o.header_uid = header_uid(part);
                }
                if !is_volatile(part) {
                    self.digested.extend_from_slice(part);
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
            imap_uid: o.imap_uid,
            imap_base: o.imap_base,
            internal: o.start == 0 && o.x_imap && o.internal_subject,
            content_length: o.content_length.is_some(),
            unsplit: o.unsplit,
        });
    }

    fn finish(&mut self) {
        if self.line_len > 0 {
            // An unterminated last line is sent with a CRLF (or just LF after a stored CR).
            if let Some(o) = self.open.as_mut() {
                // A last header line cut by the end of the file is hidden as a whole one is.
                let hidden = o.in_headers && o.header_line(&self.line);
                if !hidden {
                    o.size += self.line_sent + if self.prev_byte_cr { 1 } else { 2 };
                    if self.quoted == Some(true) {
                        o.quoted_lines += 1;
                    }
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

/// Where the header `name` (lower case, with its colon) lies in the message whose data is
/// `data..end`: its first line to the start of the next header line, continuation lines
/// included. Only the first [`MAX_UID_HEADER_BYTES`] of the headers are looked at.
pub fn find_header(
    file: &File,
    data: u64,
    end: u64,
    name: &[u8],
) -> io::Result<Option<std::ops::Range<u64>>> {
    let want = usize::try_from(end.saturating_sub(data))
        .map_or(MAX_UID_HEADER_BYTES, |n| n.min(MAX_UID_HEADER_BYTES));
    let mut buf = vec![0u8; want];
    let n = file.read_ahead(data, &mut buf)?;
    let buf = &buf[..n];
    let mut found: Option<std::ops::Range<u64>> = None;
    let mut at = 0;
    while let Some(nl) = memchr(b'\n', &buf[at..]) {
        let line = &buf[at..at + nl + 1];
        if line == b"\n" || line == b"\r\n" {
            break;
        }
        let next = data + (at + nl + 1) as u64;
        match &mut found {
            Some(r) if matches!(line[0], b' ' | b'\t') => r.end = next,
            Some(_) => break,
            None if line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name) => {
                found = Some(data + at as u64..next);
            }
            None => {}
        }
        at += nl + 1;
    }
    Ok(found)
}

/// How many octets of a header line the digest may still take: what is left under
/// [`MAX_UID_HEADER_BYTES`], and never less than a From_ line's first bytes.
fn digest_limit(o: &Open) -> usize {
    MAX_UID_HEADER_BYTES
        .saturating_sub(o.header_bytes)
        .max(FROM_PREFIX)
}

/// Whether a Content-Length that ends a body at `end` holds: the body's last line ends there
/// and the file ends there, or a blank line follows and then the end of the file or a
/// `From ` line. A length that ends anywhere else is not believed.
fn length_holds(ahead: &dyn Ahead, end: u64) -> io::Result<bool> {
    let Some(before) = end.checked_sub(1) else {
        return Ok(false);
    };
    let mut b = [0u8; 8];
    let n = ahead.read_ahead(before, &mut b)?;
    let b = &b[..n];
    Ok(matches!(b, b"\n" | b"\n\n" | b"\n\r\n")
        || b.starts_with(b"\n\nFrom ")
        || b.starts_with(b"\n\r\nFrom "))
}

/// Whether a header line (at least its first [`BOOKKEEPING_NAME_MAX`] octets, or all of it)
/// is one of the store's bookkeeping headers that clients do not see.
pub fn is_bookkeeping(line: &[u8]) -> bool {
    if !matches!(line.first(), Some(b's' | b'S' | b'x' | b'X' | b'c' | b'C')) {
        return false;
    }
    BOOKKEEPING_HEADERS
        .iter()
        .any(|h| line.len() >= h.len() && line[..h.len()].eq_ignore_ascii_case(h))
}

/// A header value that is a decimal number (spaces around it allowed).
fn number(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn to_u32(n: u64) -> Option<u32> {
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// `X-IMAPbase: <uidvalidity> <last uid> [keywords]` (and the pseudo-message's `X-IMAP:`).
fn imap_base(v: &[u8]) -> Option<ImapBase> {
    let mut words = v
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let validity = to_u32(number(words.next()?)?)?;
    let last = number(words.next()?).and_then(|n| u32::try_from(n).ok())?;
    Some(ImapBase { validity, last })
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
