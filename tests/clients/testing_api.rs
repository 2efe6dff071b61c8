//! `poplar::testing::Server` as another crate's test suite uses it.

use std::net::TcpStream;

use crate::common::Client;
use poplar::testing::Server;

fn connect(server: &Server) -> Client {
    let mut c = Client::connect(server.addr());
    c.greeting = c.line();
    assert!(c.greeting.starts_with("+OK"), "{}", c.greeting);
    c
}

#[test]
fn users_and_messages_added_by_calls_are_served_and_deletions_reach_the_file() {
    let server = Server::start().unwrap();
    assert!(server.addr().ip().is_loopback());
    server
        .add_user("alice", "secret")
        .add_message("alice", b"Subject: one\r\n\r\nfirst\r\n")
        .add_message("alice", b"Subject: two\n\nsecond\n");
    let mut c = connect(&server);
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    c.login("alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 2 47");
    assert_eq!(c.multi("RETR 1"), b"Subject: one\r\n\r\nfirst\r\n");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let left = server.mailbox("alice");
    assert!(left.starts_with(b"From poplar-testing "), "{left:?}");
    assert!(!left.windows(12).any(|w| w == b"Subject: one"));
}

#[test]
fn a_user_added_while_running_can_log_in_and_an_unknown_one_has_an_empty_mailbox() {
    let server = Server::start().unwrap();
    let mut c = connect(&server);
    assert!(c.cmd("USER bob").starts_with("+OK"));
    assert!(c.cmd("PASS pw").starts_with("-ERR [AUTH]"));
    server.add_user("bob", "pw");
    c.login("bob", "pw");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
    assert!(server.mailbox("bob").is_empty());
}

/// AUTH XOAUTH2 with an initial response for `user` and `token`: the reply line.
fn xoauth2(c: &mut Client, user: &str, token: &str) -> String {
    use base64::Engine as _;
    let blob = format!("user={user}\x01auth=Bearer {token}\x01\x01");
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    let first = c.cmd(&format!("AUTH XOAUTH2 {b64}"));
    if first.starts_with("+ ") {
        // The failure challenge (RFC 7628 §3.2.2): an empty line ends the exchange.
        c.cmd("")
    } else {
        first
    }
}

#[test]
fn bearer_tokens_log_in_as_in_dev_until_one_is_set_and_reset_forgets_it() {
    let server = Server::builder().http().start().unwrap();
    server.add_user("alice", "secret");
    let mut c = connect(&server);
    let caps = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(caps.contains("XOAUTH2"), "{caps}");
    assert!(xoauth2(&mut c, "alice", "anything").starts_with("+OK"));
    drop(c);
    server.set_bearer_token("alice", "right");
    let mut c = connect(&server);
    assert!(xoauth2(&mut c, "alice", "wrong").starts_with("-ERR [AUTH]"));
    assert!(xoauth2(&mut c, "alice", "right").starts_with("+OK"));
    drop(c);
    server.reset().unwrap();
    let mut c = connect(&server);
    assert!(xoauth2(&mut c, "alice", "other").starts_with("+OK"));
}

#[test]
fn fault_rules_act_on_sessions_and_the_sessions_log_shows_them() {
    let server = Server::start().unwrap();
    server
        .add_user("alice", "pw")
        .add_message("alice", b"Subject: one\n\nbody\n");
    let refused = server.set_faults(r#"{"rules": [{"action": "explode"}]}"#);
    assert_eq!(refused.unwrap_err().0, 400);
    server
        .set_faults(r#"{"rules": [{"command": "DELE", "action": "err", "code": "SYS/TEMP"}]}"#)
        .unwrap();
    let mut c = connect(&server);
    c.login("alice", "pw");
    assert_eq!(c.cmd("DELE 1"), "-ERR [SYS/TEMP] fault injected");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // The refused DELE marked nothing.
    assert!(
        server
            .mailbox("alice")
            .windows(12)
            .any(|w| w == b"Subject: one")
    );
    let log = server.sessions_json();
    assert!(log.contains("\"DELE 1\""), "{log}");
    assert!(log.contains("SYS/TEMP"), "{log}");
    assert!(log.contains("\"user\":\"alice\""), "{log}");
}

#[test]
fn dropping_the_server_stops_it() {
    let server = Server::start().unwrap();
    let addr = server.addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
}

/// Sends `message` from `app@example.com` to `to` with Python's smtplib.
fn smtplib_send(addr: std::net::SocketAddr, to: &str, message: &[u8]) {
    use std::io::Write;
    let script = "import smtplib, sys\n\
        host, port, to = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n\
        with smtplib.SMTP(host, port, timeout=20) as s:\n\
        \x20   s.sendmail('app@example.com', [to], sys.stdin.buffer.read())\n";
    let mut py = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            to,
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (make deps checks it)");
    py.stdin.take().unwrap().write_all(message).unwrap();
    assert!(py.wait().unwrap().success(), "smtplib failed");
}

/// `(UIDL, size)` of each message as POP3's UIDL and LIST give them.
fn pop3_listing(c: &mut Client) -> Vec<(String, u64)> {
    let uidl = String::from_utf8(c.multi("UIDL")).unwrap();
    let list = String::from_utf8(c.multi("LIST")).unwrap();
    uidl.lines()
        .zip(list.lines())
        .map(|(u, l)| {
            let uid = u.split(' ').nth(1).unwrap().to_owned();
            (uid, l.split(' ').nth(1).unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn smtp_http_and_in_process_calls_see_the_mailbox_pop3_serves() {
    let seed = b"Subject: seeded\r\n\r\nkept by reset\r\n";
    let server = Server::builder()
        .user("alice", "secret")
        .message("alice", seed)
        .smtp()
        .http()
        .start()
        .unwrap();
    let (smtp, http) = (server.smtp_addr().unwrap(), server.http_addr().unwrap());
    assert!(smtp.ip().is_loopback() && http.ip().is_loopback());
    assert!(smtp.port() != 0 && http.port() != 0);

    smtplib_send(
        smtp,
        "alice@example.org",
        b"Subject: sent\r\n\r\nover SMTP\r\n",
    );
    let uidl = server
        .deliver("alice", b"Subject: third\n\ndelivered in-process\n")
        .unwrap();

    // What the in-process listing says is what a POP3 client sees.
    let listed = server.messages("alice").unwrap();
    let subjects: Vec<&str> = listed.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["seeded", "sent", "third"]);
    assert_eq!(listed[2].uidl, uidl);

    // The HTTP API lists the same UIDLs.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("http://{http}/api/v1/mailboxes/alice/messages"))
        .output()
        .expect("curl runs (make deps installs it)");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let over_http: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["uidl"].as_str().unwrap())
        .collect();
    assert_eq!(
        over_http,
        listed.iter().map(|m| m.uidl.as_str()).collect::<Vec<_>>()
    );

    let mut c = connect(&server);
    c.login("alice", "secret");
    let pop3 = pop3_listing(&mut c);
    let api: Vec<(String, u64)> = listed.iter().map(|m| (m.uidl.clone(), m.size)).collect();
    assert_eq!(pop3, api);
    assert_eq!(c.multi("RETR 2"), b"Subject: sent\r\n\r\nover SMTP\r\n");

    // While the session holds the mailbox, in-process changes are refused as the API's are.
    let refused = server
        .deliver("alice", b"Subject: late\n\nx\n")
        .unwrap_err();
    assert_eq!(refused.status(), 409, "{refused}");
    assert!(refused.reason().contains("POP3 session"), "{refused}");
    assert_eq!(server.reset().unwrap_err().status(), 409);
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // Reset: the seed alone, a mailbox made since gone.
    server.deliver("bob", b"Subject: for bob\n\nx\n").unwrap();
    assert_eq!(server.reset().unwrap(), 1);
    let after: Vec<String> = server
        .messages("alice")
        .unwrap()
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(after, ["seeded"]);
    assert_eq!(server.messages("bob").unwrap_err().status(), 404);
    let mut c = connect(&server);
    c.login("alice", "secret");
    assert_eq!(c.multi("RETR 1"), seed);
}

#[test]
fn in_process_calls_refuse_bad_input_with_the_api_status_and_reason() {
    let server = Server::start().unwrap();
    assert_eq!(server.smtp_addr(), None);
    assert_eq!(server.http_addr(), None);
    let bad_name = server.deliver(".hidden", b"Subject: x\n\nx\n").unwrap_err();
    assert_eq!(bad_name.status(), 400);
    assert!(bad_name.reason().contains("not a user name"), "{bad_name}");
    assert_eq!(server.deliver("carol", b"").unwrap_err().status(), 400);
    let missing = server.messages("nobody").unwrap_err();
    assert_eq!(missing.status(), 404);
    assert!(missing.reason().contains("no mailbox"), "{missing}");
    // Nothing seeded: a reset empties every mailbox.
    server.add_message("carol", b"Subject: added\n\nx\n");
    assert_eq!(server.messages("carol").unwrap().len(), 1);
    assert_eq!(server.reset().unwrap(), 0);
    assert!(!server.mailbox_path("carol").exists());
}

#[test]
fn dropping_the_server_stops_every_listener() {
    let server = Server::builder().smtp().http().start().unwrap();
    let addrs = [
        server.addr(),
        server.smtp_addr().unwrap(),
        server.http_addr().unwrap(),
    ];
    for a in addrs {
        assert!(TcpStream::connect(a).is_ok(), "{a} answers while running");
    }
    drop(server);
    // POP3 and SMTP are closed when drop returns; tiny_http closes its listener on its own
    // thread a moment later: waited for, up to a bound that only guards against a hang.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for a in addrs {
        while TcpStream::connect(a).is_ok() {
            assert!(
                a == addrs[2] && std::time::Instant::now() < give_up,
                "{a} still answers"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
