//! The accept loop: one mio Poll over every listener, the stop waker and the signals; one
//! thread per session (TLS handshakes included); admission; reload on SIGHUP; graceful
//! shutdown.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::auth::{UsersHandle, passwd};
use crate::config::Config;
use crate::limits;
use crate::mailbox::mbox::MboxStore;
use crate::session::{self, Context, Link, Settings, Tag};
use crate::tls::Certificates;
use crate::transport::{Connection, Timeouts};

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// Stops a running [`Server`] from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    waker: Arc<Waker>,
    stopping: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Asks the server to stop accepting and shut down, as SIGTERM does.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("could not wake the accept loop: {e}");
        }
    }
}

/// Open sessions, so that shutdown can cut them off and wait for them.
#[derive(Default)]
struct Sessions {
    open: Mutex<HashMap<u64, TcpStream>>,
    changed: Condvar,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no session is open or `deadline` passes; returns how many are left.
    fn wait_empty(&self, deadline: Instant) -> usize {
        let mut open = self.lock();
        while !open.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            open = self
                .changed
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        open.len()
    }
}

/// A session's place in [`Sessions`]; freed when the session thread ends, panics included.
struct Slot {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
        self.sessions.changed.notify_all();
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// Whether each listener speaks implicit TLS (`--listen-tls`).
    implicit_tls: Vec<bool>,
    certificates: Option<Arc<Certificates>>,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    stopping: Arc<AtomicBool>,
    ctx: Arc<Context>,
    users_file: PathBuf,
    timeouts: Timeouts,
    max_connections: usize,
    shutdown_grace: Duration,
    sessions: Arc<Sessions>,
    next_id: AtomicU64,
}

impl Server {
    /// Loads the users file, sets up the mbox store and binds every `--listen` address: all
    /// that can fail at start-up fails here, before serving. Unusable lines in the users file
    /// are logged by number; those users cannot log in.
    pub fn from_config(config: &Config) -> Result<Server, String> {
        let users_path = config.users_file.display();
        let (users, problems) = passwd::load(&config.users_file)
            .map_err(|e| format!("cannot read {users_path}: {e}"))?;
        for p in &problems {
            log::warn!("{users_path}: {p}; that user cannot log in");
        }
        log::info!("{} users loaded from {users_path}", users.len());
        let store = MboxStore::new(config.mail.clone(), config.mbox.clone());
        for user in users.names() {
            // Finish any commit a crash interrupted before serving anyone.
            if let Err(e) = store.recover(user) {
                log::error!("recovering the mailbox of {user}: {e}");
            }
        }
        let ctx = Context {
            users: UsersHandle::new(users),
            store: Arc::new(store),
            settings: Settings {
                auth_failure_delay: config.auth_failure_delay,
                hostname: config.hostname.clone(),
                allow_cleartext: config.allow_cleartext,
                treat_as_remote: config.treat_as_remote.clone(),
            },
        };
        Server::bind(config, ctx).map_err(|e| e.to_string())
    }

    /// Loads the TLS certificate, if any, and binds every `--listen` and `--listen-tls`
    /// address for sessions in `ctx`.
    pub fn bind(config: &Config, ctx: Context) -> io::Result<Server> {
        let certificates = match &config.tls {
            Some(files) => {
                let c = Certificates::open(files.clone()).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("cannot load the TLS certificate: {e}"),
                    )
                })?;
                log::info!("TLS certificate loaded from {}", files.cert.display());
                Some(Arc::new(c))
            }
            None => None,
        };
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        let mut implicit_tls = Vec::new();
        let plain = config.listen.iter().map(|a| (a, false));
        let tls = config.listen_tls.iter().map(|a| (a, true));
        for (i, (addr, implicit)) in plain.chain(tls).enumerate() {
            let mut l = TcpListener::bind(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            poll.registry()
                .register(&mut l, Token(i), Interest::READABLE)?;
            listeners.push(l);
            implicit_tls.push(implicit);
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listeners,
            implicit_tls,
            certificates,
            signals: None,
            waker,
            stopping: Arc::new(AtomicBool::new(false)),
            ctx: Arc::new(ctx),
            users_file: config.users_file.clone(),
            timeouts: Timeouts {
                handshake: config.tls_handshake_timeout,
                idle: config.idle_timeout,
            },
            max_connections: config.max_connections,
            shutdown_grace: config.shutdown_grace,
            sessions: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The addresses actually bound (useful with port 0): the `--listen` ones, then the
    /// `--listen-tls` ones, each in the order given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            waker: self.waker.clone(),
            stopping: self.stopping.clone(),
        }
    }

    /// Makes SIGTERM and SIGINT stop the server and SIGHUP reload the users file and the TLS
    /// certificate.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Serves until stopped, then shuts down gracefully.
    pub fn run(mut self) -> io::Result<()> {
        for addr in self.local_addrs() {
            log::info!("listening on {addr}");
        }
        let mut events = Events::with_capacity(64);
        // Listeners whose backlog was not drained in one batch (edge-triggered readiness).
        let mut pending = vec![false; self.listeners.len()];
        while !self.stopping.load(Ordering::SeqCst) {
            let timeout = pending.iter().any(|&p| p).then_some(Duration::ZERO);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    SIGNALS => self.on_signals(),
                    Token(i) if i < pending.len() => pending[i] = true,
                    Token(_) => {}
                }
            }
            for (i, more) in pending.iter_mut().enumerate() {
                if *more && !self.stopping.load(Ordering::SeqCst) {
                    *more = self.accept_batch(i);
                }
            }
        }
        self.shutdown();
        Ok(())
    }

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let pending: Vec<i32> = signals.pending().collect();
        for sig in pending {
            match sig {
                SIGHUP => {
                    self.reload_users();
                    self.reload_certificates();
                }
                _ => {
                    log::info!("signal {sig}: stopping");
                    self.stopping.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Reloads the users file; a file that cannot be read or has errors keeps the old table.
    fn reload_users(&self) {
        match passwd::load(&self.users_file) {
            Ok((users, problems)) if problems.is_empty() => {
                log::info!(
                    "reloaded {} ({} users)",
                    self.users_file.display(),
                    users.len()
                );
                self.ctx.users.replace(users);
            }
            Ok((_, problems)) => {
                for p in &problems {
                    log::warn!("{}: {p}", self.users_file.display());
                }
                log::warn!(
                    "{} has {} bad lines; keeping the users loaded before",
                    self.users_file.display(),
                    problems.len()
                );
            }
            Err(e) => log::warn!(
                "cannot reload {}: {e}; keeping the users loaded before",
                self.users_file.display()
            ),
        }
    }

    /// Reloads the TLS certificate and key; a broken pair keeps the one in force.
    fn reload_certificates(&self) {
        let Some(certificates) = &self.certificates else {
            return;
        };
        let cert = certificates.files().cert.display();
        match certificates.reload() {
            Ok(()) => log::info!("reloaded the TLS certificate from {cert}"),
            Err(e) => {
                log::warn!("cannot reload the TLS certificate: {e}; keeping the one loaded before")
            }
        }
    }

    /// Accepts up to a batch of connections on listener `i`; returns whether more may wait.
    fn accept_batch(&self, i: usize) -> bool {
        for _ in 0..limits::MAX_ACCEPTS_PER_POLL {
            match self.listeners[i].accept() {
                Ok((stream, peer)) => self.admit(stream.into(), peer, self.implicit_tls[i]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE and friends: retrying at once would spin; back off and retry.
                    log::warn!("accept failed: {e}");
                    thread::sleep(limits::ACCEPT_ERROR_BACKOFF);
                    return true;
                }
            }
        }
        true
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, implicit_tls: bool) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tag = Tag {
            id,
            peer: Some(peer),
        };
        if let Err(e) = self.prepare(&stream) {
            log::warn!("{tag} cannot set up connection: {e}");
            return;
        }
        let registered = match stream.try_clone() {
            Ok(clone) => {
                let mut open = self.sessions.lock();
                if open.len() >= self.max_connections {
                    None
                } else {
                    open.insert(id, clone);
                    Some(Slot {
                        sessions: self.sessions.clone(),
                        id,
                    })
                }
            }
            Err(e) => {
                log::warn!("{tag} cannot set up connection: {e}");
                return;
            }
        };
        let Some(slot) = registered else {
            log::warn!("{tag} refused: {} sessions open", self.max_connections);
            // A TLS client could not read a cleartext reply: it just sees the close.
            if !implicit_tls {
                let _ = (&stream)
                    .write_all(b"-ERR [SYS/TEMP] too many connections, try again later\r\n");
            }
            return;
        };
        let ctx = self.ctx.clone();
        let certificates = self.certificates.clone();
        let timeouts = self.timeouts;
        let spawned = thread::Builder::new()
            .name(format!("pop3-{id}"))
            .stack_size(limits::SESSION_STACK_SIZE)
            .spawn(move || {
                let _slot = slot;
                let mut link = Connection::new(stream, certificates, timeouts);
                // Here, not in the accept loop: a slow client delays only itself.
                if implicit_tls && let Err(e) = link.start_tls() {
                    log::info!("{tag} TLS handshake failed: {e}");
                    return;
                }
                session::serve(&ctx, &tag, &mut link);
            });
        if let Err(e) = spawned {
            log::error!("cannot start a session thread: {e}");
        }
    }

    fn prepare(&self, stream: &TcpStream) -> io::Result<()> {
        // mio accepts non-blocking; sessions use blocking I/O with timeouts.
        stream.set_nonblocking(false)?;
        // Replies are buffered and flushed whole; Nagle would only add delay.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.timeouts.idle))?;
        stream.set_write_timeout(Some(self.timeouts.idle))
    }

    /// Stops accepting, lets sessions finish within the grace period, then cuts off the
    /// rest (which commit nothing, unless already committing) and waits for them.
    fn shutdown(&mut self) {
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        let open = self.sessions.lock().len();
        log::info!("stopped accepting; {open} sessions open");
        let left = self
            .sessions
            .wait_empty(Instant::now() + self.shutdown_grace);
        if left > 0 {
            log::info!("cutting off {left} sessions");
            for stream in self.sessions.lock().values() {
                let _ = stream.shutdown(Shutdown::Both);
            }
            let stuck = self
                .sessions
                .wait_empty(Instant::now() + limits::SHUTDOWN_JOIN_DEADLINE);
            if stuck > 0 {
                log::error!("{stuck} sessions did not end in time");
            }
        }
        log::info!("shut down");
    }
}
