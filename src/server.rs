//! The accept loop: one mio Poll over every listener, the stop waker and the signals; one
//! thread per session; admission; reload on SIGHUP; graceful shutdown.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};
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

use crate::auth::guard::{ClientKey, Guards};
use crate::auth::{UsersHandle, passwd};
use crate::config::Config;
use crate::limits;
use crate::mailbox::mbox::MboxStore;
use crate::session::{self, Context, Settings, Tag};

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

/// Open sessions, so that shutdown can cut them off and wait for them, and their count per
/// client address for admission.
#[derive(Default)]
struct Sessions {
    open: Mutex<Open>,
    changed: Condvar,
}

/// What [`Sessions`] guards: every open session's stream, and how many each address has.
#[derive(Default)]
struct Open {
    streams: HashMap<u64, TcpStream>,
    per_address: HashMap<ClientKey, usize>,
}

/// Why a connection was not admitted.
enum Refusal {
    Total,
    PerAddress(ClientKey),
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for session `id` from `key`, or says which limit refuses it. The one
    /// place where connections are counted per address: `key` is whatever address the
    /// connection is accounted to.
    fn admit(
        self: &Arc<Self>,
        id: u64,
        key: ClientKey,
        stream: TcpStream,
        max_total: usize,
        max_per_address: usize,
    ) -> Result<Slot, Refusal> {
        let mut open = self.lock();
        if open.streams.len() >= max_total {
            return Err(Refusal::Total);
        }
        let n = open.per_address.entry(key).or_insert(0);
        if *n >= max_per_address {
            return Err(Refusal::PerAddress(key));
        }
        *n += 1;
        open.streams.insert(id, stream);
        Ok(Slot {
            sessions: self.clone(),
            id,
            key,
        })
    }

    /// Waits until no session is open or `deadline` passes; returns how many are left.
    fn wait_empty(&self, deadline: Instant) -> usize {
        let mut open = self.lock();
        while !open.streams.is_empty() {
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
        open.streams.len()
    }
}

/// A session's place in [`Sessions`]; freed when the session thread ends, panics included.
struct Slot {
    sessions: Arc<Sessions>,
    id: u64,
    key: ClientKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.sessions.lock();
        open.streams.remove(&self.id);
        if let Some(n) = open.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&self.key);
            }
        }
        drop(open);
        self.sessions.changed.notify_all();
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    stopping: Arc<AtomicBool>,
    ctx: Arc<Context>,
    users_file: PathBuf,
    idle_timeout: Duration,
    auth_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    max_per_address: usize,
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
        let ctx = Context {
            users: UsersHandle::new(users),
            store: Arc::new(MboxStore::new(config.mail.clone())),
            guards: Arc::new(Guards::new(
                config.auth_failure_delay,
                limits::hash_parallelism(),
                config.max_per_user,
            )),
            settings: Settings {
                hostname: config.hostname.clone(),
                apop: config.apop,
                max_bad_commands: config.max_bad_commands,
            },
        };
        Server::bind(config, ctx).map_err(|e| e.to_string())
    }

    /// Binds every `--listen` address for sessions in `ctx`.
    pub fn bind(config: &Config, ctx: Context) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for (i, addr) in config.listen.iter().enumerate() {
            let mut l = TcpListener::bind(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            // mio listens with a backlog of 128; a burst of connections beyond it has its SYNs
            // dropped and retried a second later. Listening again raises it (Linux allows it).
            rustix::net::listen(&l, limits::LISTEN_BACKLOG)?;
            poll.registry()
                .register(&mut l, Token(i), Interest::READABLE)?;
            listeners.push(l);
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listeners,
            signals: None,
            waker,
            stopping: Arc::new(AtomicBool::new(false)),
            ctx: Arc::new(ctx),
            users_file: config.users_file.clone(),
            idle_timeout: config.idle_timeout,
            auth_timeout: config.auth_timeout.min(config.idle_timeout),
            write_timeout: config.write_timeout,
            max_connections: config.max_connections,
            max_per_address: config.max_per_address,
            shutdown_grace: config.shutdown_grace,
            sessions: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The addresses actually bound (useful with port 0).
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

    /// Makes SIGTERM and SIGINT stop the server and SIGHUP reload the users file.
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
        let mut next_deadline = None;
        while !self.stopping.load(Ordering::SeqCst) {
            let timeout = if pending.iter().any(|&p| p) {
                Some(Duration::ZERO)
            } else {
                next_deadline.map(|d: Instant| d.saturating_duration_since(Instant::now()))
            };
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
            next_deadline = self.reap();
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
                SIGHUP => self.reload_users(),
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

    /// Cuts off sessions that have not logged in within the AUTHORIZATION timeout (however
    /// much they trickle in); returns when the next one is due.
    fn reap(&self) -> Option<Instant> {
        let (expired, next) = self.ctx.guards.deadlines.expired(Instant::now());
        if !expired.is_empty() {
            let open = self.sessions.lock();
            for id in expired {
                if let Some(stream) = open.streams.get(&id) {
                    log::warn!(
                        "[{id}] not logged in within {:?}: closing",
                        self.auth_timeout
                    );
                    // No farewell line: a client that does not read could block the loop.
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
        next
    }

    /// Accepts up to a batch of connections on listener `i`; returns whether more may wait.
    fn accept_batch(&self, i: usize) -> bool {
        for _ in 0..limits::MAX_ACCEPTS_PER_POLL {
            match self.listeners[i].accept() {
                Ok((stream, peer)) => self.admit(stream.into(), peer),
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

    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tag = Tag {
            id,
            peer: Some(peer),
        };
        if let Err(e) = self.prepare(&stream) {
            log::warn!("{tag} cannot set up connection: {e}");
            return;
        }
        let clone = match stream.try_clone() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("{tag} cannot set up connection: {e}");
                return;
            }
        };
        let key = ClientKey::of(peer.ip());
        let slot =
            match self
                .sessions
                .admit(id, key, clone, self.max_connections, self.max_per_address)
            {
                Ok(slot) => slot,
                Err(refusal) => {
                    let text: &[u8] = match refusal {
                        Refusal::Total => {
                            log::warn!("{tag} refused: {} sessions open", self.max_connections);
                            b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
                        }
                        Refusal::PerAddress(key) => {
                            log::warn!(
                                "{tag} refused: {} sessions open from {key}",
                                self.max_per_address
                            );
                            b"-ERR [SYS/TEMP] too many connections from your address\r\n"
                        }
                    };
                    let _ = (&stream).write_all(text);
                    return;
                }
            };
        self.ctx
            .guards
            .deadlines
            .start(id, Instant::now() + self.auth_timeout);
        let ctx = self.ctx.clone();
        let spawned = thread::Builder::new()
            .name(format!("pop3-{id}"))
            .stack_size(limits::SESSION_STACK_SIZE)
            .spawn(move || {
                let _slot = slot;
                let input = BufReader::with_capacity(limits::SESSION_READ_BUFFER, &stream);
                let output = BufWriter::with_capacity(limits::SESSION_WRITE_BUFFER, &stream);
                session::run(&ctx, &tag, input, output);
                ctx.guards.deadlines.clear(id);
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
        // Before login, the total AUTHORIZATION deadline cuts in sooner (see `reap`).
        stream.set_read_timeout(Some(self.idle_timeout))?;
        stream.set_write_timeout(Some(self.write_timeout))
    }

    /// Stops accepting, lets sessions finish within the grace period, then cuts off the
    /// rest (which commit nothing, unless already committing) and waits for them.
    fn shutdown(&mut self) {
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        let open = self.sessions.lock().streams.len();
        log::info!("stopped accepting; {open} sessions open");
        let left = self
            .sessions
            .wait_empty(Instant::now() + self.shutdown_grace);
        if left > 0 {
            log::info!("cutting off {left} sessions");
            for stream in self.sessions.lock().streams.values() {
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
