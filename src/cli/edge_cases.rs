//! `poplar seed --edge-cases`: the messages POP3 clients get wrong, each built here so that a
//! developer can point a client at them. docs/dev.md says what each one tests; the names are
//! in each message's `X-Poplar-Edge-Case` header and Subject, and are a contract with the
//! tests that look for them.

use std::io::{self, Read};

/// The size of the big message's body: large enough that a client reading a whole message
/// into memory, or a progress bar, shows its limits.
pub const BIG_BODY: u64 = 20 * 1024 * 1024;

#[derive(Clone, Copy)]
/// One edge case: its name, what it tests, and its body after the headers' blank line.
pub struct EdgeCase {
    /// A short name, also the message's `X-Poplar-Edge-Case` header.
    pub name: &'static str,
    /// What a client must get right, for the Subject line.
    pub tests: &'static str,
    /// Extra header lines (each ending in LF), before the blank line.
    headers: &'static [u8],
    body: Body,
}

#[derive(Clone, Copy)]
enum Body {
    /// These octets exactly.
    Bytes(&'static [u8]),
    /// `BIG_BODY` octets of 76-character lines.
    Big,
    /// No blank line and no body at all: the message is its headers.
    None,
}

/// Every edge case, in the order they are appended.
pub const EDGE_CASES: &[EdgeCase] = &[
    EdgeCase {
        name: "lone-dot",
        tests: "a body line that is a single dot must not end the message",
        headers: b"",
        body: Body::Bytes(b"Above the dot.\n.\nBelow the dot: still the same message.\n"),
    },
    EdgeCase {
        name: "leading-dots",
        tests: "lines starting with dots are dot-stuffed and unstuffed",
        headers: b"",
        body: Body::Bytes(b".hidden\n..two dots\n...three\n. dot space\n"),
    },
    EdgeCase {
        name: "bare-cr",
        tests: "a CR that ends no line is content, not a line end",
        headers: b"",
        body: Body::Bytes(b"one\rstill line one\nline two ends in CR\r\r\nline three\n"),
    },
    EdgeCase {
        name: "nul",
        tests: "NUL octets inside a line",
        headers: b"",
        body: Body::Bytes(b"before\0after\n\0\nend\n"),
    },
    EdgeCase {
        name: "long-line",
        tests: "a line of 5,000 octets, over RFC 5322's 998",
        headers: b"",
        body: Body::Bytes(&LONG_LINE),
    },
    EdgeCase {
        name: "from-in-body",
        tests: "body lines starting with From and >From (stored quoted, mboxrd)",
        headers: b"",
        body: Body::Bytes(
            b"From here on, this line starts with From.\n>From this one was quoted by its author.\n>>From and this twice.\n",
        ),
    },
    EdgeCase {
        name: "no-final-newline",
        tests: "a message whose last line has no line end",
        headers: b"",
        body: Body::Bytes(b"The last line has no newline."),
    },
    EdgeCase {
        name: "mixed-line-ends",
        tests: "CRLF and LF line ends in one message",
        headers: b"X-Line-Ends: this header ends in CRLF\r\n",
        body: Body::Bytes(b"crlf\r\nlf\ncrlf again\r\n\r\nblank line above was CRLF\n"),
    },
    EdgeCase {
        name: "8bit-headers",
        tests: "raw UTF-8 and Latin-1 octets in headers, not RFC 2047 words",
        headers: b"X-Utf8: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x9c\x89\nX-Latin1: Gr\xfc\xdfe\n",
        body: Body::Bytes(b"The headers above are 8-bit.\n"),
    },
    EdgeCase {
        name: "empty-body",
        tests: "headers, a blank line and no body",
        headers: b"",
        body: Body::Bytes(b""),
    },
    EdgeCase {
        name: "headers-only",
        tests: "no blank line after the headers at all (TOP has no body to give)",
        headers: b"",
        body: Body::None,
    },
    EdgeCase {
        name: "big",
        tests: "a 20 MiB message, to be streamed rather than held in memory",
        headers: b"",
        body: Body::Big,
    },
];

const LONG_LINE: [u8; 5001] = {
    let mut line = [b'x'; 5001];
    line[0] = b'<';
    line[4998] = b'>';
    line[4999] = b'.';
    line[5000] = b'\n';
    line
};

impl EdgeCase {
    /// The whole message as a stream: the big one is never in memory at once.
    pub fn message(&self) -> impl Read + use<> {
        let mut head = format!(
            "From: Edge Cases <edge@poplar.invalid>\n\
             To: developer@poplar.invalid\n\
             Subject: [{}] {}\n\
             Date: Thu, 01 Jan 2026 00:00:00 +0000\n\
             Message-ID: <{}@edge-cases.poplar.invalid>\n\
             X-Poplar-Edge-Case: {}\n",
            self.name, self.tests, self.name, self.name
        )
        .into_bytes();
        head.extend_from_slice(self.headers);
        let (blank, body): (&[u8], Box<dyn Read + Send>) = match self.body {
            Body::Bytes(b) => (b"\n", Box::new(b)),
            Body::Big => (b"\n", Box::new(BigBody { left: BIG_BODY })),
            Body::None => (b"", Box::new(io::empty())),
        };
        head.extend_from_slice(blank);
        io::Cursor::new(head).chain(body)
    }
}

/// `left` octets of 76-character lines, made as they are read.
struct BigBody {
    left: u64,
}

const BIG_LINE: &[u8; 77] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=-\n";

impl Read for BigBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let at = (BIG_BODY - self.left) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = BIG_LINE[(at + i) % BIG_LINE.len()];
        }
        // The body ends with a line end wherever the size cuts the pattern.
        if n > 0 && n as u64 == self.left {
            buf[n - 1] = b'\n';
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(case: &EdgeCase) -> Vec<u8> {
        let mut out = Vec::new();
        case.message().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn names_are_unique_and_each_message_says_its_name() {
        let mut names: Vec<_> = EDGE_CASES.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EDGE_CASES.len());
        for case in EDGE_CASES.iter().filter(|c| c.name != "big") {
            let m = whole(case);
            let header = format!("\nX-Poplar-Edge-Case: {}\n", case.name);
            assert!(m.windows(header.len()).any(|w| w == header.as_bytes()));
        }
    }

    #[test]
    fn the_big_body_is_exactly_its_size_in_lines_ending_with_a_newline() {
        let case = EDGE_CASES.iter().find(|c| c.name == "big").unwrap();
        let mut r = case.message();
        let (mut total, mut last, mut buf) = (0u64, 0u8, vec![0u8; 65_521]);
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
            last = buf[n - 1];
        }
        let head = whole(&EdgeCase {
            body: Body::Bytes(b""),
            ..*case
        });
        assert_eq!(total, head.len() as u64 + BIG_BODY);
        assert_eq!(last, b'\n');
    }

    #[test]
    fn the_long_line_is_over_998_octets() {
        assert_eq!(LONG_LINE.len() - 1, 5000);
        assert!(!LONG_LINE[..5000].contains(&b'\n'));
    }
}
