//! Scripted conversations against `MemoryStore` through in-memory streams.

use std::io::{self, BufReader, Cursor, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Context, Ending, Settings, Tag, run, unparsed_trace};
use crate::auth::{Secret, Users, UsersHandle};
use crate::mailbox::memory::MemoryStore;
use crate::mailbox::{CommitSummary, MailStore, MailboxError, Maildrop, MessageInfo, UserName};

/// Sent as 26 octets: LF line ends become CRLF.
const M1: &[u8] = b"Subject: one\n\nbody one\n";
/// Sent as 22 octets: stored CRLF stays, the `.dot` line is stuffed on the wire.
const M2: &[u8] = b"Subject: two\r\n\r\n.dot\r\n";
/// Sent as 30 octets: the unterminated last line gets its CRLF.
const M3: &[u8] = b"Subject: three\n\nl1\nl2\nl3";

/// What CAPA must list in both states (issue 2; other capabilities may join them).
const REQUIRED_CAPS: [&str; 8] = [
    "TOP",
    "UIDL",
    "USER",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "EXPIRE NEVER",
    "IMPLEMENTATION poplar",
];

fn store() -> MemoryStore {
    let s = MemoryStore::new();
    for m in [M1, M2, M3] {
        s.deliver("alice", m);
    }
    s.deliver("bob", M1);
    s
}

fn context(store: Arc<dyn MailStore>, delay: Duration) -> Context {
    let user = |n: &[u8], p: &[u8]| (UserName::new(n).unwrap(), Secret::Plain(p.to_vec()));
    Context {
        users: UsersHandle::new(Users::new([
            user(b"alice", b"secret"),
            user(b"bob", b"hunter2"),
        ])),
        store,
        guards: Arc::default(),
        settings: Settings {
            auth_failure_delay: delay,
            hostname: "test.example".into(),
            // These scripts send many commands of the wrong state on purpose; the cutoff has
            // its own tests (tests/server/limits.rs, and below).
            max_bad_commands: u32::MAX,
            ..Settings::default()
        },
        watcher: None,
    }
}

fn ctx(store: &MemoryStore) -> Context {
    context(Arc::new(store.clone()), Duration::ZERO)
}

fn tag() -> Tag {
    Tag { id: 7, peer: None }
}

/// Command lines joined with CRLF, each terminated.
fn script(lines: &[&str]) -> Vec<u8> {
    let mut s = Vec::new();
    for l in lines {
        s.extend_from_slice(l.as_bytes());
        s.extend_from_slice(b"\r\n");
    }
    s
}

/// Checks the greeting and CRLF framing; returns the reply lines after the greeting.
fn replies(out: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(out).expect("replies are UTF-8 here");
    assert!(
        text.ends_with("\r\n"),
        "output not CRLF-terminated: {text:?}"
    );
    let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    lines.pop();
    let greeting = lines.remove(0);
    assert!(
        greeting.starts_with("+OK poplar ready <") && greeting.ends_with("@test.example>"),
        "{greeting}"
    );
    for l in &lines {
        assert!(
            !l.contains('\n') && !l.contains('\r'),
            "bare line end in {l:?}"
        );
    }
    lines
}

/// Runs a session over `input`; returns how it ended and the reply lines after the greeting.
fn talk(ctx: &Context, input: &[u8]) -> (Ending, Vec<String>) {
    let mut out = Vec::new();
    let ending = run(ctx, &tag(), Cursor::new(input.to_vec()), &mut out);
    (ending, replies(&out))
}

fn login() -> Vec<&'static str> {
    vec!["USER alice", "PASS secret"]
}

fn with_login(rest: &[&'static str]) -> Vec<u8> {
    let mut lines = login();
    lines.extend_from_slice(rest);
    script(&lines)
}

fn uids(store: &MemoryStore, user: &str) -> Vec<String> {
    let drop = store
        .open(&UserName::new(user.as_bytes()).unwrap())
        .unwrap();
    drop.messages().iter().map(|m| m.uid.to_string()).collect()
}

fn alice_untouched(store: &MemoryStore) {
    assert_eq!(
        store.messages("alice"),
        vec![M1.to_vec(), M2.to_vec(), M3.to_vec()]
    );
}

#[test]
fn authorization_answers_its_commands_and_refuses_transaction_ones() {
    let s = store();
    let (ending, got) = talk(
        &ctx(&s),
        &script(&[
            "STAT",
            "LIST",
            "LIST 1",
            "RETR 1",
            "DELE 1",
            "NOOP",
            "RSET",
            "TOP 1 0",
            "UIDL",
            "UIDL 1",
            "PASS secret",
            "QUIT",
        ]),
    );
    let mut want: Vec<String> = Vec::new();
    for kw in [
        "STAT", "LIST", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "UIDL",
    ] {
        want.push(format!("-ERR {kw} not valid in this state"));
    }
    want.extend(["-ERR send USER first", "+OK bye"].map(String::from));
    assert_eq!(got, want);
    assert_eq!(ending, Ending::Quit);
    alice_untouched(&s);
}

#[test]
fn capa_lists_the_required_capabilities_in_both_states() {
    let s = store();
    let (ending, got) = talk(
        &ctx(&s),
        &script(&["CAPA", "USER alice", "PASS secret", "CAPA", "QUIT"]),
    );
    assert_eq!(ending, Ending::Quit);
    // Two capability lists around the login: status, tags, terminator each.
    let mut blocks = got.split(|l| l == ".");
    for state in ["AUTHORIZATION", "TRANSACTION"] {
        let block = blocks.next().unwrap();
        let start = block
            .iter()
            .position(|l| l == "+OK capability list follows")
            .unwrap_or_else(|| panic!("no CAPA reply in {state}: {got:?}"));
        let tags = &block[start + 1..];
        for cap in REQUIRED_CAPS {
            assert!(
                tags.iter().any(|t| t == cap),
                "{cap} missing in {state}: {tags:?}"
            );
        }
    }
}

#[test]
fn quit_in_authorization_ends_without_update() {
    let s = store();
    let (ending, got) = talk(&ctx(&s), &script(&["USER alice", "QUIT", "NOOP"]));
    assert_eq!(got, ["+OK send PASS", "+OK bye"]);
    assert_eq!(ending, Ending::Quit);
    alice_untouched(&s);
}

#[test]
fn transaction_answers_every_command_exactly() {
    let s = store();
    let u = uids(&s, "alice");
    let (ending, got) = talk(
        &ctx(&s),
        &with_login(&[
            "STAT", "LIST", "LIST 2", "UIDL", "UIDL 3", "RETR 1", "RETR 2", "RETR 3", "TOP 3 0",
            "TOP 3 1", "TOP 3 99", "NOOP", "QUIT",
        ]),
    );
    let mut want: Vec<String> = [
        "+OK send PASS",
        "+OK 3 messages (78 octets)",
        "+OK 3 78",
        "+OK 3 messages (78 octets)",
        "1 26",
        "2 22",
        "3 30",
        ".",
        "+OK 2 22",
        "+OK unique-id listing follows",
    ]
    .map(String::from)
    .to_vec();
    want.extend((0..3).map(|i| format!("{} {}", i + 1, u[i])));
    want.push(".".into());
    want.push(format!("+OK 3 {}", u[2]));
    want.extend(
        [
            "+OK 26 octets",
            "Subject: one",
            "",
            "body one",
            ".",
            "+OK 22 octets",
            "Subject: two",
            "",
            "..dot",
            ".",
            "+OK 30 octets",
            "Subject: three",
            "",
            "l1",
            "l2",
            "l3",
            ".",
            "+OK top of message follows",
            "Subject: three",
            "",
            ".",
            "+OK top of message follows",
            "Subject: three",
            "",
            "l1",
            ".",
            "+OK top of message follows",
            "Subject: three",
            "",
            "l1",
            "l2",
            "l3",
            ".",
            "+OK",
        ]
        .map(String::from),
    );
    want.push("+OK bye, 3 messages left".into());
    assert_eq!(got, want);
    assert_eq!(ending, Ending::Quit);
    alice_untouched(&s);
}

#[test]
fn uids_are_valid_and_unique_even_for_identical_messages() {
    let s = MemoryStore::new();
    for _ in 0..3 {
        s.deliver("bob", M1);
    }
    let u = uids(&s, "bob");
    for id in &u {
        assert!((1..=70).contains(&id.len()), "{id}");
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{id}");
    }
    let mut sorted = u.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "{u:?}");
    assert_eq!(u, uids(&s, "bob"), "the same in every session");
}

#[test]
fn authorization_commands_are_refused_after_login() {
    let s = store();
    let (_, got) = talk(
        &ctx(&s),
        &with_login(&[
            "USER bob",
            "PASS hunter2",
            "APOP bob c4c9334bac560ecc979e58001b3e22fb",
            "AUTH PLAIN",
            "STLS",
        ]),
    );
    assert_eq!(
        got[2..],
        [
            "-ERR USER not valid in this state",
            "-ERR PASS not valid in this state",
            "-ERR APOP not valid in this state",
            "-ERR AUTH not valid in this state",
            "-ERR STLS not valid in this state",
        ]
    );
}

#[test]
fn a_deleted_message_is_refused_by_number_and_left_out_of_totals() {
    let s = store();
    let u = uids(&s, "alice");
    let (ending, got) = talk(
        &ctx(&s),
        &with_login(&[
            "DELE 2", "DELE 2", "LIST 2", "UIDL 2", "RETR 2", "TOP 2 0", "STAT", "LIST", "UIDL",
            "LIST 3", "QUIT",
        ]),
    );
    let want: Vec<String> = [
        "+OK message 2 deleted",
        "-ERR message 2 is deleted",
        "-ERR message 2 is deleted",
        "-ERR message 2 is deleted",
        "-ERR message 2 is deleted",
        "-ERR message 2 is deleted",
        "+OK 2 56",
        "+OK 2 messages (56 octets)",
        "1 26",
        "3 30",
        ".",
        "+OK unique-id listing follows",
        &format!("1 {}", u[0]),
        &format!("3 {}", u[2]),
        ".",
        "+OK 3 30",
        "+OK bye, 2 messages left",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(got[2..], want);
    assert_eq!(ending, Ending::Quit);
    assert_eq!(s.messages("alice"), [M1, M3]);
    assert_eq!(s.messages("bob"), [M1], "other mailboxes untouched");
}

#[test]
fn rset_unmarks_every_deletion() {
    let s = store();
    let (ending, got) = talk(
        &ctx(&s),
        &with_login(&["DELE 1", "DELE 3", "STAT", "RSET", "STAT", "RETR 1", "QUIT"]),
    );
    assert_eq!(
        got[2..8],
        [
            "+OK message 1 deleted",
            "+OK message 3 deleted",
            "+OK 1 22",
            "+OK 3 messages (78 octets)",
            "+OK 3 78",
            "+OK 26 octets",
        ]
    );
    assert_eq!(got.last().unwrap(), "+OK bye, 3 messages left");
    assert_eq!(ending, Ending::Quit);
    alice_untouched(&s);
}

#[test]
fn bad_arguments_and_numbers_get_a_clear_err_and_change_nothing() {
    let s = store();
    let cases = [
        ("", "-ERR empty command"),
        ("XYZZY", "-ERR unknown command"),
        ("STATUS", "-ERR unknown command"),
        ("STAT 1", "-ERR too many arguments"),
        ("NOOP x", "-ERR too many arguments"),
        ("LIST 1 2", "-ERR too many arguments"),
        ("LIST x", "-ERR argument is not a number"),
        ("LIST -1", "-ERR argument is not a number"),
        ("LIST 0", "-ERR message numbers start at 1"),
        ("LIST 4", "-ERR no message 4"),
        ("LIST 4294967297", "-ERR number out of range"),
        ("UIDL 4", "-ERR no message 4"),
        ("RETR", "-ERR missing argument"),
        ("RETR 0", "-ERR message numbers start at 1"),
        ("RETR 99999999999999999999", "-ERR number out of range"),
        ("RETR 4294967295", "-ERR no message 4294967295"),
        ("RETR 1 2", "-ERR too many arguments"),
        ("DELE", "-ERR missing argument"),
        ("DELE 4", "-ERR no message 4"),
        ("DELE 1x", "-ERR argument is not a number"),
        ("TOP 1", "-ERR missing argument"),
        ("TOP 1 -1", "-ERR argument is not a number"),
        ("TOP 4 0", "-ERR no message 4"),
        ("TOP 1 0 0", "-ERR too many arguments"),
        ("TOP 1 4294967296", "-ERR number out of range"),
        ("RSET now", "-ERR too many arguments"),
        ("QUIT now", "-ERR too many arguments"),
        ("NOOP\u{1}", "-ERR control characters in command"),
    ];
    let lines: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let (ending, got) = talk(&ctx(&s), &with_login(&lines));
    let want: Vec<&str> = cases.iter().map(|c| c.1).collect();
    assert_eq!(got[2..], want);
    assert_eq!(ending, Ending::Disconnected);
    alice_untouched(&s);
}

#[test]
fn keywords_are_case_insensitive_and_bare_lf_ends_a_line() {
    let s = store();
    let (ending, got) = talk(
        &ctx(&s),
        b"user alice\nPaSs secret\r\nstat\nlist 2\ndele 1\nquit\n",
    );
    assert_eq!(
        got,
        [
            "+OK send PASS",
            "+OK 3 messages (78 octets)",
            "+OK 3 78",
            "+OK 2 22",
            "+OK message 1 deleted",
            "+OK bye, 2 messages left",
        ]
    );
    assert_eq!(ending, Ending::Quit);
    assert_eq!(s.messages("alice"), [M2, M3]);
}

#[test]
fn pipelined_commands_get_one_reply_each_in_order() {
    let s = store();
    // A whole session in one input buffer, as a pipelining client sends it.
    let commands = [
        "USER alice",
        "PASS secret",
        "STAT",
        "NOOP",
        "LIST 1",
        "DELE 1",
        "LIST 1",
        "STAT",
        "RSET",
        "DELE 3",
        "QUIT",
    ];
    let (ending, got) = talk(&ctx(&s), &script(&commands));
    assert_eq!(
        got,
        [
            "+OK send PASS",
            "+OK 3 messages (78 octets)",
            "+OK 3 78",
            "+OK",
            "+OK 1 26",
            "+OK message 1 deleted",
            "-ERR message 1 is deleted",
            "+OK 2 52",
            "+OK 3 messages (78 octets)",
            "+OK message 3 deleted",
            "+OK bye, 2 messages left",
        ]
    );
    assert_eq!(ending, Ending::Quit);
    assert_eq!(s.messages("alice"), [M1, M2]);
}

#[test]
fn an_overlong_line_gets_exactly_one_err_and_its_tail_never_runs() {
    let s = store();
    let mut input = script(&login());
    // The tails would delete message 1 and quit if they were ever read as commands.
    for tail in ["DELE 1", "QUIT"] {
        input.extend_from_slice(b"NOOP");
        input.extend_from_slice(&[b' '; 300]);
        input.extend_from_slice(tail.as_bytes());
        input.extend_from_slice(b"\r\n");
    }
    // 254 octets plus a bare LF is exactly the limit; one more octet is over it.
    input.extend_from_slice(&[b'x'; 254]);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(&[b'x'; 254]);
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(&script(&["STAT", "QUIT"]));
    let (ending, got) = talk(&ctx(&s), &input);
    assert_eq!(
        got[2..],
        [
            "-ERR line too long",
            "-ERR line too long",
            "-ERR unknown command",
            "-ERR line too long",
            "+OK 3 78",
            "+OK bye, 3 messages left",
        ]
    );
    assert_eq!(ending, Ending::Quit);
    alice_untouched(&s);
}

#[test]
fn end_of_input_commits_nothing_even_after_a_partial_quit() {
    let s = store();
    for tail in [&b""[..], b"QUIT", b"QU"] {
        let mut input = with_login(&["DELE 1", "DELE 2"]);
        input.extend_from_slice(tail);
        let (ending, got) = talk(&ctx(&s), &input);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(ending, Ending::Disconnected);
        alice_untouched(&s);
    }
}

/// A reader that yields `data`, then fails with `error` (or EOF if `None`).
struct ThenFail {
    data: Cursor<Vec<u8>>,
    error: io::ErrorKind,
}

impl Read for ThenFail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(io::Error::from(self.error)),
            n => Ok(n),
        }
    }
}

#[test]
fn an_idle_timeout_closes_silently_and_commits_nothing() {
    let s = store();
    // std reports a socket read timeout as WouldBlock on Unix and TimedOut elsewhere.
    for kind in [io::ErrorKind::TimedOut, io::ErrorKind::WouldBlock] {
        let input = with_login(&["DELE 1", "STAT"]);
        let mut out = Vec::new();
        let reader = BufReader::new(ThenFail {
            data: Cursor::new(input),
            error: kind,
        });
        let ending = run(&ctx(&s), &tag(), reader, &mut out);
        assert_eq!(ending, Ending::Timeout);
        // No reply after the last command's: the session just ends.
        assert_eq!(
            replies(&out),
            [
                "+OK send PASS",
                "+OK 3 messages (78 octets)",
                "+OK message 1 deleted",
                "+OK 2 52",
            ]
        );
        alice_untouched(&s);
    }
}

#[test]
fn a_reset_connection_commits_nothing() {
    let s = store();
    let reader = BufReader::new(ThenFail {
        data: Cursor::new(with_login(&["DELE 1"])),
        error: io::ErrorKind::ConnectionReset,
    });
    let mut out = Vec::new();
    assert_eq!(
        run(&ctx(&s), &tag(), reader, &mut out),
        Ending::Disconnected
    );
    alice_untouched(&s);
}

/// A writer that takes `budget` bytes, then fails every write with a broken pipe.
struct FailingWriter {
    taken: Vec<u8>,
    budget: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.budget - self.taken.len();
        if room == 0 {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = room.min(buf.len());
        self.taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_ends_the_session_before_any_later_command_runs() {
    let s = store();
    let input = with_login(&["DELE 1", "RETR 2", "QUIT"]);
    let mut full = Vec::new();
    assert_eq!(
        run(&ctx(&s), &tag(), Cursor::new(input.clone()), &mut full),
        Ending::Quit
    );
    assert_eq!(s.messages("alice"), [M2, M3]);
    // Every cut before the reply to QUIT must leave the mailbox as it was. The greeting's
    // length varies by a few octets between runs, so stay clear of the end.
    let quit_reply = b"+OK bye, 2 messages left\r\n".len();
    for budget in 0..full.len() - quit_reply - 8 {
        let s = store();
        let mut w = FailingWriter {
            taken: Vec::new(),
            budget,
        };
        let ending = run(&ctx(&s), &tag(), Cursor::new(input.clone()), &mut w);
        assert_eq!(ending, Ending::Disconnected, "budget {budget}");
        alice_untouched(&s);
    }
}

#[test]
fn a_second_session_on_a_locked_mailbox_gets_in_use_and_may_retry() {
    let s = store();
    let held = s.open(&UserName::new(b"alice").unwrap()).unwrap();
    let (ending, got) = talk(
        &ctx(&s),
        &with_login(&["STAT", "USER bob", "PASS hunter2", "STAT", "QUIT"]),
    );
    assert_eq!(
        got,
        [
            "+OK send PASS",
            "-ERR [IN-USE] mailbox is locked by another POP3 session",
            "-ERR STAT not valid in this state",
            "+OK send PASS",
            "+OK 1 message (26 octets)",
            "+OK 1 26",
            "+OK bye, 1 message left",
        ]
    );
    assert_eq!(ending, Ending::Quit);
    drop(held);
    let (_, got) = talk(&ctx(&s), &with_login(&["QUIT"]));
    assert_eq!(got[1], "+OK 3 messages (78 octets)");
}

#[test]
fn a_failed_login_costs_the_same_delay_for_unknown_users_and_stays_in_authorization() {
    let s = store();
    let delay = Duration::from_millis(150);
    let c = context(Arc::new(s.clone()), delay);
    for attempt in [
        vec!["USER alice", "PASS wrong"],
        vec!["USER mallory", "PASS secret"],
        vec!["USER ../etc/passwd", "PASS secret"],
        vec!["APOP alice c4c9334bac560ecc979e58001b3e22fb"],
        vec!["APOP mallory c4c9334bac560ecc979e58001b3e22fb"],
    ] {
        let mut lines = attempt.clone();
        lines.extend(["STAT", "USER alice", "PASS secret", "STAT", "QUIT"]);
        let started = Instant::now();
        let (ending, got) = talk(&c, &script(&lines));
        let elapsed = started.elapsed();
        assert!(elapsed >= delay, "{attempt:?} took {elapsed:?}");
        let skip = attempt.len() - 1;
        assert_eq!(
            got[skip..],
            [
                "-ERR [AUTH] authentication failed",
                "-ERR STAT not valid in this state",
                "+OK send PASS",
                "+OK 3 messages (78 octets)",
                "+OK 3 78",
                "+OK bye, 3 messages left",
            ],
            "{attempt:?}"
        );
        assert_eq!(ending, Ending::Quit);
    }
}

#[test]
fn pass_uses_the_latest_user_and_only_once() {
    let s = store();
    let (_, got) = talk(
        &ctx(&s),
        &script(&[
            "USER alice",
            "USER bob",
            "PASS secret",
            "PASS hunter2",
            "USER bob",
            "PASS hunter2",
        ]),
    );
    assert_eq!(
        got,
        [
            "+OK send PASS",
            "+OK send PASS",
            "-ERR [AUTH] authentication failed",
            "-ERR send USER first",
            "+OK send PASS",
            "+OK 1 message (26 octets)",
        ]
    );
}

/// What a [`Faulty`] store breaks.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// `open` is refused for lack of permission.
    Open,
    /// Every `reader` reports the mailbox changed.
    Changed,
    /// Readers fail after the first few bytes.
    Midway,
    /// `commit` fails.
    Commit,
}

/// A `MemoryStore` with one fault injected.
struct Faulty {
    inner: MemoryStore,
    fault: Fault,
}

struct FaultyDrop {
    inner: Box<dyn Maildrop>,
    fault: Fault,
}

impl MailStore for Faulty {
    fn location(&self, user: &UserName) -> String {
        self.inner.location(user)
    }

    fn open(&self, user: &UserName) -> Result<Box<dyn Maildrop>, MailboxError> {
        if self.fault == Fault::Open {
            return Err(MailboxError::Permission(
                io::ErrorKind::PermissionDenied.into(),
            ));
        }
        Ok(Box::new(FaultyDrop {
            inner: self.inner.open(user)?,
            fault: self.fault,
        }))
    }
}

impl Maildrop for FaultyDrop {
    fn messages(&self) -> &[MessageInfo] {
        self.inner.messages()
    }

    fn reader(&mut self, index: usize) -> Result<Box<dyn Read + '_>, MailboxError> {
        match self.fault {
            Fault::Changed => Err(MailboxError::Changed),
            Fault::Midway => Ok(Box::new(self.inner.reader(index)?.take(4).chain(
                ThenFail {
                    data: Cursor::new(Vec::new()),
                    error: io::ErrorKind::Other,
                },
            ))),
            _ => self.inner.reader(index),
        }
    }

    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitSummary, MailboxError> {
        if self.fault == Fault::Commit {
            return Err(MailboxError::Io(io::Error::other("disk full")));
        }
        self.inner.commit(deleted)
    }
}

fn faulty(fault: Fault) -> (MemoryStore, Context) {
    let s = store();
    let c = context(
        Arc::new(Faulty {
            inner: s.clone(),
            fault,
        }),
        Duration::ZERO,
    );
    (s, c)
}

#[test]
fn mailbox_failures_map_to_response_codes() {
    let (s, c) = faulty(Fault::Open);
    let (_, got) = talk(&c, &with_login(&["STAT"]));
    assert_eq!(
        got[1..],
        [
            "-ERR [SYS/PERM] mailbox not accessible",
            "-ERR STAT not valid in this state",
        ]
    );
    alice_untouched(&s);

    let (s, c) = faulty(Fault::Changed);
    let (ending, got) = talk(&c, &with_login(&["DELE 1", "RETR 2", "TOP 2 0", "NOOP"]));
    assert_eq!(
        got[3..],
        [
            "-ERR [SYS/TEMP] mailbox changed by another program, log in again",
            "-ERR [SYS/TEMP] mailbox changed by another program, log in again",
            "+OK",
        ]
    );
    assert_eq!(ending, Ending::Disconnected);
    alice_untouched(&s);
}

#[test]
fn a_failed_commit_answers_sys_temp_and_changes_nothing() {
    let (s, c) = faulty(Fault::Commit);
    let (ending, got) = talk(&c, &with_login(&["DELE 1", "QUIT"]));
    assert_eq!(
        got.last().unwrap(),
        "-ERR [SYS/TEMP] could not remove deleted messages; mailbox unchanged"
    );
    assert_eq!(ending, Ending::CommitFailed);
    alice_untouched(&s);
}

#[test]
fn a_mailbox_failing_midway_through_a_message_ends_the_session_without_a_terminator() {
    let (s, c) = faulty(Fault::Midway);
    let mut out = Vec::new();
    let ending = run(
        &c,
        &tag(),
        Cursor::new(with_login(&["DELE 2", "RETR 1", "QUIT"])),
        &mut out,
    );
    assert_eq!(ending, Ending::MailboxError);
    let text = String::from_utf8(out).unwrap();
    // The client must not mistake a cut message for a whole one, and QUIT never ran.
    assert!(text.ends_with("+OK 26 octets\r\nSubj"), "{text:?}");
    alice_untouched(&s);
}

#[test]
fn malformed_lines_that_may_hold_a_secret_are_masked_in_the_trace() {
    for (line, want) in [
        (&b"PASS secret\x01"[..], "PASS ***"),
        (b"pass\tsecret", "pass ***"),
        (b"APOP alice 0123 extra", "APOP ***"),
        (b"AUTH PLAIN AGFsaWNlAHNlY3JldA== extra", "AUTH ***"),
        (b"PASS", "PASS"),
        (b"STAT 1", "STAT 1"),
        (b"USER a\x1bb", "USER a\\x1bb"),
    ] {
        assert_eq!(unparsed_trace(line), want);
    }
}

/// A small deterministic generator for the random sessions below.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A random command line: real and made-up keywords in any case, good and bad arguments,
/// control bytes, overlong lines. Never an LF, which would end the line.
fn random_line(rng: &mut XorShift) -> Vec<u8> {
    const KEYWORDS: [&str; 20] = [
        "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT", "STAT", "LIST", "RETR", "DELE",
        "NOOP", "RSET", "TOP", "UIDL", "XTND", "", "LISTS", "TO", "\u{1}",
    ];
    const ARGS: [&str; 16] = [
        "1",
        "2",
        "3",
        "4",
        "0",
        "00",
        "-1",
        "4294967295",
        "4294967296",
        "99999999999999999999",
        "alice",
        "secret",
        "bob",
        "x y",
        "\r",
        "\u{7f}",
    ];
    let mut line: Vec<u8> = KEYWORDS[rng.below(KEYWORDS.len())]
        .bytes()
        .map(|b| {
            if rng.below(2) == 0 {
                b.to_ascii_lowercase()
            } else {
                b
            }
        })
        .collect();
    for _ in 0..rng.below(4) {
        line.extend_from_slice(if rng.below(8) == 0 { b"  " } else { b" " });
        line.extend_from_slice(ARGS[rng.below(ARGS.len())].as_bytes());
    }
    if rng.below(25) == 0 {
        line.resize(200 + rng.below(200), b'z');
    }
    line
}

#[test]
fn random_sessions_get_exactly_one_reply_per_line_and_change_nothing_without_quit() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let s = store();
        let mut lines: Vec<Vec<u8>> = (0..rng.below(40)).map(|_| random_line(&mut rng)).collect();
        // Log in part of the time, so that TRANSACTION gets its share of noise.
        if rng.below(2) == 0 {
            let at = rng.below(lines.len() + 1);
            lines.insert(at, b"PASS secret".to_vec());
            lines.insert(at, b"USER alice".to_vec());
        }
        let mut input = Vec::new();
        // What the server should parse for each line: None if it is too long.
        let mut parsed = Vec::new();
        for l in &lines {
            let end: &[u8] = if rng.below(3) == 0 { b"\n" } else { b"\r\n" };
            input.extend_from_slice(l);
            input.extend_from_slice(end);
            let fits = l.len() + end.len() <= crate::limits::MAX_COMMAND_LINE;
            // One CR before the LF belongs to the line end, whichever end was sent.
            let seen = if end == b"\n" {
                l.strip_suffix(b"\r").unwrap_or(l)
            } else {
                l
            };
            parsed.push(
                fits.then(|| crate::protocol::command::parse(seen).ok())
                    .flatten(),
            );
        }
        let mut out = Vec::new();
        let ending = run(&ctx(&s), &tag(), Cursor::new(input), &mut out);
        // Walk the output: after the greeting, one reply per line, multi-line ones whole.
        assert!(
            out.ends_with(b"\r\n") && out.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'),
            "round {round}: every line ends in CRLF"
        );
        let mut replies = out
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        assert!(replies.next().unwrap().starts_with(b"+OK poplar ready"));
        let mut answered = 0;
        let mut quit = false;
        let mut failures = 0;
        for cmd in parsed {
            let status = replies.next().expect("a reply for every line");
            assert!(
                status.starts_with(b"+OK") || status.starts_with(b"-ERR"),
                "round {round}: {:?}",
                String::from_utf8_lossy(status)
            );
            answered += 1;
            let multi = matches!(
                cmd,
                Some(
                    crate::protocol::command::Command::List(None)
                        | crate::protocol::command::Command::Uidl(None)
                        | crate::protocol::command::Command::Retr(_)
                        | crate::protocol::command::Command::Top(..)
                        | crate::protocol::command::Command::Capa
                        | crate::protocol::command::Command::Auth {
                            mechanism: None,
                            ..
                        }
                )
            );
            if multi && status.starts_with(b"+OK") {
                for body in replies.by_ref() {
                    if body == b"." {
                        break;
                    }
                }
            }
            if cmd == Some(crate::protocol::command::Command::Quit) && status.starts_with(b"+OK") {
                quit = true;
                break;
            }
            // The third failed login closes the session: no more replies.
            if status == b"-ERR [AUTH] authentication failed" {
                failures += 1;
                if failures == crate::limits::MAX_AUTH_FAILURES_PER_SESSION {
                    break;
                }
            }
        }
        assert_eq!(
            replies.next(),
            Some(&b""[..]),
            "round {round}: nothing after the replies"
        );
        assert_eq!(replies.next(), None, "round {round}");
        assert!(answered > 0 || lines.is_empty());
        if !quit {
            let closed = failures == crate::limits::MAX_AUTH_FAILURES_PER_SESSION;
            let want = if closed {
                Ending::AuthFailures
            } else {
                Ending::Disconnected
            };
            assert_eq!(ending, want, "round {round}");
            alice_untouched(&s);
        }
    }
}

#[test]
fn the_greeting_keeps_its_timestamp_whole_with_the_longest_hostname() {
    let s = store();
    let mut c = ctx(&s);
    c.settings.hostname = "h".repeat(255);
    let mut out = Vec::new();
    run(&c, &tag(), Cursor::new(Vec::new()), &mut out);
    let greeting = String::from_utf8(out).unwrap();
    assert!(
        greeting.len() <= crate::limits::MAX_RESPONSE_LINE,
        "{greeting}"
    );
    assert!(
        greeting.ends_with(&format!("@{}>\r\n", c.settings.hostname)),
        "{greeting}"
    );
}

#[test]
fn bad_commands_before_login_close_the_session_past_the_limit() {
    let s = store();
    let mut c = ctx(&s);
    c.settings.max_bad_commands = 2;
    let (ending, lines) = talk(&c, &script(&["FOO", "STAT", "PASS x", "QUIT"]));
    assert_eq!(ending, Ending::BadCommands);
    assert_eq!(
        lines,
        vec![
            "-ERR unknown command",
            "-ERR STAT not valid in this state",
            "-ERR too many bad commands; closing",
        ]
    );
}

#[test]
fn the_third_failed_login_closes_the_session() {
    let s = store();
    let script = script(&[
        "USER alice",
        "PASS a",
        "USER alice",
        "PASS b",
        "AUTH PLAIN AGFsaWNlAGM=",
        "USER alice",
        "PASS secret",
    ]);
    let (ending, lines) = talk(&ctx(&s), &script);
    assert_eq!(ending, Ending::AuthFailures);
    let failed = "-ERR [AUTH] authentication failed";
    assert_eq!(
        lines,
        vec!["+OK send PASS", failed, "+OK send PASS", failed, failed]
    );
    alice_untouched(&s);
}

#[test]
fn sasl_plain_in_two_steps_logs_in_and_the_payload_is_not_a_command() {
    let s = store();
    // base64("\0alice\0secret"), then a line that would be a command if it were one.
    let (_, lines) = talk(
        &ctx(&s),
        &script(&[
            "AUTH PLAIN",
            "AGFsaWNlAHNlY3JldA==",
            "AUTH LOGIN",
            "UVVJVA==",
            "*",
            "STAT",
        ]),
    );
    assert_eq!(lines[0], "+ ");
    assert!(lines[1].starts_with("+OK 3 messages"), "{}", lines[1]);
    assert_eq!(lines[2], "-ERR AUTH not valid in this state");
}

/// Issue 14 (1): a password, APOP digest or SASL response longer than any real one is an
/// ordinary failed login (same reply, same delay, same count towards the close) and is refused
/// before anything is hashed; a wrong one of normal length is hashed. A PASS line cannot carry
/// an over-long password at all (the command line limit); `auth::tests` checks the cap there.
#[test]
fn over_long_credentials_fail_like_any_other_without_being_hashed() {
    use crate::auth::hash_count;
    use crate::auth::sasl::encode;
    use crate::limits::{MAX_PASSWORD, MAX_USER_NAME};

    let s = store();
    let delay = Duration::from_millis(50);
    let c = context(Arc::new(s.clone()), delay);
    let long_password = "s".repeat(MAX_PASSWORD + 1);
    let long_name = "a".repeat(MAX_USER_NAME + 1);
    let digest = "c4c9334bac560ecc979e58001b3e22fb";
    let plain = |pw: &str| encode(format!("\0alice\0{pw}").as_bytes());
    let cram = |name: &str| encode(format!("{name} {digest}").as_bytes());
    // Each attempt: its lines, and whether it is over a cap (else: merely wrong).
    let attempts: Vec<(Vec<String>, bool)> = vec![
        (vec![format!("APOP alice {digest}0")], true),
        (vec![format!("APOP alice {}", "0".repeat(200))], true),
        (vec![format!("APOP alice {digest}")], false),
        (vec!["AUTH PLAIN".into(), plain(&long_password)], true),
        (vec!["AUTH PLAIN".into(), plain("wrong")], false),
        (
            vec![
                "AUTH LOGIN".into(),
                encode(b"alice"),
                encode(long_password.as_bytes()),
            ],
            true,
        ),
        (
            vec!["AUTH LOGIN".into(), encode(b"alice"), encode(b"wrong")],
            false,
        ),
        (vec!["AUTH CRAM-MD5".into(), cram(&long_name)], true),
        (vec!["AUTH CRAM-MD5".into(), cram("alice")], false),
    ];
    let mut hashed_over_cap = Vec::new();
    for (attempt, over) in attempts {
        let mut lines: Vec<&str> = attempt.iter().map(String::as_str).collect();
        lines.extend(["USER alice", "PASS secret", "QUIT"]);
        hash_count::take();
        let started = Instant::now();
        let (ending, got) = talk(&c, &script(&lines));
        let hashed = hash_count::take();
        let shown = &attempt[0];
        assert!(started.elapsed() >= delay, "{shown}: no failure delay");
        assert_eq!(ending, Ending::Quit, "{shown}");
        let failed = got.len() - 4;
        assert_eq!(
            got[failed..],
            [
                "-ERR [AUTH] authentication failed",
                "+OK send PASS",
                "+OK 3 messages (78 octets)",
                "+OK bye, 3 messages left",
            ],
            "{shown}"
        );
        // The good login after the failure checks one password.
        if over && hashed != 1 {
            hashed_over_cap.push(attempt.join(" ").chars().take(40).collect::<String>());
        }
        if !over {
            assert!(hashed >= 2, "{shown}: the wrong attempt was not checked");
        }
    }
    assert!(
        hashed_over_cap.is_empty(),
        "over-long attempts that were hashed: {hashed_over_cap:?}"
    );
}

/// A `--dev`-like context over `store`: anyone logs in, by password or by bearer token as
/// `tokens` say.
fn oauth_context(store: &MemoryStore, tokens: &crate::auth::oauth::BearerTokens) -> Context {
    let mut c = context(Arc::new(store.clone()), Duration::from_millis(50));
    let users = Users::anyone(crate::auth::Anyone::AnyPassword).with_bearer_tokens(tokens.clone());
    c.users = UsersHandle::new(users);
    c
}

#[test]
fn xoauth2_and_oauthbearer_log_in_with_or_without_an_initial_response() {
    use crate::auth::sasl::encode;
    let s = store();
    let tokens = crate::auth::oauth::BearerTokens::default();
    let c = oauth_context(&s, &tokens);
    let xoauth2 = encode(b"user=alice\x01auth=Bearer ya29.any\x01\x01");
    let oauthbearer = encode(b"n,a=alice,\x01host=h\x01port=110\x01auth=Bearer any\x01\x01");
    let sasl = "SASL PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER";
    let (ending, lines) = talk(
        &c,
        &script(&["CAPA", &format!("AUTH XOAUTH2 {xoauth2}"), "QUIT"]),
    );
    assert_eq!(ending, Ending::Quit);
    assert!(lines.iter().any(|l| l == sasl), "{lines:?}");
    assert_eq!(lines[lines.len() - 2], "+OK 3 messages (78 octets)");
    let (_, lines) = talk(
        &c,
        &script(&["AUTH OAUTHBEARER", &oauthbearer, "STAT", "QUIT"]),
    );
    assert_eq!(lines[..3], ["+ ", "+OK 3 messages (78 octets)", "+OK 3 78"]);
    // Neither is offered nor taken where no token table is (the daemon, --inetd).
    let (_, lines) = talk(
        &ctx(&s),
        &script(&["CAPA", &format!("AUTH XOAUTH2 {xoauth2}")]),
    );
    assert!(
        lines.iter().any(|l| l == "SASL PLAIN LOGIN CRAM-MD5"),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), "-ERR unsupported SASL mechanism");
}

#[test]
fn a_refused_token_gets_the_rfc_7628_error_challenge_then_err_after_the_delay() {
    use crate::auth::oauth::{OAUTHBEARER_ERROR, XOAUTH2_ERROR};
    use crate::auth::sasl::encode;
    let s = store();
    let tokens = crate::auth::oauth::BearerTokens::default();
    tokens.set(&UserName::new(b"alice").unwrap(), b"right");
    let c = oauth_context(&s, &tokens);
    let wrong_x = encode(b"user=alice\x01auth=Bearer wrong\x01\x01");
    let wrong_b = encode(b"n,a=alice,\x01auth=Bearer wrong\x01\x01");
    let right = encode(b"n,a=alice,\x01auth=Bearer right\x01\x01");
    let started = Instant::now();
    let (ending, lines) = talk(
        &c,
        &script(&[
            &format!("AUTH XOAUTH2 {wrong_x}"),
            "",
            "AUTH OAUTHBEARER",
            &wrong_b,
            "AQ==",
            &format!("AUTH OAUTHBEARER {right}"),
            "QUIT",
        ]),
    );
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "no failure delay"
    );
    assert_eq!(ending, Ending::Quit);
    let failed = "-ERR [AUTH] authentication failed";
    assert_eq!(
        lines,
        [
            format!("+ {}", encode(XOAUTH2_ERROR)).as_str(),
            failed,
            "+ ",
            format!("+ {}", encode(OAUTHBEARER_ERROR)).as_str(),
            failed,
            "+OK 3 messages (78 octets)",
            "+OK bye, 3 messages left",
        ]
    );
    // The third refusal still answers the client's dummy response, then closes; a malformed
    // message is a plain -ERR [AUTH] and no failed login.
    let (ending, lines) = talk(
        &c,
        &script(&[
            &format!("AUTH XOAUTH2 {wrong_x}"),
            "",
            "AUTH OAUTHBEARER bixhPWFsaWNlLAFhdXRoPUJhc2ljIHgBAQ==",
            &format!(
                "AUTH OAUTHBEARER {}",
                encode(b"n,,\x01auth=Bearer right\x01\x01")
            ),
            &format!("AUTH XOAUTH2 {wrong_x}"),
            "*",
            &format!("AUTH OAUTHBEARER {wrong_b}"),
            "QUIT",
            "NOOP",
        ]),
    );
    assert_eq!(ending, Ending::AuthFailures);
    let x_error = format!("+ {}", encode(XOAUTH2_ERROR));
    let b_error = format!("+ {}", encode(OAUTHBEARER_ERROR));
    assert_eq!(
        lines,
        [
            x_error.as_str(),
            failed,
            "-ERR [AUTH] malformed SASL response",
            "-ERR [AUTH] OAUTHBEARER must name the user in its authzid (a=)",
            x_error.as_str(),
            failed,
            b_error.as_str(),
            failed,
        ]
    );
    alice_untouched(&s);
}

#[test]
fn bearer_tokens_follow_the_cleartext_policy() {
    use crate::auth::sasl::encode;
    let s = store();
    let c = oauth_context(&s, &crate::auth::oauth::BearerTokens::default());
    let remote = Tag {
        id: 8,
        peer: Some("192.0.2.1:1110".parse().unwrap()),
    };
    let mut out = Vec::new();
    let xoauth2 = encode(b"user=alice\x01auth=Bearer any\x01\x01");
    let input = script(&[
        "CAPA",
        &format!("AUTH XOAUTH2 {xoauth2}"),
        "AUTH OAUTHBEARER",
    ]);
    run(&c, &remote, Cursor::new(input), &mut out);
    let lines = replies(&out);
    assert!(lines.contains(&"SASL CRAM-MD5".to_owned()), "{lines:?}");
    let refused = "-ERR [AUTH] cleartext login refused without TLS";
    assert_eq!(lines[lines.len() - 2..], [refused, refused]);
    alice_untouched(&s);
}

/// Sessions with a watch: what it is told, and the faults it injects.
mod watched {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::protocol::wire::{Reply, RespCode};
    use crate::session::{Fault, Seen, Stats, Watch, Watcher};

    /// Injects a fixed fault per keyword (`greeting` for the greeting) and records events.
    #[derive(Default)]
    struct Script {
        faults: HashMap<&'static str, Fault>,
        events: Arc<Mutex<Vec<String>>>,
    }

    struct Recording {
        faults: HashMap<&'static str, Fault>,
        events: Arc<Mutex<Vec<String>>>,
    }

    impl Watcher for Script {
        fn watch(&self, _: &Tag) -> Box<dyn Watch> {
            Box::new(Recording {
                faults: self.faults.clone(),
                events: self.events.clone(),
            })
        }
    }

    impl Watch for Recording {
        fn greeting(&mut self) -> Option<Fault> {
            self.faults.get("greeting").cloned()
        }

        fn line(&mut self, seen: &Seen<'_>) -> Option<Fault> {
            let p = if seen.pipelined { " (pipelined)" } else { "" };
            let user = seen.user.unwrap_or("-");
            self.events
                .lock()
                .unwrap()
                .push(format!("{} {user}{p}", seen.shown));
            self.faults.get(seen.keyword?).cloned()
        }

        fn replied(&mut self, status: &str) {
            self.events.lock().unwrap().push(format!("= {status}"));
        }

        fn ended(&mut self, ending: Ending, stats: &Stats) {
            self.events.lock().unwrap().push(format!(
                "end {} retr={}",
                ending.as_str(),
                stats.retr
            ));
        }
    }

    /// Runs `input` through a session watched by `script`; the ending, the raw output and
    /// the watch's events.
    fn watched(
        store: &MemoryStore,
        script: Script,
        input: impl io::BufRead,
    ) -> (Ending, String, Vec<String>) {
        let events = script.events.clone();
        let mut c = ctx(store);
        c.watcher = Some(Arc::new(script));
        let mut out = Vec::new();
        let ending = run(&c, &tag(), input, &mut out);
        let events = events.lock().unwrap().clone();
        (ending, String::from_utf8(out).unwrap(), events)
    }

    fn faulty(faults: &[(&'static str, Fault)]) -> Script {
        Script {
            faults: faults.iter().cloned().collect(),
            events: Arc::default(),
        }
    }

    /// Gives one line per read, as a client that waits for each answer.
    struct OneLineAtATime(Cursor<Vec<u8>>);

    impl Read for OneLineAtATime {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut line = Vec::new();
            io::BufRead::read_until(&mut self.0, b'\n', &mut line)?;
            let n = line.len().min(buf.len());
            buf[..n].copy_from_slice(&line[..n]);
            Ok(n)
        }
    }

    #[test]
    fn a_watch_sees_each_line_its_status_and_the_end_without_secrets() {
        let s = store();
        let input = OneLineAtATime(Cursor::new(with_login(&["RETR 1", "BOGUS", "QUIT"])));
        let (ending, _, events) = watched(&s, Script::default(), BufReader::new(input));
        assert_eq!(ending, Ending::Quit);
        assert!(events[0].starts_with("= +OK poplar ready <"), "{events:?}");
        assert_eq!(
            events[1..],
            [
                "USER alice alice",
                "= +OK send PASS",
                "PASS *** alice",
                "= +OK 3 messages (78 octets)",
                "RETR 1 alice",
                "= +OK 26 octets",
                "(unknown command) BOGUS alice",
                "= -ERR unknown command",
                "QUIT alice",
                "= +OK bye, 3 messages left",
                "end quit retr=1",
            ]
        );
    }

    #[test]
    fn lines_already_buffered_are_pipelined() {
        let s = store();
        let (_, _, events) = watched(&s, Script::default(), Cursor::new(with_login(&["QUIT"])));
        assert_eq!(events[1], "USER alice alice", "the first line is not");
        assert_eq!(events[3], "PASS *** alice (pipelined)");
        assert_eq!(events[5], "QUIT alice (pipelined)");
    }

    #[test]
    fn a_refused_dele_marks_nothing() {
        let s = store();
        let refuse = Fault::Refuse(Reply::err_code(RespCode::InUse, "injected"));
        let (_, out, _) = watched(
            &s,
            faulty(&[("DELE", refuse)]),
            Cursor::new(with_login(&["DELE 1", "QUIT"])),
        );
        assert!(out.contains("-ERR [IN-USE] injected\r\n"), "{out}");
        assert!(out.ends_with("+OK bye, 3 messages left\r\n"), "{out}");
        assert_eq!(s.messages("alice").len(), 3);
    }

    #[test]
    fn a_failed_commit_deletes_nothing() {
        let s = store();
        let (ending, out, events) = watched(
            &s,
            faulty(&[("QUIT", Fault::FailCommit)]),
            Cursor::new(with_login(&["DELE 1", "QUIT"])),
        );
        assert_eq!(ending, Ending::CommitFailed);
        assert!(out.ends_with("-ERR [SYS/TEMP] commit failed (fault injected)\r\n"));
        assert_eq!(s.messages("alice").len(), 3);
        assert_eq!(events.last().unwrap(), "end commit-failed retr=0");
    }

    #[test]
    fn a_drop_after_quit_commits_but_never_answers() {
        let s = store();
        let (_, out, _) = watched(
            &s,
            faulty(&[("QUIT", Fault::Drop)]),
            Cursor::new(with_login(&["DELE 1", "QUIT"])),
        );
        assert!(out.ends_with("+OK message 1 deleted\r\n"), "{out}");
        assert_eq!(s.messages("alice").len(), 2);
    }

    #[test]
    fn drop_after_cuts_the_answer_after_its_status_line() {
        let s = store();
        let (ending, out, _) = watched(
            &s,
            faulty(&[("RETR", Fault::DropAfter(5))]),
            Cursor::new(with_login(&["RETR 1", "NOOP"])),
        );
        assert_eq!(ending, Ending::Disconnected);
        assert!(out.ends_with("+OK 26 octets\r\nSubje"), "{out:?}");
    }

    #[test]
    fn no_terminator_sends_all_but_the_final_dot_then_closes() {
        let s = store();
        let (_, out, _) = watched(
            &s,
            faulty(&[("RETR", Fault::NoTerminator), ("LIST", Fault::NoTerminator)]),
            Cursor::new(with_login(&["LIST 1", "RETR 2", "NOOP"])),
        );
        assert!(
            out.contains("+OK 1 26\r\n"),
            "a single line passes: {out:?}"
        );
        assert!(
            out.ends_with("+OK 22 octets\r\nSubject: two\r\n\r\n..dot\r\n"),
            "{out:?}"
        );
    }

    #[test]
    fn salted_uidls_differ_from_the_stored_ones_and_agree_with_each_other() {
        let s = store();
        let plain = talk(&ctx(&s), &with_login(&["UIDL", "QUIT"])).1;
        let (_, out, _) = watched(
            &s,
            faulty(&[("UIDL", Fault::SaltUidls(9))]),
            Cursor::new(with_login(&["UIDL", "UIDL 2", "QUIT"])),
        );
        let salted: Vec<&str> = out.split("\r\n").collect();
        let listed = salted.iter().position(|l| l.starts_with("2 ")).unwrap();
        assert!(!plain.contains(&salted[listed].to_owned()), "{plain:?}");
        assert_eq!(salted[listed].len(), 2 + 32);
        assert!(salted.contains(&format!("+OK {}", salted[listed]).as_str()));
    }

    #[test]
    fn a_delayed_greeting_waits_and_a_trickle_sends_everything() {
        let s = store();
        let started = Instant::now();
        let (_, out, _) = watched(
            &s,
            faulty(&[
                ("greeting", Fault::Delay(Duration::from_millis(50))),
                ("CAPA", Fault::Trickle(Duration::from_millis(1))),
            ]),
            Cursor::new(script(&["CAPA", "QUIT"])),
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(out.contains("\r\n+OK capability list follows\r\nTOP\r\n"));
        assert!(out.ends_with("\r\n.\r\n+OK bye\r\n"), "{out:?}");
    }
}
