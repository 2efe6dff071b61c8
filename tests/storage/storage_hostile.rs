//! Sidecar files planted by another local user: symlinks are never followed, and a journal
//! or index owned by someone else is never believed, so nothing is written through them and
//! no mail is lost.

use std::os::unix::fs::MetadataExt;

use crate::common::mbox;
use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir};

const USERS: &str = "alice:{PLAIN}pw\n";
const NOBODY: u32 = 65534;

fn two() -> Vec<u8> {
    mbox(&[b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond\n"])
}

#[test]
fn symlinked_sidecars_are_never_written_through() {
    let dir = mail_dir(USERS, &[("alice", &two())]);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    for sidecar in [".poplar-journal", ".poplar-append", ".poplar-index.tmp"] {
        let link = dir.path().join(format!("mail/alice{sidecar}"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let mut c = server.connect();
        assert!(c.cmd("USER alice").starts_with("+OK"));
        let r = c.cmd("PASS pw");
        if r.starts_with("+OK") {
            assert!(c.cmd("DELE 1").starts_with("+OK"));
            let _ = c.cmd("QUIT");
        }
        let (code, _) = deliver(dir.path(), "alice", &[], b"Subject: new\n\nnew\n");
        // Without its note or past a journal it cannot read, a delivery waits (75).
        let refused = sidecar != ".poplar-index.tmp";
        assert_eq!(code != 0, refused, "{sidecar}: delivery exit code {code}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{sidecar}");
        let _ = std::fs::remove_file(&link);
    }
    let mbox_now = std::fs::read(dir.path().join("mail/alice")).unwrap();
    let text = String::from_utf8_lossy(&mbox_now);
    assert!(text.contains("Subject: two\n\nsecond\n\n"), "{text}");
    assert!(text.ends_with("Subject: new\n\nnew\n\n"), "{text}");
}

fn chown_nobody(path: &std::path::Path) -> bool {
    std::process::Command::new("chown")
        .arg(NOBODY.to_string())
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
        && std::fs::metadata(path).unwrap().uid() == NOBODY
}

#[test]
fn a_journal_owned_by_another_user_is_never_applied() {
    let dir = mail_dir(USERS, &[("alice", &two())]);
    // A real journal, left by a crash right after it was written.
    let server = ServerProcess::spawn(dir.path(), &[], &[("POPLAR_FAULT", "journal-written")]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    c.send_raw(b"QUIT\r\n");
    c.rest();
    assert!(server.wait_for_crash());
    let journal = dir.path().join("mail/alice.poplar-journal");
    if !chown_nobody(&journal) {
        eprintln!("cannot chown (not root): skipped");
        return;
    }
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    assert!(c.cmd("USER alice").starts_with("+OK"));
    let r = c.cmd("PASS pw");
    assert!(r.starts_with("-ERR [SYS/"), "{r}");
    assert_eq!(std::fs::read(dir.path().join("mail/alice")).unwrap(), two());
    assert!(
        server.log().contains("journal not made by poplar"),
        "{}",
        server.log()
    );
}

#[test]
fn an_index_owned_by_another_user_is_not_believed() {
    let dir = mail_dir(USERS, &[("alice", &two())]);
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    let before = crate::uidl(&mut c);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let index = dir.path().join("mail/alice.poplar-index");
    if !chown_nobody(&index) {
        eprintln!("cannot chown (not root): skipped");
        return;
    }
    let mut c = server.connect();
    c.login("alice", "pw");
    let after = crate::uidl(&mut c);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(after.len(), 2);
    assert_ne!(before, after, "a foreign index gave the UIDs");
    assert_ne!(std::fs::metadata(&index).unwrap().uid(), NOBODY);
}

#[test]
fn a_delivery_note_planted_by_another_user_truncates_nothing() {
    let dir = mail_dir(USERS, &[("alice", &two())]);
    let path = dir.path().join("mail/alice");
    let meta = std::fs::metadata(&path).unwrap();
    // A note that would cut the last message (a dead pid of this host).
    let last = two().windows(6).rposition(|w| w == b"\nFrom ").unwrap() as u64 + 1;
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let note = dir.path().join("mail/alice.poplar-append");
    let text = format!(
        "poplar-append 1 {} {} {last} {dead} {}\n",
        meta.dev(),
        meta.ino(),
        host.trim()
    );
    std::fs::write(&note, text).unwrap();
    if !chown_nobody(&note) {
        eprintln!("cannot chown (not root): skipped");
        return;
    }
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("STAT").starts_with("+OK 2 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(std::fs::read(&path).unwrap(), two());
}
