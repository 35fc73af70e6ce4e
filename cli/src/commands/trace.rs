//! `nexus admin trace REQUEST-ID` and `nexus admin workspace exec NAME [--debug] -- CMD`.
//!
//! A trace is gathered from every daemon at once ([`crate::fleet`]): each coordinator (the
//! members the status names, each asked directly, so that a dead leader is named rather than
//! fatal) and each agent for its log records of the request, and a coordinator for what the
//! replicated state remembers of it. Each source has its own time limit; one that does not
//! answer is named in the trace. [`crate::trace`] puts it all in order.
//!
//! The trace's own requests go under fresh ids: they look at a request, they are not part of it.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::debug::{LogLevel, LogQuery, LogRecord, RequestRecord};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use nexus_protocol::{RequestId, WorkspaceName};

use crate::args::{OutputFormat, TraceArgs};
use crate::commands::host;
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::output;
use crate::settings::Settings;
use crate::trace::{Answer, Gathered, RECORDS_PER_SOURCE, Trace, assemble, trace_json, trace_text};

/// How long one source may take to answer (connecting included).
const PER_SOURCE: Duration = Duration::from_secs(5);
/// How far back the records are looked for: the journal's age, what the replicated state
/// remembers of a request.
const LOOK_BACK: Duration = Duration::from_secs(24 * 3600);
/// How many times `exec --debug` looks for the agent's hop, which its log may write a moment
/// after the answer, and how long apart.
const DEBUG_LOOKS: u32 = 3;
const DEBUG_LOOK_AGAIN: Duration = Duration::from_millis(300);

/// `nexus admin trace REQUEST-ID`.
pub async fn run(
    args: TraceArgs,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let (trace, answered, codes) = trace_of(settings, args.request_id, LogLevel::Info).await?;
    if trace.is_empty() {
        // About the request traced, so named with its id.
        return Err(not_found(&trace, answered, &codes).under_request(args.request_id));
    }
    output::emit(format, &trace_json(&trace), || trace_text(&trace));
    Ok(())
}

/// `nexus admin workspace exec NAME [--debug] -- CMD`: the exec, under the command's request
/// id; with `--debug`, that request's trace on stderr after (with the agent's DEBUG lines).
pub async fn exec(
    settings: &Settings,
    name: WorkspaceName,
    command: Vec<String>,
    debug: bool,
    format: OutputFormat,
) -> Result<u8, CliError> {
    let request_id = settings.next_request_id();
    let settings = settings.clone().with_request_id(request_id);
    let result = host::exec(&settings, name, command, format).await;
    if debug {
        let shown = match debug_trace(&settings, request_id).await {
            Ok(trace) => match format {
                OutputFormat::Json => format!("{}\n", trace_json(&trace)),
                OutputFormat::Table => trace_text(&trace),
            },
            Err(error) => format!(
                "nexus: no trace of request {request_id}: {}\n",
                error.error.message
            ),
        };
        eprint!("{shown}");
    }
    result
}

/// The trace of an exec that just ended: looked for again a little later while its agent's
/// hop is not there yet (a log written a moment after the answer).
async fn debug_trace(settings: &Settings, request_id: RequestId) -> Result<Trace, CliError> {
    let mut looks = 0;
    loop {
        looks += 1;
        let (trace, answered, _) = trace_of(settings, request_id, LogLevel::Debug).await?;
        let found = trace.hops.iter().any(|hop| hop.hop.starts_with("agent."));
        if found || answered == 0 || looks >= DEBUG_LOOKS {
            return Ok(trace);
        }
        tokio::time::sleep(DEBUG_LOOK_AGAIN).await;
    }
}

/// No daemon holds a record of the request: say why that may be.
fn not_found(trace: &Trace, answered: usize, codes: &[ErrorCode]) -> CliError {
    let id = trace.request_id;
    if answered == 0 {
        let why = trace
            .unreachable
            .iter()
            .map(|(source, error)| format!("{source}: {error}"))
            .collect::<Vec<_>>()
            .join("; ");
        // None could be reached, or some cannot tell (an earlier version).
        let code = if codes
            .iter()
            .all(|code| matches!(code, ErrorCode::NetworkError | ErrorCode::Timeout))
        {
            ErrorCode::NetworkError
        } else {
            ErrorCode::Unsupported
        };
        return CliError::local(
            code,
            format!("no coordinator or agent told its records of request {id}: {why}"),
        )
        .suggest("check that the coordinators and agents run and run this version (`nexus admin status`, `nexus admin hosts`)");
    }
    let mut message = format!("no coordinator or agent holds a record of request {id}");
    if !trace.unreachable.is_empty() {
        let names: Vec<&str> = trace.unreachable.iter().map(|(s, _)| s.as_str()).collect();
        message.push_str(&format!(" (no records from: {})", names.join(", ")));
    }
    CliError::local(ErrorCode::InvalidArgument, message).suggest(
        "check the id (an error prints it, and `nexus --verbose` too); the fleet keeps a request's records for the journal's 24 h, less if the daemons' logs rotated",
    )
}

/// The request's trace, how many daemons answered with their records, and the codes of those
/// that did not.
async fn trace_of(
    settings: &Settings,
    request_id: RequestId,
    min_level: LogLevel,
) -> Result<(Trace, usize, Vec<ErrorCode>), CliError> {
    let gathered = gather(settings, request_id, min_level).await?;
    let answered = gathered
        .answers
        .iter()
        .filter(|answer| answer.records.is_ok())
        .count();
    let codes = gathered
        .answers
        .iter()
        .filter_map(|answer| answer.records.as_ref().err().map(|e| e.code))
        .collect();
    Ok((assemble(gathered), answered, codes))
}

/// What a source is asked: its records of the request, at `min_level` or above, of the last
/// 24 h, at most [`RECORDS_PER_SOURCE`].
fn query(request_id: RequestId, min_level: LogLevel) -> LogQuery {
    let now_us = clock::now().as_millis().saturating_mul(1_000);
    let back_us = u64::try_from(LOOK_BACK.as_micros()).unwrap_or(u64::MAX);
    LogQuery {
        since_us: Some(now_us.saturating_sub(back_us)),
        until_us: None,
        min_level,
        grep: None,
        request: Some(request_id),
        workspace: None,
        limit: RECORDS_PER_SOURCE,
        follow: false,
        spans_only: false,
    }
}

/// Asks every coordinator and agent (as [`crate::fleet`] finds them), and the replicated state,
/// at once.
async fn gather(
    settings: &Settings,
    request_id: RequestId,
    min_level: LogLevel,
) -> Result<Gathered, CliError> {
    // The trace's own requests go under fresh ids.
    let fresh = Settings {
        request_id: None,
        ..settings.clone()
    };
    let query = query(request_id, min_level);
    let roster = Roster::discover(&fresh, &[], &[], PER_SOURCE).await?;
    let asks = fleet::ask_each(
        &fresh,
        &roster.daemons,
        RequestId::random(),
        PER_SOURCE,
        |daemon| {
            Some(match daemon {
                Daemon::Coordinator { .. } => {
                    Request::Admin(AdminRequest::DaemonLogs(query.clone()))
                }
                Daemon::Agent { .. } => Request::Host(HostRequest::DaemonLogs(query.clone())),
            })
        },
    );
    let (asked, record) = tokio::join!(asks, record_of(&fresh, request_id));
    let mut answers: Vec<Answer> = asked
        .into_iter()
        .map(|(daemon, answer)| Answer {
            source: daemon.label(),
            records: records_from(answer.map_err(|e| *e.error)),
        })
        .collect();
    for (source, error) in roster.unlisted {
        answers.push(Answer {
            source,
            records: Err(*error.error),
        });
    }
    Ok(Gathered {
        request_id,
        answers,
        record,
    })
}

/// What the replicated state remembers of the request.
async fn record_of(
    settings: &Settings,
    request_id: RequestId,
) -> Result<Option<RequestRecord>, WireError> {
    let request = Request::Admin(AdminRequest::RequestRecord(request_id));
    match tokio::time::timeout(PER_SOURCE, settings.request(request, PER_SOURCE)).await {
        Ok(Ok(Response::RequestRecord(record))) => Ok(record),
        Ok(Ok(other)) => Err(*CliError::unexpected(&other).error),
        Ok(Err(error)) => Err(*error.error),
        Err(_) => Err(timed_out()),
    }
}

fn records_from(answer: Result<Response, WireError>) -> Result<Vec<LogRecord>, WireError> {
    match answer? {
        Response::LogRecords(records) => Ok(records),
        other => Err(*CliError::unexpected(&other).error),
    }
}

fn timed_out() -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!("no answer within {} s", PER_SOURCE.as_secs()),
    )
}
