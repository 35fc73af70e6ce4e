//! `nexus-bench`: measurements of Nexus against real processes, from one command each. Results go
//! to `docs/benchmarks.md` with the machine and the date. Scenarios grow with the issues.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/nexus-bench transport
//! ```

// A benchmark fails loudly: it panics on a broken setup rather than report a number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nexus_protocol::identity::{IdentityKind, Role};
use nexus_protocol::message::{Request, Response};
use nexus_protocol::transport::{Connector, TransportConfig};
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::CoordinatorProcess;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "nexus-bench", about = "Measure Nexus against real processes")]
struct Cli {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One real nexus-coordinator on loopback: connection setup (QUIC + mTLS + hello), request
    /// round trips, and throughput with concurrent streams on one connection.
    Transport {
        #[arg(long, default_value_t = 200)]
        connections: usize,
        #[arg(long, default_value_t = 5_000)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

/// Percentiles of durations, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let at =
        |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1000.0;
    json!({ "n": samples.len(), "p50_ms": at(50), "p95_ms": at(95), "p99_ms": at(99), "max_ms": at(100) })
}

/// A process's resident memory (KiB) and CPU time (clock ticks) from /proc.
fn process_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (rss, ticks(11) + ticks(12)) // utime and stime, counted from field 3 (state) as 0
}

async fn transport(connections: usize, requests: usize, concurrency: usize) -> serde_json::Value {
    let pki = TestPki::new();
    let coordinator = CoordinatorProcess::start(&pki, 1).await;
    let pid = coordinator.process.pid();
    let credentials = pki.issue(&pki::user("bench", Role::Admin));
    let connector = Connector::new(&credentials, TransportConfig::default()).unwrap();
    let connect = || {
        connector.connect(
            coordinator.address,
            "127.0.0.1",
            &[IdentityKind::Coordinator],
        )
    };

    let mut setup = Vec::with_capacity(connections);
    for _ in 0..connections {
        let started = Instant::now();
        let connection = connect().await.unwrap();
        setup.push(started.elapsed());
        connection.close();
    }

    let connection = connect().await.unwrap();
    let mut round_trips = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let answer = connection.request(Request::Ping).await.unwrap();
        round_trips.push(started.elapsed());
        assert!(matches!(answer, Response::Pong(_)));
    }

    let (_, cpu_before) = process_usage(pid);
    let started = Instant::now();
    let connection = Arc::new(connection);
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = requests.div_ceil(concurrency);
    for _ in 0..concurrency {
        let connection = connection.clone();
        tasks.spawn(async move {
            for _ in 0..per_task {
                assert!(matches!(
                    connection.request(Request::Ping).await.unwrap(),
                    Response::Pong(_)
                ));
            }
        });
    }
    tasks.join_all().await;
    let elapsed = started.elapsed();
    let (rss_kib, cpu_after) = process_usage(pid);
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let total = per_task * concurrency;
    json!({
        "scenario": "transport",
        "connection_setup": percentiles(setup),
        "sequential_round_trip": percentiles(round_trips),
        "concurrent": {
            "streams": concurrency,
            "requests": total,
            "seconds": elapsed.as_secs_f64(),
            "requests_per_second": total as f64 / elapsed.as_secs_f64(),
            "coordinator_cpu_percent_of_one_core": (cpu_after - cpu_before) as f64 / ticks_per_second / elapsed.as_secs_f64() * 100.0,
        },
        "coordinator_rss_mib": rss_kib as f64 / 1024.0,
    })
}

fn print_table(result: &serde_json::Value) {
    let ms = |v: &serde_json::Value| format!("{:.3}", v.as_f64().unwrap_or(0.0));
    for (name, key) in [
        ("connection setup (QUIC + mTLS + hello)", "connection_setup"),
        ("request round trip (sequential)", "sequential_round_trip"),
    ] {
        let p = &result[key];
        println!(
            "{name:<42} n={:<6} p50 {} ms  p95 {} ms  p99 {} ms  max {} ms",
            p["n"],
            ms(&p["p50_ms"]),
            ms(&p["p95_ms"]),
            ms(&p["p99_ms"]),
            ms(&p["max_ms"])
        );
    }
    let c = &result["concurrent"];
    println!(
        "{:<42} {:.0} requests/s over {} streams ({} requests), coordinator CPU {:.0}% of one core",
        "request throughput (one connection)",
        c["requests_per_second"].as_f64().unwrap_or(0.0),
        c["streams"],
        c["requests"],
        c["coordinator_cpu_percent_of_one_core"]
            .as_f64()
            .unwrap_or(0.0)
    );
    println!(
        "{:<42} {:.1} MiB resident",
        "coordinator memory after",
        result["coordinator_rss_mib"].as_f64().unwrap_or(0.0)
    );
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Transport {
            connections,
            requests,
            concurrency,
        } => transport(connections, requests, concurrency.max(1)).await,
    };
    print_table(&result);
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    }
}
