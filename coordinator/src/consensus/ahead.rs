//! Restores read ahead of their apply, off the Raft thread.
//!
//! A restore's entry carries a whole state (79 MB at 250,000 workspaces). Reading it (decoding,
//! checking every invariant) takes seconds, and the thread that applies entries is the one that
//! ticks and heartbeats: held that long, it misses the election timeout (1–1.5 s) and a follower
//! deposes a healthy leader mid-restore. So as soon as a large restore's entry is in this node's
//! log (proposed here, or appended from the leader, seconds before it commits, since it travels
//! in pieces) a thread of its own reads it ([`ReadBackup::read`]). When the entry commits, the
//! node applies the entries before it, then, while the read is unfinished, stops applying and
//! goes on ticking; the entries behind the restore wait their turn. The read is a pure function
//! of the entry's bytes, so every replica applies the same entries in the same order with the
//! same outcomes as a read on the Raft thread would give: only when differs.
//!
//! Small entries are never read ahead (a restore of a small state costs less than a thread), so
//! the deterministic simulation's runs stay as they were unless a test asks otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use raft::eraftpb::{Entry, EntryType};

use super::{StoreError, decode_proposal};
use crate::state::{Command, Proposal, ReadBackup};

/// Entries at least this large that hold a restore are read ahead: larger than any other entry
/// may be (a batch of creates stops at 4 MiB), so no other entry is decoded to find out what it
/// holds; a smaller state reads in well under an election timeout.
pub(super) const READ_AHEAD_BYTES: usize = 8 << 20;

/// How a restore's state is read: [`ReadBackup::read`], unless a test holds it back.
pub(super) type Reader = Arc<dyn Fn(&Proposal) -> ReadBackup + Send + Sync>;

/// The restores being read, by their entry's index.
pub(super) struct Ahead {
    /// Entries smaller than this are read on the Raft thread, as they apply.
    from_bytes: usize,
    reading: BTreeMap<u64, Reading>,
    reader: Reader,
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ahead")
            .field("from_bytes", &self.from_bytes)
            .field("reading", &self.reading)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Reading {
    /// The entry's term: a new leader may replace an uncommitted entry at the same index.
    term: u64,
    thread: JoinHandle<ReadBackup>,
}

/// Where the read of a committed entry stands.
#[derive(Debug)]
pub(super) enum Poll {
    /// Not a large restore: apply it as usual.
    NotAhead,
    /// Being read: apply nothing from here on for now.
    Reading,
    /// Read: apply it with this.
    Read(Box<ReadBackup>),
}

impl Ahead {
    pub(super) fn new() -> Ahead {
        Ahead {
            from_bytes: READ_AHEAD_BYTES,
            reading: BTreeMap::new(),
            reader: Arc::new(ReadBackup::read),
        }
    }

    /// Reads restores with `reader` (a test's, which may hold a read back).
    #[cfg(test)]
    pub(super) fn read_with(&mut self, reader: Reader) {
        self.reader = reader;
    }

    /// Reads ahead every restore of at least `bytes` (tests use small states).
    pub(super) fn set_threshold(&mut self, bytes: usize) {
        self.from_bytes = bytes;
    }

    /// Starts reading each large restore among `entries`, just appended to the log.
    pub(super) fn appended(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        for entry in entries {
            if self.candidate(entry) && !self.started(entry) {
                self.start(entry)?;
            }
        }
        Ok(())
    }

    /// Where the read of the committed `entry` stands; starts it if it was never started (an
    /// entry replayed from the log after a restart was not appended in this process).
    pub(super) fn poll(&mut self, entry: &Entry) -> Result<Poll, StoreError> {
        if !self.candidate(entry) {
            return Ok(Poll::NotAhead);
        }
        if !self.started(entry) && !self.start(entry)? {
            return Ok(Poll::NotAhead);
        }
        let finished = self
            .reading
            .get(&entry.index)
            .is_some_and(|reading| reading.thread.is_finished());
        if !finished {
            return Ok(Poll::Reading);
        }
        let Some(reading) = self.reading.remove(&entry.index) else {
            return Ok(Poll::NotAhead);
        };
        match reading.thread.join() {
            Ok(read) => Ok(Poll::Read(Box::new(read))),
            // The read panicked: a bug, and the same on every replica. Stop here rather than
            // apply a state nobody could read.
            Err(_) => Err(StoreError(format!(
                "reading the restore in entry {} panicked",
                entry.index
            ))),
        }
    }

    /// A snapshot up to `index` was installed: the reads of entries it covers are moot.
    pub(super) fn forget_through(&mut self, index: u64) {
        self.reading.retain(|at, _| *at > index);
    }

    /// How many restores are being read.
    pub(super) fn len(&self) -> usize {
        self.reading.len()
    }

    fn candidate(&self, entry: &Entry) -> bool {
        entry.get_entry_type() == EntryType::EntryNormal
            && !entry.data.is_empty()
            && entry.data.len() >= self.from_bytes
    }

    fn started(&self, entry: &Entry) -> bool {
        self.reading
            .get(&entry.index)
            .is_some_and(|reading| reading.term == entry.term)
    }

    /// Starts reading `entry` if it holds a restore; says whether it did (no thread to be had
    /// leaves it to be read as it applies).
    fn start(&mut self, entry: &Entry) -> Result<bool, StoreError> {
        let proposal = decode_proposal(&entry.data)?;
        let Command::Restore { state, .. } = &proposal.command else {
            return Ok(false);
        };
        let bytes = state.len();
        let index = entry.index;
        let reader = self.reader.clone();
        let spawned = std::thread::Builder::new()
            .name("restore-read".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let read = reader(&proposal);
                tracing::info!(
                    index,
                    bytes,
                    read_ms = started.elapsed().as_millis() as u64,
                    "read a restore's state ahead of its apply"
                );
                read
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(error) => {
                // Read on the Raft thread as it applies, as before there were threads for it.
                tracing::warn!(index = entry.index, "cannot read a restore ahead: {error}");
                return Ok(false);
            }
        };
        // A reading of an entry this one replaces is dropped: its thread ends unheeded.
        self.reading.insert(
            entry.index,
            Reading {
                term: entry.term,
                thread,
            },
        );
        Ok(true)
    }
}
