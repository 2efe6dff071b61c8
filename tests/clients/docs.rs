//! The documentation keeps up with the binary: every flag of `poplar --help` and of each
//! subcommand's usage is in docs/configuration.md and the man page, the README names no flag
//! poplar does not know and its annotated session is what `make run` answers, the man page
//! formats cleanly, and the example systemd units pass `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

use crate::common::poplar_bin;

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
    let out = Command::new(poplar_bin()).arg("--help").output().unwrap();
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
    let out = Command::new(poplar_bin())
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
    for name in ["deliver", "seed", "check", "undelete", "probe", "pw"] {
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

/// The help text of `flag` in a usage text: its line and the lines that continue it.
fn flag_help(usage: &str, flag: &str) -> String {
    let options = usage.split_once("Options:").unwrap().1;
    let mut lines = options
        .lines()
        .skip_while(|l| !l.contains(&format!("{flag} ")) && !l.ends_with(flag));
    let mut out = lines.next().unwrap_or_default().to_owned();
    for l in lines.take_while(|l| !l.trim_start().starts_with('-')) {
        out.push_str(l);
    }
    out
}

#[test]
fn subcommand_help_says_what_the_docs_say_of_flags_without_effect_there() {
    let config = read("docs/configuration.md");
    for (name, flags) in [
        ("deliver", &["--mbox-unquote", "--uidl-from-header"][..]),
        ("seed", &["--mbox-unquote", "--uidl-from-header"]),
        (
            "check",
            &[
                "--lock-timeout",
                "--mbox-follow-symlinks",
                "--mbox-any-owner",
            ],
        ),
    ] {
        let usage = subcommand_usage(name);
        for flag in flags {
            let help = flag_help(&usage, flag);
            assert!(
                help.contains("no effect here"),
                "poplar {name} {flag}: {help}"
            );
        }
        let section = config
            .split(&format!("### `poplar {name}`"))
            .nth(1)
            .unwrap();
        let section = section.split("\n### ").next().unwrap();
        assert!(
            section.contains("without effect") || section.contains("unused"),
            "{name}: the docs say nothing of the flags without effect"
        );
    }
    for name in ["deliver", "seed", "check", "undelete", "pw"] {
        let usage = subcommand_usage(name);
        assert!(usage.contains("-h, --help"), "poplar {name}: {usage}");
        let first = usage.split("\n\n").next().unwrap();
        assert!(first.contains("[-h]"), "poplar {name}: {first}");
    }
    let check = subcommand_usage("check");
    assert!(
        flag_help(&check, "--mbox-unquote").contains("sizes"),
        "{check}"
    );
}

#[test]
fn every_flag_in_the_readme_exists() {
    let mut known = long_flags(&help());
    for name in ["deliver", "seed", "check", "undelete", "probe", "pw"] {
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

/// One command of the README's session (`None`: the greeting) and the reply lines shown for
/// it; `...` stands for lines the README leaves out.
type Exchange = (Option<String>, Vec<String>);

/// The README's annotated session, in order, leaving out the failed login it shows apart (the
/// transcript runs with `--dev-any-password`, where that password would log in).
fn readme_session() -> Vec<Exchange> {
    let readme = read("README.md");
    let section = readme
        .split("## A session by hand")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .unwrap();
    let mut steps: Vec<Exchange> = vec![(None, Vec::new())];
    for block in section.split("```").skip(1).step_by(2) {
        if block.contains("C: PASS wrong") {
            continue;
        }
        for line in block.lines().filter(|l| !l.is_empty()) {
            if let Some(c) = line.strip_prefix("C: ") {
                steps.push((Some(c.to_owned()), Vec::new()));
            } else if let Some(r) = line.strip_prefix("S:") {
                let r = r.strip_prefix(' ').unwrap_or(r);
                steps.last_mut().unwrap().1.push(r.to_owned());
            } else {
                steps.last_mut().unwrap().1.push("...".into());
            }
        }
    }
    steps
}

/// A UIDL line's number, if the line is `n uid` with a UID of 24 hex digits.
fn uid_line(l: &str) -> Option<&str> {
    let (n, uid) = l.rsplit_once(' ')?;
    let hex = uid.len() == 24 && uid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then_some(n)
}

/// Whether a README reply line stands for `got`: the same, or a line whose varying part (the
/// APOP timestamp, a UID's epoch) differs.
fn shown_as(shown: &str, got: &str) -> bool {
    let greeting = "+OK poplar ready <";
    shown == got
        || uid_line(shown).is_some_and(|n| uid_line(got) == Some(n))
        || (shown.starts_with(greeting) && got.starts_with(greeting) && got.ends_with('>'))
}

#[test]
fn the_readme_session_is_what_make_run_answers() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    for user in ["alice", "bob"] {
        let demo = read(&format!("examples/demo/{user}.mbox"));
        std::fs::write(dir.path().join(user), demo).unwrap();
    }
    // What `make run` starts, on a free port.
    let mut child = Command::new(poplar_bin())
        .arg("--dev")
        .arg(dir.path())
        .args(["--dev-any-password", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Stopped however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Stop(child);
    let addr = loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "no listening line");
        if let Some(a) = l.trim().strip_prefix("listening on ") {
            break a.to_owned();
        }
    };
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = || {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        l.trim_end_matches("\r\n").to_owned()
    };
    let steps = readme_session();
    assert!(steps.len() > 15, "{steps:?}");
    for (command, shown) in steps {
        if let Some(c) = &command {
            writer.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        }
        let mut got = vec![line()];
        if shown.len() > 1 {
            while got.last().unwrap() != "." {
                got.push(line());
            }
        }
        let matches = match shown.iter().position(|l| l == "...") {
            None => shown.len() == got.len() && shown.iter().zip(&got).all(|(s, g)| shown_as(s, g)),
            Some(cut) => {
                let (head, tail) = (&shown[..cut], &shown[cut + 1..]);
                got.len() >= head.len() + tail.len()
                    && head.iter().zip(&got).all(|(s, g)| shown_as(s, g))
                    && tail
                        .iter()
                        .rev()
                        .zip(got.iter().rev())
                        .all(|(s, g)| shown_as(s, g))
            }
        };
        assert!(
            matches,
            "README after {command:?} shows\n{shown:#?}\nbut poplar sent\n{got:#?}"
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
    let service = read("examples/poplar.service").replace("/usr/local/bin/poplar", poplar_bin());
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
    let out = Command::new(poplar_bin())
        .args(exec.split_whitespace())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

/// The README's `poplar seed` lines, run as written (the binary and the demo directory moved
/// into a temporary one): the samples they name ship with the repository.
#[test]
fn the_readme_seed_examples_work_as_written() {
    let readme = read("README.md");
    let lines: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("./target/release/poplar seed "))
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("mail");
    for line in lines {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .map(|a| a.replace("target/demo/mail", demo.to_str().unwrap()))
            .collect();
        let out = Command::new(poplar_bin())
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {out:?}");
    }
    let carol = std::fs::read(demo.join("carol")).unwrap();
    assert_eq!(carol.windows(6).filter(|w| w == b"\nFrom ").count() + 1, 3);
}
