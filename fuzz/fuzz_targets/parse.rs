//! The command parser on arbitrary lines: never a panic, and a parsed command's trace never
//! shows a PASS or APOP secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poplar::protocol::command::{Command, parse};

fuzz_target!(|line: &[u8]| {
    if let Ok(cmd) = parse(line) {
        let trace = format!("{cmd:?}");
        if let Command::Pass(secret) = &cmd {
            assert_eq!(trace, "PASS ***");
            assert!(!secret.is_empty());
        }
        assert!(!trace.contains('\r') && !trace.contains('\n'));
    }
});
