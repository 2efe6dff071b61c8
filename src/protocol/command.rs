//! The POP3 command parser: a pure function from one line of bytes to a `Command` or a typed error.

use std::fmt;
use std::num::NonZeroU32;

/// A message number as the client names it: 1-based, never zero, at most `u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgNum(NonZeroU32);

impl MsgNum {
    /// Builds a message number from a 1-based value; `None` for zero.
    pub fn new(n: u32) -> Option<MsgNum> {
        NonZeroU32::new(n).map(MsgNum)
    }

    /// The 1-based number.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The 0-based index into the session's message list.
    pub fn index(self) -> usize {
        // u32 always fits in usize on the platforms poplar supports (32 and 64 bit).
        (self.0.get() - 1) as usize
    }
}

impl fmt::Display for MsgNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One parsed client command. Arguments that carry secrets keep their raw bytes so that
/// nothing formats them by accident (`Debug` redacts them).
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name` (RFC 1939 §7).
    User(Vec<u8>),
    /// `PASS secret`: the rest of the line, spaces included (RFC 1939 §7).
    Pass(Vec<u8>),
    /// `APOP name digest` (RFC 1939 §7).
    Apop {
        /// The mailbox name.
        name: Vec<u8>,
        /// The client's digest, as sent.
        digest: Vec<u8>,
    },
    /// `AUTH [mechanism [initial-response]]` (RFC 5034).
    Auth {
        /// The SASL mechanism, upper-cased; `None` asks for the list.
        mechanism: Option<String>,
        /// The optional initial response, still base64.
        initial: Option<Vec<u8>>,
    },
    /// `CAPA` (RFC 2449 §5).
    Capa,
    /// `STLS` (RFC 2595 §4).
    Stls,
    /// `QUIT`.
    Quit,
    /// `STAT`.
    Stat,
    /// `LIST [n]`.
    List(Option<MsgNum>),
    /// `RETR n`.
    Retr(MsgNum),
    /// `DELE n`.
    Dele(MsgNum),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `TOP n lines`.
    Top(MsgNum, u32),
    /// `UIDL [n]`.
    Uidl(Option<MsgNum>),
}

impl Command {
    /// The keyword, upper-cased, for logs and traces.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Quit => "QUIT",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
        }
    }
}

impl fmt::Debug for Command {
    /// Renders the command as a protocol trace with every secret masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |n: &Option<MsgNum>| n.map(|n| format!(" {n}")).unwrap_or_default();
        match self {
            Command::User(name) => write!(f, "USER {}", crate::logsafe::escape(name)),
            Command::Pass(_) => f.write_str("PASS ***"),
            Command::Apop { name, .. } => write!(f, "APOP {} ***", crate::logsafe::escape(name)),
            Command::Auth { mechanism, initial } => {
                f.write_str("AUTH")?;
                if let Some(m) = mechanism {
                    write!(f, " {}", crate::logsafe::escape(m.as_bytes()))?;
                }
                if initial.is_some() {
                    f.write_str(" ***")?;
                }
                Ok(())
            }
            Command::List(n) => write!(f, "LIST{}", opt(n)),
            Command::Uidl(n) => write!(f, "UIDL{}", opt(n)),
            Command::Retr(n) => write!(f, "RETR {n}"),
            Command::Dele(n) => write!(f, "DELE {n}"),
            Command::Top(n, l) => write!(f, "TOP {n} {l}"),
            other => f.write_str(other.keyword()),
        }
    }
}

/// Why a line is not a command. Each variant is one clear `-ERR` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The line is empty.
    Empty,
    /// The line holds NUL or another control byte.
    ControlBytes,
    /// The keyword is not one poplar knows.
    Unknown,
    /// A required argument is missing.
    MissingArgument,
    /// More arguments than the command takes.
    TooManyArguments,
    /// A number argument has something other than decimal digits.
    NotANumber,
    /// A message number of zero.
    Zero,
    /// A number too large to be a message number or line count.
    NumberTooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "empty command",
            ParseError::ControlBytes => "control characters in command",
            ParseError::Unknown => "unknown command",
            ParseError::MissingArgument => "missing argument",
            ParseError::TooManyArguments => "too many arguments",
            ParseError::NotANumber => "argument is not a number",
            ParseError::Zero => "message numbers start at 1",
            ParseError::NumberTooLarge => "number out of range",
        })
    }
}

impl std::error::Error for ParseError {}

/// Parses one command line, without its line end. Keywords are case-insensitive; arguments
/// are separated by spaces (runs of spaces are tolerated); PASS takes the rest of the line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(ParseError::ControlBytes);
    }
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if keyword.is_empty() {
        return Err(if line.is_empty() {
            ParseError::Empty
        } else {
            ParseError::Unknown
        });
    }
    if keyword.len() > 4 {
        return Err(ParseError::Unknown);
    }
    let mut kw = [0u8; 4];
    for (d, s) in kw.iter_mut().zip(keyword) {
        *d = s.to_ascii_uppercase();
    }
    let args = Args::new(rest);
    match &kw[..keyword.len()] {
        b"USER" => args.one().map(|a| Command::User(a.to_vec())),
        b"PASS" => {
            // RFC 1939 §7: the password may contain spaces, so it is the whole remainder.
            if rest.is_empty() {
                Err(ParseError::MissingArgument)
            } else {
                Ok(Command::Pass(rest.to_vec()))
            }
        }
        b"APOP" => {
            let (name, digest) = args.two()?;
            Ok(Command::Apop {
                name: name.to_vec(),
                digest: digest.to_vec(),
            })
        }
        b"AUTH" => {
            let mut it = args.iter();
            let mechanism = it
                .next()
                .map(|m| String::from_utf8_lossy(m).to_ascii_uppercase());
            let initial = it.next().map(<[u8]>::to_vec);
            if it.next().is_some() {
                return Err(ParseError::TooManyArguments);
            }
            Ok(Command::Auth { mechanism, initial })
        }
        b"CAPA" => args.none().map(|()| Command::Capa),
        b"STLS" => args.none().map(|()| Command::Stls),
        b"QUIT" => args.none().map(|()| Command::Quit),
        b"STAT" => args.none().map(|()| Command::Stat),
        b"NOOP" => args.none().map(|()| Command::Noop),
        b"RSET" => args.none().map(|()| Command::Rset),
        b"LIST" => args.optional_msg().map(Command::List),
        b"UIDL" => args.optional_msg().map(Command::Uidl),
        b"RETR" => msg(args.one()?).map(Command::Retr),
        b"DELE" => msg(args.one()?).map(Command::Dele),
        b"TOP" => {
            let (n, lines) = args.two()?;
            Ok(Command::Top(msg(n)?, number(lines)?))
        }
        _ => Err(ParseError::Unknown),
    }
}

/// The space-separated arguments after the keyword.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Args(rest)
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> {
        self.0.split(|&b| b == b' ').filter(|a| !a.is_empty())
    }

    fn none(&self) -> Result<(), ParseError> {
        match self.iter().next() {
            None => Ok(()),
            Some(_) => Err(ParseError::TooManyArguments),
        }
    }

    fn one(&self) -> Result<&'a [u8], ParseError> {
        let mut it = self.iter();
        let a = it.next().ok_or(ParseError::MissingArgument)?;
        match it.next() {
            None => Ok(a),
            Some(_) => Err(ParseError::TooManyArguments),
        }
    }

    fn two(&self) -> Result<(&'a [u8], &'a [u8]), ParseError> {
        let mut it = self.iter();
        let a = it.next().ok_or(ParseError::MissingArgument)?;
        let b = it.next().ok_or(ParseError::MissingArgument)?;
        match it.next() {
            None => Ok((a, b)),
            Some(_) => Err(ParseError::TooManyArguments),
        }
    }

    fn optional_msg(&self) -> Result<Option<MsgNum>, ParseError> {
        let mut it = self.iter();
        let Some(a) = it.next() else { return Ok(None) };
        if it.next().is_some() {
            return Err(ParseError::TooManyArguments);
        }
        msg(a).map(Some)
    }
}

/// A strict decimal `u32`: digits only, no sign, no overflow (`4294967297` is not `1`).
fn number(arg: &[u8]) -> Result<u32, ParseError> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::NotANumber);
    }
    arg.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(d - b'0')))
            .ok_or(ParseError::NumberTooLarge)
    })
}

fn msg(arg: &[u8]) -> Result<MsgNum, ParseError> {
    MsgNum::new(number(arg)?).ok_or(ParseError::Zero)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u32) -> MsgNum {
        MsgNum::new(n).unwrap()
    }

    #[test]
    fn every_command_parses_in_any_case() {
        let table: Vec<(&[u8], Command)> = vec![
            (b"USER alice", Command::User(b"alice".to_vec())),
            (b"user alice", Command::User(b"alice".to_vec())),
            (b"PASS se cret ", Command::Pass(b"se cret ".to_vec())),
            (b"pAsS x", Command::Pass(b"x".to_vec())),
            (
                b"APOP bob c4c9334bac560ecc979e58001b3e22fb",
                Command::Apop {
                    name: b"bob".to_vec(),
                    digest: b"c4c9334bac560ecc979e58001b3e22fb".to_vec(),
                },
            ),
            (
                b"AUTH",
                Command::Auth {
                    mechanism: None,
                    initial: None,
                },
            ),
            (
                b"auth plain AGEAYg==",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some(b"AGEAYg==".to_vec()),
                },
            ),
            (b"CAPA", Command::Capa),
            (b"stls", Command::Stls),
            (b"Quit", Command::Quit),
            (b"STAT", Command::Stat),
            (b"NOOP", Command::Noop),
            (b"RSET", Command::Rset),
            (b"LIST", Command::List(None)),
            (b"LIST 3", Command::List(Some(m(3)))),
            (b"list  3 ", Command::List(Some(m(3)))),
            (b"UIDL", Command::Uidl(None)),
            (b"UIDL 4294967295", Command::Uidl(Some(m(u32::MAX)))),
            (b"RETR 1", Command::Retr(m(1))),
            (b"DELE 12", Command::Dele(m(12))),
            (b"TOP 1 0", Command::Top(m(1), 0)),
            (b"top 2 10", Command::Top(m(2), 10)),
        ];
        for (line, want) in table {
            assert_eq!(parse(line), Ok(want), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn malformed_lines_get_typed_errors() {
        use ParseError::*;
        let table: &[(&[u8], ParseError)] = &[
            (b"", Empty),
            (b" ", Unknown),
            (b" STAT", Unknown),
            (b"STATS", Unknown),
            (b"HELO", Unknown),
            (b"XTND XLST", Unknown),
            (b"STAT\0", ControlBytes),
            (b"USER a\tb", ControlBytes),
            (b"USER a\x1b[31m", ControlBytes),
            (b"USER", MissingArgument),
            (b"USER a b", TooManyArguments),
            (b"PASS", MissingArgument),
            (b"PASS ", MissingArgument),
            (b"APOP bob", MissingArgument),
            (b"APOP a b c", TooManyArguments),
            (b"AUTH PLAIN a b", TooManyArguments),
            (b"STAT 1", TooManyArguments),
            (b"QUIT now", TooManyArguments),
            (b"CAPA x", TooManyArguments),
            (b"NOOP 1", TooManyArguments),
            (b"RSET 1", TooManyArguments),
            (b"LIST 1 2", TooManyArguments),
            (b"LIST x", NotANumber),
            (b"LIST -1", NotANumber),
            (b"LIST +1", NotANumber),
            (b"LIST 1x", NotANumber),
            (b"LIST 0", Zero),
            (b"LIST 00", Zero),
            (b"LIST 4294967296", NumberTooLarge),
            (b"LIST 4294967297", NumberTooLarge),
            (b"RETR 99999999999999999999", NumberTooLarge),
            (b"RETR", MissingArgument),
            (b"RETR 1 2", TooManyArguments),
            (b"DELE", MissingArgument),
            (b"DELE 0", Zero),
            (b"TOP 1", MissingArgument),
            (b"TOP", MissingArgument),
            (b"TOP 1 -1", NotANumber),
            (b"TOP 0 1", Zero),
            (b"TOP 1 2 3", TooManyArguments),
            (b"TOP 1 99999999999999999999", NumberTooLarge),
            (b"UIDL 0", Zero),
        ];
        for (line, want) in table {
            assert_eq!(parse(line), Err(*want), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn non_ascii_names_are_kept_as_bytes() {
        assert_eq!(
            parse("USER jörg".as_bytes()),
            Ok(Command::User("jörg".as_bytes().to_vec()))
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let pass = format!("{:?}", parse(b"PASS hunter2").unwrap());
        assert_eq!(pass, "PASS ***");
        let apop = format!("{:?}", parse(b"APOP bob 0123abc").unwrap());
        assert!(!apop.contains("0123abc"), "{apop}");
        let auth = format!("{:?}", parse(b"AUTH PLAIN AGFsaWNlAHB3").unwrap());
        assert!(!auth.contains("AGFsaWNlAHB3"), "{auth}");
    }

    #[test]
    fn msgnum_index_is_zero_based() {
        assert_eq!(m(1).index(), 0);
        assert_eq!(m(u32::MAX).index(), u32::MAX as usize - 1);
        assert!(MsgNum::new(0).is_none());
    }
}
