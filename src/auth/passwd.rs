//! Dovecot-style passwd-files: `name:{SCHEME}secret[:uid:gid:gecos:home:shell:extra]`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::{Secret, Users};
use crate::mailbox::UserName;

/// A line that is skipped: it cannot be used, or it names a user an earlier line named (the
/// first line wins). Everyone else's lines are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}; this line is skipped",
            self.line, self.reason
        )
    }
}

/// Reads a passwd-file. An unreadable file is an error; unusable lines are returned beside
/// the users that could be loaded.
pub fn load(path: &Path) -> std::io::Result<(Users, Vec<LineProblem>)> {
    let bytes = std::fs::read(path)?;
    Ok(parse(&bytes))
}

/// Parses passwd-file text: `#` comments and blank lines are skipped.
pub fn parse(text: &[u8]) -> (Users, Vec<LineProblem>) {
    let mut entries: Vec<(UserName, Secret)> = Vec::new();
    // A set beside the list: a linear search per line made loading quadratic (2 s for
    // 20 000 users), paid by every `--inetd` connection and every SIGHUP.
    let mut seen: HashMap<UserName, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) || line.first() == Some(&b'#') {
            continue;
        }
        match parse_line(line) {
            Ok(entry) => match seen.get(&entry.0) {
                Some(first) => problems.push(LineProblem {
                    line: i + 1,
                    reason: format!(
                        "user {} is already on line {first}, which is the one used",
                        entry.0
                    ),
                }),
                None => {
                    seen.insert(entry.0.clone(), i + 1);
                    entries.push(entry);
                }
            },
            Err(reason) => problems.push(LineProblem {
                line: i + 1,
                reason,
            }),
        }
    }
    (Users::new(entries), problems)
}

fn parse_line(line: &[u8]) -> Result<(UserName, Secret), String> {
    let mut fields = line.splitn(3, |&b| b == b':');
    let name = fields.next().unwrap_or_default();
    let secret = fields
        .next()
        .ok_or_else(|| "no ':' after the user name".to_owned())?;
    let user = UserName::new(name).map_err(|e| e.to_string())?;
    let secret = Secret::parse(secret)?;
    Ok((user, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Gate;

    fn check(users: &Users, name: &[u8], pass: &[u8]) -> bool {
        users
            .verify_password(name, pass, &Gate::new(1))
            .unwrap()
            .is_some()
    }

    #[test]
    fn dovecot_lines_load_and_bad_lines_are_reported_by_number() {
        let text = b"# users\n\
            alice:{PLAIN}wonder:1000:1000::/home/alice::\n\
            \n\
            bob:{plain}pass with spaces\r\n\
            carol\n\
            dave:{SHA1}abc\n\
            ../evil:{PLAIN}x\n\
            erin:nobrace\n\
            alice:{PLAIN}second\n";
        let (users, problems) = parse(text);
        assert_eq!(users.len(), 2);
        assert!(check(&users, b"alice", b"wonder"));
        assert!(!check(&users, b"alice", b"second"));
        assert!(check(&users, b"bob", b"pass with spaces"));
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![5, 6, 7, 8, 9]);
        assert!(problems[1].reason.contains("SHA1"), "{}", problems[1]);
        assert_eq!(
            problems[4].to_string(),
            "line 9: user alice is already on line 2, which is the one used; this line is skipped"
        );
    }

    #[test]
    fn empty_plain_password_is_allowed_but_only_matches_empty() {
        let (users, problems) = parse(b"x:{PLAIN}\n");
        assert!(problems.is_empty());
        assert!(check(&users, b"x", b""));
        assert!(!check(&users, b"x", b"a"));
    }
}
