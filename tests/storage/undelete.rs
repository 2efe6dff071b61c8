//! `--keep-deleted DAYS` and `poplar undelete` through the real binary: what python3 poplib
//! deletes lands byte-exact in `<mbox>.deleted`, undelete brings it back byte-exact under new
//! UIDLs, `--since` picks by the deletion date in the kept From_ lines, pruning drops what was
//! kept more than DAYS, and crashes between the steps lose nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir, poplar_bin_with, poplib_retrieve, uidl};

const USERS: &str = "alice:{PLAIN}pw\n";

const MESSAGES: &[&[u8]] = &[
    b"Subject: one\n\nFrom the start of a line\n.\n>From quoted\n>>From twice\n",
    b"Subject: two\r\n\r\ncrlf body\r\n.\r\n",
    b"Subject: three\n\nplain\n",
];

/// A mail directory whose alice got `MESSAGES` from `poplar deliver`.
fn delivered() -> tempfile::TempDir {
    let dir = mail_dir(USERS, &[]);
    for m in MESSAGES {
        assert_eq!(
            deliver(dir.path(), "alice", &["-f", "a@example.com"], m).0,
            0
        );
    }
    dir
}

/// Deletes messages `which` (1-based) with python3 poplib, then QUIT.
fn poplib_delete(server: &ServerProcess, which: &[usize]) {
    let script = format!(
        "import poplib\n\
         p = poplib.POP3('127.0.0.1', {})\n\
         p.user('alice'); p.pass_('pw')\n\
         for i in {which:?}: p.dele(i)\n\
         p.quit()\n",
        server.addr.port()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `poplar undelete --mail DIR/mail/%n ARGS alice`: exit code, stdout, stderr.
fn undelete(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(poplar_bin_with(env))
        .arg("undelete")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .args(args)
        .arg("alice")
        .env_remove("POPLAR_FAULT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The messages of an mbox, each without its From_ line and the blank line after it.
fn bodies(mbox: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for part in mbox
        .split_inclusive(|&b| b == b'\n')
        .fold(Vec::<Vec<u8>>::new(), |mut v, l| {
            if l.starts_with(b"From ") {
                v.push(Vec::new());
            } else if let Some(m) = v.last_mut() {
                m.extend_from_slice(l);
            }
            v
        })
    {
        let mut m = part;
        assert!(m.ends_with(b"\n\n"), "each message ends with a blank line");
        m.pop();
        out.push(m);
    }
    out
}

/// A From_ line date (asctime, UTC) `ago` before now, from date(1).
fn asctime_ago(ago: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", ago, "+%a %b %e %H:%M:%S %Y"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

#[test]
fn poplib_deletes_into_the_kept_mbox_and_undelete_brings_them_back_byte_exact_as_new_uidls() {
    let dir = delivered();
    let mbox = dir.path().join("mail/alice");
    let stored = bodies(&std::fs::read(&mbox).unwrap());
    let server = ServerProcess::spawn(dir.path(), &["--keep-deleted", "7"], &[]);
    let retrieved = poplib_retrieve(server.addr, "alice", "pw");
    assert_eq!(retrieved.len(), 3);
    let uids_before = uidl(&mut {
        let mut c = server.connect();
        c.login("alice", "pw");
        c
    });
    poplib_delete(&server, &[1, 3]);
    let kept = std::fs::read(dir.path().join("mail/alice.deleted")).unwrap();
    assert_eq!(bodies(&kept), vec![stored[0].clone(), stored[2].clone()]);
    assert!(
        kept.starts_with(b"From a@example.com "),
        "{}",
        String::from_utf8_lossy(&kept)
    );
    assert_eq!(
        bodies(&std::fs::read(&mbox).unwrap()),
        vec![stored[1].clone()]
    );

    let (code, out, err) = undelete(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("restored 2 messages ("), "{out}");
    assert!(out.contains("; 0 messages left in "), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("mail/alice.deleted")).unwrap(),
        b""
    );
    let again = poplib_retrieve(server.addr, "alice", "pw");
    assert_eq!(
        again,
        vec![
            retrieved[1].clone(),
            retrieved[0].clone(),
            retrieved[2].clone()
        ],
        "the restored messages come back byte-exact, after what stayed"
    );
    let mut c = server.connect();
    c.login("alice", "pw");
    let uids_after = uidl(&mut c);
    assert_eq!(
        uids_after[0], uids_before[1],
        "the message that stayed keeps its UIDL"
    );
    for restored in &uids_after[1..] {
        assert!(
            !uids_before.contains(restored),
            "a restored message has a new UIDL"
        );
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let (code, out, _) = undelete(dir.path(), &[], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("restored 0 messages (0 octets)"), "{out}");
}

#[test]
fn since_picks_by_the_deletion_date_and_a_later_commit_prunes_what_is_older_than_days() {
    let dir = delivered();
    let mbox = dir.path().join("mail/alice");
    let kept_path = dir.path().join("mail/alice.deleted");
    let old = format!(
        "From old@x {}\nSubject: old\n\nold\n\n",
        asctime_ago("10 days ago")
    );
    let week = format!(
        "From week@x {}\nSubject: week\n\nweek\n\n",
        asctime_ago("5 days ago")
    );
    let day = format!(
        "From day@x {}\nSubject: day\n\nday\n\n",
        asctime_ago("1 day ago")
    );
    std::fs::write(&kept_path, [&old[..], &week, &day].concat()).unwrap();

    let (code, out, err) = undelete(dir.path(), &["--since", "3d"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("restored 1 message ("), "{out}");
    assert!(out.contains("; 2 messages left"), "{out}");
    assert_eq!(
        std::fs::read(&kept_path).unwrap(),
        [&old[..], &week].concat().as_bytes()
    );
    assert!(
        std::fs::read(&mbox)
            .unwrap()
            .ends_with(b"\nSubject: day\n\nday\n\n")
    );
    let (code, out, _) = undelete(dir.path(), &["--since", "2999-01-01T00:00:00Z"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("restored 0 messages"), "{out}");
    let (code, _, err) = undelete(dir.path(), &["--since", "last week"], &[]);
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("--since: 'last week'"), "{err}");

    // A session that deletes commits, and the commit prunes what was kept over 7 days ago.
    let before = std::fs::read(&mbox).unwrap();
    let server = ServerProcess::spawn(dir.path(), &["--keep-deleted", "7"], &[]);
    poplib_delete(&server, &[1]);
    let kept = std::fs::read(&kept_path).unwrap();
    assert!(
        kept.starts_with(week.as_bytes()),
        "{}",
        String::from_utf8_lossy(&kept)
    );
    assert_eq!(
        bodies(&kept).len(),
        2,
        "the old one pruned, the new one kept"
    );
    assert_eq!(bodies(&kept)[1], bodies(&before)[0]);
    assert!(
        server
            .log()
            .contains("pruned 1 kept message deleted more than 7 days ago")
    );
    assert_eq!(bodies(&std::fs::read(&mbox).unwrap()), bodies(&before)[1..]);
}

#[test]
fn crashes_between_the_steps_leave_a_duplicate_at_worst_and_never_lose_a_message() {
    let dir = delivered();
    let mbox = dir.path().join("mail/alice");
    let kept_path = dir.path().join("mail/alice.deleted");
    let original = std::fs::read(&mbox).unwrap();
    let stored = bodies(&original);

    // Kept and synced, then killed before the commit: the mbox is whole.
    let server = ServerProcess::spawn(
        dir.path(),
        &["--keep-deleted", "7"],
        &[("POPLAR_FAULT", "kept-deleted")],
    );
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    c.send_raw(b"QUIT\r\n");
    assert!(server.wait_for_crash(), "the server did not abort");
    assert_eq!(std::fs::read(&mbox).unwrap(), original);
    assert_eq!(
        bodies(&std::fs::read(&kept_path).unwrap()),
        vec![stored[1].clone()]
    );

    // Appended and synced, then killed before the kept file is rewritten: in both places.
    let (code, _, _) = undelete(dir.path(), &[], &[("POPLAR_FAULT", "undeleted")]);
    assert_ne!(code, 0, "undelete did not abort");
    let now = bodies(&std::fs::read(&mbox).unwrap());
    assert_eq!(now, [&stored[..], &stored[1..2]].concat());
    assert_eq!(
        bodies(&std::fs::read(&kept_path).unwrap()),
        vec![stored[1].clone()]
    );
    assert!(!dir.path().join("mail/alice.deleted.tmp").exists());

    // A prune killed after writing the new kept file, before the rename: the old one stays.
    let old = format!(
        "From old@x {}\nSubject: old\n\nold\n\n",
        asctime_ago("30 days ago")
    );
    std::fs::write(&kept_path, &old).unwrap();
    let server = ServerProcess::spawn(
        dir.path(),
        &["--keep-deleted", "7"],
        &[("POPLAR_FAULT", "deleted-rewritten")],
    );
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    c.send_raw(b"QUIT\r\n");
    assert!(server.wait_for_crash(), "the server did not abort");
    let kept = bodies(&std::fs::read(&kept_path).unwrap());
    assert_eq!(
        kept,
        vec![b"Subject: old\n\nold\n".to_vec(), stored[0].clone()]
    );
    assert_eq!(
        bodies(&std::fs::read(&mbox).unwrap()),
        [&stored[1..], &stored[1..2]].concat(),
        "the commit itself was done before the prune"
    );
    // The next commit prunes and clears the leftover.
    let server = ServerProcess::spawn(dir.path(), &["--keep-deleted", "7"], &[]);
    poplib_delete(&server, &[1]);
    let kept = bodies(&std::fs::read(&kept_path).unwrap());
    assert_eq!(kept, vec![stored[0].clone(), stored[1].clone()]);
    assert!(!dir.path().join("mail/alice.deleted.tmp").exists());
}
