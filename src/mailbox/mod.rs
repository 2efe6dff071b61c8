//! Storage behind the session: the `MailStore` and `Maildrop` traits, user names as a path
//! boundary, and the in-process lock table that makes sessions exclusive.

pub mod append;
pub mod commit;
pub mod fault;
pub mod files;
pub mod hide;
pub mod index;
pub mod inspect;
pub mod journal;
pub mod keep;
pub mod lock;
pub mod mbox;
pub mod memory;
pub mod positioned;
pub mod quote;
pub mod rollback;
pub mod scan;
pub mod template;
pub mod uid;
pub mod undelete;

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

/// A user name that is safe to put into a path: not empty, at most 255 octets, valid UTF-8,
/// no `/`, no NUL or control bytes, not starting with `.`, with non-empty parts around an `@`
/// whose domain does not start with `.` either, and neither it nor its local part ending in a
/// sidecar suffix (`files::SUFFIXES`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

/// Why a user name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNameError {
    /// The name is empty.
    Empty,
    /// The name is longer than `limits::MAX_USER_NAME`.
    TooLong,
    /// The name is not valid UTF-8.
    NotUtf8,
    /// The name holds a byte that could escape or confuse a path.
    BadCharacter,
    /// The name (or its domain part) starts with a dot.
    LeadingDot,
    /// The name has an empty local part (`@example.com`).
    EmptyLocalPart,
    /// The name (or its local part) ends in the suffix of a file poplar keeps beside an mbox,
    /// so its mailbox would be another user's side file.
    SidecarName,
}

impl fmt::Display for UserNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserNameError::Empty => "empty user name",
            UserNameError::TooLong => "user name too long",
            UserNameError::NotUtf8 => "user name is not UTF-8",
            UserNameError::BadCharacter => "user name has a character not allowed in a path",
            UserNameError::LeadingDot => "user name or domain starts with a dot",
            UserNameError::EmptyLocalPart => "user name has nothing before '@'",
            UserNameError::SidecarName => {
                "user name ends like a file poplar keeps beside a mailbox (.lock, .deleted, ...)"
            }
        })
    }
}

impl std::error::Error for UserNameError {}

impl UserName {
    /// Checks a user name before it can reach any path.
    pub fn new(raw: &[u8]) -> Result<UserName, UserNameError> {
        if raw.is_empty() {
            return Err(UserNameError::Empty);
        }
        if raw.len() > crate::limits::MAX_USER_NAME {
            return Err(UserNameError::TooLong);
        }
        let s = std::str::from_utf8(raw).map_err(|_| UserNameError::NotUtf8)?;
        if s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
            return Err(UserNameError::BadCharacter);
        }
        if s.starts_with('.') {
            return Err(UserNameError::LeadingDot);
        }
        let name = UserName(s.to_owned());
        if name.local_part().is_empty() {
            return Err(UserNameError::EmptyLocalPart);
        }
        if name.domain().starts_with('.') {
            return Err(UserNameError::LeadingDot);
        }
        // The local part too: `%n` puts it alone at the end of a path.
        if files::is_sidecar_name(s) || files::is_sidecar_name(name.local_part()) {
            return Err(UserNameError::SidecarName);
        }
        Ok(name)
    }

    /// The whole name (`%u`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `@`, or the whole name (`%n`).
    pub fn local_part(&self) -> &str {
        self.0.split_once('@').map_or(&self.0, |(n, _)| n)
    }

    /// The part after the first `@`, or empty (`%d`).
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Display for UserName {
    /// Shows the name escaped for logs: it came from a client or a file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::logsafe::escape(self.0.as_bytes()))
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a session knows of one message: its size as sent and its unique id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Octets as sent by RETR: CRLF line ends, before dot-stuffing (RFC 1939 §11).
    pub size: u64,
    /// The UIDL unique-id.
    pub uid: Uid,
}

/// A message's UIDL unique-id (RFC 1939 §7): 1 to 70 characters in 0x21..0x7E, once shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uid {
    /// poplar's own: the index's epoch and the message's serial, shown as 24 lowercase hex
    /// digits. Kept as numbers and shown only by UIDL: a login on 100,000 messages makes no
    /// 100,000 strings.
    Serial {
        /// The index's epoch (48 bits).
        epoch: u64,
        /// The message's serial, never reused within the epoch.
        serial: u64,
    },
    /// An IMAP server's: the message's `X-UID` and the folder's UIDVALIDITY, shown as 8 + 8
    /// lowercase hex digits, as Dovecot's POP3 server shows them by default
    /// (`pop3_uidl_format = %08Xu%08Xv`).
    Imap {
        /// The message's `X-UID`.
        uid: u32,
        /// The folder's UIDVALIDITY.
        validity: u32,
    },
    /// Any other: an `X-UIDL:` header's value, or a test store's digest.
    Text(String),
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LOW_48: u64 = 0xffff_ffff_ffff;
        match self {
            Uid::Serial { epoch, serial } => {
                write!(f, "{:012x}{:012x}", epoch & LOW_48, serial & LOW_48)
            }
            Uid::Imap { uid, validity } => write!(f, "{uid:08x}{validity:08x}"),
            Uid::Text(s) => f.write_str(s),
        }
    }
}

/// What a commit removed and left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSummary {
    /// Messages removed.
    pub deleted: usize,
    /// Bytes of the mailbox file before the commit.
    pub bytes_before: u64,
    /// Bytes of the mailbox file after the commit.
    pub bytes_after: u64,
}

/// Storage failures, each mapped by the session to one reply.
#[derive(Debug)]
pub enum MailboxError {
    /// Another session holds this maildrop.
    InUse,
    /// A lock toward delivery agents could not be had in time.
    Busy,
    /// Someone else changed the part of the mailbox this session saw.
    Changed,
    /// The mailbox exists but may not be read or written by poplar.
    Permission(io::Error),
    /// The mailbox path names something that can never be served as a mailbox (a directory,
    /// a device, a file with no From_ line): retrying will not help, the operator must look.
    Unusable(&'static str),
    /// Any other I/O failure.
    Io(io::Error),
    /// A commit's deletions were decided (its journal complete and synced) but applying them
    /// to the mbox failed, even when retried under the locks: the mbox may be part rewritten.
    Unfinished {
        /// The last failure.
        error: io::Error,
        /// Whether the journal is still in place, so that the next replay (login, delivery,
        /// start-up) finishes the deletions; `false` after a second fault made the replay
        /// set the journal aside or discard it.
        pending: bool,
    },
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::InUse => f.write_str("mailbox in use by another session"),
            MailboxError::Busy => f.write_str("mailbox locked by a delivery"),
            MailboxError::Changed => f.write_str("mailbox changed by another program"),
            MailboxError::Permission(e) => write!(f, "mailbox not accessible: {e}"),
            MailboxError::Unusable(why) => write!(f, "mailbox unusable: {why}"),
            MailboxError::Io(e) => write!(f, "mailbox I/O error: {e}"),
            MailboxError::Unfinished {
                error,
                pending: true,
            } => write!(
                f,
                "commit unfinished ({error}); its journal is kept and the next login, \
                 delivery or start-up applies it"
            ),
            MailboxError::Unfinished {
                error,
                pending: false,
            } => write!(
                f,
                "commit unfinished ({error}); its journal was not kept (see above), so \
                 some deleted messages may stay"
            ),
        }
    }
}

impl std::error::Error for MailboxError {}

impl From<io::Error> for MailboxError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::PermissionDenied {
            MailboxError::Permission(e)
        } else {
            MailboxError::Io(e)
        }
    }
}

/// Where maildrops come from.
pub trait MailStore: Send + Sync {
    /// Locks and scans the user's maildrop for one session. A missing mailbox is empty.
    fn open(&self, user: &UserName) -> Result<Box<dyn Maildrop>, MailboxError>;

    /// Where the user's maildrop is (a path), for log lines about it.
    fn location(&self, user: &UserName) -> String;
}

/// One session's exclusive view of a maildrop, fixed at login. Dropping it without
/// [`commit`](Maildrop::commit) changes nothing.
pub trait Maildrop: Send {
    /// The messages as numbered for this session (index 0 is message 1).
    fn messages(&self) -> &[MessageInfo];

    /// The stored bytes of message `index` (line ends as stored; the session's writer adds CR
    /// and dot-stuffing). Fails if the mailbox was changed under the session.
    fn reader(&mut self, index: usize) -> Result<Box<dyn Read + '_>, MailboxError>;

    /// Removes the messages whose flag in `deleted` is set, keeping every other message and
    /// any mail that arrived since login. Either everything is written and synced, or the
    /// maildrop is left as it was, or (a failure after the deletions were decided)
    /// [`MailboxError::Unfinished`] says what is left to do.
    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitSummary, MailboxError>;
}

/// What makes two sessions' maildrops one: for an mbox, the file itself (device and inode,
/// so that every name of it, through a symlink or a hard link, is one mailbox, found without
/// resolving a path); for a mailbox with no file yet, or another store, a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// A file, by device and inode.
    File {
        /// Its device.
        dev: u64,
        /// Its inode.
        ino: u64,
    },
    /// A name: a path or a user.
    Name(PathBuf),
}

impl From<&str> for LockKey {
    fn from(name: &str) -> Self {
        LockKey::Name(name.into())
    }
}

/// In-process exclusivity: one session per mailbox key ([`LockKey`]).
#[derive(Clone, Default)]
pub struct LockTable {
    held: Arc<(Mutex<HashSet<LockKey>>, Condvar)>,
}

/// Holds a [`LockTable`] entry; releases it on drop, panics included.
pub struct LockGuard {
    table: LockTable,
    key: LockKey,
}

impl LockTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `key`, waiting up to `limits::IN_USE_WAIT` for a session that is just ending to
    /// let go; `MailboxError::InUse` if it is still held then.
    pub fn acquire(&self, key: LockKey) -> Result<LockGuard, MailboxError> {
        let (lock, released) = &*self.held;
        let deadline = Instant::now() + crate::limits::IN_USE_WAIT;
        // A panic elsewhere while holding this mutex cannot leave the set half-updated.
        let mut held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while held.contains(&key) {
            let now = Instant::now();
            if now >= deadline {
                return Err(MailboxError::InUse);
            }
            held = released
                .wait_timeout(held, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        held.insert(key.clone());
        Ok(LockGuard {
            table: self.clone(),
            key,
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let (lock, released) = &*self.table.held;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        released.notify_all();
    }
}

/// Renders a 16-byte digest as 32 lowercase hex digits.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_that_could_escape_a_path_are_refused() {
        use UserNameError::*;
        let bad: &[(&[u8], UserNameError)] = &[
            (b"", Empty),
            (b"..", LeadingDot),
            (b".hidden", LeadingDot),
            (b"a/b", BadCharacter),
            (b"../etc/passwd", BadCharacter),
            (b"a\\b", BadCharacter),
            (b"a\0b", BadCharacter),
            (b"a\nb", BadCharacter),
            (b"\xff", NotUtf8),
            (b"@example.com", EmptyLocalPart),
            (b"bob@..", LeadingDot),
            (b"bob@.example", LeadingDot),
        ];
        for (raw, want) in bad {
            assert_eq!(UserName::new(raw), Err(*want), "{:?}", raw);
        }
        for raw in [
            "alice.lock",
            "alice.lock.123.4",
            "alice.poplar-lock",
            "alice.poplar-index",
            "alice.poplar-index.tmp",
            "alice.poplar-journal",
            "alice.poplar-journal.new",
            "alice.poplar-journal.orphan-77",
            "alice.poplar-append",
            "alice.deleted",
            "alice.lock@example.com",
            "alice@example.lock",
        ] {
            assert_eq!(UserName::new(raw.as_bytes()), Err(SidecarName), "{raw}");
        }
        assert!(UserName::new(b"alice.locksmith@example.com").is_ok());
        assert_eq!(UserName::new(&[b'a'; 256]), Err(TooLong));
        assert!(UserName::new(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn user_name_parts() {
        let u = UserName::new(b"alice@example.com").unwrap();
        assert_eq!(
            (u.as_str(), u.local_part(), u.domain()),
            ("alice@example.com", "alice", "example.com")
        );
        let u = UserName::new(b"bob").unwrap();
        assert_eq!((u.local_part(), u.domain()), ("bob", ""));
        let u = UserName::new(b"a@b@c").unwrap();
        assert_eq!((u.local_part(), u.domain()), ("a", "b@c"));
    }

    #[test]
    fn lock_table_is_exclusive_and_released_on_drop() {
        let t = LockTable::new();
        let g = t.acquire("/m/a".into()).unwrap();
        let started = Instant::now();
        assert!(matches!(t.acquire("/m/a".into()), Err(MailboxError::InUse)));
        assert!(started.elapsed() >= crate::limits::IN_USE_WAIT);
        let _other = t.acquire("/m/b".into()).unwrap();
        drop(g);
        assert!(t.acquire("/m/a".into()).is_ok());
    }

    #[test]
    fn a_login_waits_for_a_session_that_is_just_ending() {
        let t = LockTable::new();
        let g = t.acquire("/m/a".into()).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(g);
        });
        assert!(t.acquire("/m/a".into()).is_ok());
        releaser.join().unwrap();
    }

    #[test]
    fn uids_made_by_poplar_are_fixed_width_and_printable() {
        let shown = |epoch, serial| Uid::Serial { epoch, serial }.to_string();
        for (e, s) in [(0, 1), (u64::MAX, u64::MAX), (0x1234, 77)] {
            let u = shown(e, s);
            assert_eq!(u.len(), 24);
            assert!(u.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(shown(1, 2), shown(1, 3));
        assert_eq!(
            shown(0xabc_0000_0001, 0x1_0000_0000_00ff),
            "0abc000000010000000000ff"
        );
        assert_eq!(Uid::Text("whatever-1".into()).to_string(), "whatever-1");
        // Dovecot's POP3 server showed this for X-UID 1 in a folder of UIDVALIDITY 1796402539.
        let imap = Uid::Imap {
            uid: 1,
            validity: 1_796_402_539,
        };
        assert_eq!(imap.to_string(), "000000016b12ed6b");
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
