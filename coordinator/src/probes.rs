//! What the coordinator's monitoring server asks of it: the gauges read from this replica just
//! before a scrape, and its liveness and readiness checks.
//!
//! - `/livez`: `raft-driver` — the driver, which owns the Raft node and does every synced write,
//!   answers a query within [`CHECK_TIMEOUT`]: its loop and its storage are not stalled.
//! - `/readyz`: `leader` — a leader is known; `applied` — this replica has applied everything it
//!   knows committed and, asked of the leader (ReadIndex), is current; `store` — the driver still
//!   runs (a store failure stops it).
//!
//! Not here: the HTTP server (`nexus-telemetry`), and the metrics recorded where things happen.

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_telemetry::Check;

use crate::cluster::{Cluster, Consistency, NodeView};
use crate::metrics::{self, Metrics};
use crate::state::State;

/// How long one check may wait for the driver: both of readiness's fit in the server's own
/// probe timeout (2 s).
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(750);

/// The coordinator's side of the monitoring server.
#[derive(Debug, Clone)]
pub struct Probes {
    cluster: Cluster,
    metrics: Metrics,
}

impl Probes {
    pub fn new(cluster: Cluster, metrics: Metrics) -> Probes {
        Probes { cluster, metrics }
    }

    async fn view(&self) -> Result<NodeView, String> {
        match tokio::time::timeout(CHECK_TIMEOUT, self.cluster.view()).await {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(error)) => Err(error.message),
            Err(_) => Err(format!(
                "the Raft driver did not answer within {CHECK_TIMEOUT:?}: its loop or its \
                 storage is stalled"
            )),
        }
    }

    /// Whether this replica is current: it applied what it knows committed, and the leader
    /// confirms (ReadIndex) that nothing acknowledged is missing.
    async fn applied(&self, view: &NodeView) -> Check {
        if view.applied_index < view.commit_index {
            return Check::failed(
                "applied",
                format!(
                    "applied index {} is behind the commit index {}",
                    view.applied_index, view.commit_index
                ),
            );
        }
        if view.leader.is_none() {
            return Check::failed("applied", "no leader to confirm this replica is current");
        }
        let read = self.cluster.read(Consistency::Linearizable, |_| ());
        match tokio::time::timeout(CHECK_TIMEOUT, read).await {
            Ok(Ok(())) => Check::ok("applied"),
            Ok(Err(error)) => Check::failed(
                "applied",
                format!("the leader did not confirm this replica: {}", error.message),
            ),
            Err(_) => Check::failed(
                "applied",
                format!("the leader did not confirm this replica within {CHECK_TIMEOUT:?}"),
            ),
        }
    }
}

impl nexus_telemetry::http::Probes for Probes {
    async fn refresh(&self) {
        let view = self.view().await;
        if let Err(why) = &view {
            // A driver that does not answer serves nothing: say so rather than repeat the last
            // values, which alerts would read as a healthy node.
            tracing::warn!("metrics: {why}; reporting no leader");
            self.metrics.raft_has_leader.set(0.0);
            self.metrics.raft_is_leader.set(0.0);
        }
        if let Ok(view) = view {
            let flag = |yes: bool| if yes { 1.0 } else { 0.0 };
            self.metrics
                .raft_has_leader
                .set(flag(view.leader.is_some()));
            self.metrics
                .raft_is_leader
                .set(flag(view.leader == Some(view.id)));
            self.metrics.raft_term.set(view.term as f64);
            self.metrics.raft_commit_index.set(view.commit_index as f64);
            self.metrics
                .raft_applied_index
                .set(view.applied_index as f64);
        }
        self.metrics
            .raft_entry_version
            .set(f64::from(self.cluster.entry_version()));
        let counts = self.cluster.read(Consistency::Stale, fleet_counts);
        if let Ok(Ok(counts)) = tokio::time::timeout(CHECK_TIMEOUT, counts).await {
            self.metrics.hosts.replace(
                counts
                    .hosts
                    .iter()
                    .map(|(status, n)| ([*status], *n as f64)),
            );
            self.metrics.workspaces.replace(
                counts
                    .workspaces
                    .iter()
                    .map(|(state, n)| ([*state], *n as f64)),
            );
        }
    }

    async fn live(&self) -> Vec<Check> {
        vec![Check::from_failure("raft-driver", self.view().await.err())]
    }

    async fn ready(&self) -> Vec<Check> {
        let view = match self.view().await {
            Ok(view) => view,
            Err(why) => {
                return vec![
                    Check::failed("leader", "unknown: the Raft driver did not answer"),
                    Check::failed("applied", "unknown: the Raft driver did not answer"),
                    Check::failed("store", why),
                ];
            }
        };
        let leader = match view.leader {
            Some(_) => Check::ok("leader"),
            None => Check::failed(
                "leader",
                "no leader known: an election is under way, or this node is cut off from a quorum",
            ),
        };
        vec![leader, self.applied(&view).await, Check::ok("store")]
    }
}

/// Hosts by status and workspaces by state, every label present (at 0 when nothing is there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCounts {
    pub hosts: BTreeMap<&'static str, usize>,
    pub workspaces: BTreeMap<&'static str, usize>,
}

pub fn fleet_counts(state: &State) -> FleetCounts {
    let mut hosts: BTreeMap<_, _> = metrics::HOST_STATUSES
        .into_iter()
        .map(|status| (metrics::host_status(status), 0))
        .collect();
    for host in state.hosts().values() {
        *hosts.entry(metrics::host_status(host.status)).or_default() += 1;
    }
    // Kept as the state changes: a walk of a million workspaces would hold the Raft thread.
    let workspaces = state
        .workspaces_by_state()
        .map(|(state, count)| (state.as_str(), usize::try_from(count).unwrap_or(usize::MAX)))
        .collect();
    FleetCounts { hosts, workspaces }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::RequestId;
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::identity::Identity;
    use nexus_protocol::model::WorkspaceState;

    use super::*;
    use crate::state::{Command, Proposal};

    #[test]
    fn every_status_and_state_is_counted_even_at_zero() {
        let mut state = State::default();
        let proposal = Proposal {
            request_id: RequestId::from_u128(1),
            at: Timestamp::from_millis(1),
            proposer: Identity::Coordinator(nexus_protocol::NodeId::new(1).unwrap()),
            command: Command::RegisterHost(nexus_fixtures::host("h1")),
        };
        state.apply(&proposal);
        let counts = fleet_counts(&state);
        assert_eq!(
            counts.hosts,
            BTreeMap::from([("cordoned", 0), ("down", 0), ("draining", 0), ("ready", 1)])
        );
        assert_eq!(counts.workspaces.len(), WorkspaceState::ALL.len());
        assert!(counts.workspaces.values().all(|n| *n == 0));

        // Kept as workspaces come and change state, not counted at the scrape.
        let host = nexus_protocol::HostId::new("h1").unwrap();
        let owner = nexus_protocol::UserName::new("alice").unwrap();
        let a = nexus_protocol::WorkspaceName::new("a").unwrap();
        let mut apply = |n: u128, command| {
            let outcome = state.apply(&Proposal {
                request_id: RequestId::from_u128(n),
                command,
                ..proposal.clone()
            });
            assert_eq!(outcome, crate::state::Outcome::Applied);
        };
        for (n, name) in [(2, "a"), (3, "b")] {
            apply(
                n,
                Command::CreateWorkspace {
                    spec: nexus_fixtures::spec(name),
                    owner: owner.clone(),
                    host: host.clone(),
                    ports: vec![],
                },
            );
        }
        let generation = state.workspaces()[&a].generation;
        state.apply(&Proposal {
            request_id: RequestId::from_u128(4),
            command: Command::RecordObserved {
                host,
                observed: vec![nexus_protocol::message::ObservedWorkspace {
                    name: a,
                    generation,
                    state: WorkspaceState::Running,
                    ports: vec![],
                    error: None,
                }],
            },
            ..proposal.clone()
        });
        let counts = fleet_counts(&state);
        assert_eq!(
            (counts.workspaces["running"], counts.workspaces["scheduled"]),
            (1, 1)
        );
    }
}
