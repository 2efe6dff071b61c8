//! One POP3 session over any `BufRead + Write`: the greeting, the command loop, the phase
//! typestate, streaming RETR/TOP, UPDATE on QUIT, and the one mapping from errors to replies
//! and log lines.

mod authorization;
mod errors;
mod link;
mod report;
mod retrieve;
mod settings;
mod transaction;
mod watch;

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::guard::UserSlot;
use crate::auth::sasl::Mechanism;
use crate::limits::{MAX_COMMAND_LINE, MAX_SASL_LINE};
use crate::logline::emit;
use crate::metrics;
use crate::plural::plural;
use crate::protocol::command::{self, Command};
use crate::protocol::wire::{self, Line, Reply, RespCode};

use authorization::{AuthStep, Authorization};
use errors::{Whose, commit_failed_reply, io_ending, mailbox_reply};
use retrieve::{SendError, send_message};
use transaction::{Transaction, TxStep};
use watch::{Hook, Tapped};

pub use link::{Link, Plain};
pub use report::{Ending, Stats, Tag};
pub use settings::{Context, Settings};
pub use watch::{Fault, NOT_A_TLS_RECORD, PhaseName, Seen, Watch, Watcher};

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
    serve_then(ctx, tag, link, || {})
}

/// [`serve`], calling `goodbye` once the session has done all its work for a QUIT (the
/// commit included) and before its reply goes out: a client that reconnects the moment it
/// reads that reply must find whatever `goodbye` frees (its place under the per-address cap)
/// already free. Not called for any other ending.
pub fn serve_then<L: Link>(
    ctx: &Context,
    tag: &Tag,
    link: &mut L,
    goodbye: impl FnOnce(),
) -> Ending {
    match &ctx.watcher {
        None => watched(ctx, tag, link, goodbye, None),
        Some(watcher) => {
            let hook = Hook::new(watcher.watch(tag));
            let mut tapped = Tapped::new(link, hook.clone());
            watched(ctx, tag, &mut tapped, goodbye, Some(&hook))
        }
    }
}

/// [`serve_then`], telling `hook` (when there is one) what happens.
fn watched<L: Link>(
    ctx: &Context,
    tag: &Tag,
    link: &mut L,
    goodbye: impl FnOnce(),
    hook: Option<&Hook>,
) -> Ending {
    let started = Instant::now();
    let _open = crate::metrics::OpenSession::start();
    let tls = link.is_tls();
    emit!(
        log::Level::Info,
        tag.event("session-start").flag("tls", tls),
        "{tag} session start tls={tls}"
    );
    // The APOP timestamp only when APOP can work (RFC 1939 §7: a client seeing one may try).
    let apop = ctx.settings.apop && ctx.users.current().any_plain();
    let timestamp = apop.then(|| apop_timestamp(tag.id, &ctx.settings.hostname));
    let greeting = match &timestamp {
        Some(ts) => Reply::ok(format!("poplar ready {ts}")),
        None => Reply::ok("poplar ready"),
    };
    let channel = Channel::of(&ctx.settings, tag, link);
    let phase = Phase::Authorization(Authorization::new(channel, timestamp));
    let mut login = Login::default();
    if let Some(h) = hook {
        h.greeting();
    }
    let ending = match send(link, &greeting) {
        Err(e) => io_ending(&e),
        Ok(()) => match command_loop(ctx, tag, phase, &mut login, link, hook) {
            Exit::Update(t) => {
                let (reply, ending) = update(tag, *t, &mut login.stats);
                // The commit is done whether or not its answer reaches the client.
                let _ = farewell(link, &reply, &mut login, goodbye);
                ending
            }
            Exit::Quit(reply, ending) => farewell(link, &reply, &mut login, goodbye)
                .map_or_else(|e| io_ending(&e), |()| ending),
            Exit::End(ending) => ending,
        },
    };
    if matches!(ending, Ending::Quit | Ending::CommitFailed)
        && let Err(e) = link.close()
    {
        log::debug!("{tag} closing: {e}");
    }
    crate::metrics::session_ended(ending.as_str());
    if let Some(h) = hook {
        h.ended(ending, &login.stats);
    }
    let user = login.user.as_deref();
    let span = (started, Instant::now());
    emit!(
        log::Level::Info,
        login.stats.end_event(tag, user, ending, span),
        "{tag} {}",
        login.stats.end_line(tag, user, ending, span)
    );
    ending
}

/// Who logged in and what the session did, kept for the end-of-session line; the user's
/// session slot is held until QUIT is answered or the session ends.
#[derive(Default)]
struct Login {
    user: Option<String>,
    slot: Option<UserSlot>,
    stats: Stats,
}

/// Sends the reply to QUIT, the session's last, once its user slot is given back and
/// `goodbye` has run.
fn farewell<L: Link>(
    link: &mut L,
    reply: &Reply,
    login: &mut Login,
    goodbye: impl FnOnce(),
) -> io::Result<()> {
    login.slot = None;
    goodbye();
    send(link, reply)
}

/// How the command loop ends.
enum Exit {
    /// The session is over.
    End(Ending),
    /// QUIT in AUTHORIZATION, or one whose commit a fault refused: send this reply and end
    /// so.
    Quit(Reply, Ending),
    /// QUIT in TRANSACTION: the UPDATE state, with the transaction that ends in it.
    Update(Box<Transaction>),
}

/// Where a session goes after one line.
enum Turn {
    /// On to the next line, in this phase.
    Next(Phase),
    /// Out of the command loop.
    Exit(Exit),
}

impl Turn {
    /// `next` once `sent` went out; the ending its failure means otherwise.
    fn after(sent: io::Result<()>, next: Phase) -> Turn {
        match sent {
            Ok(()) => Turn::Next(next),
            Err(e) => Turn::Exit(Exit::End(io_ending(&e))),
        }
    }

    /// The session ends with `ending` once `sent` went out.
    fn end(sent: io::Result<()>, ending: Ending) -> Turn {
        Turn::Exit(Exit::End(sent.map_or_else(|e| io_ending(&e), |()| ending)))
    }
}

fn command_loop<L: Link>(
    ctx: &Context,
    tag: &Tag,
    mut phase: Phase,
    login: &mut Login,
    link: &mut L,
    hook: Option<&Hook>,
) -> Exit {
    let mut line = Vec::with_capacity(MAX_COMMAND_LINE);
    let trace = if ctx.settings.trace_commands {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    loop {
        // A line answering a SASL challenge is not a command and may be longer.
        let sasl = matches!(&phase, Phase::Authorization(a) if a.in_exchange());
        let max = if sasl {
            MAX_SASL_LINE
        } else {
            MAX_COMMAND_LINE
        };
        let deadline = Instant::now() + ctx.settings.command_timeout;
        let read = match wire::read_line(link, &mut line, max, Some(deadline)) {
            Ok(Line::Eof) => return Exit::End(Ending::Disconnected),
            Ok(read) => read,
            Err(e) => return Exit::End(io_ending(&e)),
        };
        let fault = hook.and_then(|h| {
            let (name, user) = match &phase {
                Phase::Authorization(a) => (PhaseName::Authorization, a.named()),
                Phase::Transaction(t) => (PhaseName::Transaction, Some(t.user().as_str().into())),
            };
            // As `Channel::stls` has it: STLS is valid only in AUTHORIZATION.
            let stls = name == PhaseName::Authorization && link.can_start_tls();
            h.line(
                name,
                sasl,
                read == Line::Complete,
                &line,
                user.as_deref(),
                stls,
            )
        });
        let turn = match (fault, phase) {
            (Some(Fault::Refuse(r)), phase) => Turn::after(send(link, &r), phase),
            (Some(Fault::FailCommit), Phase::Transaction(t)) => {
                // The transaction goes unused: nothing is deleted, and the mailbox is free
                // before the client reads the answer.
                drop(t);
                let reply = Reply::err_code(RespCode::SysTemp, "commit failed (fault injected)");
                Turn::Exit(Exit::Quit(reply, Ending::CommitFailed))
            }
            (Some(Fault::SaltUidls(salt)), Phase::Transaction(mut t)) => {
                t.salt_uids(salt);
                dispatch(
                    ctx,
                    tag,
                    trace,
                    Phase::Transaction(t),
                    sasl,
                    &read,
                    &line,
                    login,
                    link,
                )
            }
            (_, phase) => dispatch(ctx, tag, trace, phase, sasl, &read, &line, login, link),
        };
        phase = match turn {
            Turn::Next(next) => next,
            Turn::Exit(exit) => return exit,
        };
    }
}

/// Runs one line in the phase it was read in.
#[allow(clippy::too_many_arguments)]
fn dispatch<L: Link>(
    ctx: &Context,
    tag: &Tag,
    trace: log::Level,
    phase: Phase,
    sasl: bool,
    read: &Line,
    line: &[u8],
    login: &mut Login,
    link: &mut L,
) -> Turn {
    match phase {
        Phase::Authorization(mut auth) => {
            let step = authorization_line(ctx, tag, trace, &mut auth, sasl, read, line);
            authorization_turn(ctx, tag, auth, step, login, link)
        }
        Phase::Transaction(t) => match transaction_command(tag, trace, read, line) {
            Ok(cmd) => transaction_turn(tag, t, cmd, &mut login.stats, link),
            Err(r) => Turn::after(send(link, &r), Phase::Transaction(t)),
        },
    }
}

/// Carries out what a line in AUTHORIZATION led to.
fn authorization_turn<L: Link>(
    ctx: &Context,
    tag: &Tag,
    mut auth: Authorization,
    step: AuthStep,
    login: &mut Login,
    link: &mut L,
) -> Turn {
    match step {
        AuthStep::Reply(r) => Turn::after(send(link, &r), Phase::Authorization(auth)),
        AuthStep::Quit(r) => Turn::Exit(Exit::Quit(r, Ending::Quit)),
        AuthStep::Close(r, ending) => Turn::end(send(link, &r), ending),
        AuthStep::StartTls(r) => match start_tls(ctx, tag, link, &r) {
            Ok(channel) => {
                auth.tls_started(channel);
                Turn::Next(Phase::Authorization(auth))
            }
            Err(ending) => Turn::Exit(Exit::End(ending)),
        },
        AuthStep::LoggedIn(t, slot, r) => {
            ctx.guards.deadlines.clear(tag.id);
            login.user = Some(t.user().as_str().to_owned());
            login.slot = Some(slot);
            login.stats.logged_in = Some(Instant::now());
            login.stats.messages = t.totals().0;
            Turn::after(send(link, &r), Phase::Transaction(t))
        }
    }
}

/// Answers one command in TRANSACTION.
fn transaction_turn<L: Link>(
    tag: &Tag,
    mut t: Box<Transaction>,
    cmd: Command,
    stats: &mut Stats,
    link: &mut L,
) -> Turn {
    let sent = match t.handle(cmd) {
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
            Err(SendError::Refused(e)) => send(link, &mailbox_reply(tag, &t.whose(), &e)),
            Err(SendError::Client(e)) => Err(e),
            Err(SendError::Midway(e)) => {
                let whose = t.whose();
                emit!(
                    log::Level::Warn,
                    whose.event(tag, "mailbox-error", &e),
                    "{tag} mailbox failed while sending a message: {e} {whose}"
                );
                return Turn::Exit(Exit::End(Ending::MailboxError));
            }
        },
        TxStep::Quit => return Turn::Exit(Exit::Update(t)),
    };
    Turn::after(sent, Phase::Transaction(t))
}

/// The UPDATE state: commits the deletions; returns the reply to QUIT and the ending.
fn update(tag: &Tag, t: Transaction, stats: &mut Stats) -> (Reply, Ending) {
    let committing = Instant::now();
    let (user, location) = (t.user().as_str().to_owned(), t.whose().location.to_owned());
    let committed = t.commit(stats);
    stats.commit_time = Some(committing.elapsed());
    let (reply, ending) = match committed {
        Ok(left) => {
            metrics::COMMITS.inc();
            metrics::DELETED_MESSAGES.add(stats.deleted);
            metrics::DELETED_OCTETS.add(stats.deleted_octets);
            (
                Reply::ok(format!("bye, {} left", plural(left as u64, "message"))),
                Ending::Quit,
            )
        }
        Err(e) => {
            metrics::COMMITS_FAILED.inc();
            let whose = Whose {
                user: &user,
                location: &location,
            };
            (commit_failed_reply(tag, &whose, &e), Ending::CommitFailed)
        }
    };
    (reply, ending)
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
            emit!(
                log::Level::Info,
                tag.event("tls-failed").text("error", e.to_string()),
                "{tag} TLS handshake after STLS failed: {e}"
            );
            Err(Ending::TlsFailed)
        }
    }
}

/// Writes a reply and flushes it, so pipelined replies leave in order and none waits.
fn send<W: Write>(output: &mut W, reply: &Reply) -> io::Result<()> {
    wire::write_reply(output, reply)?;
    output.flush()
}

/// The capability list (RFC 2449 §5): STLS only while it can be used (RFC 2595 §4), USER only
/// where cleartext passwords are accepted, `SASL` with the mechanisms that can work (left
/// out when none can), `EXPIRE NEVER` (poplar deletes only what a client deleted, §6.7) and,
/// with `--login-delay`, `LOGIN-DELAY` (§6.5). Both are the same before and after login, as
/// they are the same for every user.
fn capabilities(channel: Channel, mechanisms: &[Mechanism], login_delay: Duration) -> Reply {
    let caps = [
        "TOP",
        "UIDL",
        "USER",
        "STLS",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "EXPIRE NEVER",
        "LOGIN-DELAY",
        "IMPLEMENTATION poplar",
    ];
    let mut lines = String::new();
    for c in caps {
        let offered = match c {
            "USER" => channel.secure,
            "STLS" => channel.stls,
            "LOGIN-DELAY" => !login_delay.is_zero(),
            _ => true,
        };
        if c == "LOGIN-DELAY" && offered {
            lines.push_str(&format!("LOGIN-DELAY {}\r\n", whole_seconds(login_delay)));
        } else if offered {
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

/// `delay` in whole seconds for `LOGIN-DELAY`, rounded up: a client that waits what it is told
/// is never refused.
fn whole_seconds(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
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
