//! Flags shared by the server and the subcommands: the storage flags and seconds.

use std::time::Duration;

use getopts::Options;

use super::CliError;
use crate::limits::MAX_FLAG_SECONDS;
use crate::mailbox::mbox::MboxOptions;

/// Who takes the storage flags: each says in its help what a flag does there. Every command
/// accepts every storage flag, so the server's flags can be passed to it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageUse {
    /// The server: what clients see, and the locks.
    Serve,
    /// `poplar deliver` and `seed`: appending, under the locks.
    Append,
    /// `poplar check`: what the server would show; no lock is taken.
    Inspect,
}

/// The storage flags, shared by the server and the subcommands, with help for `used`.
pub fn mbox_options(o: &mut Options, used: StorageUse) {
    let unquote = match used {
        StorageUse::Serve => "send '>From ' lines with one '>' less (mboxrd writers); sizes follow",
        StorageUse::Append => {
            "no effect here, accepted as the server takes it (a delivery always adds one '>' to \
             '>*From ' lines, which the server's --mbox-unquote takes off)"
        }
        StorageUse::Inspect => "show sizes as a server with --mbox-unquote sends them",
    };
    let uidl = match used {
        StorageUse::Serve => {
            "use unique X-UIDL: headers as UIDs (migration from qpopper; spam can forge them)"
        }
        StorageUse::Append => "no effect here, accepted as the server takes it",
        StorageUse::Inspect => "show UIDs as a server with --uidl-from-header gives them",
    };
    o.optflag("", "mbox-unquote", unquote);
    o.optflag("", "uidl-from-header", uidl);
    lock_options(o, used);
}

/// The storage flags about locks and which files are used, without those about what clients
/// see (`poplar undelete` takes only these), with help for `used`.
pub fn lock_options(o: &mut Options, used: StorageUse) {
    let inspect = used == StorageUse::Inspect;
    o.optopt(
        "",
        "mbox-locks",
        if inspect {
            "the locks the server takes, in order: whether dotlocks must be possible \
             (default dotlock,fcntl)"
        } else {
            "locks toward delivery agents, in order (default dotlock,fcntl); add dotlock-on-read \
             to take them when a login only reads, too"
        },
        "LIST",
    );
    o.optopt(
        "",
        "lock-timeout",
        if inspect {
            "no effect here (check waits for no lock), accepted as the server takes it"
        } else {
            "longest wait for the mbox locks before 'mailbox busy' (default 10)"
        },
        "SECS",
    );
    o.optopt(
        "",
        "stale-lock-age",
        if inspect {
            "report a dotlock unchanged this long, with its mbox, as stale (default 300)"
        } else {
            "break a dotlock unchanged this long, with its mbox (default 300)"
        },
        "SECS",
    );
    o.optflag(
        "",
        "mbox-follow-symlinks",
        if inspect {
            "no effect here (check reads the file as it is), accepted as the server takes it"
        } else {
            "open a mailbox that is a symbolic link (refused by default)"
        },
    );
    o.optflag(
        "",
        "mbox-any-owner",
        if inspect {
            "no effect here (check reads the file as it is), accepted as the server takes it"
        } else {
            "use mailboxes owned by other users than poplar's (refused by default)"
        },
    );
}

/// Reads the storage flags into `mbox`.
pub fn mbox_flags(m: &getopts::Matches, mbox: &mut MboxOptions) -> Result<(), CliError> {
    mbox.view.unquote = m.opt_present("mbox-unquote");
    mbox.view.uidl_from_header = m.opt_present("uidl-from-header");
    lock_flags(m, mbox)
}

/// Reads the flags of [`lock_options`] into `mbox`.
pub fn lock_flags(m: &getopts::Matches, mbox: &mut MboxOptions) -> Result<(), CliError> {
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
