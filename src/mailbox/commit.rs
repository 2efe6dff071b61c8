//! The UPDATE state on an mbox: plan the deletions as a journal (kept messages after the
//! first deleted one, then mail appended since login, then their index records), and apply it
//! in place through the journal's replay, retried while the locks are held. Whatever precedes
//! the first message (the folder-internal pseudo-message) is never touched, and the folder's
//! `X-IMAPbase:` moves to the new first message when its carrier is deleted, as Dovecot and
//! UW-IMAP move it.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::files::{self, open_index};
use super::index::{self, Extent, Header};
use super::journal::{self, Head, JournalWriter, Replay};
use super::scan::find_header;
use super::{CommitSummary, MailboxError, fault};
use crate::limits::{APPLY_ATTEMPTS, APPLY_RETRY_PAUSE};

/// Removes the messages flagged in `deleted` from the mbox at `mbox` (open as `file`), whose
/// scan at login found `extents` in its first `scanned` bytes. The caller holds the session
/// lock and the locks toward delivery agents, and has checked that the scanned bytes are
/// unchanged. Bytes before the first deleted message are not touched; mail appended since
/// login is kept; the inode, owner and mode stay. Deleting nothing writes nothing.
///
/// Until the journal is complete a failure leaves the mbox untouched (an error other than
/// [`MailboxError::Unfinished`]); after that the deletions are decided, and a failure to
/// apply them is [`MailboxError::Unfinished`]: the journal stays, and the next replay (the
/// next login, delivery or start-up) finishes them.
pub fn commit(
    mbox: &Path,
    file: &File,
    extents: &[Extent],
    scanned: u64,
    deleted: &[bool],
) -> Result<CommitSummary, MailboxError> {
    let count = deleted.iter().filter(|&&d| d).count();
    let Some(first) = deleted.iter().position(|&d| d) else {
        return Ok(CommitSummary {
            deleted: 0,
            bytes_before: scanned,
            bytes_after: scanned,
        });
    };
    if first >= extents.len() {
        return Err(MailboxError::Io(io::Error::other("no such message")));
    }
    let index = open_index(mbox)?;
    let Some(old) = index::read_header(&index)? else {
        return Err(damaged());
    };
    let current = file.metadata()?.len();
    let path = files::journal(mbox);
    let mut w = JournalWriter::create(&path, false)?;
    let plan = Plan {
        file,
        index: &index,
        extents,
        scanned,
        deleted,
        first,
        current,
    };
    let head = match plan.write(&mut w, &old) {
        Ok(h) => h,
        Err(e) => {
            w.abandon();
            return Err(e);
        }
    };
    let new_len = head.new_len;
    if let Err(e) = w.finish(head) {
        // Not complete, so never applied: the mbox is as it was.
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    apply(mbox, file)?;
    // Only now is the mtime known that lets the next login trust the index unread. The
    // deletions are done whatever happens here: without it the next login checks the index
    // against the mbox instead (its header says mtime unknown).
    if let Err(e) = record_mtime(mbox, file) {
        log::warn!(
            "{}: committed, but the index's mtime was not recorded: {e}",
            mbox.display()
        );
    }
    Ok(CommitSummary {
        deleted: count,
        bytes_before: current,
        bytes_after: new_len,
    })
}

/// Applies the complete journal of `mbox` by replaying it, and if that fails, replays it
/// again while the locks are still held, up to [`APPLY_ATTEMPTS`] times: a replay resumes
/// wherever the last one stopped. A failure that outlasts them leaves the journal for the
/// next replay and is [`MailboxError::Unfinished`], pending.
fn apply(mbox: &Path, file: &File) -> Result<(), MailboxError> {
    let mut failed = None;
    for attempt in 1..=APPLY_ATTEMPTS {
        if attempt > 1 {
            std::thread::sleep(APPLY_RETRY_PAUSE);
        }
        match journal::replay(mbox, file) {
            Ok(Replay::Applied) => return Ok(()),
            // Under our locks only our own failed attempt can have removed the journal, and
            // it removes it last.
            Ok(Replay::Clean) if failed.is_some() => return Ok(()),
            Ok(other) => {
                let error = io::Error::other(format!("journal not applied: {other:?}"));
                return Err(match failed {
                    // Replay checks before it writes: the mbox is untouched.
                    None => MailboxError::Io(error),
                    // A second fault (the journal or the mbox read back other than written):
                    // the replay kept bytes and the journal is gone from its place.
                    Some(_) => MailboxError::Unfinished {
                        error,
                        pending: false,
                    },
                });
            }
            Err(e) => {
                log::warn!(
                    "{}: applying the commit's journal failed (attempt {attempt} of \
                     {APPLY_ATTEMPTS}): {e}",
                    mbox.display()
                );
                failed = Some(e);
            }
        }
    }
    Err(MailboxError::Unfinished {
        error: failed.unwrap_or_else(|| io::Error::other("journal not applied")),
        pending: true,
    })
}

/// Records the mbox's mtime after a commit in its index header.
fn record_mtime(mbox: &Path, file: &File) -> io::Result<()> {
    let index = open_index(mbox)?;
    if let Some(h) = index::read_header(&index)? {
        fault::io_point("index-mtime")?;
        index::write_header(&index, file, h.epoch, h.next_serial, h.covered)?;
        index.sync_data()?;
    }
    Ok(())
}

fn damaged() -> MailboxError {
    MailboxError::Io(io::Error::other(
        "UID index missing or damaged; nothing deleted (the next login rebuilds it)",
    ))
}

struct Plan<'a> {
    file: &'a File,
    index: &'a File,
    extents: &'a [Extent],
    scanned: u64,
    deleted: &'a [bool],
    first: usize,
    current: u64,
}

impl Plan<'_> {
    /// Where message `i`'s bytes end: the next From_ line, so each kept message travels with
    /// the blank line after it.
    fn next_start(&self, i: usize) -> u64 {
        self.extents.get(i + 1).map_or(self.scanned, |e| e.start)
    }

    fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        (self.first..self.extents.len()).filter(|&i| self.kept_at(i))
    }

    /// Writes the journal payload; returns the head to finish it with.
    fn write(&self, w: &mut JournalWriter, old: &Header) -> Result<Head, MailboxError> {
        // The session's change check samples the file; before bytes are dropped, every
        // message from the first deleted one on must still start where it did (a rewrite at
        // the same length with its mtime restored would pass the sample).
        for e in &self.extents[self.first..] {
            let mut from = [0u8; 5];
            self.file.read_exact_at(&mut from, e.start)?;
            if &from != b"From " {
                return Err(MailboxError::Changed);
            }
        }
        let region_start = self.extents[self.first].start;
        let carried = self.carried_base()?;
        let carrier = carried.as_ref().and_then(|_| self.kept().next());
        for i in self.kept() {
            let e = self.extents[i];
            match carried.as_ref().filter(|_| Some(i) == carrier) {
                Some(base) => {
                    w.copy_from(self.file, e.start, e.data)?;
                    w.copy_from(self.file, base.start, base.end)?;
                    w.copy_from(self.file, e.data, self.next_start(i))?;
                }
                None => w.copy_from(self.file, e.start, self.next_start(i))?,
            }
        }
        let covered = region_start + w.payload_len();
        w.copy_from(self.file, self.scanned, self.current)?;
        let new_len = region_start + w.payload_len();
        let boundary = index::boundary_hash(covered, |buf, at| {
            // The new bytes: before the region as they are, from it on as journaled.
            let split = (region_start.saturating_sub(at) as usize).min(buf.len());
            let (before, after) = buf.split_at_mut(split);
            self.file.read_exact_at(before, at)?;
            w.read_payload(after, (at + split as u64) - region_start)
        })?;
        let meta = self.file.metadata()?;
        let header = Header {
            covered,
            boundary,
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (0, 0),
            ..old.clone()
        };
        let index_start = w.payload_len();
        w.write(&header.encode())?;
        let mut at = region_start;
        let mut records = index::records(self.index, self.first as u64);
        for i in self.first..self.extents.len() {
            let r = records
                .next()
                .transpose()?
                .flatten()
                .filter(|r| r.extent == self.extents[i])
                .ok_or_else(|| io::Error::other("UID index does not match the mailbox"))?;
            if self.kept_at(i) {
                // The moved `X-IMAPbase:` is bookkeeping: the message's size and digest stay.
                let grown = match (&carried, carrier) {
                    (Some(base), Some(c)) if c == i => base.end - base.start,
                    _ => 0,
                };
                let mut moved = r.moved_to(at);
                moved.extent.end += grown;
                w.write(&moved.encode())?;
                at += self.next_start(i) - self.extents[i].start + grown;
            }
        }
        Ok(Head {
            dev: meta.dev(),
            ino: meta.ino(),
            region_start,
            old_len: self.current,
            new_len,
            tail_fp: journal::tail_fingerprint(self.file, new_len, self.current)?,
            index_at: self.first as u64,
            index_len: w.payload_len() - index_start,
            payload_sum: [0; 16],
            truncated: false,
        })
    }

    /// The folder's `X-IMAPbase:` header when the message that carries it (the first in the
    /// file) is deleted: an IMAP server sharing the file would otherwise renumber every
    /// message. `None` when it stays where it is.
    fn carried_base(&self) -> io::Result<Option<std::ops::Range<u64>>> {
        let e = self.extents[0];
        if self.first != 0 || e.start != 0 {
            return Ok(None);
        }
        find_header(self.file, e.data, e.end, b"x-imapbase:")
    }

    fn kept_at(&self, i: usize) -> bool {
        !self.deleted.get(i).copied().unwrap_or(false)
    }
}
