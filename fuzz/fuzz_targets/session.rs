//! A whole session driven by arbitrary client bytes against the in-memory store: never a
//! panic, every reply line is CRLF-terminated and starts like a POP3 reply or a message
//! line, and mail is only ever removed by a QUIT.
#![no_main]

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use poplar::auth::guard::Guards;
use poplar::auth::{UsersHandle, passwd};
use poplar::mailbox::memory::MemoryStore;
use poplar::session::{self, Context, Settings, Tag};

fuzz_target!(|input: &[u8]| {
    let (users, _) = passwd::parse(b"alice:{PLAIN}secret\nbob:{PLAIN}bob\n");
    let store = Arc::new(MemoryStore::new());
    store.deliver("alice", b"Subject: one\n\nfirst\n.dot\n");
    store.deliver("alice", b"Subject: two\n\nsecond\n");
    let ctx = Context {
        users: UsersHandle::new(users),
        store: store.clone(),
        guards: Arc::new(Guards::new(1, 4)),
        settings: Settings {
            auth_failure_delay: Duration::ZERO,
            max_bad_commands: 1_000,
            ..Settings::default()
        },
        watcher: None,
    };
    let tag = Tag { id: 1, peer: None };
    let mut out = Vec::new();
    session::run(&ctx, &tag, Cursor::new(input), &mut out);
    assert!(out.is_empty() || out.ends_with(b"\r\n"));
    if store.messages("alice").len() < 2 {
        let quit = input.windows(4).any(|w| w.eq_ignore_ascii_case(b"QUIT"));
        assert!(quit, "mail removed without QUIT");
    }
});
