//! The `sync` scenario: file sync through a real agent on the hollow runtime over QUIC; the
//! initial sync of a tree, then single-file changes on either side, timed cycle by cycle.

use std::time::{Duration, Instant};

use nexus_protocol::HostId;
use nexus_protocol::identity::{IdentityKind, Role};
use nexus_protocol::message::{Request, Response};
use nexus_protocol::transport::{Connector, TransportConfig};
use nexus_sync::endpoint::Endpoint;
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::remote::RemoteEndpoint;
use nexus_sync::session::{SessionState, cycle};
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::connect;
use serde::Serialize;

use crate::measure::Percentiles;
use crate::setup::until_registered;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 10_000)]
    pub(crate) files: usize,
    /// The tree's total size.
    #[arg(long, default_value_t = 200)]
    pub(crate) total_mb: usize,
    #[arg(long, default_value_t = 50)]
    pub(crate) trials: usize,
    /// Seconds between trials: spread over minutes, trials meet the sides' periodic full
    /// scans as a long session does.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) spacing: f64,
}

/// What the `sync` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) files: usize,
    pub(crate) total_mb: usize,
    pub(crate) initial_seconds: f64,
    pub(crate) spacing_seconds: f64,
    /// A single-file change here: from the write to the end of the cycle that carried it.
    pub(crate) change_cycle: Percentiles,
    /// Both sides asked what changed since the last cycle, with nothing changed.
    pub(crate) quiet_look_both: Percentiles,
    /// The workspace's whole tree, as a fresh session asks for it.
    pub(crate) whole_remote_tree: Percentiles,
    /// A change in the workspace: from the write to the agent's answer to the wait.
    pub(crate) workspace_change_told: Percentiles,
    /// A change in the workspace: from the write to its landing here.
    pub(crate) workspace_change_landed: Percentiles,
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        files,
        total_mb,
        trials,
        spacing,
    } = args;
    let (files, trials) = (files.max(1), trials.max(1));
    let spacing = Duration::from_secs_f64(spacing.clamp(0.0, 3_600.0));
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let host = format!("bench-sync-{}", std::process::id());
    let host_id: HostId = host.parse().unwrap();
    let agent = nexus_tests::process::AgentProcess::start(&pki, &host, &[coordinator.address], &[]);
    until_registered(&coordinator, &host_id).await;
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
    Report {
        files,
        total_mb,
        initial_seconds: initial.as_secs_f64(),
        spacing_seconds: spacing.as_secs_f64(),
        change_cycle: Percentiles::of(cycles),
        quiet_look_both: Percentiles::of(scans),
        whole_remote_tree: Percentiles::of(remote_scans),
        workspace_change_told: Percentiles::of(told),
        workspace_change_landed: Percentiles::of(remote_changes),
    }
}
