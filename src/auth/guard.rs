//! Guards around logins: failure delays (in `throttle.rs`), per-user session slots, the gate
//! that bounds how many password hashes run at once, AUTHORIZATION deadlines and login
//! spacing; kept in this process or, for `--inetd`, in the state file its processes share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits;
use crate::mailbox::UserName;

use super::records::{Hold, Records};

pub use super::throttle::{Network, Throttle};

/// The unit that per-address limits count: an IPv4 address, or an IPv6 /64 (one host or
/// one customer's network can hold a whole /64, so single IPv6 addresses are no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key for `ip`; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

impl ClientKey {
    /// The address as 16 octets (IPv4 as IPv4-mapped), for keys of the shared records.
    pub fn octets(&self) -> [u8; 16] {
        match self.0 {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bounds how many password hashes run at once, so that a flood of logins against expensive
/// hashes cannot take every core from sessions that are already logged in. With the shared
/// records, the bound holds across every process using them.
#[derive(Debug)]
pub struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
    slots: usize,
    shared: Option<Arc<Records>>,
}

/// A taken hashing slot, given back on drop (panics included).
struct Permit<'g>(&'g Gate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

/// A taken gate byte of the shared records, given back on drop.
struct SharedPermit<'r>(&'r Records, usize);

impl Drop for SharedPermit<'_> {
    fn drop(&mut self) {
        self.0.release_gate(self.1);
    }
}

impl Gate {
    /// A gate letting `slots` hashes run at once (at least one).
    pub fn new(slots: usize) -> Gate {
        Gate {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
            slots: slots.max(1),
            shared: None,
        }
    }

    /// A gate letting `slots` hashes run at once among every process sharing `records`.
    pub fn shared(slots: usize, records: Arc<Records>) -> Gate {
        Gate {
            shared: Some(records),
            ..Gate::new(slots)
        }
    }

    /// Runs `f` once a slot is free; `None` if none came free within
    /// [`limits::HASH_QUEUE_WAIT`].
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let deadline = Instant::now() + limits::HASH_QUEUE_WAIT;
        let mut free = lock(&self.free);
        while *free == 0 {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            free = self
                .freed
                .wait_timeout(free, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *free -= 1;
        drop(free);
        let _permit = Permit(self);
        let _shared = match &self.shared {
            None => None,
            Some(records) => Some(SharedPermit(records, self.wait_shared(records, deadline)?)),
        };
        Some(f())
    }

    /// Takes a gate byte of the shared records by `deadline`; a state file that fails is
    /// warned about and the hash runs under this process's bound alone.
    fn wait_shared(&self, records: &Records, deadline: Instant) -> Option<usize> {
        loop {
            match records.try_gate(self.slots) {
                Ok(Some(i)) => return Some(i),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(limits::SHARED_GATE_POLL);
                }
                Ok(None) => return None,
                Err(e) => {
                    log::warn!("login guard state {records:?}: hashing gate: {e}");
                    return Some(MAX_GATE_NONE);
                }
            }
        }
    }
}

/// The gate byte of a permit taken without the shared records (their file failed); giving
/// it back is a no-op, as [`Records::release_gate`] ignores bytes out of range.
const MAX_GATE_NONE: usize = usize::MAX;

/// Counts logged-in sessions per user, so one account cannot hold every connection; with the
/// shared records, across every process using them.
#[derive(Debug)]
pub struct UserSlots {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
    shared: Option<Arc<Records>>,
}

/// One logged-in session's place in [`UserSlots`]; freed on drop.
#[derive(Debug)]
pub struct UserSlot {
    slots: Arc<UserSlots>,
    user: String,
    _shared: Option<Hold>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        self.slots.forget(&self.user);
    }
}

impl UserSlots {
    /// At most `max` sessions per user.
    pub fn new(max: usize) -> Arc<UserSlots> {
        Arc::new(UserSlots {
            max,
            open: Mutex::default(),
            shared: None,
        })
    }

    /// At most `max` sessions per user among every process sharing `records`.
    pub fn shared(max: usize, records: Arc<Records>) -> Arc<UserSlots> {
        Arc::new(UserSlots {
            max,
            open: Mutex::default(),
            shared: Some(records),
        })
    }

    fn forget(&self, user: &str) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                open.remove(user);
            }
        }
    }

    /// A slot for `user`, unless they already have `max` sessions.
    pub fn acquire(self: &Arc<Self>, user: &UserName) -> Option<UserSlot> {
        {
            let mut open = lock(&self.open);
            let n = open.entry(user.as_str().to_owned()).or_insert(0);
            if *n >= self.max {
                return None;
            }
            *n += 1;
        }
        let shared = match &self.shared {
            None => None,
            Some(records) => {
                let key = records.key(&[b"user", user.as_str().as_bytes()]);
                match records.hold(&key, self.max) {
                    Ok(Some(hold)) => Some(hold),
                    Ok(None) => {
                        self.forget(user.as_str());
                        return None;
                    }
                    Err(e) => {
                        // A broken state file must not lock every user out.
                        log::warn!("login guard state {records:?}: user slots: {e}");
                        None
                    }
                }
            }
        };
        Some(UserSlot {
            slots: self.clone(),
            user: user.as_str().to_owned(),
            _shared: shared,
        })
    }
}

/// `--login-delay`: the least time between two logins of one user (RFC 2449 §6.5), so that an
/// aggressive poller cannot hammer a small host. Only logins whose password was right count,
/// and only in this server process.
#[derive(Debug, Default)]
pub struct LoginSpacing {
    delay: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl LoginSpacing {
    /// Spacing of at least `delay` (zero: none).
    pub fn new(delay: Duration) -> LoginSpacing {
        LoginSpacing {
            delay,
            last: Mutex::default(),
        }
    }

    /// Records a login of `user` at `now`, or, if their previous one was less than the delay
    /// ago, refuses it with the time still to wait.
    pub fn admit(&self, user: &UserName, now: Instant) -> Result<(), Duration> {
        if self.delay.is_zero() {
            return Ok(());
        }
        let mut last = lock(&self.last);
        if let Some(&t) = last.get(user.as_str()) {
            let since = now.saturating_duration_since(t);
            if since < self.delay {
                return Err(self.delay - since);
            }
        }
        if last.len() >= limits::MAX_LOGIN_DELAY_USERS {
            last.retain(|_, t| now.saturating_duration_since(*t) < self.delay);
        }
        if last.len() < limits::MAX_LOGIN_DELAY_USERS || last.contains_key(user.as_str()) {
            last.insert(user.as_str().to_owned(), now);
        }
        Ok(())
    }

    /// Forgets the login of `user` just admitted, which did not happen after all (the
    /// mailbox could not be opened): their retry meets the reason, not the delay. Their
    /// previous login, if any, was at least the delay ago, so forgetting it changes nothing.
    pub fn forget(&self, user: &UserName) {
        lock(&self.last).remove(user.as_str());
    }

    /// How many users are remembered, for the test of the bound.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        lock(&self.last).len()
    }
}

/// When each session still in AUTHORIZATION must have logged in: a total deadline, so that a
/// client sending a byte now and then cannot stay unauthenticated for ever. The server sets
/// and enforces them; a session clears its own on login.
#[derive(Debug, Default)]
pub struct LoginDeadlines(Mutex<HashMap<u64, Instant>>);

impl LoginDeadlines {
    /// Session `id` must log in by `deadline`.
    pub fn start(&self, id: u64, deadline: Instant) {
        lock(&self.0).insert(id, deadline);
    }

    /// Session `id`'s deadline, while it has one.
    pub fn pending(&self, id: u64) -> Option<Instant> {
        lock(&self.0).get(&id).copied()
    }

    /// Session `id` has logged in, or ended: it has no deadline any more.
    pub fn clear(&self, id: u64) {
        lock(&self.0).remove(&id);
    }

    /// Removes and returns the sessions whose deadline has passed at `now`, and the next
    /// deadline still pending.
    pub fn expired(&self, now: Instant) -> (Vec<u64>, Option<Instant>) {
        let mut map = lock(&self.0);
        let gone: Vec<u64> = map
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            map.remove(id);
        }
        (gone, map.values().min().copied())
    }
}

/// Everything that guards logins, shared by all sessions.
#[derive(Debug)]
pub struct Guards {
    /// Failed-login delays per client network and per account.
    pub throttle: Throttle,
    /// The password-hashing gate.
    pub gate: Gate,
    /// Logged-in sessions per user.
    pub users: Arc<UserSlots>,
    /// AUTHORIZATION deadlines.
    pub deadlines: LoginDeadlines,
    /// The least time between two logins of one user (`--login-delay`).
    pub spacing: LoginSpacing,
    /// Where the throttle's records live; shared with other processes when it is the state
    /// file, which then also holds the gate and the session slots.
    pub records: Arc<Records>,
}

impl Guards {
    /// Guards with `hash_slots` parallel hashes and at most `per_user` sessions per user,
    /// kept in this process.
    pub fn new(hash_slots: usize, per_user: usize) -> Guards {
        let records = Arc::new(Records::memory());
        Guards {
            throttle: Throttle::new(records.clone()),
            gate: Gate::new(hash_slots),
            users: UserSlots::new(per_user),
            deadlines: LoginDeadlines::default(),
            spacing: LoginSpacing::default(),
            records,
        }
    }

    /// The same guards over `records` shared by processes (the state file): the failure
    /// delays, the hashing gate and the per-user cap hold across all of them.
    pub fn shared(hash_slots: usize, per_user: usize, records: Arc<Records>) -> Guards {
        Guards {
            throttle: Throttle::new(records.clone()),
            gate: Gate::shared(hash_slots, records.clone()),
            users: UserSlots::shared(per_user, records.clone()),
            deadlines: LoginDeadlines::default(),
            spacing: LoginSpacing::default(),
            records,
        }
    }

    /// These guards with at least `delay` between two logins of one user.
    pub fn with_login_delay(mut self, delay: Duration) -> Guards {
        self.spacing = LoginSpacing::new(delay);
        self
    }
}

impl Default for Guards {
    fn default() -> Self {
        Guards::new(limits::hash_parallelism(), limits::DEFAULT_MAX_PER_USER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_group_by_64_and_mapped_ipv4_is_ipv4() {
        let k = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(k("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn the_gate_never_runs_more_than_its_slots() {
        let gate = Arc::new(Gate::new(2));
        let running = Arc::new(Mutex::new((0usize, 0usize)));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (gate, running) = (gate.clone(), running.clone());
                std::thread::spawn(move || {
                    gate.run(|| {
                        {
                            let mut r = lock(&running);
                            r.0 += 1;
                            r.1 = r.1.max(r.0);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        lock(&running).0 -= 1;
                    })
                    .unwrap();
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(lock(&running).1, 2);
    }

    #[test]
    fn deadlines_expire_once_and_report_the_next() {
        let d = LoginDeadlines::default();
        let now = Instant::now();
        d.start(1, now);
        d.start(2, now + Duration::from_secs(5));
        d.start(3, now + Duration::from_secs(9));
        d.clear(3);
        assert_eq!(
            d.expired(now),
            (vec![1], Some(now + Duration::from_secs(5)))
        );
        assert_eq!(d.expired(now), (vec![], Some(now + Duration::from_secs(5))));
        assert_eq!(d.expired(now + Duration::from_secs(6)), (vec![2], None));
    }

    #[test]
    fn user_slots_are_counted_and_freed() {
        let slots = UserSlots::new(2);
        let u = UserName::new(b"alice").unwrap();
        let a = slots.acquire(&u).unwrap();
        let _b = slots.acquire(&u).unwrap();
        assert!(slots.acquire(&u).is_none());
        assert!(slots.acquire(&UserName::new(b"bob").unwrap()).is_some());
        drop(a);
        assert!(slots.acquire(&u).is_some());
    }

    #[test]
    fn login_spacing_refuses_early_logins_per_user() {
        let spacing = LoginSpacing::new(Duration::from_secs(10));
        let (a, b) = (
            UserName::new(b"alice").unwrap(),
            UserName::new(b"bob").unwrap(),
        );
        let t0 = Instant::now();
        assert_eq!(spacing.admit(&a, t0), Ok(()));
        assert_eq!(
            spacing.admit(&a, t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert_eq!(spacing.admit(&b, t0 + Duration::from_secs(4)), Ok(()));
        // A refused login does not restart the wait.
        assert_eq!(spacing.admit(&a, t0 + Duration::from_secs(10)), Ok(()));
        assert!(spacing.admit(&a, t0 + Duration::from_secs(11)).is_err());
        spacing.forget(&a);
        assert_eq!(spacing.admit(&a, t0 + Duration::from_secs(11)), Ok(()));
        let none = LoginSpacing::new(Duration::ZERO);
        assert_eq!(none.admit(&a, t0), Ok(()));
        assert_eq!(none.admit(&a, t0), Ok(()));
        assert_eq!(none.remembered(), 0);
    }

    #[test]
    fn login_spacing_memory_is_bounded() {
        let spacing = LoginSpacing::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let user = |i: usize| UserName::new(format!("u{i}").as_bytes()).unwrap();
        for i in 0..limits::MAX_LOGIN_DELAY_USERS + 10 {
            assert_eq!(spacing.admit(&user(i), t0), Ok(()));
        }
        assert_eq!(spacing.remembered(), limits::MAX_LOGIN_DELAY_USERS);
        // Once the old entries have expired, they make room.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(spacing.admit(&user(usize::MAX), later), Ok(()));
        assert_eq!(spacing.remembered(), 1);
    }
}
