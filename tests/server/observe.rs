//! What an operator's tools read from the real binary: every log line of full sessions in
//! `--log-format text` (the documented shapes) and `json` (one valid object per line with the
//! same fields as the text), and the `--metrics` endpoint scraped during and after a session.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Client, mbox, poplar_bin};

/// How long anything may take before the test gives up: generous, never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// The password, which no log line may carry in any format.
const PASSWORD: &str = "s3cret-Pw";

/// The poplar process, killed on drop.
struct Poplar(Child);

impl Drop for Poplar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Poplar {
    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").arg(&pid).status().unwrap().success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(Instant::now() < deadline, "poplar did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until the log holds `needle` `n` times; returns the log.
fn wait_log(log: &Path, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "no {n} x {needle:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A users file with alice, and her mbox of two messages.
fn setup(d: &Path) {
    std::fs::write(d.join("users"), format!("alice:{{PLAIN}}{PASSWORD}\n")).unwrap();
    std::fs::create_dir(d.join("mail")).unwrap();
    let mail = mbox(&[b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond body\n"]);
    std::fs::write(d.join("mail/alice"), mail).unwrap();
}

/// Starts poplar with `extra` flags, its stderr going to `log`; returns it, the POP3 address
/// and, with `--metrics`, the metrics address (both read from the log).
fn spawn(d: &Path, log: &Path, extra: &[&str]) -> (Poplar, SocketAddr, Option<SocketAddr>) {
    let child = Command::new(poplar_bin())
        .arg("--users")
        .arg(d.join("users"))
        .arg("--mail")
        .arg(format!("{}/mail/%n", d.display()))
        .args(["--listen", "127.0.0.1:0", "--auth-delay", "0"])
        .args(extra)
        .env("POPLAR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let poplar = Poplar(child);
    let text = wait_log(log, "listening on ", 1);
    let after = |needle: &str| {
        text.lines()
            .find_map(|l| l.split(needle).nth(1))
            .map(|rest| {
                rest.trim_end_matches(['"', '}'])
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
    };
    let pop3 = after("listening on ").unwrap().parse().unwrap();
    let metrics = extra.contains(&"--metrics").then(|| {
        let text = wait_log(log, "metrics at http://", 1);
        let line = text
            .lines()
            .find(|l| l.contains("metrics at http://"))
            .unwrap();
        let rest = line.split("metrics at http://").nth(1).unwrap();
        rest.split('/').next().unwrap().parse().unwrap()
    });
    (poplar, pop3, metrics)
}

/// The sessions every format test runs: a failed login, then a login with RETR, DELE and
/// QUIT, then a client that never logs in and is cut off by the AUTHORIZATION deadline.
fn drive(addr: SocketAddr, log: &Path) -> u64 {
    let mut c = greeted(addr);
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut c = greeted(addr);
    c.login("alice", PASSWORD);
    let size: u64 = c.cmd("LIST 1").rsplit(' ').next().unwrap().parse().unwrap();
    c.multi("RETR 1");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut idle = greeted(addr);
    wait_log(log, "not logged in within", 1);
    idle.rest();
    wait_log(log, "session end", 3);
    size
}

fn greeted(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.greeting = c.line();
    assert!(c.greeting.starts_with("+OK "), "{}", c.greeting);
    c
}

/// Runs the sessions with `--log-format format` and returns the whole log and the size of
/// the message retrieved and deleted.
fn run_sessions(format: &str) -> (String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let log = d.join("poplar.log");
    let (mut poplar, addr, _) = spawn(d, &log, &["--log-format", format, "--auth-timeout", "1"]);
    let size = drive(addr, &log);
    poplar.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(PASSWORD),
        "a log line holds the password:\n{text}"
    );
    (text, size)
}

/// `key=value` pairs of a documented line, after `marker`.
fn pairs<'a>(line: &'a str, marker: &str) -> Vec<(&'a str, &'a str)> {
    let rest = line
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"));
    rest.split(' ')
        .map(|kv| {
            kv.split_once('=')
                .unwrap_or_else(|| panic!("{kv} in {line}"))
        })
        .collect()
}

#[test]
fn text_logs_keep_their_documented_shapes() {
    let (text, size) = run_sessions("text");
    let levels = ["ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"];
    for line in text.lines() {
        // `[2026-12-04T18:41:46Z INFO  poplar::session] message`
        let (head, _) = line.split_once("] ").unwrap_or_else(|| panic!("{line}"));
        let head = head.strip_prefix('[').unwrap_or_else(|| panic!("{line}"));
        assert_eq!(&head[10..11], "T", "{line}");
        assert_eq!(&head[19..21], "Z ", "{line}");
        assert!(levels.contains(&&head[21..26]), "{line}");
        assert!(head[27..].starts_with("poplar"), "{line}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let with = |needle: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.contains(needle))
            .collect()
    };
    assert_eq!(with("] session start tls=false").len(), 3, "{text}");
    assert_eq!(
        with(" PASS login failed for alice (failure 1 in this session, delay 0 ms)").len(),
        1,
        "{text}"
    );
    let login = with("] login user=alice method=PASS ");
    assert_eq!(login.len(), 1, "{text}");
    let octets: u64 = pairs(login[0], "] login ")[3].1.parse().unwrap();
    assert_eq!(
        pairs(login[0], "] login ")[..3],
        [("user", "alice"), ("method", "PASS"), ("messages", "2")]
    );
    assert!(octets > size);
    assert_eq!(with(" not logged in within 1s: closing").len(), 1, "{text}");
    let ends = with("] session end ");
    assert_eq!(ends.len(), 3, "{text}");
    let keys = [
        "id",
        "peer",
        "user",
        "reason",
        "duration_ms",
        "login_ms",
        "commit_ms",
        "messages",
        "retr",
        "retr_octets",
        "top",
        "top_octets",
        "dele",
        "dele_octets",
        "mailbox_before",
        "mailbox_after",
    ];
    for end in &ends {
        let got: Vec<&str> = pairs(end, "] session end ").iter().map(|p| p.0).collect();
        assert_eq!(got, keys, "{end}");
    }
    let quit = pairs(ends[1], "] session end ");
    assert_eq!(quit[2..4], [("user", "alice"), ("reason", "quit")]);
    let size = size.to_string();
    assert_eq!(quit[8..10], [("retr", "1"), ("retr_octets", size.as_str())]);
    assert_eq!(
        quit[12..14],
        [("dele", "1"), ("dele_octets", size.as_str())]
    );
    assert_eq!(
        pairs(ends[2], "] session end ")[3],
        ("reason", "disconnected")
    );
    assert!(text.ends_with(" shut down\n"), "{text}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_fields_of_the_text() {
    let (text, size) = run_sessions("json");
    let objects: Vec<serde_json::Map<String, Value>> = text
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("not a JSON object: {l} ({other:?})"),
        })
        .collect();
    for o in &objects {
        for key in ["time", "level", "target", "message"] {
            assert!(o.get(key).is_some_and(Value::is_string), "{key} in {o:?}");
        }
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&o["level"].as_str().unwrap())
        );
        // A session's line names the session and its client.
        if o["message"].as_str().unwrap().starts_with('[') {
            assert!(o["session"].is_u64(), "{o:?}");
            assert!(
                o["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{o:?}"
            );
        }
    }
    let events = |name: &str| -> Vec<&serde_json::Map<String, Value>> {
        objects
            .iter()
            .filter(|o| o.get("event") == Some(&Value::from(name)))
            .collect()
    };
    let starts = events("session-start");
    assert_eq!(starts.len(), 3, "{text}");
    assert!(starts.iter().all(|o| o["tls"] == Value::Bool(false)));
    let failed = events("login-failed");
    assert_eq!(failed.len(), 1, "{text}");
    assert_eq!(failed[0]["user"], "alice");
    assert_eq!(failed[0]["method"], "PASS");
    assert_eq!(
        (
            failed[0]["failures"].as_u64(),
            failed[0]["delay_ms"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(failed[0]["level"], "warn");
    let login = events("login");
    assert_eq!(login.len(), 1, "{text}");
    assert_eq!(
        (login[0]["user"].as_str(), login[0]["messages"].as_u64()),
        (Some("alice"), Some(2))
    );
    assert_eq!(events("auth-timeout").len(), 1, "{text}");
    assert_eq!(events("auth-timeout")[0]["timeout_ms"], 1000);

    // The end-of-session line: each key=value of its text is a field (`id` is `session`,
    // `-` is null), with numbers as numbers.
    let ends = events("session-end");
    assert_eq!(ends.len(), 3, "{text}");
    for end in &ends {
        let message = end["message"].as_str().unwrap();
        for (key, value) in pairs(message, "] session end ") {
            let field = &end[if key == "id" { "session" } else { key }];
            match value {
                "-" => assert!(field.is_null(), "{key} in {end:?}"),
                v if v.parse::<u64>().is_ok() => {
                    assert_eq!(field.as_u64(), v.parse().ok(), "{key}")
                }
                v => assert_eq!(field.as_str(), Some(v), "{key}"),
            }
        }
    }
    let quit = ends[1];
    assert_eq!(
        (quit["user"].as_str(), quit["reason"].as_str()),
        (Some("alice"), Some("quit"))
    );
    assert_eq!(
        (quit["retr"].as_u64(), quit["retr_octets"].as_u64()),
        (Some(1), Some(size))
    );
    assert_eq!(
        (quit["dele"].as_u64(), quit["dele_octets"].as_u64()),
        (Some(1), Some(size))
    );
    assert_eq!(ends[2]["reason"], "disconnected");
    assert!(ends[2]["user"].is_null());
    // A line without structure still has the four fields.
    let last = objects.last().unwrap();
    assert_eq!(
        (last["message"].as_str(), last.len()),
        (Some("shut down"), 4)
    );
}

/// The metrics as `name{labels}` to value, fetched with a plain HTTP/1.0 GET of `path`;
/// also the status line.
fn scrape(addr: SocketAddr, path: &str) -> (String, Vec<(String, f64)>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    if status.split(' ').nth(1) != Some("200") {
        return (status, Vec::new());
    }
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("{l}")))
        })
        .collect();
    (status, samples)
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(k, _)| k == series)
        .unwrap_or_else(|| panic!("no {series}"))
        .1
}

#[test]
fn metrics_move_with_a_session_and_stop_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let log = d.join("poplar.log");
    let (mut poplar, addr, metrics) = spawn(d, &log, &["--metrics", "127.0.0.1:0"]);
    let metrics = metrics.unwrap();

    let (status, before) = scrape(metrics, "/metrics");
    assert_eq!(status.split(' ').nth(1), Some("200"), "{status}");
    let ok = "poplar_logins_total{result=\"ok\",mechanism=\"PASS\"}";
    let failed = "poplar_logins_total{result=\"failed\",mechanism=\"PASS\"}";
    for (series, v) in &before {
        assert_eq!(*v, 0.0, "{series} before any session");
    }

    // A delivery's dotlock makes the login wait for it, as long as this thread keeps it.
    let dotlock = d.join("mail/alice.lock");
    std::fs::write(&dotlock, "4242 mta.example\n").unwrap();
    let delivery = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::remove_file(dotlock).unwrap();
    });
    let mut c = greeted(addr);
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    c.login("alice", PASSWORD);
    delivery.join().unwrap();
    let size: f64 = c.cmd("LIST 2").rsplit(' ').next().unwrap().parse().unwrap();
    c.multi("RETR 2");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    let (_, during) = scrape(metrics, "/metrics");
    assert_eq!(value(&during, "poplar_sessions_open"), 1.0);
    assert_eq!(value(&during, ok), 1.0);
    assert_eq!(value(&during, failed), 1.0);
    assert_eq!(value(&during, "poplar_auth_delays_total"), 1.0);
    assert_eq!(value(&during, "poplar_retrieved_messages_total"), 1.0);
    assert_eq!(value(&during, "poplar_retrieved_octets_total"), size);
    // DELE only marks: nothing is deleted or committed before QUIT.
    assert_eq!(value(&during, "poplar_deleted_messages_total"), 0.0);
    assert_eq!(value(&during, "poplar_commits_total"), 0.0);
    assert_eq!(value(&during, "poplar_lock_waits_total"), 1.0);
    assert!(value(&during, "poplar_lock_wait_seconds_total") > 0.0);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    wait_log(&log, "session end", 1);

    let (_, after) = scrape(metrics, "/metrics");
    assert_eq!(value(&after, "poplar_sessions_open"), 0.0);
    assert_eq!(
        value(&after, "poplar_sessions_total{outcome=\"quit\"}"),
        1.0
    );
    assert_eq!(value(&after, "poplar_deleted_messages_total"), 1.0);
    assert_eq!(value(&after, "poplar_deleted_octets_total"), size);
    assert_eq!(value(&after, "poplar_commits_total"), 1.0);
    assert_eq!(value(&after, "poplar_commits_failed_total"), 0.0);
    assert_eq!(value(&after, ok), 1.0);

    let (status, _) = scrape(metrics, "/");
    assert_eq!(status.split(' ').nth(1), Some("404"), "{status}");
    let (status, _) = scrape(metrics, "/metricsx");
    assert_eq!(status.split(' ').nth(1), Some("404"), "{status}");

    // The endpoint stops with the server.
    poplar.stop();
    assert!(TcpStream::connect(metrics).is_err());
}

#[test]
fn metrics_off_loopback_need_metrics_public() {
    let out = Command::new(poplar_bin())
        .args(["--users", "/nonexistent/users", "--mail", "/nonexistent/%n"])
        .args(["--metrics", "0.0.0.0:9110"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--metrics 0.0.0.0:9110 is not a loopback address; add --metrics-public"),
        "{stderr}"
    );
}

#[test]
fn tls_handshakes_are_counted_by_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    crate::certs::issue_certificates(d, "cert.pem", "key.pem");
    let log = d.join("poplar.log");
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    let tls_flags = [
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ];
    let (_poplar, _, metrics) = spawn(d, &log, &tls_flags);
    let text = wait_log(&log, "listening on ", 2);
    let pop3s: SocketAddr = text
        .lines()
        .filter_map(|l| l.split("listening on ").nth(1))
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A client that speaks no TLS: the handshake fails.
    let mut s = TcpStream::connect(pop3s).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"USER alice\r\n").unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    // curl completes one and lists the mailbox.
    let url = format!("pop3s://127.0.0.1:{}/", pop3s.port());
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(d.join("ca.pem"))
        .args(["-u", &format!("alice:{PASSWORD}"), &url])
        .output()
        .expect("curl runs (make deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_log(&log, "session end", 1);
    let (_, got) = scrape(metrics.unwrap(), "/metrics");
    assert_eq!(
        value(&got, "poplar_tls_handshakes_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(&got, "poplar_tls_handshakes_total{result=\"failed\"}"),
        1.0
    );
    // curl picks its mechanism (CRAM-MD5 when offered): one login ok, whichever.
    let logins: f64 = got
        .iter()
        .filter(|(k, _)| k.starts_with("poplar_logins_total{result=\"ok\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(logins, 1.0);
}
