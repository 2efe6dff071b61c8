//! MD5-crypt (`$1$salt$checksum`), the FreeBSD algorithm that glibc, libxcrypt and Dovecot's
//! `{MD5-CRYPT}` share, on RustCrypto's `md-5`.
//!
//! No maintained crate computes it on the current RustCrypto generation (digest 0.11), and the
//! one we used before pulled a second copy of every RustCrypto crate. It is forty lines of
//! MD5 calls, so it lives here.
//!
//! What is accepted is exactly what that crate accepted: a salt of at most 8 characters, all
//! from the crypt alphabet `./0-9A-Za-z` (glibc would also take others, such as `-`; such a
//! hash never matches); every byte of the password counts, NUL bytes included. `$apr1$` (the
//! Apache variant) is not MD5-crypt and never matches.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The crypt(3) base-64 alphabet.
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const MAGIC: &str = "$1$";

/// The longest salt crypt(3) reads.
pub const MAX_SALT_LEN: usize = 8;

/// The 16 digest bytes as the 22 checksum characters, in the order MD5-crypt lists them:
/// each triple of positions makes four characters, least significant six bits first.
const ORDER: [[usize; 3]; 5] = [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]];

/// `$1$salt$checksum` for `password`, or `None` if `salt` is longer than 8 characters or has
/// one outside the crypt alphabet.
pub fn crypt(password: &[u8], salt: &str) -> Option<String> {
    if salt.len() > MAX_SALT_LEN || !salt.bytes().all(|b| CRYPT64.contains(&b)) {
        return None;
    }
    let salt = salt.as_bytes();

    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();

    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    // For each bit of the length, lowest first: a zero byte if it is set, else the password's
    // first byte (the original code's quirk, kept by every implementation).
    let mut n = password.len();
    while n > 0 {
        if n & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        n >>= 1;
    }
    let mut digest = ctx.finalize();

    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }

    let mut out = String::with_capacity(MAGIC.len() + salt.len() + 1 + 22);
    out.push_str(MAGIC);
    out.extend(salt.iter().map(|&b| char::from(b)));
    out.push('$');
    for [a, b, c] in ORDER {
        let v = (u32::from(digest[a]) << 16) | (u32::from(digest[b]) << 8) | u32::from(digest[c]);
        push_crypt64(&mut out, v, 4);
    }
    push_crypt64(&mut out, u32::from(digest[11]), 2);
    Some(out)
}

/// Appends the low `6 * count` bits of `v` as `count` characters, least significant first.
fn push_crypt64(out: &mut String, mut v: u32, count: usize) {
    for _ in 0..count {
        out.push(char::from(CRYPT64[(v & 0x3f) as usize]));
        v >>= 6;
    }
}

/// Whether `password` matches `hash` (`$1$salt$checksum`): the hash is computed again with
/// its salt and the two strings are compared in constant time. A malformed hash never matches.
pub fn verify(password: &[u8], hash: &str) -> bool {
    let Some(rest) = hash.strip_prefix(MAGIC) else {
        return false;
    };
    let salt = rest.split('$').next().unwrap_or_default();
    crypt(password, salt).is_some_and(|h| bool::from(h.as_bytes().ct_eq(hash.as_bytes())))
}

/// `$1$salt$checksum` for `password` with a fresh random salt of 8 characters.
pub fn hash(password: &[u8]) -> Result<String, getrandom::Error> {
    // 6 random bytes are the 48 bits that 8 salt characters hold.
    let mut random = [0u8; 6];
    getrandom::fill(&mut random)?;
    let v = random.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b));
    let salt: String = (0..MAX_SALT_LEN)
        .map(|i| char::from(CRYPT64[((v >> (6 * i)) & 0x3f) as usize]))
        .collect();
    Ok(crypt(password, &salt).expect("a salt from the crypt alphabet is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (password, hash) made by glibc/libxcrypt crypt(3), `openssl passwd -1` and `mkpasswd`.
    const VECTORS: &[(&[u8], &str)] = &[
        (b"password", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"),
        (b"password", "$1$5pZSV9va$azfrPr6af3Fc7dLblQXVa0"),
        (b"", "$1$salt$UsdFqFVB.FsuinRDK5eE.."),
        (b"", "$1$$qRPK7m23GJusamGpoGLby/"),
        (b"x", "$1$$LP5.V3ajGqHDdXW6XwZQy."),
        (b"test", "$1$a$pTZ6DrO56y5CCM6G0FRMB/"),
        (b"test", "$1$./././..$Oj2vshfSxFc7W44wH0cxs/"),
        // crypt(3) given the salt "123456789" cuts it to 8 characters.
        (b"test", "$1$12345678$oEitTZYQtRHfNGmsFvTBA/"),
        (
            "pä ss w0rd!".as_bytes(),
            "$1$Zz09./Aa$Bm1HutvQMWicUSgjm29OA1",
        ),
        ("pä ss w0rd!".as_bytes(), "$1$x/.Y$tuiGTKnBnnZpTI.c5316O."),
        (&[b'a'; 16], "$1$salt$bciUgZhnFP0j/cwTYcNem0"),
        (&[b'a'; 17], "$1$salt$LKayM.fMapdc8SOggiRXK1"),
        (&[b'a'; 100], "$1$salt$7.3xLn2yPjkD.WUi8IvA41"),
    ];

    #[test]
    fn reference_hashes_verify_and_recompute() {
        for &(password, hash) in VECTORS {
            assert!(verify(password, hash), "{hash}");
            let salt = hash[3..].split('$').next().unwrap();
            assert_eq!(crypt(password, salt).as_deref(), Some(hash));
            let mut wrong = password.to_vec();
            wrong.push(b'x');
            assert!(!verify(&wrong, hash), "{hash}");
        }
    }

    #[test]
    fn a_long_password_counts_to_the_last_byte() {
        let long = b"0123456789abcdef".repeat(20);
        let hash = "$1$/.$oJyYS7XA9u8pSGEPrk2du0";
        assert!(verify(&long, hash));
        assert!(!verify(&long[..long.len() - 1], hash));
    }

    #[test]
    fn bytes_after_a_nul_count_as_before() {
        // The password is bytes, not a C string: "password\0" is another password.
        assert!(!verify(b"password\0", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"));
        assert!(!verify(b"pass\0word", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"));
    }

    #[test]
    fn salts_outside_the_crypt_alphabet_or_too_long_never_match() {
        // glibc makes these, but the salt characters are outside `./0-9A-Za-z`: refused as
        // before.
        assert!(!verify(b"test", "$1$ab-cd$JVzQ3nHh5xmd3yxw3sujC."));
        assert!(!verify(b"test", "$1$ab_$HMqYRWIsZ1ssyRazMX6DF/"));
        // A salt of 9 characters is not what crypt(3) would have written.
        assert!(!verify(b"test", "$1$123456789$oEitTZYQtRHfNGmsFvTBA/"));
        assert_eq!(crypt(b"test", "123456789"), None);
        assert_eq!(crypt(b"test", "ab\u{e4}"), None);
        assert_eq!(crypt(b"test", "a\tb"), None);
    }

    #[test]
    fn malformed_hashes_fail_cleanly() {
        for hash in [
            "",
            "$",
            "$1",
            "$1$",
            "$1$$",
            "$1$salt",
            "$1$salt$",
            "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK",
            "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK//",
            "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/$",
            "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK\u{e4}",
            "$apr1$saltsalt$qjXMvbEw8oaL.CzflDtaK/",
            "$2$saltsalt$qjXMvbEw8oaL.CzflDtaK/",
            "1$saltsalt$qjXMvbEw8oaL.CzflDtaK/",
            "$1$\u{1}\u{7f}$qjXMvbEw8oaL.CzflDtaK/",
        ] {
            assert!(!verify(b"password", hash), "{hash:?}");
            assert!(!verify(b"", hash), "{hash:?}");
        }
    }

    #[test]
    fn new_hashes_have_a_random_salt_of_8_characters() {
        let a = hash(b"secret").unwrap();
        let b = hash(b"secret").unwrap();
        assert_ne!(a, b);
        for h in [&a, &b] {
            let parts: Vec<&str> = h.split('$').collect();
            assert_eq!(parts.len(), 4, "{h}");
            assert_eq!(parts[1], "1");
            assert_eq!(parts[2].len(), 8, "{h}");
            assert_eq!(parts[3].len(), 22, "{h}");
            assert!(h[3..].bytes().all(|b| b == b'$' || CRYPT64.contains(&b)));
            assert!(verify(b"secret", h));
            assert!(!verify(b"secreT", h));
        }
    }
}
