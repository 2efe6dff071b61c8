//! `poplar probe`: a health check for containers and monitors that have no POP3 client and no
//! curl. It connects, checks the greeting and CAPA, logs in if asked (then STAT), and QUITs;
//! one line on stdout says what happened, and the exit code is 0 healthy, 1 not.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use getopts::Options;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};

use super::CliError;
use crate::logsafe;
use crate::plural::plural;

/// Where `--ca` looks when it is not given: Debian's and Alpine's bundle of trusted CAs.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The longest reply line read; a server sending more is unhealthy, not a memory sink.
const MAX_LINE: usize = 8192;

/// The most CAPA lines read before the terminator.
const MAX_CAPA_LINES: usize = 256;

/// Exit code: the server is not healthy (usage errors exit 2).
const EXIT_UNHEALTHY: u8 = 1;

/// How TLS is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain text throughout.
    Off,
    /// TLS from the first byte (POP3S, port 995).
    Implicit,
    /// Plain greeting and CAPA, then STLS (RFC 2595), then CAPA again.
    Stls,
}

/// A parsed `poplar probe` command line.
pub struct Probe {
    /// `host:port` as given (the port defaults to 110, or 995 with `--tls`).
    addr: String,
    /// The host part, for certificate verification.
    host: String,
    tls: Tls,
    /// `--ca`: the CAs that may sign the server's certificate; `None` with `--insecure`.
    ca: Option<PathBuf>,
    user: Option<String>,
    /// Never printed or logged.
    password: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("ca", &self.ca)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn options() -> Options {
    let mut o = Options::new();
    o.optflag(
        "",
        "tls",
        "TLS from the first byte (POP3S; the port defaults to 995)",
    );
    o.optflag(
        "",
        "stls",
        "upgrade with STLS after the greeting (RFC 2595)",
    );
    o.optopt(
        "",
        "ca",
        &format!(
            "PEM file of the CAs that may sign the server's certificate (default {SYSTEM_CAS})"
        ),
        "FILE",
    );
    o.optflag(
        "",
        "insecure",
        "accept any certificate (a self-signed development one)",
    );
    o.optopt("u", "user", "log in as USER, then STAT", "USER");
    o.optopt(
        "",
        "password-file",
        "read the password from the first line of FILE (else $POPLAR_PROBE_PASSWORD)",
        "FILE",
    );
    o.optopt(
        "",
        "password",
        "the password (visible to other local users in ps: prefer the file or variable)",
        "PASSWORD",
    );
    o.optopt(
        "",
        "timeout",
        "give up after SECS seconds in all (default 10)",
        "SECS",
    );
    o.optflag("h", "help", "print this help");
    o
}

/// The usage text of `poplar probe`.
pub fn usage() -> String {
    options().usage(
        "Usage: poplar probe [--tls | --stls] [--ca FILE | --insecure] [--user USER\n\
         \x20      [--password-file FILE | --password PASSWORD]] [--timeout SECS] [-h]\n\
         \x20      HOST[:PORT]\n\n\
         Connects to a POP3 server, checks its greeting and CAPA, logs in and runs STAT if\n\
         --user is given, and QUITs. Prints one line saying what happened. Exit codes: 0\n\
         healthy, 1 not, 2 usage.",
    )
}

/// Parses the arguments after `probe`.
pub fn parse(args: &[String]) -> Result<Probe, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    let [target] = &m.free[..] else {
        return Err(CliError("exactly one HOST[:PORT] is required".into()));
    };
    let tls = match (m.opt_present("tls"), m.opt_present("stls")) {
        (true, true) => return Err(CliError("--tls and --stls exclude each other".into())),
        (true, false) => Tls::Implicit,
        (false, true) => Tls::Stls,
        (false, false) => Tls::Off,
    };
    let (host, port) = split_host_port(target, if tls == Tls::Implicit { 995 } else { 110 })?;
    let ca = match (m.opt_str("ca"), m.opt_present("insecure")) {
        (Some(_), true) => return Err(CliError("--ca and --insecure exclude each other".into())),
        (_, true) => None,
        (Some(f), false) => Some(PathBuf::from(f)),
        (None, false) => Some(PathBuf::from(SYSTEM_CAS)),
    };
    if tls == Tls::Off && (m.opt_present("ca") || m.opt_present("insecure")) {
        return Err(CliError("--ca and --insecure need --tls or --stls".into()));
    }
    let user = m.opt_str("user");
    let password = match (m.opt_str("password"), m.opt_str("password-file")) {
        (Some(_), Some(_)) => {
            return Err(CliError(
                "--password and --password-file exclude each other".into(),
            ));
        }
        (Some(p), None) => Some(p),
        (None, Some(f)) => Some(read_password_file(&f)?),
        (None, None) => std::env::var("POPLAR_PROBE_PASSWORD").ok(),
    };
    if user.is_none() && (m.opt_present("password") || m.opt_present("password-file")) {
        return Err(CliError("a password needs --user".into()));
    }
    if user.is_some() && password.is_none() {
        return Err(CliError(
            "--user needs a password: --password-file, $POPLAR_PROBE_PASSWORD or --password".into(),
        ));
    }
    for (what, value) in [("user", &user), ("password", &password)] {
        if value
            .as_deref()
            .is_some_and(|v| v.is_empty() || v.bytes().any(|b| b == b'\r' || b == b'\n'))
        {
            return Err(CliError(format!(
                "the {what} is empty or holds a line break"
            )));
        }
    }
    let timeout = match m.opt_str("timeout") {
        None => Duration::from_secs(10),
        Some(s) => match s.parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs <= 3600.0 => Duration::from_secs_f64(secs),
            _ => {
                return Err(CliError(format!(
                    "--timeout: '{s}' is not a number of seconds between 0 and 3600"
                )));
            }
        },
    };
    Ok(Probe {
        addr: format!("{host}:{port}"),
        host,
        tls,
        ca,
        user,
        password,
        timeout,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(target: &str, default_port: u16) -> Result<(String, u16), CliError> {
    let bad = || CliError(format!("'{target}' is not HOST[:PORT]"));
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if target.matches(':').count() > 1 {
        (target, None)
    } else {
        match target.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (target, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok((host, port))
}

fn read_password_file(path: &str) -> Result<String, CliError> {
    let text =
        fs::read_to_string(path).map_err(|e| CliError(format!("--password-file {path}: {e}")))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Probes and prints the verdict.
pub fn run(p: &Probe) -> ExitCode {
    let started = Instant::now();
    match probe(p, started + p.timeout) {
        Ok(summary) => {
            println!(
                "healthy: {}: {summary} in {} ms",
                p.addr,
                started.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("unhealthy: {}: {why}", p.addr);
            ExitCode::from(EXIT_UNHEALTHY)
        }
    }
}

/// Either side of the conversation, before or after TLS.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// The conversation, with a deadline for the whole of it.
struct Conversation {
    reader: BufReader<Box<dyn Stream>>,
    /// The socket under any TLS, for setting timeouts.
    socket: TcpStream,
    deadline: Instant,
}

impl Conversation {
    /// Shrinks the socket's timeouts to what is left of the deadline.
    fn arm(&self) -> Result<(), String> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("timed out")?;
        self.socket
            .set_read_timeout(Some(left))
            .and_then(|()| self.socket.set_write_timeout(Some(left)))
            .map_err(|e| format!("socket: {e}"))
    }

    fn send(&mut self, line: &str, shown: &str) -> Result<(), String> {
        self.arm()?;
        let w = self.reader.get_mut();
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\r\n"))
            .and_then(|()| w.flush())
            .map_err(|e| format!("sending {shown}: {}", io_text(&e)))
    }

    /// One reply line without its line end.
    fn line(&mut self, after: &str) -> Result<String, String> {
        self.arm()?;
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the reply to {after}: {}", io_text(&e)))?;
        if n == 0 {
            return Err(format!("connection closed before the reply to {after}"));
        }
        if line.last() != Some(&b'\n') {
            return Err(format!(
                "reply to {after} longer than {MAX_LINE} octets or cut short"
            ));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Sends a command and reads a `+OK` status line, or says what came instead.
    fn command(&mut self, line: &str, shown: &str) -> Result<String, String> {
        self.send(line, shown)?;
        let reply = self.line(shown)?;
        expect_ok(&reply, shown)
    }

    /// CAPA's capabilities, upper-cased keywords with their arguments.
    fn capa(&mut self) -> Result<Vec<String>, String> {
        self.command("CAPA", "CAPA")?;
        let mut caps = Vec::new();
        loop {
            let line = self.line("CAPA")?;
            if line == "." {
                return Ok(caps);
            }
            if caps.len() == MAX_CAPA_LINES {
                return Err(format!("CAPA sent more than {MAX_CAPA_LINES} lines"));
            }
            caps.push(line);
        }
    }
}

fn expect_ok(reply: &str, after: &str) -> Result<String, String> {
    match reply.strip_prefix("+OK") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => Ok(rest.trim().to_owned()),
        _ => Err(format!("{after} answered '{}'", shown(reply))),
    }
}

/// A reply as it is safe to print: control characters escaped, long text cut.
fn shown(reply: &str) -> String {
    logsafe::escape(reply.as_bytes())
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

fn has(caps: &[String], keyword: &str) -> bool {
    caps.iter().any(|c| {
        c.split_ascii_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    })
}

fn probe(p: &Probe, deadline: Instant) -> Result<String, String> {
    let socket = connect(&p.addr, deadline)?;
    let plain: Box<dyn Stream> = Box::new(socket.try_clone().map_err(|e| e.to_string())?);
    let mut c = Conversation {
        reader: BufReader::new(plain),
        socket,
        deadline,
    };
    let mut done = Vec::new();
    if p.tls == Tls::Implicit {
        c = start_tls(c, p)?;
        done.push("TLS".to_owned());
    }
    let greeting = c.line("connecting")?;
    expect_ok(&greeting, "the greeting")?;
    let mut caps = c.capa()?;
    if p.tls == Tls::Stls {
        if !has(&caps, "STLS") {
            return Err("CAPA does not offer STLS".into());
        }
        c.command("STLS", "STLS")?;
        // Anything already buffered was sent before the handshake: RFC 2595's injection.
        if !c.reader.buffer().is_empty() {
            return Err("the server sent data after its reply to STLS".into());
        }
        c = start_tls(c, p)?;
        done.push("STLS".to_owned());
        caps = c.capa()?;
    }
    done.push(format!("greeting, CAPA ({} capabilities)", caps.len()));
    if let (Some(user), Some(password)) = (&p.user, &p.password) {
        login(&mut c, &caps, user, password)?;
        let stat = c.command("STAT", "STAT")?;
        let mut words = stat.split_ascii_whitespace().map(str::parse::<u64>);
        let (Some(Ok(count)), Some(Ok(octets))) = (words.next(), words.next()) else {
            return Err(format!("STAT answered '+OK {}'", shown(&stat)));
        };
        done.push(format!(
            "logged in as {user} ({}, {})",
            plural(count, "message"),
            plural(octets, "octet")
        ));
    }
    c.command("QUIT", "QUIT")?;
    done.push("QUIT".into());
    Ok(done.join(", "))
}

fn connect(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err("timed out connecting".into());
        };
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connecting to {a}: {}", io_text(&e)),
        }
    }
    Err(last)
}

fn login(c: &mut Conversation, caps: &[String], user: &str, password: &str) -> Result<(), String> {
    let plain_sasl = caps.iter().any(|cap| {
        let mut words = cap.split_ascii_whitespace();
        words.next().is_some_and(|k| k.eq_ignore_ascii_case("SASL"))
            && words.any(|m| m.eq_ignore_ascii_case("PLAIN"))
    });
    if has(caps, "USER") || !plain_sasl {
        c.command(&format!("USER {user}"), "USER")?;
        c.command(&format!("PASS {password}"), "PASS")?;
    } else {
        let mut msg = Vec::with_capacity(user.len() + password.len() + 2);
        msg.push(0);
        msg.extend_from_slice(user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(password.as_bytes());
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(msg);
        c.command(&format!("AUTH PLAIN {encoded}"), "AUTH PLAIN")?;
    }
    Ok(())
}

fn start_tls(c: Conversation, p: &Probe) -> Result<Conversation, String> {
    let config = client_config(p)?;
    let name = ServerName::try_from(p.host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| format!("'{}' cannot be a TLS server name: {e}", p.host))?;
    let conn = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
    let socket = c.socket.try_clone().map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, socket);
    c.arm()?;
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake: {}", io_text(&e)))?;
    }
    Ok(Conversation {
        reader: BufReader::new(Box::new(tls)),
        socket: c.socket,
        deadline: c.deadline,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(p: &Probe) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match &p.ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("--ca {}: no CERTIFICATE block", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate is accepted, but the handshake's signatures are still
/// checked, so the connection is at least encrypted to whoever holds the key shown.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn ports_default_by_mode_and_ipv6_is_bracketed() {
        assert_eq!(parse(&args("127.0.0.1")).unwrap().addr, "127.0.0.1:110");
        assert_eq!(
            parse(&args("--tls --insecure localhost")).unwrap().addr,
            "localhost:995"
        );
        assert_eq!(parse(&args("[::1]:1110")).unwrap().addr, "[::1]:1110");
        assert_eq!(parse(&args("::1")).unwrap().addr, "[::1]:110");
        assert_eq!(parse(&args("--stls h:2")).unwrap().tls, Tls::Stls);
    }

    #[test]
    fn contradictions_and_bad_values_are_usage_errors() {
        for bad in [
            "",
            "a b",
            "h:0",
            "h:x",
            "[::1",
            "--tls --stls h",
            "--tls --ca f --insecure h",
            "--insecure h",
            "--user u h",
            "--password p h",
            "--user u --password p --password-file f h",
            "--timeout 0 h",
            "--timeout x h",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let p = parse(&args("--user u --password s3cret h")).unwrap();
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}
