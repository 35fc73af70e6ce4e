//! Snapshots of the state machine, taken off the Raft thread. When one is due
//! ([`snapshot_due`]), the driver's thread copies the state ([`crate::state::State::snapshot_copy`]: its large
//! tables in constant time) and a thread of the snapshot's own encodes the copy and writes it
//! to the store; the driver collects the outcome in a later round. Meanwhile the driver ticks,
//! heartbeats and applies: at 946,605 workspaces, encoding and writing the state held it 18.5 s
//! (287 MB), far past an election timeout. One snapshot at a time; one due meanwhile waits for
//! it. The thread runs at the machine's lowest priority, and the members of a cluster snapshot
//! at different points ([`stagger`]), so that encoding does not take the cores that heartbeats
//! need.
//!
//! The store orders a snapshot's write against the leader's snapshots and Raft's reads
//! ([`LogStore::save_snapshot`]): one that a newer snapshot from the leader overtook is not
//! written.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{LogStore, RaftNode, StoreError, store_error};
use crate::state::SnapshotCopy;

/// A snapshot being encoded and written off the Raft thread.
#[derive(Debug)]
pub(super) struct Taking {
    index: u64,
    done: mpsc::Receiver<Result<Taken, StoreError>>,
    thread: JoinHandle<()>,
}

/// What a snapshot's thread did.
#[derive(Debug)]
struct Taken {
    bytes: u64,
    encode: Duration,
    write: Duration,
    /// Whether it was stored: not when the leader's newer snapshot was applied meanwhile.
    stored: bool,
}

impl<S: LogStore> RaftNode<S> {
    /// Starts a snapshot of the state machine when enough entries were applied since the last
    /// one ([`snapshot_due`]), or a membership change was: a snapshot carries the configuration
    /// it was taken in, and a node added since would refuse an older one ("not in the
    /// ConfState") and never catch up. Collects the one being taken first, if it is done.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        self.collect_snapshot(false)?;
        if self.taking.is_some() {
            return Ok(());
        }
        let due = snapshot_due(
            self.applied_index.saturating_sub(self.snapshot_index),
            self.log_bytes,
            self.snapshot_every,
            self.snapshot_bytes,
            stagger(self.id),
        );
        if !(due || self.conf_changed) || self.applied_index <= self.snapshot_index {
            return Ok(());
        }
        self.conf_changed = false;
        let index = self.applied_index;
        let term = self.raw.raft.raft_log.term(index).map_err(store_error)?;
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        let copying = Instant::now();
        let copy = self.state.snapshot_copy();
        let copied = copying.elapsed();
        let store = self.raw.store().clone();
        let (send, done) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("snapshot-{}", self.id))
            .spawn(move || {
                crate::background::lowest_priority();
                // The driver may be gone (the node stopped): nobody to tell.
                let _ = send.send(take(&copy, &store, index, term, &conf_state));
            })
            .map_err(|e| StoreError(format!("cannot start a snapshot's thread: {e}")))?;
        // The entries applied from here on are the log behind this snapshot.
        self.log_bytes = 0;
        self.taking = Some(Taking {
            index,
            done,
            thread,
        });
        tracing::debug!(node = %self.id, index, copy_ms = copied.as_millis() as u64, "taking a snapshot");
        Ok(())
    }

    /// Records the snapshot being taken, if its thread is done (or, with `wait`, once it is).
    /// Its failure is this node's, as a write on the driver's thread would be.
    pub(super) fn collect_snapshot(&mut self, wait: bool) -> Result<(), StoreError> {
        let Some(taking) = &self.taking else {
            return Ok(());
        };
        let outcome = if wait {
            taking.done.recv().map_err(|_| lost())
        } else {
            match taking.done.try_recv() {
                Ok(outcome) => Ok(outcome),
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => Err(lost()),
            }
        };
        let Some(Taking { index, thread, .. }) = self.taking.take() else {
            return Ok(());
        };
        // It has sent, or died: either way it is done.
        let _ = thread.join();
        let taken = outcome??;
        if !taken.stored || index <= self.snapshot_index {
            tracing::info!(node = %self.id, index, "dropped a snapshot that the leader's overtook");
            return Ok(());
        }
        self.snapshot_index = index;
        self.snapshot_bytes = taken.bytes;
        self.snapshots_taken += 1;
        // Raft went on meanwhile: only the copy held it.
        tracing::info!(
            node = %self.id,
            index,
            bytes = taken.bytes,
            encode_ms = taken.encode.as_millis() as u64,
            write_ms = taken.write.as_millis() as u64,
            "took a snapshot"
        );
        Ok(())
    }

    /// Waits for the snapshot being taken, if one is, and records it: for a caller that must
    /// see the same thing at the same point on every run (the Raft simulation), and before the
    /// store closes.
    pub fn settle_snapshot(&mut self) -> Result<(), StoreError> {
        self.collect_snapshot(true)
    }
}

/// A snapshot's thread: encodes the copy and stores it.
fn take<S: LogStore>(
    copy: &SnapshotCopy,
    store: &S,
    index: u64,
    term: u64,
    conf_state: &raft::eraftpb::ConfState,
) -> Result<Taken, StoreError> {
    let started = Instant::now();
    let data = copy.to_snapshot()?;
    let bytes = data.len() as u64;
    let encode = started.elapsed();
    let stored = store.save_snapshot(data, index, term, conf_state)?;
    Ok(Taken {
        bytes,
        encode,
        write: started.elapsed() - encode,
        stored,
    })
}

fn lost() -> StoreError {
    StoreError("a snapshot's thread stopped without a word (it panicked)".to_string())
}

/// How much later than the rule this node snapshots, in quarters: 0, 1 or 2 by its id. Every
/// replica applies the same entries, so with one rule all three took each snapshot at the same
/// index, and encoded it at the same time on the same two cores: in the C1M run of 2026-12-05
/// (night) the leader's socket dropped 29,676 packets in the seconds of one 92 MB snapshot,
/// and none between.
fn stagger(node: nexus_protocol::NodeId) -> u64 {
    (node.get().saturating_sub(1)) % 3
}

/// Whether a snapshot is due after `entries` applied since the last (`log_bytes` of them), with
/// `every` the configured least number of entries (0: never), `last_bytes` the last snapshot's
/// size and `stagger` this node's delay in quarters of both ([`stagger`]). Encoding the state costs its whole size each time, and it grows with the
/// fleet: at 250,000 workspaces a snapshot was 57 MB. Taken every 10,000 entries, that work grew
/// with the state for each entry written (287 MB each time at 946,605 workspaces). So a snapshot
/// also waits until the log behind it holds as many bytes as the last one took: the encoding
/// costs at most a byte per byte of log, however large the state, and a restart replays at most
/// about a snapshot's worth of entries (as LogCabin weighs the log against its last snapshot).
pub(super) fn snapshot_due(
    entries: u64,
    log_bytes: u64,
    every: u64,
    last_bytes: u64,
    stagger: u64,
) -> bool {
    let later = |n: u64| n.saturating_add(n.saturating_mul(stagger) / 4);
    every > 0 && entries >= later(every) && log_bytes >= later(last_bytes)
}

#[cfg(test)]
mod tests {
    use nexus_protocol::NodeId;

    use super::{snapshot_due, stagger};

    #[test]
    fn a_snapshot_waits_for_enough_entries_and_as_many_bytes_as_the_last() {
        let due = |entries, log_bytes, every, last_bytes| {
            snapshot_due(entries, log_bytes, every, last_bytes, 0)
        };
        assert!(!due(10_000, 1 << 30, 0, 0), "0 never snapshots");
        assert!(!due(9_999, 1 << 30, 10_000, 0), "too few entries");
        assert!(due(10_000, 1, 10_000, 0), "the first: entries alone");
        assert!(
            !due(50_000, (56 << 20) - 1, 10_000, 56 << 20),
            "a large state waits for a log as large"
        );
        assert!(due(50_000, 56 << 20, 10_000, 56 << 20));
        assert!(
            due(10_000, 4_000, 10_000, 3_000),
            "a small state: entries decide"
        );
    }

    #[test]
    fn three_members_snapshot_at_three_points() {
        let shares: Vec<u64> = (1..=4)
            .map(|id| stagger(NodeId::new(id).unwrap()))
            .collect();
        assert_eq!(shares, [0, 1, 2, 0]);
        let last = 100 << 20;
        // Where each of the three takes its next snapshot, by the log's bytes.
        let at = |share| {
            (0..)
                .step_by(1 << 20)
                .find(|bytes| snapshot_due(1 << 20, *bytes, 10_000, last, share))
        };
        assert_eq!(
            [at(0), at(1), at(2)],
            [Some(100 << 20), Some(125 << 20), Some(150 << 20)]
        );
        assert!(!snapshot_due(12_499, 1 << 30, 10_000, 0, 1));
        assert!(snapshot_due(12_500, 1 << 30, 10_000, 0, 1));
    }
}
