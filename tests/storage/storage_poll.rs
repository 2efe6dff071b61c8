//! A poll that changes nothing writes nothing: USER, PASS, STAT, UIDL, QUIT on a mailbox its
//! index knows leaves the mail directory, the mbox and every sidecar as they were, and makes
//! no system call that could change them (counted with strace).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::common::{Client, mbox};
use crate::{ServerProcess, mail_dir};

const USERS: &str = "alice:{PLAIN}pw\n";

fn messages() -> Vec<u8> {
    mbox(&[
        b"Subject: one\n\nfirst\n",
        b"Subject: two\n\nsecond\nFrom the body\n",
        b"Subject: three\n\nthird\n",
    ])
}

fn poll(c: &mut Client) {
    c.login("alice", "pw");
    assert!(c.cmd("STAT").starts_with("+OK "));
    c.multi("UIDL");
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

/// The mail directory's mtime and, for each file in it, its inode, ctime and mtime.
type Times = ((i64, i64), BTreeMap<String, (u64, i64, i64, i64, i64)>);

fn times(mail: &Path) -> Times {
    let d = std::fs::metadata(mail).unwrap();
    let files = std::fs::read_dir(mail)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (
                name,
                (
                    m.ino(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.mtime(),
                    m.mtime_nsec(),
                ),
            )
        })
        .collect();
    ((d.mtime(), d.mtime_nsec()), files)
}

/// Polls `count` times and checks that nothing in `mail` changed.
fn polls_change_nothing(server: &ServerProcess, mail: &Path, count: usize, what: &str) {
    let before = times(mail);
    // File times tick at the kernel's clock; a change after this pause cannot look the same.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..count {
        poll(&mut server.connect());
    }
    let after = times(mail);
    assert_eq!(
        before.0, after.0,
        "{what}: the mail directory's mtime changed"
    );
    assert_eq!(
        before.1, after.1,
        "{what}: a file was made, removed or changed"
    );
}

#[test]
fn a_poll_of_an_unchanged_mailbox_leaves_every_file_and_the_directory_untouched() {
    let dir = mail_dir(USERS, &[("alice", &messages())]);
    let mail = dir.path().join("mail");
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    // The first login indexes the mailbox: that is a write.
    poll(&mut server.connect());
    polls_change_nothing(&server, &mail, 3, "an indexed mailbox");

    // Mail that arrives is indexed by the next login; the polls after it write nothing.
    let mut grown = messages();
    grown.extend_from_slice(&mbox(&[b"Subject: four\n\nfourth\n"]));
    std::fs::OpenOptions::new()
        .append(true)
        .open(mail.join("alice"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, &grown[messages().len()..]))
        .unwrap();
    poll(&mut server.connect());
    polls_change_nothing(&server, &mail, 2, "a grown mailbox, indexed again");

    // A client that deleted everything leaves an empty mailbox: polling it writes nothing.
    let mut c = server.connect();
    c.login("alice", "pw");
    for i in 1..=4 {
        assert!(c.cmd(&format!("DELE {i}")).starts_with("+OK"));
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
    polls_change_nothing(&server, &mail, 2, "an emptied mailbox");
    let mut c = server.connect();
    c.login("alice", "pw");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
}

/// Whether strace can trace a child here (installed by `make deps`; a container may forbid
/// ptrace). Prints why not.
fn strace_works() -> bool {
    let ok = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: strace is missing or cannot trace here (make deps installs it)");
    }
    ok
}

/// Ends the poplar process that `server`'s strace runs, and strace with it.
fn stop_traced(mut server: ServerProcess) {
    let strace = server.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).unwrap();
    for pid in children.split_whitespace() {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
    server.child.wait().unwrap();
}

/// System calls that change a file or a directory when they touch one.
const CHANGING: &[&str] = &[
    "creat",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "symlink",
    "symlinkat",
    "truncate",
    "ftruncate",
    "fallocate",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "fsync",
    "fdatasync",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "fchownat",
    "utimensat",
];

#[test]
fn a_poll_makes_no_system_call_that_changes_the_mail_directory() {
    if !strace_works() {
        return;
    }
    let dir = mail_dir(USERS, &[("alice", &messages())]);
    let mail = dir.path().join("mail");
    let warm = ServerProcess::spawn(dir.path(), &[], &[]);
    poll(&mut warm.connect());
    drop(warm);

    let trace = dir.path().join("trace");
    let trace_arg = trace.to_str().unwrap();
    // -y names each descriptor's file, so a write through one shows where it goes.
    let wrapper = ["strace", "-f", "-qq", "-y", "-o", trace_arg];
    let server = ServerProcess::spawn_under(&wrapper, dir.path(), &[], &[]);
    poll(&mut server.connect());
    stop_traced(server);

    let text = std::fs::read_to_string(&trace).unwrap();
    let mail = mail.to_str().unwrap();
    let alice = format!("{mail}/alice");
    // The session's thread is the one that opened the mailbox.
    let tid = text
        .lines()
        .find(|l| l.contains(&format!("\"{alice}\"")))
        .and_then(|l| l.split_whitespace().next())
        .expect("the mailbox was opened")
        .to_owned();
    let session: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(&tid))
        .map(|l| l[tid.len()..].trim_start())
        .collect();
    let name = |l: &str| l.split('(').next().unwrap_or("").to_owned();
    let in_mail: Vec<&str> = session
        .iter()
        .copied()
        .filter(|l| l.contains(mail))
        .collect();
    for l in &in_mail {
        assert!(!CHANGING.contains(&name(l).as_str()), "a change: {l}");
        assert!(!l.contains("O_CREAT"), "a file made: {l}");
        assert!(
            !(l.starts_with("open") && l.contains("= -1")),
            "an open that failed: {l}"
        );
    }
    assert!(
        !session.iter().any(|l| name(l).starts_with("readlink")),
        "a path resolved: {:?}",
        session
            .iter()
            .filter(|l| l.starts_with("readlink"))
            .collect::<Vec<_>>()
    );
    // Open the mbox, the session lock and the index; lock, check and read; no more.
    let opens = in_mail.iter().filter(|l| l.starts_with("open")).count();
    assert_eq!(opens, 3, "{in_mail:#?}");
    assert!(in_mail.len() <= 24, "{} calls: {in_mail:#?}", in_mail.len());
}
