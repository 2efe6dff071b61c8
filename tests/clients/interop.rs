//! The mail fetchers people run, against a real poplar on 127.0.0.1: fetchmail (keep and
//! no-keep, UIDL tracking, STLS and implicit TLS, USER/PASS, APOP and CRAM-MD5, delivery to an
//! MDA), getmail6 (plain and SSL retrievers, oldmail UIDL tracking, delete) and Python poplib's
//! APOP, RPOP and UTF8 paths. The binaries come from Debian (`make deps`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{TestServer, mbox};

const USERS: &str = "alice:{PLAIN}secret\n";

/// Messages the fetchers must pass through unchanged: dot lines, stored CRLF, 8-bit header and
/// body bytes, twins, a body line starting `From `.
const MESSAGES: [&[u8]; 5] = [
    b"From: a@example.com\nSubject: dots\n\n.leading\n.\n..double\nend\n",
    b"From: b@example.com\r\nSubject: crlf\r\n\r\nstored with CRLF\r\n.\r\n",
    b"From: c@example.com\nSubject: caf\xc3\xa9 8-bit\n\nna\xc3\xafve \xff byte\n",
    b"From: d@example.com\nSubject: twin\n\nsame\n",
    b"From: d@example.com\nSubject: twin\n\nsame\n",
];

/// fetchmail 6.4 checks certificates by default and then insists on STLS; an empty
/// `sslproto` is how its manual says to poll without TLS.
const PLAIN_KEEP: &str = "keep sslproto ''";
const PLAIN_NO_KEEP: &str = "no keep sslproto ''";

const LATE: &[u8] = b"From: e@example.com\nSubject: late\n\nhi\nFrom here on\nbye\n";

/// A message as a Unix-side client hands it on: every CRLF an LF.
fn unix(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// Asserts that `got` is `want` (LF line ends) with at most some header fields put in front
/// (fetchmail's Received:, getmail's Delivered-To:, Return-Path:, Received:).
fn assert_delivered(got: &[u8], want: &[u8], what: &str) {
    let got = unix(got);
    let want = unix(want);
    let shown = String::from_utf8_lossy(&got);
    assert!(got.ends_with(&want), "{what}: got\n{shown}");
    let added = &got[..got.len() - want.len()];
    assert!(
        added.is_empty() || (added.ends_with(b"\n") && !added.windows(2).any(|w| w == b"\n\n")),
        "{what}: more than header fields added:\n{shown}"
    );
}

/// Writes a fresh CA (ca.pem) and a certificate for localhost and 127.0.0.1 it signed
/// (cert.pem, key.pem) into `dir`.
fn pki(dir: &Path) -> poplar::config::TlsFiles {
    crate::certs::issue_certificates(dir, "cert.pem", "key.pem");
    poplar::config::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// A server for alice over MESSAGES; with `tls`, STLS on the plain port and an implicit-TLS
/// port (`addrs[1]`), certificates from `pki` in `tls`. It unquotes `>From ` lines, as
/// `poplar deliver` (mboxrd) wants, so the sizes clients check follow the unquoting.
fn server(tls: Option<&Path>) -> TestServer {
    let files = tls.map(pki);
    TestServer::start_with(USERS, &[("alice", &mbox(&MESSAGES))], |c| {
        c.mbox.view.unquote = true;
        if let Some(files) = files {
            c.tls = Some(files);
            c.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        }
    })
}

/// Appends LATE to alice's mailbox the way a mail system would.
fn deliver_late(s: &TestServer) {
    let (code, err) = crate::delivery::deliver(s.dir.path(), "alice", &[], LATE);
    assert_eq!(code, 0, "poplar deliver: {err}");
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The messages `write_mda`'s MDA stored in `dir`, oldest first.
fn received(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.parse::<u32>().unwrap()
    });
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Writes `dir/mda`, a delivery agent that stores each message it is given on stdin as the
/// next numbered file in `dir/out/`.
fn write_mda(dir: &Path) {
    std::fs::create_dir(dir.join("out")).unwrap();
    let mda = dir.join("mda");
    std::fs::write(
        &mda,
        format!(
            "#!/bin/sh\nd={}\nn=$(ls \"$d\" | wc -l)\ncat > \"$d/$n\"\n",
            dir.join("out").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&mda, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One fetchmail home: its rc file, UIDL file, and an MDA script that stores each message it
/// is given as the next numbered file in `out/`.
struct Fetchmail {
    home: tempfile::TempDir,
}

impl Fetchmail {
    fn new() -> Fetchmail {
        let home = tempfile::tempdir().unwrap();
        write_mda(home.path());
        Fetchmail { home }
    }

    /// Runs one fetchmail poll of `port` with `server` and `user` options (as in the rc file)
    /// and `--verbose`; returns its exit code and output. fetchmail exits 0 when it fetched
    /// mail, 1 when there was none.
    fn poll(&self, port: u16, server: &str, user: &str) -> (i32, String) {
        let home = self.home.path();
        let rc = home.join("fetchmailrc");
        let server = if server.contains("protocol") {
            server.to_owned()
        } else {
            format!("protocol pop3 {server}")
        };
        std::fs::write(
            &rc,
            format!(
                "set no syslog\n\
                 poll 127.0.0.1 service {port} {server}\n\
                 \tuser alice there with password \"secret\" is nobody here {user}\n\
                 \tmda \"{}\"\n",
                home.join("mda").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new("fetchmail")
            .arg("--fetchmailrc")
            .arg(&rc)
            .arg("--idfile")
            .arg(home.join("fetchids"))
            // As root fetchmail locks /var/run/fetchmail.pid, which parallel tests share.
            .arg("--pidfile")
            .arg(home.join("pid"))
            .args(["--nodetach", "--verbose", "--timeout", "20"])
            .env("HOME", home)
            .env("FETCHMAILHOME", home)
            .env("LC_ALL", "C")
            .output()
            .expect("fetchmail runs (make deps installs it)");
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn received(&self) -> Vec<Vec<u8>> {
        received(&self.home.path().join("out"))
    }
}

/// Asserts that fetchmail fetched (exit 0) and spoke `said` to the server.
fn fetched(result: &(i32, String), said: &str) {
    assert_eq!(result.0, 0, "fetchmail exit code; output:\n{}", result.1);
    assert!(
        result.1.contains(&format!("POP3> {said}")),
        "fetchmail never sent {said:?}:\n{}",
        result.1
    );
}

fn assert_all(got: &[Vec<u8>], want: &[&[u8]], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: message count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_delivered(g, w, &format!("{what}: message {}", i + 1));
    }
}

#[test]
fn fetchmail_keep_with_uidl_fetches_each_message_once() {
    let s = server(None);
    let f = Fetchmail::new();
    let first = f.poll(s.addr.port(), "uidl auth password", PLAIN_KEEP);
    fetched(&first, "UIDL");
    assert_all(&f.received(), &MESSAGES, "first poll");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), mbox(&MESSAGES));

    let again = f.poll(s.addr.port(), "uidl auth password", PLAIN_KEEP);
    assert_eq!(again.0, 1, "nothing new, fetchmail exits 1:\n{}", again.1);
    assert_eq!(f.received().len(), MESSAGES.len());

    deliver_late(&s);
    let late = f.poll(s.addr.port(), "uidl auth password", PLAIN_KEEP);
    // fetchmail reads kept mail with TOP n 99999999, not RETR (so as not to mark it seen).
    fetched(&late, "TOP 6 ");
    let all = f.received();
    assert_eq!(all.len(), MESSAGES.len() + 1, "only the new message came");
    assert_delivered(&all[MESSAGES.len()], LATE, "late message");
}

#[test]
fn fetchmail_no_keep_deletes_what_it_fetched() {
    let s = server(None);
    let f = Fetchmail::new();
    let result = f.poll(s.addr.port(), "auth password", PLAIN_NO_KEEP);
    fetched(&result, "DELE 5");
    assert_all(&f.received(), &MESSAGES, "no keep");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), b"");
    let empty = f.poll(s.addr.port(), "auth password", PLAIN_NO_KEEP);
    assert_eq!(empty.0, 1, "no mail left:\n{}", empty.1);
}

#[test]
fn fetchmail_logs_in_with_cram_md5_and_apop() {
    let s = server(None);
    let f = Fetchmail::new();
    fetched(
        &f.poll(s.addr.port(), "auth cram-md5", PLAIN_KEEP),
        "AUTH CRAM-MD5",
    );
    let apop = Fetchmail::new();
    let out = apop.poll(s.addr.port(), "protocol apop", PLAIN_KEEP);
    assert_eq!(out.0, 0, "{}", out.1);
    assert!(out.1.contains("POP3> APOP alice "), "{}", out.1);
    assert_all(&apop.received(), &MESSAGES, "APOP");
}

#[test]
fn fetchmail_over_stls_and_implicit_tls_checks_the_certificate() {
    let pki_dir = tempfile::tempdir().unwrap();
    let s = server(Some(pki_dir.path()));
    let ca = pki_dir.path().join("ca.pem");
    // fetchmail matches the name it polls against the certificate's CN and DNS names only,
    // not its IP address, so it is told which name to expect.
    let trust = format!(
        "sslcertck sslcertfile \"{}\" sslcommonname localhost",
        ca.display()
    );

    let stls = Fetchmail::new();
    let out = stls.poll(
        s.addr.port(),
        "auth password",
        &format!("keep sslproto TLS1.2+ {trust}"),
    );
    fetched(&out, "STLS");
    assert_all(&stls.received(), &MESSAGES, "STLS");

    let implicit = Fetchmail::new();
    let out = implicit.poll(
        s.addrs[1].port(),
        "auth password",
        &format!("no keep ssl sslproto TLS1.3 {trust}"),
    );
    fetched(&out, "DELE 1");
    assert_all(&implicit.received(), &MESSAGES, "implicit TLS");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), b"");

    // The same server, but a CA fetchmail was not told to trust: it must refuse.
    let other = tempfile::tempdir().unwrap();
    pki(other.path());
    let stranger = Fetchmail::new();
    let out = stranger.poll(
        s.addrs[1].port(),
        "auth password",
        &format!(
            "keep ssl sslcertck sslcertfile \"{}\" sslcommonname localhost",
            other.path().join("ca.pem").display()
        ),
    );
    assert_ne!(
        out.0, 0,
        "an untrusted certificate was accepted:\n{}",
        out.1
    );
    assert!(stranger.received().is_empty());
}

/// One getmail6 directory (its oldmail files) with an external MDA as the destination
/// (getmail refuses to write a Maildir as root; `allow_root_commands` lets the MDA run).
struct Getmail {
    dir: tempfile::TempDir,
}

impl Getmail {
    fn new() -> Getmail {
        let dir = tempfile::tempdir().unwrap();
        write_mda(dir.path());
        Getmail { dir }
    }

    /// Runs getmail with a `[retriever]` of `retriever` lines and `[options]` of `options`.
    fn run(&self, retriever: &str, options: &str) -> (i32, String) {
        let dir = self.dir.path();
        let rc = dir.join("getmailrc");
        std::fs::write(
            &rc,
            format!(
                "[retriever]\n{retriever}\nusername = alice\npassword = secret\n\n\
                 [destination]\ntype = MDA_external\npath = {}/mda\n\
                 allow_root_commands = true\nunixfrom = false\n\n\
                 [options]\nverbose = 2\n{options}\n",
                dir.display()
            ),
        )
        .unwrap();
        let out = Command::new("getmail")
            .arg("--getmaildir")
            .arg(dir)
            .arg("--rcfile")
            .arg(&rc)
            .env("HOME", dir)
            .output()
            .expect("getmail runs (make deps installs it)");
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn received(&self) -> Vec<Vec<u8>> {
        received(&self.dir.path().join("out"))
    }
}

#[test]
fn getmail_read_all_false_fetches_new_messages_once() {
    let s = server(None);
    let g = Getmail::new();
    let retriever = format!(
        "type = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {}",
        s.addr.port()
    );
    let options = "read_all = false\ndelete = false";
    let first = g.run(&retriever, options);
    assert_eq!(first.0, 0, "{}", first.1);
    assert_all(&g.received(), &MESSAGES, "getmail first run");

    let again = g.run(&retriever, options);
    assert_eq!(again.0, 0, "{}", again.1);
    assert_eq!(g.received().len(), MESSAGES.len(), "{}", again.1);

    deliver_late(&s);
    let late = g.run(&retriever, options);
    assert_eq!(late.0, 0, "{}", late.1);
    let all = g.received();
    assert_eq!(all.len(), MESSAGES.len() + 1, "{}", late.1);
    assert!(
        all.iter().any(|m| unix(m).ends_with(LATE)),
        "late message missing"
    );
    let mut c = s.connect();
    c.login("alice", "secret");
    assert!(c.cmd("STAT").starts_with("+OK 6 "), "nothing deleted");
}

#[test]
fn getmail_over_ssl_with_delete_empties_the_mailbox() {
    let pki_dir = tempfile::tempdir().unwrap();
    let s = server(Some(pki_dir.path()));
    let g = Getmail::new();
    let retriever = format!(
        "type = SimplePOP3SSLRetriever\nserver = localhost\nport = {}\nca_certs = {}",
        s.addrs[1].port(),
        pki_dir.path().join("ca.pem").display()
    );
    let out = g.run(&retriever, "read_all = true\ndelete = true");
    assert_eq!(out.0, 0, "{}", out.1);
    assert_all(&g.received(), &MESSAGES, "getmail SSL");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), b"");
}

#[test]
fn getmail_logs_in_with_apop() {
    let s = server(None);
    let g = Getmail::new();
    let retriever = format!(
        "type = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {}\nuse_apop = true",
        s.addr.port()
    );
    let out = g.run(&retriever, "read_all = true\ndelete = false");
    assert_eq!(out.0, 0, "{}", out.1);
    assert_all(&g.received(), &MESSAGES, "getmail APOP");
}

#[test]
fn python_poplib_apop_rpop_and_utf8() {
    let s = server(None);
    let script = r#"
import poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=20)
for name, call in (("rpop", lambda: p.rpop("alice")), ("utf8", p.utf8)):
    try:
        call()
        print(name, "accepted")
    except poplib.error_proto as e:
        print(name, e.args[0].decode("ascii", "replace").split(" ")[0])
print("capa", " ".join(sorted(p.capa())))
print(p.apop("alice", "secret").decode())
print(len(p.list()[1]))
print("--")
sys.stdout.flush()
for i in range(1, 6):
    sys.stdout.buffer.write(b"\n".join(p.retr(i)[1]) + b"\n\0")
p.quit()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(s.addr.ip().to_string())
        .arg(s.addr.port().to_string())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = &out.stdout;
    let split = stdout
        .windows(3)
        .position(|w| w == b"--\n")
        .expect("marker line")
        + 3;
    let head = String::from_utf8_lossy(&stdout[..split]).into_owned();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("rpop -ERR"), "{head}");
    assert_eq!(lines.next(), Some("utf8 -ERR"), "{head}");
    let capa = lines.next().unwrap();
    assert!(
        !capa.contains("UTF8"),
        "UTF8 offered but not spoken: {capa}"
    );
    assert!(lines.next().unwrap().starts_with("+OK"), "{head}");
    assert_eq!(lines.next(), Some("5"), "{head}");
    let bodies: Vec<&[u8]> = stdout[split..].split(|&b| b == 0).collect();
    for (i, want) in MESSAGES.iter().enumerate() {
        assert_eq!(bodies[i], unix(want), "poplib RETR {}", i + 1);
    }
}
