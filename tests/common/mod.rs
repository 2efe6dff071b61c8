//! Shared harness for loopback tests: a real poplar on 127.0.0.1:0 over real mbox files in a
//! temporary directory, and a small line-level POP3 client. Each test binary (tests/server,
//! tests/storage, tests/clients, tests/hostile.rs) compiles it as its module `common`; the
//! server binary uses all of it, so a helper no test uses still draws a warning there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use poplar::config::Config;
use poplar::mailbox::template::MailTemplate;
use poplar::server::{Server, ShutdownHandle};

/// The poplar binary the tests that spawn one drive: the one `POPLAR_BIN` names (`make test`
/// points it at the static release build, the binary that ships), else the one cargo built
/// beside these tests.
pub fn poplar_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("POPLAR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_poplar").to_owned())
    })
}

/// A poplar server running in this process until dropped.
pub struct TestServer {
    /// Where it listens (the first `--listen` address).
    pub addr: SocketAddr,
    /// Every bound address: the `--listen` ones, then the `--listen-tls` ones. Only the TLS
    /// tests read it, and the storage binary has none.
    #[allow(dead_code)]
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

    /// Reads until the server closes the connection; returns what came. The clients binary
    /// has no test that waits for a close.
    #[allow(dead_code)]
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
