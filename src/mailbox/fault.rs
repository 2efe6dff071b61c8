//! Test-only fault points: with `POPLAR_FAULT=<step>` a debug build aborts the process at that
//! step (as `kill -9` would); with `POPLAR_FAULT=enospc:<step>` it fails that step with ENOSPC
//! every time, and with `POPLAR_FAULT=enospc-once:<step>` only the first time in the process
//! (a failure that a retry gets past); `POPLAR_FAULT=panic:<step>` panics there (a bug, as
//! the code around it must survive one). Release builds compile all of them to nothing.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Aborts the process here if a debug build was asked to crash at `step`.
pub fn crash_point(step: &str) {
    if cfg!(debug_assertions) && std::env::var("POPLAR_FAULT").is_ok_and(|v| v == step) {
        log::error!("POPLAR_FAULT: aborting at {step}");
        std::process::abort();
    }
}

/// Fails with ENOSPC here if a debug build was asked to at `step`.
pub fn io_point(step: &str) -> io::Result<()> {
    static ONCE_FIRED: AtomicBool = AtomicBool::new(false);
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let Ok(v) = std::env::var("POPLAR_FAULT") else {
        return Ok(());
    };
    let always = v.strip_prefix("enospc:") == Some(step);
    let once =
        v.strip_prefix("enospc-once:") == Some(step) && !ONCE_FIRED.swap(true, Ordering::Relaxed);
    if always || once {
        log::warn!("POPLAR_FAULT: ENOSPC at {step}");
        return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
    }
    if v.strip_prefix("panic:") == Some(step) {
        panic!("POPLAR_FAULT: panic at {step}");
    }
    Ok(())
}
