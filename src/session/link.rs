//! The connection as a session sees it: buffered lines in, replies out, and TLS when the
//! server can offer it. The server's sockets implement it; tests use in-memory links.

use std::io::{self, BufRead, Read, Write};

/// What a session runs over.
pub trait Link: BufRead + Write {
    /// Whether TLS protects the connection now.
    fn is_tls(&self) -> bool;

    /// Whether STLS can start TLS now: a certificate is configured and TLS is not active.
    fn can_start_tls(&self) -> bool;

    /// Starts TLS after `+OK` to STLS was flushed. Every byte received but not yet read is
    /// discarded first: those were sent in cleartext and must not run as commands inside the
    /// protected session (the CVE-2011-0411 class).
    fn start_tls(&mut self) -> io::Result<()>;

    /// Ends the connection cleanly after the last reply: under TLS, a close_notify alert.
    fn close(&mut self) -> io::Result<()>;
}

/// A link over a separate reader and writer, without TLS: for tests and for any stream the
/// server does not own.
pub struct Plain<R, W> {
    input: R,
    output: W,
}

impl<R: BufRead, W: Write> Plain<R, W> {
    /// Joins `input` and `output` into a link.
    pub fn new(input: R, output: W) -> Self {
        Plain { input, output }
    }
}

impl<R: BufRead, W> Read for Plain<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl<R: BufRead, W> BufRead for Plain<R, W> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.input.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.input.consume(amt);
    }
}

impl<R, W: Write> Write for Plain<R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

impl<R: BufRead, W: Write> Link for Plain<R, W> {
    fn is_tls(&self) -> bool {
        false
    }

    fn can_start_tls(&self) -> bool {
        false
    }

    fn start_tls(&mut self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TLS is not configured",
        ))
    }

    fn close(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::auth::{Secret, Users, UsersHandle};
    use crate::mailbox::UserName;
    use crate::mailbox::memory::MemoryStore;
    use crate::session::{
        Context, Ending, Fault, NOT_A_TLS_RECORD, Seen, Settings, Stats, Tag, Watch, Watcher, serve,
    };

    /// A link with pretend TLS: what the client sends before the handshake and after it are
    /// two scripts, so bytes left in the first when TLS starts are exactly those a real
    /// server must discard. The output records the handshake and the close_notify.
    struct FakeTls {
        cleartext: Cursor<Vec<u8>>,
        protected: Cursor<Vec<u8>>,
        available: bool,
        tls: bool,
        out: Vec<u8>,
    }

    impl FakeTls {
        fn new(available: bool, cleartext: &str, protected: &str) -> Self {
            FakeTls {
                cleartext: Cursor::new(cleartext.into()),
                protected: Cursor::new(protected.into()),
                available,
                tls: false,
                out: Vec::new(),
            }
        }

        fn input(&mut self) -> &mut Cursor<Vec<u8>> {
            if self.tls {
                &mut self.protected
            } else {
                &mut self.cleartext
            }
        }
    }

    impl Read for FakeTls {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input().read(buf)
        }
    }

    impl BufRead for FakeTls {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            self.input().fill_buf()
        }

        fn consume(&mut self, amt: usize) {
            self.input().consume(amt);
        }
    }

    impl Write for FakeTls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Link for FakeTls {
        fn is_tls(&self) -> bool {
            self.tls
        }

        fn can_start_tls(&self) -> bool {
            self.available && !self.tls
        }

        fn start_tls(&mut self) -> io::Result<()> {
            assert!(self.can_start_tls(), "start_tls when it cannot");
            self.tls = true;
            self.out.extend_from_slice(b"<handshake>\r\n");
            Ok(())
        }

        fn close(&mut self) -> io::Result<()> {
            if self.tls {
                self.out.extend_from_slice(b"<close_notify>\r\n");
            }
            Ok(())
        }
    }

    fn context(settings: Settings) -> Context {
        let alice = UserName::new(b"alice").unwrap();
        let store = MemoryStore::new();
        store.deliver("alice", b"Subject: hi\n\nhello\n");
        Context {
            users: UsersHandle::new(Users::new([(alice, Secret::Plain(b"secret".to_vec()))])),
            store: Arc::new(store),
            guards: Arc::default(),
            settings: Settings {
                auth_failure_delay: Duration::ZERO,
                ..settings
            },
            watcher: None,
        }
    }

    /// Runs a session from `peer` and returns the output lines after the greeting.
    fn session(settings: Settings, peer: &str, link: &mut FakeTls) -> (Ending, Vec<String>) {
        let tag = Tag {
            id: 1,
            peer: Some(peer.parse::<SocketAddr>().unwrap()),
        };
        let ending = serve(&context(settings), &tag, link);
        let text = String::from_utf8(link.out.clone()).unwrap();
        let lines = text.split_terminator("\r\n").skip(1).map(str::to_owned);
        (ending, lines.collect())
    }

    fn remote_127_0_0_2() -> Settings {
        Settings {
            treat_as_remote: vec!["127.0.0.2".parse().unwrap()],
            ..Settings::default()
        }
    }

    #[test]
    fn bytes_after_stls_never_run_and_user_is_forgotten() {
        let mut link = FakeTls::new(
            true,
            "USER alice\r\nSTLS\r\nPASS secret\r\n",
            "PASS secret\r\nQUIT\r\n",
        );
        let (ending, lines) = session(Settings::default(), "127.0.0.1:5000", &mut link);
        assert_eq!(ending, Ending::Quit);
        assert_eq!(
            lines,
            [
                "+OK send PASS",
                "+OK begin TLS negotiation",
                "<handshake>",
                "-ERR send USER first",
                "+OK bye",
                "<close_notify>",
            ]
        );
    }

    #[test]
    fn capa_offers_stls_only_before_tls_and_before_login() {
        let mut link = FakeTls::new(
            true,
            "CAPA\r\nSTLS\r\n",
            "CAPA\r\nSTLS\r\nUSER alice\r\nPASS secret\r\nCAPA\r\nSTLS\r\nQUIT\r\n",
        );
        let (ending, lines) = session(Settings::default(), "127.0.0.1:5000", &mut link);
        assert_eq!(ending, Ending::Quit);
        let capas: Vec<&[String]> = lines
            .split(|l| l == ".")
            .map(|chunk| {
                let start = chunk
                    .iter()
                    .position(|l| l.contains("capability"))
                    .unwrap_or(0);
                &chunk[start..]
            })
            .collect();
        assert!(capas[0].contains(&"STLS".to_owned()), "{lines:?}");
        assert!(capas[0].contains(&"USER".to_owned()), "{lines:?}");
        assert!(!capas[1].contains(&"STLS".to_owned()), "{lines:?}");
        assert!(!capas[2].contains(&"STLS".to_owned()), "{lines:?}");
        assert!(lines.contains(&"-ERR TLS is already active".to_owned()));
        assert!(lines.contains(&"-ERR STLS not valid in this state".to_owned()));
        assert_eq!(lines.last().unwrap(), "<close_notify>");
    }

    /// Fails the handshake after every STLS that could start TLS; notes each STLS's `stls`.
    struct FailStls(Arc<Mutex<Vec<bool>>>);

    impl Watcher for FailStls {
        fn watch(&self, _: &Tag) -> Box<dyn Watch> {
            Box::new(FailStls(self.0.clone()))
        }
    }

    impl Watch for FailStls {
        fn greeting(&mut self) -> Option<Fault> {
            None
        }

        fn line(&mut self, seen: &Seen<'_>) -> Option<Fault> {
            if seen.keyword != Some("STLS") {
                return None;
            }
            self.0.lock().unwrap().push(seen.stls);
            seen.stls.then_some(Fault::FailHandshake)
        }

        fn replied(&mut self, _: &str) {}

        fn ended(&mut self, _: Ending, _: &Stats) {}
    }

    /// Runs `link` watched by [`FailStls`]: the ending, the lines after the greeting and
    /// what each STLS line told the watch.
    fn failing_stls(link: &mut FakeTls) -> (Ending, Vec<String>, Vec<bool>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut ctx = context(Settings::default());
        ctx.watcher = Some(Arc::new(FailStls(seen.clone())));
        let tag = Tag {
            id: 1,
            peer: Some("127.0.0.1:5000".parse().unwrap()),
        };
        let ending = serve(&ctx, &tag, link);
        let text = String::from_utf8(link.out.clone()).unwrap();
        let lines = text.split_terminator("\r\n").skip(1).map(str::to_owned);
        let seen = seen.lock().unwrap().clone();
        (ending, lines.collect(), seen)
    }

    #[test]
    fn a_failed_handshake_fault_sends_no_tls_record_after_ok_and_ends() {
        let mut link = FakeTls::new(true, "STLS\r\nQUIT\r\n", "QUIT\r\n");
        let (ending, lines, seen) = failing_stls(&mut link);
        assert_eq!(ending, Ending::TlsFailed);
        assert_eq!(seen, [true]);
        assert_eq!(
            lines,
            ["+OK begin TLS negotiation", "not TLS (fault injected)"]
        );
        assert_eq!(
            link.out[link.out.len() - NOT_A_TLS_RECORD.len()..],
            *NOT_A_TLS_RECORD
        );
        assert!(!link.tls, "no handshake ran");
    }

    #[test]
    fn no_handshake_fault_where_stls_cannot_start_tls() {
        // No certificate: STLS gets -ERR; logged in: STLS is not valid.
        let mut link = FakeTls::new(false, "STLS\r\nQUIT\r\n", "");
        let (ending, lines, seen) = failing_stls(&mut link);
        assert_eq!((ending, seen), (Ending::Quit, vec![false]));
        assert_eq!(lines, ["-ERR TLS is not configured", "+OK bye"]);
        let mut link = FakeTls::new(true, "USER alice\r\nPASS secret\r\nSTLS\r\nQUIT\r\n", "");
        let (ending, lines, seen) = failing_stls(&mut link);
        assert_eq!((ending, seen), (Ending::Quit, vec![false]));
        assert!(
            lines.contains(&"-ERR STLS not valid in this state".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn stls_without_a_certificate_is_refused() {
        let mut link = FakeTls::new(false, "CAPA\r\nSTLS\r\nQUIT\r\n", "");
        let (_, lines) = session(Settings::default(), "127.0.0.1:5000", &mut link);
        assert!(!lines.contains(&"STLS".to_owned()), "{lines:?}");
        assert!(lines.contains(&"-ERR TLS is not configured".to_owned()));
        assert!(!lines.contains(&"<handshake>".to_owned()));
    }

    #[test]
    fn cleartext_login_off_loopback_is_refused_until_tls() {
        let mut link = FakeTls::new(
            true,
            "CAPA\r\nUSER alice\r\nPASS secret\r\nSTLS\r\n",
            "CAPA\r\nUSER alice\r\nPASS secret\r\nQUIT\r\n",
        );
        let (ending, lines) = session(remote_127_0_0_2(), "127.0.0.2:5000", &mut link);
        assert_eq!(ending, Ending::Quit);
        let refused = "-ERR [AUTH] cleartext login refused without TLS";
        let before_tls = lines.iter().position(|l| l == "<handshake>").unwrap();
        let (before, after) = lines.split_at(before_tls);
        assert!(!before.contains(&"USER".to_owned()), "{before:?}");
        assert!(before.contains(&"STLS".to_owned()), "{before:?}");
        assert_eq!(before.iter().filter(|l| *l == refused).count(), 2);
        assert!(after.contains(&"USER".to_owned()), "{after:?}");
        assert!(
            after.contains(&"+OK 1 message (22 octets)".to_owned()),
            "{after:?}"
        );
    }

    #[test]
    fn allow_cleartext_and_loopback_accept_user_pass() {
        let script = "CAPA\r\nUSER alice\r\nPASS secret\r\nQUIT\r\n";
        let allow = Settings {
            allow_cleartext: true,
            ..remote_127_0_0_2()
        };
        for (settings, peer) in [
            (allow, "127.0.0.2:5000"),
            (remote_127_0_0_2(), "127.0.0.1:5000"),
            (Settings::default(), "[::1]:5000"),
        ] {
            let mut link = FakeTls::new(false, script, "");
            let (_, lines) = session(settings, peer, &mut link);
            assert!(lines.contains(&"USER".to_owned()), "{peer}: {lines:?}");
            assert!(
                lines.contains(&"+OK 1 message (22 octets)".to_owned()),
                "{peer}: {lines:?}"
            );
        }
    }
}
