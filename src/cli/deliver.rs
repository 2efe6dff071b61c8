//! `poplar deliver`: append one message from stdin to a user's mbox, for an MTA's
//! mailbox_command or a development mailbox, with sysexits exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use getopts::Options;

use super::CliError;
use super::flags::{StorageUse, mbox_flags, mbox_options};
use crate::mailbox::UserName;
use crate::mailbox::append::{AppendError, append};
use crate::mailbox::mbox::MboxOptions;
use crate::mailbox::template::MailTemplate;

/// sysexits.h: the command was used incorrectly.
pub const EX_USAGE: u8 = 64;
/// sysexits.h: the input data was incorrect.
pub const EX_DATAERR: u8 = 65;
/// sysexits.h: the addressee is unknown.
pub const EX_NOUSER: u8 = 67;
/// sysexits.h: a temporary failure; the sender should try again later.
pub const EX_TEMPFAIL: u8 = 75;

/// A parsed `poplar deliver` command line.
#[derive(Debug)]
pub struct Deliver {
    /// `--mail TEMPLATE`.
    pub mail: MailTemplate,
    /// `-f SENDER`, for the From_ line: any text, an empty one being a bounce's null sender
    /// (`append::from_line_sender` makes it safe).
    pub sender: Option<String>,
    /// The user whose mbox gets the message (checked later: a bad name is EX_NOUSER).
    pub user: String,
    /// Lock settings (`--mbox-locks`, `--lock-timeout`, `--stale-lock-age`).
    pub mbox: MboxOptions,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "m",
        "mail",
        "path of each user's mbox (as for the server)",
        "TEMPLATE",
    );
    o.optopt(
        "f",
        "from",
        "envelope sender for the From_ line (empty or <> for a bounce)",
        "SENDER",
    );
    mbox_options(&mut o, StorageUse::Append);
    o.optflag("h", "help", "print this help and exit");
    o
}

/// The usage text of `poplar deliver`.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar deliver --mail TEMPLATE [-f SENDER] [--mbox-locks LIST] [--lock-timeout SECS]\n       \
         [--stale-lock-age SECS] [--mbox-follow-symlinks] [--mbox-any-owner]\n       \
         [--mbox-unquote] [--uidl-from-header] [-h] USER < message\n\n\
         Appends one message to USER's mbox. The From_ line carries SENDER (MAILER-DAEMON when\n\
         it is empty or <>), with spaces, control and non-ASCII octets written as \\xNN.\n\
         Exit codes: 0 delivered; 64 usage, 65 empty message, 67 no such user or mailbox\n\
         directory (permanent: retrying cannot help); 75 mailbox busy, out of space or any\n\
         other I/O error (temporary: try again later).",
    )
}

/// Parses the arguments after `deliver`.
pub fn parse(args: &[String]) -> Result<Deliver, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    let mail = m
        .opt_str("mail")
        .ok_or_else(|| CliError("--mail TEMPLATE is required".into()))?;
    let mail = MailTemplate::parse(&mail).map_err(|e| CliError(format!("--mail: {e}")))?;
    let [user] = &m.free[..] else {
        return Err(CliError("exactly one USER is required".into()));
    };
    let sender = m.opt_str("from");
    let mut mbox = MboxOptions::default();
    mbox_flags(&m, &mut mbox)?;
    Ok(Deliver {
        mail,
        sender,
        user: user.clone(),
        mbox,
    })
}

/// Delivers stdin; returns the sysexits code and says why on stderr if it failed.
pub fn run(d: &Deliver) -> ExitCode {
    let user = match UserName::new(d.user.as_bytes()) {
        Ok(user) => user,
        Err(e) => {
            eprintln!(
                "poplar deliver: user '{}' refused: {e} (permanent: retrying cannot help)",
                crate::logsafe::escape(d.user.as_bytes())
            );
            return ExitCode::from(EX_NOUSER);
        }
    };
    let path: PathBuf = d.mail.expand(&user);
    let mut stdin = std::io::stdin().lock();
    // A panic (a bug of ours) must not bounce the message: MTAs bounce on exit 101. The
    // unwinding releases the locks, and the delivery note left behind makes the next
    // delivery or login cut off what was written, so the MTA's retry starts clean.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        append(
            &path,
            d.sender.as_deref(),
            &mut stdin,
            &d.mbox.locks,
            d.mbox.trust,
            SystemTime::now(),
        )
    }))
    .unwrap_or_else(|_| {
        Err(AppendError::Io(std::io::Error::other(
            "internal error (a bug in poplar; the partial message is removed before the next \
             delivery)",
        )))
    });
    match result {
        Ok(n) => {
            // Quiet on success: an MTA may pass a mailbox_command's output on.
            log::debug!("delivered {n} octets to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Only what no retry can change is permanent: MTAs bounce on 67 and 65 (and 64)
            // but queue and retry on 75 (Postfix's local and pipe, Exim, sendmail alike).
            let (code, kind) = match e {
                AppendError::NoMailbox => (EX_NOUSER, "permanent: retrying cannot help"),
                AppendError::Data(_) => (EX_DATAERR, "permanent: retrying cannot help"),
                AppendError::Busy | AppendError::Io(_) => {
                    (EX_TEMPFAIL, "temporary: try again later")
                }
            };
            eprintln!("poplar deliver: {}: {e} ({kind})", path.display());
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn deliver_arguments() {
        let d = parse(&args("--mail /m/%n -f a@b --lock-timeout 2 bob")).unwrap();
        assert_eq!((d.user.as_str(), d.sender.as_deref()), ("bob", Some("a@b")));
        assert_eq!(d.mbox.locks.timeout, std::time::Duration::from_secs(2));
        for bad in [
            "bob",
            "--mail /m/%n",
            "--mail /m/%n a b",
            "--mail /m/%x bob",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        for sender in ["", "<>", "a b", "jö@b", "a\nb", &"x".repeat(5000)] {
            let d = parse(&[
                "--mail".into(),
                "/m/%n".into(),
                "-f".into(),
                sender.into(),
                "u".into(),
            ])
            .unwrap_or_else(|e| panic!("{sender:?}: {e}"));
            assert_eq!(d.sender.as_deref(), Some(sender));
        }
    }
}
