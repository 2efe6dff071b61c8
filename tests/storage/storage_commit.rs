//! Commits over random, partly garbled mailboxes: the file afterwards is exactly the bytes
//! before the first deleted message, the kept messages with their separators, and the mail
//! appended during the session; every kept message keeps its UID.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use poplar::mailbox::mbox::MboxStore;
use poplar::mailbox::template::MailTemplate;
use poplar::mailbox::{MailStore, UserName};

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// A random mbox: maybe a preamble, messages with LF or CRLF, sometimes no final blank line
/// or no final newline at all.
fn random_mbox(seed: &mut u64) -> Vec<u8> {
    let mut out = Vec::new();
    if lcg(seed).is_multiple_of(3) {
        out.extend_from_slice(b"preamble \0 text\n\n");
    }
    let n = 1 + lcg(seed) % 6;
    for i in 0..n {
        let eol: &[u8] = if lcg(seed).is_multiple_of(2) {
            b"\n"
        } else {
            b"\r\n"
        };
        out.extend_from_slice(format!("From s{i} Thu Nov 26 09:00:00 2026").as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(format!("Subject: {i} {}", lcg(seed) % 3).as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(eol);
        // A body's first line follows a blank line, so it must not look like a From_ line.
        out.extend_from_slice(b"text");
        out.extend_from_slice(eol);
        for l in 0..lcg(seed) % 4 {
            out.extend_from_slice(format!("From body line {l} >From").as_bytes());
            out.extend_from_slice(eol);
        }
        let last = i + 1 == n;
        if !(last && lcg(seed).is_multiple_of(3)) {
            out.extend_from_slice(eol);
        }
    }
    if lcg(seed).is_multiple_of(4) {
        out.extend_from_slice(b"unterminated");
    }
    out
}

#[test]
fn random_commits_keep_exactly_the_right_bytes_and_uids() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        MboxStore::new(MailTemplate::parse(&format!("{}/%n", dir.path().display())).unwrap());
    let user = UserName::new(b"u").unwrap();
    let path = dir.path().join("u");
    let mut seed = 3;
    for round in 0..80 {
        let bytes = random_mbox(&mut seed);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let _ = std::fs::remove_file(dir.path().join("u.poplar-index"));
        let drop = store.open(&user).unwrap();
        let infos = drop.messages().to_vec();
        let deleted: Vec<bool> = infos
            .iter()
            .map(|_| lcg(&mut seed).is_multiple_of(2))
            .collect();
        // Mail appended during the session.
        let late: &[u8] = if lcg(&mut seed).is_multiple_of(2) {
            b"\nFrom late\nS: l\n\nlate\n\n"
        } else {
            b""
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, late).unwrap();
        drop.commit(&deleted).unwrap();

        // What must be left: cut the original at its From_ lines.
        let starts: Vec<usize> = (0..bytes.len())
            .filter(|&i| bytes[i..].starts_with(b"From s"))
            .collect();
        assert_eq!(starts.len(), infos.len(), "round {round}");
        let mut want = bytes[..starts[0]].to_vec();
        for (i, &s) in starts.iter().enumerate() {
            let next = starts.get(i + 1).copied().unwrap_or(bytes.len());
            if !deleted[i] {
                want.extend_from_slice(&bytes[s..next]);
            }
        }
        want.extend_from_slice(late);
        if !deleted.contains(&true) {
            want = [&bytes[..], late].concat();
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            want,
            "round {round} {deleted:?}"
        );
        let after = std::fs::metadata(&path).unwrap();
        let id = |m: &std::fs::Metadata| (m.dev(), m.ino(), m.uid(), m.gid(), m.mode());
        assert_eq!(
            id(&after),
            id(&before),
            "in place: inode, owner, group and mode kept"
        );

        let again = store.open(&user).unwrap();
        let kept: Vec<String> = infos
            .iter()
            .zip(&deleted)
            .filter(|(_, d)| !**d)
            .map(|(m, _)| m.uid.to_string())
            .collect();
        let now: Vec<String> = again.messages().iter().map(|m| m.uid.to_string()).collect();
        assert_eq!(now[..kept.len()], kept[..], "round {round}");
    }
}
