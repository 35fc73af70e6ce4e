//! `nexus admin logs` and `admin workspace logs --system`, the pure part: the records of many
//! sources merged in time order (each source bounded), and how a record, an engine event and a
//! source that did not answer are printed. No I/O; `commands::logs` asks the daemons.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{ContainerEvent, LogRecord};
use nexus_protocol::logging::record::rfc3339_us;
use serde_json::{Map, Value, json};

/// One record, labelled with the source that sent it (`coordinator-2`, `agent-host-a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub source: String,
    pub record: LogRecord,
}

/// Merges each source's records into one list in time order. Each source keeps only its newest
/// `per_source` records (a server that sends more is cut here too). Records of the same
/// microsecond keep the order of their sources, then their own order.
pub fn merge(answers: Vec<(String, Vec<LogRecord>)>, per_source: usize) -> Vec<Labelled> {
    let mut lists: Vec<(String, Vec<LogRecord>)> = answers
        .into_iter()
        .map(|(source, mut records)| {
            // Stable: a source's equal times keep its order.
            records.sort_by_key(|record| record.at_us);
            let cut = records.len().saturating_sub(per_source);
            records.drain(..cut);
            (source, records)
        })
        .collect();
    let total = lists.iter().map(|(_, records)| records.len()).sum();
    // The next record of each source, smallest (time, source, position) first.
    let mut heads: BinaryHeap<Reverse<(u64, usize, usize)>> = lists
        .iter()
        .enumerate()
        .filter_map(|(source, (_, records))| records.first().map(|r| Reverse((r.at_us, source, 0))))
        .collect();
    let mut taken: Vec<Vec<Option<LogRecord>>> = lists
        .iter_mut()
        .map(|(_, records)| std::mem::take(records).into_iter().map(Some).collect())
        .collect();
    let mut merged = Vec::with_capacity(total);
    while let Some(Reverse((_, source, position))) = heads.pop() {
        if let Some(record) = taken[source][position].take() {
            merged.push(Labelled {
                source: lists[source].0.clone(),
                record,
            });
        }
        if let Some(Some(next)) = taken[source].get(position + 1) {
            heads.push(Reverse((next.at_us, source, position + 1)));
        }
    }
    merged
}

/// A record for people: `TIME LEVEL SOURCE [request] target: message fields`, one line.
pub fn record_line(labelled: &Labelled) -> String {
    let record = &labelled.record;
    let mut line = format!(
        "{} {:<5} {}",
        rfc3339_us(record.at_us),
        record.level.as_str(),
        labelled.source
    );
    if let Some(id) = record.request_id {
        let _ = write!(line, " [{id}]");
    }
    let _ = write!(line, " {}: {}", record.target, one_line(&record.message));
    if let Some(span) = &record.span {
        let _ = write!(line, " (took {})", duration(span.duration_us));
    }
    if let Some(workspace) = &record.workspace {
        let _ = write!(line, " workspace={workspace}");
    }
    for (name, value) in &record.fields {
        let _ = write!(line, " {name}={}", quoted(value));
    }
    line.push('\n');
    line
}

/// A record for scripts: one JSON object, the same keys as a line of a daemon's log file, the
/// source being the one that answered.
pub fn record_json(labelled: &Labelled) -> Value {
    let record = &labelled.record;
    let fields: Map<String, Value> = record
        .fields
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "at_us": record.at_us,
        "time": rfc3339_us(record.at_us),
        "level": record.level.as_str(),
        "target": record.target,
        "source": labelled.source,
        "request_id": record.request_id.map(|id| id.to_string()),
        "workspace": record.workspace.as_ref().map(|w| w.as_str()),
        "message": record.message,
        "fields": fields,
        "span": record.span.as_ref().map(|span| json!({
            "name": span.name,
            "duration_us": span.duration_us,
            "outcome": span.outcome,
        })),
    })
}

/// A source that did not answer, for people (on stderr).
pub fn failure_line(source: &str, error: &str) -> String {
    format!("nexus: {source} did not answer: {}\n", one_line(error))
}

/// A source that did not answer, for scripts (one line on stderr).
pub fn failure_json(source: &str, error: &str) -> Value {
    json!({"source": source, "error": error})
}

/// One of the engine's events about a workspace's container, for people.
pub fn event_line(event: &ContainerEvent) -> String {
    let mut line = format!(
        "{} EVENT engine container: {}",
        rfc3339_us(event.at.as_millis().saturating_mul(1_000)),
        event.action
    );
    for (name, value) in &event.attributes {
        let _ = write!(line, " {name}={}", quoted(value));
    }
    line.push('\n');
    line
}

pub fn event_json(event: &ContainerEvent) -> Value {
    let attributes: Map<String, Value> = event
        .attributes
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "time": rfc3339_us(event.at.as_millis().saturating_mul(1_000)),
        "action": event.action,
        "attributes": attributes,
    })
}

/// A workspace's system lines: the agent's records and the engine's events, in time order
/// (an event before a record of the same millisecond).
pub fn system_lines(records: &[Labelled], events: &[ContainerEvent]) -> String {
    let mut lines: Vec<(u64, usize, String)> = records
        .iter()
        .map(|r| (r.record.at_us, 1, record_line(r)))
        .chain(
            events
                .iter()
                .map(|e| (e.at.as_millis().saturating_mul(1_000), 0, event_line(e))),
        )
        .collect();
    lines.sort_by_key(|(at, order, _)| (*at, *order));
    lines.into_iter().map(|(_, _, line)| line).collect()
}

/// `--since`: an RFC 3339 time (`2026-12-03T08:00:00Z`, `2026-12-03T10:00:00+02:00`) as
/// microseconds since the epoch.
pub fn parse_time(value: &str) -> Result<u64, String> {
    let at =
        time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|_| format!("{value:?} is not a time like 2026-12-03T08:00:00Z (RFC 3339)"))?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000)
        .map_err(|_| format!("{value:?} is before 1970"))
}

/// Microseconds before `now_us` by `seconds`, not before the epoch.
pub fn ago(now_us: u64, seconds: u64) -> u64 {
    now_us.saturating_sub(seconds.saturating_mul(1_000_000))
}

/// The time of a timestamp in microseconds, for `ContainerEvents`' `since`.
pub fn millis(at_us: u64) -> Timestamp {
    Timestamp::from_millis(at_us / 1_000)
}

/// `850 µs`, `12.3 ms`, `4.2 s`.
fn duration(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.1} s", us as f64 / 1e6),
    }
}

/// A value as is, or quoted when it has spaces, quotes or is empty.
fn quoted(value: &str) -> String {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=')
    {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

/// Text on one line: line breaks shown as `\n`.
fn one_line(text: &str) -> String {
    if text.contains(['\n', '\r']) {
        text.replace('\r', "\\r").replace('\n', "\\n")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use expect_test::expect;
    use nexus_protocol::debug::{LogLevel, SpanRecord};
    use nexus_protocol::{RequestId, WorkspaceName};

    use super::*;

    /// A record at `at_us` saying `message`, at info (also `logfollow`'s tests').
    pub(crate) fn record(at_us: u64, message: &str) -> LogRecord {
        LogRecord {
            at_us,
            level: LogLevel::Info,
            target: "nexus_agent::reconcile".into(),
            source: "ignored".into(),
            request_id: None,
            workspace: None,
            message: message.into(),
            fields: vec![],
            span: None,
        }
    }

    fn check(answers: Vec<(&str, Vec<(u64, &str)>)>, per_source: usize, expected: &[&str]) {
        let answers = answers
            .into_iter()
            .map(|(source, records)| {
                (
                    source.to_string(),
                    records.into_iter().map(|(at, m)| record(at, m)).collect(),
                )
            })
            .collect();
        let merged: Vec<String> = merge(answers, per_source)
            .into_iter()
            .map(|l| format!("{}@{}:{}", l.source, l.record.at_us, l.record.message))
            .collect();
        assert_eq!(merged, expected);
    }

    #[test]
    fn sources_merge_in_time_order_with_ties_kept_stable() {
        // Interleaved.
        check(
            vec![
                ("c1", vec![(1, "a"), (4, "d"), (6, "f")]),
                ("h1", vec![(2, "b"), (3, "c"), (5, "e")]),
            ],
            100,
            &["c1@1:a", "h1@2:b", "h1@3:c", "c1@4:d", "h1@5:e", "c1@6:f"],
        );
        // Equal times: the sources' order, then each source's own.
        check(
            vec![
                ("c2", vec![(5, "x"), (5, "y")]),
                ("c1", vec![(5, "z")]),
                ("h1", vec![]),
            ],
            100,
            &["c2@5:x", "c2@5:y", "c1@5:z"],
        );
        // A source out of order is put in order (stably).
        check(
            vec![("c1", vec![(3, "c"), (1, "a"), (3, "d"), (2, "b")])],
            100,
            &["c1@1:a", "c1@2:b", "c1@3:c", "c1@3:d"],
        );
        check(vec![], 100, &[]);
    }

    #[test]
    fn each_source_keeps_only_its_newest() {
        check(
            vec![
                ("c1", vec![(1, "a"), (2, "b"), (3, "c")]),
                ("h1", vec![(1, "x")]),
            ],
            2,
            &["h1@1:x", "c1@2:b", "c1@3:c"],
        );
        check(vec![("c1", vec![(1, "a")])], 0, &[]);
    }

    fn labelled() -> Labelled {
        let mut record = record(1_796_289_561_402_780, "no such image:\ndev:9");
        record.level = LogLevel::Error;
        record.request_id = Some(RequestId::from_u128(0xabc));
        record.workspace = Some(WorkspaceName::new("api").unwrap());
        record.fields = vec![
            ("code".into(), "IMAGE_NOT_FOUND".into()),
            ("why".into(), "not found".into()),
        ];
        Labelled {
            source: "agent-h1".into(),
            record,
        }
    }

    #[test]
    fn a_record_prints_on_one_line() {
        expect![[r#"
            2026-12-03T09:19:21.402780Z ERROR agent-h1 [00000000000000000000000000000abc] nexus_agent::reconcile: no such image:\ndev:9 workspace=api code=IMAGE_NOT_FOUND why="not found"
        "#]]
        .assert_eq(&record_line(&labelled()));
        let mut hop = record(1_000_000, "agent.pull: ok");
        hop.span = Some(SpanRecord {
            name: "agent.pull".into(),
            duration_us: 12_345,
            outcome: Some("ok".into()),
        });
        expect![[r#"
            1970-01-01T00:00:01.000000Z INFO  coordinator-1 nexus_agent::reconcile: agent.pull: ok (took 12.3 ms)
        "#]]
        .assert_eq(&record_line(&Labelled {
            source: "coordinator-1".into(),
            record: hop,
        }));
    }

    #[test]
    fn a_record_as_json_has_stable_snake_case_keys() {
        expect![[r#"{"at_us":1796289561402780,"fields":{"code":"IMAGE_NOT_FOUND","why":"not found"},"level":"ERROR","message":"no such image:\ndev:9","request_id":"00000000000000000000000000000abc","source":"agent-h1","span":null,"target":"nexus_agent::reconcile","time":"2026-12-03T09:19:21.402780Z","workspace":"api"}"#]]
        .assert_eq(&record_json(&labelled()).to_string());
        expect![[r#"{"error":"timed out","source":"coordinator-2"}"#]]
            .assert_eq(&failure_json("coordinator-2", "timed out").to_string());
        assert_eq!(
            failure_line("agent-h2", "no route\nto host"),
            "nexus: agent-h2 did not answer: no route\\nto host\n"
        );
    }

    #[test]
    fn engine_events_interleave_with_the_agents_records() {
        let event = ContainerEvent {
            at: Timestamp::from_millis(1_500),
            action: "die".into(),
            attributes: vec![("exitCode".into(), "137".into())],
        };
        let records = vec![
            Labelled {
                source: "agent-h1".into(),
                record: record(1_000_000, "started"),
            },
            Labelled {
                source: "agent-h1".into(),
                record: record(2_000_000, "stopped"),
            },
        ];
        expect![[r#"
            1970-01-01T00:00:01.000000Z INFO  agent-h1 nexus_agent::reconcile: started
            1970-01-01T00:00:01.500000Z EVENT engine container: die exitCode=137
            1970-01-01T00:00:02.000000Z INFO  agent-h1 nexus_agent::reconcile: stopped
        "#]]
        .assert_eq(&system_lines(&records, std::slice::from_ref(&event)));
        expect![[r#"{"action":"die","attributes":{"exitCode":"137"},"time":"1970-01-01T00:00:01.500000Z"}"#]]
            .assert_eq(&event_json(&event).to_string());
    }

    #[test]
    fn times_parse_and_windows_do_not_underflow() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000_000));
        assert_eq!(
            parse_time("2026-12-03T10:19:21.5+01:00"),
            Ok(1_796_289_561_500_000)
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
        assert_eq!(ago(10_000_000, 3), 7_000_000);
        assert_eq!(ago(10, 3600), 0);
        assert_eq!(millis(1_500_999), Timestamp::from_millis(1_500));
        assert_eq!(duration(850), "850 µs");
        assert_eq!(duration(4_200_000), "4.2 s");
    }
}
