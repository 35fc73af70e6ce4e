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
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use nexus_protocol::transport::{Connection, Subscription};
use nexus_protocol::{HostId, NodeId, RequestId, WorkspaceName, clock};
use serde_json::json;

use crate::agents::{READ_TIMEOUT, agent_of, connect_agent};
use crate::args::{AdminLogsArgs, LogsArgs, OutputFormat};
use crate::error::CliError;
use crate::fleetlogs::{self, Labelled};
use crate::output;
use crate::settings::Settings;

/// How long one daemon may take to connect and answer (for `--follow`, to send its backlog).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// `--last` when neither it nor `--since` is given: an hour.
const DEFAULT_LAST_SECS: u64 = 3_600;

/// One daemon to ask.
#[derive(Debug, Clone)]
enum Daemon {
    Coordinator { id: NodeId, address: String },
    Agent { host: HostId, address: String },
}

impl Daemon {
    /// As its records name it: `coordinator-2`, `agent-host-a`.
    fn label(&self) -> String {
        match self {
            Daemon::Coordinator { id, .. } => format!("coordinator-{id}"),
            Daemon::Agent { host, .. } => format!("agent-{host}"),
        }
    }

    async fn connect(&self, settings: &Settings) -> Result<Connection, CliError> {
        match self {
            Daemon::Coordinator { id, address } => {
                let connection = settings.connect_to(address).await?;
                if connection.server() != &Identity::Coordinator(*id) {
                    return Err(CliError::local(
                        ErrorCode::AuthenticationFailed,
                        format!(
                            "{address} answered as {}, not as coordinator {id}",
                            connection.server()
                        ),
                    ));
                }
                Ok(connection)
            }
            Daemon::Agent { host, address } => connect_agent(settings, host, address).await,
        }
    }

    fn request(&self, query: LogQuery) -> Request {
        match self {
            Daemon::Coordinator { .. } => Request::Admin(AdminRequest::DaemonLogs(query)),
            Daemon::Agent { .. } => Request::Host(HostRequest::DaemonLogs(query)),
        }
    }

    /// Its records, at once.
    async fn ask(&self, settings: &Settings, query: LogQuery) -> Result<Vec<LogRecord>, CliError> {
        let connection = self.connect(settings).await?;
        records(
            connection
                .request_with(RequestId::random(), self.request(query), ASK_TIMEOUT)
                .await?,
        )
    }

    /// Its records, then a subscription to those written after.
    async fn follow(
        &self,
        settings: &Settings,
        query: LogQuery,
    ) -> Result<(Vec<LogRecord>, Subscription), CliError> {
        let connection = self.connect(settings).await?;
        let mut subscription = connection.subscribe(self.request(query)).await?;
        let backlog = match subscription.next().await {
            Some(frame) => records(frame?)?,
            None => Vec::new(),
        };
        Ok((backlog, subscription))
    }
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
    let (daemons, unlisted) = daemons(settings, &args.hosts, &args.nodes).await?;
    for (source, error) in &unlisted {
        print_failure(format, source, &error.error.message);
    }
    let per_source = usize::try_from(args.limit).unwrap_or(usize::MAX);
    if !args.follow {
        let asks = daemons.iter().map(|daemon| {
            let query = query.clone();
            async move { (daemon.label(), in_time(daemon.ask(settings, query)).await) }
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
    let opens = daemons.iter().map(|daemon| {
        let query = query.clone();
        async move {
            (
                daemon.label(),
                in_time(daemon.follow(settings, query)).await,
            )
        }
    });
    let mut backlogs = Vec::new();
    let mut streams = Vec::new();
    let mut failed = unlisted;
    for (source, opened) in join_all(opens).await {
        match opened {
            Ok((backlog, subscription)) => {
                backlogs.push((source.clone(), backlog));
                streams.push(frames(source, subscription));
            }
            Err(error) => {
                print_failure(format, &source, &error.error.message);
                failed.push((source, error));
            }
        }
    }
    if streams.is_empty() {
        return Err(none_answered(failed));
    }
    print_records(format, &fleetlogs::merge(backlogs, per_source));
    // Then each batch as it comes, from whichever daemon sends it.
    let mut batches = futures_util::stream::select_all(streams);
    while let Some((source, frame)) = batches.next().await {
        match frame.map_err(CliError::from).and_then(records) {
            Ok(batch) => {
                print_records(format, &fleetlogs::merge(vec![(source, batch)], usize::MAX))
            }
            Err(error) => print_failure(format, &source, &error.error.message),
        }
    }
    Ok(())
}

type Frames = std::pin::Pin<
    Box<
        dyn futures_util::Stream<Item = (String, Result<Response, nexus_protocol::WireError>)>
            + Send,
    >,
>;

/// A subscription's frames, labelled with their source.
fn frames(source: String, subscription: Subscription) -> Frames {
    Box::pin(futures_util::stream::unfold(
        subscription,
        move |mut subscription| {
            let source = source.clone();
            async move {
                let frame = subscription.next().await?;
                Some(((source, frame), subscription))
            }
        },
    ))
}

/// Every daemon the query is for, and those that could not be listed (with why). `hosts` and
/// `nodes` narrow it; neither means all. An error only when no coordinator answers at all.
async fn daemons(
    settings: &Settings,
    hosts: &[HostId],
    nodes: &[NodeId],
) -> Result<(Vec<Daemon>, Vec<(String, CliError)>), CliError> {
    let every = hosts.is_empty() && nodes.is_empty();
    let mut daemons = Vec::new();
    let mut unlisted = Vec::new();
    if every || !nodes.is_empty() {
        let status = match settings
            .request(Request::Admin(AdminRequest::Status), READ_TIMEOUT)
            .await?
        {
            Response::ClusterStatus(status) => status,
            other => return Err(CliError::unexpected(&other)),
        };
        for member in &status.members {
            if !every && !nodes.contains(&member.id) {
                continue;
            }
            if member.addr.is_empty() {
                unlisted.push((
                    format!("coordinator-{}", member.id),
                    CliError::local(ErrorCode::NetworkError, "its address is not known"),
                ));
                continue;
            }
            daemons.push(Daemon::Coordinator {
                id: member.id,
                address: member.addr.clone(),
            });
        }
        for id in nodes {
            if !status.members.iter().any(|m| m.id == *id) {
                unlisted.push((
                    format!("coordinator-{id}"),
                    CliError::local(ErrorCode::InvalidArgument, "not a member of the cluster"),
                ));
            }
        }
    }
    if every || !hosts.is_empty() {
        match settings
            .request(Request::Admin(AdminRequest::Endpoints), READ_TIMEOUT)
            .await
        {
            Ok(Response::Endpoints(endpoints)) => {
                for (host, address) in &endpoints {
                    if every || hosts.contains(host) {
                        daemons.push(Daemon::Agent {
                            host: host.clone(),
                            address: address.clone(),
                        });
                    }
                }
                for host in hosts {
                    if !endpoints.iter().any(|(known, _)| known == host) {
                        unlisted.push((
                            format!("agent-{host}"),
                            CliError::local(
                                ErrorCode::NetworkError,
                                "the leader knows no address for its agent (is it connected?)",
                            ),
                        ));
                    }
                }
            }
            Ok(other) => return Err(CliError::unexpected(&other)),
            // Without the leader, no agent can be found; the coordinators still answer.
            Err(error) => unlisted.push(("agents".to_string(), error)),
        }
    }
    Ok((daemons, unlisted))
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
