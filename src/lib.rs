//! poplar: a small, fast POP3 server (RFC 1939, 2449, 3206) for mbox mailboxes.
//!
//! The binary wires these modules together: [`cli`] parses the command line into a
//! [`config::Config`], [`server`] accepts connections and runs one [`session`] per client
//! thread, sessions read [`command`]s through [`wire`], check logins with [`auth`], and read
//! and commit mail through the [`mailbox`] traits.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod command;
pub mod config;
pub mod limits;
pub mod logsafe;
pub mod mailbox;
pub mod pw;
pub mod server;
pub mod session;
pub mod wire;
