//! The state as snapshot bytes, and back: one frame of the protocol's codec (a 4-byte
//! big-endian length, then bincode). The derived indexes (workspaces by host, host ids, events by
//! request) are not in the bytes; they are rebuilt when a snapshot is read.
//!
//! The bytes are local storage (the store's `state` family, a backup's payload), never one frame
//! on a connection (Raft sends them to a peer in pieces: [`crate::peers`]), so they are bounded
//! by what the frame's 4-byte header can say, [`codec::MAX_LOCAL_FRAME_LEN`] (4 GiB - 1; RocksDB,
//! which keeps them as one value, advises at most 3 GB), not by the peers' frame limit. A state
//! past it cannot be snapshotted, which stops the node ([`SnapshotError::Encode`] is fatal)
//! rather than going on without a durable form.

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::codec::{self, CodecConfig, CodecError};
use nexus_protocol::{HostId, WorkspaceName};

use super::State;

/// The format of the snapshot bytes (the state's fields and records, in order). Raised with every
/// change to them; a backup records it, and a restore refuses a newer one. 4: the backup
/// schedule; 5: each workspace's lifecycle, the notices; 6: each workspace's worktree, the
/// credential store; 7: join tokens, known certificates, the deny list; 8: CA rotations.
pub const STATE_FORMAT: u32 = 8;

/// Why the state could not become snapshot bytes, or be read back from them. Either is fatal to
/// the Raft node that asked (its store cannot hold or restore the state).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot encode the state: {0}")]
    Encode(CodecError),
    #[error("corrupt state snapshot: {0}")]
    Corrupt(CodecError),
    #[error("truncated state snapshot")]
    Truncated,
}

/// The replicated part of a [`State`] at one moment, to encode elsewhere while the state goes
/// on ([`State::snapshot_copy`]). Not a state to apply to: its derived indexes are left out.
pub struct SnapshotCopy(State);

impl std::fmt::Debug for SnapshotCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCopy")
            .field("workspaces", &self.0.workspaces.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotCopy {
    /// The snapshot bytes of the state as it was copied: the same as [`State::to_snapshot`]
    /// then.
    pub fn to_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        self.0.to_snapshot()
    }
}

impl State {
    /// A copy of what a snapshot holds. The tables that grow with the workspaces are
    /// [`super::Map`]s, copied in constant time; the rest grow with the hosts (a few
    /// milliseconds at 20,000). The derived indexes, which are not in the bytes, are not copied.
    pub fn snapshot_copy(&self) -> SnapshotCopy {
        // Named one by one, without `..`: a new field must be placed here, or this fails to build.
        let State {
            hosts,
            workspaces,
            ports,
            foreign_ports,
            limits,
            host_limits,
            desired_versions,
            journal,
            journal_by_time,
            member_addresses,
            usage,
            events,
            backup_schedule,
            notices,
            maintenance,
            policies,
            credentials,
            security,
            ca_rotations,
            events_by_request: _,
            on_host: _,
            tally: _,
            overridden: _,
            host_ids: _,
            room: _,
            changed_hosts: _,
            roster_changed: _,
        } = self;
        SnapshotCopy(State {
            hosts: hosts.clone(),
            workspaces: workspaces.map_copy().into(),
            ports: ports.clone(),
            foreign_ports: foreign_ports.clone(),
            limits: *limits,
            host_limits: host_limits.clone(),
            desired_versions: desired_versions.clone(),
            journal: journal.clone(),
            journal_by_time: journal_by_time.clone(),
            member_addresses: member_addresses.clone(),
            usage: usage.clone(),
            events: events.clone(),
            backup_schedule: *backup_schedule,
            notices: notices.clone(),
            maintenance: maintenance.clone(),
            policies: policies.clone(),
            credentials: credentials.clone(),
            security: security.clone(),
            ca_rotations: ca_rotations.clone(),
            ..State::default()
        })
    }

    /// The state as snapshot bytes (one local frame of the protocol's codec).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        codec::encode(self, CodecConfig::local()).map_err(SnapshotError::Encode)
    }

    /// The state from snapshot bytes, with its derived indexes rebuilt.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        let (payload, _) = codec::split_frame(bytes, CodecConfig::local())
            .map_err(SnapshotError::Corrupt)?
            .ok_or(SnapshotError::Truncated)?;
        let mut state: State = codec::decode(payload).map_err(SnapshotError::Corrupt)?;
        state.on_host = state.hosts_index();
        state.tally = state.tally_index();
        state.overridden = state.overrides_index();
        state.host_ids = state.hosts.keys().cloned().collect();
        state.room = state.room_index();
        state.events_by_request = state.requests_index();
        Ok(state)
    }

    /// The `on_host` index, from the workspaces.
    pub(super) fn hosts_index(&self) -> BTreeMap<HostId, BTreeSet<WorkspaceName>> {
        let mut index: BTreeMap<HostId, BTreeSet<WorkspaceName>> = BTreeMap::new();
        for (name, workspace) in &self.workspaces {
            index
                .entry(workspace.host.clone())
                .or_default()
                .insert(name.clone());
        }
        index
    }
}
