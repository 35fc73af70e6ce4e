//! The `start` scenario: workspace start latency through the `nexus` CLI on Docker (create →
//! running, warm start, switch), each trial one CLI invocation timed from spawn to exit. It does
//! not look inside the CLI's phases; `docs/benchmarks.md` does that by hand.
//!
//! With `--against docker`, each Nexus trial is followed by the engine's own: `docker network
//! create` then `docker run -d` (a workspace's container has a network of its own, an init, its
//! class's CPU and memory and its files mounted), `docker run -d` alone onto a network made
//! beforehand (untimed: an agent keeps networks made ahead, so this is the floor under a create),
//! and `docker start` of a stopped container of the same image; each `docker` invocation timed
//! from spawn to exit, as the `nexus` ones are. The floor under Nexus's numbers, measured under
//! the same load.

use std::time::{Duration, Instant};

use nexus_protocol::identity::Role;
use nexus_protocol::message::{Request, Response};
use nexus_tests::cluster::{self, TestCluster};
use nexus_tests::pki::{self, TestPki};
use serde::Serialize;

use crate::measure::Percentiles;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 50)]
    pub(crate) trials: usize,
    #[arg(long, default_value = "nexus-test/busybox:latest")]
    pub(crate) image: String,
    /// Also the engine's own times, each trial right after Nexus's.
    #[arg(long, value_enum)]
    pub(crate) against: Option<Peer>,
}

/// The peers the start scenario runs beside Nexus.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Peer {
    /// The Docker engine through its own CLI.
    Docker,
}

/// What the `start` scenario measured: each a CLI invocation, from spawn to exit.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) trials: usize,
    pub(crate) image: String,
    pub(crate) create_to_running: Percentiles,
    pub(crate) warm_start: Percentiles,
    pub(crate) switch: Percentiles,
    /// The engine's own times, when asked for, measured between Nexus's trials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) against: Option<PeerReport>,
}

/// The engine's own start times, and Nexus's as multiples of them (above 1: Nexus is slower).
#[derive(Debug, Serialize)]
pub(crate) struct PeerReport {
    /// The engine and its version, e.g. `docker 20.10.24`.
    pub(crate) peer: String,
    /// `docker network create` then `docker run -d`, both timed.
    pub(crate) run_with_network: Percentiles,
    /// `docker run -d` alone, onto a network made (untimed) beforehand.
    pub(crate) run_on_network: Percentiles,
    /// `docker start` of a stopped container.
    pub(crate) start: Percentiles,
    pub(crate) ratio_create_p50: f64,
    pub(crate) ratio_create_p95: f64,
    /// Nexus's create → running over `docker run -d` onto a network made beforehand, at p50.
    pub(crate) ratio_create_on_network_p50: f64,
    pub(crate) ratio_warm_p50: f64,
    pub(crate) ratio_warm_p95: f64,
}

pub(crate) async fn run(args: Args) -> Report {
    let (trials, image) = (args.trials.max(1), args.image.as_str());
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let coordinators = cluster.live_addresses();
    let host = format!("bench-start-{}", std::process::id());
    let _cleanup = nexus_tests::docker::HostCleanup(host.clone());
    let agent = nexus_tests::process::AgentProcess::start(
        &pki,
        &host,
        &coordinators,
        &["--runtime", "docker"],
    );
    pki.issue(&pki::user("ada", Role::User));
    let hosts = || {
        let pki = &pki;
        let address = coordinators[0];
        async move {
            match cluster::admin_request(
                pki,
                address,
                Request::Stale(nexus_protocol::message::StaleRead::Admin(
                    nexus_protocol::message::AdminRequest::Hosts,
                )),
            )
            .await
            {
                Ok(Response::Hosts(hosts)) => (!hosts.is_empty()).then_some(()),
                _ => None,
            }
        }
    };
    nexus_tests::eventually("the agent to register", Duration::from_secs(30), hosts).await;
    let create = |name: &str| {
        vec![
            "workspace".to_string(),
            "create".into(),
            name.into(),
            "--image".into(),
            image.into(),
            "--class".into(),
            "small".into(),
            "--".into(),
            "sleep".into(),
            "1000000".into(),
        ]
    };
    let timed = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        timed_cli(&pki, &coordinators, &args)
    };
    // One untimed round first: the image's layers and the CLI's binary into the page cache.
    timed(&create("warmup"));
    timed(&["workspace".into(), "destroy".into(), "warmup".into()]);

    let engine = args
        .against
        .map(|Peer::Docker| Engine::new(image, &pki.scratch("engine-files")));
    if let Some(engine) = &engine {
        // The engine's warm-up too, as Nexus had its own.
        engine.run_with_network("warmup");
        engine.remove("warmup");
    }
    let mut created = Vec::with_capacity(trials);
    let mut engine_runs = Vec::with_capacity(trials);
    let mut engine_runs_on_network = Vec::with_capacity(trials);
    for i in 0..trials {
        let name = format!("c{i}");
        quiet();
        created.push(timed(&create(&name)));
        timed(&["workspace".into(), "destroy".into(), name]);
        if let Some(engine) = &engine {
            let name = format!("r{i}");
            quiet();
            engine_runs.push(engine.run_with_network(&name));
            engine.remove(&name);
            let name = format!("n{i}");
            engine.network(&name);
            quiet();
            engine_runs_on_network.push(engine.run(&name));
            engine.remove(&name);
        }
    }
    timed(&create("warm"));
    if let Some(engine) = &engine {
        engine.run_with_network("warm");
    }
    let mut warm = Vec::with_capacity(trials);
    let mut engine_starts = Vec::with_capacity(trials);
    for _ in 0..trials {
        timed(&["workspace".into(), "stop".into(), "warm".into()]);
        quiet();
        warm.push(timed(&["workspace".into(), "start".into(), "warm".into()]));
        if let Some(engine) = &engine {
            engine.docker(&["stop", "-t", "1", &engine.container("warm")]);
            quiet();
            engine_starts.push(engine.docker(&["start", &engine.container("warm")]));
        }
    }
    if let Some(engine) = &engine {
        engine.remove("warm");
    }
    timed(&create("other"));
    let mut switched = Vec::with_capacity(trials);
    for i in 0..trials {
        let target = if i % 2 == 0 { "warm" } else { "other" };
        switched.push(timed(&["workspace".into(), "switch".into(), target.into()]));
    }
    drop(agent);
    let create_to_running = Percentiles::of(created);
    let warm_start = Percentiles::of(warm);
    let against = engine.map(|engine| {
        let run_with_network = Percentiles::of(engine_runs);
        let run_on_network = Percentiles::of(engine_runs_on_network);
        let start = Percentiles::of(engine_starts);
        PeerReport {
            peer: engine.version(),
            ratio_create_p50: create_to_running.p50_ms / run_with_network.p50_ms,
            ratio_create_p95: create_to_running.p95_ms / run_with_network.p95_ms,
            ratio_create_on_network_p50: create_to_running.p50_ms / run_on_network.p50_ms,
            ratio_warm_p50: warm_start.p50_ms / start.p50_ms,
            ratio_warm_p95: warm_start.p95_ms / start.p95_ms,
            run_with_network,
            run_on_network,
            start,
        }
    });
    Report {
        trials,
        image: image.to_string(),
        create_to_running,
        warm_start,
        switch: Percentiles::of(switched),
        against,
    }
}

/// Waits before a timed step, so that each is measured on an engine no longer busy with the
/// step before (a destroy's network removal, an agent making a ready network after a create):
/// one workspace made on a host at rest, as a user makes one. Nexus and the engine alike.
fn quiet() {
    std::thread::sleep(Duration::from_millis(300));
}

/// The Docker engine driven through its own CLI, as a workspace's container is made: a network
/// of its own, an init, the small class's CPU and memory, a files directory mounted.
struct Engine {
    image: String,
    files: std::path::PathBuf,
    prefix: String,
}

impl Engine {
    fn new(image: &str, files: &std::path::Path) -> Engine {
        Engine {
            image: image.to_string(),
            files: files.to_path_buf(),
            prefix: format!("nexus-bench-engine-{}", std::process::id()),
        }
    }

    fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `docker network create` and `docker run -d`, timed together.
    fn run_with_network(&self, name: &str) -> Duration {
        self.network(name) + self.run(name)
    }

    /// `docker network create` of the network a container of this name joins, timed.
    fn network(&self, name: &str) -> Duration {
        self.docker(&["network", "create", &self.container(name)])
    }

    /// `docker run -d` of a container of this name onto its network, which exists; timed.
    fn run(&self, name: &str) -> Duration {
        let container = self.container(name);
        let mount = format!("{}:/workspace", self.files.display());
        self.docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            &container,
            "--init",
            "--cpus",
            "0.5",
            "--memory",
            "1g",
            "-v",
            &mount,
            &self.image,
            "sleep",
            "1000000",
        ])
    }

    /// Removes a container and its network (untimed).
    fn remove(&self, name: &str) {
        let container = self.container(name);
        self.docker(&["rm", "-f", &container]);
        self.docker(&["network", "rm", &container]);
    }

    /// One `docker` invocation, timed from spawn to exit; panics if it failed.
    fn docker(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }

    fn version(&self) -> String {
        let out = std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .unwrap();
        format!("docker {}", String::from_utf8_lossy(&out.stdout).trim())
    }
}

/// Runs one `nexus` CLI command as Ada and returns how long it took; panics if it failed.
fn timed_cli(pki: &TestPki, coordinators: &[std::net::SocketAddr], args: &[&str]) -> Duration {
    let identity = pki::user("ada", Role::User);
    let home = pki.scratch("home-ada");
    let mut command = nexus_tests::process::cli_command(pki, &identity, &home, coordinators);
    command.args(["-o", "json"]).args(args);
    let started = Instant::now();
    let out = command.output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "nexus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}
