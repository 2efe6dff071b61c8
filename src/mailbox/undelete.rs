//! `poplar undelete`: kept messages (`<mbox>.deleted`) back into the mbox as new deliveries,
//! under the delivery locks, removed from the kept file only once every one is appended and
//! synced, so a crash between the two can leave a message in both places, never in neither.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::append::{AppendError, append_locked, under_locks};
use super::fault;
use super::files::{self, MailboxTrust};
use super::keep::{self, rewrite_without};
use super::lock::LockOptions;
use super::positioned::RangeReader;
use super::quote::Unquote;

/// What an undelete did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Messages appended to the mbox (and removed from the kept file).
    pub messages: u64,
    /// Octets appended to the mbox.
    pub octets: u64,
    /// Messages left in the kept file.
    pub left: u64,
}

/// Appends the messages of `<mbox>.deleted` deleted at or after `since` (all of them when
/// `None`; one whose From_ line has no date only then) to `mbox` as `poplar deliver` would,
/// each under a From_ line with its sender and the time `now`, then removes them from the
/// kept file. The stored bytes are unquoted before the delivery's mboxrd quoting, so the mbox
/// holds them as it did before. An empty message is left where it is.
pub fn undelete(
    mbox: &Path,
    since: Option<SystemTime>,
    locks: &LockOptions,
    trust: MailboxTrust,
    now: SystemTime,
) -> Result<Restored, AppendError> {
    under_locks(mbox, locks, trust, |file| {
        let kept_file = match files::read_only(&files::deleted(mbox)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Restored::default()),
            opened => opened?,
        };
        let kept = keep::kept(&kept_file)?;
        let chosen: Vec<bool> = kept
            .iter()
            .map(|k| {
                k.extent.data < k.extent.end
                    && since.is_none_or(|s| k.deleted_at.is_some_and(|t| t >= s))
            })
            .collect();
        let mut done = Restored::default();
        for (k, _) in kept.iter().zip(&chosen).filter(|(_, c)| **c) {
            let sender = keep::sender(&kept_file, &k.extent)?;
            let mut body = Unquote::new(RangeReader::new(&kept_file, k.extent.data, k.extent.end));
            done.octets += append_locked(mbox, file, Some(&sender), &mut body, now)?;
            done.messages += 1;
        }
        done.left = kept.len() as u64 - done.messages;
        if done.messages > 0 {
            // Each one appended and synced: a crash from here on leaves them in both files.
            fault::crash_point("undeleted");
            rewrite_without(mbox, &kept_file, &kept, &chosen)?;
        }
        Ok(done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn undeleted_messages_are_new_deliveries_with_their_bytes_and_leave_the_kept_file() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("m");
        std::fs::write(&mbox, b"From a 1\n\nstays\n").unwrap();
        std::fs::write(
            files::deleted(&mbox),
            b"From x@y Mon Nov  2 09:00:00 2026\nS: 1\n\n>From quoted\n>>From twice\n\n\
              From z Thu Nov 26 09:00:00 2026\nS: 2\n\nno end",
        )
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_770_000);
        let since = UNIX_EPOCH + Duration::from_secs(1_795_683_600);
        let opts = LockOptions::default();
        let trust = MailboxTrust::default();
        let r = undelete(&mbox, Some(since), &opts, trust, now).unwrap();
        assert_eq!((r.messages, r.left), (1, 1));
        assert_eq!(
            std::fs::read(&mbox).unwrap(),
            b"From a 1\n\nstays\n\nFrom z Fri Nov 27 09:00:00 2026\nS: 2\n\nno end\n\n"
        );
        let r = undelete(&mbox, None, &opts, trust, now).unwrap();
        assert_eq!((r.messages, r.left), (1, 0));
        assert!(std::fs::read(&mbox).unwrap().ends_with(
            b"\n\nFrom x@y Fri Nov 27 09:00:00 2026\nS: 1\n\n>From quoted\n>>From twice\n\n"
        ));
        assert_eq!(std::fs::read(files::deleted(&mbox)).unwrap(), b"");
        assert_eq!(
            undelete(&mbox, None, &opts, trust, now).unwrap(),
            Restored::default()
        );
    }
}
