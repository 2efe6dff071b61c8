//! `poplar check`: report what poplar sees in a mailbox (messages, sizes, UIDs, quoting,
//! locks, journals, garbled regions, permissions) without changing it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use getopts::Options;

use super::CliError;
use super::flags::{StorageUse, mbox_flags, mbox_options};
use crate::mailbox::UserName;
use crate::mailbox::inspect::{Dotlock, Garbled, Journal, Report, inspect};
use crate::mailbox::mbox::MboxOptions;
use crate::mailbox::rollback::Pending;
use crate::mailbox::template::MailTemplate;
use crate::plural::plural;

/// Exit code: the mailbox could not be read at all.
pub const EXIT_UNREADABLE: u8 = 3;

/// A parsed `poplar check` command line.
#[derive(Debug)]
pub struct Check {
    /// The mbox file: the argument, or the user's mbox under `--mail`.
    pub path: PathBuf,
    /// How the server would read it (`--mbox-unquote`, `--uidl-from-header`, lock flags).
    pub mbox: MboxOptions,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "m",
        "mail",
        "path of each user's mbox: the argument is then a USER (as for the server)",
        "TEMPLATE",
    );
    mbox_options(&mut o, StorageUse::Inspect);
    o.optflag("h", "help", "print this help and exit");
    o
}

/// The usage text of `poplar check`.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar check [--mail TEMPLATE] [--mbox-unquote] [--uidl-from-header]\n       \
         [--mbox-locks LIST] [--stale-lock-age SECS] [--lock-timeout SECS]\n       \
         [--mbox-follow-symlinks] [--mbox-any-owner] [-h] USER|MBOX\n\n\
         Reports what poplar sees in a mailbox, changing nothing and taking no lock. Exit\n\
         codes: 0 no problems, 1 problems found (listed as 'problem' lines), 2 usage,\n\
         3 the mailbox does not exist or cannot be read.",
    )
}

/// Parses the arguments after `check`.
pub fn parse(args: &[String]) -> Result<Check, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    let [arg] = &m.free[..] else {
        return Err(CliError("exactly one USER or MBOX is required".into()));
    };
    let path = match m.opt_str("mail") {
        Some(t) => {
            let t = MailTemplate::parse(&t).map_err(|e| CliError(format!("--mail: {e}")))?;
            let user =
                UserName::new(arg.as_bytes()).map_err(|e| CliError(format!("'{arg}': {e}")))?;
            t.expand(&user)
        }
        None => PathBuf::from(arg),
    };
    let mut mbox = MboxOptions::default();
    mbox_flags(&m, &mut mbox)?;
    Ok(Check { path, mbox })
}

/// Inspects the mailbox and prints the report on stdout.
pub fn run(c: &Check) -> ExitCode {
    // Most often a mistyped path or template: say so rather than report an empty mailbox.
    if let Err(e) = std::fs::symlink_metadata(&c.path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        let dir = c.path.parent().filter(|d| !d.as_os_str().is_empty());
        let why = match dir {
            Some(d) if !d.is_dir() => format!("its directory {} does not exist", d.display()),
            _ => "no such file (the server shows an empty maildrop until mail arrives)".into(),
        };
        eprintln!("poplar check: {}: {why}", c.path.display());
        return ExitCode::from(EXIT_UNREADABLE);
    }
    match inspect(&c.path, &c.mbox) {
        Ok(report) => {
            let (text, problems) = render(&report, &c.mbox);
            print!("{text}");
            if problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("poplar check: {}: {e}", c.path.display());
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// The report as stable text (one `label  value` line each, messages indented) and the
/// number of problems in it.
pub fn render(r: &Report, options: &MboxOptions) -> (String, usize) {
    let mut out = String::new();
    let mut problems = Vec::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<9} {value}");
    };
    line("mailbox", r.path.display().to_string());
    match &r.file {
        None => line("file", "missing (an empty maildrop)".into()),
        Some(f) => line(
            "file",
            format!(
                "{}, mode {:04o}, uid {}, gid {}",
                plural(f.len, "byte"),
                f.mode,
                f.uid,
                f.gid
            ),
        ),
    }
    let total: u64 = r.messages.iter().map(|m| m.size).sum();
    let sizes = if options.view.unquote {
        "as sent, unquoted"
    } else {
        "as sent"
    };
    line(
        "messages",
        format!("{} ({} {sizes})", r.messages.len(), plural(total, "octet")),
    );
    for (i, m) in r.messages.iter().enumerate() {
        let uid = m.uid.as_deref().unwrap_or("(assigned at next login)");
        line(
            "message",
            format!(
                "{}  offset {}  size {}  uid {uid}",
                i + 1,
                m.extent.start,
                m.size
            ),
        );
    }
    line(
        "uids",
        match r.indexed {
            0 => "no UID index yet".into(),
            n => format!(
                "{n} of {} in the UID index",
                plural(r.messages.len() as u64, "message")
            ),
        },
    );
    let d = &r.dialect;
    line(
        "dialect",
        if d.length_framed > 0 {
            format!(
                "mboxcl2: Content-Length on {} of {}, as Dovecot, UW-IMAP and Solaris mail \
                 write ({} kept inside {})",
                d.length_framed,
                plural(r.messages.len() as u64, "message"),
                crate::plural::plural(d.unsplit, "body 'From ' line"),
                if d.unsplit == 1 {
                    "its message"
                } else {
                    "their messages"
                }
            )
        } else {
            "mboxo/mboxrd: no Content-Length, body 'From ' lines quoted, as Postfix, procmail \
             and Exim write"
                .into()
        },
    );
    if let Some(f) = d.folder {
        line(
            "folder",
            format!(
                "IMAP UIDVALIDITY {}, last UID {}{}",
                f.validity,
                f.last,
                if d.internal {
                    "; folder-internal pseudo-message kept, never served"
                } else {
                    ""
                }
            ),
        );
    }
    let own = r.messages.len() - d.imap_uidls;
    line(
        "uidls",
        match (d.imap_uidls, own) {
            (0, _) => "poplar's own (24 hex digits)".into(),
            (n, 0) => format!("Dovecot's (X-UID, UIDVALIDITY: %08Xu%08Xv) for all {n}"),
            (n, m) => {
                format!("Dovecot's (X-UID, UIDVALIDITY: %08Xu%08Xv) for {n}, poplar's own for {m}")
            }
        },
    );
    line(
        "quoting",
        match r.quoted_lines {
            0 => "no '>From ' lines".into(),
            n if options.view.unquote => {
                format!(
                    "{}, sent with one '>' fewer",
                    crate::plural::plural(n, "'>From ' line")
                )
            }
            n => format!(
                "{}, sent as stored (see --mbox-unquote)",
                crate::plural::plural(n, "'>From ' line")
            ),
        },
    );
    line(
        "dotlock",
        match &r.dotlock {
            Dotlock::Absent => "none".into(),
            Dotlock::Held(who) => format!("held ({who}); a delivery may be running"),
            Dotlock::Stale(why) => {
                problems.push(format!("stale dotlock ({why}); the next login breaks it"));
                format!("stale: {why}")
            }
        },
    );
    line(
        "journal",
        match r.journal {
            Journal::Absent => "none".into(),
            Journal::Complete => {
                problems.push(
                    "a commit was interrupted; the next login or delivery finishes it".into(),
                );
                "complete: an interrupted commit, finished at the next login or delivery".into()
            }
            Journal::Incomplete => {
                problems.push("an incomplete journal; the next login or delivery drops it".into());
                "incomplete: discarded at the next login or delivery (the mbox is as before)".into()
            }
            Journal::Foreign => {
                problems.push("a journal for another file; the next login sets it aside".into());
                "for another file at this path: set aside at the next login".into()
            }
        },
    );
    for o in &r.orphans {
        problems.push(format!(
            "a journal set aside, never applied: {} (docs/storage.md)",
            o.display()
        ));
    }
    line(
        "delivery",
        match &r.delivery {
            Pending::Absent => "none".into(),
            Pending::Running { pid, host } => {
                format!("process {pid} on {host} may still be writing; left alone until it is gone")
            }
            Pending::Interrupted { at, extra } => {
                problems.push(format!(
                    "a killed delivery left {} at {at}; the next login or delivery cuts them",
                    plural(*extra, "octet")
                ));
                format!(
                    "interrupted: the mbox is cut back to {} at the next login or delivery",
                    plural(*at, "octet")
                )
            }
            Pending::Kept(why) => {
                problems.push(format!(
                    "a killed delivery's note: {why}; the next login or delivery removes it and cuts nothing"
                ));
                format!("note kept from cutting: {why}")
            }
        },
    );
    if let Some(n) = r.kept_deleted {
        line(
            "deleted",
            format!("{} kept in the .deleted mbox", plural(n, "byte")),
        );
    }
    for g in &r.garbled {
        problems.push(match g {
            Garbled::Preamble(n) => {
                format!(
                    "{} before the first From_ line (no message; never sent)",
                    plural(*n, "byte")
                )
            }
            Garbled::Nul { count, first } => {
                format!("NUL bytes: {count}, the first at offset {first}")
            }
            Garbled::Unterminated => {
                "the file does not end with a newline (last message cut short?)".into()
            }
            Garbled::BadDate(i, from) => format!("message {i}: no date in its From_ line: {from}"),
        });
    }
    problems.extend(r.access.iter().cloned());
    let count = problems.len();
    for p in problems {
        line("problem", p);
    }
    line(
        "result",
        match count {
            0 => "ok".into(),
            n => plural(n as u64, "problem"),
        },
    );
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn check_arguments() {
        assert_eq!(parse(&args("/m/x")).unwrap().path, PathBuf::from("/m/x"));
        let c = parse(&args("--mail /m/%n --mbox-unquote bob@x")).unwrap();
        assert_eq!(c.path, PathBuf::from("/m/bob"));
        assert!(c.mbox.view.unquote);
        for bad in [
            "",
            "a b",
            "--mail /m/%n ../x",
            "--mail /m/%q a",
            "--bogus a",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
