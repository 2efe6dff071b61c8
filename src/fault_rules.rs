//! The development server's fault rules (`--dev-faults FILE`, `PUT /api/v1/faults`): the JSON
//! document parsed and checked into plain data. What a rule does to a session is
//! `run/faults.rs`; docs/dev.md describes the document.

use std::fmt::Write as _;
use std::time::Duration;

use crate::json::{self, Value};
use crate::limits::{MAX_FAULT_DELAY, MAX_FAULT_RULES};
use crate::protocol::wire::RespCode;

/// The POP3 keywords a rule may name.
const KEYWORDS: [&str; 15] = [
    "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP",
    "RSET", "TOP", "UIDL",
];

/// The commands whose successful answer is multi-line (LIST and UIDL without an argument).
const MULTI_LINE: [&str; 5] = ["RETR", "TOP", "LIST", "UIDL", "CAPA"];

/// The longest `-ERR` text a rule may give: the status line stays far under 512 octets.
const MAX_ERR_TEXT: usize = 200;

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any command line (never the greeting).
    Any,
    /// The greeting.
    Greeting,
    /// USER, PASS, APOP and AUTH.
    Login,
    /// One command, by its keyword (upper case).
    Command(&'static str),
}

impl Target {
    /// The name as the document writes it; `None` for any.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            Target::Any => None,
            Target::Greeting => Some("greeting"),
            Target::Login => Some("login"),
            Target::Command(k) => Some(k),
        }
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close the connection instead of answering (the command has run).
    Drop,
    /// Send the status line and this many octets of the answer after it, then close.
    DropAfter(u64),
    /// Send a multi-line answer without its final `.` line, then close.
    NoTerminator,
    /// Answer `-ERR [code] text` instead of running the command.
    Err {
        /// The response code, if any.
        code: Option<RespCode>,
        /// The text after it.
        text: String,
    },
    /// Wait this long before the answer.
    Delay(Duration),
    /// Send the answer an octet at a time, waiting this long before each.
    Trickle(Duration),
    /// QUIT in TRANSACTION answers `-ERR [SYS/TEMP]` and deletes nothing.
    FailCommit,
    /// The UIDLs of the answer are mixed with a salt of the session's own.
    ChangeUidls,
    /// STLS answers `+OK`, then octets that are not a TLS record instead of the handshake.
    FailHandshake,
}

impl Action {
    /// The action's name in the document.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::DropAfter(_) => "drop_after",
            Action::NoTerminator => "no_terminator",
            Action::Err { .. } => "err",
            Action::Delay(_) => "delay",
            Action::Trickle(_) => "trickle",
            Action::FailCommit => "fail_commit",
            Action::ChangeUidls => "change_uidls",
            Action::FailHandshake => "fail_handshake",
        }
    }
}

/// A probability in `0..=1`.
#[derive(Debug, Clone, Copy)]
pub struct Probability(f64);

impl Probability {
    /// Always.
    pub const ALWAYS: Probability = Probability(1.0);

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Probability {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Probability {}

/// One rule: whom and what it matches, how often it fires, and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The user it matches (as the client named them); `None`: anyone, or no one yet.
    pub user: Option<String>,
    /// The line it matches.
    pub target: Target,
    /// The chance that it fires when it matches.
    pub probability: Probability,
    /// The most times it fires; `None`: no limit.
    pub count: Option<u64>,
    /// What it does.
    pub action: Action,
}

/// The whole document: the seed of the draws, and the rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultRules {
    /// Seeds the generator that decides the rules with a probability below 1.
    pub seed: u64,
    /// The rules; the first that matches and fires is the one that acts.
    pub rules: Vec<Rule>,
}

/// Parses and checks a document; the error says what is wrong and where.
pub fn parse(text: &[u8]) -> Result<FaultRules, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the document is not UTF-8".to_owned())?;
    let doc = json::parse(text).map_err(|e| e.to_string())?;
    let Value::Object(members) = doc else {
        return Err(format!("the document is {}, not an object", doc.kind()));
    };
    let mut out = FaultRules::default();
    for (name, v) in &members {
        match name.as_str() {
            "seed" => {
                out.seed = v
                    .as_u64()
                    .ok_or("\"seed\" must be a whole number from 0 to 2^64-1")?;
            }
            "rules" => {
                let Value::Array(items) = v else {
                    return Err("\"rules\" must be an array".into());
                };
                if items.len() > MAX_FAULT_RULES {
                    return Err(format!("at most {MAX_FAULT_RULES} rules"));
                }
                for (i, item) in items.iter().enumerate() {
                    out.rules
                        .push(rule(item).map_err(|e| format!("rule {i}: {e}"))?);
                }
            }
            other => return Err(format!("unknown field \"{}\"", printable(other))),
        }
    }
    Ok(out)
}

/// A name from the document, made safe to show in an error.
fn printable(s: &str) -> String {
    s.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Parses one rule.
fn rule(v: &Value) -> Result<Rule, String> {
    let Value::Object(members) = v else {
        return Err(format!("a rule is an object, not {}", v.kind()));
    };
    let field = |name: &str| members.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    for (name, _) in members {
        if !matches!(
            name.as_str(),
            "user"
                | "command"
                | "probability"
                | "count"
                | "action"
                | "bytes"
                | "ms"
                | "code"
                | "text"
                | "fired"
        ) {
            return Err(format!("unknown field \"{}\"", printable(name)));
        }
    }
    let user = match field("user") {
        None => None,
        Some(v) => Some(user(v)?),
    };
    let target = match field("command") {
        None => Target::Any,
        Some(v) => target(v)?,
    };
    let probability = match field("probability") {
        None => Probability::ALWAYS,
        Some(v) => match v.as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Probability(p),
            _ => return Err("\"probability\" must be a number from 0 to 1".into()),
        },
    };
    let count = match field("count") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or("\"count\" must be a whole number")?),
    };
    if field("fired").is_some_and(|v| v.as_u64().is_none()) {
        return Err("\"fired\" must be a whole number (it is ignored)".into());
    }
    let name = field("action")
        .ok_or("\"action\" is missing")?
        .as_str()
        .ok_or("\"action\" must be a string")?;
    let action = action(name, &field)?;
    check_fit(&user, &target, &action)?;
    Ok(Rule {
        user,
        target,
        probability,
        count,
        action,
    })
}

fn user(v: &Value) -> Result<String, String> {
    match v.as_str() {
        Some(u) if !u.is_empty() && u.len() <= 255 && !u.chars().any(char::is_control) => {
            Ok(u.to_owned())
        }
        _ => Err("\"user\" must be a user name (1 to 255 octets, no control characters)".into()),
    }
}

fn target(v: &Value) -> Result<Target, String> {
    let name = v.as_str().ok_or("\"command\" must be a string")?;
    if name.eq_ignore_ascii_case("greeting") {
        return Ok(Target::Greeting);
    }
    if name.eq_ignore_ascii_case("login") {
        return Ok(Target::Login);
    }
    KEYWORDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(|k| Target::Command(k))
        .ok_or_else(|| {
            format!(
                "unknown command \"{}\" (a POP3 keyword, \"greeting\" or \"login\")",
                printable(name)
            )
        })
}

/// The action `name` with its parameters; a parameter it does not take is an error.
fn action<'v>(name: &str, field: &dyn Fn(&str) -> Option<&'v Value>) -> Result<Action, String> {
    let takes: &[&str] = match name {
        "drop_after" => &["bytes"],
        "err" => &["code", "text"],
        "delay" | "trickle" => &["ms"],
        _ => &[],
    };
    for p in ["bytes", "ms", "code", "text"] {
        if field(p).is_some() && !takes.contains(&p) {
            return Err(format!("\"{name}\" takes no \"{p}\""));
        }
    }
    let ms = || -> Result<Duration, String> {
        let ms = field("ms")
            .ok_or(format!("\"{name}\" needs \"ms\""))?
            .as_u64()
            .ok_or("\"ms\" must be a whole number of milliseconds")?;
        let d = Duration::from_millis(ms);
        if d > MAX_FAULT_DELAY {
            return Err(format!(
                "\"ms\" must be at most {}",
                MAX_FAULT_DELAY.as_millis()
            ));
        }
        Ok(d)
    };
    Ok(match name {
        "drop" => Action::Drop,
        "drop_after" => Action::DropAfter(
            field("bytes")
                .ok_or("\"drop_after\" needs \"bytes\"")?
                .as_u64()
                .ok_or("\"bytes\" must be a whole number")?,
        ),
        "no_terminator" => Action::NoTerminator,
        "err" => {
            let code = match field("code") {
                None => None,
                Some(v) => {
                    let c = v.as_str().ok_or("\"code\" must be a string")?;
                    Some(
                        RespCode::ALL
                            .into_iter()
                            .find(|r| r.as_str() == c)
                            .ok_or_else(|| {
                                format!(
                                    "unknown response code \"{}\" (SYS/TEMP, SYS/PERM, IN-USE, \
                                     LOGIN-DELAY or AUTH)",
                                    printable(c)
                                )
                            })?,
                    )
                }
            };
            let text = match field("text") {
                None => "fault injected".to_owned(),
                Some(v) => match v.as_str() {
                    Some(t)
                        if !t.is_empty()
                            && t.len() <= MAX_ERR_TEXT
                            && !t.chars().any(char::is_control) =>
                    {
                        t.to_owned()
                    }
                    _ => {
                        return Err(format!(
                            "\"text\" must be 1 to {MAX_ERR_TEXT} octets without control \
                             characters"
                        ));
                    }
                },
            };
            Action::Err { code, text }
        }
        "delay" => Action::Delay(ms()?),
        "trickle" => Action::Trickle(ms()?),
        "fail_commit" => Action::FailCommit,
        "change_uidls" => Action::ChangeUidls,
        "fail_handshake" => Action::FailHandshake,
        other => {
            return Err(format!(
                "unknown action \"{}\" (drop, drop_after, no_terminator, err, delay, trickle, \
                 fail_commit, change_uidls or fail_handshake)",
                printable(other)
            ));
        }
    })
}

/// Refuses a rule that could never fire as written.
fn check_fit(user: &Option<String>, target: &Target, action: &Action) -> Result<(), String> {
    let name = action.name();
    let fits = match (target, action) {
        (Target::Greeting, Action::Drop | Action::Delay(_) | Action::Trickle(_)) => true,
        (Target::Greeting, _) => false,
        (_, Action::DropAfter(_) | Action::NoTerminator) => match target {
            Target::Any => true,
            Target::Command(k) => MULTI_LINE.contains(k),
            _ => false,
        },
        (_, Action::FailCommit) => *target == Target::Command("QUIT"),
        (_, Action::ChangeUidls) => *target == Target::Command("UIDL"),
        (_, Action::FailHandshake) => *target == Target::Command("STLS"),
        _ => true,
    };
    if !fits {
        let what = target.name().unwrap_or("any command");
        return Err(format!(
            "\"{name}\" cannot apply to {what} (see docs/dev.md, Fault injection)"
        ));
    }
    if user.is_some() && *target == Target::Greeting {
        return Err("a greeting rule cannot name a user: no one has logged in yet".into());
    }
    Ok(())
}

impl FaultRules {
    /// The document as `GET /api/v1/faults` answers it: each rule as written (defaults left
    /// out) with `fired`, how often it fired.
    pub fn json(&self, fired: &[u64]) -> String {
        let mut out = format!("{{\"seed\":{},\"rules\":[", self.seed);
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            if let Some(u) = &r.user {
                let _ = write!(out, "\"user\":{},", json::quote(u));
            }
            if let Some(t) = r.target.name() {
                let _ = write!(out, "\"command\":\"{t}\",");
            }
            let _ = write!(out, "\"probability\":{},", r.probability.get());
            if let Some(c) = r.count {
                let _ = write!(out, "\"count\":{c},");
            }
            let _ = write!(out, "\"action\":\"{}\"", r.action.name());
            match &r.action {
                Action::DropAfter(n) => {
                    let _ = write!(out, ",\"bytes\":{n}");
                }
                Action::Delay(d) | Action::Trickle(d) => {
                    let _ = write!(out, ",\"ms\":{}", d.as_millis());
                }
                Action::Err { code, text } => {
                    if let Some(c) = code {
                        let _ = write!(out, ",\"code\":\"{}\"", c.as_str());
                    }
                    let _ = write!(out, ",\"text\":{}", json::quote(text));
                }
                _ => {}
            }
            let _ = write!(out, ",\"fired\":{}}}", fired.get(i).copied().unwrap_or(0));
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(doc: &str) -> String {
        parse(doc.as_bytes()).expect_err(doc)
    }

    #[test]
    fn a_document_parses_into_rules() {
        let doc = r#"{"seed": 18446744073709551615, "rules": [
            {"user": "ann", "command": "retr", "probability": 0.5, "count": 2,
             "action": "drop_after", "bytes": 100},
            {"command": "DELE", "action": "err", "code": "SYS/TEMP", "text": "later"},
            {"command": "greeting", "action": "delay", "ms": 1500},
            {"command": "login", "action": "err"},
            {"action": "trickle", "ms": 1},
            {"command": "QUIT", "action": "fail_commit"},
            {"command": "UIDL", "action": "change_uidls", "fired": 3},
            {"command": "stls", "action": "fail_handshake"}
        ]}"#;
        let rules = parse(doc.as_bytes()).unwrap();
        assert_eq!(rules.seed, u64::MAX);
        assert_eq!(
            rules.rules[0],
            Rule {
                user: Some("ann".into()),
                target: Target::Command("RETR"),
                probability: Probability(0.5),
                count: Some(2),
                action: Action::DropAfter(100),
            }
        );
        assert_eq!(
            rules.rules[1].action,
            Action::Err {
                code: Some(RespCode::SysTemp),
                text: "later".into()
            }
        );
        assert_eq!(
            rules.rules[2].action,
            Action::Delay(Duration::from_millis(1500))
        );
        assert_eq!(rules.rules[3].target, Target::Login);
        assert_eq!(rules.rules[4].target, Target::Any);
        assert_eq!(rules.rules[4].probability, Probability::ALWAYS);
        assert_eq!(
            (&rules.rules[7].target, &rules.rules[7].action),
            (&Target::Command("STLS"), &Action::FailHandshake)
        );
        // What GET answers parses back to the same rules.
        let again = parse(rules.json(&[1, 2]).as_bytes()).unwrap();
        assert_eq!(again, rules);
        assert!(
            rules
                .json(&[1, 2])
                .contains(r#""action":"drop_after","bytes":100,"fired":1}"#)
        );
        assert_eq!(parse(b"{}").unwrap(), FaultRules::default());
    }

    #[test]
    fn bad_documents_say_what_is_wrong() {
        for (doc, why) in [
            ("[]", "the document is an array, not an object"),
            (r#"{"seed": -1}"#, "\"seed\" must be a whole number"),
            (r#"{"rule": []}"#, "unknown field \"rule\""),
            (
                r#"{"rules": [{"action": "explode"}]}"#,
                "rule 0: unknown action \"explode\"",
            ),
            (
                r#"{"rules": [{"command": "FETCH", "action": "drop"}]}"#,
                "unknown command",
            ),
            (
                r#"{"rules": [{"action": "drop", "colour": 1}]}"#,
                "unknown field \"colour\"",
            ),
            (
                r#"{"rules": [{"action": "err", "code": "BUSY"}]}"#,
                "unknown response code",
            ),
            (
                r#"{"rules": [{"action": "drop", "ms": 3}]}"#,
                "\"drop\" takes no \"ms\"",
            ),
            (
                r#"{"rules": [{"action": "delay"}]}"#,
                "\"delay\" needs \"ms\"",
            ),
            (
                r#"{"rules": [{"action": "delay", "ms": 999999999}]}"#,
                "at most",
            ),
            (
                r#"{"rules": [{"action": "drop", "probability": 2}]}"#,
                "from 0 to 1",
            ),
            (
                r#"{"rules": [{"action": "drop", "count": 1.5}]}"#,
                "\"count\" must be",
            ),
            (
                r#"{"rules": [{"command": "DELE", "action": "fail_commit"}]}"#,
                "cannot apply",
            ),
            (
                r#"{"rules": [{"command": "DELE", "action": "no_terminator"}]}"#,
                "cannot apply",
            ),
            (
                r#"{"rules": [{"command": "greeting", "action": "err"}]}"#,
                "cannot apply",
            ),
            (r#"{"rules": [{"action": "change_uidls"}]}"#, "cannot apply"),
            (
                r#"{"rules": [{"command": "QUIT", "action": "fail_handshake"}]}"#,
                "\"fail_handshake\" cannot apply to QUIT",
            ),
            (
                r#"{"rules": [{"action": "fail_handshake"}]}"#,
                "\"fail_handshake\" cannot apply to any command",
            ),
            (
                r#"{"rules": [{"command": "greeting", "action": "fail_handshake"}]}"#,
                "cannot apply to greeting",
            ),
            (
                r#"{"rules": [{"command": "STLS", "action": "fail_handshake", "ms": 5}]}"#,
                "\"fail_handshake\" takes no \"ms\"",
            ),
            (
                r#"{"rules": [{"user": "a", "command": "greeting", "action": "drop"}]}"#,
                "cannot name a user",
            ),
            (
                r#"{"rules": [{"action": "err", "text": "a\r\nb"}]}"#,
                "\"text\" must be",
            ),
            (r#"{"rules": [{}]}"#, "\"action\" is missing"),
            ("{\"rules\": [", "invalid JSON at byte 11"),
        ] {
            let got = err(doc);
            assert!(got.contains(why), "{doc}: {got}");
        }
        assert!(parse(b"\xff").is_err());
    }
}
