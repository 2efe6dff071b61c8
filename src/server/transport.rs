//! A client's TCP connection as a session uses it: buffered both ways, in cleartext or under
//! TLS, with the STLS upgrade and a close_notify at the end.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConnection;

use crate::limits::{SESSION_READ_BUFFER, SESSION_WRITE_BUFFER};
use crate::server::tls::{self, Certificates};
use crate::session::Link;

/// How long the handshake may take, and the read and write timeouts to restore after it.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole TLS handshake.
    pub handshake: Duration,
    /// Each read otherwise.
    pub idle: Duration,
    /// Each write otherwise (`--write-timeout`).
    pub write: Duration,
}

/// One client connection; implements [`Link`].
pub struct Connection {
    tcp: TcpStream,
    tls: Option<Box<ServerConnection>>,
    /// The certificate to start TLS with, if the server has one.
    certificates: Option<Arc<Certificates>>,
    timeouts: Timeouts,
    /// Bytes received (decrypted, under TLS) and not yet consumed: `rbuf[rpos..rlen]`.
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    /// Reply bytes not yet handed to the socket (or to rustls, which makes records of them).
    wbuf: Outbox,
}

/// Octets of a large write held back to leave with whatever follows: enough for the CRLF
/// before a multi-line terminator, so `CRLF . CRLF` always ends one send and is never split
/// across segments (Thunderbird stalls on a split terminator: cyrus-imapd #4717).
const HELD_BACK: usize = 2;

/// Reply bytes on their way out: small writes gather into one send of about
/// `SESSION_WRITE_BUFFER` octets; a larger write goes out at once. Whatever leaves before a
/// flush keeps its last `HELD_BACK` octets back, to go with the next write or the flush.
///
/// A session spends most of its life waiting for the next command, so the buffer is taken
/// when a reply needs it and given back at the flush that ends the reply: an idle session
/// holds at most `OUTBOX_KEPT` octets, not `SESSION_WRITE_BUFFER`.
struct Outbox {
    buf: Vec<u8>,
}

/// Capacity an outbox keeps between replies: one-line replies reuse it without allocating.
const OUTBOX_KEPT: usize = 512;

impl Outbox {
    fn new() -> Self {
        Outbox { buf: Vec::new() }
    }

    fn write(
        &mut self,
        data: &[u8],
        send: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.buf.len() + data.len() <= SESSION_WRITE_BUFFER {
            self.gather(data);
        } else if data.len() <= SESSION_WRITE_BUFFER {
            // Send what is gathered but its last octets, which leave with `data`.
            let keep = self.buf.len().min(HELD_BACK);
            if self.buf.len() > keep {
                send(&self.buf[..self.buf.len() - keep])?;
                self.buf.drain(..self.buf.len() - keep);
            }
            self.gather(data);
        } else {
            self.flush(send)?;
            let (now, later) = data.split_at(data.len() - HELD_BACK);
            send(now)?;
            self.gather(later);
        }
        Ok(())
    }

    /// Appends `data`, which fits in `SESSION_WRITE_BUFFER` with what is gathered. The buffer
    /// grows to the power of two that holds it (from `OUTBOX_KEPT` up): a reply of a few KiB
    /// takes a few KiB, not 64.
    fn gather(&mut self, data: &[u8]) {
        let wanted = self.buf.len() + data.len();
        if wanted > self.buf.capacity() {
            let size = wanted
                .next_power_of_two()
                .clamp(OUTBOX_KEPT, SESSION_WRITE_BUFFER + HELD_BACK);
            self.buf.reserve_exact(size - self.buf.len());
        }
        self.buf.extend_from_slice(data);
    }

    fn flush(&mut self, send: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = send(&self.buf);
        self.buf.clear();
        if self.buf.capacity() > OUTBOX_KEPT {
            self.buf = Vec::new();
        }
        result
    }
}

impl Connection {
    /// Wraps a connected, blocking `tcp` whose timeouts are already `timeouts.idle`.
    pub fn new(
        tcp: TcpStream,
        certificates: Option<Arc<Certificates>>,
        timeouts: Timeouts,
    ) -> Connection {
        Connection {
            tcp,
            tls: None,
            certificates,
            timeouts,
            rbuf: vec![0; SESSION_READ_BUFFER].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            wbuf: Outbox::new(),
        }
    }

    /// Hands `data` to the socket, through TLS when active.
    fn send_all(
        tls: &mut Option<Box<ServerConnection>>,
        tcp: &mut TcpStream,
        data: &[u8],
    ) -> io::Result<()> {
        match tls {
            Some(conn) => {
                let mut stream = rustls::Stream::new(conn.as_mut(), tcp);
                stream.write_all(data)?;
                stream.flush()
            }
            None => tcp.write_all(data),
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Connection {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.rpos >= self.rlen {
            let n = match &mut self.tls {
                Some(conn) => {
                    rustls::Stream::new(conn.as_mut(), &mut self.tcp).read(&mut self.rbuf)?
                }
                None => self.tcp.read(&mut self.rbuf)?,
            };
            self.rpos = 0;
            self.rlen = n;
        }
        Ok(&self.rbuf[self.rpos..self.rlen])
    }

    fn consume(&mut self, amt: usize) {
        self.rpos = (self.rpos + amt).min(self.rlen);
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (tls, tcp) = (&mut self.tls, &mut self.tcp);
        self.wbuf
            .write(buf, &mut |data| Self::send_all(tls, tcp, data))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let (tls, tcp) = (&mut self.tls, &mut self.tcp);
        self.wbuf.flush(&mut |data| Self::send_all(tls, tcp, data))
    }
}

impl Link for Connection {
    fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn can_start_tls(&self) -> bool {
        self.certificates.is_some() && self.tls.is_none()
    }

    /// Also used for implicit TLS, before the greeting.
    fn start_tls(&mut self) -> io::Result<()> {
        let certificates = match (&self.certificates, &self.tls) {
            (Some(c), None) => c.current(),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "TLS is not available",
                ));
            }
        };
        self.flush()?;
        // Whatever came after the STLS line was sent in cleartext: it never runs.
        self.rpos = 0;
        self.rlen = 0;
        let mut conn = ServerConnection::new(certificates).map_err(io::Error::other)?;
        let shaken = tls::handshake(
            &mut conn,
            &mut self.tcp,
            self.timeouts.handshake,
            self.timeouts.idle,
        );
        crate::metrics::tls_handshake(shaken.is_ok());
        shaken?;
        // The handshake left both timeouts at the idle one.
        self.tcp.set_write_timeout(Some(self.timeouts.write))?;
        self.tls = Some(Box::new(conn));
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        if let Some(conn) = &mut self.tls {
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut self.tcp)?;
            }
        }
        // The FIN right behind the last reply, so the client sees the end at once.
        self.tcp.shutdown(Shutdown::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `parts` through an outbox, flushes, and returns each send.
    fn sends(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Outbox::new();
        let mut sent = Vec::new();
        let mut send = |d: &[u8]| {
            sent.push(d.to_vec());
            Ok(())
        };
        for p in parts {
            out.write(p, &mut send).unwrap();
        }
        out.flush(&mut send).unwrap();
        sent
    }

    #[test]
    fn small_writes_gather_into_one_send() {
        assert_eq!(
            sends(&[b"+OK 5 octets\r\n", b"hello\r\n", b".\r\n"]),
            vec![b"+OK 5 octets\r\nhello\r\n.\r\n".to_vec()]
        );
    }

    #[test]
    fn an_idle_outbox_gives_its_buffer_back() {
        let mut out = Outbox::new();
        let mut send = |_: &[u8]| Ok(());
        out.write(b"+OK 1 message (22 octets)\r\n", &mut send)
            .unwrap();
        out.flush(&mut send).unwrap();
        assert_eq!(out.buf.capacity(), OUTBOX_KEPT);
        for reply in [vec![b'x'; 40_000], vec![b'x'; SESSION_WRITE_BUFFER * 3]] {
            out.write(b"+OK\r\n", &mut send).unwrap();
            out.write(&reply, &mut send).unwrap();
            out.write(b".\r\n", &mut send).unwrap();
            out.flush(&mut send).unwrap();
            assert!(out.buf.capacity() <= OUTBOX_KEPT, "{}", out.buf.capacity());
        }
    }

    #[test]
    fn the_terminator_always_leaves_with_the_crlf_before_it() {
        let block = |n: usize| {
            let mut b = vec![b'x'; n - 2];
            b.extend_from_slice(b"\r\n");
            b
        };
        for sizes in [
            vec![SESSION_WRITE_BUFFER * 2],
            vec![100, SESSION_WRITE_BUFFER + 1],
            vec![SESSION_WRITE_BUFFER - 1, SESSION_WRITE_BUFFER * 3, 70_000],
            vec![SESSION_WRITE_BUFFER, SESSION_WRITE_BUFFER],
            vec![2, SESSION_WRITE_BUFFER - 1],
        ] {
            let blocks: Vec<Vec<u8>> = sizes.iter().map(|&n| block(n)).collect();
            let mut parts: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
            parts.push(b".\r\n");
            let sent = sends(&parts);
            assert_eq!(sent.concat(), parts.concat(), "{sizes:?}");
            assert!(sent.last().unwrap().ends_with(b"\r\n.\r\n"), "{sizes:?}");
            assert!(sent.iter().all(|s| !s.is_empty()), "{sizes:?}");
        }
    }
}
