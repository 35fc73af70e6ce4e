//! `nexus workspace ...`: a user's workspaces. A change is accepted by the coordinator first
//! (committed through Raft) and carried out by the workspace's host after; the commands that
//! change a workspace wait for the host too, unless `--no-wait`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{DesiredRun, Request, Response, WorkspaceDetail, WorkspaceRequest};
use nexus_protocol::model::{PortSpec, ResourceClass, Scoring, WorkspaceSpec, WorkspaceState};
use nexus_protocol::transport::Subscription;

use crate::args::{ClassArg, OutputFormat, WaitArgs, WorkspaceCommand};
use crate::commands::{events, host, policies, repo_view};
use crate::error::CliError;
use crate::output;
use crate::settings::{Client, Settings};

/// How long a request waits for its answer (a create waits for a Raft commit).
const TIMEOUT: Duration = Duration::from_secs(30);

/// How often a waiting command asks for the workspace's state when it cannot watch it. A read is
/// one round trip on a kept connection (and a Raft read index on the leader): cheap enough to
/// keep the wait short.
const POLL: Duration = Duration::from_millis(50);

/// How long a watch may say nothing before the wait asks for the workspace itself: a coordinator
/// cut off from its leader hears of no change, and a request goes where requests go.
const QUIET: Duration = Duration::from_secs(1);

/// Runs one workspace command; answers the exit code (an exec's command's own, else 0).
pub async fn run(
    command: WorkspaceCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<u8, CliError> {
    let (request, wait) = match command {
        WorkspaceCommand::Create(args) => {
            let repo = args.repo.source()?;
            let spec = WorkspaceSpec {
                name: args.name.clone(),
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
                repo,
            };
            let scoring = if args.spread {
                Some(Scoring::Spread)
            } else {
                args.scoring
            };
            let request = match scoring {
                // The older request, which every coordinator of this major version answers.
                None => WorkspaceRequest::Create(spec),
                Some(scoring) => WorkspaceRequest::CreateWith {
                    spec,
                    scoring: Some(scoring),
                },
            };
            (request, Some((args.name, Goal::Running, args.wait)))
        }
        WorkspaceCommand::List { stale } => {
            return list(settings, stale, format, TIMEOUT, |_| true)
                .await
                .map(|()| 0);
        }
        WorkspaceCommand::Inspect { name } => {
            return inspect(settings, name, format).await.map(|()| 0);
        }
        WorkspaceCommand::Logs(args) => {
            return host::logs(settings, args, format).await.map(|()| 0);
        }
        WorkspaceCommand::Exec { name, command } => {
            return host::exec(settings, name, command, format).await;
        }
        WorkspaceCommand::Hold { name } => {
            return policies::hold(settings, name, true, format)
                .await
                .map(|()| 0);
        }
        WorkspaceCommand::Release { name } => {
            return policies::hold(settings, name, false, format)
                .await
                .map(|()| 0);
        }
        WorkspaceCommand::Events(args) => {
            return events::run(settings, args, format).await.map(|()| 0);
        }
        WorkspaceCommand::Sync(_) => {
            return Err(CliError::local(
                ErrorCode::Internal,
                "sync commands are run by commands::sync",
            ));
        }
        WorkspaceCommand::Start(t) => (
            WorkspaceRequest::Start(t.name.clone()),
            Some((t.name, Goal::Running, t.wait)),
        ),
        WorkspaceCommand::Stop(t) => (
            WorkspaceRequest::Stop(t.name.clone()),
            Some((t.name, Goal::Stopped, t.wait)),
        ),
        WorkspaceCommand::Restart(t) => (
            WorkspaceRequest::Restart(t.name.clone()),
            Some((t.name, Goal::Running, t.wait)),
        ),
        WorkspaceCommand::Destroy(t) => (
            WorkspaceRequest::Destroy(t.name.clone()),
            Some((t.name, Goal::Gone, t.wait)),
        ),
        WorkspaceCommand::Switch(t) => (
            WorkspaceRequest::Switch(t.name.clone()),
            Some((t.name, Goal::Running, t.wait)),
        ),
        WorkspaceCommand::Repair(t) => (
            WorkspaceRequest::Repair(t.name.clone()),
            Some((t.name, Goal::Running, t.wait)),
        ),
        WorkspaceCommand::Cleanup(args) => (
            WorkspaceRequest::Cleanup {
                older_than_secs: args.older_than,
            },
            None,
        ),
    };
    change(settings, request, wait, format).await.map(|()| 0)
}

/// Sends a change and, unless told not to, waits for its workspace to reach `goal`; prints the
/// workspace as it ends up.
pub async fn change(
    settings: &Settings,
    request: WorkspaceRequest,
    wait: Option<(WorkspaceName, Goal, WaitArgs)>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let mut client = settings
        .client()?
        .with_first_attempt(crate::settings::FIRST_ATTEMPT);
    let answer = client.request(Request::Workspace(request), TIMEOUT).await?;
    let Some((name, goal, args)) = wait.filter(|(_, _, args)| !args.no_wait) else {
        return print_answer(answer, format);
    };
    let progress = Progress::new(&name, format);
    let limit = Duration::from_secs(args.timeout);
    let outcome = wait_for(&mut client, &name, goal, limit, |state, elapsed| {
        progress.show(state, elapsed)
    })
    .await;
    progress.clear();
    match outcome? {
        Some(detail) => print_answer(Response::Workspace(detail.view), format),
        // Gone: print it as the coordinator last answered, in its last state.
        None => print_answer(answer, format),
    }
}

/// `inspect`: everything the coordinator knows of one workspace, and its newest events.
pub async fn inspect(
    settings: &Settings,
    name: WorkspaceName,
    format: OutputFormat,
) -> Result<(), CliError> {
    let mut client = settings
        .client()?
        .with_first_attempt(crate::settings::FIRST_ATTEMPT);
    let request = Request::Workspace(WorkspaceRequest::Describe(name.clone()));
    let detail = match client.request(request, TIMEOUT).await? {
        Response::WorkspaceDetail(detail) => detail,
        other => return Err(CliError::unexpected(&other)),
    };
    // A second request: the detail is a wire type of its own, and older coordinators keep no
    // events.
    let events = crate::commands::events::for_inspect(&mut client, &name).await?;
    // A third: the lifecycle (last activity, hold, policy, next action), none from a
    // coordinator that does not know it.
    let lifecycle = policies::for_inspect(&mut client, &name).await?;
    // A fourth, for a workspace from a repository: its worktree, live from its host.
    let worktree = match &detail.spec.repo {
        Some(_) => Some(repo_view::for_inspect(&mut client, &name).await?),
        None => None,
    };
    let mut json = output::events::workspace_inspect_json(&detail, &events);
    if let (Some(view), serde_json::Value::Object(map)) = (&lifecycle, &mut json) {
        map.insert("lifecycle".into(), output::policies::lifecycle_json(view));
    }
    if let (Some(repo), serde_json::Value::Object(map)) = (&detail.spec.repo, &mut json) {
        map.insert(
            "worktree".into(),
            repo_view::json(repo, worktree.as_ref().and_then(Option::as_ref)),
        );
    }
    output::emit(format, &json, || {
        let mut text = output::events::workspace_inspect_text(&detail, &events);
        if let Some(view) = &lifecycle {
            text.push_str(&output::policies::lifecycle_text(
                view,
                nexus_protocol::clock::now(),
            ));
        }
        if let Some(repo) = &detail.spec.repo {
            text.push_str(&repo_view::text(
                repo,
                worktree.as_ref().and_then(Option::as_ref),
            ));
        }
        text
    });
    Ok(())
}

/// Prints the workspaces `keep` keeps, of every one the caller may see. As JSON, each page is
/// printed as it arrives, by a thread of its own while the next page is asked for (one array,
/// as it always was; should a later page fail, the array is left unclosed and the exit code
/// says so); a table waits for all, to size its columns.
pub(crate) async fn list(
    settings: &Settings,
    stale: bool,
    format: OutputFormat,
    limit: Duration,
    keep: impl Fn(&nexus_protocol::model::WorkspaceView) -> bool + Send + 'static,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => {
            /// What the printing thread is handed: pages, then the word that there are no more.
            enum Printing {
                Page(Vec<nexus_protocol::model::WorkspaceView>),
                Done,
            }
            let (pages, printer) = std::sync::mpsc::channel();
            let printing = std::thread::spawn(move || {
                let stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
                let mut out = output::JsonArray::new(stdout);
                for printing in printer {
                    match printing {
                        Printing::Page(page) => {
                            for view in page.iter().filter(|v| keep(v)) {
                                out.push(&output::WorkspaceJson::of(view));
                            }
                            out.flush();
                        }
                        Printing::Done => {
                            out.finish();
                            return;
                        }
                    }
                }
            });
            let fetched = crate::listing::each_page(settings, stale, limit, |page| {
                let _ = pages.send(Printing::Page(page));
            })
            .await;
            if fetched.is_ok() {
                let _ = pages.send(Printing::Done);
            }
            drop(pages);
            let _ = printing.join();
            fetched
        }
        OutputFormat::Table => {
            let mut views = crate::listing::workspaces(settings, stale, limit).await?;
            views.retain(|v| keep(v));
            output::print(&output::workspaces_table(&views));
            Ok(())
        }
    }
}

fn print_answer(answer: Response, format: OutputFormat) -> Result<(), CliError> {
    match answer {
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

/// Where a change leaves a workspace once its host has carried it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Running,
    Stopped,
    Gone,
}

/// What one look at a workspace says about the wait.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Done,
    Waiting,
    Failed(CliError),
}

/// Judges one look at the workspace against the goal. Pure, so it is tested on its own.
///
/// The desired state must agree as well as the observed one: right after a restart the
/// workspace still runs, but is wanted stopped until its host has stopped it, so the old
/// `running` is not mistaken for the new.
pub fn judge(detail: &WorkspaceDetail, goal: Goal) -> Verdict {
    let view = &detail.view;
    let name = &view.name;
    match (goal, view.state, detail.desired) {
        (Goal::Running, WorkspaceState::Running, DesiredRun::Running)
        | (Goal::Stopped, WorkspaceState::Stopped, DesiredRun::Stopped)
        | (Goal::Gone, WorkspaceState::Gone, _) => Verdict::Done,
        (Goal::Stopped, WorkspaceState::Failed, DesiredRun::Stopped) => Verdict::Done,
        (Goal::Running, WorkspaceState::Failed, DesiredRun::Running) => {
            let (code, why) = detail.last_error.as_ref().map_or(
                (ErrorCode::WorkspaceStartFailed, "no reason reported".into()),
                |e| (e.code, e.message.clone()),
            );
            let code = if code == ErrorCode::PortConflict {
                code
            } else {
                ErrorCode::WorkspaceStartFailed
            };
            Verdict::Failed(
                CliError::local(code, format!("workspace {name} failed to start: {why}")).suggest(
                    &format!(
                        "see `nexus workspace inspect {name}`, then `nexus workspace repair {name}`"
                    ),
                ),
            )
        }
        (_, WorkspaceState::Lost, _) => {
            let host = view.host.as_ref().map_or("-".into(), ToString::to_string);
            Verdict::Failed(
                CliError::local(
                    ErrorCode::BackendUnavailable,
                    format!("workspace {name} is lost: its host {host} is down"),
                )
                .suggest("it comes back when its host does; see `nexus admin hosts`"),
            )
        }
        _ => Verdict::Waiting,
    }
}

/// Waits for `name` to reach `goal` (its detail; `None` once gone), a failure, or `limit`.
///
/// It watches the workspace (`WorkspaceRequest::Watch`), so it hears of each change as the
/// coordinator applies it. It asks for the workspace itself when the watch has been quiet for
/// [`QUIET`], and every [`POLL`] once the watch has ended or could not start: a coordinator of
/// an earlier release, one at its most watches, one that lost its leader or went away. Those
/// requests go where any request goes (to the leader, elsewhere when the coordinator is gone).
pub async fn wait_for(
    client: &mut Client<'_>,
    name: &WorkspaceName,
    goal: Goal,
    limit: Duration,
    mut progress: impl FnMut(WorkspaceState, Duration),
) -> Result<Option<WorkspaceDetail>, CliError> {
    let started = Instant::now();
    let describe = Request::Workspace(WorkspaceRequest::Describe(name.clone()));
    let watch_request = Request::Workspace(WorkspaceRequest::Watch(name.clone()));
    let mut watch = client
        .subscribe(watch_request, QUIET)
        .await
        .ok()
        .map(forwarded);
    let mut first = true;
    loop {
        let answer = match watch.as_mut() {
            Some(updates) => {
                let quiet = QUIET.min(limit.saturating_sub(started.elapsed())).max(POLL);
                match tokio::time::timeout(quiet, updates.recv()).await {
                    Ok(Some(Ok(response))) => Ok(response),
                    Ok(Some(Err(error))) if watch_answers(error.code) => {
                        Err(crate::session::explain(error))
                    }
                    // Ended, refused or broken: asked from now on.
                    Ok(_) => {
                        watch = None;
                        client.request(describe.clone(), TIMEOUT).await
                    }
                    Err(_quiet) => client.request(describe.clone(), TIMEOUT).await,
                }
            }
            None => {
                if !first {
                    tokio::time::sleep(POLL).await;
                }
                client.request(describe.clone(), TIMEOUT).await
            }
        };
        first = false;
        let state = match answer {
            Ok(Response::WorkspaceDetail(detail)) => match judge(&detail, goal) {
                Verdict::Done => return Ok(Some(*detail)),
                Verdict::Failed(error) => return Err(error),
                Verdict::Waiting => detail.view.state,
            },
            Ok(other) => return Err(CliError::unexpected(&other)),
            Err(error)
                if goal == Goal::Gone && error.error.code == ErrorCode::WorkspaceNotFound =>
            {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let elapsed = started.elapsed();
        progress(state, elapsed);
        if elapsed >= limit {
            return Err(CliError::local(
                ErrorCode::Timeout,
                format!(
                    "workspace {name} is still {state} after {} s",
                    limit.as_secs()
                ),
            )
            .suggest(&format!(
                "the change stands and its host is still at it: see `nexus workspace inspect {name}`, or wait longer with --timeout"
            )));
        }
    }
}

/// A watch's updates as a channel, read from the stream by a task of their own: a read of the
/// stream cut short by the wait's timer would lose the bytes of a frame read so far, and the
/// next read would start in the middle of it; a channel's `recv` loses nothing. The task ends
/// with the stream, or when the channel's receiver is dropped (the stream with it).
fn forwarded(
    mut updates: Subscription,
) -> tokio::sync::mpsc::Receiver<Result<Response, WireError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                update = updates.next_unless_gone() => match update {
                    Some(update) => if sender.send(update).await.is_err() { return },
                    None => return,
                },
                () = sender.closed() => return,
            }
        }
    });
    receiver
}

/// Whether a watch's refusal is the wait's answer, as a request's would be (the workspace is
/// gone, or not the caller's), rather than a reason to ask by requests instead.
fn watch_answers(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::WorkspaceNotFound | ErrorCode::PermissionDenied
    )
}

/// The one-line progress display on stderr: the workspace's state and the time waited. Shown only
/// to a person (a terminal, table output); scripts see only the result.
struct Progress {
    name: String,
    shown: bool,
}

impl Progress {
    fn new(name: &WorkspaceName, format: OutputFormat) -> Progress {
        Progress {
            name: name.to_string(),
            shown: format == OutputFormat::Table && std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, state: WorkspaceState, elapsed: Duration) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(
                stderr,
                "\r\x1b[2K{}: {state} ({:.1} s)",
                self.name,
                elapsed.as_secs_f64()
            );
            let _ = stderr.flush();
        }
    }

    fn clear(&self) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::HostId;
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::error::WireError;
    use nexus_protocol::model::{PortBinding, WorkspaceView};

    use super::*;

    fn detail(state: WorkspaceState, desired: DesiredRun) -> WorkspaceDetail {
        let name = WorkspaceName::new("api").unwrap_or_else(|e| panic!("{e}"));
        WorkspaceDetail {
            view: WorkspaceView {
                name: name.clone(),
                owner: "ada".parse().unwrap_or_else(|e| panic!("{e:?}")),
                state,
                host: Some(HostId::new("dev-01").unwrap_or_else(|e| panic!("{e}"))),
                image: "dev:latest".into(),
                class: ResourceClass::Small,
                ports: vec![PortBinding {
                    container: 3000,
                    host: 20000,
                }],
                created_at: Timestamp(0),
            },
            spec: WorkspaceSpec {
                name,
                ports: nexus_fixtures::ports(&[3000]),
                ..nexus_fixtures::spec("w")
            },
            desired,
            generation: 1,
            updated_at: Timestamp(0),
            last_error: None,
            port_reassigned: false,
        }
    }

    #[test]
    fn a_wait_ends_only_when_the_host_has_done_what_is_wanted() {
        use DesiredRun as D;
        use WorkspaceState as S;
        let done = |s, d, goal| judge(&detail(s, d), goal) == Verdict::Done;
        assert!(done(S::Running, D::Running, Goal::Running));
        // Restarted: still running but wanted stopped first, so not yet done.
        assert!(!done(S::Running, D::Stopped, Goal::Running));
        assert!(!done(S::Starting, D::Running, Goal::Running));
        assert!(!done(S::Scheduled, D::Running, Goal::Running));
        assert!(done(S::Stopped, D::Stopped, Goal::Stopped));
        assert!(!done(S::Stopping, D::Stopped, Goal::Stopped));
        // Stopped, but a start was asked since: not what a stop waits for.
        assert!(!done(S::Stopped, D::Running, Goal::Stopped));
        assert!(!done(S::Destroying, D::Absent, Goal::Gone));
        assert!(done(S::Gone, D::Absent, Goal::Gone));
    }

    #[test]
    fn a_failure_or_a_lost_host_ends_the_wait_with_the_reason() {
        let mut failed = detail(WorkspaceState::Failed, DesiredRun::Running);
        failed.last_error = Some(WireError::new(
            ErrorCode::ContainerError,
            "exec: \"nope\": not found",
        ));
        let Verdict::Failed(error) = judge(&failed, Goal::Running) else {
            panic!("a failed start must end the wait");
        };
        assert_eq!(error.error.code, ErrorCode::WorkspaceStartFailed);
        assert!(error.error.message.contains("not found"), "{error:?}");
        assert!(error.render_text().contains("nexus workspace repair api"));
        let lost = detail(WorkspaceState::Lost, DesiredRun::Running);
        let Verdict::Failed(error) = judge(&lost, Goal::Stopped) else {
            panic!("a lost workspace must end the wait");
        };
        assert_eq!(error.error.code, ErrorCode::BackendUnavailable);
        assert!(error.error.message.contains("dev-01 is down"));
    }
}
