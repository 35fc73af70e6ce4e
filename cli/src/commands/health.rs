//! `nexus admin workspace health|sync-status|sync-conflicts|sync-flush NAME` and `nexus admin
//! health-check`: the facts, gathered from the coordinators and the agents (each agent reached
//! directly, as `workspace logs` does), judged by [`crate::health`].

use std::time::Duration;

use futures_util::StreamExt;
use nexus_protocol::debug::{CertificateInfo, Diagnostic, SyncSessionView, WorkspaceHealth};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{
    AdminRequest, HostRequest, Request, Response, StaleRead, WorkspaceRequest,
};
use nexus_protocol::transport::Connection;
use nexus_protocol::{HostId, RequestId, WorkspaceName, clock};
use serde_json::json;

use crate::agents::{READ_TIMEOUT, agent_of, connect_agent, endpoint_of};
use crate::args::{HealthCheckArgs, OutputFormat};
use crate::cluster::leader_status;
use crate::error::CliError;
use crate::health::fleet::{self, AgentFacts, DiskLimits, Facts};
use crate::health::workspace::{self, Wanted};
use crate::health::{self, EXIT_FAILED, Status};
use crate::output;
use crate::settings::Settings;

/// How long one daemon has to answer a health check's question: a host that does not answer
/// is a finding, not a reason to wait.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent has to gather a workspace's health (its ports' probes and the walk of its
/// files are bounded below this).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(15);
/// Agents asked at once by the fleet's health check.
const AGENTS_AT_ONCE: usize = 32;

/// `nexus admin workspace health NAME`: prints the checks and the verdict; answers the exit code
/// (0 only when healthy).
pub async fn workspace_health(
    settings: &Settings,
    name: WorkspaceName,
    format: OutputFormat,
) -> Result<u8, CliError> {
    let request = Request::Workspace(WorkspaceRequest::Describe(name.clone()));
    let detail = match settings.request(request, READ_TIMEOUT).await? {
        Response::WorkspaceDetail(detail) => detail,
        other => return Err(CliError::unexpected(&other)),
    };
    let wanted = Wanted {
        desired: detail.desired,
        state: detail.view.state,
        last_error: detail.last_error.as_ref().map(|e| e.message.clone()),
    };
    let host = detail.view.host.clone();
    let observed: Result<WorkspaceHealth, String> = match &host {
        None => Err("it is not placed on a host yet".to_string()),
        Some(_) => ask_health(settings, &name)
            .await
            .map_err(|e| e.error.message.clone()),
    };
    let assessment = workspace::assess(
        &wanted,
        observed.as_ref().map_err(String::as_str),
        clock::now(),
    );
    let host = host.as_ref().map(HostId::as_str);
    output::emit(
        format,
        &workspace::json(name.as_str(), host, &assessment, observed.as_ref().ok()),
        || workspace::text(name.as_str(), host, &assessment),
    );
    Ok(assessment.verdict.exit_code())
}

async fn ask_health(
    settings: &Settings,
    name: &WorkspaceName,
) -> Result<WorkspaceHealth, CliError> {
    let (host, address) = endpoint_of(settings, name).await?;
    let connection = connect_agent(settings, &host, &address).await?;
    let request = Request::Host(HostRequest::Health(name.clone()));
    match connection
        .request_with(RequestId::random(), request, HEALTH_TIMEOUT)
        .await?
    {
        Response::Health(health) => Ok(*health),
        other => Err(CliError::unexpected(&other)),
    }
}

/// Which of a workspace's sync sessions to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    All,
    Conflicted,
}

/// `nexus admin workspace sync-status|sync-conflicts NAME`: the sessions the workspace's agent
/// serves.
pub async fn sync_sessions(
    settings: &Settings,
    name: WorkspaceName,
    which: Sessions,
    format: OutputFormat,
) -> Result<(), CliError> {
    let (host, connection) = agent_of(settings, &name).await?;
    let mut sessions = sessions_of(&connection, &name).await?;
    if which == Sessions::Conflicted {
        sessions.retain(|s| s.conflicts > 0);
    }
    let empty = match which {
        Sessions::All => format!("no sync session of {name} reports to its agent\n"),
        Sessions::Conflicted => format!("no sync session of {name} holds conflicts\n"),
    };
    output::emit(format, &sessions_json(&name, &host, &sessions), || {
        if sessions.is_empty() {
            empty
        } else {
            sessions_table(&sessions, clock::now())
        }
    });
    Ok(())
}

/// `nexus admin workspace sync-flush NAME`: wakes the sessions for a cycle now, then shows them.
pub async fn sync_flush(
    settings: &Settings,
    name: WorkspaceName,
    format: OutputFormat,
) -> Result<(), CliError> {
    let (host, connection) = agent_of(settings, &name).await?;
    let request = Request::Host(HostRequest::SyncFlush(name.clone()));
    match connection
        .request_with(RequestId::random(), request, READ_TIMEOUT)
        .await?
    {
        Response::Ack => {}
        other => return Err(CliError::unexpected(&other)),
    }
    let sessions = sessions_of(&connection, &name).await?;
    let mut json = sessions_json(&name, &host, &sessions);
    json["woken"] = json!(sessions.len());
    output::emit(format, &json, || {
        if sessions.is_empty() {
            format!("no sync session of {name} reports to its agent: nothing to wake\n")
        } else {
            format!(
                "woke the sync sessions of {name} for a cycle now\n{}",
                sessions_table(&sessions, clock::now())
            )
        }
    });
    Ok(())
}

async fn sessions_of(
    connection: &Connection,
    name: &WorkspaceName,
) -> Result<Vec<SyncSessionView>, CliError> {
    let request = Request::Host(HostRequest::SyncSessions(name.clone()));
    match connection
        .request_with(RequestId::random(), request, READ_TIMEOUT)
        .await?
    {
        Response::SyncSessions(sessions) => Ok(sessions),
        other => Err(CliError::unexpected(&other)),
    }
}

/// `{"workspace", "host", "sessions": [{"session", "user", "provider", "state", "last_cycle",
/// "changes", "conflicts"}]}`.
fn sessions_json(
    name: &WorkspaceName,
    host: &HostId,
    sessions: &[SyncSessionView],
) -> serde_json::Value {
    json!({
        "workspace": name.as_str(),
        "host": host.as_str(),
        "sessions": sessions.iter().map(workspace::session_json).collect::<Vec<_>>(),
    })
}

fn sessions_table(sessions: &[SyncSessionView], now: nexus_protocol::clock::Timestamp) -> String {
    output::table(
        &[
            "SESSION",
            "USER",
            "PROVIDER",
            "STATE",
            "LAST CYCLE",
            "CHANGES",
            "CONFLICTS",
        ],
        sessions
            .iter()
            .map(|s| {
                vec![
                    format!("{:016x}", s.session),
                    s.user.as_ref().map_or("-".to_string(), ToString::to_string),
                    s.provider.clone(),
                    s.state.clone(),
                    output::ago(s.last_cycle, now),
                    s.changes.to_string(),
                    s.conflicts.to_string(),
                ]
            })
            .collect(),
    )
}

/// The disk limits of `nexus admin health-check`'s flags, refused when a disk could fail
/// without first warning.
pub fn disk_limits(args: HealthCheckArgs) -> Result<DiskLimits, CliError> {
    if args.disk_fail_below > args.disk_warn_below {
        return Err(CliError::local(
            ErrorCode::InvalidArgument,
            format!(
                "--disk-fail-below {} is above --disk-warn-below {}",
                args.disk_fail_below, args.disk_warn_below
            ),
        )
        .suggest("give --disk-fail-below a percentage at most --disk-warn-below's"));
    }
    Ok(DiskLimits {
        warn_below: args.disk_warn_below,
        fail_below: args.disk_fail_below,
    })
}

/// `nexus admin health-check`: every check of the fleet; answers the exit code (0 when none
/// fails). A cluster without quorum fails as it always did, with `NOT_LEADER`, after the
/// checks are printed.
pub async fn health_check(
    settings: &Settings,
    disk: DiskLimits,
    format: OutputFormat,
) -> Result<u8, CliError> {
    let facts = gather(settings).await;
    let checks = fleet::judge(&facts, disk, clock::now());
    let quorum = facts.status.as_ref().ok().map(fleet::quorum);
    let [ok, warn, fail] = health::counts(&checks);
    let status = facts.status.as_ref().ok();
    let json = json!({
        "healthy": fail == 0,
        "leader": status.and_then(|s| s.leader).map(|l| l.get()),
        "term": status.map(|s| s.term),
        "voters": quorum.map(|q| q.voters),
        "healthy_voters": quorum.map(|q| q.healthy),
        "quorum": quorum.map(|q| q.quorum),
        "summary": {"ok": ok, "warn": warn, "fail": fail},
        "checks": health::checks_json(&checks),
    });
    output::emit(format, &json, || {
        let verdict = if fail == 0 { "healthy" } else { "FAILING" };
        format!(
            "{}{verdict}: {ok} ok, {warn} warn, {fail} fail\n",
            health::checks_table(&checks)
        )
    });
    if fail == 0 {
        return Ok(0);
    }
    if let Some(failed) = checks
        .iter()
        .find(|c| c.kind == "quorum" && c.status == Status::Fail)
    {
        return Err(CliError::local(
            ErrorCode::NotLeader,
            format!("the coordinator cluster has no quorum: {}", failed.detail),
        )
        .suggest("start the coordinators that are down (see `nexus admin status`)"));
    }
    Ok(EXIT_FAILED)
}

/// Asks everyone, at once where it can; what does not answer is recorded, not fatal.
async fn gather(settings: &Settings) -> Facts {
    let message = |e: CliError| e.error.message.clone();
    let status = leader_status(settings).await.map_err(message);
    let quorum = status.as_ref().is_ok_and(|s| fleet::quorum(s).ok);
    // Without a leader, what a coordinator's own replica holds (no stats: those live on the
    // leader).
    let read = |request: AdminRequest| {
        if quorum {
            Request::Admin(request)
        } else {
            Request::Stale(StaleRead::Admin(request))
        }
    };
    let coordinators = match &status {
        Ok(status) => {
            let asks = status
                .members
                .iter()
                .filter(|m| !m.addr.is_empty())
                .map(|m| async move {
                    let answer = async {
                        let connection = settings.connect_to(&m.addr).await?;
                        let request =
                            Request::Admin(AdminRequest::Diagnostic(Diagnostic::Certificates));
                        diagnostic(&connection, request).await
                    };
                    let answer = bounded(answer).await.and_then(|text| certificates(&text));
                    (format!("coordinator-{}", m.id), answer.map_err(message))
                });
            futures_util::future::join_all(asks).await
        }
        Err(_) => Vec::new(),
    };
    // Hosts' stats live in the leader's memory: asked of a follower, they would be missing.
    let leader = status.as_ref().ok().and_then(|s| {
        let leader = s.leader?;
        s.members
            .iter()
            .find(|m| m.id == leader && !m.addr.is_empty())
            .map(|m| m.addr.clone())
    });
    let of_leader = async {
        let connection = settings.connect_to(leader.as_deref()?).await.ok()?;
        connection
            .request_with(
                RequestId::random(),
                Request::Admin(AdminRequest::Hosts),
                READ_TIMEOUT,
            )
            .await
            .ok()
    };
    let of_leader = if quorum { of_leader.await } else { None };
    let hosts = match of_leader {
        Some(answer) => Ok(answer),
        None => {
            settings
                .request(read(AdminRequest::Hosts), READ_TIMEOUT)
                .await
        }
    };
    let hosts = match hosts {
        Ok(Response::Hosts(hosts)) => Ok(hosts),
        Ok(other) => Err(CliError::unexpected(&other).error.message.clone()),
        Err(error) => Err(message(error)),
    };
    let endpoints = if quorum {
        match settings
            .request(Request::Admin(AdminRequest::Endpoints), READ_TIMEOUT)
            .await
        {
            Ok(Response::Endpoints(endpoints)) => endpoints,
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let agents = futures_util::stream::iter(endpoints)
        .map(|(host, address)| ask_agent(settings, host, address))
        .buffer_unordered(AGENTS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let workspaces = crate::listing::workspaces(settings, !quorum, READ_TIMEOUT)
        .await
        .map_err(message);
    let mut agents = agents;
    agents.sort_by(|a, b| a.host.cmp(&b.host));
    Facts {
        status,
        coordinators,
        hosts,
        agents,
        workspaces,
    }
}

/// One agent's readiness and certificates.
async fn ask_agent(settings: &Settings, host: HostId, address: String) -> AgentFacts {
    let message = |e: CliError| e.error.message.clone();
    let connection = bounded(connect_agent(settings, &host, &address)).await;
    let (readiness, certificates, orphans) = match connection {
        Err(error) => {
            let why = message(error);
            (Err(why.clone()), Err(why.clone()), Err(why))
        }
        Ok(connection) => {
            let ask = |diagnostic| {
                let connection = &connection;
                async move {
                    bounded(self::diagnostic(
                        connection,
                        Request::Host(HostRequest::Diagnostic(diagnostic)),
                    ))
                    .await
                }
            };
            let orphans = async {
                let answer = connection.request_with(
                    RequestId::random(),
                    Request::Host(HostRequest::Orphans),
                    ASK_TIMEOUT,
                );
                match bounded(async { Ok(answer.await?) }).await? {
                    Response::Orphans(orphans) => Ok(orphans),
                    other => Err(CliError::unexpected(&other)),
                }
            };
            let (readiness, certs, orphans) = tokio::join!(
                ask(Diagnostic::Readiness),
                ask(Diagnostic::Certificates),
                orphans
            );
            (
                readiness.map_err(message),
                certs
                    .and_then(|text| self::certificates(&text))
                    .map_err(message),
                orphans.map_err(message),
            )
        }
    };
    AgentFacts {
        host,
        readiness,
        certificates,
        orphans,
    }
}

async fn diagnostic(connection: &Connection, request: Request) -> Result<String, CliError> {
    match connection
        .request_with(RequestId::random(), request, ASK_TIMEOUT)
        .await?
    {
        Response::Diagnostic(text) => Ok(text),
        other => Err(CliError::unexpected(&other)),
    }
}

fn certificates(text: &str) -> Result<Vec<CertificateInfo>, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::local(
            ErrorCode::ProtocolError,
            format!("certificates that are not JSON: {e}"),
        )
    })
}

/// `work` within [`ASK_TIMEOUT`].
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::time::timeout(ASK_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(CliError::local(
                ErrorCode::Timeout,
                format!("no answer within {} s", ASK_TIMEOUT.as_secs()),
            ))
        })
}
