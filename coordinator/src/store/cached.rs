//! What Raft reads often from the store, kept in memory beside it (the database stays the
//! truth): the hard state, the snapshot's metadata, the log's last index, every entry's term,
//! and the newest large entries until applied. Pure: no I/O.

use std::collections::{BTreeMap, VecDeque};

use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

/// What Raft reads often, kept in memory (the database stays the truth).
#[derive(Debug, Clone, Default)]
pub(super) struct Cached {
    pub(super) hard_state: HardState,
    pub(super) snapshot: SnapshotMetadata,
    pub(super) last_index: u64,
    /// The term of every entry in the log, from the one after the snapshot to `last_index`.
    /// Raft asks for terms all the time (its last term at every append, vote and commit check);
    /// reading the entry for it read a restore's whole state (79 MB at 250,000 workspaces) from
    /// RocksDB each time, and held the Raft thread past the election timeout.
    pub(super) terms: VecDeque<u64>,
    /// Large entries (a restore's state) as they were appended, until applied here or gone from
    /// the log: raft-rs reads a committed entry back to apply it, and a leader reads an entry
    /// again for every append it sends. Read from RocksDB, 79 MB took seconds (copied out of the
    /// memtable or decompressed from a fresh table, then parsed); these share the appended
    /// entry's bytes.
    pub(super) large: BTreeMap<u64, Entry>,
}

/// Entries at least this large are kept in memory ([`Cached::large`]) until applied.
const LARGE_ENTRY_BYTES: usize = 1 << 20;
/// At most this many of them: the newest are kept.
const LARGE_ENTRIES_KEPT: usize = 4;

impl Cached {
    /// The term of the entry at `index`, if the log holds it.
    pub(super) fn term(&self, index: u64) -> Option<u64> {
        let offset = index.checked_sub(self.snapshot.index + 1)?;
        self.terms.get(usize::try_from(offset).ok()?).copied()
    }

    /// `entries` replace the log from the first of them on.
    pub(super) fn appended(&mut self, entries: &[Entry]) {
        let first = self.snapshot.index + 1;
        for entry in entries {
            let Some(offset) = entry
                .index
                .checked_sub(first)
                .and_then(|offset| usize::try_from(offset).ok())
            else {
                continue;
            };
            self.terms.truncate(offset);
            if self.terms.len() == offset {
                self.terms.push_back(entry.term);
            }
        }
        if let Some(first) = entries.first() {
            self.large.retain(|index, _| *index < first.index);
        }
        for entry in entries {
            if entry.data.len() >= LARGE_ENTRY_BYTES {
                self.large.insert(entry.index, entry.clone());
            }
        }
        while self.large.len() > LARGE_ENTRIES_KEPT {
            self.large.pop_first();
        }
    }

    /// The log up to `index` is gone behind a snapshot taken there.
    pub(super) fn compacted(&mut self, index: u64) {
        let gone = index.saturating_sub(self.snapshot.index);
        let gone = usize::try_from(gone).unwrap_or(usize::MAX);
        if gone >= self.terms.len() {
            self.terms.clear();
        } else {
            self.terms.drain(..gone);
        }
        self.large.retain(|at, _| *at > index);
    }
}
