//! The development server's sessions log and POP3 fault injection, seen by real clients:
//! Python's poplib and raw sockets over POP3, curl for `/api/v1/sessions` and
//! `/api/v1/faults`, chromium for the page.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Client;
use crate::dev_api::rendered_dom;
use crate::devserver::Dev;

/// curl's status code and body for `method` on `path`, with `data` as the request body.
pub(crate) fn curl(dev: &Dev, method: &str, path: &str, data: Option<&str>) -> (u16, String) {
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
pub(crate) fn ended_sessions(dev: &Dev, n: usize) -> Vec<Value> {
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
pub(crate) fn python(script: &str, args: &[String]) -> String {
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
pub(crate) fn mail_dir(dir: &Path, user: &str, n: usize) -> std::path::PathBuf {
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

pub(crate) fn command_list(session: &Value) -> Vec<String> {
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

    // The page, as chromium renders it, lists them newest first.
    let page = rendered_dom(&format!("http://{}/", dev.http));
    let row = |s: &Value| page.find(&format!("data-session=\"{}\"", s["id"])).unwrap();
    let (bob, ann) = (row(third), row(first));
    assert!(bob < ann, "{page}");
    assert!(page.contains("deleted without UIDL, retrieved without LIST, no QUIT"));
    assert!(page.contains("<code>DELE 2</code> +OK"), "{page}");
    assert!(
        page.contains("<code>PASS ***</code> -ERR [IN-USE]"),
        "{page}"
    );
    assert!(!page.contains("PASS poplar"));
}

/// A mail directory where each of `users` has two messages.
fn mail_dirs(dir: &Path, users: &[&str]) -> std::path::PathBuf {
    let mail = mail_dir(dir, users[0], 2);
    for u in &users[1..] {
        std::fs::copy(mail.join(users[0]), mail.join(u)).unwrap();
    }
    mail
}

/// Starts `poplar --dev` in a directory under `dir` with the fault rules `doc` from a file,
/// asserts it refuses them with exit status 2, and returns what it printed to stderr.
pub(crate) fn refused_at_start(dir: &Path, doc: &str) -> String {
    let rules = dir.join("refused-rules.json");
    std::fs::write(&rules, doc).unwrap();
    let out = Command::new(crate::common::poplar_bin())
        .args(["--dev", dir.join("other").to_str().unwrap()])
        .args(["--dev-faults", rules.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// PUTs `rules`, asserting they were taken.
pub(crate) fn put_faults(dev: &Dev, rules: &str) {
    let (code, body) = curl(dev, "PUT", "/api/v1/faults", Some(rules));
    assert_eq!(code, 200, "{body}");
}

/// `user`'s message count as the API sees it.
fn count(dev: &Dev, user: &str) -> usize {
    let (code, body) = curl(
        dev,
        "GET",
        &format!("/api/v1/mailboxes/{user}/messages"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

/// Logs in over a raw socket, sends `command` and returns its status line and every octet
/// after it until the server closes.
fn raw_after(dev: &Dev, user: &str, command: &str) -> (String, Vec<u8>) {
    let mut c = Client::connect(dev.pop3);
    c.line();
    c.login(user, "poplar");
    let status = c.cmd(command);
    (status, c.rest())
}

const POPLIB_FAULTS: &str = r#"
import poplib, sys, time
port = int(sys.argv[1])

def login(user):
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    p.user(user); p.pass_("poplar")
    return p

def attempt(label, f):
    try:
        print(label, "ok", f())
    except poplib.error_proto as e:
        # poplib raises its own "-ERR EOF" as str, a server's answer as bytes.
        why = e.args[0]
        print(label, "error_proto", why if isinstance(why, str) else why.decode())

p = login("ann")
attempt("ann-dele", lambda: p.dele(1))
attempt("ann-quit", lambda: p.quit().decode())
p = login("ann")
attempt("ann-retr", lambda: p.retr(1))
p = login("bob")
attempt("bob-list", lambda: p.list())
p = login("bob")
p.dele(1)
attempt("bob-quit", lambda: p.quit())
for i in range(2):
    p = login("cat")
    print("cat-uidl", " ".join(u.decode().split()[1] for u in p.uidl()[1]))
    print("cat-uidl-1", p.uidl(1).decode().split()[2])
    p.quit()
p = login("dan")
p.dele(1)
attempt("dan-quit", lambda: p.quit())
p = login("eve")
t = time.monotonic(); p.stat(); print("eve-stat-seconds", time.monotonic() - t)
t = time.monotonic(); r = p.noop(); print("eve-noop", r.decode(), time.monotonic() - t)
p.quit()
"#;

/// The value after `label` in the script's output.
fn said<'a>(out: &'a str, label: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
        .collect()
}

#[test]
fn every_fault_kind_is_seen_by_poplib_as_injected() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(
        &mail_dirs(dir.path(), &["ann", "bob", "cat", "dan", "eve"]),
        &[],
    );
    let stored: Vec<String> = {
        let (_, body) = curl(&dev, "GET", "/api/v1/mailboxes/cat/messages", None);
        let v: Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["uidl"].as_str().unwrap().to_owned())
            .collect()
    };
    put_faults(
        &dev,
        r#"{"seed": 1, "rules": [
            {"user": "ann", "command": "DELE", "count": 1, "action": "err",
             "code": "SYS/TEMP", "text": "try later"},
            {"user": "ann", "command": "RETR", "count": 2, "action": "drop_after", "bytes": 10},
            {"user": "bob", "command": "LIST", "action": "no_terminator"},
            {"user": "bob", "command": "QUIT", "action": "fail_commit"},
            {"user": "cat", "command": "UIDL", "action": "change_uidls"},
            {"user": "dan", "command": "QUIT", "action": "drop"},
            {"user": "eve", "command": "STAT", "action": "delay", "ms": 1000},
            {"user": "eve", "command": "NOOP", "action": "trickle", "ms": 50}
        ]}"#,
    );

    // Octet-exact, over a raw socket: RETR cut 10 octets after its status line, LIST without
    // its final dot line.
    let (status, rest) = raw_after(&dev, "ann", "RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    assert_eq!(rest, b"From: a@x\r");
    let (status, rest) = raw_after(&dev, "bob", "LIST");
    assert!(status.starts_with("+OK 2 messages"), "{status}");
    let listing = String::from_utf8(rest).unwrap();
    assert!(
        listing.starts_with("1 ") && listing.contains("\r\n2 "),
        "{listing:?}"
    );
    assert!(
        listing.ends_with("\r\n") && !listing.contains("\r\n.\r\n"),
        "{listing:?}"
    );

    let out = python(POPLIB_FAULTS, &[dev.pop3.port().to_string()]);
    // err: the DELE refused with its code marked nothing, and QUIT then deleted nothing.
    assert_eq!(
        said(&out, "ann-dele"),
        ["error_proto -ERR [SYS/TEMP] try later"]
    );
    assert!(
        said(&out, "ann-quit")[0].starts_with("ok +OK bye, 2 messages left"),
        "{out}"
    );
    assert_eq!(count(&dev, "ann"), 2);
    // drop_after and no_terminator: poplib meets the end of the connection mid-answer.
    assert_eq!(said(&out, "ann-retr"), ["error_proto -ERR EOF"]);
    assert_eq!(said(&out, "bob-list"), ["error_proto -ERR EOF"]);
    // fail_commit: QUIT answers -ERR [SYS/TEMP] and the message DELE marked stays.
    assert_eq!(
        said(&out, "bob-quit"),
        ["error_proto -ERR [SYS/TEMP] commit failed (fault injected)"]
    );
    assert_eq!(count(&dev, "bob"), 2);
    // change_uidls: each session's UIDLs differ from the other's and from the stored ones,
    // and UIDL n agrees with the listing.
    let lists = said(&out, "cat-uidl");
    assert_eq!(lists.len(), 2, "{out}");
    assert_ne!(lists[0], lists[1]);
    for list in &lists {
        assert!(stored.iter().all(|u| !list.contains(u.as_str())), "{list}");
    }
    let ones = said(&out, "cat-uidl-1");
    assert_eq!(ones[0], lists[0].split(' ').next().unwrap());
    // drop: QUIT committed, but poplib never saw +OK.
    assert_eq!(said(&out, "dan-quit"), ["error_proto -ERR EOF"]);
    assert_eq!(count(&dev, "dan"), 1);
    // delay and trickle: the answers come late, and whole.
    let stat: f64 = said(&out, "eve-stat-seconds")[0].parse().unwrap();
    assert!(stat >= 1.0, "{stat}");
    let noop: Vec<&str> = said(&out, "eve-noop")[0].split(' ').collect();
    assert_eq!(noop[0], "+OK");
    assert!(noop[1].parse::<f64>().unwrap() >= 0.2, "{noop:?}");

    // The rules with their counts, and the faults in the sessions log.
    let (_, faults) = curl(&dev, "GET", "/api/v1/faults", None);
    let faults: Value = serde_json::from_str(&faults).unwrap();
    let fired: Vec<u64> = faults["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fired"].as_u64().unwrap())
        .collect();
    assert_eq!(fired, [1, 2, 2, 1, 4, 1, 1, 1]);
    let all = ended_sessions(&dev, 10);
    let refused = all
        .iter()
        .find(|s| s["faults"][0]["action"] == "err")
        .expect("the refused DELE's session");
    assert_eq!(refused["user"], "ann");
    assert_eq!(
        refused["faults"],
        serde_json::json!([{"command": "DELE 1", "rule": 0, "action": "err"}])
    );
    let dele = &refused["commands"][2];
    assert_eq!(
        (&dele["status"], &dele["code"], &dele["fault"]),
        (
            &Value::from("-ERR"),
            &Value::from("SYS/TEMP"),
            &Value::from("err")
        )
    );
    assert_eq!(refused["deleted"], serde_json::json!([]));
    let failed = all
        .iter()
        .find(|s| s["ending"] == "commit-failed")
        .expect("the failed commit's session");
    assert_eq!(failed["faults"][0]["action"], "fail_commit");
    assert_eq!(failed["committed"], 0);

    // A delayed greeting: poplib's connect returns no sooner than the delay.
    put_faults(
        &dev,
        r#"{"rules": [{"command": "greeting", "action": "delay", "ms": 1000}]}"#,
    );
    let out = python(
        "import poplib, sys, time\nt = time.monotonic()\n\
         p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=20)\n\
         print(time.monotonic() - t, p.getwelcome().decode())\np.quit()\n",
        &[dev.pop3.port().to_string()],
    );
    let (seconds, welcome) = out.trim().split_once(' ').unwrap();
    assert!(seconds.parse::<f64>().unwrap() >= 1.0, "{out}");
    assert!(welcome.starts_with("+OK poplar ready"), "{out}");
}

const POPLIB_COIN_FLIPS: &str = r#"
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=20)
p.user("ann"); p.pass_("poplar")
flips = ""
for i in range(24):
    try:
        p.noop(); flips += "."
    except poplib.error_proto as e:
        assert e.args[0] == b"-ERR [IN-USE] flip", e
        flips += "X"
p.quit()
print(flips)
"#;

#[test]
fn the_same_seed_fires_on_the_same_commands_again() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&mail_dir(dir.path(), "ann", 1), &[]);
    let rules = |seed: u64| {
        format!(
            r#"{{"seed": {seed}, "rules": [{{"command": "NOOP", "probability": 0.5,
                "action": "err", "code": "IN-USE", "text": "flip"}}]}}"#
        )
    };
    let port = [dev.pop3.port().to_string()];
    put_faults(&dev, &rules(7));
    let first = python(POPLIB_COIN_FLIPS, &port);
    put_faults(&dev, &rules(7));
    let again = python(POPLIB_COIN_FLIPS, &port);
    assert_eq!(first, again, "a PUT restarts the draws from the seed");
    assert!(first.contains('X') && first.contains('.'), "{first}");
    put_faults(&dev, &rules(8));
    assert_ne!(python(POPLIB_COIN_FLIPS, &port), first);
}

#[test]
fn bad_rules_get_400_with_the_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"seed": 3, "rules": [{"command": "retr", "action": "delay", "ms": 10}]}"#,
    )
    .unwrap();
    let dev = Dev::start(
        &mail_dir(dir.path(), "ann", 1),
        &["--dev-faults", rules.to_str().unwrap()],
    );
    let taken = r#"{"seed":3,"rules":[{"command":"RETR","probability":1,"action":"delay","ms":10,"fired":0}]}"#;
    assert_eq!(
        curl(&dev, "GET", "/api/v1/faults", None),
        (200, taken.to_owned())
    );
    for (doc, why) in [
        ("{\"rules\": [", "invalid JSON at byte 11"),
        (r#"{"rules": [{"action": "explode"}]}"#, "unknown action"),
        (
            r#"{"rules": [{"action": "err", "code": "NOPE"}]}"#,
            "unknown response code",
        ),
        (r#"{"rules": [], "extra": 1}"#, "unknown field"),
    ] {
        let (code, body) = curl(&dev, "PUT", "/api/v1/faults", Some(doc));
        assert_eq!(code, 400, "{doc}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains(why), "{body}");
    }
    assert_eq!(
        curl(&dev, "GET", "/api/v1/faults", None),
        (200, taken.to_owned())
    );
    assert_eq!(curl(&dev, "POST", "/api/v1/faults", Some("{}")).0, 405);

    // At start: a clear error and exit status 2.
    let stderr = refused_at_start(
        dir.path(),
        r#"{"rules": [{"command": "FETCH", "action": "drop"}]}"#,
    );
    assert!(
        stderr.contains("--dev-faults") && stderr.contains("rule 0: unknown command \"FETCH\""),
        "{stderr}"
    );
}
