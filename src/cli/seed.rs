//! `poplar seed`: fill a (development) mailbox from `.eml` files, directories of them, or
//! existing mbox files, each message appended exactly as `poplar deliver` appends one.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use getopts::Options;

use super::CliError;
use super::edge_cases::EDGE_CASES;
use super::flags::{StorageUse, mbox_flags, mbox_options};
use crate::config::DevMode;
use crate::mailbox::UserName;
use crate::mailbox::append::{AppendError, append};
use crate::mailbox::index::Extent;
use crate::mailbox::mbox::MboxOptions;
use crate::mailbox::positioned::RangeReader;
use crate::mailbox::quote::Unquote;
use crate::mailbox::scan::scan;
use crate::mailbox::template::MailTemplate;
use crate::plural::plural;

/// What `poplar seed` appends.
#[derive(Debug, PartialEq, Eq)]
pub enum What {
    /// The `.eml` files, directories and mbox files, in order.
    Sources(Vec<PathBuf>),
    /// `--edge-cases`: the messages clients get wrong (docs/dev.md).
    EdgeCases,
}

/// A parsed `poplar seed` command line.
#[derive(Debug)]
pub struct Seed {
    /// Where the mailbox is: `--mail TEMPLATE`, or `DIR/%u` for `--dev DIR`.
    pub mail: MailTemplate,
    /// The `--dev` directory, created if missing.
    pub dev_dir: Option<PathBuf>,
    /// `--to USER`.
    pub user: String,
    /// What to append.
    pub what: What,
    /// Lock settings (`--mbox-locks`, `--lock-timeout`, `--stale-lock-age`).
    pub mbox: MboxOptions,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "",
        "to",
        "the user whose mailbox is filled (required)",
        "USER",
    );
    o.optopt(
        "",
        "edge-cases",
        "append the messages clients get wrong (docs/dev.md) to USER's mbox, instead of SOURCEs",
        "USER",
    );
    o.optopt(
        "m",
        "mail",
        "path of each user's mbox (as for the server)",
        "TEMPLATE",
    );
    o.optopt(
        "",
        "dev",
        "the directory of a `poplar --dev DIR` server: the mbox is DIR/USER",
        "DIR",
    );
    mbox_options(&mut o, StorageUse::Append);
    o.optflag("h", "help", "print this help and exit");
    o
}

/// The usage text of `poplar seed`.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar seed (--dev DIR | --mail TEMPLATE) (--to USER | --edge-cases USER)\n       \
         [--mbox-locks LIST] [--lock-timeout SECS] [--stale-lock-age SECS]\n       \
         [--mbox-follow-symlinks] [--mbox-any-owner] [--mbox-unquote] [--uidl-from-header]\n       \
         [-h] [SOURCE...]\n\n\
         Appends messages to USER's mbox as `poplar deliver` does. A SOURCE is a file ending in\n\
         .eml (one message), a directory (its *.eml files, in name order), or any other file:\n\
         an mbox if it starts with 'From ', else one message. Exit codes: 0 all seeded,\n\
         1 a source or the mailbox failed (messages before it stay), 2 usage.",
    )
}

/// Parses the arguments after `seed`.
pub fn parse(args: &[String]) -> Result<Seed, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    let (user, what) = match (m.opt_str("to"), m.opt_str("edge-cases")) {
        (Some(_), Some(_)) => {
            return Err(CliError("--to and --edge-cases exclude each other".into()));
        }
        (None, Some(user)) if m.free.is_empty() => (user, What::EdgeCases),
        (None, Some(_)) => return Err(CliError("--edge-cases takes no SOURCE".into())),
        (Some(_), None) if m.free.is_empty() => {
            return Err(CliError(
                "at least one SOURCE (.eml file, directory or mbox) is required".into(),
            ));
        }
        (Some(user), None) => (
            user,
            What::Sources(m.free.iter().map(PathBuf::from).collect()),
        ),
        (None, None) => {
            return Err(CliError(
                "--to USER (or --edge-cases USER) is required".into(),
            ));
        }
    };
    let (mail, dev_dir) = match (m.opt_str("mail"), m.opt_str("dev")) {
        (Some(t), None) => (
            MailTemplate::parse(&t).map_err(|e| CliError(format!("--mail: {e}")))?,
            None,
        ),
        (None, Some(d)) if !d.is_empty() => {
            let mode = DevMode::new(Some(PathBuf::from(&d)), false);
            (mode.template(), Some(mode.dir))
        }
        (None, Some(_)) => return Err(CliError("--dev: the directory name is empty".into())),
        _ => {
            return Err(CliError(
                "give the mailbox with exactly one of --dev DIR and --mail TEMPLATE".into(),
            ));
        }
    };
    let mut mbox = MboxOptions::default();
    mbox_flags(&m, &mut mbox)?;
    Ok(Seed {
        mail,
        dev_dir,
        user,
        what,
        mbox,
    })
}

/// Why seeding stopped.
#[derive(Debug)]
enum SeedError {
    /// A source could not be read.
    Source(PathBuf, io::Error),
    /// The mailbox refused a message.
    Append(PathBuf, AppendError),
}

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedError::Source(p, e) => write!(f, "{}: {e}", p.display()),
            SeedError::Append(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

/// Seeds the mailbox; prints what was added, or why it stopped (exit 1).
pub fn run(s: &Seed) -> ExitCode {
    let Ok(user) = UserName::new(s.user.as_bytes()) else {
        eprintln!("poplar seed: --to: invalid user name");
        return ExitCode::from(2);
    };
    if let Some(dir) = &s.dev_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("poplar seed: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let target = s.mail.expand(&user);
    let mut seeder = Seeder {
        target: &target,
        mbox: &s.mbox,
        messages: 0,
        octets: 0,
    };
    let result = match &s.what {
        What::Sources(sources) => sources.iter().try_for_each(|src| seeder.source(src)),
        What::EdgeCases => EDGE_CASES.iter().try_for_each(|case| {
            let name = PathBuf::from(format!("edge case {}", case.name));
            seeder.append(&name, &mut case.message())
        }),
    };
    println!(
        "{}: {} added ({})",
        target.display(),
        plural(seeder.messages, "message"),
        plural(seeder.octets, "octet")
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poplar seed: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Seeder<'a> {
    target: &'a Path,
    mbox: &'a MboxOptions,
    messages: u64,
    octets: u64,
}

impl Seeder<'_> {
    fn source(&mut self, src: &Path) -> Result<(), SeedError> {
        let fail = |e| SeedError::Source(src.to_owned(), e);
        if src.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(src).map_err(fail)? {
                let path = entry.map_err(fail)?.path();
                if is_eml(&path) && path.is_file() {
                    files.push(path);
                }
            }
            if files.is_empty() {
                return Err(fail(io::Error::other("no .eml files in this directory")));
            }
            files.sort();
            return files.iter().try_for_each(|f| self.message(f));
        }
        if is_eml(src) {
            return self.message(src);
        }
        let file = File::open(src).map_err(fail)?;
        let mut head = [0u8; 5];
        let n = file.read_at(&mut head, 0).map_err(fail)?;
        if head[..n] == *b"From " {
            self.mbox_file(src, &file)
        } else {
            self.message(src)
        }
    }

    fn message(&mut self, path: &Path) -> Result<(), SeedError> {
        let mut file = File::open(path).map_err(|e| SeedError::Source(path.to_owned(), e))?;
        self.append(path, &mut file)
    }

    /// Every message of an mbox, its From_ line kept and its body unquoted for the appender
    /// to quote again, so the copy is the message as stored.
    fn mbox_file(&mut self, path: &Path, file: &File) -> Result<(), SeedError> {
        let mut extents = Vec::new();
        scan(file, 0, |f| {
            extents.push(Extent {
                start: f.start,
                data: f.data,
                end: f.end,
            });
            Ok(())
        })
        .map_err(|e| SeedError::Source(path.to_owned(), e))?;
        for e in &extents {
            let envelope = RangeReader::new(file, e.start, e.data);
            let body = Unquote::new(RangeReader::new(file, e.data, e.end));
            self.append(path, &mut envelope.chain(body))?;
        }
        println!(
            "{}: {}",
            path.display(),
            plural(extents.len() as u64, "message")
        );
        Ok(())
    }

    fn append(&mut self, src: &Path, input: &mut dyn Read) -> Result<(), SeedError> {
        let n = append(
            self.target,
            None,
            input,
            &self.mbox.locks,
            self.mbox.trust,
            SystemTime::now(),
        )
        .map_err(|e| match e {
            AppendError::Data(_) => {
                SeedError::Source(src.to_owned(), io::Error::other(e.to_string()))
            }
            other => SeedError::Append(self.target.to_owned(), other),
        })?;
        self.messages += 1;
        self.octets += n;
        Ok(())
    }
}

fn is_eml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("eml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn seed_arguments() {
        let s = parse(&args("--dev /tmp/d --to bob a.eml dir box")).unwrap();
        assert!(matches!(&s.what, What::Sources(v) if v.len() == 3));
        let s = parse(&args("--dev /tmp/d --edge-cases carol")).unwrap();
        assert_eq!((s.user.as_str(), s.what), ("carol", What::EdgeCases));
        assert_eq!(s.dev_dir, Some(PathBuf::from("/tmp/d")));
        let bob = UserName::new(b"bob").unwrap();
        assert_eq!(s.mail.expand(&bob), PathBuf::from("/tmp/d/bob"));
        let s = parse(&args("--mail /m/%n --to bob@x --mbox-locks fcntl a.eml")).unwrap();
        assert_eq!(s.dev_dir, None);
        assert_eq!(s.mail.expand(&bob), PathBuf::from("/m/bob"));
        for bad in [
            "--dev /d a.eml",
            "--dev /d --to bob",
            "--to bob a.eml",
            "--dev /d --mail /m/%n --to bob a.eml",
            "--mail /m/%x --to bob a.eml",
            "--dev= --to bob a.eml",
            "--dev /d --edge-cases bob a.eml",
            "--dev /d --edge-cases bob --to bob",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_mbox_source_is_copied_message_by_message_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let stored: &[u8] =
            b"From a@b Mon Jan  1 00:00:00 2024\nS: 1\n\n>From q\n>>From qq\n\nFrom c@d Tue Jan  2 00:00:00 2024\nS: 2\n\nx\n\n";
        std::fs::write(&src, stored).unwrap();
        let target = dir.path().join("box");
        let opts = MboxOptions::default();
        let mut s = Seeder {
            target: &target,
            mbox: &opts,
            messages: 0,
            octets: 0,
        };
        s.source(&src).unwrap();
        assert_eq!(s.messages, 2);
        assert_eq!(std::fs::read(&target).unwrap(), stored);
    }
}
