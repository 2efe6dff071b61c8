//! A 2 GiB message is scanned and retrieved with the server's memory bounded (VmHWM).

use std::io::{BufWriter, Read, Write};

use crate::{ServerProcess, mail_dir};

const GIB: u64 = 1 << 30;

#[test]
fn a_2_gib_message_is_retrieved_with_bounded_server_memory() {
    let dir = mail_dir("alice:{PLAIN}pw\n", &[]);
    let path = dir.path().join("mail/alice");
    // Base64-like 76-octet lines, as a big attachment has.
    let line = [
        b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0".as_slice(),
        b"\n",
    ]
    .concat();
    let block: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 13_797)
        .collect();
    let mut w = BufWriter::new(std::fs::File::create(&path).unwrap());
    let head = b"From big@example Thu Nov 26 09:00:00 2026\nSubject: big\n\n";
    w.write_all(head).unwrap();
    let mut body = 0u64;
    while body < 2 * GIB {
        w.write_all(&block).unwrap();
        body += block.len() as u64;
    }
    w.write_all(b"\n").unwrap();
    drop(w);
    let lines = body / line.len() as u64;
    let size = (b"Subject: big\r\n\r\n".len() as u64) + body + lines;

    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut c = server.connect();
    let patience = Some(std::time::Duration::from_secs(600));
    c.reader.get_ref().set_read_timeout(patience).unwrap();
    let started = std::time::Instant::now();
    c.login("alice", "pw");
    let scanned = started.elapsed();
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {size}"));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    let mut got = 0u64;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // A signal that stops and continues the process interrupts a read with a timeout set;
        // that is no error of the server's, and std's read_exact would retry it too.
        let n = match c.reader.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read.unwrap(),
        };
        assert!(n > 0, "connection closed after {got} octets");
        got += n as u64;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 8 {
            tail.drain(..tail.len() - 8);
        }
        if got >= size + 3 && tail.ends_with(b"\r\n.\r\n") {
            break;
        }
    }
    assert_eq!(got, size + 3, "the message and the terminator");
    let hwm = server.vm_hwm_kib();
    eprintln!(
        "2 GiB message: login {scanned:?}, login+RETR {:?}, server VmHWM {hwm} KiB",
        started.elapsed()
    );
    assert!(
        hwm < 64 * 1024,
        "server peak memory {hwm} KiB for a 2 GiB message"
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
}
