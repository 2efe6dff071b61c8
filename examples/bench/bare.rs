//! The bare reference server of `make bench`: the least a thread-per-connection POP3 server
//! over mbox files can do (USER, PASS, STAT, UIDL, LIST, RETR, NOOP, QUIT), with no locks, no
//! index, no journal, no limits beyond a line's length and no logging. It is the ceiling
//! poplar's sessions per second are measured against, never a server to run.
//!
//! ```text
//! bare --listen 127.0.0.1:PORT --users FILE --mail DIR
//! ```
//!
//! The users file is poplar's passwd-file format with `{PLAIN}` secrets; `DIR/<user>` is the
//! mbox. Each login reads the whole mbox and splits it at its From_ lines; a UID is the
//! XXH3-128 of the message's bytes.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

/// Longest command line read; a longer one ends the session.
const MAX_LINE: usize = 255;

struct Shared {
    users: HashMap<String, String>,
    mail: PathBuf,
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| {
                io::Error::other(format!(
                    "usage: bare --listen A --users F --mail D ({name} missing)"
                ))
            })
    };
    let listen = flag("--listen")?;
    let users = std::fs::read_to_string(flag("--users")?)?
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(':');
            let name = parts.next()?;
            let secret = parts.next()?.strip_prefix("{PLAIN}")?;
            Some((name.to_owned(), secret.to_owned()))
        })
        .collect();
    let shared = Arc::new(Shared {
        users,
        mail: PathBuf::from(flag("--mail")?),
    });
    let listener = TcpListener::bind(&listen)?;
    if !listener.local_addr()?.ip().is_loopback() {
        return Err(io::Error::other("bare listens on loopback only"));
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        // The same small stack as poplar's session threads.
        let spawned = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let _ = serve(&shared, stream);
            });
        if let Err(e) = spawned {
            eprintln!("bare: cannot start a session: {e}");
        }
    }
    Ok(())
}

/// One message: where its bytes lie in the mbox, its size as sent, its UID.
struct Message {
    data: std::ops::Range<usize>,
    size: usize,
    uid: u128,
}

fn serve(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"+OK bare POP3 ready\r\n")?;
    let mut user: Option<String> = None;
    let mut mbox: Option<(Vec<u8>, Vec<Message>)> = None;
    let mut line = Vec::with_capacity(MAX_LINE + 1);
    loop {
        line.clear();
        if input
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?
            == 0
            || line.len() > MAX_LINE
        {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let mut words = text.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let arg = words.next();
        let reply: Vec<u8> = match (&mbox, verb.as_str()) {
            (_, "QUIT") => {
                out.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            (_, "NOOP") => b"+OK\r\n".to_vec(),
            (None, "USER") => {
                user = arg.map(str::to_owned);
                b"+OK\r\n".to_vec()
            }
            (None, "PASS") => match user.take() {
                Some(u) if shared.users.get(&u).map(String::as_str) == arg => {
                    let bytes = std::fs::read(shared.mail.join(&u)).unwrap_or_default();
                    let messages = split(&bytes);
                    let reply = format!("+OK {} messages\r\n", messages.len());
                    mbox = Some((bytes, messages));
                    reply.into_bytes()
                }
                _ => b"-ERR no\r\n".to_vec(),
            },
            (Some((_, m)), "STAT") => {
                let total: usize = m.iter().map(|m| m.size).sum();
                format!("+OK {} {total}\r\n", m.len()).into_bytes()
            }
            (Some((_, m)), "LIST" | "UIDL") if arg.is_none() => {
                let mut r = b"+OK\r\n".to_vec();
                for (i, m) in m.iter().enumerate() {
                    let line = if verb == "LIST" {
                        format!("{} {}\r\n", i + 1, m.size)
                    } else {
                        format!("{} {:032x}\r\n", i + 1, m.uid)
                    };
                    r.extend_from_slice(line.as_bytes());
                }
                r.extend_from_slice(b".\r\n");
                r
            }
            (Some((bytes, m)), "RETR") => match arg
                .and_then(|a| a.parse::<usize>().ok())
                .and_then(|n| m.get(n.checked_sub(1)?))
            {
                Some(m) => {
                    out.write_all(format!("+OK {} octets\r\n", m.size).as_bytes())?;
                    retr(&mut out, &bytes[m.data.clone()])?;
                    continue;
                }
                None => b"-ERR no such message\r\n".to_vec(),
            },
            _ => b"-ERR not here\r\n".to_vec(),
        };
        out.write_all(&reply)?;
    }
}

/// The messages of an mbox: each From_ line at a line start begins one; the blank line before
/// the next From_ line separates them and belongs to neither.
fn split(bytes: &[u8]) -> Vec<Message> {
    let mut starts: Vec<usize> = memchr::memmem::find_iter(bytes, b"\nFrom ")
        .map(|i| i + 1)
        .collect();
    if bytes.starts_with(b"From ") {
        starts.insert(0, 0);
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let next = starts.get(k + 1).copied().unwrap_or(bytes.len());
        let data = memchr::memchr(b'\n', &bytes[start..next]).map_or(next, |i| start + i + 1);
        let mut end = next;
        if k + 1 < starts.len() && end > data && bytes[end - 1] == b'\n' {
            end -= 1;
        }
        let body = &bytes[data..end];
        let bare_lf = memchr::memchr_iter(b'\n', body)
            .filter(|&i| i == 0 || body[i - 1] != b'\r')
            .count();
        out.push(Message {
            data: data..end,
            size: body.len() + bare_lf,
            uid: xxhash_rust::xxh3::xxh3_128(body),
        });
    }
    out
}

/// Sends a message: CRLF line ends, dot-stuffing, the terminator, in large writes.
fn retr(out: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    for line in body.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.first() == Some(&b'.') {
            buf.push(b'.');
        }
        buf.extend_from_slice(text);
        buf.extend_from_slice(b"\r\n");
        if buf.len() >= 60 * 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    buf.extend_from_slice(b".\r\n");
    out.write_all(&buf)
}
