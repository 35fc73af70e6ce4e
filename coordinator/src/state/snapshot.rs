//! The state as snapshot bytes, and back: the protocol's codec, bounded by its largest frame.
//! The derived indexes are not in the bytes; they are rebuilt when a snapshot is read.

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::{HostId, WorkspaceName};

use super::State;

impl State {
    /// The state as snapshot bytes (the protocol's codec, bounded by the largest frame).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, String> {
        let config =
            nexus_protocol::codec::CodecConfig::new(nexus_protocol::codec::HARD_MAX_FRAME_LEN)
                .unwrap_or_default();
        nexus_protocol::codec::encode(self, config)
            .map_err(|e| format!("cannot encode the state: {e}"))
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<State, String> {
        let config =
            nexus_protocol::codec::CodecConfig::new(nexus_protocol::codec::HARD_MAX_FRAME_LEN)
                .unwrap_or_default();
        let (payload, _) = nexus_protocol::codec::split_frame(bytes, config)
            .map_err(|e| format!("corrupt state snapshot: {e}"))?
            .ok_or_else(|| "truncated state snapshot".to_string())?;
        let mut state: State = nexus_protocol::codec::decode(payload)
            .map_err(|e| format!("corrupt state snapshot: {e}"))?;
        state.on_host = state.hosts_index();
        state.host_ids = state.hosts.keys().cloned().collect();
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
