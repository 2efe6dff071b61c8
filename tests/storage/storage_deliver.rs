//! `poplar deliver`: From_ line, quoting, separation, sysexits codes, and bodies full of
//! `From ` and `.` lines retrieved byte-exact by a real client (python3 poplib).

use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir, poplib_retrieve};

const USERS: &str = "alice:{PLAIN}pw\n";

const TRICKY: &[&[u8]] = &[
    b"Subject: one\n\nFrom the start of a line\n.\n..\n.leading dot\n>From quoted\n>>From twice\n\nFrom after a blank line\nFrom\n",
    b"Subject: two\n\n.\n\nFrom \n\n\n>From\n",
    b"Subject: three\n\nno final newline, then From lines:\nFrom x",
];

#[test]
fn delivered_bodies_full_of_from_and_dot_lines_come_back_byte_exact() {
    let dir = mail_dir(USERS, &[]);
    for m in TRICKY {
        assert_eq!(
            deliver(dir.path(), "alice", &["-f", "a@example.com"], m).0,
            0
        );
    }
    let stored = std::fs::read(dir.path().join("mail/alice")).unwrap();
    assert!(stored.starts_with(b"From a@example.com "));
    assert!(stored.ends_with(b"From x\n\n"), "a final blank line");
    let server = ServerProcess::spawn(dir.path(), &["--mbox-unquote"], &[]);
    let got = poplib_retrieve(server.addr, "alice", "pw");
    let want: Vec<Vec<u8>> = TRICKY
        .iter()
        .map(|m| {
            let mut m = m.to_vec();
            if !m.ends_with(b"\n") {
                m.push(b'\n');
            }
            m
        })
        .collect();
    assert_eq!(got, want);
    drop(server);
    // Without unquoting the stored (quoted) bytes are served, as Dovecot and popa3d do.
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let got = poplib_retrieve(server.addr, "alice", "pw");
    assert!(got[0].starts_with(b"Subject: one\n\n>From the start of a line\n.\n..\n"));
    assert!(
        got[0].ends_with(b"\n>>From quoted\n>>>From twice\n\n>From after a blank line\nFrom\n")
    );
}

#[test]
fn delivery_exit_codes_follow_sysexits_and_failures_leave_the_mbox_alone() {
    let dir = mail_dir(USERS, &[("alice", b"From x\n\nold\n\n")]);
    let path = dir.path().join("mail/alice");
    assert_eq!(
        deliver(dir.path(), "alice", &[], b"").0,
        65,
        "empty message"
    );
    assert_eq!(
        deliver(dir.path(), "../etc", &[], b"x\n").0,
        67,
        "bad user name"
    );
    let (code, _) = deliver(dir.path().join("nowhere").as_path(), "alice", &[], b"x\n");
    assert_eq!(code, 67, "no mailbox directory");
    assert_eq!(deliver(dir.path(), "alice", &["--bogus"], b"x\n").0, 64);
    // A live dotlock (this test process) makes the delivery give up in time with 75.
    let lock = dir.path().join("mail/alice.lock");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(&lock, format!("{} {}\n", std::process::id(), host.trim())).unwrap();
    let (code, err) = deliver(dir.path(), "alice", &["--lock-timeout", "0.2"], b"x\n");
    assert_eq!(code, 75, "{err}");
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"From x\n\nold\n\n");
    assert_eq!(deliver(dir.path(), "alice", &[], b"S: 1\n\nnew\n").0, 0);
    assert!(
        std::fs::read(&path)
            .unwrap()
            .ends_with(b"\nS: 1\n\nnew\n\n")
    );
}

#[test]
fn a_delivery_that_runs_out_of_space_is_truncated_away_with_75() {
    let dir = mail_dir(USERS, &[]);
    let mail = dir.path().join("mail");
    let tmpfs = crate::Tmpfs::mount(&mail, 256 * 1024);
    // Where this process may not mount a tmpfs, the failure is injected instead.
    let env: &[(&str, &str)] = if tmpfs.is_some() {
        &[]
    } else {
        &[("POPLAR_FAULT", "enospc:deliver")]
    };
    let path = mail.join("alice");
    std::fs::write(&path, b"From x\n\nold\n\n").unwrap();
    let big = vec![b'y'; 400 * 1024];
    let code = deliver_env(dir.path(), &big, env);
    let after = std::fs::read(&path).unwrap();
    drop(tmpfs);
    assert_eq!(code, 75);
    assert_eq!(after, b"From x\n\nold\n\n");
}

fn deliver_env(dir: &std::path::Path, message: &[u8], env: &[(&str, &str)]) -> i32 {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(crate::poplar_bin_with(env));
    cmd.arg("deliver")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .arg("alice")
        .stdin(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(message);
    drop(stdin);
    child.wait().unwrap().code().unwrap_or(-1)
}

/// The From_ line `poplar deliver` wrote last in `mbox`.
fn last_from_line(mbox: &std::path::Path) -> String {
    let stored = std::fs::read(mbox).unwrap();
    let text = String::from_utf8(stored).unwrap();
    text.lines()
        .rfind(|l| l.starts_with("From "))
        .unwrap()
        .to_owned()
}

#[test]
fn bounces_and_any_sender_are_delivered_with_a_safe_from_line() {
    use std::os::unix::ffi::OsStrExt;
    let dir = mail_dir(USERS, &[]);
    let path = dir.path().join("mail/alice");
    let long = "x".repeat(3000);
    let cases: &[(&[u8], &str)] = &[
        (b"", "MAILER-DAEMON"),
        (b"<>", "MAILER-DAEMON"),
        (
            "j\u{f6}rg@b\u{fc}ro.example".as_bytes(),
            "j\\xc3\\xb6rg@b\\xc3\\xbcro.example",
        ),
        (b"\"john doe\"@example.com", "\"john\\x20doe\"@example.com"),
        (b"a\tb\rc\nFrom x@y", "a\\x09b\\x0dc\\x0aFrom\\x20x@y"),
        // Not UTF-8 at all, as an MTA may pass it on.
        (b"\xe9t\xe9@example.com", "\\xe9t\\xe9@example.com"),
    ];
    for (i, (sender, shown)) in cases.iter().enumerate() {
        let (code, err) = deliver_os(dir.path(), std::ffi::OsStr::from_bytes(sender), i);
        assert_eq!(code, 0, "{sender:?}: {err}");
        let line = last_from_line(&path);
        let rest = line
            .strip_prefix(&format!("From {shown} "))
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(rest.len(), 24, "an asctime date ends the line: {line}");
    }
    let (code, err) = deliver_os(dir.path(), std::ffi::OsStr::new(&long), cases.len());
    assert_eq!(code, 0, "{err}");
    let line = last_from_line(&path);
    assert!(
        line.len() < 600 && line.contains("xxx... "),
        "{}",
        line.len()
    );
    // Every message is there, one each, whole.
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let got = poplib_retrieve(server.addr, "alice", "pw");
    assert_eq!(got.len(), cases.len() + 1);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, format!("Subject: {i}\n\nbody\n").as_bytes());
    }
}

/// Runs `poplar deliver -f SENDER alice` (the sender as raw octets) with message `n`.
fn deliver_os(dir: &std::path::Path, sender: &std::ffi::OsStr, n: usize) -> (i32, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::common::poplar_bin())
        .arg("deliver")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .arg("-f")
        .arg(sender)
        .arg("alice")
        .env_remove("POPLAR_FAULT")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A deliver that refuses early closes the pipe: its exit code tells.
    let _ = stdin.write_all(format!("Subject: {n}\n\nbody\n").as_bytes());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn deliver_refuses_user_names_that_alias_a_side_file_for_good() {
    let dir = mail_dir(USERS, &[("alice", b"")]);
    for s in poplar::mailbox::files::SUFFIXES {
        let tail = if s.ends_with(['.', '-']) {
            "4242.1"
        } else {
            ""
        };
        let name = format!("alice{s}{tail}");
        let (code, err) = deliver(dir.path(), &name, &["-f", "a@b"], b"S: 1\n\nx\n");
        assert_eq!(code, 67, "{name}: {err}");
        assert!(err.contains("permanent"), "{err}");
        assert!(!dir.path().join("mail").join(&name).exists(), "{name}");
    }
    // alice's mailbox took no harm: her delivery goes through at once.
    let (code, err) = deliver(
        dir.path(),
        "alice",
        &["--lock-timeout", "1"],
        b"S: 1\n\nx\n",
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_panic_while_delivering_is_a_temporary_failure_and_leaves_no_partial_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    let path = dir.path().join("mail/alice");
    std::fs::write(&path, b"From x\n\nold\n\n").unwrap();
    let big = vec![b'y'; 400 * 1024];
    // Panics at a write in the middle of the message: exit 75, so the MTA retries.
    let code = deliver_env(dir.path(), &big, &[("POPLAR_FAULT", "panic:deliver")]);
    assert_eq!(code, 75);
    // The retry finds the partial message and cuts it off before appending.
    assert_eq!(deliver_env(dir.path(), b"S: retried\n\nok\n", &[]), 0);
    let after = std::fs::read(&path).unwrap();
    assert!(
        after.starts_with(b"From x\n\nold\n\nFrom "),
        "{:?}",
        &after[..40]
    );
    assert!(after.ends_with(b"S: retried\n\nok\n\n"));
    assert!(
        !after.contains(&b'y'),
        "no byte of the failed delivery is left"
    );
}
