//! The signals that wake desired-state watches: one per watched host, raised as entries that
//! change it apply; those that wake workspace watches, one per host of a watched workspace,
//! raised when any of its workspaces changed; and the roster: its number and the hosts as last
//! applied.

use std::collections::HashMap;

use nexus_protocol::HostId;
use tokio::sync::watch;

use crate::locks::{lock, read, write};
use crate::state::{HostRecord, Map, Workspaces};

/// One signal per host with a desired-state watch, raised when that host's desired state
/// changes: an applied entry wakes only the watches it concerns, not every agent's.
#[derive(Debug, Default)]
pub struct HostSignals {
    signals: std::sync::Mutex<HashMap<nexus_protocol::HostId, watch::Sender<()>>>,
    /// Moves on whenever the roster (which hosts are in the fleet, which are down) may have
    /// changed on this replica; never goes back, not even over a snapshot or a restore.
    roster: std::sync::atomic::AtomicU64,
    /// The hosts as this replica last applied them, published by the driver after each round
    /// that changed them (a copy shared with the state until either changes): what a heartbeat,
    /// a registration or the failure detector reads without waiting on the driver's thread.
    roster_hosts: std::sync::RwLock<Map<HostId, HostRecord>>,
    /// One signal per host whose workspaces someone watches (`WorkspaceRequest::Watch`), with
    /// the host's epoch in the workspaces' table when it was last raised.
    workspaces: std::sync::Mutex<HashMap<HostId, Watched>>,
}

/// A host whose workspaces are watched.
#[derive(Debug)]
struct Watched {
    signal: watch::Sender<()>,
    /// The table's epoch of the host when the signal was last raised (`None`: not yet).
    epoch: Option<u64>,
}

impl HostSignals {
    /// The roster's number now: equal numbers mean an unchanged roster between the two looks.
    pub fn roster(&self) -> u64 {
        self.roster.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The hosts as of the roster's number read before (or newer): read the number first.
    pub fn roster_hosts(&self) -> Map<HostId, HostRecord> {
        read(&self.roster_hosts).clone()
    }

    /// Publishes `hosts` if they are not the ones published (a host's facts change without
    /// moving the roster, and a registration compares with them), then moves the number if the
    /// roster `moved`: whoever reads the number and then the hosts gets hosts at least as new as
    /// the number.
    pub(super) fn publish(&self, hosts: &Map<HostId, HostRecord>, moved: bool) {
        // Shared with the state until either changes: the same table costs a pointer compare.
        let unchanged = read(&self.roster_hosts).ptr_eq(hosts);
        if !unchanged {
            let old = std::mem::replace(&mut *write(&self.roster_hosts), hosts.clone());
            // Dropped outside the lock: the last copy of a table may be large to free.
            drop(old);
        }
        if moved {
            self.roster
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// A signal that changes whenever `host`'s desired state may have.
    pub fn subscribe(&self, host: &nexus_protocol::HostId) -> watch::Receiver<()> {
        lock(&self.signals)
            .entry(host.clone())
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe()
    }

    /// A signal that changes whenever one of `host`'s workspaces may have (and once soon after
    /// it is first asked for).
    pub fn subscribe_workspaces(&self, host: &HostId) -> watch::Receiver<()> {
        lock(&self.workspaces)
            .entry(host.clone())
            .or_insert_with(|| Watched {
                signal: watch::Sender::new(()),
                epoch: None,
            })
            .signal
            .subscribe()
    }

    /// Raises the signal of each watched host whose workspaces changed in `table` since it was
    /// last raised (their epoch moved), and drops those nobody waits on any more: the cost is
    /// the watched hosts', nothing when none is.
    pub(super) fn raise_workspaces(&self, table: &Workspaces) {
        let mut watched = lock(&self.workspaces);
        watched.retain(|host, watched| {
            let epoch = table.epoch(host);
            if watched.epoch == Some(epoch) {
                return watched.signal.receiver_count() > 0;
            }
            watched.epoch = Some(epoch);
            watched.signal.send(()).is_ok()
        });
    }

    /// Raises the signals of the hosts that changed. A signal nobody waits on any more (its
    /// host's watch ended) is dropped when it would be raised: the cost stays with the hosts
    /// that changed, not the fleet.
    pub(super) fn raise(&self, changed: crate::state::ChangedHosts) {
        let mut signals = lock(&self.signals);
        match changed {
            crate::state::ChangedHosts::All => {
                signals.retain(|_, signal| signal.send(()).is_ok());
            }
            crate::state::ChangedHosts::Some(hosts) => {
                for host in hosts {
                    if let Some(signal) = signals.get(&host)
                        && signal.send(()).is_err()
                    {
                        signals.remove(&host);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_record;

    /// A watched host's signal is raised once after it is first asked for, then only when one of
    /// its own workspaces changed; a signal nobody waits on is dropped at the next raise.
    #[test]
    fn a_watched_hosts_signal_is_raised_only_when_its_workspaces_change() {
        let signals = HostSignals::default();
        let mut table = Workspaces::default();
        table.insert("w1".parse().unwrap(), test_record("h1"));
        table.insert("w2".parse().unwrap(), test_record("h2"));
        let mut h1 = signals.subscribe_workspaces(&"h1".parse().unwrap());
        signals.raise_workspaces(&table);
        assert!(h1.has_changed().unwrap(), "not raised after subscribing");
        h1.borrow_and_update();
        signals.raise_workspaces(&table);
        assert!(!h1.has_changed().unwrap(), "raised with nothing changed");
        table.get_mut(&"w2".parse().unwrap()).unwrap().generation += 1;
        signals.raise_workspaces(&table);
        assert!(
            !h1.has_changed().unwrap(),
            "raised for another host's change"
        );
        table.get_mut(&"w1".parse().unwrap()).unwrap().generation += 1;
        signals.raise_workspaces(&table);
        assert!(h1.has_changed().unwrap(), "not raised for its own change");
        drop(h1);
        signals.raise_workspaces(&table);
        assert!(
            lock(&signals.workspaces).is_empty(),
            "kept with no one waiting"
        );
    }
}
