//! `poplar seed --edge-cases`, run as its own process, then each message retrieved over POP3
//! exactly as a client must receive it: line ends made CRLF, dots stuffed and unstuffed, the
//! octets of bare CRs, NULs and 8-bit headers kept, LIST's size equal to what RETR sends.

use std::process::Command;

use crate::common::{TestServer, poplar_bin};

/// The cases in the order `seed` appends them (the names are in their headers).
const NAMES: [&str; 12] = [
    "lone-dot",
    "leading-dots",
    "bare-cr",
    "nul",
    "long-line",
    "from-in-body",
    "no-final-newline",
    "mixed-line-ends",
    "8bit-headers",
    "empty-body",
    "headers-only",
    "big",
];

fn seeded(tweak: impl FnOnce(&mut poplar::config::Config)) -> TestServer {
    let s = TestServer::start_with("alice:{PLAIN}secret\n", &[], tweak);
    let template = format!("{}/mail/%n", s.dir.path().display());
    let out = Command::new(poplar_bin())
        .args(["seed", "--mail", &template, "--edge-cases", "alice"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains(": 12 messages added ("), "{stdout}");
    s
}

fn ends_with(m: &[u8], tail: &[u8], name: &str) {
    assert!(
        m.ends_with(tail),
        "{name}: ends {:?}",
        String::from_utf8_lossy(&m[m.len().saturating_sub(tail.len() + 40)..])
    );
}

#[test]
fn every_edge_case_comes_back_exactly() {
    let s = seeded(|_| {});
    let mut c = s.connect();
    c.login("alice", "secret");
    assert!(c.cmd("STAT").starts_with("+OK 12 "));
    let listing = String::from_utf8(c.multi("LIST")).unwrap();
    let sizes: Vec<usize> = listing
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    for (i, name) in NAMES.iter().enumerate() {
        let m = c.multi(&format!("RETR {}", i + 1));
        assert_eq!(m.len(), sizes[i], "{name}: LIST's size is what RETR sends");
        let header = format!("\r\nX-Poplar-Edge-Case: {name}\r\n");
        assert!(
            m.windows(header.len()).any(|w| w == header.as_bytes()),
            "{name}"
        );
        match *name {
            "lone-dot" => ends_with(
                &m,
                b"\r\n\r\nAbove the dot.\r\n.\r\nBelow the dot: still the same message.\r\n",
                name,
            ),
            "leading-dots" => ends_with(
                &m,
                b"\r\n\r\n.hidden\r\n..two dots\r\n...three\r\n. dot space\r\n",
                name,
            ),
            "bare-cr" => ends_with(
                &m,
                b"\r\n\r\none\rstill line one\r\nline two ends in CR\r\r\nline three\r\n",
                name,
            ),
            "nul" => ends_with(&m, b"\r\n\r\nbefore\0after\r\n\0\r\nend\r\n", name),
            "long-line" => {
                let line = [b"\r\n\r\n<".as_slice(), &[b'x'; 4997], b">.\r\n"].concat();
                ends_with(&m, &line, name);
            }
            // Stored quoted (mboxrd); shown as stored without --mbox-unquote.
            "from-in-body" => ends_with(
                &m,
                b"\r\n\r\n>From here on, this line starts with From.\r\n\
                  >>From this one was quoted by its author.\r\n>>>From and this twice.\r\n",
                name,
            ),
            "no-final-newline" => ends_with(&m, b"\r\n\r\nThe last line has no newline.\r\n", name),
            "mixed-line-ends" => ends_with(
                &m,
                b"X-Line-Ends: this header ends in CRLF\r\n\r\ncrlf\r\nlf\r\ncrlf again\r\n\
                  \r\nblank line above was CRLF\r\n",
                name,
            ),
            "8bit-headers" => {
                let h = b"\r\nX-Utf8: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x9c\x89\r\n\
                          X-Latin1: Gr\xfc\xdfe\r\n\r\n";
                assert!(m.windows(h.len()).any(|w| w == h), "{name}");
            }
            "empty-body" => ends_with(&m, b"X-Poplar-Edge-Case: empty-body\r\n\r\n", name),
            "headers-only" => ends_with(&m, b"X-Poplar-Edge-Case: headers-only\r\n", name),
            "big" => {
                assert!(m.len() > 20 * 1024 * 1024, "{}", m.len());
                assert!(m.split(|&b| b == b'\n').all(|l| l.len() <= 78));
            }
            _ => unreachable!(),
        }
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn with_mbox_unquote_from_lines_come_back_as_written() {
    let s = seeded(|c| c.mbox.view.unquote = true);
    let mut c = s.connect();
    c.login("alice", "secret");
    let m = c.multi("RETR 6");
    ends_with(
        &m,
        b"\r\n\r\nFrom here on, this line starts with From.\r\n\
          >From this one was quoted by its author.\r\n>>From and this twice.\r\n",
        "from-in-body",
    );
}
