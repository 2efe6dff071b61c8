//! Sharing the mbox: deliveries during an open session and racing each other, two poplar
//! processes on one mailbox, and live and stale dotlocks and fcntl locks.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{TestServer, mbox};
use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir};
use poplar::mailbox::lock::{LockKind, LockOptions, lock_for_delivery};

const USERS: &str = "alice:{PLAIN}pw\n";

/// A message whose every body line names it, so interleaving would show.
fn tagged(tag: &str, lines: usize) -> Vec<u8> {
    let mut m = format!("Subject: {tag}\n\n").into_bytes();
    for i in 0..lines {
        m.extend_from_slice(format!("{tag} line {i} From here\n").as_bytes());
    }
    m
}

/// Every message's Subject, after checking each body is whole and unmixed.
fn subjects(c: &mut crate::common::Client) -> BTreeSet<String> {
    let n: usize = c
        .cmd("STAT")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut out = BTreeSet::new();
    for i in 1..=n {
        let body = String::from_utf8(c.multi(&format!("RETR {i}"))).unwrap();
        let tag = body
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("Subject: ")
            .to_owned();
        for line in body.lines().skip(2) {
            assert!(
                line.starts_with(&format!(">{tag} line")) || line.starts_with(&tag),
                "{line}"
            );
        }
        assert!(out.insert(tag));
    }
    out
}

fn deliver_all(dir: std::path::PathBuf, tags: Vec<String>) -> Vec<std::thread::JoinHandle<()>> {
    tags.into_iter()
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let args = ["-f", "t@example", "--lock-timeout", "60"];
                let (code, err) = deliver(&dir, "alice", &args, &tagged(&t, 50));
                assert_eq!(code, 0, "{t}: {err}");
            })
        })
        .collect()
}

#[test]
fn deliveries_during_an_open_session_survive_its_deletions_and_quit() {
    let first: Vec<Vec<u8>> = (0..3).map(|i| tagged(&format!("old{i}"), 5)).collect();
    let refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    let server = TestServer::start(USERS, &[("alice", &mbox(&refs))]);
    let dir = server.dir.path().to_owned();
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("STAT").starts_with("+OK 3 "));
    let during: Vec<String> = (0..8).map(|i| format!("during{i}")).collect();
    for h in deliver_all(dir.clone(), during.clone()) {
        h.join().unwrap();
    }
    assert!(
        c.cmd("STAT").starts_with("+OK 3 "),
        "mail appended later is not shown"
    );
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("DELE 3").starts_with("+OK"));
    let racing: Vec<String> = (0..8).map(|i| format!("racing{i}")).collect();
    let handles = deliver_all(dir, racing.clone());
    assert!(c.cmd("QUIT").starts_with("+OK"));
    for h in handles {
        h.join().unwrap();
    }
    let mut c = server.connect();
    c.login("alice", "pw");
    let want: BTreeSet<String> = std::iter::once("old1".to_owned())
        .chain(during)
        .chain(racing)
        .collect();
    assert_eq!(subjects(&mut c), want);
}

#[test]
fn racing_deliveries_are_neither_lost_nor_interleaved() {
    let server = TestServer::start(USERS, &[]);
    let tags: Vec<String> = (0..24).map(|i| format!("race{i:02}")).collect();
    let dir = server.dir.path().to_owned();
    let handles: Vec<_> = tags
        .iter()
        .map(|t| {
            let (dir, t) = (dir.clone(), t.clone());
            // Large enough to take several writes each.
            std::thread::spawn(move || {
                assert_eq!(deliver(&dir, "alice", &[], &tagged(&t, 8000)).0, 0)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut c = server.connect();
    c.login("alice", "pw");
    assert_eq!(subjects(&mut c), tags.into_iter().collect());
}

#[test]
fn two_poplar_processes_share_one_mailbox_one_session_at_a_time() {
    let dir = mail_dir(USERS, &[("alice", &mbox(&[&tagged("a", 1)]))]);
    let one = ServerProcess::spawn(dir.path(), &[], &[]);
    let two = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut a = one.connect();
    a.login("alice", "pw");
    let mut b = two.connect();
    assert!(b.cmd("USER alice").starts_with("+OK"));
    let r = b.cmd("PASS pw");
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    assert!(a.cmd("DELE 1").starts_with("+OK"));
    assert!(a.cmd("QUIT").starts_with("+OK"));
    let mut b = two.connect();
    b.login("alice", "pw");
    assert_eq!(b.cmd("STAT"), "+OK 0 0");
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_live_dotlock_or_fcntl_lock_makes_login_give_up_in_time_as_busy() {
    let dir = mail_dir(USERS, &[("alice", &mbox(&[&tagged("a", 1)]))]);
    let path = dir.path().join("mail/alice");
    let server = ServerProcess::spawn(dir.path(), &["--lock-timeout", "0.3"], &[]);
    let lock = dir.path().join("mail/alice.lock");
    std::fs::write(&lock, format!("{} {}\n", std::process::id(), host())).unwrap();
    let mut c = server.connect();
    assert!(c.cmd("USER alice").starts_with("+OK"));
    let started = Instant::now();
    assert_eq!(
        c.cmd("PASS pw"),
        "-ERR [SYS/TEMP] mailbox busy, try again later"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    std::fs::remove_file(&lock).unwrap();

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let opts = LockOptions {
        order: vec![LockKind::Fcntl],
        ..LockOptions::default()
    };
    let held = lock_for_delivery(&path, &file, &opts).unwrap();
    let mut c = server.connect();
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert_eq!(
        c.cmd("PASS pw"),
        "-ERR [SYS/TEMP] mailbox busy, try again later"
    );
    assert!(
        !lock.exists(),
        "the dotlock taken first was released on timeout"
    );
    drop(held);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
}

#[test]
fn an_idle_session_never_blocks_delivery() {
    let server = TestServer::start(USERS, &[("alice", &mbox(&[&tagged("a", 1)]))]);
    let mut c = server.connect();
    c.login("alice", "pw");
    let (code, err) = deliver(
        server.dir.path(),
        "alice",
        &["--lock-timeout", "1"],
        &tagged("b", 1),
    );
    assert_eq!(code, 0, "{err}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn stale_dotlocks_are_broken_and_logged() {
    let dir = mail_dir(USERS, &[("alice", &mbox(&[&tagged("a", 1)]))]);
    let server = ServerProcess::spawn(dir.path(), &["--stale-lock-age", "60"], &[]);
    let lock = dir.path().join("mail/alice.lock");
    // Its owner is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&lock, format!("{dead} {}\n", host())).unwrap();
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(!lock.exists());
    // Another host's lock, but neither it nor the mbox changed for longer than the limit.
    std::fs::write(&lock, "1 elsewhere.example\n").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for p in [&lock, &dir.path().join("mail/alice")] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let log = server.log();
    assert!(log.contains(&format!("process {dead} is gone")), "{log}");
    assert!(log.contains("unchanged for"), "{log}");
}

#[test]
fn a_rewrite_under_an_open_session_refuses_retr_and_quit_and_deletes_nothing() {
    let server = TestServer::start(
        USERS,
        &[(
            "alice",
            &mbox(&[&tagged("a", 3), &tagged("b", 3), &tagged("c", 3)]),
        )],
    );
    let path = server.mbox("alice");
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    // Another program removes message 1 behind the session's back.
    let rewritten = mbox(&[&tagged("b", 3), &tagged("c", 3)]);
    std::fs::write(&path, &rewritten).unwrap();
    assert!(c.cmd("RETR 1").starts_with("-ERR [SYS/TEMP]"));
    assert!(c.cmd("TOP 3 0").starts_with("-ERR [SYS/TEMP]"));
    assert!(c.cmd("QUIT").starts_with("-ERR [SYS/TEMP]"));
    assert_eq!(std::fs::read(&path).unwrap(), rewritten);
}
