//! What `poplar check` reads: an mbox and its sidecars inspected without changing anything
//! (no journal replay, no index write, no lock taken), and the problems found there.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use memchr::memchr;
use nix::unistd::{AccessFlags, access};

use super::index::{self, Extent, ImapUid};
use super::lock::{LockKind, read_dotlock, stale};
use super::mbox::MboxOptions;
use super::rollback::{self, Pending};
use super::scan::ImapBase;
use super::{Uid, files, journal, scan};
use crate::limits::{DOTLOCK_SHOWN, FILE_CHUNK, MAX_FROM_LINE_CHECKED};

/// One message as a session would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Where its From_ line starts.
    pub extent: Extent,
    /// Octets as RETR sends it (with `--mbox-unquote` if asked for).
    pub size: u64,
    /// The UID it has in the index, or `None` if the next login assigns one.
    pub uid: Option<String>,
}

/// A dotlock found beside the mbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dotlock {
    /// None.
    Absent,
    /// Held, maybe by a live delivery: what the lock file says.
    Held(String),
    /// Stale (poplar would break it): why.
    Stale(String),
}

/// The commit journal found beside the mbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// None.
    Absent,
    /// Complete: the next login or delivery finishes the interrupted commit.
    Complete,
    /// Incomplete: the next login or delivery discards it; the mbox is as before the commit.
    Incomplete,
    /// It belongs to another file that was at this path; it will be set aside.
    Foreign,
}

/// Something wrong with the mailbox file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Garbled {
    /// Bytes before the first From_ line (or a file with no From_ line): no message.
    Preamble(u64),
    /// NUL bytes: how many, and the first one's offset.
    Nul {
        /// How many.
        count: u64,
        /// The first one's offset.
        first: u64,
    },
    /// The file does not end with a newline: the last message may be cut short.
    Unterminated,
    /// A message whose From_ line has no asctime date: its number (from 1) and the line.
    BadDate(usize, String),
}

/// Which kind of mbox the file is, as far as its messages tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dialect {
    /// Messages with a `Content-Length:` header (mboxcl/mboxcl2: Dovecot, UW-IMAP, Solaris).
    pub length_framed: usize,
    /// Body `From ` lines a Content-Length that holds kept inside their message.
    pub unsplit: u64,
    /// The folder-internal pseudo-message starts the file (kept, never served).
    pub internal: bool,
    /// The folder's IMAP UID state (`X-IMAPbase:` or the pseudo-message's `X-IMAP:`).
    pub folder: Option<ImapBase>,
    /// Messages whose UIDL is an IMAP server's (Dovecot's `%08Xu%08Xv`).
    pub imap_uidls: usize,
}

/// Everything `poplar check` reports about one mailbox.
#[derive(Debug)]
pub struct Report {
    /// The mbox file.
    pub path: PathBuf,
    /// `None` when the file does not exist (an empty maildrop to poplar).
    pub file: Option<FileFacts>,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// `>From ` lines (one or more `>`), which `--mbox-unquote` sends with one `>` fewer.
    pub quoted_lines: u64,
    /// The mbox dialect and the UIDL scheme its messages get.
    pub dialect: Dialect,
    /// Whether the UID index exists and matches some messages.
    pub indexed: usize,
    /// The dotlock.
    pub dotlock: Dotlock,
    /// The commit journal.
    pub journal: Journal,
    /// Journals set aside as `<mbox>.poplar-journal.orphan-<pid>`, never applied: their paths.
    pub orphans: Vec<PathBuf>,
    /// The note of a delivery in progress or killed midway (`<mbox>.poplar-append`).
    pub delivery: Pending,
    /// Messages kept by `--dev-keep-deleted`, if that file exists: its size.
    pub kept_deleted: Option<u64>,
    /// Problems in the file's bytes.
    pub garbled: Vec<Garbled>,
    /// Why poplar could not take its locks or commit here, if it could not.
    pub access: Vec<String>,
}

/// The mbox file's metadata.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts {
    /// Length in bytes.
    pub len: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Reads the mbox at `path` and its sidecars, changing nothing.
pub fn inspect(path: &Path, options: &MboxOptions) -> io::Result<Report> {
    let mut report = Report {
        path: path.to_owned(),
        file: None,
        messages: Vec::new(),
        quoted_lines: 0,
        dialect: Dialect::default(),
        indexed: 0,
        dotlock: dotlock(path, options)?,
        journal: journal_state(path)?,
        orphans: orphans(path)?,
        delivery: rollback::pending(path)?,
        kept_deleted: std::fs::metadata(files::deleted(path))
            .ok()
            .map(|m| m.len()),
        garbled: Vec::new(),
        access: Vec::new(),
    };
    report.access = access_problems(path, options);
    let file = match OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    report.file = Some(FileFacts {
        len: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    });
    let mut serials = index_serials(path)?;
    let mut header_values = Vec::new();
    let mut last_imap = 0;
    let len = scan::scan(&file, 0, |f| {
        let d = &mut report.dialect;
        if f.start == 0 {
            d.folder = f.imap_base;
            d.internal = f.internal;
        }
        if f.internal {
            return Ok(());
        }
        d.length_framed += usize::from(f.content_length);
        d.unsplit += f.unsplit;
        report.quoted_lines += f.size - f.unquoted_size;
        let indexed = serials.as_mut().and_then(|(epoch, s)| {
            let (serial, imap) = s.get_mut(&f.digest)?.pop_front()?;
            Some(imap.map_or(
                Uid::Serial {
                    epoch: *epoch,
                    serial,
                },
                |i| Uid::Imap {
                    uid: i.uid,
                    validity: i.validity,
                },
            ))
        });
        report.indexed += usize::from(indexed.is_some());
        // Not indexed yet: the IMAP UID the next login gives it, as `uid::reconcile` would.
        let uid = indexed.or_else(|| {
            let folder = d.folder?;
            let uid = f.imap_uid?;
            let in_order = uid > last_imap && (folder.last == 0 || uid <= folder.last);
            in_order.then_some(Uid::Imap {
                uid,
                validity: folder.validity,
            })
        });
        if let Some(Uid::Imap { uid, .. }) = uid {
            last_imap = last_imap.max(uid);
            d.imap_uidls += 1;
        }
        let uid = uid.map(|u| u.to_string());
        if options.view.uidl_from_header {
            header_values.push(f.header_uid.clone());
        }
        report.messages.push(Message {
            extent: Extent {
                start: f.start,
                data: f.data,
                end: f.end,
            },
            size: if options.view.unquote {
                f.unquoted_size
            } else {
                f.size
            },
            uid,
        });
        Ok(())
    })?;
    header_uids(&mut report.messages, header_values);
    report.garbled = garbled(&file, len, &report.messages, report.dialect.internal)?;
    Ok(report)
}

/// With `--uidl-from-header`, unique `X-UIDL:` values replace the index's UIDs (as at login).
fn header_uids(messages: &mut [Message], found: Vec<Option<String>>) {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for u in found.iter().flatten() {
        *count.entry(u).or_default() += 1;
    }
    let usable: Vec<Option<String>> = found
        .iter()
        .map(|u| u.clone().filter(|u| count[u.as_str()] == 1))
        .collect();
    for (m, u) in messages.iter_mut().zip(usable) {
        if u.is_some() {
            m.uid = u;
        }
    }
}

/// The index's serials (and IMAP UIDs) by message digest, in order (as a login's rebuild
/// matches them).
type Serials = (u64, HashMap<[u8; 16], VecDeque<(u64, Option<ImapUid>)>>);

fn index_serials(mbox: &Path) -> io::Result<Option<Serials>> {
    let index = match files::read_only(&files::index(mbox)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(h) = index::read_header(&index)? else {
        return Ok(None);
    };
    let mut serials: HashMap<[u8; 16], VecDeque<(u64, Option<ImapUid>)>> = HashMap::new();
    for r in index::records(&index, 0) {
        if let Some(r) = r? {
            serials
                .entry(r.digest)
                .or_default()
                .push_back((r.serial, r.imap));
        }
    }
    Ok(Some((h.epoch, serials)))
}

fn dotlock(mbox: &Path, options: &MboxOptions) -> io::Result<Dotlock> {
    let path = files::dotlock(mbox);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(Dotlock::Absent);
    }
    if let Some(why) = stale(&path, mbox, options.locks.stale_after)? {
        return Ok(Dotlock::Stale(why));
    }
    let text = read_dotlock(&path)
        .ok()
        .flatten()
        .map(|(_, t)| t)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text[..text.len().min(DOTLOCK_SHOWN)]);
    Ok(Dotlock::Held(text.trim().to_owned()))
}

/// The journals a replay set aside beside `mbox` (see `journal::replay`), in name order.
fn orphans(mbox: &Path) -> io::Result<Vec<PathBuf>> {
    let prefix = files::journal_orphan_prefix(mbox);
    let (Some(dir), Some(prefix)) = (mbox.parent(), prefix.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let prefix = prefix.as_encoded_bytes();
    let mut found = Vec::new();
    for e in entries {
        let e = e?;
        if e.file_name().as_encoded_bytes().starts_with(prefix) {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

fn journal_state(mbox: &Path) -> io::Result<Journal> {
    let j = match files::read_only(&files::journal(mbox)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Journal::Absent),
        Err(e) => return Err(e),
    };
    let Some((head, _)) = journal::read_complete(&j)? else {
        return Ok(Journal::Incomplete);
    };
    let same = std::fs::metadata(mbox).is_ok_and(|m| (m.dev(), m.ino()) == (head.dev, head.ino));
    Ok(if same {
        Journal::Complete
    } else {
        Journal::Foreign
    })
}

/// Whether this user may do what poplar does here: read and write the mbox, create files
/// beside it (dotlocks, the journal, the index).
fn access_problems(mbox: &Path, options: &MboxOptions) -> Vec<String> {
    let dir = match mbox.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut problems = Vec::new();
    if !dir.is_dir() {
        problems.push(format!("directory {} does not exist", dir.display()));
    } else if access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        let what = if options.locks.order.contains(&LockKind::Dotlock) {
            "no dotlock, journal or UID index can be created"
        } else {
            "no journal or UID index can be created"
        };
        problems.push(format!(
            "directory {} is not writable by this user: {what}",
            dir.display()
        ));
    }
    if mbox.exists() && access(mbox, AccessFlags::R_OK | AccessFlags::W_OK).is_err() {
        problems.push("the mbox is not readable and writable by this user".into());
    }
    problems
}

/// What is wrong in the file's bytes; `internal` says the pseudo-message starts it (text
/// before the first message, but no preamble).
fn garbled(
    file: &File,
    len: u64,
    messages: &[Message],
    internal: bool,
) -> io::Result<Vec<Garbled>> {
    let mut found = Vec::new();
    let first = messages.first().map_or(len, |m| m.extent.start);
    if first > 0 && !internal {
        found.push(Garbled::Preamble(first));
    }
    let (mut count, mut first_nul) = (0, 0);
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut at = 0;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        let mut rest = &buf[..n];
        while let Some(i) = memchr(0, rest) {
            if count == 0 {
                first_nul = at + (n - rest.len() + i) as u64;
            }
            count += 1;
            rest = &rest[i + 1..];
        }
        at += n as u64;
    }
    if count > 0 {
        found.push(Garbled::Nul {
            count,
            first: first_nul,
        });
    }
    if len > 0 {
        let mut last = [0u8];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            found.push(Garbled::Unterminated);
        }
    }
    let mut line = vec![0u8; MAX_FROM_LINE_CHECKED];
    for (i, m) in messages.iter().enumerate() {
        let n = ((m.extent.data - m.extent.start) as usize).min(MAX_FROM_LINE_CHECKED);
        file.read_exact_at(&mut line[..n], m.extent.start)?;
        let text = String::from_utf8_lossy(line[..n].trim_ascii_end());
        if !has_date(&text) {
            found.push(Garbled::BadDate(
                i + 1,
                crate::logsafe::escape(text.as_bytes()),
            ));
        }
    }
    Ok(found)
}

/// Whether a From_ line carries an asctime date (`From sender Www Mmm dd hh:mm[:ss] yyyy`,
/// a time zone allowed before or after the year), as RFC 4155 asks.
pub fn has_date(line: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t: Vec<&str> = line.split_whitespace().collect();
    // The sender may be missing (`From  Mon ...`).
    let Some(i) = (1..t.len().min(3)).find(|&i| DAYS.contains(&t[i])) else {
        return false;
    };
    let [month, day, time, rest @ ..] = &t[(i + 1).min(t.len())..] else {
        return false;
    };
    let day_ok = day.parse::<u8>().is_ok_and(|d| (1..=31).contains(&d));
    let time_ok = {
        let parts: Vec<&str> = time.split(':').collect();
        (2..=3).contains(&parts.len())
            && parts
                .iter()
                .all(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let year_ok = rest
        .iter()
        .take(2)
        .any(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()));
    MONTHS.contains(month) && day_ok && time_ok && year_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_line_dates() {
        for good in [
            "From a@b Thu Nov 26 09:00:00 2026",
            "From MAILER-DAEMON Mon Jan  1 00:00 1990",
            "From a@b Thu Nov 26 09:00:00 +0100 2026",
            "From a@b Thu Nov 26 09:00:00 2026 +0100",
            "From  Thu Nov 26 09:00:00 2026",
        ] {
            assert!(has_date(good), "{good}");
        }
        for bad in [
            "From a@b",
            "From x",
            "From a@b 2026-11-26 09:00:00",
            "From a@b Thu Nov 32 09:00:00 2026",
            "From a@b Thu Nov 26 9h 2026",
            "From a@b Thu Nov 26 09:00:00",
            "From a@b Thu Xyz 26 09:00:00 2026",
        ] {
            assert!(!has_date(bad), "{bad}");
        }
    }

    #[test]
    fn a_mailbox_in_a_missing_directory_cannot_be_locked_or_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("gone/m");
        let r = inspect(&mbox, &MboxOptions::default()).unwrap();
        assert!(r.file.is_none() && r.messages.is_empty());
        assert_eq!(r.access.len(), 1);
        assert!(r.access[0].ends_with("does not exist"), "{:?}", r.access);
    }

    #[test]
    fn a_garbled_mbox_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        let bytes =
            b"junk\n\nFrom a@b Thu Nov 26 09:00:00 2026\nS: 1\n\nx\0y\n\nFrom bad\nS: 2\n\ncut";
        std::fs::write(&mbox, bytes).unwrap();
        let r = inspect(&mbox, &MboxOptions::default()).unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(
            r.garbled,
            vec![
                Garbled::Preamble(6),
                Garbled::Nul {
                    count: 1,
                    first: 47
                },
                Garbled::Unterminated,
                Garbled::BadDate(2, "From bad".into()),
            ]
        );
        assert_eq!(
            (r.dotlock.clone(), r.journal),
            (Dotlock::Absent, Journal::Absent)
        );
        assert!(r.messages.iter().all(|m| m.uid.is_none()));
        assert_eq!(std::fs::read(&mbox).unwrap(), bytes);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no sidecar was created");
    }
}
