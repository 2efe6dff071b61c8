//! What one login costs with each password scheme on this host: hashes a password once per
//! scheme with `poplar pw`'s parameters, then times verifications. Run it on the target host
//! to choose a scheme: `cargo run --release --example hash_cost`.

use std::time::Instant;

use poplar::auth::scheme::{self, Scheme, Secret};

fn main() {
    const ROUNDS: u32 = 20;
    for s in [
        Scheme::Argon2id,
        Scheme::Argon2i,
        Scheme::BlfCrypt,
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::Md5Crypt,
    ] {
        let line = scheme::hash(s, b"correct horse").expect("hashing works");
        let secret = Secret::parse(line.as_bytes()).expect("our own hash parses");
        let start = Instant::now();
        for _ in 0..ROUNDS {
            assert!(secret.verify(b"correct horse"));
        }
        let each = start.elapsed() / ROUNDS;
        println!(
            "{:<14} {:>8.1} ms per login",
            s.to_string(),
            each.as_secs_f64() * 1e3
        );
    }
}
