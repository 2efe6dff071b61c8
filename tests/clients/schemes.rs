//! Every password scheme (and yescrypt behind `{CRYPT}`) against hashes made at run time by
//! the reference tools: Debian's
//! `mkpasswd` (package whois), `openssl passwd`, Python's `crypt` and Dovecot's `doveadm pw`.
//! `make deps` installs them.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{TestServer, mbox};
use poplar::auth::{Gate, passwd};

// Non-ASCII and a space; no colon, which a passwd-file line cannot hold.
const PASSWORD: &str = "pä ss w0rd!";

/// Runs a reference tool with `PASSWORD` on its stdin and returns its one output line.
fn tool(program: &str, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed (make deps installs it): {e}"));
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn python_crypt(method: &str) -> String {
    let script = format!("import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.{method}))");
    tool("python3", &["-W", "ignore", "-c", &script, PASSWORD])
}

/// (label, passwd-file secret field) for every tool and scheme.
fn reference_hashes() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for (m, scheme) in [
        ("sha512crypt", "SHA512-CRYPT"),
        ("sha256crypt", "SHA256-CRYPT"),
        ("md5crypt", "MD5-CRYPT"),
        ("bcrypt", "BLF-CRYPT"),
        ("bcrypt-a", "BLF-CRYPT"),
        ("descrypt", "CRYPT"),
    ] {
        let h = tool("mkpasswd", &["-m", m, "--stdin"]);
        v.push((format!("mkpasswd {m}"), format!("{{{scheme}}}{h}")));
        v.push((format!("mkpasswd {m}, {{CRYPT}}"), format!("{{CRYPT}}{h}")));
        v.push((format!("mkpasswd {m}, no prefix"), h));
    }
    for prefix in ["{CRYPT}", ""] {
        let h = tool("mkpasswd", &["-m", "yescrypt", "--stdin"]);
        v.push((
            format!("mkpasswd yescrypt {prefix}"),
            format!("{prefix}{h}"),
        ));
    }
    let rounds = tool("mkpasswd", &["-m", "sha512crypt", "-R", "10000", "--stdin"]);
    v.push(("mkpasswd sha512crypt rounds=10000".into(), rounds));
    for (flag, scheme) in [
        ("-1", "MD5-CRYPT"),
        ("-5", "SHA256-CRYPT"),
        ("-6", "SHA512-CRYPT"),
    ] {
        let h = tool("openssl", &["passwd", flag, "-stdin"]);
        v.push((format!("openssl passwd {flag}"), format!("{{{scheme}}}{h}")));
    }
    for (method, scheme) in [
        ("METHOD_SHA512", "SHA512-CRYPT"),
        ("METHOD_SHA256", "SHA256-CRYPT"),
        ("METHOD_MD5", "MD5-CRYPT"),
        ("METHOD_BLOWFISH", "BLF-CRYPT"),
        ("METHOD_CRYPT", "CRYPT"),
    ] {
        v.push((
            format!("python crypt {method}"),
            format!("{{{scheme}}}{}", python_crypt(method)),
        ));
    }
    for scheme in [
        "PLAIN",
        "CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "MD5-CRYPT",
        "BLF-CRYPT",
        "ARGON2I",
        "ARGON2ID",
    ] {
        let h = tool("doveadm", &["pw", "-s", scheme, "-p", PASSWORD]);
        assert!(h.starts_with(&format!("{{{scheme}}}")), "{h}");
        v.push((format!("doveadm pw -s {scheme}"), h));
    }
    v
}

#[test]
fn every_scheme_verifies_hashes_from_the_reference_tools() {
    let hashes = reference_hashes();
    let mut file = String::new();
    for (i, (_, secret)) in hashes.iter().enumerate() {
        file.push_str(&format!("u{i}:{secret}:1000:1000::/home/u{i}::\n"));
    }
    let (users, problems) = passwd::parse(file.as_bytes());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(users.len(), hashes.len());
    let gate = Gate::new(2);
    for (i, (label, secret)) in hashes.iter().enumerate() {
        let name = format!("u{i}");
        let ok = users.verify_password(name.as_bytes(), PASSWORD.as_bytes(), &gate);
        assert!(
            ok.unwrap().is_some(),
            "{label}: {secret} rejects the right password"
        );
        // DES crypt only reads 8 characters, so the wrong guess differs at the start.
        let wrong = users.verify_password(name.as_bytes(), b"x\xc3\xa4 ss w0rd!", &gate);
        assert!(
            wrong.unwrap().is_none(),
            "{label}: {secret} takes a wrong password"
        );
    }
}

#[test]
fn poplar_pw_output_is_accepted_by_doveadm() {
    // Each prints the scheme it was asked for, as the docs say (and as doveadm pw does).
    for scheme in [
        "PLAIN",
        "CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "MD5-CRYPT",
        "BLF-CRYPT",
        "ARGON2I",
        "ARGON2ID",
    ] {
        let line = tool(crate::common::poplar_bin(), &["pw", "-s", scheme]);
        assert!(line.starts_with(&format!("{{{scheme}}}")), "{line}");
        let out = Command::new("doveadm")
            .args(["pw", "-t", &line, "-p", PASSWORD])
            .output()
            .unwrap();
        assert!(out.status.success(), "doveadm rejects {line}: {out:?}");
    }
}

#[test]
fn logins_over_the_wire_with_doveadm_and_mkpasswd_hashes() {
    let argon = tool("doveadm", &["pw", "-s", "ARGON2ID", "-p", PASSWORD]);
    let sha = tool("mkpasswd", &["-m", "sha512crypt", "--stdin"]);
    let users = format!("ann:{argon}\nben:{sha}\n");
    let m: &[u8] = b"Subject: x\n\nbody\n";
    let s = TestServer::start(&users, &[("ann", &mbox(&[m])), ("ben", &mbox(&[m]))]);
    for user in ["ann", "ben"] {
        let mut c = s.connect();
        c.login(user, PASSWORD);
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
}

/// Dovecot's digest schemes, each in its three encodings.
fn doveadm_digest_hashes() -> Vec<String> {
    let mut v = Vec::new();
    for scheme in ["SHA", "SSHA", "SHA256", "SSHA256", "SHA512", "SSHA512"] {
        for suffix in ["", ".HEX", ".B64"] {
            let name = format!("{scheme}{suffix}");
            let h = tool("doveadm", &["pw", "-s", &name, "-p", PASSWORD]);
            assert!(h.starts_with(&format!("{{{name}}}")), "{h}");
            v.push(h);
        }
    }
    v
}

#[test]
fn dovecot_digest_schemes_from_doveadm_verify_and_log_in() {
    let hashes = doveadm_digest_hashes();
    let file: String = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| format!("d{i}:{h}\n"))
        .collect();
    let (users, problems) = passwd::parse(file.as_bytes());
    assert!(problems.is_empty(), "{problems:?}");
    let gate = Gate::new(2);
    for (i, h) in hashes.iter().enumerate() {
        let name = format!("d{i}");
        let right = users.verify_password(name.as_bytes(), PASSWORD.as_bytes(), &gate);
        assert!(right.unwrap().is_some(), "{h} rejects the right password");
        let wrong = users.verify_password(name.as_bytes(), b"p\xc3\xa4 ss w0rd?", &gate);
        assert!(wrong.unwrap().is_none(), "{h} takes a wrong password");
    }
    let m: &[u8] = b"Subject: x\n\nbody\n";
    let s = TestServer::start(&file, &[("d4", &mbox(&[m]))]);
    let mut c = s.connect();
    c.login("d4", PASSWORD);
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
}

#[test]
fn poplar_pw_digest_output_is_accepted_by_doveadm() {
    for scheme in ["SHA", "SSHA", "SHA256", "SSHA256", "SHA512", "SSHA512"] {
        let line = tool(crate::common::poplar_bin(), &["pw", "-s", scheme]);
        assert!(line.starts_with(&format!("{{{scheme}}}")), "{line}");
        let out = Command::new("doveadm")
            .args(["pw", "-t", &line, "-p", PASSWORD])
            .output()
            .unwrap();
        assert!(out.status.success(), "doveadm rejects {line}: {out:?}");
    }
}
