//! One [`LogRecord`] as one line of JSON: what the file logger writes and the reader parses back.
//! Pure: no clock, no file.
//!
//! The line's keys, always all present and in this order:
//!
//! ```text
//! {"at_us":1764752342123456,"time":"2025-12-03T08:59:02.123456Z","level":"ERROR",
//!  "target":"nexus_agent::reconcile","source":"agent-host-a",
//!  "request_id":"0000000000000000000000000000abcd","workspace":"api",
//!  "message":"no such image","fields":{"code":"IMAGE_NOT_FOUND","attempts":"1"},
//!  "span":null}
//! ```
//!
//! `time` is `at_us` for people (RFC 3339, UTC); readers use `at_us`. `request_id`, `workspace`
//! and `span` are `null` when absent; `span` is `{"name","duration_us","outcome"}` for a hop that
//! ended. Field values are text, in the order they were written.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::debug::{LogLevel, LogRecord, SpanRecord};
use crate::id::{RequestId, WorkspaceName};

/// The longest line written or read, newline included. A longer line on disk is skipped.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// A message longer than this is cut (at a character boundary, with `…`).
const MAX_MESSAGE_BYTES: usize = 16 << 10;
/// A field's value longer than this is cut.
const MAX_VALUE_BYTES: usize = 2 << 10;
/// A field's name longer than this is cut.
const MAX_NAME_BYTES: usize = 128;
/// Fields after this many are left out.
const MAX_FIELDS: usize = 16;
/// What a message is cut to when the line is still too long (JSON escapes can grow text six
/// times): the fields go too.
const LAST_RESORT_MESSAGE_BYTES: usize = 4 << 10;

/// `level` as written (`ERROR`), read back in any case.
pub fn parse_level(text: &str) -> Option<LogLevel> {
    [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ]
    .into_iter()
    .find(|level| level.as_str().eq_ignore_ascii_case(text))
}

/// The record as one JSON line, ending in `\n`, at most [`MAX_LINE_BYTES`] long: long text is
/// cut, and if escaping still makes it too long, the fields are left out.
pub fn to_line(record: &LogRecord) -> String {
    let line = encode(record, MAX_MESSAGE_BYTES, MAX_FIELDS);
    if line.len() <= MAX_LINE_BYTES {
        return line;
    }
    encode(record, LAST_RESORT_MESSAGE_BYTES, 0)
}

/// The record a line holds, or `None` if it is not one (a torn write, another program's line).
pub fn from_line(line: &str) -> Option<LogRecord> {
    let line: LineIn = serde_json::from_str(line.trim_end()).ok()?;
    Some(LogRecord {
        at_us: line.at_us,
        level: parse_level(&line.level)?,
        target: line.target,
        source: line.source,
        request_id: line.request_id.and_then(|id| id.parse::<RequestId>().ok()),
        workspace: line
            .workspace
            .and_then(|name| WorkspaceName::new(name).ok()),
        message: line.message,
        fields: line.fields.0,
        span: line.span.map(|span| SpanRecord {
            name: span.name,
            duration_us: span.duration_us,
            outcome: span.outcome,
        }),
    })
}

/// Microseconds since the epoch as RFC 3339 in UTC with six digits of fraction, e.g.
/// `2025-12-03T08:59:02.123456Z` (so that the text sorts as the time does).
pub fn rfc3339_us(at_us: u64) -> String {
    let nanos = i128::from(at_us) * 1_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.microsecond()
        ),
        Err(_) => at_us.to_string(),
    }
}

/// `text`, cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

fn encode(record: &LogRecord, max_message: usize, max_fields: usize) -> String {
    let fields: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> = record
        .fields
        .iter()
        .take(max_fields)
        .map(|(name, value)| (cut(name, MAX_NAME_BYTES), cut(value, MAX_VALUE_BYTES)))
        .collect();
    let line = LineOut {
        at_us: record.at_us,
        time: rfc3339_us(record.at_us),
        level: record.level.as_str(),
        target: cut(&record.target, MAX_NAME_BYTES),
        source: cut(&record.source, MAX_NAME_BYTES),
        request_id: record.request_id.map(|id| id.to_string()),
        workspace: record.workspace.as_ref().map(WorkspaceName::as_str),
        message: cut(&record.message, max_message),
        fields: OrderedOut(&fields),
        span: record.span.as_ref().map(|span| SpanOut {
            name: cut(&span.name, MAX_NAME_BYTES),
            duration_us: span.duration_us,
            outcome: span
                .outcome
                .as_deref()
                .map(|outcome| cut(outcome, MAX_VALUE_BYTES)),
        }),
    };
    // Serializing strings and numbers into a String cannot fail.
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

#[derive(Serialize)]
struct LineOut<'a> {
    at_us: u64,
    time: String,
    level: &'a str,
    target: std::borrow::Cow<'a, str>,
    source: std::borrow::Cow<'a, str>,
    request_id: Option<String>,
    workspace: Option<&'a str>,
    message: std::borrow::Cow<'a, str>,
    fields: OrderedOut<'a>,
    span: Option<SpanOut<'a>>,
}

#[derive(Serialize)]
struct SpanOut<'a> {
    name: std::borrow::Cow<'a, str>,
    duration_us: u64,
    outcome: Option<std::borrow::Cow<'a, str>>,
}

/// Fields as a JSON object, in the order written.
struct OrderedOut<'a>(&'a [(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)]);

impl Serialize for OrderedOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[derive(Deserialize)]
struct LineIn {
    at_us: u64,
    level: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    workspace: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    fields: OrderedIn,
    #[serde(default)]
    span: Option<SpanIn>,
}

#[derive(Deserialize)]
struct SpanIn {
    name: String,
    duration_us: u64,
    #[serde(default)]
    outcome: Option<String>,
}

/// Fields read back in the order of the line; a value that is not text is kept as its JSON.
#[derive(Default)]
struct OrderedIn(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OrderedIn, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = OrderedIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of fields")
            }
            fn visit_unit<E>(self) -> Result<OrderedIn, E> {
                Ok(OrderedIn::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedIn, A::Error> {
                let mut fields = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if fields.len() >= MAX_FIELDS {
                        continue;
                    }
                    let value = match value {
                        serde_json::Value::String(text) => text,
                        other => other.to_string(),
                    };
                    fields.push((name, value));
                }
                Ok(OrderedIn(fields))
            }
        }
        deserializer.deserialize_any(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LogRecord {
        LogRecord {
            at_us: 1_764_752_342_123_456,
            level: LogLevel::Error,
            target: "nexus_agent::reconcile".into(),
            source: "agent-host-a".into(),
            request_id: Some(RequestId::from_u128(0xabcd)),
            workspace: Some(WorkspaceName::new("api").unwrap()),
            message: "no such image".into(),
            fields: vec![
                ("code".into(), "IMAGE_NOT_FOUND".into()),
                ("attempts".into(), "1".into()),
            ],
            span: None,
        }
    }

    #[test]
    fn a_record_makes_one_line_with_every_key_in_order() {
        let line = to_line(&record());
        expect_test::expect![[r#"
            {"at_us":1764752342123456,"time":"2025-12-03T08:59:02.123456Z","level":"ERROR","target":"nexus_agent::reconcile","source":"agent-host-a","request_id":"0000000000000000000000000000abcd","workspace":"api","message":"no such image","fields":{"code":"IMAGE_NOT_FOUND","attempts":"1"},"span":null}
        "#]]
        .assert_eq(&line);
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(from_line(&line), Some(record()));
    }

    #[test]
    fn a_hop_round_trips_and_absent_parts_are_null() {
        let hop = LogRecord {
            request_id: None,
            workspace: None,
            fields: vec![],
            span: Some(SpanRecord {
                name: "agent.reconcile".into(),
                duration_us: 1_500,
                outcome: Some("ok".into()),
            }),
            ..record()
        };
        let line = to_line(&hop);
        assert!(
            line.contains(r#""request_id":null,"workspace":null"#),
            "{line}"
        );
        assert!(line.contains(r#""fields":{}"#), "{line}");
        assert!(
            line.contains(r#""span":{"name":"agent.reconcile","duration_us":1500,"outcome":"ok"}"#),
            "{line}"
        );
        assert_eq!(from_line(&line), Some(hop));
    }

    #[test]
    fn long_text_is_cut_and_the_line_stays_bounded() {
        let mut big = record();
        big.message = "é".repeat(100_000);
        big.fields = (0..100)
            .map(|i| (format!("f{i}"), "\u{1}".repeat(10_000)))
            .collect();
        let line = to_line(&big);
        assert!(line.len() <= MAX_LINE_BYTES, "{}", line.len());
        let back = from_line(&line).unwrap();
        assert!(back.message.ends_with('…'));
        assert!(back.message.len() <= MAX_MESSAGE_BYTES);
        assert!(back.fields.len() <= MAX_FIELDS);
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 4), "a…");
    }

    #[test]
    fn lines_that_are_not_records_are_refused() {
        for line in [
            "",
            "not json",
            "{\"at_us\":1}",
            "{\"at_us\":1,\"level\":\"LOUD\"}",
            "{\"at_us\":-1,\"level\":\"INFO\"}",
            "{\"at_us\":1,\"level\":\"INFO\",\"mess",
        ] {
            assert_eq!(from_line(line), None, "{line}");
        }
        // Readers are lenient with what they do not need: missing keys, odd ids, other values.
        let lenient = r#"{"at_us":5,"level":"warn","request_id":"nope","workspace":"Bad Name","fields":{"n":3,"ok":true}}"#;
        let record = from_line(lenient).unwrap();
        assert_eq!(record.level, LogLevel::Warn);
        assert_eq!(record.request_id, None);
        assert_eq!(record.workspace, None);
        assert_eq!(
            record.fields,
            vec![("n".into(), "3".into()), ("ok".into(), "true".into())]
        );
    }

    #[test]
    fn times_have_six_digits_of_fraction() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(1_796_289_561_402_780),
            "2026-12-03T09:19:21.402780Z"
        );
    }

    #[test]
    fn levels_read_in_any_case() {
        assert_eq!(parse_level("ERROR"), Some(LogLevel::Error));
        assert_eq!(parse_level("warn"), Some(LogLevel::Warn));
        assert_eq!(parse_level("Info"), Some(LogLevel::Info));
        assert_eq!(parse_level("fatal"), None);
    }
}
