//! The command line: one getopts table, a pure `parse`, and the usage text.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use crate::config::{Config, DEFAULT_LISTEN};
use crate::mailbox::template::MailTemplate;

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    /// Serve with this configuration.
    Run(Box<Config>),
    /// Print the usage and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// `poplar pw`: hash a password for the users file.
    Pw(crate::pw::Args),
}

/// A command-line mistake: printed with the usage, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

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
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o
}

/// The usage text, for `--help` and after a usage error.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar --users FILE --mail TEMPLATE [--listen ADDR ...] [options]\n\n\
         A POP3 server for mbox mailboxes. POPLAR_LOG sets the log filter (default info).",
    )
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Action, CliError> {
    // Subcommands: one arm each, into the subcommand's own module.
    #[allow(clippy::single_match)]
    match args.first().map(String::as_str) {
        Some("pw") => return crate::pw::parse(&args[1..]).map(Action::Pw),
        _ => {}
    }
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    if m.opt_present("help") {
        return Ok(Action::Help);
    }
    if m.opt_present("version") {
        return Ok(Action::Version);
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
    let mut config = Config::new(PathBuf::from(users), mail);
    let listen = m.opt_strs("listen");
    if !listen.is_empty() {
        config.listen = listen
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    CliError(format!(
                        "--listen: '{a}' is not an address such as 127.0.0.1:110 or [::1]:110"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
    }
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
    if let Some(d) = seconds(&m, "auth-timeout")? {
        config.auth_timeout = d;
    }
    if config.auth_timeout.is_zero() || config.auth_timeout > config.idle_timeout {
        return Err(CliError(
            "--auth-timeout must be more than 0 and at most --idle-timeout".into(),
        ));
    }
    if let Some(d) = seconds(&m, "write-timeout")? {
        if d.is_zero() {
            return Err(CliError("--write-timeout must be more than 0".into()));
        }
        config.write_timeout = d;
    }
    config.apop = !m.opt_present("no-apop");
    if let Some(h) = m.opt_str("hostname") {
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        {
            return Err(CliError(format!("--hostname: '{h}' is not a host name")));
        }
        config.hostname = h;
    }
    Ok(Action::Run(Box::new(config)))
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

/// A non-negative number of seconds, fractions allowed.
fn seconds(m: &getopts::Matches, name: &str) -> Result<Option<Duration>, CliError> {
    let Some(v) = m.opt_str(name) else {
        return Ok(None);
    };
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(Some)
        .ok_or_else(|| CliError(format!("--{name}: '{v}' is not a number of seconds")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn run(s: &str) -> Config {
        match parse(&args(s)) {
            Ok(Action::Run(c)) => *c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run("--users u --mail /m/%n");
        assert_eq!(c.listen, vec!["127.0.0.1:1110".parse().unwrap()]);
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.users_file, PathBuf::from("u"));
        assert_eq!(c.auth_timeout, Duration::from_secs(60));
        assert_eq!(c.max_per_address, 20);
        assert!(c.apop);
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
    fn help_and_version() {
        assert!(matches!(parse(&args("--help")), Ok(Action::Help)));
        assert!(matches!(parse(&args("-h --users x")), Ok(Action::Help)));
        assert!(matches!(parse(&args("-V")), Ok(Action::Version)));
        assert!(usage().contains("--listen"));
        assert!(matches!(
            parse(&args("pw -s PLAIN")),
            Ok(Action::Pw(crate::pw::Args::Hash(_)))
        ));
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
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} should fail");
        }
    }
}
