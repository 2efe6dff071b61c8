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

/// Binds `addr` and serves SMTP on a thread of its own for as long as the process runs;
/// returns the bound address.
pub fn start(addr: SocketAddr, intake: DevIntake, max_size: u64) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let limits = Arc::new(Limits {
        hostname: crate::hostname::system_hostname(),
        max_size,
        max_recipients: MAX_RECIPIENTS,
    });
    let intake = Arc::new(intake);
    let open = Arc::new(AtomicUsize::new(0));
    thread::Builder::new()
        .name("smtp-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(sock) => admit(sock, &intake, &limits, &open),
                    Err(e) => {
                        log::warn!("smtp: accept failed: {e}");
                        // Out of descriptors, say: do not spin.
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(bound)
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
