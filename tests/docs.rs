//! The documentation keeps up with the binary: every flag of `poplar --help` and of each
//! subcommand's usage is in docs/configuration.md and the man page, the README names no flag
//! poplar does not know, the man page formats cleanly, and the example systemd units pass
//! `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

const POPLAR: &str = env!("CARGO_BIN_EXE_poplar");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The long flags (`--name`) in `text`, in order, without repeats.
fn long_flags(text: &str) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    for (i, _) in text.match_indices("--") {
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let name = name.trim_end_matches('-');
        let after_word = i == 0 || !text[..i].ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name.is_empty() && after_word && !flags.iter().any(|f| f == name) {
            flags.push(name.to_owned());
        }
    }
    flags
}

fn help() -> String {
    let out = Command::new(POPLAR).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_flag_in_help_is_in_configuration_md_and_the_man_page() {
    let flags = long_flags(&help());
    assert!(flags.len() >= 10, "{flags:?}");
    let config = read("docs/configuration.md");
    // roff writes a hyphen as \-.
    let man = read("docs/poplar.8").replace("\\-", "-");
    for flag in &flags {
        assert!(
            config.contains(&format!("`--{flag}`")),
            "--{flag} is not in the flag table of docs/configuration.md"
        );
        assert!(
            man.contains(&format!("--{flag}")),
            "--{flag} is not in docs/poplar.8"
        );
    }
}

#[test]
fn every_flag_in_the_configuration_table_exists() {
    let help = long_flags(&help());
    let config = read("docs/configuration.md");
    let table = config
        .split("## Every flag")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .unwrap();
    for flag in long_flags(table) {
        assert!(
            help.contains(&flag),
            "docs list --{flag}, which poplar does not know"
        );
    }
}

/// A subcommand's usage text: what it prints for `--help` (pw) or on a usage error.
fn subcommand_usage(name: &str) -> String {
    let out = Command::new(POPLAR)
        .args([name, "--help"])
        .output()
        .unwrap();
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8(text).unwrap()
}

#[test]
fn every_subcommand_flag_is_in_its_configuration_section_and_the_man_page() {
    let config = read("docs/configuration.md");
    let man = read("docs/poplar.8").replace("\\-", "-");
    for name in ["deliver", "seed", "check", "pw"] {
        let usage = subcommand_usage(name);
        assert!(usage.contains(&format!("Usage: poplar {name}")), "{usage}");
        let heading = format!("### `poplar {name}`");
        let section = config
            .split(&heading)
            .nth(1)
            .and_then(|t| t.split("\n## ").next())
            .and_then(|t| t.split("\n### ").next())
            .unwrap_or_else(|| panic!("no {heading} in docs/configuration.md"));
        let flags: Vec<String> = long_flags(&usage)
            .into_iter()
            .filter(|f| f != "help")
            .collect();
        assert!(!flags.is_empty(), "{name}: {usage}");
        for flag in flags {
            assert!(
                section.contains(&format!("--{flag}")),
                "poplar {name} --{flag} is not in {heading} of docs/configuration.md"
            );
            assert!(
                man.contains(&format!("--{flag}")),
                "poplar {name} --{flag} is not in docs/poplar.8"
            );
        }
    }
}

#[test]
fn every_flag_in_the_readme_exists() {
    let mut known = long_flags(&help());
    for name in ["deliver", "seed", "check", "pw"] {
        known.extend(long_flags(&subcommand_usage(name)));
    }
    // Lines about cargo name cargo's flags (`cargo fmt --check`), not ours.
    let readme: String = read("README.md")
        .lines()
        .filter(|l| !l.contains("cargo"))
        .collect::<Vec<_>>()
        .join("\n");
    for flag in long_flags(&readme) {
        assert!(
            known.contains(&flag),
            "README.md names --{flag}, which poplar does not know"
        );
    }
}

#[test]
fn the_man_page_formats_without_warnings() {
    let Ok(out) = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/poplar.8"))
        .output()
    else {
        println!("skipped: groff is not installed (Debian package groff-base)");
        return;
    };
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn the_example_systemd_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("poplar.socket"),
        read("examples/poplar.socket"),
    )
    .unwrap();
    // verify checks that ExecStart= names an executable: point it at the binary under test.
    let service = read("examples/poplar.service").replace("/usr/local/bin/poplar", POPLAR);
    std::fs::write(dir.path().join("poplar.service"), service).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "poplar.socket", "poplar.service"])
        .current_dir(dir.path())
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Unknown keys and bad values are only warnings: none is allowed.
    assert_eq!(err.trim(), "", "systemd-analyze verify complained");
}

#[test]
fn the_service_command_line_parses() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-users-file");
    let service = read("examples/poplar.service");
    // systemd joins lines that end with a backslash.
    let exec = service
        .replace("\\\n", " ")
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/poplar "))
        .unwrap()
        .replace("%%", "%")
        .replace("/etc/poplar/users", &missing.display().to_string());
    // A usage error exits 2; past the parse, the missing users file stops it with 1 before
    // it binds anything.
    let out = Command::new(POPLAR)
        .args(exec.split_whitespace())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}
