//! The `sync` scenario: file sync through a real agent on the hollow runtime over QUIC; the
//! initial sync of a tree, then single-file changes on either side, timed cycle by cycle.
//!
//! With `--against unison`, Debian's `unison` syncs a copy of the same tree between two local
//! directories (no network: it runs both replicas itself) right after Nexus's initial sync, and
//! once after each Nexus trial with one file changed; `rsync -a` makes the one-way initial copy
//! of the same tree. Each a process timed from spawn to exit, under the same load as Nexus's.

use std::time::{Duration, Instant};

use nexus_protocol::HostId;
use nexus_protocol::identity::{IdentityKind, Role};
use nexus_protocol::message::{Request, Response};
use nexus_protocol::transport::Connector;
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
    /// Also a peer on the same tree, its runs interleaved with Nexus's.
    #[arg(long, value_enum)]
    pub(crate) against: Option<Peer>,
}

/// One cycle of the initial sync.
#[derive(Debug, Serialize)]
pub(crate) struct InitialCycle {
    pub(crate) seconds: f64,
    pub(crate) applied: usize,
}

/// The peers the sync scenario runs beside Nexus.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Peer {
    /// Debian's unison (and rsync, for the one-way initial copy).
    Unison,
}

/// What the `sync` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) files: usize,
    pub(crate) total_mb: usize,
    pub(crate) initial_seconds: f64,
    /// The initial sync's cycles: how long each took and how many changes it applied.
    pub(crate) initial_cycles: Vec<InitialCycle>,
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
    /// The peers' times on the same tree, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) against: Option<PeerReport>,
}

/// unison's and rsync's times on the same tree, and Nexus's as multiples of them (above 1: Nexus
/// is slower).
#[derive(Debug, Serialize)]
pub(crate) struct PeerReport {
    /// The peer and its version, e.g. `unison 2.52.1`.
    pub(crate) peer: String,
    /// `unison A B -batch` from an empty B: the initial sync.
    pub(crate) initial_seconds: f64,
    /// `unison A B -batch` after one file of A changed.
    pub(crate) change: Percentiles,
    /// `rsync -a A/ C/` into an empty C: the one-way initial copy.
    pub(crate) rsync_initial_seconds: f64,
    pub(crate) ratio_initial: f64,
    pub(crate) ratio_initial_rsync: f64,
    /// Nexus's single-file change cycle over unison's run, at p50.
    pub(crate) ratio_change_p50: f64,
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        files,
        total_mb,
        trials,
        spacing,
        against,
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
    // As the CLI connects to an agent.
    let connection = Connector::new(&credentials, nexus_cli::agents::agent_transport())
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
    let mut initial_cycles = Vec::new();
    loop {
        let began = Instant::now();
        let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
        initial_cycles.push(InitialCycle {
            seconds: began.elapsed().as_secs_f64(),
            applied: report.applied,
        });
        if report.quiet() {
            break;
        }
    }
    let initial = started.elapsed();
    // The peers on copies of the same tree (the copies untimed), right after Nexus's initial sync.
    let mut peer = against.map(|Peer::Unison| {
        let copy = pki.scratch("unison-a");
        copy_tree(&local, &copy);
        let mut peer = Unison {
            a: copy,
            b: pki.scratch("unison-b"),
            archives: pki.scratch("unison-archives"),
            initial: Duration::ZERO,
            rsync_initial: Duration::ZERO,
            changes: Vec::with_capacity(trials),
        };
        peer.initial = peer.sync();
        let rsync_target = pki.scratch("rsync-copy");
        peer.rsync_initial = timed_process(
            "rsync",
            &[
                "-a".into(),
                format!("{}/", local.display()),
                format!("{}/", rsync_target.display()),
            ],
        );
        // Both copies whole, or the times mean nothing.
        assert_eq!(count_files(&peer.b), files, "unison's replica");
        assert_eq!(count_files(&rsync_target), files, "rsync's copy");
        peer
    });
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
        // The peer's trial: the same file changed in its tree, and one run.
        if let Some(peer) = &mut peer {
            let relative = path.strip_prefix(&local).unwrap();
            std::fs::write(peer.a.join(relative), noise(size)).unwrap();
            let took = peer.sync();
            peer.changes.push(took);
        }
    }
    drop(agent);
    coordinator.stop().await;
    let change_cycle = Percentiles::of(cycles);
    let initial_seconds = initial.as_secs_f64();
    let against = peer.map(|peer| {
        let change = Percentiles::of(peer.changes);
        PeerReport {
            peer: unison_version(),
            initial_seconds: peer.initial.as_secs_f64(),
            rsync_initial_seconds: peer.rsync_initial.as_secs_f64(),
            ratio_initial: initial_seconds / peer.initial.as_secs_f64(),
            ratio_initial_rsync: initial_seconds / peer.rsync_initial.as_secs_f64(),
            ratio_change_p50: change_cycle.p50_ms / change.p50_ms,
            change,
        }
    });
    Report {
        files,
        total_mb,
        initial_seconds,
        initial_cycles,
        spacing_seconds: spacing.as_secs_f64(),
        change_cycle,
        quiet_look_both: Percentiles::of(scans),
        whole_remote_tree: Percentiles::of(remote_scans),
        workspace_change_told: Percentiles::of(told),
        workspace_change_landed: Percentiles::of(remote_changes),
        against,
    }
}

/// unison between two local replicas of the tree, with its archives kept apart from `$HOME`'s.
struct Unison {
    a: std::path::PathBuf,
    b: std::path::PathBuf,
    archives: std::path::PathBuf,
    initial: Duration,
    rsync_initial: Duration,
    changes: Vec<Duration>,
}

impl Unison {
    /// One run, timed from spawn to exit: whatever changed is propagated, without questions.
    fn sync(&self) -> Duration {
        let started = Instant::now();
        let out = std::process::Command::new("unison")
            .arg(&self.a)
            .arg(&self.b)
            .args(["-batch", "-silent", "-ui", "text"])
            .env("UNISON", &self.archives)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "unison: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }
}

/// Runs `program` with `args`, timed from spawn to exit; panics if it failed.
fn timed_process(program: &str, args: &[String]) -> Duration {
    let started = Instant::now();
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The regular files under `dir`, at any depth.
fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                count_files(&entry.path())
            } else {
                usize::from(kind.is_file())
            }
        })
        .sum()
}

/// A copy of a tree (`cp -a`), untimed.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    timed_process(
        "cp",
        &[
            "-a".into(),
            format!("{}/.", from.display()),
            to.display().to_string(),
        ],
    );
}

/// `unison 2.52.1`, from its own `-version`.
fn unison_version() -> String {
    let out = std::process::Command::new("unison")
        .arg("-version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" version", "")
}
