//! Sockets: the mio accept loop over every listener, admission, one thread per session,
//! SIGHUP, shutdown; with the listeners, the transport, TLS, and the wiring from a `Config`.

mod admission;
pub(crate) mod listeners;
mod scrape;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod wiring;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::auth::guard::ClientKey;
use crate::auth::passwd;
use crate::config::Config;
use crate::limits;
use crate::logline::emit;
use crate::plural::plural;
use crate::protocol::proxy::Cidr;
use crate::session::{self, Context, Link, Tag};

use admission::{Refusal, Sessions, log_refusal};
use listeners::real_peer;
use tls::Certificates;
use transport::{Connection, Timeouts};
use wiring::{certificates, context};

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

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// Whether each listener speaks implicit TLS (`--listen-tls`).
    /// Beside `listeners`: what each one's connections start with.
    kinds: Vec<ListenerKind>,
    certificates: Option<Arc<Certificates>>,
    /// Who may send PROXY headers (`--trusted-proxy`).
    trusted_proxies: Arc<[Cidr]>,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    stopping: Arc<AtomicBool>,
    ctx: Arc<Context>,
    /// The passwd-file that SIGHUP reloads; `None` when the users came from elsewhere.
    users_file: Option<PathBuf>,
    timeouts: Timeouts,
    /// The AUTHORIZATION deadline from connect to login (`--auth-timeout`).
    auth_timeout: Duration,
    max_connections: usize,
    max_per_address: usize,
    shutdown_grace: Duration,
    sessions: Arc<Sessions>,
    next_id: AtomicU64,
    /// The `--metrics` endpoint, serving from start-up until shutdown.
    scrape: Option<scrape::Scrape>,
}

impl Server {
    /// Loads the users file, sets up the mbox store and binds every `--listen` address: all
    /// that can fail at start-up fails here, before serving. Unusable lines in the users file
    /// are logged by number; those users cannot log in.
    pub fn from_config(config: &Config) -> Result<Server, String> {
        Server::bind(config, context(config)?).map_err(|e| e.to_string())
    }

    /// Like [`from_config`](Server::from_config), but serves the listening sockets systemd
    /// handed over instead of binding any address. A socket bound at a `--listen-tls` address
    /// speaks implicit TLS, one at a `--proxy-protocol` address expects PROXY headers.
    pub fn from_inherited(
        config: &Config,
        inherited: Vec<std::net::TcpListener>,
    ) -> Result<Server, String> {
        let mut server = Server::unbound(config, context(config)?).map_err(|e| e.to_string())?;
        let addrs = inherited
            .iter()
            .map(std::net::TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        // A marker that matches nothing would leave a TLS or PROXY port served as plain POP3.
        let markers = [
            ("--listen-tls", &config.listen_tls),
            ("--proxy-protocol", &config.proxy_listen),
        ];
        for (flag, marked) in markers {
            if let Some(a) = marked.iter().find(|a| !addrs.contains(a)) {
                let have: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{flag} {a} matches none of the sockets from systemd ({})",
                    have.join(", ")
                ));
            }
        }
        for (l, addr) in inherited.into_iter().zip(addrs) {
            let kind = ListenerKind {
                implicit_tls: config.listen_tls.contains(&addr),
                proxied: config.proxy_listen.contains(&addr),
            };
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            server
                .add_listener(TcpListener::from_std(l), kind)
                .map_err(|e| format!("cannot serve the socket on {addr}: {e}"))?;
        }
        Ok(server)
    }

    /// Loads the TLS certificate, if any, and binds every `--listen`, `--listen-tls` and
    /// `--proxy-protocol` address for sessions in `ctx`.
    pub fn bind(config: &Config, ctx: Context) -> io::Result<Server> {
        let mut server = Server::unbound(config, ctx)?;
        let kind = |implicit_tls, proxied| ListenerKind {
            implicit_tls,
            proxied,
        };
        let plain = config.listen.iter().map(|a| (a, kind(false, false)));
        let tls = config.listen_tls.iter().map(|a| (a, kind(true, false)));
        let proxied = config.proxy_listen.iter().map(|a| (a, kind(false, true)));
        for (addr, kind) in plain.chain(tls).chain(proxied) {
            let l = TcpListener::bind(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            // mio listens with a backlog of 128; a burst of connections beyond it has its SYNs
            // dropped and retried a second later. Listening again raises it (Linux allows it).
            // Sockets from systemd keep the Backlog= their unit sets.
            let backlog = nix::sys::socket::Backlog::new(limits::LISTEN_BACKLOG)
                .unwrap_or(nix::sys::socket::Backlog::MAXCONN);
            nix::sys::socket::listen(&l, backlog)?;
            server.add_listener(l, kind)?;
        }
        Ok(server)
    }

    fn add_listener(&mut self, mut l: TcpListener, kind: ListenerKind) -> io::Result<()> {
        let token = Token(self.listeners.len());
        self.poll
            .registry()
            .register(&mut l, token, Interest::READABLE)?;
        if kind.proxied {
            let addr = l.local_addr()?;
            log::info!("{addr}: connections start with a PROXY header");
        }
        self.listeners.push(l);
        self.kinds.push(kind);
        Ok(())
    }

    /// A server with no listener yet, its TLS certificate loaded if one is configured.
    fn unbound(config: &Config, ctx: Context) -> io::Result<Server> {
        let certificates = certificates(config)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listeners: Vec::new(),
            kinds: Vec::new(),
            certificates,
            trusted_proxies: config.trusted_proxies.clone().into(),
            signals: None,
            waker,
            stopping: Arc::new(AtomicBool::new(false)),
            ctx: Arc::new(ctx),
            users_file: config.users_file.clone(),
            timeouts: wiring::timeouts(config),
            auth_timeout: config.auth_timeout.min(config.idle_timeout),
            max_connections: config.max_connections,
            max_per_address: config.max_per_address,
            shutdown_grace: config.shutdown_grace,
            sessions: Arc::default(),
            next_id: AtomicU64::new(1),
            scrape: config.metrics.map(scrape::Scrape::start).transpose()?,
        })
    }

    /// The addresses actually bound (useful with port 0): the `--listen` ones, then the
    /// `--listen-tls` ones, then the `--proxy-protocol` ones, each in the order given (or
    /// systemd's order for inherited sockets).
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
        if let Some(m) = &self.scrape {
            log::info!("metrics at http://{}/metrics", m.local_addr());
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

    /// Reloads the users file as start-up loads it: bad lines are logged and skipped, the
    /// others are in force; a file that cannot be read keeps the old table.
    fn reload_users(&self) {
        let Some(users_file) = &self.users_file else {
            log::info!("SIGHUP: no users file to reload");
            return;
        };
        match passwd::load(users_file) {
            Ok((users, problems)) => {
                wiring::log_skipped_lines(users_file, &problems);
                let skipped = if problems.is_empty() {
                    String::new()
                } else {
                    format!(", {} skipped", plural(problems.len() as u64, "line"))
                };
                log::info!(
                    "reloaded {} ({}{skipped})",
                    users_file.display(),
                    plural(users.len() as u64, "user")
                );
                self.ctx.users.replace(users);
            }
            Err(e) => log::warn!(
                "cannot reload {}: {e}; keeping the users loaded before",
                users_file.display()
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
                log::warn!(
                    "cannot reload the TLS certificate and key: {e}; keeping the one loaded before"
                )
            }
        }
    }

    /// Cuts off sessions that have not logged in within the AUTHORIZATION timeout (however
    /// much they trickle in); returns when the next one is due.
    fn reap(&self) -> Option<Instant> {
        let (expired, next) = self.ctx.guards.deadlines.expired(Instant::now());
        if !expired.is_empty() {
            for (id, peer) in self.sessions.cut_off(&expired) {
                let tag = Tag { id, peer };
                let limit = self.auth_timeout;
                emit!(
                    log::Level::Warn,
                    tag.event("auth-timeout").num(
                        "timeout_ms",
                        limit.as_millis().try_into().unwrap_or(u64::MAX)
                    ),
                    "{tag} not logged in within {limit:?}: closing"
                );
            }
        }
        next
    }

    /// Accepts up to a batch of connections on listener `i`; returns whether more may wait.
    fn accept_batch(&self, i: usize) -> bool {
        for _ in 0..limits::MAX_ACCEPTS_PER_POLL {
            match self.listeners[i].accept() {
                Ok((stream, peer)) => self.admit(stream.into(), peer, self.kinds[i]),
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

    fn admit(&self, stream: TcpStream, peer: SocketAddr, kind: ListenerKind) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tag = Tag {
            id,
            peer: Some(peer),
        };
        if let Err(e) = wiring::prepare_socket(&stream, &self.timeouts) {
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
        // Behind a PROXY header the socket's peer is the proxy: the client's own address is
        // counted once the header is read.
        let key = (!kind.proxied).then(|| ClientKey::of(peer.ip()));
        let limits = (self.max_connections, self.max_per_address);
        let mut slot = match self.sessions.admit(id, key, clone, limits) {
            Ok(slot) => slot,
            Err(refusal) => {
                self.refuse(&tag, &stream, kind, &refusal);
                return;
            }
        };
        self.ctx
            .guards
            .deadlines
            .start(id, Instant::now() + self.auth_timeout);
        let ctx = self.ctx.clone();
        let certificates = self.certificates.clone();
        let timeouts = self.timeouts;
        let trusted = kind.proxied.then(|| self.trusted_proxies.clone());
        let max_per_address = self.max_per_address;
        let spawned = thread::Builder::new()
            .name(format!("pop3-{id}"))
            .stack_size(limits::SESSION_STACK_SIZE)
            .spawn(move || {
                // Here, not in the accept loop: a slow client or proxy delays only itself.
                let tag = match trusted {
                    None => tag,
                    Some(trusted) => match real_peer(tag, &stream, &trusted, timeouts.idle) {
                        Some(tag) => tag,
                        None => return,
                    },
                };
                if let Some(real) = tag.peer {
                    slot.set_peer(real);
                }
                if kind.proxied
                    && let Some(real) = tag.peer
                    && let Err(refusal) = slot.account(ClientKey::of(real.ip()), max_per_address)
                {
                    log_refusal(&tag, &refusal, max_per_address);
                    if !kind.implicit_tls {
                        let _ = (&stream).write_all(refusal.reply());
                    }
                    return;
                }
                let mut link = Connection::new(stream, certificates, timeouts);
                if kind.implicit_tls
                    && let Err(e) = link.start_tls()
                {
                    emit!(
                        log::Level::Info,
                        tag.event("tls-failed").text("error", e.to_string()),
                        "{tag} TLS handshake failed: {e}"
                    );
                    return;
                }
                session::serve_then(&ctx, &tag, &mut link, || slot.leave_address());
                ctx.guards.deadlines.clear(tag.id);
                drop(slot);
            });
        if let Err(e) = spawned {
            log::error!("cannot start a session thread: {e}");
        }
    }

    /// Logs a refused connection and tells the client, in one line it can read.
    fn refuse(&self, tag: &Tag, stream: &TcpStream, kind: ListenerKind, refusal: &Refusal) {
        let limit = match refusal {
            Refusal::Total => self.max_connections,
            Refusal::PerAddress(_) => self.max_per_address,
        };
        log_refusal(tag, refusal, limit);
        // A TLS client could not read a cleartext reply: it just sees the close.
        if !kind.implicit_tls {
            let _ = (&*stream).write_all(refusal.reply());
        }
    }

    /// Stops accepting, lets sessions finish within the grace period, then cuts off the
    /// rest (which commit nothing, unless already committing) and waits for them.
    fn shutdown(&mut self) {
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        let open = self.sessions.open_count();
        log::info!("stopped accepting; {} open", plural(open as u64, "session"));
        let left = self
            .sessions
            .wait_empty(Instant::now() + self.shutdown_grace);
        if left > 0 {
            log::info!("cutting off {}", plural(left as u64, "session"));
            self.sessions.cut_off_all();
            let stuck = self
                .sessions
                .wait_empty(Instant::now() + limits::SHUTDOWN_JOIN_DEADLINE);
            if stuck > 0 {
                log::error!("{} did not end in time", plural(stuck as u64, "session"));
            }
        }
        // Last: the endpoint serves through the whole shutdown, so a scrape sees sessions end.
        self.scrape = None;
        log::info!("shut down");
    }
}

/// What a listener's connections start with.
#[derive(Debug, Clone, Copy)]
struct ListenerKind {
    /// A TLS handshake (`--listen-tls`).
    implicit_tls: bool,
    /// A PROXY header (`--proxy-protocol`), before anything else, TLS included.
    proxied: bool,
}
