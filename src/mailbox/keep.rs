//! `--dev-keep-deleted`: before a commit removes messages, copy them to `<mbox>.deleted` (an
//! mbox) and fsync, so a crash between the two can duplicate a message there, never lose it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::index::Extent;
use super::positioned::WriterAt;
use super::{fault, files};
use crate::limits::FILE_CHUNK;

/// Appends the messages of `file` (the mbox at `mbox`) flagged in `deleted` to
/// `<mbox>.deleted`, byte for byte from their From_ line (quoting as stored), each followed by
/// a blank line, and syncs it. The caller holds the session and delivery locks of `mbox`,
/// which also make it the only writer of `<mbox>.deleted`. On failure the file is cut back to
/// its old length and the commit must not go on.
pub fn keep_deleted(
    mbox: &Path,
    file: &File,
    extents: &[Extent],
    deleted: &[bool],
) -> io::Result<()> {
    let path = files::deleted(mbox);
    let existed = path.exists();
    let out = files::open_or_create(&path)?;
    let old_len = out.metadata()?.len();
    let written = copy(file, &out, old_len, extents, deleted).and_then(|()| out.sync_data());
    if let Err(e) = written {
        let _ = out.set_len(old_len).and_then(|()| out.sync_data());
        return Err(e);
    }
    if !existed {
        files::sync_dir(&path)?;
    }
    fault::crash_point("kept-deleted");
    Ok(())
}

fn copy(
    file: &File,
    out: &File,
    old_len: u64,
    extents: &[Extent],
    deleted: &[bool],
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(FILE_CHUNK, WriterAt::new(out, old_len));
    if old_len > 0 && !ends_with_blank_line(out, old_len)? {
        // Someone edited the file: start the next message on a line of its own.
        w.write_all(b"\n\n")?;
    }
    let mut buf = vec![0u8; FILE_CHUNK];
    for (ext, _) in extents.iter().zip(deleted).filter(|(_, d)| **d) {
        let mut at = ext.start;
        let mut last = b'\n';
        while at < ext.end {
            let n = ((ext.end - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)?;
            w.write_all(&buf[..n])?;
            last = buf[n - 1];
            at += n as u64;
        }
        w.write_all(if last == b'\n' { b"\n" } else { b"\n\n" })?;
    }
    fault::io_point("keep-deleted")?;
    w.flush()
}

fn ends_with_blank_line(f: &File, len: u64) -> io::Result<bool> {
    let mut tail = [0u8; 2];
    if len < 2 {
        return Ok(false);
    }
    f.read_exact_at(&mut tail, len - 2)?;
    Ok(&tail == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::scan::scan;

    fn extents(file: &File) -> Vec<Extent> {
        let mut v = Vec::new();
        scan(file, 0, |f| {
            v.push(Extent {
                start: f.start,
                data: f.data,
                end: f.end,
            });
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn deleted_messages_are_appended_byte_for_byte_as_an_mbox() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(
            &mbox,
            b"From a 1\nS: 1\n\n>From x\n\nFrom b 2\nS: 2\n\nFrom c 3\nS: 3\n\nend",
        )
        .unwrap();
        let file = File::open(&mbox).unwrap();
        let ext = extents(&file);
        keep_deleted(&mbox, &file, &ext, &[true, false, true]).unwrap();
        let kept = std::fs::read(files::deleted(&mbox)).unwrap();
        assert_eq!(
            kept,
            b"From a 1\nS: 1\n\n>From x\n\nFrom c 3\nS: 3\n\nend\n\n"
        );
        keep_deleted(&mbox, &file, &ext, &[false, true]).unwrap();
        let kept = std::fs::read(files::deleted(&mbox)).unwrap();
        assert!(kept.ends_with(b"end\n\nFrom b 2\nS: 2\n\n"));
        // The result is an mbox of the three messages.
        assert_eq!(
            extents(&File::open(files::deleted(&mbox)).unwrap()).len(),
            3
        );
    }
}
