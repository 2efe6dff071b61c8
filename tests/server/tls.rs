//! TLS end to end: implicit TLS and STLS with real clients (rustls, python poplib, curl,
//! openssl s_client), the STLS injection guard, the cleartext policy off loopback, stalled and
//! garbage handshakes, close_notify, and certificate reload on SIGHUP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{TestServer, mbox};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, StreamOwned};

const USERS: &str = "alice:{PLAIN}secret\n";
const MESSAGE: &[u8] = b"Subject: over TLS\n\nhello\n.dot line\n";

/// A test CA and a server certificate it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::certs::issue_certificates(dir.path(), "cert.pem", "key.pem");
        Pki { dir, ca }
    }

    /// Writes a new certificate from a new CA over `cert` and `key`; returns the CA.
    fn issue(&self, cert: &str, key: &str) -> CertificateDer<'static> {
        crate::certs::issue_certificates(self.dir.path(), cert, key)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self) -> poplar::config::TlsFiles {
        poplar::config::TlsFiles {
            cert: self.path("cert.pem"),
            key: self.path("key.pem"),
        }
    }
}

/// A server with a plain listener offering STLS and an implicit-TLS listener.
fn tls_server(pki: &Pki, tweak: impl FnOnce(&mut poplar::config::Config)) -> TestServer {
    let mail = mbox(&[MESSAGE]);
    TestServer::start_with(USERS, &[("alice", &mail)], |c| {
        c.tls = Some(pki.files());
        c.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        tweak(c);
    })
}

fn client_config(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A line-level POP3 client over rustls.
struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Runs the client handshake on `tcp`, trusting `ca`.
    fn handshake(tcp: TcpStream, ca: &CertificateDer<'static>) -> TlsClient {
        Self::handshake_with(tcp, client_config(ca, rustls::DEFAULT_VERSIONS))
    }

    fn handshake_with(mut tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> TlsClient {
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(config, name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        TlsClient {
            reader: BufReader::new(StreamOwned::new(conn, tcp)),
        }
    }

    /// Connects to an implicit-TLS port and reads the greeting.
    fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> TlsClient {
        let mut c = Self::handshake(tcp(addr), ca);
        assert!(c.line().starts_with("+OK "));
        c
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let s = self.reader.get_mut();
        s.write_all(bytes).unwrap();
        s.flush().unwrap();
    }

    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).unwrap();
        assert!(buf.ends_with(b"\r\n"), "line not CRLF-terminated: {buf:?}");
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).unwrap()
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// A multi-line reply's lines, terminator excluded.
    fn multi(&mut self, line: &str) -> Vec<String> {
        let first = self.cmd(line);
        assert!(first.starts_with("+OK"), "{line}: {first}");
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l == "." {
                return lines;
            }
            lines.push(l);
        }
    }

    /// Reads to the end: an error unless the server sent close_notify before closing.
    fn finish(mut self) -> std::io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).map(|_| rest)
    }

    fn peer_certificate(&self) -> CertificateDer<'static> {
        let conn = &self.reader.get_ref().conn;
        conn.peer_certificates().unwrap()[0].clone().into_owned()
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Connects in cleartext, reads the greeting, sends STLS and returns the plain socket
/// positioned for the handshake.
fn stls(addr: SocketAddr, after_stls: &[u8]) -> TcpStream {
    let mut s = tcp(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    let mut stls = b"STLS\r\n".to_vec();
    stls.extend_from_slice(after_stls);
    s.write_all(&stls).unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK begin TLS negotiation\r\n");
    assert!(
        r.buffer().is_empty(),
        "the server sent more than +OK before the handshake"
    );
    s
}

#[test]
fn implicit_tls_login_retrieve_and_close_notify_after_quit() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let mut c = TlsClient::connect(server.addrs[1], &pki.ca);
    let capa = c.multi("CAPA");
    assert!(capa.contains(&"USER".to_owned()), "{capa:?}");
    assert!(!capa.contains(&"STLS".to_owned()), "{capa:?}");
    assert_eq!(c.cmd("STLS"), "-ERR TLS is already active");
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS secret").starts_with("+OK 1 message "));
    assert_eq!(
        c.multi("RETR 1"),
        ["Subject: over TLS", "", "hello", "..dot line"]
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let rest = c.finish().expect("close_notify after QUIT's reply");
    assert!(rest.is_empty());
}

#[test]
fn tls_1_2_is_accepted() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let config = client_config(&pki.ca, &[&rustls::version::TLS12]);
    let mut c = TlsClient::handshake_with(tcp(server.addrs[1]), config);
    assert!(c.line().starts_with("+OK "));
    let version = c.reader.get_ref().conn.protocol_version();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn commands_sent_with_stls_never_run_after_the_handshake() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let s = stls(server.addr, b"USER alice\r\n");
    let mut c = TlsClient::handshake(s, &pki.ca);
    // Had the injected USER run, PASS would now try a login and its first reply would be
    // that USER's "+OK".
    assert_eq!(c.cmd("NOOP"), "-ERR NOOP not valid in this state");
    assert!(!c.cmd("PASS secret").starts_with("+OK"));
    let capa = c.multi("CAPA");
    assert!(!capa.contains(&"STLS".to_owned()), "{capa:?}");
    c.login_ok();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    c.finish().expect("close_notify after QUIT's reply");
}

impl TlsClient {
    fn login_ok(&mut self) {
        assert!(self.cmd("USER alice").starts_with("+OK"));
        let r = self.cmd("PASS secret");
        assert!(r.starts_with("+OK 1 message "), "{r}");
    }
}

#[test]
fn cleartext_login_refused_off_loopback_until_stls() {
    let pki = Pki::new();
    let server = tls_server(&pki, |c| {
        c.treat_as_remote = vec!["127.0.0.2".parse().unwrap()];
    });
    // From 127.0.0.2, which this server treats as a remote network.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut c = crate::common::Client {
        reader: BufReader::new(stream.try_clone().unwrap()),
        writer: stream,
        greeting: String::new(),
    };
    assert!(c.line().starts_with("+OK"));
    let capa = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(capa.contains("STLS\r\n"), "{capa}");
    assert!(!capa.contains("USER\r\n"), "{capa}");
    let refused = "-ERR [AUTH] cleartext login refused without TLS";
    assert_eq!(c.cmd("USER alice"), refused);
    assert_eq!(c.cmd("PASS secret"), refused);
    assert_eq!(c.cmd("STLS"), "+OK begin TLS negotiation");
    let mut t = TlsClient::handshake(c.writer, &pki.ca);
    assert!(t.multi("CAPA").contains(&"USER".to_owned()));
    t.login_ok();
    assert!(t.cmd("QUIT").starts_with("+OK"));

    // The same server still lets a loopback client log in without TLS.
    let mut c = server.connect();
    c.login("alice", "secret");
}

#[test]
fn stalled_trickling_and_garbage_handshakes_time_out_without_harming_others() {
    let pki = Pki::new();
    let server = tls_server(&pki, |c| c.tls_handshake_timeout = Duration::from_secs(1));
    let tls_addr = server.addrs[1];
    let started = Instant::now();
    let silent = tcp(tls_addr);
    let mut garbage = tcp(tls_addr);
    garbage.write_all(b"USER alice\r\nPASS secret\r\n").unwrap();
    // A TLS record header announcing a ClientHello, then one byte at a time: each read is
    // short, but the handshake as a whole still has to end within its deadline.
    let mut trickle = tcp(tls_addr);
    trickle.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let trickling = std::thread::spawn(move || {
        for _ in 0..100 {
            if trickle.write_all(&[0x01]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut rest = Vec::new();
        let _ = trickle.read_to_end(&mut rest);
        started.elapsed()
    });
    // Meanwhile a well-behaved client is served on both listeners.
    let mut good = TlsClient::connect(tls_addr, &pki.ca);
    good.login_ok();
    assert_eq!(good.multi("LIST"), ["1 39"]);
    let mut plain = server.connect();
    assert!(plain.cmd("CAPA").starts_with("+OK"));

    // The garbage gets a TLS alert (not a POP3 reply) and the connection ends.
    let answer = crate::common::Client {
        reader: BufReader::new(garbage.try_clone().unwrap()),
        writer: garbage,
        greeting: String::new(),
    }
    .rest();
    assert!(!answer.starts_with(b"+OK") && !answer.starts_with(b"-ERR"));
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
    let mut rest = Vec::new();
    (&silent).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the silent client got {rest:?}");
    let trickled = trickling.join().unwrap();
    assert!(
        trickled < Duration::from_secs(5),
        "a trickling client held its handshake for {trickled:?}"
    );
    assert!(good.cmd("QUIT").starts_with("+OK"));
}

/// Runs `python3 -c script args…`, asserting success; returns stdout.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

const POPLIB: &str = r#"
import poplib, ssl, sys
mode, host, port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if mode == "ssl":
    p = poplib.POP3_SSL(host, port, context=ctx)
else:
    p = poplib.POP3(host, port)
    assert "STLS" in p.capa(), p.capa()
    p.stls(context=ctx)
    assert "STLS" not in p.capa()
p.user("alice")
p.pass_("secret")
print(p.stat())
resp, lines, octets = p.retr(1)
print(b"\n".join(lines).decode())
print(p.quit().decode())
"#;

#[test]
fn python_poplib_pop3_ssl_and_stls() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let ca = pki.path("ca.pem");
    for (mode, addr) in [("ssl", server.addrs[1]), ("stls", server.addr)] {
        let port = addr.port().to_string();
        let out = python(POPLIB, &[mode, "localhost", &port, ca.to_str().unwrap()]);
        assert!(out.starts_with("(1, 39)\n"), "{mode}: {out}");
        assert!(
            out.contains("Subject: over TLS\n\nhello\n.dot line\n"),
            "{mode}: {out}"
        );
        assert!(out.contains("+OK"), "{mode}: {out}");
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", "alice:secret"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_pop3s_and_pop3_with_ssl_reqd() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let pop3s = format!("pop3s://127.0.0.1:{}/1", server.addrs[1].port());
    let pop3 = format!("pop3://127.0.0.1:{}/1", server.addr.port());
    let expected = "Subject: over TLS\r\n\r\nhello\r\n.dot line\r\n";
    assert_eq!(curl(&["--cacert", ca, &pop3s]), expected);
    assert_eq!(curl(&["--ssl-reqd", "--cacert", ca, &pop3]), expected);
    // With an unknown CA, curl refuses the server: the certificate really is checked.
    let other = Pki::new();
    let status = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", "alice:secret", "--cacert"])
        .arg(other.path("ca.pem"))
        .arg(&pop3s)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

#[test]
fn openssl_s_client_starttls_pop3() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not installed; skipped");
        return;
    }
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "pop3",
            "-crlf",
            "-ign_eof",
            "-verify_return_error",
        ])
        .arg("-connect")
        .arg(server.addr.to_string())
        .arg("-CAfile")
        .arg(pki.path("ca.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"USER alice\nPASS secret\nSTAT\nQUIT\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("+OK 1 39"), "{stdout}{stderr}");
}

/// The real binary, killed if a test fails before stopping it.
struct Poplar(std::process::Child);

impl Drop for Poplar {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the real binary with `--tls-cert`, `--tls-key` and an implicit-TLS listener on a
/// free port; returns the child and its TLS address (read from its log).
fn spawn_poplar(dir: &Path, pki: &Pki) -> (Poplar, SocketAddr, std::sync::mpsc::Receiver<String>) {
    std::fs::write(dir.join("users"), USERS).unwrap();
    std::fs::create_dir_all(dir.join("mail")).unwrap();
    std::fs::write(dir.join("mail/alice"), mbox(&[MESSAGE])).unwrap();
    let mut child = Command::new(crate::common::poplar_bin())
        .args(["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"])
        .arg("--users")
        .arg(dir.join("users"))
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .arg("--tls-cert")
        .arg(pki.path("cert.pem"))
        .arg("--tls-key")
        .arg(pki.path("key.pem"))
        .env("POPLAR_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut listening = Vec::new();
    while listening.len() < 2 {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        if let Some(addr) = line.split("listening on ").nth(1) {
            listening.push(addr.trim().parse::<SocketAddr>().unwrap());
        }
    }
    (Poplar(child), listening[1], rx)
}

/// Waits for a log line containing `needle`.
fn wait_for_log(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no log line with {needle:?}");
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_pair_is_broken() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut poplar, tls_addr, log) = spawn_poplar(dir.path(), &pki);
    let pid = poplar.0.id();
    let signal = |name: &str| {
        let ok = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let first = TlsClient::connect(tls_addr, &pki.ca).peer_certificate();

    // A renewed certificate from another CA: new connections get it.
    let new_ca = pki.issue("cert.pem", "key.pem");
    signal("-HUP");
    wait_for_log(&log, "reloaded the TLS certificate");
    let mut c = TlsClient::connect(tls_addr, &new_ca);
    let second = c.peer_certificate();
    assert_ne!(first, second);
    c.login_ok();
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // A certificate whose key does not match: logged, and the second pair stays in force.
    let _ = pki.issue("cert.pem", "other-key.pem");
    signal("-HUP");
    let why = wait_for_log(&log, "cannot reload the TLS certificate");
    assert!(why.contains("keeping the one loaded before"), "{why}");
    assert!(
        why.contains(&format!(
            "the private key in {} does not belong to the certificate in {}",
            pki.path("key.pem").display(),
            pki.path("cert.pem").display()
        )),
        "{why}"
    );
    let mut c = TlsClient::connect(tls_addr, &new_ca);
    assert_eq!(c.peer_certificate(), second);
    assert!(c.cmd("QUIT").starts_with("+OK"));

    signal("-TERM");
    assert!(poplar.0.wait().unwrap().success());
}

/// Starts the binary with `--tls-cert cert --tls-key key` and returns its exit code and
/// stderr: it must refuse to start.
fn refused_start(cert: &Path, key: &Path) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), USERS).unwrap();
    let out = Command::new(crate::common::poplar_bin())
        .args(["--listen", "127.0.0.1:0"])
        .arg("--users")
        .arg(dir.path().join("users"))
        .arg("--mail")
        .arg(format!("{}/%n", dir.path().display()))
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_key_that_is_not_the_certificates_or_is_broken_is_named_in_words_at_start() {
    let pki = Pki::new();
    let _ = pki.issue("other.pem", "other-key.pem");
    let (cert, key) = (pki.path("cert.pem"), pki.path("key.pem"));

    let (code, err) = refused_start(&cert, &pki.path("other-key.pem"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "the private key in {} does not belong to the certificate in {}",
            pki.path("other-key.pem").display(),
            cert.display()
        )),
        "{err}"
    );
    assert!(!err.contains("KeyMismatch"), "a rustls identifier: {err}");

    // A key file cut short: the key is named, not the certificate.
    let pem = std::fs::read(&key).unwrap();
    let broken = pki.path("broken-key.pem");
    std::fs::write(&broken, &pem[..pem.len() / 2]).unwrap();
    let (code, err) = refused_start(&cert, &broken);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "private key {}: the 'PRIVATE KEY' block has no END line",
            broken.display()
        )),
        "{err}"
    );
    assert!(!err.contains("certificate: "), "{err}");
    assert!(!err.contains("[80, 82"), "octets as numbers: {err}");

    // The certificate given as the key: no key in it.
    let (code, err) = refused_start(&cert, &cert);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "private key {}: no private key block",
            cert.display()
        )),
        "{err}"
    );

    // A broken certificate is the certificate's fault.
    let pem = std::fs::read(&cert).unwrap();
    let broken = pki.path("broken-cert.pem");
    std::fs::write(&broken, &pem[..pem.len() / 2]).unwrap();
    let (code, err) = refused_start(&broken, &key);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "certificate {}: the 'CERTIFICATE' block has no END line",
            broken.display()
        )),
        "{err}"
    );
    let (code, err) = refused_start(&pki.path("missing.pem"), &key);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.pem: No such file"), "{err}");
}
