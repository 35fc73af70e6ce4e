//! The invariants no sequence of proposals may break, checked by the tests after every apply.
//! A broken one is a bug in `apply`, never a user's mistake, so nothing in production asks.

use std::collections::BTreeMap;

use nexus_protocol::{HostId, WorkspaceName};

use super::{EVENTS_KEPT, State, Usage};

/// The first invariant found broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenInvariant {
    #[error("{workspace} is on unknown host {host}")]
    UnknownHost {
        workspace: WorkspaceName,
        host: HostId,
    },
    #[error("{workspace}'s port {port} is not allocated to it")]
    PortNotAllocated { workspace: WorkspaceName, port: u16 },
    #[error("{allocated} ports allocated, {bound} bound")]
    PortCount { allocated: usize, bound: usize },
    #[error("the journal's two indexes disagree")]
    JournalIndexes,
    #[error("the usage index {kept:?} is not the workspaces' {counted:?}")]
    UsageIndex {
        kept: BTreeMap<HostId, Usage>,
        counted: BTreeMap<HostId, Usage>,
    },
    #[error("the list of host ids is not the hosts'")]
    HostIds,
    #[error("the index of workspaces by host is not the workspaces'")]
    HostIndex,
    #[error("the tally (in flight per host, workspaces by state) does not count the workspaces")]
    Tally,
    #[error("the index of workspaces with a policy override is not the workspaces'")]
    OverrideIndex,
    #[error("the index of hosts with room is not the hosts'")]
    RoomIndex,
    #[error("{workspace} has events but is not a workspace")]
    EventsOfUnknown { workspace: WorkspaceName },
    #[error("{workspace} keeps {kept} events, more than {EVENTS_KEPT}")]
    EventsUnbounded {
        workspace: WorkspaceName,
        kept: usize,
    },
    #[error("{workspace}'s events are not numbered in increasing order up to its last")]
    EventsOutOfOrder { workspace: WorkspaceName },
    #[error("the index of events by request is not the events'")]
    RequestIndex,
}

impl State {
    /// The invariants no sequence of proposals may break: every workspace is on a known host, every
    /// bound port is allocated to it alone, events belong to workspaces, are bounded and numbered
    /// in order, and the indexes agree. Returns the first one broken.
    ///
    /// Two rules hold at creation rather than forever, and are checked there: a host's workspace
    /// count within its limit (lowering a limit evicts nothing), and ports inside the host's range
    /// (a host that re-registers with a narrower range keeps the ports its containers hold).
    pub fn check_invariants(&self) -> Result<(), BrokenInvariant> {
        let mut bindings = 0;
        for (name, workspace) in &self.workspaces {
            if !self.hosts.contains_key(&workspace.host) {
                return Err(BrokenInvariant::UnknownHost {
                    workspace: name.clone(),
                    host: workspace.host.clone(),
                });
            }
            for binding in &workspace.ports {
                bindings += 1;
                if self.ports.get(&(workspace.host.clone(), binding.host)) != Some(name) {
                    return Err(BrokenInvariant::PortNotAllocated {
                        workspace: name.clone(),
                        port: binding.host,
                    });
                }
            }
        }
        if bindings != self.ports.len() {
            return Err(BrokenInvariant::PortCount {
                allocated: self.ports.len(),
                bound: bindings,
            });
        }
        if self.journal.len() != self.journal_by_time.len() {
            return Err(BrokenInvariant::JournalIndexes);
        }
        let mut usage: BTreeMap<HostId, Usage> = BTreeMap::new();
        for workspace in self.workspaces.values() {
            usage
                .entry(workspace.host.clone())
                .or_default()
                .add(workspace.spec.class);
        }
        if usage != self.usage {
            return Err(BrokenInvariant::UsageIndex {
                kept: self.usage.clone(),
                counted: usage,
            });
        }
        if !self.host_ids.iter().eq(self.hosts.keys()) {
            return Err(BrokenInvariant::HostIds);
        }
        if self.hosts_index() != self.on_host {
            return Err(BrokenInvariant::HostIndex);
        }
        if self.tally_index() != self.tally {
            return Err(BrokenInvariant::Tally);
        }
        if self.overrides_index() != self.overridden {
            return Err(BrokenInvariant::OverrideIndex);
        }
        if self.room_index() != self.room {
            return Err(BrokenInvariant::RoomIndex);
        }
        self.check_events()
    }

    fn check_events(&self) -> Result<(), BrokenInvariant> {
        for (name, history) in &self.events {
            let workspace = name.clone();
            if !self.workspaces.contains_key(name) {
                return Err(BrokenInvariant::EventsOfUnknown { workspace });
            }
            let kept = history.len();
            if kept > EVENTS_KEPT {
                return Err(BrokenInvariant::EventsUnbounded { workspace, kept });
            }
            let seqs: Vec<u64> = history.seqs().collect();
            let increasing = seqs.windows(2).all(|pair| pair[0] < pair[1]);
            if !increasing || seqs.last().is_some_and(|&last| last != history.last_seq()) {
                return Err(BrokenInvariant::EventsOutOfOrder { workspace });
            }
        }
        if self.requests_index() != self.events_by_request {
            return Err(BrokenInvariant::RequestIndex);
        }
        Ok(())
    }
}
