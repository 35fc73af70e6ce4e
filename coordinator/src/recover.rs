//! `nexus-coordinator restore`: a fresh data directory made from a backup file, for one member of
//! a new cluster after every coordinator's disk was lost. Every member is made from the same file
//! with the same voters; started together, they elect a leader and serve the backed-up state.
//!
//! The store it writes is a founder's (see [`RocksStore::create_restored`]): the first snapshot,
//! at the bootstrap index, holds the backup's state instead of the empty one. Nothing of the old
//! cluster's Raft log or membership comes back: the new cluster's members are the ones named
//! now. What it refuses, and with which code: a data directory that is not empty
//! (`INVALID_ARGUMENT`), a damaged or truncated file (`BACKUP_CORRUPT`), one of a newer Nexus
//! (`BACKUP_VERSION_UNSUPPORTED`), one of another cluster than the CA's in `--tls-dir`
//! (`BACKUP_CLUSTER_MISMATCH`). A refusal changes nothing on disk.

use std::path::Path;

use nexus_protocol::backup::{self, BackupHeader};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::transport::Credentials;

use crate::config::RestorePlan;
use crate::state::{STATE_FORMAT, State};
use crate::store::{self, RocksStore, StoreIdentity};

/// Refuses a backup of a cluster other than `cluster` (this CA's fingerprint).
pub fn check_cluster(header: &BackupHeader, cluster: &str) -> Result<(), WireError> {
    if header.cluster == cluster {
        return Ok(());
    }
    Err(WireError::new(
        ErrorCode::BackupClusterMismatch,
        format!(
            "backup {} is of the cluster whose CA is {}, not of this CA ({cluster}): the agents \
             would not trust the new coordinators",
            header.id, header.cluster
        ),
    ))
}

/// Refuses a data directory that exists and holds anything.
pub fn check_data_dir(dir: &Path) -> Result<(), WireError> {
    match std::fs::read_dir(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("cannot read the data dir {}: {error}", dir.display()),
        )),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "the data dir {} is not empty: a restore makes a fresh one and never writes \
                     over a node's data (move it away, or name another)",
                    dir.display()
                ),
            )),
        },
    }
}

/// Makes the data directory of `plan` from its backup file; the backup's header on success.
pub fn restore(plan: &RestorePlan) -> Result<BackupHeader, WireError> {
    check_data_dir(&plan.data_dir)?;
    let bytes = std::fs::read(&plan.from).map_err(|error| {
        WireError::new(
            ErrorCode::InvalidArgument,
            format!("cannot read {}: {error}", plan.from.display()),
        )
    })?;
    let decoded = backup::decode(&bytes, STATE_FORMAT).map_err(|error| {
        WireError::new(error.code(), format!("{}: {error}", plan.from.display()))
    })?;
    let identity = Identity::Coordinator(plan.node_id);
    let credentials = Credentials::from_pki_dir(&plan.tls_dir, &identity).map_err(|error| {
        WireError::new(
            ErrorCode::AuthenticationFailed,
            format!(
                "cannot load this coordinator's TLS files from {}: {error}",
                plan.tls_dir.display()
            ),
        )
    })?;
    let cluster = nexus_protocol::pki::PkiDir::new(&plan.tls_dir)
        .cluster_id(credentials.ca_fingerprint())
        .map_err(|error| WireError::new(ErrorCode::Internal, error.to_string()))?;
    check_cluster(&decoded.header, &cluster)?;
    if let Some(refusal) = crate::state::format_refusal(&decoded.header) {
        return Err(refusal);
    }
    let state = State::from_snapshot(decoded.payload)
        .map_err(|error| {
            WireError::new(
                ErrorCode::BackupCorrupt,
                format!(
                    "{}: its checksum matches but its state cannot be read: {error}",
                    plan.from.display()
                ),
            )
        })?
        .for_new_cluster();
    let existed = plan.data_dir.exists();
    let made = make_store(plan, &cluster, &state);
    if made.is_err() {
        // Nothing half-made is left behind: the directory was absent or empty.
        let _ = std::fs::remove_dir_all(plan.data_dir.join("raft"));
        if !existed {
            let _ = std::fs::remove_dir(&plan.data_dir);
        }
    }
    made.map(|()| decoded.header)
}

fn make_store(plan: &RestorePlan, cluster: &str, state: &State) -> Result<(), WireError> {
    let failed = |what: String| WireError::new(ErrorCode::Internal, what);
    std::fs::create_dir_all(&plan.data_dir).map_err(|error| {
        failed(format!(
            "cannot create the data dir {}: {error}",
            plan.data_dir.display()
        ))
    })?;
    let identity = StoreIdentity {
        format: store::FORMAT_VERSION,
        cluster: cluster.to_string(),
        node: plan.node_id,
    };
    let dir = plan.data_dir.join("raft");
    RocksStore::create_restored(&dir, &identity, &plan.voters(), state).map_err(|error| {
        failed(format!(
            "cannot make the store in {}: {error}",
            dir.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_protocol::NodeId;
    use nexus_protocol::clock::Timestamp;

    fn header(cluster: &str) -> BackupHeader {
        BackupHeader {
            id: "20261203T120000Z-i42".to_string(),
            cluster: cluster.to_string(),
            node: NodeId::new(1).unwrap(),
            index: 42,
            term: 3,
            created_at: Timestamp::from_millis(0),
            software: "0.1.0".to_string(),
            state_format: STATE_FORMAT,
            counts: Vec::new(),
        }
    }

    #[test]
    fn only_this_clusters_backups_are_restored() {
        assert!(check_cluster(&header("aa"), "aa").is_ok());
        let error = check_cluster(&header("aa"), "bb").unwrap_err();
        assert_eq!(error.code, ErrorCode::BackupClusterMismatch);
    }

    #[test]
    fn only_an_absent_or_empty_data_dir_is_restored_into() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_data_dir(&dir.path().join("absent")).is_ok());
        assert!(check_data_dir(dir.path()).is_ok());
        std::fs::write(dir.path().join("x"), b"").unwrap();
        assert_eq!(
            check_data_dir(dir.path()).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}
