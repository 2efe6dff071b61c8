//! What one login costs with each password scheme on this host: hashes a password once per
//! scheme with `poplar pw`'s parameters, then times verifications. Run it on the target host
//! to choose a scheme: `cargo run --release --example hash_cost`.
//!
//! Besides the cost of a login with an ordinary password, it shows what the length cap
//! (`limits::MAX_PASSWORD`) saves: the scheme's own cost for an 8 KiB password (what a login
//! would cost without the cap; SHA-crypt and MD5-crypt grow with the length) beside what the
//! login path spends on one (nothing is hashed: it is an ordinary failed login).

use std::time::{Duration, Instant};

use poplar::auth::Users;
use poplar::auth::guard::Gate;
use poplar::auth::scheme::{self, Scheme, Secret};
use poplar::mailbox::UserName;

/// The mean time of `rounds` calls of `f`.
fn time(rounds: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    start.elapsed() / rounds
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    const ROUNDS: u32 = 20;
    let long = vec![b'x'; 8 * 1024];
    let gate = Gate::new(1);
    println!(
        "{:<14} {:>12} {:>18} {:>18}",
        "scheme", "8 B login", "8 KiB, scheme", "8 KiB, login path"
    );
    for s in [
        Scheme::Argon2id,
        Scheme::Argon2i,
        Scheme::BlfCrypt,
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::Md5Crypt,
    ] {
        let line = scheme::hash(s, b"tr0ub4dr").expect("hashing works");
        let secret = Secret::parse(line.as_bytes()).expect("our own hash parses");
        let user = UserName::new(b"alice").expect("a valid name");
        let users = Users::new([(user, secret.clone())]);
        let short = time(ROUNDS, || {
            let ok = users.verify_password(b"alice", b"tr0ub4dr", &gate);
            assert!(matches!(ok, Ok(Some(_))));
        });
        let uncapped = time(ROUNDS.min(5), || assert!(!secret.verify(&long)));
        let capped = time(ROUNDS, || {
            let ok = users.verify_password(b"alice", &long, &gate);
            assert!(matches!(ok, Ok(None)));
        });
        println!(
            "{:<14} {:>9.2} ms {:>15.2} ms {:>15.4} ms",
            s.to_string(),
            ms(short),
            ms(uncapped),
            ms(capped)
        );
    }
}
