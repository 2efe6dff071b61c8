//! The login guards of `--inetd` processes, which share them through the state file in
//! `--state-dir`: the doubling failure delay per address, the per-address and per-user caps
//! (a killed process gives its places back), the per-account throttle, and the AUTHORIZATION
//! deadline. Each connection is a real poplar process on a real TCP socket, from its own
//! loopback source address where the test needs several.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Client, mbox, poplar_bin};

/// How long anything may take before a test gives up: generous, never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// A users file, alice's mailbox and the state directory, shared by every process of a test.
struct Site {
    dir: tempfile::TempDir,
    listener: TcpListener,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "alice:{PLAIN}secret\n").unwrap();
        std::fs::create_dir(dir.path().join("mail")).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let m: &[u8] = b"Subject: one\n\nbody\n";
        std::fs::write(dir.path().join("mail/alice"), mbox(&[m])).unwrap();
        Site {
            dir,
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `poplar --inetd` with `extra` flags, serving one connection from `from`.
    fn connect(&self, from: Ipv4Addr, extra: &[&str]) -> Session {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
        sock.connect(&self.listener.local_addr().unwrap().into())
            .unwrap();
        let client: TcpStream = sock.into();
        let (conn, _) = self.listener.accept().unwrap();
        let mut cmd = Command::new(poplar_bin());
        cmd.arg("--inetd")
            .args(base_args(self.dir.path(), &self.state()))
            .args(extra)
            .env("POPLAR_LOG", "info")
            .stdin(Stdio::from(OwnedFd::from(conn.try_clone().unwrap())))
            .stdout(Stdio::from(OwnedFd::from(conn)))
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Only poplar may keep the server's end of the connection open.
        drop(cmd);
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        Session {
            child,
            log,
            client: Client {
                reader: BufReader::new(client.try_clone().unwrap()),
                writer: client,
                greeting: String::new(),
            },
        }
    }
}

fn base_args(dir: &Path, state: &Path) -> Vec<String> {
    vec![
        "--users".into(),
        dir.join("users").display().to_string(),
        "--mail".into(),
        format!("{}/mail/%n", dir.display()),
        "--state-dir".into(),
        state.display().to_string(),
        "--auth-delay".into(),
        "0.05".into(),
    ]
}

/// One `--inetd` process and the client of its connection; killed on drop.
struct Session {
    child: Child,
    log: Arc<Mutex<String>>,
    client: Client,
}

impl Session {
    /// Waits for the process to end and returns its log.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "poplar did not end:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The log reader ends with the process's stderr.
        std::thread::sleep(Duration::from_millis(50));
        self.log()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// One wrong password for alice, then QUIT; returns the log.
    fn guess(mut self) -> String {
        assert!(self.client.line().starts_with("+OK"));
        assert!(self.client.cmd("USER alice").starts_with("+OK"));
        let r = self.client.cmd("PASS wrong");
        assert_eq!(r, "-ERR [AUTH] authentication failed");
        assert!(self.client.cmd("QUIT").starts_with("+OK"));
        self.finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number before " ms" after `after` in the first log line holding it.
fn millis(log: &str, after: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(after))?;
    let rest = &line[line.find(after)? + after.len()..];
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn inetd_processes_share_the_doubling_failure_delay_of_an_address() {
    let site = Site::new();
    let delays: Vec<Option<u64>> = (0..5)
        .map(|_| millis(&site.connect(Ipv4Addr::LOCALHOST, &[]).guess(), ", delay "))
        .collect();
    // As the daemon gives one address: 50 ms, then doubling (each process alone gave 50).
    assert_eq!(
        delays,
        [50, 100, 200, 400, 800].map(Some).to_vec(),
        "{delays:?}"
    );
}

#[test]
fn inetd_caps_hold_across_processes_and_a_killed_process_frees_its_places() {
    let site = Site::new();
    let caps = ["--max-per-address", "1", "--max-per-user", "1"];
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let mut first = site.connect(a, &caps);
    assert!(first.client.line().starts_with("+OK"));
    // The same address again: refused, while the first process lives.
    let mut second = site.connect(a, &caps);
    assert_eq!(
        second.client.line(),
        "-ERR [SYS/TEMP] too many connections from your address"
    );
    assert!(
        second
            .finish()
            .contains("refused: 1 sessions open from 127.0.0.2")
    );
    // Another address logs alice in; a third cannot, alice has her one session.
    let mut logged = site.connect(b, &caps);
    assert!(logged.client.line().starts_with("+OK"));
    logged.client.login("alice", "secret");
    let mut third = site.connect(Ipv4Addr::new(127, 0, 0, 4), &caps);
    assert!(third.client.line().starts_with("+OK"));
    assert!(third.client.cmd("USER alice").starts_with("+OK"));
    assert_eq!(
        third.client.cmd("PASS secret"),
        "-ERR [IN-USE] too many sessions for this user"
    );
    drop(third);
    // kill -9 both holders: the kernel drops their locks, and with them their places.
    drop(first);
    drop(logged);
    let mut again = site.connect(a, &caps);
    assert!(again.client.line().starts_with("+OK"));
    again.client.login("alice", "secret");
    assert!(again.client.cmd("QUIT").starts_with("+OK"));
    again.finish();
}

#[test]
fn inetd_slows_many_addresses_guessing_one_account_but_alice_still_logs_in() {
    let site = Site::new();
    let home = Ipv4Addr::new(127, 0, 0, 9);
    let mut s = site.connect(home, &[]);
    assert!(s.client.line().starts_with("+OK"));
    s.client.login("alice", "secret");
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    s.finish();
    // Nine guessers, one wrong password each from an address of its own.
    let waits: Vec<Option<u64>> = (0..9)
        .map(|i| {
            let log = site.connect(Ipv4Addr::new(127, 0, 0, 10 + i), &[]).guess();
            millis(&log, "login for alice waits ")
        })
        .collect();
    let free = [None; 6];
    assert_eq!(waits[..6], free, "{waits:?}");
    assert_eq!(waits[6..], [Some(50), Some(100), Some(200)], "{waits:?}");
    // Alice from an address she never used: she waits, then logs in.
    let mut fresh = site.connect(Ipv4Addr::new(127, 0, 0, 40), &[]);
    assert!(fresh.client.line().starts_with("+OK"));
    fresh.client.login("alice", "secret");
    assert!(fresh.client.cmd("QUIT").starts_with("+OK"));
    assert_eq!(millis(&fresh.finish(), "login for alice waits "), Some(400));
    // From home she does not wait at all.
    let mut back = site.connect(home, &[]);
    assert!(back.client.line().starts_with("+OK"));
    back.client.login("alice", "secret");
    assert!(back.client.cmd("QUIT").starts_with("+OK"));
    let log = back.finish();
    assert!(!log.contains("waits"), "{log}");
}

#[test]
fn inetd_closes_a_connection_not_logged_in_by_the_auth_timeout() {
    let site = Site::new();
    let mut s = site.connect(Ipv4Addr::LOCALHOST, &["--auth-timeout", "0.3"]);
    // A byte now and then keeps the idle timeout (600 s) away, not the deadline.
    let mut got = Vec::new();
    for _ in 0..3 {
        s.client.send_raw(b"N");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.client.reader.read_to_end(&mut got).unwrap();
    assert!(got.starts_with(b"+OK "), "{got:?}");
    let log = s.finish();
    assert!(log.contains("not logged in within 300ms: closing"), "{log}");
}

#[test]
fn inetd_over_pipes_ends_a_session_not_logged_in_by_the_auth_timeout() {
    let site = Site::new();
    let mut child = Command::new(poplar_bin())
        .arg("--inetd")
        .args(base_args(site.dir.path(), &site.state()))
        .args(["--auth-timeout", "0.3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Stdin stays open and silent: only the deadline can end the session.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"USER alice\r\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(out.starts_with("+OK poplar ready"), "{out}");
    drop(stdin);
}

#[test]
fn inetd_refuses_to_run_without_a_usable_state_directory() {
    let site = Site::new();
    let missing = site.dir.path().join("no-such-dir");
    let out = Command::new(poplar_bin())
        .arg("--inetd")
        .args(base_args(site.dir.path(), &missing))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--state-dir"), "{err}");
    assert!(out.stdout.is_empty(), "no greeting without guards");
    // A garbage state file is rebuilt, with a warning, and the session goes on.
    std::fs::write(site.state().join("guards"), b"garbage").unwrap();
    let mut s = site.connect(Ipv4Addr::LOCALHOST, &[]);
    assert!(s.client.line().starts_with("+OK"));
    s.client.login("alice", "secret");
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    assert!(s.finish().contains("starting it afresh"));
}
