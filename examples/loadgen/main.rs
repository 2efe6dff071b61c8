//! The benchmark's load generator: makes mbox files and drives any POP3 server on loopback
//! with std threads, printing one `key=value` line per run for examples/bench/run.sh.
//!
//! ```text
//! loadgen gen      --out FILE --count N --size OCTETS [--seed S]
//! loadgen sessions --addr A --prefix P --users U --pass W --clients C --seconds S
//! loadgen retr     --addr A --prefix P --pass W --clients C --seconds S
//! loadgen ceiling-retr     (as retr, + --repeat R; records --addr's RETR bytes, replays them)
//! loadgen ceiling-sessions --clients C --seconds S
//! loadgen render   --in FILE   (poplar's RETR rendering alone, in memory: no socket)
//! loadgen login    --addr A --user U --pass W --repeat N
//! loadgen idle     --addr A --prefix P --pass W --count N --root PID
//! loadgen quit     --addr A --user U --pass W --dele last|all --root PID
//! ```
//!
//! Every loop is bounded by a count and a deadline; only 127.0.0.1 is ever a target.

mod client;
mod mboxgen;
mod procfs;
mod replay;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use client::Conn;
use replay::{Recording, Replay};

/// Receive buffer for bulk transfers: large reads, few syscalls.
const BULK_BUF: usize = 256 * 1024;

/// Most sessions one client opens in a `sessions` run, whatever the deadline.
const MAX_SESSIONS_PER_CLIENT: usize = 200_000;

struct Args(HashMap<String, String>);

impl Args {
    fn parse(raw: &[String]) -> Result<Args, String> {
        let mut m = HashMap::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected {k}"))?;
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            m.insert(key.to_owned(), v.clone());
        }
        Ok(Args(m))
    }

    fn str(&self, k: &str) -> Result<&str, String> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("--{k} is required"))
    }

    fn num<T: std::str::FromStr>(&self, k: &str) -> Result<T, String> {
        self.str(k)?
            .parse()
            .map_err(|_| format!("--{k}: not a number"))
    }

    fn addr(&self) -> Result<SocketAddr, String> {
        let a: SocketAddr = self
            .str("addr")?
            .parse()
            .map_err(|_| "--addr: not an address")?;
        if !a.ip().is_loopback() {
            return Err("--addr must be a loopback address".into());
        }
        Ok(a)
    }

    fn deadline(&self) -> Result<Instant, String> {
        let secs: f64 = self.num("seconds")?;
        Ok(Instant::now() + Duration::from_secs_f64(secs.clamp(0.1, 120.0)))
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = raw.split_first() else {
        eprintln!(
            "usage: loadgen gen|sessions|retr|ceiling-retr|ceiling-sessions|login|idle|quit ..."
        );
        return ExitCode::from(2);
    };
    let result = Args::parse(rest).and_then(|a| match cmd.as_str() {
        "gen" => mboxgen::mbox(
            Path::new(a.str("out")?),
            a.num("count")?,
            a.num("size")?,
            a.num("seed").unwrap_or(1),
        )
        .map_err(|e| e.to_string()),
        "sessions" => sessions(a.addr()?, &a, a.num("users")?),
        "ceiling-sessions" => {
            let rec = Recording {
                responses: Vec::new(),
                sizes: vec![1000; 20],
            };
            let r = Replay::start(Arc::new(rec)).map_err(|e| e.to_string())?;
            sessions(r.addr, &a, 1)
        }
        "retr" => retr(a.addr()?, &a),
        "ceiling-retr" => {
            let rec = record(a.addr()?, &a).map_err(|e| format!("recording: {e}"))?;
            let r = Replay::start(Arc::new(rec)).map_err(|e| e.to_string())?;
            // Recording is slow; replay it several times, one output line each.
            for _ in 0..a.num::<usize>("repeat").unwrap_or(1).clamp(1, 20) {
                retr(r.addr, &a)?;
            }
            Ok(())
        }
        "render" => render(Path::new(a.str("in")?)),
        "login" => login(a.addr()?, &a),
        "idle" => idle(a.addr()?, &a),
        "quit" => quit(a.addr()?, &a),
        other => Err(format!("unknown command {other}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg_or<'a>(a: &'a Args, k: &str, default: &'a str) -> &'a str {
    a.str(k).unwrap_or(default)
}

/// Sessions of connect, USER, PASS, STAT, QUIT back to back from each client until the
/// deadline: sessions per second and the 99th percentile of one session's time.
fn sessions(addr: SocketAddr, a: &Args, users: usize) -> Result<(), String> {
    let clients: usize = a.num("clients")?;
    let prefix = arg_or(a, "prefix", "u");
    let pass = arg_or(a, "pass", "x");
    let start = Instant::now();
    let deadline = a.deadline()?;
    let results: Vec<(Vec<u32>, u64)> = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let user = format!("{prefix}{}", c % users.max(1));
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    while Instant::now() < deadline && lat.len() < MAX_SESSIONS_PER_CLIENT {
                        let t0 = Instant::now();
                        let one = || -> io::Result<()> {
                            let mut c = Conn::open(addr, 1024)?;
                            c.login(&user, pass)?;
                            c.cmd("STAT")?;
                            c.quit().map(drop)
                        };
                        match one() {
                            Ok(()) => lat.push(t0.elapsed().as_micros() as u32),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let errors: u64 = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<u32> = results.into_iter().flat_map(|r| r.0).collect();
    lat.sort_unstable();
    let p = |q: usize| {
        lat.get((lat.len() * q / 100).min(lat.len().saturating_sub(1)))
            .copied()
    };
    println!(
        "sessions={} rate={:.1} p50_ms={:.3} p99_ms={:.3} errors={errors}",
        lat.len(),
        lat.len() as f64 / elapsed,
        p(50).unwrap_or(0) as f64 / 1000.0,
        p(99).unwrap_or(0) as f64 / 1000.0,
    );
    Ok(())
}

/// Each client logs in to its own mailbox (`prefix` + client number), LISTs, then RETRs every
/// message once, checking each complete RETR's octets against LIST. No RETR starts after
/// `--seconds`; at three times that, a RETR still running is cut off (one 512 MiB message
/// from a slow server must not stretch the run). Throughput counts octets received, status
/// lines and stuffing included, the same bytes from every server.
fn retr(addr: SocketAddr, a: &Args) -> Result<(), String> {
    let clients: usize = a.num("clients")?;
    let prefix = arg_or(a, "prefix", "u");
    let pass = arg_or(a, "pass", "x");
    let seconds: f64 = a.num::<f64>("seconds")?.clamp(0.1, 120.0);
    let barrier = Barrier::new(clients + 1);
    let (elapsed, per_client) = thread::scope(|s| {
        let barrier = &barrier;
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let user = format!("{prefix}{c}");
                s.spawn(move || -> io::Result<Counts> {
                    let setup = (|| {
                        let mut conn = Conn::open(addr, BULK_BUF)?;
                        conn.login(&user, pass)?;
                        let sizes = conn.list()?;
                        Ok::<_, io::Error>((conn, sizes))
                    })();
                    barrier.wait();
                    let (mut conn, sizes) = setup?;
                    let start = Instant::now();
                    let soft = start + Duration::from_secs_f64(seconds);
                    conn.cutoff = Some(start + Duration::from_secs_f64(3.0 * seconds));
                    let skip = conn.received;
                    let mut n = Counts::default();
                    for (i, &size) in sizes.iter().enumerate() {
                        if Instant::now() >= soft {
                            break;
                        }
                        match conn.retr(i + 1, None) {
                            Ok(got) => {
                                n.mismatched += u64::from(got != size);
                                n.messages += 1;
                            }
                            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                                n.cut = true;
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    n.received = conn.received - skip;
                    // A cut-off reply leaves the stream mid-message: just close it.
                    if !n.cut {
                        conn.quit()?;
                    }
                    Ok(n)
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect();
        (t0.elapsed().as_secs_f64(), results)
    });
    let mut t = Counts::default();
    for r in per_client {
        let n = r.map_err(|e| format!("client failed: {e}"))?;
        t.received += n.received;
        t.messages += n.messages;
        t.mismatched += n.mismatched;
        t.cut |= n.cut;
    }
    println!(
        "received={} messages={} mismatched={} cut={} seconds={elapsed:.3} mb_per_s={:.1}",
        t.received,
        t.messages,
        t.mismatched,
        u8::from(t.cut),
        t.received as f64 / elapsed / 1e6
    );
    if t.mismatched > 0 {
        return Err(format!("{} RETRs did not match LIST", t.mismatched));
    }
    Ok(())
}

/// What one RETR client did.
#[derive(Default)]
struct Counts {
    received: u64,
    messages: u64,
    mismatched: u64,
    cut: bool,
}

/// Records every RETR response of mailbox `prefix`0 from a real server, for the replay.
fn record(addr: SocketAddr, a: &Args) -> io::Result<Recording> {
    let user = format!("{}0", arg_or(a, "prefix", "u"));
    let mut c = Conn::open(addr, BULK_BUF)?;
    c.login(&user, arg_or(a, "pass", "x"))?;
    let sizes = c.list()?;
    let mut responses = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let mut r = Vec::with_capacity(size as usize + size as usize / 50 + 64);
        c.retr(i + 1, Some(&mut r))?;
        responses.push(r);
    }
    c.quit()?;
    Ok(Recording { responses, sizes })
}

/// Time from sending PASS to STAT's `+OK` (the login, with the server's mailbox scan).
fn timed_login(addr: SocketAddr, user: &str, pass: &str) -> io::Result<(Conn, f64)> {
    let mut c = Conn::open(addr, 4096)?;
    c.cmd(&format!("USER {user}"))?;
    let t0 = Instant::now();
    c.cmd(&format!("PASS {pass}"))?;
    c.cmd("STAT")?;
    Ok((c, t0.elapsed().as_secs_f64() * 1000.0))
}

/// Timed logins; with `--root`, also what the server tree read from files meanwhile (rchar
/// counts socket reads too, a few hundred octets per session).
fn login(addr: SocketAddr, a: &Args) -> Result<(), String> {
    let repeat: usize = a.num::<usize>("repeat")?.clamp(1, 100);
    let root: Option<u32> = a.num("root").ok();
    let (mut times, mut reads) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        let before = root.map(|r| (procfs::tree(r), procfs::io_field(r, "rchar:")));
        let (c, ms) =
            timed_login(addr, a.str("user")?, arg_or(a, "pass", "x")).map_err(|e| e.to_string())?;
        let session = root.map(|r| new_pids(r, before.as_ref().map_or(&[][..], |b| &b.0)));
        c.quit().map_err(|e| e.to_string())?;
        if let (Some(r), Some((_, r0)), Some(pids)) = (root, &before, session) {
            settle(r, &pids);
            reads.push(format!(
                "{}",
                procfs::io_field(r, "rchar:").saturating_sub(*r0) / 1024
            ));
        }
        times.push(format!("{ms:.2}"));
    }
    println!("login_ms={} read_kib={}", times.join(","), reads.join(","));
    Ok(())
}

/// Processes under `root` that were not there before: a session's own process, if any.
fn new_pids(root: u32, before: &[u32]) -> Vec<u32> {
    procfs::tree(root)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect()
}

/// Waits (at most 10 s) until a session's processes have exited and been reaped, so that
/// their I/O counts have reached `root`.
fn settle(root: u32, session: &[u32]) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && procfs::tree(root).iter().any(|p| session.contains(p)) {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Holds `count` logged-in sessions open and reports the server tree's memory.
fn idle(addr: SocketAddr, a: &Args) -> Result<(), String> {
    let count: usize = a.num::<usize>("count")?.min(5000);
    let root: u32 = a.num("root")?;
    let prefix = arg_or(a, "prefix", "u");
    let pass = arg_or(a, "pass", "x");
    let (base_pss, base_rss) = procfs::memory_kib(root);
    let start = Instant::now();
    let conns: Vec<Conn> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || -> io::Result<Vec<Conn>> {
                    (t..count)
                        .step_by(4)
                        .map(|i| {
                            let mut c = Conn::open(addr, 0)?;
                            c.login(&format!("{prefix}{i}"), pass)?;
                            c.cmd("STAT")?;
                            Ok(c)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("idle thread"))
            .collect::<io::Result<Vec<Vec<Conn>>>>()
    })
    .map_err(|e| format!("opening sessions: {e}"))?
    .into_iter()
    .flatten()
    .collect();
    let opened = start.elapsed().as_secs_f64();
    // Let the server's processes settle (lazy allocations, reaped helpers) before measuring.
    thread::sleep(Duration::from_millis(500));
    let (pss, rss) = procfs::memory_kib(root);
    let procs = procfs::tree(root).len();
    for c in conns {
        c.quit().map_err(|e| format!("closing sessions: {e}"))?;
    }
    println!(
        "sessions={count} open_s={opened:.2} pss_kib={pss} rss_kib={rss} base_pss_kib={base_pss} base_rss_kib={base_rss} procs={procs}"
    );
    Ok(())
}

/// Logs in, marks the last message (or all) deleted, QUITs, and reports how long QUIT took
/// and what the server tree wrote meanwhile (its exited session process included).
fn quit(addr: SocketAddr, a: &Args) -> Result<(), String> {
    let root: u32 = a.num("root")?;
    let all = match a.str("dele")? {
        "all" => true,
        "last" => false,
        other => return Err(format!("--dele {other}: want last or all")),
    };
    let e = |e: io::Error| e.to_string();
    let before_pids = procfs::tree(root);
    let (w0, b0) = (
        procfs::io_field(root, "wchar:"),
        procfs::io_field(root, "write_bytes:"),
    );
    let (mut c, login_ms) = timed_login(addr, a.str("user")?, arg_or(a, "pass", "x")).map_err(e)?;
    let stat = c.cmd("STAT").map_err(e)?;
    let n: usize = stat
        .split(' ')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("bad STAT")?;
    let first = if all { 1 } else { n };
    // Pipelined (RFC 2449 PIPELINING): one write, then the replies.
    let batch: String = (first..=n).map(|i| format!("DELE {i}\r\n")).collect();
    c.send(batch.trim_end()).map_err(e)?;
    for _ in first..=n {
        c.status().map_err(e)?;
    }
    let session = new_pids(root, &before_pids);
    let t0 = Instant::now();
    c.quit().map_err(e)?;
    let quit_ms = t0.elapsed().as_secs_f64() * 1000.0;
    settle(root, &session);
    let (w1, b1) = (
        procfs::io_field(root, "wchar:"),
        procfs::io_field(root, "write_bytes:"),
    );
    println!(
        "deleted={} login_ms={login_ms:.1} quit_ms={quit_ms:.1} wchar={} write_bytes={}",
        n + 1 - first,
        w1.saturating_sub(w0),
        b1.saturating_sub(b0)
    );
    Ok(())
}

/// Runs poplar's own RETR rendering (LF to CRLF, dot-stuffing) over a file already in memory,
/// through a session-sized write buffer into a sink: the server's CPU cost per octet with no
/// file or socket in the way.
fn render(path: &Path) -> Result<(), String> {
    use poplar::protocol::message::{MessageWriter, Portion};
    use std::io::Write as _;
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let mut out =
            io::BufWriter::with_capacity(poplar::limits::SESSION_WRITE_BUFFER, io::sink());
        let t0 = Instant::now();
        let mut w = MessageWriter::new(&mut out, Portion::Whole);
        for chunk in data.chunks(poplar::limits::RETR_CHUNK) {
            w.write(chunk).map_err(|e| e.to_string())?;
        }
        w.finish().map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "octets={} render_mb_per_s={:.1}",
        data.len(),
        data.len() as f64 / times[1] / 1e6
    );
    Ok(())
}
