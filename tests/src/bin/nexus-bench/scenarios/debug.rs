//! The `debug` scenario: three coordinators and N real `nexus-agent` processes (the hollow
//! runtime, each with its own endpoint and log directory), some workspaces created to give the
//! logs something to say; then the debugging commands, each one real `nexus` process timed from
//! spawn to exit, as an on-call engineer runs them: `admin logs --last 1h`, `admin trace` of a
//! create, and `admin support-bundle` of the whole fleet.

use std::time::{Duration, Instant};

use nexus_protocol::identity::Role;
use nexus_tests::cluster::TestCluster;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, cli_command};
use serde::Serialize;

use crate::measure::Percentiles;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Agent processes (hollow runtime).
    #[arg(long, default_value_t = 100)]
    pub(crate) hosts: usize,
    /// Workspaces created before measuring (their creates are traced).
    #[arg(long, default_value_t = 100)]
    pub(crate) workspaces: usize,
    /// Runs of each command.
    #[arg(long, default_value_t = 10)]
    pub(crate) runs: usize,
}

/// What the `debug` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) hosts: usize,
    pub(crate) workspaces: usize,
    pub(crate) logs: Percentiles,
    /// Records the last `admin logs` printed.
    pub(crate) log_records: usize,
    pub(crate) trace: Percentiles,
    /// Hops in the last trace.
    pub(crate) trace_hops: usize,
    pub(crate) bundle: Percentiles,
    pub(crate) bundle_bytes: u64,
    pub(crate) bundle_sections: usize,
    pub(crate) bundle_missing: usize,
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        hosts,
        workspaces,
        runs,
    } = args;
    let runs = runs.max(1);
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    cluster.leader(&pki, Duration::from_secs(30)).await;
    let addresses = cluster.live_addresses();
    let started = Instant::now();
    let agents: Vec<AgentProcess> = (0..hosts)
        .map(|i| AgentProcess::start(&pki, &format!("dbg{i:03}"), &addresses, &[]))
        .collect();
    let admin = pki::user("root", Role::Admin);
    let home = pki.scratch("home-root");
    let nexus = |args: &[&str]| {
        let mut command = cli_command(&pki, &admin, &home, &addresses);
        command.args(["-o", "json"]).args(args);
        command
    };
    // Every agent registered and serving.
    loop {
        let out = nexus(&["admin", "hosts"]).output().unwrap();
        let ready = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().filter(|h| h["status"] == "ready").count())
            })
            .unwrap_or(0);
        if ready == hosts {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {ready} of {hosts} agents ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{hosts} agents ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let traced = "00000000000000000000000000dec0de";
    for i in 0..workspaces {
        let name = format!("dbg{i:03}");
        let mut command = nexus(&[]);
        if i == 0 {
            command.args(["--request-id", traced]);
        }
        let out = command
            .args([
                "workspace",
                "create",
                &name,
                "--image",
                "bench:1",
                "--class",
                "small",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let time = |args: &[&str]| {
        let started = Instant::now();
        let out = nexus(args).output().unwrap();
        assert!(
            out.status.success(),
            "nexus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (started.elapsed(), out.stdout)
    };
    let mut samples = Vec::new();
    let mut log_records = 0;
    for _ in 0..runs {
        let (took, stdout) = time(&["admin", "logs", "--last", "1h"]);
        samples.push(took);
        log_records = stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    let logs = Percentiles::of(samples);
    let mut samples = Vec::new();
    let mut trace_hops = 0;
    for _ in 0..runs {
        let (took, stdout) = time(&["admin", "trace", traced]);
        samples.push(took);
        let trace: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        trace_hops = trace["hops"].as_array().map_or(0, Vec::len);
    }
    let trace = Percentiles::of(samples);
    let mut samples = Vec::new();
    let (mut bundle_bytes, mut bundle_sections, mut bundle_missing) = (0, 0, 0);
    for run in 0..runs {
        let file = pki.scratch("bundles").join(format!("b{run}.tar.gz"));
        let file = file.display().to_string();
        let (took, stdout) = time(&["admin", "support-bundle", "--file", &file]);
        samples.push(took);
        let summary: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        bundle_bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        bundle_sections = summary["sections"].as_u64().unwrap_or(0) as usize;
        bundle_missing = summary["missing"].as_array().map_or(0, Vec::len);
    }
    let bundle = Percentiles::of(samples);
    drop(agents);
    Report {
        hosts,
        workspaces,
        logs,
        log_records,
        trace,
        trace_hops,
        bundle,
        bundle_bytes,
        bundle_sections,
        bundle_missing,
    }
}
