//! The sidecar index `<mbox>.poplar-index`: its binary format (a checked header, then one
//! fixed-size checked record per message), and reading and writing it.
//!
//! Header (80 octets, little-endian): magic `PLRIDX01`, epoch, next serial, the mbox's device
//! and inode, the bytes of the mbox the records cover, a checksum of the covered bytes just
//! before that boundary, the mbox mtime (seconds, nanoseconds) when known (0, 0 if not), and
//! the XXH3-64 of all that. Record (160 octets): From_ offset, data offset, end offset, size
//! as stored, size unquoted, digest (16), serial, `X-UIDL` length and value (70), a flag
//! byte (1: the message shows an IMAP UID), its `X-UID` and the folder's UIDVALIDITY (u32
//! each), padding, the XXH3-64 of the rest. Records are in file order, so
//! record `i` is message `i + 1`, and a commit rewrites only the records from the first
//! deleted message on.
//!
//! The checksums guard against torn writes and damage, not against an attacker (the file is
//! ours, mode 0600, and not believed when another user owns it), so a fast non-cryptographic
//! hash does: XXH3 checks a record in a few nanoseconds, where MD5 took most of a repeat
//! login. Format 01 used MD5; its magic no longer matches, so such an index is rebuilt (with
//! a new epoch: every UID changes once), never misread. Format 02 had no IMAP UIDs and counted
//! bookkeeping headers and the pseudo-message: its records are never trusted, but its epoch
//! and serials are, so the rebuild that follows keeps every UID it showed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

use md5::{Digest, Md5};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use super::positioned::WriterAt;
use crate::limits::INDEX_WRITE_BACK_RECORDS;

/// Octets of the header.
pub const HEADER_LEN: u64 = 80;
/// Octets of one record.
pub const RECORD_LEN: u64 = 160;
/// Octets before the covered boundary whose checksum the header keeps.
pub const BOUNDARY_SPAN: u64 = 4096;
const MAGIC: &[u8; 8] = b"PLRIDX03";
/// The previous format: read for its epoch and serials only.
const MAGIC_02: &[u8; 8] = b"PLRIDX02";
const UID_CAP: usize = 70;

/// Where one message lies in the mbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset of the `From ` line.
    pub start: u64,
    /// Offset of the first byte after the `From ` line.
    pub data: u64,
    /// Offset just past the message data (the separating blank line is not included).
    pub end: u64,
}

/// The index header: UID state and what the records were validated against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Random-ish 48-bit value fixed when the index was first made; the first half of a UID.
    pub epoch: u64,
    /// The serial the next new message gets; only ever grows.
    pub next_serial: u64,
    /// Device of the mbox.
    pub dev: u64,
    /// Inode of the mbox.
    pub ino: u64,
    /// Bytes of the mbox the records describe (the file's length when it was scanned).
    pub covered: u64,
    /// [`boundary_hash`] of the mbox at `covered`.
    pub boundary: [u8; 8],
    /// The mbox's mtime when `covered` was its length, or (0, 0) when not known.
    pub mtime: (i64, i64),
    /// The records are of this format; `false` for format 02, whose records are good only
    /// for their digests and serials.
    pub current: bool,
}

/// One message in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where the message lies.
    pub extent: Extent,
    /// Octets as sent with stored bytes.
    pub size: u64,
    /// Octets as sent with `--mbox-unquote`.
    pub unquoted_size: u64,
    /// Digest of the From_ line and stable headers (see `scan`).
    pub digest: [u8; 16],
    /// The message's serial: the second half of its UID.
    pub serial: u64,
    /// A well-formed `X-UIDL:` value from its headers.
    pub header_uid: Option<String>,
    /// The IMAP UID the message shows as its UIDL (Dovecot's `%08Xu%08Xv`), fixed when the
    /// message was first indexed.
    pub imap: Option<ImapUid>,
}

/// A message's UID in an IMAP server's numbering of the same mbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapUid {
    /// Its `X-UID:`.
    pub uid: u32,
    /// The folder's UIDVALIDITY when the message was first indexed.
    pub validity: u32,
}

fn checksum(bytes: &[u8]) -> [u8; 8] {
    xxh3_64(bytes).to_le_bytes()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[..8].copy_from_slice(MAGIC);
        for (i, v) in [
            self.epoch,
            self.next_serial,
            self.dev,
            self.ino,
            self.covered,
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[48..56].copy_from_slice(&self.boundary);
        b[56..64].copy_from_slice(&self.mtime.0.to_le_bytes());
        b[64..72].copy_from_slice(&self.mtime.1.to_le_bytes());
        let sum = checksum(&b[..72]);
        b[72..].copy_from_slice(&sum);
        b
    }

    /// Decodes a header; `None` if it is not one or its checksum fails.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN as usize
            || (&b[..8] != MAGIC && &b[..8] != MAGIC_02)
            || checksum(&b[..72]) != b[72..80]
        {
            return None;
        }
        Some(Header {
            epoch: u64_at(b, 8),
            next_serial: u64_at(b, 16),
            dev: u64_at(b, 24),
            ino: u64_at(b, 32),
            covered: u64_at(b, 40),
            boundary: b[48..56].try_into().expect("8 bytes"),
            mtime: (u64_at(b, 56) as i64, u64_at(b, 64) as i64),
            current: &b[..8] == MAGIC,
        })
    }
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RECORD_LEN as usize] {
        let mut b = [0u8; RECORD_LEN as usize];
        let e = &self.extent;
        for (i, v) in [e.start, e.data, e.end, self.size, self.unquoted_size]
            .into_iter()
            .enumerate()
        {
            b[8 * i..8 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[40..56].copy_from_slice(&self.digest);
        b[56..64].copy_from_slice(&self.serial.to_le_bytes());
        if let Some(u) = self.header_uid.as_deref().filter(|u| u.len() <= UID_CAP) {
            b[64] = u.len() as u8;
            b[65..65 + u.len()].copy_from_slice(u.as_bytes());
        }
        if let Some(i) = self.imap {
            b[135] = 1;
            b[136..140].copy_from_slice(&i.uid.to_le_bytes());
            b[140..144].copy_from_slice(&i.validity.to_le_bytes());
        }
        let sum = checksum(&b[..152]);
        b[152..].copy_from_slice(&sum);
        b
    }

    /// Decodes a record; `None` if its checksum fails or it is not self-consistent.
    pub fn decode(b: &[u8]) -> Option<Record> {
        if b.len() < RECORD_LEN as usize || checksum(&b[..152]) != b[152..160] {
            return None;
        }
        let extent = Extent {
            start: u64_at(b, 0),
            data: u64_at(b, 8),
            end: u64_at(b, 16),
        };
        let ulen = usize::from(b[64]);
        if extent.start > extent.data || extent.data > extent.end || ulen > UID_CAP {
            return None;
        }
        Some(Record {
            extent,
            size: u64_at(b, 24),
            unquoted_size: u64_at(b, 32),
            digest: b[40..56].try_into().expect("16 bytes"),
            serial: u64_at(b, 56),
            header_uid: (ulen > 0).then(|| String::from_utf8_lossy(&b[65..65 + ulen]).into()),
            imap: (b[135] == 1).then(|| ImapUid {
                uid: u32::from_le_bytes(b[136..140].try_into().expect("4 bytes")),
                validity: u32::from_le_bytes(b[140..144].try_into().expect("4 bytes")),
            }),
        })
    }

    /// The same message moved so that its From_ line is at `start`.
    pub fn moved_to(&self, start: u64) -> Record {
        let e = self.extent;
        Record {
            extent: Extent {
                start,
                data: start + (e.data - e.start),
                end: start + (e.end - e.start),
            },
            ..self.clone()
        }
    }
}

/// A fresh epoch: 48 bits from the time, the process and the mbox path, so that an index
/// made again after being lost never repeats the UIDs of the old one.
pub fn new_epoch(mbox: &std::path::Path) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = Md5::new();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(mbox.as_os_str().as_encoded_bytes());
    let d: [u8; 16] = h.finalize().into();
    u64::from_le_bytes(d[..8].try_into().expect("8 of 16")) & 0xffff_ffff_ffff
}

/// Checksum of the `BOUNDARY_SPAN` bytes before `covered`, read through `read_at`: cheap
/// evidence that the covered part of the mbox is still what the index describes.
pub fn boundary_hash(
    covered: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<()>,
) -> io::Result<[u8; 8]> {
    let from = covered.saturating_sub(BOUNDARY_SPAN);
    let mut buf = vec![0u8; (covered - from) as usize];
    read_at(&mut buf, from)?;
    let mut h = Xxh3Default::new();
    h.update(&covered.to_le_bytes());
    h.update(&buf);
    Ok(h.digest().to_le_bytes())
}

/// Writes the header for an index that now covers `covered` bytes of `file`.
pub fn write_header(
    index: &File,
    file: &File,
    epoch: u64,
    next_serial: u64,
    covered: u64,
) -> io::Result<()> {
    let meta = file.metadata()?;
    let h = Header {
        epoch,
        next_serial,
        dev: meta.dev(),
        ino: meta.ino(),
        covered,
        boundary: boundary_hash(covered, |b, o| file.read_exact_at(b, o))?,
        mtime: if meta.len() == covered {
            (meta.mtime(), meta.mtime_nsec())
        } else {
            (0, 0)
        },
        current: true,
    };
    index.write_all_at(&h.encode(), 0)
}

/// Reads the header of an index file; `None` if there is none or it is damaged.
pub fn read_header(index: &File) -> io::Result<Option<Header>> {
    let mut b = [0u8; HEADER_LEN as usize];
    match index.read_exact_at(&mut b, 0) {
        Ok(()) => Ok(Header::decode(&b)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// How many whole records the index file holds.
pub fn record_count(index: &File) -> io::Result<u64> {
    Ok(records_in(index.metadata()?.len()))
}

/// How many whole records an index file of `len` octets holds.
pub fn records_in(len: u64) -> u64 {
    len.saturating_sub(HEADER_LEN) / RECORD_LEN
}

/// Streams the records of an index file from record `from` on, in order, one read buffer
/// at a time. A damaged record comes out as `None`.
pub fn records(index: &File, from: u64) -> impl Iterator<Item = io::Result<Option<Record>>> {
    records_of(index, from, record_count(index).unwrap_or(0))
}

/// [`records`] from record `from` up to `total`, for a caller that knows the file's length.
pub fn records_of(
    index: &File,
    from: u64,
    total: u64,
) -> impl Iterator<Item = io::Result<Option<Record>>> {
    let mut reader = io::BufReader::with_capacity(
        crate::limits::FILE_CHUNK,
        RangeRead {
            file: index,
            pos: HEADER_LEN + from * RECORD_LEN,
        },
    );
    (from..total).map(move |_| {
        let mut b = [0u8; RECORD_LEN as usize];
        reader.read_exact(&mut b)?;
        Ok(Record::decode(&b))
    })
}

struct RangeRead<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for RangeRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes records one after another from record `from` on, buffered.
pub struct RecordWriter<'f> {
    index: &'f File,
    out: BufWriter<WriterAt<'f>>,
    /// Offset of the first octet written since write-back was last started.
    unstarted: u64,
    /// Records written since then.
    pending: u64,
}

impl<'f> RecordWriter<'f> {
    /// Starts writing at record `from` of `index`.
    pub fn new(index: &'f File, from: u64) -> RecordWriter<'f> {
        let at = HEADER_LEN + from * RECORD_LEN;
        RecordWriter {
            index,
            out: BufWriter::with_capacity(crate::limits::FILE_CHUNK, WriterAt::new(index, at)),
            unstarted: at,
            pending: 0,
        }
    }

    /// Writes the next record.
    pub fn push(&mut self, r: &Record) -> io::Result<()> {
        self.out.write_all(&r.encode())?;
        self.pending += 1;
        if self.pending == INDEX_WRITE_BACK_RECORDS {
            self.start_write_back()?;
        }
        Ok(())
    }

    /// Has the kernel start writing what was written since the last call to disk now, while
    /// the scan goes on, so that the `fsync` at the end of a big index (15 MiB for 100,000
    /// messages; 10 ms here when all of it waited for it) finds little left to write.
    /// `POSIX_FADV_DONTNEED` starts write-back of dirty pages; pages still dirty or under
    /// write-back stay cached, so a login right after still reads the index from memory.
    fn start_write_back(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let len = self.pending * RECORD_LEN;
        // Advice only: a file system that ignores it just leaves the work to the fsync.
        // A length of 0 would mean "to the end of the file".
        if len > 0 {
            let _ = nix::fcntl::posix_fadvise(
                self.index,
                self.unstarted as i64,
                len as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        self.unstarted += len;
        self.pending = 0;
        Ok(())
    }

    /// Flushes; the file then ends after the last record written (when `truncate`).
    pub fn finish(self, truncate: bool) -> io::Result<()> {
        let w = self.out.into_inner().map_err(|e| e.into_error())?;
        if truncate {
            w.truncate_here()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start: u64, serial: u64, uid: Option<&str>) -> Record {
        Record {
            extent: Extent {
                start,
                data: start + 40,
                end: start + 100,
            },
            size: 64,
            unquoted_size: 63,
            digest: [7; 16],
            serial,
            header_uid: uid.map(str::to_owned),
            imap: None,
        }
    }

    #[test]
    fn header_and_records_round_trip_and_damage_is_detected() {
        let h = Header {
            epoch: 0xabc,
            next_serial: 9,
            dev: 1,
            ino: 2,
            covered: 300,
            boundary: [5; 8],
            mtime: (1_700_000_000, 12),
            current: true,
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b), Some(h));
        b[30] ^= 1;
        assert_eq!(Header::decode(&b), None);
        let mut dovecot = record(400, 3, None);
        dovecot.imap = Some(ImapUid {
            uid: 77,
            validity: 0x6b12_ed6b,
        });
        for r in [
            record(0, 1, None),
            record(200, 2, Some("qpopper-uid.1")),
            dovecot,
        ] {
            let mut b = r.encode();
            assert_eq!(Record::decode(&b).as_ref(), Some(&r));
            b[100] ^= 0x80;
            assert_eq!(Record::decode(&b), None);
        }
        assert_eq!(Record::decode(&[0; RECORD_LEN as usize]), None);
    }

    #[test]
    fn a_format_02_header_is_read_but_its_records_are_not_current() {
        let h = Header {
            epoch: 0xabc,
            next_serial: 9,
            dev: 1,
            ino: 2,
            covered: 300,
            boundary: [5; 8],
            mtime: (0, 0),
            current: true,
        };
        let mut b = h.encode();
        b[..8].copy_from_slice(MAGIC_02);
        let sum = checksum(&b[..72]);
        b[72..].copy_from_slice(&sum);
        let old = Header::decode(&b).unwrap();
        assert_eq!((old.epoch, old.next_serial, old.current), (0xabc, 9, false));
        // Written again, it is of the current format.
        assert!(Header::decode(&old.encode()).unwrap().current);
    }

    #[test]
    fn records_are_written_and_streamed_back_in_order() {
        let f = tempfile::tempfile().unwrap();
        let mut w = RecordWriter::new(&f, 0);
        for i in 0..1000 {
            w.push(&record(i * 200, i + 1, None)).unwrap();
        }
        w.finish(true).unwrap();
        assert_eq!(record_count(&f).unwrap(), 1000);
        let back: Vec<_> = records(&f, 998).map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(
            back,
            vec![record(998 * 200, 999, None), record(999 * 200, 1000, None)]
        );
        let fifth = records(&f, 5).next().unwrap().unwrap();
        assert_eq!(fifth, Some(record(1000, 6, None)));
        let mut w = RecordWriter::new(&f, 2);
        w.push(&record(1, 1, None)).unwrap();
        w.finish(true).unwrap();
        assert_eq!(record_count(&f).unwrap(), 3);
    }

    #[test]
    fn records_written_across_write_back_starts_all_arrive() {
        let f = tempfile::tempfile().unwrap();
        // From record 3 on, over two starts of write-back and a part-filled third stretch.
        let n = 2 * INDEX_WRITE_BACK_RECORDS + 17;
        let mut w = RecordWriter::new(&f, 3);
        for i in 0..n {
            w.push(&record(i * 100, i + 1, Some("u"))).unwrap();
        }
        w.finish(true).unwrap();
        assert_eq!(record_count(&f).unwrap(), 3 + n);
        for (i, r) in records(&f, 3).enumerate() {
            let i = i as u64;
            assert_eq!(
                r.unwrap(),
                Some(record(i * 100, i + 1, Some("u"))),
                "record {i}"
            );
        }
    }
}
