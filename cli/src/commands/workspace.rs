//! `nexus workspace ...`: a user's workspaces.

use std::time::Duration;

use nexus_protocol::message::{Request, Response, StaleRead, WorkspaceRequest};
use nexus_protocol::model::{PortSpec, ResourceClass, WorkspaceSpec};

use crate::args::{ClassArg, OutputFormat, WorkspaceCommand};
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;

/// How long a request waits for its answer (a create waits for a Raft commit).
const TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(
    command: WorkspaceCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request = match command {
        WorkspaceCommand::Create(args) => {
            let spec = WorkspaceSpec {
                name: args.name,
                image: args.image,
                class: match args.class {
                    ClassArg::Small => ResourceClass::Small,
                    ClassArg::Medium => ResourceClass::Medium,
                    ClassArg::Large => ResourceClass::Large,
                },
                ports: args
                    .ports
                    .into_iter()
                    .map(|container| PortSpec { container })
                    .collect(),
                env: args.env.into_iter().collect(),
                labels: args.labels.into_iter().collect(),
                command: args.command,
                host: args.host,
            };
            Request::Workspace(WorkspaceRequest::Create(spec))
        }
        WorkspaceCommand::List { stale: true } => {
            Request::Stale(StaleRead::Workspace(WorkspaceRequest::List))
        }
        WorkspaceCommand::List { stale: false } => Request::Workspace(WorkspaceRequest::List),
        WorkspaceCommand::Inspect { name } => Request::Workspace(WorkspaceRequest::Inspect(name)),
        WorkspaceCommand::Start { name } => Request::Workspace(WorkspaceRequest::Start(name)),
        WorkspaceCommand::Stop { name } => Request::Workspace(WorkspaceRequest::Stop(name)),
        WorkspaceCommand::Destroy { name } => Request::Workspace(WorkspaceRequest::Destroy(name)),
    };
    match settings.request(request, TIMEOUT).await? {
        Response::Workspace(view) => {
            output::emit(format, &output::workspace_json(&view), || {
                output::workspaces_table(std::slice::from_ref(&view))
            });
            Ok(())
        }
        Response::Workspaces(views) => {
            let json = serde_json::Value::Array(views.iter().map(output::workspace_json).collect());
            output::emit(format, &json, || output::workspaces_table(&views));
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}
