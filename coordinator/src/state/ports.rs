//! The port table: which host ports are allocated to which workspace (none twice), which were
//! found held by something else (skipped for a while), and moving a workspace off a port that
//! turned out to be taken.
//!
//! Not here: the ports a create is given (the scheduler's lowest free ones, checked by
//! `State::create`).

use std::collections::BTreeMap;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::EventKind;
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::{HostId, WorkspaceName};

use super::{Map, State};

/// How long a port found held by something else on a host (a `PORT_CONFLICT`) is skipped when
/// ports are handed out there. Such holders come and go, so the memory fades.
pub const FOREIGN_PORT_MEMORY_MS: u64 = 3600 * 1000;

impl State {
    pub fn ports(&self) -> &Map<(HostId, u16), WorkspaceName> {
        &self.ports
    }

    /// The ports found held by something else, and when.
    pub fn foreign_ports(&self) -> &BTreeMap<(HostId, u16), Timestamp> {
        &self.foreign_ports
    }

    /// Whether `port` on `host` may be handed out at `now`: not allocated, and not found held by
    /// something else within [`FOREIGN_PORT_MEMORY_MS`].
    pub fn port_free(&self, host: &HostId, port: u16, now: Timestamp) -> bool {
        let key = (host.clone(), port);
        !self.ports.contains_key(&key)
            && self.foreign_ports.get(&key).is_none_or(|seen| {
                now.as_millis() >= seen.as_millis().saturating_add(FOREIGN_PORT_MEMORY_MS)
            })
    }

    /// How many host ports of `host`'s range may be handed out at `now`: not allocated, and not
    /// found held by something else within [`FOREIGN_PORT_MEMORY_MS`].
    pub fn free_ports_on(&self, host: &HostId, now: Timestamp) -> u32 {
        let Some(record) = self.hosts.get(host) else {
            return 0;
        };
        let span = (host.clone(), 0)..=(host.clone(), u16::MAX);
        let allocated = self
            .ports
            .range(span.clone())
            .filter(|((_, port), _)| record.info.port_range.contains(*port))
            .count();
        // Held by something else, as an agent found, and not allocated to a workspace.
        let foreign = self
            .foreign_ports
            .range(span)
            .filter(|(key, _)| {
                record.info.port_range.contains(key.1)
                    && !self.ports.contains_key(*key)
                    && !self.port_free(host, key.1, now)
            })
            .count();
        let used = allocated + foreign;
        record
            .info
            .port_range
            .len()
            .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
    }

    /// `port` on `host` is held by something else: remember that, and give `name` another port,
    /// as a new generation, once. No free port, or a second conflict: it stays failed.
    pub(super) fn reassign_port(
        &mut self,
        at: Timestamp,
        host: &HostId,
        name: &WorkspaceName,
        port: u16,
    ) {
        self.foreign_ports
            .retain(|_, seen| at.as_millis() < seen.as_millis() + FOREIGN_PORT_MEMORY_MS);
        self.foreign_ports.insert((host.clone(), port), at);
        let Some(workspace) = self.workspaces.get(name) else {
            return;
        };
        let bound = workspace.ports.iter().any(|b| b.host == port);
        if workspace.port_reassigned || workspace.desired != DesiredRun::Running || !bound {
            return;
        }
        let Some(range) = self.hosts.get(host).map(|h| h.info.port_range) else {
            return;
        };
        let Some(new_port) =
            (range.first..=range.last).find(|&candidate| self.port_free(host, candidate, at))
        else {
            return;
        };
        self.ports.remove(&(host.clone(), port));
        self.ports.insert((host.clone(), new_port), name.clone());
        if let Some(workspace) = self.workspaces.get_mut(name) {
            for binding in &mut workspace.ports {
                if binding.host == port {
                    binding.host = new_port;
                }
            }
            workspace.generation += 1;
            let from = workspace.state;
            workspace.state = WorkspaceState::Scheduled;
            self.tally.moved(host, Some(from), Some(workspace.state));
            workspace.port_reassigned = true;
            workspace.updated_at = at;
        }
        self.bump(host);
        let why =
            format!("port {port} on host {host} is held by something else; given port {new_port}");
        let kind = EventKind::PortsReassigned;
        self.record_reported(name, at, kind, Some(why), None);
    }
}
