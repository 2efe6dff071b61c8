//! The developer's and operator's tools through the real binary: `poplar seed` (from .eml
//! files, directories and mboxes, retrieved byte-exact by python3 poplib), `--dev-keep-deleted`
//! (and a crash between keeping and committing), `--dev` with storage flags, `poplar check` on
//! clean, garbled, locked and half-committed mailboxes, and `--inetd` leaving other users'
//! mailboxes alone.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{Client, poplar_bin};
use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir, poplar_bin_with, poplib_retrieve, uidl};

const USERS: &str = "alice:{PLAIN}pw\nbob:{PLAIN}pw\n";

const MESSAGES: &[&[u8]] = &[
    b"Subject: one\n\nFrom the start of a line\n.\n..\n>From quoted\n>>From twice\n\nFrom after a blank line\n",
    b"Subject: two\r\n\r\ncrlf body\r\n.\r\n",
    b"Subject: three\n\nno final newline\nFrom x",
    b"Subject: four\n\n\n>From\n",
    b"Subject: five\n\nplain\n",
];

/// A message as a client gets it back: its lines, each ended by LF.
fn as_retrieved(m: &[u8]) -> Vec<u8> {
    let mut m = m.to_vec();
    if !m.ends_with(b"\n") {
        m.push(b'\n');
    }
    m
}

/// Runs `poplar ARGS`; returns the exit code, stdout and stderr.
fn poplar(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(poplar_bin_with(env))
        .args(args)
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `poplar --dev DIR --dev-any-password` with `extra` flags, as its own process.
struct DevServer {
    child: Child,
    addr: SocketAddr,
}

impl DevServer {
    fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> DevServer {
        let mut child = Command::new(poplar_bin_with(env))
            .arg("--dev")
            .arg(dir)
            .args(["--dev-any-password", "--listen", "127.0.0.1:0"])
            .args(["--auth-delay", "0"])
            .args(extra)
            .env_remove("POPLAR_FAULT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "no listening line");
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                break a.parse().unwrap();
            }
        };
        DevServer { child, addr }
    }

    fn connect(&self, user: &str) -> Client {
        let mut c = Client::connect(self.addr);
        c.greeting = c.line();
        c.login(user, "any");
        c
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of .eml files `m0.eml`... for `MESSAGES[range]`, plus a file seed must skip.
fn eml_dir(root: &Path, name: &str, which: &[usize]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    for &i in which {
        std::fs::write(dir.join(format!("m{i}.eml")), MESSAGES[i]).unwrap();
    }
    std::fs::write(dir.join("README.txt"), b"not a message\n").unwrap();
    dir
}

#[test]
fn deliver_then_seed_from_eml_files_a_directory_and_an_mbox_retrieves_byte_exact() {
    let dir = mail_dir(USERS, &[]);
    let mail = format!("{}/mail/%n", dir.path().display());
    // alice gets message 0 from deliver; bob's mbox (messages 3 and 4) becomes a source.
    assert_eq!(
        deliver(dir.path(), "alice", &["-f", "a@example.com"], MESSAGES[0]).0,
        0
    );
    for i in [3, 4] {
        assert_eq!(
            deliver(dir.path(), "bob", &["-f", "b@example.com"], MESSAGES[i]).0,
            0
        );
    }
    let emls = eml_dir(dir.path(), "emls", &[1, 2]);
    let single = dir.path().join("single.eml");
    std::fs::write(&single, MESSAGES[4]).unwrap();
    let bob = dir.path().join("mail/bob");
    let (code, out, err) = poplar(
        &[
            "seed",
            "--mail",
            &mail,
            "--to",
            "alice",
            s(&emls),
            s(&bob),
            s(&single),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5 messages added"), "{out}");
    let stored = std::fs::read(dir.path().join("mail/alice")).unwrap();
    assert_eq!(
        stored
            .windows(20)
            .filter(|w| w.starts_with(b"\nFrom b@example.com "))
            .count(),
        2,
        "the source mbox's From_ lines are kept"
    );
    let server = ServerProcess::spawn(dir.path(), &["--mbox-unquote"], &[]);
    let got = poplib_retrieve(server.addr, "alice", "pw");
    let want: Vec<Vec<u8>> = [0, 1, 2, 3, 4, 4]
        .iter()
        .map(|&i| as_retrieved(MESSAGES[i]))
        .collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // poplib drops the CR of CRLF lines: compare with LF line ends.
        let w: Vec<u8> = w.iter().copied().filter(|&b| b != b'\r').collect();
        assert_eq!(
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(&w),
            "message {}",
            i + 1
        );
    }
}

#[test]
fn seed_refuses_bad_sources_and_usage_with_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = dir.path().join("boxes");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let ok = dir.path().join("ok.eml");
    std::fs::write(&ok, MESSAGES[4]).unwrap();
    let missing = dir.path().join("missing.eml");
    let dev = s(&boxes);
    // A source that fails stops the seed; what came before it stays.
    let (code, out, err) = poplar(
        &["seed", "--dev", dev, "--to", "u", s(&ok), s(&missing)],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("missing.eml"), "{err}");
    assert!(out.contains("1 message added"), "{out}");
    let (code, _, err) = poplar(&["seed", "--dev", dev, "--to", "u", s(&empty)], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no .eml files"), "{err}");
    for bad in [
        &["seed", "--to", "u", s(&ok)][..],
        &["seed", "--dev", dev, s(&ok)],
        &["seed", "--dev", dev, "--to", "u"],
        &["seed", "--dev", dev, "--to", "../x", s(&ok)],
    ] {
        let (code, _, err) = poplar(bad, &[]);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
    let stored = std::fs::read(boxes.join("u")).unwrap();
    assert!(
        stored.starts_with(b"From MAILER-DAEMON "),
        "the deliver envelope"
    );
    assert!(
        stored.ends_with(b"\nSubject: five\n\nplain\n\n"),
        "one message only"
    );
}

/// Seeds `user` in a dev directory with `MESSAGES[0..4]` from a directory of .eml files.
fn seeded_dev_dir(root: &Path, user: &str) -> PathBuf {
    let boxes = root.join("boxes");
    let emls = eml_dir(root, "emls", &[0, 1, 2, 3]);
    let (code, _, err) = poplar(&["seed", "--dev", s(&boxes), "--to", user, s(&emls)], &[]);
    assert_eq!(code, 0, "{err}");
    boxes
}

/// The messages of an mbox file as poplar scans it: each from its From_ line on.
fn split_mbox(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut starts: Vec<usize> = vec![0];
    for i in 0..bytes.len() {
        if bytes[i..].starts_with(b"\n\nFrom ") {
            starts.push(i + 2);
        }
    }
    starts.push(bytes.len());
    starts
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

#[test]
fn keep_deleted_moves_deleted_messages_into_the_deleted_mbox_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = seeded_dev_dir(dir.path(), "carol");
    let before = split_mbox(&std::fs::read(boxes.join("carol")).unwrap());
    assert_eq!(before.len(), 4);
    let server = DevServer::start(&boxes, &["--dev-keep-deleted", "--mbox-unquote"], &[]);
    let mut c = server.connect("carol");
    let uids = uidl(&mut c);
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("DELE 4").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let kept = std::fs::read(boxes.join("carol.deleted")).unwrap();
    assert_eq!(
        after_from_lines(&split_mbox(&kept)),
        after_from_lines(&[before[1].clone(), before[3].clone()])
    );
    assert!(kept.starts_with(b"From MAILER-DAEMON "), "the sender kept");
    let left = std::fs::read(boxes.join("carol")).unwrap();
    assert_eq!(left, [before[0].clone(), before[2].clone()].concat());
    let mut c = server.connect("carol");
    assert_eq!(uidl(&mut c), vec![uids[0].clone(), uids[2].clone()]);
    assert_eq!(c.multi("RETR 2"), c_rlf(&as_retrieved(MESSAGES[2])));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let kept = std::fs::read(boxes.join("carol.deleted")).unwrap();
    assert_eq!(split_mbox(&kept).len(), 3, "appended, not replaced");
    // poplar check reads the .deleted file as the mbox it is.
    let (code, out, _) = poplar(&["check", s(&boxes.join("carol.deleted"))], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("messages  3 "), "{out}");
}

/// Each message without its From_ line, which a kept copy dates at its deletion.
fn after_from_lines(messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .map(|m| m[m.iter().position(|&b| b == b'\n').unwrap() + 1..].to_vec())
        .collect()
}

/// LF line ends as a POP3 client receives them: CRLF.
fn c_rlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in m.iter().enumerate() {
        if b == b'\n' && (i == 0 || m[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[test]
fn a_crash_after_keeping_before_committing_duplicates_in_deleted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = seeded_dev_dir(dir.path(), "dora");
    let original = std::fs::read(boxes.join("dora")).unwrap();
    let before = split_mbox(&original);
    let server = DevServer::start(
        &boxes,
        &["--dev-keep-deleted"],
        &[("POPLAR_FAULT", "kept-deleted")],
    );
    let mut c = server.connect("dora");
    let uids = uidl(&mut c);
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    c.send_raw(b"QUIT\r\n");
    assert!(c.rest().is_empty(), "the server answered before crashing");
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(!status.success(), "the server did not abort");
    // Kept and synced, but the commit never ran: the maildrop is whole.
    assert_eq!(std::fs::read(boxes.join("dora")).unwrap(), original);
    assert_eq!(
        after_from_lines(&split_mbox(
            &std::fs::read(boxes.join("dora.deleted")).unwrap()
        )),
        after_from_lines(&before[1..2])
    );
    let server = DevServer::start(&boxes, &["--dev-keep-deleted"], &[]);
    let mut c = server.connect("dora");
    assert_eq!(uidl(&mut c), uids, "UIDs unchanged by the crash");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(
        after_from_lines(&split_mbox(
            &std::fs::read(boxes.join("dora.deleted")).unwrap()
        )),
        after_from_lines(&[before[1].clone(), before[1].clone()]),
        "at worst a duplicate in .deleted"
    );
    let left = split_mbox(&std::fs::read(boxes.join("dora")).unwrap());
    assert_eq!(
        left,
        vec![before[0].clone(), before[2].clone(), before[3].clone()]
    );
}

#[test]
fn dev_mode_honours_the_storage_flags() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = seeded_dev_dir(dir.path(), "erin");
    let quoted = DevServer::start(&boxes, &[], &[]);
    let mut c = quoted.connect("erin");
    let stored = c.multi("RETR 1");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    drop(quoted);
    let unquoted = DevServer::start(&boxes, &["--mbox-unquote", "--mbox-locks", "fcntl"], &[]);
    let mut c = unquoted.connect("erin");
    assert_eq!(c.multi("RETR 1"), c_rlf(MESSAGES[0]));
    assert_ne!(stored, c_rlf(MESSAGES[0]), "seed stored it quoted");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(!boxes.join("erin.deleted").exists(), "kept only when asked");
}

/// The sidecars and bytes of a mail directory, to prove a check changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                m.mtime_nsec() as u64 ^ m.mtime() as u64,
            )
        })
        .collect();
    v.sort();
    v
}

fn check(dir: &Path, user: &str) -> (i32, String) {
    let mail = format!("{}/mail/%n", dir.display());
    let (code, out, err) = poplar(&["check", "--mail", &mail, user], &[]);
    (code, out + &err)
}

#[test]
fn check_reports_a_clean_mailbox_with_the_uids_sessions_see_and_changes_nothing() {
    let dir = mail_dir(USERS, &[]);
    for m in &MESSAGES[..3] {
        assert_eq!(deliver(dir.path(), "alice", &[], m).0, 0);
    }
    let (code, out) = check(dir.path(), "alice");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(assigned at next login)"), "{out}");
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    let uids = uidl(&mut c);
    let sizes = String::from_utf8(c.multi("LIST")).unwrap();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let before = snapshot(&dir.path().join("mail"));
    let (code, out) = check(dir.path(), "alice");
    assert_eq!(code, 0, "{out}");
    assert_eq!(snapshot(&dir.path().join("mail")), before, "check wrote");
    for (i, (line, uid)) in sizes.lines().zip(&uids).enumerate() {
        let size = line.split_whitespace().nth(1).unwrap();
        let row = format!("message   {}  offset ", i + 1);
        let found = out.lines().find(|l| l.starts_with(&row)).expect(&row);
        assert!(
            found.ends_with(&format!("size {size}  uid {uid}")),
            "{found}"
        );
    }
    assert!(
        out.contains("quoting   5 '>From ' lines, sent as stored"),
        "{out}"
    );
    assert!(
        out.contains("uids      3 of 3 messages in the UID index"),
        "{out}"
    );
    assert!(out.ends_with("result    ok\n"), "{out}");
    let (code, out) = check(dir.path(), "nobody");
    assert_eq!(code, 3, "a mailbox that does not exist: {out}");
    assert!(
        out.contains("/mail/nobody: no such file (the server shows an empty maildrop"),
        "{out}"
    );
    let missing = dir.path().join("no-such-dir/alice");
    let (code, _, err) = poplar(&["check", s(&missing)], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "{}: its directory {} does not exist",
            missing.display(),
            dir.path().join("no-such-dir").display()
        )),
        "{err}"
    );
}

#[test]
fn check_reports_garbled_regions_stale_locks_and_pending_journals_with_exit_1() {
    let garbled: &[u8] = b"text before\n\nFrom a@b Thu Nov 26 09:00:00 2026\nS: 1\n\nnul\0here\n\nFrom nodate\nS: 2\n\ncut off";
    let dir = mail_dir(
        USERS,
        &[
            ("alice", garbled),
            ("bob", &crate::common::mbox(&[b"S: x\n\nx\n"])),
        ],
    );
    let (code, out) = check(dir.path(), "alice");
    assert_eq!(code, 1, "{out}");
    for want in [
        "messages  2 ",
        "problem   13 bytes before the first From_ line",
        "problem   NUL bytes: 1, the first at offset 56",
        "problem   the file does not end with a newline",
        "problem   message 2: no date in its From_ line: From nodate",
        "result    4 problems",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    assert_eq!(
        std::fs::read(dir.path().join("mail/alice")).unwrap(),
        garbled
    );

    // A dotlock left by a process that is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let lock = dir.path().join("mail/bob.lock");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(&lock, format!("{pid} {}\n", host.trim())).unwrap();
    let (code, out) = check(dir.path(), "bob");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("dotlock   stale: process {pid} is gone")),
        "{out}"
    );
    assert!(lock.exists(), "check broke the lock");
    std::fs::remove_file(&lock).unwrap();

    // A torn journal: discarded at the next login, reported until then.
    let journal = dir.path().join("mail/bob.poplar-journal");
    std::fs::write(&journal, b"PLRJRN01 torn").unwrap();
    let (code, out) = check(dir.path(), "bob");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("journal   incomplete"), "{out}");
    assert!(journal.exists());

    // A complete journal from a commit cut short by a crash.
    std::fs::remove_file(&journal).unwrap();
    let many = crate::common::mbox(&[b"S: 1\n\n1\n", b"S: 2\n\n2\n", b"S: 3\n\n3\n"]);
    std::fs::write(dir.path().join("mail/bob"), &many).unwrap();
    let server = ServerProcess::spawn(dir.path(), &[], &[("POPLAR_FAULT", "journal-written")]);
    let mut c = server.connect();
    c.login("bob", "pw");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    c.send_raw(b"QUIT\r\n");
    let _ = c.rest();
    assert!(server.wait_for_crash(), "no crash at journal-written");
    let (code, out) = check(dir.path(), "bob");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("journal   complete: an interrupted commit"),
        "{out}"
    );
    assert_eq!(std::fs::read(dir.path().join("mail/bob")).unwrap(), many);
    // The next login finishes it; then the mailbox checks clean.
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("bob", "pw");
    assert_eq!(c.cmd("STAT").split_whitespace().nth(1), Some("2"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (code, out) = check(dir.path(), "bob");
    assert_eq!(code, 0, "{out}");
}

/// A process id that no longer exists, and this host's name: what a killed writer leaves.
fn dead_pid_and_host() -> (u32, String) {
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    (pid, host.trim().to_owned())
}

#[test]
fn check_reports_a_killed_delivery_that_the_next_login_cuts_away() {
    use std::os::unix::fs::MetadataExt;
    let original = crate::common::mbox(&[b"S: 1\n\n1\n"]);
    let dir = mail_dir(USERS, &[("alice", &original)]);
    let path = dir.path().join("mail/alice");
    // What `poplar deliver` killed midway leaves: its note and part of a message.
    let meta = std::fs::metadata(&path).unwrap();
    let (pid, host) = dead_pid_and_host();
    let note = dir.path().join("mail/alice.poplar-append");
    std::fs::write(
        &note,
        format!(
            "poplar-append 1 {} {} {} {pid} {host}\n",
            meta.dev(),
            meta.ino(),
            original.len()
        ),
    )
    .unwrap();
    let partial = b"\nFrom a@b Thu Nov 26 09:00:00 2026\nSubject: cut";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(partial).unwrap();
    drop(f);
    let before = snapshot(&dir.path().join("mail"));
    let (code, out) = check(dir.path(), "alice");
    assert_eq!(code, 1, "{out}");
    let want = format!(
        "problem   a killed delivery left {} octets at {}; the next login or delivery cuts them",
        partial.len(),
        original.len()
    );
    assert!(out.contains(&want), "{want:?} in\n{out}");
    assert!(out.contains("delivery  interrupted: "), "{out}");
    assert_eq!(snapshot(&dir.path().join("mail")), before, "check wrote");

    // A note whose writer still runs (this test) is no problem: the delivery may go on.
    let meta = std::fs::metadata(&path).unwrap();
    std::fs::write(
        &note,
        format!(
            "poplar-append 1 {} {} {} {} {host}\n",
            meta.dev(),
            meta.ino(),
            original.len(),
            std::process::id()
        ),
    )
    .unwrap();
    let (code, out) = check(dir.path(), "alice");
    assert!(out.contains("may still be writing"), "{out}");
    assert!(!out.contains("killed delivery"), "{out}");
    std::fs::remove_file(&note).unwrap();
    std::fs::write(&path, &original).unwrap();
    assert_eq!(code, 1, "the partial message is still garbled: {out}");

    // The killed delivery again: the next login truncates it, then the mailbox checks clean.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(partial)
        .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    std::fs::write(
        &note,
        format!(
            "poplar-append 1 {} {} {} {pid} {host}\n",
            meta.dev(),
            meta.ino(),
            original.len()
        ),
    )
    .unwrap();
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (code, out) = check(dir.path(), "alice");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("delivery  none"), "{out}");
}

#[test]
fn check_reports_a_journal_set_aside_for_a_replaced_mailbox() {
    let many = crate::common::mbox(&[b"S: 1\n\n1\n", b"S: 2\n\n2\n"]);
    let dir = mail_dir(USERS, &[("bob", &many)]);
    let server = ServerProcess::spawn(dir.path(), &[], &[("POPLAR_FAULT", "journal-written")]);
    let mut c = server.connect();
    c.login("bob", "pw");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    c.send_raw(b"QUIT\r\n");
    let _ = c.rest();
    assert!(server.wait_for_crash(), "no crash at journal-written");
    // The mailbox is replaced by a copy (a new inode): the journal is not for it any more.
    let path = dir.path().join("mail/bob");
    let copy = dir.path().join("mail/bob.copy");
    std::fs::write(&copy, &many).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("bob", "pw");
    assert!(c.cmd("STAT").starts_with("+OK 2 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let orphan: Vec<_> = std::fs::read_dir(dir.path().join("mail"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bob.poplar-journal.orphan-"))
        .collect();
    assert_eq!(orphan.len(), 1, "{orphan:?}");
    let (code, out) = check(dir.path(), "bob");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("journal   none"), "{out}");
    let want = format!(
        "problem   a journal set aside, never applied: {}",
        dir.path().join("mail").join(&orphan[0]).display()
    );
    assert!(out.contains(&want), "{want:?} in\n{out}");
    assert!(out.ends_with("result    1 problem\n"), "{out}");
}

#[test]
fn check_usage_and_unreadable_mailboxes_have_their_own_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(poplar(&["check"], &[]).0, 2);
    assert_eq!(poplar(&["check", "a", "b"], &[]).0, 2);
    assert_eq!(poplar(&["check", "--mail", "/m/%n", "../x"], &[]).0, 2);
    let (code, _, err) = poplar(&["check", s(dir.path())], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn inetd_leaves_other_users_mailboxes_alone_and_recovers_its_own_at_login() {
    let dir = mail_dir(
        USERS,
        &[
            ("alice", &crate::common::mbox(&[b"S: 1\n\n1\n"])),
            ("bob", b""),
        ],
    );
    let bob_journal = dir.path().join("mail/bob.poplar-journal");
    let alice_journal = dir.path().join("mail/alice.poplar-journal");
    std::fs::write(&bob_journal, b"torn").unwrap();
    std::fs::write(&alice_journal, b"torn").unwrap();
    let mut child = Command::new(poplar_bin())
        .arg("--inetd")
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--users")
        .arg(dir.path().join("users"))
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.path().display()))
        .args(["--auth-delay", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"USER alice\r\nPASS pw\r\nSTAT\r\nQUIT\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("+OK 1 "), "{out}");
    assert!(!alice_journal.exists(), "the login replays its own journal");
    assert!(
        bob_journal.exists(),
        "one session touched another user's mailbox"
    );
}

#[test]
fn a_failed_copy_to_deleted_stops_the_commit_and_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = seeded_dev_dir(dir.path(), "fred");
    let original = std::fs::read(boxes.join("fred")).unwrap();
    std::fs::write(boxes.join("fred.deleted"), b"From old\n\nkept before\n\n").unwrap();
    let server = DevServer::start(
        &boxes,
        &["--dev-keep-deleted"],
        &[("POPLAR_FAULT", "enospc:keep-deleted")],
    );
    let mut c = server.connect("fred");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    let reply = c.cmd("QUIT");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    assert_eq!(std::fs::read(boxes.join("fred")).unwrap(), original);
    assert_eq!(
        std::fs::read(boxes.join("fred.deleted")).unwrap(),
        b"From old\n\nkept before\n\n"
    );
}

/// Where `text` counts one of something in the plural ("1 messages").
fn plural_of_one(text: &str) -> Option<String> {
    let nouns = [
        "message", "octet", "byte", "session", "user", "line", "problem", "socket",
    ];
    for noun in nouns {
        for (i, _) in text.match_indices(&format!("1 {noun}s")) {
            let before = text[..i].chars().next_back();
            // `messages=1 octets=19` is a key=value line, not English.
            if !before.is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '=') {
                return Some(
                    text[i.saturating_sub(40)..]
                        .lines()
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
    }
    None
}

#[test]
fn counts_of_one_read_in_the_singular() {
    let dir = mail_dir(USERS, &[]);
    let source = dir.path().join("one.mbox");
    std::fs::write(
        &source,
        b"From a@b Thu Nov 26 09:00:00 2026\nSubject: one\n\nx\n",
    )
    .unwrap();
    let mail = format!("{}/mail/%n", dir.path().display());
    let (code, seeded, err) = poplar(&["seed", "--mail", &mail, "--to", "alice", s(&source)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(seeded.contains(": 1 message\n"), "{seeded}");
    assert!(seeded.contains(": 1 message added ("), "{seeded}");

    let server = ServerProcess::spawn(dir.path(), &["--max-connections", "1"], &[]);
    let mut first = server.connect();
    let mut second = Client::connect(server.addr);
    let refused = second.line();
    assert!(refused.starts_with("-ERR"), "{refused}");
    first.login("alice", "pw");
    assert!(first.cmd("QUIT").starts_with("+OK"));
    let mut log = server.log();
    for _ in 0..100 {
        if log.contains(" refused: ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        log = server.log();
    }
    assert!(log.contains("refused: 1 session open"), "{log}");
    let (code, checked) = check(dir.path(), "alice");
    assert_eq!(code, 0, "{checked}");
    assert!(
        checked.contains("uids      1 of 1 message in the UID index"),
        "{checked}"
    );
    for text in [&seeded, &log, &checked] {
        assert_eq!(plural_of_one(text), None, "{text}");
    }
}
