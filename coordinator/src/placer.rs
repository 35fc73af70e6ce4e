//! Creates ride to the Raft log in batches: every create that arrives while a batch is being
//! committed waits for the next, and goes with the others in one [`Command::PlaceWorkspaces`]
//! entry. Under load that turns one append and one fsync per create into one per batch; when
//! idle, a create goes alone at once. Scheduling happens in `apply`, so batches may be in flight
//! side by side without two of them promising a host's last room twice.

use std::sync::Arc;

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::identity::Identity;
use nexus_protocol::model::WorkspaceView;
use nexus_protocol::{RequestId, WorkspaceName};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::cluster::{Cluster, Hops};
use crate::hops;
use crate::state::{Command, Outcome, PlaceRequest, WorkspaceRecord};

/// The most creates in one log entry, and the most bytes of specs: an entry stays within one
/// piece of a peer request (4 MiB; raft-rs sends at least one entry per message, however large,
/// and a larger one would still travel, in pieces, but hold up the entries behind it).
pub const MAX_BATCH: usize = 1_024;
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The most bytes a workspace's spec may take (image, environment, labels, command).
pub const MAX_SPEC_BYTES: usize = 64 << 10;

/// About how many bytes `spec` takes in a log entry.
pub fn spec_bytes(spec: &nexus_protocol::model::WorkspaceSpec) -> usize {
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
    };
    spec.name.as_str().len()
        + spec.image.len()
        + pairs(&spec.env)
        + pairs(&spec.labels)
        + spec.command.iter().map(|arg| arg.len() + 1).sum::<usize>()
        + spec.ports.len() * 3
        + spec.host.as_ref().map_or(0, |h| h.as_str().len())
        + 16
}

/// Batches committing at once. More overlap the leader's fsync with the next batch's
/// replication; each waits its turn in apply anyway.
const IN_FLIGHT: usize = 4;

/// How many creates may wait for a batch before new ones are told to retry.
const QUEUE: usize = 16 * MAX_BATCH;

struct Job {
    request: PlaceRequest,
    reply: oneshot::Sender<Result<WorkspaceView, WireError>>,
}

/// How a created workspace is shown to its creator.
pub type ViewOf = fn(&WorkspaceRecord) -> WorkspaceView;

/// The handle creates go through. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Placer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request_id", &self.request.request_id)
            .finish()
    }
}

impl Placer {
    /// Starts the batching task; it ends when every handle is dropped. A create is answered
    /// with its workspace shown by `view`.
    pub fn start(cluster: Cluster, view: ViewOf) -> Placer {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(cluster, view, queue));
        Placer { jobs }
    }

    /// Schedules and creates `request`'s workspace: its view as its batch's entry left it,
    /// once committed and applied, or the create's own refusal (from the journal: a retried
    /// request id gets its first outcome, and the workspace as it is now).
    pub async fn place(&self, request: PlaceRequest) -> Result<WorkspaceView, WireError> {
        let (reply, answer) = oneshot::channel();
        let request_id = request.request_id;
        self.jobs
            .try_send(Job { request, reply })
            .map_err(|error| {
                let (code, why) = match error {
                    mpsc::error::TrySendError::Full(_) => (
                        ErrorCode::ResourceExhausted,
                        "the coordinator has too many creates waiting",
                    ),
                    mpsc::error::TrySendError::Closed(_) => (
                        ErrorCode::Internal,
                        "the coordinator's placement task has stopped",
                    ),
                };
                WireError::new(code, why).with_request_id(request_id)
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(WireError::new(
                ErrorCode::Internal,
                "the placement task ended before answering",
            )
            .with_request_id(request_id))
        })
    }
}

async fn run(cluster: Cluster, view: ViewOf, mut queue: mpsc::Receiver<Job>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    // A create that would have overflowed the last batch opens the next one.
    let mut carried: Option<Job> = None;
    loop {
        // Take a permit first: while every batch slot is busy, creates gather in the queue.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut bytes = spec_bytes(&first.request.spec);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(job) = queue.try_recv() else { break };
            bytes += spec_bytes(&job.request.spec);
            if bytes > MAX_BATCH_BYTES {
                carried = Some(job);
                break;
            }
            batch.push(job);
        }
        let cluster = cluster.clone();
        tokio::spawn(async move {
            commit(&cluster, view, batch).await;
            drop(permit);
        });
    }
}

/// The `outcome` label of one create of a batch: `None` when the batch failed (or its outcome is
/// missing).
fn placement_outcome(outcome: Option<&Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Applied) => "placed",
        Some(Outcome::Rejected(error)) if error.code == ErrorCode::ResourceExhausted => {
            "no_capacity"
        }
        Some(Outcome::Rejected(_)) => "rejected",
        None => "failed",
    }
}

/// Proposes one batch and answers each of its creates with its own outcome, read as the batch's
/// entry is applied (no read after: that would cost a round of the driver per create, or a
/// quorum's round per batch).
async fn commit(cluster: &Cluster, view: ViewOf, batch: Vec<Job>) {
    let requests: Vec<PlaceRequest> = batch.iter().map(|job| job.request.clone()).collect();
    let asked: Vec<(RequestId, WorkspaceName)> = requests
        .iter()
        .map(|r| (r.request_id, r.spec.name.clone()))
        .collect();
    // Each create's hop: the batch's proposal and commit, under the create's own request id
    // (the batch's entry has an id of its own, which no one traces).
    let kind = format!("batch of {}", batch.len());
    let hops: Vec<tracing::Span> = batch
        .iter()
        .map(|job| {
            Hop::new(hops::PROPOSE, Some(job.request.request_id))
                .workspace(&job.request.spec.name)
                .kind(&kind)
                .info()
        })
        .collect();
    let proposer = Identity::Coordinator(cluster.id());
    let outcomes = cluster
        .propose_and_read_as(
            Hops::Callers,
            RequestId::random(),
            proposer,
            Command::PlaceWorkspaces(requests),
            move |state| {
                asked
                    .iter()
                    .map(|(id, name)| {
                        let outcome = state.outcome_of(*id).cloned();
                        let shown = state.workspaces().get(name).map(view);
                        (outcome, shown)
                    })
                    .collect::<Vec<_>>()
            },
        )
        .await;
    let placements = &cluster.metrics().placements;
    match outcomes {
        Ok(outcomes) => {
            for ((job, (outcome, shown)), span) in batch.into_iter().zip(outcomes).zip(hops) {
                let id = job.request.request_id;
                placements.inc([placement_outcome(outcome.as_ref())]);
                let answer = match outcome {
                    Some(Outcome::Applied) => shown.ok_or_else(|| {
                        WireError::new(
                            ErrorCode::WorkspaceNotFound,
                            format!(
                                "workspace {} was created and is gone already",
                                job.request.spec.name
                            ),
                        )
                    }),
                    Some(Outcome::Rejected(error)) => Err(*error),
                    None => Err(WireError::new(
                        ErrorCode::Internal,
                        "the create was committed but its outcome is not in the journal",
                    )),
                }
                .map_err(|error| error.with_request_id(id));
                hop::record(&span, &answer);
                let _ = job.reply.send(answer);
            }
        }
        Err(error) => {
            placements.inc_by([placement_outcome(None)], batch.len() as u64);
            for (job, span) in batch.into_iter().zip(hops) {
                let id = job.request.request_id;
                hop::failed(&span, &error);
                let _ = job.reply.send(Err(error.clone().with_request_id(id)));
            }
        }
    }
}
