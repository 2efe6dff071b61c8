//! The development server's sessions log and POP3 fault injection, seen by real clients:
//! Python's poplib and raw sockets over POP3, curl for `/api/v1/sessions` and
//! `/api/v1/faults`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Client;
use crate::devserver::Dev;

/// curl's status code and body for `method` on `path`, with `data` as the request body.
fn curl(dev: &Dev, method: &str, path: &str, data: Option<&str>) -> (u16, String) {
    let url = format!("http://{}{path}", dev.http);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", &url]);
    if data.is_some() {
        cmd.args([
            "--data-binary",
            "@-",
            "-H",
            "Content-Type: application/json",
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs (make deps installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(d) = data {
        stdin.write_all(d.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The sessions log, parsed.
fn sessions(dev: &Dev) -> Vec<Value> {
    let (code, body) = curl(dev, "GET", "/api/v1/sessions", None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.as_array().unwrap().clone()
}

/// The sessions log once `n` sessions have ended (a session's end is logged just after the
/// client sees its last answer).
fn ended_sessions(dev: &Dev, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = sessions(dev);
        if all.iter().filter(|s| !s["ending"].is_null()).count() >= n {
            return all;
        }
        assert!(Instant::now() < deadline, "sessions did not end: {all:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a Python script with `args`; its stdout, asserting it succeeded.
fn python(script: &str, args: &[String]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (make deps checks it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A mail directory where `user` has `n` messages.
fn mail_dir(dir: &Path, user: &str, n: usize) -> std::path::PathBuf {
    let mail = dir.join("mail");
    std::fs::create_dir(&mail).unwrap();
    let mut mbox = Vec::new();
    for i in 1..=n {
        mbox.extend_from_slice(
            format!(
                "From a@x Thu Nov 26 09:00:00 2026\nFrom: a@x\nSubject: m{i}\n\n\
                 line one of message {i}\nline two of message {i}\n\n"
            )
            .as_bytes(),
        );
    }
    std::fs::write(mail.join(user), mbox).unwrap();
    mail
}

fn command_list(session: &Value) -> Vec<String> {
    session["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let code = c["code"]
                .as_str()
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default();
            format!(
                "{} {}{code}",
                c["command"].as_str().unwrap(),
                c["status"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn the_sessions_log_shows_commands_codes_and_what_clients_trip_on() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&mail_dir(dir.path(), "ann", 2), &[]);

    // poplib: RETR without LIST, DELE without UIDL, then gone without QUIT; meanwhile a
    // second login to the same mailbox is refused IN-USE.
    let script = r#"
import poplib, sys
port = int(sys.argv[1])
p = poplib.POP3("127.0.0.1", port, timeout=20)
p.user("ann"); p.pass_("poplar")
p.retr(1)
p.dele(2)
q = poplib.POP3("127.0.0.1", port, timeout=20)
q.user("ann")
try:
    q.pass_("poplar")
except poplib.error_proto as e:
    print(e.args[0].decode())
q.quit()
p.sock.close()
"#;
    let out = python(script, &[dev.pop3.port().to_string()]);
    assert!(out.starts_with("-ERR [IN-USE]"), "{out}");

    // A client that sends everything at once: pipelined.
    let mut c = Client::connect(dev.pop3);
    c.line();
    c.send_raw(b"USER bob\r\nPASS poplar\r\nUIDL\r\nQUIT\r\n");
    let _ = c.rest();

    let all = ended_sessions(&dev, 3);
    assert_eq!(all.len(), 3, "{all:?}");
    let (first, second, third) = (&all[0], &all[1], &all[2]);
    assert_eq!(first["user"], "ann");
    assert_eq!(
        first["client"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    assert_eq!(
        command_list(first),
        ["USER ann +OK", "PASS *** +OK", "RETR 1 +OK", "DELE 2 +OK"]
    );
    assert_eq!(first["retrieved"], serde_json::json!([1]));
    assert_eq!(first["deleted"], serde_json::json!([2]));
    assert_eq!(first["committed"], 0);
    assert_eq!(first["ending"], "disconnected");
    assert_eq!(
        first["flags"],
        serde_json::json!({"deleted_without_uidl": true, "retrieved_without_list": true,
            "no_quit": true, "pipelined": false})
    );
    assert!(first["ended_ms"].as_u64() >= first["started_ms"].as_u64());

    assert_eq!(
        command_list(second),
        ["USER ann +OK", "PASS *** -ERR [IN-USE]", "QUIT +OK"]
    );
    assert_eq!(second["logged_in"], false);
    assert_eq!(second["flags"]["no_quit"], false);

    assert_eq!(third["user"], "bob");
    assert_eq!(third["flags"]["pipelined"], true);
    assert_eq!(third["commands"][0]["pipelined"], false);
    assert_eq!(third["commands"][3]["pipelined"], true);
    assert_eq!(third["ending"], "quit");

    // The page lists them, newest first.
    let (code, page) = curl(&dev, "GET", "/", None);
    assert_eq!(code, 200);
    let row = |s: &Value| page.find(&format!("data-session=\"{}\"", s["id"])).unwrap();
    let (bob, ann) = (row(third), row(first));
    assert!(bob < ann, "{page}");
    assert!(page.contains("deleted without UIDL, retrieved without LIST, no QUIT"));
    assert!(!page.contains("PASS poplar"));
}
