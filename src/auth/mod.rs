//! Who may log in: the users table loaded from a passwd-file, password checks through the
//! hashing gate, APOP and CRAM-MD5 digests, `--dev`'s bearer tokens, SASL decoding, and the
//! brute-force guards.

pub mod des_crypt;
pub mod guard;
pub mod md5_crypt;
pub mod oauth;
pub mod passwd;
pub mod records;
pub mod sasl;
pub mod scheme;
pub mod sha_digest;
pub mod throttle;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};

use crate::limits::{MAX_PASSWORD, MAX_USER_NAME};
use crate::mailbox::UserName;
pub use guard::Gate;

/// Length of an MD5 digest in hex, as APOP and CRAM-MD5 send it.
const MD5_HEX_LEN: usize = 32;
pub use scheme::{Secret, ct_eq};

/// Counts password and digest checks on the current thread, so that tests can tell a refusal
/// that ran a hash from one that did not.
#[cfg(test)]
pub(crate) mod hash_count {
    use std::cell::{Cell, RefCell};

    use super::Secret;

    thread_local! {
        static CHECKS: Cell<usize> = const { Cell::new(0) };
        static SECRETS: RefCell<Vec<(String, u64)>> = const { RefCell::new(Vec::new()) };
    }

    /// Counts one check.
    pub(crate) fn bump() {
        CHECKS.with(|c| c.set(c.get() + 1));
    }

    /// The checks counted since the last call, and starts again from zero.
    pub(crate) fn take() -> usize {
        CHECKS.with(|c| c.replace(0))
    }

    /// Records which kind of secret, at what cost, a password was checked against.
    pub(crate) fn saw(secret: &Secret) {
        SECRETS.with(|s| s.borrow_mut().push((format!("{secret:?}"), secret.work())));
    }

    /// The secrets recorded by [`saw`] since the last call, as (kind, work), and forgets them.
    pub(crate) fn take_secrets() -> Vec<(String, u64)> {
        SECRETS.with(|s| s.take())
    }
}

/// The users that may log in, by name.
#[derive(Debug)]
pub struct Users {
    by_name: HashMap<String, (UserName, Secret)>,
    /// Checked for unknown users, and after a wrong password for a user whose own secret is
    /// cheaper, so that every failure costs the same work: a copy of the table's most expensive
    /// secret, with its real cost parameters (a right guess against it still fails).
    dummy: Secret,
    /// `--dev`: every valid user name logs in by this rule instead of the table.
    anyone: Option<Anyone>,
    /// `--dev`: the bearer tokens that XOAUTH2 and OAUTHBEARER logins are checked against;
    /// without them, neither mechanism is offered.
    bearer: Option<oauth::BearerTokens>,
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

impl Default for Users {
    fn default() -> Self {
        Users::new([])
    }
}

/// Why a login could not even be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// Every hashing slot stayed busy for too long: the server is overloaded.
    Busy,
}

impl Users {
    /// A table from (name, secret) pairs.
    pub fn new(entries: impl IntoIterator<Item = (UserName, Secret)>) -> Users {
        let by_name: HashMap<String, (UserName, Secret)> = entries
            .into_iter()
            .map(|(n, s)| (n.as_str().to_owned(), (n, s)))
            .collect();
        // Ties go to the smallest name, so that a reload of the same file picks the same one.
        let dummy = by_name
            .iter()
            .max_by(|(a, (_, x)), (b, (_, y))| x.work().cmp(&y.work()).then(b.cmp(a)))
            .map_or_else(
                || Secret::Plain(b"\x00poplar-no-such-user\x00".to_vec()),
                |(_, (_, s))| s.clone(),
            );
        Users {
            by_name,
            dummy,
            anyone: None,
            bearer: None,
        }
    }

    /// A table that lets in every valid user name by `rule` (`--dev`).
    pub fn anyone(rule: Anyone) -> Users {
        Users {
            anyone: Some(rule),
            ..Users::default()
        }
    }

    /// These users, also logging in by bearer token as `tokens` say (`--dev`).
    pub fn with_bearer_tokens(self, tokens: oauth::BearerTokens) -> Users {
        Users {
            bearer: Some(tokens),
            ..self
        }
    }

    /// Whether bearer-token logins (XOAUTH2, OAUTHBEARER) can be checked here.
    pub fn takes_bearer_tokens(&self) -> bool {
        self.bearer.is_some()
    }

    /// Checks an XOAUTH2 or OAUTHBEARER login against the token table (see
    /// [`oauth::BearerTokens::verify`]); without one, nobody logs in this way.
    pub fn verify_bearer(&self, name: &[u8], token: &[u8]) -> Option<UserName> {
        if name.len() > MAX_USER_NAME {
            return None;
        }
        self.bearer.as_ref()?.verify(name, token)
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

    /// Whether some user has a plain secret, so that APOP and CRAM-MD5 can work at all.
    pub fn any_plain(&self) -> bool {
        match &self.anyone {
            Some(Anyone::AnyPassword) => true,
            Some(Anyone::Password(s)) => s.plain().is_some(),
            None => self.by_name.values().any(|(_, s)| s.plain().is_some()),
        }
    }

    /// Checks a USER/PASS (or SASL PLAIN/LOGIN) login. Every failure costs at least one check
    /// of the table's most expensive secret: an unknown user is checked against the dummy, and
    /// a wrong password for a user with a cheaper secret is followed by a check of the dummy,
    /// so neither the time nor the hashing gate tells who exists or what their scheme is.
    /// Expensive hashes run through `gate`. A name or password over its cap
    /// ([`MAX_USER_NAME`], [`MAX_PASSWORD`]) fails before any hashing, whoever the user.
    pub fn verify_password(
        &self,
        name: &[u8],
        password: &[u8],
        gate: &Gate,
    ) -> Result<Option<UserName>, CheckError> {
        if name.len() > MAX_USER_NAME || password.len() > MAX_PASSWORD {
            return Ok(None);
        }
        if let Some(rule) = &self.anyone {
            return Ok(rule.verify(name, |s| s.verify(password)));
        }
        let (user, secret) = match self.lookup(name) {
            Some((u, s)) => (Some(u), s),
            None => (None, &self.dummy),
        };
        let ok = Self::check(secret, password, gate)?;
        if !ok && secret.work() < self.dummy.work() {
            Self::check(&self.dummy, password, gate)?;
        }
        Ok(user.filter(|_| ok).cloned())
    }

    /// One password check, through `gate` when it costs real work.
    fn check(secret: &Secret, password: &[u8], gate: &Gate) -> Result<bool, CheckError> {
        if secret.is_expensive() {
            gate.run(|| secret.verify(password)).ok_or(CheckError::Busy)
        } else {
            Ok(secret.verify(password))
        }
    }

    /// Checks an APOP login: `digest` must be the hex MD5 of `timestamp` and the user's plain
    /// secret (RFC 1939 §7). Users without a plain secret cannot use APOP.
    pub fn verify_apop(&self, name: &[u8], timestamp: &str, digest: &[u8]) -> Option<UserName> {
        self.verify_shared_secret(name, digest, |secret| apop_digest(timestamp, secret))
    }

    /// Checks a CRAM-MD5 response (RFC 2195): `digest` must be the hex HMAC-MD5 of the
    /// challenge keyed with the user's plain secret.
    pub fn verify_cram_md5(
        &self,
        name: &[u8],
        challenge: &[u8],
        digest: &[u8],
    ) -> Option<UserName> {
        self.verify_shared_secret(name, digest, |secret| cram_md5_digest(secret, challenge))
    }

    /// The common part of APOP and CRAM-MD5: the expected hex digest from the plain secret
    /// (a dummy for unknown users and users without one), compared in constant time. A digest
    /// of the wrong length, or a name over [`MAX_USER_NAME`], cannot match: it fails before
    /// any hashing.
    fn verify_shared_secret(
        &self,
        name: &[u8],
        digest: &[u8],
        expected: impl Fn(&[u8]) -> String,
    ) -> Option<UserName> {
        if name.len() > MAX_USER_NAME || digest.len() != MD5_HEX_LEN {
            return None;
        }
        let matches = |secret: &[u8]| {
            #[cfg(test)]
            hash_count::bump();
            ct_eq(expected(secret).as_bytes(), &digest.to_ascii_lowercase())
        };
        if let Some(rule) = &self.anyone {
            return rule.verify(name, |s| matches(s.plain().unwrap_or_default()));
        }
        let found = self.lookup(name);
        let secret = found
            .and_then(|(_, s)| s.plain())
            .unwrap_or(b"\x00poplar-no-such-user\x00");
        let ok = matches(secret);
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

/// The CRAM-MD5 digest (RFC 2195): HMAC-MD5 of the challenge keyed with the secret, in hex.
pub fn cram_md5_digest(secret: &[u8], challenge: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Md5>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(challenge);
    crate::mailbox::hex(&mac.finalize().into_bytes())
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
            (
                UserName::new(b"hashed").unwrap(),
                Secret::parse(b"{MD5-CRYPT}$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/").unwrap(),
            ),
        ])
    }

    fn check(u: &Users, name: &[u8], pass: &[u8]) -> Option<String> {
        u.verify_password(name, pass, &Gate::new(1))
            .unwrap()
            .map(|n| n.as_str().to_owned())
    }

    #[test]
    fn passwords_are_checked() {
        let u = users();
        assert_eq!(check(&u, b"alice", b"wonderland"), Some("alice".into()));
        assert!(check(&u, b"alice", b"wonderlan").is_none());
        assert!(check(&u, b"alice", b"wonderland ").is_none());
        assert!(check(&u, b"bob", b"wonderland").is_none());
        assert!(check(&u, b"\xff", b"x").is_none());
        assert_eq!(check(&u, b"hashed", b"password"), Some("hashed".into()));
        assert!(check(&u, b"hashed", b"Password").is_none());
    }

    #[test]
    fn an_over_long_password_fails_before_any_hashing() {
        let u = users();
        let long = vec![b'p'; MAX_PASSWORD + 1];
        hash_count::take();
        for name in [&b"hashed"[..], b"alice", b"nobody"] {
            assert!(check(&u, name, &long).is_none());
        }
        let any = Users::anyone(Anyone::AnyPassword);
        assert!(
            any.verify_password(b"alice", &long, &Gate::new(1))
                .unwrap()
                .is_none()
        );
        assert_eq!(hash_count::take(), 0, "an over-long password was hashed");
        // One at the cap is checked as usual.
        assert!(check(&u, b"hashed", &long[..MAX_PASSWORD]).is_none());
        assert_eq!(hash_count::take(), 1);
    }

    #[test]
    fn over_long_digests_and_names_fail_before_any_hashing() {
        let u = users();
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        let digest = b"c4c9334bac560ecc979e58001b3e22fb";
        let long_name = vec![b'm'; MAX_USER_NAME + 1];
        hash_count::take();
        assert!(
            u.verify_apop(b"mrose", ts, &[&digest[..], b"0"].concat())
                .is_none()
        );
        assert!(u.verify_apop(&long_name, ts, digest).is_none());
        assert!(u.verify_cram_md5(&long_name, b"<c@h>", digest).is_none());
        assert!(
            u.verify_cram_md5(b"mrose", b"<c@h>", &[&digest[..], b"0"].concat())
                .is_none()
        );
        assert_eq!(
            hash_count::take(),
            0,
            "an over-long digest or name was hashed"
        );
        assert!(u.verify_apop(b"mrose", ts, digest).is_some());
        assert_eq!(hash_count::take(), 1);
    }

    #[test]
    fn an_unknown_user_fails_even_with_the_dummy_secrets_password() {
        let u = Users::new([(
            UserName::new(b"hashed").unwrap(),
            Secret::parse(b"{MD5-CRYPT}$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/").unwrap(),
        )]);
        assert!(u.dummy.is_expensive());
        assert!(check(&u, b"nobody", b"password").is_none());
    }

    #[test]
    fn every_failure_on_a_mixed_table_checks_the_most_expensive_secret() {
        let argon = Secret::parse(
            scheme::hash(scheme::Scheme::Argon2id, b"bob's password")
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let expensive = ("Argon2id:***".to_owned(), argon.work());
        let plain = ("{PLAIN}***".to_owned(), 0);
        let u = Users::new([
            (
                UserName::new(b"alice").unwrap(),
                Secret::Plain(b"wonderland".to_vec()),
            ),
            (UserName::new(b"bob").unwrap(), argon),
            (
                UserName::new(b"carol").unwrap(),
                Secret::Plain(b"lewis".to_vec()),
            ),
        ]);
        hash_count::take_secrets();
        let checked = |name: &[u8], pass: &[u8]| {
            let ok = check(&u, name, pass).is_some();
            (ok, hash_count::take_secrets())
        };
        assert_eq!(
            checked(b"nobody", b"guess"),
            (false, vec![expensive.clone()])
        );
        assert_eq!(checked(b"bob", b"guess"), (false, vec![expensive.clone()]));
        assert_eq!(
            checked(b"alice", b"guess"),
            (false, vec![plain.clone(), expensive.clone()])
        );
        // A right password costs only its own check, and the dummy lets no one in.
        assert_eq!(checked(b"alice", b"wonderland"), (true, vec![plain]));
        assert_eq!(checked(b"bob", b"bob's password"), (true, vec![expensive]));
        assert!(!checked(b"nobody", b"bob's password").0);
    }

    #[test]
    fn with_the_hashing_gate_full_every_failure_is_busy_alike() {
        let u = Users::new([
            (
                UserName::new(b"alice").unwrap(),
                Secret::Plain(b"wonderland".to_vec()),
            ),
            (
                UserName::new(b"hashed").unwrap(),
                Secret::parse(b"{MD5-CRYPT}$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/").unwrap(),
            ),
        ]);
        let gate = Gate::new(1);
        let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        let (got, alice) = std::thread::scope(|s| {
            s.spawn(|| {
                gate.run(|| {
                    held.wait();
                    release.wait();
                })
            });
            held.wait();
            let tries = [&b"nobody"[..], b"alice", b"hashed"]
                .map(|name| s.spawn(|| u.verify_password(name, b"guess", &gate)));
            let got = tries.map(|t| t.join().map(|r| r.map(|_| ())));
            // A right {PLAIN} password needs no slot.
            let alice = u.verify_password(b"alice", b"wonderland", &gate);
            release.wait();
            (got, alice)
        });
        for (got, name) in got.into_iter().zip(["nobody", "alice", "hashed"]) {
            assert_eq!(got.unwrap(), Err(CheckError::Busy), "{name}");
        }
        let alice = alice.unwrap().map(|n| n.as_str().to_owned());
        assert_eq!(alice, Some("alice".into()));
    }

    #[test]
    fn the_dummy_is_the_costliest_secret_by_its_own_parameters() {
        let sha = |rounds: &str| {
            Secret::Hashed(
                scheme::Algorithm::Sha512,
                format!("$6${rounds}saltsalt${}", "a".repeat(86)),
            )
        };
        let u = Users::new([
            (UserName::new(b"a").unwrap(), sha("")),
            (UserName::new(b"b").unwrap(), sha("rounds=50000$")),
            (UserName::new(b"c").unwrap(), sha("")),
            (UserName::new(b"d").unwrap(), Secret::Plain(b"x".to_vec())),
        ]);
        assert_eq!(u.dummy, sha("rounds=50000$"));
        assert!(Users::default().dummy.plain().is_some());
    }

    #[test]
    fn apop_matches_the_rfc_1939_example() {
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        assert_eq!(
            apop_digest(ts, b"tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
        let u = users();
        let ok = |n: &[u8], d: &[u8]| u.verify_apop(n, ts, d).is_some();
        assert!(ok(b"mrose", b"c4c9334bac560ecc979e58001b3e22fb"));
        assert!(ok(b"mrose", b"C4C9334BAC560ECC979E58001B3E22FB"));
        assert!(!ok(b"mrose", b"c4c9334bac560ecc979e58001b3e22fa"));
        assert!(!ok(b"nobody", b"c4c9334bac560ecc979e58001b3e22fb"));
        assert!(!ok(b"hashed", &apop_digest(ts, b"password").into_bytes()));
    }

    #[test]
    fn cram_md5_matches_the_rfc_2195_example() {
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(
            cram_md5_digest(b"tanstaaftanstaaf", challenge),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
        let u = Users::new([(
            UserName::new(b"tim").unwrap(),
            Secret::Plain(b"tanstaaftanstaaf".to_vec()),
        )]);
        assert!(
            u.verify_cram_md5(b"tim", challenge, b"b913a602c7eda7a495b4e6e7334d3890")
                .is_some()
        );
        assert!(
            u.verify_cram_md5(b"tom", challenge, b"b913a602c7eda7a495b4e6e7334d3890")
                .is_none()
        );
    }
}
