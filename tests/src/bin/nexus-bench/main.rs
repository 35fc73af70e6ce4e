//! `nexus-bench`: measurements of Nexus against real processes, from one command each. Results go
//! to `docs/benchmarks.md` with the machine and the date. Scenarios grow with the issues.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/nexus-bench transport
//! $CARGO_TARGET_DIR/release/nexus-bench raft
//! $CARGO_TARGET_DIR/release/nexus-bench failover
//! $CARGO_TARGET_DIR/release/nexus-bench start
//! $CARGO_TARGET_DIR/release/nexus-bench sync
//! ```
//!
//! The rooms: `cli` (what can be asked), `scenarios` (one module a scenario, each measuring and
//! returning its report), `measure` and `setup` (what scenarios share to measure and to bring a
//! cluster up), and `report` (the one printer of every report, as text and as JSON).

// A benchmark fails loudly: it panics on a broken setup rather than report a number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod cli;
mod measure;
mod report;
mod scenarios;
mod setup;

use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Scenario};
use crate::report::Report;
use crate::scenarios::{agent_idle, detect, failover, fleet, raft_writes, start, sync, transport};

#[tokio::main]
async fn main() {
    // The in-process agents (fleet, detect, sync) log only when asked: NEXUS_LOG=warn, say.
    nexus_protocol::logging::init("off");
    let cli = Cli::parse();
    let report = match cli.scenario {
        Scenario::Transport {
            connections,
            requests,
            concurrency,
        } => Report::Transport(transport::run(connections, requests, concurrency.max(1)).await),
        Scenario::Raft {
            writes,
            concurrency,
        } => Report::Raft(raft_writes::run(writes.max(1), concurrency.max(1)).await),
        Scenario::Failover {
            kills,
            rate,
            writers,
        } => Report::Failover(failover::run(kills.max(1), rate.max(1.0), writers.max(1)).await),
        Scenario::Start { trials, image } => Report::Start(start::run(trials.max(1), &image).await),
        Scenario::Sync {
            files,
            total_mb,
            trials,
            spacing,
        } => {
            let spacing = Duration::from_secs_f64(spacing.clamp(0.0, 3_600.0));
            Report::Sync(sync::run(files.max(1), total_mb, trials.max(1), spacing).await)
        }
        Scenario::Fleet {
            hosts,
            workspaces,
            concurrency,
            heartbeat,
            idle,
        } => Report::Fleet(
            fleet::run(
                hosts.max(1),
                workspaces,
                concurrency.max(1),
                heartbeat,
                idle,
            )
            .await,
        ),
        Scenario::Detect {
            hosts,
            kill_share,
            failovers,
            heartbeat,
            ttl,
        } => Report::Detect(detect::run(hosts.max(1), kill_share, failovers, heartbeat, ttl).await),
        Scenario::AgentIdle {
            runtime,
            workspaces,
            seconds,
        } => Report::AgentIdle(agent_idle::run(&runtime, workspaces, seconds).await),
    };
    print!("{}", report.text());
    if let Some(path) = cli.json {
        std::fs::write(&path, report.json()).unwrap();
    }
}
