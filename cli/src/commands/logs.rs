//! `nexus admin logs` and `nexus admin workspace logs NAME --system`: the daemons' own log
//! records, asked of each daemon directly (every coordinator at the address `admin status`
//! gives, every agent at the address the leader knows, as `workspace logs` reaches one), all at
//! once and each within [`ASK_TIMEOUT`]. A daemon that does not answer is named on stderr; only
//! when none answers is it an error. Merging and printing are `crate::fleetlogs`.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use nexus_protocol::debug::{ContainerEvent, LogLevel, LogQuery, LogRecord};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use nexus_protocol::transport::Subscription;
use nexus_protocol::{HostId, RequestId, WorkspaceName, clock};
use serde_json::json;

use crate::agents::{READ_TIMEOUT, agent_of};
use crate::args::{AdminLogsArgs, LogsArgs, OutputFormat};
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::fleetlogs::{self, Labelled};
use crate::logfollow::Follows;
use crate::output;
use crate::settings::Settings;

/// How long one daemon may take to connect and answer (for `--follow`, to send its backlog).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// `--last` when neither it nor `--since` is given: an hour.
const DEFAULT_LAST_SECS: u64 = 3_600;

/// The request for `daemon`'s own records.
fn logs_request(daemon: &Daemon, query: LogQuery) -> Request {
    match daemon {
        Daemon::Coordinator { .. } => Request::Admin(AdminRequest::DaemonLogs(query)),
        Daemon::Agent { .. } => Request::Host(HostRequest::DaemonLogs(query)),
    }
}

/// `daemon`'s records, at once.
async fn ask(
    settings: &Settings,
    daemon: &Daemon,
    query: LogQuery,
) -> Result<Vec<LogRecord>, CliError> {
    let connection = fleet::connect(settings, daemon).await?;
    records(
        connection
            .request_with(
                RequestId::random(),
                logs_request(daemon, query),
                ASK_TIMEOUT,
            )
            .await?,
    )
}

/// `daemon`'s records, then a subscription to those written after.
async fn follow(
    settings: &Settings,
    daemon: &Daemon,
    query: LogQuery,
) -> Result<(Vec<LogRecord>, Subscription), CliError> {
    let connection = fleet::connect(settings, daemon).await?;
    let mut subscription = connection.subscribe(logs_request(daemon, query)).await?;
    let backlog = match subscription.next().await {
        Some(frame) => records(frame?)?,
        None => Vec::new(),
    };
    Ok((backlog, subscription))
}

fn records(response: Response) -> Result<Vec<LogRecord>, CliError> {
    match response {
        Response::LogRecords(records) => Ok(records),
        other => Err(CliError::unexpected(&other)),
    }
}

/// `within` [`ASK_TIMEOUT`], or a timeout error naming what took too long.
async fn in_time<T>(
    what: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::time::timeout(ASK_TIMEOUT, what)
        .await
        .unwrap_or_else(|_| {
            Err(CliError::local(
                ErrorCode::Timeout,
                format!("no answer within {} s", ASK_TIMEOUT.as_secs()),
            ))
        })
}

/// `nexus admin logs`.
pub async fn admin_logs(
    settings: &Settings,
    args: AdminLogsArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let since_us = match (args.since, args.last) {
        (Some(since), _) => since,
        (None, last) => fleetlogs::ago(clock::now_us(), last.unwrap_or(DEFAULT_LAST_SECS)),
    };
    let query = LogQuery {
        since_us: Some(since_us),
        until_us: None,
        min_level: if args.errors {
            LogLevel::Error
        } else {
            args.level
        },
        grep: args.grep,
        request: args.request,
        workspace: None,
        limit: args.limit,
        follow: args.follow,
        spans_only: false,
    };
    nexus_protocol::logging::check_query(&query).map_err(|bad| {
        CliError::local(ErrorCode::InvalidArgument, format!("--grep: {bad}"))
            .suggest("escape special characters with \\, or shorten the pattern")
    })?;
    let Roster {
        daemons, unlisted, ..
    } = Roster::discover(settings, &args.hosts, &args.nodes, READ_TIMEOUT).await?;
    for (source, error) in &unlisted {
        print_failure(format, source, &error.error.message);
    }
    let per_source = usize::try_from(args.limit).unwrap_or(usize::MAX);
    if !args.follow {
        let asks = daemons.iter().map(|daemon| {
            let query = query.clone();
            async move { (daemon.label(), in_time(ask(settings, daemon, query)).await) }
        });
        let mut answered = Vec::new();
        let mut failed = unlisted;
        for (source, answer) in join_all(asks).await {
            match answer {
                Ok(records) => answered.push((source, records)),
                Err(error) => {
                    print_failure(format, &source, &error.error.message);
                    failed.push((source, error));
                }
            }
        }
        if answered.is_empty() {
            return Err(none_answered(failed));
        }
        print_records(format, &fleetlogs::merge(answered, per_source));
        return Ok(());
    }
    // Followed: every daemon's backlog, then each batch as it comes, from whichever daemon
    // sends it; the roster is looked at again every [`REFRESH`].
    let mut follows = Follows::new(since_us);
    let mut batches = futures_util::stream::SelectAll::new();
    let opened = open_follows(settings, &daemons, &query, &mut follows, format).await;
    if opened.is_empty() {
        let failed = unlisted
            .into_iter()
            .chain(opened.failed)
            .collect::<Vec<_>>();
        return Err(none_answered(failed));
    }
    print_records(format, &fleetlogs::merge(opened.backlogs, per_source));
    batches.extend(opened.streams);
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
    loop {
        tokio::select! {
            Some(item) = batches.next(), if !batches.is_empty() => match item {
                Followed::Frame(source, frame) => {
                    match frame.map_err(CliError::from).and_then(records) {
                        Ok(batch) => {
                            let batch = follows.fresh(&source, batch);
                            print_records(format, &fleetlogs::merge(vec![(source, batch)], usize::MAX));
                        }
                        // A stream that fails ends: said once, with its end.
                        Err(error) => {
                            if follows.lost(&source) {
                                print_failure(format, &source, &again(&error.error.message));
                            }
                        }
                    }
                }
                Followed::Ended(source) => {
                    if follows.lost(&source) {
                        print_failure(format, &source, &again("its log stream ended"));
                    }
                }
            },
            _ = refresh.tick() => {
                let roster = Roster::discover(settings, &args.hosts, &args.nodes, READ_TIMEOUT).await;
                let daemons = match roster {
                    Ok(roster) => roster.daemons,
                    Err(error) => {
                        if follows.lost(ROSTER) {
                            print_failure(format, ROSTER, &error.error.message);
                        }
                        continue;
                    }
                };
                follows.opened(ROSTER);
                let labels: Vec<String> = daemons.iter().map(Daemon::label).collect();
                let wanted = follows.to_open(labels.iter().map(String::as_str));
                let new: Vec<Daemon> = daemons
                    .into_iter()
                    .filter(|daemon| wanted.contains(&daemon.label().as_str()))
                    .collect();
                let opened = open_follows(settings, &new, &query, &mut follows, format).await;
                print_records(format, &fleetlogs::merge(opened.backlogs, per_source));
                batches.extend(opened.streams);
            }
        }
    }
}

/// How often a follow looks at the roster again: for agents that connected after it began,
/// and daemons whose stream ended.
const REFRESH: Duration = Duration::from_secs(10);

/// `why` a daemon's stream was lost, and that it is asked again.
fn again(why: &str) -> String {
    format!("{why}; asked again every {} s", REFRESH.as_secs())
}

/// How a follow names the roster when no coordinator answers for it.
const ROSTER: &str = "roster";

/// What [`open_follows`] opened: each daemon's backlog and stream, and those that failed.
struct Opened {
    backlogs: Vec<(String, Vec<LogRecord>)>,
    streams: Vec<Frames>,
    failed: Vec<(String, CliError)>,
}

impl Opened {
    fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// Opens a follow of each of `daemons` at once, each from where `follows` says, and names on
/// stderr each that failed (once until it is followed again).
async fn open_follows(
    settings: &Settings,
    daemons: &[Daemon],
    query: &LogQuery,
    follows: &mut Follows,
    format: OutputFormat,
) -> Opened {
    let opens = daemons.iter().map(|daemon| {
        let source = daemon.label();
        let query = LogQuery {
            since_us: Some(follows.since_for(&source)),
            ..query.clone()
        };
        async move { (source, in_time(follow(settings, daemon, query)).await) }
    });
    let mut opened = Opened {
        backlogs: Vec::new(),
        streams: Vec::new(),
        failed: Vec::new(),
    };
    for (source, answer) in join_all(opens).await {
        match answer {
            Ok((backlog, subscription)) => {
                follows.opened(&source);
                let backlog = follows.fresh(&source, backlog);
                opened.backlogs.push((source.clone(), backlog));
                opened.streams.push(frames(source, subscription));
            }
            Err(error) => {
                if follows.lost(&source) {
                    print_failure(format, &source, &error.error.message);
                }
                opened.failed.push((source, error));
            }
        }
    }
    opened
}

/// An item of a followed daemon's stream: a frame, or its end.
enum Followed {
    Frame(String, Result<Response, nexus_protocol::WireError>),
    Ended(String),
}

type Frames = std::pin::Pin<Box<dyn futures_util::Stream<Item = Followed> + Send>>;

/// A subscription's frames, labelled with their source, then its end.
fn frames(source: String, subscription: Subscription) -> Frames {
    let end = futures_util::stream::once(std::future::ready(Followed::Ended(source.clone())));
    Box::pin(
        futures_util::stream::unfold(subscription, move |mut subscription| {
            let source = source.clone();
            async move {
                let frame = subscription.next().await?;
                Some((Followed::Frame(source, frame), subscription))
            }
        })
        .chain(end),
    )
}

/// No daemon answered: the first failure says why, and the others are already on stderr.
fn none_answered(failed: Vec<(String, CliError)>) -> CliError {
    match failed.into_iter().next() {
        Some((source, mut error)) => {
            error.error.message = format!("no daemon answered ({source}: {})", error.error.message);
            error
        }
        None => CliError::local(ErrorCode::InvalidArgument, "no daemon to ask").suggest(
            "check --host and --node against `nexus admin hosts` and `nexus admin status`",
        ),
    }
}

fn print_records(format: OutputFormat, records: &[Labelled]) {
    if records.is_empty() {
        return;
    }
    let text: String = match format {
        OutputFormat::Json => records
            .iter()
            .map(|record| format!("{}\n", fleetlogs::record_json(record)))
            .collect(),
        OutputFormat::Table => records.iter().map(fleetlogs::record_line).collect(),
    };
    output::print(&text);
}

fn print_failure(format: OutputFormat, source: &str, error: &str) {
    match format {
        OutputFormat::Json => eprintln!("{}", fleetlogs::failure_json(source, error)),
        OutputFormat::Table => eprint!("{}", fleetlogs::failure_line(source, error)),
    }
}

/// `nexus admin workspace logs NAME --system`: the agent's records about the workspace and the
/// engine's events for its container, instead of the application's output. `--tail` bounds the
/// records; `--follow` keeps printing the agent's new records.
pub async fn workspace_system(
    settings: &Settings,
    args: LogsArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let LogsArgs { name, tail, follow } = args;
    let (host, connection) = agent_of(settings, &name).await?;
    let source = format!("agent-{host}");
    let query = LogQuery {
        since_us: None,
        until_us: None,
        min_level: LogLevel::Trace,
        grep: None,
        request: None,
        workspace: Some(name.clone()),
        limit: tail,
        follow,
        spans_only: false,
    };
    let events = async {
        connection
            .request_with(
                RequestId::random(),
                Request::Host(HostRequest::ContainerEvents {
                    workspace: name.clone(),
                    since: None,
                }),
                READ_TIMEOUT,
            )
            .await
    };
    let per_source = usize::try_from(tail).unwrap_or(usize::MAX);
    let show = |records: Vec<LogRecord>, events: Option<&Result<Vec<ContainerEvent>, String>>| {
        let records = fleetlogs::merge(vec![(source.clone(), records)], per_source);
        print_system(format, &name, &host, &records, events);
    };
    if !follow {
        let request = Request::Host(HostRequest::DaemonLogs(query));
        let (answer, events) = tokio::join!(
            connection.request_with(RequestId::random(), request, READ_TIMEOUT),
            events
        );
        let events = container_events(&host, events);
        show(records(answer?)?, Some(&events));
        return Ok(());
    }
    let mut frames = connection
        .subscribe(Request::Host(HostRequest::DaemonLogs(query)))
        .await?;
    let (first, events) = tokio::join!(frames.next(), events);
    let events = container_events(&host, events);
    let backlog = match first {
        Some(frame) => records(frame?)?,
        None => Vec::new(),
    };
    show(backlog, Some(&events));
    while let Some(frame) = frames.next().await {
        show(records(frame?)?, None);
    }
    Ok(())
}

/// The engine's events, or why there are none: never fatal. An agent that does not serve them
/// says `UNSUPPORTED`, or, older still, `INVALID_ARGUMENT` (a request it does not know).
fn container_events(
    host: &HostId,
    answer: Result<Response, nexus_protocol::WireError>,
) -> Result<Vec<ContainerEvent>, String> {
    match answer {
        Ok(Response::ContainerEvents(events)) => Ok(events),
        Ok(other) => Err(format!("unexpected answer: {other:?}")),
        Err(error)
            if matches!(
                error.code,
                ErrorCode::Unsupported | ErrorCode::InvalidArgument
            ) =>
        {
            Err(format!(
                "host {host}'s agent does not report the engine's events (an older agent?)"
            ))
        }
        Err(error) => Err(format!("the engine's events: {}", error.message)),
    }
}

/// One document (JSON) or the lines in time order (table); a note on stderr when the events
/// are missing. `events` is `None` for the later batches of a followed log.
fn print_system(
    format: OutputFormat,
    name: &WorkspaceName,
    host: &HostId,
    records: &[Labelled],
    events: Option<&Result<Vec<ContainerEvent>, String>>,
) {
    let (list, missing): (&[ContainerEvent], Option<&str>) = match events {
        Some(Ok(events)) => (events, None),
        Some(Err(why)) => (&[], Some(why)),
        None => (&[], None),
    };
    match format {
        OutputFormat::Json => {
            let mut document = json!({
                "workspace": name.as_str(),
                "host": host.as_str(),
                "records": records.iter().map(fleetlogs::record_json).collect::<Vec<_>>(),
            });
            if let Some(events) = events {
                document["events"] = match events {
                    Ok(events) => events.iter().map(fleetlogs::event_json).collect(),
                    Err(_) => serde_json::Value::Null,
                };
                document["events_error"] = json!(missing);
            }
            output::print(&format!("{document}\n"));
        }
        OutputFormat::Table => {
            if let Some(why) = missing {
                eprintln!("nexus: note: {why}");
            }
            output::print(&fleetlogs::system_lines(records, list));
        }
    }
}
