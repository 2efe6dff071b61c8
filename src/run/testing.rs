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
//!
//! [`Server::builder`] adds what the development server (`poplar --dev`) offers: its SMTP
//! intake and HTTP API on free ports, mailboxes seeded before it starts, and in-process
//! calls to deliver a message, list a mailbox and reset every mailbox to the seed, the same
//! code the HTTP API runs.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::api::{self, Api, Http, Shared};
use super::dev::DevStore;
use super::sessions::DevWatcher;
use super::smtp::{self, DevIntake, Smtp};
use crate::auth::oauth::BearerTokens;
use crate::auth::{Secret, Users, UsersHandle};
use crate::config::{Config, DEV_SMTP_MAX_SIZE};
use crate::mailbox::UserName;
use crate::mailbox::template::MailTemplate;
use crate::server::{self, ShutdownHandle, wiring};

pub use super::api::{Refusal, Summary};

/// A poplar server running on a thread of this process until dropped.
pub struct Server {
    addr: SocketAddr,
    // Dropped in this order after `drop` has stopped POP3: the other listeners, then the
    // directory they write to.
    smtp: Option<Smtp>,
    http: Option<Http>,
    api: Arc<Api>,
    users: UsersHandle,
    tokens: BearerTokens,
    table: Mutex<Vec<(UserName, Secret)>>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
    dir: TempDir,
}

/// What a [`Server`] starts with: users, seeded messages, and the SMTP intake and HTTP API
/// of the development server if asked for.
///
/// ```
/// use std::io::{BufRead, BufReader, Read, Write};
/// use std::net::TcpStream;
///
/// let server = poplar::testing::Server::builder()
///     .user("alice", "secret")
///     .message("alice", b"Subject: seeded\r\n\r\nkept by reset\r\n")
///     .smtp()
///     .http()
///     .start()
///     .unwrap();
///
/// // Mail from the application under test, over SMTP (by hand here; any client will do).
/// let smtp = TcpStream::connect(server.smtp_addr().unwrap()).unwrap();
/// let mut replies = BufReader::new(smtp.try_clone().unwrap());
/// let mut smtp = smtp;
/// let mut reply = || {
///     let mut line = String::new();
///     while line.get(3..4) != Some(" ") {
///         line.clear();
///         replies.read_line(&mut line).unwrap();
///     }
///     line
/// };
/// assert!(reply().starts_with("220"));
/// for command in ["EHLO app", "MAIL FROM:<app@example.com>", "RCPT TO:<alice@example.com>", "DATA"] {
///     smtp.write_all(format!("{command}\r\n").as_bytes()).unwrap();
///     reply();
/// }
/// smtp.write_all(b"Subject: sent\r\n\r\nhello\r\n.\r\n").unwrap();
/// assert!(reply().starts_with("250"));
///
/// // Listed in-process, as GET /api/v1/mailboxes/alice/messages lists it.
/// let subjects: Vec<String> = server.messages("alice").unwrap().into_iter().map(|m| m.subject).collect();
/// assert_eq!(subjects, ["seeded", "sent"]);
///
/// // The HTTP API answers too.
/// let mut http = TcpStream::connect(server.http_addr().unwrap()).unwrap();
/// http.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").unwrap();
/// let mut answer = String::new();
/// http.read_to_string(&mut answer).unwrap();
/// assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer}");
///
/// // Delivered in-process: its UIDL comes back. A reset leaves only the seed.
/// let uidl = server.deliver("alice", b"Subject: third\r\n\r\n3\r\n").unwrap();
/// assert_eq!(server.messages("alice").unwrap()[2].uidl, uidl);
/// server.reset().unwrap();
/// assert_eq!(server.messages("alice").unwrap().len(), 1);
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    users: Vec<(String, String)>,
    messages: Vec<(String, Vec<u8>)>,
    smtp: bool,
    http: bool,
}

impl Builder {
    /// Adds a user with a password (more can be added later with [`Server::add_user`]).
    pub fn user(mut self, name: &str, password: &str) -> Builder {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// Appends a message to `user`'s mailbox before the server starts, as
    /// [`Server::add_message`] does; these messages are the seed [`Server::reset`] restores.
    pub fn message(mut self, user: &str, message: &[u8]) -> Builder {
        self.messages.push((user.to_owned(), message.to_vec()));
        self
    }

    /// Takes mail over SMTP on 127.0.0.1 at a free port ([`Server::smtp_addr`]), as
    /// `poplar --dev-smtp` does: mail to `user@any.domain` lands in `user`'s mailbox.
    pub fn smtp(mut self) -> Builder {
        self.smtp = true;
        self
    }

    /// Serves the development server's HTTP API and page on 127.0.0.1 at a free port
    /// ([`Server::http_addr`]), as `poplar --dev-http` does (docs/dev.md lists the routes).
    pub fn http(mut self) -> Builder {
        self.http = true;
        self
    }

    /// Starts the server. Failed logins are answered at once (no delay), so tests of wrong
    /// passwords stay quick.
    ///
    /// # Panics
    /// If a user name given to [`user`](Builder::user) or [`message`](Builder::message) is
    /// not valid (see [`Server::add_user`]).
    pub fn start(self) -> io::Result<Server> {
        let dir = TempDir::new("poplar-test-")?;
        let template = format!("{}/%u", dir.path().to_string_lossy().replace('%', "%%"));
        let template = MailTemplate::parse(&template)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        for (user, message) in &self.messages {
            append_entry(&mailbox_in(dir.path(), user), message)?;
        }
        let mut config = Config::new(PathBuf::new(), template.clone());
        config.users_file = None;
        config.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
        config.shutdown_grace = Duration::from_millis(100);
        config.auth_failure_delay = Duration::ZERO;
        let shared = Shared::default();
        let tokens = shared.tokens.clone();
        let users = UsersHandle::new(Users::default().with_bearer_tokens(tokens.clone()));
        let store = Arc::new(DevStore::new(template.clone(), config.mbox.clone()));
        let api = Arc::new(Api::new(
            dir.path().to_owned(),
            template.clone(),
            store.clone(),
            config.mbox.clone(),
            DEV_SMTP_MAX_SIZE,
            shared.clone(),
        )?);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let smtp = if self.smtp {
            let intake = DevIntake::new(dir.path().to_owned(), template, config.mbox.clone());
            Some(smtp::start(loopback, intake, DEV_SMTP_MAX_SIZE)?)
        } else {
            None
        };
        let http = if self.http {
            Some(api::start(loopback, api.clone())?)
        } else {
            None
        };
        let mut ctx = wiring::context_for(&config, users.clone(), store);
        ctx.watcher = Some(Arc::new(DevWatcher::new(shared.sessions, shared.faults)));
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
        let server = Server {
            addr,
            smtp,
            http,
            api,
            users,
            tokens,
            table: Mutex::new(Vec::new()),
            handle,
            thread: Some(thread),
            dir,
        };
        for (name, password) in &self.users {
            server.add_user(name, password);
        }
        Ok(server)
    }
}

impl Server {
    /// Starts a server with no users on 127.0.0.1 at a free port, POP3 only: the same as
    /// `Server::builder().start()`.
    pub fn start() -> io::Result<Server> {
        Server::builder().start()
    }

    /// A server to set up before it starts: users, seeded mail, SMTP and HTTP.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the SMTP intake listens, if [`Builder::smtp`] asked for it.
    pub fn smtp_addr(&self) -> Option<SocketAddr> {
        self.smtp.as_ref().map(Smtp::addr)
    }

    /// Where the HTTP API listens, if [`Builder::http`] asked for it.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(Http::addr)
    }

    /// Appends a message to `user`'s mailbox (created if needed) as the HTTP API's
    /// `POST /api/v1/mailboxes/{user}/messages` does, through the sessions' locks, and
    /// returns its UIDL. Refused (409) while a POP3 session holds the mailbox, (400) for an
    /// invalid user name or an empty message.
    pub fn deliver(&self, user: &str, message: &[u8]) -> Result<String, Refusal> {
        self.api.append(user, &mut &message[..])
    }

    /// `user`'s messages in POP3 order, with the UIDL and size a POP3 client sees, as
    /// `GET /api/v1/mailboxes/{user}/messages` lists them. Refused (404) when the user has no
    /// mailbox, (409) while a POP3 session holds it.
    pub fn messages(&self, user: &str) -> Result<Vec<Summary>, Refusal> {
        self.api.messages(user)
    }

    /// Every mailbox back to what it held when the server started (the messages of
    /// [`Builder::message`]), as `POST /api/v1/reset` does; mailboxes made since are removed.
    /// Returns how many mailboxes the seed holds. Refused (409), with nothing changed, while a
    /// POP3 session holds any mailbox.
    pub fn reset(&self) -> Result<usize, Refusal> {
        self.api.reset()
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
        self.users
            .replace(Users::new(table.iter().cloned()).with_bearer_tokens(self.tokens.clone()));
        self
    }

    /// Puts the fault rules of `rules` (the JSON document `PUT /api/v1/faults` takes, see
    /// docs/dev.md) in force for the sessions that start from now on; a document that does not
    /// parse is refused with the reason, and the rules in force stay.
    pub fn set_faults(&self, rules: &str) -> Result<(), Refusal> {
        self.api.set_faults(rules.as_bytes())
    }

    /// The recent POP3 sessions, as `GET /api/v1/sessions` gives them (JSON): each command
    /// with its reply, the faults injected and what the client did that servers trip on.
    pub fn sessions_json(&self) -> String {
        self.api.sessions_json()
    }

    /// From now on only `token` logs `user` in by SASL XOAUTH2 or OAUTHBEARER (as `PUT
    /// /api/v1/mailboxes/{user}/token` does); until then, or after
    /// [`reset`](Server::reset), any non-empty token logs any user name in, as in
    /// `poplar --dev` (passwords stay those of [`add_user`](Server::add_user)).
    ///
    /// # Panics
    /// If `user` is not a valid user name.
    pub fn set_bearer_token(&self, user: &str, token: &str) -> &Server {
        let name = UserName::new(user.as_bytes())
            .unwrap_or_else(|e| panic!("poplar::testing: user name {user:?}: {e}"));
        self.tokens.set(&name, token.as_bytes());
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
        append_entry(&path, message)
            .unwrap_or_else(|e| panic!("poplar::testing: cannot write {path:?}: {e}"));
        self
    }

    /// The path of `user`'s mbox file; until a message is added or the user logs in it does
    /// not exist (a login creates it empty, as `poplar --dev` does).
    ///
    /// # Panics
    /// If `user` is not a valid user name.
    pub fn mailbox_path(&self, user: &str) -> PathBuf {
        mailbox_in(self.dir.path(), user)
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

/// The path of `user`'s mbox in `dir`.
///
/// # Panics
/// If `user` is not a valid user name.
fn mailbox_in(dir: &Path, user: &str) -> PathBuf {
    let name = UserName::new(user.as_bytes())
        .unwrap_or_else(|e| panic!("poplar::testing: user name {user:?}: {e}"));
    dir.join(name.as_str())
}

/// Appends `message` to the mbox at `path` (created if missing) in one write, so that a
/// session scanning meanwhile sees all of it or none.
fn append_entry(path: &Path, message: &[u8]) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&mbox_entry(message))
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
