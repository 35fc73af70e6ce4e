//! The `start` scenario: workspace start latency through the `nexus` CLI on Docker (create →
//! running, warm start, switch), each trial one CLI invocation timed from spawn to exit. It does
//! not look inside the CLI's phases; `docs/benchmarks.md` does that by hand.

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
}

/// What the `start` scenario measured: each a CLI invocation, from spawn to exit.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) trials: usize,
    pub(crate) image: String,
    pub(crate) create_to_running: Percentiles,
    pub(crate) warm_start: Percentiles,
    pub(crate) switch: Percentiles,
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

    let mut created = Vec::with_capacity(trials);
    for i in 0..trials {
        let name = format!("c{i}");
        created.push(timed(&create(&name)));
        timed(&["workspace".into(), "destroy".into(), name]);
    }
    timed(&create("warm"));
    let mut warm = Vec::with_capacity(trials);
    for _ in 0..trials {
        timed(&["workspace".into(), "stop".into(), "warm".into()]);
        warm.push(timed(&["workspace".into(), "start".into(), "warm".into()]));
    }
    timed(&create("other"));
    let mut switched = Vec::with_capacity(trials);
    for i in 0..trials {
        let target = if i % 2 == 0 { "warm" } else { "other" };
        switched.push(timed(&["workspace".into(), "switch".into(), target.into()]));
    }
    drop(agent);
    Report {
        trials,
        image: image.to_string(),
        create_to_running: Percentiles::of(created),
        warm_start: Percentiles::of(warm),
        switch: Percentiles::of(switched),
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
