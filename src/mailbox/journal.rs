//! The commit journal `<mbox>.poplar-journal`: the new bytes of the mbox from the first
//! deleted message on (and the new index records) written and synced before the mbox is
//! touched, and the one replay routine that applies it, used right after writing it and again
//! at start-up and before any scan or delivery, so that a commit cut short by a crash or an
//! I/O error ends as before or as after, never between.
//!
//! Head (128 octets, little-endian): magic `PLRJRN02`, mbox device and inode, region start,
//! old length, new length, a 16-octet fingerprint of the old bytes at the new length, the
//! index record number and index payload length, the payload's checksum, the checksum of all
//! of that (so a torn head is no head), then the state (0 written, 1 mbox truncated). The
//! payload follows: the mbox bytes for `region_start..new_len`, then the index header and
//! records.
//!
//! The checksums and the fingerprint are XXH3-128, like the index's (XXH3-64): they guard
//! against torn writes, not attackers (the journal is ours, mode 0600, and never applied when
//! another user owns it). Format `PLRJRN01` had the same layout with MD5 in their place; it is
//! still read and replayed, so a journal left by a crash before an upgrade finishes its commit.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use xxhash_rust::xxh3::Xxh3Default;

use super::fault;
use super::files::{self, create_fresh, ours, private_file, sync_dir};
use super::index::{HEADER_LEN, RECORD_LEN};
use crate::limits::FILE_CHUNK;

/// Octets of the journal head; the payload starts here.
pub const HEAD_LEN: u64 = 128;
/// Old bytes at the new length that the fingerprint covers.
const TAIL_SAMPLE: u64 = 64 * 1024;
const STATE_AT: u64 = 112;
const STATE_TRUNCATED: u64 = 1;

/// How a journal's checksums and fingerprint are made: its format, named by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `PLRJRN01`, written by earlier versions: MD5. Read, never written.
    Md5,
    /// `PLRJRN02`: XXH3-128.
    Xxh3,
}

impl Format {
    /// The format journals are written in.
    pub const CURRENT: Format = Format::Xxh3;

    fn magic(self) -> &'static [u8; 8] {
        match self {
            Format::Md5 => b"PLRJRN01",
            Format::Xxh3 => b"PLRJRN02",
        }
    }

    fn of_magic(magic: &[u8]) -> Option<Format> {
        [Format::Xxh3, Format::Md5]
            .into_iter()
            .find(|f| f.magic() == magic)
    }

    fn hasher(self) -> Hasher {
        match self {
            Format::Md5 => Hasher::Md5(Md5::new()),
            Format::Xxh3 => Hasher::Xxh3(Box::new(Xxh3Default::new())),
        }
    }

    fn sum(self, bytes: &[u8]) -> [u8; 16] {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish()
    }
}

/// A running checksum in one journal format.
#[derive(Clone)]
enum Hasher {
    Md5(Md5),
    Xxh3(Box<Xxh3Default>),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Xxh3(h) => h.update(bytes),
        }
    }

    fn finish(self) -> [u8; 16] {
        match self {
            Hasher::Md5(h) => h.finalize().into(),
            Hasher::Xxh3(h) => h.digest128().to_le_bytes(),
        }
    }
}

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
    /// Checksum of the payload.
    pub payload_sum: [u8; 16],
    /// Whether the mbox was already truncated to `new_len`.
    pub truncated: bool,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Head {
    fn encode(&self, format: Format) -> [u8; HEAD_LEN as usize] {
        let mut b = [0u8; HEAD_LEN as usize];
        b[..8].copy_from_slice(format.magic());
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
        b[80..96].copy_from_slice(&self.payload_sum);
        let sum = format.sum(&b[..96]);
        b[96..112].copy_from_slice(&sum);
        b[112..120].copy_from_slice(&u64::from(self.truncated).to_le_bytes());
        b
    }

    /// The head in `b` and the format it was written in; `None` if it is not one or its
    /// checksum fails.
    fn decode(b: &[u8]) -> Option<(Head, Format)> {
        let format = Format::of_magic(&b[..8])?;
        if b[96..112] != format.sum(&b[..96]) {
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
            payload_sum: b[80..96].try_into().expect("16 bytes"),
            truncated: u64_at(b, STATE_AT as usize) == STATE_TRUNCATED,
        };
        // A commit's region starts at a message inside the mbox it was written for, so past
        // neither end: a head that says otherwise came from no commit, and applying it would
        // carry "appended" bytes that overlap the region (found by fuzzing).
        let sane = head.region_start <= head.new_len
            && head.region_start <= head.old_len
            && (head.index_len == 0 || head.index_len >= HEADER_LEN);
        sane.then_some((head, format))
    }

    fn mbox_payload(&self) -> u64 {
        self.new_len - self.region_start
    }
}

/// The fingerprint a journal written now keeps: see [`fingerprint`].
pub fn tail_fingerprint(file: &File, at: u64, end: u64) -> io::Result<[u8; 16]> {
    fingerprint(Format::CURRENT, file, at, end)
}

/// Checksum (in `format`) of the length and of up to 64 KiB of `file` at `at` (before `end`).
fn fingerprint(format: Format, file: &File, at: u64, end: u64) -> io::Result<[u8; 16]> {
    let n = end.saturating_sub(at).min(TAIL_SAMPLE);
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, at)?;
    let mut h = format.hasher();
    h.update(&n.to_le_bytes());
    h.update(&buf);
    Ok(h.finish())
}

/// Writes a journal's payload, then its head, then syncs it.
pub struct JournalWriter {
    file: File,
    path: PathBuf,
    sum: Hasher,
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
            sum: Format::CURRENT.hasher(),
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
        self.sum.update(&self.buf);
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

    /// Completes the journal with `head` (its payload checksum filled in; its fingerprint
    /// made by [`tail_fingerprint`]) and syncs it and its directory: from here on the commit
    /// happens, now or at the next replay.
    pub fn finish(mut self, mut head: Head) -> io::Result<()> {
        self.flush()?;
        fault::crash_point("journal-partial");
        head.payload_sum = self.sum.clone().finish();
        self.file.write_all_at(&head.encode(Format::CURRENT), 0)?;
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
    let Some((head, format)) = read_complete(&journal)? else {
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
    apply(mbox, file, &path, journal, head, format)
}

/// Keeps a journal that must not be applied beside the mbox for an operator, under a name
/// of its own (never over an earlier one), and logs it.
fn set_aside(mbox: &Path, path: &Path, why: &str) -> io::Result<Replay> {
    let aside = files::move_to_orphan(path, mbox)?;
    log::warn!(
        "{}: journal {why}; not applied, kept as {}",
        path.display(),
        aside.display()
    );
    sync_dir(mbox)?;
    Ok(Replay::SetAside)
}

/// The head of a journal whose head and payload check out, and the journal's format.
pub(super) fn read_complete(journal: &File) -> io::Result<Option<(Head, Format)>> {
    let mut b = [0u8; HEAD_LEN as usize];
    match journal.read_exact_at(&mut b, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let Some((head, format)) = Head::decode(&b) else {
        return Ok(None);
    };
    let Some(payload) = head.mbox_payload().checked_add(head.index_len) else {
        return Ok(None);
    };
    if Some(journal.metadata()?.len()) != payload.checked_add(HEAD_LEN) {
        return Ok(None);
    }
    let mut sum = format.hasher();
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut at = 0;
    while at < payload {
        let n = ((payload - at) as usize).min(buf.len());
        journal.read_exact_at(&mut buf[..n], HEAD_LEN + at)?;
        sum.update(&buf[..n]);
        at += n as u64;
    }
    let complete = sum.finish() == head.payload_sum;
    Ok(complete.then_some((head, format)))
}

fn apply(
    mbox: &Path,
    file: &File,
    path: &Path,
    journal: File,
    head: Head,
    format: Format,
) -> io::Result<Replay> {
    let cur = file.metadata()?.len();
    if !head.truncated {
        // Before truncation the mbox is exactly old_len long, or longer if a delivery agent
        // appended after a crash; after it, its bytes at new_len are no longer the old ones.
        let truncated = cur < head.old_len
            || (head.new_len < head.old_len
                && fingerprint(format, file, head.new_len, head.old_len)? != head.tail_fp);
        if !truncated && cur > head.old_len {
            return rejournal(mbox, file, path, &journal, &head, cur);
        }
        if truncated {
            // Our truncation came after the payload was written and synced, so the region
            // holds it exactly. Anything else there is another program's rewrite since the
            // crash (a mail reader's expunge after a delivery's append, say): writing the
            // payload over it would destroy that mail and bring back what it removed.
            if !payload_in_place(&journal, &head, file, cur)? {
                return set_aside(
                    mbox,
                    path,
                    "is for bytes another program has rewritten since",
                );
            }
        } else {
            copy_payload(
                &journal,
                (0, head.mbox_payload()),
                (file, head.region_start),
                "apply-write",
                Some("apply-partial"),
            )?;
            fault::io_point("apply-sync")?;
            file.sync_data()?;
            fault::crash_point("applied");
            fault::io_point("truncate")?;
            file.set_len(head.new_len)?;
        }
        fault::io_point("truncate-sync")?;
        file.sync_all()?;
        fault::crash_point("truncated");
        write_index(mbox, &journal, &head)?;
        fault::io_point("state-mark")?;
        journal.write_all_at(&STATE_TRUNCATED.to_le_bytes(), STATE_AT)?;
        fault::io_point("state-sync")?;
        journal.sync_data()?;
        fault::crash_point("state-marked");
    } else {
        write_index(mbox, &journal, &head)?;
    }
    fault::io_point("journal-remove")?;
    std::fs::remove_file(path)?;
    fault::io_point("journal-remove-sync")?;
    sync_dir(mbox)?;
    fault::crash_point("journal-removed");
    Ok(Replay::Applied)
}

/// Whether `file` (now `cur` octets long) holds the journal's mbox payload at the region,
/// as a commit leaves it once it has truncated.
fn payload_in_place(journal: &File, head: &Head, file: &File, cur: u64) -> io::Result<bool> {
    if cur < head.new_len {
        return Ok(false);
    }
    let len = head.mbox_payload();
    let (mut want, mut got) = (vec![0u8; FILE_CHUNK], vec![0u8; FILE_CHUNK]);
    let mut done = 0;
    while done < len {
        let n = ((len - done) as usize).min(FILE_CHUNK);
        journal.read_exact_at(&mut want[..n], HEAD_LEN + done)?;
        file.read_exact_at(&mut got[..n], head.region_start + done)?;
        if want[..n] != got[..n] {
            return Ok(false);
        }
        done += n as u64;
    }
    Ok(true)
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

/// Copies `len` payload bytes from payload offset `from` to `to` at `at`; `write` names the
/// fault point of each chunk's write, `crash` the one between chunks.
fn copy_payload(
    journal: &File,
    (from, len): (u64, u64),
    (to, at): (&File, u64),
    write: &str,
    crash: Option<&str>,
) -> io::Result<()> {
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut done = 0;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        journal.read_exact_at(&mut buf[..n], HEAD_LEN + from + done)?;
        fault::io_point(write)?;
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
    copy_payload(
        journal,
        (at + HEADER_LEN, records),
        (&index, dst),
        "index-write",
        None,
    )?;
    fault::io_point("index-truncate")?;
    index.set_len(dst + records)?;
    fault::io_point("index-header")?;
    index.write_all_at(&header, 0)?;
    fault::io_point("index-sync")?;
    index.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBOX: &[u8] = b"From a\n\nA\n\nFrom b\n\nB\n\nFrom c\n\nC\n";
    /// Where `From b` starts: the commit deletes it.
    const REGION: u64 = 11;
    const PAYLOAD: &[u8] = b"From c\n\nC\n";

    /// Writes beside `mbox` the journal of a commit that deletes message b, exactly as the
    /// previous version wrote it (format 01): the head laid out by hand, with MD5 for the
    /// fingerprint, the payload and the head, so that the test does not lean on the code it
    /// tests.
    fn write_md5_journal(mbox: &Path) {
        let meta = std::fs::metadata(mbox).unwrap();
        let old = std::fs::read(mbox).unwrap();
        let new_len = REGION + PAYLOAD.len() as u64;
        let tail = &old[new_len as usize..];
        let mut fp = Md5::new();
        fp.update((tail.len() as u64).to_le_bytes());
        fp.update(tail);
        let fp: [u8; 16] = fp.finalize().into();
        let mut head = [0u8; 128];
        head[..8].copy_from_slice(b"PLRJRN01");
        let nums = [meta.dev(), meta.ino(), REGION, old.len() as u64, new_len];
        for (i, v) in nums.into_iter().enumerate() {
            head[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        head[48..64].copy_from_slice(&fp);
        // Index record number and index payload length stay 0: the index is left alone.
        let payload_sum: [u8; 16] = Md5::digest(PAYLOAD).into();
        head[80..96].copy_from_slice(&payload_sum);
        let head_sum: [u8; 16] = Md5::digest(&head[..96]).into();
        head[96..112].copy_from_slice(&head_sum);
        std::fs::write(files::journal(mbox), [&head[..], PAYLOAD].concat()).unwrap();
    }

    /// The mbox `m` in `dir`, with the journal a crash left there.
    fn mbox_with_md5_journal(dir: &Path) -> PathBuf {
        let mbox = dir.join("m");
        std::fs::write(&mbox, MBOX).unwrap();
        write_md5_journal(&mbox);
        mbox
    }

    fn open(mbox: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(mbox)
            .unwrap()
    }

    #[test]
    fn a_journal_of_the_md5_format_left_by_a_crash_is_still_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = mbox_with_md5_journal(dir.path());
        let j = File::open(files::journal(&mbox)).unwrap();
        assert_eq!(
            read_complete(&j).unwrap().map(|(_, f)| f),
            Some(Format::Md5)
        );
        assert_eq!(replay(&mbox, &open(&mbox)).unwrap(), Replay::Applied);
        assert_eq!(
            std::fs::read(&mbox).unwrap(),
            b"From a\n\nA\n\nFrom c\n\nC\n"
        );
        assert!(!files::journal(&mbox).exists());
    }

    #[test]
    fn mail_appended_after_a_crash_is_carried_over_from_an_md5_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = mbox_with_md5_journal(dir.path());
        // A delivery agent broke the crashed commit's stale dotlock and appended: the old
        // fingerprint must still say "not truncated yet", or this mail would be mangled.
        let appended = b"\nFrom d\n\nD\n";
        let file = open(&mbox);
        file.write_all_at(appended, MBOX.len() as u64).unwrap();
        assert_eq!(replay(&mbox, &file).unwrap(), Replay::Applied);
        assert_eq!(
            std::fs::read(&mbox).unwrap(),
            b"From a\n\nA\n\nFrom c\n\nC\n\nFrom d\n\nD\n"
        );
        assert!(!files::journal(&mbox).exists());
        assert!(!files::journal_next(&mbox).exists());
    }

    /// Writes beside `mbox` the current-format journal of a commit that deletes message b.
    fn write_journal(mbox: &Path) {
        let file = open(mbox);
        let meta = file.metadata().unwrap();
        let new_len = REGION + PAYLOAD.len() as u64;
        let mut w = JournalWriter::create(&files::journal(mbox), false).unwrap();
        w.write(PAYLOAD).unwrap();
        w.finish(Head {
            dev: meta.dev(),
            ino: meta.ino(),
            region_start: REGION,
            old_len: meta.len(),
            new_len,
            tail_fp: tail_fingerprint(&file, new_len, meta.len()).unwrap(),
            index_at: 0,
            index_len: 0,
            payload_sum: [0; 16],
            truncated: false,
        })
        .unwrap();
    }

    /// The journals set aside beside `mbox`, by content.
    fn orphans(mbox: &Path) -> Vec<Vec<u8>> {
        let prefix = files::journal_orphan_prefix(mbox);
        let prefix = prefix.file_name().unwrap().as_encoded_bytes();
        let mut found: Vec<_> = std::fs::read_dir(mbox.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().as_encoded_bytes().starts_with(prefix))
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_mailbox_rewritten_shorter_after_the_crash_is_not_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, MBOX).unwrap();
        write_journal(&mbox);
        let journal = std::fs::read(files::journal(&mbox)).unwrap();
        // The crash came after the truncation; then a delivery agent appended d and a mail
        // reader expunged a: shorter than the journal's old length, and not our bytes.
        let rewritten = b"From c\n\nC\n\nFrom d\n\nD\n";
        assert!((rewritten.len() as u64) < MBOX.len() as u64);
        let file = open(&mbox);
        file.set_len(0).unwrap();
        file.write_all_at(rewritten, 0).unwrap();
        assert_eq!(replay(&mbox, &file).unwrap(), Replay::SetAside);
        assert_eq!(std::fs::read(&mbox).unwrap(), rewritten);
        assert!(!files::journal(&mbox).exists());
        assert_eq!(orphans(&mbox), [journal]);
    }

    #[test]
    fn a_mailbox_truncated_by_the_commit_and_appended_to_since_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, MBOX).unwrap();
        write_journal(&mbox);
        // The crash came after the truncation; then a short message was appended: shorter
        // than the old length, with the payload in place.
        let now = b"From a\n\nA\n\nFrom c\n\nC\n\nFrom d\n\n";
        assert!((now.len() as u64) < MBOX.len() as u64);
        let file = open(&mbox);
        file.set_len(0).unwrap();
        file.write_all_at(now, 0).unwrap();
        assert_eq!(replay(&mbox, &file).unwrap(), Replay::Applied);
        assert_eq!(std::fs::read(&mbox).unwrap(), now);
        assert!(!files::journal(&mbox).exists());
        assert!(orphans(&mbox).is_empty());
    }

    #[test]
    fn a_complete_journal_whose_region_starts_past_its_old_end_is_never_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, MBOX).unwrap();
        let file = open(&mbox);
        let meta = file.metadata().unwrap();
        let mut w = JournalWriter::create(&files::journal(&mbox), true).unwrap();
        w.write(b"").unwrap();
        w.finish(Head {
            dev: meta.dev(),
            ino: meta.ino(),
            region_start: 10,
            old_len: 0,
            new_len: 10,
            tail_fp: [0; 16],
            index_at: 0,
            index_len: 0,
            payload_sum: [0; 16],
            truncated: false,
        })
        .unwrap();
        assert_ne!(replay(&mbox, &file).unwrap(), Replay::Applied);
        assert_eq!(std::fs::read(&mbox).unwrap(), MBOX);
    }

    #[test]
    fn every_journal_set_aside_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, MBOX).unwrap();
        let mut kept = Vec::new();
        for _ in 0..2 {
            write_journal(&mbox);
            kept.push(std::fs::read(files::journal(&mbox)).unwrap());
            // A mail reader replaces the mbox by rename: the journal is for another inode.
            let new = dir.path().join("m.new");
            std::fs::write(&new, MBOX).unwrap();
            std::fs::rename(&new, &mbox).unwrap();
            assert_eq!(replay(&mbox, &open(&mbox)).unwrap(), Replay::SetAside);
        }
        assert_ne!(kept[0], kept[1], "two different journals");
        kept.sort();
        assert_eq!(orphans(&mbox), kept);
    }

    #[test]
    fn heads_round_trip_and_a_torn_head_of_either_format_is_no_head() {
        let head = Head {
            dev: 1,
            ino: 2,
            region_start: 3,
            old_len: 10,
            new_len: 5,
            tail_fp: [4; 16],
            index_at: 0,
            index_len: 0,
            payload_sum: [5; 16],
            truncated: false,
        };
        for format in [Format::Md5, Format::Xxh3] {
            let mut b = head.encode(format);
            assert_eq!(Head::decode(&b), Some((head.clone(), format)));
            b[20] ^= 1;
            assert_eq!(Head::decode(&b), None);
        }
        assert_eq!(&head.encode(Format::CURRENT)[..8], b"PLRJRN02");
    }
}
