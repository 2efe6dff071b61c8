//! `make run` itself, with the binary under test and ephemeral ports: the three addresses
//! its banner names answer (POP3 greeting, SMTP 220, HTTP /livez), nothing names an address
//! before poplar listens on it, and a taken address stops it with the reason, not a banner.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::common::{Client, poplar_bin};
use crate::devserver::Banner;

/// `make run` with the binary under test, the demo copied into `demo`, and these addresses;
/// in a process group of its own, so that make and the poplar it starts stop together.
fn make_run(demo: &Path, pop3: &str, smtp: &str, http: &str) -> Command {
    let mut make = Command::new("make");
    make.arg("run")
        .arg(format!("RUN_BIN={}", poplar_bin()))
        .arg(format!("DEMO={}", demo.display()))
        .args([
            format!("POP3={pop3}"),
            format!("SMTP={smtp}"),
            format!("HTTP={http}"),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // As a developer types it, not as a sub-make of `make test`.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .process_group(0);
    make
}

/// Stops make and its poplar (SIGTERM to the group) however the test ends.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = killpg(group, Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn line(reader: &mut impl BufRead) -> String {
    let mut l = String::new();
    reader.read_line(&mut l).unwrap();
    l
}

#[test]
fn make_run_names_three_addresses_that_answer_and_none_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = make_run(dir.path(), "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("make runs");
    let out = BufReader::new(child.stdout.take().unwrap());
    let _group = Group(child);
    let banner = Banner::read(out);
    for l in &banner.before {
        assert!(!l.contains("127.0.0.1"), "named before listening: {l}");
    }
    for a in [banner.pop3, banner.smtp, banner.http] {
        assert!(a.ip().is_loopback() && a.port() != 0, "{a}");
    }

    // POP3: the greeting, and the demo mail make run copied.
    let mut pop = Client::connect(banner.pop3);
    assert!(pop.line().starts_with("+OK"));
    pop.login("alice", "anything");
    assert!(pop.cmd("STAT").starts_with("+OK 3 "));
    assert!(pop.cmd("QUIT").starts_with("+OK"));

    // SMTP: the 220 greeting.
    let smtp = TcpStream::connect(banner.smtp).unwrap();
    smtp.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let greeting = line(&mut BufReader::new(smtp));
    assert!(greeting.starts_with("220 "), "{greeting}");

    // HTTP: /livez.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", " %{http_code}"])
        .arg(format!("http://{}/livez", banner.http))
        .output()
        .expect("curl runs (make deps installs it)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"status\":\"ok\"} 200"
    );
}

/// Waits for `child` to exit, at most a generous while (a guard against a hang only).
fn exit_of(mut child: Child) -> (Option<i32>, String, String) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > give_up {
            drop(Group(child));
            panic!("make run did not exit with an address taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code(), out, err)
}

#[test]
fn a_taken_address_stops_make_run_with_the_reason_and_no_banner() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy: SocketAddr = taken.local_addr().unwrap();
    let busy = busy.to_string();
    let free = "127.0.0.1:0";
    for (which, pop3, smtp, http, says) in [
        (
            "POP3",
            busy.as_str(),
            free,
            free,
            "cannot start the dev server",
        ),
        ("SMTP", free, busy.as_str(), free, "cannot take SMTP on"),
        ("HTTP", free, free, busy.as_str(), "cannot serve HTTP on"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let child = make_run(dir.path(), pop3, smtp, http)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("make runs");
        let (code, out, err) = exit_of(child);
        assert_ne!(
            code,
            Some(0),
            "{which} taken: make run succeeded\n{out}{err}"
        );
        assert!(
            // glibc says "Address already in use", musl (the static binary) "Address in use".
            err.contains(&format!("poplar: {says}")) && err.contains("in use (os error 98)"),
            "{which} taken: {err}"
        );
        for marker in ["listening on", "SMTP on", "HTTP on", "poplar --dev:"] {
            assert!(!out.contains(marker), "{which} taken, yet: {out}");
        }
    }
}

/// The default addresses the README's first lines and docs/dev.md give are the Makefile's.
#[test]
fn the_readme_and_dev_md_name_make_runs_default_addresses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    let makefile = read("Makefile");
    let default = |var: &str| -> String {
        let prefix = format!("{var} ?= ");
        let line = makefile
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("the Makefile sets no default {var}"));
        line[prefix.len()..].trim().to_owned()
    };
    let (pop3, smtp, http) = (default("POP3"), default("SMTP"), default("HTTP"));
    let readme = read("README.md");
    let first = readme
        .lines()
        .find(|l| l.trim_start().starts_with("make run "))
        .expect("the README's make run line");
    let port = |a: &str| format!(":{}", a.rsplit(':').next().unwrap());
    assert!(first.contains(&format!("POP3 on {pop3}")), "{first}");
    assert!(
        first.contains(&format!("SMTP on {}", port(&smtp))),
        "{first}"
    );
    assert!(first.contains(&format!("on {}", port(&http))), "{first}");
    // Lines joined: where a sentence wraps is no matter.
    let dev = read("docs/dev.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for (what, addr) in [
        ("POP3", &pop3),
        ("SMTP", &smtp),
        ("the page and API", &http),
    ] {
        assert!(
            dev.contains(&format!("{what} on {addr}")),
            "docs/dev.md does not say {what} on {addr}"
        );
    }
}
