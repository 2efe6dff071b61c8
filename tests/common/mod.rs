//! Shared harness for loopback tests: a real poplar on 127.0.0.1:0 over real mbox files in a
//! temporary directory, and a small line-level POP3 client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use poplar::config::Config;
use poplar::mailbox::template::MailTemplate;
use poplar::server::{Server, ShutdownHandle};

/// A poplar server running in this process until dropped.
pub struct TestServer {
    /// Where it listens (the first `--listen` address).
    pub addr: SocketAddr,
    /// Every bound address: the `--listen` ones, then the `--listen-tls` ones.
    pub addrs: Vec<SocketAddr>,
    /// The temporary directory holding `users` and `mail/<user>`.
    pub dir: tempfile::TempDir,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `users` (passwd-file text) and the given mailboxes.
    pub fn start(users: &str, mailboxes: &[(&str, &[u8])]) -> TestServer {
        Self::start_with(users, mailboxes, |_| {})
    }

    /// Like `start`, with a chance to change the configuration first.
    pub fn start_with(
        users: &str,
        mailboxes: &[(&str, &[u8])],
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), users).unwrap();
        std::fs::create_dir(dir.path().join("mail")).unwrap();
        for (user, mbox) in mailboxes {
            std::fs::write(dir.path().join("mail").join(user), mbox).unwrap();
        }
        let template = format!("{}/mail/%n", dir.path().display());
        let mut config = Config::new(
            dir.path().join("users"),
            MailTemplate::parse(&template).unwrap(),
        );
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.auth_failure_delay = Duration::from_millis(50);
        config.shutdown_grace = Duration::from_millis(200);
        tweak(&mut config);
        let server = Server::from_config(&config).unwrap();
        let addrs = server.local_addrs();
        let addr = addrs[0];
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run().unwrap());
        TestServer {
            addr,
            addrs,
            dir,
            handle,
            thread: Some(thread),
        }
    }

    /// The mbox file of `user`.
    pub fn mbox(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Connects and reads the greeting.
    pub fn connect(&self) -> Client {
        let mut c = Client::connect(self.addr);
        let greeting = c.line();
        assert!(greeting.starts_with("+OK "), "{greeting}");
        c.greeting = greeting;
        c
    }

    /// Stops the server and waits for it.
    pub fn stop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A line-level POP3 client.
pub struct Client {
    /// The buffered read side.
    pub reader: BufReader<TcpStream>,
    /// The write side.
    pub writer: TcpStream,
    /// The greeting line.
    pub greeting: String,
}

impl Client {
    /// Connects, without reading the greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
            greeting: String::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one reply line without its CRLF (which it asserts).
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).unwrap();
        assert!(buf.ends_with(b"\r\n"), "line not CRLF-terminated: {buf:?}");
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).unwrap()
    }

    /// Sends a command line and returns the reply's first line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads a multi-line body up to the terminator and undoes dot-stuffing.
    pub fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            self.reader.read_until(b'\n', &mut buf).unwrap();
            assert!(
                buf.ends_with(b"\r\n"),
                "body line not CRLF-terminated: {buf:?}"
            );
            if buf == b".\r\n" {
                return out;
            }
            let line = if buf.starts_with(b".") {
                &buf[1..]
            } else {
                &buf[..]
            };
            out.extend_from_slice(line);
        }
    }

    /// Sends a command expecting `+OK` and a multi-line body; returns the body.
    pub fn multi(&mut self, line: &str) -> Vec<u8> {
        let first = self.cmd(line);
        assert!(first.starts_with("+OK"), "{line}: {first}");
        self.body()
    }

    /// USER and PASS, asserting success.
    pub fn login(&mut self, user: &str, pass: &str) {
        assert!(self.cmd(&format!("USER {user}")).starts_with("+OK"));
        let r = self.cmd(&format!("PASS {pass}"));
        assert!(r.starts_with("+OK"), "login {user}: {r}");
    }

    /// Reads until the server closes the connection; returns what came.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.reader.read_to_end(&mut out);
        out
    }
}

/// Builds an mbox from (From_ line sender, message bytes) pairs, LF line ends, each message
/// followed by a blank line.
pub fn mbox(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(b"From sender@example.com Thu Nov 26 09:00:00 2026\n");
        out.extend_from_slice(m);
        if !m.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// A poplar server running as its own process over `dir/users` and `dir/mail/%n`: for
/// crash points, two servers on one mailbox, and memory measured from /proc.
pub struct ServerProcess {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `poplar` with `extra` arguments and `env`, waiting until it listens.
    pub fn spawn(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_poplar"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--users")
            .arg(dir.join("users"))
            .arg("--mail")
            .arg(format!("{}/mail/%n", dir.display()))
            .arg("--auth-delay")
            .arg("0.05")
            .arg("--shutdown-grace")
            .arg("0.2")
            .args(extra)
            .env("POPLAR_LOG", "info")
            .env_remove("POPLAR_FAULT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let addr = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "poplar exited before listening: {}",
                log.lock().unwrap()
            );
            log.lock().unwrap().push_str(&line);
            if let Some(a) = line.trim_end().split("listening on ").nth(1) {
                break a.parse().unwrap();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        ServerProcess { child, addr, log }
    }

    /// Connects and reads the greeting.
    pub fn connect(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.greeting = c.line();
        assert!(c.greeting.starts_with("+OK "), "{}", c.greeting);
        c
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the process to end by itself (a crash point) and returns whether it was
    /// killed by a signal.
    pub fn wait_for_crash(mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        status.signal().is_some()
    }

    /// The server's peak resident memory (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory laid out for `ServerProcess`: `users` and `mail/<user>` files.
pub fn mail_dir(users: &str, mailboxes: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), users).unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    for (user, mbox) in mailboxes {
        std::fs::write(dir.path().join("mail").join(user), mbox).unwrap();
    }
    dir
}

/// Runs `poplar deliver --mail <dir>/mail/%n [args] USER` with `message` on stdin; returns
/// the exit code and stderr.
pub fn deliver(dir: &std::path::Path, user: &str, args: &[&str], message: &[u8]) -> (i32, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_poplar"))
        .arg("deliver")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .args(args)
        .arg(user)
        .env_remove("POPLAR_FAULT")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(message);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Logs in and returns UIDL's unique-ids in order.
pub fn uidl(c: &mut Client) -> Vec<String> {
    let body = c.multi("UIDL");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

/// A small tmpfs mounted over a directory (for real ENOSPC), unmounted on drop.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` over `dir`; `None` if this process may not mount (not root).
    pub fn mount(dir: &std::path::Path, bytes: usize) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Retrieves every message of `user` with Python's poplib (LIST, RETR each, QUIT); returns
/// each as poplib's lines joined with LF.
pub fn poplib_retrieve(addr: SocketAddr, user: &str, pass: &str) -> Vec<Vec<u8>> {
    let script = format!(
        "import poplib, sys\n\
         p = poplib.POP3('127.0.0.1', {port})\n\
         p.user('{user}'); p.pass_('{pass}')\n\
         n = len(p.list()[1])\n\
         for i in range(1, n + 1):\n\
         \x20   lines = p.retr(i)[1]\n\
         \x20   body = b''.join(l + b'\\n' for l in lines)\n\
         \x20   sys.stdout.buffer.write(b'%d\\n' % len(body) + body)\n\
         p.quit()\n",
        port = addr.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest = &out.stdout[..];
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let len: usize = std::str::from_utf8(&rest[..nl]).unwrap().parse().unwrap();
        messages.push(rest[nl + 1..nl + 1 + len].to_vec());
        rest = &rest[nl + 1 + len..];
    }
    messages
}

/// Writes a fresh CA (as ca.pem) and a leaf certificate it signed for localhost and
/// 127.0.0.1, with its key, under the given names in `dir`; returns the CA certificate.
pub fn issue_certificates(
    dir: &std::path::Path,
    cert: &str,
    key: &str,
) -> rustls::pki_types::CertificateDer<'static> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names, or OpenSSL takes the leaf for a self-signed certificate.
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "poplar test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join(cert), leaf.pem()).unwrap();
    std::fs::write(dir.join(key), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    ca_cert.der().clone()
}
