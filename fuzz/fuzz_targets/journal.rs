//! Journal replay on any journal: raw bytes (a torn or forged file) change nothing unless
//! replay says it applied them, and a well-formed journal with any head fields and payload
//! never touches the bytes before its region and never panics; one written for the mbox as
//! it is, that does not shorten it, leaves it at its new length when applied.
#![no_main]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use poplar::mailbox::files;
use poplar::mailbox::journal::{Head, JournalWriter, Replay, replay};

const MBOX: &[u8] = b"From a Thu Nov 26 09:00:00 2026\nSubject: one\n\nfirst\n\n\
From b Thu Nov 26 09:01:00 2026\nSubject: two\n\nsecond\n\n";

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("poplar-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn fresh_mbox() -> (PathBuf, File) {
    let mbox = dir().join("mbox");
    std::fs::write(&mbox, MBOX).unwrap();
    for leftover in std::fs::read_dir(dir()).unwrap() {
        let path = leftover.unwrap().path();
        if path != mbox {
            let _ = std::fs::remove_file(path);
        }
    }
    let file = OpenOptions::new().read(true).write(true).open(&mbox).unwrap();
    (mbox, file)
}

fn number(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 2];
    for (i, v) in bytes.iter().skip(at).take(2).enumerate() {
        b[i] = *v;
    }
    // Mostly within the file, sometimes far past it.
    let n = u64::from(u16::from_le_bytes(b));
    if n % 7 == 0 { n * 1_000 } else { n % (MBOX.len() as u64 + 8) }
}

fuzz_target!(|input: &[u8]| {
    let (mbox, file) = fresh_mbox();
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        std::fs::write(files::journal(&mbox), rest).unwrap();
        let result = replay(&mbox, &file);
        if !matches!(result, Ok(Replay::Applied)) {
            assert_eq!(std::fs::read(&mbox).unwrap(), MBOX, "{result:?}");
        }
        return;
    }
    let meta = file.metadata().unwrap();
    let head_truncated = rest.get(4).is_some_and(|b| b % 2 == 1);
    let region_start = number(rest, 0);
    let payload = rest.get(8..).unwrap_or_default();
    // Mostly the length the mbox really has, as a commit's journal says.
    let old_len = match rest.get(5) {
        Some(b) if b % 3 == 0 => number(rest, 2),
        _ => MBOX.len() as u64,
    };
    let head = Head {
        dev: meta.dev(),
        ino: meta.ino(),
        region_start,
        old_len,
        new_len: region_start + payload.len() as u64,
        tail_fp: [0; 16],
        index_at: 0,
        index_len: 0,
        payload_sum: [0; 16],
        truncated: head_truncated,
    };
    let mut w = JournalWriter::create(&files::journal(&mbox), true).unwrap();
    w.write(payload).unwrap();
    w.finish(head).unwrap();
    let result = replay(&mbox, &file);
    let after = std::fs::read(&mbox).unwrap();
    let kept = (region_start as usize).min(MBOX.len());
    assert_eq!(after[..kept.min(after.len())], MBOX[..kept.min(after.len())], "{result:?}");
    let plain = !head_truncated && old_len == MBOX.len() as u64 && region_start <= old_len;
    if matches!(result, Ok(Replay::Applied)) && plain && payload.len() as u64 >= old_len - region_start {
        assert_eq!(after.len() as u64, region_start + payload.len() as u64);
    }
});
