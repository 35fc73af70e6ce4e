//! A workspace's events: `nexus admin workspace events NAME [--follow]` (all it keeps), and the
//! newest few under `workspace inspect`. The coordinators keep them in the replicated state, so
//! any of them answers, and a failover loses none.

use std::time::Duration;

use nexus_protocol::WorkspaceName;
use nexus_protocol::debug::WorkspaceEvent;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{Request, Response, WorkspaceRequest};

use crate::args::{EventsArgs, OutputFormat};
use crate::error::CliError;
use crate::output::events::{event_json, event_line, events_json, events_table};
use crate::output::{emit, print};
use crate::settings::{Client, Settings};

/// How long a request waits for its answer.
const TIMEOUT: Duration = Duration::from_secs(15);

/// How often `--follow` asks for new events.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

pub async fn run(
    settings: &Settings,
    args: EventsArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let mut client = settings.client()?;
    let events = events_of(&mut client, &args.name).await?;
    if !args.follow {
        emit(format, &events_json(&events), || events_table(&events));
        return Ok(());
    }
    // Followed: the events so far, then each new one as it comes (JSON: one object a line).
    let mut last = match format {
        OutputFormat::Table => {
            print(&events_table(&events));
            events.last().map_or(0, |e| e.seq)
        }
        OutputFormat::Json => print_new(&events, 0, format),
    };
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        match events_of(&mut client, &args.name).await {
            Ok(events) => last = print_new(&events, last, format),
            Err(error) if error.error.code == ErrorCode::WorkspaceNotFound => {
                if format == OutputFormat::Table {
                    eprintln!("workspace {} is gone", args.name);
                }
                return Ok(());
            }
            Err(error) => return Err(error),
        }
    }
}

/// Prints the events after sequence number `last`; answers the newest printed.
fn print_new(events: &[WorkspaceEvent], last: u64, format: OutputFormat) -> u64 {
    let mut newest = last;
    for event in events.iter().filter(|e| e.seq > last) {
        match format {
            OutputFormat::Table => print(&event_line(event)),
            OutputFormat::Json => print(&format!("{}\n", event_json(event))),
        }
        newest = newest.max(event.seq);
    }
    newest
}

/// `name`'s events, oldest first.
pub async fn events_of(
    client: &mut Client<'_>,
    name: &WorkspaceName,
) -> Result<Vec<WorkspaceEvent>, CliError> {
    let request = Request::Workspace(WorkspaceRequest::Events(name.clone()));
    match client.request(request, TIMEOUT).await? {
        Response::Events(events) => Ok(events),
        other => Err(CliError::unexpected(&other)),
    }
}

/// `name`'s events for `inspect`: none from a coordinator that does not keep them yet (an older
/// release answers `UNSUPPORTED`), so that `inspect` still shows the rest.
pub async fn for_inspect(
    client: &mut Client<'_>,
    name: &WorkspaceName,
) -> Result<Vec<WorkspaceEvent>, CliError> {
    match events_of(client, name).await {
        Err(error) if error.error.code == ErrorCode::Unsupported => Ok(Vec::new()),
        other => other,
    }
}
