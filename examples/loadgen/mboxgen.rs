//! Deterministic mbox files for the benchmark: realistic headers, 72-column body lines, and now
//! and then a line that starts with `.` so dot-stuffing is exercised.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A tiny xorshift generator: the same seed gives the same mailbox on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A pool of body lines (LF-terminated) to draw from, so writing a gigabyte costs copies,
/// not random numbers per byte.
fn line_pool(rng: &mut Rng) -> Vec<Vec<u8>> {
    const WORDS: [&str; 16] = [
        "mail", "the", "poplar", "server", "of", "quickly", "and", "mbox", "message", "to", "from",
        "a", "bench", "line", "octets", "stream",
    ];
    (0..1024)
        .map(|i| {
            let mut l = Vec::with_capacity(80);
            // One line in 64 starts with a dot (dot-stuffed on the wire); one in 97 is blank.
            if i % 64 == 0 {
                l.push(b'.');
            }
            if i % 97 != 0 {
                while l.len() < 60 {
                    l.extend_from_slice(WORDS[(rng.next() % 16) as usize].as_bytes());
                    l.push(b' ');
                }
                l.pop();
            }
            l.push(b'\n');
            l
        })
        .collect()
}

/// Writes `count` messages of about `size` stored octets each to `path`.
pub fn mbox(path: &Path, count: u64, size: u64, seed: u64) -> io::Result<()> {
    let mut rng = Rng(seed.max(1) * 0x9E37_79B9_7F4A_7C15);
    let pool = line_pool(&mut rng);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for i in 0..count {
        let mut head = Vec::with_capacity(512);
        write!(
            head,
            "From sender{i}@example.org Thu Nov 26 12:{:02}:{:02} 2026\n\
             Return-Path: <sender{i}@example.org>\n\
             Received: from mx.example.org by mail.example.net with ESMTP id {i:08x};\n\
             \tThu, 26 Nov 2026 12:00:00 +0000\n\
             From: Sender {i} <sender{i}@example.org>\n\
             To: user@example.net\n\
             Subject: benchmark message {i} of {count}\n\
             Message-ID: <{i}.{seed}@example.org>\n\
             Date: Thu, 26 Nov 2026 12:00:00 +0000\n\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=us-ascii\n\n",
            (i / 60) % 60,
            i % 60
        )?;
        w.write_all(&head)?;
        let mut written = head.len() as u64;
        while written < size {
            let l = &pool[(rng.next() % pool.len() as u64) as usize];
            w.write_all(l)?;
            written += l.len() as u64;
        }
        // The blank line that separates messages (RFC 4155).
        w.write_all(b"\n")?;
    }
    w.flush()
}
