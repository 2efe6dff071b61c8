//! Guards around logins: failure delays that grow per client address, per-user session slots,
//! and the gate that bounds how many password hashes run at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits;
use crate::mailbox::UserName;

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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Recent failures from one client address.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
}

/// Failed-login delays: the first failure from an address waits the base delay
/// (`--auth-delay`), each further one twice as long, up to
/// [`limits::MAX_AUTH_FAILURE_DELAY`] (or the base, if that is longer). An address that stays
/// quiet for [`limits::AUTH_FAILURE_MEMORY`] starts again at the base. Successes are never
/// slowed.
#[derive(Debug, Default)]
pub struct Throttle {
    strikes: Mutex<HashMap<ClientKey, Strikes>>,
}

impl Throttle {
    /// Records a failure from `peer` and returns how long to wait before answering it.
    pub fn fail(&self, peer: Option<IpAddr>, base: Duration) -> Duration {
        let cap = base.max(limits::MAX_AUTH_FAILURE_DELAY);
        let Some(ip) = peer else {
            return base;
        };
        let now = Instant::now();
        let mut map = lock(&self.strikes);
        if map.len() >= limits::MAX_TRACKED_ADDRESSES {
            map.retain(|_, s| now.duration_since(s.last) < limits::AUTH_FAILURE_MEMORY);
            if map.len() >= limits::MAX_TRACKED_ADDRESSES {
                // Still full of active attackers: everyone new waits the longest.
                return cap;
            }
        }
        let s = map.entry(ClientKey::of(ip)).or_insert(Strikes {
            count: 0,
            last: now,
        });
        if now.duration_since(s.last) >= limits::AUTH_FAILURE_MEMORY {
            s.count = 0;
        }
        s.count = s.count.saturating_add(1);
        s.last = now;
        let doublings = (s.count - 1).min(16);
        base.saturating_mul(1 << doublings).min(cap)
    }
}

/// Bounds how many password hashes run at once, so that a flood of logins against expensive
/// hashes cannot take every core from sessions that are already logged in.
#[derive(Debug)]
pub struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A taken hashing slot, given back on drop (panics included).
struct Permit<'g>(&'g Gate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

impl Gate {
    /// A gate letting `slots` hashes run at once (at least one).
    pub fn new(slots: usize) -> Gate {
        Gate {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
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
        Some(f())
    }
}

/// Counts logged-in sessions per user, so one account cannot hold every connection.
#[derive(Debug)]
pub struct UserSlots {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One logged-in session's place in [`UserSlots`]; freed on drop.
#[derive(Debug)]
pub struct UserSlot {
    slots: Arc<UserSlots>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.slots.open);
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl UserSlots {
    /// At most `max` sessions per user.
    pub fn new(max: usize) -> Arc<UserSlots> {
        Arc::new(UserSlots {
            max,
            open: Mutex::default(),
        })
    }

    /// A slot for `user`, unless they already have `max` sessions.
    pub fn acquire(self: &Arc<Self>, user: &UserName) -> Option<UserSlot> {
        let mut open = lock(&self.open);
        let n = open.entry(user.as_str().to_owned()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            slots: self.clone(),
            user: user.as_str().to_owned(),
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
    /// Failed-login delays per client address.
    pub throttle: Throttle,
    /// The password-hashing gate.
    pub gate: Gate,
    /// Logged-in sessions per user.
    pub users: Arc<UserSlots>,
    /// AUTHORIZATION deadlines.
    pub deadlines: LoginDeadlines,
    /// The least time between two logins of one user (`--login-delay`).
    pub spacing: LoginSpacing,
}

impl Guards {
    /// Guards with `hash_slots` parallel hashes and at most `per_user` sessions per user.
    pub fn new(hash_slots: usize, per_user: usize) -> Guards {
        Guards {
            throttle: Throttle::default(),
            gate: Gate::new(hash_slots),
            users: UserSlots::new(per_user),
            deadlines: LoginDeadlines::default(),
            spacing: LoginSpacing::default(),
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
    fn delays_double_per_address_up_to_the_cap() {
        let t = Throttle::default();
        let two = Duration::from_secs(2);
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("2001:db8::1".parse().unwrap());
        let got: Vec<u64> = (0..6).map(|_| t.fail(a, two).as_secs()).collect();
        assert_eq!(got, vec![2, 4, 8, 15, 15, 15]);
        assert_eq!(t.fail(b, two), two);
        assert_eq!(
            t.fail(Some("2001:db8::2".parse().unwrap()), two).as_secs(),
            4
        );
        assert_eq!(t.fail(None, two), two);
        assert_eq!(t.fail(a, Duration::ZERO), Duration::ZERO);
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
