//! `--metrics`: the counters of `crate::metrics` served over HTTP to Prometheus, on a thread
//! of their own that stops with the server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use crate::limits;

/// The metrics endpoint: bound at start-up, serving until dropped.
pub(crate) struct Scrape {
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scrape {
    /// Binds `addr` and starts answering `GET /metrics` there.
    pub(crate) fn start(addr: SocketAddr) -> io::Result<Scrape> {
        let cannot = |e: &dyn std::fmt::Display| {
            io::Error::other(format!("cannot serve metrics on {addr}: {e}"))
        };
        let http = Arc::new(tiny_http::Server::http(addr).map_err(|e| cannot(&e))?);
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| cannot(&"not an IP address"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("metrics".into()).spawn({
            let (http, stopping) = (http.clone(), stopping.clone());
            move || serve(&http, &stopping)
        })?;
        Ok(Scrape {
            http,
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Scrape {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers requests one at a time until stopped: the exposition at `/metrics`, 404 elsewhere.
fn serve(http: &tiny_http::Server, stopping: &AtomicBool) {
    loop {
        let request = match http.recv() {
            Ok(r) => r,
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                // An accept error (EMFILE): retrying at once would spin.
                log::warn!("metrics: {e}");
                thread::sleep(limits::ACCEPT_ERROR_BACKOFF);
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or_default();
        let response = match (request.method(), path) {
            (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
                let content_type = tiny_http::Header::from_bytes(
                    &b"Content-Type"[..],
                    &b"text/plain; version=0.0.4; charset=utf-8"[..],
                )
                .expect("a valid header");
                tiny_http::Response::from_string(crate::metrics::exposition())
                    .with_header(content_type)
            }
            (tiny_http::Method::Get | tiny_http::Method::Head, _) => {
                tiny_http::Response::from_string("not found; the metrics are at /metrics\n")
                    .with_status_code(404)
            }
            _ => tiny_http::Response::from_string("only GET\n").with_status_code(405),
        };
        if let Err(e) = request.respond(response) {
            log::debug!("metrics: cannot answer: {e}");
        }
    }
}
