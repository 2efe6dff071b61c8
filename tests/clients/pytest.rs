//! The pytest example (examples/pytest/): its fixture starts the poplar binary as a
//! development server and its test suite drives it over SMTP, POP3 and HTTP.

use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::poplar_bin;

/// A Python with pytest: `python3` on the PATH, or Debian's, where `make deps` installs
/// python3-pytest (a python3 of pyenv or a venv first on the PATH does not see it).
fn python_with_pytest() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import pytest"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("a python3 with pytest (make deps installs python3-pytest)")
}

#[test]
fn the_pytest_example_suite_passes_against_the_binary() {
    // Output to a file: a pipe nobody reads while waiting could fill and stall pytest.
    let out = tempfile::tempfile().unwrap();
    let mut child = Command::new(python_with_pytest())
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "examples/pytest",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("POPLAR_BIN", poplar_bin())
        // Nothing written into the source tree: no __pycache__ beside the example.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out.try_clone().unwrap())
        .spawn()
        .unwrap();
    // Only a guard against a hang: the suite takes seconds.
    let give_up = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > give_up {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    let mut text = String::new();
    let mut out = out;
    out.seek(SeekFrom::Start(0)).unwrap();
    out.read_to_string(&mut text).unwrap();
    assert!(status.success(), "pytest failed:\n{text}");
    // Every test of the example ran and passed: none skipped, none deselected.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pytest/test_example.py"),
    )
    .unwrap();
    let tests = example.matches("\ndef test_").count();
    assert!(tests >= 5, "{tests} tests in the example");
    let summary = text.lines().last().unwrap_or("");
    assert!(
        summary.starts_with(&format!("{tests} passed in ")),
        "{text}"
    );
}
