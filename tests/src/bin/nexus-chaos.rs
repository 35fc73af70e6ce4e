//! `nexus-chaos`: one fault campaign against real coordinators in network namespaces, judged for
//! linearizability and the fleet's invariants (`docs/reliability.md`). Needs root (namespaces,
//! iptables, tmpfs) and the binaries built beside it.
//!
//! ```sh
//! cargo build --workspace --bins
//! $CARGO_TARGET_DIR/debug/nexus-chaos --seed 7 --seconds 1800 --json run.json
//! $CARGO_TARGET_DIR/debug/nexus-chaos --seed 7 --seconds 60 --faults pause,partition
//! ```
//!
//! It exits 0 when the campaign is clean, 1 when it found a violation (printed with the seed and
//! the history around it; the campaign's logs and history are kept), 2 when the harness failed.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nexus_tests::chaos::nemesis::Kind;
use nexus_tests::chaos::runner::{self, CampaignOptions};

#[derive(Debug, Parser)]
#[command(name = "nexus-chaos", about = "A fault campaign against a Nexus fleet")]
struct Cli {
    /// The seed of the plan and of the clients' choices: the same seed replays the campaign.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long faults are injected, in seconds (healing and checking come after).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Coordinators, 3 to 7.
    #[arg(long, default_value_t = 3)]
    coordinators: usize,
    /// The kinds of fault, comma-separated (default: all). One of: kill, pause, isolate-leader,
    /// partition, bridge, one-way, loss, slow, skew, disk-full, agent-kill, engine-kill.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Hollow hosts in the fleet.
    #[arg(long, default_value_t = 6)]
    hosts: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// No Docker agent (no private engine).
    #[arg(long)]
    no_docker: bool,
    /// Keep the campaign's logs and history in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    nexus_protocol::logging::init("info");
    let cli = Cli::parse();
    let mut kinds = Vec::new();
    for name in &cli.faults {
        match Kind::parse(name) {
            Some(kind) => kinds.push(kind),
            None => {
                eprintln!("error: no fault is called {name:?}; see --help for the kinds");
                return ExitCode::from(2);
            }
        }
    }
    let mut options = CampaignOptions::new(cli.seed, Duration::from_secs(cli.seconds));
    if !kinds.is_empty() {
        options.kinds = kinds;
    }
    options.coordinators = cli.coordinators;
    options.hollow_hosts = cli.hosts;
    options.clients = cli.clients;
    options.docker = !cli.no_docker;
    options.keep = cli.keep;
    let campaign = match runner::run(options).await {
        Ok(campaign) => campaign,
        Err(error) => {
            eprintln!(
                "error: the campaign could not run (seed {}): {error:#}",
                cli.seed
            );
            return ExitCode::from(2);
        }
    };
    print!("{}", campaign.summary);
    if let Some(path) = &cli.json {
        let json = serde_json::json!({
            "seed": cli.seed,
            "coordinators": cli.coordinators,
            "summary": campaign.summary,
            "violations": campaign.violations,
        });
        if let Err(error) = std::fs::write(path, format!("{json:#}\n")) {
            eprintln!("error: cannot write {}: {error}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(dir) = &campaign.kept {
        println!("logs and history kept in {}", dir.display());
    }
    if campaign.clean() {
        println!("seed {}: no violation", cli.seed);
        ExitCode::SUCCESS
    } else {
        println!(
            "seed {}: {} violation(s):",
            cli.seed,
            campaign.violations.len()
        );
        for violation in &campaign.violations {
            println!("{violation}\n");
        }
        ExitCode::from(1)
    }
}
