//! Password schemes as Dovecot names them: parsing `{SCHEME}value`, verifying a password
//! against it, and making new hashes for `poplar pw`. Every hash function comes from a crate
//! except MD5-crypt and DES crypt (`md5_crypt.rs`, `des_crypt.rs`), which no crate on the
//! current RustCrypto generation offers; the plain digest schemes live in `sha_digest.rs`.

use std::fmt;
use std::str::FromStr;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sha_digest::{self, Encoding, StoredDigest};
use crate::limits;

/// A `{SCHEME}` name a passwd-file line may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `{PLAIN}` (also `{CLEAR}`, `{CLEARTEXT}`): the password itself.
    Plain,
    /// `{CRYPT}`, or no prefix at all: any crypt(3) string, told apart by its `$id$`
    /// (DES, `$1$`, `$5$`, `$6$`, `$2?$`, `$y$`).
    Crypt,
    /// `{SHA512-CRYPT}`: `$6$`.
    Sha512Crypt,
    /// `{SHA256-CRYPT}`: `$5$`.
    Sha256Crypt,
    /// `{MD5-CRYPT}`: `$1$`.
    Md5Crypt,
    /// `{BLF-CRYPT}`: bcrypt, `$2a$`, `$2b$` or `$2y$`.
    BlfCrypt,
    /// `{ARGON2I}`: a PHC string `$argon2i$...`.
    Argon2i,
    /// `{ARGON2ID}`: a PHC string `$argon2id$...`.
    Argon2id,
    /// `{SHA}`: base64 of the SHA-1 digest of the password.
    Sha,
    /// `{SSHA}`: base64 of SHA-1(password, salt) and the salt.
    Ssha,
    /// `{SHA256}`: base64 of the SHA-256 digest of the password.
    Sha256,
    /// `{SSHA256}`: base64 of SHA-256(password, salt) and the salt.
    Ssha256,
    /// `{SHA512}`: base64 of the SHA-512 digest of the password.
    Sha512,
    /// `{SSHA512}`: base64 of SHA-512(password, salt) and the salt.
    Ssha512,
}

/// Every scheme with its Dovecot name, the first name being the one `poplar pw` prints.
const NAMES: &[(&str, Scheme)] = &[
    ("PLAIN", Scheme::Plain),
    ("CLEAR", Scheme::Plain),
    ("CLEARTEXT", Scheme::Plain),
    ("CRYPT", Scheme::Crypt),
    ("SHA512-CRYPT", Scheme::Sha512Crypt),
    ("SHA256-CRYPT", Scheme::Sha256Crypt),
    ("MD5-CRYPT", Scheme::Md5Crypt),
    ("BLF-CRYPT", Scheme::BlfCrypt),
    ("ARGON2I", Scheme::Argon2i),
    ("ARGON2ID", Scheme::Argon2id),
    ("SHA", Scheme::Sha),
    ("SSHA", Scheme::Ssha),
    ("SHA256", Scheme::Sha256),
    ("SSHA256", Scheme::Ssha256),
    ("SHA512", Scheme::Sha512),
    ("SSHA512", Scheme::Ssha512),
];

impl Scheme {
    /// The hash of a digest scheme and whether it is salted; `None` for the others.
    fn digest(self) -> Option<(sha_digest::Hash, bool)> {
        use sha_digest::Hash;
        Some(match self {
            Scheme::Sha => (Hash::Sha1, false),
            Scheme::Ssha => (Hash::Sha1, true),
            Scheme::Sha256 => (Hash::Sha256, false),
            Scheme::Ssha256 => (Hash::Sha256, true),
            Scheme::Sha512 => (Hash::Sha512, false),
            Scheme::Ssha512 => (Hash::Sha512, true),
            _ => return None,
        })
    }
}

impl FromStr for Scheme {
    type Err = String;

    /// Parses a scheme name, case-insensitively.
    fn from_str(s: &str) -> Result<Scheme, String> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|&(_, scheme)| scheme)
            .ok_or_else(|| {
                format!(
                    "password scheme {{{}}} is not supported",
                    crate::logsafe::escape(s.as_bytes())
                )
            })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = NAMES
            .iter()
            .find(|(_, s)| s == self)
            .map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

/// The hash function behind a crypt(3)-style string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Traditional DES crypt: 13 characters, no `$id$` (only behind `{CRYPT}`).
    Des,
    /// `$1$`.
    Md5,
    /// `$5$`.
    Sha256,
    /// `$6$`.
    Sha512,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
    /// `$argon2i$`.
    Argon2i,
    /// `$argon2id$`.
    Argon2id,
    /// `$y$`: yescrypt, Debian's default for /etc/shadow (only behind `{CRYPT}`).
    Yescrypt,
}

impl Algorithm {
    /// Tells the algorithm from the string's `$id$`.
    fn of(hash: &str) -> Option<Algorithm> {
        let id = hash.strip_prefix('$').and_then(|r| r.split('$').next());
        Some(match id {
            Some("1") => Algorithm::Md5,
            Some("5") => Algorithm::Sha256,
            Some("6") => Algorithm::Sha512,
            Some("2a" | "2b" | "2y") => Algorithm::Bcrypt,
            Some("argon2i") => Algorithm::Argon2i,
            Some("argon2id") => Algorithm::Argon2id,
            Some("y") => Algorithm::Yescrypt,
            Some(_) => return None,
            None if hash.len() == 13 && hash.bytes().all(is_crypt64) => Algorithm::Des,
            None => return None,
        })
    }
}

fn is_crypt64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// A stored secret: the password itself, or a hash of it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// `{PLAIN}`: the password itself (the only kind that allows APOP and CRAM-MD5).
    Plain(Vec<u8>),
    /// A hash, checked with its algorithm.
    Hashed(Algorithm, String),
    /// A digest scheme's value (`{SSHA256}` and its kin), checked by digesting once.
    Digest(StoredDigest),
}

impl fmt::Debug for Secret {
    /// Shows the kind of secret, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("{PLAIN}***"),
            Secret::Hashed(a, _) => write!(f, "{a:?}:***"),
            Secret::Digest(d) => write!(f, "{d:?}"),
        }
    }
}

impl Secret {
    /// Parses the password field of a passwd-file line: `{SCHEME}value`, or a crypt(3) string
    /// with no prefix (as Dovecot reads it). The digest schemes also take Dovecot's encoding
    /// suffixes (`{SSHA256.HEX}`, `{SHA.B64}`). A hash that its scheme cannot check is refused
    /// here, so that the line number can be reported.
    pub fn parse(field: &[u8]) -> Result<Secret, String> {
        let (scheme, encoding, value) = match field.strip_prefix(b"{") {
            Some(rest) => {
                let close = rest
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or_else(|| "unterminated {SCHEME}".to_owned())?;
                let name = String::from_utf8_lossy(&rest[..close]);
                let (scheme, encoding) = parse_name(&name)?;
                (scheme, encoding, &rest[close + 1..])
            }
            None => (Scheme::Crypt, None, field),
        };
        if let Some((hash, salted)) = scheme.digest() {
            let encoding = encoding.unwrap_or(Encoding::Default);
            return StoredDigest::parse(hash, salted, encoding, value)
                .map(Secret::Digest)
                .map_err(|e| format!("{{{scheme}}}: {e}"));
        }
        if encoding.is_some() {
            return Err(format!(
                "{{{scheme}}} takes no encoding suffix (only the SHA schemes do)"
            ));
        }
        if scheme == Scheme::Plain {
            return Ok(Secret::Plain(value.to_vec()));
        }
        let hash = std::str::from_utf8(value)
            .map_err(|_| format!("{{{scheme}}} value is not ASCII"))?
            .to_owned();
        let algorithm = Algorithm::of(&hash)
            .ok_or_else(|| format!("{{{scheme}}} value is not a known hash"))?;
        let expected = match scheme {
            Scheme::Sha512Crypt => Some(Algorithm::Sha512),
            Scheme::Sha256Crypt => Some(Algorithm::Sha256),
            Scheme::Md5Crypt => Some(Algorithm::Md5),
            Scheme::BlfCrypt => Some(Algorithm::Bcrypt),
            Scheme::Argon2i => Some(Algorithm::Argon2i),
            Scheme::Argon2id => Some(Algorithm::Argon2id),
            _ => None,
        };
        if expected.is_some_and(|e| e != algorithm) {
            return Err(format!(
                "{{{scheme}}} value is a {algorithm:?} hash, not {{{scheme}}}"
            ));
        }
        if !well_formed(algorithm, &hash) {
            return Err(format!(
                "{{{scheme}}} value is a malformed {algorithm:?} hash"
            ));
        }
        Ok(Secret::Hashed(algorithm, hash))
    }

    /// Whether `password` matches. Plain secrets are compared in constant time (over digests,
    /// so the length does not show either); hashes are compared in constant time by their
    /// crates or modules.
    pub fn verify(&self, password: &[u8]) -> bool {
        #[cfg(test)]
        {
            super::hash_count::bump();
            super::hash_count::saw(self);
        }
        match self {
            Secret::Plain(p) => ct_eq(p, password),
            Secret::Hashed(a, hash) => verify_hash(*a, hash, password),
            Secret::Digest(d) => d.verify(password),
        }
    }

    /// The plain secret, for mechanisms that need it (APOP, CRAM-MD5).
    pub fn plain(&self) -> Option<&[u8]> {
        match self {
            Secret::Plain(p) => Some(p),
            Secret::Hashed(..) | Secret::Digest(_) => None,
        }
    }

    /// Whether checking a password costs real work (and so goes through the hashing gate); one
    /// digest does not.
    pub fn is_expensive(&self) -> bool {
        matches!(self, Secret::Hashed(..))
    }

    /// A rough estimate of what one check costs, in nanoseconds of one core, read from the
    /// hash's own cost parameters. It only has to order secrets: exactly within one algorithm
    /// (more rounds, memory or passes cost more), roughly across algorithms.
    pub fn work(&self) -> u64 {
        let Secret::Hashed(algorithm, hash) = self else {
            return 0;
        };
        match algorithm {
            Algorithm::Des => 10_000,
            Algorithm::Md5 => 300_000,
            Algorithm::Sha256 => 500 * sha_rounds(hash),
            Algorithm::Sha512 => 800 * sha_rounds(hash),
            Algorithm::Bcrypt => {
                let cost = bcrypt::HashParts::from_str(hash).map_or(0, |p| p.get_cost());
                60_000u64.saturating_mul(1u64 << cost.min(31))
            }
            Algorithm::Argon2i | Algorithm::Argon2id => {
                let param = |name: &str| {
                    hash.split('$')
                        .flat_map(|part| part.split(','))
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                        .unwrap_or(1u64)
                };
                // About a microsecond per KiB block per pass, on one lane at a time.
                1_000u64
                    .saturating_mul(param("m"))
                    .saturating_mul(param("t"))
            }
            // The crate's default cost (16 MiB); its parameter string is not worth decoding to
            // order it against the rare table that mixes yescrypt with another expensive hash.
            Algorithm::Yescrypt => 30_000_000,
        }
    }
}

/// The rounds of a SHA-crypt string: its `rounds=` field, or crypt(3)'s default of 5,000.
fn sha_rounds(hash: &str) -> u64 {
    hash.split('$')
        .find_map(|part| part.strip_prefix("rounds=")?.parse().ok())
        .unwrap_or(5_000)
}

/// A scheme name with an optional encoding suffix (`SSHA256.HEX`).
fn parse_name(name: &str) -> Result<(Scheme, Option<Encoding>), String> {
    let Some((base, suffix)) = name.split_once('.') else {
        return Ok((name.parse()?, None));
    };
    let encoding = Encoding::from_suffix(suffix).ok_or_else(|| {
        format!(
            "password scheme {{{}}}: unknown encoding (HEX, B64 or BASE64)",
            crate::logsafe::escape(name.as_bytes())
        )
    })?;
    Ok((base.parse()?, Some(encoding)))
}

/// Compares two byte strings in time that depends on neither their contents nor their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

fn well_formed(algorithm: Algorithm, hash: &str) -> bool {
    match algorithm {
        Algorithm::Des => true,
        Algorithm::Md5 => {
            let parts: Vec<&str> = hash.split('$').collect();
            parts.len() == 4 && parts[3].len() == 22 && parts[3].bytes().all(is_crypt64)
        }
        Algorithm::Sha256 | Algorithm::Sha512 => {
            sha_crypt::PasswordHashRef::new(hash).is_ok()
                && hash.rsplit('$').next().is_some_and(|h| {
                    h.len()
                        == if algorithm == Algorithm::Sha256 {
                            43
                        } else {
                            86
                        }
                })
        }
        Algorithm::Bcrypt => hash.len() == 60 && bcrypt::HashParts::from_str(hash).is_ok(),
        Algorithm::Argon2i | Algorithm::Argon2id => PasswordHash::new(hash).is_ok(),
        Algorithm::Yescrypt => {
            let parts: Vec<&str> = hash.split('$').collect();
            yescrypt::PasswordHashRef::new(hash).is_ok()
                && parts.len() == 5
                && parts[4].len() == 43
                && parts[4].bytes().all(is_crypt64)
        }
    }
}

fn verify_hash(algorithm: Algorithm, hash: &str, password: &[u8]) -> bool {
    match algorithm {
        Algorithm::Des => super::des_crypt::verify(password, hash),
        Algorithm::Md5 => super::md5_crypt::verify(password, hash),
        Algorithm::Sha256 | Algorithm::Sha512 => sha_crypt::ShaCrypt::default()
            .verify_password(password, hash)
            .is_ok(),
        Algorithm::Bcrypt => bcrypt::verify(password, hash).unwrap_or(false),
        Algorithm::Argon2i | Algorithm::Argon2id => PasswordHash::new(hash)
            .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok()),
        Algorithm::Yescrypt => yescrypt::Yescrypt::default()
            .verify_password(password, hash)
            .is_ok(),
    }
}

/// Hashes `password` with `scheme` and a fresh random salt, as a `{SCHEME}value` line field.
pub fn hash(scheme: Scheme, password: &[u8]) -> Result<String, String> {
    let value = match scheme {
        Scheme::Plain => {
            return std::str::from_utf8(password)
                .map(|p| format!("{{PLAIN}}{p}"))
                .map_err(|_| "a {PLAIN} password must be UTF-8".to_owned());
        }
        Scheme::Crypt | Scheme::Sha512Crypt => {
            sha_crypt(sha_crypt::Algorithm::Sha512Crypt, password)?
        }
        Scheme::Sha256Crypt => sha_crypt(sha_crypt::Algorithm::Sha256Crypt, password)?,
        // Weak; `poplar pw` offers it because Dovecot does, for files that must stay readable
        // by older systems.
        Scheme::Md5Crypt => super::md5_crypt::hash(password).map_err(|e| e.to_string())?,
        Scheme::BlfCrypt => {
            let parts = bcrypt::hash_with_result(password, limits::BCRYPT_COST)
                .map_err(|e| e.to_string())?;
            parts.format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Argon2i | Scheme::Argon2id => {
            let algorithm = if scheme == Scheme::Argon2i {
                argon2::Algorithm::Argon2i
            } else {
                argon2::Algorithm::Argon2id
            };
            Argon2::new(algorithm, argon2::Version::V0x13, argon2::Params::default())
                .hash_password(password)
                .map_err(|e| e.to_string())?
                .to_string()
        }
        // Fast digests; offered because `doveadm pw` offers them, for files that other
        // programs read too.
        Scheme::Sha | Scheme::Sha256 | Scheme::Sha512 => {
            let (h, _) = scheme.digest().ok_or("not a digest scheme")?;
            StoredDigest::make(h, password, b"")
        }
        Scheme::Ssha | Scheme::Ssha256 | Scheme::Ssha512 => {
            let (h, _) = scheme.digest().ok_or("not a digest scheme")?;
            let mut salt = [0u8; limits::DIGEST_SALT];
            getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
            StoredDigest::make(h, password, &salt)
        }
    };
    Ok(format!("{{{scheme}}}{value}"))
}

fn sha_crypt(algorithm: sha_crypt::Algorithm, password: &[u8]) -> Result<String, String> {
    // 12 random bytes make the 16 salt characters crypt(3) reads; the crate's own default
    // salt is longer, and glibc, libxcrypt and Dovecot would cut it and compute another hash.
    let mut salt = [0u8; 12];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    sha_crypt::ShaCrypt::from(algorithm)
        .hash_password_with_salt(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMES: &[Scheme] = &[
        Scheme::Plain,
        Scheme::Crypt,
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::Md5Crypt,
        Scheme::BlfCrypt,
        Scheme::Argon2i,
        Scheme::Argon2id,
        Scheme::Sha,
        Scheme::Ssha,
        Scheme::Sha256,
        Scheme::Ssha256,
        Scheme::Sha512,
        Scheme::Ssha512,
    ];

    #[test]
    fn every_scheme_round_trips_through_its_own_hash() {
        for &s in SCHEMES {
            let line = hash(s, b"p\xc3\xa4ss word").unwrap();
            let secret = Secret::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(secret.verify(b"p\xc3\xa4ss word"), "{line}");
            assert!(!secret.verify(b"p\xc3\xa4ss wordx"), "{line}");
            assert!(!secret.verify(b""), "{line}");
            if let Some(salt) = line.strip_prefix("{SHA512-CRYPT}$6$rounds=5000$") {
                assert_eq!(
                    salt.find('$'),
                    Some(16),
                    "crypt(3) reads 16 salt characters"
                );
            }
        }
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_ones_are_refused() {
        assert_eq!("blf-crypt".parse::<Scheme>(), Ok(Scheme::BlfCrypt));
        assert_eq!("CLEARTEXT".parse::<Scheme>(), Ok(Scheme::Plain));
        assert!("SHA1".parse::<Scheme>().unwrap_err().contains("SHA1"));
        assert_eq!(Scheme::Argon2id.to_string(), "ARGON2ID");
    }

    #[test]
    fn a_hash_under_the_wrong_scheme_or_malformed_is_refused() {
        let md5 = "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/";
        assert!(Secret::parse(format!("{{MD5-CRYPT}}{md5}").as_bytes()).is_ok());
        assert!(Secret::parse(format!("{{SHA512-CRYPT}}{md5}").as_bytes()).is_err());
        assert!(Secret::parse(b"{SHA512-CRYPT}$6$abc").is_err());
        assert!(Secret::parse(b"{BLF-CRYPT}$2y$10$short").is_err());
        assert!(Secret::parse(b"{ARGON2ID}$argon2id$v=19$garbage").is_err());
        assert!(Secret::parse(b"{CRYPT}$9$what$ever").is_err());
        assert!(Secret::parse(b"{CRYPT}$y$j9T$short").is_err());
        assert!(Secret::parse(b"{MD5-CRYPT\xff").is_err());
        assert!(Secret::parse(b"nobrace").is_err());
    }

    #[test]
    fn doveadm_digest_fields_load_with_their_encoding_suffixes() {
        // `doveadm pw -s <name> -p 'pässword'`.
        let fields = [
            "{SHA}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
            "{ssha}wI3xjFMQ3WcPHW3mdwpyxKuF9EmBiKBn",
            "{SSHA256}6gxtQP1VnQT5NWRQOJ+fGebAobKTrV2T9xxvbQNjonPIy+yG",
            "{SSHA.B64}REs/LHadp6KQUaiilbvOq61WNmYqWSWd",
            "{SHA256.base64}NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=",
            "{SHA.HEX}23b74494475f5f874980b7676d511e23d886da64",
            "{SSHA256.hex}cd4f675985a8bfd19c8645742360e893de92e06d3a51eb7a24b5878d83f9fbc15dade541",
        ];
        for field in fields {
            let s = Secret::parse(field.as_bytes()).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert!(s.verify("pässword".as_bytes()), "{field}");
            assert!(!s.verify(b"password"), "{field}");
            assert!(!s.is_expensive() && s.plain().is_none(), "{field}");
        }
        for bad in [
            "{SHA.XX}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
            "{PLAIN.HEX}70617373",
            "{SSHA}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
            "{SHA512}I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
        ] {
            assert!(Secret::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn work_follows_each_hashs_cost_parameters() {
        let hashed = |a, h: &str| Secret::Hashed(a, h.to_owned()).work();
        let argon = |m: u32, t: u32| {
            hashed(
                Algorithm::Argon2id,
                &format!("$argon2id$v=19$m={m},t={t},p=1$c2FsdHNhbHQ$aGFzaA"),
            )
        };
        assert!(argon(65536, 3) > argon(19456, 2));
        assert!(argon(19456, 3) > argon(19456, 2));
        let bcrypt = |cost: u32| {
            hashed(
                Algorithm::Bcrypt,
                &format!("$2y${cost:02}$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVxJ7JIlwxyVU3u"),
            )
        };
        assert!(bcrypt(12) > bcrypt(10));
        let sha = hashed(Algorithm::Sha512, "$6$salt$x");
        assert!(hashed(Algorithm::Sha512, "$6$rounds=50000$salt$x") > sha);
        assert!(sha > hashed(Algorithm::Md5, "$1$salt$x"));
        // The slow schemes at their defaults outweigh SHA-crypt at its default.
        assert!(bcrypt(10) > sha && argon(19456, 2) > sha);
        assert_eq!(Secret::Plain(b"x".to_vec()).work(), 0);
    }

    #[test]
    fn plain_comparison_is_exact() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::parse(b"{PLAIN}hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
