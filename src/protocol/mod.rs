//! Bytes to POP3 values and back: command lines, replies, the RETR/TOP renderer, and PROXY
//! headers. Pure codecs: no sockets, no sessions, no policy.

pub mod command;
pub mod message;
pub mod proxy;
pub mod wire;
