//! OAuth logins in `--dev` (issue 15): curl's POP3 client with `--oauth2-bearer` over SASL
//! XOAUTH2 and OAUTHBEARER, with and without an initial response; a token set per user through
//! the HTTP API (curl again) then the only one that works; the RFC 7628 failure exchange
//! checked from a raw-socket Python client; and no token in the log, even at trace.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::poplar_bin;
use crate::devserver::Dev;

const MESSAGE: &[u8] = b"From a@x Thu Nov 26 09:00:00 2026\nSubject: seeded\n\nhi\n\n";

/// A dev server whose alice has one message.
fn dev(dir: &Path) -> Dev {
    let mail = dir.join("mail");
    std::fs::create_dir(&mail).unwrap();
    std::fs::write(mail.join("alice"), MESSAGE).unwrap();
    Dev::start(&mail, &[])
}

/// What a client got from logging in and listing: the LIST lines, or why it could not.
type Listing = Result<String, String>;

/// Logs in as `user` with bearer `token` over `mechanism` (with an initial response or after
/// the empty challenge) and lists. OAUTHBEARER through curl's POP3 client; XOAUTH2 through
/// Python's poplib, because curl 7.88 (Debian 12's) picks OAUTHBEARER whenever a server offers
/// it, whatever `--login-options AUTH=XOAUTH2` says (curl issue 10259).
fn login_and_list(pop3: SocketAddr, user: &str, token: &str, mechanism: &str, ir: bool) -> Listing {
    match mechanism {
        "OAUTHBEARER" => curl_list(pop3, user, token, ir),
        "XOAUTH2" => poplib_xoauth2_list(pop3, user, token, ir),
        other => panic!("no client for {other}"),
    }
}

fn curl_list(pop3: SocketAddr, user: &str, token: &str, ir: bool) -> Listing {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"])
        .arg(format!("pop3://{pop3}/"))
        .args(["-u", &format!("{user}:"), "--oauth2-bearer", token])
        .args(["--login-options", "AUTH=OAUTHBEARER"]);
    if ir {
        cmd.arg("--sasl-ir");
    }
    let out = cmd.output().expect("curl runs (make deps installs it)");
    match out.status.code() {
        Some(0) => Ok(String::from_utf8(out.stdout).unwrap()),
        // curl's "login denied".
        Some(67) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        _ => panic!("{out:?}"),
    }
}

/// XOAUTH2 from poplib: the AUTH line (Google's message as the initial response, or after
/// the `+ ` challenge), the empty answer to an error challenge, then LIST.
const POPLIB_XOAUTH2: &str = r#"
import base64, poplib, sys
host, port, user, token, ir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
p = poplib.POP3(host, port, timeout=30)
message = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
try:
    if ir:
        reply = p._shortcmd("AUTH XOAUTH2 " + message)
    else:
        assert p._shortcmd("AUTH XOAUTH2") == b"+ "
        reply = p._shortcmd(message)
    if reply.startswith(b"+ "):
        p._shortcmd("")
except poplib.error_proto as e:
    print(e.args[0].decode())
    sys.exit(1)
_, lines, _ = p.list()
sys.stdout.write("".join(l.decode() + "\r\n" for l in lines))
p.quit()
"#;

fn poplib_xoauth2_list(pop3: SocketAddr, user: &str, token: &str, ir: bool) -> Listing {
    let out = Command::new("python3")
        .args(["-c", POPLIB_XOAUTH2])
        .arg(pop3.ip().to_string())
        .arg(pop3.port().to_string())
        .args([user, token, if ir { "1" } else { "0" }])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    match out.status.code() {
        Some(0) => Ok(stdout),
        Some(1) => Err(stdout),
        _ => panic!("{}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// curl on the HTTP API: the status and the body.
fn http(dev: &Dev, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-X", method, "-o", "-"])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://{}{path}", dev.http));
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd.output().expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The failure exchange from a raw socket, as a client that reads the RFC 7628 error would
/// drive it: Python prints the decoded challenge JSON's fields and the final reply.
const FAILURE_SCRIPT: &str = r#"
import base64, json, socket, sys
host, port, mechanism, message, dummy = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.create_connection((host, port), timeout=30)
f = s.makefile("rb")
def line():
    l = f.readline()
    assert l.endswith(b"\r\n"), l
    return l[:-2].decode()
assert line().startswith("+OK")
ir = base64.b64encode(message.encode().decode("unicode_escape").encode()).decode()
s.sendall(f"AUTH {mechanism} {ir}\r\n".encode())
challenge = line()
assert challenge.startswith("+ "), challenge
error = json.loads(base64.b64decode(challenge[2:], validate=True))
s.sendall(dummy.encode() + b"\r\n")
final = line()
s.sendall(b"QUIT\r\n")
print(json.dumps({"error": error, "final": final}))
"#;

/// Runs [`FAILURE_SCRIPT`]: the error JSON and the final reply.
fn refused(dev: &Dev, mechanism: &str, message: &str, dummy: &str) -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", FAILURE_SCRIPT])
        .arg(dev.pop3.ip().to_string())
        .arg(dev.pop3.port().to_string())
        .args([mechanism, message, dummy])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn curl_logs_in_with_any_token_over_both_mechanisms() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev(dir.path());
    for mechanism in ["XOAUTH2", "OAUTHBEARER"] {
        for ir in [false, true] {
            let listed = login_and_list(dev.pop3, "alice", "ya29.any-token", mechanism, ir);
            assert_eq!(listed, Ok("1 23\r\n".into()), "{mechanism} ir={ir}");
        }
    }
    // A user with no mailbox yet logs in too, and gets one (empty).
    for mechanism in ["XOAUTH2", "OAUTHBEARER"] {
        let user = format!("new-{mechanism}");
        let listed = login_and_list(dev.pop3, &user, "t", mechanism, true);
        // curl writes an empty listing as one empty line.
        let listed = listed.map(|l| l.trim().to_owned());
        assert_eq!(listed, Ok(String::new()), "{mechanism}");
        assert!(dir.path().join("mail").join(&user).is_file(), "{user}");
    }
}

#[test]
fn a_token_set_through_the_api_is_the_only_one_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev(dir.path());
    let token = "/api/v1/mailboxes/alice/token";
    assert_eq!(
        http(&dev, "GET", token, None),
        (200, r#"{"user":"alice","token_set":false}"#.into())
    );
    assert_eq!(
        http(&dev, "PUT", token, Some("right.token")),
        (200, r#"{"user":"alice","token_set":true}"#.into())
    );
    let (status, body) = http(&dev, "GET", token, None);
    assert_eq!(status, 200);
    assert!(!body.contains("right"), "the token is never echoed: {body}");

    for mechanism in ["XOAUTH2", "OAUTHBEARER"] {
        for ir in [false, true] {
            let refused = login_and_list(dev.pop3, "alice", "wrong", mechanism, ir);
            assert!(refused.is_err(), "{mechanism} ir={ir}: {refused:?}");
            let listed = login_and_list(dev.pop3, "alice", "right.token", mechanism, ir);
            assert_eq!(listed, Ok("1 23\r\n".into()), "{mechanism} ir={ir}");
        }
    }
    // Other users still log in with any token.
    assert!(login_and_list(dev.pop3, "bob", "wrong", "XOAUTH2", true).is_ok());

    // What fails is told as RFC 7628 says, to a client that reads it.
    let x = refused(
        &dev,
        "XOAUTH2",
        r"user=alice\x01auth=Bearer wrong\x01\x01",
        "",
    );
    assert_eq!(
        x["error"],
        serde_json::json!({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
    );
    assert_eq!(x["final"], "-ERR [AUTH] authentication failed");
    let b = refused(
        &dev,
        "OAUTHBEARER",
        r"n,a=alice,\x01host=localhost\x01port=110\x01auth=Bearer wrong\x01\x01",
        "AQ==",
    );
    assert_eq!(b["error"]["status"], "invalid_token");
    assert!(b["error"]["scope"].is_string() && b["error"]["openid-configuration"].is_string());
    assert_eq!(b["final"], "-ERR [AUTH] authentication failed");

    // Bad tokens and names are refused with the reason, and change nothing.
    let (status, body) = http(&dev, "PUT", token, Some(r#"{"token":"x"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("b64token"), "{body}");
    assert_eq!(
        http(&dev, "PUT", "/api/v1/mailboxes/.x/token", Some("t")).0,
        400
    );
    assert_eq!(http(&dev, "POST", token, None).0, 405);
    assert!(login_and_list(dev.pop3, "alice", "right.token", "XOAUTH2", true).is_ok());

    // Back to any token: by DELETE, and by reset.
    assert_eq!(
        http(&dev, "DELETE", token, None),
        (200, r#"{"user":"alice","token_set":false}"#.into())
    );
    assert!(login_and_list(dev.pop3, "alice", "wrong", "XOAUTH2", true).is_ok());
    assert_eq!(http(&dev, "PUT", token, Some("again")).0, 200);
    assert!(login_and_list(dev.pop3, "alice", "wrong", "OAUTHBEARER", true).is_err());
    assert_eq!(http(&dev, "POST", "/api/v1/reset", None).0, 200);
    assert!(login_and_list(dev.pop3, "alice", "wrong", "OAUTHBEARER", true).is_ok());
}

#[test]
fn no_token_reaches_the_log_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(poplar_bin())
        .arg("--dev")
        .arg(dir.path().join("mail"))
        .args(["--listen", "127.0.0.1:0", "--auth-delay", "0"])
        .env("POPLAR_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pop3 = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .find_map(|l| Some(l.ok()?.split("listening on ").nth(1)?.trim().to_owned()))
        .expect("the banner names the address");
    let pop3: SocketAddr = pop3.parse().unwrap();
    for mechanism in ["XOAUTH2", "OAUTHBEARER"] {
        for ir in [true, false] {
            let listed = login_and_list(pop3, "alice", "SECRETTOKEN42", mechanism, ir);
            assert!(listed.is_ok(), "{mechanism} ir={ir}: {listed:?}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("method=XOAUTH2"), "{logged}");
    assert!(logged.contains("method=OAUTHBEARER"), "{logged}");
    assert!(!logged.contains("SECRETTOKEN42"), "{logged}");
    // Nor the base64 of a message carrying it, wherever the token falls in its 3-octet groups.
    for pad in ["", "a", "aa"] {
        let b64 = poplar::auth::sasl::encode(format!("{pad}SECRETTOKEN42").as_bytes());
        let (start, end) = (pad.len().div_ceil(3) * 4, (pad.len() + 13) / 3 * 4);
        let inner = &b64[start..end];
        assert!(!logged.contains(inner), "{inner} in {logged}");
    }
}
