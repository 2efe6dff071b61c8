//! The daemon: every `--listen` address (or the sockets systemd passed), until SIGTERM.

use crate::config::Config;
use crate::limits;
use crate::server::{Server, listeners};

/// Binds (or takes systemd's sockets), handles signals, and serves until stopped.
pub fn run(config: &Config) -> Result<(), String> {
    if config.idle_timeout < limits::DEFAULT_IDLE_TIMEOUT {
        log::warn!("--idle-timeout below 600 s is shorter than RFC 1939 allows");
    }
    let inherited =
        listeners::inherited().map_err(|e| format!("cannot use the sockets from systemd: {e}"))?;
    let server = if inherited.is_empty() {
        Server::from_config(config)?
    } else {
        log::info!(
            "socket activation: serving {}; --listen is ignored",
            crate::plural::plural(inherited.len() as u64, "inherited socket")
        );
        Server::from_inherited(config, inherited)?
    };
    serve(server)
}

/// Makes SIGTERM/SIGINT stop `server` and SIGHUP reload it, and serves until stopped.
pub fn serve(mut server: Server) -> Result<(), String> {
    server
        .handle_signals()
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    server.run().map_err(|e| format!("server failed: {e}"))
}
