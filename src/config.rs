//! The server's configuration, with defaults from `limits`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::{Anyone, Secret, Users};
use crate::fault_rules::FaultRules;
use crate::limits;
use crate::logline::LogFormat;
use crate::mailbox::mbox::MboxOptions;
use crate::mailbox::template::MailTemplate;
use crate::protocol::proxy::Cidr;

/// The default listening address: loopback only, an unprivileged port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1110";

/// Where `--inetd` processes keep the login guards they share, unless `--state-dir` says:
/// the run directory a tmpfiles.d line or systemd's `RuntimeDirectory=poplar` makes.
pub const DEFAULT_STATE_DIR: &str = "/run/poplar";

/// Everything `poplar` needs to serve.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (`--listen`).
    pub listen: Vec<SocketAddr>,
    /// Addresses to listen on for connections that start with a PROXY header
    /// (`--proxy-protocol`); under socket activation, marks the inherited socket bound there.
    pub proxy_listen: Vec<SocketAddr>,
    /// Who may send a PROXY header (`--trusted-proxy`).
    pub trusted_proxies: Vec<Cidr>,
    /// The passwd-file (`--users`); `None` in `--dev` mode, where anyone may log in.
    pub users_file: Option<PathBuf>,
    /// Where each user's mbox is (`--mail`).
    pub mail: MailTemplate,
    /// Inactivity timeout (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// Cap on simultaneous sessions (`--max-connections`).
    pub max_connections: usize,
    /// Delay before a failed login is answered (`--auth-delay`).
    pub auth_failure_delay: Duration,
    /// Least time between two logins of one user (`--login-delay`; zero: none).
    pub login_delay: Duration,
    /// How long sessions may go on after SIGTERM/SIGINT (`--shutdown-grace`).
    pub shutdown_grace: Duration,
    /// Host name for the APOP timestamp (`--hostname`).
    pub hostname: String,
    /// Cap on simultaneous connections from one client address, IPv6 by /64
    /// (`--max-per-address`).
    pub max_per_address: usize,
    /// Cap on simultaneous logged-in sessions of one user (`--max-per-user`).
    pub max_per_user: usize,
    /// Bad commands allowed before login (`--max-bad-commands`).
    pub max_bad_commands: u32,
    /// Time from connecting to logging in (`--auth-timeout`); at most `idle_timeout`.
    pub auth_timeout: Duration,
    /// Longest a write may make no progress (`--write-timeout`).
    pub write_timeout: Duration,
    /// Whether APOP and CRAM-MD5 are offered (`--no-apop` turns them off).
    pub apop: bool,
    /// How mbox files are read, locked and shown (`--mbox-unquote`, `--uidl-from-header`,
    /// `--mbox-locks`, `--lock-timeout`, `--stale-lock-age`).
    pub mbox: MboxOptions,
    /// Serve one session on stdin/stdout and exit (`--inetd`).
    pub inetd: bool,
    /// Where `--inetd` processes share their login guards (`--state-dir`).
    pub state_dir: PathBuf,
    /// Development mode (`--dev`), with its directory and password rule.
    pub dev: Option<DevMode>,
    /// Certificate chain and key (`--tls-cert`, `--tls-key`); STLS is offered when set.
    pub tls: Option<TlsFiles>,
    /// Addresses to listen on with implicit TLS (`--listen-tls`).
    pub listen_tls: Vec<SocketAddr>,
    /// Allow USER/PASS and other cleartext logins off loopback without TLS
    /// (`--allow-cleartext`).
    pub allow_cleartext: bool,
    /// How long a client has to complete a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Loopback peers to treat as remote for the cleartext policy. No flag sets it: tests use
    /// it to exercise the off-loopback rules on a machine whose only network is loopback.
    pub treat_as_remote: Vec<IpAddr>,
    /// How log lines are written (`--log-format`).
    pub log_format: LogFormat,
    /// Where to serve the Prometheus metrics over HTTP (`--metrics`); loopback unless
    /// `--metrics-public` was given.
    pub metrics: Option<SocketAddr>,
}

/// The PEM files of the server's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// The private key (`--tls-key`).
    pub key: PathBuf,
}

impl Config {
    /// A configuration with every default, for the given users file and mail template.
    pub fn new(users_file: PathBuf, mail: MailTemplate) -> Config {
        Config::base(Some(users_file), mail)
    }

    /// A `--dev` configuration: no users file, mailboxes under the mode's directory.
    pub fn dev(mode: DevMode) -> Config {
        let mut c = Config::base(None, mode.template());
        c.dev = Some(mode);
        c
    }

    fn base(users_file: Option<PathBuf>, mail: MailTemplate) -> Config {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("the default address parses")],
            proxy_listen: Vec::new(),
            trusted_proxies: Vec::new(),
            users_file,
            mail,
            idle_timeout: limits::DEFAULT_IDLE_TIMEOUT,
            max_connections: limits::DEFAULT_MAX_CONNECTIONS,
            auth_failure_delay: limits::DEFAULT_AUTH_FAILURE_DELAY,
            login_delay: Duration::ZERO,
            shutdown_grace: limits::DEFAULT_SHUTDOWN_GRACE,
            hostname: crate::hostname::system_hostname(),
            max_per_address: limits::DEFAULT_MAX_PER_ADDRESS,
            max_per_user: limits::DEFAULT_MAX_PER_USER,
            max_bad_commands: limits::DEFAULT_MAX_BAD_COMMANDS,
            auth_timeout: limits::DEFAULT_AUTH_TIMEOUT,
            write_timeout: limits::DEFAULT_WRITE_TIMEOUT,
            apop: true,
            mbox: MboxOptions::default(),
            inetd: false,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            dev: None,
            tls: None,
            listen_tls: Vec::new(),
            allow_cleartext: false,
            tls_handshake_timeout: limits::TLS_HANDSHAKE_TIMEOUT,
            treat_as_remote: Vec::new(),
            log_format: LogFormat::Text,
            metrics: None,
        }
    }
}

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
    /// Where the SMTP intake listens (`--dev-smtp`), if anywhere.
    pub smtp: Option<SocketAddr>,
    /// Where the HTTP API and page are served (`--dev-http`), if anywhere.
    pub http: Option<SocketAddr>,
    /// The largest message the SMTP intake takes (`--dev-smtp-max-size`).
    pub smtp_max_size: u64,
    /// The fault rules in force at start (`--dev-faults`); none unless given.
    pub faults: FaultRules,
}

/// The largest message the `--dev-smtp` intake takes unless `--dev-smtp-max-size` says
/// otherwise: above what mail providers take (25 to 50 MiB), small enough for a laptop.
pub const DEV_SMTP_MAX_SIZE: u64 = 64 * 1024 * 1024;

impl DevMode {
    /// The mode for `dir`, or for a new directory under the system temp dir when `None`
    /// (named here, created when the dev server starts).
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
            smtp: None,
            http: None,
            smtp_max_size: DEV_SMTP_MAX_SIZE,
            faults: FaultRules::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::UserName;

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
}
