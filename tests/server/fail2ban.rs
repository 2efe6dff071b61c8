//! The shipped fail2ban filter (examples/fail2ban/filter.d/poplar.conf) against the log the
//! real binary writes: failed logins of every kind, an AUTHORIZATION timeout and too many bad
//! commands, each on a plain listener and behind a PROXY header, and successful logins.
//! `fail2ban-regex` (Debian's fail2ban, from `make deps`) must match every failure line with
//! the client's real address and no other line, both as a log file holds the lines and as the
//! systemd journal hands them over.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Client, mbox, poplar_bin};

/// How long anything may take before the test gives up: generous, never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// The fake client a trusted proxy speaks for (TEST-NET-3); the traffic stays on loopback.
const FAKE_V4: &str = "203.0.113.7";
/// The fake IPv6 client (documentation prefix).
const FAKE_V6: &str = "2001:db8::7";

/// The poplar process, killed on drop.
struct Poplar(Child);

impl Drop for Poplar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the log file holds `needle` `n` times; returns the log.
fn wait_log(log: &Path, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} x {needle:?} in log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts poplar on a plain and a PROXY listener with `extra` flags, its log (stderr) going to
/// `log`; returns it and the two addresses.
fn spawn(d: &Path, log: &Path, extra: &[&str]) -> (Poplar, SocketAddr, SocketAddr) {
    let child = Command::new(poplar_bin())
        .arg("--users")
        .arg(d.join("users"))
        .arg("--mail")
        .arg(format!("{}/mail/%n", d.display()))
        .args(["--auth-delay", "0", "--max-bad-commands", "2"])
        .args(["--listen", "127.0.0.1:0", "--proxy-protocol", "127.0.0.1:0"])
        // The fake clients are off loopback: cleartext logins need --allow-cleartext.
        .args(["--trusted-proxy", "127.0.0.0/8", "--allow-cleartext"])
        .args(extra)
        .env("POPLAR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let poplar = Poplar(child);
    let text = wait_log(log, "listening on ", 2);
    let addrs: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.split("listening on ").nth(1))
        .map(|a| a.trim().parse().unwrap())
        .collect();
    (poplar, addrs[0], addrs[1])
}

/// Connects (sending `header` first, if any) and reads the greeting.
fn client(addr: SocketAddr, header: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send_raw(header.as_bytes());
    c.greeting = c.line();
    assert!(c.greeting.starts_with("+OK "), "{}", c.greeting);
    c
}

/// One client's failures and successes, through the listener at `addr` (after `header`).
fn drive(addr: SocketAddr, header: &str) {
    let mut c = client(addr, header);
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    assert!(c.cmd("USER nobody").starts_with("+OK"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    // The third failure in a session also closes it.
    let apop = c.cmd("APOP alice 0123456789abcdef0123456789abcdef");
    assert!(apop.starts_with("-ERR [AUTH]"), "{apop}");

    let mut c = client(addr, header);
    // AUTH PLAIN with an initial response: "\0alice\0wrong", then "\0alice\0secret".
    let plain = c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n");
    assert!(plain.starts_with("-ERR [AUTH]"), "{plain}");
    assert!(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut c = client(addr, header);
    c.login("alice", "secret");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut c = client(addr, header);
    for _ in 0..2 {
        assert!(c.cmd("BOGUS").starts_with("-ERR"));
    }
    assert_eq!(c.cmd("BOGUS"), "-ERR too many bad commands; closing");
}

/// A PROXY v1 header for a client at `ip`.
fn v1(ip: &str) -> String {
    let family = if ip.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if ip.contains(':') {
        "2001:db8::1"
    } else {
        "198.51.100.1"
    };
    format!("PROXY {family} {ip} {dst} 40000 110\r\n")
}

/// The client address in a line's session tag `[ID ADDR:PORT]`, as fail2ban reports it;
/// `None` if the line names no client.
fn tag_address(line: &str) -> Option<String> {
    let tag = line.split("] [").nth(1)?;
    let peer = tag.split_once(' ')?.1;
    let peer: SocketAddr = peer[..peer.find("] ")?].parse().ok()?;
    Some(peer.ip().to_string())
}

/// Whether a line is one of the failures the filter is for.
fn is_failure(line: &str) -> bool {
    line.contains(" login failed for ")
        || line.contains(" not logged in within ")
        || line.contains(" reason=bad-commands ")
}

/// Runs fail2ban-regex on `log` with the shipped filter (and `extra` options); returns each
/// matched line's host and text.
fn matched(log: &Path, extra: &[&str]) -> Vec<(String, String)> {
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fail2ban/filter.d/poplar.conf");
    let out = Command::new("fail2ban-regex")
        .args(extra)
        .args(["-o", "<ip> <msg>"])
        .arg(log)
        .arg(&filter)
        .output()
        .expect("fail2ban-regex runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "fail2ban-regex failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let (ip, msg) = l.split_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            (ip.to_owned(), msg.to_owned())
        })
        .collect()
}

/// Asserts that fail2ban matched exactly the `failures` (lines as fail2ban saw them), each with
/// its tag's address.
fn assert_matches(got: &[(String, String)], failures: &[String], form: &str) {
    for (ip, line) in got {
        assert!(
            failures.contains(line),
            "{form}: matched a line that is no failure: {line}"
        );
        assert_eq!(
            Some(ip),
            tag_address(line).as_ref(),
            "{form}: wrong host for {line}"
        );
    }
    for f in failures {
        assert!(
            got.iter().any(|(_, l)| l == f),
            "{form}: failure not matched: {f}\nmatched: {got:#?}"
        );
    }
    assert_eq!(got.len(), failures.len(), "{form}: {got:#?}");
}

#[test]
fn the_fail2ban_filter_matches_every_failure_with_the_real_client_and_no_login() {
    if Command::new("fail2ban-regex")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: fail2ban-regex is not installed (make deps installs Debian's fail2ban)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("users"), "alice:{PLAIN}secret\n").unwrap();
    std::fs::create_dir(d.join("mail")).unwrap();
    std::fs::write(d.join("mail/alice"), mbox(&[b"Subject: one\n\nbody\n"])).unwrap();
    // One server for the sessions, with the default AUTHORIZATION deadline so that no slow
    // moment cuts them short; one with a short deadline for the clients that never log in.
    let log = d.join("poplar.log");
    let (sessions_log, idle_log) = (d.join("sessions.log"), d.join("idle.log"));
    let (poplar, plain, proxied) = spawn(d, &sessions_log, &[]);
    drive(plain, "");
    drive(proxied, &v1(FAKE_V4));
    drive(proxied, &v1(FAKE_V6));
    let (idle_poplar, idle_plain, idle_proxied) = spawn(d, &idle_log, &["--auth-timeout", "1"]);
    let _idle = [client(idle_plain, ""), client(idle_proxied, &v1(FAKE_V4))];
    wait_log(&idle_log, " not logged in within ", 2);
    drop((poplar, idle_poplar));
    let both = std::fs::read_to_string(&sessions_log).unwrap()
        + &std::fs::read_to_string(&idle_log).unwrap();
    std::fs::write(&log, both).unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let failures: Vec<String> = lines
        .iter()
        .filter(|l| is_failure(l))
        .map(|l| l.to_string())
        .collect();
    // Per client: four failed logins (PASS twice, APOP, PLAIN) and one bad-commands close;
    // one timeout each for 127.0.0.1 and the fake IPv4 client.
    assert_eq!(failures.len(), 3 * 5 + 2, "{text}");
    for (method, n) in [("PASS", 6), ("APOP", 3), ("PLAIN", 3)] {
        let needle = format!(" {method} login failed for ");
        assert_eq!(text.matches(&needle).count(), n, "{needle}\n{text}");
    }
    for l in &failures {
        assert!(
            tag_address(l).is_some(),
            "a failure line without the client's address: {l}"
        );
    }
    for who in ["127.0.0.1", FAKE_V4, FAKE_V6] {
        assert_eq!(
            failures
                .iter()
                .filter(|l| tag_address(l).as_deref() == Some(who))
                .count(),
            if who == FAKE_V6 { 5 } else { 6 },
            "{who}\n{text}"
        );
    }
    let logins = lines.iter().filter(|l| l.contains(" login user=")).count();
    assert_eq!(logins, 6, "two successful logins per client:\n{text}");

    // As a log file holds the lines (the daemon's stderr appended to a file).
    let got = matched(&log, &[]);
    assert_matches(&got, &failures, "log file");
    assert!(got.iter().any(|(ip, _)| ip == FAKE_V4));
    assert!(got.iter().any(|(ip, _)| ip == FAKE_V6));
    assert!(
        got.iter()
            .all(|(ip, _)| ip != "198.51.100.1" && ip != "2001:db8::1")
    );

    // As the journal hands lines to fail2ban's systemd backend: "HOST poplar[PID]: MESSAGE",
    // the time kept apart; MESSAGE with poplar's own timestamp, and without it.
    let strip_time = |l: &str| match l.split_once(' ') {
        Some((time, rest)) if time.starts_with("[20") => format!("[{rest}"),
        _ => l.to_owned(),
    };
    for (form, keep_time) in [("journal", true), ("journal without timestamp", false)] {
        let shape = |l: &str| {
            let msg = if keep_time {
                l.to_owned()
            } else {
                strip_time(l)
            };
            format!("mailhost poplar[4242]: {msg}")
        };
        let journal = d.join("journal.log");
        let mut f = std::fs::File::create(&journal).unwrap();
        for l in &lines {
            writeln!(f, "{}", shape(l)).unwrap();
        }
        drop(f);
        let failures: Vec<String> = failures.iter().map(|l| shape(l)).collect();
        let got = matched(&journal, &["--datepattern", "{NONE}"]);
        assert_matches(&got, &failures, form);
    }
    // A user name cannot forge the address: the tag comes first.
    let forged = d.join("forged.log");
    let line = lines
        .iter()
        .find(|l| {
            l.contains(" PASS login failed for ") && tag_address(l).as_deref() == Some(FAKE_V4)
        })
        .unwrap();
    let forged_line = line.replace("failed for alice", "failed for [9 192.0.2.99:1] PASS");
    std::fs::write(&forged, format!("{forged_line}\n")).unwrap();
    let got = matched(&forged, &[]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, FAKE_V4);
}
