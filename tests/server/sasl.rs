//! AUTH over a real socket (RFC 5034): PLAIN, LOGIN and CRAM-MD5 byte for byte, cancel, bad
//! base64, authzid mismatch, long responses, what CAPA and `AUTH` announce, and no OAuth
//! mechanism outside `--dev`.

use crate::common::{Client, TestServer, mbox};

const USERS: &str = "tim:{PLAIN}tanstaaf\nhashed:{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5\n";

fn server() -> TestServer {
    let m: &[u8] = b"Subject: hi\n\nbody\n";
    TestServer::start(USERS, &[("tim", &mbox(&[m])), ("hashed", &mbox(&[m]))])
}

fn logged_in(c: &mut Client) {
    assert_eq!(c.cmd("STAT"), "+OK 1 21");
}

#[test]
fn plain_with_an_initial_response() {
    let s = server();
    let mut c = s.connect();
    // base64("\0tim\0tanstaaf")
    assert_eq!(
        c.cmd("AUTH PLAIN AHRpbQB0YW5zdGFhZg=="),
        "+OK 1 message (21 octets)"
    );
    logged_in(&mut c);
}

#[test]
fn plain_in_two_steps_and_against_a_hash() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    // base64("hashed\0hashed\0Hello world!"): an authzid equal to the user is fine.
    assert_eq!(
        c.cmd("aGFzaGVkAGhhc2hlZABIZWxsbyB3b3JsZCE="),
        "+OK 1 message (21 octets)"
    );
    logged_in(&mut c);
}

#[test]
fn login_asks_username_then_password() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6");
    assert_eq!(c.cmd("dGlt"), "+ UGFzc3dvcmQ6");
    assert_eq!(c.cmd("dGFuc3RhYWY="), "+OK 1 message (21 octets)");
    logged_in(&mut c);
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH LOGIN dGlt"), "+ UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd("dGFuc3RhYWY="),
        "-ERR [IN-USE] mailbox is locked by another POP3 session"
    );
}

#[test]
fn cram_md5_answers_our_challenge() {
    let s = server();
    let mut c = s.connect();
    let challenge = c.cmd("AUTH CRAM-MD5");
    let b64 = challenge.strip_prefix("+ ").expect(&challenge);
    let raw = base64_decode(b64);
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(
        text.starts_with('<') && text.ends_with('>') && text.contains('@'),
        "{text}"
    );
    let digest = poplar::auth::cram_md5_digest(b"tanstaaf", &raw);
    let answer = base64_encode(format!("tim {digest}").as_bytes());
    assert_eq!(c.cmd(&answer), "+OK 1 message (21 octets)");
    logged_in(&mut c);
}

#[test]
fn cram_md5_fails_for_users_without_a_plain_secret() {
    let s = server();
    let mut c = s.connect();
    let challenge = c.cmd("AUTH CRAM-MD5");
    let raw = base64_decode(challenge.strip_prefix("+ ").unwrap());
    let digest = poplar::auth::cram_md5_digest(b"Hello world!", &raw);
    let answer = base64_encode(format!("hashed {digest}").as_bytes());
    assert_eq!(c.cmd(&answer), "-ERR [AUTH] authentication failed");
}

#[test]
fn star_cancels_and_the_session_goes_on() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6");
    assert_eq!(c.cmd("*"), "-ERR authentication cancelled");
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(c.cmd("*"), "-ERR authentication cancelled");
    c.login("tim", "tanstaaf");
}

#[test]
fn bad_base64_and_authzid_mismatch_are_clean_auth_errors() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(
        c.cmd("not*base64"),
        "-ERR [AUTH] response is not valid base64"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN !!!!"),
        "-ERR [AUTH] response is not valid base64"
    );
    // base64("root\0tim\0tanstaaf")
    assert_eq!(
        c.cmd("AUTH PLAIN cm9vdAB0aW0AdGFuc3RhYWY="),
        "-ERR [AUTH] authorization identity must be the user's own"
    );
    assert_eq!(c.cmd("AUTH PLAIN ="), "-ERR [AUTH] malformed SASL response");
    assert_eq!(c.cmd("AUTH XOAUTH2"), "-ERR unsupported SASL mechanism");
    // The same line as a command is a command again.
    assert_eq!(c.cmd("AUTH"), "+OK SASL mechanisms follow");
    assert_eq!(c.body(), b"PLAIN\r\nLOGIN\r\nCRAM-MD5\r\n");
}

#[test]
fn continuation_lines_may_be_8_kib_but_no_more() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6");
    // A 6 KiB user name: base64 makes it 8 KiB, still one response.
    let long_user = "u".repeat(6000);
    assert_eq!(
        c.cmd(&base64_encode(long_user.as_bytes())),
        "+ UGFzc3dvcmQ6"
    );
    assert_eq!(c.cmd("eA=="), "-ERR [AUTH] authentication failed");
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(
        c.cmd(&"A".repeat(9000)),
        "-ERR [AUTH] SASL response too long"
    );
    // The overlong line was consumed whole; the next line is a command.
    c.login("tim", "tanstaaf");
}

#[test]
fn capa_lists_the_mechanisms_before_and_after_login() {
    let s = server();
    let mut c = s.connect();
    let before = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(before.contains("SASL PLAIN LOGIN CRAM-MD5\r\n"), "{before}");
    assert!(c.greeting.contains('<'), "APOP timestamp: {}", c.greeting);
    c.login("tim", "tanstaaf");
    assert_eq!(String::from_utf8(c.multi("CAPA")).unwrap(), before);
}

/// XOAUTH2 and OAUTHBEARER are `--dev`'s alone (tests/clients/oauth.rs): the daemon has no
/// token issuer to check a bearer token against, so it neither offers nor takes them, with
/// or without an initial response, and says so rather than blame cleartext.
#[test]
fn the_daemon_neither_offers_nor_takes_oauth_mechanisms() {
    let s = server();
    let mut c = s.connect();
    let capa = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(
        !capa.contains("XOAUTH2") && !capa.contains("OAUTHBEARER"),
        "{capa}"
    );
    let xoauth2 = base64_encode(b"user=tim\x01auth=Bearer tanstaaf\x01\x01");
    let oauthbearer = base64_encode(b"n,a=tim,\x01auth=Bearer tanstaaf\x01\x01");
    let unsupported = "-ERR unsupported SASL mechanism";
    assert_eq!(c.cmd(&format!("AUTH XOAUTH2 {xoauth2}")), unsupported);
    assert_eq!(
        c.cmd(&format!("AUTH OAUTHBEARER {oauthbearer}")),
        unsupported
    );
    assert_eq!(c.cmd("AUTH OAUTHBEARER"), unsupported);
    // The next line is a command again, not a SASL response.
    c.login("tim", "tanstaaf");
    logged_in(&mut c);
}

#[test]
fn no_apop_drops_apop_and_cram_md5() {
    let s = TestServer::start_with(USERS, &[], |c| c.apop = false);
    let mut c = s.connect();
    assert_eq!(c.greeting, "+OK poplar ready");
    let capa = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(capa.contains("SASL PLAIN LOGIN\r\n"), "{capa}");
    assert_eq!(c.cmd("AUTH CRAM-MD5"), "-ERR unsupported SASL mechanism");
    assert_eq!(
        c.cmd("APOP tim c4c9334bac560ecc979e58001b3e22fb"),
        "-ERR APOP is not offered"
    );
}

#[test]
fn cram_md5_is_not_offered_when_no_user_has_a_plain_secret() {
    let only_hashed =
        "hashed:{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5\n";
    let s = TestServer::start(only_hashed, &[]);
    let mut c = s.connect();
    assert_eq!(c.greeting, "+OK poplar ready");
    assert_eq!(c.cmd("AUTH"), "+OK SASL mechanisms follow");
    assert_eq!(c.body(), b"PLAIN\r\nLOGIN\r\n");
}

#[test]
fn apop_works_with_the_greeting_timestamp() {
    let s = server();
    let mut c = s.connect();
    let ts = &c.greeting[c.greeting.find('<').unwrap()..];
    let digest = poplar::auth::apop_digest(ts, b"tanstaaf");
    assert_eq!(
        c.cmd(&format!("APOP tim {digest}")),
        "+OK 1 message (21 octets)"
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[test]
fn off_loopback_without_tls_only_cram_md5_is_offered() {
    let s = TestServer::start_with(USERS, &[("tim", &mbox(&[b"x\n"]))], |c| {
        c.treat_as_remote = vec!["127.0.0.2".parse().unwrap()];
    });
    // From 127.0.0.2, which this server treats as a remote network.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.2:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.connect(&s.addr.into()).unwrap();
    let stream: std::net::TcpStream = sock.into();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut c = Client {
        reader: std::io::BufReader::new(stream.try_clone().unwrap()),
        writer: stream,
        greeting: String::new(),
    };
    assert!(c.line().starts_with("+OK"));
    let capa = String::from_utf8(c.multi("CAPA")).unwrap();
    assert!(capa.contains("SASL CRAM-MD5\r\n"), "{capa}");
    assert!(!capa.contains("USER\r\n"), "{capa}");
    assert_eq!(c.cmd("AUTH"), "+OK SASL mechanisms follow");
    assert_eq!(c.body(), b"CRAM-MD5\r\n");
    let refused = "-ERR [AUTH] cleartext login refused without TLS";
    assert_eq!(c.cmd("AUTH PLAIN AHRpbQB0YW5zdGFhZg=="), refused);
    assert_eq!(c.cmd("AUTH LOGIN"), refused);
    let challenge = c.cmd("AUTH CRAM-MD5");
    let raw = base64_decode(challenge.strip_prefix("+ ").unwrap());
    let digest = poplar::auth::cram_md5_digest(b"tanstaaf", &raw);
    let answer = base64_encode(format!("tim {digest}").as_bytes());
    assert!(c.cmd(&answer).starts_with("+OK 1 message "));
}
