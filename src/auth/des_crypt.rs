//! Traditional DES crypt(3): 13 characters, a 2-character salt and an 11-character checksum,
//! as Seventh Edition Unix made them and glibc and libxcrypt still check them.
//!
//! No maintained crate computes it without a second generation of the RustCrypto crates, and
//! RustCrypto's `des` cannot: the salt changes DES's expansion table. So this is DES from the
//! FIPS 46 tables, one bit at a time (25 encryptions per check, a few microseconds), with the
//! salt's swaps of the expansion.
//!
//! What is accepted is exactly what the crate we used before accepted: the first 8 bytes of
//! the password, 7 bits of each (the top bit is dropped), NUL bytes counting like any other;
//! the salt from the crypt alphabet `./0-9A-Za-z`. BSDi's extended `_` hashes are not
//! traditional DES and never match.

use subtle::ConstantTimeEq;

/// The crypt(3) base-64 alphabet.
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The length of a hash: 2 salt and 11 checksum characters.
pub const HASH_LEN: usize = 13;

// The FIPS 46 tables. Bits are numbered from 1, the most significant first.

const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, //
    62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8, //
    57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3, //
    61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];

const FP: [u8; 64] = [
    40, 8, 48, 16, 56, 24, 64, 32, 39, 7, 47, 15, 55, 23, 63, 31, //
    38, 6, 46, 14, 54, 22, 62, 30, 37, 5, 45, 13, 53, 21, 61, 29, //
    36, 4, 44, 12, 52, 20, 60, 28, 35, 3, 43, 11, 51, 19, 59, 27, //
    34, 2, 42, 10, 50, 18, 58, 26, 33, 1, 41, 9, 49, 17, 57, 25,
];

const E: [u8; 48] = [
    32, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, //
    8, 9, 10, 11, 12, 13, 12, 13, 14, 15, 16, 17, //
    16, 17, 18, 19, 20, 21, 20, 21, 22, 23, 24, 25, //
    24, 25, 26, 27, 28, 29, 28, 29, 30, 31, 32, 1,
];

const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, //
    2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25,
];

const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, //
    10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36, //
    63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, //
    14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];

const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, //
    23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2, //
    41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48, //
    44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];

const SHIFTS: [u32; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];

/// The eight S-boxes, each as four rows of sixteen.
const S: [[u8; 64]; 8] = [
    [
        14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, //
        0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8, //
        4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, //
        15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
    ],
    [
        15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, //
        3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5, //
        0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, //
        13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
    ],
    [
        10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, //
        13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1, //
        13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, //
        1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
    ],
    [
        7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, //
        13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9, //
        10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, //
        3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
    ],
    [
        2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, //
        14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6, //
        4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, //
        11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
    ],
    [
        12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, //
        10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8, //
        9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, //
        4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
    ],
    [
        4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, //
        13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6, //
        1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, //
        6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
    ],
    [
        13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, //
        1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2, //
        7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, //
        2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
    ],
];

/// Picks bits of `input` (`width` bits wide) in the order `table` numbers them.
fn permute(input: u64, width: u32, table: &[u8]) -> u64 {
    table.iter().fold(0, |out, &bit| {
        (out << 1) | ((input >> (width - u32::from(bit))) & 1)
    })
}

/// The sixteen 48-bit round keys of a 64-bit key.
fn round_keys(key: u64) -> [u64; 16] {
    const MASK: u64 = (1 << 28) - 1;
    let rotate = |half: u64, n: u32| ((half << n) | (half >> (28 - n))) & MASK;
    let cd = permute(key, 64, &PC1);
    let (mut c, mut d) = (cd >> 28, cd & MASK);
    let mut keys = [0; 16];
    for (k, &n) in keys.iter_mut().zip(&SHIFTS) {
        c = rotate(c, n);
        d = rotate(d, n);
        *k = permute((c << 28) | d, 56, &PC2);
    }
    keys
}

/// DES's round function, with the expansion table `e`.
fn feistel(r: u32, key: u64, e: &[u8; 48]) -> u32 {
    let x = permute(u64::from(r), 32, e) ^ key;
    let s = S.iter().enumerate().fold(0, |out, (i, sbox)| {
        let six = ((x >> (42 - 6 * i)) & 0x3f) as usize;
        let row = ((six >> 4) & 2) | (six & 1);
        let column = (six >> 1) & 0xf;
        (out << 4) | u64::from(sbox[row * 16 + column])
    });
    permute(s, 32, &P) as u32
}

/// One DES encryption of `block`.
fn encrypt(block: u64, keys: &[u64; 16], e: &[u8; 48]) -> u64 {
    let ip = permute(block, 64, &IP);
    let (mut l, mut r) = ((ip >> 32) as u32, ip as u32);
    for &k in keys {
        (l, r) = (r, l ^ feistel(r, k, e));
    }
    permute((u64::from(r) << 32) | u64::from(l), 64, &FP)
}

fn decode64(c: u8) -> Option<u32> {
    CRYPT64.iter().position(|&a| a == c).map(|v| v as u32)
}

/// The 13-character hash of `password` with the salt in the first two characters of
/// `setting`, or `None` if `setting` does not start with two characters of the crypt alphabet.
pub fn crypt(password: &[u8], setting: &str) -> Option<String> {
    let salt_chars = setting.as_bytes().get(..2)?;
    let salt = decode64(salt_chars[0])? | (decode64(salt_chars[1])? << 6);

    // The first 8 bytes, 7 bits of each, shifted to leave out the parity bits; zeros after.
    let key = (0..8).fold(0u64, |key, i| {
        (key << 8) | u64::from(password.get(i).copied().unwrap_or(0) << 1)
    });
    let keys = round_keys(key);

    // Each set bit of the salt swaps two outputs of the expansion, 24 apart.
    let mut e = E;
    for bit in 0..12 {
        if (salt >> bit) & 1 == 1 {
            e.swap(bit, bit + 24);
        }
    }

    let block = (0..25).fold(0u64, |block, _| encrypt(block, &keys, &e));

    let mut out = String::with_capacity(HASH_LEN);
    out.extend(salt_chars.iter().map(|&b| char::from(b)));
    // 64 bits and two zero bits are 11 characters, most significant first.
    let bits = u128::from(block) << 2;
    for i in 0..11 {
        out.push(char::from(
            CRYPT64[((bits >> (60 - 6 * i)) & 0x3f) as usize],
        ));
    }
    Some(out)
}

/// Whether `password` matches `hash` (13 characters): the hash is computed again with its
/// salt and the two strings are compared in constant time. A malformed hash never matches.
pub fn verify(password: &[u8], hash: &str) -> bool {
    crypt(password, hash).is_some_and(|h| bool::from(h.as_bytes().ct_eq(hash.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (password, hash) made by glibc/libxcrypt crypt(3) and `mkpasswd -m descrypt`.
    const VECTORS: &[(&[u8], &str)] = &[
        (b"password", "abJnggxhB/yWI"),
        (b"", "abmF1QH4PEr.E"),
        (b"", "./Una9Fi.seRo"),
        (b"test", "./H7.I.sVn7zo"),
        (b"test", "/.gaiHoalro8k"),
        (b"test", "zzIUSbhjhhESA"),
        (b"test", "..9sjyf8zL76k"),
        (b"test", "9ZkjC3IvvDQ.M"),
        ("pä ss w0rd!".as_bytes(), "Ab3Ab0hhMESzw"),
        (b"12345678", "xyaL4T4Q4M4pU"),
        (b"\x7f~ !@#", "q.XwLRWrSz2eM"),
        (b"hunter2", "Q/yTPDrOrkJrw"),
    ];

    #[test]
    fn the_fips_block_cipher_is_des() {
        // The worked example of DES: key 133457799BBCDFF1, plain 0123456789ABCDEF.
        let keys = round_keys(0x1334_5779_9BBC_DFF1);
        assert_eq!(
            encrypt(0x0123_4567_89AB_CDEF, &keys, &E),
            0x85E8_1354_0F0A_B405
        );
    }

    #[test]
    fn reference_hashes_verify_and_recompute() {
        for &(password, hash) in VECTORS {
            assert!(verify(password, hash), "{hash}");
            assert_eq!(crypt(password, hash).as_deref(), Some(hash));
            assert!(!verify(b"wrong", hash), "{hash}");
        }
    }

    #[test]
    fn only_the_first_8_bytes_and_7_bits_of_each_count() {
        assert!(verify(b"password123", "abJnggxhB/yWI"));
        assert!(verify(b"123456789abcdef", "xyaL4T4Q4M4pU"));
        assert!(verify(&[b'1'; 100], &crypt(b"11111111", "xy").unwrap()));
        assert!(!verify(b"passwor", "abJnggxhB/yWI"));
        // The top bit is dropped: 'p' | 0x80 is 'p'.
        assert!(verify(b"\xf0assword", "abJnggxhB/yWI"));
    }

    #[test]
    fn bytes_after_a_nul_count_as_before() {
        // The password is bytes, not a C string: "pass\0ord" is another password.
        assert!(!verify(b"pass\0ord", &crypt(b"pass", "ab").unwrap()));
        assert_ne!(crypt(b"pass\0", "ab"), crypt(b"pass\0x", "ab"));
    }

    #[test]
    fn malformed_hashes_fail_cleanly() {
        for hash in [
            "",
            "a",
            "ab",
            "abJnggxhB/yW",
            "abJnggxhB/yWI.",
            "abJnggxhB/yW\u{e4}",
            "!!JnggxhB/yWI",
            "a!JnggxhB/yWI",
            "\u{e4}JnggxhB/yWI",
            "_J9..rasmBYk8r9AiWNc",
            "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/",
        ] {
            assert!(!verify(b"password", hash), "{hash:?}");
            assert!(!verify(b"", hash), "{hash:?}");
        }
        assert_eq!(crypt(b"x", "a"), None);
        assert_eq!(crypt(b"x", "a-"), None);
    }
}
