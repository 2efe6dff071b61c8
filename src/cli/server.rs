//! The server's own flags: one getopts table, a pure `parse` into a `Config`, the usage.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use getopts::Options;

use super::flags::{StorageUse, mbox_flags, mbox_options, seconds};
use super::{Action, CliError};
use crate::config::{Config, DEFAULT_LISTEN, DEV_PASSWORD, DevMode, TlsFiles};
use crate::fault_rules::{self, FaultRules};
use crate::limits::{MAX_FAULT_DOCUMENT, MAX_KEEP_DELETED_DAYS};
use crate::logline::LogFormat;
use crate::mailbox::template::MailTemplate;
use crate::protocol::proxy::Cidr;

fn options() -> Options {
    let mut o = Options::new();
    o.optmulti(
        "l",
        "listen",
        &format!("address to listen on, IPv4 or IPv6, repeatable (default {DEFAULT_LISTEN})"),
        "ADDR",
    );
    o.optopt("u", "users", "Dovecot-style passwd-file (required)", "FILE");
    o.optopt(
        "m",
        "mail",
        "path of each user's mbox: %u user, %n part before @, %d part after @, %% (required)",
        "TEMPLATE",
    );
    o.optopt(
        "",
        "idle-timeout",
        "close a session after this many idle seconds (default 600, the RFC 1939 minimum)",
        "SECS",
    );
    o.optopt(
        "",
        "max-connections",
        "most simultaneous sessions (default 1024)",
        "N",
    );
    o.optopt(
        "",
        "auth-delay",
        "seconds before a failed login is answered (default 2)",
        "SECS",
    );
    o.optopt(
        "",
        "login-delay",
        "least seconds between two logins of one user, announced as LOGIN-DELAY (default 0: none)",
        "SECS",
    );
    o.optopt(
        "",
        "shutdown-grace",
        "seconds sessions may go on after SIGTERM/SIGINT (default 5)",
        "SECS",
    );
    o.optopt(
        "",
        "hostname",
        "host name in the APOP timestamp (default: this host's)",
        "NAME",
    );
    o.optopt(
        "",
        "max-per-address",
        "most simultaneous connections from one client address, IPv6 by /64 (default 20)",
        "N",
    );
    o.optopt(
        "",
        "max-per-user",
        "most simultaneous logged-in sessions of one user (default 4)",
        "N",
    );
    o.optopt(
        "",
        "max-bad-commands",
        "bad commands allowed before login; the next closes the connection (default 10)",
        "N",
    );
    o.optopt(
        "",
        "auth-timeout",
        "close a connection not logged in this many seconds after connecting (default 60)",
        "SECS",
    );
    o.optopt(
        "",
        "write-timeout",
        "close a connection whose writes make no progress for this many seconds (default 120)",
        "SECS",
    );
    o.optflag(
        "",
        "no-apop",
        "offer neither APOP nor CRAM-MD5 (both need plain secrets in the users file)",
    );
    o.optopt(
        "",
        "tls-cert",
        "PEM certificate chain, leaf first; with --tls-key, enables STLS (reloaded on SIGHUP)",
        "FILE",
    );
    o.optopt("", "tls-key", "PEM private key of --tls-cert", "FILE");
    o.optmulti(
        "",
        "listen-tls",
        "address to listen on with implicit TLS (POP3S, usually port 995), repeatable",
        "ADDR",
    );
    o.optflag(
        "",
        "allow-cleartext",
        "allow USER/PASS and other cleartext logins without TLS from non-loopback clients",
    );
    o.optmulti(
        "",
        "proxy-protocol",
        "listen on ADDR for connections that start with a PROXY v1/v2 header (repeatable)",
        "ADDR",
    );
    o.optmulti(
        "",
        "trusted-proxy",
        "address or range allowed to send PROXY headers, e.g. 10.0.0.0/8 (repeatable)",
        "CIDR",
    );
    o.optflag(
        "",
        "inetd",
        "serve one session on stdin/stdout (inetd, systemd Accept=yes)",
    );
    o.optopt(
        "",
        "state-dir",
        "with --inetd: directory where its processes share failure delays, caps and the \
         hashing gate (default /run/poplar; must exist and be writable)",
        "DIR",
    );
    o.optflagopt(
        "",
        "dev",
        &format!(
            "development mode: 127.0.0.1 only, any user, password '{DEV_PASSWORD}', mailboxes \
             in DIR (default: a new directory under the system temp dir)"
        ),
        "DIR",
    );
    o.optopt(
        "",
        "keep-deleted",
        "move messages clients delete into <mbox>.deleted, and prune them DAYS after \
         (poplar undelete puts them back)",
        "DAYS",
    );
    o.optflag("", "dev-any-password", "with --dev: accept any password");
    o.optopt(
        "",
        "dev-smtp",
        "with --dev: take mail over SMTP at ADDR (127.0.0.1:PORT); each recipient's local part \
         is the mailbox",
        "ADDR",
    );
    o.optopt(
        "",
        "dev-http",
        "with --dev: serve the HTTP API (/api/v1) and a page of the mailboxes at ADDR (127.0.0.1:PORT)",
        "ADDR",
    );
    o.optopt(
        "",
        "dev-smtp-max-size",
        &format!(
            "with --dev-smtp or --dev-http: the largest message taken, in octets (default {})",
            crate::config::DEV_SMTP_MAX_SIZE
        ),
        "OCTETS",
    );
    o.optopt(
        "",
        "dev-faults",
        "with --dev: inject the POP3 faults the JSON rules in FILE describe (docs/dev.md)",
        "FILE",
    );
    o.optflag(
        "",
        "dev-keep-deleted",
        "with --dev: --keep-deleted, never pruned",
    );
    o.optopt(
        "",
        "log-format",
        "how log lines are written: text (default) or json, one object per line",
        "text|json",
    );
    o.optopt(
        "",
        "metrics",
        "serve Prometheus metrics over HTTP at http://ADDR/metrics (a loopback address)",
        "ADDR",
    );
    o.optflag(
        "",
        "metrics-public",
        "with --metrics: allow an address other than loopback",
    );
    mbox_options(&mut o, StorageUse::Serve);
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o
}

/// The usage text, for `--help` and after a usage error.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar --users FILE --mail TEMPLATE [--listen ADDR ...] [options]\n       \
         poplar --dev [DIR] [--dev-any-password] [--dev-smtp 127.0.0.1:PORT]\n       \
             [--dev-http 127.0.0.1:PORT] [--dev-faults FILE] [--listen 127.0.0.1:PORT]\n       \
             [--tls-cert FILE --tls-key FILE [--listen-tls 127.0.0.1:PORT]]\n       \
         poplar deliver|seed|check|undelete|probe ARGS (each prints its own usage with --help)\n       \
         poplar pw [-s SCHEME] (prints a password hash for the users file)\n\n\
         A POP3 server for mbox mailboxes. POPLAR_LOG sets the log filter (default info).",
    )
}

/// The `--version` text: the version, the target this binary was built for, and the commit it
/// was built from (`POPLAR_COMMIT` at build time, set by `make dist`; "unknown" without it).
pub fn version() -> String {
    format!(
        "poplar {} ({}, commit {})\n",
        env!("CARGO_PKG_VERSION"),
        target(),
        option_env!("POPLAR_COMMIT").unwrap_or("unknown")
    )
}

/// The target triple this binary was compiled for, e.g. `aarch64-unknown-linux-musl`: what a
/// downloaded binary is for, said without a build script. `POPLAR_TARGET` at build time (set by
/// `make dist`) wins, because stable Rust's cfg cannot tell ARMv7 from older 32-bit ARM: a plain
/// `cargo build` for either says `arm`.
fn target() -> String {
    option_env!("POPLAR_TARGET").map_or_else(target_from_cfg, str::to_owned)
}

/// The target triple as far as cfg tells it.
fn target_from_cfg() -> String {
    let arch = std::env::consts::ARCH;
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else if cfg!(target_env = "gnu") {
        "gnu"
    } else {
        ""
    };
    let abi = if cfg!(target_abi = "eabihf") {
        "eabihf"
    } else if cfg!(target_abi = "eabi") {
        "eabi"
    } else {
        ""
    };
    // Every Linux target poplar ships for has the vendor "unknown".
    let os = std::env::consts::OS;
    format!("{arch}-unknown-{os}-{env}{abi}")
        .trim_end_matches('-')
        .to_string()
}

/// Parses the server's own arguments (all of them: no subcommand came first).
pub fn parse(args: &[String]) -> Result<Action, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    if m.opt_present("help") {
        return Ok(Action::Print(usage()));
    }
    if m.opt_present("version") {
        return Ok(Action::Print(version()));
    }
    let mut config = if m.opt_present("dev") {
        dev_config(&m)?
    } else {
        for flag in [
            "dev-any-password",
            "dev-keep-deleted",
            "dev-smtp",
            "dev-http",
            "dev-smtp-max-size",
            "dev-faults",
        ] {
            if m.opt_present(flag) {
                return Err(CliError(format!("--{flag} needs --dev")));
            }
        }
        if let Some(extra) = m.free.first() {
            return Err(CliError(format!("unexpected argument '{extra}'")));
        }
        let users = m
            .opt_str("users")
            .ok_or_else(|| CliError("--users FILE is required".into()))?;
        let mail = m
            .opt_str("mail")
            .ok_or_else(|| CliError("--mail TEMPLATE is required".into()))?;
        let mail = MailTemplate::parse(&mail).map_err(|e| CliError(format!("--mail: {e}")))?;
        Config::new(PathBuf::from(users), mail)
    };
    config.proxy_listen = addresses(&m, "proxy-protocol")?;
    config.trusted_proxies = m
        .opt_strs("trusted-proxy")
        .iter()
        .map(|c| c.parse::<Cidr>())
        .collect::<Result<_, _>>()
        .map_err(|e| CliError(format!("--trusted-proxy: {e}")))?;
    let listen = addresses(&m, "listen")?;
    if !listen.is_empty() {
        config.listen = listen;
    } else if !config.proxy_listen.is_empty() {
        // Only PROXY listeners asked for: no plain listener by default.
        config.listen.clear();
    }
    config.tls = match (m.opt_str("tls-cert"), m.opt_str("tls-key")) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        _ => return Err(CliError("--tls-cert and --tls-key go together".into())),
    };
    config.listen_tls = addresses(&m, "listen-tls")?;
    if !config.listen_tls.is_empty() && config.tls.is_none() {
        return Err(CliError(
            "--listen-tls needs --tls-cert and --tls-key".into(),
        ));
    }
    config.allow_cleartext = m.opt_present("allow-cleartext");
    config.inetd = m.opt_present("inetd");
    if let Some(dir) = m.opt_str("state-dir") {
        if !config.inetd {
            return Err(CliError("--state-dir goes with --inetd".into()));
        }
        config.state_dir = dir.into();
    }
    check_modes(&m, &config)?;
    if let Some(d) = seconds(&m, "idle-timeout")? {
        if d.is_zero() {
            return Err(CliError("--idle-timeout must be more than 0".into()));
        }
        config.idle_timeout = d;
    }
    if let Some(n) = m.opt_str("max-connections") {
        config.max_connections =
            n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                CliError(format!("--max-connections: '{n}' is not a number above 0"))
            })?;
    }
    if let Some(d) = seconds(&m, "auth-delay")? {
        config.auth_failure_delay = d;
    }
    if let Some(d) = seconds(&m, "login-delay")? {
        config.login_delay = d;
    }
    if let Some(d) = seconds(&m, "shutdown-grace")? {
        config.shutdown_grace = d;
    }
    if let Some(n) = count(&m, "max-per-address")? {
        config.max_per_address = n;
    }
    if let Some(n) = count(&m, "max-per-user")? {
        config.max_per_user = n;
    }
    if let Some(n) = m.opt_str("max-bad-commands") {
        config.max_bad_commands = n
            .parse()
            .map_err(|_| CliError(format!("--max-bad-commands: '{n}' is not a number")))?;
    }
    match seconds(&m, "auth-timeout")? {
        Some(d) if d.is_zero() || d > config.idle_timeout => {
            return Err(CliError(
                "--auth-timeout must be more than 0 and at most --idle-timeout".into(),
            ));
        }
        Some(d) => config.auth_timeout = d,
        // A short --idle-timeout shortens the default AUTHORIZATION deadline with it.
        None => config.auth_timeout = config.auth_timeout.min(config.idle_timeout),
    }
    if let Some(d) = seconds(&m, "write-timeout")? {
        if d.is_zero() {
            return Err(CliError("--write-timeout must be more than 0".into()));
        }
        config.write_timeout = d;
    }
    config.apop = !m.opt_present("no-apop");
    if let Some(h) = m.opt_str("hostname") {
        // A longer name would push the greeting past 512 octets (RFC 2449 §4), and cutting it
        // there would cut off the APOP timestamp's closing '>'.
        if h.is_empty()
            || h.len() > 255
            || !h
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        {
            return Err(CliError(format!("--hostname: '{h}' is not a host name")));
        }
        config.hostname = h;
    }
    observe_flags(&m, &mut config)?;
    mbox_flags(&m, &mut config.mbox)?;
    config.mbox.keep_deleted = m.opt_present("dev-keep-deleted");
    if let Some(v) = m.opt_str("keep-deleted") {
        let days = v
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=MAX_KEEP_DELETED_DAYS).contains(d))
            .ok_or_else(|| {
                CliError(format!(
                    "--keep-deleted: '{v}' is not a number of days from 1 to \
                     {MAX_KEEP_DELETED_DAYS}"
                ))
            })?;
        config.mbox.keep_deleted = true;
        config.mbox.keep_days = Some(days);
    }
    Ok(Action::Serve(Box::new(config)))
}

/// `--log-format`, `--metrics` and `--metrics-public`. Metrics tell who logs in and how much
/// mail moves: off loopback only when asked for in so many words.
fn observe_flags(m: &getopts::Matches, config: &mut Config) -> Result<(), CliError> {
    if let Some(f) = m.opt_str("log-format") {
        config.log_format = LogFormat::parse(&f)
            .ok_or_else(|| CliError(format!("--log-format: '{f}' is not one of text, json")))?;
    }
    if let Some(a) = m.opt_str("metrics") {
        let addr: SocketAddr = a.parse().map_err(|_| {
            CliError(format!(
                "--metrics: '{a}' is not an address like 127.0.0.1:9110"
            ))
        })?;
        if !addr.ip().is_loopback() && !m.opt_present("metrics-public") {
            return Err(CliError(format!(
                "--metrics {addr} is not a loopback address; add --metrics-public to serve the \
                 metrics there"
            )));
        }
        if config.inetd {
            return Err(CliError("--metrics does not apply to --inetd".into()));
        }
        config.metrics = Some(addr);
    } else if m.opt_present("metrics-public") {
        return Err(CliError("--metrics-public needs --metrics".into()));
    }
    Ok(())
}

/// A count above zero.
fn count(m: &getopts::Matches, name: &str) -> Result<Option<usize>, CliError> {
    let Some(v) = m.opt_str(name) else {
        return Ok(None);
    };
    v.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .map(Some)
        .ok_or_else(|| CliError(format!("--{name}: '{v}' is not a number above 0")))
}

/// The `--dev` configuration: its own users and mail, any DIR given as `--dev=DIR` or as the
/// one free argument.
fn dev_config(m: &getopts::Matches) -> Result<Config, CliError> {
    // --dev has its own users and mail, and serves loopback only, where cleartext logins are
    // allowed anyway. The TLS flags apply, so a client's STLS and POP3S paths can be tried.
    for flag in [
        "users",
        "mail",
        "inetd",
        "proxy-protocol",
        "trusted-proxy",
        "allow-cleartext",
    ] {
        if m.opt_present(flag) {
            return Err(CliError(format!("--{flag} cannot be used with --dev")));
        }
    }
    let dir = match (m.opt_str("dev"), m.free.as_slice()) {
        (Some(d), []) => Some(d),
        (None, [d]) => Some(d.clone()),
        (None, []) => None,
        (_, [.., extra]) => return Err(CliError(format!("unexpected argument '{extra}'"))),
    };
    if dir.as_deref() == Some("") {
        return Err(CliError("--dev: the directory name is empty".into()));
    }
    let mut mode = DevMode::new(dir.map(PathBuf::from), m.opt_present("dev-any-password"));
    if let Some(a) = m.opt_str("dev-smtp") {
        let addr = a
            .parse::<SocketAddr>()
            .map_err(|_| CliError(format!("--dev-smtp: '{a}' is not an IP address and port")))?;
        if addr.ip() != DEV_IP {
            return Err(CliError(format!(
                "--dev-smtp listens on {DEV_IP} only, not on {addr}"
            )));
        }
        mode.smtp = Some(addr);
    }
    if let Some(a) = m.opt_str("dev-http") {
        let addr = a
            .parse::<SocketAddr>()
            .map_err(|_| CliError(format!("--dev-http: '{a}' is not an IP address and port")))?;
        if addr.ip() != DEV_IP {
            return Err(CliError(format!(
                "--dev-http listens on {DEV_IP} only, not on {addr}"
            )));
        }
        mode.http = Some(addr);
    }
    if let Some(n) = m.opt_str("dev-smtp-max-size") {
        if mode.smtp.is_none() && mode.http.is_none() {
            return Err(CliError(
                "--dev-smtp-max-size needs --dev-smtp or --dev-http".into(),
            ));
        }
        mode.smtp_max_size = n.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
            CliError(format!(
                "--dev-smtp-max-size: '{n}' is not a number of octets above 0"
            ))
        })?;
    }
    if let Some(file) = m.opt_str("dev-faults") {
        mode.faults = read_faults(Path::new(&file))
            .map_err(|e| CliError(format!("--dev-faults {file}: {e}")))?;
    }
    Ok(Config::dev(mode))
}

/// The fault rules in `file`, read whole (at most `MAX_FAULT_DOCUMENT` octets) and checked.
fn read_faults(file: &Path) -> Result<FaultRules, String> {
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    f.take(MAX_FAULT_DOCUMENT + 1)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_FAULT_DOCUMENT {
        return Err(format!("larger than {MAX_FAULT_DOCUMENT} octets"));
    }
    fault_rules::parse(&text)
}

/// Combinations that cannot work, refused before anything starts.
fn check_modes(m: &getopts::Matches, config: &Config) -> Result<(), CliError> {
    if config.dev.is_some()
        && let Some(a) = config
            .listen
            .iter()
            .chain(&config.listen_tls)
            .find(|a| a.ip() != DEV_IP)
    {
        return Err(CliError(format!(
            "--dev listens on {DEV_IP} only, not on {a}"
        )));
    }
    if config.inetd
        && (m.opt_present("listen")
            || !config.listen_tls.is_empty()
            || !config.proxy_listen.is_empty())
    {
        return Err(CliError(
            "--inetd serves stdin/stdout: --listen, --listen-tls and --proxy-protocol do not \
             apply"
                .into(),
        ));
    }
    if config.inetd && !config.trusted_proxies.is_empty() {
        return Err(CliError("--inetd does not read PROXY headers".into()));
    }
    if !config.proxy_listen.is_empty() && config.trusted_proxies.is_empty() {
        return Err(CliError(
            "--proxy-protocol needs at least one --trusted-proxy".into(),
        ));
    }
    if config.proxy_listen.is_empty() && !config.trusted_proxies.is_empty() {
        return Err(CliError(
            "--trusted-proxy applies only to --proxy-protocol listeners".into(),
        ));
    }
    Ok(())
}

/// The only address `--dev` listens on.
const DEV_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Every value of a repeatable address option.
fn addresses(m: &getopts::Matches, name: &str) -> Result<Vec<SocketAddr>, CliError> {
    m.opt_strs(name)
        .iter()
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                CliError(format!(
                    "--{name}: '{a}' is not an address such as 127.0.0.1:110 or [::1]:110"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mailbox::lock::LockKind;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn run(s: &str) -> Config {
        match parse(&args(s)) {
            Ok(Action::Serve(c)) => *c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn dev_faults_reads_and_checks_its_rules_and_needs_dev() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.json");
        std::fs::write(
            &file,
            r#"{"rules": [{"command": "QUIT", "action": "drop"}]}"#,
        )
        .unwrap();
        let c = run(&format!("--dev --dev-faults {}", file.display()));
        assert_eq!(c.dev.unwrap().faults.rules.len(), 1);
        let e = |s: String| match parse(&args(&s)) {
            Err(e) => e.0,
            other => panic!("{s}: {other:?}"),
        };
        let needs = e(format!("-u u -m /m/%u --dev-faults {}", file.display()));
        assert_eq!(needs, "--dev-faults needs --dev");
        std::fs::write(&file, r#"{"rules": [{"action": "drop", "bytes": 1}]}"#).unwrap();
        let bad = e(format!("--dev --dev-faults {}", file.display()));
        assert!(bad.contains("rule 0: \"drop\" takes no \"bytes\""), "{bad}");
        let missing = e(format!(
            "--dev --dev-faults {}/nothing",
            dir.path().display()
        ));
        assert!(missing.starts_with("--dev-faults "), "{missing}");
    }

    #[test]
    fn dev_takes_a_certificate_for_stls_and_pop3s_on_loopback() {
        let c = run("--dev --tls-cert c.pem --tls-key k.pem --listen-tls 127.0.0.1:1995");
        assert!(c.dev.is_some());
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("c.pem"));
        assert_eq!(c.listen_tls, vec!["127.0.0.1:1995".parse().unwrap()]);
        assert_eq!(c.listen, vec!["127.0.0.1:1110".parse().unwrap()]);
        match parse(&args(
            "--dev --tls-cert c --tls-key k --listen-tls [::1]:1995",
        )) {
            Err(e) => assert_eq!(e.0, "--dev listens on 127.0.0.1 only, not on [::1]:1995"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_names_the_target_and_the_commit() {
        let text = version();
        assert!(text.starts_with(&format!("poplar {} (", env!("CARGO_PKG_VERSION"))));
        assert!(
            text.ends_with(")\n") && text.contains(", commit "),
            "{text}"
        );
        if cfg!(all(
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "gnu"
        )) {
            assert_eq!(target_from_cfg(), "x86_64-unknown-linux-gnu");
        }
        if cfg!(all(
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "musl"
        )) {
            assert_eq!(target_from_cfg(), "x86_64-unknown-linux-musl");
        }
    }

    #[test]
    fn defaults() {
        let c = run("--users u --mail /m/%n");
        assert_eq!(c.listen, vec!["127.0.0.1:1110".parse().unwrap()]);
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.auth_timeout, Duration::from_secs(60));
        assert_eq!(c.max_per_address, 20);
        assert!(c.apop);
        assert_eq!(c.users_file, Some(PathBuf::from("u")));
        assert!(c.proxy_listen.is_empty() && !c.inetd && c.dev.is_none());
        assert_eq!(c.tls, None);
        assert!(c.listen_tls.is_empty());
        assert!(!c.allow_cleartext);
    }

    #[test]
    fn log_format_and_metrics_flags() {
        let c = run("--users u --mail /m/%n");
        assert_eq!((c.log_format, c.metrics), (LogFormat::Text, None));
        let c = run("--users u --mail /m/%n --log-format json --metrics [::1]:9110");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.metrics, Some("[::1]:9110".parse().unwrap()));
        let c = run("--users u --mail /m/%n --metrics 0.0.0.0:9110 --metrics-public");
        assert_eq!(c.metrics, Some("0.0.0.0:9110".parse().unwrap()));
        let refused = |s: &str| match parse(&args(&format!("--users u --mail /m/%n {s}"))) {
            Err(e) => e.0,
            other => panic!("{s}: {other:?}"),
        };
        assert!(refused("--log-format xml").contains("not one of text, json"));
        assert!(refused("--metrics 192.0.2.1:9110").contains("add --metrics-public"));
        assert!(refused("--metrics 0.0.0.0:9110").contains("not a loopback address"));
        assert!(refused("--metrics localhost").contains("is not an address"));
        assert!(refused("--metrics-public").contains("needs --metrics"));
        assert!(refused("--inetd --metrics 127.0.0.1:9110").contains("--inetd"));
    }

    #[test]
    fn tls_flags() {
        let c = run(
            "-u u -m /m/%n --tls-cert c.pem --tls-key k.pem --listen-tls 127.0.0.1:995 \
             --listen-tls [::1]:995 --allow-cleartext",
        );
        let files = c.tls.unwrap();
        assert_eq!(files.cert, PathBuf::from("c.pem"));
        assert_eq!(files.key, PathBuf::from("k.pem"));
        assert_eq!(c.listen_tls.len(), 2);
        assert!(c.listen_tls[1].is_ipv6());
        assert!(c.allow_cleartext);
        // STLS alone, on the plain listeners.
        let c = run("-u u -m /m/%n --tls-cert c.pem --tls-key k.pem");
        assert!(c.tls.is_some() && c.listen_tls.is_empty());
    }

    #[test]
    fn every_flag() {
        let c = run(
            "-l 127.0.0.1:0 --listen [::1]:2110 -u users -m ./mail/%d/%n --idle-timeout 700 \
             --max-connections 5 --auth-delay 0.25 --shutdown-grace 0 --hostname mail.example \
             --max-per-address 3 --max-per-user 2 --max-bad-commands 0 --auth-timeout 30 \
             --write-timeout 9 --no-apop",
        );
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[1].is_ipv6());
        assert_eq!(c.idle_timeout, Duration::from_secs(700));
        assert_eq!(c.max_connections, 5);
        assert_eq!(c.auth_failure_delay, Duration::from_millis(250));
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(c.hostname, "mail.example");
        assert_eq!(c.max_per_address, 3);
        assert_eq!(c.max_per_user, 2);
        assert_eq!(c.max_bad_commands, 0);
        assert_eq!(c.auth_timeout, Duration::from_secs(30));
        assert_eq!(c.write_timeout, Duration::from_secs(9));
        assert!(!c.apop);
    }

    #[test]
    fn login_delay_is_off_by_default_and_takes_seconds() {
        assert_eq!(run("-u u -m /m/%n").login_delay, Duration::ZERO);
        let c = run("-u u -m /m/%n --login-delay 0.3");
        assert_eq!(c.login_delay, Duration::from_millis(300));
        assert_eq!(
            run("--dev --login-delay 900").login_delay,
            Duration::from_secs(900)
        );
        assert!(parse(&args("-u u -m /m/%n --login-delay soon")).is_err());
    }

    #[test]
    fn keep_deleted_takes_days_and_dev_keep_deleted_never_prunes() {
        let c = run("-u u -m /m/%n");
        assert!(!c.mbox.keep_deleted && c.mbox.keep_days.is_none());
        let c = run("-u u -m /m/%n --keep-deleted 30");
        assert!(c.mbox.keep_deleted);
        assert_eq!(c.mbox.keep_days, Some(30));
        let c = run("--dev --dev-keep-deleted");
        assert!(c.mbox.keep_deleted && c.mbox.keep_days.is_none());
        assert_eq!(run("--dev --keep-deleted 2").mbox.keep_days, Some(2));
        for bad in ["0", "-1", "3d", "3653.5", "3654", ""] {
            let e = parse(&args(&format!("-u u -m /m/%n --keep-deleted={bad}"))).unwrap_err();
            assert!(e.0.starts_with("--keep-deleted: "), "{bad}: {e}");
        }
    }

    #[test]
    fn dev_takes_its_directory_three_ways_and_needs_no_users_or_mail() {
        for form in ["--dev /tmp/d", "--dev=/tmp/d", "/tmp/d --dev"] {
            let c = run(form);
            let mode = c.dev.as_ref().unwrap();
            assert_eq!(mode.dir, PathBuf::from("/tmp/d"), "{form}");
            assert!(!mode.fresh && !mode.any_password);
            assert_eq!(c.users_file, None);
        }
        let c = run("--dev --dev-any-password --listen 127.0.0.1:0 --auth-delay 0");
        assert!(!c.mbox.keep_deleted);
        let c = run(
            "--dev --dev-any-password --dev-keep-deleted --mbox-unquote --mbox-locks fcntl \
             --listen 127.0.0.1:0 --auth-delay 0",
        );
        assert!(c.mbox.keep_deleted && c.mbox.view.unquote);
        assert_eq!(c.mbox.locks.order, vec![LockKind::Fcntl]);
        let mode = c.dev.unwrap();
        assert!(mode.fresh && mode.any_password);
        assert_eq!(c.listen, vec!["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(c.auth_failure_delay, Duration::ZERO);
        assert_eq!(mode.smtp, None);
        let mode = run("--dev --dev-smtp 127.0.0.1:1025 --dev-smtp-max-size 1000")
            .dev
            .unwrap();
        assert_eq!(mode.smtp, Some("127.0.0.1:1025".parse().unwrap()));
        assert_eq!(mode.smtp_max_size, 1000);
    }

    #[test]
    fn dev_takes_the_server_flags_that_apply_on_loopback() {
        let c = run(
            "--dev --no-apop --max-bad-commands 1 --max-per-user 2 --max-per-address 3 \
             --max-connections 4 --idle-timeout 700 --auth-timeout 30 --write-timeout 9",
        );
        assert!(!c.apop);
        assert_eq!(c.max_bad_commands, 1);
        assert_eq!(c.max_per_user, 2);
        assert_eq!(c.max_per_address, 3);
        assert_eq!(c.max_connections, 4);
        assert_eq!(c.idle_timeout, Duration::from_secs(700));
        assert_eq!(c.auth_timeout, Duration::from_secs(30));
        assert_eq!(c.write_timeout, Duration::from_secs(9));
    }

    #[test]
    fn proxy_listeners_replace_the_default_listener_and_need_trusted_proxies() {
        let c = run("-u u -m /m/%n --proxy-protocol 10.0.0.5:110 --trusted-proxy 10.0.0.0/8");
        assert!(c.listen.is_empty());
        assert_eq!(c.proxy_listen, vec!["10.0.0.5:110".parse().unwrap()]);
        assert_eq!(c.trusted_proxies.len(), 1);
        let c = run(
            "-u u -m /m/%n -l [::]:110 --proxy-protocol 10.0.0.5:110 --trusted-proxy ::1 \
             --trusted-proxy 10.0.0.1",
        );
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.trusted_proxies.len(), 2);
    }

    #[test]
    fn inetd_is_a_flag() {
        assert!(run("--inetd -u u -m /m/%n --idle-timeout 30").inetd);
    }

    #[test]
    fn the_state_dir_defaults_to_run_poplar_and_goes_with_inetd() {
        let c = run("--inetd -u u -m /m/%n");
        assert_eq!(c.state_dir, std::path::Path::new("/run/poplar"));
        let c = run("--inetd -u u -m /m/%n --state-dir /var/lib/poplar");
        assert_eq!(c.state_dir, std::path::Path::new("/var/lib/poplar"));
        assert!(parse(&args("-u u -m /m/%n --state-dir /tmp")).is_err());
    }

    #[test]
    fn mode_combinations_that_cannot_work_are_usage_errors() {
        for bad in [
            "--dev --listen 0.0.0.0:1110",
            "--dev --listen [::1]:1110",
            "--dev -u u",
            "--dev -m /m/%n",
            "--dev --inetd",
            "--dev --proxy-protocol 127.0.0.1:1 --trusted-proxy 127.0.0.1",
            "--dev --tls-cert c",
            "--dev --listen-tls 127.0.0.1:1995",
            "--dev --tls-cert c --tls-key k --listen-tls 0.0.0.0:1995",
            "--dev --allow-cleartext",
            "-u u -m /m/%n --inetd --tls-cert c --tls-key k --listen-tls 127.0.0.1:995",
            "--dev a b",
            "--dev=a b",
            "--dev=",
            "-u u -m /m/%n --dev-any-password",
            "-u u -m /m/%n --dev-keep-deleted",
            "-u u -m /m/%n --dev-smtp 127.0.0.1:1025",
            "--dev --dev-smtp 0.0.0.0:1025",
            "--dev --dev-http 0.0.0.0:8025",
            "-u u -m /m/%n --dev-http 127.0.0.1:8025",
            "--dev --dev-smtp localhost:1025",
            "--dev --dev-smtp-max-size 10",
            "--dev --dev-smtp 127.0.0.1:1025 --dev-smtp-max-size 0",
            "-u u -m /m/%n --proxy-protocol 127.0.0.1:1",
            "-u u -m /m/%n --trusted-proxy 127.0.0.1",
            "-u u -m /m/%n --proxy-protocol 127.0.0.1:1 --trusted-proxy 10.0.0.0/33",
            "-u u -m /m/%n --proxy-protocol nowhere --trusted-proxy 127.0.0.1",
            "-u u -m /m/%n --inetd --listen 127.0.0.1:1",
            "-u u -m /m/%n --inetd --proxy-protocol 127.0.0.1:1 --trusted-proxy 127.0.0.1",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn timeouts_up_to_a_day_are_taken() {
        let c = run("--users u --mail /m/%n --idle-timeout 86400 --lock-timeout 86400");
        assert_eq!(c.idle_timeout, Duration::from_secs(86400));
        assert_eq!(c.mbox.locks.timeout, Duration::from_secs(86400));
    }

    #[test]
    fn a_hostname_too_long_for_the_greeting_is_refused() {
        let long = format!("--users u --mail /m/%n --hostname {}", "h".repeat(256));
        assert!(parse(&args(&long)).is_err());
        let longest = format!("--users u --mail /m/%n --hostname {}", "h".repeat(255));
        assert_eq!(run(&longest).hostname.len(), 255);
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for bad in [
            "",
            "--users u",
            "--mail /m/%n",
            "--users u --mail /m/%n --bogus",
            "--users u --mail /m/%n extra",
            "--users u --mail /m/%x",
            "--users u --mail /m/shared",
            "--users u --mail /m/%n --listen localhost:110",
            "--users u --mail /m/%n --listen 127.0.0.1",
            "--users u --mail /m/%n --idle-timeout 0",
            "--users u --mail /m/%n --idle-timeout -5",
            "--users u --mail /m/%n --idle-timeout ten",
            "--users u --mail /m/%n --max-connections 0",
            "--users u --mail /m/%n --auth-delay x",
            "--users u --mail /m/%n --hostname a<b",
            "--users u --mail /m/%n --listen",
            "--users u --mail /m/%n --max-per-address 0",
            "--users u --mail /m/%n --max-per-user x",
            "--users u --mail /m/%n --max-bad-commands -1",
            "--users u --mail /m/%n --auth-timeout 0",
            "--users u --mail /m/%n --auth-timeout 700",
            "--users u --mail /m/%n --write-timeout 0",
            "--users u --mail /m/%n --idle-timeout 1e19",
            "--users u --mail /m/%n --idle-timeout 86401",
            "--users u --mail /m/%n --auth-delay 1e300",
            "--users u --mail /m/%n --shutdown-grace 100000",
            "--users u --mail /m/%n --write-timeout 1e19",
            "--users u --mail /m/%n --lock-timeout 1e19",
            "--users u --mail /m/%n --stale-lock-age 1e19",
            "--dev --idle-timeout 1e19",
            "--users u --mail /m/%n --tls-cert c.pem",
            "--users u --mail /m/%n --tls-key k.pem",
            "--users u --mail /m/%n --listen-tls 127.0.0.1:995",
            "--users u --mail /m/%n --tls-cert c --tls-key k --listen-tls 127.0.0.1",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} should fail");
        }
    }
}
