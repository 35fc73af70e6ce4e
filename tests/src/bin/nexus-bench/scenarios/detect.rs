//! The `detect` scenario: three coordinators and a hollow fleet; leader failovers (hosts marked
//! down meanwhile, until the new leader has heard every host, are false downs), then a share of
//! the hosts killed at once and the time until each is marked down.

use std::time::{Duration, Instant};

use nexus_protocol::identity::Role;
use nexus_protocol::model::HostStatus;
use nexus_tests::cluster::{self, TestCluster};
use nexus_tests::fleet::FleetOptions;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::connect;
use serde::Serialize;

use crate::measure::Percentiles;
use crate::setup::{cluster_and_fleet, count_of, count_within, fleet_stats, observe};

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 1_000)]
    pub(crate) hosts: usize,
    /// The share of hosts killed, 0–1.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) kill_share: f64,
    /// Leader kills before the hosts die.
    #[arg(long, default_value_t = 1)]
    pub(crate) failovers: usize,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) heartbeat: f64,
    /// Seconds of silence before a host is marked down (the coordinator's --host-ttl, and
    /// its default).
    #[arg(long, default_value_t = 14.0)]
    pub(crate) ttl: f64,
    /// Seconds the fleet is watched once up, before any failover: no host may be marked down.
    #[arg(long, default_value_t = 0)]
    pub(crate) steady: u64,
    /// Hosts started per second (a whole fleet at once is a herd of handshakes).
    #[arg(long, default_value_t = FleetOptions::default().start_rate)]
    pub(crate) start_rate: usize,
}

/// What the `detect` scenario measured, and what it checked.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) hosts: usize,
    pub(crate) heartbeat_seconds: f64,
    pub(crate) ttl_seconds: f64,
    pub(crate) fleet_up_seconds: f64,
    pub(crate) steady_seconds: u64,
    /// Hosts marked down while the fleet stood still: must be 0.
    pub(crate) false_downs_steady: usize,
    pub(crate) failovers: usize,
    /// None without failovers.
    pub(crate) leader_elected_after: Option<Percentiles>,
    /// Hosts marked down while the leader changed: must be 0.
    pub(crate) false_downs_after_failover: usize,
    pub(crate) killed: usize,
    pub(crate) detected: usize,
    pub(crate) kill_to_down: Percentiles,
    /// Hosts marked down that were not killed: must be 0.
    pub(crate) live_hosts_marked_down: usize,
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        hosts,
        kill_share,
        failovers,
        heartbeat,
        ttl,
        start_rate,
        steady,
    } = args;
    let hosts = hosts.max(1);
    let pki = TestPki::new();
    let ttl_flag = ttl.to_string();
    let (mut cluster, fleet, up) = cluster_and_fleet(
        &pki,
        hosts,
        heartbeat,
        start_rate,
        &["--host-ttl", &ttl_flag],
    )
    .await;
    let admin = pki::user("observer", Role::Admin);
    let down = |s: &nexus_protocol::message::FleetStats| count_of(&s.hosts, &HostStatus::Down);

    // The fleet standing still: heartbeats and nothing else, and no host may be marked down.
    let mut false_downs_steady = 0usize;
    if steady > 0 {
        let observer = observe(&pki, &cluster, cluster.live_addresses()[0]).await;
        let watch = Instant::now();
        let mut told = Instant::now();
        while watch.elapsed() < Duration::from_secs(steady) {
            if let Some(stats) = fleet_stats(&observer).await {
                false_downs_steady = false_downs_steady.max(down(&stats));
            }
            if told.elapsed() > Duration::from_secs(60) {
                println!(
                    "  steady for {} s; most hosts down at once so far: {false_downs_steady}",
                    watch.elapsed().as_secs()
                );
                told = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // A host marked down and back between two looks shows only in the leader's log.
        let marked = markings(&cluster, None);
        println!(
            "steady for {steady} s: most hosts marked down at once: {false_downs_steady}; \
             markings in the coordinators' logs: {marked}"
        );
        false_downs_steady = false_downs_steady.max(marked);
    }

    // Leader failovers: no host may be marked down. Watched from a survivor for three TTLs
    // after each new leader (its grace is two TTLs from when it took over).
    let mut false_downs = 0usize;
    let mut failover_times = Vec::new();
    for round in 0..failovers {
        let leader = cluster.leader(&pki, Duration::from_secs(60)).await;
        cluster::wait_healthy(&pki, &cluster, Duration::from_secs(60)).await;
        let victim = cluster.index_of(leader.node.get());
        let survivor = cluster.members[(victim + 1) % cluster.members.len()].address;
        let observer = connect(&pki, &admin, survivor).await.unwrap();
        let marked_before = markings(&cluster, Some(victim));
        let killed = Instant::now();
        cluster.kill(victim);
        let new_leader = cluster.leader(&pki, Duration::from_secs(60)).await;
        failover_times.push(killed.elapsed());
        let watch = Instant::now();
        let mut most = 0;
        while watch.elapsed() < Duration::from_secs_f64(3.0 * ttl + heartbeat) {
            if let Some(stats) = fleet_stats(&observer).await {
                most = most.max(down(&stats));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "failover {round}: leader {} killed, {} leads after {:.2} s; hosts marked down meanwhile: {most}",
            leader.node,
            new_leader.node,
            killed.elapsed().as_secs_f64() - watch.elapsed().as_secs_f64()
        );
        if most > 0 {
            // What the coordinators said of those hosts, for whoever looks into it.
            let logs = cluster.logs();
            let said = logs.lines().filter(|line| {
                line.contains("marking the host down") || line.contains("heartbeats again")
            });
            for line in said.take(20) {
                println!("  {line}");
            }
        }
        // Into the crowd of returning agents: it may take minutes to answer the harness.
        cluster
            .restart_within(&pki, victim, Duration::from_secs(300))
            .await;
        // The ones marked down come back with their next heartbeat. Those still down when the
        // wait ends are false downs too, and the run goes on to say so rather than stop.
        let back = count_within(
            &observer,
            "hosts ready again",
            hosts,
            Duration::from_secs(300),
            |s| count_of(&s.hosts, &HostStatus::Ready),
        )
        .await;
        if let Err(last) = back {
            let still_down = last.as_ref().map_or(0, down);
            println!("  not every host ready again 300 s after the failover: {still_down} down");
            most = most.max(still_down);
        }
        // Hosts marked down after the watch, or down and back between two looks, show only in
        // the logs (the survivors', and the restarted member's since it started).
        // Ready is not back: a host the new leader has not heard yet stays ready while others
        // still arrive. Hosts killed before the fleet returned would be timed by its return.
        match returned(&cluster, new_leader.node.get(), Duration::from_secs(600)).await {
            Some(true) => println!(
                "  every host heard by the new leader {:.1} s after the kill",
                killed.elapsed().as_secs_f64()
            ),
            Some(false) => println!(
                "  the new leader had not heard every host after 600 s: the kills below are \
                 timed by the fleet's return as much as by the detector"
            ),
            None => println!(
                "  the new leader does not say which hosts it has heard: the kills below may \
                 be timed by the fleet's return as much as by the detector"
            ),
        }
        let marked = markings(&cluster, None).saturating_sub(marked_before);
        println!(
            "  markings in the coordinators' logs from the kill until all were ready and heard: \
             {marked}"
        );
        false_downs += most.max(marked);
    }

    // Kill a share of the hosts at once; time each one's marking down.
    let killed_count = ((hosts as f64 * kill_share).round() as usize).clamp(1, hosts);
    let step = hosts / killed_count;
    let victims: Vec<usize> = (0..killed_count).map(|i| i * step).collect();
    let observer = observe(&pki, &cluster, cluster.live_addresses()[0]).await;
    let killed_at = Instant::now();
    for &victim in &victims {
        fleet.kill(victim);
    }
    let mut detections = Vec::with_capacity(killed_count);
    let mut most = 0;
    let limit = Duration::from_secs_f64(ttl * 4.0 + 30.0);
    while detections.len() < killed_count && killed_at.elapsed() < limit {
        if let Some(stats) = fleet_stats(&observer).await {
            let now = down(&stats);
            most = most.max(now);
            while detections.len() < now.min(killed_count) {
                detections.push(killed_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then one more TTL: nobody else may go down.
    tokio::time::sleep(Duration::from_secs_f64(ttl)).await;
    if let Some(stats) = fleet_stats(&observer).await {
        most = most.max(down(&stats));
    }
    let extra_downs = most.saturating_sub(killed_count);
    println!(
        "{} of {killed_count} killed hosts marked down; {extra_downs} live hosts marked down too",
        detections.len()
    );
    Report {
        hosts,
        heartbeat_seconds: heartbeat,
        ttl_seconds: ttl,
        fleet_up_seconds: up.as_secs_f64(),
        steady_seconds: steady,
        false_downs_steady,
        failovers,
        leader_elected_after: (!failover_times.is_empty()).then(|| Percentiles::of(failover_times)),
        false_downs_after_failover: false_downs,
        killed: killed_count,
        detected: detections.len(),
        kill_to_down: Percentiles::of(detections),
        live_hosts_marked_down: extra_downs,
    }
}

/// How many hosts the coordinators running now (but member `except`) say in their logs they
/// marked down.
fn markings(cluster: &TestCluster, except: Option<usize>) -> usize {
    cluster
        .running
        .iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != except)
        .filter_map(|(_, running)| running.as_ref())
        .map(|running| {
            running
                .process
                .log()
                .matches("no heartbeat within the TTL; marking the host down")
                .count()
        })
        .sum()
}

/// Waits up to `limit` for the leader `node` to have heard every host not down since it took the
/// lead (its `nexus_hosts_unheard` at 0 while it leads): whether it did, or `None` when it serves
/// no such gauge (an earlier build) or no metrics.
async fn returned(cluster: &TestCluster, node: u64, limit: Duration) -> Option<bool> {
    let http = cluster.running[cluster.index_of(node)].as_ref()?.http?;
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some((200, text)) = nexus_tests::http::try_get(http, "/metrics").await {
            let value = |name| nexus_tests::exposition::value(&text, name, &[]);
            let unheard = value("nexus_hosts_unheard")?;
            if unheard == 0.0 && value("nexus_raft_is_leader") == Some(1.0) {
                return Some(true);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Some(false)
}
