//! The coordinator's durable store on RocksDB: the Raft log, Raft's metadata, and snapshots of the
//! state machine. The only home of `rocksdb`.
//!
//! Layout, one database with three column families:
//!
//! | family | key | value |
//! |---|---|---|
//! | `raft_log` | entry index, `u64` big-endian (so keys sort by index) | the entry (protobuf) |
//! | `raft_meta` | `identity` | [`StoreIdentity`]: format version, cluster, node id |
//! | | `hard_state`, `snapshot_meta` (with the configuration at its index) | protobuf |
//! | `state` | | empty (format 8 kept the snapshot here, key `snapshot`; moved to its file at open) |
//!
//! and beside the database, in `snapshots/`, the state machine at `snapshot_meta.index` as a file
//! of its own (one local frame of the protocol's codec, up to 4 GiB: see `state::snapshot`;
//! [`snapshot_files`] says why a file).
//!
//! The state machine is applied in memory; its durable form is a snapshot taken every N entries.
//! Its file is written whole and synced first, then its index and the configuration in force
//! there **in one batch**, so the stored state, the index it covers and the membership never
//! disagree (a membership change is followed by a snapshot at once, so the configuration on disk
//! is never older than the last applied change for long, and never newer than the state). A restart restores the snapshot and sets Raft's `applied` to its index, and Raft
//! hands back every committed entry after it. The log is truncated behind each snapshot, so it
//! stays bounded, and a peer that fell behind the truncation catches up from the snapshot.
//!
//! Every write is synced unless the store is opened for simulation. A failed write is fatal
//! ([`StoreError`]): the node must stop rather than run on with a replica that may diverge.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use nexus_protocol::NodeId;
use nexus_protocol::codec::{self, CodecConfig, HARD_MAX_FRAME_LEN};
use nexus_telemetry::Histogram;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::consensus::{LogStore, StoreError};
use crate::state::State;

mod cached;
mod snapshot_files;

use cached::Cached;
use snapshot_files::{SnapshotFiles, missing_snapshot};

use crate::files::Sync;

const LOG: &str = "raft_log";
const META: &str = "raft_meta";
const STATE: &str = "state";

const IDENTITY_KEY: &[u8] = b"identity";
const HARD_STATE_KEY: &[u8] = b"hard_state";
const SNAPSHOT_META_KEY: &[u8] = b"snapshot_meta";
const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// The index (and term) of the snapshot every founding member starts from.
pub const BOOTSTRAP_INDEX: u64 = 1;

/// The on-disk format this code writes and reads. Raised on an incompatible change. 2: the
/// state's limits, hosts and workspaces grew fields (overcommit, scoring, a host's admin status,
/// restarts and port reassignment) and the log's commands new variants. 3: the state keeps each
/// workspace's events. 4: the state keeps the backup schedule ([`crate::state::STATE_FORMAT`]).
/// 5: each workspace's lifecycle, and the notices. 6: each workspace's worktree, the credential
/// store. 7: join tokens, known certificates and the deny list. 8: CA rotations. 9: the
/// snapshot is a file of its own ([`snapshot_files`]), no longer the `state` family's value.
/// A store of another format is refused at open (see [`RocksStore::open`]), but for one
/// migration: a store of format 8 has its snapshot moved to its file and is raised to 9 (so that
/// a build of 8, which would find no snapshot in it and start empty, refuses it). A backup's state
/// is refused by a build of another state format ([`crate::state::format_refusal`]): take backups
/// again after an upgrade.
pub const FORMAT_VERSION: u32 = 9;

/// The format whose store [`RocksStore::open`] moves to this one: its snapshot was the `state`
/// family's value.
const FORMAT_WITH_SNAPSHOT_IN_DATABASE: u32 = 8;

/// Whose data a directory holds. A node refuses a data dir of another cluster or node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    pub format: u32,
    /// The cluster's identity: the fingerprint of its CA certificate.
    pub cluster: String,
    pub node: NodeId,
}

/// How durable writes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync every write (production).
    Synced,
    /// Leave it to the OS (simulation and benchmarks of everything but the disk).
    Unsynced,
}

/// The RocksDB store. Cloning shares it.
#[derive(Clone)]
pub struct RocksStore {
    db: Arc<DB>,
    cached: Arc<RwLock<Cached>>,
    durability: Durability,
    /// Where synced writes' durations go (`nexus_storage_sync_duration_seconds`), if anywhere.
    syncs: Option<Histogram>,
    /// Held while the stored snapshot is written or read with its metadata, and while older
    /// snapshot files are removed: a snapshot is written off the Raft thread
    /// (`consensus::snapshots`), and a reader must never pair one snapshot's metadata with
    /// another's state, nor find its file gone, nor a write put an older snapshot over a newer.
    snapshot_lock: Arc<Mutex<()>>,
    /// The state machine's snapshots, a file each.
    files: SnapshotFiles,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

fn db_error(error: rocksdb::Error) -> StoreError {
    StoreError(format!("rocksdb: {error}"))
}

fn proto_error(what: &str, error: protobuf::ProtobufError) -> StoreError {
    StoreError(format!("corrupt {what}: {error}"))
}

/// The store's own small records (its identity). The state's snapshot has its own bound.
fn record_codec() -> CodecConfig {
    CodecConfig::new(HARD_MAX_FRAME_LEN).unwrap_or_default()
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError(format!("a log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

impl RocksStore {
    /// Opens (or creates) the store in `dir` for `identity`. A new store is bootstrapped with
    /// `voters` as the first configuration (leave it empty for a node that will join an existing
    /// cluster and learn its configuration from the leader). A store of another cluster, node or
    /// format is refused.
    pub fn open(
        dir: &Path,
        identity: &StoreIdentity,
        voters: &[NodeId],
        durability: Durability,
    ) -> Result<RocksStore, StoreError> {
        RocksStore::open_with(dir, identity, voters, durability, &State::default())
    }

    /// Creates a store in `dir` whose first snapshot holds `state` (a backup's) rather than the
    /// empty state: a founding member of a new cluster of `voters`, like the others made from
    /// the same backup. Refuses a directory that already holds a store.
    pub fn create_restored(
        dir: &Path,
        identity: &StoreIdentity,
        voters: &[NodeId],
        state: &State,
    ) -> Result<(), StoreError> {
        if voters.is_empty() {
            return Err(StoreError("a restored store needs its voters".into()));
        }
        if dir.exists() {
            return Err(StoreError(format!("{} exists", dir.display())));
        }
        RocksStore::open_with(dir, identity, voters, Durability::Synced, state).map(drop)
    }

    fn open_with(
        dir: &Path,
        identity: &StoreIdentity,
        voters: &[NodeId],
        durability: Durability,
        first: &State,
    ) -> Result<RocksStore, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let families =
            [LOG, META, STATE].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(db_error)?;
        let sync = match durability {
            Durability::Synced => Sync::Synced,
            Durability::Unsynced => Sync::Unsynced,
        };
        let files = SnapshotFiles::open(dir, sync)?;
        let store = RocksStore {
            db: Arc::new(db),
            cached: Arc::default(),
            durability,
            syncs: None,
            snapshot_lock: Arc::default(),
            files,
        };
        let mut moving = false;
        match store.get(META, IDENTITY_KEY)? {
            Some(bytes) => {
                let stored: StoreIdentity = decode_record(&bytes, "store identity")?;
                moving = stored.format == FORMAT_WITH_SNAPSHOT_IN_DATABASE
                    && identity.format == FORMAT_VERSION;
                if stored.format != identity.format && !moving {
                    return Err(StoreError(format!(
                        "{} holds format {} data; this build reads format {}",
                        dir.display(),
                        stored.format,
                        identity.format
                    )));
                }
                if stored.cluster != identity.cluster {
                    return Err(StoreError(format!(
                        "{} belongs to another cluster (CA {}), not this one (CA {})",
                        dir.display(),
                        stored.cluster,
                        identity.cluster
                    )));
                }
                if stored.node != identity.node {
                    return Err(StoreError(format!(
                        "{} belongs to node {}, not node {}",
                        dir.display(),
                        stored.node,
                        identity.node
                    )));
                }
            }
            None => store.bootstrap(identity, voters, first)?,
        }
        store.load_cache()?;
        let current = store.read_cache().snapshot.index;
        if moving {
            store.move_snapshot_to_its_file(identity, current)?;
        }
        // A snapshot interrupted between its file and its batch left a file nothing names.
        store.remove_older_snapshots(current);
        Ok(store)
    }

    /// Moves a store of format 8 to this format: its snapshot (the `state` family's value, at
    /// `index`) to its file, then in one batch the value deleted and the identity's format
    /// raised. A crash before the batch leaves a store of format 8, moved again at the next open.
    fn move_snapshot_to_its_file(
        &self,
        identity: &StoreIdentity,
        index: u64,
    ) -> Result<(), StoreError> {
        if let Some(bytes) = self.get(STATE, SNAPSHOT_KEY)? {
            self.files.write(index, &bytes)?;
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(STATE)?, SNAPSHOT_KEY);
        batch.put_cf(self.cf(META)?, IDENTITY_KEY, encode_record(identity)?);
        self.write(batch)?;
        tracing::info!(
            index,
            from = FORMAT_WITH_SNAPSHOT_IN_DATABASE,
            to = FORMAT_VERSION,
            "moved the store's snapshot to a file of its own"
        );
        Ok(())
    }

    /// The same store, recording each synced write's duration in `syncs`.
    pub fn timing_syncs(mut self, syncs: Histogram) -> RocksStore {
        self.syncs = Some(syncs);
        self
    }

    /// Writes a new store's first records. A founding member starts from the same snapshot as
    /// every other founder: index 1, term 1, the founding voters, the empty state. So the log of
    /// every cluster begins after index 1, and a node that joins later (with an empty store, no
    /// voters) is always sent a snapshot first, from which it learns the configuration it joins;
    /// replaying entries from index 1 it would never see the founders and could think itself
    /// alone.
    fn bootstrap(
        &self,
        identity: &StoreIdentity,
        voters: &[NodeId],
        first: &State,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(META)?, IDENTITY_KEY, encode_record(identity)?);
        if !voters.is_empty() {
            let ids: Vec<u64> = voters.iter().map(|id| id.get()).collect();
            let conf_state = ConfState::from((ids, vec![]));
            let mut metadata = SnapshotMetadata {
                index: BOOTSTRAP_INDEX,
                term: BOOTSTRAP_INDEX,
                ..Default::default()
            };
            metadata.set_conf_state(conf_state);
            let hard_state = HardState {
                term: BOOTSTRAP_INDEX,
                commit: BOOTSTRAP_INDEX,
                ..Default::default()
            };
            put_meta(
                &mut batch,
                self.cf(META)?,
                SNAPSHOT_META_KEY,
                "snapshot metadata",
                &metadata,
            )?;
            put_meta(
                &mut batch,
                self.cf(META)?,
                HARD_STATE_KEY,
                "hard state",
                &hard_state,
            )?;
            self.files.write(BOOTSTRAP_INDEX, &first.to_snapshot()?)?;
        }
        self.write(batch)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError(format!("column family {name} is missing")))
    }

    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(family)?, key).map_err(db_error)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        let synced = self.durability == Durability::Synced;
        options.set_sync(synced);
        let started = std::time::Instant::now();
        let result = self.db.write_opt(batch, &options).map_err(db_error);
        if synced && let Some(syncs) = &self.syncs {
            syncs.observe_duration(started.elapsed());
        }
        result
    }

    fn load_cache(&self) -> Result<(), StoreError> {
        let mut cached = Cached::default();
        if let Some(bytes) = self.get(META, HARD_STATE_KEY)? {
            cached
                .hard_state
                .merge_from_bytes(&bytes)
                .map_err(|e| proto_error("hard state", e))?;
        }
        if let Some(bytes) = self.get(META, SNAPSHOT_META_KEY)? {
            cached
                .snapshot
                .merge_from_bytes(&bytes)
                .map_err(|e| proto_error("snapshot metadata", e))?;
        }
        cached.last_index = match self.db.iterator_cf(self.cf(LOG)?, IteratorMode::End).next() {
            Some(item) => key_index(&item.map_err(db_error)?.0)?,
            None => cached.snapshot.index,
        };
        for index in cached.snapshot.index + 1..=cached.last_index {
            cached.terms.push_back(self.entry(index)?.term);
        }
        *self.write_cache() = cached;
        Ok(())
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        // The cache is replaced whole or field by field after a successful write; a panic while
        // holding the lock cannot leave it half-written, so a poisoned lock is still usable.
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cached> {
        self.cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes every snapshot file but the one at `index` (after the batch that names it, or at
    /// open). Nothing reads them; one left by a failure here goes at the next open.
    fn remove_older_snapshots(&self, index: u64) {
        match self.files.remove_all_but(index) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(index, removed, "removed older snapshot files"),
            Err(error) => tracing::warn!(index, %error, "could not remove older snapshot files"),
        }
    }

    /// The database's files on disk, in bytes (every column family's SST files; not the
    /// snapshots' files, which compaction does not touch).
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for family in [LOG, META, STATE] {
            total = total.saturating_add(
                self.db
                    .property_int_value_cf(self.cf(family)?, "rocksdb.total-sst-files-size")
                    .map_err(db_error)?
                    .unwrap_or(0),
            );
        }
        Ok(total)
    }

    /// What a compaction would give back, as RocksDB estimates it: the files' size less the
    /// live data's.
    pub fn compactable_bytes(&self) -> Result<u64, StoreError> {
        let mut live = 0u64;
        for family in [LOG, META, STATE] {
            live = live.saturating_add(
                self.db
                    .property_int_value_cf(self.cf(family)?, "rocksdb.estimate-live-data-size")
                    .map_err(db_error)?
                    .unwrap_or(0),
            );
        }
        Ok(self.disk_bytes()?.saturating_sub(live))
    }

    /// Compacts every column family over its whole key range (host maintenance): the log's
    /// truncated entries leave the disk (a replaced snapshot's file went when it was replaced).
    /// Answers the bytes given back.
    /// Safe beside the driver's writes (RocksDB orders them); it blocks, so run it off the
    /// async threads.
    pub fn compact(&self) -> Result<u64, StoreError> {
        let before = self.disk_bytes()?;
        // Not exclusive: RocksDB's default would hold off its automatic compactions meanwhile,
        // level-0 files would pile up and stall the Raft log's synced writes.
        let mut options = rocksdb::CompactOptions::default();
        options.set_exclusive_manual_compaction(false);
        for family in [LOG, META, STATE] {
            self.db
                .compact_range_cf_opt(self.cf(family)?, None::<&[u8]>, None::<&[u8]>, &options);
        }
        Ok(before.saturating_sub(self.disk_bytes()?))
    }

    /// Where the store is, for reports.
    pub fn path(&self) -> String {
        self.db.path().display().to_string()
    }

    /// The snapshot's lock ([`RocksStore::snapshot_lock`]). A writer that panicked left nothing
    /// half-done under it (a write batch is whole or absent), so a poisoned lock is taken as is.
    fn lock_snapshot(&self) -> std::sync::MutexGuard<'_, ()> {
        self.snapshot_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored snapshot of the state machine and the index it covers, for a restart.
    pub fn state_snapshot(&self) -> Result<(State, u64), StoreError> {
        let _reading = self.lock_snapshot();
        let index = self.read_cache().snapshot.index;
        match self.files.read(index)? {
            Some(bytes) => Ok((State::from_snapshot(&bytes)?, index)),
            None if index == 0 => Ok((State::default(), 0)),
            None => Err(missing_snapshot(index)),
        }
    }

    /// The hard state as last persisted.
    pub fn hard_state(&self) -> HardState {
        self.read_cache().hard_state.clone()
    }

    fn entry(&self, index: u64) -> Result<Entry, StoreError> {
        if let Some(entry) = self.read_cache().large.get(&index) {
            return Ok(entry.clone());
        }
        parse_entry(&self.entry_bytes(index)?)
    }

    fn entry_bytes(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        self.get(LOG, &index_key(index))?
            .ok_or_else(|| StoreError(format!("log entry {index} is missing")))
    }
}

fn parse_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    let mut entry = Entry::default();
    entry
        .merge_from_bytes(bytes)
        .map_err(|e| proto_error("log entry", e))?;
    Ok(entry)
}

/// Adds a protobuf record to the metadata family in `batch`.
fn put_meta(
    batch: &mut WriteBatch,
    family: &rocksdb::ColumnFamily,
    key: &[u8],
    what: &str,
    record: &impl protobuf::Message,
) -> Result<(), StoreError> {
    let bytes = record.write_to_bytes().map_err(|e| proto_error(what, e))?;
    batch.put_cf(family, key, bytes);
    Ok(())
}

fn encode_record<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(value, record_codec()).map_err(|e| StoreError(e.to_string()))
}

fn decode_record<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, StoreError> {
    let (payload, _) = codec::split_frame(bytes, record_codec())
        .map_err(|e| StoreError(format!("corrupt {what}: {e}")))?
        .ok_or_else(|| StoreError(format!("truncated {what}")))?;
    codec::decode(payload).map_err(|e| StoreError(format!("corrupt {what}: {e}")))
}

fn unavailable() -> raft::Error {
    raft::Error::Store(raft::StorageError::Unavailable)
}

fn other(error: StoreError) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(error)))
}

impl raft::Storage for RocksStore {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        let cached = self.read_cache();
        Ok(raft::RaftState {
            hard_state: cached.hard_state.clone(),
            conf_state: cached.snapshot.get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (first, last) = {
            let cached = self.read_cache();
            (cached.snapshot.index + 1, cached.last_index)
        };
        if low < first {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > last + 1 {
            return Err(unavailable());
        }
        // raft-rs's `limit_size`, as the entries are read: always the first, then as many as
        // fit in `max_size` (an entry's stored bytes are its encoded size). Reading them all and
        // cutting after read every entry up to `high`, a restore's tens of megabytes included.
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        let mut size = 0u64;
        for index in low..high {
            let kept = self.read_cache().large.get(&index).cloned();
            let (entry, bytes) = match kept {
                Some(entry) => {
                    let bytes = u64::from(protobuf::Message::compute_size(&entry));
                    (entry, bytes)
                }
                None => {
                    let bytes = self.entry_bytes(index).map_err(other)?;
                    size = size.saturating_add(bytes.len() as u64);
                    if !entries.is_empty() && size > max_size {
                        break;
                    }
                    entries.push(parse_entry(&bytes).map_err(other)?);
                    continue;
                }
            };
            size = size.saturating_add(bytes);
            if !entries.is_empty() && size > max_size {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let (snapshot, last) = {
            let cached = self.read_cache();
            (cached.snapshot.clone(), cached.last_index)
        };
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < snapshot.index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if index > last {
            return Err(unavailable());
        }
        if let Some(term) = self.read_cache().term(index) {
            return Ok(term);
        }
        Ok(self.entry(index).map_err(other)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read_cache().snapshot.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read_cache().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // A snapshot being written now is newer than the one stored: Raft asks again later
        // rather than wait for the write here, on its thread.
        let Ok(_writing) = self.snapshot_lock.try_lock() else {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let metadata = self.read_cache().snapshot.clone();
        if metadata.index < request_index {
            // Raft asks again later; the next periodic snapshot will cover it.
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = self
            .files
            .read(metadata.index)
            .and_then(|data| data.ok_or_else(|| missing_snapshot(metadata.index)))
            .map_err(other)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        snapshot.set_data(data.into());
        Ok(snapshot)
    }
}

impl LogStore for RocksStore {
    fn applied(&self, index: u64) {
        let applied_some = |large: &BTreeMap<u64, Entry>| {
            large.first_key_value().is_some_and(|(at, _)| *at <= index)
        };
        if applied_some(&self.read_cache().large) {
            self.write_cache().large.retain(|at, _| *at > index);
        }
    }

    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let old_last = self.read_cache().last_index;
        let log = self.cf(LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(
                log,
                index_key(entry.index),
                entry
                    .write_to_bytes()
                    .map_err(|e| proto_error("log entry", e))?,
            );
        }
        // A conflicting suffix from an older leader goes in the same batch, or a follower would
        // keep entries that the new leader never sent and reject its appends for ever.
        if old_last > last.index {
            batch.delete_range_cf(log, index_key(last.index + 1), index_key(old_last + 1));
        }
        self.write(batch)?;
        let mut cached = self.write_cache();
        cached.last_index = last.index;
        cached.appended(entries);
        Ok(())
    }

    fn set_hard_state(&self, hard_state: &HardState) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        put_meta(
            &mut batch,
            self.cf(META)?,
            HARD_STATE_KEY,
            "hard state",
            hard_state,
        )?;
        self.write(batch)?;
        self.write_cache().hard_state = hard_state.clone();
        Ok(())
    }

    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut hard_state = self.read_cache().hard_state.clone();
        hard_state.commit = commit;
        self.set_hard_state(&hard_state)
    }

    fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let _writing = self.lock_snapshot();
        let metadata = snapshot.get_metadata();
        let old_last = self.read_cache().last_index;
        let mut hard_state = self.read_cache().hard_state.clone();
        hard_state.term = hard_state.term.max(metadata.term);
        hard_state.commit = metadata.index;
        self.files.write(metadata.index, &snapshot.data)?;
        let mut batch = WriteBatch::default();
        put_meta(
            &mut batch,
            self.cf(META)?,
            SNAPSHOT_META_KEY,
            "snapshot metadata",
            metadata,
        )?;
        put_meta(
            &mut batch,
            self.cf(META)?,
            HARD_STATE_KEY,
            "hard state",
            &hard_state,
        )?;
        // The whole old log goes: the snapshot replaces it.
        batch.delete_range_cf(
            self.cf(LOG)?,
            index_key(0),
            index_key(old_last.max(metadata.index) + 1),
        );
        self.write(batch)?;
        let mut cached = self.write_cache();
        cached.snapshot = metadata.clone();
        cached.hard_state = hard_state;
        cached.last_index = metadata.index;
        cached.terms.clear();
        cached.large.clear();
        drop(cached);
        self.remove_older_snapshots(metadata.index);
        Ok(())
    }

    fn save_snapshot(
        &self,
        data: Vec<u8>,
        index: u64,
        term: u64,
        conf_state: &ConfState,
    ) -> Result<bool, StoreError> {
        let _writing = self.lock_snapshot();
        if self.read_cache().snapshot.index >= index {
            // The leader's snapshot, applied while this one was encoded, is newer.
            return Ok(false);
        }
        let mut metadata = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        metadata.set_conf_state(conf_state.clone());
        self.files.write(index, &data)?;
        drop(data);
        let mut batch = WriteBatch::default();
        put_meta(
            &mut batch,
            self.cf(META)?,
            SNAPSHOT_META_KEY,
            "snapshot metadata",
            &metadata,
        )?;
        // The log behind the snapshot is no longer needed.
        batch.delete_range_cf(self.cf(LOG)?, index_key(0), index_key(index + 1));
        self.write(batch)?;
        let mut cached = self.write_cache();
        cached.compacted(index);
        cached.snapshot = metadata;
        cached.last_index = cached.last_index.max(index);
        drop(cached);
        self.remove_older_snapshots(index);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(format: u32) -> StoreIdentity {
        StoreIdentity {
            format,
            cluster: "c1".into(),
            node: NodeId::new(1).unwrap(),
        }
    }

    /// A store of format 8 kept its snapshot in the database. At open its snapshot moves to its
    /// file and its format is raised, so the state is the same after, and a build of format 8
    /// (which would look for the value and start empty) refuses it.
    #[test]
    fn a_store_of_format_8_has_its_snapshot_moved_to_a_file_and_its_format_raised() {
        let dir = tempfile::tempdir().unwrap();
        let voters = [1, 2, 3].map(|id| NodeId::new(id).unwrap());
        let mut older = State::default();
        older.set_member_address(NodeId::new(2).unwrap(), Some("127.0.0.1:2".to_string()));
        {
            let store = RocksStore::open(
                dir.path(),
                &identity(FORMAT_VERSION),
                &voters,
                Durability::Synced,
            )
            .unwrap();
            // The layout of format 8: the bootstrap snapshot in the `state` family, no file.
            let mut batch = WriteBatch::default();
            batch.put_cf(
                store.cf(STATE).unwrap(),
                SNAPSHOT_KEY,
                older.to_snapshot().unwrap(),
            );
            batch.put_cf(
                store.cf(META).unwrap(),
                IDENTITY_KEY,
                encode_record(&identity(FORMAT_WITH_SNAPSHOT_IN_DATABASE)).unwrap(),
            );
            store.write(batch).unwrap();
            store.files.remove_all_but(0).unwrap();
        }
        let reopen =
            |format| RocksStore::open(dir.path(), &identity(format), &[], Durability::Synced);
        let store = reopen(FORMAT_VERSION).unwrap();
        assert_eq!(
            store.state_snapshot().unwrap(),
            (older.clone(), BOOTSTRAP_INDEX)
        );
        assert_eq!(store.get(STATE, SNAPSHOT_KEY).unwrap(), None);
        drop(store);
        let refused = reopen(FORMAT_WITH_SNAPSHOT_IN_DATABASE).unwrap_err();
        assert!(refused.0.contains("holds format 9"), "{refused}");
        let store = reopen(FORMAT_VERSION).unwrap();
        assert_eq!(store.state_snapshot().unwrap(), (older, BOOTSTRAP_INDEX));
    }
}
