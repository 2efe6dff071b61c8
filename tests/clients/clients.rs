//! Real clients against a real poplar: Python's poplib and curl's `pop3://`.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{TestServer, mbox};

/// Messages with the lines clients trip over: dots, a lone dot, stored CRLF, an empty body,
/// byte-identical twins, a body line starting `From `.
const MESSAGES: [&[u8]; 6] = [
    b"Subject: dots\n\n.leading\n.\n..double\nend\n",
    b"Subject: crlf\r\n\r\nstored with CRLF\r\n.\r\n",
    b"Subject: empty\n\n",
    b"Subject: twin\n\nsame\n",
    b"Subject: twin\n\nsame\n",
    b"Subject: from\n\nhi\nFrom here on\nbye\n",
];

/// A message as a client must receive it: every LF a CRLF.
fn sent(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in stored.iter().enumerate() {
        if b == b'\n' && (i == 0 || stored[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn server() -> TestServer {
    // Already set by an earlier test in this binary: that one serves.
    if log::set_logger(&ServerLog).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    TestServer::start("alice:{PLAIN}secret\n", &[("alice", &mbox(&MESSAGES))])
}

/// What every server in this test binary logged, each line stamped with the UTC time of day,
/// so that a failure shows the server's side of the dialogue. curl's `--trace-time` stamps
/// can be off from these by up to a second: compare gaps within each, not clocks.
static SERVER_LOG: Mutex<String> = Mutex::new(String::new());

struct ServerLog;

impl log::Log for ServerLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("poplar")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let secs = now.as_secs() % 86_400;
        let line = format!(
            "{:02}:{:02}:{:02}.{:06} {} {}\n",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            now.subsec_micros(),
            record.level(),
            record.args()
        );
        SERVER_LOG
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(&line);
    }

    fn flush(&self) {}
}

/// The client's output if it succeeded; otherwise a panic with what it printed (curl's is
/// the whole dialogue, timed) and what the servers logged.
fn check(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}\nserver log (every server in this test binary):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        SERVER_LOG.lock().unwrap_or_else(PoisonError::into_inner)
    );
    stdout
}

#[test]
fn python_poplib_fetches_every_message_byte_for_byte_and_deletes_them() {
    let s = server();
    let outdir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/poplib_fetch.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&s.addr.ip().to_string(), &s.addr.port().to_string()])
        .args(["alice", "secret"])
        .arg(outdir.path())
        .output()
        .expect("python3 runs (make deps checks it)");
    let report = check(&out, "poplib");
    let mut lines = report.lines();
    let total: usize = MESSAGES.iter().map(|m| sent(m).len()).sum();
    assert_eq!(
        lines.next(),
        Some(format!("stat {} {total}", MESSAGES.len()).as_str())
    );
    let mut uids = Vec::new();
    for (i, m) in MESSAGES.iter().enumerate() {
        let n = i + 1;
        let want = sent(m);
        let got = std::fs::read(outdir.path().join(n.to_string())).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "message {n}"
        );
        let fields: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let size = want.len().to_string();
        assert_eq!(fields[..3], [n.to_string(), size.clone(), size], "{n}");
        uids.push(fields[3].to_owned());
    }
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), MESSAGES.len(), "distinct UIDLs, twins too");
    assert_eq!(lines.next(), Some("+OK bye, 0 messages left"));
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), b"");
}

/// Runs curl against `s`, its stderr the timed dialogue (for [`check`]'s failure message).
fn curl(s: &TestServer, path: &str, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--verbose", "--trace-time"])
        .args(["--max-time", "20"])
        .args(["--user", "alice:secret"])
        .arg(format!("pop3://{}/{path}", s.addr))
        .args(extra)
        .output()
        .expect("curl runs (make deps installs it)")
}

#[test]
fn curl_lists_and_retrieves() {
    let s = server();
    let listing: String = MESSAGES
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, sent(m).len()))
        .collect();
    assert_eq!(check(&curl(&s, "", &[]), "curl LIST"), listing);
    for (i, m) in MESSAGES.iter().enumerate() {
        let n = i + 1;
        let by_url = curl(&s, &n.to_string(), &[]);
        check(&by_url, "curl RETR by URL");
        assert_eq!(by_url.stdout, sent(m), "curl pop3://.../{n}");
        let by_request = curl(&s, "", &["--request", &format!("RETR {n}")]);
        check(&by_request, "curl --request RETR");
        assert_eq!(by_request.stdout, sent(m), "curl --request 'RETR {n}'");
    }
    let top = check(&curl(&s, "", &["-X", "TOP 1 1"]), "curl TOP");
    assert_eq!(top, "Subject: dots\r\n\r\n.leading\r\n");
    let uidl = check(&curl(&s, "", &["-X", "UIDL"]), "curl UIDL");
    assert_eq!(uidl.lines().count(), MESSAGES.len(), "{uidl}");
    assert_eq!(
        std::fs::read(s.mbox("alice")).unwrap(),
        mbox(&MESSAGES),
        "reading changes nothing"
    );
}

#[test]
fn curl_deletes() {
    let s = server();
    // DELE has a one-line reply, so curl must not wait for a body: -I / --head.
    check(&curl(&s, "", &["-X", "DELE 1", "-I"]), "curl -X DELE");
    assert_eq!(
        std::fs::read(s.mbox("alice")).unwrap(),
        mbox(&MESSAGES[1..])
    );
    check(
        &curl(&s, "", &["--request", "DELE 3", "--head"]),
        "curl --request DELE",
    );
    let left: Vec<&[u8]> = [&MESSAGES[1..3], &MESSAGES[4..]].concat();
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), mbox(&left));
    let listing = check(&curl(&s, "", &[]), "curl LIST");
    assert_eq!(listing.lines().count(), left.len(), "{listing}");
}
