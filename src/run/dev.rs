//! `poplar --dev`: a development mailbox server on 127.0.0.1 that takes any user name, keeps
//! its mailboxes in one directory, and logs every command (secrets masked).

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::auth::UsersHandle;
use crate::config::{Config, DEV_PASSWORD, DevMode};
use crate::mailbox::mbox::{MboxOptions, MboxStore};
use crate::mailbox::template::MailTemplate;
use crate::mailbox::{MailStore, MailboxError, Maildrop, UserName};
use crate::server::{Server, wiring};
use crate::session::Context;

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
    super::daemon::serve(server)
}

/// The sessions' context in dev mode: anyone logs in and mailboxes appear; every server
/// flag applies as in the daemon.
pub fn context(config: &Config, mode: &DevMode) -> Context {
    wiring::context_for(
        config,
        UsersHandle::new(mode.users()),
        Arc::new(DevStore::new(mode.template(), config.mbox.clone())),
    )
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
