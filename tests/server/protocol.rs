//! Every command in every state over real TCP, against a real poplar and real mbox files.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, mbox};

const USERS: &str = "alice:{PLAIN}secret\n\
                     alice@example.com:{PLAIN}other\n\
                     bob:{PLAIN}hunter2\n";

const M1: &[u8] = b"Subject: one\n\nfirst body\n";
const M2: &[u8] = b"Subject: two\n\nsecond body\nmore\n";
const M3: &[u8] = b"Subject: three\n\n.dot\n";

fn server() -> TestServer {
    TestServer::start(
        USERS,
        &[("alice", &mbox(&[M1, M2, M3])), ("bob", &mbox(&[M1]))],
    )
}

/// Reads until the server closes; fails if it does not close within the client's timeout.
fn closed(c: &mut Client) -> Vec<u8> {
    let mut out = Vec::new();
    c.reader
        .read_to_end(&mut out)
        .expect("the server should close the connection");
    out
}

/// The `<...>` timestamp in a greeting.
fn timestamp(greeting: &str) -> &str {
    let start = greeting.find('<').expect("greeting has a timestamp");
    let end = greeting.rfind('>').expect("greeting has a timestamp");
    &greeting[start..=end]
}

/// Logs in, retrying while a just-closed session on the same mailbox is still releasing it.
fn login_when_free(server: &TestServer, user: &str, pass: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.connect();
        assert_eq!(c.cmd(&format!("USER {user}")), "+OK send PASS");
        let r = c.cmd(&format!("PASS {pass}"));
        if r.starts_with("+OK") {
            return c;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        assert!(Instant::now() < deadline, "mailbox never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn authorization_state_commands() {
    // Every TRANSACTION command is tried before login here: more bad commands than the
    // default cutoff allows (tests/server/limits.rs checks the cutoff).
    let s = TestServer::start_with(
        USERS,
        &[("alice", &mbox(&[M1, M2, M3])), ("bob", &mbox(&[M1]))],
        |c| c.max_bad_commands = 20,
    );
    let mut c = s.connect();
    assert!(c.greeting.starts_with("+OK poplar ready <"));
    let caps = c.multi("CAPA");
    let caps = String::from_utf8(caps).unwrap();
    for cap in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION poplar",
    ] {
        assert!(
            caps.split("\r\n").any(|l| l == cap),
            "{cap} missing: {caps}"
        );
    }
    for cmd in [
        "STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL", "UIDL 1",
    ] {
        let kw = cmd.split(' ').next().unwrap();
        assert_eq!(c.cmd(cmd), format!("-ERR {kw} not valid in this state"));
    }
    assert_eq!(c.cmd("PASS secret"), "-ERR send USER first");
    assert_eq!(c.cmd("USER nobody"), "+OK send PASS", "USER never tells");
    assert_eq!(c.cmd("PASS secret"), "-ERR [AUTH] authentication failed");
    assert_eq!(c.cmd("USER alice"), "+OK send PASS");
    assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] authentication failed");
    assert_eq!(c.cmd("QUIT"), "+OK bye");
    assert_eq!(closed(&mut c), b"");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), mbox(&[M1, M2, M3]));
}

#[test]
fn transaction_state_commands() {
    let s = server();
    let mut c = s.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 3 87");
    assert_eq!(c.cmd("LIST"), "+OK 3 messages (87 octets)");
    assert_eq!(c.body(), b"1 28\r\n2 35\r\n3 24\r\n");
    assert_eq!(c.cmd("LIST 2"), "+OK 2 35");
    assert_eq!(c.cmd("LIST 4"), "-ERR no message 4");
    let uidl = String::from_utf8(c.multi("UIDL")).unwrap();
    let uids: Vec<&str> = uidl
        .lines()
        .enumerate()
        .map(|(i, l)| l.strip_prefix(&format!("{} ", i + 1)).unwrap())
        .collect();
    assert_eq!(uids.len(), 3);
    assert_eq!(c.cmd("UIDL 3"), format!("+OK 3 {}", uids[2]));
    assert_eq!(c.cmd("RETR 3"), "+OK 24 octets");
    assert_eq!(c.body(), b"Subject: three\r\n\r\n.dot\r\n");
    assert_eq!(c.multi("TOP 2 0"), b"Subject: two\r\n\r\n");
    assert_eq!(c.multi("TOP 2 1"), b"Subject: two\r\n\r\nsecond body\r\n");
    assert_eq!(c.cmd("NOOP"), "+OK");
    let caps = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(caps.split("\r\n").any(|l| l == "UIDL"), "{caps}");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(c.cmd("DELE 1"), "-ERR message 1 is deleted");
    for cmd in ["LIST 1", "UIDL 1", "RETR 1", "TOP 1 0"] {
        assert_eq!(c.cmd(cmd), "-ERR message 1 is deleted", "{cmd}");
    }
    assert_eq!(c.cmd("STAT"), "+OK 2 59");
    assert_eq!(c.multi("LIST"), b"2 35\r\n3 24\r\n");
    assert_eq!(
        c.multi("UIDL"),
        format!("2 {}\r\n3 {}\r\n", uids[1], uids[2]).as_bytes()
    );
    assert_eq!(c.cmd("RSET"), "+OK 3 messages (87 octets)");
    assert_eq!(c.cmd("STAT"), "+OK 3 87");
    for cmd in [
        "USER bob",
        "PASS hunter2",
        "APOP bob 0123",
        "AUTH PLAIN",
        "STLS",
    ] {
        let kw = cmd.split(' ').next().unwrap();
        assert_eq!(c.cmd(cmd), format!("-ERR {kw} not valid in this state"));
    }
    assert_eq!(c.cmd("DELE 2"), "+OK message 2 deleted");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 2 messages left");
    assert_eq!(closed(&mut c), b"");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), mbox(&[M1, M3]));
}

#[test]
fn bad_commands_and_numbers_get_a_clear_err() {
    let s = server();
    let mut c = s.connect();
    c.login("alice", "secret");
    for (cmd, want) in [
        ("", "-ERR empty command"),
        ("HELO", "-ERR unknown command"),
        ("STAT 1", "-ERR too many arguments"),
        ("LIST 1 2", "-ERR too many arguments"),
        ("RETR", "-ERR missing argument"),
        ("RETR one", "-ERR argument is not a number"),
        ("RETR 0", "-ERR message numbers start at 1"),
        ("RETR 4", "-ERR no message 4"),
        ("RETR 99999999999999999999", "-ERR number out of range"),
        ("LIST 4294967297", "-ERR number out of range"),
        ("TOP 1", "-ERR missing argument"),
        ("TOP 1 -1", "-ERR argument is not a number"),
        ("DELE 1 1", "-ERR too many arguments"),
        ("USER\0alice", "-ERR control characters in command"),
    ] {
        assert_eq!(c.cmd(cmd), want, "{cmd:?}");
    }
    assert_eq!(c.cmd("stat"), "+OK 3 87", "case-insensitive");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
}

#[test]
fn apop_logs_in_with_the_digest_of_this_greetings_timestamp() {
    let s = server();
    let mut first = s.connect();
    let ts = timestamp(&first.greeting).to_owned();
    let mut second = s.connect();
    assert_ne!(
        ts,
        timestamp(&second.greeting),
        "a new timestamp per greeting"
    );
    let other_digest = poplar::auth::apop_digest(timestamp(&second.greeting), b"secret");
    assert_eq!(
        first.cmd(&format!("APOP alice {other_digest}")),
        "-ERR [AUTH] authentication failed",
        "another greeting's digest is a replay"
    );
    let digest = poplar::auth::apop_digest(&ts, b"secret");
    assert_eq!(
        first.cmd(&format!("APOP alice {digest}")),
        "+OK 3 messages (87 octets)"
    );
    assert_eq!(second.cmd("QUIT"), "+OK bye");
    assert_eq!(first.cmd("QUIT"), "+OK bye, 3 messages left");
}

#[test]
fn a_locked_mailbox_is_in_use_also_under_another_name_for_the_same_file() {
    let s = server();
    let mut holder = s.connect();
    holder.login("alice", "secret");
    for (user, pass) in [("alice", "secret"), ("alice@example.com", "other")] {
        let mut c = s.connect();
        assert_eq!(c.cmd(&format!("USER {user}")), "+OK send PASS");
        assert_eq!(
            c.cmd(&format!("PASS {pass}")),
            "-ERR [IN-USE] mailbox is locked by another POP3 session",
            "{user}"
        );
        // Still in AUTHORIZATION: other mailboxes are open to it.
        assert_eq!(c.cmd("STAT"), "-ERR STAT not valid in this state");
        c.login("bob", "hunter2");
        assert_eq!(c.cmd("STAT"), "+OK 1 28");
        assert_eq!(c.cmd("QUIT"), "+OK bye, 1 message left");
    }
    assert_eq!(holder.cmd("QUIT"), "+OK bye, 3 messages left");
    let mut c = login_when_free(&s, "alice@example.com", "other");
    assert_eq!(
        c.cmd("STAT"),
        "+OK 3 87",
        "the same file under the other name"
    );
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
}

#[test]
fn a_dropped_connection_commits_nothing() {
    let s = server();
    let before = std::fs::read(s.mbox("alice")).unwrap();
    let mut c = s.connect();
    c.login("alice", "secret");
    for n in 1..=3 {
        assert_eq!(
            c.cmd(&format!("DELE {n}")),
            format!("+OK message {n} deleted")
        );
    }
    // Cut the connection in the middle of a pipelined RETR and a QUIT never sent whole.
    c.send_raw(b"RETR 2\r\nQUI");
    drop(c);
    let mut c = login_when_free(&s, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 3 87");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), before);
}

#[test]
fn a_whole_pipelined_session_in_one_write_gets_every_reply_once_in_order() {
    let s = server();
    let mut c = s.connect();
    c.send_raw(
        b"NOOP\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nRETR 1\r\nTOP 3 0\r\n\
          DELE 1\r\nDELE 1\r\nLIST 1\r\nNOOP\r\nSTAT\r\nQUIT\r\n",
    );
    let all = String::from_utf8(closed(&mut c)).unwrap();
    let want = "-ERR NOOP not valid in this state\r\n\
                +OK send PASS\r\n\
                +OK 3 messages (87 octets)\r\n\
                +OK 3 87\r\n\
                +OK 3 messages (87 octets)\r\n1 28\r\n2 35\r\n3 24\r\n.\r\n\
                +OK 28 octets\r\nSubject: one\r\n\r\nfirst body\r\n.\r\n\
                +OK top of message follows\r\nSubject: three\r\n\r\n.\r\n\
                +OK message 1 deleted\r\n\
                -ERR message 1 is deleted\r\n\
                -ERR message 1 is deleted\r\n\
                +OK\r\n\
                +OK 2 59\r\n\
                +OK bye, 2 messages left\r\n";
    assert_eq!(all, want);
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), mbox(&[M2, M3]));
}

#[test]
fn an_overlong_line_gets_one_err_and_its_tail_never_runs() {
    let s = server();
    let mut c = s.connect();
    c.login("alice", "secret");
    // A megabyte on one line: read and dropped without being held, answered once.
    let mut line = b"NOOP".to_vec();
    line.resize(1 << 20, b' ');
    line.extend_from_slice(b"DELE 1\r\n");
    c.send_raw(&line);
    assert_eq!(c.line(), "-ERR line too long");
    // 256 octets with CRLF: one over the RFC 2449 limit, and its tail would end the session.
    let mut line = vec![b' '; 250];
    line.extend_from_slice(b"QUIT\r\n");
    c.send_raw(&line);
    assert_eq!(c.line(), "-ERR line too long");
    assert_eq!(c.cmd("STAT"), "+OK 3 87");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), mbox(&[M1, M2, M3]));
}

#[test]
fn the_idle_timeout_closes_silently_and_commits_nothing() {
    let timeout = Duration::from_secs(1);
    let s = TestServer::start_with(USERS, &[("alice", &mbox(&[M1, M2, M3]))], |c| {
        c.idle_timeout = timeout;
    });
    // Before login: the AUTHORIZATION deadline (no longer than the idle timeout) counts from
    // the connection.
    let started = Instant::now();
    let mut c = s.connect();
    assert_eq!(closed(&mut c), b"", "no reply on timeout");
    assert!(started.elapsed() >= timeout);
    // After login, with a deletion pending.
    let mut c = s.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(closed(&mut c), b"", "no reply on timeout");
    // In the middle of a line that never ends, with QUIT pending.
    let mut c = login_when_free(&s, "alice", "secret");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    c.send_raw(b"QUIT");
    assert_eq!(closed(&mut c), b"", "no reply on timeout");
    let mut c = login_when_free(&s, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 3 87");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
}

#[test]
fn a_client_trickling_bytes_is_cut_off_at_the_idle_timeout() {
    let timeout = Duration::from_secs(1);
    let s = TestServer::start_with(USERS, &[("alice", &mbox(&[M1]))], |c| {
        c.idle_timeout = timeout;
    });
    let mut c = s.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    // A byte every 200 ms never lets a single read time out, but the line never completes.
    let started = Instant::now();
    let mut cut_off = false;
    while started.elapsed() < timeout * 10 {
        if c.writer.write_all(b"N").is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        cut_off || closed(&mut c).is_empty(),
        "the session outlived 10 idle timeouts"
    );
    let mut c = login_when_free(&s, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 1 28", "nothing committed");
}

#[test]
fn commands_keep_a_session_alive_past_the_idle_timeout() {
    let timeout = Duration::from_millis(1500);
    let s = TestServer::start_with(USERS, &[("alice", &mbox(&[M1]))], |c| {
        c.idle_timeout = timeout;
    });
    let mut c = s.connect();
    c.login("alice", "secret");
    let started = Instant::now();
    while started.elapsed() < timeout * 2 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(c.cmd("NOOP"), "+OK");
    }
    assert_eq!(c.cmd("QUIT"), "+OK bye, 1 message left");
}

#[test]
fn uidl_is_the_same_in_every_session() {
    let s = server();
    let mut c = s.connect();
    c.login("alice", "secret");
    let first = c.multi("UIDL");
    assert_eq!(c.cmd("DELE 2"), "+OK message 2 deleted");
    drop(c);
    let mut c = login_when_free(&s, "alice", "secret");
    assert_eq!(c.multi("UIDL"), first, "after a session that was dropped");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
    let mut c = login_when_free(&s, "alice", "secret");
    assert_eq!(c.multi("UIDL"), first, "after a session that quit");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
}

#[test]
fn a_missing_mbox_is_an_empty_mailbox() {
    let s = TestServer::start(USERS, &[]);
    let mut c = s.connect();
    c.login("bob", "hunter2");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
    assert_eq!(c.multi("LIST"), b"");
    assert_eq!(c.multi("UIDL"), b"");
    assert_eq!(c.cmd("RETR 1"), "-ERR no message 1");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 0 messages left");
    assert!(!s.mbox("bob").exists(), "QUIT creates no file");
}

#[test]
fn the_demo_files_serve_the_rfc_1939_session() {
    // What `make run` serves, straight from examples/demo.
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
    let users = std::fs::read_to_string(demo.join("users")).unwrap();
    let alice = std::fs::read(demo.join("alice.mbox")).unwrap();
    let bob = std::fs::read(demo.join("bob.mbox")).unwrap();
    let s = TestServer::start(&users, &[("alice", &alice), ("bob", &bob)]);
    let mut c = s.connect();
    c.login("alice", "alice");
    assert!(c.cmd("STAT").starts_with("+OK 3 "));
    assert_eq!(c.multi("LIST").split(|&b| b == b'\n').count(), 4);
    let first = c.multi("RETR 1");
    let shown = String::from_utf8_lossy(&first);
    assert!(shown.contains("\r\n.\r\n"), "{shown}");
    assert!(shown.ends_with("below:\r\n.hidden\r\n"), "{shown}");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 2 messages left");
    let mut c = s.connect();
    c.login("alice", "alice");
    assert!(c.cmd("STAT").starts_with("+OK 2 "));
    assert_eq!(c.cmd("QUIT"), "+OK bye, 2 messages left");
}

#[test]
fn mail_delivered_during_a_session_survives_its_commit() {
    let s = server();
    let mut c = s.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    let new: &[u8] = b"Subject: new\n\narrived meanwhile\n";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(s.mbox("alice"))
        .unwrap();
    std::io::Write::write_all(&mut f, &mbox(&[new])).unwrap();
    drop(f);
    // The session still sees the mailbox as it was at login.
    assert_eq!(c.cmd("STAT"), "+OK 2 59");
    assert_eq!(c.multi("RETR 3"), b"Subject: three\r\n\r\n.dot\r\n");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 2 messages left");
    assert_eq!(
        std::fs::read(s.mbox("alice")).unwrap(),
        mbox(&[M2, M3, new])
    );
    let mut c = login_when_free(&s, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 3 94");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 3 messages left");
}

#[test]
fn a_mailbox_rewritten_by_another_program_is_left_alone() {
    let s = server();
    let mut c = s.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    let rewritten = mbox(&[M3]);
    std::fs::write(s.mbox("alice"), &rewritten).unwrap();
    assert_eq!(
        c.cmd("RETR 2"),
        "-ERR [SYS/TEMP] mailbox changed by another program, log in again"
    );
    assert_eq!(
        c.cmd("QUIT"),
        "-ERR [SYS/TEMP] could not remove deleted messages; mailbox unchanged"
    );
    assert_eq!(closed(&mut c), b"");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), rewritten);
}

#[test]
fn a_mailbox_reached_through_a_symlink_is_the_same_mailbox() {
    let s = TestServer::start_with(
        USERS,
        &[("alice", &mbox(&[M1, M2, M3])), ("bob", &mbox(&[M1]))],
        |c| c.mbox.trust.follow_symlinks = true,
    );
    std::fs::remove_file(s.mbox("bob")).unwrap();
    std::os::unix::fs::symlink(s.mbox("alice"), s.mbox("bob")).unwrap();
    let mut alice = s.connect();
    alice.login("alice", "secret");
    let mut bob = s.connect();
    assert_eq!(bob.cmd("USER bob"), "+OK send PASS");
    assert_eq!(
        bob.cmd("PASS hunter2"),
        "-ERR [IN-USE] mailbox is locked by another POP3 session"
    );
    assert_eq!(alice.cmd("QUIT"), "+OK bye, 3 messages left");
    let mut bob = login_when_free(&s, "bob", "hunter2");
    assert_eq!(bob.cmd("STAT"), "+OK 3 87");
    assert_eq!(bob.cmd("QUIT"), "+OK bye, 3 messages left");
}

#[test]
fn a_symlinked_mailbox_or_one_of_another_user_is_refused_unless_allowed() {
    use std::os::unix::fs::MetadataExt;
    let s = server();
    std::fs::remove_file(s.mbox("bob")).unwrap();
    std::os::unix::fs::symlink(s.mbox("alice"), s.mbox("bob")).unwrap();
    let mut bob = s.connect();
    bob.cmd("USER bob");
    assert_eq!(
        bob.cmd("PASS hunter2"),
        "-ERR [SYS/PERM] mailbox unusable (a symbolic link (--mbox-follow-symlinks allows it))"
    );
    // A file another user owns (chown needs root, as the test suite runs in CI).
    let ours = std::fs::metadata(s.mbox("alice")).unwrap().uid();
    if std::os::unix::fs::chown(s.mbox("alice"), Some(ours + 1), None).is_err() {
        eprintln!("skipped the owner half: cannot chown here");
        return;
    }
    let mut alice = s.connect();
    alice.cmd("USER alice");
    assert!(
        alice
            .cmd("PASS secret")
            .starts_with("-ERR [SYS/PERM] mailbox unusable (owned by another"),
    );
    let lenient = TestServer::start_with(USERS, &[("alice", &mbox(&[M1]))], |c| {
        c.mbox.trust.any_owner = true
    });
    std::os::unix::fs::chown(lenient.mbox("alice"), Some(ours + 1), None).unwrap();
    let mut alice = lenient.connect();
    alice.login("alice", "secret");
    assert_eq!(alice.cmd("STAT"), "+OK 1 28");
}
