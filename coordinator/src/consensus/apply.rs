//! Applying committed entries to the state machine, in log order (a restore waits on its read,
//! [`super::ahead`]), and membership changes as they apply (the snapshots taken after them are
//! [`super::snapshots`]'s).

use nexus_protocol::NodeId;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};

use super::{
    Applied, LONG_WRITE, LogStore, RaftNode, ReadyOutput, StoreError, ahead, decode_proposal,
};
use crate::hops;
use crate::state::{Outcome, Proposal, State};

impl<S: LogStore> RaftNode<S> {
    /// Applies the committed `entries` after those still waiting, in log order, until one is a
    /// restore still being read ([`ahead`]): it and the entries behind it wait for a later round.
    pub(super) fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        output: &mut ReadyOutput,
        observe: &mut dyn FnMut(&Proposal, &Outcome, &State),
    ) -> Result<(), StoreError> {
        self.unapplied.extend(entries);
        if self.unapplied.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        while let Some(entry) = self.unapplied.pop_front() {
            let read = match self.ahead.poll(&entry)? {
                ahead::Poll::NotAhead => None,
                ahead::Poll::Read(read) => Some(*read),
                ahead::Poll::Reading => {
                    self.unapplied.push_front(entry);
                    break;
                }
            };
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    // A new leader's empty entry: nothing to apply.
                    if !entry.data.is_empty() {
                        self.log_bytes += entry.data.len() as u64;
                        let proposal = decode_proposal(&entry.data)?;
                        let hops = hops::applying(&proposal);
                        let outcome = self.state.apply_read(&proposal, read);
                        hops::applied(&hops, &proposal, &outcome, &self.state);
                        drop(hops);
                        observe(&proposal, &outcome, &self.state);
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
                    let result = self.raw.apply_conf_change(&change);
                    if self.conf_change_applied(entry.index, result) {
                        self.record_member_address(&change);
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    // The leave-joint entry has empty data, and must be applied all the same.
                    let mut change = ConfChangeV2::default();
                    protobuf::Message::merge_from_bytes(&mut change, &entry.data)
                        .map_err(|e| StoreError(e.to_string()))?;
                    let result = self.raw.apply_conf_change(&change);
                    self.conf_change_applied(entry.index, result);
                }
            }
            self.applied_index = entry.index;
        }
        let took = started.elapsed();
        *output.applying.get_or_insert_default() += took;
        // A long apply (a restore swapped in) is followed by a heartbeat at once, as a long
        // write is.
        if took >= LONG_WRITE && self.is_leader() {
            self.raw.ping();
        }
        Ok(())
    }

    /// Takes the outcome of applying a committed membership change, and says whether it took
    /// effect. A change that
    /// raft-rs refuses (one that would remove the last voter, say, written by a leader that did
    /// not check it) is skipped with a warning: the refusal depends only on the configuration,
    /// which is the same on every replica at this index, so every replica skips it alike and none
    /// is left unable to restart. The new configuration reaches the disk with the snapshot that
    /// [`RaftNode::maybe_snapshot`] starts in the same round (or the next after one being taken),
    /// in one batch with the state it belongs to; until then a restart replays it from the log.
    fn conf_change_applied(&mut self, index: u64, result: raft::Result<ConfState>) -> bool {
        match result {
            Ok(_) => {
                self.conf_changed = true;
                true
            }
            Err(error) => {
                tracing::warn!(node = %self.id, index, "skipped a membership change that Raft refused: {error}");
                false
            }
        }
    }

    /// Keeps the replicated address book in step with the configuration: an added node's address
    /// travels in its conf change's context.
    fn record_member_address(&mut self, change: &ConfChange) {
        let Ok(node) = NodeId::new(change.node_id) else {
            return;
        };
        match change.get_change_type() {
            ConfChangeType::RemoveNode => self.state.set_member_address(node, None),
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Ok(address) = std::str::from_utf8(&change.context)
                    && !address.is_empty()
                {
                    self.state
                        .set_member_address(node, Some(address.to_string()));
                }
            }
        }
    }
}
