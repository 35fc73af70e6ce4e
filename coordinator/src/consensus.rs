//! The Raft node: raft-rs's `RawNode` and the replicated [`State`] it drives, without I/O.
//!
//! The caller owns time and the network: it calls [`RaftNode::tick`] every tick, hands in peers'
//! messages with [`RaftNode::step`], proposes with [`RaftNode::propose`], and after each of
//! these calls [`RaftNode::process_ready`], which persists what Raft asks to persist (through the
//! [`LogStore`]), applies committed entries to the state machine, and returns the messages to send
//! and the outcomes of the applied proposals. The same node runs in the deterministic simulation
//! (`tests/raft_simulation.rs`, over the RocksDB store) and, with the Coordinator issue's next
//! part, under a tokio task with QUIC peers.
//!
//! This module is the only home of the `raft` crate.
//!
//! Pitfalls handled here (`docs/crate-notes.md`): `pre_vote` and `check_quorum` are on; entries are
//! appended, and the hard state (with the commit index) is persisted, before committed entries are
//! applied; followers' messages are taken from `persisted_messages` only after persisting; an empty
//! entry is skipped only when it is a normal entry (a leave-joint conf change has empty data);
//! proposals carry their request id, so outcomes are matched to waiters by id, never by position.
//! A large restore is read off this thread before it applies ([`ahead`]), so applied may lag
//! committed for a while (`advance_apply_to`, never `advance_apply`).

use std::collections::VecDeque;

use nexus_protocol::codec::{self, CodecConfig};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::{NodeId, RequestId};
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, HardState, Snapshot,
};
use raft::{RawNode, StateRole};

use crate::state::{Outcome, Proposal, SnapshotError, State};

pub use raft::eraftpb::Message as RaftMessage;

mod ahead;
mod apply;
mod messages;
mod snapshots;
pub use messages::{
    carries_snapshot, check_peer_message, decode_message, encode_message, grants_pre_vote,
    is_control,
};

/// Timing and flow control of a Raft node, in ticks (the caller decides how long a tick is:
/// about 100 ms in production).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftConfig {
    /// Ticks without a leader before a follower campaigns (randomised in [this, 1.5 × this)).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The largest append message, in bytes.
    pub max_size_per_message: u64,
    /// Append messages in flight to one follower.
    pub max_inflight_messages: usize,
    /// Snapshot the state machine (and truncate the log behind it) once at least this many
    /// entries were applied since the last, and at least as many bytes of them as that
    /// snapshot took, each a quarter or a half more on the second and third members
    /// (`snapshots::snapshot_due`); 0 never does.
    pub snapshot_every: u64,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            election_ticks: 10,
            heartbeat_ticks: 3,
            max_size_per_message: 1 << 20,
            max_inflight_messages: 256,
            snapshot_every: 10_000,
        }
    }
}

/// Entries this large to persist in one round make a leader heartbeat before writing them.
const LARGE_WRITE_BYTES: usize = 1 << 20;
/// A write (or an apply) this long makes a leader heartbeat as soon as it is done.
const LONG_WRITE: std::time::Duration = std::time::Duration::from_millis(100);

/// A failure of the durable store. Fatal for the node: the caller must stop it (and the process
/// restarts from what is on disk), never carry on with a replica that may have diverged.
#[derive(Debug, thiserror::Error)]
#[error("the Raft store failed: {0}")]
pub struct StoreError(pub String);

/// Why the bytes of a proposal (forwarded by a follower, or read back from a log entry, which
/// has the same encoding) are not a proposal. The service refuses a corrupt forward; a corrupt
/// log entry is a [`StoreError`].
#[derive(Debug, thiserror::Error)]
pub enum CorruptProposal {
    #[error("truncated")]
    Truncated,
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

/// Where a node keeps its Raft log and hard state. raft-rs reads through [`raft::Storage`]; the
/// node writes through these methods.
pub trait LogStore: raft::Storage + Clone + Send + 'static {
    /// Appends entries, replacing any stored entries from the first new index on.
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError>;
    fn set_hard_state(&self, hard_state: &HardState) -> Result<(), StoreError>;
    fn set_commit(&self, commit: u64) -> Result<(), StoreError>;
    /// Replaces the log and state with a snapshot the leader sent.
    fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
    /// Stores a snapshot of the state machine at `index`, with the configuration in force there,
    /// in one write, and may truncate the log behind it; unless the stored snapshot is as new
    /// already (one from the leader, applied meanwhile), when it writes nothing and says so
    /// (`false`). Called off the Raft thread, beside the other methods. The configuration is stored nowhere
    /// else: a restart begins from the state and the configuration of one index, and replays the
    /// log from there.
    fn save_snapshot(
        &self,
        data: Vec<u8>,
        index: u64,
        term: u64,
        conf_state: &ConfState,
    ) -> Result<bool, StoreError>;
    /// Every entry up to `index` is applied here: a copy kept in memory to read it back may go.
    fn applied(&self, _index: u64) {}
}

fn store_error(error: raft::Error) -> StoreError {
    StoreError(error.to_string())
}

/// The state machine's snapshot cannot be written or read: the store cannot hold or restore it.
impl From<SnapshotError> for StoreError {
    fn from(error: SnapshotError) -> StoreError {
        StoreError(error.to_string())
    }
}

/// A proposal's fate, once its entry is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub index: u64,
    pub request_id: RequestId,
    pub outcome: Outcome,
}

/// What one round of [`RaftNode::process_ready`] produced.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// To send to peers (each names its recipient in `to`).
    pub messages: Vec<RaftMessage>,
    /// Proposals applied in this round, in log order.
    pub applied: Vec<Applied>,
    /// Answers to [`RaftNode::read_index`]: the read's context and the index the state machine
    /// must have applied before the read may be served.
    pub reads: Vec<(u64, u64)>,
    /// How long applying this round's committed entries took, if there were any.
    pub applying: Option<std::time::Duration>,
    /// How long persisting took (a snapshot from the leader, entries, the hard state), if
    /// anything was persisted.
    pub persisting: Option<std::time::Duration>,
    /// How long raft-rs took to gather the round's work (it reads committed entries from the
    /// store).
    pub gathering: Option<std::time::Duration>,
}

/// A membership change, one node at a time (so the cluster never enters a joint configuration
/// of its own making).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Join as a learner at this address: receives the log, does not vote.
    AddLearner(NodeId, String),
    /// Make a learner (or a new node) a voter.
    Promote(NodeId),
    Remove(NodeId),
}

/// Refuses, before it is proposed, a membership change that Raft would refuse to apply or that
/// would leave the cluster unable to form a quorum: removing the last voter, re-adding a voter as
/// a learner (which would demote it), or promoting a node that never joined as a learner (a voter
/// that may not exist, counted in every majority from then on).
pub fn check_member_change(conf: &ConfState, change: &MemberChange) -> Result<(), WireError> {
    let is_voter = |node: &NodeId| conf.voters.contains(&node.get());
    let is_learner = |node: &NodeId| conf.learners.contains(&node.get());
    let refused = |message: String| Err(WireError::new(ErrorCode::InvalidArgument, message));
    match change {
        MemberChange::AddLearner(node, _) if is_voter(node) => {
            refused(format!("coordinator {node} is already a voting member"))
        }
        MemberChange::Promote(node) if !is_voter(node) && !is_learner(node) => refused(format!(
            "coordinator {node} is not a member: add it, and it is promoted once it has caught up"
        )),
        MemberChange::Remove(node) if !is_voter(node) && !is_learner(node) => {
            refused(format!("coordinator {node} is not a member"))
        }
        MemberChange::Remove(node) if is_voter(node) && conf.voters.len() == 1 => refused(format!(
            "coordinator {node} is the last voting member: add another before removing it"
        )),
        _ => Ok(()),
    }
}

/// A member of the configuration as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProgress {
    pub id: NodeId,
    pub voter: bool,
    /// The leader's view of its replication (none on followers).
    pub matched: Option<u64>,
}

/// A Raft node and the state machine it drives.
pub struct RaftNode<S: LogStore> {
    id: NodeId,
    raw: RawNode<S>,
    state: State,
    applied_index: u64,
    snapshot_every: u64,
    snapshot_index: u64,
    /// The last snapshot's size (0 until this process took or restored one), and the bytes of
    /// the entries applied since: what `snapshots::snapshot_due` weighs.
    snapshot_bytes: u64,
    log_bytes: u64,
    snapshots_restored: u64,
    snapshots_taken: u64,
    /// A membership change was applied since the last snapshot.
    conf_changed: bool,
    /// Committed entries not yet applied: those behind a restore still being read.
    unapplied: VecDeque<Entry>,
    /// Large restores being read off this thread ([`ahead`]).
    ahead: ahead::Ahead,
    /// The snapshot being encoded and written off this thread, if one is ([`snapshots`]).
    taking: Option<snapshots::Taking>,
}

/// A node that stops waits for its snapshot's thread, which holds the store open: a restart in
/// the same process (the Raft simulation's) opens the store again at once.
impl<S: LogStore> Drop for RaftNode<S> {
    fn drop(&mut self) {
        if let Err(error) = self.settle_snapshot() {
            tracing::warn!(node = %self.id, "a snapshot failed as the node stopped: {error}");
        }
    }
}

impl<S: LogStore> std::fmt::Debug for RaftNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .field("applied_index", &self.applied_index)
            .finish_non_exhaustive()
    }
}

/// Entries carry proposals encoded by the protocol's codec (so bincode keeps one home), as local
/// frames: a restore's proposal carries a whole state, which may pass any connection's frame
/// limit (it travels between coordinators in pieces, see `peers`), and is bounded like the
/// state's snapshot by the frame's header. A forward's bytes are bounded before they get here, by
/// the peer frame limit or by the assembler of pieces.
fn entry_codec() -> CodecConfig {
    CodecConfig::local()
}

fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

/// Forwards raft-rs's slog records to tracing.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", record.msg()),
            slog::Level::Debug | slog::Level::Trace => {
                tracing::trace!(target: "raft", "{}", record.msg())
            }
        }
        Ok(())
    }
}

impl<S: LogStore> RaftNode<S> {
    /// A node over `store`, with the state machine as it was persisted at `applied_index` (zero
    /// and the empty state for a new node).
    pub fn new(
        id: NodeId,
        store: S,
        state: State,
        applied_index: u64,
        config: &RaftConfig,
    ) -> Result<RaftNode<S>, StoreError> {
        let raft_config = raft::Config {
            id: id.get(),
            election_tick: config.election_ticks,
            // Randomised in [election, 1.5 × election) rather than raft-rs's [1×, 2×): a dead
            // leader is replaced sooner (about 1.1 s at p50 with 100 ms ticks), at the price of
            // a split vote in about one failover of twenty, which takes one more timeout (2.0 to
            // 2.3 s): see docs/benchmarks.md.
            max_election_tick: config.election_ticks + config.election_ticks.div_ceil(2),
            heartbeat_tick: config.heartbeat_ticks,
            applied: applied_index,
            max_size_per_msg: config.max_size_per_message,
            max_inflight_msgs: config.max_inflight_messages,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        raft_config.validate().map_err(store_error)?;
        let raw = RawNode::new(&raft_config, store, &raft_logger()).map_err(store_error)?;
        Ok(RaftNode {
            id,
            raw,
            state,
            applied_index,
            snapshot_every: config.snapshot_every,
            snapshot_index: applied_index,
            snapshot_bytes: 0,
            log_bytes: 0,
            snapshots_restored: 0,
            snapshots_taken: 0,
            conf_changed: false,
            unapplied: VecDeque::new(),
            ahead: ahead::Ahead::new(),
            taking: None,
        })
    }

    /// The bytes of the entries not yet persisted.
    fn unstable_bytes(&self) -> usize {
        self.raw
            .raft
            .raft_log
            .unstable_entries()
            .iter()
            .map(|entry| entry.data.len())
            .sum()
    }

    /// Reads ahead, off this thread, every restore whose entry has at least `bytes` (8 MiB
    /// unless a test wants small states read ahead too; see [`ahead`]).
    pub fn read_ahead_from(&mut self, bytes: usize) {
        self.ahead.set_threshold(bytes);
    }

    /// Committed entries waiting to apply behind a restore being read, and the restores being
    /// read.
    pub fn waiting(&self) -> (usize, usize) {
        (self.unapplied.len(), self.ahead.len())
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The hosts whose desired state changed since the last call (see [`State::take_changed_hosts`]).
    pub fn take_changed_hosts(&mut self) -> crate::state::ChangedHosts {
        self.state.take_changed_hosts()
    }

    /// Whether the roster changed since the last call (see [`State::take_roster_changed`]).
    pub fn take_roster_changed(&mut self) -> bool {
        self.state.take_roster_changed()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The term of the entry at the applied index (the term a backup of this state names). The
    /// applied index is never behind the snapshot the log starts after, so its term is known.
    pub fn applied_term(&self) -> u64 {
        self.raw
            .raft
            .raft_log
            .term(self.applied_index)
            .unwrap_or_default()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        NodeId::new(self.raw.raft.leader_id).ok()
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        // A follower whose apply waits on a restore's read does not campaign meanwhile: every
        // replica reads the same state for seconds and then holds its thread to swap it in, the
        // leader too, and a follower that timed out on a leader busy with the restore would
        // depose it mid-restore. A leader that is gone is replaced once the read is done.
        if self.raw.raft.state == StateRole::Follower && self.reading_restore() {
            self.raw.raft.election_elapsed = 0;
        }
        self.raw.tick();
    }

    /// Whether applying waits on a restore being read.
    fn reading_restore(&self) -> bool {
        !self.unapplied.is_empty() && self.ahead.len() > 0
    }

    /// How many snapshots from a leader this node has restored since it started.
    pub fn snapshots_restored(&self) -> u64 {
        self.snapshots_restored
    }

    /// How many snapshots of its state this node has taken since it started.
    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots_taken
    }

    /// Tells Raft whether a snapshot this node sent to `peer` arrived. The transport must call it
    /// for every snapshot message, or replication to that peer stalls for ever.
    pub fn report_snapshot(&mut self, peer: NodeId, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer.get(), status);
    }

    /// Tells Raft that a message to `peer` could not be sent, so it probes instead of streaming.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.raw.report_unreachable(peer.get());
    }

    /// Starts an election now (tests, and leader transfer targets).
    pub fn campaign(&mut self) -> Result<(), StoreError> {
        self.raw.campaign().map_err(store_error)
    }

    /// The current configuration: voters and learners, with the leader's view of their
    /// replication.
    pub fn members(&self) -> Vec<MemberProgress> {
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let leader = self.is_leader();
        let progress = |id: u64| {
            leader
                .then(|| self.raw.raft.prs().get(id).map(|p| p.matched))
                .flatten()
        };
        let mut members = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (ids, voter) in [
            (&conf.voters, true),
            (&conf.voters_outgoing, true),
            (&conf.learners, false),
            (&conf.learners_next, false),
        ] {
            for &id in ids {
                if let Ok(node) = NodeId::new(id)
                    && seen.insert(id)
                {
                    members.push(MemberProgress {
                        id: node,
                        voter,
                        matched: progress(id),
                    });
                }
            }
        }
        members.sort_by_key(|m| m.id);
        members
    }

    /// Whether a membership change is proposed and not yet applied.
    pub fn conf_change_pending(&self) -> bool {
        self.raw.raft.pending_conf_index > self.applied_index
    }

    /// Whether the node asks for pre-votes (the election's first round, which changes no term).
    pub fn is_pre_candidate(&self) -> bool {
        self.raw.raft.state == StateRole::PreCandidate
    }

    /// Ticks since this node last heard from its leader (or since its last election began):
    /// Raft's election clock.
    pub fn election_elapsed(&self) -> usize {
        self.raw.raft.election_elapsed
    }

    /// Counts a sign of life from `from` (a piece of its large append arriving) as hearing from
    /// the leader, if it is this follower's leader: the election clock starts again, as at a
    /// heartbeat. Liveness only: nothing is taken from it, and a leader that is gone sends no
    /// pieces.
    pub fn heard_from(&mut self, from: NodeId) {
        let raft = &mut self.raw.raft;
        if raft.state == StateRole::Follower && raft.leader_id == from.get() {
            raft.election_elapsed = 0;
        }
    }

    /// Forgets the leader this follower follows, keeping its term and vote, so that it no longer
    /// honours that leader's lease and grants a peer's pre-vote at once. For a leader whose
    /// process is known to be gone; a leader that is alive after all is learned again from its
    /// next heartbeat.
    pub fn forget_leader(&mut self) {
        if self.raw.raft.state == StateRole::Follower {
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
    }

    /// Whether the node is a candidate (or pre-candidate) in an election.
    pub fn is_candidate(&self) -> bool {
        matches!(
            self.raw.raft.state,
            StateRole::Candidate | StateRole::PreCandidate
        )
    }

    /// The last index of this node's log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Asks for the index a linearizable read must wait for. The answer comes back from
    /// [`RaftNode::process_ready`] in `reads`, tagged with `context` — or never, if leadership
    /// is lost meanwhile: the caller needs a timeout.
    pub fn read_index(&mut self, context: u64) {
        self.raw.read_index(context.to_be_bytes().to_vec());
    }

    /// Proposes one membership change (leader only). A change proposed while another is pending
    /// is dropped by Raft: the caller checks the configuration and retries after a timeout.
    pub fn propose_member_change(&mut self, change: &MemberChange) -> Result<(), WireError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if self.conf_change_pending() {
            return Err(WireError::new(
                ErrorCode::Timeout,
                "another membership change is in progress; retry when it is done",
            ));
        }
        check_member_change(&self.raw.raft.prs().conf().to_conf_state(), change)?;
        let mut conf_change = ConfChange::default();
        let (kind, node, context) = match change {
            MemberChange::AddLearner(node, address) => (
                ConfChangeType::AddLearnerNode,
                node,
                address.as_bytes().to_vec(),
            ),
            MemberChange::Promote(node) => (ConfChangeType::AddNode, node, Vec::new()),
            MemberChange::Remove(node) => (ConfChangeType::RemoveNode, node, Vec::new()),
        };
        conf_change.set_change_type(kind);
        conf_change.node_id = node.get();
        conf_change.context = context.into();
        self.raw
            .propose_conf_change(Vec::new(), conf_change)
            .map_err(|e| {
                WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("the membership change was refused: {e}"),
                )
            })
    }

    /// Asks the leader to hand over to `to` (which must be an up-to-date voter).
    pub fn transfer_leader(&mut self, to: NodeId) {
        self.raw.transfer_leader(to.get());
    }

    fn not_leader(&self) -> WireError {
        WireError::new(
            ErrorCode::NotLeader,
            format!("node {} is not the leader", self.id),
        )
        .with_detail(ErrorDetail::NotLeader {
            leader: self.leader(),
            address: None,
        })
    }

    /// Takes a message from a peer. Messages that raft-rs refuses (from unknown peers, stale
    /// terms) are dropped with a debug log: the network is allowed to deliver anything.
    pub fn step(&mut self, message: RaftMessage) {
        if let Err(error) = self.raw.step(message) {
            tracing::debug!(node = %self.id, "dropped a raft message: {error}");
        }
    }

    /// Proposes a command. Only the leader takes proposals; anyone else answers `NOT_LEADER`,
    /// naming the leader when it knows one. An accepted proposal may still be lost to a change of
    /// leader: the caller waits for its request id among the applied outcomes, with a timeout.
    pub fn propose(&mut self, proposal: &Proposal) -> Result<(), WireError> {
        if !self.is_leader() {
            return Err(self.not_leader().with_request_id(proposal.request_id));
        }
        let data = encode_forwarded(proposal)?;
        let context = proposal.request_id.as_u128().to_be_bytes().to_vec();
        self.raw.propose(context, data).map_err(|e| {
            WireError::new(
                ErrorCode::NotLeader,
                format!("the proposal was dropped: {e}"),
            )
            .with_request_id(proposal.request_id)
        })
    }

    /// Handles everything Raft has ready: persists entries and hard state, applies committed
    /// entries, and returns the messages to send and the applied outcomes. A store failure is
    /// fatal for this node.
    pub fn process_ready(&mut self) -> Result<ReadyOutput, StoreError> {
        self.process_ready_with(&mut |_, _, _| {}, None)
    }

    /// [`RaftNode::process_ready`], showing `observe` each applied proposal, its outcome and the
    /// state right after it, and handing `send_first` (if any) the messages that may go before
    /// this round persists anything (a leader's), so that they are not held for the write.
    pub fn process_ready_with(
        &mut self,
        observe: &mut dyn FnMut(&Proposal, &Outcome, &State),
        send_first: Option<&mut dyn FnMut(Vec<RaftMessage>)>,
    ) -> Result<ReadyOutput, StoreError> {
        let mut output = ReadyOutput::default();
        self.collect_snapshot(false)?;
        if !self.raw.has_ready() {
            if !self.unapplied.is_empty() {
                // Entries behind a restore being read: apply what the read lets through.
                self.apply_entries(Vec::new(), &mut output, observe)?;
                self.raw.advance_apply_to(self.applied_index);
                self.maybe_snapshot()?;
            }
            return Ok(output);
        }
        // A leader about to write large entries (a restore's state) heartbeats first: nothing
        // ticks while the write lasts, and a follower that hears nothing for an election timeout
        // campaigns.
        if self.is_leader() && self.unstable_bytes() >= LARGE_WRITE_BYTES {
            self.raw.ping();
        }
        let gathering = std::time::Instant::now();
        let mut ready = self.raw.ready();
        output.gathering = Some(gathering.elapsed());
        // A leader may send before persisting (Raft thesis 10.2.1); followers may not.
        let first = ready.take_messages();
        match send_first {
            Some(send) if !first.is_empty() => send(first),
            _ => output.messages.extend(first),
        }
        output
            .reads
            .extend(ready.take_read_states().into_iter().filter_map(|read| {
                let context: [u8; 8] = read.request_ctx.as_slice().try_into().ok()?;
                Some((u64::from_be_bytes(context), read.index))
            }));
        let persisting = std::time::Instant::now();
        if !ready.snapshot().is_empty() {
            // The leader compacted past this node's log: start over from its snapshot. It is
            // decoded before it is persisted, so a bad one stops this node without leaving on
            // disk a snapshot that every restart would fail on.
            let snapshot = ready.snapshot().clone();
            let started = std::time::Instant::now();
            let state = State::from_snapshot(&snapshot.data)?;
            let decoded = started.elapsed();
            self.raw.store().apply_snapshot(&snapshot)?;
            self.state = state;
            self.applied_index = snapshot.get_metadata().index;
            // Raft sends a snapshot only past every committed entry: none of those waiting
            // behind a restore's read is still to apply.
            self.unapplied
                .retain(|entry| entry.index > self.applied_index);
            self.ahead.forget_through(self.applied_index);
            self.snapshot_index = self.applied_index;
            self.snapshot_bytes = snapshot.data.len() as u64;
            self.log_bytes = 0;
            self.snapshots_restored += 1;
            tracing::info!(
                node = %self.id,
                index = self.applied_index,
                bytes = snapshot.data.len(),
                decode_ms = decoded.as_millis() as u64,
                write_ms = (started.elapsed() - decoded).as_millis() as u64,
                "restored from the leader's snapshot"
            );
        }
        if !ready.entries().is_empty() {
            self.raw.store().append(ready.entries())?;
            self.ahead.appended(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.raw.store().set_hard_state(hard_state)?;
        }
        if !ready.snapshot().is_empty() || !ready.entries().is_empty() || ready.hs().is_some() {
            let took = persisting.elapsed();
            output.persisting = Some(took);
            // And again once a long write is done, rather than at the next heartbeat's tick:
            // these go out with this round's other messages.
            if took >= LONG_WRITE && self.is_leader() {
                self.raw.ping();
            }
        }
        output.messages.extend(ready.take_persisted_messages());
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, &mut output, observe)?;
        // `advance` would also mark applied everything committed so far, which a restore being
        // read holds back: applied is advanced below, to what was applied.
        let mut light = self.raw.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.store().set_commit(commit)?;
        }
        output.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, &mut output, observe)?;
        // Behind a restore being read, applied lags committed (raft-rs allows it).
        self.raw.advance_apply_to(self.applied_index);
        self.raw.store().applied(self.applied_index);
        self.maybe_snapshot()?;
        self.leave_joint_if_needed();
        Ok(output)
    }

    /// A leader that finds the configuration joint (a change of several members, or a leader that
    /// died between entering and leaving) proposes the leave itself, so joint consensus is always
    /// left.
    fn leave_joint_if_needed(&mut self) {
        if !self.is_leader() || self.conf_change_pending() {
            return;
        }
        if self
            .raw
            .raft
            .prs()
            .conf()
            .to_conf_state()
            .voters_outgoing
            .is_empty()
        {
            return;
        }
        if let Err(error) = self
            .raw
            .propose_conf_change(Vec::new(), ConfChangeV2::default())
        {
            tracing::warn!(node = %self.id, "cannot propose leaving the joint configuration: {error}");
        }
    }
}

/// A corrupt entry is a corrupt log: fatal, never skipped (skipping would diverge the replica).
fn decode_proposal(data: &[u8]) -> Result<Proposal, StoreError> {
    decode_forwarded(data).map_err(|e| StoreError(format!("a log entry: {e}")))
}

/// A proposal as it travels from a follower to the leader: the log entry's own encoding.
pub fn encode_forwarded(proposal: &Proposal) -> Result<Vec<u8>, WireError> {
    codec::encode(proposal, entry_codec()).map_err(|e| e.to_wire())
}

/// Reads a forwarded proposal (from an authenticated coordinator; still checked, never trusted
/// to be well formed).
pub fn decode_forwarded(data: &[u8]) -> Result<Proposal, CorruptProposal> {
    let (payload, _) =
        codec::split_frame(data, entry_codec())?.ok_or(CorruptProposal::Truncated)?;
    Ok(codec::decode(payload)?)
}

#[cfg(test)]
mod tests {
    // Tests fail by panicking.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use raft::Storage as _;

    use super::*;
    use crate::store::{Durability, FORMAT_VERSION, RocksStore, StoreIdentity};

    fn node(id: u64) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState::from((voters.to_vec(), learners.to_vec()))
    }

    #[test]
    fn member_changes_that_would_break_the_cluster_are_refused() {
        let add = |id| MemberChange::AddLearner(node(id), "127.0.0.1:7000".into());
        let cases = [
            // (voters, learners, change, allowed)
            (&[1][..], &[][..], add(2), true),
            (&[1], &[2], MemberChange::Promote(node(2)), true),
            (&[1, 2], &[], MemberChange::Remove(node(1)), true),
            (&[1], &[2], MemberChange::Remove(node(2)), true),
            (&[1, 2], &[], MemberChange::Promote(node(2)), true),
            (&[1], &[], MemberChange::Remove(node(1)), false),
            (&[1], &[2], MemberChange::Remove(node(1)), false),
            (&[1, 2], &[], add(2), false),
            (&[1], &[], MemberChange::Promote(node(2)), false),
            (&[1], &[], MemberChange::Remove(node(3)), false),
        ];
        for (voters, learners, change, allowed) in cases {
            let result = check_member_change(&conf(voters, learners), &change);
            assert_eq!(
                result.is_ok(),
                allowed,
                "{voters:?} {learners:?} {change:?}"
            );
            if let Err(error) = result {
                assert_eq!(error.code, ErrorCode::InvalidArgument);
            }
        }
    }

    fn open(dir: &std::path::Path) -> RaftNode<RocksStore> {
        let identity = StoreIdentity {
            format: FORMAT_VERSION,
            cluster: "unit".into(),
            node: node(1),
        };
        let store = RocksStore::open(dir, &identity, &[node(1)], Durability::Unsynced).unwrap();
        let (state, applied) = store.state_snapshot().unwrap();
        RaftNode::new(node(1), store, state, applied, &RaftConfig::default()).unwrap()
    }

    /// Runs rounds until everything in the log is applied, and a snapshot being taken is stored.
    fn settle(raft: &mut RaftNode<RocksStore>) {
        for _ in 0..16 {
            raft.process_ready().unwrap();
            if raft.applied_index() == raft.last_index() && !raft.raw.has_ready() {
                raft.settle_snapshot().unwrap();
                return;
            }
        }
        panic!("the node did not settle");
    }

    /// A one-node cluster's only member, leading.
    fn leader(dir: &std::path::Path) -> RaftNode<RocksStore> {
        let mut raft = open(dir);
        raft.campaign().unwrap();
        settle(&mut raft);
        assert!(raft.is_leader());
        raft
    }

    fn voters(raft: &RaftNode<RocksStore>) -> Vec<u64> {
        raft.raw.raft.prs().conf().to_conf_state().voters
    }

    #[test]
    fn a_change_raft_refuses_is_skipped_alike_now_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut raft = leader(dir.path());
        // Past the check, as a version without it would have written it.
        let mut remove = ConfChange::default();
        remove.set_change_type(ConfChangeType::RemoveNode);
        remove.node_id = 1;
        raft.raw.propose_conf_change(Vec::new(), remove).unwrap();
        let index = raft.last_index();
        settle(&mut raft);
        assert_eq!(
            raft.applied_index(),
            index,
            "the refused change was applied as a no-op"
        );
        assert_eq!(voters(&raft), [1]);
        assert!(raft.is_leader());
        drop(raft);
        // A restart replays it, or starts from a snapshot past it: either way it comes back.
        let mut raft = open(dir.path());
        settle(&mut raft);
        assert_eq!(voters(&raft), [1]);
        assert!(raft.applied_index() >= index);
    }

    #[test]
    fn a_membership_change_is_stored_with_the_state_it_belongs_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut raft = leader(dir.path());
        let address = "127.0.0.1:7002".to_string();
        raft.propose_member_change(&MemberChange::AddLearner(node(2), address.clone()))
            .unwrap();
        let index = raft.last_index();
        settle(&mut raft);
        let store = raft.raw.store();
        let stored = store.initial_state().unwrap().conf_state;
        assert_eq!((stored.voters, stored.learners), (vec![1], vec![2]));
        // The state on disk is the one at the change's index, and carries the new address.
        let (state, at) = store.state_snapshot().unwrap();
        assert_eq!(at, index);
        assert_eq!(state.member_addresses().get(&node(2)), Some(&address));
        drop(raft);
        let raft = open(dir.path());
        assert_eq!(raft.members().len(), 2);
        assert_eq!(raft.applied_index(), index);
    }

    /// A proposal of `command` by an admin, as request `n` at its own time.
    fn proposal(n: u128, command: crate::state::Command) -> Proposal {
        use nexus_protocol::UserName;
        use nexus_protocol::clock::Timestamp;
        use nexus_protocol::identity::{Identity, Role};
        Proposal {
            request_id: RequestId::from_u128(n),
            at: Timestamp(1_000_000 + n as u64),
            proposer: Identity::User {
                name: UserName::new("root").unwrap(),
                role: Role::Admin,
            },
            command,
        }
    }

    /// A restore of `backup`, taken at `index`.
    fn restore_of(backup: &State, index: u64) -> crate::state::Command {
        use nexus_protocol::backup::BackupHeader;
        use nexus_protocol::clock::Timestamp;
        crate::state::Command::Restore {
            header: BackupHeader {
                id: "b1".into(),
                cluster: "ab".repeat(32),
                node: node(1),
                index,
                term: 1,
                created_at: Timestamp(1_000),
                software: "test".into(),
                state_format: crate::state::STATE_FORMAT,
                counts: vec![],
            },
            state: backup.to_snapshot().unwrap(),
        }
    }

    /// Reads every restore ahead, each read held until the returned sender sends (or drops).
    fn hold_reads(raft: &mut RaftNode<RocksStore>) -> std::sync::mpsc::Sender<()> {
        use std::sync::{Arc, Mutex};
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        raft.read_ahead_from(0);
        raft.ahead.read_with(Arc::new(move |proposal| {
            let _ = gate.lock().unwrap().recv();
            crate::state::ReadBackup::read(proposal)
        }));
        open
    }

    /// Node 1 of three, a follower that has heard from no leader yet.
    fn follower(dir: &std::path::Path) -> RaftNode<RocksStore> {
        let identity = StoreIdentity {
            format: FORMAT_VERSION,
            cluster: "unit".into(),
            node: node(1),
        };
        let voters = [node(1), node(2), node(3)];
        let store = RocksStore::open(dir, &identity, &voters, Durability::Unsynced).unwrap();
        let (state, applied) = store.state_snapshot().unwrap();
        RaftNode::new(node(1), store, state, applied, &RaftConfig::default()).unwrap()
    }

    /// A restore read off the Raft thread (every restore, here, and each read held until the
    /// test lets it finish) holds back the entries behind it while the node goes on, then leaves
    /// the state exactly as a read in place: the same entries in the same order, the same
    /// outcomes, the same bytes.
    #[test]
    fn a_restore_read_ahead_applies_as_one_read_in_place() {
        use nexus_protocol::model::{PortBinding, WorkspaceSpec};
        use nexus_protocol::{HostId, UserName};

        use crate::state::Command;

        let create = |name: &str, port: u16| Command::CreateWorkspace {
            spec: WorkspaceSpec {
                ports: nexus_fixtures::ports(&[80]),
                ..nexus_fixtures::spec(name)
            },
            owner: UserName::new("alice").unwrap(),
            host: HostId::new("h1").unwrap(),
            ports: vec![PortBinding {
                container: 80,
                host: port,
            }],
        };
        let register = Command::RegisterHost(nexus_fixtures::host("h1"));
        // The backup: h1 with workspace `a`.
        let mut backup = State::default();
        for (n, command) in [(1, register.clone()), (2, create("a", 20000))] {
            assert_eq!(backup.apply(&proposal(n, command)), Outcome::Applied);
        }
        let restore = restore_of(&backup, 2);
        let names = |raft: &RaftNode<RocksStore>| -> Vec<String> {
            raft.state()
                .workspaces()
                .keys()
                .map(ToString::to_string)
                .collect()
        };
        let rounds = |raft: &mut RaftNode<RocksStore>, outcomes: &mut Vec<(u64, Outcome)>| {
            for _ in 0..5 {
                let output = raft.process_ready().unwrap();
                outcomes.extend(output.applied.into_iter().map(|a| (a.index, a.outcome)));
            }
        };
        // The running cluster: h1 with `c`; then the restore and `b` in one round, so `b`'s entry
        // commits with the restore's; then `d`, proposed while the restore is being read.
        let run = |read_ahead: bool| {
            let dir = tempfile::tempdir().unwrap();
            let mut raft = leader(dir.path());
            let open = read_ahead.then(|| hold_reads(&mut raft));
            for (n, command) in [(11, register.clone()), (12, create("c", 20002))] {
                raft.propose(&proposal(n, command)).unwrap();
            }
            settle(&mut raft);
            let before = raft.applied_index();
            let mut outcomes = Vec::new();
            raft.propose(&proposal(13, restore.clone())).unwrap();
            raft.propose(&proposal(14, create("b", 20001))).unwrap();
            rounds(&mut raft, &mut outcomes);
            raft.propose(&proposal(15, create("d", 20003))).unwrap();
            rounds(&mut raft, &mut outcomes);
            if let Some(open) = open {
                assert_eq!(
                    raft.applied_index(),
                    before,
                    "nothing applies past the read"
                );
                assert_eq!(raft.waiting(), (3, 1));
                assert!(outcomes.is_empty());
                assert_eq!(names(&raft), ["c"]);
                open.send(()).unwrap();
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while raft.applied_index() < raft.last_index() || raft.waiting() != (0, 0) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the restore never applied"
                );
                rounds(&mut raft, &mut outcomes);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            (outcomes, names(&raft), raft.state().to_snapshot().unwrap())
        };
        let (in_place, names, state) = run(false);
        assert_eq!(names, ["a", "b", "d"], "`c` went with the restore");
        assert_eq!(in_place.len(), 3);
        assert!(
            in_place
                .iter()
                .all(|(_, outcome)| *outcome == Outcome::Applied)
        );
        assert_eq!(run(true), (in_place, names, state));
    }

    /// A piece of the leader's large append counts as hearing from it (the leader cannot
    /// heartbeat while it writes the same entry); a piece from another peer does not.
    #[test]
    fn a_piece_from_the_leader_restarts_the_election_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut raft = follower(dir.path());
        let mut heartbeat = RaftMessage::default();
        heartbeat.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        heartbeat.from = 2;
        heartbeat.to = 1;
        heartbeat.term = 2;
        raft.step(heartbeat);
        raft.process_ready().unwrap();
        assert_eq!(raft.leader(), Some(node(2)));
        for _ in 0..5 {
            raft.tick();
        }
        assert_eq!(raft.election_elapsed(), 5);
        raft.heard_from(node(3));
        assert_eq!(raft.election_elapsed(), 5, "not the leader");
        raft.heard_from(node(2));
        assert_eq!(raft.election_elapsed(), 0);
    }

    /// A follower whose apply waits on a restore's read does not campaign, however long the
    /// read (every replica, the leader too, is busy with the same restore); once it is applied,
    /// the election clock runs again.
    #[test]
    fn a_follower_does_not_campaign_while_it_reads_a_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut raft = follower(dir.path());
        let open = hold_reads(&mut raft);
        let restore = proposal(7, restore_of(&State::default(), 1));
        // Leader 2 appends the restore and commits it in one message.
        let mut append = RaftMessage::default();
        append.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
        append.from = 2;
        append.to = 1;
        append.term = 2;
        append.log_term = 1;
        append.index = 1;
        append.commit = 2;
        append.entries = vec![Entry {
            index: 2,
            term: 2,
            data: encode_forwarded(&restore).unwrap().into(),
            ..Default::default()
        }]
        .into();
        raft.step(append);
        raft.process_ready().unwrap();
        assert_eq!(raft.waiting(), (1, 1), "the restore waits on its read");
        let election = RaftConfig::default().election_ticks * 2;
        for _ in 0..election {
            raft.tick();
            raft.process_ready().unwrap();
        }
        assert!(!raft.is_candidate() && raft.leader() == Some(node(2)));
        open.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while raft.applied_index() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the restore never applied"
            );
            raft.process_ready().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for _ in 0..election {
            raft.tick();
        }
        assert!(
            raft.is_candidate(),
            "a silent leader is left once the restore is in"
        );
    }
}
