//! `poplar --inetd`: exactly one session on stdin/stdout, as inetd, xinetd or systemd with
//! `Accept=yes` start it; the peer comes from the socket when stdin is one.

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FileType, fstat};
use rustix::net::sockopt::{Timeout, set_socket_timeout};

use crate::config::Config;
use crate::limits;
use crate::server;
use crate::session::{self, Ending, Tag};

/// Serves the one session on stdin/stdout and returns how it ended.
pub fn run(config: &Config) -> Result<Ending, String> {
    let ctx = server::context(config)?;
    let input = io::stdin();
    let output = io::stdout();
    let peer = peer_of(&input);
    let tag = Tag {
        // One process per session: the pid tells sessions apart across log lines.
        id: u64::from(std::process::id()),
        peer,
    };
    let (input, output) = (
        owned(&input, config, "stdin")?,
        owned(&output, config, "stdout")?,
    );
    let reader = BufReader::with_capacity(limits::SESSION_READ_BUFFER, &input);
    let writer = BufWriter::with_capacity(limits::SESSION_WRITE_BUFFER, &output);
    Ok(session::run(&ctx, &tag, reader, writer))
}

/// A private descriptor for stdin or stdout, without std's buffering (so no byte read ahead
/// is lost and no reply waits for a newline), with the idle timeout set if it is a socket.
/// Pipes have no timeout: whoever holds the other end decides when the session ends.
fn owned(fd: &impl AsFd, config: &Config, name: &str) -> Result<File, String> {
    let fail = |e: io::Error| format!("cannot use {name}: {e}");
    let dup: OwnedFd = rustix::io::dup(fd).map_err(|e| fail(e.into()))?;
    if is_socket(&dup) {
        for which in [Timeout::Recv, Timeout::Send] {
            set_socket_timeout(&dup, which, Some(config.idle_timeout))
                .map_err(|e| fail(e.into()))?;
        }
    }
    Ok(File::from(dup))
}

fn is_socket(fd: &impl AsFd) -> bool {
    fstat(fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Socket)
}

/// The client's address when `fd` is a TCP socket; `None` for pipes and Unix sockets.
pub fn peer_of(fd: &impl AsFd) -> Option<SocketAddr> {
    let addr = rustix::net::getpeername(fd).ok()??;
    SocketAddr::try_from(addr).ok()
}

/// Whether stderr is the client's connection (classic inetd passes the socket as fds 0, 1
/// and 2): then log lines must not go there, or the client would read them.
pub fn stderr_is_the_client() -> bool {
    match (fstat(io::stdin()), fstat(io::stderr())) {
        (Ok(i), Ok(e)) => {
            (i.st_dev, i.st_ino) == (e.st_dev, e.st_ino)
                && FileType::from_raw_mode(e.st_mode) == FileType::Socket
        }
        _ => false,
    }
}
