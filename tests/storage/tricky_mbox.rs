//! Size and content invariants over a real mbox full of awkward messages: what RETR sends,
//! un-stuffed, is what LIST announced and what the file stores with LF turned into CRLF.

use crate::common::{Client, TestServer};

const FROM: &[u8] = b"From sender@example.com Thu Nov 26 09:00:00 2026\n";

/// One message as it sits in the file: its From_ line, its data, and the separator after it.
struct Stored {
    from: Vec<u8>,
    data: Vec<u8>,
    separator: Vec<u8>,
}

impl Stored {
    /// A message with the usual From_ line and a blank line after it, all LF.
    fn lf(data: &[u8]) -> Stored {
        Stored {
            from: FROM.to_vec(),
            data: data.to_vec(),
            separator: b"\n".to_vec(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        [&self.from[..], &self.data, &self.separator].concat()
    }

    /// What RETR must deliver after un-stuffing: LF becomes CRLF, a stored CRLF stays, and an
    /// unterminated last line gets its CRLF.
    fn sent(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in self.data.iter().enumerate() {
            if b == b'\n' && (i == 0 || self.data[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

fn tricky() -> Vec<Stored> {
    let lf = Stored::lf;
    vec![
        lf(b"Subject: dots\n\n.leading dot\n.\n..two dots\n. \nend\n"),
        Stored {
            from: b"From crlf@example.com Thu Nov 26 09:01:00 2026\r\n".to_vec(),
            data: b"Subject: crlf\r\nX-Note: stored with CRLF\r\n\r\nline one\r\n.\r\nline two\r\n"
                .to_vec(),
            separator: b"\r\n".to_vec(),
        },
        lf(b"Subject: empty body\n\n"),
        lf(b"Subject: twin\n\nsame bytes\n"),
        lf(b"Subject: twin\n\nsame bytes\n"),
        lf(b"Subject: from line\n\nhello\nFrom the desk of someone\n>From quoted\nbye\n"),
        lf(b"Subject: headers only\nX-Empty: yes\n"),
        lf(b"Subject: mixed\r\n\nbare LF after CRLF\r\nback\n"),
        Stored {
            from: FROM.to_vec(),
            data: b"Subject: last\n\nfirst line\n.no final newline".to_vec(),
            separator: Vec::new(),
        },
    ]
}

fn file(messages: &[Stored]) -> Vec<u8> {
    messages.iter().flat_map(Stored::bytes).collect()
}

/// The headers, the blank line, and the first `n` body lines of a message as sent.
fn top(sent: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_headers = true;
    let mut body = 0;
    for line in sent.split_inclusive(|&b| b == b'\n') {
        if !in_headers {
            if body == n {
                break;
            }
            body += 1;
        } else if line == b"\r\n" {
            in_headers = false;
        }
        out.extend_from_slice(line);
    }
    out
}

fn start(messages: &[Stored]) -> TestServer {
    TestServer::start("alice:{PLAIN}secret\n", &[("alice", &file(messages))])
}

fn sizes(c: &mut Client) -> Vec<u64> {
    let list = String::from_utf8(c.multi("LIST")).unwrap();
    list.lines()
        .enumerate()
        .map(|(i, l)| {
            let (n, size) = l.split_once(' ').unwrap();
            assert_eq!(n, (i + 1).to_string());
            size.parse().unwrap()
        })
        .collect()
}

#[test]
fn every_message_is_sent_as_stored_with_crlf_and_its_listed_size() {
    let msgs = tricky();
    let s = start(&msgs);
    let mut c = s.connect();
    c.login("alice", "secret");
    let listed = sizes(&mut c);
    assert_eq!(
        listed.len(),
        msgs.len(),
        "one message per From_ line after a blank"
    );
    let total: u64 = listed.iter().sum();
    assert_eq!(c.cmd("STAT"), format!("+OK {} {total}", msgs.len()));
    for (i, m) in msgs.iter().enumerate() {
        let n = i + 1;
        let want = m.sent();
        assert_eq!(listed[i], want.len() as u64, "LIST size of message {n}");
        assert_eq!(
            c.cmd(&format!("LIST {n}")),
            format!("+OK {n} {}", want.len())
        );
        assert_eq!(
            c.cmd(&format!("RETR {n}")),
            format!("+OK {} octets", want.len())
        );
        let got = c.body();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "RETR {n}"
        );
        assert_eq!(got.len() as u64, listed[i], "RETR {n} octets equal LIST");
    }
    assert_eq!(
        c.cmd("QUIT"),
        format!("+OK bye, {} messages left", msgs.len())
    );
    assert_eq!(
        std::fs::read(s.mbox("alice")).unwrap(),
        file(&msgs),
        "reading changes nothing"
    );
}

#[test]
fn top_sends_headers_blank_line_and_the_first_lines_of_the_body() {
    let msgs = tricky();
    let s = start(&msgs);
    let mut c = s.connect();
    c.login("alice", "secret");
    for (i, m) in msgs.iter().enumerate() {
        let sent = m.sent();
        for lines in [0, 1, 2, 3, 1000] {
            assert_eq!(
                String::from_utf8_lossy(&c.multi(&format!("TOP {} {lines}", i + 1))),
                String::from_utf8_lossy(&top(&sent, lines)),
                "TOP {} {lines}",
                i + 1
            );
        }
        assert_eq!(
            c.multi(&format!("TOP {} 4294967295", i + 1)),
            sent,
            "beyond the body"
        );
    }
    assert_eq!(
        c.multi("TOP 1 2"),
        b"Subject: dots\r\n\r\n.leading dot\r\n.\r\n"
    );
    assert_eq!(
        c.multi("TOP 7 0"),
        b"Subject: headers only\r\nX-Empty: yes\r\n"
    );
    assert_eq!(
        c.cmd("QUIT"),
        format!("+OK bye, {} messages left", msgs.len())
    );
}

#[test]
fn identical_messages_get_distinct_valid_uids_that_stay_across_sessions() {
    let msgs = tricky();
    let s = start(&msgs);
    let mut seen = None;
    for _ in 0..2 {
        let mut c = s.connect();
        c.login("alice", "secret");
        let listing = String::from_utf8(c.multi("UIDL")).unwrap();
        let uids: Vec<String> = listing
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .collect();
        assert_eq!(uids.len(), msgs.len());
        for u in &uids {
            assert!((1..=70).contains(&u.len()), "{u}");
            assert!(u.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{u}");
        }
        let mut unique = uids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), uids.len(), "twins 4 and 5 differ: {uids:?}");
        if let Some(prev) = &seen {
            assert_eq!(prev, &uids);
        }
        seen = Some(uids);
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
}

#[test]
fn dele_and_quit_rewrite_the_file_to_exactly_the_kept_messages() {
    // Delete the first, one twin, the CRLF one and the unterminated last one.
    let deleted = [1, 2, 4, 9];
    let msgs = tricky();
    let s = start(&msgs);
    let mut c = s.connect();
    c.login("alice", "secret");
    for n in deleted {
        assert_eq!(
            c.cmd(&format!("DELE {n}")),
            format!("+OK message {n} deleted")
        );
    }
    let left = msgs.len() - deleted.len();
    assert_eq!(c.cmd("QUIT"), format!("+OK bye, {left} messages left"));
    let kept: Vec<Stored> = tricky()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !deleted.contains(&(i + 1)))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(s.mbox("alice")).unwrap()),
        String::from_utf8_lossy(&file(&kept))
    );
    // The next session sees exactly the kept messages, renumbered.
    let mut c = s.connect();
    c.login("alice", "secret");
    let listed = sizes(&mut c);
    assert_eq!(listed.len(), kept.len());
    for (i, m) in kept.iter().enumerate() {
        assert_eq!(c.multi(&format!("RETR {}", i + 1)), m.sent());
        assert_eq!(listed[i], m.sent().len() as u64);
    }
    // Deleting everything leaves an empty file.
    for n in 1..=kept.len() {
        assert!(c.cmd(&format!("DELE {n}")).starts_with("+OK"));
    }
    assert_eq!(c.cmd("QUIT"), "+OK bye, 0 messages left");
    assert_eq!(std::fs::read(s.mbox("alice")).unwrap(), b"");
}

/// Messages with lines of every length up to past the server's 64 KiB read chunk, LF and CRLF
/// mixed, dots and `From ` at line starts, so that chunk boundaries fall everywhere: between
/// CR and LF, inside From_ lines, right before a dot.
fn large() -> Vec<Stored> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut msgs = Vec::new();
    for m in 0..40 {
        let mut data = format!("Subject: large {m}\nX-Seq: {m}\r\n\n").into_bytes();
        let mut prev_blank = true;
        for _ in 0..next(60) {
            let len = match next(10) {
                0 => 0,
                1 => 20_000 + next(60_000),
                _ => next(200),
            };
            let start: &[u8] = match next(6) {
                0 => b".",
                1 if !prev_blank => b"From ",
                2 => b"..",
                _ => b"",
            };
            data.extend_from_slice(start);
            data.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            prev_blank = start.is_empty() && len == 0;
            data.extend_from_slice(if next(2) == 0 { b"\n" } else { b"\r\n" });
        }
        if prev_blank {
            data.extend_from_slice(b"end\n");
        }
        msgs.push(Stored::lf(&data));
    }
    msgs
}

#[test]
fn large_messages_across_read_chunks_keep_the_invariants() {
    let msgs = large();
    let s = start(&msgs);
    let mut c = s.connect();
    c.login("alice", "secret");
    let listed = sizes(&mut c);
    assert_eq!(listed.len(), msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let want = m.sent();
        assert_eq!(
            listed[i],
            want.len() as u64,
            "LIST size of message {}",
            i + 1
        );
        let got = c.multi(&format!("RETR {}", i + 1));
        assert!(got == want, "RETR {} differs", i + 1);
        assert_eq!(c.multi(&format!("TOP {} 3", i + 1)), top(&want, 3));
    }
    for n in (1..=msgs.len()).step_by(3) {
        assert!(c.cmd(&format!("DELE {n}")).starts_with("+OK"));
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let kept: Vec<u8> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .flat_map(|(_, m)| m.bytes())
        .collect();
    assert!(
        std::fs::read(s.mbox("alice")).unwrap() == kept,
        "rewritten file differs"
    );
}
