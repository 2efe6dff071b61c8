//! `--dev-smtp`: Python's smtplib sends to the development server, poplib retrieves the same
//! octets; a message over the size limit, to a name that cannot be a mailbox, or cut off
//! before its final dot is refused and nothing is appended.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::devserver::Dev;

/// Sends with smtplib (logging in, as applications configured with credentials do), then
/// retrieves every message of each POP3 user with poplib; prints `user n hex(message)`.
const SEND_AND_FETCH: &str = r#"
import poplib, smtplib, sys
smtp_port, pop_port = int(sys.argv[1]), int(sys.argv[2])
msg = sys.stdin.buffer.read()
with smtplib.SMTP("127.0.0.1", smtp_port, timeout=20) as s:
    s.ehlo()
    assert s.has_extn("size") and s.has_extn("pipelining") and s.has_extn("8bitmime")
    s.login("app", "whatever")
    refused = s.sendmail("app@example.com", ["alice@example.com", "bob@elsewhere.test", "Alice@example.com"], msg,
                         mail_options=["BODY=8BITMIME"])
    assert refused == {}, refused
for user in ("alice", "bob", "Alice"):
    p = poplib.POP3("127.0.0.1", pop_port, timeout=20)
    p.user(user); p.pass_("poplar")
    count, _ = p.stat()
    for n in range(1, count + 1):
        _, lines, _ = p.retr(n)
        print(user, n, b"".join(l + b"\r\n" for l in lines).hex())
    p.quit()
"#;

#[test]
fn smtplib_sends_and_poplib_gets_the_same_octets_once_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("mail"), &[]);
    let message: &[u8] = b"From: App <app@example.com>\r\nTo: alice@example.com\r\n\
        Subject: caf\xc3\xa9\r\n\r\nHello.\r\n.leading dot\r\n.\r\nFrom here on\r\n\
        >From quoted\r\nbare\rcr\r\nend\r\n";
    let mut py = Command::new("python3")
        .args(["-c", SEND_AND_FETCH])
        .args([dev.smtp.port().to_string(), dev.pop3.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (make deps checks it)");
    py.stdin.take().unwrap().write_all(message).unwrap();
    let out = py.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<(&str, Vec<u8>)> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let bytes = (0..f[2].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&f[2][i..i + 2], 16).unwrap())
                .collect();
            (f[0], bytes)
        })
        .collect();
    let users: Vec<&str> = got.iter().map(|(u, _)| *u).collect();
    // alice@ twice is one copy; Alice@ is another mailbox (names are case-sensitive).
    assert_eq!(users, ["alice", "bob", "Alice"]);
    for (user, bytes) in &got {
        assert_eq!(
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(message),
            "{user}"
        );
    }
    let stored = std::fs::read(dir.path().join("mail/alice")).unwrap();
    assert!(
        stored.starts_with(b"From app@example.com "),
        "the envelope sender"
    );
    assert!(
        !std::fs::read_dir(dir.path().join("mail"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains("spool"))
    );
}

/// Speaks SMTP line by line; returns each reply's first line.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut raw = Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        assert!(raw.reply().starts_with("220 "));
        raw
    }

    /// The last line of a reply (multi-line replies have `-` after the code).
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }
}

#[test]
fn too_big_bad_names_and_cut_off_messages_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let dev = Dev::start(&mail, &["--dev-smtp-max-size", "100"]);
    let mut c = Raw::connect(dev.smtp);
    assert!(c.cmd("EHLO test").starts_with("250 "));
    assert!(c.cmd("MAIL FROM:<a@x> SIZE=101").starts_with("552 5.3.4"));
    assert!(c.cmd("MAIL FROM:<>").starts_with("250 "));
    let bad = c.cmd("RCPT TO:<.hidden@x>");
    assert!(
        bad.starts_with("550 5.1.3 '.hidden' cannot be a mailbox name"),
        "{bad}"
    );
    assert!(c.cmd("RCPT TO:<carol@x>").starts_with("250 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    let body = format!("Subject: big\r\n\r\n{}\r\n.", "x".repeat(200));
    assert!(c.cmd(&body).starts_with("552 5.3.4"));
    // Refused after DATA: the transaction is over, and the session goes on.
    assert!(c.cmd("MAIL FROM:<a@x>").starts_with("250 "));
    assert!(c.cmd("RCPT TO:<carol@x>").starts_with("250 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    c.w.write_all(b"Subject: half\r\n\r\nnever finished\r\n")
        .unwrap();
    drop(c);
    let carol = mail.join("carol");

    let mut c = Raw::connect(dev.smtp);
    c.cmd("HELO test");
    c.cmd("MAIL FROM:<a@x>");
    c.cmd("RCPT TO:<carol@x>");
    c.cmd("DATA");
    assert!(
        c.cmd("Subject: small\r\n\r\nok\r\n.")
            .starts_with("250 2.0.0")
    );
    assert!(c.cmd("QUIT").starts_with("221 "));
    let mut stored = String::new();
    std::fs::File::open(&carol)
        .unwrap()
        .read_to_string(&mut stored)
        .unwrap();
    // Only the finished message: the one cut off before its dot, and the one too big, are not.
    assert!(
        stored.starts_with("From a@x ") && stored.ends_with("\nok\n\n"),
        "{stored}"
    );
    assert_eq!(stored.matches("From ").count(), 1, "{stored}");
}
