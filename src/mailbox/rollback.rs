//! The delivery note `<mbox>.poplar-append`: where a `poplar deliver` began to append, synced
//! before the first byte and removed (the removal synced) after the message is synced, so that
//! a delivery killed midway is truncated away by whoever takes the locks next, and only when
//! nothing but that one partial message follows the rollback point.
//!
//! The note is one line: `poplar-append 1 <dev> <ino> <old length> <pid> <host>`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use memchr::memmem;

use super::files::{self, sync_dir};
use super::lock::process_gone;
use crate::limits::{FILE_CHUNK, MAX_DELIVERY_NOTE};
use crate::plural::plural;

const TAG: &str = "poplar-append 1";

/// A delivery in progress: its note is on disk until [`Note::done`].
#[derive(Debug)]
pub struct Note {
    path: PathBuf,
    mbox: PathBuf,
}

/// Writes and syncs the note that `mbox` (open as `file`) was `old_len` octets long before
/// this delivery. The caller holds the delivery locks and has recovered any older note.
pub fn begin(mbox: &Path, file: &File, old_len: u64) -> io::Result<Note> {
    let meta = file.metadata()?;
    let path = files::delivery_note(mbox);
    // Readable by all: a server running as another user than the MTA must read it.
    let mut f = files::shared_file().open(&path)?;
    let text = format!(
        "{TAG} {} {} {old_len} {} {}\n",
        meta.dev(),
        meta.ino(),
        std::process::id(),
        crate::hostname::system_hostname()
    );
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| sync_dir(mbox)) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Note {
        path,
        mbox: mbox.to_owned(),
    })
}

impl Note {
    /// Removes the note and syncs its directory: the delivery is final (the mbox must be
    /// synced first). If this fails the caller must undo the delivery, or a later recovery
    /// would.
    pub fn done(self) -> io::Result<()> {
        std::fs::remove_file(&self.path)?;
        sync_dir(&self.mbox)
    }
}

/// What [`recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    /// No note.
    Clean,
    /// An interrupted delivery was truncated away (or had written nothing); the note is gone.
    RolledBack,
    /// The note could not be acted on safely; the bytes stay (see the log).
    Kept,
    /// The note's writer may still be running (a live process, or another host): untouched.
    Owned,
}

struct Parsed {
    dev: u64,
    ino: u64,
    old_len: u64,
    pid: i32,
    host: String,
}

fn parse(text: &str) -> Option<Parsed> {
    let rest = text
        .strip_suffix('\n')?
        .strip_prefix(TAG)?
        .strip_prefix(' ')?;
    let w: Vec<&str> = rest.split(' ').collect();
    let [dev, ino, old_len, pid, host] = w[..] else {
        return None;
    };
    Some(Parsed {
        dev: dev.parse().ok()?,
        ino: ino.parse().ok()?,
        old_len: old_len.parse().ok()?,
        pid: pid.parse().ok().filter(|&p: &i32| p > 0)?,
        host: host.to_owned(),
    })
}

/// Finishes an interrupted delivery into `mbox` (open as `file`), if a note says one was
/// under way. The caller holds the delivery locks; `fcntl_held` says they include the record
/// lock, which a live writer of the note would hold, so that its writer is surely done. The
/// mbox is truncated back only when the note's writer is gone and everything after the rollback point is that one partial message
/// (a separator, one From_ line, and no other line starting with `From `, which mboxrd
/// quoting keeps out of a delivered body); otherwise the bytes are kept and logged.
pub fn recover(mbox: &Path, file: &File, fcntl_held: bool) -> io::Result<Rollback> {
    let path = files::delivery_note(mbox);
    let mut text = String::new();
    match files::read_only(&path) {
        Ok(f) => {
            // A note tells us to cut the mbox: only its writers may have made it (poplar's
            // user, root, or the mailbox's owner, as whom an MTA runs `poplar deliver`).
            let (owner, mbox_owner) = (f.metadata()?.uid(), file.metadata()?.uid());
            if ![files::euid(), 0, mbox_owner].contains(&owner) {
                log::error!(
                    "{}: delivery note owned by user {owner}, not by a delivery agent; ignored",
                    path.display()
                );
                return Ok(Rollback::Kept);
            }
            // Not text or too long: parse() refuses it below.
            let _ = f.take(MAX_DELIVERY_NOTE).read_to_string(&mut text);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Rollback::Clean),
        Err(e) => return Err(e),
    }
    let Some(note) = parse(&text) else {
        log::warn!("{}: unreadable delivery note removed", path.display());
        return finish(mbox, &path, Rollback::Kept);
    };
    if !fcntl_held && !owner_gone(&note) {
        log::warn!(
            "{}: delivery by process {} on {} may still be running; left alone",
            path.display(),
            note.pid,
            crate::logsafe::escape(note.host.as_bytes())
        );
        return Ok(Rollback::Owned);
    }
    let meta = file.metadata()?;
    let len = meta.len();
    if (meta.dev(), meta.ino()) != (note.dev, note.ino) || len < note.old_len {
        log::warn!(
            "{}: the mailbox was replaced or rewritten since an interrupted delivery; \
             nothing truncated",
            mbox.display()
        );
        return finish(mbox, &path, Rollback::Kept);
    }
    if len > note.old_len && !one_partial_message(file, note.old_len, len)? {
        log::warn!(
            "{}: an interrupted delivery left {} at {}, followed by other mail; kept",
            mbox.display(),
            plural(len - note.old_len, "octet"),
            note.old_len
        );
        return finish(mbox, &path, Rollback::Kept);
    }
    if len > note.old_len {
        log::warn!(
            "{}: truncating {} of an interrupted delivery at {}",
            mbox.display(),
            plural(len - note.old_len, "octet"),
            note.old_len
        );
        file.set_len(note.old_len)?;
        file.sync_all()?;
    }
    finish(mbox, &path, Rollback::RolledBack)
}

/// A delivery note as `poplar check` sees it, read without any lock and changing nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// No note.
    Absent,
    /// Its writer may still be running (a live process of this host, or another host).
    Running {
        /// The writer's process id.
        pid: i32,
        /// The writer's host.
        host: String,
    },
    /// Its writer is gone: whoever takes the locks next cuts the mbox back to `at` octets,
    /// dropping `extra` octets of the partial message.
    Interrupted {
        /// The mbox's length before the delivery.
        at: u64,
        /// Octets of the partial message after it.
        extra: u64,
    },
    /// Whoever takes the locks next removes the note and truncates nothing: why.
    Kept(String),
}

/// What the note beside `mbox` says, judged as [`recover`] would judge it without the locks.
pub fn pending(mbox: &Path) -> io::Result<Pending> {
    let path = files::delivery_note(mbox);
    let f = match files::read_only(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pending::Absent),
        Err(e) => return Err(e),
    };
    let file = match File::open(mbox) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Pending::Kept("the mailbox is gone".into()));
        }
        Err(e) => return Err(e),
    };
    let (owner, meta) = (f.metadata()?.uid(), file.metadata()?);
    if ![files::euid(), 0, meta.uid()].contains(&owner) {
        return Ok(Pending::Kept(format!(
            "the note is owned by user {owner}, not by a delivery agent"
        )));
    }
    let mut text = String::new();
    let _ = f.take(MAX_DELIVERY_NOTE).read_to_string(&mut text);
    let Some(note) = parse(&text) else {
        return Ok(Pending::Kept("the note is unreadable".into()));
    };
    if !owner_gone(&note) {
        return Ok(Pending::Running {
            pid: note.pid,
            host: crate::logsafe::escape(note.host.as_bytes()),
        });
    }
    let len = meta.len();
    if (meta.dev(), meta.ino()) != (note.dev, note.ino) || len < note.old_len {
        return Ok(Pending::Kept(
            "the mailbox was replaced or rewritten since".into(),
        ));
    }
    if len > note.old_len && !one_partial_message(&file, note.old_len, len)? {
        return Ok(Pending::Kept(format!(
            "{} at {} are followed by other mail",
            plural(len - note.old_len, "octet"),
            note.old_len
        )));
    }
    Ok(Pending::Interrupted {
        at: note.old_len,
        extra: len - note.old_len,
    })
}

fn finish(mbox: &Path, note: &Path, outcome: Rollback) -> io::Result<Rollback> {
    std::fs::remove_file(note)?;
    sync_dir(mbox)?;
    Ok(outcome)
}

/// Whether the note's writer is surely gone: a process of this host that no longer exists.
fn owner_gone(note: &Parsed) -> bool {
    note.host == crate::hostname::system_hostname()
        && note.pid != std::process::id() as i32
        && process_gone(note.pid)
}

/// Whether `file[from..end]` is what one interrupted delivery leaves: up to two `\n` of
/// separator, then (a prefix of) a `From ` line, and no later line starting with `From `.
fn one_partial_message(file: &File, from: u64, end: u64) -> io::Result<bool> {
    let mut head = [0u8; 7];
    let n = ((end - from) as usize).min(head.len());
    file.read_exact_at(&mut head[..n], from)?;
    let sep = head[..n]
        .iter()
        .take(2)
        .take_while(|&&b| b == b'\n')
        .count();
    let shown = &head[sep..n];
    if !b"From ".starts_with(&shown[..shown.len().min(5)]) {
        return Ok(false);
    }
    // Stream the rest looking for "\nFrom ", carrying a few octets across chunk edges.
    let finder = memmem::Finder::new(b"\nFrom ");
    let mut buf = vec![0u8; FILE_CHUNK + 5];
    let mut carry = 0;
    let mut at = from + sep as u64;
    while at < end {
        let n = ((end - at) as usize).min(FILE_CHUNK);
        file.read_exact_at(&mut buf[carry..carry + n], at)?;
        if finder.find(&buf[..carry + n]).is_some() {
            return Ok(false);
        }
        at += n as u64;
        let keep = (carry + n).min(5);
        buf.copy_within(carry + n - keep..carry + n, 0);
        carry = keep;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn only_one_partial_delivery_after_the_rollback_point_counts_as_ours() {
        let old = b"From a\n\nold\n";
        let ours: &[&[u8]] = &[
            b"\n",
            b"\nFr",
            b"\nFrom b Thu\nSubject: x\n\nbody\n>From quoted\n",
            b"From b\n",
        ];
        for tail in ours {
            let f = file_with(&[&old[..], tail].concat());
            let len = (old.len() + tail.len()) as u64;
            assert!(
                one_partial_message(&f, old.len() as u64, len).unwrap(),
                "{tail:?}"
            );
        }
        let mut long = b"\nFrom b\n".to_vec();
        long.resize(3 * FILE_CHUNK - 3, b'x');
        long.extend_from_slice(b"\n\nFrom other agent\n");
        let theirs: &[&[u8]] = &[
            b"\nFrom b\n\nbody\n\nFrom c\n\nmore\n",
            b"\n\n\nFrom b\n",
            b"Subject: not a message start\n",
            &long,
        ];
        for tail in theirs {
            let f = file_with(&[&old[..], tail].concat());
            let len = (old.len() + tail.len()) as u64;
            assert!(!one_partial_message(&f, old.len() as u64, len).unwrap());
        }
    }

    #[test]
    fn notes_parse_strictly() {
        assert!(parse("poplar-append 1 1 2 3 4 host\n").is_some());
        for bad in [
            "",
            "poplar-append 1 1 2 3 4 host",
            "poplar-append 2 1 2 3 4 host\n",
            "poplar-append 1 1 2 3 0 host\n",
            "poplar-append 1 1 2 x 4 host\n",
            "poplar-append 1 1 2 3 4\n",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
