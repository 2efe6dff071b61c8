//! Log lines with structure: the typed fields an event carries beside its text, and the two
//! ways a line is written (`--log-format text|json`).
//!
//! A call site keeps writing its text line exactly as before (docs/operations.md and the
//! fail2ban filter depend on those shapes) and hands an [`Event`] along with it: the fields go
//! with the record as `log` key-values. The text format prints the text alone, as env_logger
//! always did; the JSON format prints one object per line with the time, level, target, the
//! event's fields and the text as `message`. Fields hold only what the text shows, so a JSON
//! line carries no more than its text line does: never a password or an AUTH payload.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::SocketAddr;

use crate::json::push_quoted;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `[time LEVEL module] message`, env_logger's own format.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format named `s` on the command line.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Starts logging to stderr in `format`; `POPLAR_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::new().filter_or("POPLAR_LOG", "info"));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let time = buf.timestamp_millis().to_string();
            writeln!(buf, "{}", json_line(&time, record))
        });
    }
    builder.init();
}

/// One field's value; `Missing` is what the text shows as `-` (JSON `null`).
#[derive(Debug, Clone)]
pub(crate) enum Field<'a> {
    Text(Cow<'a, str>),
    Num(u64),
    Flag(bool),
    Missing,
}

/// What happened, with its fields in the order they are written: built at the call site,
/// logged with [`emit!`](emit) beside the line's text.
#[derive(Debug, Clone)]
pub(crate) struct Event<'a> {
    name: &'static str,
    fields: Vec<(&'static str, Field<'a>)>,
}

impl<'a> Event<'a> {
    /// An event named `name` (the `event` field), with no other field yet.
    pub(crate) fn new(name: &'static str) -> Event<'a> {
        Event {
            name,
            fields: Vec::with_capacity(8),
        }
    }

    /// The session's number and client address (`-` when unknown), as in its tag.
    pub(crate) fn session(self, id: u64, peer: Option<SocketAddr>) -> Event<'a> {
        let peer = peer.map_or(Field::Missing, |p| Field::Text(p.to_string().into()));
        self.num("session", id).field("peer", peer)
    }

    /// A text field.
    pub(crate) fn text(self, key: &'static str, value: impl Into<Cow<'a, str>>) -> Event<'a> {
        self.field(key, Field::Text(value.into()))
    }

    /// A number field.
    pub(crate) fn num(self, key: &'static str, value: u64) -> Event<'a> {
        self.field(key, Field::Num(value))
    }

    /// A number field that may be missing.
    pub(crate) fn opt_num(self, key: &'static str, value: Option<u64>) -> Event<'a> {
        self.field(key, value.map_or(Field::Missing, Field::Num))
    }

    /// A yes/no field.
    pub(crate) fn flag(self, key: &'static str, value: bool) -> Event<'a> {
        self.field(key, Field::Flag(value))
    }

    /// Any field.
    pub(crate) fn field(mut self, key: &'static str, value: Field<'a>) -> Event<'a> {
        self.fields.push((key, value));
        self
    }

    /// Logs the line `text` at `level` for `target` with this event's fields; what
    /// [`emit!`](emit) expands to.
    pub(crate) fn log(&self, level: log::Level, target: &str, text: fmt::Arguments) {
        if level > log::max_level() {
            return;
        }
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(target)
                .module_path(Some(target))
                .args(text)
                .key_values(self)
                .build(),
        );
    }
}

impl log::kv::Source for Event<'_> {
    fn visit<'kvs>(
        &'kvs self,
        v: &mut dyn log::kv::VisitSource<'kvs>,
    ) -> Result<(), log::kv::Error> {
        v.visit_pair("event".into(), self.name.into())?;
        for (key, field) in &self.fields {
            let value = match field {
                Field::Text(s) => log::kv::Value::from(&**s),
                Field::Num(n) => log::kv::Value::from(*n),
                Field::Flag(b) => log::kv::Value::from(*b),
                Field::Missing => log::kv::Value::null(),
            };
            v.visit_pair((*key).into(), value)?;
        }
        Ok(())
    }
}

/// Logs a line with an [`Event`]'s fields: `emit!(log::Level::Info, event, "fmt", args...)`.
/// The text is what the line always said; the target is the calling module, as with `log`'s
/// own macros.
macro_rules! emit {
    ($level:expr, $event:expr, $($arg:tt)+) => {
        $crate::logline::Event::log(&$event, $level, module_path!(), format_args!($($arg)+))
    };
}
pub(crate) use emit;

/// The JSON object for `record` logged at `time`: `time`, `level`, `target`, the event's
/// fields (or, for a line without them that starts with a session tag `[id peer]`, `session`
/// and `peer` read from the tag), and the text as `message`.
pub fn json_line(time: &str, record: &log::Record) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"time\":");
    push_quoted(&mut out, time);
    out.push_str(",\"level\":");
    push_quoted(&mut out, &record.level().as_str().to_ascii_lowercase());
    out.push_str(",\"target\":");
    push_quoted(&mut out, record.target());
    let message = record.args().to_string();
    let mut fields = JsonFields {
        out: &mut out,
        count: 0,
    };
    let _ = record.key_values().visit(&mut fields);
    if fields.count == 0
        && let Some((id, peer)) = session_tag(&message)
    {
        let _ = write!(out, ",\"session\":{id},\"peer\":");
        match peer {
            Some(p) => push_quoted(&mut out, p),
            None => out.push_str("null"),
        }
    }
    out.push_str(",\"message\":");
    push_quoted(&mut out, &message);
    out.push('}');
    out
}

/// The session number and client address (`None` for `-`) of a line that starts with a tag.
fn session_tag(message: &str) -> Option<(u64, Option<&str>)> {
    let inner = &message.strip_prefix('[')?[..message.find("] ")? - 1];
    let (id, peer) = inner.split_once(' ')?;
    let id = id.parse().ok()?;
    Some((id, (peer != "-").then_some(peer)))
}

/// Appends each key-value as `,"key":value`.
struct JsonFields<'o> {
    out: &'o mut String,
    count: usize,
}

impl<'kvs> log::kv::VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.out.push(',');
        push_quoted(self.out, key.as_str());
        self.out.push(':');
        self.count += 1;
        value.visit(JsonValue(self.out))
    }
}

/// Writes one value as JSON: numbers and booleans as such, nothing as `null`, the rest as a
/// string.
struct JsonValue<'o>(&'o mut String);

impl<'v> log::kv::VisitValue<'v> for JsonValue<'_> {
    fn visit_any(&mut self, value: log::kv::Value) -> Result<(), log::kv::Error> {
        push_quoted(self.0, &value.to_string());
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), log::kv::Error> {
        self.0.push_str("null");
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), log::kv::Error> {
        let _ = write!(self.0, "{value}");
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), log::kv::Error> {
        let _ = write!(self.0, "{value}");
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), log::kv::Error> {
        self.0.push_str(if value { "true" } else { "false" });
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), log::kv::Error> {
        push_quoted(self.0, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_json(event: Option<&Event>, text: fmt::Arguments) -> String {
        let mut b = log::Record::builder();
        b.level(log::Level::Warn)
            .target("poplar::session")
            .args(text);
        match event {
            Some(e) => json_line("T", &b.key_values(e).build()),
            None => json_line("T", &b.build()),
        }
    }

    #[test]
    fn an_event_becomes_typed_fields_between_the_level_and_the_message() {
        let e = Event::new("login-failed")
            .session(7, Some("192.0.2.1:4000".parse().unwrap()))
            .text("user", "al\"ice")
            .num("failures", 2)
            .flag("tls", false)
            .opt_num("commit_ms", None);
        let line = record_json(
            Some(&e),
            format_args!("[7 192.0.2.1:4000] PASS login failed"),
        );
        assert_eq!(
            line,
            "{\"time\":\"T\",\"level\":\"warn\",\"target\":\"poplar::session\",\
             \"event\":\"login-failed\",\"session\":7,\"peer\":\"192.0.2.1:4000\",\
             \"user\":\"al\\\"ice\",\"failures\":2,\"tls\":false,\"commit_ms\":null,\
             \"message\":\"[7 192.0.2.1:4000] PASS login failed\"}"
        );
    }

    #[test]
    fn a_line_without_fields_gets_its_session_from_the_tag() {
        let line = record_json(None, format_args!("[12 -] mailbox busy"));
        assert!(line.contains(",\"session\":12,\"peer\":null,"), "{line}");
        let line = record_json(None, format_args!("[3 [::1]:5] x"));
        assert!(
            line.contains(",\"session\":3,\"peer\":\"[::1]:5\","),
            "{line}"
        );
        let line = record_json(None, format_args!("listening on 127.0.0.1:110"));
        assert!(!line.contains("\"session\":"), "{line}");
        let line = record_json(None, format_args!("[x] y"));
        assert!(!line.contains("\"session\":"), "{line}");
    }

    #[test]
    fn formats_parse_by_their_flag_names_only() {
        assert_eq!(LogFormat::parse("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse("JSON"), None);
    }
}
