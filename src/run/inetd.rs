//! `poplar --inetd`: exactly one session on stdin/stdout, as inetd, xinetd or systemd with
//! `Accept=yes` start it; the peer comes from the socket when stdin is one.

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{SockaddrStorage, getpeername};
use nix::sys::stat::{SFlag, fstat};

use crate::config::Config;
use crate::limits;
use crate::server::transport::Connection;
use crate::server::wiring;
use crate::session::{self, Ending, Tag};

/// Serves the one session on stdin/stdout and returns how it ended.
pub fn run(config: &Config) -> Result<Ending, String> {
    let ctx = wiring::one_session_context(config)?;
    let input = io::stdin();
    let tag = Tag {
        // One process per session: the pid tells sessions apart across log lines.
        id: u64::from(std::process::id()),
        peer: peer_of(&input),
    };
    let fail = |e: io::Error| format!("cannot use stdin: {e}");
    if tag.peer.is_some() {
        // A TCP socket: the same connection as a daemon's session, with the idle timeout
        // and STLS when a certificate is configured.
        let tcp = TcpStream::from(dup(&input).map_err(fail)?);
        let timeouts = wiring::timeouts(config);
        wiring::prepare_socket(&tcp, &timeouts).map_err(fail)?;
        let certificates = wiring::certificates(config).map_err(|e| e.to_string())?;
        let mut link = Connection::new(tcp, certificates, timeouts);
        return Ok(session::serve(&ctx, &tag, &mut link));
    }
    // Pipes (or a Unix socket): plain bytes, no timeout; whoever holds the other end decides
    // when the session ends. Private descriptors, because std's stdin would read ahead into a
    // buffer of its own and its stdout would flush at every newline.
    let reader = File::from(dup(&input).map_err(fail)?);
    let writer = File::from(dup(&io::stdout()).map_err(|e| format!("cannot use stdout: {e}"))?);
    let reader = BufReader::with_capacity(limits::SESSION_READ_BUFFER, reader);
    let writer = BufWriter::with_capacity(limits::SESSION_WRITE_BUFFER, writer);
    Ok(session::run(&ctx, &tag, reader, writer))
}

fn dup(fd: &impl AsFd) -> io::Result<OwnedFd> {
    nix::unistd::dup(fd).map_err(io::Error::from)
}

/// The client's address when `fd` is a TCP socket; `None` for pipes and Unix sockets.
pub fn peer_of(fd: &impl AsFd) -> Option<SocketAddr> {
    let addr: SockaddrStorage = getpeername(fd.as_fd().as_raw_fd()).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// Whether stderr is the client's connection (classic inetd passes the socket as fds 0, 1
/// and 2): then log lines must not go there, or the client would read them.
pub fn stderr_is_the_client() -> bool {
    match (fstat(io::stdin()), fstat(io::stderr())) {
        (Ok(i), Ok(e)) => {
            (i.st_dev, i.st_ino) == (e.st_dev, e.st_ino)
                && SFlag::from_bits_truncate(e.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK
        }
        _ => false,
    }
}
