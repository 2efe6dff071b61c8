//! The sidecar index is trusted only on evidence: an unchanged mbox is not read again, a
//! grown one only past its old end, and a damaged or stale index is rebuilt with UIDs kept.
//! Deleting the last message of a big mbox writes little. One test, and a test binary of
//! its own, so that this process's I/O counters (/proc/self/io) see only its own work.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use poplar::mailbox::commit::commit;
use poplar::mailbox::files;
use poplar::mailbox::uid::{View, ViewOptions, reconcile};

fn io_counter(name: &str) -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim_start_matches(':').trim().parse().unwrap())
        .unwrap()
}

fn view(path: &Path) -> View {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    reconcile(path, &file, ViewOptions::default()).unwrap()
}

fn uids(v: &View) -> Vec<String> {
    v.infos.iter().map(|i| i.uid.to_string()).collect()
}

#[test]
fn the_index_saves_reading_and_writing_and_is_never_trusted_blindly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("box");
    // 64 MiB in 1024 messages.
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..1024 {
        writeln!(f, "From a@b Thu Nov 26 09:00:00 2026\nSubject: {i}\n").unwrap();
        for _ in 0..1024 {
            f.write_all(&[b'x'; 63]).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.write_all(b"\n").unwrap();
    }
    drop(f);
    let len = std::fs::metadata(&path).unwrap().len();

    let first = view(&path);
    assert_eq!((first.infos.len(), first.bytes_scanned), (1024, len));

    let read = io_counter("rchar");
    let again = view(&path);
    let read = io_counter("rchar") - read;
    assert_eq!(again.bytes_scanned, 0);
    assert!(uids(&again) == uids(&first));
    assert!(read < 1 << 20, "a repeat login read {read} bytes");

    let extra = b"From c@d Thu Nov 26 09:00:00 2026\nSubject: new\n\nnew\n\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(extra)
        .unwrap();
    let grown = view(&path);
    assert_eq!(grown.bytes_scanned, extra.len() as u64);
    assert!(uids(&grown)[..1024] == uids(&first)[..]);
    assert_eq!(grown.infos.len(), 1025);

    // A damaged record: the whole file is scanned again, and every UID kept.
    let index = std::fs::OpenOptions::new()
        .write(true)
        .open(files::index(&path))
        .unwrap();
    index.write_all_at(b"garbage", 80 + 160 * 500 + 10).unwrap();
    let rebuilt = view(&path);
    assert_eq!(rebuilt.bytes_scanned, len + extra.len() as u64);
    let (was, now) = (uids(&grown), uids(&rebuilt));
    let changed: Vec<usize> = (0..was.len()).filter(|&i| was[i] != now[i]).collect();
    // Only the message whose record was lost gets a new UID, one never given before.
    assert_eq!(changed, vec![500]);
    assert!(!was.contains(&now[500]));

    // The same length rewritten in place (a Status: change): the mtime gives it away.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"Subject: 0\n", 34).unwrap();
    let rescanned = view(&path);
    assert_eq!(rescanned.bytes_scanned, len + extra.len() as u64);
    assert!(uids(&rescanned) == now, "a rescan keeps UIDs");

    // QUIT deleting the last message writes a little journal and index, not the mbox.
    let v = view(&path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut deleted = vec![false; v.infos.len()];
    *deleted.last_mut().unwrap() = true;
    let written = io_counter("wchar");
    let summary = commit(&path, &file, &v.extents, v.len, &deleted).unwrap();
    let written = io_counter("wchar") - written;
    assert_eq!(summary.bytes_after, len);
    assert!(
        written < 1 << 20,
        "deleting the last message wrote {written} bytes"
    );
    eprintln!(
        "64 MiB mbox: repeat login read {read} bytes; deleting the last message wrote {written}"
    );
    let after = view(&path);
    assert_eq!(after.bytes_scanned, 0, "the commit left a trusted index");
    assert!(uids(&after)[..] == now[..1024], "a commit keeps UIDs");
}
