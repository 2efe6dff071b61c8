//! The development server's HTTP API driven by curl, every route: list, summaries, raw
//! messages, append, delete, reset, health; and a mailbox held by a POP3 session answering
//! 409 while nothing in it changes.

use std::process::Command;

use crate::common::Client;
use crate::devserver::Dev;

/// curl's status code and body for `method` on `path`, with `data` as the request body.
fn curl(dev: &Dev, method: &str, path: &str, data: Option<&[u8]>) -> (u16, Vec<u8>) {
    let url = format!("http://{}{path}", dev.http);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", &url]);
    let dir = tempfile::tempdir().unwrap();
    if let Some(d) = data {
        let f = dir.path().join("body");
        std::fs::write(&f, d).unwrap();
        cmd.args(["--data-binary", &format!("@{}", f.display())]);
    }
    let out = cmd.output().expect("curl runs (make deps installs it)");
    assert!(out.status.success(), "{out:?}");
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = std::str::from_utf8(&body[at + 1..])
        .unwrap()
        .parse()
        .unwrap();
    body.truncate(at);
    (code, body)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `"uidl":"..."` values of a JSON body, in order.
fn uidls(json: &str) -> Vec<String> {
    json.split("\"uidl\":\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_route_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    std::fs::write(
        mail.join("alice"),
        b"From a@x Thu Nov 26 09:00:00 2026\nFrom: A <a@x>\nTo: alice@x\nSubject: seeded\n\nhi\n\n",
    )
    .unwrap();
    let dev = Dev::start(&mail, &[]);

    assert_eq!(curl(&dev, "GET", "/livez", None).0, 200);
    assert_eq!(curl(&dev, "GET", "/readyz", None).0, 200);
    let (code, body) = curl(&dev, "GET", "/api/v1/mailboxes", None);
    assert_eq!(code, 200);
    assert_eq!(
        text(&body),
        r#"[{"user":"alice","messages":1,"octets":51,"in_session":false}]"#
    );

    let message = b"From: App <app@example.com>\r\nTo: bob@example.com\r\nSubject: posted \xc3\xa9\r\n\r\nbody\r\n.dot\r\n";
    let (code, body) = curl(
        &dev,
        "POST",
        "/api/v1/mailboxes/bob/messages",
        Some(message),
    );
    assert_eq!(code, 201, "{}", text(&body));
    let posted = uidls(&text(&body));
    assert_eq!(posted.len(), 1);

    let (code, body) = curl(&dev, "GET", "/api/v1/mailboxes/bob/messages", None);
    assert_eq!(code, 200);
    let list = text(&body);
    assert_eq!(uidls(&list), posted);
    assert!(
        list.contains(
            r#""from":"App <app@example.com>","to":"bob@example.com","subject":"posted é""#
        ),
        "{list}"
    );

    let raw = format!("/api/v1/mailboxes/bob/messages/{}", posted[0]);
    let (code, body) = curl(&dev, "GET", &raw, None);
    assert_eq!(code, 200);
    assert_eq!(text(&body), text(message), "the message as stored");

    // A POP3 session holds bob: changes answer 409 and change nothing.
    let mut pop = Client::connect(dev.pop3);
    pop.line();
    pop.login("bob", "poplar");
    let (code, body) = curl(&dev, "DELETE", &raw, None);
    assert_eq!(code, 409, "{}", text(&body));
    assert!(text(&body).contains("POP3 session"));
    assert_eq!(curl(&dev, "DELETE", "/api/v1/mailboxes/bob", None).0, 409);
    assert_eq!(curl(&dev, "POST", "/api/v1/reset", None).0, 409);
    let (_, body) = curl(&dev, "GET", "/api/v1/mailboxes", None);
    assert!(
        text(&body).contains(r#"{"user":"bob","messages":null,"octets":null,"in_session":true}"#)
    );
    assert!(pop.cmd("QUIT").starts_with("+OK"));

    assert_eq!(curl(&dev, "DELETE", &raw, None).0, 200);
    assert_eq!(curl(&dev, "GET", &raw, None).0, 404);
    let (_, body) = curl(&dev, "GET", "/api/v1/mailboxes/bob/messages", None);
    assert_eq!(text(&body), "[]");

    assert_eq!(
        curl(&dev, "GET", "/api/v1/mailboxes/nobody/messages", None).0,
        404
    );
    assert_eq!(
        curl(&dev, "GET", "/api/v1/mailboxes/.x/messages", None).0,
        400
    );
    assert_eq!(curl(&dev, "GET", "/api/v2/x", None).0, 404);
    assert_eq!(curl(&dev, "PUT", "/api/v1/reset", None).0, 405);
    assert_eq!(
        curl(&dev, "POST", "/api/v1/mailboxes/bob/messages", Some(b"")).0,
        400
    );

    // Reset: alice as she started (her message back after a delete), bob gone.
    let (_, body) = curl(&dev, "GET", "/api/v1/mailboxes/alice/messages", None);
    let alice = uidls(&text(&body));
    let path = format!("/api/v1/mailboxes/alice/messages/{}", alice[0]);
    assert_eq!(curl(&dev, "DELETE", &path, None).0, 200);
    assert_eq!(curl(&dev, "POST", "/api/v1/reset", None).0, 200);
    let (_, body) = curl(&dev, "GET", "/api/v1/mailboxes", None);
    assert_eq!(
        text(&body),
        r#"[{"user":"alice","messages":1,"octets":51,"in_session":false}]"#
    );
    assert_eq!(
        std::fs::read(mail.join("alice")).unwrap(),
        b"From a@x Thu Nov 26 09:00:00 2026\nFrom: A <a@x>\nTo: alice@x\nSubject: seeded\n\nhi\n\n"
    );
    assert_eq!(curl(&dev, "DELETE", "/api/v1/mailboxes/alice", None).0, 200);
    assert!(!mail.join("alice").exists());
}

#[test]
fn a_message_over_the_size_limit_is_refused_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("mail"), &["--dev-smtp-max-size", "100"]);
    let big = vec![b'x'; 200];
    let (code, body) = curl(&dev, "POST", "/api/v1/mailboxes/carol/messages", Some(&big));
    assert_eq!(code, 413, "{}", text(&body));
    // Refused before anything was stored: carol's mailbox was not even created.
    assert_eq!(
        curl(&dev, "GET", "/api/v1/mailboxes/carol/messages", None).0,
        404
    );
    let (code, body) = curl(
        &dev,
        "POST",
        "/api/v1/mailboxes/carol/messages",
        Some(&big[..100]),
    );
    assert_eq!(code, 201, "{}", text(&body));
}

/// The DOM chromium renders for `url`, headless, with nothing fetched from elsewhere.
pub(crate) fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium runs (make deps installs it)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn chromium_renders_the_page_with_every_mailbox_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("mail"), &[]);
    let hostile = b"From: <script>alert(1)</script>\r\nSubject: Tom & Jerry <b>\r\n\r\nx\r\n";
    let (code, body) = curl(
        &dev,
        "POST",
        "/api/v1/mailboxes/zoe/messages",
        Some(hostile),
    );
    assert_eq!(code, 201);
    let uidl = uidls(&text(&body)).remove(0);
    assert_eq!(
        curl(
            &dev,
            "POST",
            "/api/v1/mailboxes/yann/messages",
            Some(b"Subject: second\n\nx\n")
        )
        .0,
        201
    );

    let dom = rendered_dom(&format!("http://{}/", dev.http));
    assert!(dom.contains("<h1>poplar dev mailboxes</h1>"), "{dom}");
    // The rows a browser built, in order, with the counts.
    let yann = dom.find("<tr data-user=\"yann\">").expect("yann's row");
    let zoe = dom.find("<tr data-user=\"zoe\">").expect("zoe's row");
    assert!(yann < zoe, "sorted by name");
    // The message's text arrived as text: no script element was created from it.
    assert!(!dom.contains("<script>"), "{dom}");
    assert!(dom.contains("Tom &amp; Jerry &lt;b&gt;"), "{dom}");
    let link = format!("href=\"/api/v1/mailboxes/zoe/messages/{uidl}\"");
    assert!(dom.contains(&link), "{dom}");
    // The raw view behind the link is the message as stored (a download to a browser).
    let raw_path = format!("/api/v1/mailboxes/zoe/messages/{uidl}");
    let (code, raw) = curl(&dev, "GET", &raw_path, None);
    assert_eq!((code, raw.as_slice()), (200, &hostile[..]));
}
