//! The `raft` scenario: three coordinators on synced RocksDB; the latency of one write at a time
//! (at the leader, and forwarded by a follower) and the throughput of many in flight.

use std::time::{Duration, Instant};

use nexus_protocol::RequestId;
use nexus_protocol::transport::Connection;
use nexus_tests::cluster::TestCluster;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::connect;
use serde::Serialize;

use crate::measure::{Percentiles, Usage, concurrently};
use crate::setup::register_once;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 1_000)]
    pub(crate) writes: usize,
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
}

/// What the `raft` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) sequential_write_at_leader: Percentiles,
    pub(crate) sequential_write_at_follower: Percentiles,
    pub(crate) sequential_writes_per_second: f64,
    pub(crate) concurrent: Concurrent,
    /// Each running coordinator's resident memory at the end.
    pub(crate) coordinator_rss_mib: Vec<f64>,
}

/// Writes with many in flight at the leader.
#[derive(Debug, Serialize)]
pub(crate) struct Concurrent {
    pub(crate) in_flight: usize,
    pub(crate) writes: usize,
    pub(crate) seconds: f64,
    pub(crate) writes_per_second: f64,
}

pub(crate) async fn run(args: Args) -> Report {
    let (writes, concurrency) = (args.writes.max(1), args.concurrency.max(1));
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster.leader(&pki, Duration::from_secs(20)).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    let follower_address = cluster
        .members
        .iter()
        .find(|m| m.id != leader.node.get())
        .unwrap()
        .address;
    let agent = pki::agent("bench-host");
    let at_leader = connect(&pki, &agent, leader_address).await.unwrap();
    let at_follower = connect(&pki, &agent, follower_address).await.unwrap();
    let limit = Duration::from_secs(10);
    let sequential = |connection: &Connection| {
        let connection = connection.clone();
        async move {
            let mut samples = Vec::with_capacity(writes);
            for _ in 0..writes {
                let started = Instant::now();
                register_once(&connection, RequestId::random(), limit)
                    .await
                    .unwrap();
                samples.push(started.elapsed());
            }
            samples
        }
    };
    let leader_samples = sequential(&at_leader).await;
    let follower_samples = sequential(&at_follower).await;

    let (total, elapsed) = concurrently(concurrency, writes, |per_task| {
        let connection = at_leader.clone();
        async move {
            for _ in 0..per_task {
                register_once(&connection, RequestId::random(), limit)
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let rss: Vec<f64> = cluster
        .running
        .iter()
        .flatten()
        .map(|p| Usage::of(p.process.pid()).rss_mib())
        .collect();
    Report {
        sequential_writes_per_second: writes as f64
            / leader_samples.iter().sum::<Duration>().as_secs_f64(),
        sequential_write_at_leader: Percentiles::of(leader_samples),
        sequential_write_at_follower: Percentiles::of(follower_samples),
        concurrent: Concurrent {
            in_flight: concurrency,
            writes: total,
            seconds: elapsed.as_secs_f64(),
            writes_per_second: total as f64 / elapsed.as_secs_f64(),
        },
        coordinator_rss_mib: rss,
    }
}
