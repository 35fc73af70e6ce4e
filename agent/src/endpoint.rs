//! The agent's own endpoint: users' `nexus workspace logs|exec` and sync sessions come here
//! straight, over QUIC with mTLS, not through the coordinators. The coordinators decide who owns
//! what; the agent learns it with its desired state, so it authorises each request against that:
//! the workspace must be assigned to this host, and the caller must be its owner or an admin.
//! `admin networks` and `admin logs` (the agent's own log) ask here too, admins only. Sync sessions also report here what they
//! measured; [`syncstats`] keeps it as metrics.
//!
//! For debugging: a workspace's health ([`crate::health`]) and its sync sessions (owner or
//! admin), a flush of those sessions, the engine's events about its container, and the
//! agent's own diagnostics ([`crate::diagnostics`]; admins only).
//!
//! For restores: the host's orphan containers, and removing one on an admin's word
//! ([`crate::orphans`]; admins only).

mod credentials;
mod maintenance;
pub mod syncstats;
mod worktree;

use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::Diagnostic;
use nexus_protocol::debug::LogQuery;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::logging::{LogFiles, serve};
use nexus_protocol::message::{
    Assignment, DesiredState, ExecResult, HostRequest, NetworkView, Pong, Request, Response,
};
use nexus_protocol::model::ActivityKind;
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{RequestId, UserName, WorkspaceName, clock, codec};
use nexus_sync::remote::Served;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::sync::{Mutex, mpsc, watch};

use crate::activity::{self, Activities};
use crate::diagnostics::Diagnostics;
use crate::hops;
use crate::runtime::{ContainerStatus, Runtime, RuntimeError};
use syncstats::SyncStats;
use tracing::Instrument;

/// The most lines a logs request may ask for.
pub const MAX_TAIL: u32 = 100_000;
/// The most arguments, and bytes in all, an exec's command may have.
const MAX_ARGS: usize = 1_024;
const MAX_COMMAND_BYTES: usize = 256 << 10;
/// Lines of a followed log sent together, at most; a frame goes as soon as lines wait.
const FOLLOW_BATCH: usize = 256;
/// How long an exec may run before the agent stops waiting for it.
const EXEC_LIMIT: Duration = Duration::from_secs(600);

/// Serves [`HostRequest`]s for the workspaces of this host.
#[derive(Debug)]
pub struct Endpoint<R> {
    identity: Identity,
    runtime: Arc<R>,
    desired: watch::Receiver<Option<DesiredState>>,
    /// Where workspaces' files directories are (sync sessions' roots), if anywhere.
    files: Option<PathBuf>,
    /// One served root per workspace, kept between requests (its scanner remembers digests).
    sync: Mutex<BTreeMap<WorkspaceName, Synced>>,
    /// Where sync sessions' reports go; without it they are accepted and dropped.
    sync_stats: Option<SyncStats>,
    /// This agent's own log (`nexus admin logs`), when it writes one.
    logs: Option<LogFiles>,
    /// What the agent tells admins of itself; without it, diagnostics are `UNSUPPORTED`.
    diagnostics: Option<Arc<Diagnostics>>,
    /// Re-reads the agent's configuration (`ReloadConfig`); without it, `UNSUPPORTED`.
    reloader: Option<Arc<crate::reload::Reloader>>,
    /// Where maintenance runs are counted, if anywhere.
    maintenance: Option<nexus_telemetry::maintenance::MaintenanceMetrics>,
    /// Where exec, logs and sync note that a workspace was used; without it, nowhere.
    activity: Option<Activities>,
    /// Verifies this host's worktrees (worktree verify); without it, `UNSUPPORTED`.
    worktrees: Option<Arc<crate::git::verify::Verifier>>,
    git: Option<Arc<crate::git::host::GitHost>>,
}

/// A workspace's served files, and the count of changes its watcher has seen (what
/// `WaitChange` waits on, without holding the served side). A flush counts one too: the
/// sessions waiting on the count then cycle, as for a change.
#[derive(Debug, Clone)]
struct Synced {
    served: Arc<Mutex<Served>>,
    changes: watch::Receiver<u64>,
    count: Arc<watch::Sender<u64>>,
}

impl<R: Runtime> Endpoint<R> {
    pub fn new(
        identity: Identity,
        runtime: Arc<R>,
        desired: watch::Receiver<Option<DesiredState>>,
    ) -> Endpoint<R> {
        Endpoint {
            identity,
            runtime,
            desired,
            files: None,
            sync: Mutex::new(BTreeMap::new()),
            sync_stats: None,
            logs: None,
            diagnostics: None,
            reloader: None,
            maintenance: None,
            activity: None,
            worktrees: None,
            git: None,
        }
    }

    /// Notes in `activity` each exec, logs read and sync that uses a workspace.
    pub fn with_activity(mut self, activity: Activities) -> Endpoint<R> {
        self.activity = Some(activity);
        self
    }

    /// `workspace` was used, as `kind`, now.
    fn used(&self, workspace: &WorkspaceName, kind: ActivityKind) {
        if let Some(activity) = &self.activity {
            activity.note(workspace, kind, clock::now());
        }
    }

    /// Reloads the agent's configuration with `reloader` when an admin asks.
    pub fn with_reloader(mut self, reloader: Arc<crate::reload::Reloader>) -> Endpoint<R> {
        self.reloader = Some(reloader);
        self
    }

    /// Answers admins' diagnostics from `diagnostics`.
    pub fn with_diagnostics(mut self, diagnostics: Arc<Diagnostics>) -> Endpoint<R> {
        self.diagnostics = Some(diagnostics);
        self
    }

    /// Answers `DaemonLogs` from the log in `files`.
    pub fn with_logs(mut self, files: LogFiles) -> Endpoint<R> {
        self.logs = Some(files);
        self
    }

    /// Keeps what sync sessions report in `stats` (their metrics).
    pub fn with_sync_stats(mut self, stats: SyncStats) -> Endpoint<R> {
        self.sync_stats = Some(stats);
        self
    }

    /// Serves file sync sessions with the workspaces' files directories under `root`.
    pub fn with_files(mut self, root: PathBuf) -> Endpoint<R> {
        self.files = Some(root);
        self
    }

    /// One step of a sync session with the workspace's files directory.
    async fn sync(
        &self,
        peer: &Peer,
        workspace: WorkspaceName,
        payload: Vec<u8>,
    ) -> Result<Response, WireError> {
        self.authorise(peer, &workspace)?;
        let Some(files) = &self.files else {
            return Err(WireError::new(
                ErrorCode::SyncSessionFailed,
                "this agent keeps no workspace files",
            ));
        };
        let request: nexus_sync::endpoint::Request = codec::decode(&payload).map_err(|e| {
            WireError::new(ErrorCode::ProtocolError, format!("not a sync request: {e}"))
        })?;
        let user = user_of(peer);
        if let Some(kind) = activity::of_sync(&request) {
            self.used(&workspace, kind);
        }
        if let nexus_sync::endpoint::Request::Report(report) = request {
            return self.report(&workspace, &user, &report);
        }
        if let (
            nexus_sync::endpoint::Request::Scan { .. }
            | nexus_sync::endpoint::Request::ScanSince { .. },
            Some(stats),
            Some(user),
        ) = (&request, &self.sync_stats, &user)
        {
            stats.scanned(&workspace, user, std::time::Instant::now(), clock::now());
        }
        let synced = self
            .sync
            .lock()
            .await
            .entry(workspace.clone())
            .or_insert_with(|| {
                let (count, changes) = watch::channel(0u64);
                let count = Arc::new(count);
                let watched = count.clone();
                let root = files.join(workspace.as_str());
                let served = Served::with_wake(root, move || watched.send_modify(|n| *n += 1));
                Synced {
                    served: Arc::new(Mutex::new(served)),
                    changes,
                    count,
                }
            })
            .clone();
        let answer = match request {
            nexus_sync::endpoint::Request::WaitChange { seen, within_ms } => {
                let within = Duration::from_millis(u64::from(
                    within_ms.min(nexus_sync::endpoint::MAX_WAIT_MS),
                ));
                let mut changes = synced.changes;
                let _ = tokio::time::timeout(within, changes.wait_for(|count| *count > seen)).await;
                let count = *changes.borrow();
                nexus_sync::endpoint::Answer::Changes(count)
            }
            request => synced.served.lock().await.serve(request).await,
        };
        let bytes = codec::encode_payload(&answer).map_err(|e| e.to_wire())?;
        Ok(Response::Sync(bytes))
    }

    /// A sync session's report, from the workspace's owner or an admin (as its other
    /// requests): checked, then kept in the sync stats, if any. Answered `Done`, or refused with
    /// `INVALID_ARGUMENT` when out of bounds.
    fn report(
        &self,
        workspace: &WorkspaceName,
        user: &Option<UserName>,
        report: &nexus_sync::endpoint::SessionReport,
    ) -> Result<Response, WireError> {
        syncstats::check(report).map_err(|bad| {
            WireError::new(
                ErrorCode::InvalidArgument,
                format!("a sync session's report: {bad}"),
            )
        })?;
        if let (Some(stats), Some(user)) = (&self.sync_stats, user) {
            stats.record(workspace, user, report, std::time::Instant::now());
        }
        let bytes =
            codec::encode_payload(&nexus_sync::endpoint::Answer::Done).map_err(|e| e.to_wire())?;
        Ok(Response::Sync(bytes))
    }

    /// The workspace's assignment, if `peer` may see it.
    fn authorise(&self, peer: &Peer, workspace: &WorkspaceName) -> Result<Assignment, WireError> {
        let Identity::User { name, role } = &peer.identity else {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!("{} may not ask an agent about workspaces", peer.identity),
            ));
        };
        let assignment = self
            .desired
            .borrow()
            .as_ref()
            .and_then(|d| d.assignments.iter().find(|a| &a.spec.name == workspace))
            .cloned()
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::WorkspaceNotFound,
                    format!("no workspace {workspace} on this host"),
                )
            })?;
        if *role != Role::Admin && &assignment.owner != name {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!("workspace {workspace} is not {name}'s"),
            ));
        }
        Ok(assignment)
    }

    /// The id and status of the workspace's current container.
    async fn container(
        &self,
        assignment: &Assignment,
    ) -> Result<(String, ContainerStatus), WireError> {
        let containers = self.runtime.list().await.map_err(runtime_error)?;
        containers
            .into_iter()
            .filter(|c| c.workspace == assignment.spec.name)
            .max_by_key(|c| c.generation)
            .map(|c| (c.id, c.status))
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::ContainerError,
                    format!(
                        "workspace {} has no container on this host yet",
                        assignment.spec.name
                    ),
                )
            })
    }

    async fn logs(
        &self,
        peer: &Peer,
        workspace: WorkspaceName,
        tail: u32,
        follow: bool,
    ) -> Result<Reply, WireError> {
        if tail > MAX_TAIL {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("at most {MAX_TAIL} lines, not {tail}"),
            ));
        }
        let assignment = self.authorise(peer, &workspace)?;
        let (id, _) = self.container(&assignment).await?;
        self.used(&workspace, ActivityKind::Logs);
        let tail = usize::try_from(tail).unwrap_or(usize::MAX);
        if !follow {
            let lines = self.runtime.logs(&id, tail).await.map_err(runtime_error)?;
            return Ok(Reply::Once(Ok(Response::LogLines(lines))));
        }
        let (lines_in, mut lines) = mpsc::channel::<String>(FOLLOW_BATCH * 4);
        let (frames, frames_out) = mpsc::channel(4);
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let following =
                tokio::spawn(async move { runtime.follow_logs(&id, tail, lines_in).await });
            // Whatever waits goes in one frame: a burst makes few frames, a trickle goes at once.
            // A client that goes away ends it at once, even while the container is quiet.
            loop {
                let first = tokio::select! {
                    line = lines.recv() => line,
                    () = frames.closed() => None,
                };
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < FOLLOW_BATCH {
                    match lines.try_recv() {
                        Ok(line) => batch.push(line),
                        Err(_) => break,
                    }
                }
                if frames
                    .send(Box::new(Ok(Response::LogLines(batch))))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if frames.is_closed() {
                following.abort();
                return;
            }
            // The container stopped; an engine error ends the stream with it.
            drop(lines);
            if let Ok(Err(error)) = following.await {
                let _ = frames.send(Box::new(Err(runtime_error(error)))).await;
            }
        });
        Ok(Reply::Stream(frames_out))
    }

    async fn exec(
        &self,
        peer: &Peer,
        workspace: WorkspaceName,
        command: Vec<String>,
    ) -> Result<Response, WireError> {
        let bytes: usize = command.iter().map(String::len).sum();
        if command.is_empty() || command.len() > MAX_ARGS || bytes > MAX_COMMAND_BYTES {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "a command of 1 to {MAX_ARGS} arguments and at most {MAX_COMMAND_BYTES} bytes, please"
                ),
            ));
        }
        let assignment = self.authorise(peer, &workspace)?;
        let (id, status) = self.container(&assignment).await?;
        if status != ContainerStatus::Running {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("workspace {workspace} is not running; start it first"),
            ));
        }
        // The program only: arguments may carry secrets.
        tracing::info!(%workspace, user = %peer.identity, program = %command[0], arguments = command.len() - 1, "exec");
        tracing::debug!(%workspace, container = %id, "running the command in the container");
        self.used(&workspace, ActivityKind::Exec);
        let started = std::time::Instant::now();
        let output = tokio::time::timeout(EXEC_LIMIT, self.runtime.exec(&id, &command))
            .await
            .map_err(|_| {
                WireError::new(
                    ErrorCode::Timeout,
                    format!(
                        "the command ran longer than {} s; it may still be running",
                        EXEC_LIMIT.as_secs()
                    ),
                )
            })?
            .map_err(runtime_error)?;
        // A long command kept the workspace in use until it ended.
        self.used(&workspace, ActivityKind::Exec);
        let truncated = output.stdout.len() > ExecResult::MAX_OUTPUT
            || output.stderr.len() > ExecResult::MAX_OUTPUT;
        tracing::debug!(
            %workspace,
            exit_code = output.exit_code,
            stdout_bytes = output.stdout.len(),
            stderr_bytes = output.stderr.len(),
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "the command ended"
        );
        let cut = |mut bytes: Vec<u8>| {
            bytes.truncate(ExecResult::MAX_OUTPUT);
            bytes
        };
        Ok(Response::Exec(ExecResult {
            exit_code: output.exit_code,
            stdout: cut(output.stdout),
            stderr: cut(output.stderr),
            truncated,
        }))
    }
}

impl<R: Runtime> Endpoint<R> {
    /// The agent's own log records, for admins; a followed log is a subscription.
    async fn daemon_logs(&self, peer: &Peer, query: LogQuery) -> Reply {
        if !is_admin(peer) {
            return Reply::Once(Err(WireError::new(
                ErrorCode::PermissionDenied,
                "only admins read an agent's own log",
            )));
        }
        let Some(files) = &self.logs else {
            return Reply::Once(Err(WireError::new(
                ErrorCode::Unsupported,
                "this agent keeps no log files",
            )));
        };
        serve::answer(files.clone(), query).await
    }

    /// The host's workspace networks, for admins.
    async fn networks(&self, peer: &Peer) -> Result<Response, WireError> {
        if !is_admin(peer) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "only admins list a host's networks",
            ));
        }
        let networks = self.runtime.networks().await.map_err(runtime_error)?;
        Ok(Response::Networks(
            networks
                .into_iter()
                .map(|n| NetworkView {
                    name: n.name,
                    workspace: n.workspace,
                    subnet: n.subnet,
                })
                .collect(),
        ))
    }
}

impl<R: Runtime> Endpoint<R> {
    /// The workspace's health as this host sees it, for its owner or an admin.
    async fn health(&self, peer: &Peer, workspace: WorkspaceName) -> Result<Response, WireError> {
        let assignment = self.authorise(peer, &workspace)?;
        let sessions = self.sessions_of(&workspace);
        let health =
            crate::health::gather(&*self.runtime, &assignment, self.files.as_deref(), sessions)
                .await
                .map_err(runtime_error)?;
        Ok(Response::Health(Box::new(health)))
    }

    fn sessions_of(
        &self,
        workspace: &WorkspaceName,
    ) -> Vec<nexus_protocol::debug::SyncSessionView> {
        self.sync_stats.as_ref().map_or_else(Vec::new, |stats| {
            stats.sessions(workspace, std::time::Instant::now())
        })
    }

    /// Wakes the workspace's sync sessions for a cycle now: each waits on the count of changes
    /// on this side (`WaitChange`), which a flush bumps. Sessions that are not waiting (paused,
    /// or between waits) cycle at their next wait or poll.
    async fn flush(&self, peer: &Peer, workspace: WorkspaceName) -> Result<Response, WireError> {
        self.authorise(peer, &workspace)?;
        if let Some(synced) = self.sync.lock().await.get(&workspace) {
            synced.count.send_modify(|n| *n += 1);
            tracing::info!(%workspace, user = %peer.identity, "sync sessions woken for a cycle");
        }
        Ok(Response::Ack)
    }

    /// The engine's events about the workspace's container, for admins.
    async fn container_events(
        &self,
        peer: &Peer,
        workspace: WorkspaceName,
        since: Option<Timestamp>,
    ) -> Result<Response, WireError> {
        if !is_admin(peer) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "only admins read the engine's events",
            ));
        }
        self.authorise(peer, &workspace)?;
        let events = self
            .runtime
            .events(&workspace, since)
            .await
            .map_err(runtime_error)?;
        Ok(Response::ContainerEvents(events))
    }

    /// An admin's `ReloadConfig`: the reloader's report.
    fn reload(&self, peer: &Peer) -> Result<Response, WireError> {
        if !is_admin(peer) {
            return Err(crate::diagnostics::admins_only());
        }
        let Some(reloader) = &self.reloader else {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                "this agent was not started from a configuration it can read again",
            ));
        };
        Ok(Response::Reloaded(reloader.reload("an admin's request")))
    }

    async fn diagnostic(&self, peer: &Peer, diagnostic: Diagnostic) -> Result<Response, WireError> {
        if !is_admin(peer) {
            return Err(crate::diagnostics::admins_only());
        }
        let Some(diagnostics) = &self.diagnostics else {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                "this agent keeps no diagnostics",
            ));
        };
        let text = diagnostics.answer(diagnostic, &*self.runtime).await?;
        Ok(Response::Diagnostic(text))
    }
}

impl<R: Runtime> Endpoint<R> {
    /// This host's orphans ([`crate::orphans`]), for admins.
    async fn orphans(&self, peer: &Peer) -> Result<Response, WireError> {
        if !is_admin(peer) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "only admins list a host's orphan containers",
            ));
        }
        let desired = self.desired.borrow().clone();
        let desired = desired.ok_or_else(crate::orphans::no_desired_state)?;
        let engine = self.runtime.engine().await.map_err(runtime_error)?;
        let host = self.host()?;
        Ok(Response::Orphans(crate::orphans::find(
            &host,
            &desired,
            &engine.containers,
        )))
    }

    /// Removes one orphan container, on an admin's word: refused unless it is an orphan at this
    /// moment. Its workspace's network goes with its last container; its files stay.
    async fn remove_orphan(&self, peer: &Peer, name: &str) -> Result<Response, WireError> {
        if !is_admin(peer) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "only admins remove orphan containers",
            ));
        }
        let host = self.host()?;
        let engine = self.runtime.engine().await.map_err(runtime_error)?;
        let listed = self.runtime.list().await.map_err(runtime_error)?;
        // The desired state as it is now, after the engine answered: a workspace named since
        // the listing is not removed.
        let desired = self.desired.borrow().clone();
        let desired = desired.ok_or_else(crate::orphans::no_desired_state)?;
        let orphan = crate::orphans::removable(&desired, &engine.containers, name)?;
        let (Some(workspace), Some(generation)) = (&orphan.workspace, orphan.generation) else {
            return Err(crate::orphans::no_desired_state());
        };
        let Some(container) = listed
            .iter()
            .find(|c| &c.workspace == workspace && c.generation == generation)
        else {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("container {name} is gone already"),
            ));
        };
        tracing::warn!(container = %name, %workspace, generation, user = %peer.identity, "removing an orphan container on an admin's word");
        self.runtime
            .remove(&container.id)
            .await
            .map_err(runtime_error)?;
        let others = listed
            .iter()
            .any(|c| &c.workspace == workspace && c.id != container.id);
        if !others {
            self.runtime
                .remove_network(&host, workspace)
                .await
                .map_err(runtime_error)?;
        }
        Ok(Response::Ack)
    }

    /// This agent's host, from its identity.
    fn host(&self) -> Result<nexus_protocol::HostId, WireError> {
        match &self.identity {
            Identity::Agent(host) => Ok(host.clone()),
            other => Err(WireError::new(
                ErrorCode::Internal,
                format!("the agent's endpoint runs as {other}, not as an agent"),
            )),
        }
    }
}

fn is_admin(peer: &Peer) -> bool {
    matches!(
        peer.identity,
        Identity::User {
            role: Role::Admin,
            ..
        }
    )
}

/// The user asking, if a user asks.
fn user_of(peer: &Peer) -> Option<UserName> {
    match &peer.identity {
        Identity::User { name, .. } => Some(name.clone()),
        _ => None,
    }
}

fn runtime_error(error: RuntimeError) -> WireError {
    error.to_wire()
}

impl<R: Runtime> Handler for Endpoint<R> {
    /// Each user's request is a hop of its trace, under its frame's request id (`agent.logs`,
    /// `agent.exec`, `agent.networks`; `agent.sync` at DEBUG, as a session asks several times a
    /// second).
    async fn handle(&self, peer: &Peer, request_id: RequestId, request: Request) -> Reply {
        let hop = match &request {
            Request::Host(HostRequest::Logs { workspace, .. }) => Some(
                Hop::new(hops::LOGS, Some(request_id))
                    .workspace(workspace)
                    .info(),
            ),
            Request::Host(HostRequest::Exec { workspace, .. }) => Some(
                Hop::new(hops::EXEC, Some(request_id))
                    .workspace(workspace)
                    .info(),
            ),
            Request::Host(HostRequest::Networks) => {
                Some(Hop::new(hops::NETWORKS, Some(request_id)).info())
            }
            Request::Host(HostRequest::RemoveOrphan { container }) => Some(
                Hop::new(hops::REMOVE_ORPHAN, Some(request_id))
                    .kind(container)
                    .info(),
            ),
            Request::Host(HostRequest::Maintain(asked)) => Some(
                Hop::new(hops::MAINTAIN, Some(request_id))
                    .kind(if asked.dry_run { "dry_run" } else { "run" })
                    .info(),
            ),
            Request::Host(HostRequest::Worktrees { repair }) => Some(
                Hop::new(hops::WORKTREES, Some(request_id))
                    .kind(if *repair { "repair" } else { "verify" })
                    .info(),
            ),
            Request::Host(HostRequest::Sync { workspace, .. }) => Some(
                Hop::new(hops::SYNC, Some(request_id))
                    .workspace(workspace)
                    .debug(),
            ),
            _ => None,
        };
        let Some(span) = hop else {
            return self.answer(peer, request).await;
        };
        let reply = self.answer(peer, request).instrument(span.clone()).await;
        match &reply {
            Reply::Once(Err(error)) => hop::failed(&span, error),
            _ => hop::ok(&span),
        }
        reply
    }
}

impl<R: Runtime> Endpoint<R> {
    async fn answer(&self, peer: &Peer, request: Request) -> Reply {
        match request {
            Request::Ping => Reply::Once(Ok(Response::Pong(Pong {
                software: nexus_protocol::SOFTWARE_VERSION.into(),
                server: self.identity.clone(),
                client: peer.identity.clone(),
                time: clock::now(),
            }))),
            Request::Host(HostRequest::Logs {
                workspace,
                tail,
                follow,
            }) => self
                .logs(peer, workspace, tail, follow)
                .await
                .unwrap_or_else(|error| Reply::Once(Err(error))),
            Request::Host(HostRequest::Exec { workspace, command }) => {
                Reply::Once(self.exec(peer, workspace, command).await)
            }
            Request::Host(HostRequest::Networks) => Reply::Once(self.networks(peer).await),
            Request::Host(HostRequest::Sync { workspace, payload }) => {
                Reply::Once(self.sync(peer, workspace, payload).await)
            }
            Request::Host(HostRequest::DaemonLogs(query)) => self.daemon_logs(peer, query).await,
            Request::Host(HostRequest::Health(workspace)) => {
                Reply::Once(self.health(peer, workspace).await)
            }
            Request::Host(HostRequest::SyncSessions(workspace)) => Reply::Once(
                self.authorise(peer, &workspace)
                    .map(|_| Response::SyncSessions(self.sessions_of(&workspace))),
            ),
            Request::Host(HostRequest::SyncFlush(workspace)) => {
                Reply::Once(self.flush(peer, workspace).await)
            }
            Request::Host(HostRequest::ContainerEvents { workspace, since }) => {
                Reply::Once(self.container_events(peer, workspace, since).await)
            }
            Request::Host(HostRequest::Diagnostic(diagnostic)) => {
                Reply::Once(self.diagnostic(peer, diagnostic).await)
            }
            Request::Host(HostRequest::Orphans) => Reply::Once(self.orphans(peer).await),
            Request::Host(HostRequest::RemoveOrphan { container }) => {
                Reply::Once(self.remove_orphan(peer, &container).await)
            }
            Request::Host(HostRequest::ReloadConfig) => Reply::Once(self.reload(peer)),
            Request::Host(HostRequest::Maintain(request)) => {
                Reply::Once(self.maintain(peer, request).await)
            }
            Request::Host(HostRequest::Worktrees { repair }) => {
                Reply::Once(self.verify_worktrees(peer, repair).await)
            }
            Request::Host(HostRequest::WorktreeStatus(workspace)) => {
                Reply::Once(self.worktree_status(peer, workspace).await)
            }
            Request::Host(HostRequest::CheckCredential(probe)) => {
                Reply::Once(self.check_credential(peer, probe).await)
            }
            _ => Reply::Once(Err(WireError::new(
                ErrorCode::InvalidArgument,
                "an agent serves only logs, exec, networks, file sync, health and diagnostics; ask a coordinator",
            ))),
        }
    }
}
