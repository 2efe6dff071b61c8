//! The one place a `Config` becomes what sessions and connections run with: session
//! `Settings`, connection `Timeouts` and socket set-up, login guards, the users and mbox store
//! of a users file, and the TLS certificate. The daemon, `--inetd`, `--dev` and the test API
//! all wire themselves here, so a flag means the same in each.

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use crate::auth::UsersHandle;
use crate::auth::guard::Guards;
use crate::auth::passwd::{self, LineProblem};
use crate::auth::records::{Records, STATE_FILE};
use crate::config::Config;
use crate::limits;
use crate::mailbox::MailStore;
use crate::mailbox::mbox::MboxStore;
use crate::plural::plural;
use crate::session::{Context, Settings};

use super::tls::Certificates;
use super::transport::Timeouts;

/// The session settings `config` asks for. `--dev` logs every command (secrets masked).
pub fn settings(config: &Config) -> Settings {
    Settings {
        auth_failure_delay: config.auth_failure_delay,
        hostname: config.hostname.clone(),
        allow_cleartext: config.allow_cleartext,
        treat_as_remote: config.treat_as_remote.clone(),
        trace_commands: config.dev.is_some(),
        apop: config.apop,
        max_bad_commands: config.max_bad_commands,
        command_timeout: config.idle_timeout,
        login_delay: config.login_delay,
    }
}

/// The connection timeouts `config` asks for.
pub fn timeouts(config: &Config) -> Timeouts {
    Timeouts {
        handshake: config.tls_handshake_timeout,
        idle: config.idle_timeout,
        write: config.write_timeout,
    }
}

/// Sets up an accepted (or inherited) client socket for a session: blocking, no Nagle delay,
/// and the idle and write timeouts.
pub fn prepare_socket(stream: &TcpStream, timeouts: &Timeouts) -> io::Result<()> {
    // mio accepts non-blocking; sessions use blocking I/O with timeouts.
    stream.set_nonblocking(false)?;
    // Replies are buffered and flushed whole; Nagle would only add delay.
    stream.set_nodelay(true)?;
    // Before login, the total AUTHORIZATION deadline cuts in sooner (see `Server::reap`).
    stream.set_read_timeout(Some(timeouts.idle))?;
    stream.set_write_timeout(Some(timeouts.write))
}

/// The sessions' context for `users` and `store`, with the guards and settings `config` asks
/// for.
pub fn context_for(config: &Config, users: UsersHandle, store: Arc<dyn MailStore>) -> Context {
    guarded_context(config, users, store, None)
}

/// [`context_for`], with the guards kept in `shared` records when given.
fn guarded_context(
    config: &Config,
    users: UsersHandle,
    store: Arc<dyn MailStore>,
    shared: Option<Arc<Records>>,
) -> Context {
    let (slots, per_user) = (limits::hash_parallelism(), config.max_per_user);
    let guards = match shared {
        None => Guards::new(slots, per_user),
        Some(records) => Guards::shared(slots, per_user, records),
    };
    Context {
        users,
        store,
        guards: Arc::new(guards.with_login_delay(config.login_delay)),
        settings: settings(config),
        watcher: None,
    }
}

/// The login guards' state file in `--state-dir`, which every `--inetd` process shares. A
/// process that cannot use it refuses to serve: each would otherwise start with fresh guards,
/// and an attacker would get the base delay and empty caps at every connection.
pub fn shared_records(config: &Config) -> Result<Arc<Records>, String> {
    let dir = &config.state_dir;
    Records::open(dir).map(Arc::new).map_err(|e| {
        format!(
            "--inetd keeps its login guards in {}: {e} (create the directory, writable by \
             poplar, or name another with --state-dir)",
            dir.join(STATE_FILE).display()
        )
    })
}

/// The TLS certificate and key of `--tls-cert`/`--tls-key`, loaded, if configured.
pub fn certificates(config: &Config) -> io::Result<Option<Arc<Certificates>>> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let c = Certificates::open(files.clone()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot load the TLS certificate and key: {e}"),
        )
    })?;
    log::info!("TLS certificate loaded from {}", files.cert.display());
    Ok(Some(Arc::new(c)))
}

/// Logs each skipped line of the users file, at start-up and at a reload alike: the other
/// lines are in force either way.
pub fn log_skipped_lines(users_file: &Path, problems: &[LineProblem]) {
    for p in problems {
        log::warn!("{}: {p}", users_file.display());
    }
}

/// The sessions' context from the users file and `--mail`: the users file loaded (unusable
/// lines logged by number), the mbox store, the login guards, the settings; and, as a daemon
/// serves everyone from here on, every user's interrupted commit finished first.
pub fn context(config: &Config) -> Result<Context, String> {
    context_with(config, Recovery::EveryUser, None)
}

/// The context for a process that serves one session (`--inetd`): no pass over every user's
/// mailbox, which would cost a stat per user per connection. The one user who logs in gets
/// their journal replayed all the same, as every login does before it scans.
pub fn one_session_context(config: &Config) -> Result<Context, String> {
    let records = shared_records(config)?;
    context_with(config, Recovery::AtLogin, Some(records))
}

/// When interrupted commits are finished.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Now, for every user in the users file.
    EveryUser,
    /// Only when a user logs in (which every login does anyway).
    AtLogin,
}

fn context_with(
    config: &Config,
    recovery: Recovery,
    shared: Option<Arc<Records>>,
) -> Result<Context, String> {
    let users_file = config
        .users_file
        .as_ref()
        .ok_or_else(|| "no users file given".to_owned())?;
    let users_path = users_file.display();
    let (users, problems) =
        passwd::load(users_file).map_err(|e| format!("cannot read {users_path}: {e}"))?;
    log_skipped_lines(users_file, &problems);
    let store = MboxStore::with_options(config.mail.clone(), config.mbox.clone());
    if recovery == Recovery::EveryUser {
        log::info!(
            "{} loaded from {users_path}",
            plural(users.len() as u64, "user")
        );
        for user in users.names() {
            // Finish any commit a crash interrupted before serving anyone.
            if let Err(e) = store.recover(user) {
                log::error!("recovering the mailbox of {user}: {e}");
            }
        }
    }
    Ok(guarded_context(
        config,
        UsersHandle::new(users),
        Arc::new(store),
        shared,
    ))
}
