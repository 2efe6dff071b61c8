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
