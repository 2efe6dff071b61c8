//! Locks on an mbox: the session lock file between poplar processes, and the dotlock plus
//! open-file-description record lock shared with delivery agents, with bounded waits and
//! stale-dotlock breaking; and the one loop that opens an mbox, locks it and checks that it
//! is still the mailbox.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use super::{MailboxError, files};
use crate::limits::{LOCK_RETRY_DOUBLINGS, LOCK_RETRY_FIRST, MAX_DOTLOCK_TEXT, REOPEN_TRIES};

/// A lock toward delivery agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `<mbox>.lock`, created with O_EXCL, holding our pid and host.
    Dotlock,
    /// A whole-file POSIX write lock taken as an open-file-description lock.
    Fcntl,
}

impl LockKind {
    /// Parses `--mbox-locks`: a comma-separated list of `dotlock` and `fcntl`, in the order
    /// they are taken, each at most once.
    pub fn parse_list(s: &str) -> Result<Vec<LockKind>, String> {
        let mut kinds = Vec::new();
        for part in s.split(',') {
            let kind = match part.trim() {
                "dotlock" => LockKind::Dotlock,
                "fcntl" => LockKind::Fcntl,
                other => return Err(format!("unknown lock '{other}' (use dotlock, fcntl)")),
            };
            if kinds.contains(&kind) {
                return Err(format!("lock '{}' named twice", part.trim()));
            }
            kinds.push(kind);
        }
        Ok(kinds)
    }
}

impl LockOptions {
    /// Parses `--mbox-locks` into `self`: the lock kinds in order ([`LockKind::parse_list`]),
    /// and [`DOTLOCK_ON_READ`] anywhere in the list, which needs `dotlock` in it.
    pub fn parse_locks(&mut self, s: &str) -> Result<(), String> {
        let items: Vec<&str> = s.split(',').map(str::trim).collect();
        let on_read = items.iter().filter(|&&i| i == DOTLOCK_ON_READ).count();
        if on_read > 1 {
            return Err(format!("lock '{DOTLOCK_ON_READ}' named twice"));
        }
        let kinds: Vec<&str> = items
            .into_iter()
            .filter(|&i| i != DOTLOCK_ON_READ)
            .collect();
        let order = LockKind::parse_list(&kinds.join(","))?;
        if on_read == 1 && !order.contains(&LockKind::Dotlock) {
            return Err(format!("'{DOTLOCK_ON_READ}' needs 'dotlock' in the list"));
        }
        self.order = order;
        self.dotlock_on_read = on_read == 1;
        Ok(())
    }

    /// Whether a login that will write nothing may read under a shared fcntl read lock
    /// alone: the locks include fcntl (the one lock a reader can share with other readers
    /// and that every writer taking fcntl locks waits for), and the operator did not ask for
    /// the dotlock on reads.
    pub fn read_lock_alone(&self) -> bool {
        self.order.contains(&LockKind::Fcntl) && !self.dotlock_on_read
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Dotlock => "dotlock",
            LockKind::Fcntl => "fcntl",
        })
    }
}

/// The `--mbox-locks` item that asks for the dotlock when a login only reads, too.
pub const DOTLOCK_ON_READ: &str = "dotlock-on-read";

/// How locks toward delivery agents are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// Which locks, in order, when the mailbox is written (`--mbox-locks`, default
    /// `dotlock,fcntl`).
    pub order: Vec<LockKind>,
    /// Take them when a login only reads, too ([`DOTLOCK_ON_READ`] in `--mbox-locks`):
    /// otherwise a login that finds the mailbox as its index knows it holds only a shared
    /// fcntl read lock (see [`LockOptions::read_lock_alone`]).
    pub dotlock_on_read: bool,
    /// Longest wait for all of them (`--lock-timeout`).
    pub timeout: Duration,
    /// A dotlock whose file and mbox have not changed for this long is stale
    /// (`--stale-lock-age`).
    pub stale_after: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            order: vec![LockKind::Dotlock, LockKind::Fcntl],
            dotlock_on_read: false,
            timeout: crate::limits::DEFAULT_LOCK_TIMEOUT,
            stale_after: crate::limits::DEFAULT_STALE_LOCK_AGE,
        }
    }
}

/// Whether `path` still names the file open as `file`. A mail reader may replace the mbox by
/// rename, or remove it when empty, while we wait for the locks; then what we hold locks an
/// orphan that nobody reads again.
pub fn still_at_path(path: &Path, file: &File) -> io::Result<bool> {
    still_at(path, &file.metadata()?)
}

/// [`still_at_path`] for a file whose metadata `open` the caller has just read.
pub fn still_at(path: &Path, open: &std::fs::Metadata) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) => Ok((m.dev(), m.ino()) == (open.dev(), open.ino())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What [`open_locked`] came to.
#[derive(Debug)]
pub enum Opened<T> {
    /// `open` found no file to open.
    Missing,
    /// The file, and what was done with it under the locks (released since).
    Locked(File, T),
    /// The path named another file each time the locks were had.
    Replaced,
}

/// The one way to open an mbox and take the locks toward delivery agents on it: `open` opens
/// it (or finds it missing, or fails), the locks in `opts` are taken, and if the path still
/// names the open file, `locked` runs on it under the locks, which are released when it
/// returns. A mail reader may replace the mbox by rename, or remove it, while we wait for the
/// locks: then what we hold locks a file nobody reads again, so we open it again, up to
/// [`REOPEN_TRIES`] times. `open` runs again each time and may do more between the open and
/// the locks (the session takes its session lock there).
pub fn open_locked<T, E: From<MailboxError>>(
    path: &Path,
    opts: &LockOptions,
    mut open: impl FnMut() -> Result<Option<File>, E>,
    mut locked: impl FnMut(&File) -> Result<T, E>,
) -> Result<Opened<T>, E> {
    for _ in 0..REOPEN_TRIES {
        let Some(file) = open()? else {
            return Ok(Opened::Missing);
        };
        let held = lock_for_delivery(path, &file, opts)?;
        if !still_at_path(path, &file).map_err(MailboxError::from)? {
            drop(held);
            continue;
        }
        let done = locked(&file);
        drop(held);
        return done.map(|t| Opened::Locked(file, t));
    }
    Ok(Opened::Replaced)
}

/// Holds `<mbox>.poplar-lock` with flock for a session's whole life, so that sessions on one
/// mailbox are exclusive across poplar processes; the kernel drops it when the process dies.
/// Released explicitly on drop (see there).
#[derive(Debug)]
pub struct SessionLock {
    file: File,
}

impl Drop for SessionLock {
    /// Unlocks before the descriptor closes. Closing alone frees an flock only once no other
    /// descriptor shares it, and a child process forked by another thread of this process (an
    /// embedding test suite running clients, as tests/clients/clients.rs does) holds a copy until its
    /// exec: under load long enough for the next login to be refused `[IN-USE]`.
    fn drop(&mut self) {
        if let Err(e) = self.file.unlock() {
            log::error!("cannot release a session lock: {e}");
        }
    }
}

impl SessionLock {
    /// Takes the session lock of `mbox` without waiting; `InUse` if another process has it.
    pub fn acquire(mbox: &Path) -> Result<SessionLock, MailboxError> {
        // The file stays once made (nothing removes it, so no two sessions can lock two
        // different files of that name): a login after the first opens it without O_CREAT
        // and creates nothing.
        let path = files::session_lock(mbox);
        let file = match files::private_file().open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => files::open_or_create(&path)?,
            opened => opened?,
        };
        match file.try_lock() {
            Ok(()) => Ok(SessionLock { file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(MailboxError::InUse),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

/// The locks toward delivery agents, released (in reverse order) on drop.
#[derive(Debug)]
pub struct DeliveryLock<'f> {
    dotlock: Option<PathBuf>,
    fcntl: Option<&'f File>,
}

/// Takes the locks in `opts.order` on the mbox at `path`, open as `file`, waiting at most
/// `opts.timeout` in all. On timeout everything taken is released and the answer is `Busy`.
pub fn lock_for_delivery<'f>(
    path: &Path,
    file: &'f File,
    opts: &LockOptions,
) -> Result<DeliveryLock<'f>, MailboxError> {
    let deadline = Instant::now() + opts.timeout;
    let mut held = DeliveryLock {
        dotlock: None,
        fcntl: None,
    };
    for kind in &opts.order {
        match kind {
            LockKind::Dotlock => held.dotlock = Some(dotlock(path, opts, deadline)?),
            LockKind::Fcntl => {
                ofd_lock(file, libc::F_WRLCK, deadline)?;
                held.fcntl = Some(file);
            }
        }
    }
    Ok(held)
}

impl Drop for DeliveryLock<'_> {
    fn drop(&mut self) {
        let unlocked = self.fcntl.take().map(|f| ofd(f, libc::F_UNLCK));
        if let Some(Err(e)) = unlocked {
            log::error!("cannot release fcntl lock: {e}");
        }
        if let Some(p) = self.dotlock.take()
            && let Err(e) = std::fs::remove_file(&p)
        {
            log::error!("cannot remove dotlock {}: {e}", p.display());
        }
    }
}

/// A shared whole-file open-file-description read lock on an mbox, released on drop: what a
/// login that only reads holds while it checks the mailbox against its index. Every writer
/// that takes an fcntl lock (Postfix local, procmail, mutt, Dovecot, `poplar deliver`, a
/// committing session) waits for it, and it waits for them; readers share it.
#[derive(Debug)]
pub struct ReadLock<'f> {
    file: &'f File,
}

impl ReadLock<'_> {
    /// Takes the read lock on `file`, waiting at most `opts.timeout` (then `Busy`).
    pub fn take<'f>(file: &'f File, opts: &LockOptions) -> Result<ReadLock<'f>, MailboxError> {
        ofd_lock(file, libc::F_RDLCK, Instant::now() + opts.timeout)?;
        Ok(ReadLock { file })
    }
}

impl Drop for ReadLock<'_> {
    fn drop(&mut self) {
        if let Err(e) = ofd(self.file, libc::F_UNLCK) {
            log::error!("cannot release fcntl read lock: {e}");
        }
    }
}

/// Sleeps before the next attempt, or says the deadline has passed.
fn wait(deadline: Instant, attempt: &mut u32) -> Result<(), MailboxError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(MailboxError::Busy);
    }
    let pause = LOCK_RETRY_FIRST * (1 << (*attempt).min(LOCK_RETRY_DOUBLINGS));
    let slept = pause.min(deadline - now);
    crate::metrics::lock_waited(*attempt == 0, slept);
    *attempt += 1;
    std::thread::sleep(slept);
    Ok(())
}

fn ofd(file: &File, l_type: libc::c_int) -> nix::Result<libc::c_int> {
    let lock = libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        // Must be 0 for open-file-description locks.
        l_pid: 0,
    };
    fcntl(file, FcntlArg::F_OFD_SETLK(&lock))
}

fn ofd_lock(file: &File, l_type: libc::c_int, deadline: Instant) -> Result<(), MailboxError> {
    let mut attempt = 0;
    loop {
        match ofd(file, l_type) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                wait(deadline, &mut attempt)?
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(MailboxError::Io(e.into())),
        }
    }
}

/// What a dotlock says about its owner.
fn dotlock_text() -> String {
    format!(
        "{} {}\n",
        std::process::id(),
        crate::hostname::system_hostname()
    )
}

fn dotlock(mbox: &Path, opts: &LockOptions, deadline: Instant) -> Result<PathBuf, MailboxError> {
    let path = files::dotlock(mbox);
    let mut attempt = 0;
    loop {
        if try_dotlock(mbox, &path)? {
            return Ok(path);
        }
        let seen = std::fs::symlink_metadata(&path).map(|m| m.ino()).ok();
        if let Some(why) = stale(&path, mbox, opts.stale_after)? {
            // Only the lock we judged: another taker may have broken it and made a new one.
            if std::fs::symlink_metadata(&path).map(|m| m.ino()).ok() == seen {
                log::warn!("breaking stale dotlock {}: {why}", path.display());
                match std::fs::remove_file(&path) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        wait(deadline, &mut attempt)?;
    }
}

/// Tries once to create the dotlock `path` of `mbox` with our pid and host in it; whether we
/// got it.
/// The text goes into a unique file first, which is then hard-linked to the lock name (as
/// liblockfile and procmail do), so that a process killed at any instant never leaves an
/// empty dotlock, which nobody could tell from a live one for `--stale-lock-age`.
fn try_dotlock(mbox: &Path, path: &Path) -> io::Result<bool> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = files::dotlock_unique(mbox, NEXT.fetch_add(1, Ordering::Relaxed));
    let mut f = files::shared_file().open(&tmp)?;
    let linked = f.write_all(dotlock_text().as_bytes()).and_then(|()| {
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // NFS may report a failure for a link that was made.
            Err(_) if f.metadata()?.nlink() == 2 => Ok(true),
            Err(e) => Err(e),
        }
    });
    let _ = std::fs::remove_file(&tmp);
    match linked {
        // A file system without hard links: create the lock directly.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
            match files::shared_file().open(path) {
                Ok(mut f) => {
                    if let Err(e) = f.write_all(dotlock_text().as_bytes()) {
                        let _ = std::fs::remove_file(path);
                        return Err(e);
                    }
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

/// Why the dotlock at `path` is stale, or `None` if it may be live: stale when it names a
/// process of this host that is gone, or when neither it nor the mbox changed for
/// `stale_after`. A lock with no text to read ([`read_dotlock`]: a symlink, a FIFO) is judged
/// by its age alone.
pub fn stale(path: &Path, mbox: &Path, stale_after: Duration) -> io::Result<Option<String>> {
    // Gone already: the next attempt will tell.
    let Some((meta, text)) = read_dotlock(path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&text);
    let mut words = text.split_whitespace();
    let pid = words.next().and_then(|p| p.parse::<i32>().ok());
    let host = words.next();
    let local = host.is_none_or(|h| h == crate::hostname::system_hostname());
    if let Some(pid) = pid.filter(|&p| p > 0 && local && process_gone(p)) {
        return Ok(Some(format!("process {pid} is gone")));
    }
    let age = |m: &std::fs::Metadata| {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(m.mtime().max(0) as u64);
        SystemTime::now().duration_since(t).unwrap_or_default()
    };
    let mbox_age = std::fs::metadata(mbox).map_or(Duration::MAX, |m| age(&m));
    let idle = age(&meta).min(mbox_age);
    Ok((idle >= stale_after).then(|| format!("unchanged for {} s", idle.as_secs())))
}

/// The dotlock at `path` (its own metadata, not a link's target's) and up to
/// [`MAX_DOTLOCK_TEXT`] octets of its text; `None` if there is none. Only a regular file is
/// read, opened without following a symlink and without blocking: anyone who can write the
/// mail directory can plant a lock, and a FIFO there would block the open for good, a
/// symlink would have us read any file. Any other kind of lock has no text.
pub fn read_dotlock(path: &Path) -> io::Result<Option<(std::fs::Metadata, Vec<u8>)>> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut text = Vec::new();
    let meta = match opened {
        Ok(f) => f.metadata().and_then(|meta| {
            if meta.is_file() {
                f.take(MAX_DOTLOCK_TEXT).read_to_end(&mut text)?;
            }
            Ok(meta)
        }),
        // A symlink (O_NOFOLLOW fails with ELOOP): the link itself is the lock.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => std::fs::symlink_metadata(path),
        Err(e) => Err(e),
    };
    match meta {
        Ok(meta) => Ok(Some((meta, text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether no process `pid` (> 0) exists on this host: `kill(pid, 0)` says ESRCH.
pub fn process_gone(pid: i32) -> bool {
    pid > 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn lock_lists_parse_in_order_and_refuse_mistakes() {
        use LockKind::*;
        assert_eq!(
            LockKind::parse_list("dotlock,fcntl"),
            Ok(vec![Dotlock, Fcntl])
        );
        assert_eq!(
            LockKind::parse_list("fcntl,dotlock"),
            Ok(vec![Fcntl, Dotlock])
        );
        assert_eq!(LockKind::parse_list("fcntl"), Ok(vec![Fcntl]));
        for bad in ["", "flock", "fcntl,fcntl", "dotlock,"] {
            assert!(LockKind::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dotlock_on_read_is_an_item_of_the_lock_list_and_needs_the_dotlock() {
        let mut o = LockOptions::default();
        assert!(o.read_lock_alone());
        o.parse_locks("dotlock,fcntl,dotlock-on-read").unwrap();
        assert_eq!(o.order, [LockKind::Dotlock, LockKind::Fcntl]);
        assert!(o.dotlock_on_read && !o.read_lock_alone());
        o.parse_locks("dotlock").unwrap();
        assert!(!o.dotlock_on_read && !o.read_lock_alone());
        for bad in [
            "fcntl,dotlock-on-read",
            "dotlock,dotlock-on-read,dotlock-on-read",
        ] {
            assert!(o.parse_locks(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_read_lock_is_shared_by_readers_and_excludes_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, b"").unwrap();
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&mbox)
                .unwrap()
        };
        let (a, b, w) = (open(), open(), open());
        let opts = LockOptions {
            order: vec![LockKind::Fcntl],
            timeout: Duration::from_millis(50),
            ..LockOptions::default()
        };
        let ra = ReadLock::take(&a, &opts).unwrap();
        let rb = ReadLock::take(&b, &opts).unwrap();
        assert!(matches!(
            lock_for_delivery(&mbox, &w, &opts),
            Err(MailboxError::Busy)
        ));
        drop((ra, rb));
        let held = lock_for_delivery(&mbox, &w, &opts).unwrap();
        assert!(matches!(ReadLock::take(&a, &opts), Err(MailboxError::Busy)));
        drop(held);
    }

    #[test]
    fn ofd_locks_exclude_each_other_within_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, b"").unwrap();
        let rw = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&mbox)
                .unwrap()
        };
        let (a, b) = (rw(), rw());
        let opts = LockOptions {
            order: vec![LockKind::Fcntl],
            timeout: Duration::from_millis(50),
            ..LockOptions::default()
        };
        let held = lock_for_delivery(&mbox, &a, &opts).unwrap();
        assert!(matches!(
            lock_for_delivery(&mbox, &b, &opts),
            Err(MailboxError::Busy)
        ));
        drop(held);
        assert!(lock_for_delivery(&mbox, &b, &opts).is_ok());
    }

    #[test]
    fn a_session_lock_is_released_on_drop_while_a_copy_of_its_descriptor_lives() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        let held = SessionLock::acquire(&mbox).unwrap();
        assert!(matches!(
            SessionLock::acquire(&mbox),
            Err(MailboxError::InUse)
        ));
        // What a child forked by another thread holds until its exec closes it.
        let copy = held.file.try_clone().unwrap();
        drop(held);
        assert!(SessionLock::acquire(&mbox).is_ok());
        drop(copy);
    }

    #[test]
    fn dotlock_holds_pid_and_host_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, b"").unwrap();
        let f = File::open(&mbox).unwrap();
        let opts = LockOptions {
            order: vec![LockKind::Dotlock],
            timeout: Duration::from_millis(50),
            ..LockOptions::default()
        };
        let held = lock_for_delivery(&mbox, &f, &opts).unwrap();
        let text = std::fs::read_to_string(files::dotlock(&mbox)).unwrap();
        assert_eq!(text, dotlock_text());
        // Our own live dotlock is not stale, so a second taker times out.
        assert!(matches!(
            lock_for_delivery(&mbox, &f, &opts),
            Err(MailboxError::Busy)
        ));
        drop(held);
        assert!(!files::dotlock(&mbox).exists());
        // The unique file the lock was linked from is gone too.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_dotlock_of_a_dead_process_is_stale_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, b"").unwrap();
        let lock = files::dotlock(&mbox);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = crate::hostname::system_hostname();
        std::fs::write(&lock, format!("{dead} {host}\n")).unwrap();
        let minute = Duration::from_secs(60);
        assert!(stale(&lock, &mbox, minute).unwrap().is_some());
        std::fs::write(&lock, format!("{dead} some-other-host\n")).unwrap();
        assert!(stale(&lock, &mbox, minute).unwrap().is_none());
        std::fs::write(&lock, format!("{} {host}\n", std::process::id())).unwrap();
        assert!(stale(&lock, &mbox, minute).unwrap().is_none());
        assert!(stale(&lock, &mbox, Duration::ZERO).unwrap().is_some());
    }

    #[test]
    fn a_fifo_as_dotlock_is_judged_by_its_age_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, b"").unwrap();
        let lock = files::dotlock(&mbox);
        nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (l, m) = (lock.clone(), mbox.clone());
        std::thread::spawn(move || {
            let judged = stale(&l, &m, Duration::ZERO).map(|s| s.is_some());
            let _ = tx.send(judged.map_err(|e| e.to_string()));
        });
        // A hang detector, not a speed test: an open that blocks waits for a writer forever.
        let Ok(judged) = rx.recv_timeout(Duration::from_secs(30)) else {
            // Be that writer, so the blocked thread (and this test process) can end.
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&lock);
            panic!("the stale check blocked on a FIFO");
        };
        assert_eq!(judged, Ok(true));
        assert_eq!(stale(&lock, &mbox, Duration::from_secs(60)).unwrap(), None);
    }

    #[test]
    fn a_symlink_as_dotlock_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, b"").unwrap();
        // The link points at a file that names a process of this host that is gone: read
        // through the link, the lock would be broken at once.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let target = dir.path().join("elsewhere");
        let host = crate::hostname::system_hostname();
        std::fs::write(&target, format!("{dead} {host}\n")).unwrap();
        let lock = files::dotlock(&mbox);
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        assert_eq!(stale(&lock, &mbox, Duration::from_secs(60)).unwrap(), None);
        assert!(stale(&lock, &mbox, Duration::ZERO).unwrap().is_some());
        assert!(read_dotlock(&lock).unwrap().unwrap().1.is_empty());
    }
}
