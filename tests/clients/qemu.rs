//! The static binaries `make dist` ships, run where they will run: each one the variable
//! `POPLAR_CROSS_BINS` names (`TARGET=PATH`, separated by spaces) starts under qemu-user (or
//! natively for this machine's architecture), says its target in `--version`, serves a POP3
//! session to Python's poplib, delivers with `poplar deliver`, reads the mailbox back with
//! `poplar check`, and exits 0 on SIGTERM. Without the variable the test says so and passes:
//! `make dist` sets it, a plain `cargo test` has no cross-built binaries to run.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::mbox;

/// How long a step under emulation may take before the test gives up: qemu-user is slow, and
/// this is never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);

const MESSAGES: [&[u8]; 3] = [
    b"Subject: one\n\nfirst body\n",
    b"Subject: two\n\n.leading dot\n>From quoted\n",
    b"Subject: three\r\n\r\ncrlf body\r\n",
];

/// How to run a binary built for `target` on this machine: the qemu-user emulator for its
/// architecture, or nothing when it is this machine's own.
fn runner(target: &str) -> Vec<String> {
    let arch = target.split('-').next().unwrap_or("");
    if arch == std::env::consts::ARCH {
        return Vec::new();
    }
    let qemu = match arch {
        "aarch64" => "aarch64",
        a if a.starts_with("arm") => "arm",
        other => panic!("no qemu-user emulator known for {other} ({target})"),
    };
    let found = [format!("qemu-{qemu}-static"), format!("qemu-{qemu}")]
        .into_iter()
        .find(|q| Command::new(q).arg("--version").output().is_ok());
    vec![found.unwrap_or_else(|| panic!("qemu-{qemu} is not installed (Debian qemu-user-static)"))]
}

/// One cross-built poplar and how to start it.
struct Cross {
    target: String,
    runner: Vec<String>,
    bin: String,
}

impl Cross {
    fn command(&self) -> Command {
        let mut cmd = match self.runner.first() {
            Some(qemu) => Command::new(qemu),
            None => Command::new(&self.bin),
        };
        if !self.runner.is_empty() {
            cmd.arg(&self.bin);
        }
        cmd.env_remove("POPLAR_FAULT");
        cmd
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().unwrap()
    }
}

/// A poplar server under test; killed on drop if a step failed before SIGTERM.
struct Serving {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Serving {
    /// Starts the server and returns it with the address its log says it listens on.
    fn start(cross: &Cross, dir: &Path) -> (Serving, String) {
        let mut child = cross
            .command()
            .args(["--listen", "127.0.0.1:0", "--auth-delay", "0"])
            .arg("--users")
            .arg(dir.join("users"))
            .arg("--mail")
            .arg(format!("{}/mail/%n", dir.display()))
            .env("POPLAR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut serving = Serving { child, log };
        let line = serving.wait_for("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        (serving, addr)
    }

    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// poplib's session: STAT, LIST, UIDL, RETR of each message, DELE 1, QUIT. Prints `stat N`,
/// then each message as `N SIZE UID LENGTH` and its bytes (poplib's lines joined with LF).
const POPLIB: &str = "
import poplib, sys
host, port = sys.argv[1].rsplit(':', 1)
p = poplib.POP3(host, int(port), timeout=120)
p.user('alice'); p.pass_('pw')
count, _ = p.stat()
sizes = dict(map(int, l.split()) for l in p.list()[1])
uids = dict(l.decode().split(' ', 1) for l in p.uidl()[1])
out = sys.stdout.buffer
out.write(b'stat %d\\n' % count)
for n in range(1, count + 1):
    body = b''.join(l + b'\\n' for l in p.retr(n)[1])
    out.write(b'%d %d %s %d\\n' % (n, sizes[n], uids[str(n)].encode(), len(body)) + body)
p.dele(1)
print(p.quit().decode())
";

/// A message as poplib hands it back: CRLF and LF both become LF, every line ends with one.
fn as_retrieved(m: &[u8]) -> Vec<u8> {
    let mut m = String::from_utf8(m.to_vec()).unwrap().replace("\r\n", "\n");
    if !m.ends_with('\n') {
        m.push('\n');
    }
    m.into_bytes()
}

/// The next LF-ended line of `rest`, which moves past it.
fn next_line(rest: &mut &[u8]) -> String {
    let nl = rest.iter().position(|&b| b == b'\n').expect("a line");
    let line = String::from_utf8(rest[..nl].to_vec()).unwrap();
    *rest = &rest[nl + 1..];
    line
}

/// Serves, delivers, checks and stops one cross-built binary; panics at the first surprise.
fn exercise(cross: &Cross) {
    let t = &cross.target;
    let out = cross.run(&["--version"], b"");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{t}: --version: {out:?}");
    assert!(
        version.contains(&format!("({t}, commit ")),
        "{t}: {version}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}pw\n").unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    let path = dir.path().join("mail/alice");
    std::fs::write(&path, mbox(&MESSAGES)).unwrap();

    let (mut server, addr) = Serving::start(cross, dir.path());
    let script = Command::new("python3")
        .args(["-c", POPLIB, &addr])
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "{t}: poplib: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    let mut rest = &script.stdout[..];
    assert_eq!(next_line(&mut rest), "stat 3", "{t}");
    for (n, message) in MESSAGES.iter().enumerate() {
        let head = next_line(&mut rest);
        let fields: Vec<&str> = head.split(' ').collect();
        assert_eq!(fields[0], (n + 1).to_string(), "{t}: {head}");
        assert!(!fields[2].is_empty(), "{t}: no UID in {head}");
        let len: usize = fields[3].parse().unwrap();
        assert_eq!(&rest[..len], as_retrieved(message), "{t}: RETR {}", n + 1);
        rest = &rest[len..];
    }
    assert!(next_line(&mut rest).starts_with("+OK"), "{t}: QUIT");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        mbox(&MESSAGES[1..]),
        "{t}: the mailbox after DELE 1 and QUIT"
    );

    let mail = format!("{}/mail/%n", dir.path().display());
    let delivered = cross.run(
        &["deliver", "--mail", &mail, "alice"],
        b"Subject: four\n\ndelivered\n",
    );
    assert_eq!(
        delivered.status.code(),
        Some(0),
        "{t}: deliver: {delivered:?}"
    );
    let after = std::fs::read(&path).unwrap();
    assert!(
        after.starts_with(&mbox(&MESSAGES[1..])),
        "{t}: deliver kept the rest"
    );
    assert!(
        after.ends_with(b"\n\ndelivered\n\n"),
        "{t}: deliver appended"
    );

    let check = cross.run(&["check", "--mail", &mail, "alice"], b"");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{t}: check: {check:?}");
    assert!(report.contains("messages  3 "), "{t}: {report}");

    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    server.wait_for("stopping");
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{t}: after SIGTERM: {status}");
}

#[test]
fn each_cross_built_binary_serves_delivers_checks_and_stops() {
    let Ok(list) = std::env::var("POPLAR_CROSS_BINS") else {
        println!("skipped: POPLAR_CROSS_BINS names no cross-built binary (make dist sets it)");
        return;
    };
    let mut seen = 0;
    for entry in list.split_whitespace() {
        let (target, bin) = entry
            .split_once('=')
            .unwrap_or_else(|| panic!("POPLAR_CROSS_BINS: {entry:?} is not TARGET=PATH"));
        let cross = Cross {
            target: target.to_owned(),
            runner: runner(target),
            bin: bin.to_owned(),
        };
        exercise(&cross);
        seen += 1;
    }
    assert!(seen > 0, "POPLAR_CROSS_BINS is set but names nothing");
}
