//! `nexus workspace logs|exec` and `nexus admin networks`: asked of the hosts' agents themselves,
//! reached through [`crate::agents`].

use std::io::Write;
use std::time::Duration;

use nexus_protocol::WorkspaceName;
use nexus_protocol::message::{HostRequest, Request, Response};
use serde_json::json;

use crate::agents::{READ_TIMEOUT, agent_of, connect_agent};
use crate::args::OutputFormat;
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;

/// How long an exec may take: the agent gives up at 10 minutes.
const EXEC_TIMEOUT: Duration = Duration::from_secs(610);

/// `nexus admin networks`: every host's workspace networks, asked of each agent at once. A host
/// whose agent does not answer is listed as unreachable, not left out.
pub async fn networks(settings: &Settings, format: OutputFormat) -> Result<(), CliError> {
    let request = Request::Admin(nexus_protocol::message::AdminRequest::Endpoints);
    let endpoints = match settings.request(request, READ_TIMEOUT).await? {
        Response::Endpoints(endpoints) => endpoints,
        other => return Err(CliError::unexpected(&other)),
    };
    let asks = endpoints.into_iter().map(|(host, address)| async move {
        let answer = async {
            let connection = connect_agent(settings, &host, &address).await?;
            match connection
                .request_with(
                    settings.next_request_id(),
                    Request::Host(HostRequest::Networks),
                    READ_TIMEOUT,
                )
                .await?
            {
                Response::Networks(networks) => Ok(networks),
                other => Err(CliError::unexpected(&other)),
            }
        }
        .await;
        (host, answer)
    });
    let answers = futures_util::future::join_all(asks).await;
    let mut rows = Vec::new();
    let mut unreachable = Vec::new();
    for (host, answer) in answers {
        match answer {
            Ok(networks) => rows.extend(networks.into_iter().map(|n| (host.clone(), n))),
            Err(error) => unreachable.push((host, error.error.message.clone())),
        }
    }
    output::emit(format, &output::networks_json(&rows, &unreachable), || {
        output::networks_table(&rows, &unreachable)
    });
    Ok(())
}

pub async fn logs(
    settings: &Settings,
    args: crate::args::LogsArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let crate::args::LogsArgs { name, tail, follow } = args;
    let (host, connection) = agent_of(settings, &name).await?;
    let request = Request::Host(HostRequest::Logs {
        workspace: name.clone(),
        tail,
        follow,
    });
    // One JSON document, or with --follow one per batch of lines (JSON lines).
    let print = |lines: Vec<String>| {
        let json = json!({"workspace": name.as_str(), "host": host.as_str(), "lines": lines});
        output::emit(format, &json, || {
            lines.iter().map(|line| format!("{line}\n")).collect()
        });
    };
    if !follow {
        return match connection
            .request_with(settings.next_request_id(), request, READ_TIMEOUT)
            .await?
        {
            Response::LogLines(lines) => {
                print(lines);
                Ok(())
            }
            other => Err(CliError::unexpected(&other)),
        };
    }
    let mut frames = connection
        .subscribe_with(settings.next_request_id(), request)
        .await?;
    while let Some(frame) = frames.next().await {
        match frame? {
            Response::LogLines(lines) => print(lines),
            other => return Err(CliError::unexpected(&other)),
        }
    }
    Ok(())
}

/// Runs the command; answers its exit code (clamped to 0–255; a signal's death is 255).
pub async fn exec(
    settings: &Settings,
    name: WorkspaceName,
    command: Vec<String>,
    format: OutputFormat,
) -> Result<u8, CliError> {
    let (host, connection) = agent_of(settings, &name).await?;
    let request = Request::Host(HostRequest::Exec {
        workspace: name.clone(),
        command,
    });
    let result = match connection
        .request_with(settings.next_request_id(), request, EXEC_TIMEOUT)
        .await?
    {
        Response::Exec(result) => result,
        other => return Err(CliError::unexpected(&other)),
    };
    match format {
        OutputFormat::Json => output::print(&format!(
            "{}\n",
            json!({
                "workspace": name.as_str(),
                "host": host.as_str(),
                "exit_code": result.exit_code,
                "stdout": String::from_utf8_lossy(&result.stdout),
                "stderr": String::from_utf8_lossy(&result.stderr),
                "truncated": result.truncated,
            })
        )),
        OutputFormat::Table => {
            let _ = std::io::stdout().lock().write_all(&result.stdout);
            let _ = std::io::stdout().lock().flush();
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&result.stderr);
            if result.truncated {
                let _ = writeln!(
                    stderr,
                    "nexus: the output was cut at {} MiB per stream",
                    nexus_protocol::message::ExecResult::MAX_OUTPUT >> 20
                );
            }
        }
    }
    Ok(u8::try_from(result.exit_code).unwrap_or(u8::MAX))
}
