//! `nexus admin workspace repair (NAME | --all [--host H] [--state failed|lost])`. One workspace
//! is repaired as `workspace repair` does; `--all` chooses the failed and lost workspaces (or
//! those of `--state`, on `--host`), repairs them [`CONCURRENCY`] at a time with a progress bar
//! on a terminal, waits for each to run again (unless `--no-wait`), and sums up: repaired N,
//! failed M with each one's error, and a non-zero exit when any failed.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{Request, Response, WorkspaceRequest};
use nexus_protocol::model::{WorkspaceState, WorkspaceView};
use nexus_protocol::transport::Connection;
use nexus_protocol::{HostId, RequestId, WorkspaceName};

use crate::args::{OutputFormat, RepairArgs, RepairState, WaitArgs};
use crate::commands::workspace::{self, Goal};
use crate::error::CliError;
use crate::output::emit;
use crate::output::events::{RepairSummary, repair_summary_json, repair_summary_text};
use crate::progress::Progress;
use crate::settings::{Client, Settings};

/// How many workspaces are repaired at once.
pub const CONCURRENCY: usize = 8;

/// How long a request waits for its answer (a repair waits for a Raft commit).
const TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(
    settings: &Settings,
    args: RepairArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    if !args.all {
        let Some(name) = args.name else {
            return Err(
                CliError::local(ErrorCode::InvalidArgument, "no workspace named")
                    .suggest("name one, or repair every failed and lost one with --all"),
            );
        };
        let request = WorkspaceRequest::Repair(name.clone());
        let wait = Some((name, Goal::Running, args.wait));
        return workspace::change(settings, request, wait, format).await;
    }
    let views = crate::listing::workspaces(settings, false, TIMEOUT).await?;
    let names = select(&views, args.state, args.host.as_ref());
    let progress = Progress::new(names.len() as u64, "repairing");
    let summary = repair_all(settings, names, args.wait, &progress).await;
    progress.finish();
    emit(format, &repair_summary_json(&summary), || {
        repair_summary_text(&summary)
    });
    match failure(&summary) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The workspaces `--all` repairs, by name: in `state` (failed and lost when not given), on
/// `host` when given.
pub fn select(
    views: &[WorkspaceView],
    state: Option<RepairState>,
    host: Option<&HostId>,
) -> Vec<WorkspaceName> {
    let wanted = |s: WorkspaceState| match state {
        Some(RepairState::Failed) => s == WorkspaceState::Failed,
        Some(RepairState::Lost) => s == WorkspaceState::Lost,
        None => matches!(s, WorkspaceState::Failed | WorkspaceState::Lost),
    };
    let mut names: Vec<WorkspaceName> = views
        .iter()
        .filter(|v| wanted(v.state) && host.is_none_or(|h| v.host.as_ref() == Some(h)))
        .map(|v| v.name.clone())
        .collect();
    names.sort();
    names
}

/// The error a summary with failures exits with: their code if they share one, else
/// `WORKSPACE_START_FAILED`. `None` when all were repaired.
pub fn failure(summary: &RepairSummary) -> Option<CliError> {
    let (_, first) = summary.failed.first()?;
    let code = if summary.failed.iter().all(|(_, e)| e.code == first.code) {
        first.code
    } else {
        ErrorCode::WorkspaceStartFailed
    };
    let message = format!(
        "{} of {} workspaces were not repaired",
        summary.failed.len(),
        summary.selected
    );
    Some(CliError::local(code, message).suggest(
        "see each one's error above and its history with `nexus admin workspace events NAME`; a \
         lost workspace's host must come back first",
    ))
}

/// Repairs `names`, [`CONCURRENCY`] at a time, counting each on `progress`.
async fn repair_all(
    settings: &Settings,
    names: Vec<WorkspaceName>,
    wait: WaitArgs,
    progress: &Progress,
) -> RepairSummary {
    let selected = names.len();
    let queue = Mutex::new(names.into_iter());
    let outcomes = Mutex::new(Vec::with_capacity(selected));
    let workers = (0..CONCURRENCY.min(selected)).map(|_| async {
        let mut worker = Worker {
            settings,
            connection: None,
            client: None,
        };
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some(name) = next else {
                break;
            };
            progress.say(name.as_str());
            let outcome = worker.repair(&name, wait).await;
            progress.advance(name.as_str());
            outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((name, outcome));
        }
    });
    futures_util::future::join_all(workers).await;
    let mut summary = RepairSummary {
        selected,
        ..RepairSummary::default()
    };
    let mut outcomes = outcomes
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, outcome) in outcomes {
        match outcome {
            Ok(()) => summary.repaired.push(name),
            Err(error) => summary.failed.push((name, error)),
        }
    }
    summary
}

/// One of the repairs running at once: its own connection for the repairs and client for the
/// waits.
struct Worker<'a> {
    settings: &'a Settings,
    connection: Option<Connection>,
    client: Option<Client<'a>>,
}

impl Worker<'_> {
    /// Asks for `name`'s repair once and, unless told not to, waits for it to run. Once: a
    /// refusal is the answer (a lost workspace's host is down: asking again every few seconds,
    /// as a single command does, would hold the whole run up), and any coordinator takes the
    /// write (a follower forwards it), so there is no leader to look for.
    async fn repair(&mut self, name: &WorkspaceName, wait: WaitArgs) -> Result<(), WireError> {
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => self.settings.connect().await.map_err(|e| *e.error)?,
        };
        let request = Request::Workspace(WorkspaceRequest::Repair(name.clone()));
        let answer = connection
            .request_with(RequestId::random(), request, TIMEOUT)
            .await;
        match answer {
            Ok(Response::Workspace(_)) => self.connection = Some(connection),
            Ok(other) => {
                self.connection = Some(connection);
                return Err(*CliError::unexpected(&other).error);
            }
            Err(error) => {
                // An answer leaves the connection good for the next; a failed one is replaced.
                if !matches!(error.code, ErrorCode::NetworkError | ErrorCode::Timeout) {
                    self.connection = Some(connection);
                }
                return Err(error);
            }
        }
        if wait.no_wait {
            return Ok(());
        }
        let client = match &mut self.client {
            Some(client) => client,
            None => self
                .client
                .insert(self.settings.client().map_err(|e| *e.error)?),
        };
        let limit = Duration::from_secs(wait.timeout);
        workspace::wait_for(client, name, Goal::Running, limit, |_, _| {})
            .await
            .map(|_| ())
            .map_err(|e| *e.error)
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::model::ResourceClass;

    use super::*;

    fn view(name: &str, state: WorkspaceState, host: &str) -> WorkspaceView {
        WorkspaceView {
            name: name.parse().unwrap(),
            owner: "ada".parse().unwrap(),
            state,
            host: Some(HostId::new(host).unwrap()),
            image: "dev:latest".into(),
            class: ResourceClass::Small,
            ports: vec![],
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn all_chooses_the_failed_and_lost_narrowed_by_state_and_host() {
        use WorkspaceState::*;
        let views = [
            view("d", Failed, "h1"),
            view("a", Lost, "h2"),
            view("b", Running, "h1"),
            view("c", Failed, "h2"),
            view("e", Stopped, "h2"),
            view("f", Scheduled, "h1"),
        ];
        let names = |state, host: Option<&str>| -> Vec<String> {
            let host = host.map(|h| HostId::new(h).unwrap());
            select(&views, state, host.as_ref())
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(names(None, None), ["a", "c", "d"]);
        assert_eq!(names(Some(RepairState::Failed), None), ["c", "d"]);
        assert_eq!(names(Some(RepairState::Lost), None), ["a"]);
        assert_eq!(names(None, Some("h2")), ["a", "c"]);
        assert_eq!(
            names(Some(RepairState::Lost), Some("h1")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn repair_takes_a_name_or_all_with_its_filters() {
        use clap::Parser;

        use crate::args::{AdminCommand, AdminWorkspaceCommand, Cli, Command};
        let parse = |args: &[&str]| {
            let line = ["nexus", "admin", "workspace", "repair"].iter().chain(args);
            Cli::try_parse_from(line).map(|cli| match cli.command {
                Command::Admin(AdminCommand::Workspace(AdminWorkspaceCommand::Repair(args))) => (
                    args.name.map(|n| n.to_string()),
                    args.all,
                    args.host,
                    args.state,
                ),
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(
            parse(&["api"]).unwrap(),
            (Some("api".into()), false, None, None)
        );
        assert_eq!(
            parse(&["--all", "--host", "h1", "--state", "lost"]).unwrap(),
            (
                None,
                true,
                Some(HostId::new("h1").unwrap()),
                Some(RepairState::Lost)
            )
        );
        for wrong in [
            &[][..],
            &["api", "--all"],
            &["--host", "h1"],
            &["api", "--state", "failed"],
            &["--all", "--state", "running"],
        ] {
            assert!(parse(wrong).is_err(), "{wrong:?} must be refused");
        }
    }

    #[test]
    fn any_failure_fails_the_run_with_the_code_they_share() {
        let error = |code| WireError::new(code, "why");
        let name = |n: &str| n.parse::<WorkspaceName>().unwrap();
        let mut summary = RepairSummary {
            selected: 3,
            repaired: vec![name("a")],
            failed: vec![],
        };
        assert_eq!(failure(&summary), None);
        summary.failed = vec![
            (name("b"), error(ErrorCode::BackendUnavailable)),
            (name("c"), error(ErrorCode::BackendUnavailable)),
        ];
        let shared = failure(&summary).unwrap();
        assert_eq!(shared.error.code, ErrorCode::BackendUnavailable);
        assert_eq!(shared.error.message, "2 of 3 workspaces were not repaired");
        summary.failed[1].1 = error(ErrorCode::Timeout);
        assert_eq!(
            failure(&summary).unwrap().error.code,
            ErrorCode::WorkspaceStartFailed
        );
    }
}
