//! The server's counters for `--metrics`: lock-free atomics that any room bumps, and their
//! Prometheus text exposition.
//!
//! Process-wide statics rather than values passed around: storage bumps its lock-wait counters
//! without knowing of a server, and a counter costs one relaxed atomic add. Labels are fixed
//! lists, so every series exists (at 0) from the start and a scrape never allocates per label.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A number that only goes up.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Sessions running now; see [`OpenSession`].
static SESSIONS_OPEN: AtomicI64 = AtomicI64::new(0);

/// How a session ended: the end-of-session line's `reason` words.
pub(crate) const OUTCOMES: [&str; 9] = [
    "quit",
    "commit-failed",
    "disconnected",
    "timeout",
    "network-error",
    "mailbox-error",
    "tls-failed",
    "auth-failures",
    "bad-commands",
];
static SESSIONS: [Counter; OUTCOMES.len()] = [const { Counter::new() }; OUTCOMES.len()];

/// How a client logs in: the login line's `method` words.
pub(crate) const MECHANISMS: [&str; 7] = [
    "PASS",
    "APOP",
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "XOAUTH2",
    "OAUTHBEARER",
];
static LOGINS_OK: [Counter; MECHANISMS.len()] = [const { Counter::new() }; MECHANISMS.len()];
static LOGINS_FAILED: [Counter; MECHANISMS.len()] = [const { Counter::new() }; MECHANISMS.len()];

/// Why a connection or a login was turned away before any mail was read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// `--max-connections` reached.
    Global,
    /// `--max-per-address` reached.
    PerAddress,
    /// `--max-per-user` reached.
    PerUser,
    /// Every password-hashing slot stayed busy.
    HashingBusy,
    /// `--login-delay`: the user logged in too recently.
    LoginDelay,
}

const REFUSALS: [&str; 5] = [
    "max-connections",
    "max-per-address",
    "max-per-user",
    "hashing-busy",
    "login-delay",
];
static REFUSED: [Counter; REFUSALS.len()] = [const { Counter::new() }; REFUSALS.len()];

/// TLS handshakes completed (implicit TLS and STLS).
pub(crate) static TLS_OK: Counter = Counter::new();
/// TLS handshakes that failed or timed out.
pub(crate) static TLS_FAILED: Counter = Counter::new();
/// Messages sent whole by RETR.
pub(crate) static RETRIEVED_MESSAGES: Counter = Counter::new();
/// Octets of those messages, as listed.
pub(crate) static RETRIEVED_OCTETS: Counter = Counter::new();
/// Messages removed by commits.
pub(crate) static DELETED_MESSAGES: Counter = Counter::new();
/// Octets of those messages, as listed.
pub(crate) static DELETED_OCTETS: Counter = Counter::new();
/// UPDATE states that committed (with or without deletions).
pub(crate) static COMMITS: Counter = Counter::new();
/// UPDATE states whose commit failed or did not finish.
pub(crate) static COMMITS_FAILED: Counter = Counter::new();
/// Times a mailbox lock (dotlock or fcntl) was held by someone else and poplar waited.
static LOCK_WAITS: Counter = Counter::new();
/// Microseconds slept waiting for those locks.
static LOCK_WAIT_MICROS: Counter = Counter::new();
/// Failed logins answered after a delay.
static AUTH_DELAYS: Counter = Counter::new();
/// Microseconds of those delays.
static AUTH_DELAY_MICROS: Counter = Counter::new();

/// Counts a session as open until dropped (panics included).
pub(crate) struct OpenSession(());

impl OpenSession {
    /// Counts one more open session.
    pub(crate) fn start() -> OpenSession {
        SESSIONS_OPEN.fetch_add(1, Relaxed);
        OpenSession(())
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        SESSIONS_OPEN.fetch_sub(1, Relaxed);
    }
}

/// Counts a session that ended with `outcome`, one of [`OUTCOMES`].
pub(crate) fn session_ended(outcome: &str) {
    let i = OUTCOMES.iter().position(|o| *o == outcome);
    debug_assert!(i.is_some(), "{outcome} is missing from metrics::OUTCOMES");
    if let Some(i) = i {
        SESSIONS[i].inc();
    }
}

/// Counts a login by `mechanism` (one of [`MECHANISMS`]) that succeeded or failed.
pub(crate) fn login(mechanism: &str, ok: bool) {
    let i = MECHANISMS.iter().position(|m| *m == mechanism);
    debug_assert!(
        i.is_some(),
        "{mechanism} is missing from metrics::MECHANISMS"
    );
    if let Some(i) = i {
        let counters = if ok { &LOGINS_OK } else { &LOGINS_FAILED };
        counters[i].inc();
    }
}

/// Counts a refusal.
pub(crate) fn refused(why: Refusal) {
    REFUSED[why as usize].inc();
}

/// Counts a TLS handshake.
pub(crate) fn tls_handshake(ok: bool) {
    let counter = if ok { &TLS_OK } else { &TLS_FAILED };
    counter.inc();
}

/// Counts one wait for a busy lock that lasted `slept`, the first of an acquisition or not.
pub(crate) fn lock_waited(first: bool, slept: Duration) {
    if first {
        LOCK_WAITS.inc();
    }
    LOCK_WAIT_MICROS.add(micros(slept));
}

/// Counts a failed login answered after `delay`.
pub(crate) fn auth_delayed(delay: Duration) {
    AUTH_DELAYS.inc();
    AUTH_DELAY_MICROS.add(micros(delay));
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Every metric in the Prometheus text exposition format (version 0.0.4), each with its
/// `# HELP` and `# TYPE` lines.
pub(crate) fn exposition() -> String {
    let mut out = String::with_capacity(4096);
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(
            out,
            "# HELP poplar_{name} {help}\n# TYPE poplar_{name} {kind}"
        );
    };
    head(&mut out, "sessions_open", "gauge", "Sessions running now.");
    let _ = writeln!(
        out,
        "poplar_sessions_open {}",
        SESSIONS_OPEN.load(Relaxed).max(0)
    );
    head(
        &mut out,
        "sessions_total",
        "counter",
        "Sessions ended, by outcome (the end-of-session line's reason).",
    );
    for (o, c) in OUTCOMES.iter().zip(&SESSIONS) {
        let _ = writeln!(out, "poplar_sessions_total{{outcome=\"{o}\"}} {}", c.get());
    }
    head(
        &mut out,
        "logins_total",
        "counter",
        "Login attempts whose password was checked, by result and mechanism.",
    );
    for (result, counters) in [("ok", &LOGINS_OK), ("failed", &LOGINS_FAILED)] {
        for (m, c) in MECHANISMS.iter().zip(counters) {
            let _ = writeln!(
                out,
                "poplar_logins_total{{result=\"{result}\",mechanism=\"{m}\"}} {}",
                c.get()
            );
        }
    }
    head(
        &mut out,
        "tls_handshakes_total",
        "counter",
        "TLS handshakes (implicit TLS and STLS), by result.",
    );
    for (result, c) in [("ok", &TLS_OK), ("failed", &TLS_FAILED)] {
        let _ = writeln!(
            out,
            "poplar_tls_handshakes_total{{result=\"{result}\"}} {}",
            c.get()
        );
    }
    let seconds = |c: &Counter| c.get() as f64 / 1e6;
    let plain: [(&str, &str, f64); 10] = [
        (
            "retrieved_messages_total",
            "Messages sent whole by RETR.",
            RETRIEVED_MESSAGES.get() as f64,
        ),
        (
            "retrieved_octets_total",
            "Octets of the messages sent by RETR, as listed.",
            RETRIEVED_OCTETS.get() as f64,
        ),
        (
            "deleted_messages_total",
            "Messages removed by committed deletions.",
            DELETED_MESSAGES.get() as f64,
        ),
        (
            "deleted_octets_total",
            "Octets of the messages removed, as listed.",
            DELETED_OCTETS.get() as f64,
        ),
        (
            "commits_total",
            "QUITs after login whose UPDATE committed.",
            COMMITS.get() as f64,
        ),
        (
            "commits_failed_total",
            "QUITs after login whose commit failed or did not finish.",
            COMMITS_FAILED.get() as f64,
        ),
        (
            "lock_waits_total",
            "Times a mailbox lock was held elsewhere and poplar waited for it.",
            LOCK_WAITS.get() as f64,
        ),
        (
            "lock_wait_seconds_total",
            "Time spent waiting for mailbox locks.",
            seconds(&LOCK_WAIT_MICROS),
        ),
        (
            "auth_delays_total",
            "Failed logins answered after the --auth-delay delay.",
            AUTH_DELAYS.get() as f64,
        ),
        (
            "auth_delay_seconds_total",
            "Time failed logins were held before their answer.",
            seconds(&AUTH_DELAY_MICROS),
        ),
    ];
    for (name, help, value) in plain {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "poplar_{name} {value}");
    }
    head(
        &mut out,
        "refusals_total",
        "counter",
        "Connections and logins turned away by a cap or a guard, by cap.",
    );
    for (cap, c) in REFUSALS.iter().zip(&REFUSED) {
        let _ = writeln!(out, "poplar_refusals_total{{cap=\"{cap}\"}} {}", c.get());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_type_and_well_formed_samples() {
        let text = exposition();
        let mut named = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert!(text.contains(&format!("# HELP {name} ")), "{name}");
                named.insert(name.to_owned());
            } else if !line.starts_with("# HELP ") {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert!(named.contains(name), "sample before its TYPE: {line}");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(named.len() >= 15, "{named:?}");
    }

    #[test]
    fn counters_move_by_label() {
        let series = |name: &str| -> f64 {
            let text = exposition();
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap();
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        };
        let ok = "poplar_logins_total{result=\"ok\",mechanism=\"APOP\"}";
        let before = series(ok);
        login("APOP", true);
        assert_eq!(series(ok), before + 1.0);
        let cap = "poplar_refusals_total{cap=\"login-delay\"}";
        let before = series(cap);
        refused(Refusal::LoginDelay);
        assert_eq!(series(cap), before + 1.0);
        let open = series("poplar_sessions_open");
        let guard = OpenSession::start();
        assert!(series("poplar_sessions_open") >= open);
        drop(guard);
        let waited = series("poplar_lock_wait_seconds_total");
        lock_waited(true, Duration::from_millis(1500));
        assert!(series("poplar_lock_wait_seconds_total") >= waited + 1.5);
    }
}
