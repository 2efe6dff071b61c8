//! The failed-login throttle: delays that double per client network (IPv4 address, IPv6
//! /48) and, for accounts under attack, a wait before the check for networks the user has not
//! logged in from; each kept in fixed-size tables of [`Records`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::limits;

use super::records::{BUCKET, Bucket, Record, Records, Table, now_ms};

/// The unit the failed-login throttle counts: an IPv4 address, or an IPv6 /48. A site or a
/// customer usually gets a whole /48 (RFC 6177), so an attacker can rotate through 65,536
/// /64s without leaving it; a rotation must not start him again at the base delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network(IpAddr);

impl Network {
    /// The network of `ip`; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn of(ip: IpAddr) -> Network {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Network(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 80) - 1);
                Network(IpAddr::V6(prefix.into()))
            }
        }
    }

    fn octets(&self) -> [u8; 16] {
        match self.0 {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/48"),
        }
    }
}

/// `base` doubled for each failure after the first of `count`, up to `cap`.
fn doubled(base: Duration, count: u32, cap: Duration) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings).min(cap)
}

#[cfg(test)]
thread_local! {
    /// Records the throttle looked at in this thread, for the test that bounds its work.
    static VISITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Finds `key` in `bucket`: its index, else the index of a place for it (empty, or expired
/// at `now` after `memory`), else `None`.
fn find(
    bucket: &Bucket,
    key: &[u8; 16],
    now: u64,
    memory: Duration,
) -> (Option<usize>, Option<usize>) {
    let mut place = None;
    for (i, r) in bucket.iter().enumerate() {
        #[cfg(test)]
        VISITS.with(|v| v.set(v.get() + 1));
        if r.key == *key {
            return (Some(i), None);
        }
        if place.is_none() && r.expired(now, memory) {
            place = Some(i);
        }
    }
    (None, place)
}

/// Failed-login throttles, by client network and by account, and the record of which
/// networks each user logged in from.
///
/// By network: the first failure from an address (IPv6: a /48) waits the base delay
/// (`--auth-delay`), each further one twice as long, up to [`limits::MAX_AUTH_FAILURE_DELAY`]
/// (or the base, if that is longer). A network quiet for [`limits::AUTH_FAILURE_MEMORY`]
/// starts again at the base. Successes are never slowed.
///
/// By account: past [`limits::ACCOUNT_FREE_FAILURES`] recent failures of one name (from any
/// address), a login attempt for that name from a network it has not logged in from in the
/// last [`limits::TRUSTED_LOGIN_MEMORY`] waits, before its password is checked, a delay that
/// doubles like the network's; a right password still logs in after the wait, and a client on
/// a network the user logged in from is not slowed at all.
///
/// The records are the process's own (a daemon) or the shared state file (`--inetd`); each
/// operation looks at one bucket of 8, however full the tables are.
#[derive(Debug, Default)]
pub struct Throttle {
    records: Arc<Records>,
}

impl Throttle {
    /// A throttle keeping its records in `records`.
    pub fn new(records: Arc<Records>) -> Throttle {
        Throttle { records }
    }

    /// Records a failure from `peer` and returns how long to wait before answering it.
    pub fn fail(&self, peer: Option<IpAddr>, base: Duration) -> Duration {
        self.fail_at(peer, base, now_ms())
    }

    fn fail_at(&self, peer: Option<IpAddr>, base: Duration, now: u64) -> Duration {
        let cap = base.max(limits::MAX_AUTH_FAILURE_DELAY);
        let Some(ip) = peer else {
            return base;
        };
        let key = self.records.key(&[b"network", &Network::of(ip).octets()]);
        let memory = limits::AUTH_FAILURE_MEMORY;
        let count = self.records.update(Table::Addresses, &key, |b| {
            let i = match find(b, &key, now, memory) {
                (Some(i), _) => {
                    if b[i].expired(now, memory) {
                        b[i].count = 0;
                    }
                    i
                }
                (None, Some(i)) => {
                    b[i] = Record {
                        key,
                        ..Record::default()
                    };
                    i
                }
                // Every place holds an active attacker: the newcomer waits the longest.
                (None, None) => return None,
            };
            b[i].count = b[i].count.saturating_add(1);
            b[i].last_ms = now;
            Some(b[i].count)
        });
        match count.flatten() {
            Some(n) => doubled(base, n, cap),
            None => cap,
        }
    }

    /// Records a failed login for the name `user` (known or not).
    pub fn account_failed(&self, user: &[u8]) {
        self.account_failed_at(user, now_ms());
    }

    fn account_failed_at(&self, user: &[u8], now: u64) {
        let key = self.records.key(&[b"account", user]);
        let memory = limits::AUTH_FAILURE_MEMORY;
        self.records.update(Table::Accounts, &key, |b| {
            let i = match find(b, &key, now, memory) {
                (Some(i), _) => {
                    if b[i].expired(now, memory) {
                        b[i].count = 0;
                    }
                    i
                }
                (None, place) => {
                    // A full bucket gives up the name with the least evidence against it.
                    let i = place.unwrap_or_else(|| {
                        (0..BUCKET)
                            .min_by_key(|&i| (b[i].count, b[i].last_ms))
                            .unwrap_or(0)
                    });
                    b[i] = Record {
                        key,
                        ..Record::default()
                    };
                    i
                }
            };
            b[i].count = b[i].count.saturating_add(1);
            b[i].last_ms = now;
        });
    }

    /// How long a login attempt for `user` from `peer` waits before its check, and the
    /// account's recent failures; `None` when it need not wait (few failures, a trusted
    /// network, or no network at all: a pipe).
    pub fn account_wait(
        &self,
        user: &[u8],
        peer: Option<IpAddr>,
        base: Duration,
    ) -> Option<(Duration, u32)> {
        self.account_wait_at(user, peer, base, now_ms())
    }

    fn account_wait_at(
        &self,
        user: &[u8],
        peer: Option<IpAddr>,
        base: Duration,
        now: u64,
    ) -> Option<(Duration, u32)> {
        let network = Network::of(peer?);
        let key = self.records.key(&[b"account", user]);
        let memory = limits::AUTH_FAILURE_MEMORY;
        let count = self.records.update(Table::Accounts, &key, |b| {
            match find(b, &key, now, memory) {
                (Some(i), _) if !b[i].expired(now, memory) => b[i].count,
                _ => 0,
            }
        })?;
        if count <= limits::ACCOUNT_FREE_FAILURES {
            return None;
        }
        let trust = self.records.key(&[b"trust", user, &network.octets()]);
        let trusted = self.records.update(Table::Trust, &trust, |b| {
            matches!(find(b, &trust, now, limits::TRUSTED_LOGIN_MEMORY),
                (Some(i), _) if !b[i].expired(now, limits::TRUSTED_LOGIN_MEMORY))
        });
        if trusted == Some(true) {
            return None;
        }
        let cap = base.max(limits::MAX_AUTH_FAILURE_DELAY);
        let over = count - limits::ACCOUNT_FREE_FAILURES;
        Some((doubled(base, over, cap), count))
    }

    /// Records that `user` logged in from `peer`: that network is not slowed for them.
    pub fn logged_in(&self, user: &[u8], peer: Option<IpAddr>) {
        self.logged_in_at(user, peer, now_ms());
    }

    fn logged_in_at(&self, user: &[u8], peer: Option<IpAddr>, now: u64) {
        let Some(ip) = peer else {
            return;
        };
        let key = self
            .records
            .key(&[b"trust", user, &Network::of(ip).octets()]);
        self.records.update(Table::Trust, &key, |b| {
            let i = match find(b, &key, now, limits::TRUSTED_LOGIN_MEMORY) {
                (Some(i), _) | (None, Some(i)) => i,
                (None, None) => (0..BUCKET).min_by_key(|&i| b[i].last_ms).unwrap_or(0),
            };
            b[i] = Record {
                key,
                count: 1,
                pid: 0,
                last_ms: now,
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rotating_64s_within_one_48_keep_escalating() {
        let t = Throttle::default();
        let two = Duration::from_secs(2);
        let got: Vec<u64> = (0..5)
            .map(|i| {
                let ip = format!("2001:db8:7:{:x}::1", 0x100 + i).parse().unwrap();
                t.fail(Some(ip), two).as_secs()
            })
            .collect();
        assert_eq!(got, vec![2, 4, 8, 15, 15]);
        // The next /48 is another network.
        assert_eq!(t.fail(Some("2001:db8:8::1".parse().unwrap()), two), two);
        assert_eq!(
            Network::of("2001:db8:7:ffff::9".parse().unwrap()).to_string(),
            "2001:db8:7::/48"
        );
        assert_eq!(
            Network::of("::ffff:192.0.2.7".parse().unwrap()),
            Network::of("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn a_full_address_table_costs_one_bucket_per_failure() {
        let t = Throttle::default();
        let base = Duration::from_millis(100);
        let now = now_ms();
        let ip = |i: u32| Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        // Four times the table's places, all within the memory: every bucket fills up.
        let n = 4 * limits::MAX_TRACKED_ADDRESSES as u32;
        let mut capped = 0;
        for i in 0..n {
            capped += usize::from(t.fail_at(ip(i), base, now) == limits::MAX_AUTH_FAILURE_DELAY);
        }
        assert!(capped > 0, "the table never filled up");
        VISITS.with(|v| v.set(0));
        let delay = t.fail_at(ip(n), base, now);
        assert!(delay == base || delay == limits::MAX_AUTH_FAILURE_DELAY);
        // The old table swept all 65,536 entries on every failure once it was full.
        assert!(VISITS.with(|v| v.get()) <= BUCKET);
        // Once they have expired, newcomers take their places again.
        let later = now + limits::AUTH_FAILURE_MEMORY.as_millis() as u64;
        for i in 0..1000 {
            assert_eq!(t.fail_at(ip(n + 1 + i), base, later), base);
        }
    }

    #[test]
    fn many_networks_guessing_one_account_wait_before_the_check_but_its_networks_do_not() {
        let t = Throttle::default();
        let base = Duration::from_secs(2);
        let now = now_ms();
        let at = |i: u32| Some(IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i)));
        let home = Some("2001:db8:1:2::5".parse().unwrap());
        t.logged_in_at(b"alice", home, now);
        let mut waits = Vec::new();
        for i in 0..9 {
            waits.push(
                t.account_wait_at(b"alice", at(i), base, now)
                    .map(|w| w.0.as_secs()),
            );
            t.account_failed_at(b"alice", now);
        }
        let free = limits::ACCOUNT_FREE_FAILURES as usize;
        assert_eq!(waits[..=free], vec![None; free + 1]);
        assert_eq!(waits[free + 1..], vec![Some(2), Some(4), Some(8)]);
        // A fresh network, even with the right password, waits and is then checked: slowed,
        // never locked out (the wait is bounded by the longest delay).
        let fresh = t.account_wait_at(b"alice", at(1000), base, now).unwrap();
        assert_eq!(fresh, (Duration::from_secs(15), 9));
        // Her own network (another /64 of the same /48 too) does not wait; nor does a pipe.
        assert_eq!(t.account_wait_at(b"alice", home, base, now), None);
        let sibling = Some("2001:db8:1:3::9".parse().unwrap());
        assert_eq!(t.account_wait_at(b"alice", sibling, base, now), None);
        assert_eq!(t.account_wait_at(b"alice", None, base, now), None);
        // Other accounts are not slowed; and the account calms down after the memory.
        assert_eq!(t.account_wait_at(b"bob", at(3), base, now), None);
        let later = now + limits::AUTH_FAILURE_MEMORY.as_millis() as u64;
        assert_eq!(t.account_wait_at(b"alice", at(1000), base, later), None);
    }
}
