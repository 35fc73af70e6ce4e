//! The failover scenario's peer: three etcd members (Debian's `etcd-server`, its default election
//! settings) under the same steady stream as Nexus's, each write a key of its own through etcd's
//! JSON gateway; the same SIGKILL of the leader (found through the members' own status), the same
//! measure (kill → the next acknowledged write) and the same end check (no acknowledged write
//! missing at the leader, nor on any member once caught up).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nexus_tests::etcd::{self, EtcdCluster, PutOutcome};

use super::{Acked, Measured, WriteStream};
use crate::measure::Percentiles;

/// Where the stream's keys live.
const PREFIX: &str = "/bench/";

/// Three etcd members, their stream of writes, and the kills' samples so far.
pub(super) struct EtcdSide {
    cluster: EtcdCluster,
    stream: WriteStream,
    samples: Vec<Duration>,
    elections: Vec<u64>,
    version: String,
}

impl EtcdSide {
    pub(super) async fn start(rate: f64, writers: usize) -> EtcdSide {
        let cluster = EtcdCluster::start(3).await;
        let (_, status) = cluster.leader(Duration::from_secs(30)).await;
        let clients: Vec<SocketAddr> = cluster.members.iter().map(|m| m.client).collect();
        let writer = Arc::new(EtcdWriter {
            target: AtomicUsize::new(0),
            silent_until: clients.iter().map(|_| Default::default()).collect(),
            clients,
            epoch: Instant::now(),
        });
        let stream = WriteStream::start(rate, writers, move |n| {
            let writer = writer.clone();
            async move { Some(writer.write(format!("{PREFIX}w-{n:07}")).await) }
        });
        EtcdSide {
            cluster,
            stream,
            samples: Vec::new(),
            elections: Vec::new(),
            version: status.version,
        }
    }

    pub(super) async fn round(&mut self, round: usize) {
        let (victim, leader) = self.cluster.leader(Duration::from_secs(30)).await;
        // Every member following that leader, and a second of the steady stream before the kill.
        self.cluster.wait_healthy(Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cluster = &mut self.cluster;
        let took = self.stream.time_a_kill(|| cluster.kill(victim)).await;
        self.samples.push(took);
        let (new_index, new_leader) = self.cluster.leader(Duration::from_secs(30)).await;
        let terms = new_leader.raft_term.saturating_sub(leader.raft_term);
        self.elections.push(terms);
        println!(
            "round {round}: etcd leader {} killed, writes again after {:.0} ms (new leader {}, term +{terms})",
            self.cluster.members[victim].name,
            took.as_secs_f64() * 1000.0,
            self.cluster.members[new_index].name,
        );
        self.cluster.restart(victim).await;
    }

    pub(super) async fn finish(self) -> Measured {
        let (stream, acked) = self.stream.stop().await;
        let (at_leader, on_members) = missing_writes(&self.cluster, &acked).await;
        Measured {
            peer: format!("etcd {}", self.version),
            kill_to_first_write: Percentiles::of(self.samples),
            terms_per_failover_max: self.elections.iter().max().copied(),
            stream,
            acknowledged_missing_at_leader: at_leader,
            acknowledged_missing_on_members: on_members,
        }
    }
}

/// Counts the acknowledged writes that are missing, none of which may be: at the leader (a
/// linearizable range), and on each member (a serializable range: its own store) once it has
/// caught up, or after 30 s of trying.
async fn missing_writes(cluster: &EtcdCluster, acked: &[Acked]) -> (usize, Vec<usize>) {
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let (leader, _) = cluster.leader(Duration::from_secs(30)).await;
    let missing_of = |keys: &[String]| {
        let present: HashSet<&str> = keys.iter().map(String::as_str).collect();
        acked
            .iter()
            .filter(|a| !present.contains(a.key.as_str()))
            .count()
    };
    let at_leader = missing_of(
        &etcd::keys(cluster.members[leader].client, PREFIX, false)
            .await
            .unwrap_or_else(|| panic!("etcd's leader listed no keys: {}", cluster.log(leader))),
    );
    let mut on_members = Vec::new();
    for member in &cluster.members {
        let started = Instant::now();
        let missing = loop {
            let keys = etcd::keys(member.client, PREFIX, true)
                .await
                .unwrap_or_default();
            let missing = missing_of(&keys);
            if missing == 0 || started.elapsed() > Duration::from_secs(30) {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        on_members.push(missing);
    }
    (at_leader, on_members)
}

/// The peer's client, as [`super::FailoverWriter`] is Nexus's: one write at a time until
/// acknowledged, sent to the member that last answered; on a refusal or silence it moves on to
/// the next member, passing over for a while one that did not answer at all. Any member takes a
/// put (a follower forwards it to its leader), so there is no leader's address to follow.
struct EtcdWriter {
    clients: Vec<SocketAddr>,
    target: AtomicUsize,
    /// Per member: until when (ms after `epoch`) it is passed over.
    silent_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl EtcdWriter {
    async fn write(&self, key: String) -> Acked {
        let first = Instant::now();
        loop {
            let index = self.target.load(Ordering::Relaxed);
            let sent = Instant::now();
            // 500 ms per attempt, as Nexus's writer gives each.
            let outcome = etcd::put(self.clients[index], &key, Duration::from_millis(500)).await;
            if outcome == PutOutcome::Acknowledged {
                let acked = Instant::now();
                return Acked {
                    key,
                    sent,
                    acked,
                    latency: acked - first,
                };
            }
            let now = self.epoch.elapsed().as_millis() as u64;
            if outcome == PutOutcome::Silent {
                self.silent_until[index].store(now + 2_000, Ordering::Relaxed);
            }
            let members = self.clients.len();
            let next = (1..=members)
                .map(|step| (index + step) % members)
                .find(|m| self.silent_until[*m].load(Ordering::Relaxed) <= now)
                .unwrap_or((index + 1) % members);
            let _ = self
                .target
                .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
            // A quick refusal (no leader yet) waits a little rather than spin on the two cores
            // the election needs.
            if sent.elapsed() < Duration::from_millis(10) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                first.elapsed() < Duration::from_secs(60),
                "a write of {key} was not acknowledged within 60 s"
            );
        }
    }
}
