//! The server as clients meet it, one test binary: the protocol, SASL, TLS and limits,
//! in-process over the shared harness (`common`); and the `poplar` binary itself, spawned as
//! its own process: flags and exit codes, signals and SIGHUP reloads, and the modes (`--dev`,
//! `--inetd`, proxies, socket activation), and what its idle sessions cost in memory.
//!
//! `hostile` (clients hammering a server, measured by this process's threads and memory) is a
//! test binary of its own: other tests in the same process would move those numbers.

#[path = "../common/certs.rs"]
mod certs;
#[path = "../common/mod.rs"]
mod common;

mod binary;
mod fail2ban;
mod idle_memory;
mod inetd_guards;
mod limits;
mod modes;
mod observe;
mod probe;
mod protocol;
mod reload;
mod sasl;
mod smoke;
mod tls;
