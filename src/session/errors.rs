//! The one mapping from failures to replies, endings and log lines.

use std::fmt::Display;
use std::io;
use std::time::Duration;

use crate::logline::{Event, emit};
use crate::mailbox::MailboxError;
use crate::metrics;
use crate::protocol::wire::{Reply, RespCode};

use super::authorization::login_event;
use super::{Ending, Tag};

/// How a session ends when the connection fails with `e`.
pub(super) fn io_ending(e: &io::Error) -> Ending {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ending::Timeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Ending::Disconnected,
        _ => Ending::NetworkError,
    }
}

/// Whose mailbox a failure is about: the user and where the store keeps it, named in every
/// log line about it so that an operator can go and look.
pub(super) struct Whose<'a> {
    pub(super) user: &'a str,
    pub(super) location: &'a str,
}

impl std::fmt::Display for Whose<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(user={} mailbox={})", self.user, self.location)
    }
}

impl Whose<'_> {
    /// An event about this mailbox for a structured log line: the session, the user, the
    /// mailbox and the error, as the text line names them.
    pub(super) fn event(&self, tag: &Tag, name: &'static str, e: &dyn Display) -> Event<'_> {
        tag.event(name)
            .text("user", self.user)
            .text("mailbox", self.location)
            .text("error", e.to_string())
    }
}

/// The one mapping from a mailbox failure to a reply and a log line.
pub(super) fn mailbox_reply(tag: &Tag, whose: &Whose, e: &MailboxError) -> Reply {
    use log::Level::{Error, Warn};
    let (level, reply) = match e {
        MailboxError::InUse => (
            Warn,
            Reply::err_code(RespCode::InUse, "mailbox is locked by another POP3 session"),
        ),
        MailboxError::Busy => (
            Warn,
            Reply::err_code(RespCode::SysTemp, "mailbox busy, try again later"),
        ),
        MailboxError::Changed => (
            Warn,
            Reply::err_code(
                RespCode::SysTemp,
                "mailbox changed by another program, log in again",
            ),
        ),
        MailboxError::Permission(_) => (
            Error,
            Reply::err_code(RespCode::SysPerm, "mailbox not accessible"),
        ),
        MailboxError::Unusable(why) => (
            Warn,
            Reply::err_code(RespCode::SysPerm, format!("mailbox unusable ({why})")),
        ),
        MailboxError::Io(_) | MailboxError::Unfinished { .. } => (
            Error,
            Reply::err_code(RespCode::SysTemp, "mailbox unavailable, try again later"),
        ),
    };
    emit!(
        level,
        whose.event(tag, "mailbox-error", e),
        "{tag} {e} {whose}"
    );
    reply
}

/// The refusal of a login (password already checked) that came sooner after the user's last
/// one than `--login-delay` allows; the mailbox was not opened.
pub(super) fn login_delay_reply(tag: &Tag, shown: &str, how: &str, wait: Duration) -> Reply {
    metrics::refused(metrics::Refusal::LoginDelay);
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    emit!(
        log::Level::Warn,
        login_event(tag, "login-refused", shown, how)
            .text("cap", "login-delay")
            .num("wait_ms", wait_ms),
        "{tag} {how} login for {shown} refused: login delay, {wait_ms} ms to go"
    );
    Reply::err_code(
        RespCode::LoginDelay,
        "logged in too recently; wait before logging in again",
    )
}

/// The reply to a QUIT whose commit failed, after logging why. Only an unfinished commit
/// touched the mailbox: its deletions are carried out at the next login (RFC 1939 lets QUIT
/// answer -ERR when deleted messages were not removed), or, after a second fault, perhaps
/// never; every other failure left the mailbox as it was.
pub(super) fn commit_failed_reply(tag: &Tag, whose: &Whose, e: &MailboxError) -> Reply {
    let event = whose.event(tag, "commit-failed", e);
    match e {
        MailboxError::Unfinished { pending: true, .. } => {
            emit!(log::Level::Error, event, "{tag} {e} {whose}");
            Reply::err_code(
                RespCode::SysTemp,
                "deleted messages not removed yet; your next login removes them",
            )
        }
        MailboxError::Unfinished { pending: false, .. } => {
            emit!(log::Level::Error, event, "{tag} {e} {whose}");
            Reply::err_code(
                RespCode::SysTemp,
                "deleted messages not removed; some may still be there at your next login",
            )
        }
        _ => {
            emit!(
                log::Level::Warn,
                event,
                "{tag} commit failed, nothing deleted: {e} {whose}"
            );
            Reply::err_code(
                RespCode::SysTemp,
                "could not remove deleted messages; mailbox unchanged",
            )
        }
    }
}
