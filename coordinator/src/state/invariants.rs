//! The invariants no sequence of proposals may break, checked by the tests after every apply.

use std::collections::BTreeMap;

use nexus_protocol::HostId;

use super::{State, Usage};

impl State {
    /// The invariants no sequence of proposals may break: every workspace is on a known host, every
    /// bound port is allocated to it alone, and the indexes agree. Returns the first one broken.
    ///
    /// Two rules hold at creation rather than forever, and are checked there: a host's workspace
    /// count within its limit (lowering a limit evicts nothing), and ports inside the host's range
    /// (a host that re-registers with a narrower range keeps the ports its containers hold).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut bindings = 0;
        for (name, workspace) in &self.workspaces {
            if !self.hosts.contains_key(&workspace.host) {
                return Err(format!("{name} is on unknown host {}", workspace.host));
            }
            for binding in &workspace.ports {
                bindings += 1;
                if self.ports.get(&(workspace.host.clone(), binding.host)) != Some(name) {
                    return Err(format!(
                        "{name}'s port {} is not allocated to it",
                        binding.host
                    ));
                }
            }
        }
        if bindings != self.ports.len() {
            return Err(format!(
                "{} ports allocated, {bindings} bound",
                self.ports.len()
            ));
        }
        if self.journal.len() != self.journal_by_time.len() {
            return Err("the journal's two indexes disagree".into());
        }
        let mut usage: BTreeMap<HostId, Usage> = BTreeMap::new();
        for workspace in self.workspaces.values() {
            usage
                .entry(workspace.host.clone())
                .or_default()
                .add(workspace.spec.class);
        }
        if usage != self.usage {
            return Err(format!(
                "the usage index {:?} is not the workspaces' {usage:?}",
                self.usage
            ));
        }
        if !self.host_ids.iter().eq(self.hosts.keys()) {
            return Err("the list of host ids is not the hosts'".into());
        }
        if self.hosts_index() != self.on_host {
            return Err("the index of workspaces by host is not the workspaces'".into());
        }
        Ok(())
    }
}
