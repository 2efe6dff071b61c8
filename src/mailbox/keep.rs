//! Kept deleted mail (`--keep-deleted DAYS`, `--dev-keep-deleted`): before a commit removes
//! messages, copy them to `<mbox>.deleted` (an mbox) and fsync, so a crash between the two can
//! duplicate a message there, never lose it; prune what was kept too long, by rewriting the
//! file beside itself and renaming it over, so a crash leaves the old file or the new one.
//!
//! Each kept message's From_ line keeps the sender and carries the time it was deleted (UTC,
//! asctime as a delivery writes it): pruning and `poplar undelete --since` read it there.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::append::{asctime, from_line_sender};
use super::index::Extent;
use super::positioned::WriterAt;
use super::scan::scan;
use super::{fault, files};
use crate::limits::{FILE_CHUNK, MAX_ENVELOPE_LINE};

/// Appends the messages of `file` (the mbox at `mbox`) flagged in `deleted` to
/// `<mbox>.deleted`, each under a From_ line with its sender and the time `now`, then byte
/// for byte from its headers on (quoting as stored), followed by a blank line, and syncs it.
/// The caller holds the session and delivery locks of `mbox`, which also make it the only
/// writer of `<mbox>.deleted`. On failure the file is cut back to its old length and the
/// commit must not go on.
pub fn keep_deleted(
    mbox: &Path,
    file: &File,
    extents: &[Extent],
    deleted: &[bool],
    now: SystemTime,
) -> io::Result<()> {
    let path = files::deleted(mbox);
    let existed = path.exists();
    let out = files::open_or_create(&path)?;
    let old_len = out.metadata()?.len();
    let written = copy(file, &out, old_len, extents, deleted, now).and_then(|()| out.sync_data());
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
    now: SystemTime,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(FILE_CHUNK, WriterAt::new(out, old_len));
    if old_len > 0 && !ends_with_blank_line(out, old_len)? {
        // Someone edited the file: start the next message on a line of its own.
        w.write_all(b"\n\n")?;
    }
    let date = asctime(now);
    for (ext, _) in extents.iter().zip(deleted).filter(|(_, d)| **d) {
        writeln!(w, "From {} {date}", sender(file, ext)?)?;
        copy_range(file, ext.data, ext.end, &mut w)?;
    }
    fault::io_point("keep-deleted")?;
    w.flush()
}

/// Copies `start..end` of `file` to `w`, then the blank line that ends an mbox message.
fn copy_range(file: &File, start: u64, end: u64, w: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; FILE_CHUNK.min((end - start) as usize)];
    let mut at = start;
    let mut last = b'\n';
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        w.write_all(&buf[..n])?;
        last = buf[n - 1];
        at += n as u64;
    }
    w.write_all(if last == b'\n' { b"\n" } else { b"\n\n" })
}

fn ends_with_blank_line(f: &File, len: u64) -> io::Result<bool> {
    let mut tail = [0u8; 2];
    if len < 2 {
        return Ok(false);
    }
    f.read_exact_at(&mut tail, len - 2)?;
    Ok(&tail == b"\n\n")
}

/// The From_ line of the message at `ext` (at most `MAX_ENVELOPE_LINE` octets of it).
fn from_line(file: &File, ext: &Extent) -> io::Result<Vec<u8>> {
    let len = (ext.data - ext.start).min(MAX_ENVELOPE_LINE as u64) as usize;
    let mut line = vec![0u8; len];
    file.read_exact_at(&mut line, ext.start)?;
    Ok(line)
}

/// The sender of the message at `ext`, from its From_ line, as a From_ line carries it.
pub fn sender(file: &File, ext: &Extent) -> io::Result<String> {
    let line = from_line(file, ext)?;
    let rest = line.strip_prefix(b"From ").unwrap_or(&line);
    let token = rest
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    Ok(from_line_sender(token))
}

/// A message of `<mbox>.deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// Where it lies in the file.
    pub extent: Extent,
    /// When it was deleted: its From_ line's date, `None` if there is none poplar reads.
    pub deleted_at: Option<SystemTime>,
}

/// Every message of the kept file `file`, in order (one pass, bounded buffers).
pub fn kept(file: &File) -> io::Result<Vec<Kept>> {
    let mut extents = Vec::new();
    scan(file, 0, |f| {
        extents.push(Extent {
            start: f.start,
            data: f.data,
            end: f.end,
        });
        Ok(())
    })?;
    extents
        .into_iter()
        .map(|extent| {
            Ok(Kept {
                extent,
                deleted_at: from_line_date(&from_line(file, &extent)?),
            })
        })
        .collect()
}

/// Removes from `<mbox>.deleted` every message of `kept` (read from `kept_file`, that file)
/// flagged in `drop`: the others are written to `<mbox>.deleted.tmp`, synced, and renamed
/// over it, so a crash leaves either file whole and a kept message is never half removed.
/// The caller holds the delivery locks of `mbox`.
pub fn rewrite_without(
    mbox: &Path,
    kept_file: &File,
    kept: &[Kept],
    drop: &[bool],
) -> io::Result<()> {
    let tmp = files::deleted_tmp(mbox);
    let written = (|| {
        let out = files::create_fresh(&tmp)?;
        let mut w = BufWriter::with_capacity(FILE_CHUNK, WriterAt::new(&out, 0));
        for (k, _) in kept.iter().zip(drop).filter(|(_, d)| !**d) {
            copy_range(kept_file, k.extent.start, k.extent.end, &mut w)?;
        }
        fault::io_point("rewrite-deleted")?;
        w.flush()?;
        out.sync_data()?;
        fault::crash_point("deleted-rewritten");
        std::fs::rename(&tmp, files::deleted(mbox))?;
        files::sync_dir(mbox)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes from `<mbox>.deleted` the messages deleted before `cutoff`; returns how many. Cheap
/// when none is due: the file is in the order of deletion, so a first message deleted since
/// `cutoff` ends it after one read. Messages without a date poplar reads are kept. The caller
/// holds the delivery locks of `mbox`; the mbox itself is never touched.
pub fn prune(mbox: &Path, cutoff: SystemTime) -> io::Result<usize> {
    let file = match files::read_only(&files::deleted(mbox)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        opened => opened?,
    };
    let mut head = vec![0u8; MAX_ENVELOPE_LINE];
    let n = file.read_at(&mut head, 0)?;
    if from_line_date(&head[..n]).is_some_and(|t| t >= cutoff) {
        return Ok(0);
    }
    let kept = kept(&file)?;
    let old: Vec<bool> = kept
        .iter()
        .map(|k| k.deleted_at.is_some_and(|t| t < cutoff))
        .collect();
    let count = old.iter().filter(|o| **o).count();
    if count > 0 {
        rewrite_without(mbox, &file, &kept, &old)?;
    }
    Ok(count)
}

/// The date of a From_ line (`From sender Thu Nov 26 09:00:00 2026`, read as UTC; a time
/// zone between the time and the year is skipped), or `None`.
pub fn from_line_date(line: &[u8]) -> Option<SystemTime> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let line = line.split(|&b| b == b'\n').next()?.strip_prefix(b"From ")?;
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .skip(2);
    let month = words.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let day = number(words.next()?)?;
    let mut clock = words.next()?.split(|&b| b == b':');
    let (h, m) = (number(clock.next()?)?, number(clock.next()?)?);
    let s = clock.next().map_or(Some(0), number)?;
    let year = match words.next()? {
        y if y.len() == 4 => number(y)?,
        _ => number(words.next()?)?,
    };
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = unix_days(i64::from(year), month, day)?;
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar, `None` for a day that
/// does not exist (H. Hinnant's algorithm, the inverse of [`asctime`]'s).
pub fn unix_days(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let length = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day == 0 || day > length {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extents(file: &File) -> Vec<Extent> {
        kept(file).unwrap().into_iter().map(|k| k.extent).collect()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn deleted_messages_are_appended_under_a_from_line_dated_at_their_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(
            &mbox,
            b"From a 1\nS: 1\n\n>From x\n\nFrom b 2\nS: 2\n\nFrom  c 3\nS: 3\n\nend",
        )
        .unwrap();
        let file = File::open(&mbox).unwrap();
        let ext = extents(&file);
        keep_deleted(&mbox, &file, &ext, &[true, false, true], at(1_795_683_600)).unwrap();
        let kept_bytes = std::fs::read(files::deleted(&mbox)).unwrap();
        assert_eq!(
            kept_bytes,
            &b"From a Thu Nov 26 09:00:00 2026\nS: 1\n\n>From x\n\n\
               From MAILER-DAEMON Thu Nov 26 09:00:00 2026\nS: 3\n\nend\n\n"[..]
        );
        keep_deleted(&mbox, &file, &ext, &[false, true], at(1_795_770_000)).unwrap();
        let kept_bytes = std::fs::read(files::deleted(&mbox)).unwrap();
        assert!(kept_bytes.ends_with(b"end\n\nFrom b Fri Nov 27 09:00:00 2026\nS: 2\n\n"));
        let k = kept(&File::open(files::deleted(&mbox)).unwrap()).unwrap();
        let dates: Vec<_> = k.iter().map(|k| k.deleted_at).collect();
        assert_eq!(
            dates,
            [
                Some(at(1_795_683_600)),
                Some(at(1_795_683_600)),
                Some(at(1_795_770_000))
            ]
        );
    }

    #[test]
    fn from_line_dates_are_read_as_deliveries_write_them() {
        let d = |s: &[u8]| from_line_date(s);
        assert_eq!(d(b"From a Thu Jan  1 00:00:00 1970\n"), Some(at(0)));
        assert_eq!(
            d(b"From a@b Thu Nov 26 09:00:00 2026"),
            Some(at(1_795_683_600))
        );
        assert_eq!(
            d(b"From a Thu Nov 26 09:00:00 +0000 2026 remote from x"),
            Some(at(1_795_683_600))
        );
        assert_eq!(d(b"From a Tue Feb 29 00:00 2000"), Some(at(951_782_400)));
        for bad in [
            &b"From a"[..],
            b"From a Thu Feb 30 00:00:00 2026",
            b"From a Thu Foo 26 09:00:00 2026",
            b"From a Thu Nov 26 24:00:00 2026",
            b"From a Thu Nov 26 09:00:00",
            b"Frum a Thu Nov 26 09:00:00 2026",
            b"From a Thu Nov 26 09:00:00 1969",
        ] {
            assert_eq!(d(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        for days in [-1, 0, 59, 60, 10_957, 20_000, 2_932_896] {
            let t = UNIX_EPOCH + Duration::from_secs(days.max(0) as u64 * 86_400);
            let line = format!("From x {}", asctime(t));
            assert_eq!(from_line_date(line.as_bytes()), Some(t), "{line}");
        }
    }

    fn mbox_with_kept(dir: &Path, kept_bytes: &[u8]) -> std::path::PathBuf {
        let mbox = dir.join("m");
        std::fs::write(&mbox, b"From a 1\n\nmain\n").unwrap();
        std::fs::write(files::deleted(&mbox), kept_bytes).unwrap();
        mbox
    }

    #[test]
    fn pruning_drops_what_was_deleted_before_the_cutoff_and_keeps_the_rest_whole() {
        let dir = tempfile::tempdir().unwrap();
        let kept_bytes = b"From a Mon Nov  2 09:00:00 2026\nS: old\n\nold\n\n\
                           From b Thu Nov 26 09:00:00 2026\nS: new\n\nnew\n\n\
                           From c no date\nS: ?\n\nkept\n\n";
        let mbox = mbox_with_kept(dir.path(), kept_bytes);
        assert_eq!(prune(&mbox, at(1_793_000_000)).unwrap(), 0, "nothing due");
        assert_eq!(std::fs::read(files::deleted(&mbox)).unwrap(), kept_bytes);
        assert_eq!(prune(&mbox, at(1_795_683_600)).unwrap(), 1);
        assert_eq!(
            std::fs::read(files::deleted(&mbox)).unwrap(),
            &kept_bytes[45..],
            "the old one gone, the rest byte for byte"
        );
        assert_eq!(prune(&mbox, at(1_900_000_000)).unwrap(), 1);
        assert_eq!(
            std::fs::read(files::deleted(&mbox)).unwrap(),
            b"From c no date\nS: ?\n\nkept\n\n",
            "a message without a date is never pruned"
        );
        assert_eq!(std::fs::read(&mbox).unwrap(), b"From a 1\n\nmain\n");
        assert!(!files::deleted_tmp(&mbox).exists());
        let none = dir.path().join("none");
        assert_eq!(prune(&none, at(1_900_000_000)).unwrap(), 0);
    }

    #[test]
    fn a_failed_rewrite_leaves_the_kept_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let kept_bytes = b"From a Mon Nov  2 09:00:00 2026\n\nold\n\n";
        let mbox = mbox_with_kept(dir.path(), kept_bytes);
        // A directory where the temporary file goes: its creation fails.
        std::fs::create_dir(files::deleted_tmp(&mbox)).unwrap();
        assert!(prune(&mbox, at(1_900_000_000)).is_err());
        assert_eq!(std::fs::read(files::deleted(&mbox)).unwrap(), kept_bytes);
    }
}
