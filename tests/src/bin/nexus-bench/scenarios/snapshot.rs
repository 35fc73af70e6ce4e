//! The `snapshot` scenario: the state of a large fleet as snapshot bytes. First in this process: a
//! state of N hosts and M running workspaces built by applying the log's own commands, then
//! copied (what a coordinator's Raft thread does to take a snapshot; the copy is encoded on a
//! thread of its own), encoded and decoded (what restoring one costs). Then, unless `--in-process-only`, with real processes: three coordinators
//! given the same fleet through their API (hosts registered, workspaces created; no agents), and
//! a fourth added with `ClusterAdd`, timed until it serves every workspace, with what the
//! coordinators logged of their snapshots and whether the leader lost its term meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nexus_coordinator::state::{Command, PlaceRequest, Proposal, State};
use nexus_protocol::error::ErrorDetail;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{
    AdminRequest, AgentRequest, ObservedWorkspace, Request, Response, WorkspaceRequest,
};
use nexus_protocol::model::{HostInfo, HostStatus, LimitsPatch, WorkspaceSpec, WorkspaceState};
use nexus_protocol::{ErrorCode, HostId, Identity, RequestId, UserName, clock};
use nexus_tests::cluster::{TestCluster, admin_to_leader};
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::connect;
use serde::Serialize;

use crate::setup::{coordinator_flags, count_of, fleet_stats};

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 5_000)]
    pub(crate) hosts: usize,
    #[arg(long, default_value_t = 250_000)]
    pub(crate) workspaces: usize,
    /// Times each of copying, encoding and decoding is measured (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Measure in this process only: no coordinators, no new member.
    #[arg(long)]
    pub(crate) in_process_only: bool,
    /// Creates in flight at once, against the coordinators.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// The coordinators' `--election-ticks` (their default, 10, unless given).
    #[arg(long)]
    pub(crate) election_ticks: Option<usize>,
    /// In this process, also mark this many hosts down (the detector's `SetHostStatus`) and
    /// take them back (`HostReturned`), timing the applies: what a mass of markings costs
    /// every replica.
    #[arg(long, default_value_t = 0)]
    pub(crate) mark_down: usize,
    /// Each host's workspace limit in the state built here (twice the average, at least 50,
    /// unless given). The average itself fills every host, as C1M does: the last creates then
    /// find few hosts with room, and their time is told apart.
    #[arg(long)]
    pub(crate) per_host: Option<u32>,
}

/// What the `snapshot` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) hosts: usize,
    pub(crate) workspaces: usize,
    pub(crate) build_seconds: f64,
    pub(crate) snapshot_bytes: usize,
    /// `State::snapshot_copy`: what taking a snapshot holds the Raft thread for.
    pub(crate) copy_seconds: f64,
    pub(crate) encode_seconds: f64,
    pub(crate) decode_seconds: f64,
    pub(crate) marking: Option<Marking>,
    pub(crate) catch_up: Option<CatchUp>,
}

/// `--mark-down`: hosts marked down and taken back by applying the log's commands, with no
/// copy of the state held and with one held (as a replica holds its snapshot's and its policy
/// loop's copies, so that a change copies the nodes it touches first).
#[derive(Debug, Serialize)]
pub(crate) struct Marking {
    pub(crate) hosts: usize,
    /// The workspaces on them, each lost and then back.
    pub(crate) workspaces: usize,
    pub(crate) down_seconds: f64,
    pub(crate) back_seconds: f64,
    pub(crate) down_seconds_with_a_copy: f64,
    pub(crate) back_seconds_with_a_copy: f64,
}

/// Marks the first `hosts` hosts down and back, twice (see [`Marking`]).
fn mark_down(state: &mut State, hosts: usize) -> Marking {
    let coordinator = Identity::Coordinator(nexus_protocol::NodeId::new(1).unwrap());
    let ids: Vec<HostId> = (0..hosts)
        .map(|i| HostId::new(host_name(i)).unwrap())
        .collect();
    let marked: std::collections::BTreeSet<&HostId> = ids.iter().collect();
    let workspaces = state
        .workspaces()
        .values()
        .filter(|w| marked.contains(&w.host))
        .count();
    let timed = |state: &mut State, status: Option<HostStatus>| {
        let started = Instant::now();
        for host in &ids {
            let command = match status {
                Some(status) => Command::SetHostStatus {
                    host: host.clone(),
                    status,
                },
                None => Command::HostReturned { host: host.clone() },
            };
            let outcome = state.apply(&proposal(coordinator.clone(), command));
            assert_eq!(outcome, nexus_coordinator::state::Outcome::Applied);
        }
        started.elapsed().as_secs_f64()
    };
    let down_seconds = timed(state, Some(HostStatus::Down));
    let back_seconds = timed(state, None);
    let copy = state.snapshot_copy();
    let down_seconds_with_a_copy = timed(state, Some(HostStatus::Down));
    let back_seconds_with_a_copy = timed(state, None);
    drop(copy);
    Marking {
        hosts,
        workspaces,
        down_seconds,
        back_seconds,
        down_seconds_with_a_copy,
        back_seconds_with_a_copy,
    }
}

/// A new member caught up from the real coordinators' snapshot.
#[derive(Debug, Serialize)]
pub(crate) struct CatchUp {
    pub(crate) fill_seconds: f64,
    /// From the `ClusterAdd` request to its answer (a learner caught up and promoted).
    pub(crate) add_seconds: f64,
    /// From the `ClusterAdd` request until the new member's own replica holds every workspace.
    pub(crate) serving_seconds: f64,
    /// The leader's log lines for the snapshots it took, and the new member's for the one it
    /// restored (size, and the milliseconds each step held the Raft thread).
    pub(crate) leader_snapshots: Vec<String>,
    pub(crate) restored: Vec<String>,
    pub(crate) term_before: u64,
    pub(crate) term_after: u64,
    /// Each founding member's synced writes to its store during the fill.
    pub(crate) syncs: Vec<Syncs>,
}

/// One member's synced writes to its Raft store (`nexus_storage_sync_duration_seconds`), and
/// its Raft thread's long rounds (over 0.5 s, from its log): what its snapshots' writes cost the
/// log's appends beside them.
#[derive(Debug, Serialize)]
pub(crate) struct Syncs {
    pub(crate) node: u64,
    pub(crate) writes: u64,
    pub(crate) over_100ms: u64,
    pub(crate) over_250ms: u64,
    pub(crate) over_1s: u64,
    pub(crate) long_rounds: usize,
    /// The longest a long round spent persisting (`persisting_ms`).
    pub(crate) longest_persisting_ms: u64,
}

/// Reads each running member's [`Syncs`].
async fn syncs(cluster: &TestCluster) -> Vec<Syncs> {
    const HISTOGRAM: &str = "nexus_storage_sync_duration_seconds";
    let mut all = Vec::new();
    for member in cluster.running.iter().flatten() {
        let Some(http) = member.http else { continue };
        let (_, text) = nexus_tests::http::get(http, "/metrics").await;
        let bucket = |le: &str| {
            nexus_tests::exposition::value(&text, &format!("{HISTOGRAM}_bucket"), &[("le", le)])
                .unwrap_or_default() as u64
        };
        let writes = nexus_tests::exposition::value(&text, &format!("{HISTOGRAM}_count"), &[])
            .unwrap_or_default() as u64;
        let log = member.process.log();
        let long: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("busy for a long round"))
            .collect();
        let persisting = |line: &str| -> u64 {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("persisting_ms="))
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_default()
        };
        all.push(Syncs {
            node: member.node_id.get(),
            writes,
            over_100ms: writes.saturating_sub(bucket("0.1")),
            over_250ms: writes.saturating_sub(bucket("0.25")),
            over_1s: writes.saturating_sub(bucket("1.0")),
            long_rounds: long.len(),
            longest_persisting_ms: long.iter().map(|line| persisting(line)).max().unwrap_or(0),
        });
    }
    all
}

fn host_name(i: usize) -> String {
    format!("h{i:05}")
}

/// A host with room for many workspaces.
fn roomy_host(name: &str) -> HostInfo {
    HostInfo {
        cpus: 64,
        memory_bytes: 256 << 30,
        ..nexus_fixtures::host(name)
    }
}

fn spec(i: usize) -> WorkspaceSpec {
    let mut spec = nexus_fixtures::spec(&format!("w{i:06}"));
    spec.env = [
        (
            "GIT_REPO".to_string(),
            format!("git@example.com:team/repo-{}.git", i % 997),
        ),
        ("BRANCH".to_string(), format!("feature/work-{i}")),
    ]
    .into();
    spec
}

/// Room for `workspaces` on `hosts` (without agents, none ever leaves its first operation):
/// `per_host` each, or twice the average.
fn limits(hosts: usize, workspaces: usize, per_host: Option<u32>) -> LimitsPatch {
    let per_host = per_host.unwrap_or_else(|| {
        u32::try_from(workspaces.div_ceil(hosts.max(1)) * 2)
            .unwrap_or(10_000)
            .clamp(50, 10_000)
    });
    LimitsPatch {
        max_workspaces_per_host: Some(per_host),
        max_concurrent_ops_per_host: Some(per_host.min(1_000)),
        ..LimitsPatch::default()
    }
}

fn proposal(proposer: Identity, command: Command) -> Proposal {
    Proposal {
        request_id: RequestId::random(),
        at: clock::now(),
        proposer,
        command,
    }
}

/// A state of `hosts` hosts and `workspaces` workspaces, each reported running by its host,
/// made by the same commands the log carries; each host holds at most `per_host` (see
/// [`limits`]).
pub(crate) fn build(hosts: usize, workspaces: usize, per_host: Option<u32>) -> State {
    let mut state = State::default();
    let admin = pki::user("bench", Role::Admin);
    state.apply(&proposal(
        admin,
        Command::SetLimits {
            host: None,
            patch: limits(hosts, workspaces, per_host),
        },
    ));
    for i in 0..hosts {
        let host = HostId::new(host_name(i)).unwrap();
        state.apply(&proposal(
            Identity::Agent(host),
            Command::RegisterHost(roomy_host(&host_name(i))),
        ));
    }
    let owner = UserName::new("bench").unwrap();
    let user = Identity::User {
        name: owner.clone(),
        role: Role::Admin,
    };
    let mut i = 0;
    // The last hundredth of the creates, timed apart: near a full fleet they find few hosts
    // with room.
    let last = workspaces - workspaces / 100;
    let mut last_started = None;
    while i < workspaces {
        if i >= last && last_started.is_none() {
            last_started = Some((i, Instant::now()));
        }
        let batch: Vec<PlaceRequest> = (i..workspaces.min(i + 1_024))
            .map(|n| PlaceRequest {
                request_id: RequestId::random(),
                owner: owner.clone(),
                spec: spec(n),
                scoring: None,
            })
            .collect();
        i += batch.len();
        state.apply(&proposal(user.clone(), Command::PlaceWorkspaces(batch)));
    }
    // Timed from the first batch at or past the hundredth: a little less than a hundredth.
    if let Some((from, started)) = last_started {
        println!(
            "placed the last {} of {workspaces} creates in {:.2} s ({} placed in all)",
            workspaces - from,
            started.elapsed().as_secs_f64(),
            state.workspaces().len()
        );
    }
    let mut by_host: std::collections::BTreeMap<HostId, Vec<ObservedWorkspace>> =
        Default::default();
    for (name, workspace) in state.workspaces() {
        by_host
            .entry(workspace.host.clone())
            .or_default()
            .push(ObservedWorkspace {
                name: name.clone(),
                generation: workspace.generation,
                state: WorkspaceState::Running,
                ports: workspace.ports.clone(),
                error: None,
            });
    }
    for (host, observed) in by_host {
        state.apply(&proposal(
            Identity::Agent(host.clone()),
            Command::RecordObserved { host, observed },
        ));
    }
    state
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds.get(seconds.len() / 2).copied().unwrap_or_default()
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        hosts,
        workspaces,
        rounds,
        in_process_only,
        concurrency,
        election_ticks,
        mark_down: marked,
        per_host,
    } = args;
    let started = Instant::now();
    let state = build(hosts, workspaces, per_host);
    let build_seconds = started.elapsed().as_secs_f64();
    let running = state
        .workspaces()
        .values()
        .filter(|w| w.state == WorkspaceState::Running)
        .count();
    println!(
        "built a state of {} hosts and {} workspaces ({running} running) in {build_seconds:.1} s",
        state.hosts().len(),
        state.workspaces().len()
    );
    assert_eq!(
        state.workspaces().len(),
        workspaces,
        "every workspace placed"
    );
    let mut copies = Vec::new();
    let mut encodes = Vec::new();
    let mut decodes = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let copy = state.snapshot_copy();
        copies.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        bytes = copy.to_snapshot().unwrap();
        encodes.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let decoded = State::from_snapshot(&bytes).unwrap();
        decodes.push(started.elapsed().as_secs_f64());
        assert_eq!(decoded.workspaces().len(), workspaces);
    }
    let snapshot_bytes = bytes.len();
    drop(bytes);
    println!(
        "snapshot of {snapshot_bytes} bytes: copied in {:.4} s, encoded in {:.3} s, decoded in {:.3} s (medians of {})",
        median(copies.clone()),
        median(encodes.clone()),
        median(decodes.clone()),
        encodes.len()
    );
    // Told in the report. The state goes here either way (the closure owns it).
    let marking = (marked > 0).then(|| {
        let mut state = state;
        mark_down(&mut state, marked.min(hosts))
    });
    let catch_up = if in_process_only {
        None
    } else {
        Some(catch_up(hosts, workspaces, concurrency, election_ticks).await)
    };
    Report {
        hosts,
        workspaces,
        build_seconds,
        snapshot_bytes,
        copy_seconds: median(copies),
        encode_seconds: median(encodes),
        decode_seconds: median(decodes),
        marking,
        catch_up,
    }
}

/// Sends `request` to the cluster's leader on one of `connections`, following `NOT_LEADER`.
async fn to_leader(
    connections: &[(std::net::SocketAddr, nexus_protocol::transport::Connection)],
    at: &mut usize,
    request: Request,
) {
    let request_id = RequestId::random();
    for _ in 0..40 {
        let answer = connections[*at]
            .1
            .request_with(request_id, request.clone(), Duration::from_secs(60))
            .await;
        match answer {
            Ok(_) => return,
            Err(error)
                if matches!(
                    error.code,
                    ErrorCode::NotLeader | ErrorCode::Timeout | ErrorCode::NetworkError
                ) =>
            {
                let leader = match &error.detail {
                    Some(ErrorDetail::NotLeader {
                        address: Some(address),
                        ..
                    }) => address.parse().ok(),
                    _ => None,
                };
                *at = match leader.and_then(|l| connections.iter().position(|(a, _)| *a == l)) {
                    Some(leader) => leader,
                    None => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        (*at + 1) % connections.len()
                    }
                };
            }
            Err(error) => panic!("{request:?}: {error:?}"),
        }
    }
    panic!("no leader took {request:?}");
}

async fn catch_up(
    hosts: usize,
    workspaces: usize,
    concurrency: usize,
    election_ticks: Option<usize>,
) -> CatchUp {
    let pki = Arc::new(TestPki::new());
    let flags = coordinator_flags(&["--host-ttl", "86400"], election_ticks);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::start(&pki, 3, &flags).await;
    let leader = cluster.leader(&pki, Duration::from_secs(30)).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    println!("the first leader's term: {}", leader.term);
    let fill = Instant::now();
    admin_to_leader(
        &pki,
        leader_address,
        Request::Admin(AdminRequest::SetLimits {
            host: None,
            patch: limits(hosts, workspaces, None),
        }),
    )
    .await
    .unwrap();
    for i in 0..hosts {
        pki.issue(&pki::agent(&host_name(i)));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (pki, next) = (pki.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= hosts {
                    return;
                }
                let identity = pki::agent(&host_name(i));
                let connection = connect(&pki, &identity, leader_address).await.unwrap();
                let answer = connection
                    .request_with(
                        RequestId::random(),
                        Request::Agent(AgentRequest::Register(roomy_host(&host_name(i)))),
                        Duration::from_secs(60),
                    )
                    .await;
                assert!(
                    matches!(answer, Ok(Response::Registered { .. })),
                    "{answer:?}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "{hosts} hosts registered in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let user = pki::user("bench", Role::Admin);
    pki.issue(&user);
    let mut connections = Vec::new();
    for _ in 0..8 {
        for address in cluster.live_addresses() {
            connections.push((address, connect(&pki, &user, address).await.unwrap()));
        }
    }
    let connections = Arc::new(connections);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..concurrency.max(1) {
        let (connections, next) = (connections.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut at = task % connections.len();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= workspaces {
                    return;
                }
                if i % 25_000 == 0 {
                    println!("  creating workspace {i}");
                }
                let create = Request::Workspace(WorkspaceRequest::Create(spec(i)));
                to_leader(&connections, &mut at, create).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let fill_seconds = fill.elapsed().as_secs_f64();
    println!("{workspaces} workspaces created in {fill_seconds:.1} s");

    let leader = cluster.leader(&pki, Duration::from_secs(30)).await;
    let leader_index = cluster.index_of(leader.node.get());
    let leader_address = cluster.members[leader_index].address;
    // Elections during the fill show as a term past the first leader's.
    let term_before = leader.term;
    println!("term {term_before} after the fill");
    let syncs = syncs(&cluster).await;
    let fourth = cluster.start_joiner(&pki, 4).await;
    let fourth_address = cluster.members[fourth].address;
    let observer = connect(&pki, &user, fourth_address).await.unwrap();
    let asked = Instant::now();
    let added = admin_to_leader(
        &pki,
        leader_address,
        Request::Admin(AdminRequest::ClusterAdd {
            id: nexus_protocol::NodeId::new(4).unwrap(),
            address: fourth_address.to_string(),
        }),
    )
    .await;
    let add_seconds = asked.elapsed().as_secs_f64();
    assert!(
        matches!(added, Ok(Response::ClusterStatus(_))),
        "{added:?}\n{}",
        cluster.logs()
    );
    loop {
        if let Some(stats) = fleet_stats(&observer).await {
            let held: usize = stats.workspaces.iter().map(|(_, n)| *n as usize).sum();
            if held >= workspaces {
                let running = count_of(&stats.workspaces, &WorkspaceState::Running);
                println!("the new member holds {held} workspaces ({running} running)");
                break;
            }
        }
        assert!(
            asked.elapsed() < Duration::from_secs(600),
            "the new member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let serving_seconds = asked.elapsed().as_secs_f64();
    let term_after = cluster.leader(&pki, Duration::from_secs(30)).await.term;
    let lines = |index: usize, message: &str| -> Vec<String> {
        cluster.running[index]
            .as_ref()
            .map(|c| c.process.log())
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(message))
            .map(ToString::to_string)
            .collect()
    };
    let leader_snapshots = lines(leader_index, "took a snapshot");
    let restored = lines(fourth, "restored from the leader's snapshot");
    for line in leader_snapshots.iter().chain(&restored) {
        println!("  {line}");
    }
    CatchUp {
        fill_seconds,
        add_seconds,
        serving_seconds,
        leader_snapshots,
        restored,
        term_before,
        term_after,
        syncs,
    }
}
