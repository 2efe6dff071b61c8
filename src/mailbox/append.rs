//! Appending one message to an mbox as a delivery agent does: under the same locks, after
//! any pending journal is replayed, with a From_ line, mboxrd quoting, a final blank line and
//! an fsync; a failure truncates away what was written.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use memchr::memchr;

use super::files::{self, MailboxTrust};
use super::lock::{LockKind, LockOptions, Opened, open_locked};
use super::quote::Quoter;
use super::rollback::{self, Rollback};
use super::{MailboxError, fault, journal};
use crate::limits::{FILE_CHUNK, MAX_ENVELOPE_LINE, MAX_FROM_LINE_SENDER};

/// Why a delivery failed; the mbox is as it was.
#[derive(Debug)]
pub enum AppendError {
    /// The mailbox's directory does not exist.
    NoMailbox,
    /// The message cannot be stored (empty).
    Data(&'static str),
    /// The locks could not be had in time.
    Busy,
    /// Reading the message or writing the mbox failed.
    Io(io::Error),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::NoMailbox => f.write_str("no such mailbox directory"),
            AppendError::Data(why) => f.write_str(why),
            AppendError::Busy => f.write_str("mailbox locked, try again later"),
            AppendError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<MailboxError> for AppendError {
    fn from(e: MailboxError) -> Self {
        match e {
            MailboxError::Busy | MailboxError::InUse => AppendError::Busy,
            MailboxError::Changed => AppendError::Io(io::Error::other("mailbox changed")),
            MailboxError::Permission(e)
            | MailboxError::Io(e)
            | MailboxError::Unfinished { error: e, .. } => AppendError::Io(e),
            MailboxError::Unusable(why) => AppendError::Io(io::Error::other(why)),
        }
    }
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        AppendError::Io(e)
    }
}

/// Appends the message read from `input` to the mbox at `path` (created with mode 0600 in an
/// existing directory if missing). `sender` goes into the From_ line as [`from_line_sender`]
/// writes it; if it is `None` and the message starts with a From_ line, that line is used,
/// else `MAILER-DAEMON`. Lines matching
/// `>*From ` get one more `>` (mboxrd), so `--mbox-unquote` gives back the exact message.
/// Returns the octets appended.
pub fn append(
    path: &Path,
    sender: Option<&str>,
    input: &mut dyn Read,
    locks: &LockOptions,
    trust: MailboxTrust,
    when: SystemTime,
) -> Result<u64, AppendError> {
    under_locks(path, locks, trust, |file| {
        append_locked(path, file, sender, &mut *input, when)
    })
}

/// Opens the mbox at `path` as a delivery does (creating it with mode 0600 in an existing
/// directory if missing), takes the locks toward delivery agents, finishes a pending journal
/// or delivery, and runs `locked` on it under the locks.
pub(super) fn under_locks<T>(
    path: &Path,
    locks: &LockOptions,
    trust: MailboxTrust,
    mut locked: impl FnMut(&File) -> Result<T, AppendError>,
) -> Result<T, AppendError> {
    let open = || match files::mailbox_file(trust)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => match files::mailbox_refusal(&f, trust)? {
            Some(why) => Err(AppendError::Io(io::Error::other(why))),
            None => Ok(Some(f)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(AppendError::NoMailbox),
        Err(e) if files::is_refused_symlink(&e) => Err(AppendError::Io(io::Error::other(
            "the mailbox is a symbolic link (--mbox-follow-symlinks allows it)",
        ))),
        Err(e) => Err(e.into()),
    };
    let fcntl = locks.order.contains(&LockKind::Fcntl);
    let recovered = |file: &File| {
        journal::replay(path, file)?;
        if rollback::recover(path, file, fcntl)? == Rollback::Owned {
            return Err(AppendError::Busy);
        }
        locked(file)
    };
    match open_locked(path, locks, open, recovered)? {
        Opened::Locked(_, n) => Ok(n),
        // `open` creates the file.
        Opened::Missing => Err(AppendError::NoMailbox),
        Opened::Replaced => Err(AppendError::Io(io::Error::other(
            "the mailbox keeps being replaced; try again later",
        ))),
    }
}

/// Appends under the locks: the rollback note first, then the message, then its sync, then
/// the note's removal. Any failure truncates back to the old length.
pub(super) fn append_locked(
    path: &Path,
    file: &File,
    sender: Option<&str>,
    input: &mut dyn Read,
    when: SystemTime,
) -> Result<u64, AppendError> {
    let old_len = file.metadata()?.len();
    let note = rollback::begin(path, file, old_len)?;
    let written = write_message(file, old_len, sender, input, when);
    let result = match written {
        // Until the note is gone (and that is synced) a recovery would undo this delivery,
        // so a note that cannot be removed makes the delivery fail too.
        Ok(n) => note.done().map(|()| n).map_err(AppendError::from),
        Err(e) => Err(e),
    };
    if result.is_err() {
        // Leave the mbox exactly as it was.
        file.set_len(old_len)?;
        file.sync_all()?;
        rollback::recover(path, file, true)?;
    }
    result
}

fn write_message(
    file: &File,
    old_len: u64,
    sender: Option<&str>,
    input: &mut dyn Read,
    when: SystemTime,
) -> Result<u64, AppendError> {
    let mut out = BufWriter::with_capacity(FILE_CHUNK, At { file, pos: old_len });
    out.write_all(separator(file, old_len)?)?;
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut filled = read_some(input, &mut buf)?;
    let envelope = filled > 5
        && buf.starts_with(b"From ")
        && memchr(b'\n', &buf[..filled.min(MAX_ENVELOPE_LINE)]).is_some();
    let mut skip = 0;
    if envelope {
        skip = memchr(b'\n', &buf[..filled]).map_or(0, |i| i + 1);
    }
    match (sender, envelope) {
        (Some(s), _) => writeln!(
            out,
            "From {} {}",
            from_line_sender(s.as_bytes()),
            asctime(when)
        )?,
        (None, true) => {
            out.write_all(buf[..skip].trim_ascii_end())?;
            out.write_all(b"\n")?;
        }
        (None, false) => writeln!(out, "From MAILER-DAEMON {}", asctime(when))?,
    }
    let mut q = Quoter::default();
    let mut any = false;
    while filled > 0 {
        if skip < filled {
            any = true;
            q.write(&buf[skip..filled], &mut out)?;
        }
        skip = 0;
        filled = read_some(input, &mut buf)?;
    }
    if !any {
        return Err(AppendError::Data("empty message"));
    }
    q.finish(&mut out)?;
    out.write_all(if q.last == b'\n' { b"\n" } else { b"\n\n" })?;
    fault::io_point("deliver")?;
    let end = out.into_inner().map_err(|e| e.into_error())?.pos;
    file.sync_data()?;
    Ok(end - old_len)
}

fn read_some(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// What must come before a new From_ line so that it starts a message: nothing in an empty
/// file or after a blank line, else enough to end the last line and add a blank one.
fn separator(file: &File, len: u64) -> io::Result<&'static [u8]> {
    if len == 0 {
        return Ok(b"");
    }
    let mut tail = [0u8; 3];
    let n = len.min(3) as usize;
    file.read_exact_at(&mut tail[3 - n..], len - n as u64)?;
    Ok(if tail[1..] == *b"\n\n" || tail == *b"\n\r\n" {
        b""
    } else if tail[2] == b'\n' {
        b"\n"
    } else {
        b"\n\n"
    })
}

/// Writes at a position of a file, for a `BufWriter`.
struct At<'f> {
    file: &'f File,
    pos: u64,
}

impl Write for At<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        fault::io_point("deliver")?;
        self.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The envelope sender as a From_ line carries it. The null sender (empty or `<>`: bounces,
/// delivery status notifications, read receipts) is `MAILER-DAEMON`, as Postfix writes it.
/// Any other sender is taken whatever it holds, never refused (a refusal loses the message):
/// each octet outside `!`..`~` (space, control bytes, DEL, each octet of a non-ASCII
/// character) is written as `\xNN`, so mail readers find the date where they look for it and
/// the line cannot break; past `MAX_FROM_LINE_SENDER` octets it is cut, between escapes, and
/// ends in `...`.
pub fn from_line_sender(sender: &[u8]) -> String {
    if sender.is_empty() || sender == b"<>" {
        return "MAILER-DAEMON".to_owned();
    }
    let mut out = String::with_capacity(sender.len().min(MAX_FROM_LINE_SENDER));
    // Where the text may be cut so that `...` still fits.
    let mut cut = 0;
    for &b in sender {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
        if out.len() > MAX_FROM_LINE_SENDER {
            out.truncate(cut);
            out.push_str("...");
            return out;
        }
        if out.len() + 3 <= MAX_FROM_LINE_SENDER {
            cut = out.len();
        }
    }
    out
}

/// `Thu Nov 26 09:00:00 2026` in UTC, the date of a From_ line (asctime format).
pub fn asctime(when: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = when.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[(days.rem_euclid(7)) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn asctime_dates() {
        let at = |s| asctime(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(at(1_795_683_600), "Thu Nov 26 09:00:00 2026");
        assert_eq!(at(951_782_400), "Tue Feb 29 00:00:00 2000");
    }

    fn append_to(dir: &Path, existing: &[u8], msg: &[u8], sender: Option<&str>) -> Vec<u8> {
        let path = dir.join("box");
        std::fs::write(&path, existing).unwrap();
        let when = UNIX_EPOCH + Duration::from_secs(1_795_683_600);
        append(
            &path,
            sender,
            &mut &msg[..],
            &LockOptions::default(),
            MailboxTrust::default(),
            when,
        )
        .unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_delivery_is_one_well_separated_mbox_message() {
        let dir = tempfile::tempdir().unwrap();
        let from = b"From a@b Thu Nov 26 09:00:00 2026\n";
        let got = append_to(dir.path(), b"", b"S: 1\n\nhi", Some("a@b"));
        assert_eq!(got, [&from[..], b"S: 1\n\nhi\n\n"].concat());
        let got = append_to(dir.path(), b"From x\n\nold", b"S: 1\n\nhi\n", Some("a@b"));
        assert_eq!(
            got,
            [&b"From x\n\nold\n\n"[..], from, b"S: 1\n\nhi\n\n"].concat()
        );
        let got = append_to(dir.path(), b"From x\n\nold\n", b"From env 1\nS: 1\n", None);
        assert_eq!(got, b"From x\n\nold\n\nFrom env 1\nS: 1\n\n");
    }

    #[test]
    fn any_sender_makes_a_safe_from_line() {
        assert_eq!(from_line_sender(b""), "MAILER-DAEMON");
        assert_eq!(from_line_sender(b"<>"), "MAILER-DAEMON");
        assert_eq!(from_line_sender(b"a@b.example"), "a@b.example");
        assert_eq!(
            from_line_sender(b"SRS0=x=y=b.example=a@c.example"),
            "SRS0=x=y=b.example=a@c.example"
        );
        assert_eq!(
            from_line_sender("\"j d\"@b\r\n\tx\x7f".as_bytes()),
            "\"j\\x20d\"@b\\x0d\\x0a\\x09x\\x7f"
        );
        assert_eq!(from_line_sender("jö@b".as_bytes()), "j\\xc3\\xb6@b");
        let exact = from_line_sender(&[b'a'; MAX_FROM_LINE_SENDER]);
        assert_eq!(exact.len(), MAX_FROM_LINE_SENDER);
        assert!(!exact.ends_with("..."));
        // Cut between escapes, never inside one.
        for lead in 0..8 {
            let mut long = vec![b'a'; lead];
            long.extend_from_slice(&[0xff; 400]);
            let got = from_line_sender(&long);
            assert!(got.len() <= MAX_FROM_LINE_SENDER, "{}", got.len());
            let body = got.strip_suffix("...").unwrap();
            assert!(body[lead..].len().is_multiple_of(4), "{got}");
            assert!(body[lead..].ends_with("\\xff"), "{got}");
        }
    }

    #[test]
    fn a_bounce_gets_a_mailer_daemon_from_line() {
        let dir = tempfile::tempdir().unwrap();
        let got = append_to(dir.path(), b"", b"S: 1\n\nhi\n", Some(""));
        assert!(got.starts_with(b"From MAILER-DAEMON Thu Nov 26 09:00:00 2026\nS: 1\n"));
        let got = append_to(dir.path(), b"", b"S: 1\n\nhi\n", Some("a b\nc"));
        assert!(got.starts_with(b"From a\\x20b\\x0ac Thu Nov 26 09:00:00 2026\nS: 1\n"));
    }

    #[test]
    fn a_symlink_at_the_mailbox_path_is_not_delivered_through_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"From x\n\nold\n").unwrap();
        let path = dir.path().join("box");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let deliver = |trust| {
            append(
                &path,
                None,
                &mut &b"S: new\n\nnew\n"[..],
                &LockOptions::default(),
                trust,
                UNIX_EPOCH,
            )
        };
        assert!(matches!(
            deliver(MailboxTrust::default()),
            Err(AppendError::Io(_))
        ));
        assert_eq!(std::fs::read(&victim).unwrap(), b"From x\n\nold\n");
        let follow = MailboxTrust {
            follow_symlinks: true,
            any_owner: false,
        };
        assert!(deliver(follow).is_ok());
        assert!(std::fs::read(&victim).unwrap().ends_with(b"new\n\n"));
    }

    #[test]
    fn an_empty_message_is_refused_and_leaves_the_mbox_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        std::fs::write(&path, b"From x\n\nold\n").unwrap();
        let r = append(
            &path,
            None,
            &mut &b""[..],
            &LockOptions::default(),
            MailboxTrust::default(),
            UNIX_EPOCH,
        );
        assert!(matches!(r, Err(AppendError::Data(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"From x\n\nold\n");
        let r = append(
            &dir.path().join("no/such/dir"),
            None,
            &mut &b"x"[..],
            &LockOptions::default(),
            MailboxTrust::default(),
            UNIX_EPOCH,
        );
        assert!(matches!(r, Err(AppendError::NoMailbox)));
    }
}
