//! The ways to run poplar, through the real binary: `--dev`, `--inetd` over a socket and over
//! pipes, systemd socket activation with inherited listeners, and PROXY v1/v2 listeners.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Client, mbox, poplar_bin};

/// How long anything may take before a test gives up: generous, never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// A poplar process, its stderr collected line by line; killed on drop.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .env("POPLAR_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Proc { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle`; panics with the log after `PATIENCE`.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The addresses from the `listening on` lines, once there are `n` of them.
    fn listening(&self, n: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            let addrs: Vec<SocketAddr> = log
                .lines()
                .filter_map(|l| l.split("listening on ").nth(1))
                .map(|a| a.trim().parse().unwrap())
                .collect();
            if addrs.len() >= n {
                return addrs;
            }
            assert!(Instant::now() < deadline, "not listening:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A users file and one mailbox for alice with two messages, in `dir`; returns the args that
/// point poplar at them.
fn alice(dir: &std::path::Path) -> Vec<String> {
    std::fs::write(dir.join("users"), "alice:{PLAIN}secret\n").unwrap();
    std::fs::create_dir(dir.join("mail")).unwrap();
    let m1: &[u8] = b"Subject: one\n\nfirst body\n";
    let m2: &[u8] = b"Subject: two\n\nsecond body\nline two\nline three\n";
    std::fs::write(dir.join("mail/alice"), mbox(&[m1, m2])).unwrap();
    vec![
        "--users".into(),
        dir.join("users").display().to_string(),
        "--mail".into(),
        format!("{}/mail/%n", dir.display()),
        "--auth-delay".into(),
        "0".into(),
    ]
}

/// `alice`'s flags plus the state directory every `--inetd` process needs.
fn inetd_alice(dir: &std::path::Path) -> Vec<String> {
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let mut args = alice(dir);
    args.extend(["--state-dir".into(), state.display().to_string()]);
    args
}

/// Reads the greeting; `None` if the server closed the connection without one.
fn greeting(addr: SocketAddr, prefix: &[u8]) -> Option<Client> {
    let mut c = Client::connect(addr);
    c.send_raw(prefix);
    let mut first = Vec::new();
    c.reader.read_until(b'\n', &mut first).unwrap();
    if first.is_empty() {
        return None;
    }
    assert!(first.starts_with(b"+OK "), "{first:?}");
    Some(c)
}

fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

fn end_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("session end "))
        .unwrap_or_else(|| panic!("no end line in {log}"))
}

#[test]
fn dev_mode_lets_a_new_user_in_creates_the_mailbox_and_logs_commands_masked() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = dir.path().join("boxes");
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--dev")
        .arg(&boxes)
        .args(["--listen", "127.0.0.1:0", "--auth-delay", "0"])
        .stdout(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd);
    let addr = p.listening(1)[0];
    let mut c = greeting(addr, b"").unwrap();
    assert!(c.cmd("USER newbie@example.org").starts_with("+OK"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    c.login("newbie@example.org", "poplar");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let log = p.wait_log("session end");
    assert!(log.contains("C: USER newbie@example.org"), "{log}");
    assert!(log.contains("C: PASS ***"), "{log}");
    assert!(
        !log.contains("PASS poplar") && !log.contains("wrong"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(boxes.join("newbie@example.org")).unwrap(),
        b""
    );
    let _ = p.child.kill();
    let mut banner = String::new();
    p.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut banner)
        .unwrap();
    assert!(banner.contains(&format!("mailboxes in {}", boxes.display())));
    assert!(banner.contains("password 'poplar'"), "{banner}");
    assert!(banner.contains(&format!("listening on {addr}")), "{banner}");
}

#[test]
fn dev_mode_enforces_and_announces_the_login_delay() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = dir.path().join("boxes");
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--dev")
        .arg(&boxes)
        .args(["--listen", "127.0.0.1:0", "--auth-delay", "0"])
        .args(["--login-delay", "900"])
        .stdout(Stdio::null());
    let p = Proc::spawn(&mut cmd);
    let addr = p.listening(1)[0];
    let mut c = greeting(addr, b"").unwrap();
    let caps = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(caps.contains("\r\nLOGIN-DELAY 900\r\n"), "{caps}");
    assert!(caps.contains("\r\nEXPIRE NEVER\r\n"), "{caps}");
    c.login("newbie", "poplar");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut again = greeting(addr, b"").unwrap();
    assert!(again.cmd("USER newbie").starts_with("+OK"));
    let r = again.cmd("PASS poplar");
    assert!(r.starts_with("-ERR [LOGIN-DELAY] "), "{r}");
}

/// A user name for each sidecar suffix: `alice` and the suffix, with a variable part where
/// one follows it (a dotlock's unique name, a set-aside journal).
fn sidecar_user_names() -> Vec<String> {
    poplar::mailbox::files::SUFFIXES
        .iter()
        .map(|s| {
            let tail = if s.ends_with(['.', '-']) {
                "4242.1"
            } else {
                ""
            };
            format!("alice{s}{tail}")
        })
        .collect()
}

#[test]
fn dev_mode_refuses_user_names_that_alias_a_side_file_and_makes_private_mailboxes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let boxes = dir.path().join("boxes");
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--dev")
        .arg(&boxes)
        .args(["--listen", "127.0.0.1:0", "--auth-delay", "0"])
        .stdout(Stdio::null());
    let p = Proc::spawn(&mut cmd);
    let addr = p.listening(1)[0];
    for name in sidecar_user_names() {
        let mut c = greeting(addr, b"").unwrap();
        assert!(c.cmd(&format!("USER {name}")).starts_with("+OK"));
        let reply = c.cmd("PASS poplar");
        assert!(reply.starts_with("-ERR [AUTH]"), "{name}: {reply}");
        assert!(!boxes.join(&name).exists(), "{name} was created");
    }
    // Nothing was planted: alice logs in, and her new mailbox is hers alone.
    let mut c = greeting(addr, b"").unwrap();
    c.login("alice", "poplar");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mode = std::fs::metadata(boxes.join("alice"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn dev_mode_without_a_directory_makes_a_fresh_one_and_takes_any_password() {
    let mut cmd = Command::new(poplar_bin());
    cmd.args(["--dev", "--dev-any-password", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd);
    let mut out = BufReader::new(p.child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let dir = first
        .trim()
        .strip_prefix("poplar --dev: mailboxes in ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    assert!(
        std::path::Path::new(&dir).starts_with(std::env::temp_dir()),
        "{dir}"
    );
    let mut c = greeting(p.listening(1)[0], b"").unwrap();
    c.login("zed", "anything at all");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(std::path::Path::new(&dir).join("zed").exists());
    // Stopped, it removes the directory it made: nobody else knows its name.
    let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(p.child.wait().unwrap().success());
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is still there");
}

#[test]
fn dev_mode_refuses_any_address_but_127_0_0_1() {
    for addr in ["0.0.0.0:1110", "[::1]:1110", "127.0.0.2:1110"] {
        let out = Command::new(poplar_bin())
            .args(["--dev", "--listen", addr])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{addr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("127.0.0.1 only"), "{err}");
    }
}

#[test]
fn inetd_serves_one_session_on_a_socket_and_logs_the_peer_and_the_end_line() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--inetd")
        .args(inetd_alice(dir.path()))
        .stdin(Stdio::from(OwnedFd::from(conn.try_clone().unwrap())))
        .stdout(Stdio::from(OwnedFd::from(conn)));
    let mut p = Proc::spawn(&mut cmd);
    let mut c = Client {
        reader: BufReader::new(client.try_clone().unwrap()),
        writer: client.try_clone().unwrap(),
        greeting: String::new(),
    };
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(c.line().starts_with("+OK"));
    c.login("alice", "secret");
    assert_eq!(c.multi("RETR 1"), b"Subject: one\r\n\r\nfirst body\r\n");
    assert_eq!(c.multi("TOP 2 1"), b"Subject: two\r\n\r\nsecond body\r\n");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = p.wait_log("session end");
    let line = end_line(&log);
    let local = client.local_addr().unwrap().to_string();
    assert_eq!(value(line, "peer"), local);
    assert_eq!(value(line, "user"), "alice");
    assert_eq!(value(line, "reason"), "quit");
    assert_eq!(value(line, "messages"), "2");
    assert_eq!(value(line, "retr"), "1");
    assert_eq!(value(line, "retr_octets"), "28");
    assert_eq!(value(line, "top"), "1");
    assert_eq!(value(line, "top_octets"), "29");
    assert_eq!(value(line, "dele"), "1");
    assert_eq!(value(line, "dele_octets"), "28");
    let before: u64 = value(line, "mailbox_before").parse().unwrap();
    let after: u64 = value(line, "mailbox_after").parse().unwrap();
    let now = std::fs::metadata(dir.path().join("mail/alice"))
        .unwrap()
        .len();
    assert_eq!(after, now);
    assert!(before > after, "{line}");
    for key in ["duration_ms", "login_ms", "commit_ms"] {
        value(line, key).parse::<u64>().unwrap();
    }
}

#[test]
fn inetd_on_a_socket_offers_stls_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--inetd")
        .args(inetd_alice(dir.path()))
        .arg("--tls-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"))
        .stdin(Stdio::from(OwnedFd::from(conn.try_clone().unwrap())))
        .stdout(Stdio::from(OwnedFd::from(conn)));
    let mut p = Proc::spawn(&mut cmd);
    drop(cmd);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut c = Client {
        reader: BufReader::new(client.try_clone().unwrap()),
        writer: client,
        greeting: String::new(),
    };
    assert!(c.line().starts_with("+OK"));
    let caps = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(caps.lines().any(|l| l == "STLS"), "{caps}");
    assert!(c.cmd("STLS").starts_with("+OK"));
    // No handshake follows: the session ends, and the process with it.
    c.writer.shutdown(Shutdown::Both).unwrap();
    p.child.wait().unwrap();
    p.wait_log("session end");
}

#[test]
fn inetd_on_a_socket_ends_an_idle_session_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--inetd")
        .args(inetd_alice(dir.path()))
        .args(["--idle-timeout", "0.2"])
        .stdin(Stdio::from(OwnedFd::from(conn.try_clone().unwrap())))
        .stdout(Stdio::from(OwnedFd::from(conn)));
    let mut p = Proc::spawn(&mut cmd);
    // The Command holds our copies of the server's end; only poplar may keep it open.
    drop(cmd);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    // Logged in (before login the AUTHORIZATION deadline, at most the idle timeout, ends
    // it), then nothing more is sent: the server closes the idle connection.
    client.write_all(b"USER alice\r\nPASS secret\r\n").unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert!(got.starts_with(b"+OK "), "{got:?}");
    assert_eq!(got.split(|&b| b == b'\n').count(), 4, "{got:?}");
    assert!(p.child.wait().unwrap().success());
    let log = p.wait_log("session end");
    assert_eq!(value(end_line(&log), "reason"), "timeout");
}

#[test]
fn inetd_over_pipes_answers_pipelined_commands_and_has_no_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--inetd")
        .args(inetd_alice(dir.path()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd);
    let mut stdin = p.child.stdin.take().unwrap();
    stdin
        .write_all(b"USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
        .unwrap();
    drop(stdin);
    let mut out = String::new();
    p.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines[0].starts_with("+OK poplar ready <"));
    assert_eq!(lines[3], "+OK 2 79");
    assert!(p.child.wait().unwrap().success());
    let log = p.wait_log("session end");
    let line = end_line(&log);
    assert_eq!(value(line, "peer"), "-");
    // QUIT with nothing deleted: the mailbox is as it was.
    let size = std::fs::metadata(dir.path().join("mail/alice"))
        .unwrap()
        .len();
    assert_eq!(value(line, "mailbox_before"), size.to_string());
    assert_eq!(value(line, "mailbox_after"), size.to_string());
}

/// A PROXY v1 line for a client at 192.0.2.7:56324.
const V1: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 110\r\n";

/// A PROXY v2 header for a client at [2001:db8::9]:4000.
fn v2() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = 9;
    h.extend_from_slice(&src);
    h.extend_from_slice(&[0u8; 16]);
    h.extend_from_slice(&4000u16.to_be_bytes());
    h.extend_from_slice(&110u16.to_be_bytes());
    h
}

/// Connects with `header`, logs in, quits; returns the end line's peer.
fn session_via_proxy(p: &Proc, addr: SocketAddr, header: &[u8], n: usize) -> String {
    let mut c = greeting(addr, header).expect("a greeting after a good header");
    c.login("alice", "secret");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    nth_end_peer(p, n)
}

/// The peer of the `n`th end-of-session line, once there is one.
fn nth_end_peer(p: &Proc, n: usize) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = p.log();
        let ends: Vec<&str> = log.lines().filter(|l| l.contains("session end ")).collect();
        if ends.len() >= n {
            return value(ends[n - 1], "peer").to_owned();
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `bytes` (and, if `close`, ends the write side); asserts the server closes the
/// connection without a greeting.
fn refused(addr: SocketAddr, bytes: &[u8], close: bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(bytes).unwrap();
    if close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
}

#[test]
fn proxy_listeners_take_the_client_from_v1_and_v2_and_close_on_bad_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(poplar_bin());
    // The real clients are off loopback: cleartext logins need --allow-cleartext.
    cmd.args(alice(dir.path())).args([
        "--listen",
        "127.0.0.1:0",
        "--proxy-protocol",
        "127.0.0.1:0",
        "--trusted-proxy",
        "127.0.0.0/8",
        "--allow-cleartext",
    ]);
    let p = Proc::spawn(&mut cmd);
    let addrs = p.listening(2);
    let (plain, proxied) = (addrs[0], addrs[1]);
    assert_eq!(session_via_proxy(&p, proxied, V1, 1), "192.0.2.7:56324");
    assert_eq!(
        session_via_proxy(&p, proxied, &v2(), 2),
        "[2001:db8::9]:4000"
    );
    // The plain listener beside it takes no header.
    let mut c = greeting(plain, b"").unwrap();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    refused(proxied, b"PROXY TCP4 192.0.2.7 198.5", true);
    refused(proxied, &v2()[..20], true);
    refused(proxied, b"PROXY TCP4 banana 198.51.100.1 1 2\r\n", false);
    refused(proxied, b"USER alice\r\n", false);
    p.wait_log("bad PROXY header: malformed PROXY v1 line");
    p.wait_log("bad PROXY header: no PROXY header");
}

#[test]
fn a_proxy_header_from_an_untrusted_address_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(poplar_bin());
    cmd.args(alice(dir.path())).args([
        "--proxy-protocol",
        "127.0.0.1:0",
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    let p = Proc::spawn(&mut cmd);
    let addr = p.listening(1)[0];
    refused(addr, V1, false);
    p.wait_log("not a --trusted-proxy");
}

/// Binds two listeners, puts them at fds 3 and 4, sets LISTEN_FDS/LISTEN_PID for its own pid
/// and execs poplar there (the pid stays): what systemd does for `Accept=no` sockets.
const ACTIVATE: &str = r#"
import os, socket, sys
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    socks.append(s)
ports = [s.getsockname()[1] for s in socks]
dups = [os.dup(s.fileno()) for s in socks]
for i, fd in enumerate(dups):
    os.dup2(fd, 3 + i)
print(" ".join(map(str, ports)), flush=True)
os.environ["LISTEN_FDS"] = "2"
os.environ["LISTEN_PID"] = str(os.getpid())
args = [a.replace("PORT1", str(ports[1])) for a in sys.argv[1:]]
os.execv(args[0], args)
"#;

#[test]
fn socket_activation_serves_every_inherited_socket_and_marks_the_proxy_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ACTIVATE, poplar_bin()])
        .args(alice(dir.path()))
        .args([
            "--listen",
            "127.0.0.1:1",
            "--proxy-protocol",
            "127.0.0.1:PORT1",
            "--trusted-proxy",
            "127.0.0.1",
        ])
        .stdout(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd);
    let mut ports = String::new();
    BufReader::new(p.child.stdout.take().unwrap())
        .read_line(&mut ports)
        .unwrap();
    let ports: Vec<u16> = ports
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    p.wait_log("serving 2 inherited sockets");
    // --listen 127.0.0.1:1 was ignored: the inherited sockets are what poplar serves.
    assert_eq!(p.listening(2), vec![addr(ports[0]), addr(ports[1])]);
    let mut c = greeting(addr(ports[0]), b"").unwrap();
    c.login("alice", "secret");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // Loopback decisions follow the real client: 192.0.2.7 may not send a cleartext password.
    let mut c = greeting(addr(ports[1]), V1).unwrap();
    let refused = c.cmd("USER alice");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(nth_end_peer(&p, 2), "192.0.2.7:56324");
}

#[test]
fn a_mailbox_error_is_logged_with_the_user_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}pw\n").unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(mail.join("alice")).unwrap();
    let mut cmd = Command::new(poplar_bin());
    cmd.arg("--users")
        .arg(dir.path().join("users"))
        .arg("--mail")
        .arg(format!("{}/%n", mail.display()))
        .args(["--listen", "127.0.0.1:0", "--auth-delay", "0"]);
    let p = Proc::spawn(&mut cmd);
    let addr = p.listening(1)[0];
    let mut c = greeting(addr, b"").unwrap();
    c.cmd("USER alice");
    assert!(c.cmd("PASS pw").starts_with("-ERR [SYS/PERM]"));
    let want = format!("(user=alice mailbox={}/alice)", mail.display());
    let log = p.wait_log(&want);
    let line = log.lines().find(|l| l.contains(&want)).unwrap();
    assert!(
        line.contains("WARN") && line.contains("mailbox unusable"),
        "{line}"
    );
}
