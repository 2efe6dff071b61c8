//! The commit journal `<mbox>.poplar-journal`: the new bytes of the mbox from the first
//! deleted message on (and the new index records) written and synced before the mbox is
//! touched, and the one replay routine that applies it, used right after writing it and again
//! at start-up and before any scan or delivery, so that a commit cut short by a crash or an
//! I/O error ends as before or as after, never between.
//!
//! Head (128 octets, little-endian): magic `PLRJRN01`, mbox device and inode, region start,
//! old length, new length, a 16-octet fingerprint of the old bytes at the new length, the
//! index record number and index payload length, the payload MD5, the MD5 of all of that
//! (so a torn head is no head), then the state (0 written, 1 mbox truncated). The payload
//! follows: the mbox bytes for `region_start..new_len`, then the index header and records.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::fault;
use super::files::{self, create_fresh, ours, private_file, sync_dir};
use super::index::{HEADER_LEN, RECORD_LEN};
use crate::limits::FILE_CHUNK;

/// Octets of the journal head; the payload starts here.
pub const HEAD_LEN: u64 = 128;
const MAGIC: &[u8; 8] = b"PLRJRN01";
/// Old bytes at the new length that the fingerprint covers.
const TAIL_SAMPLE: u64 = 64 * 1024;
const STATE_AT: u64 = 112;
const STATE_TRUNCATED: u64 = 1;

/// What a journal says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Device of the mbox it belongs to.
    pub dev: u64,
    /// Inode of the mbox it belongs to.
    pub ino: u64,
    /// Where the mbox payload goes: the first deleted message's From_ line.
    pub region_start: u64,
    /// The mbox's length when the journal was written.
    pub old_len: u64,
    /// The mbox's length after the commit: `region_start` plus the mbox payload.
    pub new_len: u64,
    /// [`tail_fingerprint`] of the old mbox at `new_len`: tells whether the truncation
    /// happened when mail was appended after a crash.
    pub tail_fp: [u8; 16],
    /// Record number where the index records in the payload go.
    pub index_at: u64,
    /// Octets of index payload (its header, then records); 0 leaves the index alone.
    pub index_len: u64,
    /// MD5 of the payload.
    pub payload_md5: [u8; 16],
    /// Whether the mbox was already truncated to `new_len`.
    pub truncated: bool,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Head {
    fn encode(&self) -> [u8; HEAD_LEN as usize] {
        let mut b = [0u8; HEAD_LEN as usize];
        b[..8].copy_from_slice(MAGIC);
        let nums = [
            self.dev,
            self.ino,
            self.region_start,
            self.old_len,
            self.new_len,
        ];
        for (i, v) in nums.into_iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[48..64].copy_from_slice(&self.tail_fp);
        b[64..72].copy_from_slice(&self.index_at.to_le_bytes());
        b[72..80].copy_from_slice(&self.index_len.to_le_bytes());
        b[80..96].copy_from_slice(&self.payload_md5);
        let sum: [u8; 16] = Md5::digest(&b[..96]).into();
        b[96..112].copy_from_slice(&sum);
        b[112..120].copy_from_slice(&u64::from(self.truncated).to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Head> {
        let sum: [u8; 16] = Md5::digest(&b[..96]).into();
        if &b[..8] != MAGIC || b[96..112] != sum {
            return None;
        }
        let head = Head {
            dev: u64_at(b, 8),
            ino: u64_at(b, 16),
            region_start: u64_at(b, 24),
            old_len: u64_at(b, 32),
            new_len: u64_at(b, 40),
            tail_fp: b[48..64].try_into().expect("16 bytes"),
            index_at: u64_at(b, 64),
            index_len: u64_at(b, 72),
            payload_md5: b[80..96].try_into().expect("16 bytes"),
            truncated: u64_at(b, STATE_AT as usize) == STATE_TRUNCATED,
        };
        let sane = head.region_start <= head.new_len
            && (head.index_len == 0 || head.index_len >= HEADER_LEN);
        sane.then_some(head)
    }

    fn mbox_payload(&self) -> u64 {
        self.new_len - self.region_start
    }
}

/// MD5 of the length and of up to 64 KiB of `file` at `at` (before `end`).
pub fn tail_fingerprint(file: &File, at: u64, end: u64) -> io::Result<[u8; 16]> {
    let n = end.saturating_sub(at).min(TAIL_SAMPLE);
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, at)?;
    let mut h = Md5::new();
    h.update(n.to_le_bytes());
    h.update(&buf);
    Ok(h.finalize().into())
}

/// Writes a journal's payload, then its head, then syncs it.
pub struct JournalWriter {
    file: File,
    path: PathBuf,
    md5: Md5,
    len: u64,
    buf: Vec<u8>,
}

impl JournalWriter {
    /// Creates the journal file at `path`; `fresh` first removes a leftover there (for the
    /// `.new` file of an interrupted replay), else an existing file is an error: a commit
    /// never overwrites a journal, which the login's replay has removed if it was ours.
    pub fn create(path: &Path, fresh: bool) -> io::Result<JournalWriter> {
        let file = if fresh {
            create_fresh(path)?
        } else {
            private_file().create_new(true).open(path)?
        };
        Ok(JournalWriter {
            file,
            path: path.to_owned(),
            md5: Md5::new(),
            len: 0,
            buf: Vec::with_capacity(FILE_CHUNK),
        })
    }

    /// Payload bytes written so far.
    pub fn payload_len(&self) -> u64 {
        self.len + self.buf.len() as u64
    }

    /// Appends bytes to the payload.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= FILE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        fault::io_point("journal")?;
        self.file.write_all_at(&self.buf, HEAD_LEN + self.len)?;
        self.md5.update(&self.buf);
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Appends `src[start..end]` to the payload, a chunk at a time.
    pub fn copy_from(&mut self, src: &File, mut start: u64, end: u64) -> io::Result<()> {
        while start < end {
            let room = FILE_CHUNK.saturating_sub(self.buf.len()).max(1);
            let n = ((end - start) as usize).min(room);
            let at = self.buf.len();
            self.buf.resize(at + n, 0);
            src.read_exact_at(&mut self.buf[at..], start)?;
            start += n as u64;
            if self.buf.len() >= FILE_CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Reads payload bytes back (for checksums of the new mbox content).
    pub fn read_payload(&mut self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.flush()?;
        self.file.read_exact_at(buf, HEAD_LEN + at)
    }

    /// Completes the journal with `head` (its payload checksum filled in) and syncs it and
    /// its directory: from here on the commit happens, now or at the next replay.
    pub fn finish(mut self, mut head: Head) -> io::Result<()> {
        self.flush()?;
        fault::crash_point("journal-partial");
        head.payload_md5 = self.md5.clone().finalize().into();
        self.file.write_all_at(&head.encode(), 0)?;
        self.file.sync_all()?;
        sync_dir(&self.path)?;
        fault::crash_point("journal-written");
        Ok(())
    }

    /// Removes an unfinished journal.
    pub fn abandon(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::error!("cannot remove journal {}: {e}", self.path.display());
        }
    }
}

/// What [`replay`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// No journal.
    Clean,
    /// An incomplete journal (the commit had not begun) was removed.
    Discarded,
    /// A complete journal was applied and removed.
    Applied,
    /// The journal is for another file at this path; it was set aside, nothing applied.
    SetAside,
}

/// Applies and removes the journal of `mbox` (open as `file`), if any. The caller holds the
/// locks toward delivery agents. Safe to interrupt at any point and run again.
pub fn replay(mbox: &Path, file: &File) -> io::Result<Replay> {
    let path = files::journal(mbox);
    let journal = match private_file().open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replay::Clean),
        Err(e) => return Err(e),
    };
    if !ours(&journal)? {
        log::error!(
            "{}: journal not made by poplar (another owner); not applied",
            path.display()
        );
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "journal owned by another user",
        ));
    }
    let Some(head) = read_complete(&journal)? else {
        log::warn!("{}: discarding an incomplete journal", path.display());
        std::fs::remove_file(&path)?;
        sync_dir(mbox)?;
        return Ok(Replay::Discarded);
    };
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (head.dev, head.ino) {
        return set_aside(mbox, &path, "belongs to a file no longer at this path");
    }
    if meta.len() < head.region_start {
        // Our commit never shortens the file below the region it rewrites: someone else
        // rewrote it since, and applying would write past its end.
        return set_aside(mbox, &path, "is for bytes the mailbox no longer has");
    }
    apply(mbox, file, &path, journal, head)
}

/// Keeps a journal that must not be applied beside the mbox for an operator, and logs it.
fn set_aside(mbox: &Path, path: &Path, why: &str) -> io::Result<Replay> {
    let aside = files::journal_orphan(mbox);
    log::error!(
        "{}: journal {why}; not applied, kept as {}",
        path.display(),
        aside.display()
    );
    std::fs::rename(path, &aside)?;
    sync_dir(mbox)?;
    Ok(Replay::SetAside)
}

/// The head of a journal whose head and payload check out.
pub(super) fn read_complete(journal: &File) -> io::Result<Option<Head>> {
    let mut b = [0u8; HEAD_LEN as usize];
    match journal.read_exact_at(&mut b, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let Some(head) = Head::decode(&b) else {
        return Ok(None);
    };
    let Some(payload) = head.mbox_payload().checked_add(head.index_len) else {
        return Ok(None);
    };
    if Some(journal.metadata()?.len()) != payload.checked_add(HEAD_LEN) {
        return Ok(None);
    }
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut at = 0;
    while at < payload {
        let n = ((payload - at) as usize).min(buf.len());
        journal.read_exact_at(&mut buf[..n], HEAD_LEN + at)?;
        md5.update(&buf[..n]);
        at += n as u64;
    }
    let sum: [u8; 16] = md5.finalize().into();
    Ok((sum == head.payload_md5).then_some(head))
}

fn apply(mbox: &Path, file: &File, path: &Path, journal: File, head: Head) -> io::Result<Replay> {
    let cur = file.metadata()?.len();
    if !head.truncated {
        // Before truncation the mbox is exactly old_len long, or longer if a delivery agent
        // appended after a crash; after it, its bytes at new_len are no longer the old ones.
        let truncated = cur < head.old_len
            || (head.new_len < head.old_len
                && tail_fingerprint(file, head.new_len, head.old_len)? != head.tail_fp);
        if !truncated && cur > head.old_len {
            return rejournal(mbox, file, path, &journal, &head, cur);
        }
        copy_payload(
            &journal,
            (0, head.mbox_payload()),
            file,
            head.region_start,
            Some("apply-partial"),
        )?;
        file.sync_data()?;
        fault::crash_point("applied");
        if !truncated {
            file.set_len(head.new_len)?;
            file.sync_all()?;
        }
        fault::crash_point("truncated");
        write_index(mbox, &journal, &head)?;
        journal.write_all_at(&STATE_TRUNCATED.to_le_bytes(), STATE_AT)?;
        journal.sync_data()?;
        fault::crash_point("state-marked");
    } else {
        write_index(mbox, &journal, &head)?;
    }
    std::fs::remove_file(path)?;
    sync_dir(mbox)?;
    fault::crash_point("journal-removed");
    Ok(Replay::Applied)
}

/// Mail was appended after a crash and before the truncation: a new journal that carries it
/// to its new place, written beside the old one and renamed over it, then applied.
fn rejournal(
    mbox: &Path,
    file: &File,
    path: &Path,
    journal: &File,
    head: &Head,
    cur: u64,
) -> io::Result<Replay> {
    log::warn!(
        "{}: mail appended after an interrupted commit; carrying it over",
        mbox.display()
    );
    let next = files::journal_next(mbox);
    let mut w = JournalWriter::create(&next, true)?;
    let mbox_end = HEAD_LEN + head.mbox_payload();
    w.copy_from(journal, HEAD_LEN, mbox_end)?;
    w.copy_from(file, head.old_len, cur)?;
    let new_len = head.region_start + w.payload_len();
    w.copy_from(journal, mbox_end, mbox_end + head.index_len)?;
    let new_head = Head {
        old_len: cur,
        new_len,
        tail_fp: tail_fingerprint(file, new_len, cur)?,
        ..head.clone()
    };
    w.finish(new_head)?;
    std::fs::rename(&next, path)?;
    sync_dir(mbox)?;
    replay(mbox, file)
}

/// Copies `len` payload bytes from payload offset `from` to `to` at `at`; `crash` names the
/// fault point between chunks.
fn copy_payload(
    journal: &File,
    (from, len): (u64, u64),
    to: &File,
    at: u64,
    crash: Option<&str>,
) -> io::Result<()> {
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut done = 0;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        journal.read_exact_at(&mut buf[..n], HEAD_LEN + from + done)?;
        to.write_all_at(&buf[..n], at + done)?;
        done += n as u64;
        if let Some(step) = crash.filter(|_| done < len) {
            fault::crash_point(step);
        }
    }
    Ok(())
}

fn write_index(mbox: &Path, journal: &File, head: &Head) -> io::Result<()> {
    if head.index_len == 0 {
        return Ok(());
    }
    let index = files::open_index(mbox)?;
    let at = head.mbox_payload();
    let mut header = [0u8; HEADER_LEN as usize];
    journal.read_exact_at(&mut header, HEAD_LEN + at)?;
    let records = head.index_len - HEADER_LEN;
    let dst = HEADER_LEN + head.index_at * RECORD_LEN;
    copy_payload(journal, (at + HEADER_LEN, records), &index, dst, None)?;
    index.set_len(dst + records)?;
    index.write_all_at(&header, 0)?;
    index.sync_all()
}
