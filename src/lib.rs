//! poplar: a small, fast POP3 server (RFC 1939, 2449, 3206) for mbox mailboxes.
//!
//! The rooms, from the bottom up (imports point down only; docs/architecture.md):
//! the leaves ([`limits`] and small helpers); [`protocol`] (command lines, replies, the
//! RETR/TOP renderer, PROXY headers), [`mailbox`] (the maildrop traits and mbox files) and
//! [`auth`] (users, schemes, SASL, the failure guard); [`session`] (one POP3 session over
//! any stream); [`config`] (settings as plain data); [`server`] (sockets, and the one wiring
//! from a `Config`); [`run`] (the daemon, inetd, dev mode, and [`testing`]) and [`cli`] (the
//! command line), which only the binary joins.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod fault_rules;
mod hostname;
mod json;
pub mod limits;
mod line_ends;
pub mod logline;
mod logsafe;
pub mod mailbox;
mod metrics;
mod plural;
pub mod protocol;
pub mod run;
pub mod server;
pub mod session;
pub mod smtp;

/// A real poplar for other crates' test suites (see [`run::testing`]).
pub use run::testing;
