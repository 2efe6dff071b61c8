//! `poplar undelete`: put the messages that `--keep-deleted` kept back into a user's mbox, as
//! new deliveries under the delivery locks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use getopts::Options;

use super::CliError;
use super::flags::{StorageUse, lock_flags, lock_options};
use crate::mailbox::UserName;
use crate::mailbox::files;
use crate::mailbox::keep::unix_days;
use crate::mailbox::mbox::MboxOptions;
use crate::mailbox::template::MailTemplate;
use crate::mailbox::undelete::undelete;
use crate::plural::plural;

/// A parsed `poplar undelete` command line.
#[derive(Debug)]
pub struct Undelete {
    /// The user's mbox, from `--mail` and USER.
    pub path: PathBuf,
    /// `--since WHEN`: only messages deleted at or after it.
    pub since: Option<When>,
    /// Lock and trust settings (`--mbox-locks`, `--lock-timeout`, ...).
    pub mbox: MboxOptions,
}

/// A `--since` time: a moment, or a span back from when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// An RFC 3339 date or date and time.
    At(SystemTime),
    /// `3d`, `12h`, `30m`: that long before now.
    Ago(Duration),
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
        "",
        "since",
        "only messages deleted since WHEN: 3d, 12h, 30m ago, or an RFC 3339 date \
         (2026-11-26, 2026-11-26T09:00:00Z)",
        "WHEN",
    );
    lock_options(&mut o, StorageUse::Append);
    o.optflag("h", "help", "print this help and exit");
    o
}

/// The usage text of `poplar undelete`.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar undelete --mail TEMPLATE [--since WHEN] [--mbox-locks LIST]\n       \
         [--lock-timeout SECS] [--stale-lock-age SECS] [--mbox-follow-symlinks]\n       \
         [--mbox-any-owner] [-h] USER\n\n\
         Puts the messages that --keep-deleted kept in USER's <mbox>.deleted back into the\n\
         mbox, as new messages (new UIDLs) under the delivery locks, and removes them from\n\
         <mbox>.deleted once they are safely in the mbox. Run it as the user the server runs\n\
         as. Exit codes: 0 done (also when nothing was kept), 1 failed (the mailbox is as it\n\
         was, or a message is in both files), 2 usage.",
    )
}

/// Parses the arguments after `undelete`.
pub fn parse(args: &[String]) -> Result<Undelete, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    let mail = m
        .opt_str("mail")
        .ok_or_else(|| CliError("--mail TEMPLATE is required".into()))?;
    let mail = MailTemplate::parse(&mail).map_err(|e| CliError(format!("--mail: {e}")))?;
    let [user] = &m.free[..] else {
        return Err(CliError("exactly one USER is required".into()));
    };
    let user = UserName::new(user.as_bytes()).map_err(|e| CliError(format!("'{user}': {e}")))?;
    let since = match m.opt_str("since") {
        Some(v) => Some(parse_when(&v).ok_or_else(|| {
            CliError(format!(
                "--since: '{v}' is neither a span (3d, 12h, 30m) nor an RFC 3339 date"
            ))
        })?),
        None => None,
    };
    let mut mbox = MboxOptions::default();
    lock_flags(&m, &mut mbox)?;
    Ok(Undelete {
        path: mail.expand(&user),
        since,
        mbox,
    })
}

/// `3d`, `12h`, `30m`; `2026-11-26` (midnight UTC); `2026-11-26T09:00:00Z` or with an offset
/// (`+01:00`), fractions of a second ignored, `t` or a space for `T`.
pub fn parse_when(v: &str) -> Option<When> {
    for (unit, per) in [('d', 86_400), ('h', 3_600), ('m', 60)] {
        if let Some(n) = v.strip_suffix(unit) {
            let n: u64 = digits(n)?.parse().ok()?;
            return Some(When::Ago(Duration::from_secs(n.checked_mul(per)?)));
        }
    }
    let b = v.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let field = |r: std::ops::Range<usize>| digits(v.get(r)?)?.parse::<u32>().ok();
    let days = unix_days(i64::from(field(0..4)?), field(5..7)?, field(8..10)?)?;
    let mut secs = days * 86_400;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, m, s) = (field(11..13)?, field(14..16)?, field(17..19)?);
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        secs += i64::from(h * 3600 + m * 60 + s);
        let mut rest = v.get(19..)?;
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            rest = &frac[n..];
        }
        secs -= match rest.as_bytes() {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (oh, om) = (digits(rest.get(1..3)?)?, digits(rest.get(4..6)?)?);
                let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = oh * 3600 + om * 60;
                if *sign == b'+' { off } else { -off }
            }
            _ => return None,
        };
    }
    Some(When::At(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?),
    ))
}

/// `s` if it is one or more ASCII digits.
fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// Restores the kept messages and says what it did on stdout.
pub fn run(u: &Undelete) -> ExitCode {
    let now = SystemTime::now();
    let since = u.since.map(|w| match w {
        When::At(t) => t,
        When::Ago(d) => now.checked_sub(d).unwrap_or(UNIX_EPOCH),
    });
    let kept = files::deleted(&u.path);
    match undelete(&u.path, since, &u.mbox.locks, u.mbox.trust, now) {
        Ok(r) => {
            println!(
                "restored {} ({}) to {}; {} left in {}",
                plural(r.messages, "message"),
                plural(r.octets, "octet"),
                u.path.display(),
                plural(r.left, "message"),
                kept.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("poplar undelete: {}: {e}", u.path.display());
            ExitCode::FAILURE
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
    fn undelete_arguments() {
        let u = parse(&args("--mail /m/%n --since 3d --lock-timeout 2 bob")).unwrap();
        assert_eq!(u.path, PathBuf::from("/m/bob"));
        assert_eq!(u.since, Some(When::Ago(Duration::from_secs(3 * 86_400))));
        assert_eq!(u.mbox.locks.timeout, Duration::from_secs(2));
        assert_eq!(parse(&args("-m /m/%n bob")).unwrap().since, None);
        for bad in [
            "bob",
            "--mail /m/%n",
            "--mail /m/%n a b",
            "--mail /m/%n .x",
            "--mail /m/%n --since yesterday bob",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn when_is_a_span_or_an_rfc3339_date() {
        let at = |s| Some(When::At(UNIX_EPOCH + Duration::from_secs(s)));
        let ago = |s| Some(When::Ago(Duration::from_secs(s)));
        assert_eq!(parse_when("3d"), ago(3 * 86_400));
        assert_eq!(parse_when("12h"), ago(12 * 3600));
        assert_eq!(parse_when("30m"), ago(1800));
        assert_eq!(parse_when("0d"), ago(0));
        assert_eq!(parse_when("2026-11-26"), at(1_795_651_200));
        assert_eq!(parse_when("2026-11-26T09:00:00Z"), at(1_795_683_600));
        assert_eq!(parse_when("2026-11-26t09:00:00.25z"), at(1_795_683_600));
        assert_eq!(parse_when("2026-11-26 10:30:00+01:30"), at(1_795_683_600));
        assert_eq!(parse_when("2026-11-26T04:00:00-05:00"), at(1_795_683_600));
        assert_eq!(parse_when("1970-01-01T00:00:00Z"), at(0));
        for bad in [
            "",
            "d",
            "3",
            "3w",
            "-3d",
            "3.5d",
            "99999999999999999999d",
            "2026-02-30",
            "2026-11-26T09:00Z",
            "2026-11-26T25:00:00Z",
            "2026-11-26T09:00:00",
            "2026-11-26T09:00:00+0100",
            "1969-12-31",
            "26-11-2026",
            "2026-1-26",
            "3é",
            "2026-11-26T09:00:0é",
            "2026-11-26T09:00:00+é:00",
            "é026-11-26",
        ] {
            assert_eq!(parse_when(bad), None, "{bad}");
        }
    }
}
