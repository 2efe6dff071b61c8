//! Who may log in: the users table loaded from a passwd-file, password checks in constant time,
//! and APOP digests.

pub mod passwd;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use md5::{Digest, Md5};

use crate::mailbox::UserName;

/// A stored secret, by scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// `{PLAIN}`: the password itself (the only scheme that allows APOP).
    Plain(Vec<u8>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("{PLAIN}***"),
        }
    }
}

impl Secret {
    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Secret::Plain(p) => ct_eq(p, password),
        }
    }

    /// The plain secret, for mechanisms that need it (APOP).
    pub fn plain(&self) -> Option<&[u8]> {
        match self {
            Secret::Plain(p) => Some(p),
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The users that may log in, by name.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, (UserName, Secret)>,
    /// `--dev`: every valid user name logs in by this rule instead of the table.
    anyone: Option<Anyone>,
}

/// The login rule of `--dev` mode, for any user name that is safe as a path.
#[derive(Debug, Clone)]
pub enum Anyone {
    /// Every user has this secret.
    Password(Secret),
    /// Every password (and APOP digest) is accepted.
    AnyPassword,
}

impl Anyone {
    fn verify(&self, name: &[u8], check: impl FnOnce(&Secret) -> bool) -> Option<UserName> {
        let user = UserName::new(name).ok()?;
        match self {
            Anyone::AnyPassword => Some(user),
            Anyone::Password(secret) => check(secret).then_some(user),
        }
    }
}

/// A secret that no password matches, checked for unknown users so that they cost the same
/// work as known ones.
fn dummy_secret() -> Secret {
    Secret::Plain(b"\x00poplar-no-such-user\x00".to_vec())
}

impl Users {
    /// A table from (name, secret) pairs.
    pub fn new(entries: impl IntoIterator<Item = (UserName, Secret)>) -> Users {
        Users {
            by_name: entries
                .into_iter()
                .map(|(n, s)| (n.as_str().to_owned(), (n, s)))
                .collect(),
            anyone: None,
        }
    }

    /// A table that lets in every valid user name by `rule` (`--dev`).
    pub fn anyone(rule: Anyone) -> Users {
        Users {
            by_name: HashMap::new(),
            anyone: Some(rule),
        }
    }

    /// How many users can log in.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every user name, in no particular order (for start-up recovery of their mailboxes).
    pub fn names(&self) -> impl Iterator<Item = &UserName> {
        self.by_name.values().map(|(n, _)| n)
    }

    /// Whether no user can log in.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Checks a USER/PASS login. Unknown users cost the same work as wrong passwords.
    pub fn verify_password(&self, name: &[u8], password: &[u8]) -> Option<UserName> {
        if let Some(rule) = &self.anyone {
            return rule.verify(name, |s| s.verify(password));
        }
        match self.lookup(name) {
            Some((user, secret)) => secret.verify(password).then(|| user.clone()),
            None => {
                dummy_secret().verify(password);
                None
            }
        }
    }

    /// Checks an APOP login: `digest` must be the hex MD5 of `timestamp` and the user's plain
    /// secret (RFC 1939 §7). Users without a plain secret cannot use APOP.
    pub fn verify_apop(&self, name: &[u8], timestamp: &str, digest: &[u8]) -> Option<UserName> {
        if let Some(rule) = &self.anyone {
            return rule.verify(name, |s| {
                let want = apop_digest(timestamp, s.plain().unwrap_or_default());
                ct_eq(want.as_bytes(), &digest.to_ascii_lowercase())
            });
        }
        let found = self.lookup(name);
        let dummy = dummy_secret();
        let secret = found
            .and_then(|(_, s)| s.plain())
            .unwrap_or_else(|| dummy.plain().unwrap_or_default());
        let want = apop_digest(timestamp, secret);
        let given = digest.to_ascii_lowercase();
        let ok = ct_eq(want.as_bytes(), &given);
        match found {
            Some((user, s)) if ok && s.plain().is_some() => Some(user.clone()),
            _ => None,
        }
    }

    fn lookup(&self, name: &[u8]) -> Option<&(UserName, Secret)> {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.by_name.get(n))
    }
}

/// The APOP digest: MD5 over the greeting's timestamp and the secret, as 32 lowercase hex digits.
pub fn apop_digest(timestamp: &str, secret: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret);
    crate::mailbox::hex(&h.finalize())
}

/// The current users table, replaceable as a whole (a reload swaps it atomically).
#[derive(Debug, Clone, Default)]
pub struct UsersHandle(Arc<RwLock<Arc<Users>>>);

impl UsersHandle {
    /// A handle on `users`.
    pub fn new(users: Users) -> Self {
        UsersHandle(Arc::new(RwLock::new(Arc::new(users))))
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<Users> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the table for every later login.
    pub fn replace(&self, users: Users) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(users);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        Users::new([
            (
                UserName::new(b"alice").unwrap(),
                Secret::Plain(b"wonderland".to_vec()),
            ),
            (
                UserName::new(b"mrose").unwrap(),
                Secret::Plain(b"tanstaaf".to_vec()),
            ),
        ])
    }

    #[test]
    fn passwords_are_checked() {
        let u = users();
        assert_eq!(
            u.verify_password(b"alice", b"wonderland")
                .map(|n| n.as_str().to_owned()),
            Some("alice".into())
        );
        assert!(u.verify_password(b"alice", b"wonderlan").is_none());
        assert!(u.verify_password(b"alice", b"wonderland ").is_none());
        assert!(u.verify_password(b"bob", b"wonderland").is_none());
        assert!(u.verify_password(b"\xff", b"x").is_none());
    }

    #[test]
    fn apop_matches_the_rfc_1939_example() {
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        assert_eq!(
            apop_digest(ts, b"tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
        let u = users();
        assert!(
            u.verify_apop(b"mrose", ts, b"c4c9334bac560ecc979e58001b3e22fb")
                .is_some()
        );
        assert!(
            u.verify_apop(b"mrose", ts, b"C4C9334BAC560ECC979E58001B3E22FB")
                .is_some()
        );
        assert!(
            u.verify_apop(b"mrose", ts, b"c4c9334bac560ecc979e58001b3e22fa")
                .is_none()
        );
        assert!(
            u.verify_apop(b"nobody", ts, b"c4c9334bac560ecc979e58001b3e22fb")
                .is_none()
        );
    }

    #[test]
    fn ct_eq_compares_whole_strings() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
    }
}
