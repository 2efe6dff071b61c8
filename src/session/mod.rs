//! One POP3 session over any `BufRead + Write`: the greeting, the command loop, the phase
//! typestate, streaming RETR/TOP, UPDATE on QUIT, and the one mapping from errors to replies
//! and log lines.

mod authorization;
mod link;
mod transaction;

use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::UsersHandle;
use crate::auth::guard::{Guards, UserSlot};
use crate::auth::sasl::Mechanism;
use crate::limits::{MAX_COMMAND_LINE, MAX_SASL_LINE, RETR_CHUNK};
use crate::mailbox::{MailStore, MailboxError, Maildrop};
use crate::protocol::command::{self, Command};
use crate::protocol::message::{MessageWriter, Portion};
use crate::protocol::wire::{self, Line, Reply, RespCode};

use authorization::{AuthStep, Authorization};
use transaction::{Transaction, TxStep};

pub use link::{Link, Plain};

/// Settings that shape every session.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Delay before a failed login is answered (the same for unknown users): the first
    /// failure from an address; each further one doubles it (see `auth::guard::Throttle`).
    pub auth_failure_delay: Duration,
    /// The host name in the APOP timestamp.
    pub hostname: String,
    /// Allow cleartext logins without TLS from peers off loopback (`--allow-cleartext`).
    pub allow_cleartext: bool,
    /// Loopback peers treated as remote by the cleartext policy (tests only).
    pub treat_as_remote: Vec<IpAddr>,
    /// Log every command at info instead of debug (`--dev`); secrets stay masked.
    pub trace_commands: bool,
    /// Whether APOP and CRAM-MD5 (the mechanisms that need plain secrets) are offered
    /// (`--no-apop` turns them off).
    pub apop: bool,
    /// Bad commands allowed before login; the next one closes the connection.
    pub max_bad_commands: u32,
    /// The longest wait for one complete command line, however the client trickles it: the
    /// idle timeout, restarted by each command (RFC 1939 §3).
    pub command_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auth_failure_delay: crate::limits::DEFAULT_AUTH_FAILURE_DELAY,
            hostname: "localhost".into(),
            allow_cleartext: false,
            treat_as_remote: Vec::new(),
            trace_commands: false,
            apop: true,
            max_bad_commands: crate::limits::DEFAULT_MAX_BAD_COMMANDS,
            command_timeout: crate::limits::DEFAULT_IDLE_TIMEOUT,
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
    /// Failure delays, the hashing gate, per-user session slots and AUTHORIZATION deadlines.
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
    /// The TLS handshake after STLS failed or timed out.
    TlsFailed,
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
            Ending::TlsFailed => "tls-failed",
            Ending::AuthFailures => "auth-failures",
            Ending::BadCommands => "bad-commands",
        }
    }
}

/// Counters for the end-of-session log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// When the login succeeded.
    pub logged_in: Option<Instant>,
    /// Messages in the maildrop at login.
    pub messages: usize,
    /// RETR commands answered with a message.
    pub retr: u64,
    /// Octets sent by RETR (message sizes as listed).
    pub retr_octets: u64,
    /// TOP commands answered.
    pub top: u64,
    /// Octets of message text sent by TOP, as on the wire (dot-stuffed, terminator excluded).
    pub top_octets: u64,
    /// Messages removed by the commit.
    pub deleted: u64,
    /// Octets of the messages removed by the commit.
    pub deleted_octets: u64,
    /// How long the commit took, if one ran.
    pub commit_time: Option<Duration>,
    /// The mailbox file's size before and after the commit, if one ran.
    pub mailbox_bytes: Option<(u64, u64)>,
}

impl Stats {
    /// The stable `key=value` fields of the end-of-session line; `-` marks what did not
    /// happen (no login, no commit).
    fn end_line(&self, tag: &Tag, user: Option<&str>, ending: Ending, started: Instant) -> String {
        let dash = || "-".to_owned();
        let ms = |d: Duration| d.as_millis().to_string();
        let (before, after) = self
            .mailbox_bytes
            .map_or((dash(), dash()), |(b, a)| (b.to_string(), a.to_string()));
        format!(
            "session end id={} peer={} user={} reason={} duration_ms={} login_ms={} \
             commit_ms={} messages={} retr={} retr_octets={} top={} top_octets={} dele={} \
             dele_octets={} mailbox_before={before} mailbox_after={after}",
            tag.id,
            tag.peer.map_or_else(dash, |p| p.to_string()),
            user.map_or_else(dash, |u| crate::logsafe::token(u.as_bytes())),
            ending.as_str(),
            started.elapsed().as_millis(),
            self.logged_in
                .map_or_else(dash, |t| ms(t.saturating_duration_since(started))),
            self.commit_time.map_or_else(dash, ms),
            self.messages,
            self.retr,
            self.retr_octets,
            self.top,
            self.top_octets,
            self.deleted,
            self.deleted_octets,
        )
    }
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

/// What the connection allows now, for the cleartext policy, STLS and CAPA.
#[derive(Debug, Clone, Copy)]
struct Channel {
    /// TLS protects the connection.
    tls: bool,
    /// STLS can start TLS now.
    stls: bool,
    /// Cleartext passwords may cross it: TLS is active, the peer is on loopback, or the
    /// operator allows cleartext everywhere.
    secure: bool,
}

impl Channel {
    /// Allows nothing: for the phase left behind when the session enters UPDATE.
    const NONE: Channel = Channel {
        tls: false,
        stls: false,
        secure: false,
    };

    fn of<L: Link>(settings: &Settings, tag: &Tag, link: &L) -> Channel {
        let local = match tag.peer {
            // Not a network session (a pipe, a test): nothing crosses a network.
            None => true,
            Some(p) => {
                let ip = p.ip().to_canonical();
                ip.is_loopback() && !settings.treat_as_remote.contains(&ip)
            }
        };
        let tls = link.is_tls();
        Channel {
            tls,
            stls: link.can_start_tls(),
            secure: tls || local || settings.allow_cleartext,
        }
    }
}

/// What the session is doing now.
enum Phase {
    Authorization(Authorization),
    Transaction(Box<Transaction>),
}

/// Runs one session over a separate reader and writer, without TLS: see [`serve`].
pub fn run<R: BufRead, W: Write>(ctx: &Context, tag: &Tag, input: R, output: W) -> Ending {
    serve(ctx, tag, &mut Plain::new(input, output))
}

/// Runs one session to its end: greets, answers commands in order, and on QUIT in
/// TRANSACTION commits the deletions. Any other ending commits nothing. After QUIT's reply
/// the link is closed cleanly (a TLS close_notify).
pub fn serve<L: Link>(ctx: &Context, tag: &Tag, link: &mut L) -> Ending {
    let started = Instant::now();
    log::info!("{tag} session start tls={}", link.is_tls());
    // The APOP timestamp only when APOP can work (RFC 1939 §7: a client seeing one may try).
    let apop = ctx.settings.apop && ctx.users.current().any_plain();
    let timestamp = apop.then(|| apop_timestamp(tag.id, &ctx.settings.hostname));
    let greeting = match &timestamp {
        Some(ts) => Reply::ok(format!("poplar ready {ts}")),
        None => Reply::ok("poplar ready"),
    };
    let channel = Channel::of(&ctx.settings, tag, link);
    let mut phase = Phase::Authorization(Authorization::new(channel, timestamp));
    let mut stats = Stats::default();
    let mut user = None;
    let mut user_slot = None;
    let ending = match send(link, &greeting) {
        Err(e) => io_ending(&e),
        Ok(()) => command_loop(
            ctx,
            tag,
            &mut phase,
            &mut stats,
            (&mut user, &mut user_slot),
            link,
        ),
    };
    if matches!(ending, Ending::Quit | Ending::CommitFailed)
        && let Err(e) = link.close()
    {
        log::debug!("{tag} closing: {e}");
    }
    log::info!(
        "{tag} {}",
        stats.end_line(tag, user.as_deref(), ending, started)
    );
    ending
}

fn command_loop<L: Link>(
    ctx: &Context,
    tag: &Tag,
    phase: &mut Phase,
    stats: &mut Stats,
    (user, user_slot): (&mut Option<String>, &mut Option<UserSlot>),
    link: &mut L,
) -> Ending {
    let mut line = Vec::with_capacity(MAX_COMMAND_LINE);
    let trace = if ctx.settings.trace_commands {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    loop {
        // A line answering a SASL challenge is not a command and may be longer.
        let sasl = matches!(phase, Phase::Authorization(a) if a.in_exchange());
        let max = if sasl {
            MAX_SASL_LINE
        } else {
            MAX_COMMAND_LINE
        };
        let deadline = Instant::now() + ctx.settings.command_timeout;
        let read = match wire::read_line(link, &mut line, max, Some(deadline)) {
            Ok(Line::Eof) => return Ending::Disconnected,
            Ok(read) => read,
            Err(e) => return io_ending(&e),
        };
        let result = match phase {
            Phase::Authorization(auth) => {
                match authorization_line(ctx, tag, trace, auth, sasl, &read, &line) {
                    AuthStep::Reply(r) => send(link, &r),
                    AuthStep::Quit(r) => {
                        return send(link, &r).map_or_else(|e| io_ending(&e), |()| Ending::Quit);
                    }
                    AuthStep::Close(r, ending) => {
                        return send(link, &r).map_or_else(|e| io_ending(&e), |()| ending);
                    }
                    AuthStep::StartTls(r) => match start_tls(ctx, tag, link, &r) {
                        Ok(channel) => {
                            auth.tls_started(channel);
                            Ok(())
                        }
                        Err(ending) => return ending,
                    },
                    AuthStep::LoggedIn(t, slot, r) => {
                        ctx.guards.deadlines.clear(tag.id);
                        *user = Some(t.user().as_str().to_owned());
                        *user_slot = Some(slot);
                        stats.logged_in = Some(Instant::now());
                        stats.messages = t.totals().0;
                        *phase = Phase::Transaction(t);
                        send(link, &r)
                    }
                }
            }
            Phase::Transaction(t) => {
                let cmd = match transaction_command(tag, trace, &read, &line) {
                    Ok(cmd) => cmd,
                    Err(r) => {
                        if let Err(e) = send(link, &r) {
                            return io_ending(&e);
                        }
                        continue;
                    }
                };
                match t.handle(cmd) {
                    TxStep::Reply(r) => send(link, &r),
                    TxStep::Send {
                        index,
                        portion,
                        status,
                    } => match send_message(link, t.maildrop(), index, portion, &status) {
                        Ok(octets) => {
                            t.count_sent(index, portion, octets, stats);
                            Ok(())
                        }
                        Err(SendError::Refused(e)) => send(link, &mailbox_reply(tag, &e)),
                        Err(SendError::Client(e)) => Err(e),
                        Err(SendError::Midway(e)) => {
                            log::warn!("{tag} mailbox failed while sending a message: {e}");
                            return Ending::MailboxError;
                        }
                    },
                    TxStep::Quit => break,
                }
            }
        };
        if let Err(e) = result {
            return io_ending(&e);
        }
    }
    // QUIT in TRANSACTION: the UPDATE state.
    let Phase::Transaction(t) = std::mem::replace(
        phase,
        Phase::Authorization(Authorization::new(Channel::NONE, None)),
    ) else {
        unreachable!("the loop only breaks out of TRANSACTION");
    };
    let committing = Instant::now();
    let committed = t.commit(stats);
    stats.commit_time = Some(committing.elapsed());
    let (reply, ending) = match committed {
        Ok(left) => (
            Reply::ok(format!(
                "bye, {} left",
                crate::plural::plural(left as u64, "message")
            )),
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
    let _ = send(link, &reply);
    ending
}

/// Decides what one line read in AUTHORIZATION leads to: a SASL response, or a command.
fn authorization_line(
    ctx: &Context,
    tag: &Tag,
    trace: log::Level,
    auth: &mut Authorization,
    sasl: bool,
    read: &Line,
    line: &[u8],
) -> AuthStep {
    let complete = *read == Line::Complete;
    if sasl {
        // Never the payload: it may carry a password.
        log::log!(trace, "{tag} C: (SASL response)");
        return auth.sasl_response(ctx, tag, complete.then_some(line));
    }
    if !complete {
        log::log!(trace, "{tag} C: (line too long)");
        return auth.bad_command(ctx, Reply::err("line too long"));
    }
    match command::parse(line) {
        Ok(cmd) => {
            log::log!(trace, "{tag} C: {cmd:?}");
            auth.handle(ctx, tag, cmd)
        }
        Err(e) => {
            log::log!(trace, "{tag} C: ({e}) {}", unparsed_trace(line));
            auth.bad_command(ctx, Reply::err(e.to_string()))
        }
    }
}

/// The command on a line read in TRANSACTION, or the reply to a line that is none.
fn transaction_command(
    tag: &Tag,
    trace: log::Level,
    read: &Line,
    line: &[u8],
) -> Result<Command, Reply> {
    if *read != Line::Complete {
        log::log!(trace, "{tag} C: (line too long)");
        return Err(Reply::err("line too long"));
    }
    match command::parse(line) {
        Ok(cmd) => {
            log::log!(trace, "{tag} C: {cmd:?}");
            Ok(cmd)
        }
        Err(e) => {
            log::log!(trace, "{tag} C: ({e}) {}", unparsed_trace(line));
            Err(Reply::err(e.to_string()))
        }
    }
}

/// Answers STLS with `reply` and runs the handshake; returns what the connection allows
/// now, or how the session ends.
fn start_tls<L: Link>(
    ctx: &Context,
    tag: &Tag,
    link: &mut L,
    reply: &Reply,
) -> Result<Channel, Ending> {
    send(link, reply).map_err(|e| io_ending(&e))?;
    match link.start_tls() {
        Ok(()) => {
            log::debug!("{tag} TLS started");
            Ok(Channel::of(&ctx.settings, tag, link))
        }
        Err(e) => {
            log::info!("{tag} TLS handshake after STLS failed: {e}");
            Err(Ending::TlsFailed)
        }
    }
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

/// Streams a message: `+OK`, the stuffed body, and the terminator in the same flush. Returns
/// the octets of the body as sent, terminator excluded.
fn send_message<W: Write>(
    out: &mut W,
    maildrop: &mut dyn Maildrop,
    index: usize,
    portion: Portion,
    status: &str,
) -> Result<u64, SendError> {
    // The listed size (CRLF counted) is never below the stored size, so a small message is
    // read in one call into a buffer its own size, instead of zeroing a whole chunk per RETR.
    let listed = maildrop.messages().get(index).map_or(0, |m| m.size);
    let mut buf = vec![0u8; listed.clamp(1, RETR_CHUNK as u64) as usize];
    let mut reader = maildrop.reader(index).map_err(SendError::Refused)?;
    wire::write_ok(out, status).map_err(SendError::Client)?;
    let mut counted = Counted {
        inner: out,
        octets: 0,
    };
    let mut writer = MessageWriter::new(&mut counted, portion);
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
    // The terminator `.` CRLF is the last thing finish() writes.
    let body = counted.octets.saturating_sub(3);
    out.flush().map_err(SendError::Client)?;
    Ok(body)
}

/// Counts the octets that pass through to the client.
struct Counted<'w, W: Write> {
    inner: &'w mut W,
    octets: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.octets += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The capability list (RFC 2449 §5): STLS only while it can be used (RFC 2595 §4), USER only
/// where cleartext passwords are accepted, and `SASL` with the mechanisms that can work (left
/// out when none can).
fn capabilities(channel: Channel, mechanisms: &[Mechanism]) -> Reply {
    let caps = [
        "TOP",
        "UIDL",
        "USER",
        "STLS",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION poplar",
    ];
    let mut lines = String::new();
    for c in caps {
        let offered = match c {
            "USER" => channel.secure,
            "STLS" => channel.stls,
            _ => true,
        };
        if offered {
            lines.push_str(c);
            lines.push_str("\r\n");
        }
        if c == "PIPELINING" && !mechanisms.is_empty() {
            lines.push_str("SASL");
            for m in mechanisms {
                lines.push(' ');
                lines.push_str(m.name());
            }
            lines.push_str("\r\n");
        }
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

/// A line that did not parse, for the debug trace: escaped, and masked after the keyword when
/// it starts like a command that carries a secret, because a malformed `PASS` line (a tab, a
/// stray control byte) still holds the password.
fn unparsed_trace(line: &[u8]) -> String {
    let carries_secret = line.len() > 4
        && [&b"PASS"[..], b"APOP", b"AUTH"]
            .iter()
            .any(|k| line[..4].eq_ignore_ascii_case(k));
    if carries_secret {
        format!("{} ***", crate::logsafe::escape(&line[..4]))
    } else {
        crate::logsafe::escape(line)
    }
}

/// The reply to a command that is valid in another phase.
fn wrong_state(cmd: &Command) -> Reply {
    Reply::err(format!("{} not valid in this state", cmd.keyword()))
}

#[cfg(test)]
mod tests;
