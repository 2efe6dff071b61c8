//! An in-memory store with the same traits and locking as mbox, for tests of the session.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use md5::{Digest, Md5};

use super::{
    CommitSummary, LockGuard, LockTable, MailStore, MailboxError, Maildrop, MessageInfo, Uid,
    UserName, hex,
};

/// Mailboxes held in memory: each user's messages as stored bytes (LF or CRLF line ends).
#[derive(Clone, Default)]
pub struct MemoryStore {
    boxes: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>>,
    locks: LockTable,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a message to `user`'s mailbox, as a delivery would.
    pub fn deliver(&self, user: &str, message: &[u8]) {
        self.boxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(user.to_owned())
            .or_default()
            .push(message.to_vec());
    }

    /// The messages now in `user`'s mailbox.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        self.boxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .cloned()
            .unwrap_or_default()
    }
}

impl MailStore for MemoryStore {
    fn location(&self, user: &UserName) -> String {
        format!("memory:{user}")
    }

    fn open(&self, user: &UserName) -> Result<Box<dyn Maildrop>, MailboxError> {
        let guard = self.locks.acquire(user.as_str().into())?;
        let messages = self.messages(user.as_str());
        let infos = messages
            .iter()
            .enumerate()
            .map(|(i, m)| MessageInfo {
                size: sent_size(m),
                uid: Uid::Text(hex(&Md5::new()
                    .chain_update(m)
                    .chain_update(i.to_be_bytes())
                    .finalize())),
            })
            .collect();
        Ok(Box::new(MemoryDrop {
            store: self.clone(),
            user: user.as_str().to_owned(),
            messages,
            infos,
            _guard: guard,
        }))
    }
}

/// Octets as sent: each LF without a CR before it counts two; an unterminated last line gets
/// its CRLF.
fn sent_size(m: &[u8]) -> u64 {
    let bare_lf = m
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || m[i - 1] != b'\r'))
        .count();
    let tail = match m.last() {
        None | Some(b'\n') => 0,
        Some(b'\r') => 1,
        Some(_) => 2,
    };
    (m.len() + bare_lf + tail) as u64
}

struct MemoryDrop {
    store: MemoryStore,
    user: String,
    messages: Vec<Vec<u8>>,
    infos: Vec<MessageInfo>,
    _guard: LockGuard,
}

impl Maildrop for MemoryDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.infos
    }

    fn reader(&mut self, index: usize) -> Result<Box<dyn Read + '_>, MailboxError> {
        Ok(Box::new(&self.messages[index][..]))
    }

    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitSummary, MailboxError> {
        let mut boxes = self
            .store
            .boxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let all = boxes.entry(self.user.clone()).or_default();
        let before: u64 = all.iter().map(|m| m.len() as u64).sum();
        // Messages delivered since login sit after the ones this session saw.
        let mut kept = Vec::new();
        for (i, m) in all.drain(..).enumerate() {
            if !deleted.get(i).copied().unwrap_or(false) {
                kept.push(m);
            }
        }
        *all = kept;
        let after: u64 = all.iter().map(|m| m.len() as u64).sum();
        Ok(CommitSummary {
            deleted: deleted.iter().filter(|&&d| d).count(),
            bytes_before: before,
            bytes_after: after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_size_counts_crlf() {
        assert_eq!(sent_size(b""), 0);
        assert_eq!(sent_size(b"a\n"), 3);
        assert_eq!(sent_size(b"a\r\n"), 3);
        assert_eq!(sent_size(b"a"), 3);
        assert_eq!(sent_size(b"a\r"), 3);
        assert_eq!(sent_size(b"\n\n"), 4);
    }
}
