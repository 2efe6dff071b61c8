//! The fault rules document (`--dev-faults`, `PUT /api/v1/faults`) on arbitrary bytes: the
//! strict JSON parser under it and the rule checks. Never a panic, and a document that parses
//! names no more rules than it has bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rules) = poplar::fault_rules::parse(data) {
        assert!(rules.rules.len() <= data.len());
    }
});
