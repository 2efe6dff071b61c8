//! The `poplar` binary itself: flags, exit codes, start-up errors, and stopping on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Client, mbox, poplar_bin};

fn poplar(args: &[&str]) -> Output {
    Command::new(poplar_bin())
        .args(args)
        .env("POPLAR_LOG", "info")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A poplar process serving a temporary directory.
struct Running {
    child: Child,
    addr: SocketAddr,
    /// stderr lines after `listening on`, read by a helper thread.
    log: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Running {
    /// Starts poplar on 127.0.0.1:0 and waits for its `listening on ADDR` line.
    fn start(extra: &[&str]) -> Running {
        Self::start_logging("info", extra)
    }

    /// Like `start`, with `POPLAR_LOG` set to `filter`.
    fn start_logging(filter: &str, extra: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "alice:{PLAIN}secret\n").unwrap();
        std::fs::create_dir(dir.path().join("mail")).unwrap();
        std::fs::write(
            dir.path().join("mail/alice"),
            mbox(&[b"Subject: a\n\none\n", b"Subject: b\n\ntwo\n"]),
        )
        .unwrap();
        let users = dir.path().join("users");
        let mail = format!("{}/mail/%n", dir.path().display());
        let mut child = Command::new(poplar_bin())
            .args(["--listen", "127.0.0.1:0", "--users"])
            .arg(&users)
            .args(["--mail", &mail, "--auth-delay", "0"])
            .args(extra)
            .env("POPLAR_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut running = Running {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log: rx,
            dir,
        };
        let line = running.wait_for("listening on ");
        let addr = line.split("listening on ").nth(1).unwrap().trim();
        running.addr = addr.parse().unwrap();
        running
    }

    /// The next stderr line containing `needle` (within a generous deadline).
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }

    /// Every stderr line not yet read, once the process has ended.
    fn rest_of_log(&mut self) -> Vec<String> {
        self.wait();
        let mut lines = Vec::new();
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(20)) {
            lines.push(line);
        }
        lines
    }

    fn connect(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.greeting = c.line();
        assert!(c.greeting.starts_with("+OK"), "{}", c.greeting);
        c
    }

    fn mbox(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("mail/alice")).unwrap()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (within a generous deadline).
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "poplar did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn sigterm_stops_the_server_with_exit_0() {
    let mut p = Running::start(&[]);
    let mut c = p.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 2 messages left");
    p.signal("-TERM");
    p.wait_for("stopping");
    let status = p.wait();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        std::net::TcpStream::connect(p.addr).is_err(),
        "still listening"
    );
}

#[test]
fn sigint_stops_the_server_with_exit_0() {
    let mut p = Running::start(&[]);
    p.signal("-INT");
    assert_eq!(p.wait().code(), Some(0));
}

#[test]
fn a_session_cut_off_by_shutdown_commits_nothing() {
    let mut p = Running::start(&["--shutdown-grace", "0.2"]);
    let before = p.mbox();
    let mut c = p.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(c.cmd("DELE 2"), "+OK message 2 deleted");
    p.signal("-TERM");
    p.wait_for("cutting off 1 session");
    // The connection is closed under the client without a word.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut c.reader, &mut rest).unwrap();
    assert_eq!(rest, b"");
    assert_eq!(p.wait().code(), Some(0));
    assert_eq!(p.mbox(), before);
}

#[test]
fn a_session_that_quits_within_the_grace_period_commits() {
    let mut p = Running::start(&["--shutdown-grace", "20"]);
    let mut c = p.connect();
    c.login("alice", "secret");
    p.signal("-TERM");
    p.wait_for("stopped accepting; 1 session open");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 1 message left");
    assert_eq!(p.wait().code(), Some(0));
    assert_eq!(p.mbox(), mbox(&[b"Subject: b\n\ntwo\n"]));
}

#[test]
fn wrong_flags_print_the_usage_and_exit_2() {
    for args in [
        &["--bogus"][..],
        &[],
        &["--users", "u"],
        &["--users", "u", "--mail", "/m/%n", "--listen", "nowhere"],
        &["--users", "u", "--mail", "/m/%x"],
        &["--users", "u", "--mail", "/m/%n", "--idle-timeout", "0"],
        &["--users", "u", "--mail", "/m/%n", "stray"],
    ] {
        let out = poplar(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.starts_with("poplar: "), "{args:?}: {err}");
        assert!(err.contains("Usage: poplar"), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn subcommand_mistakes_name_the_subcommand_once() {
    for (args, reason) in [
        (
            &["pw", "-s", "nope"][..],
            "poplar pw: password scheme {nope} is not supported",
        ),
        (&["pw", "stray"], "poplar pw: unexpected argument 'stray'"),
    ] {
        let out = poplar(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().next(), Some(reason), "{args:?}: {err}");
    }
}

#[test]
fn an_unreadable_users_file_is_a_one_line_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-users");
    let out = poplar(&[
        "--listen",
        "127.0.0.1:0",
        "--users",
        missing.to_str().unwrap(),
        "--mail",
        "/m/%n",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("poplar: cannot read "), "{err}");
    assert!(err.contains("no-such-users"), "{err}");
}

#[test]
fn an_address_in_use_is_a_one_line_error_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:{PLAIN}secret\n").unwrap();
    let out = poplar(&[
        "--listen",
        &addr,
        "--users",
        users.to_str().unwrap(),
        "--mail",
        "/m/%n",
    ]);
    assert_eq!(out.status.code(), Some(1));
    // Start-up logs come first; the error itself is said once, on one line.
    let err = text(&out.stderr);
    let mentions: Vec<&str> = err.lines().filter(|l| l.contains("in use")).collect();
    // The OS's words are the binary's libc's: glibc says "already in use", musl "in use".
    let expected = ["Address already in use", "Address in use"]
        .map(|os| format!("poplar: cannot listen on {addr}: {os} (os error 98)"));
    assert!(
        mentions.len() == 1 && expected.iter().any(|e| e == mentions[0]),
        "{err}"
    );
}

#[test]
fn bad_lines_in_the_users_file_are_reported_and_the_server_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        "alice:{PLAIN}secret\nbroken line\nbob:{MD5}x\nalice:{PLAIN}again\n",
    )
    .unwrap();
    let mail = format!("{}/%n", dir.path().display());
    let mut child = Command::new(poplar_bin())
        .args(["--listen", "127.0.0.1:0", "--users"])
        .arg(&users)
        .args(["--mail", &mail])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let listening = line.contains("listening on");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = seen.join("\n");
    assert!(all.contains("line 2:"), "{all}");
    assert!(all.contains("line 3:") && all.contains("MD5"), "{all}");
    assert!(all.contains("1 user loaded"), "{all}");
    // A duplicate says which line is used, and that the user can log in (with it).
    assert!(
        all.contains(
            "line 4: user alice is already on line 1, which is the one used; this line is skipped"
        ),
        "{all}"
    );
    assert!(!all.contains("cannot log in"), "{all}");
}

#[test]
fn version_and_help_go_to_stdout_with_exit_0() {
    let out = poplar(&["-V"]);
    assert_eq!(out.status.code(), Some(0));
    let version = text(&out.stdout);
    let (first, rest) = version.split_once(" (").unwrap_or(("", ""));
    assert_eq!(first, format!("poplar {}", env!("CARGO_PKG_VERSION")));
    assert!(
        rest.contains("-linux-") && rest.ends_with(")\n"),
        "{version}"
    );
    for flag in ["-h", "--help"] {
        let out = poplar(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty());
        let help = text(&out.stdout);
        for f in [
            "--listen",
            "--users",
            "--mail",
            "--idle-timeout",
            "--max-connections",
            "--auth-delay",
            "--shutdown-grace",
            "--hostname",
            "--help",
            "--version",
        ] {
            assert!(help.contains(f), "{f} missing from {help}");
        }
    }
}

#[test]
fn sessions_are_logged_at_start_and_end_and_no_secret_is_ever_logged() {
    let mut p = Running::start_logging("debug", &[]);
    let mut c = p.connect();
    let peer = c.writer.local_addr().unwrap().to_string();
    let digest = poplar::auth::apop_digest("<not-this-greeting@x>", b"secret");
    for line in [
        "PASS secret",
        "USER alice",
        "PASS secret\x01",
        "pass\tsecret",
        "AUTH PLAIN AGFsaWNlAHNlY3JldA== extra",
        // authzid bob, user alice, password secret: refused before any check.
        "AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==",
        &format!("APOP alice {digest} extra"),
        &format!("APOP alice {digest}"),
        "USER alice",
        "PASS wrong-secret",
    ] {
        let want = if line.starts_with("USER") {
            "+OK"
        } else {
            "-ERR"
        };
        assert!(c.cmd(line).starts_with(want), "{line:?}");
    }
    c.login("alice", "secret");
    assert!(c.cmd("RETR 2").starts_with("+OK 19 octets"));
    c.body();
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 1 message left");
    p.signal("-TERM");
    let log = p.rest_of_log().join("\n");
    assert!(log.contains(" C: PASS ***"), "the debug trace is on: {log}");
    for secret in [
        "secret",
        "AGFsaWNlAHNlY3JldA==",
        "Ym9iAGFsaWNlAHNlY3JldA==",
        &digest,
    ] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session start"))
        .collect();
    assert_eq!(starts.len(), 1, "{log}");
    assert!(starts[0].contains(&peer), "{}", starts[0]);
    let ends: Vec<&str> = log.lines().filter(|l| l.contains("session end")).collect();
    assert_eq!(ends.len(), 1, "{log}");
    for field in [
        "user=alice",
        "reason=quit",
        "retr=1",
        "retr_octets=19",
        "dele=1",
        "dele_octets=19",
    ] {
        assert!(ends[0].contains(field), "{field} missing: {}", ends[0]);
    }
}

#[test]
fn every_listen_address_is_served_ipv4_and_ipv6() {
    let mut p = Running::start(&["--listen", "[::1]:0"]);
    let line = p.wait_for("listening on [::1]:");
    let v6: SocketAddr = line.split("listening on ").nth(1).unwrap().parse().unwrap();
    for addr in [p.addr, v6] {
        let mut c = Client::connect(addr);
        assert!(c.line().starts_with("+OK"), "{addr}");
        c.login("alice", "secret");
        assert_eq!(c.cmd("QUIT"), "+OK bye, 2 messages left");
    }
}

#[test]
fn max_connections_refuses_the_one_too_many_with_sys_temp() {
    let p = Running::start(&["--max-connections", "1"]);
    let mut first = p.connect();
    let mut second = Client::connect(p.addr);
    assert_eq!(
        second.line(),
        "-ERR [SYS/TEMP] too many connections, try again later"
    );
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut second.reader, &mut rest).unwrap();
    assert_eq!(rest, b"", "closed after the refusal");
    assert_eq!(first.cmd("QUIT"), "+OK bye");
    // The slot is freed when the first session's thread ends, just after its reply.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Client::connect(p.addr);
        let greeting = c.line();
        if greeting.starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {greeting}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_the_users_file_and_a_broken_one_keeps_the_old_users() {
    let mut p = Running::start(&[]);
    let users = p.dir.path().join("users");
    std::fs::write(&users, "alice:{PLAIN}secret\nbob:{PLAIN}hunter2\n").unwrap();
    p.signal("-HUP");
    p.wait_for("reloaded");
    let mut c = p.connect();
    c.login("bob", "hunter2");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 0 messages left");
    std::fs::remove_file(&users).unwrap();
    p.signal("-HUP");
    p.wait_for("keeping the users loaded before");
    let mut c = p.connect();
    c.login("bob", "hunter2");
    assert_eq!(c.cmd("QUIT"), "+OK bye, 0 messages left");
}
