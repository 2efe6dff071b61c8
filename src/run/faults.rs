//! The development server's fault injection: the rules in force (`--dev-faults`,
//! `PUT /api/v1/faults`), how often each fired, and the seeded generator that decides the
//! rules with a probability, so that the same rules, seed and commands fire the same way again.

use std::sync::{Mutex, PoisonError};

use crate::fault_rules::{Action, FaultRules, Rule, Target};
use crate::protocol::wire::Reply;
use crate::session::{Fault, PhaseName, Seen};

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny generator with good statistics, enough
/// for coin flips that must replay from a seed.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A float in `0..1` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's output function, also the salt of a session's UIDLs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A rule that fired: which, its action's name, and the fault the session carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The rule's index in the document.
    pub rule: usize,
    /// The action's name.
    pub action: &'static str,
    /// What the session does.
    pub fault: Fault,
}

struct State {
    rules: FaultRules,
    rng: SplitMix,
    fired: Vec<u64>,
}

/// The rules in force, shared by every session and the API.
pub struct Faults {
    state: Mutex<State>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults::new(FaultRules::default())
    }
}

/// What a rule is matched against.
enum Event<'a> {
    Greeting,
    Line(&'a Seen<'a>),
}

impl Faults {
    /// `rules` in force, the generator seeded, no rule fired yet.
    pub fn new(rules: FaultRules) -> Faults {
        Faults {
            state: Mutex::new(State::fresh(rules)),
        }
    }

    /// Puts `rules` in force instead: the generator is seeded again and the counts start
    /// from zero.
    pub fn replace(&self, rules: FaultRules) {
        *self.lock() = State::fresh(rules);
    }

    /// The document in force, each rule with how often it fired.
    pub fn json(&self) -> String {
        let state = self.lock();
        state.rules.json(&state.fired)
    }

    /// A fault for the greeting of a session, if a rule fires.
    pub fn greeting(&self) -> Option<Fired> {
        self.lock().decide(&Event::Greeting, 0)
    }

    /// A fault for the answer to `seen`, in session `session`, if a rule fires.
    pub fn line(&self, seen: &Seen<'_>, session: u64) -> Option<Fired> {
        self.lock().decide(&Event::Line(seen), session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn fresh(rules: FaultRules) -> State {
        State {
            rng: SplitMix(rules.seed),
            fired: vec![0; rules.rules.len()],
            rules,
        }
    }

    /// The first rule that matches `event`, has fires left and wins its draw, counted.
    fn decide(&mut self, event: &Event<'_>, session: u64) -> Option<Fired> {
        for (i, rule) in self.rules.rules.iter().enumerate() {
            if !matches(rule, event) || rule.count.is_some_and(|c| self.fired[i] >= c) {
                continue;
            }
            let p = rule.probability.get();
            // Only a real chance draws, so rules that always fire do not shift the sequence.
            if p < 1.0 && self.rng.unit() >= p {
                continue;
            }
            self.fired[i] += 1;
            return Some(Fired {
                rule: i,
                action: rule.action.name(),
                fault: fault(&rule.action, self.rules.seed, session),
            });
        }
        None
    }
}

/// Whether `rule` applies to `event`.
fn matches(rule: &Rule, event: &Event<'_>) -> bool {
    let seen = match event {
        Event::Greeting => return rule.target == Target::Greeting,
        Event::Line(seen) => seen,
    };
    let Some(keyword) = seen.keyword else {
        return false;
    };
    if rule.user.is_some() && rule.user.as_deref() != seen.user {
        return false;
    }
    let target = match &rule.target {
        Target::Greeting => false,
        Target::Any => true,
        Target::Login => {
            seen.phase == PhaseName::Authorization
                && matches!(keyword, "USER" | "PASS" | "APOP" | "AUTH")
        }
        Target::Command(k) => *k == keyword,
    };
    target
        && match rule.action {
            Action::DropAfter(_) | Action::NoTerminator => seen.multi_line(),
            Action::FailCommit | Action::ChangeUidls => seen.phase == PhaseName::Transaction,
            // Where STLS gets `-ERR` there is no handshake to fail.
            Action::FailHandshake => seen.stls,
            _ => true,
        }
}

/// The fault the session carries out for `action`.
fn fault(action: &Action, seed: u64, session: u64) -> Fault {
    match action {
        Action::Drop => Fault::Drop,
        Action::DropAfter(n) => Fault::DropAfter(*n),
        Action::NoTerminator => Fault::NoTerminator,
        Action::Err { code, text } => Fault::Refuse(Reply::Err(*code, text.clone())),
        Action::Delay(d) => Fault::Delay(*d),
        Action::Trickle(d) => Fault::Trickle(*d),
        Action::FailCommit => Fault::FailCommit,
        // One salt per session: its UIDLs agree with each other and differ from any other
        // session's.
        Action::ChangeUidls => Fault::SaltUidls(mix(seed ^ mix(session))),
        Action::FailHandshake => Fault::FailHandshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault_rules::parse;

    fn seen<'a>(keyword: &'static str, phase: PhaseName, user: Option<&'a str>) -> Seen<'a> {
        Seen {
            keyword: Some(keyword),
            number: None,
            shown: keyword,
            phase,
            user,
            pipelined: false,
            stls: false,
        }
    }

    fn faults(doc: &str) -> Faults {
        Faults::new(parse(doc.as_bytes()).unwrap())
    }

    const T: PhaseName = PhaseName::Transaction;
    const A: PhaseName = PhaseName::Authorization;

    #[test]
    fn the_first_matching_rule_fires_within_its_count() {
        let f = faults(
            r#"{"rules": [
                {"user": "ann", "command": "RETR", "count": 1, "action": "drop"},
                {"command": "RETR", "action": "err", "code": "SYS/PERM", "text": "no"},
                {"command": "login", "action": "delay", "ms": 5},
                {"command": "greeting", "action": "trickle", "ms": 1}
            ]}"#,
        );
        let retr_ann = seen("RETR", T, Some("ann"));
        assert_eq!(f.line(&retr_ann, 1).unwrap().fault, Fault::Drop);
        let second = f.line(&retr_ann, 1).unwrap();
        assert_eq!((second.rule, second.action), (1, "err"));
        assert_eq!(
            f.line(&seen("RETR", T, Some("bob")), 2).unwrap().rule,
            1,
            "another user"
        );
        assert_eq!(f.line(&seen("PASS", A, None), 3).unwrap().rule, 2);
        assert_eq!(f.line(&seen("STAT", T, None), 3), None);
        assert_eq!(f.greeting().unwrap().action, "trickle");
        assert!(f.json().contains(r#""count":1,"action":"drop","fired":1}"#));
        assert!(f.json().contains(r#""text":"no","fired":2}"#));
        f.replace(FaultRules::default());
        assert_eq!(f.line(&retr_ann, 1), None);
        assert_eq!(f.json(), r#"{"seed":0,"rules":[]}"#);
    }

    #[test]
    fn multi_line_and_transaction_only_actions_match_only_there() {
        let f = faults(
            r#"{"rules": [
                {"action": "no_terminator"},
                {"command": "QUIT", "action": "fail_commit"}
            ]}"#,
        );
        assert_eq!(f.line(&seen("DELE", T, None), 1), None);
        let mut list_one = seen("LIST", T, None);
        list_one.number = Some(1);
        assert_eq!(f.line(&list_one, 1), None);
        assert_eq!(
            f.line(&seen("LIST", T, None), 1).unwrap().fault,
            Fault::NoTerminator
        );
        assert_eq!(f.line(&seen("QUIT", A, None), 1), None);
        assert_eq!(
            f.line(&seen("QUIT", T, None), 1).unwrap().fault,
            Fault::FailCommit
        );
    }

    #[test]
    fn a_handshake_fault_fires_only_where_stls_would_start_tls() {
        let f = faults(r#"{"rules": [{"command": "STLS", "action": "fail_handshake"}]}"#);
        let mut stls = seen("STLS", A, None);
        assert_eq!(f.line(&stls, 1), None, "no certificate, or TLS already on");
        stls.stls = true;
        assert_eq!(f.line(&stls, 1).unwrap().fault, Fault::FailHandshake);
        assert!(f.json().contains(r#""action":"fail_handshake","fired":1}"#));
    }

    #[test]
    fn the_same_seed_replays_the_same_draws_and_a_put_restarts_them() {
        let doc =
            r#"{"seed": 42, "rules": [{"command": "NOOP", "probability": 0.5, "action": "drop"}]}"#;
        let run = |f: &Faults| -> Vec<bool> {
            (0..64)
                .map(|_| f.line(&seen("NOOP", T, None), 1).is_some())
                .collect()
        };
        let f = faults(doc);
        let first = run(&f);
        let fired = first.iter().filter(|&&x| x).count();
        assert!((16..=48).contains(&fired), "{fired} of 64");
        f.replace(parse(doc.as_bytes()).unwrap());
        assert_eq!(run(&f), first);
        let other = faults(&doc.replace("42", "43"));
        assert_ne!(run(&other), first);
    }

    #[test]
    fn each_session_has_its_own_uidl_salt() {
        let f = faults(r#"{"rules": [{"command": "UIDL", "action": "change_uidls"}]}"#);
        let uidl = seen("UIDL", T, None);
        let a = f.line(&uidl, 1).unwrap().fault;
        assert_eq!(f.line(&uidl, 1).unwrap().fault, a);
        assert_ne!(f.line(&uidl, 2).unwrap().fault, a);
    }
}
