//! The RocksDB store on a real disk: what is written survives a reopen, a conflicting suffix is
//! cut in the same write, snapshots truncate the log and live in files of their own, a data dir
//! of another cluster or node is refused, and a write-ahead log cut off mid-batch recovers to its
//! last whole batch.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use nexus_coordinator::consensus::LogStore;
use nexus_coordinator::state::State;
use nexus_coordinator::store::{
    BOOTSTRAP_INDEX, Durability, FORMAT_VERSION, RocksStore, StoreIdentity,
};
use nexus_protocol::NodeId;
use raft::Storage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

fn identity(cluster: &str, node: u64) -> StoreIdentity {
    StoreIdentity {
        format: FORMAT_VERSION,
        cluster: cluster.into(),
        node: NodeId::new(node).unwrap(),
    }
}

fn voters() -> Vec<NodeId> {
    [1, 2, 3].map(|id| NodeId::new(id).unwrap()).to_vec()
}

/// A store as a joining node has it: empty, its log starting at index 1 (the log tests use it).
fn open(dir: &Path) -> RocksStore {
    RocksStore::open(dir, &identity("c1", 1), &[], Durability::Synced).unwrap()
}

/// A founding member's store: node 1 of three, from the shared bootstrap snapshot.
fn open_founder(dir: &Path) -> RocksStore {
    RocksStore::open(dir, &identity("c1", 1), &voters(), Durability::Synced).unwrap()
}

#[test]
fn a_founder_starts_from_the_shared_bootstrap_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_founder(dir.path());
    let initial = store.initial_state().unwrap();
    assert_eq!(initial.conf_state.voters, [1, 2, 3]);
    assert_eq!((initial.hard_state.term, initial.hard_state.commit), (1, 1));
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (2, 1),
        "the log begins after the bootstrap snapshot"
    );
    let snapshot = store.snapshot(0, 4).unwrap();
    assert_eq!(snapshot.get_metadata().index, BOOTSTRAP_INDEX);
    assert_eq!(snapshot.get_metadata().get_conf_state().voters, [1, 2, 3]);
    assert_eq!(store.state_snapshot().unwrap(), (State::default(), 1));
    // A second open keeps what the first wrote, whatever voters it is given.
    drop(store);
    let store = RocksStore::open(dir.path(), &identity("c1", 1), &[], Durability::Synced).unwrap();
    assert_eq!(store.initial_state().unwrap().conf_state.voters, [1, 2, 3]);
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes().into(),
        ..Default::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn context() -> raft::GetEntriesContext {
    raft::GetEntriesContext::empty(false)
}

#[test]
fn what_is_written_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert!(store.initial_state().unwrap().conf_state.voters.is_empty());
        assert_eq!(
            (store.first_index().unwrap(), store.last_index().unwrap()),
            (1, 0)
        );
        store.append(&entries(1..=5, 1)).unwrap();
        let hard_state = HardState {
            term: 1,
            vote: 2,
            commit: 3,
            ..Default::default()
        };
        store.set_hard_state(&hard_state).unwrap();
        store.set_commit(4).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.last_index().unwrap(), 5);
    assert_eq!(store.term(5).unwrap(), 1);
    let state = store.initial_state().unwrap();
    assert_eq!(
        (
            state.hard_state.term,
            state.hard_state.vote,
            state.hard_state.commit
        ),
        (1, 2, 4)
    );
    let read = store.entries(2, 5, None, context()).unwrap();
    assert_eq!(read, entries(2..=4, 1));
    assert!(
        store.entries(2, 7, None, context()).is_err(),
        "past the last index"
    );
}

#[test]
fn a_conflicting_suffix_is_cut_in_the_same_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(&entries(1..=10, 1)).unwrap();
        // A new leader overwrites from index 6 with a shorter log of term 2.
        store.append(&entries(6..=7, 2)).unwrap();
        assert_eq!(store.last_index().unwrap(), 7);
    }
    let store = open(dir.path());
    assert_eq!(
        store.last_index().unwrap(),
        7,
        "entries 8..10 of the old term are gone on disk too"
    );
    assert_eq!(store.term(5).unwrap(), 1);
    assert_eq!(store.term(7).unwrap(), 2);
    assert!(store.term(8).is_err());
}

#[test]
fn a_data_dir_of_another_cluster_or_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let other_cluster = RocksStore::open(
        dir.path(),
        &identity("c2", 1),
        &voters(),
        Durability::Synced,
    )
    .unwrap_err();
    assert!(
        other_cluster
            .to_string()
            .contains("belongs to another cluster"),
        "{other_cluster}"
    );
    let other_node = RocksStore::open(
        dir.path(),
        &identity("c1", 2),
        &voters(),
        Durability::Synced,
    )
    .unwrap_err();
    assert!(
        other_node
            .to_string()
            .contains("belongs to node 1, not node 2"),
        "{other_node}"
    );
    let newer = StoreIdentity {
        format: FORMAT_VERSION + 1,
        ..identity("c1", 1)
    };
    let newer = RocksStore::open(dir.path(), &newer, &voters(), Durability::Synced).unwrap_err();
    assert!(newer.to_string().contains("format"), "{newer}");
    // And the right identity still opens it.
    drop(open(dir.path()));
}

#[test]
fn snapshots_truncate_the_log_and_restore_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::default();
    {
        let store = open(dir.path());
        store.append(&entries(1..=20, 3)).unwrap();
        let conf_state = ConfState::from((vec![1, 2, 3], vec![]));
        store
            .save_snapshot(state.to_snapshot().unwrap(), 12, 3, &conf_state)
            .unwrap();
        assert_eq!(store.first_index().unwrap(), 13);
        assert_eq!(store.last_index().unwrap(), 20);
        assert_eq!(
            store.term(12).unwrap(),
            3,
            "the snapshot's own index keeps its term"
        );
        assert!(matches!(
            store.entries(5, 10, None, context()),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        assert!(matches!(
            store.snapshot(15, 2),
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert_eq!(store.snapshot(10, 2).unwrap().get_metadata().index, 12);
    }
    let store = open(dir.path());
    let (restored, index) = store.state_snapshot().unwrap();
    assert_eq!((restored, index), (state, 12));
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (13, 20)
    );
}

#[test]
fn a_snapshot_from_the_leader_replaces_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(&entries(1..=8, 1)).unwrap();
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 50;
    snapshot.mut_metadata().term = 4;
    snapshot
        .mut_metadata()
        .set_conf_state(ConfState::from((vec![1, 2, 3, 4], vec![])));
    snapshot.set_data(State::default().to_snapshot().unwrap().into());
    store.apply_snapshot(&snapshot).unwrap();
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (51, 50)
    );
    let state = store.initial_state().unwrap();
    assert_eq!(state.hard_state.commit, 50);
    assert_eq!(state.conf_state.voters, [1, 2, 3, 4]);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.last_index().unwrap(), 50);
    assert_eq!(store.state_snapshot().unwrap().1, 50);
}

/// A snapshot of this node's, encoded off the Raft thread while the leader's newer one was
/// applied, is not written over it.
#[test]
fn a_snapshot_the_leaders_overtook_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(&entries(1..=30, 1)).unwrap();
    let conf_state = ConfState::from((vec![1, 2, 3], vec![]));
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 50;
    snapshot.mut_metadata().term = 4;
    snapshot.mut_metadata().set_conf_state(conf_state.clone());
    snapshot.set_data(State::default().to_snapshot().unwrap().into());
    store.apply_snapshot(&snapshot).unwrap();
    let mut older = State::default();
    older.set_member_address(NodeId::new(2).unwrap(), Some("127.0.0.1:1".to_string()));
    let stored = store
        .save_snapshot(older.to_snapshot().unwrap(), 20, 1, &conf_state)
        .unwrap();
    assert!(!stored);
    let (state, index) = store.state_snapshot().unwrap();
    assert_eq!((index, state), (50, State::default()));
    assert_eq!(store.first_index().unwrap(), 51);
    // One past it is written.
    let stored = store
        .save_snapshot(older.to_snapshot().unwrap(), 51, 4, &conf_state)
        .unwrap();
    assert!(stored);
    assert_eq!(store.state_snapshot().unwrap(), (older, 51));
}

#[test]
fn a_write_ahead_log_cut_mid_batch_recovers_to_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for index in 1..=30 {
            store.append(&[entry(index, 1)]).unwrap();
        }
    }
    // Cut the newest WAL file in the middle of its last record, as a crash mid-write can.
    let mut wals: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    wals.sort();
    let wal = wals.last().expect("a write-ahead log file");
    let len = std::fs::metadata(wal).unwrap().len();
    assert!(len > 10, "the WAL holds the writes");
    let file = std::fs::OpenOptions::new().write(true).open(wal).unwrap();
    file.set_len(len - 7).unwrap();
    drop(file);

    let store = open(dir.path());
    let last = store.last_index().unwrap();
    assert!(
        (25..30).contains(&last),
        "recovered to {last}: the torn batch is dropped, the rest kept"
    );
    let read = store.entries(1, last + 1, None, context()).unwrap();
    assert_eq!(read, entries(1..=last, 1), "every surviving entry is whole");
}

/// Raft asks for terms at every append, vote and commit check, so the store answers them from
/// memory: here, after every kind of change to the log (appends, a new leader's overwrites,
/// snapshots taken and received) and after a reopen, the term it answers is the stored entry's.
#[test]
fn the_terms_raft_asks_for_are_the_stored_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let check = |store: &RocksStore, when: &str| {
        let first = store.first_index().unwrap();
        let last = store.last_index().unwrap();
        for index in first..=last {
            let stored = store.entries(index, index + 1, None, context()).unwrap();
            assert_eq!(
                store.term(index).unwrap(),
                stored[0].term,
                "{when}: {index}"
            );
        }
        assert!(store.term(last + 1).is_err(), "{when}: past the last");
    };
    store.append(&entries(1..=30, 1)).unwrap();
    check(&store, "appended");
    store.append(&entries(21..=25, 2)).unwrap();
    check(&store, "overwritten from 21, shorter");
    store.append(&entries(26..=40, 3)).unwrap();
    check(&store, "appended after the overwrite");
    let conf_state = ConfState::from((vec![1, 2, 3], vec![]));
    store
        .save_snapshot(State::default().to_snapshot().unwrap(), 22, 2, &conf_state)
        .unwrap();
    check(&store, "compacted to 22");
    store.append(&entries(23..=24, 4)).unwrap();
    check(&store, "overwritten just past the snapshot");
    drop(store);
    let store = open(dir.path());
    check(&store, "reopened");
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 60;
    snapshot.mut_metadata().term = 5;
    snapshot.mut_metadata().set_conf_state(conf_state);
    snapshot.set_data(State::default().to_snapshot().unwrap().into());
    store.apply_snapshot(&snapshot).unwrap();
    store.append(&entries(61..=64, 5)).unwrap();
    check(&store, "after the leader's snapshot");
}

/// Entries are read up to `max_size` as raft-rs cuts them (the first always, then as many as
/// fit), without reading the ones past the cut: a restore's entry is tens of megabytes.
#[test]
fn entries_are_read_only_as_far_as_they_fit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut log = entries(1..=10, 1);
    log[4].data = vec![7u8; 100_000].into();
    store.append(&log).unwrap();
    for max in [0u64, 1, 40, 100, 150, 1_000, 101_000, 200_000] {
        for low in 1..=10 {
            let mut expected = store.entries(low, 11, None, context()).unwrap();
            raft::util::limit_size(&mut expected, Some(max));
            let read = store.entries(low, 11, Some(max), context()).unwrap();
            assert_eq!(read, expected, "from {low}, at most {max} bytes");
        }
    }
}

/// A large entry (a restore's state) is served from memory until applied, and from the disk
/// after: the same entry either way, through appends that replace it and snapshots past it.
#[test]
fn a_large_entry_reads_the_same_from_memory_and_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut log = entries(1..=6, 1);
    log[2].data = vec![3u8; 2 << 20].into();
    store.append(&log).unwrap();
    let from_memory = store.entries(1, 7, None, context()).unwrap();
    assert_eq!(from_memory, log);
    store.applied(3);
    assert_eq!(
        store.entries(1, 7, None, context()).unwrap(),
        log,
        "from disk"
    );
    // A new leader replaces it with another large one, which is read back, not the old one.
    let mut replaced = entries(3..=4, 2);
    replaced[0].data = vec![4u8; 2 << 20].into();
    store.append(&replaced).unwrap();
    assert_eq!(store.entries(3, 5, None, context()).unwrap(), replaced);
    assert_eq!(store.term(3).unwrap(), 2);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.entries(3, 5, None, context()).unwrap(), replaced);
}

/// The files in the store's `snapshots` folder, sorted.
fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The bytes of the database's write-ahead log files.
fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

/// A snapshot's bytes go to a file of their own, not through the database's write-ahead log
/// (where the Raft log's synced appends queued behind them), and only the newest file stays.
#[test]
fn a_snapshot_is_a_file_beside_the_log_and_only_the_newest_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(&entries(1..=30, 2)).unwrap();
    let conf_state = ConfState::from((vec![1, 2, 3], vec![]));
    let mut large = State::default();
    large.set_member_address(NodeId::new(2).unwrap(), Some("x".repeat(4 << 20)));
    let before = wal_bytes(dir.path());
    store
        .save_snapshot(large.to_snapshot().unwrap(), 10, 2, &conf_state)
        .unwrap();
    let grown = wal_bytes(dir.path()).saturating_sub(before);
    assert!(
        grown < 1 << 20,
        "the write-ahead log grew by {grown} bytes for a 4 MiB snapshot"
    );
    assert_eq!(
        snapshot_files(dir.path()),
        ["state-00000000000000000010.snap"]
    );
    let file = dir.path().join("snapshots/state-00000000000000000010.snap");
    assert!(
        std::fs::metadata(file).unwrap().len() >= 4 << 20,
        "the file holds it"
    );
    store
        .save_snapshot(State::default().to_snapshot().unwrap(), 20, 2, &conf_state)
        .unwrap();
    assert_eq!(
        snapshot_files(dir.path()),
        ["state-00000000000000000020.snap"]
    );
    assert_eq!(store.state_snapshot().unwrap(), (State::default(), 20));
    assert_eq!(store.snapshot(20, 2).unwrap().get_metadata().index, 20);
}

/// A crash after a snapshot's file was written and before the batch that names it leaves the
/// store at the snapshot before; the next open removes the stray file and any temporary one.
#[test]
fn a_snapshot_file_that_its_metadata_never_named_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut kept = State::default();
    kept.set_member_address(NodeId::new(2).unwrap(), Some("127.0.0.1:2".to_string()));
    {
        let store = open(dir.path());
        store.append(&entries(1..=30, 2)).unwrap();
        let conf_state = ConfState::from((vec![1, 2, 3], vec![]));
        store
            .save_snapshot(kept.to_snapshot().unwrap(), 10, 2, &conf_state)
            .unwrap();
    }
    let snapshots = dir.path().join("snapshots");
    let stray = State::default().to_snapshot().unwrap();
    std::fs::write(snapshots.join("state-00000000000000000025.snap"), &stray).unwrap();
    std::fs::write(
        snapshots.join("state-00000000000000000027.snap.tmp"),
        b"torn",
    )
    .unwrap();
    let store = open(dir.path());
    assert_eq!(store.state_snapshot().unwrap(), (kept, 10));
    assert_eq!(store.first_index().unwrap(), 11);
    assert_eq!(
        snapshot_files(dir.path()),
        ["state-00000000000000000010.snap"]
    );
}

/// A store whose snapshot file was removed refuses to start rather than start empty: an empty
/// state would forget the fleet.
#[test]
fn a_missing_snapshot_file_is_an_error_not_an_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_founder(dir.path());
    drop(store);
    std::fs::remove_file(
        dir.path()
            .join("snapshots")
            .join("state-00000000000000000001.snap"),
    )
    .unwrap();
    let store = RocksStore::open(dir.path(), &identity("c1", 1), &[], Durability::Synced).unwrap();
    let error = store.state_snapshot().unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
    assert!(store.snapshot(0, 2).is_err());
}
