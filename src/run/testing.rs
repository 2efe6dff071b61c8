//! A real poplar for other crates' test suites: on 127.0.0.1 at a free port, over mbox files
//! in a temporary directory, with users and messages added by method calls.
//!
//! A POP3 client library can test against it like this:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//!
//! let server = poplar::testing::Server::start().unwrap();
//! server
//!     .add_user("alice", "secret")
//!     .add_message("alice", b"Subject: hello\r\n\r\nHi Alice!\r\n");
//!
//! let stream = TcpStream::connect(server.addr()).unwrap();
//! let mut reader = BufReader::new(stream.try_clone().unwrap());
//! let mut writer = stream;
//! let mut line = String::new();
//! let mut ask = |command: &str, line: &mut String| {
//!     if !command.is_empty() {
//!         writer.write_all(format!("{command}\r\n").as_bytes()).unwrap();
//!     }
//!     line.clear();
//!     reader.read_line(line).unwrap();
//! };
//! ask("", &mut line);
//! assert!(line.starts_with("+OK"));
//! ask("USER alice", &mut line);
//! ask("PASS secret", &mut line);
//! assert!(line.starts_with("+OK"), "{line}");
//! ask("STAT", &mut line);
//! assert_eq!(line, "+OK 1 29\r\n");
//! ask("DELE 1", &mut line);
//! ask("QUIT", &mut line);
//! assert!(server.mailbox("alice").is_empty());
//! // Dropping the server stops it and removes its directory.
//! ```

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::auth::{Secret, Users, UsersHandle};
use crate::config::Config;
use crate::mailbox::UserName;
use crate::mailbox::mbox::MboxStore;
use crate::mailbox::template::MailTemplate;
use crate::server::{self, ShutdownHandle, wiring};

/// A poplar server running on a thread of this process until dropped.
pub struct Server {
    addr: SocketAddr,
    dir: TempDir,
    users: UsersHandle,
    table: Mutex<Vec<(UserName, Secret)>>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server with no users on 127.0.0.1 at a free port. Failed logins are answered
    /// at once (no delay), so tests of wrong passwords stay quick.
    pub fn start() -> io::Result<Server> {
        let dir = TempDir::new("poplar-test-")?;
        let template = format!("{}/%u", dir.path().to_string_lossy().replace('%', "%%"));
        let template = MailTemplate::parse(&template)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut config = Config::new(PathBuf::new(), template.clone());
        config.users_file = None;
        config.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
        config.shutdown_grace = Duration::from_millis(100);
        config.auth_failure_delay = Duration::ZERO;
        let users = UsersHandle::new(Users::default());
        let store = Arc::new(MboxStore::with_options(template, config.mbox.clone()));
        let ctx = wiring::context_for(&config, users.clone(), store);
        let server = server::Server::bind(&config, ctx)?;
        let addr = server.local_addrs()[0];
        let handle = server.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("poplar-testing".into())
            .spawn(move || {
                if let Err(e) = server.run() {
                    log::error!("poplar::testing::Server failed: {e}");
                }
            })?;
        Ok(Server {
            addr,
            dir,
            users,
            table: Mutex::new(Vec::new()),
            handle,
            thread: Some(thread),
        })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a user (or changes its password) for every later login.
    ///
    /// # Panics
    /// If `name` is not a valid user name (empty, over 255 octets, with `/`, control
    /// characters, or a leading `.`).
    pub fn add_user(&self, name: &str, password: &str) -> &Server {
        let user = UserName::new(name.as_bytes())
            .unwrap_or_else(|e| panic!("poplar::testing: user name {name:?}: {e}"));
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|(u, _)| u != &user);
        table.push((user, Secret::Plain(password.as_bytes().to_vec())));
        self.users.replace(Users::new(table.iter().cloned()));
        self
    }

    /// Appends a message (RFC 5322 text, LF or CRLF line ends) to `user`'s mailbox, as a
    /// delivery would: with a `From ` line before it and `>`-quoting of body lines that would
    /// look like one.
    ///
    /// # Panics
    /// If `user` is not a valid user name or the mailbox cannot be written.
    pub fn add_message(&self, user: &str, message: &[u8]) -> &Server {
        let path = self.mailbox_path(user);
        let append = || -> io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            // One write: a session scanning meanwhile sees all of the message or none.
            file.write_all(&mbox_entry(message))
        };
        append().unwrap_or_else(|e| panic!("poplar::testing: cannot write {path:?}: {e}"));
        self
    }

    /// The path of `user`'s mbox file; until a message is added it does not exist, which
    /// poplar serves as an empty mailbox.
    ///
    /// # Panics
    /// If `user` is not a valid user name.
    pub fn mailbox_path(&self, user: &str) -> PathBuf {
        let name = UserName::new(user.as_bytes())
            .unwrap_or_else(|e| panic!("poplar::testing: user name {user:?}: {e}"));
        self.dir.path().join(name.as_str())
    }

    /// The bytes of `user`'s mbox file now (empty if it does not exist).
    ///
    /// # Panics
    /// If `user` is not a valid user name or the file cannot be read.
    pub fn mailbox(&self, user: &str) -> Vec<u8> {
        let path = self.mailbox_path(user);
        match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("poplar::testing: cannot read {path:?}: {e}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A private directory under the system's temporary directory (mode 0700, a name no other
/// process or `Server` uses), removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let mut tries = 0;
        loop {
            // The process id and a counter make the name unique among live processes; the
            // time makes a leftover of a dead process with the same id unlikely to be in the way.
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!(
                "{prefix}{}-{}-{nanos:x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = base.join(name);
            // mkdir fails on anything already there, a symbolic link included.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One mbox entry: a `From ` line, the message with `From ` lines (after any `>`s) quoted,
/// a line end at the end, and the blank line that separates messages.
fn mbox_entry(message: &[u8]) -> Vec<u8> {
    let mut out = b"From poplar-testing Thu Jan  1 00:00:00 1970\n".to_vec();
    for line in message.split_inclusive(|&b| b == b'\n') {
        let unquoted = line.iter().position(|&b| b != b'>').unwrap_or(line.len());
        if line[unquoted..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !message.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_private_distinct_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let a = TempDir::new("poplar-test-").unwrap();
        let b = TempDir::new("poplar-test-").unwrap();
        assert_ne!(a.path(), b.path());
        for d in [&a, &b] {
            assert_eq!(d.path().parent(), Some(std::env::temp_dir().as_path()));
            let name = d.path().file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("poplar-test-"), "{name}");
            let meta = std::fs::symlink_metadata(d.path()).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        }
        let path = a.path().to_owned();
        std::fs::create_dir(path.join("sub")).unwrap();
        std::fs::write(path.join("sub/file"), b"x").unwrap();
        std::fs::write(path.join("mbox"), b"x").unwrap();
        drop(a);
        assert!(!path.exists());
        assert!(b.path().is_dir());
    }

    #[test]
    fn mbox_entries_quote_from_lines_and_end_with_a_blank_line() {
        assert_eq!(
            mbox_entry(b"A: b\n\nFrom here\n>From there\nno end"),
            b"From poplar-testing Thu Jan  1 00:00:00 1970\n\
              A: b\n\n>From here\n>>From there\nno end\n\n"
        );
    }
}
