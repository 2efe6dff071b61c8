//! `poplar deliver` run as the mail transfer agent runs it.

use std::io::Write;

/// Runs `poplar deliver --mail <dir>/mail/%n [args] USER` with `message` on stdin; returns
/// the exit code and stderr.
pub fn deliver(dir: &std::path::Path, user: &str, args: &[&str], message: &[u8]) -> (i32, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::common::poplar_bin())
        .arg("deliver")
        .arg("--mail")
        .arg(format!("{}/mail/%n", dir.display()))
        .args(args)
        .arg(user)
        .env_remove("POPLAR_FAULT")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(message);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
