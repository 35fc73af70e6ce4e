//! The `scrape` scenario: three coordinators and a hollow fleet; the leader's `/metrics` scraped
//! many times, as Prometheus would, and what a scrape costs the leader in CPU beside what it
//! spends anyway (heartbeats, Raft), measured over equal windows without scrapes.

use std::time::{Duration, Instant};

use nexus_tests::fleet::FleetOptions;
use nexus_tests::pki::TestPki;
use serde::Serialize;

use crate::measure::{Percentiles, Usage};
use crate::setup::cluster_and_fleet;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 5_000)]
    pub(crate) hosts: usize,
    /// Scrapes in the measured window, one after another.
    #[arg(long, default_value_t = 200)]
    pub(crate) scrapes: usize,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) heartbeat: f64,
    /// The scrape interval to state the cost at, in seconds (Prometheus' usual 15).
    #[arg(long, default_value_t = 15.0)]
    pub(crate) interval: f64,
}

/// What the `scrape` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) hosts: usize,
    pub(crate) scrape: Percentiles,
    pub(crate) bytes: usize,
    pub(crate) samples: usize,
    /// The leader's CPU in the scraping window less its CPU over a window as long without.
    pub(crate) cpu_ms_per_scrape: f64,
    pub(crate) interval_seconds: f64,
    /// `cpu_ms_per_scrape` as a share of one core at one scrape per `interval_seconds`.
    pub(crate) cpu_percent_at_interval: f64,
    /// The leader's CPU when not scraped, for scale.
    pub(crate) leader_idle_cpu_percent: f64,
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        hosts,
        scrapes,
        heartbeat,
        interval,
    } = args;
    let scrapes = scrapes.max(1);
    let pki = TestPki::new();
    let (cluster, _fleet, _) = cluster_and_fleet(
        &pki,
        hosts.max(1),
        heartbeat,
        FleetOptions::default().start_rate,
        &[],
    )
    .await;
    let leader = cluster.leader(&pki, Duration::from_secs(60)).await;
    let process = cluster.running[cluster.index_of(leader.node.get())]
        .as_ref()
        .expect("the leader runs");
    let http = process.http.expect("the leader serves HTTP");
    let pid = process.process.pid();
    let (_, first) = nexus_tests::http::get(http, "/metrics").await;

    // The same length of time without scrapes, before and after, for the leader's own load.
    let quiet = |window: Duration| async move {
        let before = Usage::of(pid);
        tokio::time::sleep(window).await;
        Usage::of(pid).cpu_ticks.saturating_sub(before.cpu_ticks)
    };
    let mut latencies = Vec::with_capacity(scrapes);
    let mut bytes = first.len();
    let before = Usage::of(pid);
    let started = Instant::now();
    for _ in 0..scrapes {
        let asked = Instant::now();
        let (status, text) = nexus_tests::http::get(http, "/metrics").await;
        latencies.push(asked.elapsed());
        assert_eq!(status, 200, "the leader's /metrics answered {status}");
        bytes = text.len();
    }
    let window = started.elapsed();
    let busy = Usage::of(pid).cpu_ticks.saturating_sub(before.cpu_ticks);
    let idle = (quiet(window).await + quiet(window).await) as f64 / 2.0;
    // Ticks are 10 ms (USER_HZ 100).
    let cpu_ms_per_scrape = ((busy as f64 - idle) * 10.0 / scrapes as f64).max(0.0);
    let samples = first.lines().filter(|l| !l.starts_with('#')).count();
    Report {
        hosts,
        scrape: Percentiles::of(latencies),
        bytes,
        samples,
        cpu_ms_per_scrape,
        interval_seconds: interval,
        cpu_percent_at_interval: cpu_ms_per_scrape / 1000.0 / interval * 100.0,
        leader_idle_cpu_percent: idle * 10.0 / 1000.0 / window.as_secs_f64() * 100.0,
    }
}
