//! A strict JSON parser (RFC 8259) for the few documents poplar reads: nesting bounded,
//! duplicate keys and trailing bytes refused, numbers kept as written so that a 64-bit
//! integer stays exact.

use std::fmt;

/// The deepest nesting of arrays and objects accepted.
const MAX_DEPTH: usize = 32;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written (valid JSON number syntax).
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object's members in document order; no name twice.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The number as an unsigned integer, if it is one written without fraction or exponent
    /// and fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) if n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok(),
            _ => None,
        }
    }

    /// The number as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// The string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The byte offset where parsing stopped.
    pub offset: usize,
    /// What was wrong there.
    pub why: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.why)
    }
}

impl std::error::Error for Error {}

/// A string as a JSON string literal: see [`push_quoted`].
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// Appends `s` as a JSON string literal (RFC 8259 §7): quotes, backslashes, control
/// characters and DEL escaped, and U+2028/U+2029, which some JavaScript parsers take for line
/// ends; everything else as is. The one escaper for the API, the sessions log and JSON logs.
pub fn push_quoted(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses a whole document: one value, with only whitespace around it.
pub fn parse(text: &str) -> Result<Value, Error> {
    let mut p = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    p.space();
    let v = p.value(0)?;
    p.space();
    if p.at < p.bytes.len() {
        return Err(p.error("unexpected data after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, why: &'static str) -> Error {
        Error {
            offset: self.at,
            why,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &'static str, v: Value) -> Result<Value, Error> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(v)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[' | b'{') if depth >= MAX_DEPTH => Err(self.error("nested too deeply")),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let first = self.peek();
        match self.digits() {
            0 => return Err(self.error("a number needs digits")),
            n if n > 1 && first == Some(b'0') => {
                return Err(self.error("a number has a leading zero"));
            }
            _ => {}
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.error("a fraction needs digits"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("an exponent needs digits"));
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at])
            .map_err(|_| self.error("invalid number"))?;
        Ok(Value::Number(text.to_owned()))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("a \\u escape needs four hex digits"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("bad \\u escape"))?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("a \\u escape needs four hex digits"));
        }
        let n = u32::from_str_radix(text, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.at += 4;
        Ok(n)
    }

    /// The code point of a `\u` escape (after the `u`), joining a surrogate pair.
    fn unicode(&mut self) -> Result<char, Error> {
        let high = self.hex4()?;
        let code = match high {
            0xD800..=0xDBFF => {
                if !self.bytes[self.at..].starts_with(b"\\u") {
                    return Err(self.error("a lone surrogate"));
                }
                self.at += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.error("a lone surrogate"));
                }
                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("a lone surrogate")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error("bad \\u escape"))
    }

    fn string(&mut self) -> Result<String, Error> {
        self.at += 1;
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control byte at once.
            let start = self.at;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.at += 1;
            }
            // The text came from a &str and the run stops only at ASCII bytes: valid UTF-8.
            out.push_str(
                std::str::from_utf8(&self.bytes[start..self.at])
                    .map_err(|_| self.error("invalid UTF-8"))?,
            );
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.at += 1;
                    let c = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode()?,
                        _ => {
                            self.at -= 1;
                            return Err(self.error("unknown escape"));
                        }
                    };
                    out.push(c);
                }
                Some(_) => return Err(self.error("a control character in a string")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, Error> {
        self.at += 1;
        let mut items = Vec::new();
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.space();
            items.push(self.value(depth)?);
            self.space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Error> {
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.space();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name"));
            }
            let name_at = self.at;
            let name = self.string()?;
            if members.iter().any(|(n, _)| *n == name) {
                self.at = name_at;
                return Err(self.error("a member name given twice"));
            }
            self.space();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.at += 1;
            self.space();
            let v = self.value(depth)?;
            members.push((name, v));
            self.space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_escape_quotes_controls_and_line_separators() {
        assert_eq!(
            super::quote("a\"b\\c\n\u{1}\u{2028}é"),
            "\"a\\\"b\\\\c\\n\\u0001\\u2028é\""
        );
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters() {
        let mut s = String::new();
        super::push_quoted(&mut s, "a\"b\\c\nd\u{1}e\u{7f}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001e\\u007fé\"");
    }
    use super::*;

    fn ok(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn why(text: &str) -> &'static str {
        parse(text).expect_err(text).why
    }

    #[test]
    fn values_parse_as_written() {
        assert_eq!(
            ok(r#" {"a": [1, -2.5e3, true, null], "b": "x\"\\\/\n\u00e9\ud83d\ude00"} "#),
            Value::Object(vec![
                (
                    "a".into(),
                    Value::Array(vec![
                        Value::Number("1".into()),
                        Value::Number("-2.5e3".into()),
                        Value::Bool(true),
                        Value::Null,
                    ])
                ),
                ("b".into(), Value::String("x\"\\/\né😀".into())),
            ])
        );
        assert_eq!(ok("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(ok("18446744073709551616").as_u64(), None);
        assert_eq!(ok("1.0").as_u64(), None);
        assert_eq!(ok("0.25").as_f64(), Some(0.25));
        assert_eq!(ok("[]"), Value::Array(vec![]));
        assert_eq!(ok("\"é\""), Value::String("é".into()));
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "unexpected end"),
            ("[1,]", "unexpected character"),
            ("{\"a\":1,}", "expected a member name"),
            ("{\"a\":1 \"b\":2}", "expected ',' or '}'"),
            ("{\"a\":1,\"a\":2}", "a member name given twice"),
            ("01", "a number has a leading zero"),
            ("1.", "a fraction needs digits"),
            ("-", "a number needs digits"),
            ("1e", "an exponent needs digits"),
            ("\"a", "unterminated string"),
            ("\"a\tb\"", "a control character in a string"),
            ("\"\\x\"", "unknown escape"),
            ("\"\\ud800\"", "a lone surrogate"),
            ("\"\\udc00\"", "a lone surrogate"),
            ("\"\\u12\"", "a \\u escape needs four hex digits"),
            ("nul", "unknown literal"),
            ("{} {}", "unexpected data after the value"),
            ("'a'", "unexpected character"),
            ("{1:2}", "expected a member name"),
        ] {
            assert_eq!(why(text), reason, "{text}");
        }
    }

    #[test]
    fn quoted_strings_parse_back() {
        let s = "a\"b\\c\n\u{1}\u{2028}é";
        assert_eq!(quote(s), "\"a\\\"b\\\\c\\n\\u0001\\u2028é\"");
        assert_eq!(parse(&quote(s)), Ok(Value::String(s.into())));
    }

    #[test]
    fn any_one_byte_changed_parses_or_fails_without_panicking() {
        let doc = r#"{"a": [1, -2.5e+3, true, null, {}], "b": "x\u00e9\ud83d\ude00\n"}"#;
        let mut parsed = 0;
        for at in 0..doc.len() {
            for b in b"{}[],:\"\\0123456789-+.eEunlrtf \x7f" {
                let mut bytes = doc.as_bytes().to_vec();
                bytes[at] = *b;
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    parsed += usize::from(parse(text).is_ok());
                }
            }
        }
        // Some changes keep it JSON (a digit for a digit), most do not; none panics.
        assert!(parsed > 0);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&deep).is_ok());
        let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(why(&deeper), "nested too deeply");
        assert_eq!(why(&"[".repeat(100_000)), "nested too deeply");
    }

    #[test]
    fn every_prefix_of_a_document_fails_cleanly() {
        let doc = r#"{"seed": 7, "rules": [{"command": "RETR", "p": 0.5, "t": "a\u00e9\n"}]}"#;
        assert!(parse(doc).is_ok());
        for end in 0..doc.len() {
            if doc.is_char_boundary(end) {
                assert!(parse(&doc[..end]).is_err(), "{}", &doc[..end]);
            }
        }
    }
}
