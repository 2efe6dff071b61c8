//! mbox files (RFC 4155): the one-pass scan, message reads for RETR/TOP, change detection,
//! and the in-place commit at QUIT.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use memchr::memchr;

use super::template::MailTemplate;
use super::{
    CommitSummary, LockGuard, LockTable, MailStore, MailboxError, Maildrop, MessageInfo, UserName,
    hex,
};
use crate::limits::{FILE_CHUNK, MAX_UID_HEADER_BYTES};

/// Bytes at the end of the scanned region that are re-read to detect a rewrite.
const BOUNDARY_CHECK: u64 = 1024;

/// Mailboxes stored as mbox files at the paths a template gives.
pub struct MboxStore {
    template: MailTemplate,
    locks: LockTable,
}

impl MboxStore {
    /// A store for the mbox files at `template`.
    pub fn new(template: MailTemplate) -> Self {
        MboxStore {
            template,
            locks: LockTable::new(),
        }
    }
}

impl MailStore for MboxStore {
    fn open(&self, user: &UserName) -> Result<Box<dyn Maildrop>, MailboxError> {
        let path = self.template.expand(user);
        let guard = self.locks.acquire(lock_key(&path)?)?;
        Ok(Box::new(MboxDrop::open(path, guard)?))
    }
}

/// The key that makes two names of one file the same mailbox: the file's canonical path, so
/// that a symlink to it is the same mailbox; for a file that does not exist yet, the canonical
/// directory plus the file name.
fn lock_key(path: &Path) -> io::Result<PathBuf> {
    match path.canonicalize() {
        Ok(p) => return Ok(p),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "mailbox path has no file name")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match dir.canonicalize() {
        Ok(d) => Ok(d.join(name)),
        // No directory yet: no file either; the absolute spelling is then the best key.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(std::path::absolute(path)?),
        Err(e) => Err(e),
    }
}

/// Where one message lies in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extent {
    /// Offset of the `From ` line.
    start: u64,
    /// Offset of the first byte after the `From ` line.
    data: u64,
    /// Offset just past the message data (the separating blank line is not included).
    end: u64,
}

/// What the scan found: messages, and what the file looked like, to detect later changes.
#[derive(Debug)]
struct Scan {
    extents: Vec<Extent>,
    infos: Vec<MessageInfo>,
    /// Bytes scanned: the file's length at login.
    len: u64,
}

/// The identity of the scanned file, checked before every read and at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    boundary: Vec<u8>,
}

impl Snapshot {
    fn take(file: &File, len: u64) -> io::Result<Snapshot> {
        let meta = file.metadata()?;
        let from = len.saturating_sub(BOUNDARY_CHECK);
        let mut boundary = vec![0u8; (len - from) as usize];
        file.read_exact_at(&mut boundary, from)?;
        Ok(Snapshot {
            dev: meta.dev(),
            ino: meta.ino(),
            len,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            boundary,
        })
    }

    /// Whether `file` still starts with the bytes that were scanned: same file, not shorter,
    /// not rewritten at the same length, and the bytes at the scanned boundary unchanged.
    fn still_holds(&self, file: &File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (self.dev, self.ino) || meta.len() < self.len {
            return Ok(false);
        }
        if meta.len() == self.len && (meta.mtime(), meta.mtime_nsec()) != self.mtime {
            return Ok(false);
        }
        let mut now = vec![0u8; self.boundary.len()];
        let from = self.len - now.len() as u64;
        file.read_exact_at(&mut now, from)?;
        Ok(now == self.boundary)
    }
}

/// One session's view of an mbox file.
pub struct MboxDrop {
    path: PathBuf,
    /// `None` for a mailbox that did not exist at login.
    file: Option<File>,
    scan: Scan,
    snapshot: Option<Snapshot>,
    _guard: LockGuard,
}

impl MboxDrop {
    fn open(path: PathBuf, guard: LockGuard) -> Result<MboxDrop, MailboxError> {
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(MboxDrop {
                    path,
                    file: None,
                    scan: Scan {
                        extents: Vec::new(),
                        infos: Vec::new(),
                        len: 0,
                    },
                    snapshot: None,
                    _guard: guard,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if !file.metadata()?.is_file() {
            return Err(MailboxError::Io(io::Error::other(
                "mailbox is not a regular file",
            )));
        }
        let scan = scan(&file)?;
        let snapshot = Snapshot::take(&file, scan.len)?;
        Ok(MboxDrop {
            path,
            file: Some(file),
            scan,
            snapshot: Some(snapshot),
            _guard: guard,
        })
    }

    fn check_unchanged(&self) -> Result<(), MailboxError> {
        match (&self.file, &self.snapshot) {
            (Some(f), Some(s)) if !s.still_holds(f)? => Err(MailboxError::Changed),
            _ => Ok(()),
        }
    }
}

impl Maildrop for MboxDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.scan.infos
    }

    fn reader(&mut self, index: usize) -> Result<Box<dyn Read + '_>, MailboxError> {
        self.check_unchanged()?;
        let (Some(file), Some(ext)) = (&self.file, self.scan.extents.get(index)) else {
            return Err(MailboxError::Io(io::Error::other("no such message")));
        };
        Ok(Box::new(RangeReader {
            file,
            pos: ext.data,
            end: ext.end,
        }))
    }

    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitSummary, MailboxError> {
        let Some(first) = deleted.iter().position(|&d| d) else {
            return Ok(CommitSummary {
                deleted: 0,
                bytes_before: self.scan.len,
                bytes_after: self.scan.len,
            });
        };
        self.check_unchanged()?;
        let file = self
            .file
            .as_ref()
            .expect("a mailbox with messages has a file");
        let current_len = file.metadata()?.len();
        let extents = &self.scan.extents;
        // Each kept message is moved with its From_ line and the blank line after it, so
        // the file stays well-formed; mail appended since login follows unchanged.
        let next_start = |i: usize| extents.get(i + 1).map_or(self.scan.len, |e| e.start);
        let mut ranges: Vec<(u64, u64)> = (first..extents.len())
            .filter(|&i| !deleted.get(i).copied().unwrap_or(false))
            .map(|i| (extents[i].start, next_start(i)))
            .collect();
        ranges.push((self.scan.len, current_len));
        let mut dst = extents[first].start;
        let mut buf = vec![0u8; FILE_CHUNK];
        for (mut src, end) in ranges {
            while src < end {
                let n = ((end - src) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], src)?;
                file.write_all_at(&buf[..n], dst)?;
                src += n as u64;
                dst += n as u64;
            }
        }
        file.set_len(dst)?;
        file.sync_all()?;
        log::debug!("committed {}", self.path.display());
        Ok(CommitSummary {
            deleted: deleted.iter().filter(|&&d| d).count(),
            bytes_before: current_len,
            bytes_after: dst,
        })
    }
}

/// Reads `pos..end` of a file with positional reads (no shared cursor to disturb).
struct RangeReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "mailbox shorter than scanned",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Headers that local mail readers add or rewrite; they must not change a UID.
const VOLATILE_HEADERS: [&[u8]; 6] = [
    b"status:",
    b"x-status:",
    b"x-keywords:",
    b"x-uid:",
    b"content-length:",
    b"lines:",
];

/// The message being scanned.
struct Open {
    start: u64,
    data: u64,
    size: u64,
    in_headers: bool,
    header_bytes: usize,
    hasher: Md5,
}

/// The one-pass scanner, fed the file line by line (a long line arrives in pieces).
struct Scanner {
    extents: Vec<Extent>,
    infos: Vec<MessageInfo>,
    open: Option<Open>,
    /// Offset of the current line's first byte.
    line_start: u64,
    /// The current line's first bytes, enough to see `From `, and whole header lines up to
    /// the UID cap.
    line: Vec<u8>,
    line_len: u64,
    /// The current line's octets as sent (CRLF line end).
    line_sent: u64,
    prev_byte_cr: bool,
    /// The previous complete line was empty (`\n` or `\r\n`).
    prev_blank: bool,
    /// The stored length of the previous complete line.
    prev_blank_len: u64,
    /// UIDs already given out in this scan, to tell byte-identical twins apart.
    seen: std::collections::HashMap<[u8; 16], u32>,
}

fn scan(file: &File) -> io::Result<Scan> {
    let mut s = Scanner {
        extents: Vec::new(),
        infos: Vec::new(),
        open: None,
        line_start: 0,
        line: Vec::new(),
        line_len: 0,
        line_sent: 0,
        prev_byte_cr: false,
        prev_blank: false,
        prev_blank_len: 0,
        seen: std::collections::HashMap::new(),
    };
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut pos = 0u64;
    loop {
        let n = match file.read_at(&mut buf, pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        s.feed(&buf[..n]);
        pos += n as u64;
    }
    s.finish(pos);
    Ok(Scan {
        extents: s.extents,
        infos: s.infos,
        len: pos,
    })
}

impl Scanner {
    fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let (piece, complete) = match memchr(b'\n', chunk) {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            self.add_piece(piece);
            if complete {
                self.end_line();
            }
            chunk = &chunk[piece.len()..];
        }
    }

    fn keep_limit(&self) -> usize {
        match &self.open {
            Some(o) if o.in_headers => MAX_UID_HEADER_BYTES.saturating_sub(o.header_bytes).max(5),
            _ => 5,
        }
    }

    fn add_piece(&mut self, piece: &[u8]) {
        let keep = self
            .keep_limit()
            .saturating_sub(self.line.len())
            .min(piece.len());
        self.line.extend_from_slice(&piece[..keep]);
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
        let blank = self.line == b"\n" || self.line == b"\r\n";
        let is_from = self.line.starts_with(b"From ") && (self.line_start == 0 || self.prev_blank);
        let line_end = self.line_start + self.line_len;
        if is_from {
            let sep = if self.prev_blank { 2 } else { 0 };
            // The blank line before this From_ belongs to neither message.
            let sep_bytes = if self.prev_blank {
                self.prev_blank_len
            } else {
                0
            };
            self.close(self.line_start - sep_bytes, sep);
            let mut hasher = Md5::new();
            hasher.update(&self.line);
            self.open = Some(Open {
                start: self.line_start,
                data: line_end,
                size: 0,
                in_headers: true,
                header_bytes: self.line.len(),
                hasher,
            });
        } else if let Some(o) = self.open.as_mut() {
            o.size += self.line_sent;
            if o.in_headers && blank {
                o.in_headers = false;
            } else if o.in_headers && o.header_bytes < MAX_UID_HEADER_BYTES {
                o.header_bytes += self.line.len();
                if !is_volatile(&self.line) {
                    o.hasher.update(&self.line);
                }
            }
        }
        self.prev_blank = blank;
        self.prev_blank_len = self.line_len;
        self.line_start = line_end;
        self.line.clear();
        self.line_len = 0;
        self.line_sent = 0;
    }

    /// Closes the open message at `end`, taking `sep` octets of separator off its size.
    fn close(&mut self, end: u64, sep: u64) {
        let Some(o) = self.open.take() else { return };
        let digest: [u8; 16] = o.hasher.finalize().into();
        let twin = self.seen.entry(digest).or_insert(0);
        let uid = if *twin == 0 {
            hex(&digest)
        } else {
            let mut h = Md5::new();
            h.update(digest);
            h.update(twin.to_be_bytes());
            hex(&h.finalize())
        };
        *twin += 1;
        self.extents.push(Extent {
            start: o.start,
            data: o.data,
            end,
        });
        self.infos.push(MessageInfo {
            size: o.size.saturating_sub(sep),
            uid,
        });
    }

    fn finish(&mut self, len: u64) {
        if self.line_len > 0 {
            // An unterminated last line is sent with a CRLF (or just LF after a stored CR).
            if let Some(o) = self.open.as_mut() {
                o.size += self.line_sent + if self.prev_byte_cr { 1 } else { 2 };
            }
            self.prev_blank = false;
            self.line_start += self.line_len;
        }
        let (end, sep) = if self.prev_blank {
            (len - self.prev_blank_len, 2)
        } else {
            (len, 0)
        };
        self.close(end, sep);
    }
}

fn is_volatile(line: &[u8]) -> bool {
    VOLATILE_HEADERS
        .iter()
        .any(|h| line.len() >= h.len() && line[..h.len()].eq_ignore_ascii_case(h))
}
