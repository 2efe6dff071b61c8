//! A small POP3 client that reads replies without per-line work: a RETR body is counted with a
//! SIMD substring search for line-starting dots, so the reader is never the bottleneck.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use memchr::memchr;
use memchr::memmem::Finder;

/// Longest status or listing line accepted from a server.
const MAX_LINE: usize = 64 * 1024;

/// One connection with its receive buffer (`buf[lo..hi]` not yet consumed).
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    line_dot: Finder<'static>,
    /// Octets received so far.
    pub received: u64,
    /// Past this instant a read fails with `TimedOut`, even in the middle of a reply: no
    /// run outlasts its time cap, however slow the server.
    pub cutoff: Option<Instant>,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Conn {
    /// Connects and reads the greeting. `buf` is the receive buffer size: large for RETR,
    /// small for the idle-session cell where a thousand connections are held.
    pub fn open(addr: SocketAddr, buf: usize) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut c = Conn {
            s,
            buf: vec![0; buf.max(MAX_LINE)],
            lo: 0,
            hi: 0,
            line_dot: Finder::new(b"\n.").into_owned(),
            received: 0,
            cutoff: None,
        };
        c.status()?;
        Ok(c)
    }

    /// Reads more bytes, keeping the unconsumed ones.
    fn fill(&mut self) -> io::Result<()> {
        if self.lo == self.hi {
            self.lo = 0;
            self.hi = 0;
        } else if self.hi == self.buf.len() {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.cutoff.is_some_and(|c| Instant::now() >= c) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "time cap reached"));
        }
        let n = self.s.read(&mut self.buf[self.hi..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        self.hi += n;
        self.received += n as u64;
        Ok(())
    }

    /// One line without its CRLF.
    pub fn line(&mut self) -> io::Result<String> {
        let mut from = self.lo;
        loop {
            if let Some(i) = memchr(b'\n', &self.buf[from..self.hi]) {
                let end = from + i;
                let text = self.buf[self.lo..end]
                    .strip_suffix(b"\r")
                    .unwrap_or(&self.buf[self.lo..end]);
                let line = String::from_utf8_lossy(text).into_owned();
                self.lo = end + 1;
                return Ok(line);
            }
            if self.hi - self.lo > MAX_LINE {
                return Err(bad("line too long"));
            }
            from = self.hi - self.lo;
            self.fill()?;
            from += self.lo;
        }
    }

    /// A status line that must be `+OK`.
    pub fn status(&mut self) -> io::Result<String> {
        let l = self.line()?;
        if l.starts_with("+OK") {
            Ok(l)
        } else {
            Err(bad(format!("server said: {l}")))
        }
    }

    /// Sends one command (one write) and reads its `+OK` status line.
    pub fn cmd(&mut self, c: &str) -> io::Result<String> {
        self.send(c)?;
        self.status()
    }

    /// Sends one command line without reading anything.
    pub fn send(&mut self, c: &str) -> io::Result<()> {
        let mut line = Vec::with_capacity(c.len() + 2);
        line.extend_from_slice(c.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.s.write_all(&line)
    }

    /// USER and PASS.
    pub fn login(&mut self, user: &str, pass: &str) -> io::Result<()> {
        self.cmd(&format!("USER {user}"))?;
        self.cmd(&format!("PASS {pass}")).map(drop)
    }

    /// LIST: every message's size, in order.
    pub fn list(&mut self) -> io::Result<Vec<u64>> {
        self.cmd("LIST")?;
        let mut sizes = Vec::new();
        loop {
            let l = self.line()?;
            if l == "." {
                return Ok(sizes);
            }
            let size = l.split(' ').nth(1).and_then(|s| s.parse().ok());
            sizes.push(size.ok_or_else(|| bad(format!("bad LIST line {l}")))?);
        }
    }

    /// QUIT, then waits for the server to close, so the server holds the TIME_WAIT and
    /// thousands of sessions do not use up this side's ports.
    pub fn quit(mut self) -> io::Result<String> {
        let reply = self.cmd("QUIT")?;
        let mut sink = [0u8; 64];
        while self.s.read(&mut sink)? > 0 {}
        Ok(reply)
    }

    /// RETR `n`: returns the message's octets as RFC 1939 counts them (CRLF lines, before
    /// dot-stuffing), so they can be checked against LIST. With `record`, every byte of the
    /// response (status line to terminator) is appended to it.
    pub fn retr(&mut self, n: usize, mut record: Option<&mut Vec<u8>>) -> io::Result<u64> {
        self.send(&format!("RETR {n}"))?;
        let status = self.status()?;
        if let Some(r) = record.as_deref_mut() {
            r.extend_from_slice(status.as_bytes());
            r.extend_from_slice(b"\r\n");
        }
        self.body(record)
    }

    /// Reads a multi-line body up to its terminator. Only lines that start with `.` cost any
    /// work beyond the substring search.
    fn body(&mut self, mut record: Option<&mut Vec<u8>>) -> io::Result<u64> {
        let mut octets = 0u64;
        let mut at_line_start = true;
        loop {
            if at_line_start {
                // A line start is always followed by at least three bytes (".\r\n" at the
                // latest), so waiting for them cannot hang on a well-formed reply.
                while self.hi - self.lo < 3 {
                    self.fill()?;
                }
                let b = &self.buf[self.lo..self.lo + 3];
                if b[0] == b'.' {
                    if &b[1..] == b"\r\n" {
                        if let Some(r) = record.as_deref_mut() {
                            r.extend_from_slice(b".\r\n");
                        }
                        self.lo += 3;
                        return Ok(octets);
                    }
                    if b[1] != b'.' {
                        return Err(bad("line starting with '.' was not dot-stuffed"));
                    }
                    if let Some(r) = record.as_deref_mut() {
                        r.push(b'.');
                    }
                    self.lo += 1;
                }
            }
            let avail = &self.buf[self.lo..self.hi];
            let take = match self.line_dot.find(avail) {
                Some(i) => {
                    at_line_start = true;
                    i + 1
                }
                None => {
                    at_line_start = avail.last() == Some(&b'\n');
                    avail.len()
                }
            };
            if let Some(r) = record.as_deref_mut() {
                r.extend_from_slice(&avail[..take]);
            }
            octets += take as u64;
            self.lo += take;
            if self.lo == self.hi {
                self.fill()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `reply` after a greeting and checks what `body` counts, for every way the
    /// stream may be cut into reads.
    #[test]
    fn body_octets_undo_stuffing_and_stop_at_terminator() {
        let body = b"+OK\r\n..a\r\nb\r\n...\r\n\r\n.\r\n";
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(b"+OK hi\r\n").unwrap();
            let mut cmd = [0u8; 64];
            for _ in 0..2 {
                let _ = s.read(&mut cmd).unwrap();
                for b in body.iter() {
                    s.write_all(&[*b]).unwrap();
                }
            }
        });
        let mut c = Conn::open(addr, 16).unwrap();
        // ".a\r\n" (4) + "b\r\n" (3) + "..\r\n" (4) + "\r\n" (2) = 13.
        assert_eq!(c.retr(1, None).unwrap(), 13);
        let mut rec = Vec::new();
        assert_eq!(c.retr(1, Some(&mut rec)).unwrap(), 13);
        assert_eq!(rec, body);
        t.join().unwrap();
    }
}
