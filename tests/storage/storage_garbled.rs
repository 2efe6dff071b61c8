//! Garbled mbox files are served as well as they can be and never rewritten into something
//! that drops bytes; `--mbox-unquote` sizes follow what is sent.

use crate::common::TestServer;
use crate::uidl;

const USERS: &str = "alice:{PLAIN}pw\n";

/// Text before the first From_ line, NUL bytes, a From_ line with a bad date, CRLF and LF
/// mixed, and a truncated last message.
const GARBLED: &[u8] = b"stray text before any From_ line\n\n\
From \0not a date\nSubject: nul\0byte\n\nbody\0\n\n\
From someone@example.com Thu Nov 26 09:00:00 2026\r\nSubject: crlf\r\n\r\nline\r\n\r\n\
From x@y Thu Nov 26 09:00:00 2026\nSubject: cut\n\ntruncated in the midd";

#[test]
fn garbled_mailboxes_are_listed_retrieved_and_rewritten_without_losing_bytes() {
    let server = TestServer::start(USERS, &[("alice", GARBLED)]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert_eq!(
        c.cmd("STAT"),
        "+OK 3 ".to_owned() + &total(&mut c).to_string()
    );
    let list = String::from_utf8(c.multi("LIST")).unwrap();
    let mut bodies = Vec::new();
    for (i, line) in list.lines().enumerate() {
        let size: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = c.multi(&format!("RETR {}", i + 1));
        assert_eq!(body.len(), size, "message {} size as listed", i + 1);
        bodies.push(body);
    }
    assert_eq!(bodies[0], b"Subject: nul\0byte\r\n\r\nbody\0\r\n");
    assert_eq!(bodies[2], b"Subject: cut\r\n\r\ntruncated in the midd\r\n");
    let uids = uidl(&mut c);
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let now = std::fs::read(server.mbox("alice")).unwrap();
    let crlf_start = find(GARBLED, b"From someone");
    let cut_start = find(GARBLED, b"From x@y");
    let want = [&GARBLED[..crlf_start], &GARBLED[cut_start..]].concat();
    assert_eq!(now, want, "only message 2 is gone, every other byte kept");

    let mut c = server.connect();
    c.login("alice", "pw");
    assert_eq!(uidl(&mut c), vec![uids[0].clone(), uids[2].clone()]);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let now = std::fs::read(server.mbox("alice")).unwrap();
    assert!(now.starts_with(b"stray text before any From_ line\n\nFrom x@y"));
}

fn total(c: &mut crate::common::Client) -> usize {
    let list = String::from_utf8(c.multi("LIST")).unwrap();
    list.lines()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn a_file_with_no_from_line_is_refused_for_good_and_stays_as_it_is() {
    let junk = b"\0\0\0 not an mbox at all\nFrom-less\n";
    let users = "alice:{PLAIN}pw\nbob:{PLAIN}pw\n";
    let server = TestServer::start(users, &[("alice", junk), ("bob", b"\n\n")]);
    let mut c = server.connect();
    c.cmd("USER alice");
    assert_eq!(
        c.cmd("PASS pw"),
        "-ERR [SYS/PERM] mailbox unusable (no From_ line: not an mbox file)"
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(std::fs::read(server.mbox("alice")).unwrap(), junk);
    // Only line ends: a mailbox some writer emptied, served as empty.
    let mut c = server.connect();
    c.login("bob", "pw");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
}

#[test]
fn a_directory_at_the_mailbox_path_is_a_permanent_error() {
    let server = TestServer::start(USERS, &[]);
    std::fs::create_dir(server.mbox("alice")).unwrap();
    let mut c = server.connect();
    c.cmd("USER alice");
    assert_eq!(
        c.cmd("PASS pw"),
        "-ERR [SYS/PERM] mailbox unusable (a directory, not an mbox file)"
    );
}

#[test]
fn unquoting_sizes_follow_what_is_sent() {
    let m =
        b"From a Thu Nov 26 09:00:00 2026\nSubject: q\n\n>From one\n>>From two\n>Fromage\nFrom\n\n";
    for (unquote, want, top) in [
        (
            false,
            &b"Subject: q\r\n\r\n>From one\r\n>>From two\r\n>Fromage\r\nFrom\r\n"[..],
            &b"Subject: q\r\n\r\n>From one\r\n"[..],
        ),
        (
            true,
            &b"Subject: q\r\n\r\nFrom one\r\n>From two\r\n>Fromage\r\nFrom\r\n"[..],
            &b"Subject: q\r\n\r\nFrom one\r\n"[..],
        ),
    ] {
        let server = TestServer::start_with(USERS, &[("alice", m)], |c| {
            c.mbox.view.unquote = unquote;
        });
        let mut c = server.connect();
        c.login("alice", "pw");
        assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {}", want.len()));
        assert_eq!(c.multi("RETR 1"), want);
        assert_eq!(c.multi("TOP 1 1"), top);
    }
}
