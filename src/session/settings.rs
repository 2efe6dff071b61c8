//! What every session runs with: the settings that shape it, and the context it shares with
//! the others (users, store, guards).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::UsersHandle;
use crate::auth::guard::Guards;
use crate::mailbox::MailStore;

/// Settings that shape every session.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Delay before a failed login is answered (the same for unknown users): the first
    /// failure from an address; each further one doubles it (see `auth::guard::Throttle`).
    pub auth_failure_delay: Duration,
    /// The host name in the APOP timestamp.
    pub hostname: String,
    /// Allow cleartext logins without TLS from peers off loopback (`--allow-cleartext`).
    pub allow_cleartext: bool,
    /// Loopback peers treated as remote by the cleartext policy (tests only).
    pub treat_as_remote: Vec<IpAddr>,
    /// Log every command at info instead of debug (`--dev`); secrets stay masked.
    pub trace_commands: bool,
    /// Whether APOP and CRAM-MD5 (the mechanisms that need plain secrets) are offered
    /// (`--no-apop` turns them off).
    pub apop: bool,
    /// Bad commands allowed before login; the next one closes the connection.
    pub max_bad_commands: u32,
    /// The longest wait for one complete command line, however the client trickles it: the
    /// idle timeout, restarted by each command (RFC 1939 §3).
    pub command_timeout: Duration,
    /// The least time between two logins of one user, announced in CAPA as `LOGIN-DELAY`
    /// (`--login-delay`; zero: none). `Guards::spacing` enforces it.
    pub login_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auth_failure_delay: crate::limits::DEFAULT_AUTH_FAILURE_DELAY,
            hostname: "localhost".into(),
            allow_cleartext: false,
            treat_as_remote: Vec::new(),
            trace_commands: false,
            apop: true,
            max_bad_commands: crate::limits::DEFAULT_MAX_BAD_COMMANDS,
            command_timeout: crate::limits::DEFAULT_IDLE_TIMEOUT,
            login_delay: Duration::ZERO,
        }
    }
}

/// What every session shares: who may log in, where mail lives, the login guards and the
/// settings.
#[derive(Clone)]
pub struct Context {
    /// The users table in force.
    pub users: UsersHandle,
    /// Where maildrops come from.
    pub store: Arc<dyn MailStore>,
    /// Failure delays, the hashing gate, per-user session slots and AUTHORIZATION deadlines.
    pub guards: Arc<Guards>,
    /// Session settings.
    pub settings: Settings,
    /// What watches each session and may inject faults: the development server's sessions
    /// log; `None` everywhere else.
    pub watcher: Option<Arc<dyn super::Watcher>>,
}
