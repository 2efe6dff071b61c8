//! `poplar pw [-s SCHEME]`: reads a password (without echo on a terminal, else one line from
//! stdin) and prints the `{SCHEME}...` field for the users file, like `doveadm pw`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use getopts::Options;

use super::CliError;
use crate::auth::scheme::{self, Scheme};

/// The scheme `poplar pw` uses unless told otherwise: Argon2id with the crate's default
/// parameters (19 MiB, 2 passes), the strongest scheme whose check stays well under 100 ms on
/// a small host (docs/configuration.md has the figures).
pub const DEFAULT_SCHEME: Scheme = Scheme::Argon2id;

/// What `poplar pw` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// Hash a password with this scheme.
    Hash(Scheme),
    /// Print the usage.
    Help,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "s",
        "scheme",
        "PLAIN, CRYPT, SHA512-CRYPT, SHA256-CRYPT, MD5-CRYPT, BLF-CRYPT, ARGON2I or ARGON2ID \
         (default ARGON2ID)",
        "SCHEME",
    );
    o.optflag("h", "help", "print this help and exit");
    o
}

/// The usage text of `poplar pw`.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar pw [-s SCHEME] [-h]\n\n\
         Reads a password (asked twice on a terminal, else one line from stdin) and prints\n\
         the {SCHEME}... string for the users file.",
    )
}

/// Parses the arguments after `pw`.
pub fn parse(args: &[String]) -> Result<Args, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    if m.opt_present("help") {
        return Ok(Args::Help);
    }
    if let Some(extra) = m.free.first() {
        return Err(CliError(format!("unexpected argument '{extra}'")));
    }
    match m.opt_str("scheme") {
        None => Ok(Args::Hash(DEFAULT_SCHEME)),
        Some(s) => s.parse().map(Args::Hash).map_err(CliError),
    }
}

/// Reads the password and prints its hash; an error is printed for the user, exit code 1.
pub fn run(scheme: Scheme) -> ExitCode {
    match hash_password(scheme) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poplar pw: {e}");
            ExitCode::from(1)
        }
    }
}

fn hash_password(scheme: Scheme) -> Result<(), String> {
    let password = read_password()?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    let line = scheme::hash(scheme, &password)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(|e| format!("cannot write: {e}"))
}

fn read_password() -> Result<Vec<u8>, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Enter new password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("Retype new password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("passwords don't match".into());
        }
        return Ok(first.into_bytes());
    }
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn scheme_flag_and_default() {
        assert_eq!(parse(&args("")), Ok(Args::Hash(Scheme::Argon2id)));
        assert_eq!(
            parse(&args("-s sha512-crypt")),
            Ok(Args::Hash(Scheme::Sha512Crypt))
        );
        assert_eq!(
            parse(&args("--scheme BLF-CRYPT")),
            Ok(Args::Hash(Scheme::BlfCrypt))
        );
        assert_eq!(parse(&args("-h")), Ok(Args::Help));
        assert!(usage().contains("SCHEME"));
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for bad in ["-s SHA1", "-s", "extra", "--bogus"] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
