//! Where connections come from besides `--listen`: listening sockets inherited from systemd,
//! and the real client behind a PROXY header on a `--proxy-protocol` listener.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::limits;
use crate::protocol::proxy::{self, Cidr, Progress};
use crate::session::Tag;

/// On a `--proxy-protocol` listener: the session's tag with the real client from the PROXY
/// header, or `None` (connection closed) when the peer is not a trusted proxy or its header
/// is malformed, truncated or late. Runs on the session's thread: a slow proxy holds up only
/// its own connection.
pub fn real_peer(tag: Tag, stream: &TcpStream, trusted: &[Cidr], idle: Duration) -> Option<Tag> {
    let proxy = tag.peer?;
    if !trusted.iter().any(|c| c.contains(proxy.ip())) {
        log::warn!("{tag} closed: not a --trusted-proxy, but the listener expects PROXY headers");
        return None;
    }
    let read = read_proxy_header(stream, Instant::now() + limits::PROXY_HEADER_TIMEOUT);
    match read.and_then(|h| stream.set_read_timeout(Some(idle)).map(|()| h)) {
        Ok(header) => {
            let real = Tag {
                id: tag.id,
                peer: Some(header.source.unwrap_or(proxy)),
            };
            log::debug!("{real} via proxy {proxy}");
            Some(real)
        }
        Err(e) => {
            log::warn!("{tag} closed: bad PROXY header: {e}");
            None
        }
    }
}

/// Reads exactly one PROXY header, never a byte of the POP3 stream after it, by `deadline`.
fn read_proxy_header(mut stream: &TcpStream, deadline: Instant) -> io::Result<proxy::Header> {
    let mut buf = Vec::with_capacity(proxy::V1_MAX);
    loop {
        let need = match proxy::parse(&buf) {
            Ok(Progress::Done(h)) => return Ok(h),
            Ok(Progress::Need(n)) => n,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        // Up to `need` bytes: never past the header, and a short non-header is seen at once.
        let have = buf.len();
        buf.resize(have + need, 0);
        match stream.read(&mut buf[have..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the header",
                ));
            }
            Ok(n) => buf.truncate(have + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(have),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into());
            }
            Err(e) => return Err(e),
        }
    }
}

/// The listening sockets systemd passed by socket activation (`LISTEN_FDS`, `LISTEN_PID`):
/// empty when this process was not socket-activated. Reads and clears the variables, so call
/// it once, early, before any thread starts.
pub fn inherited() -> io::Result<Vec<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    (0..fds.len())
        .map(|i| {
            fds.take_tcp_listener(i)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("LISTEN_FDS: socket {} was already taken", i + 3),
                )
            })
        })
        .collect()
}
