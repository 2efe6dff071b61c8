use super::*;
use crate::mailbox::quote::{FromQuote, Step, Unquote};
use std::io::{Read, Write};

/// What one scan of `bytes` fed `chunk` bytes at a time found.
struct ScanResult {
    messages: Vec<Found>,
}

fn scan_bytes(bytes: &[u8], chunk: usize) -> ScanResult {
    let mut s = Scanner::new(0, &bytes);
    for c in bytes.chunks(chunk.max(1)) {
        s.feed(c);
    }
    s.finish();
    ScanResult { messages: s.found }
}

#[test]
fn scanning_a_file_hands_out_every_message_and_stops_at_its_end() {
    let mut f = tempfile::tempfile().unwrap();
    let mut mbox = Vec::new();
    for i in 0..5000 {
        mbox.extend_from_slice(format!("From a\nS: {i}\n\nbody\n\n").as_bytes());
    }
    std::io::Write::write_all(&mut f, &mbox).unwrap();
    let mut starts = Vec::new();
    let len = scan(&f, 0, |m| {
        starts.push(m.start);
        Ok(())
    })
    .unwrap();
    assert_eq!(len, mbox.len() as u64);
    assert_eq!(
        starts,
        scan_bytes(&mbox, 4096)
            .messages
            .iter()
            .map(|m| m.start)
            .collect::<Vec<_>>()
    );
    let from = starts[4000];
    let mut n = 0;
    scan(&f, from, |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 1000);
}

fn bodies(bytes: &[u8]) -> Vec<&[u8]> {
    scan_bytes(bytes, 4096)
        .messages
        .iter()
        .map(|m| &bytes[m.data as usize..m.end as usize])
        .collect()
}

/// Octets as sent for stored bytes: LF without CR counts two, and an unterminated last line
/// gets its line end.
fn sent(body: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut prev = 0u8;
    for &b in body {
        n += if b == b'\n' && prev != b'\r' { 2 } else { 1 };
        prev = b;
    }
    if !body.is_empty() && !body.ends_with(b"\n") {
        n += if prev == b'\r' { 1 } else { 2 };
    }
    n
}

#[test]
fn from_lines_start_messages_only_after_a_blank_line() {
    let mbox = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: 1\n\nbody\nFrom not a boundary\n\n\
                 From b@x Mon Jan  1 00:00:00 2024\nSubject: 2\n\nsecond\n\n";
    assert_eq!(
        bodies(mbox),
        vec![
            &b"Subject: 1\n\nbody\nFrom not a boundary\n"[..],
            &b"Subject: 2\n\nsecond\n"[..]
        ]
    );
}

#[test]
fn crlf_and_lf_sizes_follow_what_is_sent_and_the_separator_is_in_neither() {
    for mbox in [
        &b"From a Mon\nA: 1\n\nx\n\nFrom b Mon\nB: 2\n\ny\n\n"[..],
        &b"From a Mon\r\nA: 1\r\n\r\nx\r\n\r\nFrom b Mon\r\nB: 2\r\n\r\ny\r\n\r\n"[..],
        &b"From a Mon\nA: 1\r\n\nx\n\r\nFrom b Mon\nB: 2\n\ny"[..],
    ] {
        let r = scan_bytes(mbox, 4096);
        assert_eq!(r.messages.len(), 2, "{mbox:?}");
        for m in &r.messages {
            let body = &mbox[m.data as usize..m.end as usize];
            assert_eq!(m.size, sent(body), "{body:?}");
            assert!(!body.ends_with(b"\n\n") && !body.ends_with(b"\n\r\n"));
        }
    }
}

#[test]
fn scanning_in_any_chunk_size_finds_the_same() {
    let mbox =
        b"junk before\nFrom a Mon\r\nX: y\r\n\r\n>From q\r\nFrom b\n\nFrom c Tue\nS: \0\0\n\n\nz\r";
    let whole = scan_bytes(mbox, mbox.len());
    for chunk in 1..12 {
        assert_eq!(
            scan_bytes(mbox, chunk).messages,
            whole.messages,
            "chunk {chunk}"
        );
    }
}

#[test]
fn garbled_files_are_served_as_well_as_they_can_be() {
    // Text before the first From_ line is no message; NUL bytes are bytes; a From_ line with
    // no date is still a From_ line; a truncated last message ends where the file does.
    let mbox = b"leftover text\n\nFrom \0bad date\nA: \0\n\nbo\0dy\n\nFrom x 2024\nB: 1\n\ncut off";
    let r = scan_bytes(mbox, 3);
    assert_eq!(r.messages.len(), 2);
    assert_eq!(r.messages[0].start, 15);
    assert_eq!(bodies(mbox)[0], b"A: \0\n\nbo\0dy\n");
    assert_eq!(bodies(mbox)[1], b"B: 1\n\ncut off");
    assert_eq!(r.messages[1].size, sent(b"B: 1\n\ncut off"));
    assert!(scan_bytes(b"no messages at all\n", 5).messages.is_empty());
    assert!(scan_bytes(b"", 5).messages.is_empty());
}

#[test]
fn digests_ignore_what_mail_readers_rewrite_and_tell_messages_apart() {
    let a = scan_bytes(b"From a Mon\nSubject: s\nStatus: O\n\nbody\n", 7).messages;
    let b = scan_bytes(
        b"From a Mon\nStatus: RO\nSubject: s\nX-Status: A\n\nbody\n",
        7,
    )
    .messages;
    let c = scan_bytes(b"From a Mon\nSubject: t\n\nbody\n", 7).messages;
    assert_eq!(a[0].digest, b[0].digest);
    assert_ne!(a[0].digest, c[0].digest);
}

#[test]
fn x_uidl_headers_are_taken_only_when_well_formed() {
    let r = scan_bytes(
        b"From a\nX-UIDL: abc123\n\nx\n\nFrom b\nX-UIDL: has space\n\ny\n\nFrom c\nx-uidl:\n\nz\n",
        5,
    );
    let uids: Vec<_> = r.messages.iter().map(|m| m.header_uid.clone()).collect();
    assert_eq!(uids, vec![Some("abc123".into()), None, None]);
}

/// A small deterministic generator, so the property tests below need no crate.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn naive_unquote(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

#[test]
fn unquoting_matches_a_naive_reference_and_the_scanned_size() {
    let alphabet = b">>>From \n\rx";
    let mut seed = 7;
    for _ in 0..3000 {
        let len = (lcg(&mut seed) % 40) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[(lcg(&mut seed) % alphabet.len() as u64) as usize])
            .collect();
        let want = naive_unquote(&body);
        for (inner, outer) in [(1, 1), (3, 2), (64, 5), (4096, 4096)] {
            let mut r = Unquote::new(Chunked(&body, 0, inner));
            let mut got = Vec::new();
            let mut buf = vec![0u8; outer];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, want, "{body:?} {inner}/{outer}");
        }
        let mut mbox = b"From a Mon\n".to_vec();
        mbox.extend_from_slice(&body);
        let m = &scan_bytes(&mbox, 3).messages[0];
        let stored = &mbox[m.data as usize..m.end as usize];
        assert_eq!(m.unquoted_size, sent(&naive_unquote(stored)), "{body:?}");
    }
}

#[test]
fn unquoting_through_the_smallest_buffer_matches_the_reference() {
    // Bodies several times the smallest buffer, so '>From ' runs cross its refills.
    let alphabet = b">>>>>>From \nx";
    let mut seed = 11;
    for _ in 0..300 {
        let len = (lcg(&mut seed) % 2000) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[(lcg(&mut seed) % alphabet.len() as u64) as usize])
            .collect();
        for inner in [1, 7, 300] {
            let mut r =
                Unquote::with_capacity(Chunked(&body, 0, inner), crate::limits::MIN_FILTER_BUFFER);
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, naive_unquote(&body), "{body:?} {inner}");
        }
    }
}

/// Hands out a slice in pieces of at most `.2` bytes.
struct Chunked<'a>(&'a [u8], usize, usize);

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.0.len() - self.1).min(self.2).min(buf.len());
        buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

#[test]
fn the_quote_detector_takes_a_long_run_of_gt_in_constant_memory() {
    let mut q = FromQuote::default();
    for _ in 0..100_000 {
        assert_eq!(q.step(b'>'), Step::Pending);
    }
    for &b in b"From" {
        assert_eq!(q.step(b), Step::Pending);
    }
    assert_eq!(q.step(b' '), Step::Matched { gts: 100_000 });
    let mut q = FromQuote::default();
    assert_eq!(q.step(b'F'), Step::Pending);
    assert_eq!(q.step(b'x'), Step::Mismatch);
    assert_eq!((q.gts, q.from), (0, 1));
}

#[test]
fn random_garbage_scans_into_ordered_messages_whose_sizes_match_their_bytes() {
    let pieces: [&[u8]; 9] = [
        b"From ", b"\n", b"\r\n", b"\0", b"x", b">From ", b"\n\n", b"S: 1", b"\r",
    ];
    let mut seed = 11;
    for _ in 0..2000 {
        let n = (lcg(&mut seed) % 30) as usize;
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| pieces[(lcg(&mut seed) % pieces.len() as u64) as usize].to_vec())
            .collect();
        let whole = scan_bytes(&bytes, bytes.len().max(1));
        let mut prev_end = 0;
        for m in &whole.messages {
            assert!(
                prev_end <= m.start && m.start < m.data && m.data <= m.end,
                "{bytes:?}"
            );
            assert!(m.end as usize <= bytes.len());
            assert!(bytes[m.start as usize..].starts_with(b"From "));
            assert_eq!(
                m.size,
                sent(&bytes[m.data as usize..m.end as usize]),
                "{bytes:?}"
            );
            prev_end = m.end;
        }
        for chunk in [1, 2, 5] {
            assert_eq!(
                scan_bytes(&bytes, chunk).messages,
                whole.messages,
                "{bytes:?}"
            );
        }
    }
}

/// A message start, then fewer than `most` pieces picked at random.
fn random_mailbox(seed: &mut u64, pieces: &[&[u8]], most: u64) -> Vec<u8> {
    let n = lcg(seed) % most;
    let mut bytes = b"From a\nH: 1\n\n".to_vec();
    for _ in 0..n {
        bytes.extend_from_slice(pieces[(lcg(seed) % pieces.len() as u64) as usize]);
    }
    bytes
}

#[test]
fn taking_whole_lines_from_the_chunk_finds_what_the_line_by_line_path_finds() {
    // Fed one byte at a time, the scanner never sees a whole line of more than one octet in a
    // chunk, so it takes the line buffer's path for nearly every line: the reference for
    // whole lines (headers and body) taken straight from larger chunks.
    let pieces: [&[u8]; 20] = [
        b"From ",
        b"\n",
        b"\r\n",
        b"ab",
        b"F",
        b">",
        b">From ",
        b"\r",
        b"xyz\n",
        b"\n\n",
        b".",
        b"body text\n",
        b"Subject: s\n",
        b"Status: RO\n",
        b"x-status: A\r\n",
        b"X-UIDL: abc\n",
        b"X-UIDL: a b\n",
        b"Lines: 3\n",
        b"\n\nFrom b Mon\n",
        b"From: a@x\n",
    ];
    let mut seed = 7;
    for _ in 0..3000 {
        let bytes = random_mailbox(&mut seed, &pieces, 60);
        let one = scan_bytes(&bytes, 1);
        for chunk in [bytes.len(), 7, 64] {
            assert_eq!(
                scan_bytes(&bytes, chunk).messages,
                one.messages,
                "{bytes:?}"
            );
        }
    }
}

#[test]
fn headers_past_the_digest_cap_scan_the_same_whole_or_byte_by_byte() {
    // Header lines that cross MAX_UID_HEADER_BYTES, with volatile, X-UIDL and quoted lines
    // before and after the cap, in messages with LF and CRLF line ends.
    let mut bytes = Vec::new();
    for (m, eol) in [(0, &b"\n"[..]), (1, &b"\r\n"[..])] {
        bytes.extend_from_slice(format!("From m{m} Mon").as_bytes());
        bytes.extend_from_slice(eol);
        for i in 0..40 {
            let name = ["Received", "Status", "X-UIDL", ">From x", "From", "Lines"][i % 6];
            bytes.extend_from_slice(format!("{name}: {i}").as_bytes());
            bytes.resize(bytes.len() + 1000 + 97 * i, b'v');
            bytes.extend_from_slice(eol);
        }
        bytes.extend_from_slice(eol);
        bytes.extend_from_slice(b"body");
        bytes.extend_from_slice(eol);
        bytes.extend_from_slice(eol);
    }
    let one = scan_bytes(&bytes, 1);
    assert_eq!(one.messages.len(), 2);
    for chunk in [bytes.len(), 4096, 999] {
        assert_eq!(scan_bytes(&bytes, chunk).messages, one.messages, "{chunk}");
    }
}

/// Every message a whole scan of `file` finds, and where it stopped.
fn scan_whole(file: &File) -> (Vec<Found>, u64) {
    let mut found = Vec::new();
    let (end, _) = scan_range(file, 0, u64::MAX, &mut |f| {
        found.push(f);
        Ok(())
    })
    .unwrap();
    (found, end)
}

#[test]
fn a_scan_split_at_any_boundary_finds_what_one_scan_finds() {
    // Blank lines of both kinds before `From ` lines, and `From ` lines that start no message
    // (no blank line before them) or sit across a read window's edge.
    let pieces: [&[u8]; 12] = [
        b"\n\nFrom b Mon\n",
        b"\r\n\r\nFrom c Tue\r\n",
        b"\nFrom d Wed\n",
        b"\n\n",
        b"From ",
        b"\n",
        b"\r\n",
        b"Subject: s\n",
        b"body text\n",
        b">From x\n",
        b"\n\n\nFrom e Thu\n",
        b"X-UIDL: abc\n",
    ];
    let mut seed = 11;
    for round in 0..300 {
        let bytes = random_mailbox(&mut seed, &pieces, 40);
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&bytes).unwrap();
        let (whole, end) = scan_whole(&tmp);
        let starts: Vec<u64> = whole.iter().map(|f| f.start).collect();
        let window = [9, 10, 16, 33, 4096][round % 5];
        let mut splits = 0;
        for near in 0..bytes.len() as u64 {
            let Some(split) = boundary_after(&tmp, near, bytes.len() as u64, window).unwrap()
            else {
                // No message starts after `near` (or the window cut the `From ` line of each).
                assert!(window < 4096 || starts.iter().all(|&s| s <= near));
                continue;
            };
            // A message start after `near`: the first one, unless the read window cut its
            // `From ` line (then a later one, or none).
            assert!(
                split > near && starts.contains(&split),
                "{near} in {bytes:?}"
            );
            if window == 4096 {
                assert_eq!(Some(&split), starts.iter().find(|&&s| s > near));
            }
            let mut found = Vec::new();
            let split_end = scan_split(&tmp, 0, split, |f| {
                found.push(f);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                (&found, split_end),
                (&whole, end),
                "split at {split} of {bytes:?}"
            );
            splits += 1;
        }
        assert!(window < 4096 || splits > 0 || starts.len() == 1);
    }
}

#[test]
fn a_large_scan_runs_split_and_finds_what_one_scan_finds() {
    // Just over the threshold, in messages of varied size: the split scan's own path.
    let mut bytes = Vec::new();
    let mut i = 0;
    while bytes.len() as u64 <= SPLIT_SCAN_MIN {
        bytes.extend_from_slice(format!("From s{i} Mon\nSubject: {i}\n\n").as_bytes());
        bytes.extend(std::iter::repeat_n(b"line of body text\n".as_slice(), i % 200).flatten());
        bytes.extend_from_slice(b"\n");
        i += 1;
    }
    let mut tmp = tempfile::tempfile().unwrap();
    tmp.write_all(&bytes).unwrap();
    let near = bytes.len() as u64 / 2;
    let split = boundary_after(&tmp, near, SPLIT_SCAN_SEARCH, FILE_CHUNK).unwrap();
    assert!(split.is_some_and(|s| s > near && s < near + 4096));
    let mut found = Vec::new();
    let end = scan(&tmp, 0, |f| {
        found.push(f);
        Ok(())
    })
    .unwrap();
    assert_eq!((found, end), scan_whole(&tmp));
}

/// Three messages as Dovecot 2.3's `doveadm save` wrote them (mboxcl2): a Content-Length on
/// each, the body `From ` line of the first left as it was, bookkeeping headers that its POP3
/// server does not send. Dovecot's own POP3 server said `LIST`: 78, 46, 35.
const DOVECOT_SAVED: &[u8] = b"From alice@vm  Fri Dec 04 16:42:19 2026\n\
From: a@x\nSubject: one\nX-IMAPbase: 1796402539 0000000003\nX-UID: 1\nStatus: \n\
X-Keywords:                                                                        \n\
Content-Length: 47\n\nfirst body\n\nFrom the start of a paragraph\nmore\n\n\
From alice@vm  Fri Dec 04 16:42:19 2026\nFrom: b@x\nSubject: two\nX-UID: 2\nStatus: \n\
X-Keywords:                                                                        \n\
Content-Length: 18\n\nno newline at end\n\n\
From alice@vm  Fri Dec 04 16:42:19 2026\nFrom: c@x\nSubject: three\nX-UID: 3\nStatus: \n\
X-Keywords:                                                                         \n\
Content-Length: 5\n\nline\n\n";

/// What a client is sent of a stored message: bookkeeping headers out, line ends as sent.
fn shown(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::mailbox::hide::HideBookkeeping::new(stored)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_content_length_that_ends_at_the_next_from_line_keeps_body_from_lines_inside() {
    for chunk in [1, 7, 4096] {
        let found = scan_bytes(DOVECOT_SAVED, chunk).messages;
        let sizes: Vec<u64> = found.iter().map(|m| m.size).collect();
        assert_eq!(sizes, [78, 46, 35], "chunk {chunk}");
        let first = &found[0];
        let body = &DOVECOT_SAVED[first.data as usize..first.end as usize];
        assert!(body.ends_with(b"\n\nFrom the start of a paragraph\nmore\n"));
        assert_eq!(
            shown(body),
            b"From: a@x\nSubject: one\n\nfirst body\n\nFrom the start of a paragraph\nmore\n"
        );
        assert_eq!((first.unsplit, first.content_length), (1, true));
        let uids: Vec<_> = found.iter().map(|m| m.imap_uid).collect();
        assert_eq!(uids, [Some(1), Some(2), Some(3)]);
        let base = ImapBase {
            validity: 1_796_402_539,
            last: 3,
        };
        assert_eq!(first.imap_base, Some(base));
        assert!(found.iter().all(|m| !m.internal));
    }
}

#[test]
fn a_content_length_that_ends_anywhere_else_is_not_believed() {
    // Too long, too short, past the end of the file, into the middle of a line: each message
    // splits at its body's `From ` line as if it had no Content-Length.
    for cl in ["100", "3", "9999999", "20", "x", "18446744073709551616"] {
        let mbox = format!(
            "From a Mon\nContent-Length: {cl}\n\nbody\n\nFrom inside\ntext\n\n\
             From b Tue\nSubject: 2\n\nsecond\n"
        );
        let found = scan_bytes(mbox.as_bytes(), 5).messages;
        assert_eq!(found.len(), 3, "Content-Length {cl}");
        assert_eq!(found[0].unsplit, 0);
    }
    // The one that holds: to the blank line before the next From_ line...
    let holds = "From a Mon\nContent-Length: 23\n\nbody\n\nFrom inside\ntext\n\n\
                 From b Tue\nSubject: 2\n\nsecond\n";
    assert_eq!(scan_bytes(holds.as_bytes(), 5).messages.len(), 2);
    // ... or to the end of the file, with or without a blank line.
    for tail in ["", "\n", "\r\n"] {
        let mbox = format!("From a Mon\nContent-Length: 23\n\nbody\n\nFrom inside\ntext\n{tail}");
        assert_eq!(scan_bytes(mbox.as_bytes(), 3).messages.len(), 1, "{tail:?}");
    }
}

#[test]
fn the_folder_internal_pseudo_message_is_marked_and_only_at_the_start() {
    let pseudo = b"From MAILER_DAEMON  Fri Dec 04 16:42:22 2026\n\
Date: Fri, 04 Dec 2026 16:42:22 +0000\n\
From: Mail System Internal Data <MAILER-DAEMON@vm>\n\
Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n\
Message-ID: <1796402542@vm>\nX-IMAP: 1796402539 0000000005\nStatus: RO\n\n\
This text is part of the internal format of your mail folder, and is not\n\
a real message.\n\n";
    let mut mbox = pseudo.to_vec();
    mbox.extend_from_slice(b"From a Mon\nX-UID: 4\n\nhi\n\n");
    mbox.extend_from_slice(pseudo);
    let found = scan_bytes(&mbox, 64).messages;
    let internal: Vec<bool> = found.iter().map(|m| m.internal).collect();
    assert_eq!(internal, [true, false, false]);
    let base = ImapBase {
        validity: 1_796_402_539,
        last: 5,
    };
    assert_eq!(found[0].imap_base, Some(base));
    // Without X-IMAP, or without the subject, it is mail.
    let plain = String::from_utf8_lossy(pseudo).replace("X-IMAP", "X-Other");
    assert!(!scan_bytes(plain.as_bytes(), 64).messages[0].internal);
    let plain = String::from_utf8_lossy(pseudo).replace("DON'T", "DO");
    assert!(!scan_bytes(plain.as_bytes(), 64).messages[0].internal);
}

#[test]
fn sizes_leave_out_exactly_what_the_reader_leaves_out() {
    let pieces: [&[u8]; 16] = [
        b"\n\nFrom b Mon\n",
        b"\n",
        b"\r\n",
        b"Status: RO\n",
        b"X-UID: 7\r\n",
        b"x-imapbase: 1 2\n",
        b" continued\n",
        b"\tcontinued\n",
        b"Subject: s\n",
        b"Content-Length: 5\n",
        b"Content-Length: 12\n",
        b"body\n",
        b"From x\n",
        b">From y\n",
        b"X-Keywords:",
        b"Stat",
    ];
    let mut seed = 5;
    for _ in 0..3000 {
        let bytes = random_mailbox(&mut seed, &pieces, 30);
        let whole = scan_bytes(&bytes, bytes.len());
        for m in &whole.messages {
            let stored = &bytes[m.data as usize..m.end as usize];
            assert_eq!(
                m.size,
                sent(&shown(stored)),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        for chunk in [1, 3, 16] {
            assert_eq!(scan_bytes(&bytes, chunk).messages, whole.messages);
        }
    }
}

#[test]
fn a_scan_split_inside_a_content_length_body_finds_what_one_scan_finds() {
    // Bodies with `From ` lines after blank lines, under Content-Lengths that hold or not:
    // every boundary candidate is tried as the split, those inside a body too.
    let mut seed = 3;
    for round in 0..200 {
        let mut bytes = Vec::new();
        for m in 0..(lcg(&mut seed) % 6 + 1) {
            let mut body = Vec::new();
            for _ in 0..lcg(&mut seed) % 5 {
                body.extend_from_slice(
                    [&b"text\n"[..], b"\n", b"From here\n"][(lcg(&mut seed) % 3) as usize],
                );
            }
            body.extend_from_slice(b"end\n");
            let claimed = match lcg(&mut seed) % 4 {
                0 => body.len() + 1,
                1 => body.len().saturating_sub(3),
                _ => body.len(),
            };
            bytes.extend_from_slice(
                format!("From m{m} Mon\nX-UID: {m}\nContent-Length: {claimed}\n\n").as_bytes(),
            );
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(b"\n");
        }
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&bytes).unwrap();
        let whole = scan_whole(&tmp);
        let window = [9, 16, 4096][round % 3];
        for near in 0..bytes.len() as u64 {
            let Some(split) = boundary_after(&tmp, near, bytes.len() as u64, window).unwrap()
            else {
                continue;
            };
            let mut found = Vec::new();
            let end = scan_split(&tmp, 0, split, |f| {
                found.push(f);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                (found, end),
                whole,
                "split at {split} of {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}
