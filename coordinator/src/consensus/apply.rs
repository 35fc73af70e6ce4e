//! Applying committed entries to the state machine, in log order (a restore waits on its read,
//! [`super::ahead`]), membership changes as they apply, and the snapshots taken after them.

use nexus_protocol::NodeId;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};

use super::{
    Applied, LONG_WRITE, LogStore, RaftNode, ReadyOutput, StoreError, ahead, decode_proposal,
    store_error,
};
use crate::hops;
use crate::state::{Outcome, Proposal, State};

impl<S: LogStore> RaftNode<S> {
    /// Snapshots the state machine when enough entries were applied since the last snapshot
    /// ([`snapshot_due`]), or a membership change was: a snapshot carries the configuration it
    /// was taken in, and a node added since would refuse an older one ("not in the ConfState")
    /// and never catch up.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        let due = snapshot_due(
            self.applied_index.saturating_sub(self.snapshot_index),
            self.log_bytes,
            self.snapshot_every,
            self.snapshot_bytes,
        );
        if !(due || self.conf_changed) || self.applied_index <= self.snapshot_index {
            return Ok(());
        }
        self.conf_changed = false;
        let index = self.applied_index;
        let term = self.raw.raft.raft_log.term(index).map_err(store_error)?;
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        let started = std::time::Instant::now();
        let data = self.state.to_snapshot()?;
        let bytes = data.len();
        let encoded = started.elapsed();
        self.raw
            .store()
            .save_snapshot(data, index, term, &conf_state)?;
        self.snapshot_index = index;
        self.snapshot_bytes = bytes as u64;
        self.log_bytes = 0;
        self.snapshots_taken += 1;
        // The driver's thread does both, and Raft waits meanwhile: a large state shows here.
        tracing::info!(
            node = %self.id,
            index,
            bytes,
            encode_ms = encoded.as_millis() as u64,
            write_ms = (started.elapsed() - encoded).as_millis() as u64,
            "took a snapshot"
        );
        Ok(())
    }

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
    /// [`RaftNode::maybe_snapshot`] takes in the same round, in one batch with the state it
    /// belongs to.
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

/// Whether a snapshot is due after `entries` applied since the last (`log_bytes` of them), with
/// `every` the configured least number of entries (0: never) and `last_bytes` the last
/// snapshot's size. Encoding the state costs its whole size each time, and it grows with the
/// fleet: at 250,000 workspaces a snapshot was 57 MB and held the Raft thread 1.3–2.5 s. Taken
/// every 10,000 entries, that work grew with the state for each entry written (287 MB each
/// time at 946,605 workspaces). So a snapshot also waits until the log behind it holds
/// as many bytes as the last one took: the encoding costs at most a byte per byte of log, however
/// large the state, and a restart replays at most about a snapshot's worth of entries (as
/// LogCabin weighs the log against its last snapshot).
pub(super) fn snapshot_due(entries: u64, log_bytes: u64, every: u64, last_bytes: u64) -> bool {
    every > 0 && entries >= every && log_bytes >= last_bytes
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn a_snapshot_waits_for_enough_entries_and_as_many_bytes_as_the_last() {
        assert!(!snapshot_due(10_000, 1 << 30, 0, 0), "0 never snapshots");
        assert!(!snapshot_due(9_999, 1 << 30, 10_000, 0), "too few entries");
        assert!(
            snapshot_due(10_000, 1, 10_000, 0),
            "the first: entries alone"
        );
        assert!(
            !snapshot_due(50_000, (56 << 20) - 1, 10_000, 56 << 20),
            "a large state waits for a log as large"
        );
        assert!(snapshot_due(50_000, 56 << 20, 10_000, 56 << 20));
        assert!(
            snapshot_due(10_000, 4_000, 10_000, 3_000),
            "a small state: entries decide"
        );
    }
}
