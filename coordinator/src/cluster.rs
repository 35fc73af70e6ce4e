//! The Raft node's handle, [`Cluster`]: how the rest of the coordinator proposes, reads, asks
//! for this node's view and changes the membership. It does not own the node: the
//! [`driver`] does, on a thread of its own, and the handle talks to it through a bounded channel.
//!
//! A write on a follower is forwarded to the leader (through [`Peers`]); a write or read that
//! Raft drops is answered `TIMEOUT` after its deadline, which is retryable: a retry under the same
//! request id returns the first outcome if the first attempt was applied after all.

mod crash;
mod driver;
mod entries;
mod signals;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::identity::Identity;
use nexus_protocol::join::DenyList;
use nexus_protocol::message::MemberRole;
use nexus_protocol::{NodeId, RequestId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

pub use self::driver::Applied;
use self::driver::{AtApply, Driver, Input, Query};
pub use self::signals::HostSignals;
use crate::consensus::{
    MemberChange, MemberProgress, RaftConfig, RaftMessage, RaftNode, StoreError,
};
use crate::hops;
use crate::metrics::{Metrics, ProposalOutcome};
use crate::peers::{Delivery, Peers};
use crate::state::{CaRotations, Command, Outcome, Proposal, State};
use crate::store::RocksStore;

/// A handle on the driver. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    id: NodeId,
    inputs: mpsc::Sender<Input>,
    peers: Arc<Peers>,
    config: DriverConfig,
    hosts: Arc<HostSignals>,
    leadership: watch::Receiver<Leadership>,
    /// The deny list of this replica's state, as of the driver's last round.
    deny: watch::Receiver<DenyList>,
    /// The CA rotations of this replica's state, as of the driver's last round.
    ca: watch::Receiver<CaRotations>,
    metrics: Metrics,
    /// Which log entries every member applies ([`entries`]).
    entries: Arc<entries::EntryVersions>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Starts the driver on a thread of its own, with the peers and the receiver of their reports
/// ([`Peers::new`] makes both). It runs until `shutdown` fires (or every handle is
/// dropped); the returned receiver yields its result — an error means the store failed and the
/// process must stop. The driver and the handles record into `metrics`.
pub fn start(
    node: RaftNode<RocksStore>,
    peers: Arc<Peers>,
    deliveries: mpsc::Receiver<Delivery>,
    config: DriverConfig,
    metrics: Metrics,
    shutdown: oneshot::Receiver<()>,
) -> std::io::Result<(Cluster, oneshot::Receiver<Result<(), StoreError>>)> {
    let (sender, inputs) = mpsc::channel(config.queue);
    let hosts = Arc::new(HostSignals::default());
    let leadership = watch::Sender::new(Leadership {
        leading: node.is_leader(),
        term: node.term(),
    });
    let deny = watch::Sender::new(node.state().security().deny_list().clone());
    let ca = watch::Sender::new(node.state().ca_rotations().clone());
    let cluster = Cluster {
        id: node.id(),
        inputs: sender,
        peers: peers.clone(),
        config: config.clone(),
        hosts: hosts.clone(),
        leadership: leadership.subscribe(),
        deny: deny.subscribe(),
        ca: ca.subscribe(),
        metrics: metrics.clone(),
        entries: Arc::default(),
    };
    let driver = Driver::new(
        node,
        config,
        peers,
        (inputs, deliveries),
        hosts,
        (leadership, deny, ca),
        metrics,
    );
    let stopped = driver.spawn(shutdown)?;
    Ok((cluster, stopped))
}

impl Cluster {
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// A number that moves whenever the roster (the hosts in the fleet, and which of them are
    /// down) may have changed on this replica: an answer read from the state at an equal number
    /// still holds, without asking the driver. Read it before the read it stands for.
    pub fn roster(&self) -> u64 {
        self.hosts.roster()
    }

    /// The hosts in the fleet as this replica last applied them, as of the roster's number read
    /// before (or newer), without asking the driver: a copy shared with the state until either
    /// changes, so it costs nothing to take.
    pub fn roster_hosts(
        &self,
    ) -> crate::state::Map<nexus_protocol::HostId, crate::state::HostRecord> {
        self.hosts.roster_hosts()
    }

    /// Changes whenever `host`'s desired state may have changed on this replica.
    pub fn desired_changes(&self, host: &nexus_protocol::HostId) -> watch::Receiver<()> {
        self.hosts.subscribe(host)
    }

    /// A signal that changes whenever one of `host`'s workspaces may have changed on this
    /// replica: what a watch of one workspace waits on.
    pub fn workspace_changes(&self, host: &nexus_protocol::HostId) -> watch::Receiver<()> {
        self.hosts.subscribe_workspaces(host)
    }

    /// Whether this node leads, and in which term, as of the driver's last round: a cheap look
    /// for those who check often ([`Cluster::require_leader`] asks the driver, and names the
    /// leader).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// The replicated deny list as this replica has applied it: it changes within a driver round
    /// of the entry that changed it, on every member (leader or not), so each coordinator's
    /// [`Gate`](nexus_protocol::transport::Gate) can follow it.
    pub fn deny_list(&self) -> watch::Receiver<DenyList> {
        self.deny.clone()
    }

    /// The replicated CA rotations as this replica has applied them, published like the deny
    /// list, so that each coordinator follows a rotation (`crate::trust`) and agents' trust
    /// watches push its bundles.
    pub fn ca_rotations(&self) -> watch::Receiver<CaRotations> {
        self.ca.clone()
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// The coordinator's metrics, for whoever records (the service, the placer).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn input(&self, input: Input) -> Result<(), WireError> {
        self.inputs.send(input).await.map_err(|_| stopped())
    }

    /// Proposes `command` for `proposer` and waits until it is applied. On a follower the write
    /// is forwarded to the leader. `Ok` only once it is applied; a rejection by the state machine
    /// is its error. A hop of the request's trace ([`hops::PROPOSE`]).
    pub async fn propose(
        &self,
        request_id: RequestId,
        proposer: Identity,
        command: Command,
    ) -> Result<(), WireError> {
        let mut hop = Hop::new(hops::PROPOSE, Some(request_id));
        if let Some(workspace) = hops::command_workspace(&command) {
            hop = hop.workspace(workspace);
        }
        let span = hop.info();
        let result = self
            .propose_untraced(request_id, proposer, command)
            .instrument(span.clone())
            .await;
        hop::record(&span, &result);
        result
    }

    /// [`Cluster::propose`] without a hop of its own: for a proposal whose requests are traced
    /// by the caller (a batch of creates, each its own request).
    pub async fn propose_untraced(
        &self,
        request_id: RequestId,
        proposer: Identity,
        command: Command,
    ) -> Result<(), WireError> {
        let proposal = Proposal {
            request_id,
            at: clock::now(),
            proposer,
            command,
        };
        let limit = proposal_limit(self.config.proposal_timeout, &proposal.command);
        let deadline = Instant::now() + limit;
        let mut leadership = self.leadership();
        // Whether the write left this node: a leader it was forwarded to may have taken it, so
        // no later refusal here can say it did not happen.
        let mut forwarded = false;
        loop {
            let term = leadership.borrow_and_update().term;
            // One deadline for every round: a new term never restarts the clock.
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(timed_out("the write", limit).with_request_id(request_id));
            }
            let error = match self.propose_here_within(proposal.clone(), remaining).await {
                Err(error) if error.code == ErrorCode::NotLeader => error,
                other => return other,
            };
            let Some(ErrorDetail::NotLeader {
                leader: Some(leader),
                ..
            }) = error.detail
            else {
                return Err(if forwarded {
                    unknown_after_forward(&error).with_request_id(request_id)
                } else {
                    error
                });
            };
            // A leader that dies with the forward in flight never answers it. Once this node
            // sees a new term, the forward is abandoned and the write asked again of whoever
            // leads now, or refused with NOT_LEADER while nobody does, rather than held until
            // the proposal times out; a forward that fails for want of a connection (the leader
            // may have just died) is asked again a tick later, while time remains. The request
            // id makes a second delivery harmless: the journal answers it with the first one's
            // outcome.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let to = format!("to coordinator-{leader}");
            let forwarding = Hop::new(hops::FORWARD, Some(request_id)).kind(&to).info();
            forwarded = true;
            let forward = self
                .peers
                .forward(leader, &proposal, remaining)
                .instrument(forwarding.clone());
            let failed = tokio::select! {
                result = forward => {
                    hop::record(&forwarding, &result);
                    match result {
                        Err(error)
                            if matches!(error.code, ErrorCode::NetworkError | ErrorCode::Timeout) =>
                        {
                            error
                        }
                        // The leader named had just lost the lead and never proposed it: ask
                        // again of whoever leads now.
                        Err(error) if error.code == ErrorCode::NotLeader => {
                            tokio::time::sleep(self.config.tick).await;
                            continue;
                        }
                        other => return other,
                    }
                },
                () = next_term(&mut leadership, term) => {
                    hop::failed(&forwarding, &WireError::new(
                        ErrorCode::NotLeader,
                        "a new term began with the forward in flight; asked again",
                    ));
                    continue;
                }
                // The forward's own limit leaves out connecting to the leader.
                () = tokio::time::sleep(remaining) => {
                    return Err(timed_out("the write", limit).with_request_id(request_id));
                }
            };
            if Instant::now() + self.config.tick >= deadline {
                return Err(unknown_after_forward(&failed).with_request_id(request_id));
            }
            tokio::time::sleep(self.config.tick).await;
        }
    }

    /// Proposes on this node only (a forwarded write ends here: never forwarded twice). A hop
    /// ([`hops::PROPOSE`]) on the leader that a follower forwarded to.
    pub async fn propose_here(&self, proposal: Proposal) -> Result<(), WireError> {
        let mut hop = Hop::new(hops::PROPOSE, Some(proposal.request_id));
        if let Some(workspace) = hops::command_workspace(&proposal.command) {
            hop = hop.workspace(workspace);
        }
        let span = hop.info();
        let limit = proposal_limit(self.config.proposal_timeout, &proposal.command);
        let result = self
            .propose_here_within(proposal, limit)
            .instrument(span.clone())
            .await;
        hop::record(&span, &result);
        result
    }

    /// [`Cluster::propose_here`], waiting at most `limit` for the outcome.
    async fn propose_here_within(
        &self,
        proposal: Proposal,
        limit: Duration,
    ) -> Result<(), WireError> {
        let request_id = proposal.request_id;
        let (reply, answer) = oneshot::channel();
        self.input(Input::Propose {
            proposal: Box::new(proposal),
            reply,
        })
        .await?;
        let (outcome, result) = match tokio::time::timeout(limit, answer).await {
            Err(_) => (
                ProposalOutcome::Timeout,
                Err(timed_out("the write", limit).with_request_id(request_id)),
            ),
            Ok(Err(_)) => (
                ProposalOutcome::Dropped,
                Err(timed_out("the write", limit).with_request_id(request_id)),
            ),
            Ok(Ok(Err(error))) => (
                match error.code {
                    ErrorCode::NotLeader => ProposalOutcome::NotLeader,
                    ErrorCode::Timeout => ProposalOutcome::Timeout,
                    _ => ProposalOutcome::Dropped,
                },
                Err(error),
            ),
            Ok(Ok(Ok(Outcome::Applied))) => (ProposalOutcome::Ok, Ok(())),
            Ok(Ok(Ok(Outcome::Rejected(error)))) => (
                ProposalOutcome::Rejected,
                Err(error.with_request_id(request_id)),
            ),
        };
        self.metrics.raft_proposals.inc([outcome.as_str()]);
        result
    }

    /// Reads the state machine, as current as `consistency` asks.
    pub async fn read<T, F>(&self, consistency: Consistency, read: F) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: FnOnce(&State) -> T + Send + 'static,
    {
        self.read_applied(consistency, move |applied| read(applied.state))
            .await
    }

    /// Proposes `command` as [`Cluster::propose`] does, and answers `read` of the state right
    /// after its entry is applied on this node: what the change made, not what later entries
    /// (an agent's report, another user's change) made of it by the time a read after the
    /// proposal would run. A follower that forwarded the write reads as it applies the entry
    /// itself; a retried request (already applied) reads the state as it is. Should the entry
    /// reach this node only inside a leader's snapshot, the read sees the restored state; should
    /// the read not come within the read timeout, a linearizable read answers instead.
    pub async fn propose_and_read<T, F>(
        &self,
        request_id: RequestId,
        proposer: Identity,
        command: Command,
        read: F,
    ) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: Fn(&State) -> T + Send + Sync + 'static,
    {
        self.propose_and_read_as(Hops::Own, request_id, proposer, command, read)
            .await
    }

    /// [`Cluster::propose_and_read`], with a hop of its own or none ([`Hops`]).
    pub async fn propose_and_read_as<T, F>(
        &self,
        hops: Hops,
        request_id: RequestId,
        proposer: Identity,
        command: Command,
        read: F,
    ) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: Fn(&State) -> T + Send + Sync + 'static,
    {
        let read = Arc::new(read);
        let (sender, answer) = oneshot::channel();
        let at_apply: AtApply = {
            let read = read.clone();
            Box::new(move |state: &State| {
                let _ = sender.send(read(state));
            })
        };
        // Before the proposal, through the same queue: the driver holds the read when the
        // entry is applied.
        self.input(Input::ReadAtApply {
            request_id,
            read: at_apply,
        })
        .await?;
        match hops {
            Hops::Own => self.propose(request_id, proposer, command).await?,
            Hops::Callers => self.propose_untraced(request_id, proposer, command).await?,
        }
        match tokio::time::timeout(self.config.read_timeout, answer).await {
            Ok(Ok(value)) => Ok(value),
            _ => {
                self.read(Consistency::Linearizable, move |state| read(state))
                    .await
            }
        }
    }

    /// Proposes `change`, if there is one, and reads the state it made
    /// ([`Cluster::propose_and_read`]); without one, reads at `consistency` (an admin's "set it,
    /// then show it").
    pub async fn change_then_read<T, F>(
        &self,
        request_id: RequestId,
        proposer: Identity,
        change: Option<Command>,
        consistency: Consistency,
        read: F,
    ) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: Fn(&State) -> T + Send + Sync + 'static,
    {
        match change {
            Some(command) => {
                self.propose_and_read(request_id, proposer, command, read)
                    .await
            }
            None => self.read(consistency, read).await,
        }
    }

    /// [`Cluster::read`], seeing also the index and term the state was applied to: what a backup
    /// names, taken at one point with the state. The read runs on the driver's thread and holds
    /// it: a backup's encode of the whole state, like the store's periodic snapshot, is the most
    /// a read should do there.
    pub async fn read_applied<T, F>(
        &self,
        consistency: Consistency,
        read: F,
    ) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: FnOnce(Applied<'_>) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let query: Query = Box::new(move |applied| {
            let _ = reply.send(applied.map(read));
        });
        self.input(Input::Read { consistency, query }).await?;
        let limit = self.config.read_timeout;
        match tokio::time::timeout(limit + Duration::from_secs(1), answer).await {
            Ok(Ok(result)) => result,
            _ => Err(timed_out("the read", limit)),
        }
    }

    /// Hands checked messages from peer `from` to Raft.
    pub async fn step(&self, from: NodeId, messages: Vec<RaftMessage>) -> Result<(), WireError> {
        self.input(Input::Peer { from, messages }).await
    }

    /// Peer `from` is demonstrably alive and sending: a piece of a large transfer (an append
    /// of a restore's entry) came from it. If it is this node's leader, that counts as hearing
    /// from it: the leader may be writing the same entry meanwhile, and cannot heartbeat.
    pub fn heard_from(&self, from: NodeId) {
        // A hint: never worth waiting for room in a full queue.
        let _ = self.inputs.try_send(Input::Heard(from));
    }

    pub async fn view(&self) -> Result<NodeView, WireError> {
        let (reply, answer) = oneshot::channel();
        self.input(Input::View { reply }).await?;
        answer.await.map_err(|_| stopped())
    }

    /// [`Cluster::require_leader`] without a round trip to the driver while this node's
    /// published leadership says it leads (it lags the driver by at most one round: a request
    /// let through by a deposed leader is refused by its proposal, as any in flight at the
    /// change would be). For the requests that come by the thousand: creates, heartbeats,
    /// agents' container stats.
    pub async fn require_leading(&self) -> Result<(), WireError> {
        if self.leadership.borrow().leading {
            return Ok(());
        }
        // Not leading, or not published yet: the driver's answer names the leader.
        self.require_leader().await.map(drop)
    }

    /// Errors with `NOT_LEADER` (naming the leader and its address) unless this node leads.
    pub async fn require_leader(&self) -> Result<NodeView, WireError> {
        let view = self.view().await?;
        if view.role == MemberRole::Leader {
            return Ok(view);
        }
        let address = view.leader.and_then(|leader| self.peers.address(leader));
        Err(WireError::new(
            ErrorCode::NotLeader,
            match view.leader {
                Some(leader) => format!("coordinator {} is not the leader; {leader} is", self.id),
                None => format!("coordinator {} knows no leader yet", self.id),
            },
        )
        .with_detail(ErrorDetail::NotLeader {
            leader: view.leader,
            address,
        }))
    }

    /// Polls this node's view until `done` holds, or fails with `TIMEOUT` after `limit`.
    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&NodeView) -> bool,
    ) -> Result<NodeView, WireError> {
        let started = Instant::now();
        loop {
            let view = self.view().await?;
            if done(&view) {
                return Ok(view);
            }
            if started.elapsed() > limit {
                return Err(WireError::new(
                    ErrorCode::Timeout,
                    format!("{what} did not happen within {limit:?}"),
                ));
            }
            tokio::time::sleep(self.config.tick).await;
        }
    }

    /// Proposes one membership change and waits until it is applied here.
    async fn change(&self, change: MemberChange, limit: Duration) -> Result<(), WireError> {
        let (reply, answer) = oneshot::channel();
        self.input(Input::Member {
            change: change.clone(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| stopped())??;
        let applied = |view: &NodeView| {
            let member = view.members.iter().find(|m| match &change {
                MemberChange::AddLearner(id, _) | MemberChange::Promote(id) => m.id == *id,
                MemberChange::Remove(id) => m.id == *id,
            });
            match (&change, member) {
                (MemberChange::AddLearner(..), Some(_)) => true,
                (MemberChange::Promote(_), Some(member)) => member.voter,
                (MemberChange::Remove(_), None) => true,
                _ => false,
            }
        };
        // A change Raft dropped (another was pending) never applies: the wait times out, and
        // the configuration tells the caller what happened.
        self.wait_for("the membership change", limit, |view| {
            !view.conf_change_pending && applied(view)
        })
        .await
        .map(|_| ())
    }

    /// Adds a coordinator: as a learner first; once it has caught up with the leader's log, as a
    /// voter. Leader only.
    pub async fn add_member(
        &self,
        id: NodeId,
        address: String,
        limit: Duration,
    ) -> Result<(), WireError> {
        let view = self.require_leader().await?;
        if let Some(member) = view.members.iter().find(|m| m.id == id) {
            if member.voter {
                return Ok(());
            }
        } else {
            self.check_new_member(id, &address).await?;
            self.change(MemberChange::AddLearner(id, address), limit)
                .await?;
        }
        self.wait_for("the new member catching up", limit, |view| {
            view.role != MemberRole::Leader
                || view
                    .members
                    .iter()
                    .any(|m| m.id == id && m.matched.unwrap_or(0) >= view.commit_index)
        })
        .await?;
        self.require_leader().await?;
        self.change(MemberChange::Promote(id), limit).await
    }

    /// Removes a coordinator. Leader only.
    pub async fn remove_member(&self, id: NodeId, limit: Duration) -> Result<(), WireError> {
        let view = self.require_leader().await?;
        if !view.members.iter().any(|m| m.id == id) {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("coordinator {id} is not a member"),
            ));
        }
        self.change(MemberChange::Remove(id), limit).await
    }

    /// Hands leadership to `to` and waits until this node sees it lead. Leader only.
    pub async fn transfer_leader(&self, to: NodeId, limit: Duration) -> Result<(), WireError> {
        let view = self.require_leader().await?;
        if !view.members.iter().any(|m| m.id == to && m.voter) {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("coordinator {to} is not a voting member"),
            ));
        }
        if to == self.id {
            return Ok(());
        }
        self.input(Input::Transfer { to }).await?;
        self.wait_for("the leadership transfer", limit, |view| {
            view.leader == Some(to)
        })
        .await
        .map(|_| ())
    }
}

/// Whose hops a proposal is traced by: its own ([`Cluster::propose`]), or its caller's (a batch
/// of creates, each its own request: [`Cluster::propose_untraced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hops {
    Own,
    Callers,
}

/// How current a read of the state machine must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Confirmed current with the leader (ReadIndex) before it is served: it sees every write
    /// that was acknowledged before it was asked.
    Linearizable,
    /// Served from this node's replica as it is, at once: it may miss recent writes (a
    /// follower's replica lags the leader's).
    Stale,
}

/// Whether this node leads, as the driver last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub leading: bool,
    /// The Raft term this node is in (led by it or not).
    pub term: u64,
}

/// This node's view of the cluster, for `admin status` and the membership workflow.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: NodeId,
    pub role: MemberRole,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub members: Vec<MemberProgress>,
    pub conf_change_pending: bool,
    /// How long ago each peer was last heard from.
    pub last_heard: BTreeMap<NodeId, Duration>,
}

/// The driver's timing.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub tick: Duration,
    pub raft: RaftConfig,
    /// How long a write may wait to be applied before it is answered `TIMEOUT`.
    pub proposal_timeout: Duration,
    /// How long a linearizable read may wait for its ReadIndex.
    pub read_timeout: Duration,
    /// The input channel's bound.
    pub queue: usize,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            tick: Duration::from_millis(100),
            raft: RaftConfig::default(),
            proposal_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(5),
            queue: 4096,
        }
    }
}

impl DriverConfig {
    /// How long without a word from a member before it counts as unhealthy: the election timeout.
    pub fn health_window(&self) -> Duration {
        self.tick
            .saturating_mul(u32::try_from(self.raft.election_ticks).unwrap_or(u32::MAX))
    }
}

/// How long a write may take before its caller is answered that it timed out: `base` (the
/// configured proposal timeout), and for a restore one second more for every 4 MiB of its state.
/// A restore of 250,000 workspaces is a 79 MB entry: sent to the followers in pieces, persisted and
/// applied, it took 8-11 s on two cores, past the 10 s every other write gets.
pub fn proposal_limit(base: Duration, command: &Command) -> Duration {
    match command {
        Command::Restore { state, .. } => {
            let extra = u64::try_from(state.len())
                .unwrap_or(u64::MAX)
                .div_ceil(4 << 20);
            base.saturating_add(Duration::from_secs(extra))
        }
        _ => base,
    }
}

fn stopped() -> WireError {
    WireError::new(
        ErrorCode::Internal,
        "this coordinator's Raft node has stopped; it is shutting down",
    )
}

fn timed_out(what: &str, limit: Duration) -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!(
            "{what} was not confirmed by the cluster within {limit:?} (a change of leader, or no quorum)"
        ),
    )
}

/// The answer to a write that was forwarded and then could not be followed to its end: the
/// leader it went to may have committed it, so the outcome is unknown (`TIMEOUT`, retryable under
/// the same request id), never the definite refusal that `NOT_LEADER` would claim.
fn unknown_after_forward(cause: &WireError) -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!(
            "the write was forwarded to the leader, which did not answer ({}); its outcome is \
             unknown until it is asked again under the same request id",
            cause.message
        ),
    )
}

/// Returns once the term differs from `term`; never if the driver has stopped (whatever waits
/// beside it decides).
async fn next_term(leadership: &mut watch::Receiver<Leadership>, term: u64) {
    if leadership.wait_for(|now| now.term != term).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_protocol::backup::BackupHeader;

    fn restore(bytes: usize) -> Command {
        Command::Restore {
            header: BackupHeader {
                id: "b1".into(),
                cluster: "ab".repeat(32),
                node: NodeId::new(1).unwrap(),
                index: 5,
                term: 2,
                created_at: clock::now(),
                software: "test".into(),
                state_format: crate::state::STATE_FORMAT,
                counts: vec![],
            },
            state: vec![0; bytes],
        }
    }

    #[test]
    fn a_restore_gets_a_second_more_for_every_4_mib_and_other_writes_the_base() {
        let base = Duration::from_secs(10);
        assert_eq!(proposal_limit(base, &restore(0)), base);
        assert_eq!(proposal_limit(base, &restore(1)), Duration::from_secs(11));
        assert_eq!(
            proposal_limit(base, &restore(4 << 20)),
            Duration::from_secs(11)
        );
        // 250,000 workspaces' state: 79 MB.
        assert_eq!(
            proposal_limit(base, &restore(78_675_755)),
            Duration::from_secs(29)
        );
        let other = Command::SetLimits {
            host: None,
            patch: crate::state::LimitsPatch::default(),
        };
        assert_eq!(proposal_limit(base, &other), base);
    }
}
