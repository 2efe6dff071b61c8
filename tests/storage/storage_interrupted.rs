//! A `poplar deliver` killed with SIGKILL midway is truncated away by the next delivery, login
//! or start-up (unless another agent appended after it: then the bytes stay); and a mailbox
//! replaced by rename, or removed, while a delivery or a session waits or runs loses nothing.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::mbox;
use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir};

const USERS: &str = "alice:{PLAIN}pw\n";

fn spawn_deliver(dir: &std::path::Path) -> Child {
    Command::new(crate::common::poplar_bin())
        .arg("deliver")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .args(["-f", "slow@example.com", "alice"])
        .env_remove("POPLAR_FAULT")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (up to a generous deadline) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a delivery fed slowly from a pipe, waits until part of it is in the mbox, and
/// kills it with SIGKILL. Returns the mbox's length then.
fn kill_a_delivery_midway(dir: &std::path::Path) -> u64 {
    let path = dir.join("mail/alice");
    let before = std::fs::metadata(&path).unwrap().len();
    let mut child = spawn_deliver(dir);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: partial\n\n").unwrap();
    // More than one write buffer, so some of it reaches the file while stdin stays open.
    for i in 0..3000 {
        stdin
            .write_all(format!("partial body line {i:05} ..............\n").as_bytes())
            .unwrap();
    }
    wait_until("a partial delivery", || {
        std::fs::metadata(&path).unwrap().len() > before
    });
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    std::fs::metadata(&path).unwrap().len()
}

#[test]
fn a_delivery_killed_midway_is_truncated_away_by_the_next_delivery() {
    let original = mbox(&[b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond\n"]);
    let dir = mail_dir(USERS, &[("alice", &original)]);
    let partial = kill_a_delivery_midway(dir.path());
    assert!(partial > original.len() as u64);
    let (code, err) = deliver(
        dir.path(),
        "alice",
        &["-f", "a@b"],
        b"Subject: next\n\nok\n",
    );
    assert_eq!(code, 0, "{err}");
    let now = std::fs::read(dir.path().join("mail/alice")).unwrap();
    assert_eq!(&now[..original.len()], &original[..]);
    let added = &now[original.len()..];
    assert!(
        added.starts_with(b"From a@b "),
        "{:?}",
        String::from_utf8_lossy(added)
    );
    assert!(added.ends_with(b"Subject: next\n\nok\n\n"));
    assert!(!dir.path().join("mail/alice.poplar-append").exists());
}

#[test]
fn a_delivery_killed_midway_is_truncated_away_at_login_and_at_start_up() {
    let original = mbox(&[b"Subject: one\n\nfirst\n"]);
    for at_start_up in [false, true] {
        let dir = mail_dir(USERS, &[("alice", &original)]);
        let server = (!at_start_up).then(|| ServerProcess::spawn(dir.path(), &[], &[]));
        kill_a_delivery_midway(dir.path());
        let server = server.unwrap_or_else(|| ServerProcess::spawn(dir.path(), &[], &[]));
        let mut c = server.connect();
        c.login("alice", "pw");
        assert!(c.cmd("STAT").starts_with("+OK 1 "));
        assert!(c.cmd("QUIT").starts_with("+OK"));
        assert_eq!(
            std::fs::read(dir.path().join("mail/alice")).unwrap(),
            original
        );
        assert!(
            server.log().contains("interrupted delivery"),
            "{}",
            server.log()
        );
    }
}

#[test]
fn mail_another_agent_appended_after_a_killed_delivery_is_kept() {
    let original = mbox(&[b"Subject: one\n\nfirst\n"]);
    let dir = mail_dir(USERS, &[("alice", &original)]);
    kill_a_delivery_midway(dir.path());
    // An agent that knows nothing of the note breaks the stale dotlock and appends.
    let path = dir.path().join("mail/alice");
    std::fs::remove_file(dir.path().join("mail/alice.lock")).unwrap();
    let other = b"\n\nFrom mta@example.com Thu Nov 26 09:00:00 2026\nSubject: mta\n\nkeep me\n\n";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(other).unwrap();
    drop(f);
    let before = std::fs::read(&path).unwrap();
    let (code, err) = deliver(dir.path(), "alice", &[], b"Subject: next\n\nok\n");
    assert_eq!(code, 0, "{err}");
    let now = std::fs::read(&path).unwrap();
    assert_eq!(&now[..before.len()], &before[..], "bytes were dropped");
    assert!(!dir.path().join("mail/alice.poplar-append").exists());
}

#[test]
fn a_delivery_waiting_while_the_mailbox_is_replaced_by_rename_lands_in_the_new_file() {
    let dir = mail_dir(USERS, &[("alice", &mbox(&[b"Subject: old\n\nold\n"]))]);
    let path = dir.path().join("mail/alice");
    let lock = dir.path().join("mail/alice.lock");
    // A mail reader holds the dotlock (a live process of this host: the test itself).
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    std::fs::write(&lock, format!("{} {}\n", std::process::id(), host.trim())).unwrap();
    let mut child = spawn_deliver(dir.path());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: new\n\nnew mail\n").unwrap();
    drop(stdin);
    // Give the delivery time to open the old file and wait for the lock.
    std::thread::sleep(Duration::from_millis(300));
    let rewritten = mbox(&[b"Subject: old\nStatus: RO\n\nold\n"]);
    let tmp = dir.path().join("mail/alice.tmp");
    std::fs::write(&tmp, &rewritten).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    std::fs::remove_file(&lock).unwrap();
    assert!(child.wait().unwrap().success());
    let now = std::fs::read(&path).unwrap();
    assert_eq!(&now[..rewritten.len()], &rewritten[..]);
    assert!(
        now.ends_with(b"Subject: new\n\nnew mail\n\n"),
        "the delivery went to the replaced file: {:?}",
        String::from_utf8_lossy(&now)
    );
}

#[test]
fn a_mailbox_replaced_by_rename_during_a_session_refuses_retr_and_quit() {
    let original = mbox(&[b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond\n"]);
    let dir = mail_dir(USERS, &[("alice", &original)]);
    let path = dir.path().join("mail/alice");
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    let rewritten = mbox(&[
        b"Subject: one\nStatus: RO\n\nfirst\n",
        b"Subject: two\n\nsecond\n",
    ]);
    let tmp = dir.path().join("mail/alice.tmp");
    std::fs::write(&tmp, &rewritten).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let r = c.cmd("RETR 2");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    let r = c.cmd("QUIT");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert_eq!(std::fs::read(&path).unwrap(), rewritten);
}

#[test]
fn a_delivery_killed_during_a_session_is_not_carried_over_by_its_commit() {
    let original = mbox(&[b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond\n"]);
    let dir = mail_dir(USERS, &[("alice", &original)]);
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    kill_a_delivery_midway(dir.path());
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let want = mbox(&[b"Subject: two\n\nsecond\n"]);
    assert_eq!(std::fs::read(dir.path().join("mail/alice")).unwrap(), want);
    assert!(!dir.path().join("mail/alice.poplar-append").exists());
}

#[test]
fn a_same_length_rewrite_with_its_mtime_restored_deletes_nothing() {
    let tail = "the same tail line\n".repeat(200);
    let one = format!("Subject: one\n\nfirst {}\n", "x".repeat(40));
    let two = format!("Subject: two\n\nsecond {}\n", "y".repeat(40));
    let three = format!("Subject: three\n\n{tail}");
    let original = mbox(&[one.as_bytes(), two.as_bytes(), three.as_bytes()]);
    let dir = mail_dir(USERS, &[("alice", &original)]);
    let path = dir.path().join("mail/alice");
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    // A mail reader moves 11 octets from message 2 into message 1 (so message 2 starts 11
    // octets later), at the same length, and puts the old mtime back.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let one2 = format!("Subject: one\n\nfirst {}\n", "x".repeat(51));
    let two2 = format!("Subject: two\n\nsecond {}\n", "y".repeat(29));
    let rewritten = mbox(&[one2.as_bytes(), two2.as_bytes(), three.as_bytes()]);
    assert_eq!(rewritten.len(), original.len());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &rewritten, 0).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    let r = c.cmd("QUIT");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert_eq!(std::fs::read(&path).unwrap(), rewritten);
}
