//! `poplar probe`, the health check, run as its own process against a real server (plain,
//! implicit TLS, STLS) and against fake servers that misbehave in the ways a health check must
//! catch: an -ERR greeting, silence, data injected after STLS.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::thread;

use crate::common::{TestServer, mbox, poplar_bin};

const USERS: &str = "alice:{PLAIN}secret\n";

fn probe(args: &[&str]) -> (i32, String) {
    let Output { status, stdout, .. } = Command::new(poplar_bin())
        .arg("probe")
        .args(args)
        .env_remove("POPLAR_PROBE_PASSWORD")
        .output()
        .unwrap();
    let out = String::from_utf8(stdout).unwrap();
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    (status.code().unwrap(), out)
}

fn server() -> TestServer {
    let mail = mbox(&[b"Subject: a\n\nhello\n", b"Subject: b\n\nworld\n"]);
    TestServer::start(USERS, &[("alice", &mail)])
}

#[test]
fn a_healthy_server_and_a_login_exit_0() {
    let s = server();
    let addr = s.addr.to_string();
    let (code, out) = probe(&[&addr]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("healthy: {addr}: greeting, CAPA (")),
        "{out}"
    );

    let pw = s.dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let (code, out) = probe(&[
        "--user",
        "alice",
        "--password-file",
        pw.to_str().unwrap(),
        &addr,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("logged in as alice (2 messages, "), "{out}");

    let out = Command::new(poplar_bin())
        .args(["probe", "--user", "alice", &addr])
        .env("POPLAR_PROBE_PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_wrong_password_exits_1_without_showing_it() {
    let s = server();
    let addr = s.addr.to_string();
    let (code, out) = probe(&["--user", "alice", "--password", "Wr0ngPw", &addr]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("unhealthy: {addr}: PASS answered '-ERR")),
        "{out}"
    );
    assert!(!out.contains("Wr0ngPw"), "{out}");
}

#[test]
fn nothing_listening_exits_1() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out) = probe(&[&format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(poplar_bin())
        .args(["probe", "--tls", "--stls", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exclude each other"));
}

/// A one-connection fake server: sends `greeting`, then answers each line it reads with the
/// next of `replies` (an empty reply: say nothing), until they run out.
fn fake(greeting: &'static [u8], replies: &'static [&'static [u8]]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        let mut w = sock.try_clone().unwrap();
        let mut r = BufReader::new(sock);
        let _ = w.write_all(greeting);
        for reply in replies {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let _ = w.write_all(reply);
        }
        // Hold the connection open, silent, until the probe gives up.
        let mut rest = String::new();
        let _ = r.read_line(&mut rest);
    });
    addr
}

#[test]
fn an_err_greeting_and_silence_are_unhealthy() {
    let addr = fake(b"-ERR [SYS/TEMP] maintenance\r\n", &[]).to_string();
    let (code, out) = probe(&[&addr]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the greeting answered '-ERR [SYS/TEMP] maintenance'"),
        "{out}"
    );

    let addr = fake(b"+OK hi\r\n", &[b""]).to_string();
    let (code, out) = probe(&["--timeout", "0.5", &addr]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("timed out"), "{out}");
}

#[test]
fn data_injected_after_the_stls_reply_is_refused() {
    let addr = fake(
        b"+OK hi\r\n",
        &[b"+OK\r\nSTLS\r\n.\r\n", b"+OK go ahead\r\n+OK injected\r\n"],
    )
    .to_string();
    let (code, out) = probe(&["--stls", "--insecure", &addr]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("data after its reply to STLS"), "{out}");
}

#[test]
fn tls_verifies_against_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    crate::certs::issue_certificates(dir.path(), "cert.pem", "key.pem");
    let mail = mbox(&[b"Subject: a\n\nhello\n"]);
    let s = TestServer::start_with(USERS, &[("alice", &mail)], |c| {
        c.tls = Some(poplar::config::TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        });
        c.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
    });
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let (plain, implicit) = (s.addrs[0].to_string(), s.addrs[1].to_string());

    let (code, out) = probe(&[
        "--tls",
        "--ca",
        ca,
        "--user",
        "alice",
        "--password",
        "secret",
        &implicit,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": TLS, greeting, CAPA ("), "{out}");
    assert!(out.contains("logged in as alice (1 message, "), "{out}");

    let (code, out) = probe(&["--stls", "--ca", ca, &plain]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": STLS, greeting, CAPA ("), "{out}");

    // The test CA is in no system bundle: without --ca the certificate is not trusted.
    let other = tempfile::tempdir().unwrap();
    crate::certs::issue_certificates(other.path(), "c.pem", "k.pem");
    let wrong = other.path().join("ca.pem");
    let (code, out) = probe(&["--tls", "--ca", wrong.to_str().unwrap(), &implicit]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("TLS handshake"), "{out}");

    let (code, out) = probe(&["--tls", "--insecure", &implicit]);
    assert_eq!(code, 0, "{out}");
}
