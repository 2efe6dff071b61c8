//! TLS in `--dev` with a test certificate: Python's poplib upgrading with STLS and on a POP3S
//! port, and the `fail_handshake` fault seen over a raw socket, by Python's `ssl` and by
//! poplib, with the sessions log and the rule counts by curl.

use std::path::Path;

use serde_json::Value;

use crate::common::Client;
use crate::devserver::Dev;
use crate::faults::{
    command_list, curl, ended_sessions, mail_dir, put_faults, python, refused_at_start,
};

/// A `--dev` server on `dir` with a test certificate for STLS and a POP3S port, and `extra`
/// flags; and the CA file that trusts the certificate.
fn dev_with_tls(dir: &Path, extra: &[&str]) -> (Dev, String) {
    crate::certs::issue_certificates(dir, "cert.pem", "key.pem");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--listen-tls",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let dev = Dev::start(&mail_dir(dir, "ann", 2), &args);
    (dev, dir.join("ca.pem").to_str().unwrap().to_owned())
}

const POPLIB_TLS: &str = r#"
import poplib, ssl, sys
port, pop3s, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3("127.0.0.1", port, timeout=20)
print("capa-before", "STLS" in p.capa())
p.stls(ctx)
print("version", p.sock.version())
print("capa-after", "STLS" in p.capa())
p.user("ann"); p.pass_("poplar")
print("stat", p.stat())
print("retr", p.retr(2)[1][1].decode())
print("quit", p.quit().decode())
q = poplib.POP3_SSL("127.0.0.1", pop3s, context=ctx, timeout=20)
q.user("ann"); q.pass_("poplar")
print("pop3s-stat", q.stat())
q.quit()
"#;

/// The value after `label` in the script's output.
fn said<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {label} in {out}"))
}

#[test]
fn dev_offers_stls_and_pop3s_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, ca) = dev_with_tls(dir.path(), &[]);
    let pop3s = dev.pop3s.expect("the banner names the POP3S port");
    let out = python(
        POPLIB_TLS,
        &[dev.pop3.port().to_string(), pop3s.port().to_string(), ca],
    );
    assert_eq!(said(&out, "capa-before"), "True");
    assert!(said(&out, "version").starts_with("TLSv1."), "{out}");
    assert_eq!(said(&out, "capa-after"), "False", "STLS is gone under TLS");
    assert!(said(&out, "stat").starts_with("(2, "), "{out}");
    assert_eq!(said(&out, "retr"), "Subject: m2");
    assert!(said(&out, "quit").starts_with("+OK bye"), "{out}");
    assert!(said(&out, "pop3s-stat").starts_with("(2, "), "{out}");
    let all = ended_sessions(&dev, 2);
    assert!(all.iter().all(|s| s["faults"] == serde_json::json!([])));
    assert!(all.iter().all(|s| s["ending"] == "quit"), "{all:?}");
}

const SSL_AFTER_STLS: &str = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=20)

def line():
    out = b""
    while not out.endswith(b"\r\n"):
        b = s.recv(1)
        if not b:
            break
        out += b
    return out.decode()

line()
s.sendall(b"STLS\r\n")
print("status", line().strip())
try:
    ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="127.0.0.1")
    print("handshake ok")
except (ssl.SSLError, ConnectionResetError) as e:
    print("handshake", type(e).__name__)
"#;

const POPLIB_AFTER_STLS: &str = r#"
import poplib, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
p = poplib.POP3("127.0.0.1", port, timeout=20)
try:
    p.stls(ssl.create_default_context(cafile=ca))
    print("stls ok")
except (ssl.SSLError, OSError) as e:
    print("stls", type(e).__name__)
"#;

#[test]
fn a_failed_handshake_fault_is_seen_by_clients_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"rules": [{"command": "STLS", "count": 2, "action": "fail_handshake"}]}"#,
    )
    .unwrap();
    let (dev, ca) = dev_with_tls(dir.path(), &["--dev-faults", rules.to_str().unwrap()]);
    let port = dev.pop3.port().to_string();

    // Octet-exact: +OK, then the octets that are no TLS record, then the end.
    let mut c = Client::connect(dev.pop3);
    c.line();
    assert_eq!(c.cmd("STLS"), "+OK begin TLS negotiation");
    assert_eq!(c.rest(), poplar::session::NOT_A_TLS_RECORD);

    // Python's ssl: the handshake fails.
    let out = python(SSL_AFTER_STLS, &[port.clone(), ca.clone()]);
    assert_eq!(said(&out, "status"), "+OK begin TLS negotiation");
    // OpenSSL reads the octets as a record header: "wrong version number". Its ClientHello
    // may reach the closed socket before it reads them, and the reset come first.
    let failed = said(&out, "handshake");
    assert!(
        ["SSLError", "ConnectionResetError"].contains(&failed),
        "{out}"
    );

    // The rule's two fires are spent: poplib's STLS works again.
    let out = python(POPLIB_AFTER_STLS, &[port, ca]);
    assert_eq!(out.trim(), "stls ok");

    let all = ended_sessions(&dev, 3);
    for failed in &all[..2] {
        assert_eq!(failed["ending"], "tls-failed", "{failed}");
        assert_eq!(
            failed["faults"],
            serde_json::json!([{"command": "STLS", "rule": 0, "action": "fail_handshake"}])
        );
        assert_eq!(command_list(failed), ["STLS +OK"]);
        assert_eq!(failed["commands"][0]["fault"], "fail_handshake");
    }
    assert_eq!(all[2]["faults"], serde_json::json!([]));
    let (_, faults) = curl(&dev, "GET", "/api/v1/faults", None);
    let faults: Value = serde_json::from_str(&faults).unwrap();
    assert_eq!(faults["rules"][0]["fired"], 2);

    // Through the API, with no count: poplib's STLS fails.
    put_faults(
        &dev,
        r#"{"rules": [{"command": "stls", "action": "fail_handshake"}]}"#,
    );
    let out = python(
        POPLIB_AFTER_STLS,
        &[
            dev.pop3.port().to_string(),
            dir.path().join("ca.pem").to_str().unwrap().into(),
        ],
    );
    assert!(out.starts_with("stls ") && out.trim() != "stls ok", "{out}");
}

#[test]
fn fail_handshake_on_another_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&mail_dir(dir.path(), "ann", 1), &[]);
    for doc in [
        r#"{"rules": [{"command": "QUIT", "action": "fail_handshake"}]}"#,
        r#"{"rules": [{"action": "fail_handshake"}]}"#,
    ] {
        let (code, body) = curl(&dev, "PUT", "/api/v1/faults", Some(doc));
        assert_eq!(code, 400, "{doc}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .starts_with("rule 0: \"fail_handshake\" cannot apply to "),
            "{body}"
        );
    }
    let stderr = refused_at_start(
        dir.path(),
        r#"{"rules": [{"command": "RETR", "action": "fail_handshake"}]}"#,
    );
    assert!(
        stderr.contains("\"fail_handshake\" cannot apply to RETR"),
        "{stderr}"
    );
}
