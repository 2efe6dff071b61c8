//! What the log says about a session: its tag, how it ended, and its counters.

use std::time::{Duration, Instant};

use crate::logline::{Event, Field};

/// How a session ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// QUIT, with UPDATE done if logged in.
    Quit,
    /// QUIT, but the deletions could not be committed (nothing was removed), or not finished
    /// (the log line before says which).
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
    /// The word for the end-of-session line (`reason=`).
    pub fn as_str(self) -> &'static str {
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
    /// happen (no login, no commit). The session ran from `started` to `ended`: one reading
    /// of the clock for both forms of the line, so they agree.
    pub(super) fn end_line(
        &self,
        tag: &Tag,
        user: Option<&str>,
        ending: Ending,
        (started, ended): (Instant, Instant),
    ) -> String {
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
            ended.saturating_duration_since(started).as_millis(),
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

    /// The end-of-session line's fields for a structured log: the same values as
    /// [`end_line`](Stats::end_line), with the session number as `session`.
    pub(super) fn end_event<'a>(
        &self,
        tag: &Tag,
        user: Option<&'a str>,
        ending: Ending,
        (started, ended): (Instant, Instant),
    ) -> Event<'a> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let user = user.map_or(Field::Missing, |u| {
            Field::Text(crate::logsafe::token(u.as_bytes()).into())
        });
        tag.event("session-end")
            .field("user", user)
            .text("reason", ending.as_str())
            .num("duration_ms", ms(ended.saturating_duration_since(started)))
            .opt_num(
                "login_ms",
                self.logged_in
                    .map(|t| ms(t.saturating_duration_since(started))),
            )
            .opt_num("commit_ms", self.commit_time.map(ms))
            .num("messages", self.messages as u64)
            .num("retr", self.retr)
            .num("retr_octets", self.retr_octets)
            .num("top", self.top)
            .num("top_octets", self.top_octets)
            .num("dele", self.deleted)
            .num("dele_octets", self.deleted_octets)
            .opt_num("mailbox_before", self.mailbox_bytes.map(|(b, _)| b))
            .opt_num("mailbox_after", self.mailbox_bytes.map(|(_, a)| a))
    }
}

/// A session's identity: its number and the client's address (for logs, limits and policy).
pub struct Tag {
    /// Connection number, unique in this process.
    pub id: u64,
    /// The client's real address, when known (not for a session on stdin/stdout).
    pub peer: Option<std::net::SocketAddr>,
}

impl Tag {
    /// An event about this session for a structured log line, with its number and client
    /// address.
    pub(crate) fn event<'a>(&self, name: &'static str) -> Event<'a> {
        Event::new(name).session(self.id, self.peer)
    }
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
