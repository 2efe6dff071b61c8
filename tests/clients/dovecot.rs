//! poplar and Dovecot's own POP3 server on the same Dovecot-written mbox, compared byte for
//! byte: STAT, LIST, UIDL, RETR and TOP; the view after DELE + QUIT on each; and Dovecot
//! reading the file poplar committed, whose IMAP UIDs must be intact. Dovecot runs from a
//! throwaway configuration in a temporary directory, on 127.0.0.1 and a free high port, with a
//! passwd-file; its mail is owned by `nobody`, as Dovecot will not touch mail as root.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::TestServer;

const SAVED: &[u8] = include_bytes!("../data/dovecot/saved.mbox");
const PSEUDO: &[u8] = include_bytes!("../data/dovecot/pseudo.mbox");
const NOBODY: u32 = 65534;

/// A Dovecot master serving POP3 on one mbox until dropped.
struct Dovecot {
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Dovecot {
    /// Why Dovecot cannot run here, if it cannot.
    fn unavailable() -> Option<String> {
        if !Path::new("/usr/sbin/dovecot").exists() || !Path::new("/usr/lib/dovecot/pop3").exists()
        {
            return Some("dovecot-core and dovecot-pop3d are not installed (make deps)".into());
        }
        if !nix_is_root() {
            return Some("Dovecot's master needs root to start its login processes".into());
        }
        None
    }

    /// Starts Dovecot on a copy of `mbox`.
    fn start(mbox: &[u8]) -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mail = d.join("mail");
        std::fs::create_dir(&mail).unwrap();
        std::fs::write(mail.join("inbox"), mbox).unwrap();
        chown_nobody(&[d, &mail, &mail.join("inbox")]);
        std::fs::write(
            d.join("passwd"),
            format!("alice:{{PLAIN}}pw:{NOBODY}:{NOBODY}::{}\n", mail.display()),
        )
        .unwrap();
        let port = free_port();
        let conf = format!(
            "base_dir = {d}/run\nstate_dir = {d}/run\nlog_path = {d}/log\nssl = no\n\
             protocols = pop3\nlisten = 127.0.0.1\ndisable_plaintext_auth = no\n\
             mail_location = mbox:{d}/mail:INBOX={d}/mail/inbox:INDEX=MEMORY\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n}}\n",
            d = d.display()
        );
        std::fs::write(d.join("dovecot.conf"), conf).unwrap();
        let status = std::process::Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .status()
            .unwrap();
        assert!(status.success(), "dovecot did not start");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot does not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Dovecot { dir, addr }
    }

    fn mbox(&self) -> PathBuf {
        self.dir.path().join("mail/inbox")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("run/master.pid"));
        if let Ok(pid) = pid {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            // The master removes its pid file when it has stopped.
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.dir.path().join("run/master.pid").exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

fn chown_nobody(paths: &[&Path]) {
    for p in paths {
        let ok = std::process::Command::new("chown")
            .arg(format!("{NOBODY}:{NOBODY}"))
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {}", p.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One logged-in POP3 session, read raw.
struct Session {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Session {
    fn login(addr: SocketAddr) -> Session {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Session {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        assert!(c.line().starts_with(b"+OK"));
        assert!(c.cmd("USER alice").starts_with(b"+OK"));
        let pass = c.cmd("PASS pw");
        assert!(
            pass.starts_with(b"+OK"),
            "{}",
            String::from_utf8_lossy(&pass)
        );
        c
    }

    fn line(&mut self) -> Vec<u8> {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).unwrap();
        l
    }

    fn cmd(&mut self, c: &str) -> Vec<u8> {
        self.w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        self.line()
    }

    /// A multi-line reply's body as sent: dot-stuffed, CRLF, up to the terminator.
    fn multi(&mut self, c: &str) -> Vec<u8> {
        let first = self.cmd(c);
        assert!(
            first.starts_with(b"+OK"),
            "{c}: {}",
            String::from_utf8_lossy(&first)
        );
        let mut body = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "{c}: connection closed");
            if l == b".\r\n" {
                return body;
            }
            body.extend_from_slice(&l);
        }
    }

    /// What a client sees of the maildrop: STAT, LIST, UIDL, then RETR and TOP of each.
    fn view(&mut self) -> Vec<(String, Vec<u8>)> {
        let stat = self.cmd("STAT");
        let count: usize = String::from_utf8_lossy(&stat)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut v = vec![("STAT".to_owned(), stat)];
        for c in ["LIST", "UIDL"] {
            v.push((c.to_owned(), self.multi(c)));
        }
        for n in 1..=count {
            for c in [
                format!("RETR {n}"),
                format!("TOP {n} 0"),
                format!("TOP {n} 2"),
            ] {
                let body = self.multi(&c);
                v.push((c, body));
            }
        }
        v
    }

    fn quit(mut self) {
        assert!(self.cmd("QUIT").starts_with(b"+OK"));
    }
}

/// Runs the comparison on one fixture: both views, DELE `dele` + QUIT on both, both views
/// again, and Dovecot's view of the file poplar left.
fn compare(mbox: &[u8], dele: usize) {
    if let Some(why) = Dovecot::unavailable() {
        println!("skipped: {why}");
        return;
    }
    let dovecot = Dovecot::start(mbox);
    let poplar = TestServer::start("alice:{PLAIN}pw\n", &[("alice", mbox)]);
    let mut views = Vec::new();
    for addr in [dovecot.addr, poplar.addr] {
        let mut s = Session::login(addr);
        let before = s.view();
        assert!(s.cmd(&format!("DELE {dele}")).starts_with(b"+OK"));
        s.quit();
        let mut s = Session::login(addr);
        let after = s.view();
        s.quit();
        views.push((before, after));
    }
    let show = |v: &[(String, Vec<u8>)]| {
        v.iter()
            .map(|(c, b)| format!("{c}:\n{}", String::from_utf8_lossy(b)))
            .collect::<String>()
    };
    assert_eq!(show(&views[1].0), show(&views[0].0), "poplar vs Dovecot");
    assert_eq!(show(&views[1].1), show(&views[0].1), "after DELE {dele}");
    // Dovecot on the file poplar committed: the same UIDs, so IMAP clients resync nothing.
    let reread = Dovecot::start(&std::fs::read(poplar.mbox("alice")).unwrap());
    let mut s = Session::login(reread.addr);
    assert_eq!(
        show(&s.view()),
        show(&views[0].1),
        "Dovecot on poplar's file"
    );
    s.quit();
    assert!(dovecot.mbox().exists());
}

#[test]
fn poplar_serves_a_dovecot_mbox_as_dovecot_does_and_keeps_its_uids_on_delete() {
    compare(SAVED, 1);
}

#[test]
fn poplar_serves_the_pseudo_message_mbox_as_dovecot_does() {
    compare(PSEUDO, 1);
}

#[test]
fn deleting_a_later_message_leaves_dovecot_the_same_view() {
    compare(SAVED, 2);
}

#[test]
fn a_message_poplar_delivers_into_a_dovecot_mbox_is_read_by_dovecot_as_by_poplar() {
    if let Some(why) = Dovecot::unavailable() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    std::fs::write(dir.path().join("mail/alice"), SAVED).unwrap();
    let message = b"From: bob@example.org\nSubject: delivered by poplar\n\n\
        From the start of a paragraph, a line that looks like a From_ line.\n\nbye\n";
    let (code, err) =
        crate::delivery::deliver(dir.path(), "alice", &["-f", "bob@example.org"], message);
    assert_eq!(code, 0, "{err}");
    let delivered = std::fs::read(dir.path().join("mail/alice")).unwrap();
    let dovecot = Dovecot::start(&delivered);
    let poplar = TestServer::start("alice:{PLAIN}pw\n", &[("alice", &delivered)]);
    let mut views: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for addr in [dovecot.addr, poplar.addr] {
        let mut s = Session::login(addr);
        views.push(s.view());
        s.quit();
    }
    let show = |v: &[(String, Vec<u8>)]| {
        v.iter()
            .map(|(c, b)| format!("{c}:\n{}", String::from_utf8_lossy(b)))
            .collect::<String>()
    };
    // The new message has no X-UID yet: each server numbers it its own way (Dovecot writes
    // one into the file when it next syncs it); every other line must be the same.
    let uidls: Vec<Vec<String>> = views
        .iter_mut()
        .map(|v| {
            let at = v.iter().position(|(c, _)| c == "UIDL").unwrap();
            let lines = String::from_utf8_lossy(&v.remove(at).1).into_owned();
            lines.lines().take(3).map(str::to_owned).collect()
        })
        .collect();
    assert_eq!(uidls[1], uidls[0], "the old messages' UIDLs");
    assert_eq!(show(&views[1]), show(&views[0]), "poplar vs Dovecot");
    let stat = String::from_utf8_lossy(&views[0][0].1).into_owned();
    assert!(
        stat.starts_with("+OK 4 "),
        "Dovecot sees the old three and the new one: {stat}"
    );
    let last = &views[0]
        .iter()
        .rev()
        .find(|(c, _)| c == "RETR 4")
        .unwrap()
        .1;
    assert!(
        String::from_utf8_lossy(last).contains("Subject: delivered by poplar"),
        "{}",
        String::from_utf8_lossy(last)
    );
}
