//! Crash torture: real poplar servers killed with SIGKILL at random instants around their
//! commits while `poplar deliver` processes append (some of them killed midway too). After
//! every round a new server (or first a delivery) recovers, and the mailbox must hold every
//! message not deleted by a QUIT that got `+OK`, byte-exact, exactly once, with its UID
//! unchanged; deletions confirmed by `+OK` are gone; every delivery that exited 0 is there;
//! nothing partial is left. `POPLAR_TORTURE_ROUNDS` (default 12) and `POPLAR_TORTURE_SEED`
//! make longer or repeatable runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Client;
use crate::delivery::deliver;
use crate::{ServerProcess, mail_dir};

const USERS: &str = "alice:{PLAIN}pw\n";

/// xorshift64*: enough randomness for timings and choices, repeatable from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Message `id` as delivered: a tag header and a body of `lines` lines, some dot-led.
fn message(id: u64, lines: u64) -> Vec<u8> {
    let mut m = format!("Subject: t{id}\nX-Torture: {id}\n\n").into_bytes();
    for l in 0..lines {
        let dot = if l % 7 == 0 { "." } else { "" };
        m.extend_from_slice(
            format!("{dot}t{id} line {l:05} ..........................\n").as_bytes(),
        );
    }
    m
}

/// What RETR gives back for a message stored as `m`.
fn as_sent(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + m.len() / 16);
    for &b in m {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn tag_of(body: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("X-Torture: "))
        .and_then(|v| v.trim().parse().ok())
}

/// What the test knows of the mailbox.
#[derive(Default)]
struct Model {
    /// Every message ever made: id -> its bytes as sent by RETR.
    sent: BTreeMap<u64, Vec<u8>>,
    /// Must be present exactly once; the UID once seen.
    present: BTreeMap<u64, Option<String>>,
    /// Present once or gone (a QUIT without a reply: true; a killed delivery: false).
    either: BTreeMap<u64, bool>,
    /// Must never show up (deleted with `+OK`, or a delivery that failed).
    gone: BTreeSet<u64>,
    next_id: u64,
    stats: Stats,
}

/// What the rounds did, for the closing line.
#[derive(Default, Debug)]
struct Stats {
    /// QUITs answered `+OK` before the kill.
    confirmed: u64,
    /// QUITs cut short by the kill.
    killed: u64,
    /// Messages whose deletion was cut short and found done after recovery.
    deletions_done: u64,
    /// Messages whose deletion was cut short and found still there.
    deletions_undone: u64,
    /// Killed slow deliveries found complete.
    deliveries_finished: u64,
    /// Killed slow deliveries found rolled back.
    deliveries_undone: u64,
    /// Deliveries that aborted at a fault inside their replay of a journal.
    recoveries_aborted: u64,
    /// Servers killed during a login.
    logins_killed: u64,
}

impl Model {
    fn make(&mut self, rng: &mut Rng) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let m = message(id, 20 + rng.below(1500));
        self.sent.insert(id, as_sent(&m));
        (id, m)
    }

    /// Checks one session's view against the model and settles the ambiguous ids.
    fn check(&mut self, seen: &[(String, Vec<u8>)], round: u64, seed: u64) {
        let ctx = format!("round {round} (POPLAR_TORTURE_SEED={seed})");
        let mut count: BTreeMap<u64, usize> = BTreeMap::new();
        for (uid, body) in seen {
            let Some(id) = tag_of(body) else {
                panic!(
                    "{ctx}: a message that is no delivered message (partial?): {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            };
            assert_eq!(
                self.sent.get(&id),
                Some(body),
                "{ctx}: message {id} not byte-exact"
            );
            *count.entry(id).or_default() += 1;
            assert!(!self.gone.contains(&id), "{ctx}: message {id} came back");
            match self.present.get_mut(&id) {
                Some(Some(old)) => assert_eq!(old, uid, "{ctx}: message {id} changed its UID"),
                Some(slot) => *slot = Some(uid.clone()),
                None => {
                    let Some(deletion) = self.either.remove(&id) else {
                        panic!("{ctx}: message {id} was never delivered");
                    };
                    if deletion {
                        self.stats.deletions_undone += 1;
                    } else {
                        self.stats.deliveries_finished += 1;
                    }
                    self.present.insert(id, Some(uid.clone()));
                }
            }
        }
        for (&id, &n) in &count {
            assert_eq!(n, 1, "{ctx}: message {id} shows {n} times");
        }
        for id in self.present.keys() {
            assert!(count.contains_key(id), "{ctx}: message {id} was lost");
        }
        for (id, deletion) in std::mem::take(&mut self.either) {
            if deletion {
                self.stats.deletions_done += 1;
            } else {
                self.stats.deliveries_undone += 1;
            }
            self.gone.insert(id);
        }
    }
}

/// Logs in and retrieves everything: (UID, body) in order.
fn look(c: &mut Client) -> Vec<(String, Vec<u8>)> {
    let uids = crate::uidl(c);
    (1..=uids.len())
        .map(|i| (uids[i - 1].clone(), c.multi(&format!("RETR {i}"))))
        .collect()
}

/// A delivery fed slowly through a pipe and killed after `kill_after`; whether it exited by
/// itself with 0 first.
fn slow_delivery(dir: std::path::PathBuf, msg: Vec<u8>, kill_after: Duration) -> Option<bool> {
    let mut child = Command::new(crate::common::poplar_bin())
        .arg("deliver")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .args(["-f", "slow@example.com", "--lock-timeout", "30", "alice"])
        .env_remove("POPLAR_FAULT")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for piece in msg.chunks(16 * 1024) {
            if stdin.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    std::thread::sleep(kill_after);
    let _ = child.kill();
    let status = child.wait().unwrap();
    let _ = feeder.join();
    match status.signal() {
        Some(_) => None,
        None => Some(status.success()),
    }
}

fn round(
    dir: &std::path::Path,
    model: &mut Model,
    rng: &mut Rng,
    window: &mut Duration,
    n: u64,
    seed: u64,
) {
    if n % 3 == 1 {
        // Recovery by a delivery before any server runs; half the time that delivery aborts
        // at a step of the replay (a second fault during recovery).
        let (id, m) = model.make(rng);
        let fault = rng
            .chance(50)
            .then(|| REPLAY_STEPS[rng.below(REPLAY_STEPS.len() as u64) as usize]);
        match deliver_with_fault(dir, &m, fault) {
            Ok(()) => {
                model.present.insert(id, None);
            }
            Err(None) => {
                model.stats.recoveries_aborted += 1;
                model.either.insert(id, false);
            }
            Err(Some(err)) => {
                let lock = std::fs::read(dir.join("mail/alice.lock"));
                panic!("round {n}: delivery failed: {err}; dotlock: {lock:?}");
            }
        }
    }
    if rng.chance(25) {
        // A server killed during a login: its recovery, index update and scan.
        let server = ServerProcess::spawn(dir, &["--lock-timeout", "30"], &[]);
        let mut c = server.connect();
        assert!(c.cmd("USER alice").starts_with("+OK"));
        let delay = Duration::from_micros(rng.below(20_000));
        c.send_raw(b"PASS pw\r\n");
        std::thread::sleep(delay);
        let _ = nix_kill(server.child.id());
        drop(server);
        model.stats.logins_killed += 1;
    }
    let server = ServerProcess::spawn(dir, &["--lock-timeout", "30"], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    for sidecar in [".poplar-journal", ".poplar-append"] {
        let p = dir.join(format!("mail/alice{sidecar}"));
        assert!(!p.exists(), "round {n}: {} left after login", p.display());
    }
    let seen = look(&mut c);
    model.check(&seen, n, seed);

    // Deliveries racing the session and its commit; one of them slow and killed.
    let mut racers = Vec::new();
    for _ in 0..2 {
        let (id, m) = model.make(rng);
        let d = dir.to_owned();
        racers.push((
            id,
            std::thread::spawn(move || deliver(&d, "alice", &["--lock-timeout", "30"], &m).0 == 0),
        ));
    }
    let (slow_id, slow_msg) = model.make(rng);
    let d = dir.to_owned();
    let kill_after = Duration::from_millis(rng.below(120));
    let slow = std::thread::spawn(move || slow_delivery(d, slow_msg, kill_after));

    let keep_percent = if seen.len() > 30 { 65 } else { 85 };
    let mut marked = Vec::new();
    for (i, (_, body)) in seen.iter().enumerate() {
        if !rng.chance(keep_percent) {
            assert!(c.cmd(&format!("DELE {}", i + 1)).starts_with("+OK"));
            marked.push(tag_of(body).unwrap());
        }
    }
    // SIGKILL at a random instant around the commit.
    let delay = Duration::from_micros(rng.below(window.as_micros() as u64 + 1));
    let pid = server.child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = nix_kill(pid);
    });
    let sent_at = Instant::now();
    c.send_raw(b"QUIT\r\n");
    let reply = c.rest();
    let took = sent_at.elapsed();
    killer.join().unwrap();
    drop(server);
    if reply.starts_with(b"+OK") {
        for id in &marked {
            model.present.remove(id);
            model.gone.insert(*id);
        }
        if !marked.is_empty() {
            // Aim the next kills at about twice this commit's length.
            *window = (took * 2).max(Duration::from_millis(2));
        }
        model.stats.confirmed += 1;
    } else {
        for id in &marked {
            model.present.remove(id);
            model.either.insert(*id, true);
        }
        model.stats.killed += 1;
        // Killed before the reply: widen the window so that some commits also finish.
        *window = (*window * 3 / 2).min(Duration::from_secs(2));
    }
    for (id, racer) in racers {
        if racer.join().unwrap() {
            model.present.insert(id, None);
        } else {
            model.gone.insert(id);
        }
    }
    match slow.join().unwrap() {
        Some(true) => {
            model.present.insert(slow_id, None);
        }
        Some(false) => {
            model.gone.insert(slow_id);
        }
        None => {
            model.either.insert(slow_id, false);
        }
    }
}

/// The replay's crash points (`src/mailbox/journal.rs`).
const REPLAY_STEPS: &[&str] = &[
    "apply-partial",
    "applied",
    "truncated",
    "state-marked",
    "journal-removed",
];

/// Runs `poplar deliver` with `POPLAR_FAULT` set to `fault`: `Ok` if it delivered, `Err(None)`
/// if it aborted at the fault, `Err(Some(why))` if it failed otherwise.
fn deliver_with_fault(
    dir: &std::path::Path,
    msg: &[u8],
    fault: Option<&str>,
) -> Result<(), Option<String>> {
    let env: &[(&str, &str)] = match fault {
        Some(f) => &[("POPLAR_FAULT", f)],
        None => &[],
    };
    let mut cmd = Command::new(crate::poplar_bin_with(env));
    cmd.arg("deliver")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .args(["--lock-timeout", "30", "alice"])
        .env_remove("POPLAR_FAULT")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(msg);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    match (out.status.success(), out.status.signal()) {
        (true, _) => Ok(()),
        (false, Some(_)) if fault.is_some() => Err(None),
        _ => Err(Some(String::from_utf8_lossy(&out.stderr).into_owned())),
    }
}

/// SIGKILL by pid (the server's `Child` stays with its owner for the wait).
fn nix_kill(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
}

#[test]
fn random_kills_during_commits_and_deliveries_lose_nothing() {
    let seed = env_or(
        "POPLAR_TORTURE_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    let rounds = env_or("POPLAR_TORTURE_ROUNDS", 12);
    eprintln!("torture: {rounds} rounds, POPLAR_TORTURE_SEED={seed}");
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let mut initial = Vec::new();
    for _ in 0..30 {
        let (id, m) = model.make(&mut rng);
        initial.extend_from_slice(b"From sender@example.com Thu Nov 26 09:00:00 2026\n");
        initial.extend_from_slice(&m);
        initial.push(b'\n');
        model.present.insert(id, None);
    }
    let dir = mail_dir(USERS, &[("alice", &initial)]);
    let mut window = Duration::from_millis(30);
    let started = Instant::now();
    for n in 0..rounds {
        round(dir.path(), &mut model, &mut rng, &mut window, n, seed);
    }
    // A last look by a server that is not killed.
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    c.login("alice", "pw");
    let seen = look(&mut c);
    model.check(&seen, rounds, seed);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    eprintln!(
        "torture: {rounds} rounds in {:.1} s; {} messages kept, {} deleted or never delivered, \
         kill window {:?}; {:?}",
        started.elapsed().as_secs_f64(),
        model.present.len(),
        model.gone.len(),
        window,
        model.stats
    );
}
