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

/// Removes the first message of the mbox at `path` in place, as a mail reader's expunge does.
fn expunge_first(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    let second = bytes.windows(7).position(|w| w == b"\n\nFrom ").unwrap() + 2;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes[second..], 0).unwrap();
    f.set_len((bytes.len() - second) as u64).unwrap();
}

#[test]
fn a_journal_for_a_mailbox_another_program_rewrote_after_the_crash_is_set_aside() {
    let msgs = messages();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for step in ["truncated", "applied"] {
        let dir = mail_dir(USERS, &[("alice", &mbox(&refs))]);
        let old_len = mbox(&refs).len();
        crash_at(dir.path(), step);
        // While poplar is down, a delivery agent breaks the stale dotlock and appends, then a
        // mail reader expunges the first message: the file ends up shorter than the journal's
        // old length, and what is at the journal's region is no longer poplar's.
        std::fs::remove_file(dir.path().join("mail/alice.lock")).unwrap();
        let path = dir.path().join("mail/alice");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"From mta@example Thu Nov 26 09:00:00 2026\nSubject: mta\n\nfrom the MTA\n\n")
            .unwrap();
        drop(f);
        expunge_first(&path);
        let left = std::fs::read(&path).unwrap();
        assert!(left.len() < old_len, "{step}");
        let server = ServerProcess::spawn(dir.path(), &[], &[]);
        let got = contents(&server);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            left,
            "{step}: the replay wrote over the mailbox"
        );
        assert_eq!(
            got.last().unwrap().1,
            b"Subject: mta\r\n\r\nfrom the MTA\r\n",
            "{step}"
        );
        let log = log_with(&server, "rewritten since");
        assert!(log.contains("rewritten since"), "{step}: {log}");
        assert!(log.contains("not applied, kept as"), "{step}: {log}");
        assert!(!dir.path().join("mail/alice.poplar-journal").exists());
        let orphans = std::fs::read_dir(dir.path().join("mail"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy()
                    .starts_with("alice.poplar-journal.orphan-")
            })
            .count();
        assert_eq!(orphans, 1, "{step}");
    }
}

/// Each step of applying a commit's journal, and whether a commit whose every try fails
/// there has still done its work: a retry reads the state mark whose sync failed and only
/// removes the journal; after the journal's removal only its durability is left (a replay
/// of it would change nothing); the index's mtime only spares the next login a read.
const APPLY_STEPS: &[(&str, bool)] = &[
    ("apply-write", false),
    ("apply-sync", false),
    ("truncate", false),
    ("truncate-sync", false),
    ("index-write", false),
    ("index-truncate", false),
    ("index-header", false),
    ("index-sync", false),
    ("state-mark", false),
    ("state-sync", true),
    ("journal-remove", false),
    ("journal-remove-sync", true),
    ("index-mtime", true),
];

/// Logs in to a server with `POPLAR_FAULT` set to `fault`, deletes messages 2 and 4, and
/// returns QUIT's reply and the server.
fn quit_with_fault(dir: &std::path::Path, fault: &str) -> (String, ServerProcess) {
    let server = ServerProcess::spawn(dir, &[], &[("POPLAR_FAULT", fault)]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("DELE 4").starts_with("+OK"));
    let reply = c.cmd("QUIT");
    (reply, server)
}

/// The server's log once it holds `needle`: lines logged before a reply may still be on
/// their way through the pipe when the reply arrives. Gives up (returning the log) after a
/// generous while, so a missing line fails the caller's assertion instead of hanging.
fn log_with(server: &ServerProcess, needle: &str) -> String {
    for _ in 0..500 {
        let log = server.log();
        if log.contains(needle) {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.log()
}

#[test]
fn running_out_of_space_while_applying_a_commit_is_answered_truthfully_and_finished_later() {
    let msgs = messages();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for &(step, done) in APPLY_STEPS {
        let dir = mail_dir(USERS, &[("alice", &mbox(&refs))]);
        let before = contents(&ServerProcess::spawn(dir.path(), &[], &[]));
        let after: Vec<_> = [0, 2, 4, 5].iter().map(|&i| before[i].clone()).collect();
        let (reply, faulty) = quit_with_fault(dir.path(), &format!("enospc:{step}"));
        if done {
            assert!(reply.starts_with("+OK"), "{step}: {reply}");
        } else {
            // The journal is complete, so the deletions are decided: the mailbox is not
            // "unchanged", and the next login finishes them.
            assert!(
                reply.starts_with("-ERR [SYS/TEMP]") && reply.contains("next login removes"),
                "{step}: {reply}"
            );
            let log = log_with(&faulty, "journal is kept");
            assert!(log.contains("journal is kept"), "{step}: {log}");
            assert!(log.contains("attempt 3 of 3"), "{step}: {log}");
            assert!(!log.contains("nothing deleted"), "{step}: {log}");
        }
        drop(faulty);
        let server = ServerProcess::spawn(dir.path(), &[], &[]);
        assert_eq!(contents(&server), after, "{step}");
        assert!(
            !dir.path().join("mail/alice.poplar-journal").exists(),
            "{step}"
        );
    }
}

#[test]
fn a_commit_whose_apply_fails_once_retries_under_its_locks_and_answers_ok() {
    let msgs = messages();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for step in [
        "apply-write",
        "truncate",
        "index-write",
        "state-mark",
        "journal-remove",
    ] {
        let dir = mail_dir(USERS, &[("alice", &mbox(&refs))]);
        let before = contents(&ServerProcess::spawn(dir.path(), &[], &[]));
        let after: Vec<_> = [0, 2, 4, 5].iter().map(|&i| before[i].clone()).collect();
        let (reply, faulty) = quit_with_fault(dir.path(), &format!("enospc-once:{step}"));
        assert!(reply.starts_with("+OK"), "{step}: {reply}");
        let log = log_with(&faulty, "attempt 1 of 3");
        assert!(log.contains("attempt 1 of 3"), "{step}: {log}");
        drop(faulty);
        assert!(
            !dir.path().join("mail/alice.poplar-journal").exists(),
            "{step}: the journal was left"
        );
        assert_eq!(
            contents(&ServerProcess::spawn(dir.path(), &[], &[])),
            after,
            "{step}"
        );
    }
}
