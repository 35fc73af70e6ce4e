//! The `tracing` layer that writes a daemon's records to its log directory as JSON lines
//! ([`super::record`]): every line stamped with the daemon's `source`; the request id and the
//! workspace taken from the event or from any span that encloses it; and, when a hop span
//! ([`HOP_SPAN`]) closes, one record of the hop with its duration and outcome.
//!
//! Our own layer rather than `tracing-subscriber`'s JSON formatter: that one writes the fields of
//! the current span and a list of the spans above, so a request id recorded three spans up sits
//! at a different place in each line, it cannot stamp a field that no span carries (the source),
//! and it writes nothing when a span closes. See docs/decisions.md, "Logs on disk".

use std::fmt;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::file::Sink;
use super::record;
use crate::clock;
use crate::debug::{
    HOP_FIELD, HOP_SPAN, LogLevel, LogRecord, OUTCOME_FIELD, REQUEST_ID_FIELD, SpanRecord,
    WORKSPACE_FIELD,
};
use crate::id::{RequestId, WorkspaceName};

/// Writes each event, and each hop that ends, as a line on a [`Sink`].
#[derive(Debug)]
pub struct FileLayer {
    source: String,
    sink: Sink,
}

impl FileLayer {
    /// Lines stamped with `source` (`coordinator-1`, `agent-host-a`), queued on `sink`.
    pub fn new(source: impl Into<String>, sink: Sink) -> FileLayer {
        FileLayer {
            source: source.into(),
            sink,
        }
    }

    fn write(&self, record: &LogRecord) {
        self.sink.send(record::to_line(record).into_bytes());
    }
}

/// What the layer keeps of each span it sees.
#[derive(Debug)]
struct SpanData {
    created_us: u64,
    created: Instant,
    hop: Option<String>,
    outcome: Option<String>,
    fields: Fields,
}

/// The fields of an event or a span, sorted into those the records name and the rest.
#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    request_id: Option<RequestId>,
    workspace: Option<WorkspaceName>,
    hop: Option<String>,
    outcome: Option<String>,
    other: Vec<(String, String)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = Some(value),
            REQUEST_ID_FIELD => match value.parse::<RequestId>() {
                Ok(id) => self.request_id = Some(id),
                Err(_) => self.other.push((field.name().to_string(), value)),
            },
            WORKSPACE_FIELD => match WorkspaceName::new(value.as_str()) {
                Ok(name) => self.workspace = Some(name),
                Err(_) => self.other.push((field.name().to_string(), value)),
            },
            HOP_FIELD => self.hop = Some(value),
            OUTCOME_FIELD => self.outcome = Some(value),
            name => {
                // A field recorded again replaces its first value.
                if let Some(slot) = self.other.iter_mut().find(|(n, _)| n == name) {
                    slot.1 = value;
                } else {
                    self.other.push((name.to_string(), value));
                }
            }
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields and messages arrive here with a `Debug` that writes their `Display`.
        self.put(field, format!("{value:?}"));
    }
}

fn level_of(level: &tracing::Level) -> LogLevel {
    match *level {
        tracing::Level::TRACE => LogLevel::Trace,
        tracing::Level::DEBUG => LogLevel::Debug,
        tracing::Level::INFO => LogLevel::Info,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::ERROR => LogLevel::Error,
    }
}

/// The request id and workspace of the nearest spans (innermost first) that carry them.
fn from_spans<'a, S>(
    spans: impl Iterator<Item = tracing_subscriber::registry::SpanRef<'a, S>>,
    mut request_id: Option<RequestId>,
    mut workspace: Option<WorkspaceName>,
) -> (Option<RequestId>, Option<WorkspaceName>)
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    for span in spans {
        if request_id.is_some() && workspace.is_some() {
            break;
        }
        let extensions = span.extensions();
        if let Some(data) = extensions.get::<SpanData>() {
            request_id = request_id.or(data.fields.request_id);
            if workspace.is_none() {
                workspace.clone_from(&data.fields.workspace);
            }
        }
    }
    (request_id, workspace)
}

impl<S> Layer<S> for FileLayer
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let Some(span) = context.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        let data = SpanData {
            created_us: clock::now_us(),
            created: Instant::now(),
            hop: fields.hop.take(),
            outcome: fields.outcome.take(),
            fields,
        };
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        let Some(span) = context.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(data) = extensions.get_mut::<SpanData>() {
            let mut fields = std::mem::take(&mut data.fields);
            values.record(&mut fields);
            if let Some(hop) = fields.hop.take() {
                data.hop = Some(hop);
            }
            if let Some(outcome) = fields.outcome.take() {
                data.outcome = Some(outcome);
            }
            data.fields = fields;
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (request_id, workspace) = match context.event_scope(event) {
            Some(scope) => from_spans(scope, fields.request_id, fields.workspace.take()),
            None => (fields.request_id, fields.workspace.take()),
        };
        // An event's own `hop` or `outcome` field is only a field.
        let mut other = fields.other;
        if let Some(hop) = fields.hop {
            other.push((HOP_FIELD.to_string(), hop));
        }
        if let Some(outcome) = fields.outcome {
            other.push((OUTCOME_FIELD.to_string(), outcome));
        }
        let metadata = event.metadata();
        self.write(&LogRecord {
            at_us: clock::now_us(),
            level: level_of(metadata.level()),
            target: metadata.target().to_string(),
            source: self.source.clone(),
            request_id,
            workspace,
            message: fields.message.unwrap_or_default(),
            fields: other,
            span: None,
        });
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        let Some(span) = context.span(&id) else {
            return;
        };
        if span.metadata().name() != HOP_SPAN {
            return;
        }
        let (record, parent) = {
            let extensions = span.extensions();
            let Some(data) = extensions.get::<SpanData>() else {
                return;
            };
            let name = data.hop.clone().unwrap_or_else(|| HOP_SPAN.to_string());
            let duration_us = u64::try_from(data.created.elapsed().as_micros()).unwrap_or(u64::MAX);
            let message = match &data.outcome {
                Some(outcome) => format!("{name}: {outcome}"),
                None => name.clone(),
            };
            let record = LogRecord {
                at_us: data.created_us,
                level: level_of(span.metadata().level()),
                target: span.metadata().target().to_string(),
                source: self.source.clone(),
                request_id: data.fields.request_id,
                workspace: data.fields.workspace.clone(),
                message,
                fields: data.fields.other.clone(),
                span: Some(SpanRecord {
                    name,
                    duration_us,
                    outcome: data.outcome.clone(),
                }),
            };
            (record, span.parent())
        };
        let (request_id, workspace) = match parent {
            Some(parent) => from_spans(parent.scope(), record.request_id, record.workspace.clone()),
            None => (record.request_id, record.workspace.clone()),
        };
        self.write(&LogRecord {
            request_id,
            workspace,
            ..record
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::logging::file::{LogFiles, RotatingFile, Rotation};

    /// Runs `body` under a subscriber with only the file layer, and returns the records written.
    fn records_of(body: impl FnOnce()) -> Vec<LogRecord> {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::for_source(dir.path(), "agent-host-a");
        let (sink, guard) = Sink::spawn(
            RotatingFile::open(files.clone(), Rotation::default()),
            Box::new(|_| Vec::new()),
        );
        let subscriber = tracing_subscriber::registry().with(FileLayer::new("agent-host-a", sink));
        tracing::subscriber::with_default(subscriber, body);
        drop(guard);
        let text = std::fs::read_to_string(files.current()).unwrap_or_default();
        text.lines()
            .map(|line| record::from_line(line).unwrap_or_else(|| panic!("not a record: {line}")))
            .collect()
    }

    const ID: RequestId = RequestId::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);

    #[test]
    fn an_event_is_a_record_with_its_fields_in_order() {
        let records = records_of(|| {
            tracing::warn!(
                code = "IMAGE_NOT_FOUND",
                attempts = 3,
                retry = false,
                "no such image: {}",
                "dev:9"
            );
        });
        let [record] = records.as_slice() else {
            panic!("{records:?}")
        };
        assert_eq!(record.level, LogLevel::Warn);
        assert_eq!(record.source, "agent-host-a");
        assert_eq!(record.target, module_path!());
        assert_eq!(record.message, "no such image: dev:9");
        assert_eq!(
            record.fields,
            vec![
                ("code".to_string(), "IMAGE_NOT_FOUND".to_string()),
                ("attempts".to_string(), "3".to_string()),
                ("retry".to_string(), "false".to_string()),
            ]
        );
        assert_eq!(record.request_id, None);
        assert_eq!(record.workspace, None);
        assert_eq!(record.span, None);
        assert!(record.at_us > 1_735_689_600_000_000, "{}", record.at_us);
    }

    #[test]
    fn the_request_id_and_workspace_come_from_any_enclosing_span() {
        let records = records_of(|| {
            let request = tracing::info_span!("request", request_id = %ID);
            let _request = request.enter();
            let step = tracing::info_span!("step", workspace = "api", generation = 2);
            let _step = step.enter();
            let inner = tracing::info_span!("engine");
            let _inner = inner.enter();
            tracing::info!("started");
            // An event's own fields win over its spans'.
            tracing::info!(workspace = "web", "other");
        });
        assert_eq!(records.len(), 2, "{records:?}");
        for record in &records {
            assert_eq!(record.request_id, Some(ID));
            assert!(record.fields.is_empty(), "{:?}", record.fields);
        }
        assert_eq!(records[0].workspace.as_ref().unwrap().as_str(), "api");
        assert_eq!(records[1].workspace.as_ref().unwrap().as_str(), "web");
    }

    #[test]
    fn a_field_that_is_not_a_valid_id_stays_a_field() {
        let records = records_of(|| {
            tracing::info!(request_id = "not-an-id", workspace = "Not A Name", "odd");
        });
        assert_eq!(records[0].request_id, None);
        assert_eq!(records[0].workspace, None);
        assert_eq!(
            records[0].fields,
            vec![
                ("request_id".to_string(), "not-an-id".to_string()),
                ("workspace".to_string(), "Not A Name".to_string()),
            ]
        );
    }

    #[test]
    fn a_hop_that_closes_is_one_record_with_its_duration_and_outcome() {
        let before = clock::now_us();
        let records = records_of(|| {
            let outer = tracing::info_span!("request", workspace = "api");
            let _outer = outer.enter();
            let hop = tracing::info_span!(
                HOP_SPAN,
                hop = "agent.reconcile",
                request_id = %ID,
                outcome = tracing::field::Empty,
                steps = 2,
            );
            {
                let _hop = hop.enter();
                tracing::info!("inside");
            }
            std::thread::sleep(Duration::from_millis(20));
            hop.record(OUTCOME_FIELD, "IMAGE_NOT_FOUND: no such image");
            drop(hop);
            // A span that is not a hop writes nothing when it closes.
            drop(tracing::info_span!("other", hop = "not.a.hop"));
        });
        assert_eq!(records.len(), 2, "{records:?}");
        let inside = &records[0];
        assert_eq!(inside.message, "inside");
        assert_eq!(inside.request_id, Some(ID));
        let hop = &records[1];
        let span = hop.span.as_ref().unwrap();
        assert_eq!(span.name, "agent.reconcile");
        assert_eq!(
            span.outcome.as_deref(),
            Some("IMAGE_NOT_FOUND: no such image")
        );
        assert!(span.duration_us >= 20_000, "{}", span.duration_us);
        // The hop is dated from when it began: before the event inside it.
        assert!(hop.at_us >= before && hop.at_us <= inside.at_us);
        assert_eq!(hop.request_id, Some(ID));
        assert_eq!(hop.workspace.as_ref().unwrap().as_str(), "api");
        assert_eq!(hop.level, LogLevel::Info);
        assert_eq!(hop.fields, vec![("steps".to_string(), "2".to_string())]);
        assert_eq!(
            hop.message,
            "agent.reconcile: IMAGE_NOT_FOUND: no such image"
        );
    }

    #[test]
    fn a_hop_without_an_outcome_says_so() {
        let records = records_of(|| {
            drop(tracing::info_span!(
                HOP_SPAN,
                hop = "coordinator.propose",
                outcome = tracing::field::Empty
            ));
        });
        let span = records[0].span.as_ref().unwrap();
        assert_eq!(span.name, "coordinator.propose");
        assert_eq!(span.outcome, None);
        assert_eq!(records[0].message, "coordinator.propose");
    }
}
