//! What an idle logged-in session costs the server process: its proportional set size (PSS,
//! from /proc/PID/smaps_rollup) grows by a bounded amount per session, after each session has
//! fetched a message and, for some, after an Argon2id login. Memory, not time: the figures do
//! not move with the machine's load.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{mbox, poplar_bin};

/// Sessions held open at once: enough that per-session costs dwarf the process's own, and
/// few enough for the default limit of 1,024 open files (the server keeps a few per session).
const SESSIONS: usize = 200;

/// Of them, the ones that log in with an Argon2id secret (19 MiB of memory per hash).
const ARGON2_SESSIONS: usize = 8;

/// The bound per idle session. Measured on x86_64: about 25 KiB (release build), 30 KiB (the
/// debug build these tests run), where a 64 KiB outbox held for the whole session and glibc
/// keeping Argon2's blocks made it 92 KiB and over 10 MiB.
const MAX_KIB_PER_SESSION: u64 = 48;

/// The proportional set size of process `pid` in KiB, if /proc tells.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A `{ARGON2ID}` users-file secret for `password`, made by `poplar pw`.
fn argon2_secret(password: &str) -> String {
    let mut child = Command::new(poplar_bin())
        .args(["pw", "-s", "ARGON2ID"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "poplar pw failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A poplar process; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts poplar on 127.0.0.1:0 over `dir` and returns it with the address it logged.
fn start(dir: &std::path::Path) -> (Server, SocketAddr) {
    let mut child = Command::new(poplar_bin())
        .args(["--listen", "127.0.0.1:0", "--users"])
        .arg(dir.join("users"))
        .args(["--mail", &format!("{}/mail/%n", dir.display())])
        .args(["--max-connections", "1000", "--max-per-address", "1000"])
        .env("POPLAR_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let server = Server(child);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "poplar did not start"
        );
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr.trim().parse().unwrap();
        }
    };
    // Keep draining the log so the server never blocks writing it.
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    (server, addr)
}

/// One reply line, without its CRLF.
fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut buf = String::new();
    reader.read_line(&mut buf).unwrap();
    buf.trim_end().to_owned()
}

/// Logs `user` in, fetches message 1 whole, and returns the idle connection.
fn idle_session(addr: SocketAddr, user: &str, pass: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut r = BufReader::new(stream);
    assert!(line(&mut r).starts_with("+OK"));
    for cmd in [
        format!("USER {user}"),
        format!("PASS {pass}"),
        "RETR 1".into(),
    ] {
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap();
        let reply = line(&mut r);
        assert!(reply.starts_with("+OK"), "{user} {cmd}: {reply}");
    }
    let mut body = Vec::new();
    while !body.ends_with(b"\r\n.\r\n") {
        let mut chunk = [0u8; 8192];
        let n = r.read(&mut chunk).unwrap();
        assert!(n > 0, "{user}: connection closed during RETR");
        body.extend_from_slice(&chunk[..n]);
    }
    r
}

#[test]
fn idle_sessions_after_a_retr_cost_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let argon2 = argon2_secret("pw");
    let mut users = String::new();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    // A 40 KB message: a reply that fills most of the 64 KiB write buffer.
    let message = format!("Subject: idle\n\n{}", ("y".repeat(79) + "\n").repeat(500));
    let mailbox = mbox(&[message.as_bytes()]);
    for i in 0..SESSIONS {
        let secret = if i < ARGON2_SESSIONS {
            argon2.as_str()
        } else {
            "{PLAIN}pw"
        };
        users.push_str(&format!("u{i}:{secret}\n"));
        std::fs::write(dir.path().join(format!("mail/u{i}")), &mailbox).unwrap();
    }
    std::fs::write(dir.path().join("users"), users).unwrap();
    let (server, addr) = start(dir.path());
    let pid = server.0.id();
    let Some(before) = pss_kib(pid) else {
        eprintln!("skipped: /proc/{pid}/smaps_rollup is not readable");
        return;
    };
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| idle_session(addr, &format!("u{i}"), "pw"))
        .collect();
    let after = pss_kib(pid).unwrap();
    let per_session = after.saturating_sub(before) / SESSIONS as u64;
    eprintln!("{SESSIONS} idle sessions: PSS {before} -> {after} KiB, {per_session} KiB each");
    assert!(
        per_session <= MAX_KIB_PER_SESSION,
        "{SESSIONS} idle sessions took {per_session} KiB each (PSS {before} -> {after} KiB); \
         at most {MAX_KIB_PER_SESSION} KiB expected"
    );
    drop(sessions);
}
