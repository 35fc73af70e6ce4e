//! The Raft node: raft-rs's `RawNode` and the replicated [`State`] it drives, without I/O.
//!
//! The caller owns time and the network: it calls [`RaftNode::tick`] every tick, hands in peers'
//! messages with [`RaftNode::step`], proposes with [`RaftNode::propose`], and after each of
//! these calls [`RaftNode::process_ready`], which persists what Raft asks to persist (through the
//! [`LogStore`]), applies committed entries to the state machine, and returns the messages to send
//! and the outcomes of the applied proposals. The same node runs in the deterministic simulation
//! (`tests/raft_simulation.rs`) and, with the Coordinator issue's next part, under a tokio task
//! with QUIC peers and a RocksDB store.
//!
//! This module is the only home of the `raft` crate.
//!
//! Pitfalls handled here (`../shared/notes.md`): `pre_vote` and `check_quorum` are on; entries are
//! appended, and the hard state (with the commit index) is persisted, before committed entries are
//! applied; followers' messages are taken from `persisted_messages` only after persisting; an empty
//! entry is skipped only when it is a normal entry (a leave-joint conf change has empty data);
//! proposals carry their request id, so outcomes are matched to waiters by id, never by position.

use nexus_protocol::codec::{self, CodecConfig};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::{NodeId, RequestId};
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, HardState};
use raft::{RawNode, StateRole};

use crate::state::{Outcome, Proposal, State};

pub use raft::eraftpb::Message as RaftMessage;

/// Timing and flow control of a Raft node, in ticks (the caller decides how long a tick is:
/// about 100 ms in production).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftConfig {
    /// Ticks without a leader before a follower campaigns (randomised by raft-rs up to twice this).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The largest append message, in bytes.
    pub max_size_per_message: u64,
    /// Append messages in flight to one follower.
    pub max_inflight_messages: usize,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            election_ticks: 10,
            heartbeat_ticks: 3,
            max_size_per_message: 1 << 20,
            max_inflight_messages: 256,
        }
    }
}

/// A failure of the durable store. Fatal for the node: the caller must stop it (and the process
/// restarts from what is on disk), never carry on with a replica that may have diverged.
#[derive(Debug, thiserror::Error)]
#[error("the Raft store failed: {0}")]
pub struct StoreError(pub String);

/// Where a node keeps its Raft log and hard state. raft-rs reads through [`raft::Storage`]; the
/// node writes through these methods.
pub trait LogStore: raft::Storage {
    /// Appends entries, replacing any stored entries from the first new index on.
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError>;
    fn set_hard_state(&self, hard_state: &HardState) -> Result<(), StoreError>;
    fn set_commit(&self, commit: u64) -> Result<(), StoreError>;
    fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError>;
}

/// A log kept in memory, for the simulation and tests. Cloning shares it, so a node "restarted"
/// with a clone finds its log as it left it, as it would find its disk.
#[derive(Clone, Default)]
pub struct MemLogStore(raft::storage::MemStorage);

impl std::fmt::Debug for MemLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemLogStore").finish_non_exhaustive()
    }
}

impl MemLogStore {
    /// A store for a new cluster whose first voters are `voters`.
    pub fn with_voters(voters: &[NodeId]) -> MemLogStore {
        let ids: Vec<u64> = voters.iter().map(|id| id.get()).collect();
        MemLogStore(raft::storage::MemStorage::new_with_conf_state(
            ConfState::from((ids, vec![])),
        ))
    }
}

fn store_error(error: raft::Error) -> StoreError {
    StoreError(error.to_string())
}

impl raft::Storage for MemLogStore {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        self.0.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.0.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.0.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.0.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.0.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<raft::eraftpb::Snapshot> {
        self.0.snapshot(request_index, to)
    }
}

impl LogStore for MemLogStore {
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.0.wl().append(entries).map_err(store_error)
    }

    fn set_hard_state(&self, hard_state: &HardState) -> Result<(), StoreError> {
        self.0.wl().set_hardstate(hard_state.clone());
        Ok(())
    }

    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        self.0.wl().mut_hard_state().set_commit(commit);
        Ok(())
    }

    fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        self.0.wl().set_conf_state(conf_state.clone());
        Ok(())
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
}

/// A Raft node and the state machine it drives.
pub struct RaftNode<S: LogStore> {
    id: NodeId,
    raw: RawNode<S>,
    state: State,
    applied_index: u64,
}

impl<S: LogStore> std::fmt::Debug for RaftNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .field("applied_index", &self.applied_index)
            .finish_non_exhaustive()
    }
}

/// Entries carry proposals encoded by the protocol's codec (so bincode keeps one home), bounded
/// by the largest frame.
fn entry_codec() -> CodecConfig {
    CodecConfig::new(nexus_protocol::codec::HARD_MAX_FRAME_LEN).unwrap_or_default()
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
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
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
        self.raw.tick();
    }

    /// Starts an election now (tests, and leader transfer targets).
    pub fn campaign(&mut self) -> Result<(), StoreError> {
        self.raw.campaign().map_err(store_error)
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
            let leader = self.leader();
            return Err(WireError::new(
                ErrorCode::NotLeader,
                format!("node {} is not the leader", self.id),
            )
            .with_detail(ErrorDetail::NotLeader {
                leader,
                address: None,
            })
            .with_request_id(proposal.request_id));
        }
        let data = codec::encode(proposal, entry_codec()).map_err(|e| e.to_wire())?;
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
        let mut output = ReadyOutput::default();
        if !self.raw.has_ready() {
            return Ok(output);
        }
        let mut ready = self.raw.ready();
        // A leader may send before persisting (Raft thesis 10.2.1); followers may not.
        output.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            return Err(StoreError(
                "snapshots are not supported by this store yet".into(),
            ));
        }
        if !ready.entries().is_empty() {
            self.raw.store().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.raw.store().set_hard_state(hard_state)?;
        }
        output.messages.extend(ready.take_persisted_messages());
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, &mut output)?;
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.store().set_commit(commit)?;
        }
        output.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, &mut output)?;
        self.raw.advance_apply();
        Ok(output)
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        output: &mut ReadyOutput,
    ) -> Result<(), StoreError> {
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    // A new leader's empty entry: nothing to apply.
                    if !entry.data.is_empty() {
                        let proposal = decode_proposal(&entry.data)?;
                        let outcome = self.state.apply(&proposal);
                        output.applied.push(Applied {
                            index: entry.index,
                            request_id: proposal.request_id,
                            outcome,
                        });
                    }
                }
                EntryType::EntryConfChange => {
                    let mut change = ConfChange::default();
                    protobuf::Message::merge_from_bytes(&mut change, &entry.data)
                        .map_err(|e| StoreError(e.to_string()))?;
                    let conf_state = self.raw.apply_conf_change(&change).map_err(store_error)?;
                    self.raw.store().set_conf_state(&conf_state)?;
                }
                EntryType::EntryConfChangeV2 => {
                    // The leave-joint entry has empty data, and must be applied all the same.
                    let mut change = ConfChangeV2::default();
                    protobuf::Message::merge_from_bytes(&mut change, &entry.data)
                        .map_err(|e| StoreError(e.to_string()))?;
                    let conf_state = self.raw.apply_conf_change(&change).map_err(store_error)?;
                    self.raw.store().set_conf_state(&conf_state)?;
                }
            }
            self.applied_index = entry.index;
        }
        Ok(())
    }
}

/// A corrupt entry is a corrupt log: fatal, never skipped (skipping would diverge the replica).
fn decode_proposal(data: &[u8]) -> Result<Proposal, StoreError> {
    let config = entry_codec();
    let (payload, _) = codec::split_frame(data, config)
        .map_err(|e| StoreError(format!("a log entry: {e}")))?
        .ok_or_else(|| StoreError("a truncated log entry".into()))?;
    codec::decode(payload).map_err(|e| StoreError(format!("a log entry: {e}")))
}
