//! The state machine's snapshots as files of their own, one per index, in the store's
//! `snapshots` folder: `state-<index, 20 digits>.snap`, each whole (written to a temporary file,
//! synced, renamed, the folder synced). The database holds which one is current
//! (`snapshot_meta`); a file is written before the metadata that names it and the older ones are
//! removed after, so a crash between leaves the current file in place and a stray one that the
//! next open removes.
//!
//! Why files and not a value in the database: a snapshot's bytes went through RocksDB's
//! write-ahead log, so the Raft log's small synced appends queued behind them (1.8 s behind a
//! 190 MB snapshot in the C1M run of 2026-12-05, night), and then through a memtable, a level-0
//! table and compactions, three or four writes of the same bytes. etcd keeps its snapshots in
//! files beside its log for the same reasons.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::consensus::StoreError;
use crate::files::{self, Sync};

const PREFIX: &str = "state-";
const SUFFIX: &str = ".snap";
const TEMPORARY: &str = ".snap.tmp";

/// The snapshots' folder.
#[derive(Debug, Clone)]
pub(super) struct SnapshotFiles {
    dir: PathBuf,
    /// Whether writes wait for the disk ([`super::Durability`]).
    sync: Sync,
}

impl SnapshotFiles {
    /// The folder in `store_dir`, made if missing (0700, and `store_dir` synced, so that the
    /// folder is on disk before any batch names a file in it).
    pub(super) fn open(store_dir: &Path, sync: Sync) -> Result<SnapshotFiles, StoreError> {
        let dir = store_dir.join("snapshots");
        if !dir.is_dir() {
            files::private_dir(&dir)
                .and_then(|()| match sync {
                    Sync::Synced => files::sync_dir(store_dir),
                    Sync::Unsynced => Ok(()),
                })
                .map_err(|e| file_error("make the folder", e))?;
        }
        Ok(SnapshotFiles { dir, sync })
    }

    fn path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{index:020}{SUFFIX}"))
    }

    /// Writes the snapshot at `index` whole, replacing one of the same index: before the batch
    /// that names it.
    pub(super) fn write(&self, index: u64, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(index);
        let temporary = self.dir.join(format!("{PREFIX}{index:020}{TEMPORARY}"));
        files::write_atomically(&temporary, &path, data, self.sync)
            .map_err(|e| file_error(&format!("write the snapshot at {index}"), e))
    }

    /// The snapshot at `index`, if its file is there.
    pub(super) fn read(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(self.path(index)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(file_error(&format!("read the snapshot at {index}"), error)),
        }
    }

    /// Removes every file but the snapshot at `current`: older snapshots, a newer one whose
    /// metadata never made it to the database, and temporary files of interrupted writes.
    /// Answers how many went.
    pub(super) fn remove_all_but(&self, current: u64) -> io::Result<usize> {
        let keep = self.path(current);
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let ours = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(PREFIX));
            if ours && path != keep {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn file_error(what: &str, error: io::Error) -> StoreError {
    StoreError(format!("snapshot file: cannot {what}: {error}"))
}

/// The metadata names a snapshot at `index` whose file is not there: the store was damaged (a
/// file removed by hand). Starting from an empty state would lose the fleet.
pub(super) fn missing_snapshot(index: u64) -> StoreError {
    StoreError(format!(
        "the snapshot at index {index} is missing from snapshots/: remove this member from the \
         cluster, clear its data dir and add it again (operations.md, \"A data dir belongs to \
         one cluster and one node\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::SnapshotFiles;
    use crate::files::Sync;

    fn names(files: &SnapshotFiles) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&files.dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_snapshot_is_a_file_of_its_index_and_only_the_current_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        for sync in [Sync::Synced, Sync::Unsynced] {
            let files = SnapshotFiles::open(&dir.path().join(format!("{sync:?}")), sync).unwrap();
            assert_eq!(files.read(7).unwrap(), None);
            files.write(7, b"seven").unwrap();
            files.write(12, b"twelve").unwrap();
            files.write(12, b"twelve again").unwrap();
            // An interrupted write's leftovers, and a stranger's file, which is left alone.
            std::fs::write(files.dir.join("state-00000000000000000013.snap.tmp"), b"x").unwrap();
            std::fs::write(files.dir.join("README"), b"notes").unwrap();
            assert_eq!(files.read(7).unwrap().as_deref(), Some(&b"seven"[..]));
            assert_eq!(
                files.read(12).unwrap().as_deref(),
                Some(&b"twelve again"[..])
            );
            assert_eq!(files.remove_all_but(12).unwrap(), 2);
            assert_eq!(names(&files), ["README", "state-00000000000000000012.snap"]);
            assert_eq!(files.read(7).unwrap(), None);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_snapshot_file_and_its_folder_are_their_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        for sync in [Sync::Synced, Sync::Unsynced] {
            let files = SnapshotFiles::open(&dir.path().join(format!("{sync:?}")), sync).unwrap();
            files.write(3, b"sealed secrets live here").unwrap();
            assert_eq!(mode(&files.path(3)), 0o600);
            assert_eq!(mode(&files.dir), 0o700);
        }
    }
}
