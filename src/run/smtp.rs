//! `--dev-smtp ADDR`: the development server's SMTP intake on its own listener, one thread
//! per connection, each message appended to the mailbox of every recipient's local part with
//! the same code, locks and quoting as `poplar deliver`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::mailbox::UserName;
use crate::mailbox::append::append;
use crate::mailbox::mbox::MboxOptions;
use crate::mailbox::template::MailTemplate;
use crate::smtp::session::{Intake, Limits, serve};

/// Connections served at once; more are answered 421 and closed.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may stay silent (RFC 5321 suggests 5 minutes for commands).
const IDLE: Duration = Duration::from_secs(300);

/// The most recipients of one message (RFC 5321's minimum for servers to take).
const MAX_RECIPIENTS: usize = 100;

/// The dev server's intake: mailboxes under its directory, created on first mail.
pub struct DevIntake {
    dir: PathBuf,
    template: MailTemplate,
    options: MboxOptions,
}

impl DevIntake {
    /// Mail for `template`'s mailboxes, spooled in `dir`, appended as `options` say.
    pub fn new(dir: PathBuf, template: MailTemplate, options: MboxOptions) -> DevIntake {
        DevIntake {
            dir,
            template,
            options,
        }
    }
}

impl Intake for DevIntake {
    fn recipient(&self, address: &str) -> Result<String, String> {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        match UserName::new(local.as_bytes()) {
            Ok(_) => Ok(local.to_owned()),
            Err(e) => Err(format!("'{local}' cannot be a mailbox name: {e}")),
        }
    }

    fn spool(&self) -> io::Result<File> {
        super::api::spool_file(&self.dir)
    }

    fn deliver(
        &self,
        sender: &str,
        mailboxes: &[String],
        spool: &mut File,
        len: u64,
    ) -> Vec<(String, String)> {
        let sender = if sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            sender
        };
        let mut failed = Vec::new();
        for m in mailboxes {
            let result = UserName::new(m.as_bytes())
                .map_err(|e| e.to_string())
                .and_then(|user| {
                    let path = self.template.expand(&user);
                    spool.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
                    append(
                        &path,
                        Some(sender),
                        &mut Read::take(&mut *spool, len),
                        &self.options.locks,
                        self.options.trust,
                        SystemTime::now(),
                    )
                    .map_err(|e| e.to_string())
                });
            match result {
                Ok(n) => log::info!("smtp: {n} octets from {sender} appended for {m}"),
                Err(why) => {
                    log::warn!("smtp: message from {sender} not appended for {m}: {why}");
                    failed.push((m.clone(), why));
                }
            }
        }
        failed
    }
}

/// The SMTP intake listening on its own thread; dropping it stops taking connections (those
/// open finish on their threads).
pub struct Smtp {
    addr: SocketAddr,
    waker: Arc<Waker>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Smtp {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        if let Err(e) = self.waker.wake() {
            log::warn!("smtp: cannot stop the listener: {e}");
            return;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

/// Binds `addr` and serves SMTP on a thread of its own until the returned `Smtp` is dropped.
pub fn start(addr: SocketAddr, intake: DevIntake, max_size: u64) -> io::Result<Smtp> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
    let limits = Arc::new(Limits {
        hostname: crate::hostname::system_hostname(),
        max_size,
        max_recipients: MAX_RECIPIENTS,
    });
    let intake = Arc::new(intake);
    let thread = thread::Builder::new()
        .name("smtp-accept".into())
        .spawn(move || accept(poll, &listener, &intake, &limits))?;
    Ok(Smtp {
        addr: bound,
        waker,
        thread: Some(thread),
    })
}

/// Accepts until woken to stop. Readiness is edge-triggered, so each wake-up accepts until
/// the backlog is empty; after a failed accept (out of descriptors, say) it tries again a
/// little later rather than spin or wait for a connection that may never come.
fn accept(
    mut poll: Poll,
    listener: &mio::net::TcpListener,
    intake: &Arc<DevIntake>,
    limits: &Arc<Limits>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut events = Events::with_capacity(8);
    let mut retry = None;
    loop {
        match poll.poll(&mut events, retry) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("smtp: the listener cannot wait for connections: {e}");
                return;
            }
        }
        if events.iter().any(|e| e.token() == STOP) {
            return;
        }
        retry = None;
        loop {
            match listener.accept() {
                Ok((sock, _)) => {
                    let sock = TcpStream::from(sock);
                    match sock.set_nonblocking(false) {
                        Ok(()) => admit(sock, intake, limits, &open),
                        Err(e) => log::warn!("smtp: cannot set up a connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("smtp: accept failed: {e}");
                    retry = Some(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
}

fn admit(
    mut sock: TcpStream,
    intake: &Arc<DevIntake>,
    limits: &Arc<Limits>,
    open: &Arc<AtomicUsize>,
) {
    if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        open.fetch_sub(1, Ordering::SeqCst);
        let _ = sock.write_all(b"421 4.3.2 too many connections, try again later\r\n");
        return;
    }
    let (intake, limits, slot) = (intake.clone(), limits.clone(), open.clone());
    let spawned = thread::Builder::new().name("smtp".into()).spawn(move || {
        let peer = sock
            .peer_addr()
            .map_or_else(|_| "-".to_owned(), |a| a.to_string());
        log::info!("smtp [{peer}]: connected");
        let result = sock
            .set_read_timeout(Some(IDLE))
            .and_then(|()| sock.set_write_timeout(Some(IDLE)))
            .and_then(|()| sock.try_clone())
            .and_then(|r| {
                serve(
                    &mut io::BufReader::new(r),
                    &mut sock,
                    intake.as_ref(),
                    &limits,
                )
            });
        match result {
            Ok(s) => log::info!(
                "smtp [{peer}]: {} accepted, {} appended, {} refused{}",
                crate::plural::plural(s.messages, "message"),
                match s.copies {
                    1 => "1 copy".to_owned(),
                    n => format!("{n} copies"),
                },
                s.refused,
                if s.quit { "" } else { ", no QUIT" }
            ),
            Err(e) => log::info!("smtp [{peer}]: ended: {e}"),
        }
        slot.fetch_sub(1, Ordering::SeqCst);
    });
    if let Err(e) = spawned {
        open.fetch_sub(1, Ordering::SeqCst);
        log::warn!("smtp: cannot start a thread: {e}");
    }
}
