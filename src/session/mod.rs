//! One POP3 session over any `BufRead + Write`: the greeting, the command loop, the phase
//! typestate, streaming RETR/TOP, UPDATE on QUIT, and the one mapping from errors to replies
//! and log lines.

mod authorization;
mod transaction;

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::UsersHandle;
use crate::command::{self, Command};
use crate::limits::{FILE_CHUNK, MAX_COMMAND_LINE};
use crate::mailbox::{MailStore, MailboxError, Maildrop};
use crate::wire::{self, Extent, Line, MessageWriter, Reply, RespCode};

use authorization::{AuthStep, Authorization};
use transaction::{Transaction, TxStep};

/// Settings that shape every session.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Delay before a failed login is answered (the same for unknown users).
    pub auth_failure_delay: Duration,
    /// The host name in the APOP timestamp.
    pub hostname: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auth_failure_delay: crate::limits::DEFAULT_AUTH_FAILURE_DELAY,
            hostname: "localhost".into(),
        }
    }
}

/// What every session shares: who may log in, where mail lives, and the settings.
#[derive(Clone)]
pub struct Context {
    /// The users table in force.
    pub users: UsersHandle,
    /// Where maildrops come from.
    pub store: Arc<dyn MailStore>,
    /// Session settings.
    pub settings: Settings,
}

/// How a session ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// QUIT, with UPDATE done if logged in.
    Quit,
    /// QUIT, but the deletions could not be committed; nothing was removed.
    CommitFailed,
    /// The client closed the connection (or the server cut it at shutdown).
    Disconnected,
    /// The inactivity timer ran out.
    Timeout,
    /// Reading from or writing to the client failed.
    NetworkError,
    /// The mailbox failed in the middle of sending a message.
    MailboxError,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Quit => "quit",
            Ending::CommitFailed => "commit-failed",
            Ending::Disconnected => "disconnected",
            Ending::Timeout => "timeout",
            Ending::NetworkError => "network-error",
            Ending::MailboxError => "mailbox-error",
        }
    }
}

/// Counters for the end-of-session log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// RETR commands answered with a message.
    pub retr: u64,
    /// Octets sent by RETR (message sizes as listed).
    pub retr_octets: u64,
    /// TOP commands answered.
    pub top: u64,
    /// Messages removed by the commit.
    pub deleted: u64,
    /// Octets of the messages removed by the commit.
    pub deleted_octets: u64,
}

/// A session's identity: its number and the client's address (for logs, limits and policy).
pub struct Tag {
    /// Connection number, unique in this process.
    pub id: u64,
    /// The client's real address, when known (not for a session on stdin/stdout).
    pub peer: Option<std::net::SocketAddr>,
}

impl std::fmt::Display for Tag {
    /// `[id peer]`, the prefix of every log line about the session.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(p) => write!(f, "[{} {p}]", self.id),
            None => write!(f, "[{} -]", self.id),
        }
    }
}

/// What the session is doing now.
enum Phase {
    Authorization(Authorization),
    Transaction(Box<Transaction>),
}

/// Runs one session to its end: greets, answers commands in order, and on QUIT in
/// TRANSACTION commits the deletions. Any other ending commits nothing.
pub fn run<R: BufRead, W: Write>(ctx: &Context, tag: &Tag, mut input: R, mut output: W) -> Ending {
    let started = Instant::now();
    log::info!("{tag} session start");
    let timestamp = apop_timestamp(tag.id, &ctx.settings.hostname);
    let mut phase = Phase::Authorization(Authorization::new());
    let mut stats = Stats::default();
    let mut user = None;
    let greeting = Reply::ok(format!("poplar ready {timestamp}"));
    let ending = match send(&mut output, &greeting) {
        Err(e) => io_ending(&e),
        Ok(()) => command_loop(
            ctx,
            tag,
            &timestamp,
            &mut phase,
            &mut stats,
            &mut user,
            &mut input,
            &mut output,
        ),
    };
    log::info!(
        "{tag} session end user={} reason={} duration_ms={} retr={} retr_octets={} top={} dele={} dele_octets={}",
        user.as_deref().unwrap_or("-"),
        ending.as_str(),
        started.elapsed().as_millis(),
        stats.retr,
        stats.retr_octets,
        stats.top,
        stats.deleted,
        stats.deleted_octets,
    );
    ending
}

#[allow(clippy::too_many_arguments)]
fn command_loop<R: BufRead, W: Write>(
    ctx: &Context,
    tag: &Tag,
    timestamp: &str,
    phase: &mut Phase,
    stats: &mut Stats,
    user: &mut Option<String>,
    input: &mut R,
    output: &mut W,
) -> Ending {
    let mut line = Vec::with_capacity(MAX_COMMAND_LINE);
    loop {
        match wire::read_line(input, &mut line, MAX_COMMAND_LINE) {
            Ok(Line::Complete) => {}
            Ok(Line::Eof) => return Ending::Disconnected,
            Ok(Line::TooLong) => {
                log::debug!("{tag} C: (line too long)");
                if let Err(e) = send(output, &Reply::err("line too long")) {
                    return io_ending(&e);
                }
                continue;
            }
            Err(e) => return io_ending(&e),
        }
        let cmd = match command::parse(&line) {
            Ok(c) => c,
            Err(e) => {
                log::debug!("{tag} C: ({e}) {}", crate::logsafe::escape(&line));
                if let Err(e) = send(output, &Reply::err(e.to_string())) {
                    return io_ending(&e);
                }
                continue;
            }
        };
        log::debug!("{tag} C: {cmd:?}");
        let result = match phase {
            Phase::Authorization(auth) => match auth.handle(ctx, tag, timestamp, cmd) {
                AuthStep::Reply(r) => send(output, &r),
                AuthStep::Quit(r) => {
                    return send(output, &r).map_or_else(|e| io_ending(&e), |()| Ending::Quit);
                }
                AuthStep::LoggedIn(t, r) => {
                    *user = Some(t.user().as_str().to_owned());
                    *phase = Phase::Transaction(t);
                    send(output, &r)
                }
            },
            Phase::Transaction(t) => match t.handle(cmd) {
                TxStep::Reply(r) => send(output, &r),
                TxStep::Send {
                    index,
                    extent,
                    status,
                } => match send_message(output, t.maildrop(), index, extent, &status) {
                    Ok(()) => {
                        t.count_sent(index, extent, stats);
                        Ok(())
                    }
                    Err(SendError::Refused(e)) => send(output, &mailbox_reply(tag, &e)),
                    Err(SendError::Client(e)) => Err(e),
                    Err(SendError::Midway(e)) => {
                        log::warn!("{tag} mailbox failed while sending a message: {e}");
                        return Ending::MailboxError;
                    }
                },
                TxStep::Quit => break,
            },
        };
        if let Err(e) = result {
            return io_ending(&e);
        }
    }
    // QUIT in TRANSACTION: the UPDATE state.
    let Phase::Transaction(t) =
        std::mem::replace(phase, Phase::Authorization(Authorization::new()))
    else {
        unreachable!("the loop only breaks out of TRANSACTION");
    };
    let (reply, ending) = match t.commit(stats) {
        Ok(left) => (
            Reply::ok(format!("bye, {left} messages left")),
            Ending::Quit,
        ),
        Err(e) => {
            log::warn!("{tag} commit failed, nothing deleted: {e}");
            (
                Reply::err_code(
                    RespCode::SysTemp,
                    "could not remove deleted messages; mailbox unchanged",
                ),
                Ending::CommitFailed,
            )
        }
    };
    let _ = send(output, &reply);
    ending
}

/// Writes a reply and flushes it, so pipelined replies leave in order and none waits.
fn send<W: Write>(output: &mut W, reply: &Reply) -> io::Result<()> {
    wire::write_reply(output, reply)?;
    output.flush()
}

fn io_ending(e: &io::Error) -> Ending {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ending::Timeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Ending::Disconnected,
        _ => Ending::NetworkError,
    }
}

/// The one mapping from a mailbox failure to a reply and a log line.
fn mailbox_reply(tag: &Tag, e: &MailboxError) -> Reply {
    match e {
        MailboxError::InUse => {
            log::warn!("{tag} {e}");
            Reply::err_code(RespCode::InUse, "mailbox is locked by another POP3 session")
        }
        MailboxError::Busy => {
            log::warn!("{tag} {e}");
            Reply::err_code(RespCode::SysTemp, "mailbox busy, try again later")
        }
        MailboxError::Changed => {
            log::warn!("{tag} {e}");
            Reply::err_code(
                RespCode::SysTemp,
                "mailbox changed by another program, log in again",
            )
        }
        MailboxError::Permission(_) => {
            log::error!("{tag} {e}");
            Reply::err_code(RespCode::SysPerm, "mailbox not accessible")
        }
        MailboxError::Io(_) => {
            log::error!("{tag} {e}");
            Reply::err_code(RespCode::SysTemp, "mailbox unavailable, try again later")
        }
    }
}

/// Why a message could not be sent.
enum SendError {
    /// The mailbox refused before anything was written: the client gets `-ERR`.
    Refused(MailboxError),
    /// The client connection failed.
    Client(io::Error),
    /// The mailbox failed after `+OK` went out: the session cannot go on.
    Midway(io::Error),
}

/// Streams a message: `+OK`, the stuffed body, and the terminator in the same flush.
fn send_message<W: Write>(
    out: &mut W,
    maildrop: &mut dyn Maildrop,
    index: usize,
    extent: Extent,
    status: &str,
) -> Result<(), SendError> {
    // The listed size (CRLF counted) is never below the stored size, so a small message is
    // read in one call into a buffer its own size, instead of zeroing a whole chunk per RETR.
    let listed = maildrop.messages().get(index).map_or(0, |m| m.size);
    let mut buf = vec![0u8; listed.clamp(1, FILE_CHUNK as u64) as usize];
    let mut reader = maildrop.reader(index).map_err(SendError::Refused)?;
    wire::write_ok(out, status).map_err(SendError::Client)?;
    let mut writer = MessageWriter::new(out, extent);
    while !writer.is_done() {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SendError::Midway(e)),
        };
        writer.write(&buf[..n]).map_err(SendError::Client)?;
    }
    writer.finish().map_err(SendError::Client)?;
    out.flush().map_err(SendError::Client)
}

/// The capability list (RFC 2449 §5), the same before and after login.
fn capabilities() -> Reply {
    let caps = [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION poplar",
    ];
    let mut lines = String::new();
    for c in caps {
        lines.push_str(c);
        lines.push_str("\r\n");
    }
    Reply::Multi {
        first: "capability list follows".into(),
        lines,
    }
}

/// An APOP timestamp (RFC 1939 §7): a msg-id different for every greeting.
fn apop_timestamp(id: u64, hostname: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("<{}.{id}.{seq}.{nanos}@{hostname}>", std::process::id())
}

/// The reply to a command that is valid in another phase.
fn wrong_state(cmd: &Command) -> Reply {
    Reply::err(format!("{} not valid in this state", cmd.keyword()))
}

#[cfg(test)]
mod tests;
