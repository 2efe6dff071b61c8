//! Other software against poplar, one test binary: Python's poplib, curl, fetchmail and
//! getmail as clients; password hashes made by mkpasswd, openssl, Python's crypt and
//! doveadm; Dovecot's own POP3 server on the same mbox; the docs checked against
//! `poplar --help`, groff and systemd-analyze; `poplar::testing::Server` as another crate's
//! test suite uses it; the pytest example suite; `make run` itself; and the static binaries of `make dist` for other architectures, under
//! qemu-user.
//!
//! `clients` installs a logger for the whole process (the first of its tests to start does),
//! so a failing client's report shows what every server in this binary logged.

#[path = "../common/certs.rs"]
mod certs;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/delivery.rs"]
mod delivery;

mod clients;
mod dev_api;
mod dev_tls;
mod devserver;
mod docs;
mod dovecot;
mod edge_cases;
mod faults;
mod install;
mod interop;
mod make_run;
mod oauth;
mod pytest;
mod qemu;
mod schemes;
mod smtp;
mod testing_api;
