//! The lifecycle policies from the command line: `workspace hold|release`, `admin limits [set]`
//! (the scheduler's limits and the policies side by side), `admin workspace policy|extend|stop
//! --idle-for`, and the lifecycle section of `workspace inspect`.

use std::time::Duration;

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, LifecycleView, Request, Response, WorkspaceRequest};
use nexus_protocol::model::LimitsPatch;
use nexus_protocol::policy::{PoliciesView, PolicyPatch, PolicyScope};
use serde_json::Value;

use crate::args::{LimitsCommand, OutputFormat, PolicyArgs};
use crate::error::CliError;
use crate::output;
use crate::settings::{Client, Settings};

/// How long a request waits for its answer (a change waits for a Raft commit).
const TIMEOUT: Duration = Duration::from_secs(15);

fn patch_of(args: PolicyArgs) -> PolicyPatch {
    PolicyPatch {
        inactive_stop_after_secs: args.inactive_stop_after,
        max_lifetime_secs: args.max_lifetime,
        first_notice_secs: args.first_notice,
        last_notice_secs: args.last_notice,
    }
}

fn print_lifecycle(view: &LifecycleView, format: OutputFormat) {
    output::emit(format, &output::policies::lifecycle_json(view), || {
        let text = output::policies::lifecycle_text(view, nexus_protocol::clock::now());
        format!("workspace {}{text}", view.workspace)
    });
}

/// `workspace hold|release NAME`.
pub async fn hold(
    settings: &Settings,
    name: WorkspaceName,
    held: bool,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request = if held {
        WorkspaceRequest::Hold(name)
    } else {
        WorkspaceRequest::Release(name)
    };
    match settings
        .request(Request::Workspace(request), TIMEOUT)
        .await?
    {
        Response::Lifecycle(view) => {
            print_lifecycle(&view, format);
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}

/// `name`'s lifecycle for `inspect`: none from a coordinator that does not know the request.
pub async fn for_inspect(
    client: &mut Client<'_>,
    name: &WorkspaceName,
) -> Result<Option<Box<LifecycleView>>, CliError> {
    let request = Request::Workspace(WorkspaceRequest::Lifecycle(name.clone()));
    match client.request(request, TIMEOUT).await {
        Ok(Response::Lifecycle(view)) => Ok(Some(view)),
        Ok(other) => Err(CliError::unexpected(&other)),
        Err(error) if unknown_request(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The refusal of a coordinator of an earlier release, which does not know the request.
fn unknown_request(error: &CliError) -> bool {
    matches!(
        error.error.code,
        ErrorCode::Unsupported | ErrorCode::ProtocolError
    )
}

/// `admin limits [set ...]`: the limits, then the policies; `set` sends what it names of each.
pub async fn limits(
    command: LimitsCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let mut limits_request = AdminRequest::Limits;
    let mut policy_request = AdminRequest::Policies;
    if let LimitsCommand::Set(args) = command {
        let patch = LimitsPatch {
            max_workspaces_per_host: args.max_workspaces_per_host,
            max_ports_per_workspace: args.max_ports_per_workspace,
            max_concurrent_ops_per_host: args.max_concurrent_ops,
            cpu_overcommit_percent: args.cpu_overcommit,
            memory_overcommit_percent: args.memory_overcommit,
            scoring: args.scoring,
        };
        let policy = patch_of(args.policy);
        if patch.is_empty() && policy.is_empty() {
            return Err(
                CliError::local(ErrorCode::InvalidArgument, "nothing to set").suggest(
                    "name at least one limit or policy, e.g. --max-workspaces-per-host 30 or \
                 --inactive-stop-after 7d (see `nexus admin limits set --help`)",
                ),
            );
        }
        // Checked here too, so a typo is refused before anything is sent.
        patch.check().map_err(|why| {
            CliError::local(ErrorCode::InvalidArgument, why.to_string())
                .suggest("see `nexus admin limits set --help` for each limit")
        })?;
        policy.check().map_err(|why| {
            CliError::local(ErrorCode::InvalidArgument, why.0)
                .suggest("see `nexus admin limits set --help` for each policy")
        })?;
        if !patch.is_empty() {
            limits_request = AdminRequest::SetLimits {
                host: args.host.clone(),
                patch,
            };
        }
        if !policy.is_empty() {
            policy_request = AdminRequest::SetPolicy {
                scope: match args.host {
                    Some(host) => PolicyScope::Host(host),
                    None => PolicyScope::Cluster,
                },
                patch: policy,
            };
        }
    }
    let view = match settings
        .request(Request::Admin(limits_request), TIMEOUT)
        .await?
    {
        Response::Limits(view) => view,
        other => return Err(CliError::unexpected(&other)),
    };
    // A coordinator of an earlier release keeps no policies: its limits alone, unless a policy
    // was asked to be set.
    let reading = matches!(policy_request, AdminRequest::Policies);
    let policies = match settings
        .request(Request::Admin(policy_request), TIMEOUT)
        .await
    {
        Ok(Response::Policies(policies)) => Some(policies),
        Ok(other) => return Err(CliError::unexpected(&other)),
        Err(error) if reading && unknown_request(&error) => None,
        Err(error) => return Err(error),
    };
    let mut json = output::limits_view_json(&view);
    if let (Some(policies), Value::Object(map)) = (&policies, &mut json) {
        map.insert("policies".into(), output::policies::policies_json(policies));
    }
    output::emit(format, &json, || {
        let mut text = output::limits_table(&view);
        if let Some(policies) = &policies {
            text.push_str(&output::policies::policies_table(policies));
        }
        text
    });
    Ok(())
}

fn print_policies(policies: &PoliciesView, format: OutputFormat) {
    output::emit(format, &output::policies::policies_json(policies), || {
        output::policies::policies_table(policies)
    });
}

/// `admin workspace policy NAME --inactive-stop-after DUR ...`.
pub async fn workspace_policy(
    settings: &Settings,
    name: WorkspaceName,
    args: PolicyArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let patch = patch_of(args);
    if patch.is_empty() {
        return Err(
            CliError::local(ErrorCode::InvalidArgument, "nothing to set").suggest(
                "name at least one policy, e.g. --max-lifetime 90d (0 turns it off for this workspace)",
            ),
        );
    }
    let request = AdminRequest::SetPolicy {
        scope: PolicyScope::Workspace(name),
        patch,
    };
    match settings.request(Request::Admin(request), TIMEOUT).await? {
        Response::Policies(policies) => {
            print_policies(&policies, format);
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}

/// `admin workspace extend NAME --by DUR`.
pub async fn extend(
    settings: &Settings,
    name: WorkspaceName,
    by_secs: u64,
    format: OutputFormat,
) -> Result<(), CliError> {
    if by_secs == 0 {
        return Err(
            CliError::local(ErrorCode::InvalidArgument, "extend by more than 0")
                .suggest("e.g. --by 7d"),
        );
    }
    let request = AdminRequest::ExtendLifetime { name, by_secs };
    match settings.request(Request::Admin(request), TIMEOUT).await? {
        Response::Lifecycle(view) => {
            print_lifecycle(&view, format);
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}

/// `admin workspace stop --idle-for DUR`: prints the workspaces it stopped.
pub async fn stop_idle(
    settings: &Settings,
    idle_for_secs: u64,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request = AdminRequest::StopIdle { idle_for_secs };
    match settings.request(Request::Admin(request), TIMEOUT).await? {
        Response::Workspaces(views) => {
            let json = Value::Array(views.iter().map(output::workspace_json).collect());
            output::emit(format, &json, || {
                if views.is_empty() {
                    "no running workspace was idle that long\n".into()
                } else {
                    format!(
                        "stopped {} idle workspace(s):\n{}",
                        views.len(),
                        output::workspaces_table(&views)
                    )
                }
            });
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}
