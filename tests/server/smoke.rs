//! The RFC 1939 example session over a real socket, end to end.

use crate::common::{TestServer, mbox};

#[test]
fn login_list_retrieve_delete_and_the_message_is_gone_next_time() {
    let m1: &[u8] = b"Subject: one\n\nfirst body\n";
    let m2: &[u8] = b"Subject: two\n\nsecond body\n";
    let server = TestServer::start("alice:{PLAIN}secret\n", &[("alice", &mbox(&[m1, m2]))]);
    let mut c = server.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 2 57");
    assert_eq!(c.multi("LIST"), b"1 28\r\n2 29\r\n");
    assert_eq!(c.multi("RETR 1"), b"Subject: one\r\n\r\nfirst body\r\n");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = server.connect();
    c.login("alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 1 29");
    assert_eq!(c.multi("RETR 1"), b"Subject: two\r\n\r\nsecond body\r\n");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let left = std::fs::read(server.mbox("alice")).unwrap();
    assert_eq!(left, mbox(&[m2]));
}
