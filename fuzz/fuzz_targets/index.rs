//! The UID index is trusted only on evidence: whatever bytes stand in `<mbox>.poplar-index`,
//! a login sees exactly the messages a scan finds, at the places and sizes the scan finds,
//! with distinct UIDs, and never a panic.
#![no_main]

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use poplar::mailbox::files;
use poplar::mailbox::uid::{View, ViewOptions, reconcile};

const MBOX: &[u8] = b"From a Thu Nov 26 09:00:00 2026\nSubject: one\n\nfirst\n\n\
From b Thu Nov 26 09:01:00 2026\nSubject: two\nX-UIDL: two\n\n>From quoted\n\n\
From c Thu Nov 26 09:02:00 2026\n\nthird, no final blank line\n";

/// A directory of its own with the mbox, and the view a login gets with no index at all.
fn setup() -> &'static (PathBuf, View) {
    static SETUP: OnceLock<(PathBuf, View)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("poplar-fuzz-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mbox = dir.join("mbox");
        std::fs::write(&mbox, MBOX).unwrap();
        let _ = std::fs::remove_file(files::index(&mbox));
        let view = reconcile(&mbox, &open(&mbox), ViewOptions::default()).unwrap();
        (mbox, view)
    })
}

fn open(path: &PathBuf) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

fuzz_target!(|index: &[u8]| {
    let (mbox, clean) = setup();
    std::fs::write(files::index(mbox), index).unwrap();
    let view = reconcile(mbox, &open(mbox), ViewOptions::default()).unwrap();
    assert_eq!(view.len, clean.len);
    assert_eq!(view.extents, clean.extents);
    let sizes = |v: &View| v.infos.iter().map(|i| i.size).collect::<Vec<_>>();
    assert_eq!(sizes(&view), sizes(clean));
    let mut uids: Vec<String> = view.infos.iter().map(|i| i.uid.to_string()).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), view.infos.len(), "UIDs must be distinct");
});
