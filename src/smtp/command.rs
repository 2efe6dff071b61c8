//! SMTP command lines (RFC 5321) as the development intake takes them: a pure function from
//! one line, without its line end, to a command or a typed error.

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<path> [SIZE=n] [BODY=...] ...`: the reverse path (empty for `<>`) and the
    /// size the client declared.
    Mail {
        /// The envelope sender, empty for the null path of bounces.
        from: String,
        /// `SIZE=` (RFC 1870).
        size: Option<u64>,
    },
    /// `RCPT TO:<path>`: the address, source route dropped.
    Rcpt(String),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [text]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` or `EXPN`: answered without saying who exists.
    Vrfy,
    /// `HELP [topic]`.
    Help,
    /// `AUTH mechanism [initial-response]`: the mechanism upper-cased and whether a response
    /// came with it (its content is never kept: credentials are accepted and ignored).
    Auth {
        /// `PLAIN`, `LOGIN`, ...
        mechanism: String,
        /// Whether an initial response followed the mechanism.
        initial: bool,
    },
    /// A command this intake knows and does not offer (`STARTTLS`, `BDAT`, `ETRN`, ...).
    NotOffered(&'static str),
}

/// Why a line is not a command we take.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The verb is unknown.
    Unknown,
    /// The verb is known and its arguments are not right: what is wrong.
    Syntax(&'static str),
    /// A MAIL parameter this intake does not take (RFC 5321 555).
    Parameter(String),
}

/// The commands known and not offered, for the right reply.
const NOT_OFFERED: [&str; 5] = ["STARTTLS", "BDAT", "ETRN", "TURN", "ATRN"];

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Syntax("not UTF-8"))?;
    if line.bytes().any(|b| b.is_ascii_control()) {
        return Err(CommandError::Syntax("control characters in the command"));
    }
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, r.trim_matches(' ')),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |c: Command| {
        if rest.is_empty() {
            Ok(c)
        } else {
            Err(CommandError::Syntax("takes no argument"))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            if rest.is_empty() || rest.contains(' ') {
                return Err(CommandError::Syntax("needs one domain or address literal"));
            }
            Ok(if verb == "EHLO" {
                Command::Ehlo(rest.to_owned())
            } else {
                Command::Helo(rest.to_owned())
            })
        }
        "MAIL" => mail(rest),
        "RCPT" => {
            let path =
                prefixed(rest, "TO:").ok_or(CommandError::Syntax("use RCPT TO:<address>"))?;
            let (address, params) = angle_path(path)?;
            if address.is_empty() {
                return Err(CommandError::Syntax("the recipient is empty"));
            }
            if !params.is_empty() {
                return Err(CommandError::Parameter(params.to_owned()));
            }
            Ok(Command::Rcpt(address))
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" | "EXPN" => Ok(Command::Vrfy),
        "AUTH" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let mechanism = words
                .next()
                .ok_or(CommandError::Syntax("needs a mechanism"))?
                .to_ascii_uppercase();
            let initial = words.next().is_some();
            if words.next().is_some() {
                return Err(CommandError::Syntax("too many arguments"));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        v => match NOT_OFFERED.iter().find(|n| **n == v) {
            Some(n) => Ok(Command::NotOffered(n)),
            None => Err(CommandError::Unknown),
        },
    }
}

/// `rest` after a case-insensitive `prefix`, allowing the space some clients put after the
/// colon.
fn prefixed<'a>(rest: &'a str, prefix: &str) -> Option<&'a str> {
    let head = rest.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| rest[prefix.len()..].trim_start_matches(' '))
}

fn mail(rest: &str) -> Result<Command, CommandError> {
    let path = prefixed(rest, "FROM:").ok_or(CommandError::Syntax("use MAIL FROM:<address>"))?;
    let (from, params) = angle_path(path)?;
    let mut size = None;
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| CommandError::Syntax("SIZE= needs a number of octets"))?;
                size = Some(n);
            }
            "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
            // RFC 4954: the authenticated sender; credentials are accepted and ignored.
            "AUTH" => {}
            _ => return Err(CommandError::Parameter(param.to_owned())),
        }
    }
    Ok(Command::Mail { from, size })
}

/// `<address> params`: the address (source route `@a,@b:` dropped) and the rest.
fn angle_path(s: &str) -> Result<(String, &str), CommandError> {
    let inner = s
        .strip_prefix('<')
        .ok_or(CommandError::Syntax("the address must be in <>"))?;
    let (inner, params) = inner
        .split_once('>')
        .ok_or(CommandError::Syntax("the address must be in <>"))?;
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(CommandError::Syntax("a space must follow the address"));
    }
    let address = match inner.strip_prefix('@') {
        Some(routed) => {
            routed
                .split_once(':')
                .ok_or(CommandError::Syntax("a source route must end with ':'"))?
                .1
        }
        None => inner,
    };
    if address.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(CommandError::Syntax("the address holds a space or control"));
    }
    Ok((address.to_owned(), params.trim_matches(' ')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, CommandError> {
        parse(s.as_bytes())
    }

    #[test]
    fn verbs_are_case_insensitive_and_arguments_checked() {
        assert_eq!(
            p("ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            p("HELO [127.0.0.1]"),
            Ok(Command::Helo("[127.0.0.1]".into()))
        );
        assert_eq!(p("Data"), Ok(Command::Data));
        assert_eq!(p("NOOP anything"), Ok(Command::Noop));
        assert_eq!(p("STARTTLS"), Ok(Command::NotOffered("STARTTLS")));
        assert_eq!(p("XYZZY"), Err(CommandError::Unknown));
        assert!(matches!(p("EHLO"), Err(CommandError::Syntax(_))));
        assert!(matches!(p("DATA now"), Err(CommandError::Syntax(_))));
        assert!(matches!(p("QUIT\u{0}"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"HELO \xff"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn mail_takes_the_null_path_size_and_body() {
        assert_eq!(
            p("MAIL FROM:<>"),
            Ok(Command::Mail {
                from: String::new(),
                size: None
            })
        );
        assert_eq!(
            p("mail from: <a@b.example> SIZE=1234 BODY=8BITMIME"),
            Ok(Command::Mail {
                from: "a@b.example".into(),
                size: Some(1234)
            })
        );
        assert!(matches!(
            p("MAIL FROM:<a@b> SIZE=x"),
            Err(CommandError::Syntax(_))
        ));
        assert_eq!(
            p("MAIL FROM:<a@b> RET=HDRS"),
            Err(CommandError::Parameter("RET=HDRS".into()))
        );
        assert!(matches!(p("MAIL FROM:a@b"), Err(CommandError::Syntax(_))));
        assert!(matches!(p("MAIL TO:<a@b>"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn rcpt_drops_a_source_route_and_refuses_an_empty_address() {
        assert_eq!(
            p("RCPT TO:<bob@x.example>"),
            Ok(Command::Rcpt("bob@x.example".into()))
        );
        assert_eq!(
            p("RCPT TO:<@relay.example:bob@x>"),
            Ok(Command::Rcpt("bob@x".into()))
        );
        assert!(matches!(p("RCPT TO:<>"), Err(CommandError::Syntax(_))));
        assert!(matches!(p("RCPT TO:<a b@x>"), Err(CommandError::Syntax(_))));
        assert!(matches!(
            p("RCPT TO:<a@x>junk"),
            Err(CommandError::Syntax(_))
        ));
    }

    #[test]
    fn auth_keeps_the_mechanism_not_the_response() {
        assert_eq!(
            p("AUTH plain AGFsaWNlAHNlY3JldA=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: true
            })
        );
        assert_eq!(
            p("AUTH LOGIN"),
            Ok(Command::Auth {
                mechanism: "LOGIN".into(),
                initial: false
            })
        );
        assert!(matches!(p("AUTH"), Err(CommandError::Syntax(_))));
    }
}
