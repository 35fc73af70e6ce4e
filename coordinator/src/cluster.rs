//! The Raft driver and its handle.
//!
//! One task owns the [`RaftNode`] (on a thread of its own, because RocksDB's synced writes block);
//! everything else talks to it through a bounded channel of [`Input`]s via the cloneable
//! [`Cluster`] handle. The loop: wait for a tick (every `tick`, about 100 ms), an input or a
//! sender's [`Delivery`] report; take every input already queued (so one fsync covers many
//! proposals); run `process_ready`; hand the outgoing messages to [`Peers`]; answer the proposals
//! and reads that became answerable.
//!
//! Waiters are matched by request id (proposals) or by a read's context (ReadIndex), never by
//! position. A proposal or read that Raft drops silently (leadership lost, a conf change already
//! pending) is answered `TIMEOUT` after its deadline, which is retryable: a retry under the same
//! request id returns the first outcome if the first attempt was applied after all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::MemberRole;
use nexus_protocol::{NodeId, RequestId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::consensus::{
    MemberChange, MemberProgress, RaftConfig, RaftMessage, RaftNode, ReadyOutput, StoreError,
    carries_snapshot,
};
use crate::locks::lock;
use crate::peers::{Delivery, Peers};
use crate::state::{Command, Outcome, Proposal, State};
use crate::store::RocksStore;

/// Inputs taken per round before `process_ready`, so a flood cannot starve ticks.
const MAX_INPUTS_PER_ROUND: usize = 1024;

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

/// A caller waiting for its proposal to be applied, and since when.
type Waiter = (Instant, oneshot::Sender<Result<Outcome, WireError>>);

/// A read of the state machine, run on the driver's task once the read may be served.
type Query = Box<dyn FnOnce(Result<&State, WireError>) + Send>;

/// What the driver is asked to do.
pub(crate) enum Input {
    Propose {
        proposal: Box<Proposal>,
        reply: oneshot::Sender<Result<Outcome, WireError>>,
    },
    Read {
        consistency: Consistency,
        query: Query,
    },
    /// Messages from a peer, already checked to be from `from`.
    Peer {
        from: NodeId,
        messages: Vec<RaftMessage>,
    },
    Member {
        change: MemberChange,
        reply: oneshot::Sender<Result<(), WireError>>,
    },
    Transfer {
        to: NodeId,
    },
    View {
        reply: oneshot::Sender<NodeView>,
    },
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

struct Driver {
    node: RaftNode<RocksStore>,
    config: DriverConfig,
    peers: Arc<Peers>,
    inputs: mpsc::Receiver<Input>,
    /// The peers' sender tasks' reports.
    deliveries: mpsc::Receiver<Delivery>,
    proposals: HashMap<RequestId, Vec<Waiter>>,
    /// Reads waiting for their ReadIndex, by context.
    reads_waiting: HashMap<u64, (Instant, Query)>,
    /// Reads with a ReadIndex, waiting for the state machine to reach it: the index, and when
    /// the read was asked.
    reads_ready: Vec<(u64, Instant, Query)>,
    /// The last ReadIndex context used. It starts at random: the leader drops a read whose
    /// context is already pending (so two nodes counting from zero would drop each other's), and
    /// a late answer to a read of an earlier run of this node must not match a new one.
    next_read: u64,
    /// How many leader's snapshots the node had restored when the driver last looked.
    snapshots_seen: u64,
    last_heard: HashMap<NodeId, Instant>,
    known_addresses: BTreeMap<NodeId, String>,
    /// Wakes the desired-state watches of the hosts whose desired state changed.
    hosts: Arc<HostSignals>,
    /// Whether this node leads, and in which term.
    leadership: watch::Sender<Leadership>,
}

/// One signal per host with a desired-state watch, raised when that host's desired state
/// changes: an applied entry wakes only the watches it concerns, not every agent's.
#[derive(Debug, Default)]
pub struct HostSignals {
    signals: std::sync::Mutex<HashMap<nexus_protocol::HostId, watch::Sender<()>>>,
}

impl HostSignals {
    /// A signal that changes whenever `host`'s desired state may have.
    pub fn subscribe(&self, host: &nexus_protocol::HostId) -> watch::Receiver<()> {
        lock(&self.signals)
            .entry(host.clone())
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe()
    }

    /// Raises the signals of the hosts that changed. A signal nobody waits on any more (its
    /// host's watch ended) is dropped when it would be raised: the cost stays with the hosts
    /// that changed, not the fleet.
    fn raise(&self, changed: crate::state::ChangedHosts) {
        let mut signals = lock(&self.signals);
        match changed {
            crate::state::ChangedHosts::All => {
                signals.retain(|_, signal| signal.send(()).is_ok());
            }
            crate::state::ChangedHosts::Some(hosts) => {
                for host in hosts {
                    if let Some(signal) = signals.get(&host)
                        && signal.send(()).is_err()
                    {
                        signals.remove(&host);
                    }
                }
            }
        }
    }
}

/// Starts the driver on a thread of its own, with the peers and the receiver of their reports
/// ([`Peers::new`] makes both). It runs until `shutdown` fires (or every handle is
/// dropped); the returned receiver yields its result — an error means the store failed and the
/// process must stop.
pub fn start(
    node: RaftNode<RocksStore>,
    peers: Arc<Peers>,
    deliveries: mpsc::Receiver<Delivery>,
    config: DriverConfig,
    shutdown: oneshot::Receiver<()>,
) -> std::io::Result<(Cluster, oneshot::Receiver<Result<(), StoreError>>)> {
    let (sender, inputs) = mpsc::channel(config.queue);
    let hosts = Arc::new(HostSignals::default());
    let leadership = watch::Sender::new(Leadership {
        leading: node.is_leader(),
        term: node.term(),
    });
    let cluster = Cluster {
        id: node.id(),
        inputs: sender,
        peers: peers.clone(),
        config: config.clone(),
        hosts: hosts.clone(),
        leadership: leadership.subscribe(),
    };
    let (done, result) = oneshot::channel();
    let driver = Driver {
        known_addresses: node.state().member_addresses().clone(),
        node,
        config,
        peers,
        inputs,
        deliveries,
        proposals: HashMap::new(),
        reads_waiting: HashMap::new(),
        reads_ready: Vec::new(),
        next_read: nexus_protocol::id::random_u64(),
        snapshots_seen: 0,
        last_heard: HashMap::new(),
        hosts,
        leadership,
    };
    std::thread::Builder::new()
        .name("raft-driver".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build();
            let result = match runtime {
                Ok(runtime) => runtime.block_on(driver.run(shutdown)),
                Err(error) => Err(StoreError(format!("cannot start the driver: {error}"))),
            };
            if let Err(error) = &result {
                tracing::error!("the raft driver stopped: {error}");
            }
            let _ = done.send(result);
        })?;
    Ok((cluster, result))
}

impl Driver {
    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) -> Result<(), StoreError> {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.peers.learn(&self.known_addresses);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = ticker.tick() => {
                    self.node.tick();
                    self.expire();
                }
                input = self.inputs.recv() => {
                    let Some(input) = input else { return Ok(()) };
                    self.handle(input);
                    for _ in 0..MAX_INPUTS_PER_ROUND {
                        match self.inputs.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                // The peers hold the sending end for as long as the driver holds them, so the
                // channel never closes under it.
                Some(delivery) = self.deliveries.recv() => {
                    self.delivered(delivery);
                    for _ in 0..MAX_INPUTS_PER_ROUND {
                        match self.deliveries.try_recv() {
                            Ok(delivery) => self.delivered(delivery),
                            Err(_) => break,
                        }
                    }
                }
            }
            let output = self.node.process_ready()?;
            self.dispatch(output);
            self.hosts.raise(self.node.take_changed_hosts());
            let leadership = Leadership {
                leading: self.node.is_leader(),
                term: self.node.term(),
            };
            self.leadership.send_if_modified(|now| {
                let changed = *now != leadership;
                *now = leadership;
                changed
            });
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose { proposal, reply } => {
                if let Some(outcome) = self.node.state().outcome_of(proposal.request_id) {
                    let _ = reply.send(Ok(outcome.clone()));
                    return;
                }
                match self.node.propose(&proposal) {
                    Ok(()) => self
                        .proposals
                        .entry(proposal.request_id)
                        .or_default()
                        .push((Instant::now(), reply)),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Input::Read {
                consistency: Consistency::Stale,
                query,
            } => query(Ok(self.node.state())),
            Input::Read {
                consistency: Consistency::Linearizable,
                query,
            } => {
                if self.node.leader().is_none() {
                    query(Err(no_leader(self.node.id())));
                    return;
                }
                self.next_read = self.next_read.wrapping_add(1);
                self.node.read_index(self.next_read);
                self.reads_waiting
                    .insert(self.next_read, (Instant::now(), query));
            }
            Input::Peer { from, messages } => {
                self.last_heard.insert(from, Instant::now());
                for message in messages {
                    self.node.step(message);
                }
            }
            Input::Member { change, reply } => {
                let _ = reply.send(self.node.propose_member_change(&change));
            }
            Input::Transfer { to } => self.node.transfer_leader(to),
            Input::View { reply } => {
                let _ = reply.send(self.view());
            }
        }
    }

    /// Tells Raft what a sender task reported: a peer it could not reach, a snapshot's fate.
    fn delivered(&mut self, report: Delivery) {
        let Delivery {
            to,
            snapshot,
            delivered,
        } = report;
        if !delivered {
            self.node.report_unreachable(to);
        }
        if snapshot {
            self.node.report_snapshot(to, delivered);
        }
    }

    fn view(&self) -> NodeView {
        let role = if self.node.is_leader() {
            MemberRole::Leader
        } else if self.node.is_candidate() {
            MemberRole::Candidate
        } else if self
            .node
            .members()
            .iter()
            .any(|m| m.id == self.node.id() && !m.voter)
        {
            MemberRole::Learner
        } else {
            MemberRole::Follower
        };
        NodeView {
            id: self.node.id(),
            role,
            leader: self.node.leader(),
            term: self.node.term(),
            commit_index: self.node.commit_index(),
            applied_index: self.node.applied_index(),
            last_index: self.node.last_index(),
            members: self.node.members(),
            conf_change_pending: self.node.conf_change_pending(),
            last_heard: self
                .last_heard
                .iter()
                .map(|(node, at)| (*node, at.elapsed()))
                .collect(),
        }
    }

    fn dispatch(&mut self, output: ReadyOutput) {
        for message in output.messages {
            let snapshot = carries_snapshot(&message);
            let to = NodeId::new(message.to);
            if !self.peers.send(message)
                && let Ok(to) = to
            {
                self.node.report_unreachable(to);
                if snapshot {
                    self.node.report_snapshot(to, false);
                }
            }
        }
        for applied in output.applied {
            for (_, reply) in self
                .proposals
                .remove(&applied.request_id)
                .unwrap_or_default()
            {
                let _ = reply.send(Ok(applied.outcome.clone()));
            }
        }
        for (context, index) in output.reads {
            if let Some((since, query)) = self.reads_waiting.remove(&context) {
                self.reads_ready.push((index, since, query));
            }
        }
        // A write applied through a leader's snapshot never appears among the applied entries;
        // its outcome is in the restored state's record of completed requests.
        if self.node.snapshots_restored() != self.snapshots_seen {
            self.snapshots_seen = self.node.snapshots_restored();
            let state = self.node.state();
            self.proposals.retain(|request_id, waiters| {
                let Some(outcome) = state.outcome_of(*request_id) else {
                    return true;
                };
                for (_, reply) in waiters.drain(..) {
                    let _ = reply.send(Ok(outcome.clone()));
                }
                false
            });
        }
        let applied = self.node.applied_index();
        if self
            .reads_ready
            .iter()
            .any(|(index, _, _)| *index <= applied)
        {
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
                .into_iter()
                .partition(|(index, _, _)| *index <= applied);
            self.reads_ready = later;
            for (_, _, query) in now {
                query(Ok(self.node.state()));
            }
        }
        let learned = self.node.state().member_addresses();
        if learned != &self.known_addresses {
            self.known_addresses = learned.clone();
            self.peers.learn(&self.known_addresses);
        }
    }

    /// Answers waiters whose deadline passed, and forgets those whose caller went away.
    fn expire(&mut self) {
        let limit = self.config.proposal_timeout;
        self.proposals.retain(|request_id, waiters| {
            waiters.retain(|(since, reply)| {
                if reply.is_closed() {
                    return false;
                }
                since.elapsed() < limit
            });
            if waiters.is_empty() {
                tracing::debug!(%request_id, "a proposal's waiters gave up");
            }
            !waiters.is_empty()
        });
        let limit = self.config.read_timeout;
        let expired: Vec<u64> = self
            .reads_waiting
            .iter()
            .filter(|(_, (since, _))| since.elapsed() >= limit)
            .map(|(context, _)| *context)
            .collect();
        for context in expired {
            if let Some((_, query)) = self.reads_waiting.remove(&context) {
                query(Err(timed_out("the read", limit)));
            }
        }
        // A read that has its index but whose replica is slow to reach it (cut off, or catching
        // up) gives up on the same deadline.
        if self
            .reads_ready
            .iter()
            .any(|(_, since, _)| since.elapsed() >= limit)
        {
            let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
                .into_iter()
                .partition(|(_, since, _)| since.elapsed() >= limit);
            self.reads_ready = waiting;
            for (_, _, query) in expired {
                query(Err(timed_out("the read", limit)));
            }
        }
    }
}

fn no_leader(node: NodeId) -> WireError {
    WireError::new(
        ErrorCode::NotLeader,
        format!(
            "coordinator {node} knows no leader: an election is under way or there is no quorum"
        ),
    )
    .with_detail(ErrorDetail::NotLeader {
        leader: None,
        address: None,
    })
}

fn timed_out(what: &str, limit: Duration) -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!(
            "{what} was not confirmed by the cluster within {limit:?} (a change of leader, or no quorum)"
        ),
    )
}

/// A handle on the driver. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    id: NodeId,
    inputs: mpsc::Sender<Input>,
    peers: Arc<Peers>,
    config: DriverConfig,
    hosts: Arc<HostSignals>,
    leadership: watch::Receiver<Leadership>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn stopped() -> WireError {
    WireError::new(
        ErrorCode::Internal,
        "this coordinator's Raft node has stopped; it is shutting down",
    )
}

impl Cluster {
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Changes whenever `host`'s desired state may have changed on this replica.
    pub fn desired_changes(&self, host: &nexus_protocol::HostId) -> watch::Receiver<()> {
        self.hosts.subscribe(host)
    }

    /// Whether this node leads, and in which term, as of the driver's last round: a cheap look
    /// for those who check often ([`Cluster::require_leader`] asks the driver, and names the
    /// leader).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    async fn input(&self, input: Input) -> Result<(), WireError> {
        self.inputs.send(input).await.map_err(|_| stopped())
    }

    /// Proposes `command` for `proposer` and waits until it is applied. On a follower the write
    /// is forwarded to the leader. `Ok` only once it is applied; a rejection by the state machine
    /// is its error.
    pub async fn propose(
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
        let deadline = Instant::now() + self.config.proposal_timeout;
        let mut leadership = self.leadership();
        loop {
            let term = leadership.borrow_and_update().term;
            // One deadline for every round: a new term never restarts the clock.
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(timed_out("the write", self.config.proposal_timeout)
                    .with_request_id(request_id));
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
                return Err(error);
            };
            // A leader that dies with the forward in flight never answers it. Once this node
            // sees a new term, the forward is abandoned and the write asked again of whoever
            // leads now, or refused with NOT_LEADER while nobody does, rather than held until
            // the proposal times out; a forward that fails for want of a connection (the leader
            // may have just died) is asked again a tick later, while time remains. The request
            // id makes a second delivery harmless: the journal answers it with the first one's
            // outcome.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let failed = tokio::select! {
                result = self.peers.forward(leader, &proposal, remaining) => match result {
                    Err(error)
                        if matches!(error.code, ErrorCode::NetworkError | ErrorCode::Timeout) =>
                    {
                        error
                    }
                    other => return other,
                },
                () = next_term(&mut leadership, term) => continue,
                // The forward's own limit leaves out connecting to the leader.
                () = tokio::time::sleep(remaining) => {
                    return Err(timed_out("the write", self.config.proposal_timeout)
                        .with_request_id(request_id));
                }
            };
            if Instant::now() + self.config.tick >= deadline {
                return Err(failed);
            }
            tokio::time::sleep(self.config.tick).await;
        }
    }

    /// Proposes on this node only (a forwarded write ends here: never forwarded twice).
    pub async fn propose_here(&self, proposal: Proposal) -> Result<(), WireError> {
        self.propose_here_within(proposal, self.config.proposal_timeout)
            .await
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
        match tokio::time::timeout(limit, answer).await {
            Err(_) => Err(timed_out("the write", limit).with_request_id(request_id)),
            Ok(Err(_)) => Err(timed_out("the write", limit).with_request_id(request_id)),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Ok(Ok(Outcome::Applied))) => Ok(()),
            Ok(Ok(Ok(Outcome::Rejected(error)))) => Err(error.with_request_id(request_id)),
        }
    }

    /// Reads the state machine, as current as `consistency` asks.
    pub async fn read<T, F>(&self, consistency: Consistency, read: F) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: FnOnce(&State) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let query: Query = Box::new(move |state| {
            let _ = reply.send(state.map(read));
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

    pub async fn view(&self) -> Result<NodeView, WireError> {
        let (reply, answer) = oneshot::channel();
        self.input(Input::View { reply }).await?;
        answer.await.map_err(|_| stopped())
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

/// Returns once the term differs from `term`; never if the driver has stopped (whatever waits
/// beside it decides).
async fn next_term(leadership: &mut watch::Receiver<Leadership>, term: u64) {
    if leadership.wait_for(|now| now.term != term).await.is_err() {
        std::future::pending::<()>().await;
    }
}
