//! `nexus admin ...`: the fleet and the coordinator cluster as admins see them.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{
    AdminRequest, ClusterStatus, HostView, MemberRole, Request, Response, StaleRead,
    WorkspaceRequest, WorkspaceUsage,
};
use nexus_protocol::model::{HostStatus, LimitsPatch};

use crate::args::{
    AdminCommand, AdminWorkspaceCommand, ClusterCommand, HostCommand, LimitsCommand, OutputFormat,
    TopSort,
};
use crate::commands::workspace;
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;

/// How long a read waits for its answer.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a membership change may take (a new node catching up on a large log).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn run(
    command: AdminCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        AdminCommand::Hosts { stale } => {
            match settings
                .request(read(AdminRequest::Hosts, stale), READ_TIMEOUT)
                .await?
            {
                Response::Hosts(hosts) => {
                    print_hosts(format, &hosts);
                    Ok(())
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
        AdminCommand::Status => {
            print_status(format, &leader_status(settings).await?);
            Ok(())
        }
        AdminCommand::HealthCheck => health_check(settings, format).await,
        AdminCommand::Host(command) => {
            let (host, status) = match command {
                HostCommand::Drain { host } => (host, HostStatus::Draining),
                HostCommand::Cordon { host } => (host, HostStatus::Cordoned),
                HostCommand::Uncordon { host } => (host, HostStatus::Ready),
            };
            let request = Request::Admin(AdminRequest::SetHostStatus { host, status });
            match settings.request(request, READ_TIMEOUT).await? {
                Response::Hosts(hosts) => {
                    print_hosts(format, &hosts);
                    Ok(())
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
        AdminCommand::Ports { stale } => {
            match settings
                .request(read(AdminRequest::Ports, stale), READ_TIMEOUT)
                .await?
            {
                Response::Ports(ports) => {
                    output::emit(format, &output::ports_json(&ports), || {
                        output::ports_table(&ports)
                    });
                    Ok(())
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
        AdminCommand::Networks => crate::commands::host::networks(settings, format).await,
        AdminCommand::SupportBundle {
            file,
            since,
            dry_run,
        } => crate::commands::bundle::run(settings, format, file, since, dry_run).await,
        AdminCommand::Stats => match settings
            .request(Request::Admin(AdminRequest::Stats), READ_TIMEOUT)
            .await?
        {
            Response::FleetStats(stats) => {
                output::emit(format, &output::fleet_stats_json(&stats), || {
                    output::fleet_stats_text(&stats)
                });
                Ok(())
            }
            other => Err(CliError::unexpected(&other)),
        },
        AdminCommand::Top { sort, limit } => match settings
            .request(Request::Admin(AdminRequest::Top), READ_TIMEOUT)
            .await?
        {
            Response::Usage(mut usage) => {
                sort_usage(&mut usage, sort);
                usage.truncate(limit.unwrap_or(usize::MAX));
                output::emit(format, &output::usage_json(&usage), || {
                    output::usage_table(&usage, clock::now())
                });
                Ok(())
            }
            other => Err(CliError::unexpected(&other)),
        },
        AdminCommand::Limits(command) => {
            let request = match command {
                LimitsCommand::Show => AdminRequest::Limits,
                LimitsCommand::Set(args) => {
                    let patch = LimitsPatch {
                        max_workspaces_per_host: args.max_workspaces_per_host,
                        max_ports_per_workspace: args.max_ports_per_workspace,
                        max_concurrent_ops_per_host: args.max_concurrent_ops,
                        cpu_overcommit_percent: args.cpu_overcommit,
                        memory_overcommit_percent: args.memory_overcommit,
                        scoring: args.scoring,
                    };
                    if patch.is_empty() {
                        return Err(CliError::local(
                            ErrorCode::InvalidArgument,
                            "nothing to set",
                        )
                        .suggest("name at least one limit, e.g. --max-workspaces-per-host 30 (see `nexus admin limits set --help`)"));
                    }
                    // Checked here too, so a typo is refused before anything is sent.
                    patch.check().map_err(|why| {
                        CliError::local(ErrorCode::InvalidArgument, why.to_string())
                            .suggest("see `nexus admin limits set --help` for each limit")
                    })?;
                    AdminRequest::SetLimits {
                        host: args.host,
                        patch,
                    }
                }
            };
            match settings
                .request(Request::Admin(request), READ_TIMEOUT)
                .await?
            {
                Response::Limits(view) => {
                    output::emit(format, &output::limits_view_json(&view), || {
                        output::limits_table(&view)
                    });
                    Ok(())
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
        AdminCommand::Workspace(command) => match command {
            AdminWorkspaceCommand::List { host, owner, stale } => {
                match settings
                    .request(
                        if stale {
                            Request::Stale(StaleRead::Workspace(WorkspaceRequest::List))
                        } else {
                            Request::Workspace(WorkspaceRequest::List)
                        },
                        READ_TIMEOUT,
                    )
                    .await?
                {
                    Response::Workspaces(mut views) => {
                        views.retain(|v| {
                            host.as_ref().is_none_or(|h| v.host.as_ref() == Some(h))
                                && owner.as_ref().is_none_or(|o| &v.owner == o)
                        });
                        let json = serde_json::Value::Array(
                            views.iter().map(output::workspace_json).collect(),
                        );
                        output::emit(format, &json, || output::workspaces_table(&views));
                        Ok(())
                    }
                    other => Err(CliError::unexpected(&other)),
                }
            }
            AdminWorkspaceCommand::Inspect { name } => {
                workspace::inspect(settings, name, format).await
            }
            AdminWorkspaceCommand::Logs(args) => {
                crate::commands::host::logs(settings, args, format).await
            }
            AdminWorkspaceCommand::Exec { .. } => Err(CliError::local(
                ErrorCode::Internal,
                "admin workspace exec is run by commands::trace",
            )),
            AdminWorkspaceCommand::Cleanup { owner, age } => {
                let request = WorkspaceRequest::CleanupOf {
                    owner,
                    older_than_secs: age.older_than,
                };
                workspace::change(settings, request, None, format).await
            }
            AdminWorkspaceCommand::Repair(args) => {
                crate::commands::repair::run(settings, args, format).await
            }
            AdminWorkspaceCommand::Events(args) => {
                crate::commands::events::run(settings, args, format).await
            }
        },
        AdminCommand::Trace(args) => crate::commands::trace::run(args, settings, format).await,
        AdminCommand::Cluster(change) => {
            let request = match change {
                ClusterCommand::Add { id, address } => AdminRequest::ClusterAdd { id, address },
                ClusterCommand::Remove { id } => AdminRequest::ClusterRemove(id),
                ClusterCommand::TransferLeader { id } => AdminRequest::TransferLeader(id),
                ClusterCommand::Members => {
                    print_status(format, &leader_status(settings).await?);
                    return Ok(());
                }
            };
            match settings
                .request(Request::Admin(request), CHANGE_TIMEOUT)
                .await?
            {
                Response::ClusterStatus(status) => {
                    print_status(format, &status);
                    Ok(())
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
    }
}

/// Heaviest first; ties by host and workspace, so the order is stable between runs.
fn sort_usage(usage: &mut [WorkspaceUsage], sort: TopSort) {
    usage.sort_by(|a, b| {
        let heavier = match sort {
            TopSort::Cpu => b.stats.cpu_percent.total_cmp(&a.stats.cpu_percent),
            TopSort::Memory => b.stats.memory_used_bytes.cmp(&a.stats.memory_used_bytes),
        };
        heavier
            .then_with(|| a.host.cmp(&b.host))
            .then_with(|| a.stats.workspace.cmp(&b.stats.workspace))
    });
}

/// An admin read, from the coordinator's own replica when `stale`.
fn read(request: AdminRequest, stale: bool) -> Request {
    if stale {
        Request::Stale(StaleRead::Admin(request))
    } else {
        Request::Admin(request)
    }
}

fn print_hosts(format: OutputFormat, hosts: &[HostView]) {
    output::emit(format, &output::hosts_json(hosts), || {
        output::hosts_table(hosts, clock::now())
    });
}

fn print_status(format: OutputFormat, status: &ClusterStatus) {
    output::emit(format, &output::status_json(status), || {
        output::status_table(status)
    });
}

async fn status_of(
    connection: &nexus_protocol::transport::Connection,
) -> Result<ClusterStatus, CliError> {
    match connection
        .request_with(
            nexus_protocol::RequestId::random(),
            Request::Admin(AdminRequest::Status),
            READ_TIMEOUT,
        )
        .await?
    {
        Response::ClusterStatus(status) => Ok(status),
        other => Err(CliError::unexpected(&other)),
    }
}

/// The status as the leader sees it (it alone knows every member's health and progress), or the
/// first coordinator's own view when the leader is unknown or unreachable.
async fn leader_status(settings: &Settings) -> Result<ClusterStatus, CliError> {
    let connection = settings.connect().await?;
    let status = status_of(&connection).await?;
    let Some(leader) = status.leader.filter(|leader| *leader != status.node) else {
        return Ok(status);
    };
    let Some(address) = status
        .members
        .iter()
        .find(|m| m.id == leader && !m.addr.is_empty())
        .map(|m| m.addr.clone())
    else {
        return Ok(status);
    };
    match settings.connect_to(&address).await {
        Ok(connection) => Ok(status_of(&connection).await.unwrap_or(status)),
        Err(_) => Ok(status),
    }
}

/// Healthy: a leader that hears from a quorum of voters (itself included).
async fn health_check(settings: &Settings, format: OutputFormat) -> Result<(), CliError> {
    let status = leader_status(settings).await?;
    let voters: Vec<_> = status
        .members
        .iter()
        .filter(|m| m.role != MemberRole::Learner)
        .collect();
    let healthy = voters.iter().filter(|m| m.healthy).count();
    let quorum = voters.len() / 2 + 1;
    let leading = status.leader == Some(status.node);
    let ok = leading && healthy >= quorum;
    let json = serde_json::json!({
        "healthy": ok,
        "leader": status.leader.map(|l| l.get()),
        "term": status.term,
        "voters": voters.len(),
        "healthy_voters": healthy,
        "quorum": quorum,
    });
    output::emit(format, &json, || {
        format!(
            "{}: leader {}, {healthy} of {} voters healthy (quorum {quorum}), term {}\n",
            if ok { "healthy" } else { "UNHEALTHY" },
            status.leader.map_or("none".to_string(), |l| l.to_string()),
            voters.len(),
            status.term
        )
    });
    if ok {
        return Ok(());
    }
    let why = if status.leader.is_none() {
        "the cluster has no leader".to_string()
    } else if !leading {
        format!(
            "the leader {} could not be reached",
            status.leader.map_or(0, |l| l.get())
        )
    } else {
        format!("only {healthy} of {} voters are healthy", voters.len())
    };
    Err(CliError::local(
        ErrorCode::NotLeader,
        format!("the coordinator cluster has no quorum: {why}"),
    )
    .suggest("start the coordinators that are down (see `nexus admin status`)"))
}
