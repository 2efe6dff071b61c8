//! A small, bounded TLS measurement on loopback: full handshakes per second on the POP3S
//! port, and RETR throughput over TLS against cleartext. It prints numbers and asserts none.
//!
//! Run: `cargo run --release --example tls_bench [seconds-per-phase] [message-MiB]`
//! (defaults 3 and 32). Only 127.0.0.1 is contacted; every loop is bounded in count and time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poplar::config::{Config, TlsFiles};
use poplar::mailbox::template::MailTemplate;
use poplar::server::Server;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// Upper bound on handshakes, whatever the time limit.
const MAX_HANDSHAKES: u32 = 20_000;
/// RETR repetitions per transport.
const RETR_ROUNDS: u32 = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let dir = tempfile::tempdir().unwrap();
    let ca = write_certificate(dir.path());
    write_mailbox(dir.path(), mib);

    let template = format!("{}/mail/%n", dir.path().display());
    let mut config = Config::new(
        dir.path().join("users"),
        MailTemplate::parse(&template).unwrap(),
    );
    config.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
    config.tls = Some(TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    });
    config.shutdown_grace = Duration::from_millis(200);
    let server = Server::from_config(&config).unwrap();
    let addrs = server.local_addrs();
    let stop = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run().unwrap());

    let tls = client_config(&ca);
    let limit = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut n = 0;
    while n < MAX_HANDSHAKES && started.elapsed() < limit {
        let mut c = Pop::tls(addrs[1], &tls);
        c.cmd("QUIT");
        n += 1;
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    println!(
        "full TLS handshakes (connect, handshake, greeting, QUIT): {n} in {seconds} s = {rate:.0}/s"
    );

    for (name, tls) in [("plain", false), ("TLS", true)] {
        let mut best = 0f64;
        for _ in 0..RETR_ROUNDS {
            let mut c = if tls {
                Pop::tls(addrs[1], &client_config(&ca))
            } else {
                Pop::plain(addrs[0])
            };
            c.cmd("USER bench");
            c.cmd("PASS bench");
            let t = Instant::now();
            let octets = c.retr();
            let mbps = octets as f64 / t.elapsed().as_secs_f64() / (1024.0 * 1024.0);
            best = best.max(mbps);
            c.cmd("QUIT");
        }
        println!(
            "RETR of a {mib} MiB message over {name}: best of {RETR_ROUNDS} = {best:.0} MiB/s"
        );
    }
    stop.stop();
    thread.join().unwrap();
}

fn write_certificate(dir: &std::path::Path) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert.der().clone()
}

/// One user, `bench`, whose mailbox holds one message of `mib` MiB of 76-column text.
fn write_mailbox(dir: &std::path::Path, mib: usize) {
    std::fs::write(dir.join("users"), "bench:{PLAIN}bench\n").unwrap();
    std::fs::create_dir(dir.join("mail")).unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("mail/bench")).unwrap());
    writeln!(file, "From bench@example.com Thu Nov 26 09:00:00 2026").unwrap();
    writeln!(file, "Subject: bench\n").unwrap();
    let line = format!("{}\n", "x".repeat(76));
    for _ in 0..(mib << 20) / line.len() {
        file.write_all(line.as_bytes()).unwrap();
    }
    writeln!(file).unwrap();
}

fn client_config(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one: no session resumption.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A minimal POP3 client over either transport.
struct Pop {
    reader: BufReader<Box<dyn ReadWrite>>,
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Pop {
    fn plain(addr: SocketAddr) -> Pop {
        Self::greeted(Box::new(TcpStream::connect(addr).unwrap()))
    }

    fn tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> Pop {
        let tcp = TcpStream::connect(addr).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config.clone(), name).unwrap();
        Self::greeted(Box::new(StreamOwned::new(conn, tcp)))
    }

    fn greeted(stream: Box<dyn ReadWrite>) -> Pop {
        let mut p = Pop {
            reader: BufReader::with_capacity(64 * 1024, stream),
        };
        assert!(p.line().starts_with("+OK"));
        p
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.reader.read_line(&mut s).unwrap();
        s
    }

    fn cmd(&mut self, line: &str) -> String {
        let w = self.reader.get_mut();
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        w.flush().unwrap();
        self.line()
    }

    /// RETR 1, reading to the terminator; returns the octets received.
    fn retr(&mut self) -> usize {
        assert!(self.cmd("RETR 1").starts_with("+OK"));
        let mut octets = 0;
        let mut buf = Vec::with_capacity(128);
        loop {
            buf.clear();
            let n = self.reader.read_until(b'\n', &mut buf).unwrap();
            assert!(n > 0, "connection closed in RETR");
            if buf == b".\r\n" {
                return octets;
            }
            octets += n;
        }
    }
}
