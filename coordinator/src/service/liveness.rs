//! Heartbeats as the leader holds them (soft state, never in the Raft log), and the failure
//! detector's loop over them: it sleeps, reads the hosts, asks [`crate::detector`] whom to mark
//! down and proposes the markings. The decision itself is not here.

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_protocol::HostId;
use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::model::{ContainerStats, HostStats, HostStatus};

use super::Service;
use crate::detector::{self, Decision, Memory, Policy};
use crate::state::Command;

/// A host's latest heartbeat, as this coordinator received it.
#[derive(Debug, Clone)]
pub(super) struct Liveness {
    pub(super) at: Timestamp,
    pub(super) stats: Option<HostStats>,
    /// The latest sample of each workspace container on the host.
    pub(super) containers: Vec<ContainerStats>,
    /// The roster's number when a heartbeat last read the host in the fleet and not down (or
    /// returned it): while the number stays, the next heartbeat need not read again.
    pub(super) roster: Option<u64>,
}

impl Service {
    /// The failure detector, for as long as the process runs: on the leader, it looks at the
    /// fleet every [`Policy::period`] and marks down through Raft the hosts that
    /// [`detector::decide`] names (the rules are there), all at once. While most of the fleet is
    /// silent it holds off instead, and says so at most every 30 s.
    pub async fn detect_failures(&self) {
        // What the detector remembers while this node leads; none while it does not.
        let mut leading: Option<Memory> = None;
        let mut held_off_said: Option<std::time::Instant> = None;
        // The roster as last read, at the roster's number then: read again only when it moved.
        let mut roster: Option<(u64, BTreeMap<HostId, HostStatus>)> = None;
        loop {
            // Read at each look: a reload may change the TTL.
            let policy = Policy {
                ttl: self.host_ttl(),
            };
            tokio::time::sleep(policy.period()).await;
            if self.cluster.require_leader().await.is_err() {
                if leading.take().is_some() {
                    self.cluster.metrics().hosts_unheard.set(0.0);
                }
                continue;
            }
            let now = clock::now();
            let memory = leading.get_or_insert_with(|| Memory::new(now));
            let number = self.cluster.roster();
            if roster
                .as_ref()
                .is_none_or(|(read_at, _)| *read_at != number)
            {
                // Published by the driver: no wait behind a busy round.
                let hosts: BTreeMap<HostId, HostStatus> = self
                    .cluster
                    .roster_hosts()
                    .iter()
                    .map(|(id, h)| (id.clone(), h.status))
                    .collect();
                // A host removed from the fleet (through any coordinator) leaves no soft state
                // here.
                self.liveness().retain(|host, _| hosts.contains_key(host));
                crate::locks::lock(&self.endpoints).retain(|host, _| hosts.contains_key(host));
                roster = Some((number, hosts));
            }
            let Some((_, hosts)) = &roster else { continue };
            let decision = {
                let liveness = self.liveness();
                let last_heard = |host: &HostId| liveness.get(host).map(|l| l.at);
                let decision = detector::decide(now, hosts, last_heard, memory, &policy);
                memory.observe(now, hosts, last_heard, &policy);
                decision
            };
            let unheard = memory.unheard();
            self.cluster.metrics().hosts_unheard.set(unheard as f64);
            let silent = match decision {
                Decision::MarkDown(silent) => silent,
                Decision::HoldOff {
                    silent,
                    recently_down,
                    fleet,
                } => {
                    if held_off_said.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!(
                            silent,
                            down = recently_down,
                            hosts = fleet,
                            "most of the fleet is silent at once: not marking hosts down, since the \
                             fault is more likely here (an overloaded leader, a partition) than on \
                             all of them"
                        );
                        held_off_said = Some(std::time::Instant::now());
                    }
                    continue;
                }
            };
            // All at once: Raft batches them, so a thousand hosts lost together (a rack, a
            // zone) are marked down in one or two appends, not one after another.
            let marking = silent.into_iter().map(|host| async move {
                tracing::warn!(%host, ttl = ?policy.ttl, "no heartbeat within the TTL; marking the host down");
                let proposal = self.propose_own(Command::SetHostStatus {
                            host: host.clone(),
                            status: HostStatus::Down,
                        })
                    .await;
                match proposal {
                    Ok(()) => {
                        self.cluster.metrics().hosts_marked_down.inc();
                        Some(host)
                    }
                    Err(error) => {
                        tracing::warn!(%host, code = %error.code, "cannot mark the host down: {}", error.message);
                        None
                    }
                }
            });
            let marked: Vec<Option<HostId>> = futures_util::future::join_all(marking).await;
            memory.marked_down(now, marked.into_iter().flatten());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use nexus_protocol::HostId;
    use nexus_protocol::message::{AgentRequest, Request};
    use nexus_protocol::model::HostStatus;

    use crate::cluster::Consistency;
    use crate::service::Service;
    use crate::service::testing::{agent, ask, leading, one_node, register};

    #[tokio::test]
    async fn a_host_that_registers_late_gets_a_full_ttl_before_it_is_marked_down() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let service = Arc::new(service.with_host_ttl(Duration::from_millis(400)));
        let detector = tokio::spawn({
            let service = service.clone();
            async move { service.detect_failures().await }
        });
        // Long past the grace of the election: the next host to register has no heartbeat yet.
        tokio::time::sleep(Duration::from_millis(700)).await;
        register(&service, "h1").await;
        let status = |service: Arc<Service>| async move {
            service
                .cluster
                .read(Consistency::Linearizable, |state| {
                    state.hosts()[&HostId::new("h1").unwrap()].status
                })
                .await
                .unwrap()
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(status(service.clone()).await, HostStatus::Ready);
        // Still silent a TTL later: down.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(status(service.clone()).await, HostStatus::Down);
        detector.abort();
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn most_of_a_fleet_silent_at_once_is_not_marked_down_and_a_few_are() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let ttl = Duration::from_millis(400);
        let service = Arc::new(service.with_host_ttl(ttl));
        let hosts: Vec<String> = (0..14).map(|i| format!("h{i}")).collect();
        for host in &hosts {
            register(&service, host).await;
        }
        // Hosts 0 and 1 heartbeat throughout; the other twelve are silent at first.
        let beating = |from: usize, to: usize| {
            let (service, hosts) = (service.clone(), hosts.clone());
            tokio::spawn(async move {
                loop {
                    for host in &hosts[from..to] {
                        let heartbeat = AgentRequest::Heartbeat {
                            sequence: 1,
                            stats: None,
                        };
                        let _ = ask(&service, &agent(host), Request::Agent(heartbeat)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let few = beating(0, 2);
        let detector = tokio::spawn({
            let service = service.clone();
            async move { service.detect_failures().await }
        });
        let downs = |service: Arc<Service>| async move {
            service
                .cluster
                .read(Consistency::Linearizable, |state| {
                    state
                        .hosts()
                        .values()
                        .filter(|h| h.status == HostStatus::Down)
                        .count()
                })
                .await
                .unwrap()
        };
        // Well past the grace of the election (two TTLs) and a TTL of silence: 12 of 14 silent
        // is a mass silence, so nobody is marked down.
        tokio::time::sleep(ttl * 5).await;
        assert_eq!(downs(service.clone()).await, 0);
        // Most hosts speak again; the three still silent are a minority, and are marked down.
        let most = beating(2, 11);
        tokio::time::sleep(ttl * 4).await;
        assert_eq!(downs(service.clone()).await, 3);
        // Two TTLs on, those three are old news: when nine more fall silent, the three do not
        // count towards a mass silence (hosts down for good would otherwise hold off every
        // later marking), and the nine are marked down.
        tokio::time::sleep(ttl * 2).await;
        most.abort();
        tokio::time::sleep(ttl * 4).await;
        assert_eq!(downs(service.clone()).await, 12);
        for task in [few, detector] {
            task.abort();
        }
        node.stop().await.unwrap();
    }
}
