//! The ceiling: a stand-in POP3 server that answers from memory. RETR replays bytes recorded
//! from a real server, each response in one `write_all`, so a client run against it measures
//! the loopback socket and this load generator, and nothing else.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

/// What the stand-in serves: every recorded RETR response (status line to terminator) and
/// the sizes LIST reports.
pub struct Recording {
    /// Raw RETR responses, message 1 first.
    pub responses: Vec<Vec<u8>>,
    /// The sizes the real server listed.
    pub sizes: Vec<u64>,
}

/// A running stand-in; it stops accepting when dropped.
pub struct Replay {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Replay {
    /// Starts the stand-in on 127.0.0.1 with one thread per connection, as poplar does.
    pub fn start(rec: Arc<Recording>) -> io::Result<Replay> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let rec = rec.clone();
                let _ = thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || serve(s, &rec));
            }
        });
        Ok(Replay { addr, stop })
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(s: TcpStream, rec: &Recording) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut out = &s;
    let mut input = BufReader::with_capacity(1024, &s);
    out.write_all(b"+OK replay ready\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let arg: Option<usize> = words.next().and_then(|w| w.parse().ok());
        match (verb.as_str(), arg) {
            ("STAT", _) => {
                let total: u64 = rec.sizes.iter().sum();
                out.write_all(format!("+OK {} {total}\r\n", rec.sizes.len()).as_bytes())?;
            }
            ("LIST", _) => {
                let mut r = String::from("+OK\r\n");
                for (i, size) in rec.sizes.iter().enumerate() {
                    r.push_str(&format!("{} {size}\r\n", i + 1));
                }
                r.push_str(".\r\n");
                out.write_all(r.as_bytes())?;
            }
            ("RETR", Some(n)) if (1..=rec.responses.len()).contains(&n) => {
                out.write_all(&rec.responses[n - 1])?;
            }
            ("QUIT", _) => {
                out.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            ("USER" | "PASS" | "NOOP", _) => out.write_all(b"+OK\r\n")?,
            _ => out.write_all(b"-ERR not in the replay\r\n")?,
        }
    }
}
