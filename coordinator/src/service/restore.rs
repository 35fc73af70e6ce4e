//! An admin's online restore: a backup from this coordinator's directory, checked, replaces the
//! replicated state in one Raft entry ([`Command::Restore`], applied alike on every replica by
//! `state::restore`). The checks before the proposal are pure ([`checked`]): the file's checksum
//! and format, and whose cluster it is (another cluster's backup only with `force`).
//!
//! The proposal goes through the leader like every write (a follower forwards it); the answer is
//! the backup's `BackupInfo` once the entry is applied here.

use nexus_protocol::RequestId;
use nexus_protocol::backup::{self, BackupHeader};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::Response;
use nexus_protocol::transport::Peer;
use tracing::Instrument;

use super::Service;
use super::checks::require;
use crate::hops;
use crate::state::{Command, STATE_FORMAT};

impl Service {
    pub(super) async fn restore_backup(
        &self,
        peer: &Peer,
        request_id: RequestId,
        id: &str,
        force: bool,
    ) -> Result<Response, WireError> {
        require(peer, &[IdentityKind::Admin])?;
        let backups = self.backups.as_ref().ok_or_else(|| {
            WireError::new(
                ErrorCode::Unsupported,
                "this coordinator keeps no backups (it runs without a backup directory)",
            )
        })?;
        let dir = backups.dir().clone();
        let wanted = id.to_string();
        let verified = tokio::task::spawn_blocking(move || dir.verify(&wanted))
            .await
            .map_err(|error| {
                WireError::new(
                    ErrorCode::Internal,
                    format!("reading the backup stopped: {error}"),
                )
            })??;
        let (info, bytes) = (verified.info, verified.bytes);
        let (header, state) = checked(&bytes, Some(backups.cluster()), force)?;
        let what = format!("backup {} at index {}", header.id, header.index);
        let span = Hop::new(hops::RESTORE, Some(request_id)).kind(&what).info();
        let result = async {
            tracing::info!(
                backup = %header.id,
                index = header.index,
                term = header.term,
                cluster = %header.cluster,
                force,
                bytes = bytes.len(),
                user = %peer.identity,
                "restoring the replicated state from a backup"
            );
            let index = header.index;
            let command = Command::Restore { header, state };
            self.cluster
                .propose(request_id, peer.identity.clone(), command)
                .await?;
            tracing::info!(backup = %id, index, "the backup's state is applied");
            Ok(())
        }
        .instrument(span.clone())
        .await;
        hop::record(&span, &result);
        result?;
        Ok(Response::Backup(info))
    }
}

/// A backup file checked for a restore into the cluster `cluster` (its CA's fingerprint; `None`:
/// unknown, so not compared): its header and its payload, the state's bytes. Refused: a damaged
/// file (`BACKUP_CORRUPT`), a newer format (`BACKUP_VERSION_UNSUPPORTED`), another cluster's
/// backup without `force` (`BACKUP_CLUSTER_MISMATCH`).
pub(super) fn checked(
    file: &[u8],
    cluster: Option<&str>,
    force: bool,
) -> Result<(BackupHeader, Vec<u8>), WireError> {
    let decoded = backup::decode(file, STATE_FORMAT).map_err(|e| e.to_wire())?;
    if let Some(cluster) = cluster
        && decoded.header.cluster != cluster
        && !force
    {
        return Err(WireError::new(
            ErrorCode::BackupClusterMismatch,
            format!(
                "backup {} was made by cluster {}, and this is cluster {cluster}; \
                 --force restores it anyway",
                decoded.header.id,
                short(&decoded.header.cluster)
            ),
        ));
    }
    Ok((decoded.header, decoded.payload.to_vec()))
}

/// A fingerprint's first 16 hex digits, enough to tell clusters apart in a message.
fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use nexus_protocol::NodeId;
    use nexus_protocol::clock::Timestamp;

    use super::*;

    const OURS: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const THEIRS: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn file(cluster: &str, state_format: u32) -> Vec<u8> {
        let header = BackupHeader {
            id: "20261203T120000Z-i42".into(),
            cluster: cluster.into(),
            node: NodeId::new(1).unwrap(),
            index: 42,
            term: 3,
            created_at: Timestamp(1_000),
            software: "test".into(),
            state_format,
            counts: vec![],
        };
        backup::encode(&header, b"state").unwrap()
    }

    fn code(result: Result<(BackupHeader, Vec<u8>), WireError>) -> Option<ErrorCode> {
        result.err().map(|error| error.code)
    }

    #[test]
    fn our_own_backup_is_taken_with_its_payload() {
        let (header, state) = checked(&file(OURS, STATE_FORMAT), Some(OURS), false).unwrap();
        assert_eq!((header.index, state.as_slice()), (42, &b"state"[..]));
    }

    #[test]
    fn another_clusters_backup_needs_force() {
        let theirs = file(THEIRS, STATE_FORMAT);
        let error = checked(&theirs, Some(OURS), false).unwrap_err();
        assert_eq!(error.code, ErrorCode::BackupClusterMismatch);
        assert!(
            error.message.contains("fedcba9876543210"),
            "{}",
            error.message
        );
        assert_eq!(code(checked(&theirs, Some(OURS), true)), None);
    }

    #[test]
    fn a_damaged_or_newer_backup_is_refused_even_with_force() {
        let mut flipped = file(OURS, STATE_FORMAT);
        let at = flipped.len() - 40;
        flipped[at] ^= 1;
        assert_eq!(
            code(checked(&flipped, Some(OURS), true)),
            Some(ErrorCode::BackupCorrupt)
        );
        let whole = file(OURS, STATE_FORMAT);
        assert_eq!(
            code(checked(&whole[..whole.len() - 1], Some(OURS), true)),
            Some(ErrorCode::BackupCorrupt)
        );
        assert_eq!(
            code(checked(&file(OURS, STATE_FORMAT + 1), Some(OURS), true)),
            Some(ErrorCode::BackupVersionUnsupported)
        );
    }
}
