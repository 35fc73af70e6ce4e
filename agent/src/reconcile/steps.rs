//! How one workspace's steps run against the engine: in order, stopping at the first failure,
//! each engine call counted and timed in the metrics and traced as a hop under the request that
//! caused the work. What to run and when to retry are the reconciler's (`super`).

use nexus_protocol::HostId;
use nexus_protocol::RequestId;
use nexus_protocol::WorkspaceName;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::RepoSource;
use nexus_protocol::hop::{self, Hop};
use tracing::Instrument;

use crate::git::host::GitHost;
use crate::hops;
use crate::metrics::{Metrics, Op};
use crate::plan::{Step, WorkspacePlan};
use crate::ports;
use crate::runtime::{CreateSpec, Runtime, RuntimeError, STOP_GRACE};

/// What running one workspace's steps changed, for the reconciler to remember.
#[derive(Debug, Default)]
pub(super) struct Done {
    pub(super) started: bool,
    pub(super) stopped: bool,
    pub(super) exit: Option<(String, WireError)>,
    pub(super) network_removed: bool,
}

/// Where one workspace's engine calls go, and under which request they are traced.
pub(super) struct Engine<'a, R> {
    pub(super) runtime: &'a R,
    pub(super) metrics: &'a Metrics,
    pub(super) cause: Option<RequestId>,
    pub(super) workspace: &'a WorkspaceName,
    /// The host's git, if workspaces have files directories here, and the workspace's
    /// repository, if it has one.
    pub(super) git: Option<&'a GitHost>,
    pub(super) repo: Option<&'a RepoSource>,
}

impl<R: Runtime> Engine<'_, R> {
    /// Runs `call` as `op`: counted and timed in the metrics, and a hop ([`hops::ENGINE`]) whose
    /// outcome carries the code the engine's error is reported under.
    async fn call<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        let span = self.hop(op);
        let result = self.metrics.time(op, call).instrument(span.clone()).await;
        hop::record(&span, &result.as_ref().map_err(RuntimeError::to_wire));
        result
    }

    fn hop(&self, op: Op) -> tracing::Span {
        Hop::new(hops::ENGINE, self.cause)
            .workspace(self.workspace)
            .kind(op.as_str())
            .info()
    }

    /// A hop of git work ([`hops::GIT`]) of kind `kind`.
    fn git_hop(&self, kind: &str) -> tracing::Span {
        Hop::new(hops::GIT, self.cause)
            .workspace(self.workspace)
            .kind(kind)
            .info()
    }

    /// Pulls the image if it is missing: counted as a pull only when it was.
    async fn pull(&self, image: &str) -> Result<bool, RuntimeError> {
        let span = self.hop(Op::Pull);
        let pull = self.metrics.begin(Op::Pull);
        let pulled = self
            .runtime
            .pull_for(image, self.workspace)
            .instrument(span.clone())
            .await;
        if !matches!(pulled, Ok(false)) {
            pull.end(&pulled);
        }
        hop::record(&span, &pulled.as_ref().map_err(RuntimeError::to_wire));
        pulled
    }
}

/// Runs one workspace's steps in order, stopping at the first failure; counts and times each
/// engine call in the metrics. Each step is a hop ([`hops::STEP`]); a failed one is logged at
/// error level inside it, so that the request's logs show why.
pub(super) async fn execute<R: Runtime>(
    on: Engine<'_, R>,
    host: &HostId,
    workspace: &WorkspacePlan,
    spec: &CreateSpec,
) -> Result<Done, RuntimeError> {
    let mut done = Done::default();
    for step in &workspace.steps {
        let kind = hops::step_kind(step);
        let span = Hop::new(hops::STEP, on.cause)
            .workspace(&workspace.name)
            .kind(kind)
            .info();
        let result = run_step(&on, host, workspace, spec, step, &mut done)
            .instrument(span.clone())
            .await;
        match result {
            Ok(()) => hop::ok(&span),
            Err(error) => {
                let wire = error.to_wire();
                span.in_scope(|| {
                    tracing::error!(workspace = %workspace.name, generation = workspace.generation, step = kind, code = %wire.code, "{}", wire.message);
                });
                hop::failed(&span, &wire);
                return Err(error);
            }
        }
    }
    Ok(done)
}

/// Runs one step.
async fn run_step<R: Runtime>(
    on: &Engine<'_, R>,
    host: &HostId,
    workspace: &WorkspacePlan,
    spec: &CreateSpec,
    step: &Step,
    done: &mut Done,
) -> Result<(), RuntimeError> {
    let runtime = on.runtime;
    tracing::debug!(workspace = %workspace.name, ?step, "step");
    match step {
        Step::Remove { id } => on.call(Op::Remove, runtime.remove(id)).await?,
        Step::Launch => {
            ports::check_free(&spec.ports)?;
            // The worktree before the container: the container sees it at /workspace.
            if let (Some(git), Some(repo)) = (on.git, on.repo) {
                let span = on.git_hop("worktree");
                let made = git
                    .prepare(&workspace.name, repo)
                    .instrument(span.clone())
                    .await;
                hop::record(&span, &made);
                made.map_err(git_error)?;
            }
            on.pull(&spec.image).await?;
            let id = on.call(Op::Create, runtime.create(spec)).await?;
            on.call(Op::Start, runtime.start(&id)).await?;
            done.started = true;
            tracing::info!(workspace = %workspace.name, generation = workspace.generation, container = %id, "started");
        }
        Step::Start { id } => {
            ports::check_free(&spec.ports)?;
            on.call(Op::Start, runtime.start(id)).await?;
            done.started = true;
            tracing::info!(workspace = %workspace.name, container = %id, "started again");
        }
        Step::Stop { id } => {
            on.call(Op::Stop, runtime.stop(id, STOP_GRACE)).await?;
            done.stopped = true;
            tracing::info!(workspace = %workspace.name, container = %id, "stopped");
        }
        Step::ReadExit { id } => {
            let details = on.call(Op::ReadExit, runtime.exit_details(id)).await?;
            done.exit = Some((id.clone(), details.to_error(&workspace.name)));
        }
        Step::RemoveNetwork => {
            on.call(
                Op::RemoveNetwork,
                runtime.remove_network(host, &workspace.name),
            )
            .await?;
            // The worktree goes with git first (its branch kept if it holds commits found
            // nowhere else). A failure is logged and does not hold the destroy up: the branch
            // is only ever deleted after it was found to hold nothing of its own.
            let removed = match on.git {
                Some(git) => {
                    let span = on.git_hop("remove_worktree");
                    let removed = git
                        .destroy(&workspace.name, &spec.owner)
                        .instrument(span.clone())
                        .await;
                    hop::record(&span, &removed);
                    removed
                }
                None => Ok(None),
            };
            if let Err(error) = removed {
                tracing::error!(workspace = %workspace.name, code = %error.code, "the worktree could not be removed with git; removing its files: {}", error.message);
            }
            if let Some(files) = &spec.files {
                match std::fs::remove_dir_all(files) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(RuntimeError::new(
                            crate::runtime::ErrorKind::Failed,
                            format!("cannot remove {}: {error}", files.display()),
                        ));
                    }
                }
            }
            done.network_removed = true;
            tracing::info!(workspace = %workspace.name, "destroyed");
        }
    }
    Ok(())
}

/// A git failure as a step's error, its code kept (GIT_AUTH_FAILED or GIT_FAILED).
fn git_error(error: WireError) -> RuntimeError {
    let kind = if error.code == ErrorCode::GitAuthFailed {
        crate::runtime::ErrorKind::GitAuth
    } else {
        crate::runtime::ErrorKind::Git
    };
    RuntimeError::new(kind, error.message)
}
