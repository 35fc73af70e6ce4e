//! The signals that wake desired-state watches: one per watched host, raised as entries that
//! change it apply, and the roster's number.

use std::collections::HashMap;

use tokio::sync::watch;

use crate::locks::lock;

/// One signal per host with a desired-state watch, raised when that host's desired state
/// changes: an applied entry wakes only the watches it concerns, not every agent's.
#[derive(Debug, Default)]
pub struct HostSignals {
    signals: std::sync::Mutex<HashMap<nexus_protocol::HostId, watch::Sender<()>>>,
    /// Moves on whenever the roster (which hosts are in the fleet, which are down) may have
    /// changed on this replica; never goes back, not even over a snapshot or a restore.
    roster: std::sync::atomic::AtomicU64,
}

impl HostSignals {
    /// The roster's number now: equal numbers mean an unchanged roster between the two looks.
    pub fn roster(&self) -> u64 {
        self.roster.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn roster_changed(&self) {
        self.roster
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// A signal that changes whenever `host`'s desired state may have.
    pub fn subscribe(&self, host: &nexus_protocol::HostId) -> watch::Receiver<()> {
        lock(&self.signals)
            .entry(host.clone())
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe()
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
