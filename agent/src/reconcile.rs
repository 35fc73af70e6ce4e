//! The reconcile loop: makes the host's containers match the desired state, over and over.
//!
//! A pass lists this host's containers, plans ([`crate::plan`]), runs the workspaces' steps with
//! at most `max_concurrent_ops` at once, and publishes what it observed. Passes run when the
//! desired state changes, when the engine reports a container event, when a retry is due, and
//! every [`RESYNC`] regardless, so a missed event costs at most that long.
//!
//! Failures follow the design's retry policy per error code: `WORKSPACE_START_FAILED` three
//! times with exponential backoff, `BACKEND_UNAVAILABLE` every 5 s until the engine answers,
//! `PORT_CONFLICT`, `CONTAINER_ERROR` and `DISK_FULL` not at all (the coordinator or the user
//! acts; a new generation or run from the coordinator starts the count afresh).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nexus_protocol::error::{ErrorCode, RetryChange, RetryPolicy, WireError};
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::id::random_u64;
use nexus_protocol::message::{Assignment, DesiredRun, DesiredState, ObservedWorkspace};
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::{HostId, RequestId, WorkspaceName};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::cache::{Cache, Saved, SavedView};
use crate::git::host::GitHost;
use crate::hops::{self, Causes};
use crate::metrics::Metrics;
use crate::plan::{Memory, WorkspacePlan, plan};
use crate::probes::Vitals;
use crate::runtime::{ContainerStatus, CreateSpec, ErrorKind, Runtime, RuntimeError};

mod steps;
use steps::{Done, Engine, execute};

/// A full pass runs at least this often, events or not.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Passes that run steps back to back before the loop waits for an event or a timer.
const MAX_PASSES_IN_A_ROW: u32 = 10;
/// How soon a desired state that could not be saved is tried again.
const SAVE_RETRY: Duration = Duration::from_secs(5);

/// A step that failed, and when (if ever) to try it again.
#[derive(Debug, Clone)]
struct Failure {
    generation: u64,
    run: DesiredRun,
    error: WireError,
    attempts: u32,
    retry_at: Option<Instant>,
}

#[derive(Debug)]
pub struct Reconciler<R: Runtime> {
    runtime: Arc<R>,
    host: HostId,
    max_ops: usize,
    cache: Cache,
    desired: Option<DesiredState>,
    memory: Memory,
    failures: BTreeMap<WorkspaceName, Failure>,
    /// The error of each container that stopped on its own, by container id.
    exits: BTreeMap<String, WireError>,
    /// Where workspaces' files directories are made, if anywhere.
    files: Option<std::path::PathBuf>,
    /// The host's git: worktrees of workspaces with a repository.
    git: Option<Arc<GitHost>>,
    /// Set while the engine does not answer.
    outage: Option<WireError>,
    next_outage_retry: Option<Instant>,
    /// Set by an outage of the engine or a reboot of the host: the next successful listing
    /// makes restartable what was running before.
    interrupted: bool,
    /// The boot under which `running_before` was listed, and this boot.
    running_boot: Option<String>,
    boot_id: Option<String>,
    /// Containers (workspace, generation) running at the last successful listing: those found
    /// stopped after an outage were stopped by the outage, not by themselves.
    running_before: BTreeSet<(WorkspaceName, u64)>,
    orphans_logged: BTreeSet<String>,
    /// A desired state that could not be saved yet (retried each pass).
    unsaved: Option<DesiredState>,
    report: watch::Sender<Vec<ObservedWorkspace>>,
    metrics: Metrics,
    /// Where the loop says it is not stalled.
    vitals: Arc<Vitals>,
    /// The request that last changed each workspace, from the link: each workspace's steps are
    /// traced under its cause's id.
    causes: Option<watch::Receiver<Causes>>,
}

impl<R: Runtime> Reconciler<R> {
    /// A reconciler that starts from what `cache` saved. Returns it with the receiver of its
    /// reports (the latest observed state of every workspace it was assigned).
    pub fn new(
        runtime: Arc<R>,
        host: HostId,
        max_ops: usize,
        cache: Cache,
    ) -> (Reconciler<R>, watch::Receiver<Vec<ObservedWorkspace>>) {
        let Saved {
            desired,
            restartable,
            running,
            boot_id: running_boot,
        } = cache.load();
        // A host that booted since the agent listed what was running has stopped every
        // container: those that were running then are to be started again, as after an outage
        // of the engine, not taken for crashes.
        let boot_id = crate::stats::boot_id();
        let rebooted = running_boot.is_some() && boot_id.is_some() && running_boot != boot_id;
        if rebooted && !running.is_empty() {
            tracing::info!(
                workspaces = running.len(),
                "the host restarted since the agent last ran; starting again what was running"
            );
        }
        if let Some(desired) = &desired {
            tracing::info!(
                version = desired.version,
                workspaces = desired.assignments.len(),
                "carrying on with the saved desired state"
            );
        }
        let (report, reports) = watch::channel(Vec::new());
        let reconciler = Reconciler {
            runtime,
            host,
            max_ops: max_ops.max(1),
            cache,
            desired,
            memory: Memory {
                restartable,
                ..Memory::default()
            },
            failures: BTreeMap::new(),
            exits: BTreeMap::new(),
            files: None,
            git: None,
            outage: None,
            next_outage_retry: None,
            interrupted: rebooted,
            running_before: running,
            running_boot,
            boot_id,
            orphans_logged: BTreeSet::new(),
            unsaved: None,
            report,
            metrics: Metrics::unserved(),
            vitals: Arc::default(),
            causes: None,
        };
        (reconciler, reports)
    }

    /// The desired state it acts on (the saved one, until the coordinator sends another).
    pub fn current_desired(&self) -> Option<DesiredState> {
        self.desired.clone()
    }

    /// Runs passes until `shutdown` completes. `desired` yields each desired state the
    /// coordinator pushes; `wake` is notified by the runtime's events.
    pub async fn run(
        mut self,
        mut desired: watch::Receiver<Option<DesiredState>>,
        wake: Arc<Notify>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut streak = 0u32;
        loop {
            self.vitals.beat(&self.vitals.reconcile, true);
            let progressed = self.pass().await;
            self.vitals.beat(&self.vitals.reconcile, false);
            // Steps ran: look again at once, to confirm or to take the next step. But not for
            // ever: passes that keep finding work (an engine that accepts a step and then
            // shows no effect) fall back to the normal wait, which also hears a shutdown.
            if progressed && streak < MAX_PASSES_IN_A_ROW {
                streak += 1;
                if futures_util::FutureExt::now_or_never(&mut shutdown).is_some() {
                    return;
                }
                continue;
            }
            if progressed {
                tracing::warn!(
                    "{MAX_PASSES_IN_A_ROW} passes in a row found work; pausing until the next event"
                );
            }
            streak = 0;
            let deadline = self.next_deadline();
            tokio::select! {
                () = &mut shutdown => return,
                changed = desired.changed() => {
                    if changed.is_err() {
                        // The link is gone (the agent is stopping): keep what runs as it is.
                        shutdown.await;
                        return;
                    }
                    let update = desired.borrow_and_update().clone();
                    if let Some(update) = update {
                        self.set_desired(update);
                    }
                }
                () = wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Takes a desired state from the coordinator. Only a newer version is taken (a new leader
    /// a few entries behind must not send the host back in time), and only once it is saved, so
    /// what the agent acts on is what it will find again after a restart.
    pub fn set_desired(&mut self, desired: DesiredState) {
        if let Some(current) = &self.desired
            && desired.version <= current.version
        {
            if desired.version < current.version {
                tracing::warn!(
                    offered = desired.version,
                    held = current.version,
                    "ignoring an older desired state; if the coordinators' data was rebuilt \
                     from nothing, remove this agent's agent-state.json"
                );
            }
            return;
        }
        if let Err(error) = self.cache.save(self.saved(Some(&desired))) {
            tracing::error!(path = %self.cache.path().display(), version = desired.version, "cannot save the new desired state, so not acting on it: {error}");
            self.unsaved = Some(desired);
            return;
        }
        tracing::info!(
            version = desired.version,
            workspaces = desired.assignments.len(),
            "new desired state"
        );
        self.unsaved = None;
        self.desired = Some(desired);
    }

    fn saved<'a>(&'a self, desired: Option<&'a DesiredState>) -> SavedView<'a> {
        SavedView {
            desired,
            restartable: &self.memory.restartable,
            running: &self.running_before,
            boot_id: self.running_boot.as_deref(),
        }
    }

    fn save(&self) {
        if let Err(error) = self.cache.save(self.saved(self.desired.as_ref())) {
            tracing::warn!(path = %self.cache.path().display(), "cannot save the agent's state: {error}");
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = Instant::now() + RESYNC;
        if self.unsaved.is_some() {
            deadline = deadline.min(Instant::now() + SAVE_RETRY);
        }
        if let Some(at) = self.next_outage_retry {
            deadline = deadline.min(at);
        }
        for failure in self.failures.values() {
            if let Some(at) = failure.retry_at {
                deadline = deadline.min(at);
            }
        }
        deadline
    }

    /// One pass. Returns whether any step ran.
    pub async fn pass(&mut self) -> bool {
        if let Some(unsaved) = self.unsaved.take() {
            self.set_desired(unsaved);
        }
        let now = Instant::now();
        if self.next_outage_retry.is_some_and(|at| at > now) {
            return false;
        }
        let actual = match self.runtime.list().await {
            Ok(actual) => {
                self.metrics.engine_up.set(1.0);
                self.metrics.containers(&actual);
                actual
            }
            Err(error) => {
                self.metrics.engine_error(&error);
                // Only an engine that fails a ping is out (an outage makes stopped containers
                // restartable); one failed list is retried like an outage, nothing more.
                if self.runtime.ping().await.is_err() {
                    self.engine_failed(&error);
                } else {
                    tracing::warn!(
                        runtime = self.runtime.name(),
                        "cannot list containers; trying again in 5 s: {error}"
                    );
                    self.next_outage_retry = Some(Instant::now() + Duration::from_secs(5));
                }
                return false;
            }
        };
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                runtime = self.runtime.name(),
                "the container engine answers again (it was: {})",
                outage.message
            );
            self.next_outage_retry = None;
            self.interrupted = true;
        }
        if std::mem::take(&mut self.interrupted) {
            // Containers that were running before the outage (or the reboot) and are stopped
            // now were stopped by it: they may be started again.
            for container in &actual {
                let key = (container.workspace.clone(), container.generation);
                if container.status == ContainerStatus::Exited && self.running_before.contains(&key)
                {
                    self.memory.restartable.insert(key);
                }
            }
        }
        let running: BTreeSet<(WorkspaceName, u64)> = actual
            .iter()
            .filter(|c| c.status == ContainerStatus::Running)
            .map(|c| (c.workspace.clone(), c.generation))
            .collect();
        let running_changed = running != self.running_before || self.running_boot != self.boot_id;
        self.running_boot.clone_from(&self.boot_id);
        // A container seen running is no longer "stopped on purpose": if it stops later, that
        // is its own doing (and a start whose answer was lost must not leave it restartable).
        let before = self.memory.restartable.len();
        self.memory.restartable.retain(|key| !running.contains(key));
        let restartable_changed = before != self.memory.restartable.len();
        self.running_before = running;
        let plan = plan(self.desired.as_ref(), &actual, &self.memory);
        tracing::debug!(
            containers = actual.len(),
            workspaces = plan.workspaces.len(),
            with_steps = plan
                .workspaces
                .iter()
                .filter(|w| !w.steps.is_empty())
                .count(),
            "pass"
        );
        for orphan in &plan.orphans {
            if self.orphans_logged.insert(orphan.id.clone()) {
                tracing::warn!(container = %orphan.id, workspace = %orphan.workspace, generation = orphan.generation, "a container of this host that no coordinator assignment names; leaving it alone (an orphan: `nexus admin workspace orphans` lists it, an admin removes it)");
            }
        }
        for newer in &plan.ahead {
            if self.orphans_logged.insert(newer.id.clone()) {
                tracing::warn!(container = %newer.id, workspace = %newer.workspace, generation = newer.generation, "a container newer than the desired state; leaving its workspace alone until a newer desired state comes");
            }
        }
        let assignments: BTreeMap<WorkspaceName, (u64, DesiredRun)> = self
            .desired
            .iter()
            .flat_map(|d| d.assignments.iter())
            .map(|a| (a.spec.name.clone(), (a.generation, a.run)))
            .collect();
        // Forget failures of an older generation or run (the coordinator asked for something
        // new), and of workspaces with nothing left to do (the step took effect after all, or
        // the container got there by itself).
        let pending: BTreeSet<&WorkspaceName> = plan
            .workspaces
            .iter()
            .filter(|w| !w.steps.is_empty())
            .map(|w| &w.name)
            .collect();
        self.failures.retain(|name, failure| {
            pending.contains(name)
                && assignments.get(name).is_some_and(|&(generation, run)| {
                    generation == failure.generation && run == failure.run
                })
        });
        let version = self.desired.as_ref().map(|d| d.version);
        let causes = self
            .causes
            .as_ref()
            .map(|causes| causes.borrow().clone())
            .unwrap_or_default();
        type Due = (
            WorkspacePlan,
            DesiredRun,
            CreateSpec,
            Option<RequestId>,
            Option<nexus_protocol::git::RepoSource>,
        );
        let due: Vec<Due> = plan
            .workspaces
            .iter()
            .filter(|w| !w.steps.is_empty())
            .filter(|w| {
                self.failures
                    .get(&w.name)
                    .is_none_or(|f| f.retry_at.is_some_and(|at| at <= now))
            })
            .filter_map(|w| {
                let assignment = self
                    .desired
                    .iter()
                    .flat_map(|d| d.assignments.iter())
                    .find(|a| a.spec.name == w.name)?;
                let cause = causes.of(&w.name, version);
                Some((
                    w.clone(),
                    assignment.run,
                    self.create_spec(assignment),
                    cause,
                    assignment.spec.repo.clone(),
                ))
            })
            .collect();
        let ran = !due.is_empty();
        let results: Vec<(WorkspaceName, u64, DesiredRun, Result<Done, RuntimeError>)> =
            futures_util::stream::iter(due)
                .map(|(workspace, run, spec, cause, repo)| {
                    let runtime = self.runtime.clone();
                    let git = self.git.clone();
                    let host = self.host.clone();
                    let metrics = &self.metrics;
                    let vitals = &self.vitals;
                    // What the steps log, and what the engine's calls under them log, is about
                    // this workspace (`admin workspace logs --system` finds it by the field).
                    let span = tracing::info_span!(
                        "reconcile",
                        workspace = %workspace.name,
                        generation = workspace.generation
                    );
                    async move {
                        let steps = hops::steps_kind(&workspace.steps);
                        let span = Hop::new(hops::RECONCILE, cause)
                            .workspace(&workspace.name)
                            .kind(&steps)
                            .info();
                        let on = Engine {
                            runtime: runtime.as_ref(),
                            metrics,
                            cause,
                            workspace: &workspace.name,
                            git: git.as_deref(),
                            repo: repo.as_ref(),
                        };
                        let result = execute(on, &host, &workspace, &spec)
                            .instrument(span.clone())
                            .await;
                        hop::record(&span, &result.as_ref().map_err(RuntimeError::to_wire));
                        drop(span);
                        vitals.beat(&vitals.reconcile, true);
                        (workspace.name, workspace.generation, run, result)
                    }
                    .instrument(span)
                })
                .buffer_unordered(self.max_ops)
                .collect()
                .await;
        let mut save = false;
        let mut succeeded = BTreeSet::new();
        let mut unavailable = None;
        for (name, generation, run, result) in results {
            let key = (name.clone(), generation);
            match result {
                Ok(done) => {
                    self.failures.remove(&name);
                    succeeded.insert(name.clone());
                    if done.started {
                        save |= self.memory.restartable.remove(&key);
                    }
                    if done.stopped {
                        save |= self.memory.restartable.insert(key);
                    }
                    if let Some((id, error)) = done.exit {
                        tracing::warn!(workspace = %name, code = %error.code, "{}", error.message);
                        self.memory.exits_read.insert(id.clone());
                        self.exits.insert(id, error);
                    }
                    if done.network_removed {
                        self.memory.networks_removed.insert(name);
                    }
                }
                Err(error) => {
                    if error.kind == ErrorKind::Unavailable {
                        unavailable = Some(error.clone());
                    }
                    self.step_failed(name, generation, run, &error);
                }
            }
        }
        // One slow call is not an outage (an outage makes stopped containers restartable):
        // only an engine that does not answer a ping is down.
        if let Some(error) = unavailable
            && self.runtime.ping().await.is_err()
        {
            self.engine_failed(&error);
        }
        // A workspace desired stopped whose container is not running may be started later.
        for workspace in &plan.workspaces {
            let desired_stopped = assignments
                .get(&workspace.name)
                .is_some_and(|&(_, run)| run == DesiredRun::Stopped);
            if desired_stopped && workspace.steps.is_empty() && workspace.container.is_some() {
                save |= self
                    .memory
                    .restartable
                    .insert((workspace.name.clone(), workspace.generation));
            }
        }
        save |= self.forget_the_departed(&actual);
        save |= running_changed || restartable_changed;
        if save {
            self.save();
        }
        self.publish(&plan.workspaces, &succeeded);
        ran
    }

    fn create_spec(&self, assignment: &Assignment) -> CreateSpec {
        CreateSpec {
            host: self.host.clone(),
            workspace: assignment.spec.name.clone(),
            generation: assignment.generation,
            owner: assignment.owner.clone(),
            image: assignment.spec.image.clone(),
            class: assignment.spec.class,
            env: assignment.spec.env.clone(),
            command: assignment.spec.command.clone(),
            ports: assignment.ports.clone(),
            files: self
                .files
                .as_ref()
                .map(|root| root.join(assignment.spec.name.as_str())),
            mirror: self
                .git
                .as_ref()
                .zip(assignment.spec.repo.as_ref())
                .filter(|_| self.files.is_some())
                .map(|(git, repo)| git.mirror_of(repo)),
        }
    }

    /// Gives each workspace a files directory under `root`, mounted into its container and
    /// removed when the workspace is destroyed.
    pub fn with_files(mut self, root: std::path::PathBuf) -> Self {
        self.files = Some(root);
        self
    }

    /// Makes a worktree for each workspace with a repository (in its files directory: see
    /// [`Reconciler::with_files`]) before its container, and removes it at destroy.
    pub fn with_git(mut self, git: Arc<GitHost>) -> Self {
        self.git = Some(git);
        self
    }

    /// Records into `metrics`, and shows its progress to the probes in `vitals`.
    pub fn monitored(mut self, metrics: Metrics, vitals: Arc<Vitals>) -> Self {
        self.metrics = metrics;
        self.vitals = vitals;
        self
    }

    /// Traces each workspace's steps under the request that `causes` names for it (the link
    /// keeps them beside the desired state).
    pub fn with_causes(mut self, causes: watch::Receiver<Causes>) -> Self {
        self.causes = Some(causes);
        self
    }

    fn engine_failed(&mut self, error: &RuntimeError) {
        self.metrics.engine_up.set(0.0);
        let wire = error.to_wire();
        if self.outage.is_none() {
            tracing::warn!(runtime = self.runtime.name(), code = %wire.code, "the container engine does not answer; retrying every 5 s: {}", wire.message);
        }
        let delay = ErrorCode::BackendUnavailable
            .retry_policy()
            .delay_before(1)
            .unwrap_or(Duration::from_secs(5));
        self.next_outage_retry = Some(Instant::now() + delay);
        self.outage = Some(wire);
        // Say so: every workspace keeps its last reported state, with the engine's error.
        let outage = self.outage.clone();
        self.report.send_if_modified(|report| {
            let mut changed = false;
            for observed in report.iter_mut() {
                if observed.error != outage {
                    observed.error.clone_from(&outage);
                    changed = true;
                }
            }
            changed
        });
    }

    fn step_failed(
        &mut self,
        name: WorkspaceName,
        generation: u64,
        run: DesiredRun,
        error: &RuntimeError,
    ) {
        let wire = error.to_wire();
        // Attempts count per error: three start failures after an engine outage still get their
        // three retries.
        let attempts = self
            .failures
            .get(&name)
            .filter(|f| f.error.code == wire.code)
            .map_or(0, |f| f.attempts)
            .saturating_add(1);
        // A retry that needs a new port is the coordinator's to make: it hands out another and
        // the workspace comes back as a new generation.
        let policy = if wire.code.retry_change() == RetryChange::NewPort {
            RetryPolicy::Never
        } else {
            wire.code.retry_policy()
        };
        let retry_at = policy.delay_before(attempts).map(|delay| {
            // Up to a fifth more, so many workspaces failing together do not retry in step.
            let jitter_ms = random_u64() % (u64::try_from(delay.as_millis() / 5).unwrap_or(0) + 1);
            Instant::now() + delay + Duration::from_millis(jitter_ms)
        });
        // Given up on: the workspace is failed until someone acts, which `admin logs --errors`
        // shows; a failure that will be retried is a warning.
        if retry_at.is_some() {
            tracing::warn!(workspace = %name, generation, code = %wire.code, attempts, retry = true, "{}", wire.message);
        } else {
            tracing::error!(workspace = %name, generation, code = %wire.code, attempts, retry = false, "{}", wire.message);
        }
        self.failures.insert(
            name,
            Failure {
                generation,
                run,
                error: wire,
                attempts,
                retry_at,
            },
        );
    }

    /// Drops memory of workspaces no longer assigned and containers no longer present.
    fn forget_the_departed(&mut self, actual: &[crate::runtime::Container]) -> bool {
        let assigned: BTreeSet<&WorkspaceName> = self
            .desired
            .iter()
            .flat_map(|d| d.assignments.iter())
            .map(|a| &a.spec.name)
            .collect();
        let present: BTreeSet<&str> = actual.iter().map(|c| c.id.as_str()).collect();
        let before = self.memory.restartable.len();
        self.memory
            .restartable
            .retain(|(name, _)| assigned.contains(name));
        self.memory
            .networks_removed
            .retain(|name| assigned.contains(name));
        self.memory
            .exits_read
            .retain(|id| present.contains(id.as_str()));
        self.exits.retain(|id, _| present.contains(id.as_str()));
        self.orphans_logged
            .retain(|id| present.contains(id.as_str()));
        before != self.memory.restartable.len()
    }

    /// Publishes what this pass observed, if it differs from the last report. `done` names the
    /// workspaces whose steps all ran in this pass: they are where their plan was headed.
    fn publish(&mut self, workspaces: &[WorkspacePlan], done: &BTreeSet<WorkspaceName>) {
        // A workspace still being destroyed is not reported: `destroying` is the coordinator's
        // state to set, and it waits for `gone`.
        let report: Vec<ObservedWorkspace> = workspaces
            .iter()
            .map(|workspace| self.observe(workspace, done.contains(&workspace.name)))
            .filter(|observed| observed.state != WorkspaceState::Destroying)
            .collect();
        self.report.send_if_modified(|current| {
            if *current == report {
                false
            } else {
                *current = report;
                true
            }
        });
    }

    fn observe(&self, workspace: &WorkspacePlan, done: bool) -> ObservedWorkspace {
        let assignment = self
            .desired
            .iter()
            .flat_map(|d| d.assignments.iter())
            .find(|a| a.spec.name == workspace.name);
        let ports = assignment.map(|a| a.ports.clone()).unwrap_or_default();
        let (state, error) = if let Some(failure) = self.failures.get(&workspace.name) {
            let state = if failure.retry_at.is_some() {
                in_progress(workspace)
            } else {
                WorkspaceState::Failed
            };
            (state, Some(failure.error.clone()))
        } else if workspace.steps.is_empty() || done {
            let error = workspace
                .container
                .as_ref()
                .and_then(|id| self.exits.get(id))
                .filter(|_| workspace.state == WorkspaceState::Failed)
                .cloned();
            (workspace.state, error)
        } else {
            (in_progress(workspace), None)
        };
        ObservedWorkspace {
            name: workspace.name.clone(),
            generation: workspace.generation,
            state,
            ports,
            error: error.or_else(|| self.outage.clone()),
        }
    }
}

/// The state of a workspace whose steps have not all run yet.
fn in_progress(workspace: &WorkspacePlan) -> WorkspaceState {
    match workspace.state {
        WorkspaceState::Gone => WorkspaceState::Destroying,
        WorkspaceState::Stopped => WorkspaceState::Stopping,
        WorkspaceState::Failed => WorkspaceState::Failed,
        _ => WorkspaceState::Starting,
    }
}
