//! The `--mail` template: from a checked user name to the path of that user's mbox file.

use std::fmt;
use std::path::PathBuf;

use super::UserName;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `%u`: the whole user name.
    User,
    /// `%n`: the part before `@`.
    Local,
    /// `%d`: the part after `@`.
    Domain,
}

/// A parsed `--mail` template such as `/var/mail/%n` or `./mail/%d/%n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTemplate {
    parts: Vec<Part>,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `%` followed by something other than `u`, `n`, `d` or `%`.
    UnknownVariable(String),
    /// The template names no user at all, so every user would share one file.
    NoUserVariable,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::UnknownVariable(v) => {
                write!(f, "unknown variable '{v}' (use %u, %n, %d or %%)")
            }
            TemplateError::NoUserVariable => {
                f.write_str("the template must contain %u or %n, or all users would share a file")
            }
        }
    }
}

impl std::error::Error for TemplateError {}

impl MailTemplate {
    /// Parses a template.
    pub fn parse(template: &str) -> Result<MailTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    text.push('%');
                    continue;
                }
                Some('u') => Part::User,
                Some('n') => Part::Local,
                Some('d') => Part::Domain,
                Some(other) => return Err(TemplateError::UnknownVariable(format!("%{other}"))),
                None => return Err(TemplateError::UnknownVariable("%".into())),
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if !parts.iter().any(|p| matches!(p, Part::User | Part::Local)) {
            return Err(TemplateError::NoUserVariable);
        }
        Ok(MailTemplate { parts })
    }

    /// The mbox path of `user`. The name was checked by [`UserName::new`], so no part it
    /// contributes can hold `/` or start with `.`.
    pub fn expand(&self, user: &UserName) -> PathBuf {
        let mut s = String::new();
        for p in &self.parts {
            s.push_str(match p {
                Part::Text(t) => t,
                Part::User => user.as_str(),
                Part::Local => user.local_part(),
                Part::Domain => user.domain(),
            });
        }
        PathBuf::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(t: &str, user: &str) -> String {
        let u = UserName::new(user.as_bytes()).unwrap();
        MailTemplate::parse(t)
            .unwrap()
            .expand(&u)
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn variables_expand() {
        assert_eq!(
            expand("/var/mail/%n", "alice@example.com"),
            "/var/mail/alice"
        );
        assert_eq!(
            expand("./mail/%d/%n", "alice@example.com"),
            "./mail/example.com/alice"
        );
        assert_eq!(expand("/m/%u", "alice@example.com"), "/m/alice@example.com");
        assert_eq!(expand("/m/100%%/%n", "bob"), "/m/100%/bob");
        assert_eq!(expand("/m/%d/%n", "bob"), "/m//bob");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert_eq!(
            MailTemplate::parse("/m/%x"),
            Err(TemplateError::UnknownVariable("%x".into()))
        );
        assert_eq!(
            MailTemplate::parse("/m/%"),
            Err(TemplateError::UnknownVariable("%".into()))
        );
        assert_eq!(
            MailTemplate::parse("/var/mail/shared"),
            Err(TemplateError::NoUserVariable)
        );
        assert_eq!(
            MailTemplate::parse("/m/%d"),
            Err(TemplateError::NoUserVariable)
        );
    }

    #[test]
    fn no_checked_name_leaves_the_template_directory() {
        for name in ["alice", "a.b", "a@b.c", "x@y@z", "a..b", "ü"] {
            let p = expand("/srv/mail/%d/%n", name);
            assert!(p.starts_with("/srv/mail/"), "{p}");
            assert!(!p.contains("/../") && !p.contains("/./"), "{p}");
            assert!(!p.ends_with('/'), "{p}");
        }
    }
}
