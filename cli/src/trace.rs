//! `nexus admin trace`'s assembly: from what every coordinator and agent answered (their log
//! records of one request) and what the replicated state remembers of it, the request's
//! timeline. Pure: the gathering is `commands::trace`.
//!
//! A hop is a log record with a span (a `hop` span that closed, see `nexus_protocol::hop`):
//! sorted by when it began, each with its source, its offset from the trace's start, its
//! duration and its outcome. The state's workspace events are instants on the same timeline,
//! and the request's other log records (an error inside a step, a placement) are notes.
//!
//! Where the request failed: the failed hop that ended first (an error is born in the innermost
//! hop and travels outward, so that one ended first), counting of a hop tried again (the same
//! hop, workspace and kind, later, on the same agent or on any coordinator) only the last
//! attempt: a retry that worked was no failure, and a coordinator's failure after which the
//! request went on (a later hop of it, anywhere) belongs to an attempt given up on; else the
//! state's rejection; else a workspace event with an error; else the first error record.

use std::collections::BTreeMap;
use std::fmt::Write;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{Actor, EventKind, LogLevel, LogRecord, RequestRecord, WorkspaceEvent};
use nexus_protocol::hop::error_outcome;
use nexus_protocol::message::DesiredRun;
use nexus_protocol::{RequestId, WireError};
use serde_json::{Value, json};

/// The most records a trace keeps from one source (what `admin trace` asks each for).
pub const RECORDS_PER_SOURCE: u32 = 1_000;

/// What one coordinator or agent answered: its records of the request, or why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `coordinator-1`, `agent-h1`: as the source names itself in its records.
    pub source: String,
    pub records: Result<Vec<LogRecord>, WireError>,
}

/// Everything gathered about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    pub request_id: RequestId,
    pub answers: Vec<Answer>,
    /// What the replicated state remembers of it (`None`: nothing), or why it was not told.
    pub record: Result<Option<RequestRecord>, WireError>,
}

/// One hop on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopRow {
    pub source: String,
    /// `agent.step`.
    pub hop: String,
    /// Its kind and host, as the hop named them: `launch`, `place, host h1`.
    pub detail: Option<String>,
    pub workspace: Option<String>,
    pub at_us: u64,
    pub offset_us: u64,
    pub duration_us: u64,
    /// `ok`, `CODE: message`, or `None` when the hop recorded none.
    pub outcome: Option<String>,
}

impl HopRow {
    /// `agent.step (launch)`.
    pub fn title(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{} ({detail})", self.hop),
            None => self.hop.clone(),
        }
    }

    fn failed(&self) -> bool {
        self.outcome
            .as_deref()
            .is_some_and(nexus_protocol::hop::is_failure)
    }

    /// What makes two hops attempts at the same thing: source, hop, workspace and kind, where
    /// the coordinators count as one source. They are replicas: a client that asks again, or a
    /// push made again on the agent's next watch, may land on another one.
    fn attempt_key(&self) -> AttemptKey<'_> {
        let source = if self.on_a_coordinator() {
            COORDINATORS
        } else {
            self.source.as_str()
        };
        (
            source,
            self.hop.as_str(),
            self.workspace.as_deref(),
            self.detail.as_deref(),
        )
    }

    fn on_a_coordinator(&self) -> bool {
        self.hop.starts_with(COORDINATOR_HOPS)
    }

    fn end_us(&self) -> u64 {
        self.at_us.saturating_add(self.duration_us)
    }
}

/// The prefix of a coordinator's hops' names (`coordinator.request`).
const COORDINATOR_HOPS: &str = "coordinator.";
/// What stands for any coordinator in an [`AttemptKey`].
const COORDINATORS: &str = "coordinator-*";

type AttemptKey<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// A workspace event the request caused, as an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub workspace: String,
    pub at_us: u64,
    pub offset_us: u64,
    /// `created on host h1`, `starting -> failed`.
    pub what: String,
    pub actor: String,
    pub reason: Option<String>,
    pub error: Option<String>,
}

/// A log record of the request that is not a hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRow {
    pub source: String,
    pub level: LogLevel,
    pub workspace: Option<String>,
    pub at_us: u64,
    pub offset_us: u64,
    pub message: String,
}

/// Where the request failed, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub source: String,
    /// The hop's title, `state` (the replicated state refused it), `event WORKSPACE` or `log`.
    pub at: String,
    pub offset_us: u64,
    pub error: String,
}

/// A request's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub request_id: RequestId,
    /// When the earliest thing known of it happened, in microseconds since the Unix epoch.
    pub start_us: u64,
    pub hops: Vec<HopRow>,
    pub events: Vec<EventRow>,
    pub notes: Vec<NoteRow>,
    /// When the replicated state says it was proposed.
    pub proposed_us: Option<u64>,
    pub failed: Option<Failure>,
    /// The sources that did not answer, and why.
    pub unreachable: Vec<(String, String)>,
}

impl Trace {
    /// Whether anything at all is known of the request.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
            && self.events.is_empty()
            && self.notes.is_empty()
            && self.proposed_us.is_none()
    }
}

/// The source that answered for the replicated state, in `unreachable`.
pub const STATE_SOURCE: &str = "replicated state";

/// Puts what was gathered in order.
pub fn assemble(gathered: Gathered) -> Trace {
    let Gathered {
        request_id,
        answers,
        record,
    } = gathered;
    let mut unreachable = Vec::new();
    let mut records = Vec::new();
    for answer in answers {
        match answer.records {
            Ok(mut from) => records.append(&mut from),
            Err(why) => unreachable.push((answer.source, error_outcome(&why))),
        }
    }
    // A source asked twice (two addresses of one coordinator) answers twice alike.
    records.sort_by(|a, b| {
        (a.at_us, &a.source, &a.message, &a.target)
            .cmp(&(b.at_us, &b.source, &b.message, &b.target))
    });
    records.dedup();
    let record = match record {
        Ok(record) => record,
        Err(why) => {
            unreachable.push((STATE_SOURCE.to_string(), error_outcome(&why)));
            None
        }
    };
    let mut hops = Vec::new();
    let mut notes = Vec::new();
    for record in records {
        let workspace = record.workspace.as_ref().map(ToString::to_string);
        match record.span {
            Some(span) => hops.push(HopRow {
                detail: detail(&record.fields),
                source: record.source,
                hop: span.name,
                workspace,
                at_us: record.at_us,
                offset_us: 0,
                duration_us: span.duration_us,
                outcome: span.outcome,
            }),
            None => notes.push(NoteRow {
                message: with_fields(record.message, &record.fields),
                source: record.source,
                level: record.level,
                workspace,
                at_us: record.at_us,
                offset_us: 0,
            }),
        }
    }
    let events: Vec<EventRow> = record
        .as_ref()
        .map(|record| {
            record
                .events
                .iter()
                .map(|(name, event)| event_row(name.as_str(), event))
                .collect()
        })
        .unwrap_or_default();
    let proposed_us = record.as_ref().map(|r| millis_to_us(r.at));
    let start_us = hops
        .iter()
        .map(|h| h.at_us)
        .chain(notes.iter().map(|n| n.at_us))
        .chain(events.iter().map(|e| e.at_us))
        .chain(proposed_us)
        .min()
        .unwrap_or(0);
    let mut trace = Trace {
        request_id,
        start_us,
        hops,
        events,
        notes,
        proposed_us,
        failed: None,
        unreachable,
    };
    for hop in &mut trace.hops {
        hop.offset_us = hop.at_us.saturating_sub(start_us);
    }
    for note in &mut trace.notes {
        note.offset_us = note.at_us.saturating_sub(start_us);
    }
    trace.events.sort_by_key(|e| e.at_us);
    for event in &mut trace.events {
        event.offset_us = event.at_us.saturating_sub(start_us);
    }
    trace.failed = failure(&trace, record.as_ref());
    trace
}

/// A hop's kind and host, from its record's fields.
fn detail(fields: &[(String, String)]) -> Option<String> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    };
    match (
        field(nexus_protocol::hop::KIND_FIELD),
        field(nexus_protocol::hop::HOST_FIELD),
    ) {
        (Some(kind), Some(host)) => Some(format!("{kind}, host {host}")),
        (Some(kind), None) => Some(kind.to_string()),
        (None, Some(host)) => Some(format!("host {host}")),
        (None, None) => None,
    }
}

/// A record's message with its fields, `message (exit_code=0, took_ms=12)`: what an operator
/// reads of it (the request id and workspace are columns already).
fn with_fields(message: String, fields: &[(String, String)]) -> String {
    let shown: Vec<String> = fields
        .iter()
        .filter(|(key, _)| {
            !matches!(
                key.as_str(),
                "message" | "request_id" | "workspace" | "hop" | "outcome"
            )
        })
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if shown.is_empty() {
        message
    } else {
        format!("{message} ({})", shown.join(", "))
    }
}

fn millis_to_us(at: Timestamp) -> u64 {
    at.as_millis().saturating_mul(1_000)
}

fn event_row(workspace: &str, event: &WorkspaceEvent) -> EventRow {
    EventRow {
        workspace: workspace.to_string(),
        at_us: millis_to_us(event.at),
        offset_us: 0,
        what: event_what(&event.kind),
        actor: match &event.actor {
            Actor::Identity(identity) => identity.to_string(),
            Actor::Detector => "the failure detector".to_string(),
            Actor::Policy(name) => format!("policy {name}"),
        },
        reason: event.reason.clone(),
        error: event.error.as_ref().map(error_outcome),
    }
}

fn event_what(kind: &EventKind) -> String {
    match kind {
        EventKind::Created { host } => format!("created on host {host}"),
        EventKind::Wanted(run) => format!(
            "wanted {}",
            match run {
                DesiredRun::Running => "running",
                DesiredRun::Stopped => "stopped",
                DesiredRun::Absent => "absent",
            }
        ),
        EventKind::State { from, to } => format!("{from} -> {to}"),
        EventKind::Restart => "restart asked".to_string(),
        EventKind::Repair { generation } => format!("repair, generation {generation}"),
        EventKind::PortsReassigned => "host ports reassigned".to_string(),
        EventKind::Held => "held".to_string(),
        EventKind::Released => "released".to_string(),
        EventKind::Extended { by_secs } => format!("lifetime extended by {by_secs}s"),
        EventKind::Noticed => "owner noticed".to_string(),
    }
}

/// Where the request failed (see the module's documentation).
fn failure(trace: &Trace, record: Option<&RequestRecord>) -> Option<Failure> {
    // The last attempt of each (source, hop, workspace, kind) speaks for it, the coordinators
    // counting as one source: a failure tried
    // again with success was a retry that worked, and of failures, the last is the one given up
    // on.
    let mut last: BTreeMap<AttemptKey<'_>, u64> = BTreeMap::new();
    for hop in &trace.hops {
        last.insert(hop.attempt_key(), hop.at_us);
    }
    // A coordinator's failure after which the request went on (a hop of it began later, on any
    // source) was not where it failed: a client that followed `NOT_LEADER` or asked again after
    // a timeout, a forward or a push made again. That later attempt may be out of sight (on a
    // leader since killed); what it started is not. An agent's failure stands: its work follows
    // the state, not the client's attempts.
    let latest_begin = trace.hops.iter().map(|hop| hop.at_us).max();
    let retried = |hop: &HopRow| {
        last.get(&hop.attempt_key())
            .is_some_and(|latest| *latest > hop.at_us)
            || (hop.on_a_coordinator() && latest_begin.is_some_and(|began| began > hop.end_us()))
    };
    let first_failed = trace
        .hops
        .iter()
        .filter(|hop| hop.failed() && !retried(hop))
        .min_by_key(|hop| (hop.end_us(), hop.duration_us));
    if let Some(hop) = first_failed {
        return Some(Failure {
            source: hop.source.clone(),
            at: hop.title(),
            offset_us: hop.offset_us,
            error: hop.outcome.clone().unwrap_or_default(),
        });
    }
    if let Some(rejected) = record.and_then(|r| r.rejected.as_ref()) {
        return Some(Failure {
            source: STATE_SOURCE.to_string(),
            at: "state".to_string(),
            offset_us: trace
                .proposed_us
                .map_or(0, |at| at.saturating_sub(trace.start_us)),
            error: error_outcome(rejected),
        });
    }
    if let Some(event) = trace.events.iter().find(|e| e.error.is_some()) {
        return Some(Failure {
            source: STATE_SOURCE.to_string(),
            at: format!("event {}", event.workspace),
            offset_us: event.offset_us,
            error: event.error.clone().unwrap_or_default(),
        });
    }
    trace
        .notes
        .iter()
        .find(|note| note.level == LogLevel::Error)
        .map(|note| Failure {
            source: note.source.clone(),
            at: "log".to_string(),
            offset_us: note.offset_us,
            error: note.message.clone(),
        })
}

/// `--output json`: `{"request_id", "start", "proposed_at", "hops": [...], "events": [...],
/// "notes": [...], "failed": {...}|null, "unreachable": [{"source", "error"}]}`.
pub fn trace_json(trace: &Trace) -> Value {
    json!({
        "request_id": trace.request_id.to_string(),
        "start": time_text(trace.start_us),
        "start_us": trace.start_us,
        "proposed_at": trace.proposed_us.map(time_text),
        "hops": trace.hops.iter().map(|hop| json!({
            "source": hop.source,
            "hop": hop.hop,
            "detail": hop.detail,
            "workspace": hop.workspace,
            "offset_us": hop.offset_us,
            "duration_us": hop.duration_us,
            "outcome": hop.outcome,
        })).collect::<Vec<_>>(),
        "events": trace.events.iter().map(|event| json!({
            "workspace": event.workspace,
            "at": time_text(event.at_us),
            "offset_us": event.offset_us,
            "what": event.what,
            "actor": event.actor,
            "reason": event.reason,
            "error": event.error,
        })).collect::<Vec<_>>(),
        "notes": trace.notes.iter().map(|note| json!({
            "source": note.source,
            "level": note.level.as_str(),
            "workspace": note.workspace,
            "offset_us": note.offset_us,
            "message": note.message,
        })).collect::<Vec<_>>(),
        "failed": trace.failed.as_ref().map(|failed| json!({
            "source": failed.source,
            "at": failed.at,
            "offset_us": failed.offset_us,
            "error": failed.error,
        })),
        "unreachable": trace.unreachable.iter().map(|(source, error)| json!({
            "source": source,
            "error": error,
        })).collect::<Vec<_>>(),
    })
}

/// The timeline for people: hops, events and notes in time order, then where it failed and who
/// did not answer.
pub fn trace_text(trace: &Trace) -> String {
    if trace.is_empty() {
        let mut text = format!("request {}: no records found\n", trace.request_id);
        for (source, error) in &trace.unreachable {
            let _ = writeln!(text, "no records from {source}: {error}");
        }
        return text;
    }
    let mut text = format!(
        "request {}, from {}\n",
        trace.request_id,
        time_text(trace.start_us)
    );
    // Rows in time order; at one instant, hops (which began there) before what happened in them.
    let mut rows: Vec<(u64, u8, Vec<String>)> = Vec::new();
    for hop in &trace.hops {
        rows.push((
            hop.offset_us,
            0,
            vec![
                offset(hop.offset_us),
                duration(hop.duration_us),
                hop.source.clone(),
                with_workspace(hop.title(), hop.workspace.as_deref()),
                hop.outcome.clone().unwrap_or_else(|| "-".into()),
            ],
        ));
    }
    for event in &trace.events {
        let mut what = format!("event {}: {}", event.workspace, event.what);
        if let Some(reason) = &event.reason {
            let _ = write!(what, " ({reason})");
        }
        rows.push((
            event.offset_us,
            1,
            vec![
                offset(event.offset_us),
                String::new(),
                STATE_SOURCE.to_string(),
                what,
                event.error.clone().unwrap_or_default(),
            ],
        ));
    }
    for note in &trace.notes {
        rows.push((
            note.offset_us,
            2,
            vec![
                offset(note.offset_us),
                String::new(),
                note.source.clone(),
                with_workspace(note.level.as_str().to_string(), note.workspace.as_deref()),
                note.message.clone(),
            ],
        ));
    }
    rows.sort_by_key(|(at, order, _)| (*at, *order));
    text.push_str(&crate::output::table(
        &["+OFFSET", "DURATION", "SOURCE", "HOP", "OUTCOME"],
        rows.into_iter().map(|(_, _, row)| row).collect(),
    ));
    match &trace.failed {
        Some(failed) => {
            let _ = writeln!(
                text,
                "failed at {} on {}, {}: {}",
                failed.at,
                failed.source,
                offset(failed.offset_us),
                failed.error
            );
        }
        None => text.push_str("no failure recorded\n"),
    }
    for (source, error) in &trace.unreachable {
        let _ = writeln!(text, "no records from {source}: {error}");
    }
    text
}

fn with_workspace(title: String, workspace: Option<&str>) -> String {
    match workspace {
        Some(workspace) => format!("{title} [{workspace}]"),
        None => title,
    }
}

/// `+1.234s`.
fn offset(us: u64) -> String {
    format!("+{}.{:03}s", us / 1_000_000, (us % 1_000_000) / 1_000)
}

/// `850us`, `12.3ms`, `1.234s`.
fn duration(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{}.{}ms", us / 1_000, (us % 1_000) / 100)
    } else {
        format!("{}.{:03}s", us / 1_000_000, (us % 1_000_000) / 1_000)
    }
}

/// A time in microseconds as RFC 3339 (to the millisecond).
fn time_text(us: u64) -> String {
    crate::output::rfc3339(Timestamp::from_millis(us / 1_000))
}

#[cfg(test)]
mod tests;
