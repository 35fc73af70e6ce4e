//! The `agent-idle` scenario: the footprint of a real agent process with N running workspaces,
//! idle: its resident memory and CPU over a window.

use std::time::{Duration, Instant};

use nexus_protocol::HostId;
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::Process;
use serde::Serialize;

use crate::measure::{Load, Usage, proc_status, status_field};
use crate::setup::until_registered;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// docker or hollow.
    #[arg(long, default_value = "docker")]
    pub(crate) runtime: String,
    #[arg(long, default_value_t = 50)]
    pub(crate) workspaces: usize,
    /// Seconds of idling measured.
    #[arg(long, default_value_t = 300)]
    pub(crate) seconds: u64,
    /// Seconds between the last workspace running and the window's start, for the start-up to
    /// settle (the first stats round, the reports) so that it is not measured as idling. Below
    /// 15 the window may include it: for smoke runs that measure nothing.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub(crate) settle: u64,
}

/// What the `agent-idle` scenario measured of the agent process.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) runtime: String,
    pub(crate) workspaces: usize,
    pub(crate) seconds_to_all_running: f64,
    pub(crate) idle_seconds: f64,
    pub(crate) agent_cpu_percent_of_one_core: f64,
    pub(crate) agent_rss_mib: Memory,
    pub(crate) agent_threads: u64,
}

/// The agent's resident memory over the idle window (sampled each second), and its peak over
/// its whole life.
#[derive(Debug, Serialize)]
pub(crate) struct Memory {
    pub(crate) mean: f64,
    pub(crate) max: f64,
    pub(crate) end: f64,
    pub(crate) peak_ever: f64,
}

pub(crate) async fn run(args: Args) -> Report {
    let (runtime, workspaces, seconds) = (args.runtime.as_str(), args.workspaces, args.seconds);
    let settle = Duration::from_secs(args.settle);
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let host = format!("bench-{}", std::process::id());
    let host_id: HostId = host.parse().unwrap();
    pki.issue(&pki::agent(&host));
    let data_dir = pki.scratch("agent");
    let flags: Vec<String> = [
        "--host-id",
        &host,
        "--coordinator",
        &coordinator.address.to_string(),
        "--tls-dir",
        &pki.dir().display().to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
        "--runtime",
        runtime,
        "--listen",
        "127.0.0.1:0",
        // The monitoring HTTP on, as in production.
        "--http-listen",
        "127.0.0.1:0",
        // Room for N small workspaces whatever this machine has: the footprint is measured,
        // not the placement.
        "--capacity-cpus",
        "64",
        "--capacity-memory-mib",
        "262144",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let agent = Process::spawn("nexus-agent", &flags, data_dir.join("agent.log"));
    let pid = agent.pid();
    until_registered(&coordinator, &host_id).await;
    let started = Instant::now();
    for i in 0..workspaces {
        let port = 20_000 + u16::try_from(i).unwrap();
        coordinator
            .place(
                &host_id,
                &format!("idle-{i}"),
                "nexus-test/busybox:latest",
                &[(8080, port)],
                &["sleep", "1000000"],
            )
            .await
            .unwrap();
    }
    let all_running = || async {
        let running = coordinator
            .read(|state| {
                state
                    .workspaces()
                    .values()
                    .filter(|w| w.state == nexus_protocol::model::WorkspaceState::Running)
                    .count()
            })
            .await;
        (running == workspaces).then_some(())
    };
    nexus_tests::eventually(
        "every workspace running",
        Duration::from_secs(300),
        all_running,
    )
    .await;
    let to_running = started.elapsed();
    // Let the start-up settle (the first stats round, the reports) before measuring idle.
    tokio::time::sleep(settle).await;
    let before = Usage::of(pid);
    let window = Instant::now();
    let mut rss_samples = Vec::new();
    while window.elapsed() < Duration::from_secs(seconds) {
        rss_samples.push(Usage::of(pid).rss_kib);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after = Usage::of(pid);
    let elapsed = window.elapsed();
    let status = proc_status(pid);
    let (peak_kib, threads) = (
        status_field(&status, "VmHWM:"),
        status_field(&status, "Threads:"),
    );
    let max_kib = rss_samples.iter().copied().max().unwrap_or(0);
    let mean_kib = rss_samples.iter().sum::<u64>() / rss_samples.len().max(1) as u64;
    // Clean up: stop the agent (or it would make again what is removed), then remove the
    // containers and networks it made.
    drop(agent);
    if runtime == "docker" {
        nexus_tests::docker::remove_host(&host);
    }
    coordinator.stop().await;
    Report {
        runtime: runtime.to_string(),
        workspaces,
        seconds_to_all_running: to_running.as_secs_f64(),
        idle_seconds: elapsed.as_secs_f64(),
        agent_cpu_percent_of_one_core: Load::between(&before, &after, elapsed)
            .cpu_percent_of_one_core,
        agent_rss_mib: Memory {
            mean: mean_kib as f64 / 1024.0,
            max: max_kib as f64 / 1024.0,
            end: after.rss_mib(),
            peak_ever: peak_kib as f64 / 1024.0,
        },
        agent_threads: threads,
    }
}
