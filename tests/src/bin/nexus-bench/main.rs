//! `nexus-bench`: measurements of Nexus against real processes, from one command each. Results go
//! to `docs/benchmarks.md` with the machine and the date. Scenarios grow with the issues.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/nexus-bench transport
//! $CARGO_TARGET_DIR/release/nexus-bench raft
//! $CARGO_TARGET_DIR/release/nexus-bench failover
//! $CARGO_TARGET_DIR/release/nexus-bench failover --against etcd
//! $CARGO_TARGET_DIR/release/nexus-bench status-failover
//! $CARGO_TARGET_DIR/release/nexus-bench start
//! $CARGO_TARGET_DIR/release/nexus-bench start --against docker
//! $CARGO_TARGET_DIR/release/nexus-bench sync
//! $CARGO_TARGET_DIR/release/nexus-bench sync --against unison
//! $CARGO_TARGET_DIR/release/nexus-bench fleet
//! $CARGO_TARGET_DIR/release/nexus-bench detect
//! $CARGO_TARGET_DIR/release/nexus-bench agent-idle
//! $CARGO_TARGET_DIR/release/nexus-bench scrape
//! $CARGO_TARGET_DIR/release/nexus-bench debug
//! $CARGO_TARGET_DIR/release/nexus-bench snapshot
//! $CARGO_TARGET_DIR/release/nexus-bench backup
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

use clap::Parser;

use crate::cli::{Cli, Scenario};
use crate::report::Report;
use crate::scenarios::{
    agent_idle, backup, debug, detect, failover, fleet, raft_writes, scrape, snapshot, start,
    status_failover, sync, transport,
};

#[tokio::main]
async fn main() {
    // The in-process agents (fleet, detect, sync) log only when asked: NEXUS_LOG=warn, say.
    nexus_protocol::logging::init("off");
    let cli = Cli::parse();
    nexus_tests::process::log_daemons_at(&cli.daemon_log);
    if cli.keep_files {
        nexus_tests::pki::keep_files();
    }
    let report = match cli.scenario {
        Scenario::Transport(args) => Report::Transport(transport::run(args).await),
        Scenario::Raft(args) => Report::Raft(raft_writes::run(args).await),
        Scenario::Failover(args) => Report::Failover(failover::run(args).await),
        Scenario::StatusFailover(args) => Report::StatusFailover(status_failover::run(args).await),
        Scenario::Start(args) => Report::Start(start::run(args).await),
        Scenario::Sync(args) => Report::Sync(sync::run(args).await),
        Scenario::Fleet(args) => Report::Fleet(fleet::run(args).await),
        Scenario::Detect(args) => Report::Detect(detect::run(args).await),
        Scenario::AgentIdle(args) => Report::AgentIdle(agent_idle::run(args).await),
        Scenario::Scrape(args) => Report::Scrape(scrape::run(args).await),
        Scenario::Debug(args) => Report::Debug(debug::run(args).await),
        Scenario::Snapshot(args) => Report::Snapshot(snapshot::run(args).await),
        Scenario::Backup(args) => Report::Backup(backup::run(args).await),
    };
    print!("{}", report.text());
    if let Some(path) = cli.json {
        std::fs::write(&path, report.json()).unwrap();
    }
}
