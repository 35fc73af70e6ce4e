//! The `fleet` scenario: three coordinators and a hollow fleet in this process, then many
//! workspace creates at once: placements per second, the time until all run, create latency, the
//! coordinators' load, and a check that no host is over a limit and no workspace is missing or
//! doubled. Bringing the fleet up is `setup`'s, shared with `detect`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nexus_protocol::error::ErrorDetail;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{AdminRequest, Request, Response, WorkspaceRequest};
use nexus_protocol::model::{ResourceClass, WorkspaceSpec, WorkspaceState};
use nexus_protocol::transport::Connection;
use nexus_protocol::{ErrorCode, RequestId};
use nexus_tests::cluster::{self, TestCluster};
use nexus_tests::fleet::{FleetOptions, HollowFleet};
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::connect;
use serde::Serialize;

use crate::measure::{Load, Percentiles, Usage};
use crate::setup::{cluster_and_fleet, coordinator_flags, count_of, fleet_stats, observe};

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 1_000)]
    pub(crate) hosts: usize,
    #[arg(long, default_value_t = 10_000)]
    pub(crate) workspaces: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 512)]
    pub(crate) concurrency: usize,
    /// Seconds between an agent's heartbeats (the agent's default is 5).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) heartbeat: f64,
    /// Seconds the leader's idle load is measured before the creates.
    #[arg(long, default_value_t = 10)]
    pub(crate) idle: u64,
    /// Hosts started per second (a whole fleet at once is a herd of handshakes).
    #[arg(long, default_value_t = FleetOptions::default().start_rate)]
    pub(crate) start_rate: usize,
    /// The coordinators' `--election-ticks` (their default, 10, unless given).
    #[arg(long)]
    pub(crate) election_ticks: Option<usize>,
    /// Seconds the coordinators' load is measured once every workspace runs: the full fleet's
    /// heartbeats and its agents' reports (each sends its whole report again every 30 s).
    #[arg(long, default_value_t = 0)]
    pub(crate) full: u64,
}

/// What the `fleet` scenario measured, and what it checked.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) hosts: usize,
    pub(crate) workspaces: usize,
    pub(crate) concurrency: usize,
    pub(crate) heartbeat_seconds: f64,
    pub(crate) fleet_up_seconds: f64,
    pub(crate) idle: Idle,
    pub(crate) placed: usize,
    pub(crate) refused: usize,
    /// Creates refused with RESOURCE_EXHAUSTED at first and placed when tried again.
    pub(crate) waited_for_room: usize,
    pub(crate) placement_seconds: f64,
    pub(crate) placements_per_second: f64,
    pub(crate) running: usize,
    pub(crate) all_running_seconds: f64,
    pub(crate) create_latency: Percentiles,
    pub(crate) busy: Busy,
    /// The load once every workspace ran, when `--full` asked for it.
    pub(crate) full: Option<Full>,
    pub(crate) check: Check,
}

/// The coordinators' load with the fleet idle: heartbeats and nothing else.
#[derive(Debug, Serialize)]
pub(crate) struct Idle {
    pub(crate) seconds: u64,
    pub(crate) heartbeats_per_second: f64,
    /// Each coordinator's, in the cluster's order.
    pub(crate) coordinators: Vec<Load>,
    /// The leader's index in `coordinators`.
    pub(crate) leader: usize,
}

/// The coordinators' load from the first create until every workspace ran.
#[derive(Debug, Serialize)]
pub(crate) struct Busy {
    pub(crate) coordinators: Vec<Load>,
}

/// The coordinators' load once every workspace runs, and the log entries the leader applied a
/// second meanwhile (every one of them is written, replicated and applied by each replica).
#[derive(Debug, Serialize)]
pub(crate) struct Full {
    pub(crate) seconds: u64,
    pub(crate) entries_per_second: f64,
    pub(crate) coordinators: Vec<Load>,
}

/// The fleet's state after the creates, as its agents hold it: every count must be 0.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub(crate) missing: usize,
    pub(crate) doubled: usize,
    pub(crate) unexpected: usize,
    pub(crate) hosts_over_limit: usize,
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        hosts,
        workspaces,
        concurrency,
        heartbeat,
        idle,
        start_rate,
        election_ticks,
        full,
    } = args;
    let (hosts, concurrency) = (hosts.max(1), concurrency.max(1));
    let pki = TestPki::new();
    let flags = coordinator_flags(&[], election_ticks);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (cluster, fleet, up) = cluster_and_fleet(&pki, hosts, heartbeat, start_rate, &flags).await;
    let leader = cluster.leader(&pki, Duration::from_secs(30)).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    let pids: Vec<u32> = cluster
        .running
        .iter()
        .map(|p| p.as_ref().unwrap().process.pid())
        .collect();
    let leader_index = cluster.index_of(leader.node.get());

    // The leader's load with the fleet idle: heartbeats and nothing else.
    let before = Usage::of_each(&pids);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let idle_usage = Load::of_each(&before, &Usage::of_each(&pids), window.elapsed());
    println!(
        "idle, {hosts} hosts heartbeating every {heartbeat} s ({:.0}/s): leader at {:.1} % of a core",
        hosts as f64 / heartbeat,
        idle_usage[leader_index].cpu_percent_of_one_core
    );

    // M creates, `concurrency` in flight, over a few connections to each coordinator.
    let user = pki::user("fleet", Role::User);
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS_PER_MEMBER {
        for member in &cluster.members {
            let connection = connect(&pki, &user, member.address).await.unwrap();
            connections.push((member.address, Arc::new(connection)));
        }
    }
    let connections = Arc::new(connections);
    let before = Usage::of_each(&pids);
    let started = Instant::now();
    let Created {
        latencies,
        refused,
        waited_for_room,
    } = create_all(connections, leader_address, workspaces, concurrency).await;
    let placed_in = started.elapsed();
    let placed = latencies.len();
    println!(
        "{placed} placements committed in {:.2} s ({:.0}/s), {} refused, \
         {waited_for_room} placed after waiting for room",
        placed_in.as_secs_f64(),
        placed as f64 / placed_in.as_secs_f64(),
        refused.len()
    );
    for refusal in refused.iter().take(5) {
        println!("  refused: {refusal}");
    }
    let observer = observe(&pki, &cluster, leader_address).await;
    let (running, moved) = until_running(&observer, placed).await;
    let running_in = if running == placed {
        started.elapsed()
    } else {
        moved.duration_since(started)
    };
    if running < placed {
        let never_ran = placed - running;
        tell_why_not_running(&pki, &cluster, &fleet, &observer, leader_address, never_ran).await;
    }
    let busy_usage = Load::of_each(&before, &Usage::of_each(&pids), running_in);
    println!(
        "{running} of {placed} running (as their agents report) {:.2} s after the first create",
        running_in.as_secs_f64()
    );
    let full = if full > 0 {
        Some(measure_full(&pki, &cluster, &pids, full).await)
    } else {
        None
    };
    let check = check(
        &pki,
        &fleet,
        leader_address,
        workspaces,
        placed,
        refused.len(),
    )
    .await;
    Report {
        hosts,
        workspaces,
        concurrency,
        heartbeat_seconds: heartbeat,
        fleet_up_seconds: up.as_secs_f64(),
        idle: Idle {
            seconds: idle,
            heartbeats_per_second: hosts as f64 / heartbeat,
            coordinators: idle_usage,
            leader: leader_index,
        },
        placed,
        refused: refused.len(),
        waited_for_room,
        placement_seconds: placed_in.as_secs_f64(),
        placements_per_second: placed as f64 / placed_in.as_secs_f64(),
        running,
        all_running_seconds: running_in.as_secs_f64(),
        create_latency: Percentiles::of(latencies),
        busy: Busy {
            coordinators: busy_usage,
        },
        full,
        check,
    }
}

/// The coordinators' load over `seconds` with every workspace placed and running, and how many
/// entries the leader applied a second (read from whichever member leads at each end).
async fn measure_full(pki: &TestPki, cluster: &TestCluster, pids: &[u32], seconds: u64) -> Full {
    let applied = async || {
        cluster
            .leader(pki, Duration::from_secs(60))
            .await
            .applied_index
    };
    let (first, before) = (applied().await, Usage::of_each(pids));
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (last, after) = (applied().await, Usage::of_each(pids));
    let over = window.elapsed();
    let full = Full {
        seconds,
        entries_per_second: last.saturating_sub(first) as f64 / over.as_secs_f64(),
        coordinators: Load::of_each(&before, &after, over),
    };
    println!(
        "full, for {seconds} s: the leader applied {:.0} entries/s; coordinators {:?}",
        full.entries_per_second,
        full.coordinators
            .iter()
            .map(|load| format!("{:.1} % of a core", load.cpu_percent_of_one_core))
            .collect::<Vec<_>>()
    );
    full
}

/// Connections the creates go over, to each coordinator.
const CONNECTIONS_PER_MEMBER: usize = 4;

/// The creates' connections, each with the coordinator it reaches.
type Connections = Arc<Vec<(SocketAddr, Arc<Connection>)>>;

/// Creates workspaces `w0` to `w{workspaces - 1}` from `concurrency` tasks, each with one create
/// in flight. A task starts on one of the leader's connections and, like the CLI, moves where a
/// NOT_LEADER answer points, retrying with the same request id (so a create whose answer was
/// lost is answered with its first outcome, never made twice). Answers each placed workspace's
/// create latency, and a line for each refused one.
async fn create_all(
    connections: Connections,
    leader_address: SocketAddr,
    workspaces: usize,
    concurrency: usize,
) -> Created {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let connections = connections.clone();
        let at = connections
            .iter()
            .enumerate()
            .filter(|(_, (address, _))| *address == leader_address)
            .map(|(index, _)| index)
            .nth(task % CONNECTIONS_PER_MEMBER)
            .unwrap();
        let next = next.clone();
        tasks.push(tokio::spawn(creator(connections, at, next, workspaces)));
    }
    let mut all = Created {
        latencies: Vec::with_capacity(workspaces),
        refused: Vec::new(),
        waited_for_room: 0,
    };
    for task in tasks {
        let created = task.await.unwrap();
        all.latencies.extend(created.latencies);
        all.refused.extend(created.refused);
        all.waited_for_room += created.waited_for_room;
    }
    all
}

/// What the creates came to: each placed one's latency (from its first try), a line for each
/// refused one, and how many were placed only after waiting for room.
struct Created {
    latencies: Vec<Duration>,
    refused: Vec<String>,
    waited_for_room: usize,
}

/// How long a create refused for want of room is tried again before it counts as refused.
const ROOM_PATIENCE: Duration = Duration::from_secs(60);

/// One of `create_all`'s tasks: takes the next workspace number from `next` until all are
/// taken, and creates each through `connections[at]`, moving on as answers point.
async fn creator(
    connections: Connections,
    mut at: usize,
    next: Arc<AtomicUsize>,
    workspaces: usize,
) -> Created {
    let mut latencies = Vec::new();
    let mut refused = Vec::new();
    let mut waits = 0;
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= workspaces {
            return Created {
                latencies,
                refused,
                waited_for_room: waits,
            };
        }
        let spec = WorkspaceSpec {
            image: "hollow".into(),
            ..nexus_fixtures::spec(&format!("w{i}"))
        };
        let sent = Instant::now();
        let mut request_id = RequestId::random();
        let mut attempts = 0;
        let mut waited = false;
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
                            ErrorCode::NotLeader | ErrorCode::Timeout | ErrorCode::NetworkError
                        ) =>
                {
                    let leader = match &error.detail {
                        Some(ErrorDetail::NotLeader {
                            address: Some(address),
                            ..
                        }) => address.parse::<SocketAddr>().ok(),
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
                // RESOURCE_EXHAUSTED is an answer to retry (design.md), as a client would: near
                // a full fleet the last free places are on hosts busy with the starts just
                // placed there, which end in moments. A new request id, since the refusal is
                // remembered under the old one; a fleet that stays full is refused for good.
                Err(error)
                    if error.code == ErrorCode::ResourceExhausted
                        && sent.elapsed() < ROOM_PATIENCE =>
                {
                    waited = true;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    request_id = RequestId::random();
                    continue;
                }
                other => refused.push(format!("w{i}: {other:?}")),
            }
            waits += usize::from(waited);
            break;
        }
    }
}

/// Waits until `placed` workspaces run, or the count has not moved for a minute: then the ones
/// left are reported (and counted missing), not waited on for ever. Answers how many run, and
/// when that count was reached.
async fn until_running(observer: &Connection, placed: usize) -> (usize, Instant) {
    let mut running = 0;
    let mut moved = Instant::now();
    while running < placed && moved.elapsed() < Duration::from_secs(60) {
        if let Some(stats) = fleet_stats(observer).await {
            let now = count_of(&stats.workspaces, &WorkspaceState::Running);
            if now != running {
                running = now;
                moved = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (running, moved)
}

/// Prints what is known of the workspaces that never ran (up to 20): their hosts as the leader
/// and the fleet see them, and what each host's agent holds; and saves the coordinators' logs.
async fn tell_why_not_running(
    pki: &TestPki,
    cluster: &TestCluster,
    fleet: &HollowFleet,
    observer: &Connection,
    leader_address: SocketAddr,
    never_ran: usize,
) {
    let logs = std::env::temp_dir().join("nexus-bench-fleet-coordinators.log");
    std::fs::write(&logs, cluster.logs()).unwrap();
    println!(
        "{never_ran} placed workspaces never ran (the coordinators' logs: {}):",
        logs.display()
    );
    let list = observer
        .request_with(
            RequestId::random(),
            Request::Workspace(WorkspaceRequest::List),
            Duration::from_secs(60),
        )
        .await;
    let statuses =
        match cluster::admin_to_leader(pki, leader_address, Request::Admin(AdminRequest::Hosts))
            .await
        {
            Ok(Response::Hosts(hosts)) => hosts
                .into_iter()
                .map(|h| (h.info.host_id, (h.status, h.last_heartbeat)))
                .collect(),
            _ => BTreeMap::new(),
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

/// Verifies the fleet as its agents hold it: every workspace placed is on exactly one live host,
/// nothing else exists, and no host holds more than its limits allow. Prints the counts.
async fn check(
    pki: &TestPki,
    fleet: &HollowFleet,
    leader_address: SocketAddr,
    workspaces: usize,
    placed: usize,
    refused: usize,
) -> Check {
    let containers = fleet.containers().await;
    let missing = (0..workspaces)
        .filter(|i| !containers.contains_key(&format!("w{i}").parse().unwrap()))
        .count()
        .saturating_sub(refused);
    let doubled = containers.values().filter(|hosts| hosts.len() > 1).count();
    let unexpected = containers.len().saturating_sub(placed);
    let limits =
        match cluster::admin_to_leader(pki, leader_address, Request::Admin(AdminRequest::Limits))
            .await
        {
            Ok(Response::Limits(limits)) => limits,
            other => panic!("no limits: {other:?}"),
        };
    let options = FleetOptions::default();
    let per_host = {
        let mut counts = BTreeMap::new();
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
    Check {
        missing,
        doubled,
        unexpected,
        hosts_over_limit: over_limit,
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
