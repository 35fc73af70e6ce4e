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
use nexus_protocol::HostId;
use nexus_protocol::RequestId;
use nexus_protocol::identity::{IdentityKind, Role};
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::transport::{Connector, TransportConfig};
use nexus_tests::cluster::{self, TestCluster};
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{CoordinatorProcess, Process, connect};
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
    /// Three real coordinators on loopback (synced RocksDB): the latency of one write at a time
    /// (at the leader, and at a follower that forwards it), and throughput with many in flight
    /// (Raft batches them into shared appends and fsyncs).
    Raft {
        #[arg(long, default_value_t = 1_000)]
        writes: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Three real coordinators and a steady stream of writes: SIGKILL the leader, and time until
    /// a write sent after the kill is acknowledged; restart the killed node, let it catch up,
    /// repeat. Then check that every acknowledged write is in the state of every member.
    Failover {
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Writes per second in the steady stream.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Writers of the stream, each with one write in flight.
        #[arg(long, default_value_t = 8)]
        writers: usize,
    },
    /// Workspace start latency through the `nexus` CLI, on Docker: three real coordinators and
    /// one real agent. Each trial is one CLI invocation, timed from spawn to exit (the CLI waits
    /// until the agent reports the workspace running): create → running, warm start (stopped →
    /// running, the same container) and switch (stop one, start the other).
    Start {
        #[arg(long, default_value_t = 50)]
        trials: usize,
        #[arg(long, default_value = "nexus-test/busybox:latest")]
        image: String,
    },
    /// File sync through a real agent (hollow runtime: the workspace's files directory is real)
    /// over QUIC with mTLS on loopback: the initial sync of a tree of N files, then the time of
    /// one sync cycle after a single-file change on the local side, over T trials.
    Sync {
        #[arg(long, default_value_t = 10_000)]
        files: usize,
        /// The tree's total size.
        #[arg(long, default_value_t = 200)]
        total_mb: usize,
        #[arg(long, default_value_t = 50)]
        trials: usize,
        /// Seconds between trials: spread over minutes, trials meet the sides' periodic full
        /// scans as a long session does.
        #[arg(long, default_value_t = 0.0)]
        spacing: f64,
    },
    /// Fleet-scale scheduling: three real coordinators and N hollow agents in this process (the
    /// real agent code on the simulated runtime, each with its own certificate and QUIC
    /// connection), then M workspace creates issued concurrently. Reports the placements
    /// committed per second, the time until every workspace runs as its agent reports it,
    /// create latency, the coordinators' CPU and memory, and the leader's heartbeat load; then
    /// checks that no host is over a limit and that no workspace is missing or doubled.
    Fleet {
        #[arg(long, default_value_t = 1_000)]
        hosts: usize,
        #[arg(long, default_value_t = 10_000)]
        workspaces: usize,
        /// Creates in flight at once.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
        /// Seconds between an agent's heartbeats (the agent's default is 5).
        #[arg(long, default_value_t = 5.0)]
        heartbeat: f64,
        /// Seconds the leader's idle load is measured before the creates.
        #[arg(long, default_value_t = 10)]
        idle: u64,
    },
    /// Dead-host detection: three real coordinators and N hollow agents. First the leader is
    /// killed K times (hosts marked down meanwhile are false downs: must be zero); then a share
    /// of the hosts dies at once, and the time until each is marked down is measured.
    Detect {
        #[arg(long, default_value_t = 1_000)]
        hosts: usize,
        /// The share of hosts killed, 0–1.
        #[arg(long, default_value_t = 0.1)]
        kill_share: f64,
        /// Leader kills before the hosts die.
        #[arg(long, default_value_t = 1)]
        failovers: usize,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 5.0)]
        heartbeat: f64,
        /// Seconds of silence before a host is marked down (the coordinator's --host-ttl, and
        /// its default).
        #[arg(long, default_value_t = 14.0)]
        ttl: f64,
    },
    /// The agent's footprint: a real nexus-agent process (defaults: 5 s heartbeats, 10 s stats)
    /// with N running workspaces assigned by an in-process coordinator, then idle for a while:
    /// its resident memory and CPU over the idle window.
    AgentIdle {
        /// docker or hollow.
        #[arg(long, default_value = "docker")]
        runtime: String,
        #[arg(long, default_value_t = 50)]
        workspaces: usize,
        /// Seconds of idling measured.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
}

/// Percentiles of durations, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let at =
        |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1000.0;
    json!({ "n": samples.len(), "p50_ms": at(50), "p95_ms": at(95), "p99_ms": at(99), "max_ms": at(100) })
}

/// CPU time in clock ticks (USER_HZ, 100 on Linux) as a share of one core over `over`, in %.
fn cpu_percent(ticks: u64, over: Duration) -> f64 {
    ticks as f64 / 100.0 / over.as_secs_f64() * 100.0
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

async fn start(trials: usize, image: &str) -> serde_json::Value {
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
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        timed_cli(&pki, &coordinators, &args)
    };
    // One untimed round first: the image's layers and the CLI's binary into the page cache.
    run(&create("warmup"));
    run(&["workspace".into(), "destroy".into(), "warmup".into()]);

    let mut created = Vec::with_capacity(trials);
    for i in 0..trials {
        let name = format!("c{i}");
        created.push(run(&create(&name)));
        run(&["workspace".into(), "destroy".into(), name]);
    }
    run(&create("warm"));
    let mut warm = Vec::with_capacity(trials);
    for _ in 0..trials {
        run(&["workspace".into(), "stop".into(), "warm".into()]);
        warm.push(run(&["workspace".into(), "start".into(), "warm".into()]));
    }
    run(&create("other"));
    let mut switched = Vec::with_capacity(trials);
    for i in 0..trials {
        let target = if i % 2 == 0 { "warm" } else { "other" };
        switched.push(run(&["workspace".into(), "switch".into(), target.into()]));
    }
    drop(agent);
    json!({
        "scenario": "start",
        "trials": trials,
        "image": image,
        "create_to_running": percentiles(created),
        "warm_start": percentiles(warm),
        "switch": percentiles(switched),
    })
}

async fn sync(
    files: usize,
    total_mb: usize,
    trials: usize,
    spacing: Duration,
) -> serde_json::Value {
    use nexus_sync::filter::Filter;
    use nexus_sync::remote::RemoteEndpoint;
    use nexus_sync::session::{Endpoint, LocalEndpoint, SessionState, cycle};

    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let host = format!("bench-sync-{}", std::process::id());
    let host_id: HostId = host.parse().unwrap();
    let agent = nexus_tests::process::AgentProcess::start(&pki, &host, &[coordinator.address], &[]);
    let registered = || async {
        let id = host_id.clone();
        coordinator
            .read(move |state| state.hosts().contains_key(&id))
            .await
            .then_some(())
    };
    nexus_tests::eventually("the agent to register", Duration::from_secs(30), registered).await;
    coordinator
        .place(&host_id, "tree", "img", &[], &["sleep", "1"])
        .await
        .unwrap();
    // Where the agent serves, asked as the workspace's owner; then the agent itself.
    let owner = pki::user("harness", Role::User);
    let address =
        nexus_tests::eventually("the agent's endpoint", Duration::from_secs(20), || async {
            let connection = connect(&pki, &owner, coordinator.address).await.ok()?;
            match connection
                .request(Request::Workspace(
                    nexus_protocol::message::WorkspaceRequest::Endpoint("tree".parse().unwrap()),
                ))
                .await
            {
                Ok(Response::Endpoint { address, .. }) => Some(address),
                _ => None,
            }
        })
        .await;
    let credentials =
        nexus_protocol::transport::Credentials::from_pki_dir(pki.dir(), &owner).unwrap();
    let connection = Connector::new(&credentials, TransportConfig::default())
        .unwrap()
        .connect(
            address.parse().unwrap(),
            "127.0.0.1",
            &[IdentityKind::Agent],
        )
        .await
        .unwrap();
    // The local tree: `files` files of random content, 100 to a directory.
    let local = pki.scratch("local-tree");
    let size = (total_mb << 20) / files;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |len: usize| {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    for i in 0..files {
        let dir = local.join(format!("d{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), noise(size)).unwrap();
    }
    let carrier = nexus_cli::sync::AgentCarrier::new(connection, "tree".parse().unwrap());
    // The wait the sync daemon holds open beside a session, on its own carrier.
    let mut waiting = RemoteEndpoint::new(carrier.clone(), vec![], true);
    let mut beta = RemoteEndpoint::new(carrier, vec![], true);
    let mut alpha = LocalEndpoint::new(&local, Filter::new(&[], true).unwrap());
    // Watched, as the sync daemon has it: a change is seen through its event.
    let (events, noticed) = std::sync::mpsc::channel();
    alpha
        .watch(move || {
            let _ = events.send(());
        })
        .unwrap();
    let mut state = SessionState::default();
    let started = Instant::now();
    loop {
        let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
        if report.quiet() {
            break;
        }
    }
    let initial = started.elapsed();
    let mut cycles = Vec::with_capacity(trials);
    let mut scans = Vec::with_capacity(trials);
    let mut remote_scans = Vec::with_capacity(trials);
    let mut told = Vec::with_capacity(trials);
    let mut remote_changes = Vec::with_capacity(trials);
    let workspace_files = agent.data_dir.join("workspaces").join("tree");
    for trial in 0..trials {
        if trial > 0 {
            tokio::time::sleep(spacing).await;
        }
        let path = local
            .join(format!("d{}", (trial * 37 % files) / 100))
            .join(format!("f{}", trial * 37 % files));
        while noticed.try_recv().is_ok() {}
        std::fs::write(&path, noise(size)).unwrap();
        let started = Instant::now();
        // From the write: the event, then the cycle.
        noticed.recv_timeout(Duration::from_secs(5)).unwrap();
        let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
        cycles.push(started.elapsed());
        assert_eq!(report.applied, 1, "{report:?}");
        // Both sides asked what changed since the cycle (nothing): the cost of a quiet look.
        let scanning = Instant::now();
        nexus_sync::session::refresh(&mut state, &mut alpha, &mut beta)
            .await
            .unwrap();
        scans.push(scanning.elapsed());
        // The workspace's whole tree, as a session that starts afresh asks for it.
        let remote = Instant::now();
        beta.scan(None).await.unwrap();
        remote_scans.push(remote.elapsed());
        // A change made in the workspace: from the write to the agent's answer to the wait
        // (`told`), then to the change landing here (the cycle after it).
        // The wait must be held before the write: one that ends first (an event of an earlier
        // write, late) measures nothing, and is held again.
        let (seen, wait) = loop {
            let seen = waiting.wait_change(0, 0).await.unwrap();
            let wait = tokio::spawn(async move {
                let count = waiting.wait_change(seen, 20_000).await;
                (waiting, count, Instant::now())
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !wait.is_finished() {
                break (seen, wait);
            }
            waiting = wait.await.unwrap().0;
        };
        let inside = workspace_files
            .join(format!("d{}", (trial * 53 % files) / 100))
            .join(format!("f{}", trial * 53 % files));
        let started = Instant::now();
        std::fs::write(&inside, noise(size)).unwrap();
        let (back, count, answered) = wait.await.unwrap();
        waiting = back;
        assert!(count.unwrap() > seen, "the wait ended without a change");
        told.push(answered - started);
        let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
        remote_changes.push(started.elapsed());
        assert_eq!(report.applied, 1, "{report:?}");
        // The write it made here echoes through this side's watcher: let that pass, so that
        // the next trial's event is its own.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let echo = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
        assert_eq!(echo.applied, 0, "{echo:?}");
        while noticed.try_recv().is_ok() {}
    }
    drop(agent);
    coordinator.stop().await;
    json!({
        "scenario": "sync",
        "files": files,
        "total_mb": total_mb,
        "initial_seconds": initial.as_secs_f64(),
        "spacing_seconds": spacing.as_secs_f64(),
        "change_cycle": percentiles(cycles),
        "quiet_look_both": percentiles(scans),
        "whole_remote_tree": percentiles(remote_scans),
        "workspace_change_told": percentiles(told),
        "workspace_change_landed": percentiles(remote_changes),
    })
}

async fn agent_idle(runtime: &str, workspaces: usize, seconds: u64) -> serde_json::Value {
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let host = format!("bench-{}", std::process::id());
    let host_id: HostId = host.parse().unwrap();
    pki.issue(&pki::agent(&host));
    let data_dir = pki.scratch("agent");
    let args: Vec<String> = [
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
    let agent = Process::spawn("nexus-agent", &args, data_dir.join("agent.log"));
    let pid = agent.pid();
    let registered = |host_id: HostId| {
        let coordinator = &coordinator;
        async move {
            coordinator
                .read(move |state| state.hosts().contains_key(&host_id))
                .await
                .then_some(())
        }
    };
    nexus_tests::eventually("the agent to register", Duration::from_secs(30), || {
        registered(host_id.clone())
    })
    .await;
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
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (_, cpu_before) = process_usage(pid);
    let window = Instant::now();
    let mut rss_samples = Vec::new();
    while window.elapsed() < Duration::from_secs(seconds) {
        rss_samples.push(process_usage(pid).0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (rss_end, cpu_after) = process_usage(pid);
    let elapsed = window.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (peak_kib, threads) = (field("VmHWM:"), field("Threads:"));
    let max_kib = rss_samples.iter().copied().max().unwrap_or(0);
    let mean_kib = rss_samples.iter().sum::<u64>() / rss_samples.len().max(1) as u64;
    // Clean up: stop the agent (or it would make again what is removed), then remove the
    // containers and networks it made.
    drop(agent);
    if runtime == "docker" {
        nexus_tests::docker::remove_host(&host);
    }
    coordinator.stop().await;
    json!({
        "scenario": "agent-idle",
        "runtime": runtime,
        "workspaces": workspaces,
        "seconds_to_all_running": to_running.as_secs_f64(),
        "idle_seconds": elapsed.as_secs_f64(),
        "agent_cpu_percent_of_one_core": cpu_percent(cpu_after.saturating_sub(cpu_before), elapsed),
        "agent_rss_mib": { "mean": mean_kib as f64 / 1024.0, "max": max_kib as f64 / 1024.0, "end": rss_end as f64 / 1024.0, "peak_ever": peak_kib as f64 / 1024.0 },
        "agent_threads": threads,
    })
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
            "coordinator_cpu_percent_of_one_core": cpu_percent(cpu_after.saturating_sub(cpu_before), elapsed),
        },
        "coordinator_rss_mib": rss_kib as f64 / 1024.0,
    })
}

/// One write: a host's agent (re-)registers it, which the cluster applies through Raft.
async fn register_once(
    connection: &nexus_protocol::transport::Connection,
    request_id: RequestId,
    limit: Duration,
) -> Result<(), nexus_protocol::WireError> {
    let host = match connection.client() {
        nexus_protocol::Identity::Agent(host) => host.clone(),
        other => panic!("{other} is not an agent"),
    };
    match connection
        .request_with(
            request_id,
            Request::Agent(AgentRequest::Register(cluster::host_info(host.as_str()))),
            limit,
        )
        .await?
    {
        Response::Registered { .. } => Ok(()),
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn raft(writes: usize, concurrency: usize) -> serde_json::Value {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster.leader(&pki, Duration::from_secs(20)).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    let follower_address = cluster
        .members
        .iter()
        .find(|m| m.id != leader.node.get())
        .unwrap()
        .address;
    let agent = pki::agent("bench-host");
    let at_leader = connect(&pki, &agent, leader_address).await.unwrap();
    let at_follower = connect(&pki, &agent, follower_address).await.unwrap();
    let limit = Duration::from_secs(10);
    let sequential = |connection: &nexus_protocol::transport::Connection| {
        let connection = connection.clone();
        async move {
            let mut samples = Vec::with_capacity(writes);
            for _ in 0..writes {
                let started = Instant::now();
                register_once(&connection, RequestId::random(), limit)
                    .await
                    .unwrap();
                samples.push(started.elapsed());
            }
            samples
        }
    };
    let leader_samples = sequential(&at_leader).await;
    let follower_samples = sequential(&at_follower).await;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = writes.div_ceil(concurrency);
    for _ in 0..concurrency {
        let connection = at_leader.clone();
        tasks.spawn(async move {
            for _ in 0..per_task {
                register_once(&connection, RequestId::random(), limit)
                    .await
                    .unwrap();
            }
        });
    }
    tasks.join_all().await;
    let elapsed = started.elapsed();
    let total = per_task * concurrency;
    let rss: Vec<f64> = cluster
        .running
        .iter()
        .flatten()
        .map(|p| process_usage(p.process.pid()).0 as f64 / 1024.0)
        .collect();
    json!({
        "scenario": "raft",
        "sequential_write_at_leader": percentiles(leader_samples.clone()),
        "sequential_write_at_follower": percentiles(follower_samples),
        "sequential_writes_per_second": writes as f64 / leader_samples.iter().sum::<Duration>().as_secs_f64(),
        "concurrent": {
            "in_flight": concurrency,
            "writes": total,
            "seconds": elapsed.as_secs_f64(),
            "writes_per_second": total as f64 / elapsed.as_secs_f64(),
        },
        "coordinator_rss_mib": rss,
    })
}

/// A write of the failover stream that the cluster acknowledged.
#[derive(Debug)]
struct Acked {
    host: HostId,
    /// When the attempt that succeeded was sent.
    sent: Instant,
    acked: Instant,
    /// From the write's first attempt to its acknowledgement.
    latency: Duration,
}

/// The failover scenario's client: writes one at a time until acknowledged, each a host's
/// registration under that host's own certificate (so that every acknowledged write leaves a
/// record of its own to look for afterwards), one request id throughout its retries (so that a
/// retry never applies twice). It sends to the member that last answered, and moves on to the
/// next on any failure, passing over for a while a member that did not answer at all (as a
/// client that knows its cluster does, rather than wait out a dead member's timeout each time).
struct FailoverWriter {
    base: Connector,
    addresses: Vec<std::net::SocketAddr>,
    target: std::sync::atomic::AtomicUsize,
    /// Per member: until when (ms after `epoch`) it is passed over.
    silent_until: Vec<std::sync::atomic::AtomicU64>,
    epoch: Instant,
}

impl FailoverWriter {
    async fn write(
        &self,
        host: HostId,
        credentials: &nexus_protocol::transport::Credentials,
    ) -> Acked {
        use std::sync::atomic::Ordering;
        let connector = self.base.sharing(credentials).unwrap();
        let request_id = RequestId::random();
        let first = Instant::now();
        let mut connection: Option<(usize, nexus_protocol::transport::Connection)> = None;
        loop {
            let index = self.target.load(Ordering::Relaxed);
            let sent = Instant::now();
            if connection.as_ref().is_none_or(|(at, _)| *at != index) {
                connection = connector
                    .connect(
                        self.addresses[index],
                        "127.0.0.1",
                        &[IdentityKind::Coordinator],
                    )
                    .await
                    .ok()
                    .map(|c| (index, c));
            }
            let result = match &connection {
                // 500 ms per attempt: a healthy write takes about 2 ms.
                Some((_, c)) => {
                    Some(register_once(c, request_id, Duration::from_millis(500)).await)
                }
                None => None,
            };
            if let Some(Ok(())) = result {
                let acked = Instant::now();
                return Acked {
                    host,
                    sent,
                    acked,
                    latency: acked - first,
                };
            }
            let next = match result {
                Some(Err(nexus_protocol::WireError {
                    detail:
                        Some(nexus_protocol::error::ErrorDetail::NotLeader {
                            address: Some(leader),
                            ..
                        }),
                    ..
                })) => self
                    .addresses
                    .iter()
                    .position(|a| a.to_string() == leader)
                    .unwrap_or((index + 1) % self.addresses.len()),
                other => {
                    let now = self.epoch.elapsed().as_millis() as u64;
                    // No connection, or a connection that failed: nobody there.
                    if other.as_ref().is_none_or(|result| {
                        result
                            .as_ref()
                            .is_err_and(|e| e.code == nexus_protocol::ErrorCode::NetworkError)
                    }) {
                        self.silent_until[index].store(now + 2_000, Ordering::Relaxed);
                    }
                    let members = self.addresses.len();
                    (1..=members)
                        .map(|step| (index + step) % members)
                        .find(|m| self.silent_until[*m].load(Ordering::Relaxed) <= now)
                        .unwrap_or((index + 1) % members)
                }
            };
            let _ = self
                .target
                .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
            connection = None;
            // A quick refusal (no leader yet) waits a little rather than spin on the two cores
            // the election needs.
            if sent.elapsed() < Duration::from_millis(10) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                first.elapsed() < Duration::from_secs(60),
                "a write of {host} was not acknowledged within 60 s"
            );
        }
    }
}

async fn failover(kills: usize, rate: f64, writers: usize) -> serde_json::Value {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let pki = Arc::new(TestPki::new());
    // The stream's hosts never heartbeat: an hour's TTL keeps the leader from marking them down
    // (a burst of writes of its own) in the middle of the measurement.
    let mut cluster = TestCluster::start(&pki, 3, &["--host-ttl", "3600"]).await;
    cluster.leader(&pki, Duration::from_secs(30)).await;
    let addresses: Vec<std::net::SocketAddr> = cluster.members.iter().map(|m| m.address).collect();

    // Each write needs a certificate of its own. A thread issues them ahead of the stream, a
    // few seconds' worth at a time, so signing keeps pace without a burst during an election.
    let (credentials_tx, credentials_rx) = tokio::sync::mpsc::channel::<(
        HostId,
        nexus_protocol::transport::Credentials,
    )>((rate * 5.0) as usize + 16);
    let stop = Arc::new(AtomicBool::new(false));
    let issuer = {
        let pki = pki.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            // In batches: each batch loads the CA once.
            for batch in 0usize.. {
                let hosts: Vec<HostId> = (batch * 64..(batch + 1) * 64)
                    .map(|n| HostId::new(format!("w-{n:07}")).unwrap())
                    .collect();
                let issued = pki.issue_agents_in_memory(&hosts);
                for pair in hosts.into_iter().zip(issued) {
                    if stop.load(Ordering::Relaxed) || credentials_tx.blocking_send(pair).is_err() {
                        return;
                    }
                }
            }
        })
    };
    let credentials_rx = Arc::new(tokio::sync::Mutex::new(credentials_rx));
    let config = TransportConfig {
        handshake_timeout: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    let writer = Arc::new(FailoverWriter {
        base: Connector::new(
            &pki.issue_in_memory(&[pki::agent("w-base")]).pop().unwrap(),
            config,
        )
        .unwrap(),
        addresses: addresses.clone(),
        target: AtomicUsize::new(0),
        silent_until: addresses.iter().map(|_| Default::default()).collect(),
        epoch: Instant::now(),
    });
    let acked: Arc<std::sync::Mutex<Vec<Acked>>> = Arc::default();
    let tickets = Arc::new(AtomicUsize::new(0));
    let stream_started = Instant::now();
    let mut stream = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (writer, acked, tickets, stop, credentials_rx) = (
            writer.clone(),
            acked.clone(),
            tickets.clone(),
            stop.clone(),
            credentials_rx.clone(),
        );
        stream.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A steady rate: the n-th write is due n/rate seconds into the stream.
                let n = tickets.fetch_add(1, Ordering::Relaxed);
                let due = stream_started + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let Some((host, credentials)) = credentials_rx.lock().await.recv().await else {
                    break;
                };
                let done = writer.write(host, &credentials).await;
                acked.lock().unwrap().push(done);
            }
        });
    }

    let mut samples = Vec::with_capacity(kills);
    let mut elections = Vec::with_capacity(kills);
    for round in 0..kills {
        let leader = cluster.leader(&pki, Duration::from_secs(30)).await;
        // Every member healthy, as the leader sees it, and a second of the steady stream before
        // the kill.
        cluster::wait_healthy(&pki, &cluster, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let victim = cluster.index_of(leader.node.get());
        let seen = acked.lock().unwrap().len();
        let killed_at = Instant::now();
        cluster.kill(victim);
        // The first write sent after the kill and acknowledged: the stream flows again.
        let resumed =
            nexus_tests::eventually("a write after the kill", Duration::from_secs(30), || {
                let acked = acked.clone();
                async move {
                    acked.lock().unwrap()[seen..]
                        .iter()
                        .filter(|a| a.sent >= killed_at)
                        .map(|a| a.acked)
                        .min()
                }
            })
            .await;
        samples.push(resumed - killed_at);
        let new_leader = cluster.leader(&pki, Duration::from_secs(30)).await;
        elections.push(new_leader.term - leader.term);
        println!(
            "round {round}: leader {} killed, writes again after {:.0} ms (new leader {}, term +{})",
            leader.node,
            (resumed - killed_at).as_secs_f64() * 1000.0,
            new_leader.node,
            new_leader.term - leader.term
        );
        cluster.restart(&pki, victim).await;
    }
    stop.store(true, Ordering::Relaxed);
    // Writes in flight finish (each until acknowledged); the issuer stops at its next send.
    stream.join_all().await;
    drop(credentials_rx);
    issuer.join().unwrap();
    let stream_seconds = stream_started.elapsed().as_secs_f64();
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    // No acknowledged write may be missing: at the leader (a linearizable read), and on every
    // member once it has caught up.
    cluster.leader(&pki, Duration::from_secs(30)).await;
    cluster::wait_healthy(&pki, &cluster, Duration::from_secs(30)).await;
    let missing_of = |hosts: &[HostId]| {
        let present: std::collections::HashSet<&HostId> = hosts.iter().collect();
        acked.iter().filter(|a| !present.contains(&a.host)).count()
    };
    let at_leader = match cluster::admin_to_leader(
        &pki,
        addresses[0],
        Request::Admin(nexus_protocol::message::AdminRequest::Hosts),
    )
    .await
    .unwrap()
    {
        Response::Hosts(hosts) => {
            let ids: Vec<HostId> = hosts.into_iter().map(|h| h.info.host_id).collect();
            missing_of(&ids)
        }
        other => panic!("unexpected answer {other:?}"),
    };
    let mut on_members = Vec::new();
    for address in &addresses {
        let started = Instant::now();
        let missing = loop {
            let missing = missing_of(&cluster::replica_hosts(&pki, *address).await.unwrap());
            if missing == 0 || started.elapsed() > Duration::from_secs(30) {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        on_members.push(missing);
    }
    let mut acks: Vec<Instant> = acked.iter().map(|a| a.acked).collect();
    acks.sort();
    let longest_gap = acks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    json!({
        "scenario": "failover",
        "kill_to_first_write": percentiles(samples),
        "terms_per_failover_max": elections.iter().max(),
        "stream": {
            "writers": writers,
            "rate_asked": rate,
            "acknowledged": acked.len(),
            "writes_per_second": acked.len() as f64 / stream_seconds,
            "latency": percentiles(acked.iter().map(|a| a.latency).collect()),
            "longest_gap_ms": longest_gap.as_secs_f64() * 1000.0,
        },
        "acknowledged_missing_at_leader": at_leader,
        "acknowledged_missing_on_members": on_members,
    })
}

/// CPU time (clock ticks) and resident memory (KiB) of a set of processes, to take differences.
fn usage_of(pids: &[u32]) -> Vec<(u64, u64)> {
    pids.iter().map(|pid| process_usage(*pid)).collect()
}

/// Each process's share of one core between two readings, and its resident memory at the end.
fn cpu_and_rss(before: &[(u64, u64)], after: &[(u64, u64)], over: Duration) -> serde_json::Value {
    before
        .iter()
        .zip(after)
        .map(|((_, cpu0), (rss, cpu1))| {
            json!({
                "cpu_percent_of_one_core": cpu_percent(cpu1.saturating_sub(*cpu0), over),
                "rss_mib": *rss as f64 / 1024.0,
            })
        })
        .collect()
}

/// The fleet in numbers, as the coordinator at `address` has applied it (a stale read: no
/// round to the leader, and any replica answers).
async fn fleet_stats(
    connection: &nexus_protocol::transport::Connection,
) -> Option<nexus_protocol::message::FleetStats> {
    use nexus_protocol::message::{AdminRequest, StaleRead};
    match connection
        .request_with(
            RequestId::random(),
            Request::Stale(StaleRead::Admin(AdminRequest::Stats)),
            Duration::from_secs(30),
        )
        .await
    {
        Ok(Response::FleetStats(stats)) => Some(stats),
        _ => None,
    }
}

fn count_of<T: PartialEq>(counts: &[(T, u32)], what: &T) -> usize {
    counts
        .iter()
        .filter(|(state, _)| state == what)
        .map(|(_, n)| *n as usize)
        .sum()
}

/// Waits until `count` of the fleet's stats reaches `wanted`; answers how long it took.
async fn until_count(
    connection: &nexus_protocol::transport::Connection,
    what: &str,
    wanted: usize,
    limit: Duration,
    count: impl Fn(&nexus_protocol::message::FleetStats) -> usize,
) -> Duration {
    let started = Instant::now();
    let mut last = None;
    let mut told = Instant::now();
    loop {
        if let Some(stats) = fleet_stats(connection).await {
            if count(&stats) >= wanted {
                return started.elapsed();
            }
            last = Some(stats);
        }
        if told.elapsed() > Duration::from_secs(10) {
            println!("  waiting for {what}: {last:?}");
            told = Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not {wanted} after {limit:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a hollow host's agent saved of `workspace` in its desired state: whether its agent
/// ever took the assignment (the diagnosis of a workspace that never ran).
fn agent_holds(data_dir: &std::path::Path, workspace: &str) -> String {
    let saved = std::fs::read(data_dir.join("agent-state.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let Some(desired) = saved.as_ref().map(|s| &s["desired"]) else {
        return "no saved state".into();
    };
    let assignment = desired["assignments"].as_array().and_then(|all| {
        all.iter()
            .find(|a| a["spec"]["name"].as_str() == Some(workspace))
    });
    format!(
        "the agent holds desired version {} with {} assignments; this one: {}",
        desired["version"],
        desired["assignments"].as_array().map_or(0, Vec::len),
        assignment.map_or("absent".into(), |a| format!(
            "generation {}, run {}",
            a["generation"], a["run"]
        ))
    )
}

/// Three coordinators with `extra` flags, and a hollow fleet of `hosts` heartbeating every
/// `heartbeat` seconds, all registered and ready. Answers how long the fleet took to come up.
async fn cluster_and_fleet(
    pki: &TestPki,
    hosts: usize,
    heartbeat: f64,
    extra: &[&str],
) -> (TestCluster, nexus_tests::fleet::HollowFleet, Duration) {
    use nexus_protocol::model::HostStatus;
    let cluster = TestCluster::start(pki, 3, extra).await;
    cluster.leader(pki, Duration::from_secs(30)).await;
    let options = nexus_tests::fleet::FleetOptions {
        prefix: "h".into(),
        hosts,
        heartbeat_interval: Duration::from_secs_f64(heartbeat),
        ..nexus_tests::fleet::FleetOptions::default()
    };
    let started = Instant::now();
    let fleet =
        nexus_tests::fleet::HollowFleet::start(pki, &cluster.live_addresses(), &options).await;
    let observer = connect(
        pki,
        &pki::user("observer", Role::Admin),
        cluster.members[0].address,
    )
    .await
    .unwrap();
    until_count(
        &observer,
        "hosts ready",
        hosts,
        Duration::from_secs(600),
        |s| count_of(&s.hosts, &HostStatus::Ready),
    )
    .await;
    let up = started.elapsed();
    println!(
        "{hosts} hollow hosts registered and ready in {:.1} s",
        up.as_secs_f64()
    );
    (cluster, fleet, up)
}

async fn fleet(
    hosts: usize,
    workspaces: usize,
    concurrency: usize,
    heartbeat: f64,
    idle: u64,
) -> serde_json::Value {
    use nexus_protocol::message::{AdminRequest, WorkspaceRequest};
    use nexus_protocol::model::{ResourceClass, WorkspaceSpec, WorkspaceState};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let pki = TestPki::new();
    let (cluster, fleet, up) = cluster_and_fleet(&pki, hosts, heartbeat, &[]).await;
    let leader = cluster.leader(&pki, Duration::from_secs(30)).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    let pids: Vec<u32> = cluster
        .running
        .iter()
        .map(|p| p.as_ref().unwrap().process.pid())
        .collect();
    let leader_index = cluster.index_of(leader.node.get());

    // The leader's load with the fleet idle: heartbeats and nothing else.
    let before = usage_of(&pids);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let idle_usage = cpu_and_rss(&before, &usage_of(&pids), window.elapsed());
    println!(
        "idle, {hosts} hosts heartbeating every {heartbeat} s ({:.0}/s): leader at {:.1} % of a core",
        hosts as f64 / heartbeat,
        idle_usage[leader_index]["cpu_percent_of_one_core"]
            .as_f64()
            .unwrap_or(0.0)
    );

    // M creates, `concurrency` in flight, over a few connections to the leader.
    let user = pki::user("fleet", Role::User);
    // Four connections to each coordinator; a task starts on the leader's and, like the CLI,
    // moves where a NOT_LEADER answer points, retrying with the same request id (so a create
    // whose answer was lost is answered with its first outcome, never made twice).
    let mut connections = Vec::new();
    for _ in 0..4 {
        for member in &cluster.members {
            let connection = connect(&pki, &user, member.address).await.unwrap();
            connections.push((member.address, Arc::new(connection)));
        }
    }
    let connections = Arc::new(connections);
    let next = Arc::new(AtomicUsize::new(0));
    let before = usage_of(&pids);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let connections = connections.clone();
        let mut at = connections
            .iter()
            .enumerate()
            .filter(|(_, (address, _))| *address == leader_address)
            .map(|(index, _)| index)
            .nth(task % 4)
            .unwrap();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= workspaces {
                    return (latencies, refused);
                }
                let spec = WorkspaceSpec {
                    name: format!("w{i}").parse().unwrap(),
                    image: "hollow".into(),
                    class: ResourceClass::Small,
                    ports: Vec::new(),
                    env: Default::default(),
                    labels: Default::default(),
                    command: Vec::new(),
                    host: None,
                };
                let sent = Instant::now();
                let request_id = RequestId::random();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let answer = connections[at]
                        .1
                        .request_with(
                            request_id,
                            Request::Workspace(WorkspaceRequest::Create(spec.clone())),
                            Duration::from_secs(30),
                        )
                        .await;
                    match answer {
                        Ok(Response::Workspace(_)) => latencies.push(sent.elapsed()),
                        Err(error)
                            if attempts < 20
                                && matches!(
                                    error.code,
                                    nexus_protocol::ErrorCode::NotLeader
                                        | nexus_protocol::ErrorCode::Timeout
                                        | nexus_protocol::ErrorCode::NetworkError
                                ) =>
                        {
                            let leader = match &error.detail {
                                Some(nexus_protocol::error::ErrorDetail::NotLeader {
                                    address: Some(address),
                                    ..
                                }) => address.parse::<std::net::SocketAddr>().ok(),
                                _ => None,
                            };
                            at = match leader {
                                Some(leader) => connections
                                    .iter()
                                    .position(|(address, _)| *address == leader)
                                    .unwrap_or(at),
                                None => {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    (at + 1) % connections.len()
                                }
                            };
                            continue;
                        }
                        other => refused.push(format!("w{i}: {other:?}")),
                    }
                    break;
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(workspaces);
    let mut refused = Vec::new();
    for task in tasks {
        let (l, r) = task.await.unwrap();
        latencies.extend(l);
        refused.extend(r);
    }
    let placed_in = started.elapsed();
    let placed = latencies.len();
    println!(
        "{placed} placements committed in {:.2} s ({:.0}/s), {} refused",
        placed_in.as_secs_f64(),
        placed as f64 / placed_in.as_secs_f64(),
        refused.len()
    );
    for refusal in refused.iter().take(5) {
        println!("  refused: {refusal}");
    }
    let observer = connect(&pki, &pki::user("observer", Role::Admin), leader_address)
        .await
        .unwrap();
    // Until every placed workspace runs, or the count has not moved for a minute: then the ones
    // left are reported (and counted missing below), not waited on for ever.
    let mut running = 0;
    let mut moved = Instant::now();
    while running < placed && moved.elapsed() < Duration::from_secs(60) {
        if let Some(stats) = fleet_stats(&observer).await {
            let now = count_of(&stats.workspaces, &WorkspaceState::Running);
            if now != running {
                running = now;
                moved = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running_in = if running == placed {
        started.elapsed()
    } else {
        moved.duration_since(started)
    };
    if running < placed {
        let logs = std::env::temp_dir().join("nexus-bench-fleet-coordinators.log");
        std::fs::write(&logs, cluster.logs()).unwrap();
        println!(
            "{} placed workspaces never ran (the coordinators' logs: {}):",
            placed - running,
            logs.display()
        );
        let list = observer
            .request_with(
                RequestId::random(),
                Request::Workspace(WorkspaceRequest::List),
                Duration::from_secs(60),
            )
            .await;
        let statuses = match cluster::admin_to_leader(
            &pki,
            leader_address,
            Request::Admin(AdminRequest::Hosts),
        )
        .await
        {
            Ok(Response::Hosts(hosts)) => hosts
                .into_iter()
                .map(|h| (h.info.host_id, (h.status, h.last_heartbeat)))
                .collect(),
            _ => std::collections::BTreeMap::new(),
        };
        if let Ok(Response::Workspaces(views)) = list {
            for view in views
                .iter()
                .filter(|v| v.state != WorkspaceState::Running)
                .take(20)
            {
                let host = fleet
                    .hosts
                    .iter()
                    .find(|h| Some(&h.id) == view.host.as_ref());
                let held = match host {
                    Some(h) => format!(
                        "alive {}, {:?} to the leader, {} containers; {}",
                        h.alive(),
                        statuses.get(&h.id),
                        nexus_agent::runtime::Runtime::list(h.runtime.as_ref())
                            .await
                            .map(|l| l.len())
                            .unwrap_or(0),
                        agent_holds(&h.data_dir, view.name.as_str())
                    ),
                    None => "no such host".into(),
                };
                println!(
                    "  {} {:?} on {:?}: {held}",
                    view.name, view.state, view.host
                );
            }
        }
    }
    let busy_usage = cpu_and_rss(&before, &usage_of(&pids), running_in);
    println!(
        "{running} of {placed} running (as their agents report) {:.2} s after the first create",
        running_in.as_secs_f64()
    );

    // Verify: every workspace placed is on exactly one live host, nothing else exists, and no
    // host holds more than its limits allow.
    let containers = fleet.containers().await;
    let missing = (0..workspaces)
        .filter(|i| !containers.contains_key(&format!("w{i}").parse().unwrap()))
        .count()
        .saturating_sub(refused.len());
    let doubled = containers.values().filter(|hosts| hosts.len() > 1).count();
    let unexpected = containers.len().saturating_sub(placed);
    let limits =
        match cluster::admin_to_leader(&pki, leader_address, Request::Admin(AdminRequest::Limits))
            .await
        {
            Ok(Response::Limits(limits)) => limits,
            other => panic!("no limits: {other:?}"),
        };
    let options = nexus_tests::fleet::FleetOptions::default();
    let per_host = {
        let mut counts = std::collections::BTreeMap::new();
        for hosts in containers.values() {
            for host in hosts {
                *counts.entry(host.clone()).or_insert(0u64) += 1;
            }
        }
        counts
    };
    let small = ResourceClass::Small.resources();
    let cluster_limits = &limits.cluster;
    let over_limit = per_host
        .values()
        .filter(|&&n| {
            n > u64::from(cluster_limits.max_workspaces_per_host)
                || n * u64::from(small.cpu_millis) * 100
                    > u64::from(options.cpus)
                        * 1000
                        * u64::from(cluster_limits.cpu_overcommit_percent)
                || n * small.memory_bytes * 100
                    > options.memory_mib
                        * 1024
                        * 1024
                        * u64::from(cluster_limits.memory_overcommit_percent)
        })
        .count();
    println!(
        "check: {missing} missing, {doubled} on two hosts, {unexpected} unexpected, {over_limit} hosts over a limit (all must be 0); busiest host {}",
        per_host.values().max().unwrap_or(&0)
    );
    json!({
        "scenario": "fleet",
        "hosts": hosts,
        "workspaces": workspaces,
        "concurrency": concurrency,
        "heartbeat_seconds": heartbeat,
        "fleet_up_seconds": up.as_secs_f64(),
        "idle": { "seconds": idle, "heartbeats_per_second": hosts as f64 / heartbeat, "coordinators": idle_usage, "leader": leader_index },
        "placed": placed,
        "refused": refused.len(),
        "placement_seconds": placed_in.as_secs_f64(),
        "placements_per_second": placed as f64 / placed_in.as_secs_f64(),
        "running": running,
        "all_running_seconds": running_in.as_secs_f64(),
        "create_latency": percentiles(latencies),
        "busy": { "coordinators": busy_usage },
        "check": { "missing": missing, "doubled": doubled, "unexpected": unexpected, "hosts_over_limit": over_limit },
    })
}

async fn detect(
    hosts: usize,
    kill_share: f64,
    failovers: usize,
    heartbeat: f64,
    ttl: f64,
) -> serde_json::Value {
    use nexus_protocol::model::HostStatus;
    let pki = TestPki::new();
    let ttl_flag = ttl.to_string();
    let (mut cluster, fleet, up) =
        cluster_and_fleet(&pki, hosts, heartbeat, &["--host-ttl", &ttl_flag]).await;
    let admin = pki::user("observer", Role::Admin);
    let down = |s: &nexus_protocol::message::FleetStats| count_of(&s.hosts, &HostStatus::Down);

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
        false_downs += most;
        cluster.restart(&pki, victim).await;
        // The ones marked down come back with their next heartbeat.
        until_count(
            &observer,
            "hosts ready again",
            hosts,
            Duration::from_secs(120),
            |s| count_of(&s.hosts, &HostStatus::Ready),
        )
        .await;
    }

    // Kill a share of the hosts at once; time each one's marking down.
    let killed_count = ((hosts as f64 * kill_share).round() as usize).clamp(1, hosts);
    let step = hosts / killed_count;
    let victims: Vec<usize> = (0..killed_count).map(|i| i * step).collect();
    let observer = connect(&pki, &admin, cluster.live_addresses()[0])
        .await
        .unwrap();
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
    json!({
        "scenario": "detect",
        "hosts": hosts,
        "heartbeat_seconds": heartbeat,
        "ttl_seconds": ttl,
        "fleet_up_seconds": up.as_secs_f64(),
        "failovers": failovers,
        "leader_elected_after": percentiles(failover_times),
        "false_downs_after_failover": false_downs,
        "killed": killed_count,
        "detected": detections.len(),
        "kill_to_down": percentiles(detections),
        "live_hosts_marked_down": extra_downs,
    })
}

fn print_table(result: &serde_json::Value) {
    match result["scenario"].as_str() {
        Some("raft") => return print_raft(result),
        Some("failover") => {
            print_percentiles(
                "kill -9 leader → a write sent after it acknowledged",
                &result["kill_to_first_write"],
            );
            let stream = &result["stream"];
            println!(
                "stream: {} writes acknowledged ({:.0}/s), longest gap {:.0} ms",
                stream["acknowledged"],
                stream["writes_per_second"].as_f64().unwrap_or(0.0),
                stream["longest_gap_ms"].as_f64().unwrap_or(0.0)
            );
            print_percentiles("write, first attempt → acknowledged", &stream["latency"]);
            println!(
                "acknowledged writes missing: {} at the leader, {} on the members",
                result["acknowledged_missing_at_leader"], result["acknowledged_missing_on_members"]
            );
            return;
        }
        Some("fleet") => {
            println!(
                "{} hosts, {} workspaces: {:.0} placements/s, all running after {:.2} s, {} refused",
                result["hosts"],
                result["workspaces"],
                result["placements_per_second"].as_f64().unwrap_or(0.0),
                result["all_running_seconds"].as_f64().unwrap_or(0.0),
                result["refused"]
            );
            print_percentiles("create (placed and committed)", &result["create_latency"]);
            println!("idle coordinators: {}", result["idle"]["coordinators"]);
            println!("busy coordinators: {}", result["busy"]["coordinators"]);
            println!("check: {}", result["check"]);
            return;
        }
        Some("detect") => {
            print_percentiles("kill → marked down", &result["kill_to_down"]);
            println!(
                "{} of {} killed hosts detected; false downs after {} failovers: {}; live hosts marked down: {}",
                result["detected"],
                result["killed"],
                result["failovers"],
                result["false_downs_after_failover"],
                result["live_hosts_marked_down"]
            );
            return;
        }
        Some("sync") => {
            println!(
                "initial sync of {} files ({} MB): {:.2} s",
                result["files"],
                result["total_mb"],
                result["initial_seconds"].as_f64().unwrap_or(0.0)
            );
            print_percentiles("single-file change, one cycle", &result["change_cycle"]);
            print_percentiles(
                "a quiet look at both sides (changes since)",
                &result["quiet_look_both"],
            );
            print_percentiles(
                "the workspace's whole tree (a fresh session)",
                &result["whole_remote_tree"],
            );
            print_percentiles(
                "a change in the workspace → the wait told",
                &result["workspace_change_told"],
            );
            print_percentiles(
                "a change in the workspace → landed here",
                &result["workspace_change_landed"],
            );
            return;
        }
        Some("start") => {
            for (name, key) in [
                ("create → running (CLI, Docker)", "create_to_running"),
                ("warm start: stopped → running", "warm_start"),
                ("switch: stop one, start the other", "switch"),
            ] {
                print_percentiles(name, &result[key]);
            }
            return;
        }
        Some("agent-idle") => {
            let rss = &result["agent_rss_mib"];
            let mib = |key: &str| rss[key].as_f64().unwrap_or(0.0);
            println!(
                "agent ({} runtime, {} workspaces, all running after {:.1} s), idle {:.0} s: CPU {:.3}% of one core; RSS mean {:.1} / max {:.1} / end {:.1} MiB (peak ever {:.1}); {} threads",
                result["runtime"].as_str().unwrap_or("?"),
                result["workspaces"],
                result["seconds_to_all_running"].as_f64().unwrap_or(0.0),
                result["idle_seconds"].as_f64().unwrap_or(0.0),
                result["agent_cpu_percent_of_one_core"]
                    .as_f64()
                    .unwrap_or(0.0),
                mib("mean"),
                mib("max"),
                mib("end"),
                mib("peak_ever"),
                result["agent_threads"],
            );
            return;
        }
        _ => {}
    }
    for (name, key) in [
        ("connection setup (QUIC + mTLS + hello)", "connection_setup"),
        ("request round trip (sequential)", "sequential_round_trip"),
    ] {
        print_percentiles(name, &result[key]);
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

fn print_percentiles(name: &str, p: &serde_json::Value) {
    let ms = |v: &serde_json::Value| format!("{:.3}", v.as_f64().unwrap_or(0.0));
    println!(
        "{name:<42} n={:<6} p50 {} ms  p95 {} ms  p99 {} ms  max {} ms",
        p["n"],
        ms(&p["p50_ms"]),
        ms(&p["p95_ms"]),
        ms(&p["p99_ms"]),
        ms(&p["max_ms"])
    );
}

fn print_raft(result: &serde_json::Value) {
    print_percentiles(
        "write at the leader (one at a time)",
        &result["sequential_write_at_leader"],
    );
    print_percentiles(
        "write at a follower (forwarded)",
        &result["sequential_write_at_follower"],
    );
    let c = &result["concurrent"];
    println!(
        "{:<42} {:.0} writes/s with {} in flight ({} writes)",
        "write throughput",
        c["writes_per_second"].as_f64().unwrap_or(0.0),
        c["in_flight"],
        c["writes"]
    );
    println!(
        "{:<42} {} MiB",
        "coordinators' memory after", result["coordinator_rss_mib"]
    );
}

#[tokio::main]
async fn main() {
    // The in-process agents (fleet, detect, sync) log only when asked: NEXUS_LOG=warn, say.
    nexus_protocol::logging::init("off");
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Transport {
            connections,
            requests,
            concurrency,
        } => transport(connections, requests, concurrency.max(1)).await,
        Scenario::Raft {
            writes,
            concurrency,
        } => raft(writes.max(1), concurrency.max(1)).await,
        Scenario::Failover {
            kills,
            rate,
            writers,
        } => failover(kills.max(1), rate.max(1.0), writers.max(1)).await,
        Scenario::Start { trials, image } => start(trials.max(1), &image).await,
        Scenario::Sync {
            files,
            total_mb,
            trials,
            spacing,
        } => {
            let spacing = Duration::from_secs_f64(spacing.clamp(0.0, 3_600.0));
            sync(files.max(1), total_mb, trials.max(1), spacing).await
        }
        Scenario::Fleet {
            hosts,
            workspaces,
            concurrency,
            heartbeat,
            idle,
        } => {
            fleet(
                hosts.max(1),
                workspaces,
                concurrency.max(1),
                heartbeat,
                idle,
            )
            .await
        }
        Scenario::Detect {
            hosts,
            kill_share,
            failovers,
            heartbeat,
            ttl,
        } => detect(hosts.max(1), kill_share, failovers, heartbeat, ttl).await,
        Scenario::AgentIdle {
            runtime,
            workspaces,
            seconds,
        } => agent_idle(&runtime, workspaces, seconds).await,
    };
    print_table(&result);
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    }
}
