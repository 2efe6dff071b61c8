//! The development server's sessions log (`GET /api/v1/sessions` and the page): the recent
//! POP3 sessions, each command with its answer, what the client did that servers commonly trip
//! on, and the faults injected into it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::faults::{Faults, Fired};
use crate::json;
use crate::limits::{DEV_SESSION_COMMANDS_KEPT, DEV_SESSIONS_KEPT};
use crate::session::{Ending, Fault, PhaseName, Seen, Stats, Tag, Watch, Watcher};

/// One command of a session and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEntry {
    /// The line as the debug trace shows it, secrets masked.
    pub command: String,
    /// The state it was read in.
    pub phase: PhaseName,
    /// `+OK`, `-ERR` or `+` (a SASL challenge); `None` while unanswered or when no answer
    /// went out.
    pub status: Option<&'static str>,
    /// The response code of a `-ERR [CODE]` answer.
    pub code: Option<String>,
    /// Sent before the answer to the line before it.
    pub pipelined: bool,
    /// The fault injected into its answer (the action's name).
    pub fault: Option<&'static str>,
}

/// What the client did that servers commonly trip on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// A DELE answered `+OK` before any UIDL was answered `+OK` in the session.
    pub deleted_without_uidl: bool,
    /// A RETR or TOP answered `+OK` before any LIST or STAT was answered `+OK`.
    pub retrieved_without_list: bool,
    /// The session ended without the client sending QUIT.
    pub no_quit: bool,
    /// A command arrived before the answer to the one before it went out.
    pub pipelined: bool,
}

/// One session as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The session number (the `[id peer]` tag of its log lines).
    pub id: u64,
    /// The client's address.
    pub client: Option<String>,
    /// Who logged in, or the last name tried before login.
    pub user: Option<String>,
    /// When it connected, in ms since 1970.
    pub started_ms: u64,
    /// When it ended, in ms since 1970; `None` while in progress.
    pub ended_ms: Option<u64>,
    /// How it ended (the `reason=` of the end-of-session log line).
    pub ending: Option<&'static str>,
    /// Whether the user logged in.
    pub logged_in: bool,
    /// Its first [`DEV_SESSION_COMMANDS_KEPT`] commands.
    pub commands: Vec<CommandEntry>,
    /// Commands after those, counted only.
    pub commands_omitted: u64,
    /// Message numbers RETR sent, in order.
    pub retrieved: Vec<u32>,
    /// Message numbers marked by DELE and not unmarked by RSET.
    pub deleted: Vec<u32>,
    /// Messages the commit at QUIT removed.
    pub committed: u64,
    /// What the client did that servers trip on.
    pub flags: Flags,
    /// Each injected fault: the command (or `greeting`), the rule's index and its action.
    pub faults: Vec<(String, usize, &'static str)>,
    /// Whether a UIDL, and a LIST or STAT, were answered `+OK` so far.
    seen_uidl: bool,
    seen_list: bool,
}

impl Record {
    fn new(tag: &Tag) -> Record {
        Record {
            id: tag.id,
            client: tag.peer.map(|p| p.to_string()),
            user: None,
            started_ms: now_ms(),
            ended_ms: None,
            ending: None,
            logged_in: false,
            commands: Vec::new(),
            commands_omitted: 0,
            retrieved: Vec::new(),
            deleted: Vec::new(),
            committed: 0,
            flags: Flags::default(),
            faults: Vec::new(),
            seen_uidl: false,
            seen_list: false,
        }
    }

    /// The record as a JSON object.
    pub fn json(&self) -> String {
        let opt_str = |s: Option<&str>| s.map_or_else(|| "null".to_owned(), json::quote);
        let mut commands = Vec::with_capacity(self.commands.len());
        for c in &self.commands {
            commands.push(format!(
                "{{\"command\":{},\"phase\":\"{}\",\"status\":{},\"code\":{},\
                 \"pipelined\":{},\"fault\":{}}}",
                json::quote(&c.command),
                c.phase.as_str(),
                opt_str(c.status),
                opt_str(c.code.as_deref()),
                c.pipelined,
                opt_str(c.fault),
            ));
        }
        let numbers = |v: &[u32]| {
            let items: Vec<String> = v.iter().map(u32::to_string).collect();
            format!("[{}]", items.join(","))
        };
        let mut faults = String::from("[");
        for (i, (command, rule, action)) in self.faults.iter().enumerate() {
            if i > 0 {
                faults.push(',');
            }
            let _ = write!(
                faults,
                "{{\"command\":{},\"rule\":{rule},\"action\":\"{action}\"}}",
                json::quote(command)
            );
        }
        faults.push(']');
        let f = self.flags;
        format!(
            "{{\"id\":{},\"client\":{},\"user\":{},\"started_ms\":{},\"ended_ms\":{},\
             \"ending\":{},\"logged_in\":{},\"commands\":[{}],\"commands_omitted\":{},\
             \"retrieved\":{},\"deleted\":{},\"committed\":{},\"flags\":{{\
             \"deleted_without_uidl\":{},\"retrieved_without_list\":{},\"no_quit\":{},\
             \"pipelined\":{}}},\"faults\":{faults}}}",
            self.id,
            opt_str(self.client.as_deref()),
            opt_str(self.user.as_deref()),
            self.started_ms,
            self.ended_ms
                .map_or_else(|| "null".to_owned(), |t| t.to_string()),
            opt_str(self.ending),
            self.logged_in,
            commands.join(","),
            self.commands_omitted,
            numbers(&self.retrieved),
            numbers(&self.deleted),
            self.committed,
            f.deleted_without_uidl,
            f.retrieved_without_list,
            f.no_quit,
            f.pipelined,
        )
    }

    /// The answer to the last command kept: status `word` (`+OK`, `-ERR`, `+`) and `code`.
    fn answered(&mut self, word: &'static str, code: Option<String>) {
        let Some(last) = self.commands.last_mut().filter(|c| c.status.is_none()) else {
            return;
        };
        last.status = Some(word);
        last.code = code;
        if word != "+OK" {
            return;
        }
        let (phase, command) = (last.phase, last.command.clone());
        let mut words = command.split(' ');
        let keyword = words.next().unwrap_or("");
        let argument = words.next();
        let number = argument.and_then(|n| n.parse::<u32>().ok());
        match (phase, keyword) {
            (PhaseName::Authorization, "PASS" | "APOP" | "(SASL") => self.logged_in = true,
            // AUTH alone lists the mechanisms; with one, `+OK` is a login.
            (PhaseName::Authorization, "AUTH") => self.logged_in |= argument.is_some(),
            (PhaseName::Transaction, "UIDL") => self.seen_uidl = true,
            (PhaseName::Transaction, "LIST" | "STAT") => self.seen_list = true,
            (PhaseName::Transaction, "RETR" | "TOP") => {
                self.flags.retrieved_without_list |= !self.seen_list;
                if keyword == "RETR" {
                    self.retrieved.extend(number);
                }
            }
            (PhaseName::Transaction, "DELE") => {
                self.flags.deleted_without_uidl |= !self.seen_uidl;
                self.deleted.extend(number);
            }
            (PhaseName::Transaction, "RSET") => self.deleted.clear(),
            _ => {}
        }
    }
}

/// The wall clock in ms since 1970.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The status word and response code of an answer's first line.
fn status_of(line: &str) -> (&'static str, Option<String>) {
    if let Some(rest) = line.strip_prefix("-ERR") {
        let code = rest
            .trim_start()
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|(c, _)| c.to_owned());
        ("-ERR", code)
    } else if line.starts_with("+OK") {
        ("+OK", None)
    } else {
        ("+", None)
    }
}

/// The recent sessions, oldest first, at most [`DEV_SESSIONS_KEPT`].
#[derive(Default)]
pub struct SessionLog {
    ring: Mutex<VecDeque<Record>>,
}

impl SessionLog {
    /// A copy of the sessions kept, oldest first.
    pub fn records(&self) -> Vec<Record> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().cloned().collect()
    }

    /// The log as a JSON array, oldest first.
    pub fn json(&self) -> String {
        let items: Vec<String> = self.records().iter().map(Record::json).collect();
        format!("[{}]", items.join(","))
    }

    fn start(&self, record: Record) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() >= DEV_SESSIONS_KEPT {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// Changes session `id`'s record, if it is still kept.
    fn update(&self, id: u64, change: impl FnOnce(&mut Record)) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = ring.iter_mut().rev().find(|r| r.id == id) {
            change(r);
        }
    }
}

/// The dev server's [`Watcher`]: each session is logged, and faults are drawn from the rules.
pub struct DevWatcher {
    log: Arc<SessionLog>,
    faults: Arc<Faults>,
}

impl DevWatcher {
    /// Logs into `log`, injecting what `faults` says.
    pub fn new(log: Arc<SessionLog>, faults: Arc<Faults>) -> DevWatcher {
        DevWatcher { log, faults }
    }
}

impl Watcher for DevWatcher {
    fn watch(&self, tag: &Tag) -> Box<dyn Watch> {
        self.log.start(Record::new(tag));
        Box::new(SessionWatch {
            id: tag.id,
            tag: tag.to_string(),
            log: self.log.clone(),
            faults: self.faults.clone(),
            user: None,
            quit: false,
        })
    }
}

/// One session's watch.
struct SessionWatch {
    id: u64,
    /// `[id peer]`, for log lines.
    tag: String,
    log: Arc<SessionLog>,
    faults: Arc<Faults>,
    /// The user the rules match: logged in, or named before login.
    user: Option<String>,
    /// Whether the client sent QUIT.
    quit: bool,
}

impl SessionWatch {
    /// Notes a fired fault in the log line and the record.
    fn fired(&self, fired: Fired, command: &str) -> Fault {
        log::info!(
            "{} fault injected: rule {} {} on {command}",
            self.tag,
            fired.rule,
            fired.action
        );
        let entry = (command.to_owned(), fired.rule, fired.action);
        self.log.update(self.id, |r| {
            if command != "greeting"
                && let Some(c) = r.commands.last_mut()
            {
                c.fault = Some(fired.action);
            }
            r.faults.push(entry);
        });
        fired.fault
    }
}

impl Watch for SessionWatch {
    fn greeting(&mut self) -> Option<Fault> {
        let fired = self.faults.greeting()?;
        Some(self.fired(fired, "greeting"))
    }

    fn line(&mut self, seen: &Seen<'_>) -> Option<Fault> {
        self.quit |= seen.keyword == Some("QUIT");
        if let Some(u) = seen.user {
            self.user = Some(u.to_owned());
        }
        let entry = CommandEntry {
            command: seen.shown.to_owned(),
            phase: seen.phase,
            status: None,
            code: None,
            pipelined: seen.pipelined,
            fault: None,
        };
        let user = self.user.clone();
        self.log.update(self.id, |r| {
            r.user = user;
            r.flags.pipelined |= seen.pipelined;
            if r.commands.len() < DEV_SESSION_COMMANDS_KEPT {
                r.commands.push(entry);
            } else {
                r.commands_omitted += 1;
            }
        });
        let fired = self.faults.line(seen, self.id)?;
        Some(self.fired(fired, seen.shown))
    }

    fn replied(&mut self, status: &str) {
        let (word, code) = status_of(status);
        self.log.update(self.id, |r| r.answered(word, code));
    }

    fn ended(&mut self, ending: Ending, stats: &Stats) {
        let quit = self.quit;
        self.log.update(self.id, |r| {
            r.ended_ms = Some(now_ms());
            r.ending = Some(ending.as_str());
            r.committed = stats.deleted;
            r.logged_in = stats.logged_in.is_some();
            r.flags.no_quit = !quit;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(keyword: &'static str, shown: &'a str, phase: PhaseName) -> Seen<'a> {
        Seen {
            keyword: Some(keyword),
            number: shown.split(' ').nth(1).and_then(|n| n.parse().ok()),
            shown,
            phase,
            user: None,
            pipelined: false,
            stls: false,
        }
    }

    #[test]
    fn the_log_keeps_commands_answers_and_flags() {
        let log = Arc::new(SessionLog::default());
        let watcher = DevWatcher::new(log.clone(), Arc::default());
        let tag = Tag {
            id: 7,
            peer: Some("127.0.0.1:4000".parse().unwrap()),
        };
        let mut w = watcher.watch(&tag);
        let t = PhaseName::Transaction;
        w.line(&seen("AUTH", "AUTH", PhaseName::Authorization));
        w.replied("+OK SASL mechanisms follow");
        assert!(
            !log.records()[0].logged_in,
            "a list of mechanisms is no login"
        );
        for (kw, shown, phase, answer) in [
            (
                "USER",
                "USER ann",
                PhaseName::Authorization,
                "+OK send PASS",
            ),
            (
                "PASS",
                "PASS ***",
                PhaseName::Authorization,
                "+OK 2 messages",
            ),
            ("RETR", "RETR 1", t, "+OK 10 octets"),
            ("DELE", "DELE 1", t, "+OK message 1 deleted"),
            ("DELE", "DELE 9", t, "-ERR [SYS/PERM] no message 9"),
        ] {
            let mut s = seen(kw, shown, phase);
            s.user = (kw == "USER").then_some("ann");
            assert_eq!(w.line(&s), None);
            w.replied(answer);
        }
        assert!(log.records()[0].logged_in, "PASS answered +OK");
        let stats = Stats {
            logged_in: Some(std::time::Instant::now()),
            ..Stats::default()
        };
        w.ended(Ending::Disconnected, &stats);
        let r = &log.records()[0];
        assert_eq!(r.user.as_deref(), Some("ann"));
        assert!(r.logged_in);
        assert_eq!((r.retrieved.clone(), r.deleted.clone()), (vec![1], vec![1]));
        assert_eq!(
            r.flags,
            Flags {
                deleted_without_uidl: true,
                retrieved_without_list: true,
                no_quit: true,
                pipelined: false,
            }
        );
        assert_eq!(r.commands[5].code.as_deref(), Some("SYS/PERM"));
        assert_eq!(r.ending, Some("disconnected"));
        let json = log.json();
        assert!(json.contains(r#""command":"PASS ***""#), "{json}");
        assert!(json.contains(r#""client":"127.0.0.1:4000""#), "{json}");
    }

    #[test]
    fn the_log_keeps_the_newest_sessions_and_bounded_commands() {
        let log = Arc::new(SessionLog::default());
        let watcher = DevWatcher::new(log.clone(), Arc::default());
        for id in 0..(DEV_SESSIONS_KEPT as u64 + 5) {
            let mut w = watcher.watch(&Tag { id, peer: None });
            if id == DEV_SESSIONS_KEPT as u64 + 4 {
                for _ in 0..DEV_SESSION_COMMANDS_KEPT + 3 {
                    w.line(&seen("NOOP", "NOOP", PhaseName::Transaction));
                }
            }
        }
        let records = log.records();
        assert_eq!(records.len(), DEV_SESSIONS_KEPT);
        assert_eq!(records[0].id, 5);
        let last = records.last().unwrap();
        assert_eq!(last.commands.len(), DEV_SESSION_COMMANDS_KEPT);
        assert_eq!(last.commands_omitted, 3);
    }

    #[test]
    fn status_words_and_codes() {
        assert_eq!(
            status_of("-ERR [IN-USE] busy"),
            ("-ERR", Some("IN-USE".into()))
        );
        assert_eq!(status_of("-ERR no"), ("-ERR", None));
        assert_eq!(status_of("+OK"), ("+OK", None));
        assert_eq!(status_of("+ "), ("+", None));
    }
}
