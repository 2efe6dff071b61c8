//! The files poplar keeps beside an mbox (each name written once, here) and how poplar opens
//! its own files: read and write, mode 0600, never through a symlink, believed only when
//! owned by us or root.
//!
//! Every sidecar is `<mbox><suffix>`: the mbox's directory is the one place poplar may write
//! (delivery agents need it for dotlocks anyway), and a name derived from the mbox's keeps
//! two mailboxes' sidecars apart.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The dotlock shared with delivery agents.
const DOTLOCK: &str = ".lock";
/// The unique file a dotlock is written to before the link: `.lock.<pid>.<n>`.
const DOTLOCK_UNIQUE: &str = ".lock.";
/// The session lock between poplar processes (flock).
const SESSION_LOCK: &str = ".poplar-lock";
/// The UID and message index.
const INDEX: &str = ".poplar-index";
/// Where a rebuilt index is written before it is renamed over the old one.
const INDEX_TMP: &str = ".poplar-index.tmp";
/// The commit journal.
const JOURNAL: &str = ".poplar-journal";
/// Where a replay writes a journal that carries appended mail, before the rename.
const JOURNAL_NEXT: &str = ".poplar-journal.new";
/// A journal a replay would not apply, kept for an operator: `.poplar-journal.orphan-<pid>-<n>`.
const JOURNAL_ORPHAN: &str = ".poplar-journal.orphan-";
/// The note of a delivery in progress.
const DELIVERY_NOTE: &str = ".poplar-append";
/// `--keep-deleted`: the messages sessions deleted.
const DELETED: &str = ".deleted";
/// Where the kept messages are rewritten (pruned, or some undeleted) before the rename.
const DELETED_TMP: &str = ".deleted.tmp";

/// Every sidecar suffix. A user name ending in one would name another user's side file (log
/// in as `alice.lock` and plant alice's dotlock), so `UserName::new` refuses it; a suffix
/// ending in `.` or `-` is followed by a variable part (a pid, a counter), so a name merely
/// holding it is refused too. Every name function below builds on an entry here.
pub const SUFFIXES: &[&str] = &[
    DOTLOCK,
    DOTLOCK_UNIQUE,
    SESSION_LOCK,
    INDEX,
    INDEX_TMP,
    JOURNAL,
    JOURNAL_NEXT,
    JOURNAL_ORPHAN,
    DELIVERY_NOTE,
    DELETED,
    DELETED_TMP,
];

/// Whether `name` ends in a sidecar suffix (or holds one that a variable part follows), so
/// that a file of that name could be some mailbox's side file.
pub fn is_sidecar_name(name: &str) -> bool {
    SUFFIXES.iter().any(|s| {
        if s.ends_with(['.', '-']) {
            name.contains(s)
        } else {
            name.ends_with(s)
        }
    })
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<mbox>.lock`: the dotlock.
pub fn dotlock(mbox: &Path) -> PathBuf {
    beside(mbox, DOTLOCK)
}

/// `<mbox>.lock.<pid>.<n>`: the unique file a dotlock is written to and then linked from.
pub fn dotlock_unique(mbox: &Path, n: u64) -> PathBuf {
    beside(mbox, &format!("{DOTLOCK_UNIQUE}{}.{n}", std::process::id()))
}

/// `<mbox>.poplar-lock`: the session lock file.
pub fn session_lock(mbox: &Path) -> PathBuf {
    beside(mbox, SESSION_LOCK)
}

/// `<mbox>.poplar-index`: the UID index.
pub fn index(mbox: &Path) -> PathBuf {
    beside(mbox, INDEX)
}

/// `<mbox>.poplar-index.tmp`: a rebuilt index before it replaces the old one.
pub fn index_tmp(mbox: &Path) -> PathBuf {
    beside(mbox, INDEX_TMP)
}

/// `<mbox>.poplar-journal`: the commit journal.
pub fn journal(mbox: &Path) -> PathBuf {
    beside(mbox, JOURNAL)
}

/// `<mbox>.poplar-journal.new`: a journal rewritten by a replay, before the rename.
pub fn journal_next(mbox: &Path) -> PathBuf {
    beside(mbox, JOURNAL_NEXT)
}

/// `<mbox>.poplar-journal.orphan-<pid>-<n>`: the `n`th name this process tries for a journal
/// it sets aside.
pub fn journal_orphan(mbox: &Path, n: u64) -> PathBuf {
    beside(mbox, &format!("{JOURNAL_ORPHAN}{}-{n}", std::process::id()))
}

/// Moves the journal at `journal` of `mbox` to a name of its own
/// ([`journal_orphan`]) and returns that name. It never replaces a file: an earlier orphan
/// may be the only copy of some mail, and a pid (in the name) is reused after a restart. So
/// the journal is hard-linked to a name no file has (link fails on an existing one), then
/// unlinked; on a file system without hard links it is renamed to a name found free, which
/// holds because every set-aside runs under the mailbox's delivery locks.
pub fn move_to_orphan(journal: &Path, mbox: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let to = journal_orphan(mbox, NEXT.fetch_add(1, Ordering::Relaxed));
        match std::fs::hard_link(journal, &to) {
            Ok(()) => {
                std::fs::remove_file(journal)?;
                return Ok(to);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EPERM | nix::libc::EOPNOTSUPP)
                ) =>
            {
                match std::fs::symlink_metadata(&to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        std::fs::rename(journal, &to)?;
                        return Ok(to);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// `<mbox>.poplar-journal.orphan-`: what the names of set-aside journals start with.
pub fn journal_orphan_prefix(mbox: &Path) -> PathBuf {
    beside(mbox, JOURNAL_ORPHAN)
}

/// `<mbox>.poplar-append`: the note of a delivery in progress.
pub fn delivery_note(mbox: &Path) -> PathBuf {
    beside(mbox, DELIVERY_NOTE)
}

/// `<mbox>.deleted`: the messages kept by `--keep-deleted`.
pub fn deleted(mbox: &Path) -> PathBuf {
    beside(mbox, DELETED)
}

/// `<mbox>.deleted.tmp`: the kept messages rewritten, before the rename over `<mbox>.deleted`.
pub fn deleted_tmp(mbox: &Path) -> PathBuf {
    beside(mbox, DELETED_TMP)
}

/// How far poplar trusts the file at a mailbox path. Where users can write the directory (a
/// template in their home directories), a symlink or another user's file planted at the path
/// would have poplar serve, rewrite or deliver into a file that is not that user's mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxTrust {
    /// `--mbox-follow-symlinks`: open a mailbox through a symlink.
    pub follow_symlinks: bool,
    /// `--mbox-any-owner`: use a mailbox owned by another user than poplar's.
    pub any_owner: bool,
}

/// How poplar opens a mailbox file itself: read and write, and no symlink followed unless
/// `trust` allows it. The caller adds how it may be created.
pub fn mailbox_file(trust: MailboxTrust) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if !trust.follow_symlinks {
        o.custom_flags(no_follow());
    }
    o
}

/// Why the mailbox just opened as `file` may not be used (not a regular file, or owned by
/// another user without `--mbox-any-owner`); `None` when it may.
pub fn mailbox_refusal(file: &File, trust: MailboxTrust) -> io::Result<Option<&'static str>> {
    Ok(refusal(&file.metadata()?, trust))
}

/// [`mailbox_refusal`] for a mailbox whose metadata `m` the caller has just read.
pub fn refusal(m: &std::fs::Metadata, trust: MailboxTrust) -> Option<&'static str> {
    if !m.is_file() {
        Some("not a regular file")
    } else if !trust.any_owner && m.uid() != euid() {
        Some("owned by another user than poplar's (--mbox-any-owner allows it)")
    } else {
        None
    }
}

/// Whether an open of a mailbox failed on a symlink that was not to be followed.
pub fn is_refused_symlink(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ELOOP)
}

/// The flag that makes an open fail on a symlink.
fn no_follow() -> i32 {
    nix::libc::O_NOFOLLOW
}

/// Whether a sidecar file may be believed: a regular file owned by us or by root. Where other
/// users may create files beside the mbox, one of theirs must not steer a replay or a scan.
pub fn ours(file: &File) -> io::Result<bool> {
    Ok(ours_by(&file.metadata()?))
}

/// [`ours`] for a file whose metadata `m` the caller has just read.
pub fn ours_by(m: &std::fs::Metadata) -> bool {
    m.is_file() && (m.uid() == euid() || m.uid() == 0)
}

/// The user poplar runs as (its effective uid).
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// How poplar opens a sidecar file of its own (index, journal, session lock, kept mail): read
/// and write, mode 0600 if created, and never through a symlink (the mbox's directory may be
/// writable by others). The caller adds how it may be created.
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(no_follow());
    o
}

/// Opens the private file at `path`, creating it empty if it is missing.
pub fn open_or_create(path: &Path) -> io::Result<File> {
    private_file().create(true).truncate(false).open(path)
}

/// Opens (creating) the index of `mbox`.
pub fn open_index(mbox: &Path) -> io::Result<File> {
    open_or_create(&index(mbox))
}

/// Creates `path` afresh for writing (mode 0600, no symlink followed), removing a leftover of
/// an interrupted run first: we never write into a file someone else made.
pub fn create_fresh(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    private_file().create_new(true).open(path)
}

/// How a file that other programs read is created: a dotlock, a delivery note. Write only,
/// new (O_EXCL, which never follows a symlink), mode 0644: a server running as another user
/// than the delivery agent must read it. It holds a pid, a host and offsets, nothing secret.
pub fn shared_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(no_follow());
    o
}

/// Opens a sidecar to read it only, never through a symlink (`poplar check`, a delivery
/// note).
pub fn read_only(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(no_follow())
        .open(path)
}

/// Makes a rename or removal in the mbox's directory durable.
pub fn sync_dir(mbox: &Path) -> io::Result<()> {
    let dir = match mbox.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names_are_the_mbox_name_and_a_suffix() {
        let m = Path::new("/var/mail/bob");
        let pid = std::process::id();
        let names = [
            (dotlock(m), "/var/mail/bob.lock".to_owned()),
            (dotlock_unique(m, 7), format!("/var/mail/bob.lock.{pid}.7")),
            (session_lock(m), "/var/mail/bob.poplar-lock".into()),
            (index(m), "/var/mail/bob.poplar-index".into()),
            (index_tmp(m), "/var/mail/bob.poplar-index.tmp".into()),
            (journal(m), "/var/mail/bob.poplar-journal".into()),
            (journal_next(m), "/var/mail/bob.poplar-journal.new".into()),
            (
                journal_orphan(m, 3),
                format!("/var/mail/bob.poplar-journal.orphan-{pid}-3"),
            ),
            (delivery_note(m), "/var/mail/bob.poplar-append".into()),
            (deleted(m), "/var/mail/bob.deleted".into()),
            (deleted_tmp(m), "/var/mail/bob.deleted.tmp".into()),
        ];
        for (got, want) in names {
            assert_eq!(got, PathBuf::from(&want));
            // A sidecar added here is also one that no user name may alias.
            let name = want.strip_prefix("/var/mail/").unwrap();
            assert!(is_sidecar_name(name), "{name}");
        }
        assert!(
            journal_orphan(m, 0)
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(journal_orphan_prefix(m).as_os_str().as_encoded_bytes())
        );
    }

    #[test]
    fn a_journal_set_aside_never_replaces_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        let journal = journal(&mbox);
        // Orphans of an earlier process with this pid hold the first names this one tries.
        let older: Vec<_> = (0..100).map(|n| journal_orphan(&mbox, n)).collect();
        for p in &older {
            std::fs::write(p, "older").unwrap();
        }
        let mut kept = Vec::new();
        for text in ["first", "second", "third"] {
            std::fs::write(&journal, text).unwrap();
            kept.push(move_to_orphan(&journal, &mbox).unwrap());
            assert!(!journal.exists());
        }
        let texts: Vec<_> = kept.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(texts, [&b"first"[..], b"second", b"third"]);
        for p in &older {
            assert_eq!(std::fs::read(p).unwrap(), b"older", "{}", p.display());
        }
    }

    #[test]
    fn only_names_ending_in_a_sidecar_suffix_are_sidecar_names() {
        for name in [
            "bob.lock.1.2",
            "bob.lock.x",
            "bob.poplar-journal.orphan-7-2",
            "a.deleted",
        ] {
            assert!(is_sidecar_name(name), "{name}");
        }
        for name in [
            "bob",
            "bob.locks",
            "bob.lockx",
            "lock",
            "bob.new",
            "bob.deleted.x",
        ] {
            assert!(!is_sidecar_name(name), "{name}");
        }
    }

    #[test]
    fn private_files_are_not_opened_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_or_create(&link).is_err());
        assert!(read_only(&link).is_err());
        assert!(shared_file().open(&link).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
    }
}
