//! Test-only fault points: with `POPLAR_FAULT=<step>` a debug build aborts the process at that
//! step (as `kill -9` would), and with `POPLAR_FAULT=enospc:<step>` it fails that step with
//! ENOSPC. Release builds compile both to nothing.

use std::io;

/// Aborts the process here if a debug build was asked to crash at `step`.
pub fn crash_point(step: &str) {
    if cfg!(debug_assertions) && std::env::var("POPLAR_FAULT").is_ok_and(|v| v == step) {
        log::error!("POPLAR_FAULT: aborting at {step}");
        std::process::abort();
    }
}

/// Fails with ENOSPC here if a debug build was asked to at `step`.
pub fn io_point(step: &str) -> io::Result<()> {
    let asked = cfg!(debug_assertions)
        && std::env::var("POPLAR_FAULT")
            .is_ok_and(|v| v.strip_prefix("enospc:").is_some_and(|s| s == step));
    if asked {
        return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
    }
    Ok(())
}
