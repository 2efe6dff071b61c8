//! Flags shared by the server and the subcommands: the storage flags and seconds.

use std::time::Duration;

use getopts::Options;

use super::CliError;
use crate::limits::MAX_FLAG_SECONDS;
use crate::mailbox::mbox::MboxOptions;

/// The storage flags, shared by the server and `poplar deliver`.
pub fn mbox_options(o: &mut Options) {
    o.optflag(
        "",
        "mbox-unquote",
        "send '>From ' lines with one '>' less (mboxrd writers); sizes follow",
    );
    o.optflag(
        "",
        "uidl-from-header",
        "use unique X-UIDL: headers as UIDs (migration from qpopper; spam can forge them)",
    );
    o.optopt(
        "",
        "mbox-locks",
        "locks toward delivery agents, in order (default dotlock,fcntl); add dotlock-on-read \
         to take them when a login only reads, too",
        "LIST",
    );
    o.optopt(
        "",
        "lock-timeout",
        "longest wait for the mbox locks before 'mailbox busy' (default 10)",
        "SECS",
    );
    o.optopt(
        "",
        "stale-lock-age",
        "break a dotlock unchanged this long, with its mbox (default 300)",
        "SECS",
    );
    o.optflag(
        "",
        "mbox-follow-symlinks",
        "open a mailbox that is a symbolic link (refused by default)",
    );
    o.optflag(
        "",
        "mbox-any-owner",
        "use mailboxes owned by other users than poplar's (refused by default)",
    );
}

/// Reads the storage flags into `mbox`.
pub fn mbox_flags(m: &getopts::Matches, mbox: &mut MboxOptions) -> Result<(), CliError> {
    mbox.view.unquote = m.opt_present("mbox-unquote");
    mbox.view.uidl_from_header = m.opt_present("uidl-from-header");
    mbox.trust.follow_symlinks = m.opt_present("mbox-follow-symlinks");
    mbox.trust.any_owner = m.opt_present("mbox-any-owner");
    if let Some(list) = m.opt_str("mbox-locks") {
        mbox.locks
            .parse_locks(&list)
            .map_err(|e| CliError(format!("--mbox-locks: {e}")))?;
    }
    if let Some(d) = seconds(m, "lock-timeout")? {
        mbox.locks.timeout = d;
    }
    if let Some(d) = seconds(m, "stale-lock-age")? {
        mbox.locks.stale_after = d;
    }
    Ok(())
}

/// A non-negative number of seconds, fractions allowed, up to [`MAX_FLAG_SECONDS`]: a deadline
/// computed from a larger one could overflow the clock and take every session down with it.
pub fn seconds(m: &getopts::Matches, name: &str) -> Result<Option<Duration>, CliError> {
    let Some(v) = m.opt_str(name) else {
        return Ok(None);
    };
    let d = v
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| CliError(format!("--{name}: '{v}' is not a number of seconds")))?;
    if d > MAX_FLAG_SECONDS {
        return Err(CliError(format!(
            "--{name}: {v} is more than {} seconds",
            MAX_FLAG_SECONDS.as_secs()
        )));
    }
    Ok(Some(d))
}
