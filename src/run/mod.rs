//! The ways to run a server from a `Config`: the daemon, one session under inetd, the
//! development server, and the test API other crates embed.

mod api;
mod daemon;
mod dev;
mod faults;
pub mod inetd;
mod page;
mod sessions;
mod smtp;
pub mod testing;

use crate::config::Config;

/// Serves as `config` asks, until stopped: `--dev`, `--inetd` or the daemon.
pub fn serve(config: &Config) -> Result<(), String> {
    if config.dev.is_some() {
        dev::run(config)
    } else if config.inetd {
        inetd::run(config).map(|_| ())
    } else {
        daemon::run(config)
    }
}
