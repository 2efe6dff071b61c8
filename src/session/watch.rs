//! A hook into each session for the development server: what the client sent, how each line
//! was answered, how the session ended, and faults to inject. The daemon and `--inetd` have
//! none (`Context::watcher` is `None`) and their sessions run exactly as without it.

use std::cell::RefCell;
use std::io::{self, BufRead, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::limits::{MAX_FAULT_TRICKLE, MAX_RESPONSE_LINE};
use crate::protocol::command::{self, Command};
use crate::protocol::wire::Reply;

use super::{Ending, Link, Stats, Tag};

/// Makes a [`Watch`] for each session (`--dev` only).
pub trait Watcher: Send + Sync {
    /// The watch of session `tag`, which has just connected.
    fn watch(&self, tag: &Tag) -> Box<dyn Watch>;
}

/// One session's observer, told what happens in order; it may inject faults.
pub trait Watch {
    /// The greeting is about to go out: a fault for it (only `Drop`, `Delay` and `Trickle`
    /// apply).
    fn greeting(&mut self) -> Option<Fault>;

    /// A line was read and is about to run: a fault for its answer, if any.
    fn line(&mut self, seen: &Seen<'_>) -> Option<Fault>;

    /// The status line of the greeting or of the answer to the last line, CRLF removed
    /// (`+OK ...`, `-ERR [CODE] ...`, `+ ...`). Not called for an answer a fault dropped
    /// before its first line ended.
    fn replied(&mut self, status: &str);

    /// The session is over.
    fn ended(&mut self, ending: Ending, stats: &Stats);
}

/// Which state a line was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    /// Before login.
    Authorization,
    /// Logged in.
    Transaction,
}

impl PhaseName {
    /// The lower-case name, for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Authorization => "authorization",
            PhaseName::Transaction => "transaction",
        }
    }
}

/// A line the session read, as a watch sees it: never a secret.
#[derive(Debug)]
pub struct Seen<'a> {
    /// The keyword upper-cased (`RETR`), or `None` for a line that is no command: a SASL
    /// response, a line too long or one that does not parse.
    pub keyword: Option<&'static str>,
    /// The message number argument of LIST, UIDL, RETR, TOP and DELE.
    pub number: Option<u32>,
    /// The line as the debug trace shows it, secrets masked (`PASS ***`, `(SASL response)`).
    pub shown: &'a str,
    /// The state it was read in.
    pub phase: PhaseName,
    /// The user logged in; before login, the name the line (USER, APOP) or the USER before
    /// it (PASS) gives, as the client sent it.
    pub user: Option<&'a str>,
    /// Whether a line of it was already buffered when the previous line was read: the client
    /// sent it before reading the previous answer.
    pub pipelined: bool,
    /// Whether STLS would start TLS now (a certificate, no TLS yet, AUTHORIZATION): only
    /// then has a handshake fault a handshake to fail.
    pub stls: bool,
}

impl Seen<'_> {
    /// Whether the answer to this command is multi-line when it succeeds.
    pub fn multi_line(&self) -> bool {
        match self.keyword {
            Some("RETR" | "TOP" | "CAPA") => true,
            Some("LIST" | "UIDL") => self.number.is_none(),
            _ => false,
        }
    }
}

/// A fault a watch injects into the answer to one line, or into the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection instead of answering; the command has run.
    Drop,
    /// Send the status line and this many octets after it, then close.
    DropAfter(u64),
    /// Send a multi-line answer without its final `.` line, then close.
    NoTerminator,
    /// Wait this long before the answer.
    Delay(Duration),
    /// Send the answer one octet at a time, waiting this long before each, for at most
    /// [`MAX_FAULT_TRICKLE`] in all (the rest then goes at once).
    Trickle(Duration),
    /// Answer this instead of running the command.
    Refuse(Reply),
    /// QUIT in TRANSACTION: answer `-ERR [SYS/TEMP]` and commit nothing.
    FailCommit,
    /// Serve the UIDLs of this answer mixed with this salt.
    SaltUidls(u64),
    /// STLS: after its `+OK`, send [`NOT_A_TLS_RECORD`] instead of a TLS handshake and close.
    FailHandshake,
}

/// What [`Fault::FailHandshake`] sends where the client waits for the server's TLS hello:
/// readable in a capture, and no TLS record (a record starts with a content type from 20 to
/// 24 and the version 3.x), so the client's handshake fails on its first read.
pub const NOT_A_TLS_RECORD: &[u8] = b"not TLS (fault injected)\r\n";

/// The session's end of the hook: the watch, and how the next answer is to be shaped.
pub(super) struct Tap {
    watch: Box<dyn Watch>,
    /// The byte-level fault for the answer to the last line.
    shape: Option<Fault>,
    /// Whether `Delay` has been waited out for this answer.
    delayed: bool,
    /// When a trickle must give up waiting.
    trickle_until: Option<Instant>,
    /// The status line so far, while it is being written.
    status: Option<Vec<u8>>,
    /// Octets written after the status line.
    after_status: u64,
    /// What `NoTerminator` holds back: the last three octets written.
    held: Vec<u8>,
    /// Octets the reader has buffered and the session not yet consumed.
    window: usize,
    /// `window` when the last line had been read.
    leftover: usize,
}

/// A shared handle on a session's [`Tap`], held by the session and by its [`Tapped`] link.
#[derive(Clone)]
pub(super) struct Hook(Rc<RefCell<Tap>>);

impl Hook {
    pub(super) fn new(watch: Box<dyn Watch>) -> Hook {
        Hook(Rc::new(RefCell::new(Tap {
            watch,
            shape: None,
            delayed: false,
            trickle_until: None,
            status: None,
            after_status: 0,
            held: Vec::new(),
            window: 0,
            leftover: 0,
        })))
    }

    /// Before the greeting: arms its fault.
    pub(super) fn greeting(&self) {
        let mut tap = self.0.borrow_mut();
        let fault = tap.watch.greeting();
        tap.arm(fault);
    }

    /// A line was read: tells the watch and arms the byte-level fault for its answer;
    /// returns a fault the session must carry out itself. `stls`: whether STLS would start
    /// TLS now.
    pub(super) fn line(
        &self,
        phase: PhaseName,
        sasl: bool,
        complete: bool,
        line: &[u8],
        user: Option<&str>,
        stls: bool,
    ) -> Option<Fault> {
        let parsed = (!sasl && complete).then(|| command::parse(line));
        let shown = match &parsed {
            _ if sasl => "(SASL response)".to_owned(),
            None => "(line too long)".to_owned(),
            Some(Ok(cmd)) => format!("{cmd:?}"),
            Some(Err(e)) => format!("({e}) {}", super::unparsed_trace(line)),
        };
        let cmd = parsed.and_then(Result::ok);
        let named = match &cmd {
            Some(Command::User(name) | Command::Apop { name, .. }) => {
                Some(String::from_utf8_lossy(name).into_owned())
            }
            _ => None,
        };
        let mut tap = self.0.borrow_mut();
        let pipelined = tap.leftover > 0;
        tap.leftover = tap.window;
        let seen = Seen {
            keyword: cmd.as_ref().map(Command::keyword),
            number: cmd.as_ref().and_then(number),
            shown: &shown,
            phase,
            user: named.as_deref().or(user),
            pipelined,
            stls,
        };
        let fault = tap.watch.line(&seen);
        match fault {
            Some(f @ (Fault::Refuse(_) | Fault::FailCommit | Fault::SaltUidls(_))) => {
                tap.arm(None);
                Some(f)
            }
            other => {
                tap.arm(other);
                None
            }
        }
    }

    /// The session is over.
    pub(super) fn ended(&self, ending: Ending, stats: &Stats) {
        self.0.borrow_mut().watch.ended(ending, stats);
    }
}

/// The message number a command names, if any.
fn number(cmd: &Command) -> Option<u32> {
    match cmd {
        Command::List(n) | Command::Uidl(n) => n.map(|n| n.get()),
        Command::Retr(n) | Command::Dele(n) | Command::Top(n, _) => Some(n.get()),
        _ => None,
    }
}

/// The error that ends a session where a fault closes the connection.
fn dropped() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "fault injected")
}

impl Tap {
    /// A new answer begins, shaped by `fault`.
    fn arm(&mut self, fault: Option<Fault>) {
        self.shape = fault;
        self.delayed = false;
        self.trickle_until = None;
        self.status = Some(Vec::new());
        self.after_status = 0;
        self.held.clear();
    }

    /// Notes octets that went out: the status line is told to the watch once complete.
    fn sent(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if let Some(status) = &mut self.status {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    if status.len() < MAX_RESPONSE_LINE {
                        status.extend_from_slice(&rest[..end]);
                    }
                    let line = String::from_utf8_lossy(&status[..]);
                    let line = line.trim_end_matches('\r').to_owned();
                    self.status = None;
                    self.watch.replied(&line);
                    rest = &rest[end + 1..];
                }
                None => {
                    if status.len() < MAX_RESPONSE_LINE {
                        status.extend_from_slice(rest);
                    }
                    return;
                }
            }
        }
        self.after_status += rest.len() as u64;
    }

    /// How many of `buf`'s octets may go before `DropAfter(limit)` closes.
    fn allowed(&self, buf: &[u8], limit: u64) -> usize {
        let status_part = match &self.status {
            Some(_) => buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| i + 1),
            None => 0,
        };
        let left = limit.saturating_sub(self.after_status);
        let more = usize::try_from(left).unwrap_or(usize::MAX);
        status_part.saturating_add(more).min(buf.len())
    }
}

/// A session's link with a [`Hook`]: faults shape what is written, and what is read is
/// tracked to tell pipelined commands.
pub(super) struct Tapped<'l, L: Link> {
    inner: &'l mut L,
    hook: Hook,
}

impl<'l, L: Link> Tapped<'l, L> {
    pub(super) fn new(inner: &'l mut L, hook: Hook) -> Self {
        Tapped { inner, hook }
    }

    /// Writes all of `bytes` through and notes them.
    fn pass(&mut self, tap: &mut Tap, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        tap.sent(bytes);
        Ok(())
    }
}

impl<L: Link> Read for Tapped<'_, L> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hook.0.borrow_mut().window = 0;
        Ok(n)
    }
}

impl<L: Link> BufRead for Tapped<'_, L> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let buf = self.inner.fill_buf()?;
        self.hook.0.borrow_mut().window = buf.len();
        Ok(buf)
    }

    fn consume(&mut self, amt: usize) {
        let mut tap = self.hook.0.borrow_mut();
        tap.window = tap.window.saturating_sub(amt);
        self.inner.consume(amt);
    }
}

impl<L: Link> Write for Tapped<'_, L> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let hook = self.hook.clone();
        let mut tap = hook.0.borrow_mut();
        if let Some(Fault::Delay(d)) = tap.shape
            && !tap.delayed
        {
            tap.delayed = true;
            std::thread::sleep(d);
        }
        match tap.shape {
            Some(Fault::Drop) => Err(dropped()),
            Some(Fault::DropAfter(limit)) => {
                let n = tap.allowed(buf, limit);
                if n == 0 {
                    self.inner.flush()?;
                    return Err(dropped());
                }
                self.pass(&mut tap, &buf[..n])?;
                Ok(n)
            }
            Some(Fault::Trickle(each)) => {
                let until = *tap
                    .trickle_until
                    .get_or_insert_with(|| Instant::now() + MAX_FAULT_TRICKLE);
                if Instant::now() >= until {
                    self.pass(&mut tap, buf)?;
                    return Ok(buf.len());
                }
                std::thread::sleep(each);
                self.pass(&mut tap, &buf[..1])?;
                self.inner.flush()?;
                Ok(1)
            }
            Some(Fault::NoTerminator) => {
                tap.held.extend_from_slice(buf);
                let keep = tap.held.len().saturating_sub(3);
                let out: Vec<u8> = tap.held.drain(..keep).collect();
                self.pass(&mut tap, &out)?;
                Ok(buf.len())
            }
            _ => {
                let n = self.inner.write(buf)?;
                tap.sent(&buf[..n]);
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let hook = self.hook.clone();
        let mut tap = hook.0.borrow_mut();
        if matches!(tap.shape, Some(Fault::NoTerminator)) && !tap.held.is_empty() {
            let held = std::mem::take(&mut tap.held);
            // The terminator: `.` CRLF once the status line is out (a status line ending in
            // a dot is still held).
            if held == b".\r\n" && tap.status.is_none() {
                self.inner.flush()?;
                return Err(dropped());
            }
            self.pass(&mut tap, &held)?;
        }
        self.inner.flush()
    }
}

impl<L: Link> Link for Tapped<'_, L> {
    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }

    fn can_start_tls(&self) -> bool {
        self.inner.can_start_tls()
    }

    fn start_tls(&mut self) -> io::Result<()> {
        if matches!(self.hook.0.borrow().shape, Some(Fault::FailHandshake)) {
            self.inner.write_all(NOT_A_TLS_RECORD)?;
            // Flushed and the FIN behind it: the client reads these octets, then the end.
            self.inner.close()?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no TLS handshake (fault injected)",
            ));
        }
        let started = self.inner.start_tls();
        let mut tap = self.hook.0.borrow_mut();
        (tap.window, tap.leftover) = (0, 0);
        started
    }

    fn close(&mut self) -> io::Result<()> {
        self.inner.close()
    }
}
