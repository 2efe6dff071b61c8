//! One POP3 session over any `BufRead + Write`: the greeting, the command loop, the phase
//! typestate, streaming RETR/TOP, UPDATE on QUIT, and the one mapping from errors to replies
//! and log lines.

mod authorization;
mod transaction;

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::auth::UsersHandle;
use crate::auth::guard::{Guards, UserSlot};
use crate::auth::sasl::Mechanism;
use crate::command::{self, Command};
use crate::limits::{FILE_CHUNK, MAX_COMMAND_LINE, MAX_SASL_LINE};
use crate::mailbox::{MailStore, MailboxError, Maildrop};
use crate::wire::{self, Extent, Line, MessageWriter, Reply, RespCode};

use authorization::{AuthStep, Authorization};
use transaction::{Transaction, TxStep};

/// Settings that shape every session.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The host name in the APOP timestamp and CRAM-MD5 challenges.
    pub hostname: String,
    /// Whether APOP and CRAM-MD5 (the mechanisms that need plain secrets) are offered
    /// (`--no-apop` turns them off).
    pub apop: bool,
    /// Bad commands allowed before login; the next one closes the connection.
    pub max_bad_commands: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hostname: "localhost".into(),
            apop: true,
            max_bad_commands: crate::limits::DEFAULT_MAX_BAD_COMMANDS,
        }
    }
}

/// What every session shares: who may log in, where mail lives, the login guards and the
/// settings.
#[derive(Clone)]
pub struct Context {
    /// The users table in force.
    pub users: UsersHandle,
    /// Where maildrops come from.
    pub store: Arc<dyn MailStore>,
    /// Failure delays, the hashing gate and per-user session slots.
    pub guards: Arc<Guards>,
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
    /// Too many failed logins in the session.
    AuthFailures,
    /// Too many bad commands before login.
    BadCommands,
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
            Ending::AuthFailures => "auth-failures",
            Ending::BadCommands => "bad-commands",
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
    let apop = ctx.settings.apop && ctx.users.current().any_plain();
    let timestamp = apop.then(|| apop_timestamp(tag.id, &ctx.settings.hostname));
    let greeting = match &timestamp {
        Some(ts) => Reply::ok(format!("poplar ready {ts}")),
        None => Reply::ok("poplar ready"),
    };
    let mut session = Session {
        phase: Phase::Authorization(Authorization::new(timestamp)),
        stats: Stats::default(),
        user: None,
        capabilities: None,
        _user_slot: None,
    };
    let ending = match send(&mut output, &greeting) {
        Err(e) => io_ending(&e),
        Ok(()) => session.command_loop(ctx, tag, &mut input, &mut output),
    };
    let stats = session.stats;
    log::info!(
        "{tag} session end user={} reason={} duration_ms={} retr={} retr_octets={} top={} dele={} dele_octets={}",
        session.user.as_deref().unwrap_or("-"),
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

/// One session's state between lines.
struct Session {
    phase: Phase,
    stats: Stats,
    /// The logged-in user, for the end-of-session line.
    user: Option<String>,
    /// After login, the capabilities announced before it, which CAPA repeats (RFC 2449 §5).
    capabilities: Option<Reply>,
    /// The logged-in user's place among their sessions, held until the session ends.
    _user_slot: Option<UserSlot>,
}

/// What to do after a line has been answered.
enum Next {
    /// Read the next line.
    Continue,
    /// The session is over.
    End(Ending),
    /// QUIT in TRANSACTION: UPDATE.
    Update,
}

impl Session {
    fn command_loop<R: BufRead, W: Write>(
        &mut self,
        ctx: &Context,
        tag: &Tag,
        input: &mut R,
        output: &mut W,
    ) -> Ending {
        let mut line = Vec::with_capacity(MAX_COMMAND_LINE);
        loop {
            let sasl = matches!(&self.phase, Phase::Authorization(a) if a.in_exchange());
            let max = if sasl {
                MAX_SASL_LINE
            } else {
                MAX_COMMAND_LINE
            };
            let read = match wire::read_line(input, &mut line, max) {
                Ok(Line::Eof) => return Ending::Disconnected,
                Ok(read) => read,
                Err(e) => return io_ending(&e),
            };
            let next = match &mut self.phase {
                Phase::Authorization(auth) => {
                    let step = authorization_line(ctx, tag, auth, sasl, &read, &line);
                    self.after_auth_step(ctx, tag, step, output)
                }
                Phase::Transaction(t) => {
                    let r = transaction_line(tag, t, self.capabilities.as_ref(), &read, &line);
                    match r {
                        TxStep::Reply(r) => send(output, &r).map(|()| Next::Continue),
                        TxStep::Send {
                            index,
                            extent,
                            status,
                        } => match send_message(output, t.maildrop(), index, extent, &status) {
                            Ok(()) => {
                                t.count_sent(index, extent, &mut self.stats);
                                Ok(Next::Continue)
                            }
                            Err(SendError::Refused(e)) => {
                                send(output, &mailbox_reply(tag, &e)).map(|()| Next::Continue)
                            }
                            Err(SendError::Client(e)) => Err(e),
                            Err(SendError::Midway(e)) => {
                                log::warn!("{tag} mailbox failed while sending a message: {e}");
                                Ok(Next::End(Ending::MailboxError))
                            }
                        },
                        TxStep::Quit => Ok(Next::Update),
                    }
                }
            };
            match next {
                Ok(Next::Continue) => {}
                Ok(Next::End(ending)) => return ending,
                Ok(Next::Update) => return self.update(tag, output),
                Err(e) => return io_ending(&e),
            }
        }
    }

    /// Writes an AUTHORIZATION step's reply and moves to TRANSACTION on login.
    fn after_auth_step<W: Write>(
        &mut self,
        ctx: &Context,
        tag: &Tag,
        step: AuthStep,
        output: &mut W,
    ) -> io::Result<Next> {
        match step {
            AuthStep::Reply(r) => send(output, &r).map(|()| Next::Continue),
            AuthStep::Quit(r) => send(output, &r).map(|()| Next::End(Ending::Quit)),
            AuthStep::Close(r, ending) => send(output, &r).map(|()| Next::End(ending)),
            AuthStep::LoggedIn(t, slot, r) => {
                ctx.guards.deadlines.clear(tag.id);
                if let Phase::Authorization(auth) = &self.phase {
                    self.capabilities = Some(auth.capabilities(ctx));
                }
                self.user = Some(t.user().as_str().to_owned());
                self._user_slot = Some(slot);
                self.phase = Phase::Transaction(t);
                send(output, &r).map(|()| Next::Continue)
            }
        }
    }

    /// QUIT in TRANSACTION: the UPDATE state.
    fn update<W: Write>(&mut self, tag: &Tag, output: &mut W) -> Ending {
        let Phase::Transaction(t) = std::mem::replace(
            &mut self.phase,
            Phase::Authorization(Authorization::new(None)),
        ) else {
            unreachable!("UPDATE only follows TRANSACTION");
        };
        let (reply, ending) = match t.commit(&mut self.stats) {
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
}

/// Decides what one line read in AUTHORIZATION leads to: a SASL response, or a command.
fn authorization_line(
    ctx: &Context,
    tag: &Tag,
    auth: &mut Authorization,
    sasl: bool,
    read: &Line,
    line: &[u8],
) -> AuthStep {
    let complete = *read == Line::Complete;
    if sasl {
        log::debug!("{tag} C: (SASL response)");
        return auth.sasl_response(ctx, tag, complete.then_some(line));
    }
    if !complete {
        log::debug!("{tag} C: (line too long)");
        return auth.bad_command(ctx, Reply::err("line too long"));
    }
    match command::parse(line) {
        Ok(Command::Capa) => AuthStep::Reply(auth.capabilities(ctx)),
        Ok(cmd) => {
            log::debug!("{tag} C: {cmd:?}");
            auth.handle(ctx, tag, cmd)
        }
        Err(e) => {
            log::debug!("{tag} C: ({e}) {}", crate::logsafe::escape(line));
            auth.bad_command(ctx, Reply::err(e.to_string()))
        }
    }
}

/// Decides what one line read in TRANSACTION leads to.
fn transaction_line(
    tag: &Tag,
    t: &mut Transaction,
    capabilities: Option<&Reply>,
    read: &Line,
    line: &[u8],
) -> TxStep {
    if *read != Line::Complete {
        log::debug!("{tag} C: (line too long)");
        return TxStep::Reply(Reply::err("line too long"));
    }
    let cmd = match command::parse(line) {
        Ok(c) => c,
        Err(e) => {
            log::debug!("{tag} C: ({e}) {}", crate::logsafe::escape(line));
            return TxStep::Reply(Reply::err(e.to_string()));
        }
    };
    log::debug!("{tag} C: {cmd:?}");
    if let (Command::Capa, Some(capa)) = (&cmd, capabilities) {
        return TxStep::Reply(capa.clone());
    }
    t.handle(cmd)
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
    let mut reader = maildrop.reader(index).map_err(SendError::Refused)?;
    wire::write_ok(out, status).map_err(SendError::Client)?;
    let mut writer = MessageWriter::new(out, extent);
    let mut buf = vec![0u8; FILE_CHUNK];
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

/// The capability list (RFC 2449 §5), the same before and after login: `SASL` names the
/// mechanisms that can work on this connection, and is left out when none can; `USER` is
/// listed only where passwords may be sent as they are.
fn capabilities(mechanisms: &[Mechanism], user: bool) -> Reply {
    let mut lines = String::new();
    for c in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
    ] {
        if c == "USER" && !user {
            continue;
        }
        lines.push_str(c);
        lines.push_str("\r\n");
    }
    if !mechanisms.is_empty() {
        lines.push_str("SASL");
        for m in mechanisms {
            lines.push(' ');
            lines.push_str(m.name());
        }
        lines.push_str("\r\n");
    }
    lines.push_str("IMPLEMENTATION poplar\r\n");
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
