//! `poplar --dev`: a development mailbox server on 127.0.0.1 that takes any user name, keeps
//! its mailboxes in one directory, and logs every command (secrets masked).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{Anyone, Secret, Users, UsersHandle};
use crate::config::Config;
use crate::mailbox::mbox::{MboxOptions, MboxStore};
use crate::mailbox::template::MailTemplate;
use crate::mailbox::{MailStore, MailboxError, Maildrop, UserName};
use crate::server::Server;
use crate::session::{Context, Settings};

/// The password every user has in `--dev` mode (unless `--dev-any-password`).
pub const DEV_PASSWORD: &str = "poplar";

/// What `--dev` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevMode {
    /// Where the mailboxes live: `DIR/<user>`, one mbox file per user name.
    pub dir: PathBuf,
    /// Whether `dir` was picked by poplar and must not exist yet.
    pub fresh: bool,
    /// Accept any password (`--dev-any-password`).
    pub any_password: bool,
}

impl DevMode {
    /// The mode for `dir`, or for a new directory under the system temp dir when `None`
    /// (named here, created by [`run`]).
    pub fn new(dir: Option<PathBuf>, any_password: bool) -> DevMode {
        let fresh = dir.is_none();
        let dir = dir.unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            std::env::temp_dir().join(format!("poplar-dev-{}-{nanos:09}", std::process::id()))
        });
        DevMode {
            dir,
            fresh,
            any_password,
        }
    }

    /// The `--mail` template that puts each user's mbox at `DIR/<user name>`.
    pub fn template(&self) -> MailTemplate {
        let dir = self.dir.to_string_lossy().replace('%', "%%");
        MailTemplate::parse(&format!("{}/%u", dir.trim_end_matches('/')))
            .expect("an escaped directory and %u is a valid template")
    }

    /// Who may log in: anyone, with the fixed password or any.
    pub fn users(&self) -> Users {
        Users::anyone(if self.any_password {
            Anyone::AnyPassword
        } else {
            Anyone::Password(Secret::Plain(DEV_PASSWORD.as_bytes().to_vec()))
        })
    }
}

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
}

fn create_if_missing(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
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
    let server = Server::bind(config, context(config, mode))
        .map_err(|e| format!("cannot start the dev server: {e}"))?;
    print!(
        "{}",
        banner(mode, config.mbox.keep_deleted, &server.local_addrs())
    );
    serve(server)
}

fn serve(mut server: Server) -> Result<(), String> {
    server
        .handle_signals()
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    server.run().map_err(|e| format!("server failed: {e}"))
}

/// The sessions' context in dev mode: anyone logs in, mailboxes appear, commands are logged,
/// and the storage flags apply as in the daemon.
pub fn context(config: &Config, mode: &DevMode) -> Context {
    Context {
        users: UsersHandle::new(mode.users()),
        store: Arc::new(DevStore::new(mode.template(), config.mbox.clone())),
        guards: Arc::default(),
        settings: Settings {
            auth_failure_delay: config.auth_failure_delay,
            hostname: config.hostname.clone(),
            trace_commands: true,
            command_timeout: config.idle_timeout,
            ..Settings::default()
        },
    }
}

/// What the developer needs to know, printed at start.
fn banner(mode: &DevMode, keep_deleted: bool, addrs: &[std::net::SocketAddr]) -> String {
    let password = if mode.any_password {
        "any password".to_owned()
    } else {
        format!("password '{DEV_PASSWORD}'")
    };
    let mut s = format!(
        "poplar --dev: mailboxes in {}\n  any user name logs in with {password}; \
         its mbox is {}/<user>, created at first login\n",
        mode.dir.display(),
        mode.dir.display()
    );
    if keep_deleted {
        s.push_str("  messages deleted at QUIT are moved to <user>.deleted beside the mbox\n");
    }
    s.push_str(&format!(
        "  fill a mailbox: poplar seed --dev {} --to <user> FILE.eml|DIR|MBOX...\n",
        mode.dir.display()
    ));
    for a in addrs {
        s.push_str(&format!("  listening on {a}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_puts_each_user_in_the_directory_even_with_percent_signs() {
        let mode = DevMode::new(Some("/tmp/a%n b/".into()), false);
        let user = UserName::new(b"bob@example.org").unwrap();
        assert_eq!(
            mode.template().expand(&user),
            PathBuf::from("/tmp/a%n b/bob@example.org")
        );
    }

    #[test]
    fn a_fresh_directory_is_under_the_temp_dir() {
        let mode = DevMode::new(None, true);
        assert!(mode.fresh && mode.any_password);
        assert!(mode.dir.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn anyone_logs_in_with_the_dev_password_or_with_any() {
        let gate = crate::auth::Gate::new(1);
        let ok = |users: &crate::auth::Users, name: &[u8], pass: &[u8]| {
            users.verify_password(name, pass, &gate).unwrap().is_some()
        };
        let fixed = DevMode::new(Some("/x".into()), false).users();
        assert!(ok(&fixed, b"new-user", b"poplar"));
        assert!(!ok(&fixed, b"new-user", b"wrong"));
        assert!(!ok(&fixed, b"../etc", b"poplar"));
        let any = DevMode::new(Some("/x".into()), true).users();
        assert!(ok(&any, b"x@y", b"whatever"));
    }

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
}
