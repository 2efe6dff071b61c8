//! The command line: which subcommand, if any, the arguments name; each subcommand's parser
//! and runner; the server's flags into a `Config`. Adding a subcommand touches this folder
//! alone.

mod check;
mod deliver;
mod edge_cases;
mod flags;
mod probe;
mod pw;
mod seed;
mod server;
mod undelete;

use std::ffi::OsString;
use std::fmt;
use std::fmt::Write as _;
use std::process::ExitCode;

use crate::auth::scheme::Scheme;
use crate::config::Config;

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    /// Serve with this configuration.
    Serve(Box<Config>),
    /// Print this text (a usage or the version) on stdout and exit 0.
    Print(String),
    /// Run a subcommand.
    Command(Command),
}

/// A subcommand, parsed and ready to run.
#[derive(Debug)]
pub enum Command {
    /// `poplar pw`: hash a password with this scheme for the users file.
    Pw(Scheme),
    /// `poplar deliver`: append stdin to a user's mbox.
    Deliver(Box<deliver::Deliver>),
    /// `poplar seed`: append messages from files to a user's mbox.
    Seed(Box<seed::Seed>),
    /// `poplar check`: report on a mailbox without changing it.
    Check(Box<check::Check>),
    /// `poplar undelete`: put kept deleted messages back into a user's mbox.
    Undelete(Box<undelete::Undelete>),
    /// `poplar probe`: a health check of a running server.
    Probe(Box<probe::Probe>),
}

impl Command {
    /// Whether it logs (breaking a stale dotlock is a warning worth seeing), so that the
    /// caller sets up logging first.
    pub fn logs(&self) -> bool {
        matches!(
            self,
            Command::Deliver(_) | Command::Seed(_) | Command::Undelete(_)
        )
    }

    /// Runs it; the exit code is its own (deliver's follow sysexits.h for the MTA).
    pub fn run(self) -> ExitCode {
        match self {
            Command::Pw(scheme) => pw::run(scheme),
            Command::Deliver(d) => deliver::run(&d),
            Command::Seed(s) => seed::run(&s),
            Command::Check(c) => check::run(&c),
            Command::Undelete(u) => undelete::run(&u),
            Command::Probe(p) => probe::run(&p),
        }
    }
}

/// A command-line mistake in a subcommand's or the server's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// A usage error as the user sees it: who complains, what, the usage, and the exit code.
#[derive(Debug)]
pub struct UsageError {
    program: String,
    error: CliError,
    usage: String,
    exit: u8,
}

impl UsageError {
    /// The exit code: 2, or 64 (EX_USAGE) for `poplar deliver`, which an MTA runs.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit)
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}\n\n{}", self.program, self.error, self.usage)
    }
}

/// A subcommand: its name, usage text, parser and usage-error exit code.
struct Subcommand {
    name: &'static str,
    usage: fn() -> String,
    parse: fn(&[String]) -> Result<Action, CliError>,
    usage_exit: u8,
}

/// Every subcommand. `-h`/`--help` anywhere after deliver, seed, check, undelete or probe
/// prints its usage, whatever else is on the line; `pw` reads its own (`pw -s -h` names a
/// scheme `-h`).
const SUBCOMMANDS: [Subcommand; 6] = [
    Subcommand {
        name: "deliver",
        usage: deliver::usage,
        parse: |a| {
            with_help(a, deliver::usage, |a| {
                deliver::parse(a).map(|d| Command::Deliver(Box::new(d)))
            })
        },
        usage_exit: deliver::EX_USAGE,
    },
    Subcommand {
        name: "seed",
        usage: seed::usage,
        parse: |a| {
            with_help(a, seed::usage, |a| {
                seed::parse(a).map(|s| Command::Seed(Box::new(s)))
            })
        },
        usage_exit: 2,
    },
    Subcommand {
        name: "check",
        usage: check::usage,
        parse: |a| {
            with_help(a, check::usage, |a| {
                check::parse(a).map(|c| Command::Check(Box::new(c)))
            })
        },
        usage_exit: 2,
    },
    Subcommand {
        name: "undelete",
        usage: undelete::usage,
        parse: |a| {
            with_help(a, undelete::usage, |a| {
                undelete::parse(a).map(|u| Command::Undelete(Box::new(u)))
            })
        },
        usage_exit: 2,
    },
    Subcommand {
        name: "probe",
        usage: probe::usage,
        parse: |a| {
            with_help(a, probe::usage, |a| {
                probe::parse(a).map(|p| Command::Probe(Box::new(p)))
            })
        },
        usage_exit: 2,
    },
    Subcommand {
        name: "pw",
        usage: pw::usage,
        parse: |a| {
            pw::parse(a).map(|p| match p {
                pw::Args::Help => Action::Print(pw::usage()),
                pw::Args::Hash(scheme) => Action::Command(Command::Pw(scheme)),
            })
        },
        usage_exit: 2,
    },
];

fn with_help(
    args: &[String],
    usage: fn() -> String,
    parse: fn(&[String]) -> Result<Command, CliError>,
) -> Result<Action, CliError> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Action::Print(usage()));
    }
    parse(args).map(Action::Command)
}

/// Parses the arguments after the program name as the system passed them. `poplar deliver`
/// takes an argument that is not UTF-8 with its stray octets written `\xNN`: an MTA passes a
/// bounce's envelope sender as whatever octets it got, and failing there would lose the
/// message (a user name so written is refused for its backslash). Everywhere else such an
/// argument is a usage error.
pub fn parse_os(args: Vec<OsString>) -> Result<Action, UsageError> {
    let mut not_utf8 = None;
    let text: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string().unwrap_or_else(|a| {
                let shown = escape_non_utf8(a.as_encoded_bytes());
                not_utf8.get_or_insert_with(|| shown.clone());
                shown
            })
        })
        .collect();
    match not_utf8 {
        Some(arg) if text.first().is_none_or(|a| a != "deliver") => Err(usage_error(
            &text,
            CliError(format!("argument '{arg}' is not UTF-8")),
        )),
        _ => parse(&text),
    }
}

/// `bytes` with each octet that is not part of valid UTF-8 written as `\xNN`.
fn escape_non_utf8(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Action, UsageError> {
    let first = args.first().map(String::as_str);
    let parsed = match SUBCOMMANDS.iter().find(|s| Some(s.name) == first) {
        Some(sub) => (sub.parse)(&args[1..]),
        None => server::parse(args),
    };
    parsed.map_err(|error| usage_error(args, error))
}

/// A usage error of the subcommand (or the server) that `args` name.
fn usage_error(args: &[String], error: CliError) -> UsageError {
    let first = args.first().map(String::as_str);
    match SUBCOMMANDS.iter().find(|s| Some(s.name) == first) {
        Some(sub) => UsageError {
            program: format!("poplar {}", sub.name),
            error,
            usage: (sub.usage)(),
            exit: sub.usage_exit,
        },
        None => UsageError {
            program: "poplar".into(),
            error,
            usage: server::usage(),
            exit: 2,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn help_and_version() {
        let usage = server::usage();
        assert!(matches!(parse(&args("--help")), Ok(Action::Print(t)) if t == usage));
        assert!(matches!(parse(&args("-h --users x")), Ok(Action::Print(t)) if t == usage));
        assert!(matches!(parse(&args("-V")), Ok(Action::Print(t)) if t.starts_with("poplar ")));
        assert!(usage.contains("--listen"));
        for sub in ["deliver", "seed", "check", "undelete"] {
            for flag in ["-h", "--help"] {
                match parse(&args(&format!("{sub} --to x {flag}"))) {
                    Ok(Action::Print(text)) => assert!(text.contains(sub), "{text}"),
                    other => panic!("{sub} {flag}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            parse(&args("pw -s PLAIN")),
            Ok(Action::Command(Command::Pw(_)))
        ));
    }

    /// Whether `flag` stands in `text` as a word of its own (`-h` is not in `--from-header`).
    fn mentions(text: &str, flag: &str) -> bool {
        let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        text.match_indices(flag).any(|(i, _)| {
            !part(text[..i].chars().next_back()) && !part(text[i + flag.len()..].chars().next())
        })
    }

    #[test]
    fn each_subcommand_usage_line_names_every_flag_of_its_help() {
        for sub in &SUBCOMMANDS {
            let text = (sub.usage)();
            let (line, rest) = text.split_once("\n\n").unwrap();
            assert!(
                line.starts_with(&format!("Usage: poplar {} ", sub.name)),
                "{line}"
            );
            let options = rest.split_once("Options:").unwrap().1;
            let mut flags = 0;
            for l in options
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with('-'))
            {
                flags += 1;
                // "-m, --mail TEMPLATE", "--to USER", "-h, --help": either form will do.
                let forms: Vec<&str> = l
                    .split_whitespace()
                    .map(|w| w.trim_end_matches(','))
                    .take_while(|w| w.starts_with('-'))
                    .collect();
                assert!(
                    forms.iter().any(|f| mentions(line, f)),
                    "poplar {}: {forms:?} is not in the usage line: {line}",
                    sub.name
                );
            }
            assert!(flags > 1, "{text}");
            assert!(mentions(&text, "-h") && mentions(&text, "--help"), "{text}");
        }
    }

    #[test]
    fn usage_errors_name_the_subcommand_and_deliver_exits_64() {
        let e = parse(&args("deliver")).unwrap_err();
        assert!(e.to_string().starts_with("poplar deliver: "), "{e}");
        assert_eq!(e.exit, 64);
        let e = parse(&args("seed --bogus")).unwrap_err();
        assert!(e.to_string().starts_with("poplar seed: "), "{e}");
        assert_eq!(e.exit, 2);
        let e = parse(&args("--bogus")).unwrap_err();
        assert!(e.to_string().starts_with("poplar: "), "{e}");
        assert!(e.to_string().ends_with(&server::usage()));
    }

    #[test]
    fn only_deliver_takes_arguments_that_are_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let os = |s: &[u8]| OsString::from_vec(s.to_vec());
        let deliver = [
            &b"deliver"[..],
            b"--mail",
            b"/m/%n",
            b"-f",
            b"\xe9t\xe9@x",
            b"bob",
        ];
        match parse_os(deliver.iter().map(|a| os(a)).collect()) {
            Ok(Action::Command(Command::Deliver(d))) => {
                assert_eq!(d.sender.as_deref(), Some("\\xe9t\\xe9@x"));
            }
            other => panic!("{other:?}"),
        }
        let e = parse_os(vec![os(b"--users"), os(b"/u\xff")]).unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(e.to_string().contains("'/u\\xff' is not UTF-8"), "{e}");
        let e = parse_os(vec![os(b"seed"), os(b"--to"), os(b"\xff")]).unwrap_err();
        assert!(e.to_string().starts_with("poplar seed: "), "{e}");
    }
}
