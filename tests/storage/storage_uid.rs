//! UIDs are persistent and unique: across sessions (with and without QUIT), restarts, the
//! deletion of other messages and of a twin, and a mail reader's Status: rewrite; never
//! reused; X-UIDL honoured only on request.

use std::collections::HashSet;

use crate::common::mbox;
use crate::{ServerProcess, mail_dir, uidl};

const USERS: &str = "alice:{PLAIN}pw\n";

fn msg(subject: &str) -> Vec<u8> {
    format!("Message-ID: <{subject}@example>\nSubject: {subject}\n\nbody of {subject}\n")
        .into_bytes()
}

fn session_uids(server: &ServerProcess, quit: bool) -> Vec<String> {
    // A session dropped without QUIT ends when its thread sees the EOF: retry until then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut c = loop {
        let mut c = server.connect();
        assert!(c.cmd("USER alice").starts_with("+OK"));
        let r = c.cmd("PASS pw");
        if r.starts_with("+OK") {
            break c;
        }
        assert!(
            r.starts_with("-ERR [IN-USE]") && std::time::Instant::now() < deadline,
            "{r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let u = uidl(&mut c);
    if quit {
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    u
}

#[test]
fn uids_survive_sessions_restarts_deletions_and_status_rewrites_and_twins_differ() {
    let (a, b, c) = (msg("a"), msg("b"), msg("c"));
    let dir = mail_dir(USERS, &[("alice", &mbox(&[&a, &b, &b, &c]))]);
    let path = dir.path().join("mail/alice");
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let first = session_uids(&server, false);
    assert_eq!(first.len(), 4);
    assert_eq!(
        first.iter().collect::<HashSet<_>>().len(),
        4,
        "twins differ: {first:?}"
    );
    for u in &first {
        assert_eq!(u.len(), 24);
        assert!(u.bytes().all(|x| (0x21..=0x7e).contains(&x)));
    }
    assert_eq!(
        session_uids(&server, false),
        first,
        "a session without QUIT changes nothing"
    );
    assert_eq!(session_uids(&server, true), first);

    // Deleting the first twin keeps the other's UID, and everyone else's.
    let mut s = server.connect();
    s.login("alice", "pw");
    assert!(s.cmd("DELE 2").starts_with("+OK"));
    assert!(s.cmd("QUIT").starts_with("+OK"));
    let kept = vec![first[0].clone(), first[2].clone(), first[3].clone()];
    assert_eq!(session_uids(&server, true), kept);

    // A mail reader adds Status: headers and rewrites the file under a new inode.
    let text = std::fs::read(&path).unwrap();
    let rewritten = String::from_utf8(text)
        .unwrap()
        .replace("\nSubject:", "\nStatus: RO\nX-Status: A\nSubject:");
    let tmp = dir.path().join("mail/alice.tmp");
    std::fs::write(&tmp, rewritten).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(session_uids(&server, true), kept);

    drop(server);
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    assert_eq!(session_uids(&server, true), kept, "a restart keeps UIDs");

    // New mail that repeats old messages byte for byte gets UIDs never seen before.
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut more, &mbox(&[&b, &a])).unwrap();
    let now = session_uids(&server, true);
    assert_eq!(now[..3], kept[..]);
    let seen: HashSet<_> = first.iter().collect();
    assert!(
        !seen.contains(&now[3]) && !seen.contains(&now[4]),
        "{now:?}"
    );
    assert_ne!(now[3], now[4]);
}

#[test]
fn a_lost_index_never_brings_back_an_old_uid() {
    let dir = mail_dir(USERS, &[("alice", &mbox(&[&msg("a"), &msg("b")]))]);
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let before = session_uids(&server, true);
    std::fs::remove_file(dir.path().join("mail/alice.poplar-index")).unwrap();
    let after = session_uids(&server, true);
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|u| !before.contains(u)),
        "{before:?} {after:?}"
    );
    assert_eq!(session_uids(&server, true), after);
}

#[test]
fn x_uidl_headers_are_used_only_on_request_and_only_when_unique() {
    let with = |uid: &str, s: &str| format!("X-UIDL: {uid}\nSubject: {s}\n\nx\n").into_bytes();
    let box_ = mbox(&[
        &with("qp-1", "a"),
        &with("dup", "b"),
        &with("dup", "c"),
        &msg("d"),
    ]);
    let dir = mail_dir(USERS, &[("alice", &box_)]);
    let server = ServerProcess::spawn(dir.path(), &["--uidl-from-header"], &[]);
    let u = session_uids(&server, true);
    assert_eq!(u[0], "qp-1");
    assert!(
        u[1] != "dup" && u[2] != "dup" && u[1] != u[2] && u[3].len() == 24,
        "{u:?}"
    );
    drop(server);
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let plain = session_uids(&server, true);
    assert!(plain.iter().all(|u| u.len() == 24), "{plain:?}");
    assert_eq!(plain[1..], u[1..]);
}
