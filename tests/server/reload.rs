//! SIGHUP on the real binary: a good users file replaces the table at once; a file with
//! errors, or none, keeps the old table and says why in the log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::common::{Client, mbox};

struct Poplar {
    child: Child,
    log: Receiver<String>,
}

impl Poplar {
    /// Waits for a log line containing `text` and returns it.
    fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Poplar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn try_login(addr: std::net::SocketAddr, user: &str, pass: &str) -> String {
    let mut c = Client::connect(addr);
    c.line();
    c.cmd(&format!("USER {user}"));
    let r = c.cmd(&format!("PASS {pass}"));
    c.cmd("QUIT");
    r
}

#[test]
fn sighup_reloads_the_file_as_start_up_reads_it_and_an_unreadable_one_keeps_the_old_table() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:{PLAIN}old\n").unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    let m: &[u8] = b"Subject: x\n\nbody\n";
    for u in ["alice", "bob"] {
        std::fs::write(dir.path().join("mail").join(u), mbox(&[m])).unwrap();
    }
    let mut child = Command::new(crate::common::poplar_bin())
        .args(["--listen", "127.0.0.1:0", "--auth-delay", "0.01", "--users"])
        .arg(&users)
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.path().display()))
        .env("POPLAR_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, log) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let p = Poplar { child, log };
    let line = p.wait_log("listening on ");
    let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(try_login(addr, "alice", "old").starts_with("+OK"));

    std::fs::write(&users, "alice:{PLAIN}new\nbob:{PLAIN}bob\n").unwrap();
    p.signal("-HUP");
    p.wait_log("(2 users)");
    assert!(try_login(addr, "alice", "new").starts_with("+OK"));
    assert!(try_login(addr, "bob", "bob").starts_with("+OK"));
    assert!(try_login(addr, "alice", "old").starts_with("-ERR [AUTH]"));

    // Line 2 is broken and line 3 names alice again: as at start-up, both are skipped and
    // the rest is in force, the first of alice's lines winning.
    std::fs::write(
        &users,
        "alice:{PLAIN}third\ncarol\nalice:{PLAIN}fourth\nbob:{PLAIN}bob\n",
    )
    .unwrap();
    p.signal("-HUP");
    let line = p.wait_log("line 2");
    assert!(
        line.contains("no ':'") && line.contains("this line is skipped"),
        "{line}"
    );
    let line = p.wait_log("line 3");
    assert!(
        line.contains("user alice is already on line 1, which is the one used"),
        "{line}"
    );
    assert!(!line.contains("cannot log in"), "{line}");
    p.wait_log("(2 users, 2 lines skipped)");
    assert!(try_login(addr, "alice", "third").starts_with("+OK"));
    assert!(try_login(addr, "alice", "fourth").starts_with("-ERR [AUTH]"));
    assert!(try_login(addr, "bob", "bob").starts_with("+OK"));

    std::fs::remove_file(&users).unwrap();
    p.signal("-HUP");
    p.wait_log("cannot reload");
    assert!(try_login(addr, "alice", "third").starts_with("+OK"));

    p.signal("-TERM");
    p.wait_log("shut down");
}
