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

#[test]
fn dropping_the_server_stops_it() {
    let server = Server::start().unwrap();
    let addr = server.addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
}
