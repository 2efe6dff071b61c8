//! The TRANSACTION state: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, CAPA and QUIT. It
//! owns the deletion marks; only QUIT hands them to the maildrop.

use std::fmt::Write as _;
use std::time::Duration;

use crate::auth::sasl::Mechanism;
use crate::mailbox::{MailboxError, Maildrop, Uid, UserName};
use crate::protocol::command::{Command, MsgNum};
use crate::protocol::message::Portion;
use crate::protocol::wire::Reply;

use super::errors::Whose;
use super::{Channel, Stats, capabilities, wrong_state};

/// A logged-in session: the locked maildrop and the marks set by DELE.
pub(super) struct Transaction {
    user: UserName,
    /// Where the store keeps the maildrop, for log lines.
    location: String,
    maildrop: Box<dyn Maildrop>,
    deleted: Vec<bool>,
    /// What the connection allows, for CAPA.
    channel: Channel,
    /// The SASL mechanisms offered before login, which CAPA keeps announcing (RFC 2449 §5).
    mechanisms: Vec<Mechanism>,
    /// The `--login-delay` CAPA keeps announcing.
    login_delay: Duration,
    /// A salt to mix into the UIDLs of the next answer (a dev server's injected fault).
    uid_salt: Option<u64>,
}

/// What a command in TRANSACTION leads to.
pub(super) enum TxStep {
    /// A reply with no message body.
    Reply(Reply),
    /// `+OK status`, then the message at `index` as far as `portion` says.
    Send {
        index: usize,
        portion: Portion,
        status: String,
    },
    /// QUIT: enter UPDATE.
    Quit,
}

impl Transaction {
    pub(super) fn new(
        user: UserName,
        location: String,
        maildrop: Box<dyn Maildrop>,
        channel: Channel,
        mechanisms: Vec<Mechanism>,
        login_delay: Duration,
    ) -> Self {
        let n = maildrop.messages().len();
        Transaction {
            user,
            location,
            maildrop,
            deleted: vec![false; n],
            // STLS is valid only in AUTHORIZATION (RFC 2595 §4).
            channel: Channel {
                stls: false,
                ..channel
            },
            mechanisms,
            login_delay,
            uid_salt: None,
        }
    }

    /// Mixes `salt` into the UIDLs the next command answers with, so that a client sees
    /// them change between sessions.
    pub(super) fn salt_uids(&mut self, salt: u64) {
        self.uid_salt = Some(salt);
    }

    /// Whose mailbox this is, for log lines.
    pub(super) fn whose(&self) -> Whose<'_> {
        Whose {
            user: self.user.as_str(),
            location: &self.location,
        }
    }

    pub(super) fn user(&self) -> &UserName {
        &self.user
    }

    pub(super) fn maildrop(&mut self) -> &mut dyn Maildrop {
        self.maildrop.as_mut()
    }

    /// Count and octets of the messages not marked deleted.
    pub(super) fn totals(&self) -> (usize, u64) {
        self.visible()
            .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size))
    }

    fn visible(&self) -> impl Iterator<Item = (usize, &crate::mailbox::MessageInfo)> {
        self.maildrop
            .messages()
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// The index of message `n`, if it exists and is not marked deleted.
    fn live(&self, n: MsgNum) -> Result<usize, Reply> {
        let i = n.index();
        match self.deleted.get(i) {
            None => Err(Reply::err(format!("no message {n}"))),
            Some(true) => Err(Reply::err(format!("message {n} is deleted"))),
            Some(false) => Ok(i),
        }
    }

    pub(super) fn handle(&mut self, cmd: Command) -> TxStep {
        let salt = self.uid_salt.take();
        let reply = match cmd {
            Command::Stat => {
                let (n, size) = self.totals();
                Reply::ok(format!("{n} {size}"))
            }
            Command::List(None) => self.listing(|m| m.size, {
                let (n, size) = self.totals();
                format!(
                    "{} ({})",
                    crate::plural::plural(n as u64, "message"),
                    crate::plural::plural(size, "octet")
                )
            }),
            Command::Uidl(None) => self.listing(
                |m| ShownUid(&m.uid, salt),
                "unique-id listing follows".into(),
            ),
            Command::List(Some(n)) => match self.live(n) {
                Ok(i) => Reply::ok(format!("{n} {}", self.maildrop.messages()[i].size)),
                Err(r) => r,
            },
            Command::Uidl(Some(n)) => match self.live(n) {
                Ok(i) => Reply::ok(format!(
                    "{n} {}",
                    ShownUid(&self.maildrop.messages()[i].uid, salt)
                )),
                Err(r) => r,
            },
            Command::Retr(n) => match self.live(n) {
                Ok(index) => {
                    let size = self.maildrop.messages()[index].size;
                    return TxStep::Send {
                        index,
                        portion: Portion::Whole,
                        status: crate::plural::plural(size, "octet"),
                    };
                }
                Err(r) => r,
            },
            Command::Top(n, lines) => match self.live(n) {
                Ok(index) => {
                    return TxStep::Send {
                        index,
                        portion: Portion::Top(lines),
                        status: "top of message follows".into(),
                    };
                }
                Err(r) => r,
            },
            Command::Dele(n) => match self.live(n) {
                Ok(i) => {
                    self.deleted[i] = true;
                    Reply::ok(format!("message {n} deleted"))
                }
                Err(r) => r,
            },
            Command::Rset => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                let (n, size) = self.totals();
                Reply::ok(format!(
                    "{} ({})",
                    crate::plural::plural(n as u64, "message"),
                    crate::plural::plural(size, "octet")
                ))
            }
            Command::Noop => Reply::ok(""),
            Command::Capa => capabilities(self.channel, &self.mechanisms, self.login_delay),
            Command::Quit => return TxStep::Quit,
            other => wrong_state(&other),
        };
        TxStep::Reply(reply)
    }

    fn listing<'m, D: std::fmt::Display>(
        &'m self,
        field: impl Fn(&'m crate::mailbox::MessageInfo) -> D,
        first: String,
    ) -> Reply {
        let mut lines = String::new();
        for (i, m) in self.visible() {
            let _ = write!(lines, "{} {}\r\n", i + 1, field(m));
        }
        Reply::Multi { first, lines }
    }

    /// Counts a message sent by RETR or TOP for the end-of-session line.
    /// `octets` is what went on the wire for the text (TOP's count; RETR counts its size).
    pub(super) fn count_sent(
        &self,
        index: usize,
        portion: Portion,
        octets: u64,
        stats: &mut Stats,
    ) {
        match portion {
            Portion::Whole => {
                let size = self.maildrop.messages()[index].size;
                stats.retr += 1;
                stats.retr_octets += size;
                crate::metrics::RETRIEVED_MESSAGES.inc();
                crate::metrics::RETRIEVED_OCTETS.add(size);
            }
            Portion::Top(_) => {
                stats.top += 1;
                stats.top_octets += octets;
            }
        }
    }

    /// UPDATE: removes the marked messages and returns how many are left.
    pub(super) fn commit(self, stats: &mut Stats) -> Result<usize, MailboxError> {
        let (left, _) = self.totals();
        let deleted_octets: u64 = self
            .maildrop
            .messages()
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.size)
            .sum();
        let summary = self.maildrop.commit(&self.deleted)?;
        stats.deleted = summary.deleted as u64;
        stats.deleted_octets = deleted_octets;
        stats.mailbox_bytes = Some((summary.bytes_before, summary.bytes_after));
        Ok(left)
    }
}

/// A UIDL as served: the message's own, or with a fault's salt mixed in (32 hex digits, as
/// valid a UIDL as any, RFC 1939 §7).
struct ShownUid<'a>(&'a Uid, Option<u64>);

impl std::fmt::Display for ShownUid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            None => self.0.fmt(f),
            Some(salt) => {
                let uid = self.0.to_string();
                let mixed = xxhash_rust::xxh3::xxh3_128_with_seed(uid.as_bytes(), salt);
                write!(f, "{mixed:032x}")
            }
        }
    }
}
