//! Mailboxes other programs wrote, read as they meant them: Dovecot's Content-Length mboxes
//! (`tests/data/dovecot/*.mbox`, made by `doveadm save` and `doveadm expunge`, see make.sh
//! there) served as Dovecot's own POP3 server serves them (its answers pinned here;
//! tests/clients/dovecot.rs asks it live), the folder-internal pseudo-message, bookkeeping
//! headers hidden but kept, and Dovecot's UIDLs, stable across deletions and restarts.

use crate::common::{Client, TestServer};

const USERS: &str = "alice:{PLAIN}pw\n";

/// Three messages by `doveadm save`; the first has a body line `From the start of a
/// paragraph` after a blank line, and carries the folder's `X-IMAPbase:`.
const SAVED: &[u8] = include_bytes!("../data/dovecot/saved.mbox");
/// The pseudo-message `doveadm expunge` left, then two messages by `doveadm save`; the
/// first body starts with `From here on`.
const PSEUDO: &[u8] = include_bytes!("../data/dovecot/pseudo.mbox");

fn login(server: &TestServer) -> Client {
    let mut c = server.connect();
    c.login("alice", "pw");
    c
}

fn lines(body: Vec<u8>) -> Vec<String> {
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_dovecot_mailbox_is_served_as_dovecot_serves_it() {
    let server = TestServer::start(USERS, &[("alice", SAVED)]);
    let mut c = login(&server);
    // Dovecot 2.3's POP3 server on the same file said all of this.
    assert_eq!(c.cmd("STAT"), "+OK 3 159");
    assert_eq!(lines(c.multi("LIST")), ["1 78", "2 46", "3 35"]);
    assert_eq!(
        lines(c.multi("UIDL")),
        [
            "1 000000016b12f0c5",
            "2 000000026b12f0c5",
            "3 000000036b12f0c5"
        ]
    );
    assert_eq!(
        c.multi("RETR 1"),
        b"From: a@x\r\nSubject: one\r\n\r\nfirst body\r\n\r\nFrom the start of a paragraph\r\n\
          more\r\n"
    );
    assert_eq!(
        c.multi("TOP 1 2"),
        b"From: a@x\r\nSubject: one\r\n\r\nfirst body\r\n\r\n"
    );
    assert_eq!(
        c.multi("RETR 2"),
        b"From: b@x\r\nSubject: two\r\n\r\nno newline at end\r\n"
    );
    assert_eq!(
        c.multi("RETR 3"),
        b"From: c@x\r\nSubject: three\r\n\r\nline\r\n"
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn the_folder_internal_pseudo_message_is_not_mail_and_survives_deletions() {
    let server = TestServer::start(USERS, &[("alice", PSEUDO)]);
    let mut c = login(&server);
    assert_eq!(c.cmd("STAT"), "+OK 2 89");
    assert_eq!(lines(c.multi("LIST")), ["1 55", "2 34"]);
    assert_eq!(
        lines(c.multi("UIDL")),
        ["1 000000046b12f0c5", "2 000000056b12f0c5"]
    );
    assert_eq!(
        c.multi("RETR 1"),
        b"From: d@x\r\nSubject: four\r\n\r\nFrom here on, a body line\r\n"
    );
    assert!(c.cmd("RETR 3").starts_with("-ERR"));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // The pseudo-message and the kept message are in the file byte for byte.
    let after = std::fs::read(server.mbox("alice")).unwrap();
    let second = PSEUDO
        .windows(20)
        .position(|w| w == b"From alice@vm  Fri D")
        .unwrap();
    let third = second
        + 1
        + PSEUDO[second + 1..]
            .windows(20)
            .position(|w| w == b"From alice@vm  Fri D")
            .unwrap();
    assert_eq!(after, [&PSEUDO[..second], &PSEUDO[third..]].concat());
    let mut c = login(&server);
    assert_eq!(c.cmd("STAT"), "+OK 1 34");
    assert_eq!(lines(c.multi("UIDL")), ["1 000000056b12f0c5"]);
    // Deleting everything still leaves the folder's data.
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let after = std::fs::read(server.mbox("alice")).unwrap();
    assert_eq!(after, &PSEUDO[..second]);
    let mut c = login(&server);
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
}

#[test]
fn deleting_the_first_message_moves_the_folder_uid_state_and_keeps_every_uid() {
    let mut server = TestServer::start(USERS, &[("alice", SAVED)]);
    let mut c = login(&server);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let after = String::from_utf8(std::fs::read(server.mbox("alice")).unwrap()).unwrap();
    // Message 2 now comes first and carries the folder's X-IMAPbase; every X-UID, Status,
    // X-Keywords and Content-Length line is still in the file.
    let first: Vec<&str> = after.lines().take(3).collect();
    assert!(first[0].starts_with("From alice@vm "), "{after}");
    assert_eq!(first[1], "X-IMAPbase: 1796403397 0000000003");
    assert_eq!(first[2], "From: b@x");
    for kept in [
        "X-UID: 2\n",
        "X-UID: 3\n",
        "Content-Length: 18\n",
        "Content-Length: 5\n",
    ] {
        assert!(after.contains(kept), "{kept} in {after}");
    }
    assert_eq!(after.matches("Status: \n").count(), 2);
    assert!(!after.contains("Subject: one"));
    let want = ["1 000000026b12f0c5", "2 000000036b12f0c5"];
    let mut c = login(&server);
    assert_eq!(c.cmd("STAT"), "+OK 2 81");
    assert_eq!(lines(c.multi("UIDL")), want);
    assert_eq!(
        c.multi("RETR 1"),
        b"From: b@x\r\nSubject: two\r\n\r\nno newline at end\r\n"
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // The same after a restart, and after the index is lost (UIDs from the file alone).
    let dir = server.dir.path().to_owned();
    server.stop();
    std::fs::remove_file(dir.join("mail/alice.poplar-index")).unwrap();
    let again = TestServer::start(USERS, &[("alice", after.as_bytes())]);
    let mut c = login(&again);
    assert_eq!(lines(c.multi("UIDL")), want);
}

#[test]
fn bookkeeping_headers_are_hidden_from_clients_in_any_mbox() {
    // A mailbox a mail reader (mutt, pine) marked up: Status and X-Status lines, folded
    // X-Keywords, no Content-Length.
    let mbox = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: read\nStatus: RO\nX-Status: A\n\
                 X-Keywords: $Forwarded\n  $Label1\nTo: b@x\n\nbody\n\n";
    let server = TestServer::start(USERS, &[("alice", mbox)]);
    let mut c = login(&server);
    let want = b"Subject: read\r\nTo: b@x\r\n\r\nbody\r\n";
    assert_eq!(lines(c.multi("LIST")), [format!("1 {}", want.len())]);
    assert_eq!(c.multi("RETR 1"), want);
    assert_eq!(c.multi("TOP 1 0"), b"Subject: read\r\nTo: b@x\r\n\r\n");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(std::fs::read(server.mbox("alice")).unwrap(), mbox);
}

#[test]
fn x_uidl_headers_still_win_when_asked_for_in_a_dovecot_mailbox() {
    let with_uidl = String::from_utf8(SAVED.to_vec()).unwrap().replacen(
        "Subject: two\n",
        "Subject: two\nX-UIDL: qpopper-2\n",
        1,
    );
    let server = TestServer::start_with(USERS, &[("alice", with_uidl.as_bytes())], |c| {
        c.mbox.view.uidl_from_header = true;
    });
    let mut c = login(&server);
    assert_eq!(
        lines(c.multi("UIDL")),
        ["1 000000016b12f0c5", "2 qpopper-2", "3 000000036b12f0c5"]
    );
}

/// `poplar check --mail DIR/%n alice`: exit code and report.
fn check(dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(crate::common::poplar_bin())
        .args(["check", "--mail"])
        .arg(format!("{}/%n", dir.display()))
        .arg("alice")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn check_names_the_dialect_and_the_uidls_clients_will_get() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alice"), PSEUDO).unwrap();
    let (code, out) = check(dir.path());
    assert_eq!(code, 0, "{out}");
    for want in [
        "messages  2 (89 octets as sent)",
        "message   1  offset 524  size 55  uid 000000046b12f0c5",
        "message   2  offset 737  size 34  uid 000000056b12f0c5",
        "dialect   mboxcl2: Content-Length on 2 of 2 messages, as Dovecot, UW-IMAP and Solaris \
         mail write (1 body 'From ' line kept inside its message)",
        "folder    IMAP UIDVALIDITY 1796403397, last UID 5; folder-internal pseudo-message kept, \
         never served",
        "uidls     Dovecot's (X-UID, UIDVALIDITY: %08Xu%08Xv) for all 2",
        "result    ok",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    std::fs::write(
        dir.path().join("alice"),
        crate::common::mbox(&[b"Subject: a\n\nx\n"]),
    )
    .unwrap();
    let (_, out) = check(dir.path());
    assert!(
        out.contains("dialect   mboxo/mboxrd: no Content-Length"),
        "{out}"
    );
    assert!(
        out.contains("uidls     poplar's own (24 hex digits)"),
        "{out}"
    );
}
