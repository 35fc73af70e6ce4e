//! `nexus admin trace REQUEST-ID` and `nexus admin workspace exec NAME [--debug] -- CMD`.
//!
//! A trace is gathered from every daemon at once: each coordinator (the members `admin status`
//! names, each asked directly, so that a dead leader is named rather than fatal) and each agent
//! (where `admin networks` finds them) for its log records of the request, and a coordinator
//! for what the replicated state remembers of it. Each source has its own time limit; one that
//! does not answer is named in the trace. [`crate::trace`] puts it all in order.
//!
//! The trace's own requests go under fresh ids: they look at a request, they are not part of it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use nexus_protocol::clock;
use nexus_protocol::debug::{LogLevel, LogQuery, LogRecord, RequestRecord};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use nexus_protocol::{RequestId, WorkspaceName};

use crate::agents::connect_agent;
use crate::args::{OutputFormat, TraceArgs};
use crate::commands::host;
use crate::error::CliError;
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

/// Asks every coordinator and agent, and the replicated state, at once.
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
    // Any coordinator knows the members and their addresses.
    let status = match fresh
        .request(Request::Admin(AdminRequest::Status), PER_SOURCE)
        .await?
    {
        Response::ClusterStatus(status) => status,
        other => return Err(CliError::unexpected(&other)),
    };
    let coordinators = coordinators(&fresh, &status, &query);
    let agents = agents(&fresh, &query);
    let record = record_of(&fresh, request_id);
    let (mut answers, agents, record) = tokio::join!(coordinators, agents, record);
    answers.extend(agents);
    Ok(Gathered {
        request_id,
        answers,
        record,
    })
}

/// Each member's records, asked of it directly (at its address, and at the configured ones,
/// for a member whose address the status does not know).
async fn coordinators(
    settings: &Settings,
    status: &nexus_protocol::message::ClusterStatus,
    query: &LogQuery,
) -> Vec<Answer> {
    let mut targets: Vec<String> = status
        .members
        .iter()
        .filter(|m| !m.addr.is_empty())
        .map(|m| m.addr.clone())
        .collect();
    if status.members.iter().any(|m| m.addr.is_empty()) {
        for address in &settings.coordinators {
            if !targets.contains(address) {
                targets.push(address.clone());
            }
        }
    }
    let asks = targets.into_iter().map(|address| async move {
        let asked = tokio::time::timeout(PER_SOURCE, async {
            let connection = settings.connect_to(&address).await?;
            let node = match connection.server() {
                Identity::Coordinator(node) => Some(*node),
                _ => None,
            };
            let request = Request::Admin(AdminRequest::DaemonLogs(query.clone()));
            let records = records_from(
                connection
                    .request_with(RequestId::random(), request, PER_SOURCE)
                    .await,
            );
            Ok::<_, CliError>((node, records))
        })
        .await;
        (address, asked)
    });
    let mut by_node: BTreeMap<u64, Answer> = BTreeMap::new();
    let mut failed_at: BTreeMap<String, WireError> = BTreeMap::new();
    for (address, asked) in join_all(asks).await {
        match asked {
            Ok(Ok((Some(node), records))) => {
                let answer = Answer {
                    source: format!("coordinator-{node}"),
                    records,
                };
                // One node reached at two addresses: a good answer wins.
                let better = by_node
                    .get(&node.get())
                    .is_none_or(|held| held.records.is_err() && answer.records.is_ok());
                if better {
                    by_node.insert(node.get(), answer);
                }
            }
            Ok(Ok((None, _))) => {}
            Ok(Err(error)) => {
                failed_at.insert(address, *error.error);
            }
            Err(_) => {
                failed_at.insert(address, timed_out());
            }
        }
    }
    // A member that no address reached is named, with why.
    for member in &status.members {
        if by_node.contains_key(&member.id.get()) {
            continue;
        }
        let error = failed_at.get(&member.addr).cloned().unwrap_or_else(|| {
            WireError::new(
                ErrorCode::NetworkError,
                "its address is not known (not in the status, nor among the configured ones)",
            )
        });
        by_node.insert(
            member.id.get(),
            Answer {
                source: format!("coordinator-{}", member.id),
                records: Err(error),
            },
        );
    }
    by_node.into_values().collect()
}

/// Each agent's records, asked of it where the leader says it serves.
async fn agents(settings: &Settings, query: &LogQuery) -> Vec<Answer> {
    let endpoints = match settings
        .request(Request::Admin(AdminRequest::Endpoints), PER_SOURCE)
        .await
    {
        Ok(Response::Endpoints(endpoints)) => endpoints,
        Ok(other) => {
            return vec![Answer {
                source: "agents".into(),
                records: Err(*CliError::unexpected(&other).error),
            }];
        }
        Err(error) => {
            return vec![Answer {
                source: "agents".into(),
                records: Err(*error.error),
            }];
        }
    };
    let asks = endpoints.into_iter().map(|(host, address)| async move {
        let asked = tokio::time::timeout(PER_SOURCE, async {
            let connection = connect_agent(settings, &host, &address).await?;
            let request = Request::Host(HostRequest::DaemonLogs(query.clone()));
            Ok::<_, CliError>(records_from(
                connection
                    .request_with(RequestId::random(), request, PER_SOURCE)
                    .await,
            ))
        })
        .await;
        Answer {
            source: format!("agent-{host}"),
            records: match asked {
                Ok(Ok(records)) => records,
                Ok(Err(error)) => Err(*error.error),
                Err(_) => Err(timed_out()),
            },
        }
    });
    join_all(asks).await
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
