//! The mailbox store under load, crashes, hostile files and big mailboxes, and the tools that
//! look after mailboxes (`poplar check`, `seed`, `deliver`): one test binary. Besides the
//! shared in-process harness (`common`) and `poplar deliver` (`delivery`), these tests run
//! poplar as its own process (`ServerProcess`), for crash points, two servers on one mailbox,
//! and memory measured from /proc; those helpers live here.
//!
//! `storage_index` (the sidecar index, measured by this process's I/O counters) is a test
//! binary of its own: other tests in the same process would move those counters.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/delivery.rs"]
mod delivery;

mod dev_tools;
mod storage_big;
mod storage_commit;
mod storage_concurrency;
mod storage_crash;
mod storage_deliver;
mod storage_dialects;
mod storage_garbled;
mod storage_hostile;
mod storage_interrupted;
mod storage_poll;
mod storage_torture;
mod storage_uid;
mod tricky_mbox;
mod undelete;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;

use common::Client;

/// The binary for a run with these environment variables: cargo's debug build when they set
/// `POPLAR_FAULT`, because only debug builds have fault points; else `common::poplar_bin()`.
pub fn poplar_bin_with(env: &[(&str, &str)]) -> &'static str {
    if env.iter().any(|(name, _)| *name == "POPLAR_FAULT") {
        env!("CARGO_BIN_EXE_poplar")
    } else {
        common::poplar_bin()
    }
}

/// A poplar server running as its own process over `dir/users` and `dir/mail/%n`: for
/// crash points, two servers on one mailbox, and memory measured from /proc.
pub struct ServerProcess {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `poplar` with `extra` arguments and `env`, waiting until it listens.
    pub fn spawn(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        Self::spawn_under(&[], dir, extra, env)
    }

    /// [`ServerProcess::spawn`] under a `wrapper` command (`strace -o FILE`) that runs poplar
    /// as its child; `child` is then the wrapper's process.
    pub fn spawn_under(
        wrapper: &[&str],
        dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        use std::process::{Command, Stdio};
        let bin = poplar_bin_with(env);
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--users")
            .arg(dir.join("users"))
            .arg("--mail")
            .arg(format!("{}/mail/%n", dir.display()))
            .arg("--auth-delay")
            .arg("0.05")
            .arg("--shutdown-grace")
            .arg("0.2")
            .args(extra)
            .env("POPLAR_LOG", "info")
            .env_remove("POPLAR_FAULT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let addr = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "poplar exited before listening: {}",
                log.lock().unwrap()
            );
            log.lock().unwrap().push_str(&line);
            if let Some(a) = line.trim_end().split("listening on ").nth(1) {
                break a.parse().unwrap();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        ServerProcess { child, addr, log }
    }

    /// Connects and reads the greeting.
    pub fn connect(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.greeting = c.line();
        assert!(c.greeting.starts_with("+OK "), "{}", c.greeting);
        c
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the process to end by itself (a crash point) and returns whether it was
    /// killed by a signal.
    pub fn wait_for_crash(mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        status.signal().is_some()
    }

    /// The server's peak resident memory (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory laid out for `ServerProcess`: `users` and `mail/<user>` files.
pub fn mail_dir(users: &str, mailboxes: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), users).unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    for (user, mbox) in mailboxes {
        std::fs::write(dir.path().join("mail").join(user), mbox).unwrap();
    }
    dir
}

/// Logs in and returns UIDL's unique-ids in order.
pub fn uidl(c: &mut Client) -> Vec<String> {
    let body = c.multi("UIDL");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

/// A small tmpfs mounted over a directory (for real ENOSPC), unmounted on drop.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` over `dir`; `None` if this process may not mount (not root).
    pub fn mount(dir: &std::path::Path, bytes: usize) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Retrieves every message of `user` with Python's poplib (LIST, RETR each, QUIT); returns
/// each as poplib's lines joined with LF.
pub fn poplib_retrieve(addr: SocketAddr, user: &str, pass: &str) -> Vec<Vec<u8>> {
    let script = format!(
        "import poplib, sys\n\
         p = poplib.POP3('127.0.0.1', {port})\n\
         p.user('{user}'); p.pass_('{pass}')\n\
         n = len(p.list()[1])\n\
         for i in range(1, n + 1):\n\
         \x20   lines = p.retr(i)[1]\n\
         \x20   body = b''.join(l + b'\\n' for l in lines)\n\
         \x20   sys.stdout.buffer.write(b'%d\\n' % len(body) + body)\n\
         p.quit()\n",
        port = addr.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest = &out.stdout[..];
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let len: usize = std::str::from_utf8(&rest[..nl]).unwrap().parse().unwrap();
        messages.push(rest[nl + 1..nl + 1 + len].to_vec());
        rest = &rest[nl + 1 + len..];
    }
    messages
}
