//! `make install` and `make uninstall` into a temporary DESTDIR, with the binary the tests
//! run (no release build): the files land where PREFIX says, the units start the installed
//! binary, and uninstall removes exactly what install put.

use std::path::Path;
use std::process::Command;

use crate::common::poplar_bin;

/// Every file under `root`, relative to it, sorted.
fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                out.push(rel.to_str().unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

fn make(target: &str, dest: &Path) -> String {
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg(target)
        .arg(format!("DESTDIR={}", dest.display()))
        .arg("PREFIX=/usr")
        .arg(format!("INSTALL_BIN={}", poplar_bin()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn make_install_puts_each_file_under_prefix_and_destdir_and_uninstall_removes_them() {
    use std::os::unix::fs::PermissionsExt;
    let dest = tempfile::tempdir().unwrap();
    let said = make("install", dest.path());
    assert!(said.contains("installed: /usr/bin/poplar"), "{said}");
    assert_eq!(
        files(dest.path()),
        [
            "etc/fail2ban/filter.d/poplar.conf",
            "etc/fail2ban/jail.d/poplar.conf",
            "usr/bin/poplar",
            "usr/lib/systemd/system/poplar.service",
            "usr/lib/systemd/system/poplar.socket",
            "usr/share/man/man8/poplar.8",
        ]
    );
    let bin = dest.path().join("usr/bin/poplar");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("poplar "));
    let service =
        std::fs::read_to_string(dest.path().join("usr/lib/systemd/system/poplar.service")).unwrap();
    assert!(
        service.contains("ExecStart=/usr/bin/poplar --users"),
        "{service}"
    );
    assert!(!service.contains("/usr/local/"), "{service}");
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fail2ban/filter.d/poplar.conf"),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("etc/fail2ban/filter.d/poplar.conf")).unwrap(),
        source
    );
    // Something of the operator's beside ours stays.
    std::fs::write(
        dest.path().join("etc/fail2ban/jail.d/sshd.conf"),
        "[sshd]\n",
    )
    .unwrap();
    make("uninstall", dest.path());
    assert_eq!(files(dest.path()), ["etc/fail2ban/jail.d/sshd.conf"]);
}

/// `make -n deps` (the commands, not run) as a user whose `id -u` is `uid`.
fn deps_commands_as(uid: u32) -> String {
    let bin = tempfile::tempdir().unwrap();
    let id = bin.path().join("id");
    std::fs::write(&id, format!("#!/bin/sh\necho {uid}\n")).unwrap();
    std::fs::set_permissions(&id, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new("make")
        .args([
            "-n",
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "deps",
            "static-deps",
        ])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn make_deps_installs_through_sudo_unless_root_and_says_what_it_installs() {
    let user = deps_commands_as(1000);
    let root = deps_commands_as(0);
    for (who, text) in [("user", &user), ("root", &root)] {
        let installs: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("apt-get install"))
            .collect();
        assert!(installs.len() >= 10, "{who}: {text}");
        for l in installs {
            assert!(
                l.contains("echo \"make: installing Debian package(s) "),
                "{who}: an install that does not say so: {l}"
            );
            let sudo = l.contains("sudo apt-get update") && l.contains("sudo env DEBIAN_FRONTEND");
            assert_eq!(sudo, who == "user", "{who}: {l}");
        }
    }
    assert!(
        user.contains("fail2ban-regex for the filter test"),
        "{user}"
    );
    assert!(user.contains("sudo tee /usr/sbin/policy-rc.d") || user.contains("sudo tee $guard"));
}
