//! `poplar --dev`: a development mailbox server on 127.0.0.1 that takes any user name, keeps
//! its mailboxes in one directory, and logs every command (secrets masked).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::auth::UsersHandle;
use crate::auth::oauth::BearerTokens;
use crate::config::{Config, DEV_PASSWORD, DevMode};
use crate::mailbox::mbox::{MboxOptions, MboxStore};
use crate::mailbox::template::MailTemplate;
use crate::mailbox::{MailStore, MailboxError, Maildrop, UserName};
use crate::server::{Server, wiring};
use crate::session::Context;

use super::api::{Api, Shared};
use super::faults::Faults;
use super::sessions::DevWatcher;
use super::smtp::DevIntake;

/// mbox files that come into being at first login, so the developer sees them at once.
pub struct DevStore {
    template: MailTemplate,
    inner: MboxStore,
}

impl DevStore {
    /// A store over the mbox files at `template`, read, locked and committed as `options`
    /// say (the storage flags and `--dev-keep-deleted`).
    pub fn new(template: MailTemplate, options: MboxOptions) -> DevStore {
        DevStore {
            inner: MboxStore::with_options(template.clone(), options),
            template,
        }
    }
}

impl MailStore for DevStore {
    fn open(&self, user: &UserName) -> Result<Box<dyn Maildrop>, MailboxError> {
        create_if_missing(&self.template.expand(user))?;
        self.inner.open(user)
    }

    fn location(&self, user: &UserName) -> String {
        self.inner.location(user)
    }
}

/// Creates an empty mbox, readable by its owner only: mail is private even on a developer's
/// machine, and `poplar deliver` creates mailboxes 0600 too.
fn create_if_missing(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {
            log::info!("created mailbox {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the directory, prints how to use the server, and serves until stopped.
pub fn run(config: &Config) -> Result<(), String> {
    let mode = config
        .dev
        .as_ref()
        .ok_or_else(|| "dev::run needs a --dev configuration".to_owned())?;
    let made = if mode.fresh {
        std::fs::create_dir(&mode.dir)
    } else {
        std::fs::create_dir_all(&mode.dir)
    };
    made.map_err(|e| format!("cannot create {}: {e}", mode.dir.display()))?;
    let store = Arc::new(DevStore::new(mode.template(), config.mbox.clone()));
    let shared = Shared {
        faults: Arc::new(Faults::new(mode.faults.clone())),
        ..Shared::default()
    };
    let watcher = Arc::new(DevWatcher::new(
        shared.sessions.clone(),
        shared.faults.clone(),
    ));
    let ctx = context(config, mode, store.clone(), shared.tokens.clone(), watcher);
    let server =
        Server::bind(config, ctx).map_err(|e| format!("cannot start the dev server: {e}"))?;
    let smtp = match mode.smtp {
        Some(addr) => {
            let intake = DevIntake::new(mode.dir.clone(), mode.template(), config.mbox.clone());
            let smtp = super::smtp::start(addr, intake, mode.smtp_max_size)
                .map_err(|e| format!("cannot take SMTP on {addr}: {e}"))?;
            Some(smtp)
        }
        None => None,
    };
    let http = match mode.http {
        Some(addr) => {
            let api = Api::new(
                mode.dir.clone(),
                mode.template(),
                store,
                config.mbox.clone(),
                mode.smtp_max_size,
                shared,
            )
            .map_err(|e| format!("cannot keep the seed mailboxes for the HTTP API: {e}"))?;
            let http = super::api::start(addr, Arc::new(api))
                .map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))?;
            Some(http)
        }
        None => None,
    };
    print!(
        "{}",
        banner(
            config,
            mode,
            &server.local_addrs(),
            smtp.as_ref().map(super::smtp::Smtp::addr),
            http.as_ref().map(super::api::Http::addr)
        )
    );
    let served = super::daemon::serve(server);
    drop((smtp, http));
    // A directory poplar picked is its own: nothing else knows its name to look in it again.
    if mode.fresh {
        match std::fs::remove_dir_all(&mode.dir) {
            Ok(()) => log::info!("removed {}", mode.dir.display()),
            Err(e) => log::warn!("could not remove {}: {e}", mode.dir.display()),
        }
    }
    served
}

/// The sessions' context in dev mode: anyone logs in (by password, or by XOAUTH2 and
/// OAUTHBEARER as `tokens` say), mailboxes appear in `store`, and `watcher` sees every
/// session; every server flag applies as in the daemon.
pub fn context(
    config: &Config,
    mode: &DevMode,
    store: Arc<DevStore>,
    tokens: BearerTokens,
    watcher: Arc<DevWatcher>,
) -> Context {
    let users = mode.users().with_bearer_tokens(tokens);
    let mut ctx = wiring::context_for(config, UsersHandle::new(users), store);
    ctx.watcher = Some(watcher);
    ctx
}

/// What the developer needs to know, printed at start. `addrs` are the server's, the
/// `--listen` ones first, then the `--listen-tls` ones.
fn banner(
    config: &Config,
    mode: &DevMode,
    addrs: &[std::net::SocketAddr],
    smtp: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
) -> String {
    let password = if mode.any_password {
        "any password".to_owned()
    } else {
        format!("password '{DEV_PASSWORD}'")
    };
    let mut s = format!(
        "poplar --dev: mailboxes in {}\n  any user name logs in with {password}; \
         its mbox is {}/<user>, created at first login\n  \
         or with any OAuth token over SASL XOAUTH2 or OAUTHBEARER (docs/dev.md)\n",
        mode.dir.display(),
        mode.dir.display()
    );
    if mode.fresh {
        s.push_str("  the directory is new and is removed when poplar stops\n");
    }
    if config.mbox.keep_deleted {
        s.push_str("  messages deleted at QUIT are moved to <user>.deleted beside the mbox\n");
    }
    s.push_str(&format!(
        "  fill a mailbox: poplar seed --dev {} --to <user> FILE.eml|DIR|MBOX...\n",
        mode.dir.display()
    ));
    let (plain, tls) = addrs.split_at(config.listen.len().min(addrs.len()));
    for a in plain {
        s.push_str(&format!("  listening on {a}\n"));
    }
    for a in tls {
        s.push_str(&format!("  POP3S (TLS from the first byte) on {a}\n"));
    }
    if let Some(files) = &config.tls {
        s.push_str(&format!(
            "  STLS offered with the certificate in {}\n",
            files.cert.display()
        ));
    }
    if let Some(a) = smtp {
        s.push_str(&format!(
            "  SMTP on {a}: mail to <user>@<any domain> lands in <user>'s mbox\n"
        ));
    }
    if let Some(a) = http {
        s.push_str(&format!(
            "  HTTP on {a}: the page at http://{a}/, the API under /api/v1\n"
        ));
    }
    if !mode.faults.rules.is_empty() {
        s.push_str(&format!(
            "  {} in force (--dev-faults)\n",
            crate::plural::plural(mode.faults.rules.len() as u64, "fault rule")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mailbox_appears_at_first_login() {
        let dir = tempfile::tempdir().unwrap();
        let mode = DevMode::new(Some(dir.path().into()), false);
        let store = DevStore::new(mode.template(), MboxOptions::default());
        let user = UserName::new(b"carol").unwrap();
        let drop = store.open(&user).unwrap();
        assert!(drop.messages().is_empty());
        assert_eq!(std::fs::read(dir.path().join("carol")).unwrap(), b"");
    }

    #[test]
    fn a_new_dev_mailbox_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = DevMode::new(Some(dir.path().into()), false);
        let store = DevStore::new(mode.template(), MboxOptions::default());
        store.open(&UserName::new(b"dora").unwrap()).unwrap();
        let meta = std::fs::metadata(dir.path().join("dora")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    /// A dev server over a fresh directory, any password, with `tweak`s to its configuration;
    /// stopped when the returned guard drops.
    struct DevServer {
        addr: std::net::SocketAddr,
        handle: crate::server::ShutdownHandle,
        thread: Option<std::thread::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl DevServer {
        fn start(tweak: impl FnOnce(&mut Config)) -> DevServer {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Config::dev(DevMode::new(Some(dir.path().into()), true));
            config.listen = vec!["127.0.0.1:0".parse().unwrap()];
            config.auth_failure_delay = std::time::Duration::ZERO;
            tweak(&mut config);
            let mode = config.dev.clone().unwrap();
            let server = Server::bind(
                &config,
                context(
                    &config,
                    &mode,
                    Arc::new(DevStore::new(mode.template(), config.mbox.clone())),
                    BearerTokens::default(),
                    Arc::new(DevWatcher::new(Arc::default(), Arc::default())),
                ),
            )
            .unwrap();
            let addr = server.local_addrs()[0];
            let handle = server.shutdown_handle();
            let thread = std::thread::spawn(move || server.run().unwrap());
            DevServer {
                addr,
                handle,
                thread: Some(thread),
                _dir: dir,
            }
        }

        fn connect(&self) -> Client {
            let stream = std::net::TcpStream::connect(self.addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            let mut c = Client {
                reader: io::BufReader::new(stream.try_clone().unwrap()),
                writer: stream,
                greeting: String::new(),
            };
            c.greeting = c.line();
            c
        }
    }

    impl Drop for DevServer {
        fn drop(&mut self) {
            self.handle.stop();
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    struct Client {
        reader: io::BufReader<std::net::TcpStream>,
        writer: std::net::TcpStream,
        greeting: String,
    }

    impl Client {
        /// The next line, or "" at the end of the connection.
        fn line(&mut self) -> String {
            use std::io::BufRead;
            let mut l = String::new();
            self.reader.read_line(&mut l).unwrap();
            l
        }

        fn ask(&mut self, command: &str) -> String {
            use std::io::Write;
            self.writer
                .write_all(format!("{command}\r\n").as_bytes())
                .unwrap();
            self.line()
        }

        /// The lines of a multi-line reply after its status line, up to the terminator.
        fn lines(&mut self) -> Vec<String> {
            std::iter::from_fn(|| Some(self.line()))
                .take_while(|l| l != ".\r\n" && !l.is_empty())
                .collect()
        }
    }

    #[test]
    fn dev_honours_no_apop() {
        let on = DevServer::start(|_| {});
        let mut c = on.connect();
        assert!(c.greeting.contains('<'), "{}", c.greeting);
        assert!(c.ask("CAPA").starts_with("+OK"));
        assert!(c.lines().iter().any(|l| l.contains("CRAM-MD5")));
        let off = DevServer::start(|c| c.apop = false);
        let mut c = off.connect();
        assert!(!c.greeting.contains('<'), "{}", c.greeting);
        assert!(c.ask("CAPA").starts_with("+OK"));
        let caps = c.lines();
        assert!(caps.iter().any(|l| l.starts_with("SASL")), "{caps:?}");
        assert!(!caps.iter().any(|l| l.contains("CRAM-MD5")), "{caps:?}");
        assert!(
            c.ask("APOP alice 0123456789abcdef0123456789abcdef")
                .starts_with("-ERR")
        );
    }

    #[test]
    fn dev_honours_max_bad_commands() {
        let server = DevServer::start(|c| c.max_bad_commands = 1);
        let mut c = server.connect();
        assert!(c.ask("BOGUS").starts_with("-ERR"));
        assert!(c.ask("BOGUS").starts_with("-ERR too many bad commands"));
        assert_eq!(c.line(), "", "the connection is closed");
    }

    #[test]
    fn dev_honours_max_per_user() {
        let server = DevServer::start(|c| c.max_per_user = 1);
        let mut first = server.connect();
        first.ask("USER dana");
        assert!(first.ask("PASS x").starts_with("+OK"));
        let mut second = server.connect();
        second.ask("USER dana");
        let refused = second.ask("PASS x");
        assert!(
            refused.starts_with("-ERR [IN-USE] too many sessions for this user"),
            "{refused}"
        );
    }

    #[test]
    fn dev_honours_the_authorization_timeout_and_the_address_cap() {
        let server = DevServer::start(|c| {
            c.auth_timeout = std::time::Duration::from_millis(300);
            c.max_per_address = 1;
        });
        let mut first = server.connect();
        assert!(first.greeting.starts_with("+OK"));
        let second = server.connect();
        assert!(
            second
                .greeting
                .contains("too many connections from your address"),
            "{}",
            second.greeting
        );
        // Never logging in: cut off at the deadline (the read timeout is far longer).
        assert_eq!(first.line(), "");
    }

    #[test]
    fn dev_honours_the_idle_timeout_after_login() {
        let server = DevServer::start(|c| c.idle_timeout = std::time::Duration::from_millis(300));
        let mut c = server.connect();
        c.ask("USER erin");
        assert!(c.ask("PASS x").starts_with("+OK"));
        assert_eq!(c.line(), "", "closed once idle");
    }
}
