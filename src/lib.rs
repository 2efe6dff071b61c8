//! poplar: a small, fast POP3 server (RFC 1939, 2449, 3206) for mbox mailboxes.
//!
//! The binary wires these modules together: [`cli`] parses the command line into a
//! [`config::Config`], [`server`] accepts connections and runs one [`session`] per client
//! thread, sessions read [`command`]s through [`wire`], check logins with [`auth`], and read
//! and commit mail through the [`mailbox`] traits. [`dev`] and [`inetd`] are the other ways to
//! run, [`proxy`] reads PROXY headers, and [`testing`] runs poplar inside other test suites.
//! [`deliver`], [`seed`] and [`check`] are the subcommands that write and read mailboxes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod hostname;
pub mod check;
pub mod cli;
pub mod command;
pub mod config;
pub mod deliver;
pub mod dev;
pub mod inetd;
pub mod limits;
pub mod line_ends;
pub mod listeners;
pub mod logsafe;
pub mod mailbox;
pub mod proxy;
pub mod pw;
pub mod seed;
pub mod server;
pub mod session;
pub mod testing;
pub mod tls;
pub mod transport;
pub mod wire;
