//! `nexus admin ...`: the fleet and the coordinator cluster as admins see them.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{
    AdminRequest, HostView, Request, Response, StaleRead, WorkspaceRequest, WorkspaceUsage,
};
use nexus_protocol::model::HostStatus;

use crate::args::{
    AdminCommand, AdminWorkspaceCommand, ClusterCommand, HostCommand, OutputFormat, TopSort,
};
use crate::cluster::{StatusSeen, leader_view};
use crate::commands::{health, workspace};
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
            print_seen(format, &leader_view(settings).await?);
            Ok(())
        }
        // `crate::run` runs it for its exit code; reached here, the code is lost.
        AdminCommand::HealthCheck(checks) => {
            let limits = health::disk_limits(checks)?;
            health::health_check(settings, limits, format)
                .await
                .map(drop)
        }
        AdminCommand::Host(HostCommand::Remove(args)) => {
            crate::commands::security::remove_host(args, settings, format).await
        }
        AdminCommand::Token(command) => {
            crate::commands::security::token(command, settings, format).await
        }
        AdminCommand::Certs => crate::commands::security::certs(settings, format).await,
        AdminCommand::Ca(command) => crate::commands::ca::run(command, settings, format).await,
        AdminCommand::User(command) => {
            crate::commands::security::user(command, settings, format).await
        }
        AdminCommand::Host(command) => {
            let (host, status) = match command {
                HostCommand::Drain { host } => (host, HostStatus::Draining),
                HostCommand::Cordon { host } => (host, HostStatus::Cordoned),
                HostCommand::Uncordon { host } => (host, HostStatus::Ready),
                HostCommand::Remove(_) => {
                    return Err(CliError::local(
                        ErrorCode::Internal,
                        "admin host remove is run by commands::security",
                    ));
                }
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
        AdminCommand::Credentials(command) => {
            crate::commands::credentials::run(command, settings, format).await
        }
        AdminCommand::Notice(command) => {
            crate::commands::notice::run(command, settings, format).await
        }
        AdminCommand::Networks => crate::commands::host::networks(settings, format).await,
        AdminCommand::SupportBundle {
            file,
            since,
            dry_run,
        } => crate::commands::bundle::run(settings, format, file, since, dry_run).await,
        AdminCommand::Logs(args) => crate::commands::logs::admin_logs(settings, args, format).await,
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
            crate::commands::policies::limits(command, settings, format).await
        }
        AdminCommand::Workspace(command) => match command {
            AdminWorkspaceCommand::List { host, owner, stale } => {
                workspace::list(settings, stale, format, READ_TIMEOUT, move |v| {
                    host.as_ref().is_none_or(|h| v.host.as_ref() == Some(h))
                        && owner.as_ref().is_none_or(|o| &v.owner == o)
                })
                .await
            }
            AdminWorkspaceCommand::Inspect { name } => {
                workspace::inspect(settings, name, format).await
            }
            AdminWorkspaceCommand::Logs(args) if args.system => {
                crate::commands::logs::workspace_system(settings, args.logs, format).await
            }
            AdminWorkspaceCommand::Logs(args) => {
                crate::commands::host::logs(settings, args.logs, format).await
            }
            // `crate::run` runs it for its exit code; reached here, the code is lost.
            AdminWorkspaceCommand::Health { name } => {
                health::workspace_health(settings, name, format)
                    .await
                    .map(drop)
            }
            AdminWorkspaceCommand::SyncStatus { name } => {
                health::sync_sessions(settings, name, health::Sessions::All, format).await
            }
            AdminWorkspaceCommand::SyncConflicts { name } => {
                health::sync_sessions(settings, name, health::Sessions::Conflicted, format).await
            }
            AdminWorkspaceCommand::SyncFlush { name } => {
                health::sync_flush(settings, name, format).await
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
            AdminWorkspaceCommand::Policy { name, policy } => {
                crate::commands::policies::workspace_policy(settings, name, policy, format).await
            }
            AdminWorkspaceCommand::Extend { name, by } => {
                crate::commands::policies::extend(settings, name, by, format).await
            }
            AdminWorkspaceCommand::Stop { idle_for } => {
                crate::commands::policies::stop_idle(settings, idle_for, format).await
            }
            AdminWorkspaceCommand::Orphans(args) => {
                crate::commands::orphans::run(settings, args, format).await
            }
        },
        AdminCommand::Trace(args) => crate::commands::trace::run(args, settings, format).await,
        AdminCommand::Maintenance(command) => {
            crate::commands::maintenance::run(command, settings, format).await
        }
        AdminCommand::Worktree(command) => {
            crate::commands::worktree::run(command, settings, format).await
        }
        AdminCommand::Backup(command) => {
            crate::commands::backup::run(command, settings, format).await
        }
        AdminCommand::Cluster(change) => {
            let request = match change {
                ClusterCommand::Add { id, address } => AdminRequest::ClusterAdd { id, address },
                ClusterCommand::Remove { id } => AdminRequest::ClusterRemove(id),
                ClusterCommand::TransferLeader { id } => AdminRequest::TransferLeader(id),
                ClusterCommand::Members => {
                    print_seen(format, &leader_view(settings).await?);
                    return Ok(());
                }
            };
            match settings
                .request(Request::Admin(request), CHANGE_TIMEOUT)
                .await?
            {
                Response::ClusterStatus(status) => {
                    print_seen(format, &StatusSeen::answered(status));
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

fn print_seen(format: OutputFormat, seen: &StatusSeen) {
    output::emit(format, &output::status_seen_json(seen), || {
        output::status_seen_table(seen)
    });
}
