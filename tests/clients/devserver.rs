//! A `poplar --dev` process with its SMTP intake and HTTP API on ephemeral ports, for the
//! tests of those (the addresses come from its banner), and the banner's reader.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::poplar_bin;

/// A `poplar --dev DIR --dev-smtp --dev-http` process and the addresses its banner gave.
pub struct Dev {
    child: Child,
    /// POP3.
    pub pop3: SocketAddr,
    /// The SMTP intake.
    pub smtp: SocketAddr,
    /// The HTTP API and page.
    #[allow(dead_code)]
    pub http: SocketAddr,
    /// POP3S, when `extra` asked for `--listen-tls`.
    pub pop3s: Option<SocketAddr>,
}

impl Dev {
    /// Starts it on `dir` with `extra` flags; returns once the banner named all three.
    pub fn start(dir: &Path, extra: &[&str]) -> Dev {
        let mut child = Command::new(poplar_bin())
            .arg("--dev")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--dev-smtp", "127.0.0.1:0"])
            .args([
                "--dev-http",
                "127.0.0.1:0",
                "--auth-delay",
                "0",
                "--mbox-unquote",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let banner = Banner::read(BufReader::new(child.stdout.take().unwrap()));
        Dev {
            child,
            pop3: banner.pop3,
            smtp: banner.smtp,
            http: banner.http,
            pop3s: banner.pop3s,
        }
    }
}

/// The addresses a `--dev` banner names, and the lines of output before the banner's first.
pub struct Banner {
    /// POP3 (`listening on ADDR`).
    pub pop3: SocketAddr,
    /// SMTP (`SMTP on ADDR: ...`).
    pub smtp: SocketAddr,
    /// HTTP (`HTTP on ADDR: ...`).
    pub http: SocketAddr,
    /// POP3S (`POP3S (TLS from the first byte) on ADDR`), which the banner names before SMTP.
    pub pop3s: Option<SocketAddr>,
    /// What came before `poplar --dev: ...`.
    pub before: Vec<String>,
}

impl Banner {
    /// Reads output until the banner has named all three addresses.
    pub fn read(out: impl BufRead) -> Banner {
        let mut lines = out.lines();
        let (mut pop3, mut smtp, mut http, mut pop3s) = (None, None, None, None);
        let (mut before, mut started) = (Vec::new(), false);
        while pop3.is_none() || smtp.is_none() || http.is_none() {
            let line = lines
                .next()
                .expect("the banner names every address")
                .unwrap();
            started |= line.starts_with("poplar --dev: ");
            if !started {
                before.push(line.clone());
            }
            let addr = |marker: &str| -> Option<SocketAddr> {
                let rest = line.split(marker).nth(1)?;
                Some(rest.split(": ").next()?.trim().parse().unwrap())
            };
            pop3 = pop3.or_else(|| addr("listening on "));
            smtp = smtp.or_else(|| addr("SMTP on "));
            http = http.or_else(|| addr("HTTP on "));
            pop3s = pop3s.or_else(|| addr("POP3S (TLS from the first byte) on "));
        }
        Banner {
            pop3: pop3.unwrap(),
            smtp: smtp.unwrap(),
            http: http.unwrap(),
            pop3s,
            before,
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
