//! UIDs at login: reconcile the sidecar index with the mbox (trusting it only when the file
//! is provably the same or only grown), give new messages new serials (and, in a folder an
//! IMAP server numbered, the IMAP UID it gave them), persist, and build the session's view.
//! The folder-internal pseudo-message is not a message here: no record, no number.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::files::{self, create_fresh, ours};
use super::index::{self, Extent, Header, ImapUid, Record, RecordWriter, write_header};
use super::scan::{self, Found, ImapBase};
use super::{MessageInfo, Uid};

/// How messages are presented to sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewOptions {
    /// `--mbox-unquote`: sizes (and bodies) with one `>` fewer on `>+From ` lines.
    pub unquote: bool,
    /// `--uidl-from-header`: a unique `X-UIDL:` header value is the message's UID.
    pub uidl_from_header: bool,
}

/// A session's view of the mailbox at login.
#[derive(Debug, Default)]
pub struct View {
    /// Where each message lies, in order.
    pub extents: Vec<Extent>,
    /// Size and UID of each message, in the same order.
    pub infos: Vec<MessageInfo>,
    /// The mbox's length at login.
    pub len: u64,
    /// Bytes of the mbox read to build the view (what the index saved shows here).
    pub bytes_scanned: u64,
}

struct Builder {
    opts: ViewOptions,
    epoch: u64,
    view: View,
    header_uids: Vec<(usize, String)>,
    /// The folder's IMAP UID state: from the first message's `X-IMAPbase:` (or the
    /// pseudo-message's `X-IMAP:`) on a whole scan; from the records on a partial one.
    folder: Option<ImapBase>,
    /// The highest IMAP UID shown so far: a new one must be higher, as Dovecot requires.
    last_imap: u32,
}

impl Builder {
    fn new(opts: ViewOptions, epoch: u64) -> Builder {
        Builder {
            opts,
            epoch,
            view: View::default(),
            header_uids: Vec::new(),
            folder: None,
            last_imap: 0,
        }
    }

    /// The IMAP UID a message seen for the first time shows: its `X-UID` in a folder with a
    /// UIDVALIDITY, if it is higher than every one before it and not past the folder's last
    /// (a header that came in with the mail, or a copy, gets poplar's own UID instead).
    fn new_imap(&self, f: &Found) -> Option<ImapUid> {
        let folder = self.folder?;
        let uid = f.imap_uid?;
        let in_order = uid > self.last_imap && (folder.last == 0 || uid <= folder.last);
        in_order.then_some(ImapUid {
            uid,
            validity: folder.validity,
        })
    }

    fn push(&mut self, r: &Record) {
        let size = if self.opts.unquote {
            r.unquoted_size
        } else {
            r.size
        };
        if let Some(u) = r.header_uid.as_ref().filter(|_| self.opts.uidl_from_header) {
            self.header_uids.push((self.view.infos.len(), u.clone()));
        }
        let uid = match r.imap {
            Some(i) => {
                self.last_imap = self.last_imap.max(i.uid);
                if self.folder.is_none() {
                    self.folder = Some(ImapBase {
                        validity: i.validity,
                        last: 0,
                    });
                }
                Uid::Imap {
                    uid: i.uid,
                    validity: i.validity,
                }
            }
            None => Uid::Serial {
                epoch: self.epoch,
                serial: r.serial,
            },
        };
        self.view.extents.push(r.extent);
        self.view.infos.push(MessageInfo { size, uid });
    }

    /// Puts header UIDs in place where they are unique among all UIDs of the mailbox.
    fn finish(mut self) -> View {
        if self.header_uids.is_empty() {
            return self.view;
        }
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, u) in &self.header_uids {
            *count.entry(u).or_default() += 1;
        }
        let generated: HashSet<String> =
            self.view.infos.iter().map(|i| i.uid.to_string()).collect();
        let usable: Vec<(usize, String)> = self
            .header_uids
            .iter()
            .filter(|(_, u)| count[u.as_str()] == 1 && !generated.contains(u))
            .cloned()
            .collect();
        for (i, u) in usable {
            self.view.infos[i].uid = Uid::Text(u);
        }
        self.view
    }
}

/// Scans `file` from `from`; each message gets the serial (and IMAP UID) `known` has for it,
/// or else the next new one (`next`, which grows) and the IMAP UID its headers give, and goes
/// into the view and the index. Returns where the scan stopped.
fn scan_records(
    file: &File,
    from: u64,
    b: &mut Builder,
    w: &mut RecordWriter,
    next: &mut u64,
    mut known: impl FnMut(&Found) -> Option<(u64, Option<ImapUid>)>,
) -> io::Result<u64> {
    scan::scan(file, from, |f| {
        if f.start == 0 {
            // Only the first message of the file holds the folder's UID state.
            b.folder = f.imap_base;
        }
        if f.internal {
            return Ok(());
        }
        let (serial, imap) = known(&f).unwrap_or_else(|| {
            *next += 1;
            (*next - 1, b.new_imap(&f))
        });
        let r = record(f, serial, imap);
        b.push(&r);
        w.push(&r)
    })
}

fn record(f: Found, serial: u64, imap: Option<ImapUid>) -> Record {
    Record {
        extent: Extent {
            start: f.start,
            data: f.data,
            end: f.end,
        },
        size: f.size,
        unquoted_size: f.unquoted_size,
        digest: f.digest,
        serial,
        header_uid: f.header_uid,
        imap,
    }
}

/// Brings the index of `mbox` (open as `file`, delivery locks held, journal replayed) up to
/// date and returns the session's view. The index is trusted only when its header and
/// records check out and the file is the same one, not shorter, with the same bytes at the
/// covered boundary (and the same mtime if not longer); then only the bytes after the last
/// indexed message are read. Otherwise the whole file is scanned and the old serials are
/// matched to messages by digest, in order, so UIDs survive a mail reader's rewrite.
pub fn reconcile(mbox: &Path, file: &File, opts: ViewOptions) -> io::Result<View> {
    let index = files::open_index(mbox)?;
    let meta = file.metadata()?;
    if !ours(&index)? {
        // Someone else's file: believe none of it; the rebuild renames ours over it.
        log::warn!("{}: index not made by poplar; rebuilt", mbox.display());
        return rebuild(mbox, None, file, opts);
    }
    if let Some(h) = index::read_header(&index)?
        && trusted(&h, &meta, file)?
        && let Some(view) = grow(
            &index,
            index::record_count(&index)?,
            &h,
            file,
            meta.len(),
            opts,
        )?
    {
        return Ok(view);
    }
    rebuild(mbox, Some(&index), file, opts)
}

/// The view of `mbox` (open as `file`, whose metadata `meta` was read under a read lock)
/// when its index describes it exactly: the same file, the same length and mtime, the same
/// bytes at the boundary. Read from the index alone, writing nothing; also returns the
/// boundary checksum it checked. `None` when anything else (no index, someone else's, a
/// damaged one, a changed or grown mbox) sends the login to [`reconcile`] under the locks
/// that let it write.
pub fn unchanged(
    mbox: &Path,
    file: &File,
    meta: &std::fs::Metadata,
    opts: ViewOptions,
) -> io::Result<Option<(View, [u8; 8])>> {
    let index = match files::read_only(&files::index(mbox)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let index_meta = index.metadata()?;
    if !files::ours_by(&index_meta) {
        return Ok(None);
    }
    let Some(h) = index::read_header(&index)? else {
        return Ok(None);
    };
    let same = h.current
        && (h.dev, h.ino) == (meta.dev(), meta.ino())
        && meta.len() == h.covered
        && h.mtime == (meta.mtime(), meta.mtime_nsec());
    if !same || index::boundary_hash(h.covered, |b, o| file.read_exact_at(b, o))? != h.boundary {
        return Ok(None);
    }
    let records = index::records_in(index_meta.len());
    let view = grow(&index, records, &h, file, meta.len(), opts)?;
    Ok(view.map(|v| (v, h.boundary)))
}

fn trusted(h: &Header, meta: &std::fs::Metadata, file: &File) -> io::Result<bool> {
    let same = h.current
        && (h.dev, h.ino) == (meta.dev(), meta.ino())
        && meta.len() >= h.covered
        && (meta.len() > h.covered || h.mtime == (meta.mtime(), meta.mtime_nsec()));
    Ok(same && index::boundary_hash(h.covered, |b, o| file.read_exact_at(b, o))? == h.boundary)
}

/// The fast path: indexed messages as recorded (the index holds `records` of them), only
/// the rest of the mbox, `len` octets long, scanned. `None` if a record does not check out.
fn grow(
    index: &File,
    records: u64,
    h: &Header,
    file: &File,
    len: u64,
    opts: ViewOptions,
) -> io::Result<Option<View>> {
    let mut b = Builder::new(opts, h.epoch);
    let mut last: Option<Record> = None;
    for r in index::records_of(index, 0, records) {
        let Some(r) = r? else { return Ok(None) };
        if r.extent.start >= h.covered {
            break;
        }
        let after_last = last.as_ref().is_none_or(|l| r.extent.start >= l.extent.end);
        if r.extent.end > h.covered || !after_last {
            return Ok(None);
        }
        if let Some(l) = last.replace(r) {
            b.push(&l);
        }
    }
    let Some(last) = last else {
        // No message indexed: an mbox still as long as the covered bytes has none either
        // (emptied by a commit, or only the folder's pseudo-message); a grown one is rescanned.
        if len == h.covered {
            b.view.len = len;
            return Ok(Some(b.finish()));
        }
        return Ok(None);
    };
    if len == h.covered {
        b.push(&last);
        b.view.len = len;
        return Ok(Some(b.finish()));
    }
    // Grown. A last message followed by its blank line is complete; one that ran to the old
    // end of file may go on, so it is scanned again and keeps its serial.
    let (resume, keep) = if last.extent.end < h.covered {
        b.push(&last);
        (h.covered, None)
    } else {
        (last.extent.start, Some((last.serial, last.imap)))
    };
    let first_new = b.view.extents.len() as u64;
    let mut next = h.next_serial;
    let mut w = RecordWriter::new(index, first_new);
    let len = scan_records(file, resume, &mut b, &mut w, &mut next, |f| {
        keep.filter(|_| f.start == resume)
    })?;
    w.finish(true)?;
    b.view.len = len;
    b.view.bytes_scanned = len - resume;
    write_header(index, file, h.epoch, next, len)?;
    index.sync_data()?;
    Ok(Some(b.finish()))
}

/// The slow path: scan everything, match old serials by digest, write a whole new index
/// beside the old one and rename it into place.
fn rebuild(mbox: &Path, old: Option<&File>, file: &File, opts: ViewOptions) -> io::Result<View> {
    let header = match old {
        Some(f) => index::read_header(f)?,
        None => None,
    };
    let (epoch, mut next) = match &header {
        Some(h) => (h.epoch, h.next_serial.max(1)),
        None => (index::new_epoch(mbox), 1),
    };
    let mut serials: HashMap<[u8; 16], VecDeque<(u64, Option<ImapUid>)>> = HashMap::new();
    if let (Some(old), Some(_)) = (old, &header) {
        for r in index::records(old, 0) {
            if let Some(r) = r? {
                next = next.max(r.serial + 1);
                serials
                    .entry(r.digest)
                    .or_default()
                    .push_back((r.serial, r.imap));
            }
        }
    }
    let tmp_path = files::index_tmp(mbox);
    let tmp = create_fresh(&tmp_path)?;
    let mut b = Builder::new(opts, epoch);
    let mut w = RecordWriter::new(&tmp, 0);
    let len = scan_records(file, 0, &mut b, &mut w, &mut next, |f| {
        serials.get_mut(&f.digest).and_then(VecDeque::pop_front)
    })?;
    w.finish(true)?;
    write_header(&tmp, file, epoch, next, len)?;
    tmp.sync_all()?;
    std::fs::rename(&tmp_path, files::index(mbox))?;
    files::sync_dir(mbox)?;
    b.view.len = len;
    b.view.bytes_scanned = len;
    Ok(b.finish())
}
