//! Admission: the open sessions, counted in total and per client address against the limits.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::auth::guard::ClientKey;
use crate::logline::emit;
use crate::metrics;
use crate::plural::plural;
use crate::session::Tag;

/// Open sessions, so that shutdown can cut them off and wait for them, and their count per
/// client address for admission.
#[derive(Default)]
pub(super) struct Sessions {
    open: Mutex<Open>,
    changed: Condvar,
}

/// What [`Sessions`] guards: every open session's stream, its client's address once known,
/// and how many sessions each address has.
#[derive(Default)]
struct Open {
    streams: HashMap<u64, TcpStream>,
    peers: HashMap<u64, SocketAddr>,
    per_address: HashMap<ClientKey, usize>,
}

/// Why a connection was not admitted.
pub(super) enum Refusal {
    Total,
    PerAddress(ClientKey),
}

impl Refusal {
    /// The one line a refused client gets (in cleartext: not on an implicit-TLS listener).
    pub(super) fn reply(&self) -> &'static [u8] {
        match self {
            Refusal::Total => b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
            Refusal::PerAddress(_) => b"-ERR [SYS/TEMP] too many connections from your address\r\n",
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for session `id`, or says which limit refuses it. `key` is the address
    /// the connection is accounted to; `None` when it is not known yet (a PROXY header will
    /// tell, and [`Slot::account`] counts it then).
    pub(super) fn admit(
        self: &Arc<Self>,
        id: u64,
        key: Option<ClientKey>,
        stream: TcpStream,
        limits: (usize, usize),
    ) -> Result<Slot, Refusal> {
        let (max_total, max_per_address) = limits;
        let mut open = self.lock();
        if open.streams.len() >= max_total {
            return Err(Refusal::Total);
        }
        if let Some(key) = key {
            count_address(&mut open, key, max_per_address)?;
        }
        open.streams.insert(id, stream);
        Ok(Slot {
            sessions: self.clone(),
            id,
            key,
        })
    }

    /// Waits until no session is open or `deadline` passes; returns how many are left.
    pub(super) fn wait_empty(&self, deadline: Instant) -> usize {
        let mut open = self.lock();
        while !open.streams.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            open = self
                .changed
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        open.streams.len()
    }

    /// How many sessions are open.
    pub(super) fn open_count(&self) -> usize {
        self.lock().streams.len()
    }

    /// Shuts down the sockets of those of `ids` still open, so that their sessions end;
    /// returns those ids with their client's address where known (for the log line fail2ban
    /// reads). No farewell line: a client that does not read could block the caller.
    pub(super) fn cut_off(&self, ids: &[u64]) -> Vec<(u64, Option<SocketAddr>)> {
        let open = self.lock();
        let mut cut = Vec::new();
        for id in ids {
            if let Some(stream) = open.streams.get(id) {
                let _ = stream.shutdown(Shutdown::Both);
                cut.push((*id, open.peers.get(id).copied()));
            }
        }
        cut
    }

    /// Shuts down the socket of every open session.
    pub(super) fn cut_off_all(&self) {
        for stream in self.lock().streams.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// The one place connections are counted per client address.
fn count_address(open: &mut Open, key: ClientKey, max: usize) -> Result<(), Refusal> {
    let n = open.per_address.entry(key).or_insert(0);
    if *n >= max {
        return Err(Refusal::PerAddress(key));
    }
    *n += 1;
    Ok(())
}

/// A session's place in [`Sessions`]; freed when the session thread ends, panics included.
/// Its count against the client's address is freed earlier, by [`Slot::leave_address`], once
/// the session has answered QUIT.
pub(super) struct Slot {
    sessions: Arc<Sessions>,
    id: u64,
    /// The address the session counts against, once known.
    key: Option<ClientKey>,
}

impl Slot {
    /// Counts the session against `key` (the client's real address from a PROXY header).
    pub(super) fn account(
        &mut self,
        key: ClientKey,
        max_per_address: usize,
    ) -> Result<(), Refusal> {
        let mut open = self.sessions.lock();
        count_address(&mut open, key, max_per_address)?;
        self.key = Some(key);
        Ok(())
    }

    /// Records the client's real address: the socket's peer, or the address a PROXY header
    /// gave (never the proxy's, which a ban on the logged address would lock out).
    pub(super) fn set_peer(&self, peer: SocketAddr) {
        self.sessions.lock().peers.insert(self.id, peer);
    }

    /// Stops counting the session against its address: it has done its last work and is
    /// about to send its last reply, and the client may reconnect the moment it reads it. The
    /// session still counts against the total and is still waited for at shutdown until the
    /// slot is dropped.
    pub(super) fn leave_address(&mut self) {
        let mut open = self.sessions.lock();
        uncount_address(&mut open, self.key.take());
    }
}

/// Undoes [`count_address`] for `key`, if the session was counted.
fn uncount_address(open: &mut Open, key: Option<ClientKey>) {
    if let Some(key) = key
        && let Some(n) = open.per_address.get_mut(&key)
    {
        *n -= 1;
        if *n == 0 {
            open.per_address.remove(&key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.sessions.lock();
        open.streams.remove(&self.id);
        open.peers.remove(&self.id);
        uncount_address(&mut open, self.key.take());
        drop(open);
        self.sessions.changed.notify_all();
    }
}

/// The warning for a refused connection.
pub(super) fn log_refusal(tag: &Tag, refusal: &Refusal, limit: usize) {
    let event = tag.event("refused").num("limit", limit as u64);
    match refusal {
        Refusal::Total => {
            metrics::refused(metrics::Refusal::Global);
            let event = event.text("cap", "max-connections");
            emit!(
                log::Level::Warn,
                event,
                "{tag} refused: {} open",
                plural(limit as u64, "session")
            );
        }
        Refusal::PerAddress(key) => {
            metrics::refused(metrics::Refusal::PerAddress);
            let event = event
                .text("cap", "max-per-address")
                .text("address", key.to_string());
            emit!(
                log::Level::Warn,
                event,
                "{tag} refused: {} open from {key}",
                plural(limit as u64, "session")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{IpAddr, Ipv4Addr, TcpListener};
    use std::thread;

    use super::*;

    /// A connected pair over loopback: the server's side (what admission keeps) and the
    /// client's.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    fn listener() -> TcpListener {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
    }

    fn key(last: u8) -> ClientKey {
        ClientKey::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    /// What `admit` says, with the slot kept by the caller.
    fn admit(
        sessions: &Arc<Sessions>,
        l: &TcpListener,
        id: u64,
        key: Option<ClientKey>,
        limits: (usize, usize),
    ) -> Result<Slot, Refusal> {
        sessions.admit(id, key, pair(l).0, limits)
    }

    fn admitted(r: Result<Slot, Refusal>) -> Slot {
        match r {
            Ok(slot) => slot,
            Err(Refusal::Total) => panic!("refused: total"),
            Err(Refusal::PerAddress(k)) => panic!("refused: per address {k}"),
        }
    }

    #[test]
    fn the_total_limit_refuses_beyond_it_until_a_slot_is_dropped() {
        let (s, l) = (Arc::<Sessions>::default(), listener());
        let limits = (2, 10);
        let a = admitted(admit(&s, &l, 1, Some(key(1)), limits));
        let _b = admitted(admit(&s, &l, 2, Some(key(2)), limits));
        assert!(matches!(
            admit(&s, &l, 3, Some(key(3)), limits),
            Err(Refusal::Total)
        ));
        // A refused connection counts nowhere.
        assert_eq!(s.open_count(), 2);
        assert!(!s.lock().per_address.contains_key(&key(3)));
        drop(a);
        assert_eq!(s.open_count(), 1);
        let _c = admitted(admit(&s, &l, 3, Some(key(3)), limits));
        assert_eq!(s.open_count(), 2);
    }

    #[test]
    fn the_per_address_limit_counts_each_address_apart_and_drop_releases_it() {
        let (s, l) = (Arc::<Sessions>::default(), listener());
        let limits = (10, 2);
        let a1 = admitted(admit(&s, &l, 1, Some(key(1)), limits));
        let a2 = admitted(admit(&s, &l, 2, Some(key(1)), limits));
        match admit(&s, &l, 3, Some(key(1)), limits) {
            Err(Refusal::PerAddress(k)) => assert_eq!(k, key(1)),
            _ => panic!("a third session from one address was not refused per address"),
        }
        assert_eq!(s.lock().per_address[&key(1)], 2);
        let b = admitted(admit(&s, &l, 4, Some(key(2)), limits));
        drop(a1);
        assert_eq!(s.lock().per_address[&key(1)], 1);
        let a3 = admitted(admit(&s, &l, 5, Some(key(1)), limits));
        drop((a2, a3, b));
        // Addresses with no session left are forgotten, not kept at zero.
        assert!(s.lock().per_address.is_empty());
        assert_eq!(s.wait_empty(Instant::now()), 0);
    }

    #[test]
    fn a_proxied_session_counts_against_its_address_once_known() {
        let (s, l) = (Arc::<Sessions>::default(), listener());
        let limits = (10, 1);
        // Behind one proxy: no address yet, so the per-address limit does not apply.
        let mut first = admitted(admit(&s, &l, 1, None, limits));
        let mut second = admitted(admit(&s, &l, 2, None, limits));
        assert!(first.account(key(1), 1).is_ok());
        assert!(matches!(
            second.account(key(1), 1),
            Err(Refusal::PerAddress(_))
        ));
        // The refused account left no count behind: dropping `second` must not free the
        // place `first` holds.
        drop(second);
        assert!(matches!(
            admit(&s, &l, 3, Some(key(1)), limits),
            Err(Refusal::PerAddress(_))
        ));
        drop(first);
        let _third = admitted(admit(&s, &l, 3, Some(key(1)), limits));
    }

    #[test]
    fn leaving_the_address_frees_it_at_once_and_only_once() {
        let (s, l) = (Arc::<Sessions>::default(), listener());
        let limits = (10, 1);
        let mut first = admitted(admit(&s, &l, 1, Some(key(1)), limits));
        first.leave_address();
        // The same address gets in while the first session is still open (and counted).
        let second = admitted(admit(&s, &l, 2, Some(key(1)), limits));
        assert_eq!(s.open_count(), 2);
        // Dropping the slot that left must not free the place the second one holds.
        drop(first);
        assert_eq!(s.open_count(), 1);
        assert_eq!(s.lock().per_address[&key(1)], 1);
        assert!(matches!(
            admit(&s, &l, 3, Some(key(1)), limits),
            Err(Refusal::PerAddress(_))
        ));
        drop(second);
        assert!(s.lock().per_address.is_empty());
    }

    #[test]
    fn a_slot_is_released_when_its_session_thread_panics() {
        let (s, l) = (Arc::<Sessions>::default(), listener());
        let slot = admitted(admit(&s, &l, 1, Some(key(1)), (1, 1)));
        let ended = thread::spawn(move || {
            let _slot = slot;
            panic!("a session thread panics (expected by this test)");
        })
        .join();
        assert!(ended.is_err());
        assert_eq!(s.open_count(), 0);
        assert!(s.lock().per_address.is_empty());
        let _next = admitted(admit(&s, &l, 2, Some(key(1)), (1, 1)));
    }

    #[test]
    fn cut_off_closes_only_the_open_sessions_it_names() {
        let (s, l) = (Arc::<Sessions>::default(), listener());
        let (server, mut client) = pair(&l);
        let (other_server, mut other_client) = pair(&l);
        let _slot = admitted(s.admit(1, Some(key(1)), server, (10, 10)));
        let _other = admitted(s.admit(2, Some(key(2)), other_server, (10, 10)));
        assert_eq!(s.cut_off(&[1, 99]), vec![(1, None)]);
        let mut buf = [0u8; 1];
        assert_eq!(
            client.read(&mut buf).unwrap(),
            0,
            "the cut-off client sees the end"
        );
        // Still open: a read would wait, so it times out instead.
        other_client
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        assert!(other_client.read(&mut buf).is_err());
        s.cut_off_all();
        assert_eq!(other_client.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn cut_off_names_the_client_address_set_for_the_session() {
        let (s, l) = (Arc::<Sessions>::default(), listener());
        let slot = admitted(admit(&s, &l, 1, None, (10, 10)));
        let _other = admitted(admit(&s, &l, 2, None, (10, 10)));
        let real: SocketAddr = "203.0.113.7:4000".parse().unwrap();
        slot.set_peer(real);
        assert_eq!(s.cut_off(&[1, 2]), vec![(1, Some(real)), (2, None)]);
        drop(slot);
        assert!(
            s.lock().peers.is_empty(),
            "a dropped slot forgets its address"
        );
    }
}
