//! The Raft driver: the one task that owns the [`RaftNode`], on a thread of its own (RocksDB's
//! synced writes block). It is not the handle others use; that is [`Cluster`](super::Cluster).
//!
//! The loop: wait for a tick (every `tick`, about 100 ms), an [`Input`] from a handle or a
//! sender's [`Delivery`] report; take every input already queued (so one fsync covers many
//! proposals); run `process_ready`; hand the outgoing messages to [`Peers`]; answer the proposals
//! and reads that became answerable; publish the leadership and wake the desired-state watches
//! of the hosts that changed.
//!
//! Waiters are matched by request id (proposals) or by a read's context (ReadIndex), never by
//! position. A proposal or read that Raft drops silently (leadership lost, a conf change already
//! pending) is answered `TIMEOUT` after its deadline, which is retryable: a retry under the same
//! request id returns the first outcome if the first attempt was applied after all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::join::DenyList;
use nexus_protocol::message::MemberRole;
use nexus_protocol::{NodeId, RequestId};
use tokio::sync::{mpsc, oneshot, watch};

use super::crash::{self, CrashWatch, Seen, Step};
use super::{Consistency, DriverConfig, HostSignals, Leadership, NodeView};
use crate::consensus::{
    MemberChange, RaftMessage, RaftNode, ReadyOutput, StoreError, carries_snapshot, grants_pre_vote,
};
use crate::metrics::Metrics;
use crate::peers::{Delivery, Peers};
use crate::starts::{StartOutcome, Starts};
use crate::state::{CaRotations, Outcome, Proposal, State};
use crate::store::RocksStore;

mod waiters;

use waiters::abandons_waiters;

/// A round of the loop this long is logged: it is half an election timeout at the default.
const SLOW_ROUND: Duration = Duration::from_millis(500);

/// Inputs taken per round before `process_ready`, so a flood cannot starve ticks.
const MAX_INPUTS_PER_ROUND: usize = 1024;

/// A caller waiting for its proposal to be applied, and since when.
/// A proposal's caller: since when, for how long (`cluster::proposal_limit`), and its answer.
type Waiter = (
    Instant,
    Duration,
    oneshot::Sender<Result<Outcome, WireError>>,
);

/// A read of the state machine, run on the driver's task once the read may be served.
pub(super) type Query = Box<dyn FnOnce(Result<Applied<'_>, WireError>) + Send>;

/// A read of the state right after a proposal's entry is applied to it, on the driver's task.
pub(super) type AtApply = Box<dyn FnOnce(&State) + Send>;

/// What a read sees: the state, and the index and term of the last entry applied to it.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub state: &'a State,
    pub index: u64,
    pub term: u64,
}

/// What the driver is asked to do.
pub(super) enum Input {
    Propose {
        proposal: Box<Proposal>,
        reply: oneshot::Sender<Result<Outcome, WireError>>,
    },
    Read {
        consistency: Consistency,
        query: Query,
    },
    /// Runs `read` on the state right after the entry of request `request_id` is applied here
    /// (at once if it already was): the answer a change gives, from the state its own entry
    /// made rather than from a later read that other entries may have moved on.
    ReadAtApply {
        request_id: RequestId,
        read: AtApply,
    },
    /// Messages from a peer, already checked to be from `from`.
    Peer {
        from: NodeId,
        messages: Vec<RaftMessage>,
    },
    /// A piece of a large transfer came from this peer ([`Cluster::heard_from`]).
    Heard(NodeId),
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

/// The node, and everything waiting on it.
pub(super) struct Driver {
    node: RaftNode<RocksStore>,
    config: DriverConfig,
    peers: Arc<Peers>,
    inputs: mpsc::Receiver<Input>,
    /// The peers' sender tasks' reports.
    deliveries: mpsc::Receiver<Delivery>,
    proposals: HashMap<RequestId, Vec<Waiter>>,
    /// Reads to run as a proposal's entry is applied, by request id, and since when.
    reads_at_apply: HashMap<RequestId, Vec<(Instant, AtApply)>>,
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
    /// The deny list of the state applied here, for the gates and the agents' watches.
    deny: watch::Sender<DenyList>,
    /// The CA rotations of the state applied here, for this node's trust and the agents'.
    ca: watch::Sender<CaRotations>,
    metrics: Metrics,
    /// The leader last seen, to count changes.
    last_leader: Option<NodeId>,
    /// How many snapshots the node had taken and restored when last counted.
    snapshots_counted: u64,
    /// The workspace starts under way, fed with every applied entry (on every replica, so that
    /// a new leader goes on where the old one stopped).
    starts: Starts,
    /// Proposals of a term that ended, with the term and when their grace ends: answered as
    /// their entries apply here, or as unknown once the grace is over ([`Driver::abandon`]).
    orphans: HashMap<RequestId, (u64, Instant)>,
    /// Whether the leader's process is gone ([`crash`]), and the probes' answers.
    crash: CrashWatch,
    refusals: (mpsc::Sender<NodeId>, mpsc::Receiver<NodeId>),
}

impl Driver {
    /// A driver for `node`, fed by `inputs` from the handles and `deliveries` from the peers'
    /// sender tasks, recording into `metrics`.
    pub(super) fn new(
        node: RaftNode<RocksStore>,
        config: DriverConfig,
        peers: Arc<Peers>,
        (inputs, deliveries): (mpsc::Receiver<Input>, mpsc::Receiver<Delivery>),
        hosts: Arc<HostSignals>,
        (leadership, deny, ca): (
            watch::Sender<Leadership>,
            watch::Sender<DenyList>,
            watch::Sender<CaRotations>,
        ),
        metrics: Metrics,
    ) -> Driver {
        let mut node = node;
        // The roster as loaded, before any handle can ask for it.
        let moved = node.take_roster_changed();
        hosts.publish(node.state().hosts(), moved);
        Driver {
            known_addresses: node.state().member_addresses().clone(),
            node,
            config,
            peers,
            inputs,
            deliveries,
            proposals: HashMap::new(),
            reads_at_apply: HashMap::new(),
            reads_waiting: HashMap::new(),
            reads_ready: Vec::new(),
            next_read: nexus_protocol::id::random_u64(),
            snapshots_seen: 0,
            last_heard: HashMap::new(),
            hosts,
            leadership,
            deny,
            ca,
            last_leader: None,
            snapshots_counted: 0,
            starts: Starts::default(),
            orphans: HashMap::new(),
            crash: CrashWatch::default(),
            refusals: mpsc::channel(8),
            metrics,
        }
    }

    /// Runs the driver on a thread of its own until `shutdown` fires (or every handle is
    /// dropped); the receiver yields its result.
    pub(super) fn spawn(
        self,
        shutdown: oneshot::Receiver<()>,
    ) -> std::io::Result<oneshot::Receiver<Result<(), StoreError>>> {
        let (done, result) = oneshot::channel();
        std::thread::Builder::new()
            .name("raft-driver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                let result = match runtime {
                    Ok(runtime) => runtime.block_on(self.run(shutdown)),
                    Err(error) => Err(StoreError(format!("cannot start the driver: {error}"))),
                };
                if let Err(error) = &result {
                    tracing::error!("the raft driver stopped: {error}");
                }
                let _ = done.send(result);
            })?;
        Ok(result)
    }

    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) -> Result<(), StoreError> {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.peers.learn(&self.known_addresses);
        loop {
            // When this round's work began (not its wait): a long round is logged.
            let mut began = None;
            let mut handling = None;
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = ticker.tick() => {
                    self.node.tick();
                    self.watch_leader();
                    self.expire();
                    self.forget_removed_members();
                }
                // The driver holds a sender, so the channel never closes under it.
                Some(node) = self.refusals.1.recv() => self.leader_refused(node),
                input = self.inputs.recv() => {
                    let Some(input) = input else { return Ok(()) };
                    began = Some(Instant::now());
                    self.handle(input);
                    for _ in 0..MAX_INPUTS_PER_ROUND {
                        match self.inputs.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                    handling = began.map(|began| began.elapsed());
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
            let round = began.unwrap_or_else(Instant::now);
            let starts = &mut self.starts;
            let reads_at_apply = &mut self.reads_at_apply;
            let (peers, crash) = (&self.peers, &mut self.crash);
            let mut unsent = Vec::new();
            let output = self.node.process_ready_with(
                &mut |proposal, outcome, state| {
                    starts.applied(proposal, outcome, state);
                    if let Some(reads) = reads_at_apply.remove(&proposal.request_id) {
                        for (_, read) in reads {
                            read(state);
                        }
                    }
                },
                // A leader's messages go before it writes (a large write would hold them).
                Some(&mut |messages| unsent.extend(send(peers, crash, messages))),
            )?;
            self.unsent(unsent);
            // Before the waiters hear of the entries: a heartbeat after a refusal for a down
            // host must see the roster moved.
            let moved = self.node.take_roster_changed();
            self.hosts.publish(self.node.state().hosts(), moved);
            self.measure(&output);
            let (gathering, persisting, applying) =
                (output.gathering, output.persisting, output.applying);
            self.dispatch(output);
            let took = round.elapsed();
            if took >= SLOW_ROUND {
                // Neither ticks nor heartbeats while it lasts: past the election timeout, a
                // follower campaigns. Whoever looks into an election wants to see this.
                let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as u64);
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    inputs_ms = ms(handling),
                    gathering_ms = ms(gathering),
                    persisting_ms = ms(persisting),
                    applying_ms = ms(applying),
                    leading = self.node.is_leader(),
                    "the Raft thread was busy for a long round"
                );
            }
            self.hosts.raise(self.node.take_changed_hosts());
            self.hosts.raise_workspaces(self.node.state().workspaces());
            let deny = self.node.state().security().deny_list();
            self.deny.send_if_modified(|now| {
                let changed = now != deny;
                if changed {
                    now.clone_from(deny);
                }
                changed
            });
            let ca = self.node.state().ca_rotations();
            self.ca.send_if_modified(|now| {
                let changed = now != ca;
                if changed {
                    now.clone_from(ca);
                }
                changed
            });
            let leadership = Leadership {
                leading: self.node.is_leader(),
                term: self.node.term(),
            };
            let before = *self.leadership.borrow();
            if abandons_waiters(before, leadership) {
                self.abandon(before);
            }
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
                    Ok(()) => {
                        // Proposed again in this term (a retry): no longer an orphan of the last.
                        self.orphans.remove(&proposal.request_id);
                        self.proposals
                            .entry(proposal.request_id)
                            .or_default()
                            .push((
                                Instant::now(),
                                super::proposal_limit(
                                    self.config.proposal_timeout,
                                    &proposal.command,
                                ),
                                reply,
                            ));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Input::ReadAtApply { request_id, read } => {
                if self.node.state().outcome_of(request_id).is_some() {
                    read(self.node.state());
                } else {
                    self.reads_at_apply
                        .entry(request_id)
                        .or_default()
                        .push((Instant::now(), read));
                }
            }
            Input::Read {
                consistency: Consistency::Stale,
                query,
            } => query(Ok(self.applied())),
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
            Input::Heard(from) => self.node.heard_from(from),
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

    /// The node as the crash watch sees it, with the voters it needs.
    fn seen<'a>(&self, voters: &'a [NodeId]) -> Seen<'a> {
        let role = if self.node.is_leader() {
            crash::Role::Leader
        } else if self.node.is_pre_candidate() {
            crash::Role::PreCandidate
        } else if self.node.is_candidate() {
            crash::Role::Candidate
        } else {
            crash::Role::Follower
        };
        Seen {
            me: self.node.id(),
            leader: self.node.leader(),
            term: self.node.term(),
            role,
            silent: self.node.election_elapsed(),
            voters,
            election_ticks: self.config.raft.election_ticks,
        }
    }

    fn voters(&self) -> Vec<NodeId> {
        self.node
            .members()
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect()
    }

    /// Each tick: the peers forget any node outside the configuration (its queues, connection
    /// and round-trip series) and round trips measured long ago ([`Peers::tidy`]). Not only
    /// when the members change: a removed node that still runs may send to this one, whose Raft
    /// answers it, which makes it a queue again. An empty configuration (a joiner's before it
    /// hears of one) changes nothing.
    fn forget_removed_members(&mut self) {
        let mut members: BTreeSet<NodeId> = self.node.members().iter().map(|m| m.id).collect();
        if members.is_empty() {
            return;
        }
        // A follower behind on the log may follow a leader its applied configuration does not
        // hold yet (one added while it was away): that one is never forgotten.
        if let Some(leader) = self.node.leader() {
            members.insert(leader);
        }
        self.peers.tidy(&members);
    }

    /// Each tick: probes a silent leader, or campaigns in turn once it is known to be gone.
    fn watch_leader(&mut self) {
        let voters = self.voters();
        let step = self.crash.tick(&self.seen(&voters));
        self.take(step);
    }

    /// A probe found `node`'s address refused.
    fn leader_refused(&mut self, node: NodeId) {
        let voters = self.voters();
        let step = self.crash.refused(node, &self.seen(&voters));
        if step != Step::Nothing {
            tracing::warn!(
                leader = %node,
                term = self.node.term(),
                "the leader's address refused a probe: its process is gone; electing another \
                 without waiting for the election timeout"
            );
        }
        self.take(step);
    }

    fn take(&mut self, step: Step) {
        match step {
            Step::Nothing => {}
            Step::Probe(leader) => self.peers.probe(leader, self.refusals.0.clone()),
            Step::Forget { campaign } => {
                self.node.forget_leader();
                if campaign {
                    self.campaign();
                }
            }
            Step::Campaign => self.campaign(),
        }
    }

    fn campaign(&mut self) {
        if let Err(error) = self.node.campaign() {
            tracing::warn!("could not start an election: {error}");
        }
    }

    fn applied(&self) -> Applied<'_> {
        Applied {
            state: self.node.state(),
            index: self.node.applied_index(),
            term: self.node.applied_term(),
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

    /// Records what this round did: the time it took to apply, snapshots, a new leader, and
    /// (while this node leads, so that each is counted once) the workspace starts that ended.
    fn measure(&mut self, output: &ReadyOutput) {
        if let Some(applying) = output.applying {
            self.metrics.raft_apply_duration.observe_duration(applying);
        }
        let snapshots = self.node.snapshots_taken() + self.node.snapshots_restored();
        if snapshots != self.snapshots_counted {
            self.metrics
                .raft_snapshots
                .inc_by(snapshots.saturating_sub(self.snapshots_counted));
            self.snapshots_counted = snapshots;
        }
        let leader = self.node.leader();
        if leader.is_some() && leader != self.last_leader {
            self.metrics.raft_leader_changes.inc();
        }
        if leader.is_some() {
            self.last_leader = leader;
        }
        let finished = self.starts.take_finished();
        if self.node.is_leader() {
            for start in finished {
                let kind = start.kind.as_str();
                self.metrics
                    .workspace_starts
                    .inc([kind, start.outcome.as_str()]);
                if start.outcome == StartOutcome::Ok {
                    self.metrics
                        .workspace_start_duration
                        .observe_duration([kind], start.took);
                }
            }
        }
    }

    /// Tells Raft of the messages the peers could not take (see [`send`]).
    fn unsent(&mut self, unsent: Vec<(NodeId, bool)>) {
        for (to, snapshot) in unsent {
            self.node.report_unreachable(to);
            if snapshot {
                self.node.report_snapshot(to, false);
            }
        }
    }

    fn dispatch(&mut self, output: ReadyOutput) {
        let unsent = send(&self.peers, &mut self.crash, output.messages);
        self.unsent(unsent);
        for applied in output.applied {
            let waiters = self
                .proposals
                .remove(&applied.request_id)
                .unwrap_or_default();
            // The first attempt's wait: propose to applied, as this node saw it.
            if let Some(since) = waiters.iter().map(|(since, _, _)| *since).min() {
                self.metrics
                    .raft_commit_duration
                    .observe_duration(since.elapsed());
            }
            for (_, _, reply) in waiters {
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
            // The starts under way were applied, or not, in entries this node never saw.
            self.starts.clear();
            let state = self.node.state();
            self.proposals.retain(|request_id, waiters| {
                let Some(outcome) = state.outcome_of(*request_id) else {
                    return true;
                };
                for (_, _, reply) in waiters.drain(..) {
                    let _ = reply.send(Ok(outcome.clone()));
                }
                false
            });
            // Their entries were never applied here one by one: the restored state is the
            // nearest to them there is.
            self.reads_at_apply.retain(|request_id, reads| {
                if state.outcome_of(*request_id).is_none() {
                    return true;
                }
                for (_, read) in reads.drain(..) {
                    read(state);
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
                query(Ok(self.applied()));
            }
        }
        let learned = self.node.state().member_addresses();
        if learned != &self.known_addresses {
            self.known_addresses = learned.clone();
            self.peers.learn(&self.known_addresses);
        }
    }
}

/// Hands `messages` to the peers (noting a pre-vote granted); returns the recipient of each one
/// they could not queue, and whether it carried a snapshot.
fn send(
    peers: &Arc<Peers>,
    crash: &mut CrashWatch,
    messages: Vec<RaftMessage>,
) -> Vec<(NodeId, bool)> {
    let mut unsent = Vec::new();
    for message in messages {
        if grants_pre_vote(&message) {
            crash.granted_pre_vote();
        }
        let snapshot = carries_snapshot(&message);
        let to = NodeId::new(message.to);
        if !peers.send(message)
            && let Ok(to) = to
        {
            unsent.push((to, snapshot));
        }
    }
    unsent
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
