//! Brute-force delays and resource limits over real sockets. Delays are checked against
//! deadlines with generous slack, never for exact timing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, mbox};

const USERS: &str = "alice:{PLAIN}secret\n";

fn alice_server(tweak: impl FnOnce(&mut poplar::config::Config)) -> TestServer {
    let m: &[u8] = b"Subject: x\n\nbody\n";
    TestServer::start_with(USERS, &[("alice", &mbox(&[m]))], tweak)
}

/// Runs `f` and returns its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Asserts `took` is at least `min` and, with plenty of slack for a busy machine, not wildly
/// more.
fn about(took: Duration, min: Duration) {
    assert!(took >= min, "{took:?} is shorter than {min:?}");
    assert!(
        took < min + Duration::from_secs(5),
        "{took:?} is far beyond {min:?}"
    );
}

/// Reads until the server closes; panics if it does not within the client's read timeout.
fn closed(c: &mut Client) -> Vec<u8> {
    c.rest()
}

#[test]
fn failures_wait_doubling_delays_per_address_and_the_third_closes() {
    let base = Duration::from_millis(200);
    let s = alice_server(|c| c.auth_failure_delay = base);
    let mut c = s.connect();
    c.cmd("USER alice");
    let (r, t1) = timed(|| c.cmd("PASS wrong"));
    assert_eq!(r, "-ERR [AUTH] authentication failed");
    about(t1, base);
    // An unknown user waits the same way, and gets the same reply.
    c.cmd("USER nobody");
    let (r, t2) = timed(|| c.cmd("PASS wrong"));
    assert_eq!(r, "-ERR [AUTH] authentication failed");
    about(t2, base * 2);
    let (r, t3) = timed(|| c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n"));
    assert_eq!(r, "-ERR [AUTH] authentication failed");
    about(t3, base * 4);
    assert_eq!(closed(&mut c), b"", "closed after the third failure");
    // The next session from the same address starts where the last one left off.
    let mut c = s.connect();
    c.cmd("USER alice");
    let (_, t4) = timed(|| c.cmd("PASS wrong"));
    about(t4, base * 8);
    // A successful login is not slowed by the address's record.
    let (_, ok) = timed(|| c.login("alice", "secret"));
    assert!(ok < base * 8, "a success took {ok:?}");
}

#[test]
fn per_address_limit_refuses_with_sys_temp_and_frees_on_close() {
    let s = alice_server(|c| c.max_per_address = 3);
    let mut held: Vec<Client> = (0..3).map(|_| s.connect()).collect();
    let mut refused = Client::connect(s.addr);
    assert_eq!(
        refused.line(),
        "-ERR [SYS/TEMP] too many connections from your address"
    );
    assert_eq!(closed(&mut refused), b"");
    assert_eq!(held[0].cmd("QUIT"), "+OK bye");
    held.remove(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect(s.addr);
        if c.line().starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn total_limit_refuses_with_sys_temp() {
    let s = alice_server(|c| c.max_connections = 2);
    let _a = s.connect();
    let _b = s.connect();
    let mut refused = Client::connect(s.addr);
    assert_eq!(
        refused.line(),
        "-ERR [SYS/TEMP] too many connections, try again later"
    );
}

#[test]
fn bad_commands_before_login_close_the_connection() {
    let s = alice_server(|c| c.max_bad_commands = 3);
    let mut c = s.connect();
    assert!(c.cmd("FOO").starts_with("-ERR"));
    assert!(c.cmd("STAT").starts_with("-ERR"));
    assert!(c.cmd("PASS x").starts_with("-ERR"));
    assert_eq!(c.cmd("BAR"), "-ERR too many bad commands; closing");
    assert_eq!(closed(&mut c), b"");
    // After login, mistakes are only mistakes.
    let mut c = s.connect();
    c.login("alice", "secret");
    for _ in 0..20 {
        assert!(c.cmd("FOO").starts_with("-ERR"));
    }
    assert_eq!(c.cmd("STAT"), "+OK 1 20");
}

#[test]
fn authorization_times_out_sooner_than_a_logged_in_session() {
    let s = alice_server(|c| {
        c.auth_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(1500);
    });
    let mut anon = s.connect();
    let mut user = s.connect();
    user.login("alice", "secret");
    let (_, t) = timed(|| closed(&mut anon));
    about(t, Duration::from_millis(250));
    // Well past the AUTHORIZATION timeout, the logged-in session is still there.
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(user.cmd("NOOP"), "+OK");
    let (_, t) = timed(|| closed(&mut user));
    about(t, Duration::from_millis(1400));
}

#[test]
fn a_trickling_client_is_cut_off_at_the_authorization_deadline() {
    let s = alice_server(|c| c.auth_timeout = Duration::from_millis(500));
    let mut c = s.connect();
    let start = Instant::now();
    // One byte every 50 ms: each read is quick, but the login never comes.
    let mut cut = false;
    for b in b"USER alice".iter().cycle().take(200) {
        std::thread::sleep(Duration::from_millis(50));
        if c.writer.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
    }
    let rest = closed(&mut c);
    assert!(cut || rest.is_empty(), "{rest:?}");
    about(
        start.elapsed().min(Duration::from_secs(9)),
        Duration::from_millis(450),
    );
    assert!(start.elapsed() < Duration::from_secs(9), "never cut off");
}

#[test]
fn a_client_that_never_reads_is_cut_off_by_the_write_timeout() {
    // A message far larger than the socket buffers, so the server's writes block.
    let big = vec![b'x'; 8 << 20];
    let mut msg = b"Subject: big\n\n".to_vec();
    for chunk in big.chunks(998) {
        msg.extend_from_slice(chunk);
        msg.push(b'\n');
    }
    let s = TestServer::start_with(USERS, &[("alice", &mbox(&[&msg]))], |c| {
        c.write_timeout = Duration::from_millis(500);
    });
    let mut stuck = TcpStream::connect(s.addr).unwrap();
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 64];
    let _ = stuck.read(&mut greeting).unwrap();
    stuck
        .write_all(b"USER alice\r\nPASS secret\r\nRETR 1\r\n")
        .unwrap();
    // Never read the message. Once the write timeout cuts the session, the mailbox lock is
    // released and a new login gets in.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut c = s.connect();
        c.cmd("USER alice");
        let r = c.cmd("PASS secret");
        if r.starts_with("+OK") {
            break;
        }
        assert!(r.contains("[IN-USE]"), "{r}");
        assert!(
            Instant::now() < deadline,
            "the stuck session was never cut off"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn per_user_limit_refuses_a_further_login_before_touching_the_mailbox() {
    let s = alice_server(|c| c.max_per_user = 1);
    let mut first = s.connect();
    first.login("alice", "secret");
    let mut second = s.connect();
    second.cmd("USER alice");
    assert_eq!(
        second.cmd("PASS secret"),
        "-ERR [IN-USE] too many sessions for this user"
    );
    assert_eq!(first.cmd("QUIT"), "+OK bye, 1 message left");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        second.cmd("USER alice");
        if second.cmd("PASS secret").starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the user's slot was never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn behind_a_proxy_the_client_address_from_the_header_is_what_counts() {
    let s = TestServer::start_with(USERS, &[("alice", &mbox(&[b"x\n"]))], |c| {
        c.listen.clear();
        c.proxy_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.allow_cleartext = true;
        c.max_per_address = 1;
    });
    let via_proxy = |client: &str| {
        let mut c = Client::connect(s.addr);
        c.send_raw(format!("PROXY TCP4 {client} 198.51.100.1 4000 110\r\n").as_bytes());
        let first = c.line();
        (c, first)
    };
    // All three come from 127.0.0.1, the proxy; two of them from the same real client.
    let (_held, first) = via_proxy("192.0.2.7");
    assert!(first.starts_with("+OK poplar ready"), "{first}");
    let (mut second, refused) = via_proxy("192.0.2.7");
    assert_eq!(
        refused,
        "-ERR [SYS/TEMP] too many connections from your address"
    );
    assert_eq!(closed(&mut second), b"");
    let (_other, greeting) = via_proxy("192.0.2.8");
    assert!(greeting.starts_with("+OK poplar ready"), "{greeting}");
}

/// Issue 14 (5): a client that reconnects the moment it reads `+OK` to QUIT must not be
/// refused by its own finished session, which used to count against its address until its
/// thread ended. Both ways a session can say goodbye: QUIT before and after login.
#[test]
fn a_session_that_answered_quit_no_longer_counts_against_its_address() {
    let s = alice_server(|c| c.max_per_address = 1);
    let mut c = s.connect();
    for round in 0..300 {
        if round % 2 == 0 {
            c.login("alice", "secret");
        }
        let bye = c.cmd("QUIT");
        assert!(bye.starts_with("+OK"), "round {round}: {bye}");
        c = Client::connect(s.addr);
        let greeting = c.line();
        assert!(
            greeting.starts_with("+OK poplar ready"),
            "round {round}: {greeting}"
        );
    }
}

#[test]
fn capa_lists_expire_never_always_and_login_delay_only_when_set() {
    let plain = alice_server(|_| {});
    let mut c = plain.connect();
    let before = String::from_utf8(c.multi("CAPA")).unwrap();
    c.login("alice", "secret");
    let after = String::from_utf8(c.multi("CAPA")).unwrap();
    for caps in [&before, &after] {
        assert!(caps.contains("\r\nEXPIRE NEVER\r\n"), "{caps}");
        assert!(!caps.contains("LOGIN-DELAY"), "{caps}");
    }
    let delayed = alice_server(|c| c.login_delay = Duration::from_secs(900));
    let mut c = delayed.connect();
    let before = String::from_utf8(c.multi("CAPA")).unwrap();
    c.login("alice", "secret");
    let after = String::from_utf8(c.multi("CAPA")).unwrap();
    for caps in [&before, &after] {
        assert!(caps.contains("\r\nEXPIRE NEVER\r\n"), "{caps}");
        assert!(caps.contains("\r\nLOGIN-DELAY 900\r\n"), "{caps}");
    }
}

#[test]
fn a_login_within_the_login_delay_is_refused_before_the_mailbox_is_opened() {
    let s = alice_server(|c| c.login_delay = Duration::from_millis(300));
    let original = std::fs::read(s.mbox("alice")).unwrap();
    let mut first = s.connect();
    // A fraction of a second is announced rounded up: waiting what CAPA says always works.
    let caps = String::from_utf8(first.multi("CAPA")).unwrap();
    assert!(caps.contains("\r\nLOGIN-DELAY 1\r\n"), "{caps}");
    first.login("alice", "secret");
    // The first session still holds the mailbox: opening it again would answer [IN-USE].
    let mut second = s.connect();
    second.cmd("USER alice");
    assert_eq!(
        second.cmd("PASS wrong"),
        "-ERR [AUTH] authentication failed",
        "the password is checked first"
    );
    second.cmd("USER alice");
    let refused = second.cmd("PASS secret");
    assert!(refused.starts_with("-ERR [LOGIN-DELAY] "), "{refused}");
    assert_eq!(second.cmd("STAT"), "-ERR STAT not valid in this state");
    assert_eq!(first.cmd("QUIT"), "+OK bye, 1 message left");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), original);
    // Once the delay has passed, the same user gets in.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        second.cmd("USER alice");
        let r = second.cmd("PASS secret");
        if r.starts_with("+OK") {
            break;
        }
        assert!(r.starts_with("-ERR [LOGIN-DELAY] "), "{r}");
        assert!(Instant::now() < deadline, "the login delay never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(second.cmd("STAT").starts_with("+OK 1 "));
    assert_eq!(second.cmd("QUIT"), "+OK bye, 1 message left");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), original);
}
