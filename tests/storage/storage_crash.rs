//! The commit is atomic against crashes and full disks: a server aborted at every step of
//! the commit (a test-only fault point, like `kill -9`), or failing with ENOSPC, leaves the
//! mailbox as before or as after, byte-exact with UIDs unchanged, once poplar starts again;
//! mail appended after the crash is kept.

use std::io::Write;

use crate::common::mbox;
use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir, uidl};

const USERS: &str = "alice:{PLAIN}pw\n";

/// Six messages of about 30 KiB, so the journaled region spans several chunks.
fn messages() -> Vec<Vec<u8>> {
    (0..6)
        .map(|i| {
            let mut m = format!("Subject: m{i}\n\n").into_bytes();
            for l in 0..1000 {
                m.extend_from_slice(format!("message {i} line {l:04} ....\n").as_bytes());
            }
            m
        })
        .collect()
}

/// Every message's (UID, body) as a session sees it.
fn contents(server: &ServerProcess) -> Vec<(String, Vec<u8>)> {
    let mut c = server.connect();
    c.login("alice", "pw");
    let uids = uidl(&mut c);
    let out = (1..=uids.len())
        .map(|i| (uids[i - 1].clone(), c.multi(&format!("RETR {i}"))))
        .collect();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    out
}

/// Logs in, deletes messages 2 and 4, and QUITs into the fault.
fn crash_at(dir: &std::path::Path, step: &str) {
    let server = ServerProcess::spawn(dir, &[], &[("POPLAR_FAULT", step)]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("DELE 4").starts_with("+OK"));
    c.send_raw(b"QUIT\r\n");
    let rest = c.rest();
    assert!(rest.is_empty(), "{step}: the server answered {rest:?}");
    assert!(server.wait_for_crash(), "{step}: the server did not abort");
}

const STEPS: &[(&str, bool)] = &[
    ("journal-partial", false),
    ("journal-written", true),
    ("apply-partial", true),
    ("applied", true),
    ("truncated", true),
    ("state-marked", true),
    ("journal-removed", true),
];

#[test]
fn a_crash_at_every_commit_step_recovers_to_before_or_after() {
    let msgs = messages();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for (n, &(step, committed)) in STEPS.iter().enumerate() {
        let dir = mail_dir(USERS, &[("alice", &mbox(&refs))]);
        let before = contents(&ServerProcess::spawn(dir.path(), &[], &[]));
        let after: Vec<_> = [0, 2, 4, 5].iter().map(|&i| before[i].clone()).collect();
        crash_at(dir.path(), step);
        let want = if committed { after } else { before };
        // Half the time a delivery comes first (it replays the journal itself), half the
        // time the restarted server finds the journal at start-up.
        let delivered = n % 2 == 1;
        if delivered {
            let (code, err) = deliver(dir.path(), "alice", &[], b"Subject: late\n\nlate mail\n");
            assert_eq!(code, 0, "{step}: {err}");
        }
        let server = ServerProcess::spawn(dir.path(), &[], &[]);
        let mut got = contents(&server);
        if delivered {
            let (_, late) = got.pop().unwrap();
            assert_eq!(late, b"Subject: late\r\n\r\nlate mail\r\n", "{step}");
        }
        assert_eq!(got, want, "{step}: not as before or after");
        assert!(
            !dir.path().join("mail/alice.poplar-journal").exists(),
            "{step}"
        );
    }
}

#[test]
fn mail_appended_by_another_agent_after_a_crash_is_kept() {
    let msgs = messages();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for step in ["applied", "truncated"] {
        let dir = mail_dir(USERS, &[("alice", &mbox(&refs))]);
        let before = contents(&ServerProcess::spawn(dir.path(), &[], &[]));
        crash_at(dir.path(), step);
        // A delivery agent that knows nothing of the journal breaks the stale dotlock and
        // appends, before poplar runs again.
        let path = dir.path().join("mail/alice");
        std::fs::remove_file(dir.path().join("mail/alice.lock")).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"From mta@example Thu Nov 26 09:00:00 2026\nSubject: mta\n\nfrom the MTA\n\n")
            .unwrap();
        drop(f);
        let got = contents(&ServerProcess::spawn(dir.path(), &[], &[]));
        let want: Vec<_> = [0, 2, 4, 5].iter().map(|&i| before[i].clone()).collect();
        assert_eq!(got.len(), 5, "{step}");
        assert_eq!(got[..4], want[..], "{step}");
        assert_eq!(got[4].1, b"Subject: mta\r\n\r\nfrom the MTA\r\n", "{step}");
    }
}

/// QUIT fails with ENOSPC while the journal is written: nothing is deleted or lost.
fn enospc_leaves_everything(dir: &std::path::Path, env: &[(&str, &str)]) {
    let before = contents(&ServerProcess::spawn(dir, &[], &[]));
    let server = ServerProcess::spawn(dir, &[], env);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    let r = c.cmd("QUIT");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    drop(server);
    assert!(!dir.join("mail/alice.poplar-journal").exists());
    assert_eq!(contents(&ServerProcess::spawn(dir, &[], &[])), before);
}

#[test]
fn running_out_of_space_during_commit_deletes_nothing() {
    let msgs = messages();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let dir = mail_dir(USERS, &[("alice", &mbox(&refs))]);
    enospc_leaves_everything(dir.path(), &[("POPLAR_FAULT", "enospc:journal")]);

    // A real full disk: a tmpfs too small for the journal of deleting message 1 (where this
    // process may mount one; the injected error above runs everywhere).
    let dir = mail_dir(USERS, &[]);
    let mail = dir.path().join("mail");
    let size = mbox(&refs).len() + mbox(&refs).len() / 2;
    let Some(_tmpfs) = crate::Tmpfs::mount(&mail, size) else {
        eprintln!("not root: ENOSPC tested by injection only");
        return;
    };
    std::fs::write(mail.join("alice"), mbox(&refs)).unwrap();
    enospc_leaves_everything(dir.path(), &[]);
}

#[test]
fn a_journal_for_bytes_a_mail_reader_has_since_removed_is_set_aside() {
    let msgs = messages();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let dir = mail_dir(USERS, &[("alice", &mbox(&refs))]);
    crash_at(dir.path(), "applied");
    // While poplar is down a mail reader breaks the stale dotlock and empties the mailbox.
    std::fs::remove_file(dir.path().join("mail/alice.lock")).unwrap();
    let path = dir.path().join("mail/alice");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("STAT").starts_with("+OK 0 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"",
        "the journal wrote past the end"
    );
    assert!(
        server.log().contains("not applied, kept as"),
        "{}",
        server.log()
    );
}
