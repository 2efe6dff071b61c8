//! A client's TCP connection as a session uses it: buffered both ways, in cleartext or under
//! TLS, with the STLS upgrade and a close_notify at the end.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConnection;

use crate::limits::{SESSION_READ_BUFFER, SESSION_WRITE_BUFFER};
use crate::session::Link;
use crate::tls::{self, Certificates};

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
    wbuf: Vec<u8>,
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
            wbuf: Vec::with_capacity(SESSION_WRITE_BUFFER),
        }
    }

    /// Hands `data` to the socket, through TLS when active.
    fn send_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            Some(conn) => {
                let mut stream = rustls::Stream::new(conn.as_mut(), &mut self.tcp);
                stream.write_all(data)?;
                stream.flush()
            }
            None => self.tcp.write_all(data),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.wbuf);
        let result = self.send_all(&data);
        self.wbuf = data;
        self.wbuf.clear();
        result
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
        if self.wbuf.len() + buf.len() > SESSION_WRITE_BUFFER {
            self.send_buffered()?;
        }
        if buf.len() >= SESSION_WRITE_BUFFER {
            self.send_all(buf)?;
        } else {
            self.wbuf.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
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
        tls::handshake(
            &mut conn,
            &mut self.tcp,
            self.timeouts.handshake,
            self.timeouts.idle,
        )?;
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
