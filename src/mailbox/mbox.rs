//! mbox files (RFC 4155) as maildrops: opening with locks, journal replay and UID
//! reconciliation, message reads for RETR/TOP, change detection, and commit at QUIT.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::files::MailboxTrust;
use super::hide::HideBookkeeping;
use super::index::Extent;
use super::lock::{
    LockKind, LockOptions, Opened, ReadLock, SessionLock, lock_for_delivery, open_locked, still_at,
    still_at_path,
};
use super::positioned::RangeReader;
use super::quote::Unquote;
use super::template::MailTemplate;
use super::uid::{self, View, ViewOptions};
use super::{
    CommitSummary, LockGuard, LockKey, LockTable, MailStore, MailboxError, Maildrop, MessageInfo,
    UserName, commit, files, index, journal, keep, rollback,
};
use crate::limits::FILE_CHUNK;
use crate::plural::plural;

/// Everything about how mbox files are read, locked and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MboxOptions {
    /// Presentation: `--mbox-unquote`, `--uidl-from-header`.
    pub view: ViewOptions,
    /// Locks toward delivery agents: `--mbox-locks`, `--lock-timeout`, `--stale-lock-age`.
    pub locks: LockOptions,
    /// `--keep-deleted`, `--dev-keep-deleted`: copy deleted messages to `<mbox>.deleted`
    /// before removing them.
    pub keep_deleted: bool,
    /// `--keep-deleted DAYS`: prune kept messages deleted more than this many days ago, at
    /// the commit of a later session that deletes (`None`: keep them for ever).
    pub keep_days: Option<u32>,
    /// Which files at a mailbox path are used: `--mbox-follow-symlinks`, `--mbox-any-owner`.
    pub trust: MailboxTrust,
}

/// Mailboxes stored as mbox files at the paths a template gives.
pub struct MboxStore {
    template: MailTemplate,
    locks: LockTable,
    options: MboxOptions,
}

impl MboxStore {
    /// A store for the mbox files at `template`, with the default options.
    pub fn new(template: MailTemplate) -> Self {
        Self::with_options(template, MboxOptions::default())
    }

    /// A store for the mbox files at `template`.
    pub fn with_options(template: MailTemplate, options: MboxOptions) -> Self {
        MboxStore {
            template,
            locks: LockTable::new(),
            options,
        }
    }

    /// Finishes an interrupted commit or delivery on `user`'s mbox, if one is pending (at
    /// start-up; every login, commit and delivery does it too). A missing mbox is fine.
    pub fn recover(&self, user: &UserName) -> Result<journal::Replay, MailboxError> {
        let path = self.template.expand(user);
        if !pending_recovery(&path) {
            return Ok(journal::Replay::Clean);
        }
        let file = match files::mailbox_file(self.options.trust).open(&path) {
            Err(e) if files::is_refused_symlink(&e) => {
                return Err(MailboxError::Unusable("a symbolic link"));
            }
            opened => opened?,
        };
        let meta = file.metadata()?;
        if let Some(why) = files::refusal(&meta, self.options.trust) {
            return Err(MailboxError::Unusable(why));
        }
        let _guard = self.locks.acquire(file_key(&meta))?;
        let _locks = lock_for_delivery(&path, &file, &self.options.locks)?;
        Ok(recover_locked(&path, &file, &self.options.locks)?)
    }
}

/// Finishes what a crash interrupted, under the delivery locks: a commit (its journal), then
/// a delivery (its note).
fn recover_locked(path: &Path, file: &File, locks: &LockOptions) -> io::Result<journal::Replay> {
    let replay = journal::replay(path, file)?;
    rollback::recover(path, file, locks.order.contains(&LockKind::Fcntl))?;
    Ok(replay)
}

/// Whether a crash left work for [`recover_locked`]: a journal or a delivery note.
fn pending_recovery(mbox: &Path) -> bool {
    files::journal(mbox).exists() || files::delivery_note(mbox).exists()
}

impl MailStore for MboxStore {
    fn open(&self, user: &UserName) -> Result<Box<dyn Maildrop>, MailboxError> {
        let path = self.template.expand(user);
        Ok(Box::new(MboxDrop::open(path, &self.locks, &self.options)?))
    }

    fn location(&self, user: &UserName) -> String {
        self.template.expand(user).display().to_string()
    }
}

/// The in-process key of the mailbox file whose metadata is `meta`: the file itself, so that
/// every name of it is one mailbox, with no path resolved (a login reads no symlink).
fn file_key(meta: &std::fs::Metadata) -> LockKey {
    LockKey::File {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Whether the first `len` bytes of `file` hold a `From ` line, or nothing but white space (a
/// mailbox emptied by a writer that leaves a line end behind). Read in chunks up to the first
/// `From ` line: for an mbox, its first five bytes.
fn looks_like_mbox(file: &File, len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; FILE_CHUNK.min(len as usize)];
    let mut blank = true;
    // Whether the byte before the chunk ends a line (the file's start counts as one).
    let mut line_start = true;
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        let chunk = &buf[..n];
        // A line start near the chunk's end has its five bytes read from the file itself.
        let starts = std::iter::once(0)
            .filter(|_| line_start)
            .chain(memchr::memchr_iter(b'\n', chunk).map(|i| i + 1));
        for s in starts {
            let mut word = [0u8; 5];
            let have = chunk.len().saturating_sub(s).min(5);
            word[..have].copy_from_slice(&chunk[s..s + have]);
            if have < 5 && at + (s as u64) + 5 <= len {
                file.read_exact_at(&mut word, at + s as u64)?;
            } else if have < 5 {
                continue;
            }
            if &word == b"From " {
                return Ok(true);
            }
        }
        blank &= chunk.iter().all(u8::is_ascii_whitespace);
        line_start = chunk.last() == Some(&b'\n');
        at += n as u64;
    }
    Ok(blank)
}

/// The identity of the scanned file, checked before every read and at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    /// [`index::boundary_hash`] at `len`: the index header keeps the same, so a login the
    /// index serves has it without reading the mbox again.
    boundary: [u8; 8],
}

impl Snapshot {
    fn new(meta: &std::fs::Metadata, len: u64, boundary: [u8; 8]) -> Snapshot {
        Snapshot {
            dev: meta.dev(),
            ino: meta.ino(),
            len,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            boundary,
        }
    }

    fn take(file: &File, len: u64) -> io::Result<Snapshot> {
        Ok(Snapshot::new(&file.metadata()?, len, boundary(file, len)?))
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
        Ok(boundary(file, self.len)? == self.boundary)
    }
}

/// The checksum of the bytes of `file` just before `len`.
fn boundary(file: &File, len: u64) -> io::Result<[u8; 8]> {
    index::boundary_hash(len, |b, o| file.read_exact_at(b, o))
}

/// One session's view of an mbox file.
pub struct MboxDrop {
    path: PathBuf,
    /// `None` for a mailbox that did not exist at login.
    file: Option<File>,
    extents: Vec<Extent>,
    infos: Vec<MessageInfo>,
    len: u64,
    snapshot: Option<Snapshot>,
    options: MboxOptions,
    /// The session's exclusivity: the session lock file's lock and the in-process entry,
    /// released in that order, so that a session let in by the entry finds the file free.
    /// `None` for a mailbox with no file.
    _session: Option<(SessionLock, LockGuard)>,
}

impl MboxDrop {
    /// Opens the mailbox for one session. The session's exclusivity (the in-process table,
    /// keyed by the file, and the session lock file) is taken at the first open. Then a
    /// mailbox its index describes exactly is read under a shared fcntl read lock alone,
    /// creating and removing nothing ([`MboxDrop::open_unchanged`]); anything else (a first
    /// index, mail that arrived, a rewrite, a crashed commit's journal, or `--mbox-locks`
    /// without fcntl or with `dotlock-on-read`) takes the locks in `--mbox-locks` order, which
    /// let it recover, scan and write the index.
    fn open(
        path: PathBuf,
        table: &LockTable,
        options: &MboxOptions,
    ) -> Result<MboxDrop, MailboxError> {
        let mut session: Option<(SessionLock, LockGuard)> = None;
        // Exclusivity is taken once, between the first open and the locks, and kept.
        let mut open = || {
            let file = match files::mailbox_file(options.trust).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
                    return Err(MailboxError::Unusable("a directory, not an mbox file"));
                }
                Err(e) if files::is_refused_symlink(&e) => {
                    return Err(MailboxError::Unusable(
                        "a symbolic link (--mbox-follow-symlinks allows it)",
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            let meta = file.metadata()?;
            if let Some(why) = files::refusal(&meta, options.trust) {
                return Err(MailboxError::Unusable(why));
            }
            if session.is_none() {
                let guard = table.acquire(file_key(&meta))?;
                session = Some((SessionLock::acquire(&path)?, guard));
            }
            Ok(Some(file))
        };
        let Some(first) = open()? else {
            return Ok(MboxDrop::empty(path, options));
        };
        if options.locks.read_lock_alone()
            && let Some((view, snapshot)) = Self::open_unchanged(&path, &first, options)?
        {
            return Ok(MboxDrop::new(path, first, view, snapshot, options, session));
        }
        let mut first = Some(first);
        let reopen = || match first.take() {
            Some(f) => Ok(Some(f)),
            None => open(),
        };
        let locked = |file: &File| {
            recover_locked(&path, file, &options.locks)?;
            // Served as empty, a file that is no mbox at all would hide from its owner that
            // the server reads the wrong file. Checked before poplar first indexes a file:
            // once it has (the index exists), a mailbox whose messages were all deleted may
            // keep text that stood before its first From_ line, and is still a mailbox.
            if !files::index(&path).exists() && !looks_like_mbox(file, file.metadata()?.len())? {
                return Err(MailboxError::Unusable("no From_ line: not an mbox file"));
            }
            let view = uid::reconcile(&path, file, options.view)?;
            log::debug!(
                "{}: {}, {} of {} read",
                path.display(),
                plural(view.infos.len() as u64, "message"),
                view.bytes_scanned,
                plural(view.len, "byte")
            );
            let snapshot = Snapshot::take(file, view.len)?;
            Ok((view, snapshot))
        };
        match open_locked(&path, &options.locks, reopen, locked)? {
            Opened::Locked(file, (view, snapshot)) => {
                Ok(MboxDrop::new(path, file, view, snapshot, options, session))
            }
            Opened::Missing => Ok(MboxDrop::empty(path, options)),
            Opened::Replaced => Err(MailboxError::Changed),
        }
    }

    /// The login that writes nothing: under a shared read lock on `file`, if the path still
    /// names it, no crashed commit left a journal to replay, and the index describes the
    /// mbox exactly, the view comes from the index. `None` sends the login to the locked
    /// path. (An interrupted delivery's note needs no look here: its partial message would
    /// have made the mbox longer than the index covers, and a delivery still running holds
    /// the fcntl lock this waits for, or has not written yet.)
    fn open_unchanged(
        path: &Path,
        file: &File,
        options: &MboxOptions,
    ) -> Result<Option<(View, Snapshot)>, MailboxError> {
        let _read = ReadLock::take(file, &options.locks)?;
        let meta = file.metadata()?;
        if !still_at(path, &meta)? {
            return Ok(None);
        }
        match std::fs::symlink_metadata(files::journal(path)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A journal (or something in its place, or no telling): the locked path decides.
            _ => return Ok(None),
        }
        let Some((view, boundary)) = uid::unchanged(path, file, &meta, options.view)? else {
            return Ok(None);
        };
        let snapshot = Snapshot::new(&meta, view.len, boundary);
        Ok(Some((view, snapshot)))
    }

    /// The maildrop of a mailbox with no file: empty, nothing to lock or commit.
    fn empty(path: PathBuf, options: &MboxOptions) -> MboxDrop {
        MboxDrop {
            path,
            file: None,
            extents: Vec::new(),
            infos: Vec::new(),
            len: 0,
            snapshot: None,
            options: options.clone(),
            _session: None,
        }
    }

    fn new(
        path: PathBuf,
        file: File,
        view: View,
        snapshot: Snapshot,
        options: &MboxOptions,
        session: Option<(SessionLock, LockGuard)>,
    ) -> MboxDrop {
        MboxDrop {
            path,
            file: Some(file),
            extents: view.extents,
            infos: view.infos,
            len: view.len,
            snapshot: Some(snapshot),
            options: options.clone(),
            _session: session,
        }
    }

    /// Checks that the mailbox is still the file scanned at login (not replaced by rename
    /// or removed: our descriptor would still show the old file) and still starts with the
    /// scanned bytes.
    fn check_unchanged(&self) -> Result<(), MailboxError> {
        match (&self.file, &self.snapshot) {
            (Some(f), Some(s)) if !still_at_path(&self.path, f)? || !s.still_holds(f)? => {
                Err(MailboxError::Changed)
            }
            _ => Ok(()),
        }
    }
}

impl Maildrop for MboxDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.infos
    }

    fn reader(&mut self, index: usize) -> Result<Box<dyn Read + '_>, MailboxError> {
        self.check_unchanged()?;
        let (Some(file), Some(ext)) = (&self.file, self.extents.get(index)) else {
            return Err(MailboxError::Io(io::Error::other("no such message")));
        };
        // The index is trusted only on evidence; a message must still start where it did.
        let mut from = [0u8; 5];
        file.read_exact_at(&mut from, ext.start)?;
        if &from != b"From " {
            return Err(MailboxError::Changed);
        }
        // Bookkeeping headers go before the unquoting, as the scan sized them.
        let stored = usize::try_from(ext.end - ext.data).unwrap_or(usize::MAX);
        let range =
            HideBookkeeping::with_capacity(RangeReader::new(file, ext.data, ext.end), stored);
        Ok(if self.options.view.unquote {
            Box::new(Unquote::with_capacity(range, stored))
        } else {
            Box::new(range)
        })
    }

    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitSummary, MailboxError> {
        let Some(file) = self.file.as_ref().filter(|_| deleted.contains(&true)) else {
            return Ok(CommitSummary {
                deleted: 0,
                bytes_before: self.len,
                bytes_after: self.len,
            });
        };
        let _locks = lock_for_delivery(&self.path, file, &self.options.locks)?;
        // Checked before the truncation below, whose new mtime would look like a rewrite.
        self.check_unchanged()?;
        // A delivery killed since login left its partial message after the scanned bytes
        // (its note was written after our scan, so it starts past them): truncate it away
        // now, or the commit would carry it over as mail.
        let fcntl = self.options.locks.order.contains(&LockKind::Fcntl);
        if rollback::recover(&self.path, file, fcntl)? == rollback::Rollback::Owned {
            return Err(MailboxError::Busy);
        }
        let now = SystemTime::now();
        if self.options.keep_deleted {
            // Copied and synced first: a crash from here on can only duplicate them there.
            keep::keep_deleted(&self.path, file, &self.extents, deleted, now)?;
        }
        let summary = commit::commit(&self.path, file, &self.extents, self.len, deleted)?;
        log::debug!("committed {}: {summary:?}", self.path.display());
        if let Some(days) = self.options.keep_days {
            prune_kept(&self.path, days, now);
        }
        Ok(summary)
    }
}

/// Prunes `<mbox>.deleted` of what was deleted more than `days` ago, under the commit's locks.
/// The commit is done: a failure here is only logged, and the next commit tries again.
fn prune_kept(mbox: &Path, days: u32, now: SystemTime) {
    let cutoff = now
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(UNIX_EPOCH);
    match keep::prune(mbox, cutoff) {
        Ok(0) => {}
        Ok(n) => log::info!(
            "pruned {} deleted more than {} ago from {}",
            plural(n as u64, "kept message"),
            plural(u64::from(days), "day"),
            files::deleted(mbox).display()
        ),
        Err(e) => log::warn!(
            "pruning {} failed (kept as it was; tried again at the next commit): {e}",
            files::deleted(mbox).display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    fn looks(bytes: &[u8]) -> bool {
        looks_like_mbox(&file_with(bytes), bytes.len() as u64).unwrap()
    }

    #[test]
    fn a_from_line_anywhere_or_only_white_space_looks_like_an_mbox() {
        assert!(looks(b"From a Thu Jan  1 00:00:00 1970\n\nbody\n"));
        assert!(looks(b"junk before\nFrom a\n"));
        assert!(looks(b"\n\n \r\n\t"));
        assert!(!looks(b"\0\0\0 not an mbox at all\nFrom-less\n"));
        assert!(!looks(b"xFrom here\n>From there\n"));
        assert!(!looks(b"From"));
    }

    #[test]
    fn a_from_line_across_a_chunk_boundary_is_found() {
        for before in FILE_CHUNK - 6..=FILE_CHUNK + 1 {
            let mut bytes = vec![b'x'; before];
            bytes[before - 1] = b'\n';
            bytes.extend_from_slice(b"From a\n");
            assert!(looks(&bytes), "From_ line at {before}");
            let mut not = bytes.clone();
            not[before + 4] = b'_';
            assert!(!looks(&not), "no From_ line at {before}");
        }
    }
}
