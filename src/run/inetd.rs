//! `poplar --inetd`: exactly one session on stdin/stdout, as inetd, xinetd or systemd with
//! `Accept=yes` start it; the peer comes from the socket when stdin is one.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{SockaddrStorage, getpeername};
use nix::sys::stat::{SFlag, fstat};

use crate::auth::guard::{ClientKey, Guards};
use crate::auth::records::Hold;
use crate::config::Config;
use crate::limits;
use crate::server::transport::Connection;
use crate::server::wiring;
use crate::session::{self, Context, Ending, Tag};

/// Serves the one session on stdin/stdout and returns how it ended.
pub fn run(config: &Config) -> Result<Ending, String> {
    let ctx = wiring::one_session_context(config)?;
    let input = io::stdin();
    let tag = Tag {
        // One process per session: the pid tells sessions apart across log lines.
        id: u64::from(std::process::id()),
        peer: peer_of(&input),
    };
    // The AUTHORIZATION deadline, as the daemon's accept loop sets it.
    ctx.guards
        .deadlines
        .start(tag.id, Instant::now() + config.auth_timeout);
    let fail = |e: io::Error| format!("cannot use stdin: {e}");
    if let Some(peer) = tag.peer {
        // A TCP socket: the same connection as a daemon's session, with the idle timeout
        // and STLS when a certificate is configured.
        let tcp = TcpStream::from(dup(&input).map_err(fail)?);
        let Some(place) = admit(&ctx, &tag, &tcp, peer, config.max_per_address) else {
            return Ok(Ending::Disconnected);
        };
        let timeouts = wiring::timeouts(config);
        wiring::prepare_socket(&tcp, &timeouts).map_err(fail)?;
        watch_deadline(
            &ctx.guards,
            &tag,
            tcp.try_clone().map_err(fail)?,
            config.auth_timeout,
        );
        let certificates = wiring::certificates(config).map_err(|e| e.to_string())?;
        let mut link = Connection::new(tcp, certificates, timeouts);
        let mut place = Some(place);
        // The place under the per-address cap goes once QUIT is answered, as in the daemon.
        return Ok(session::serve_then(&ctx, &tag, &mut link, || {
            place.take();
        }));
    }
    // Pipes (or a Unix socket): plain bytes, no idle timeout; whoever holds the other end
    // decides when a logged-in session ends. Private descriptors, because std's stdin would
    // read ahead into a buffer of its own and its stdout would flush at every newline.
    let reader = DeadlineReader {
        inner: File::from(dup(&input).map_err(fail)?),
        guards: ctx.guards.clone(),
        tag: Tag {
            id: tag.id,
            peer: None,
        },
        limit: config.auth_timeout,
    };
    let writer = File::from(dup(&io::stdout()).map_err(|e| format!("cannot use stdout: {e}"))?);
    let reader = BufReader::with_capacity(limits::SESSION_READ_BUFFER, reader);
    let writer = BufWriter::with_capacity(limits::SESSION_WRITE_BUFFER, writer);
    Ok(session::run(&ctx, &tag, reader, writer))
}

/// The connection's place under `--max-per-address`, counted in the shared state file
/// across every `--inetd` process; `None` (after telling the client) when the address has
/// its fill. A state file that fails admits the client (warned): it must never lock everyone
/// out.
fn admit(
    ctx: &Context,
    tag: &Tag,
    tcp: &TcpStream,
    peer: SocketAddr,
    max: usize,
) -> Option<Option<Hold>> {
    let client = ClientKey::of(peer.ip());
    let records = &ctx.guards.records;
    match records.hold(&records.key(&[b"address", &client.octets()]), max) {
        Ok(Some(hold)) => Some(Some(hold)),
        Ok(None) => {
            log::warn!("{tag} refused: {max} sessions open from {client}");
            let _ =
                (&*tcp).write_all(b"-ERR [SYS/TEMP] too many connections from your address\r\n");
            None
        }
        Err(e) => {
            log::warn!("login guard state {records:?}: address slots: {e}");
            Some(None)
        }
    }
}

/// Cuts the connection off if the session has not logged in by its deadline, however it
/// trickles its bytes in (what the daemon's accept loop does for its sessions).
fn watch_deadline(guards: &Arc<Guards>, tag: &Tag, stream: TcpStream, limit: Duration) {
    let guards = guards.clone();
    let watched = Tag {
        id: tag.id,
        peer: tag.peer,
    };
    let watch = move || {
        loop {
            let now = Instant::now();
            let (expired, next) = guards.deadlines.expired(now);
            if !expired.is_empty() {
                log::warn!("{watched} not logged in within {limit:?}: closing");
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            match next {
                Some(at) => thread::sleep(at.saturating_duration_since(now)),
                // Logged in: nothing left to watch.
                None => return,
            }
        }
    };
    let started = thread::Builder::new()
        .name("auth-deadline".into())
        .stack_size(limits::SESSION_STACK_SIZE)
        .spawn(watch);
    if let Err(e) = started {
        log::error!("{tag} cannot watch the AUTHORIZATION deadline: {e}");
    }
}

/// Stdin as a pipe, with the AUTHORIZATION deadline: until the session has logged in, a read
/// waits only until the deadline, then fails as timed out and the session ends.
struct DeadlineReader {
    inner: File,
    guards: Arc<Guards>,
    tag: Tag,
    limit: Duration,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.guards.deadlines.pending(self.tag.id) {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.inner.as_fd(), PollFlags::POLLIN)];
            let ready = loop {
                match poll(&mut fds, timeout) {
                    Err(nix::errno::Errno::EINTR) => {}
                    other => break other.map_err(io::Error::from)?,
                }
            };
            if ready == 0 {
                log::warn!(
                    "{} not logged in within {:?}: closing",
                    self.tag,
                    self.limit
                );
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        self.inner.read(buf)
    }
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
