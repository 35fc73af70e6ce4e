//! Each host's desired state: what it should run (every workspace placed on it), at a version
//! bumped whenever that changes, and the note of which hosts changed since the driver last
//! looked, so that only those hosts' watches wake.

use std::collections::BTreeSet;

use nexus_protocol::HostId;
use nexus_protocol::message::{Assignment, DesiredRun, DesiredState};
use nexus_protocol::model::WorkspaceState;

use super::State;

/// Hosts whose desired state changed: a set, or (after a restore, or too many to list) all.
#[derive(Debug, Clone)]
pub enum ChangedHosts {
    Some(BTreeSet<HostId>),
    All,
}

/// More changed hosts than this between two looks are reported as all of them, so a state
/// nobody drains (a test's, a simulation's) stays small.
const MAX_CHANGED_HOSTS: usize = 65_536;

impl Default for ChangedHosts {
    /// A state just made or restored: nothing is known about what changed.
    fn default() -> ChangedHosts {
        ChangedHosts::All
    }
}

impl PartialEq for ChangedHosts {
    fn eq(&self, _: &ChangedHosts) -> bool {
        true
    }
}

impl ChangedHosts {
    fn note(&mut self, host: &HostId) {
        if let ChangedHosts::Some(hosts) = self {
            hosts.insert(host.clone());
            if hosts.len() > MAX_CHANGED_HOSTS {
                *self = ChangedHosts::All;
            }
        }
    }
}

impl State {
    pub fn desired_version(&self, host: &HostId) -> u64 {
        self.desired_versions.get(host).copied().unwrap_or(0)
    }

    /// What `host` should run: every workspace placed on it, at the host's desired-state version.
    /// A workspace being destroyed is said `Absent` until its agent reports it gone.
    pub fn desired_for(&self, host: &HostId) -> DesiredState {
        let assignments = self
            .on_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|name| self.workspaces.get(name))
            .map(|w| Assignment {
                spec: w.spec.clone(),
                owner: w.owner.clone(),
                generation: w.generation,
                run: if w.state == WorkspaceState::Destroying {
                    DesiredRun::Absent
                } else {
                    w.desired
                },
                ports: w.ports.clone(),
            })
            .collect();
        DesiredState {
            version: self.desired_version(host),
            assignments,
        }
    }

    /// The hosts whose desired state changed since the last call (all of them, the first time).
    pub fn take_changed_hosts(&mut self) -> ChangedHosts {
        std::mem::replace(&mut self.changed_hosts, ChangedHosts::Some(BTreeSet::new()))
    }

    /// What `host` should run changed: a new desired-state version, and a note for its watch.
    pub(super) fn bump(&mut self, host: &HostId) {
        *self.desired_versions.entry(host.clone()).or_insert(0) += 1;
        self.changed_hosts.note(host);
    }
}
