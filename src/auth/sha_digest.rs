//! Dovecot's digest schemes `{SHA}`, `{SSHA}`, `{SHA256}`, `{SSHA256}`, `{SHA512}` and
//! `{SSHA512}`: the digest of the password (and a salt), then the salt, in base64 or hex.
//! Found in passwd-files and LDAP directories moved over from Dovecot; fast hashes, so taken
//! for migration, never recommended.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

/// The hash function of a digest scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// SHA-1 (`{SHA}`, `{SSHA}`).
    Sha1,
    /// SHA-256 (`{SHA256}`, `{SSHA256}`).
    Sha256,
    /// SHA-512 (`{SHA512}`, `{SSHA512}`).
    Sha512,
}

impl Hash {
    /// Octets of its digest.
    fn len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    /// The digest of `password` followed by `salt`.
    fn of(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
        fn run<D: sha2::Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(password);
            d.update(salt);
            d.finalize().to_vec()
        }
        match self {
            Hash::Sha1 => run::<sha1::Sha1>(password, salt),
            Hash::Sha256 => run::<sha2::Sha256>(password, salt),
            Hash::Sha512 => run::<sha2::Sha512>(password, salt),
        }
    }
}

/// How the value after `{SCHEME}` is written: Dovecot's `.B64`/`.BASE64` and `.HEX` name
/// suffixes, or no suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No suffix: base64, or hex when an unsalted value is exactly the digest in hex digits
    /// (as Dovecot reads it; the two cannot be mistaken, their lengths differ).
    Default,
    /// `.B64` or `.BASE64`.
    Base64,
    /// `.HEX`.
    Hex,
}

impl Encoding {
    /// The encoding a scheme-name suffix names (without its dot), case-insensitively.
    pub fn from_suffix(suffix: &str) -> Option<Encoding> {
        if suffix.eq_ignore_ascii_case("hex") {
            Some(Encoding::Hex)
        } else if suffix.eq_ignore_ascii_case("b64") || suffix.eq_ignore_ascii_case("base64") {
            Some(Encoding::Base64)
        } else {
            None
        }
    }
}

/// A stored digest and its salt (empty for the unsalted schemes).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredDigest {
    hash: Hash,
    digest: Vec<u8>,
    salt: Vec<u8>,
}

impl fmt::Debug for StoredDigest {
    /// Shows the kind, never the digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let salted = if self.salt.is_empty() { "" } else { "salted " };
        write!(f, "{salted}{:?}:***", self.hash)
    }
}

impl StoredDigest {
    /// Reads a stored value: exactly the digest when unsalted; the digest and a salt of at
    /// least one octet when salted (Dovecot's salts are 4 octets, any length is read).
    pub fn parse(
        hash: Hash,
        salted: bool,
        encoding: Encoding,
        value: &[u8],
    ) -> Result<StoredDigest, String> {
        let hex_digest = value.len() == 2 * hash.len() && value.iter().all(u8::is_ascii_hexdigit);
        let raw = match encoding {
            Encoding::Hex => from_hex(value),
            Encoding::Default if !salted && hex_digest => from_hex(value),
            Encoding::Default | Encoding::Base64 => B64.decode(value).ok(),
        }
        .ok_or("the value is not valid base64 or hex")?;
        let fits = if salted {
            raw.len() > hash.len()
        } else {
            raw.len() == hash.len()
        };
        if !fits {
            return Err(format!(
                "the value holds {}, not a {}-octet digest{}",
                crate::plural::plural(raw.len() as u64, "octet"),
                hash.len(),
                if salted { " and a salt" } else { "" }
            ));
        }
        let (digest, salt) = raw.split_at(hash.len());
        Ok(StoredDigest {
            hash,
            digest: digest.to_vec(),
            salt: salt.to_vec(),
        })
    }

    /// Whether `password` matches, compared in constant time (the digests have one length).
    pub fn verify(&self, password: &[u8]) -> bool {
        self.hash
            .of(password, &self.salt)
            .ct_eq(&self.digest)
            .into()
    }

    /// A new value for `password` in base64, as `doveadm pw` writes it; salted ones get
    /// `salt` appended.
    pub fn make(hash: Hash, password: &[u8], salt: &[u8]) -> String {
        let mut raw = hash.of(password, salt);
        raw.extend_from_slice(salt);
        B64.encode(raw)
    }
}

fn from_hex(value: &[u8]) -> Option<Vec<u8>> {
    if !value.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| char::from(b).to_digit(16);
    value
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `doveadm pw -s <scheme> -p 'pässword'` (Dovecot 2.3).
    const DOVEADM: &[(Hash, bool, Encoding, &str)] = &[
        (
            Hash::Sha1,
            false,
            Encoding::Default,
            "I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
        ),
        (
            Hash::Sha1,
            true,
            Encoding::Default,
            "wI3xjFMQ3WcPHW3mdwpyxKuF9EmBiKBn",
        ),
        (
            Hash::Sha256,
            false,
            Encoding::Default,
            "NHgme1YSeRtAmIkGs6eJfrarUB4EuV7TL5nQr99mnZw=",
        ),
        (
            Hash::Sha256,
            true,
            Encoding::Default,
            "6gxtQP1VnQT5NWRQOJ+fGebAobKTrV2T9xxvbQNjonPIy+yG",
        ),
        (
            Hash::Sha512,
            false,
            Encoding::Default,
            "KF3icbSeAO9oGc8Ku/AxXpfCXLo2FhZ8dw78Umxki03hH0sA3HH67TOjEse6g2kNPtFKqq32tiKqSJlv8H7IpA==",
        ),
        (
            Hash::Sha512,
            true,
            Encoding::Default,
            "i5L8v0qAaorXq7YkQnu+v4Xz/5UmA50v6id1d2NAmTLi/UzXzyQbnWv7KjYlzuRWJV6hA4pAu2mgE5uhO3kQfvb8ng0=",
        ),
        (
            Hash::Sha1,
            false,
            Encoding::Hex,
            "23b74494475f5f874980b7676d511e23d886da64",
        ),
        // Dovecot reads an unsalted digest in hex without the suffix too.
        (
            Hash::Sha1,
            false,
            Encoding::Default,
            "23b74494475f5f874980b7676d511e23d886da64",
        ),
        (
            Hash::Sha1,
            true,
            Encoding::Base64,
            "REs/LHadp6KQUaiilbvOq61WNmYqWSWd",
        ),
        (
            Hash::Sha256,
            true,
            Encoding::Hex,
            "cd4f675985a8bfd19c8645742360e893de92e06d3a51eb7a24b5878d83f9fbc15dade541",
        ),
    ];

    #[test]
    fn doveadm_hashes_verify_and_nothing_else_does() {
        for &(hash, salted, encoding, value) in DOVEADM {
            let d = StoredDigest::parse(hash, salted, encoding, value.as_bytes())
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert!(d.verify("pässword".as_bytes()), "{value}");
            assert!(!d.verify(b"password"), "{value}");
            assert!(!d.verify(b""), "{value}");
            assert!(!format!("{d:?}").contains(value));
        }
    }

    #[test]
    fn malformed_or_misfitting_values_are_refused() {
        let refused = [
            (
                Hash::Sha1,
                false,
                Encoding::Default,
                "I7dElEdfX4dJgLdnbVEeI9iG2mQ",
            ),
            // A salted value with no salt.
            (
                Hash::Sha1,
                true,
                Encoding::Default,
                "I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
            ),
            // An SHA-1 digest under SHA-256.
            (
                Hash::Sha256,
                false,
                Encoding::Default,
                "I7dElEdfX4dJgLdnbVEeI9iG2mQ=",
            ),
            (
                Hash::Sha1,
                false,
                Encoding::Hex,
                "23b74494475f5f874980b7676d511e23d886da6",
            ),
            (
                Hash::Sha1,
                false,
                Encoding::Hex,
                "zzb74494475f5f874980b7676d511e23d886da64",
            ),
            (Hash::Sha1, false, Encoding::Default, ""),
        ];
        for (hash, salted, encoding, value) in refused {
            assert!(
                StoredDigest::parse(hash, salted, encoding, value.as_bytes()).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn made_values_verify() {
        for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha512] {
            for salt in [&b""[..], b"\x01\x02\x03\x04\x05\x06\x07\x08"] {
                let value = StoredDigest::make(hash, b"secret", salt);
                let d = StoredDigest::parse(
                    hash,
                    !salt.is_empty(),
                    Encoding::Default,
                    value.as_bytes(),
                )
                .unwrap();
                assert!(d.verify(b"secret"));
                assert!(!d.verify(b"secreT"));
            }
        }
    }
}
