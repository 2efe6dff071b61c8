//! SASL decoding on arbitrary responses: each mechanism is started (with the first line as
//! its initial response, or without one) and fed the remaining lines. Never a panic, and
//! a finished exchange names a user that came from the client's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poplar::auth::sasl::{Exchange, Mechanism, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mechanism = Mechanism::ALL[usize::from(selector) % Mechanism::ALL.len()];
    let mut lines = rest.split(|&b| b == b'\n');
    let initial = if selector & 0x80 != 0 {
        lines.next()
    } else {
        None
    };
    let (mut ex, mut step) = Exchange::start(mechanism, "<1.2.3@fuzz>", initial);
    for line in lines {
        match step {
            Step::Challenge(_) => step = ex.respond(line),
            Step::Done(creds) => {
                assert!(!creds.user().is_empty());
                return;
            }
            Step::Failed(_) => return,
        }
    }
});
