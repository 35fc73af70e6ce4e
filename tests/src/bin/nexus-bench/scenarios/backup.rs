//! The `backup` scenario: backups, restores and a new member's catch-up with a large state. The
//! state (H hosts, W workspaces placed by the scheduler and reported running) is made in this
//! process by the coordinator's own state machine (`snapshot::build`) and written as a backup
//! file; three real coordinators are made from it with `nexus-coordinator restore` and started
//! (no agents: the hosts are in the state only). Then the API at that size: `nexus workspace
//! list` (a real process, from spawn to exit), each page of the list and the one-request list on
//! one connection, and creates one at a time. Then, each one real process timed from spawn to
//! exit: `nexus admin backup create` (the leader's fence, encode, write, re-read and verify),
//! `nexus admin backup verify` of it, and an online `nexus admin backup restore` of it (answered
//! once applied on the leader); and a fourth member added (`ClusterAdd`), timed until its own
//! replica holds every workspace (it catches up from a snapshot). The leader's term before and
//! after says whether any step cost an election.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use nexus_cli::listing;
use nexus_coordinator::state::STATE_FORMAT;
use nexus_protocol::backup::{self, BackupHeader};
use nexus_protocol::identity::Role;
use nexus_protocol::message::{AdminRequest, Request, Response, WorkspaceRequest};
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::{NodeId, clock};
use nexus_tests::cluster::{TestCluster, admin_to_leader};
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{binary, cli_command, connect};
use serde::Serialize;

use crate::measure::Percentiles;
use crate::scenarios::snapshot;
use crate::setup::{coordinator_flags, count_of, fleet_stats};

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 5_000)]
    pub(crate) hosts: usize,
    #[arg(long, default_value_t = 250_000)]
    pub(crate) workspaces: usize,
    /// The coordinators' `--election-ticks` (their default, 10, unless given).
    #[arg(long)]
    pub(crate) election_ticks: Option<usize>,
    /// Creates timed at the end, once the state is whole.
    #[arg(long, default_value_t = 200)]
    pub(crate) creates: usize,
}

/// What the `backup` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) hosts: usize,
    pub(crate) workspaces: usize,
    /// The backup file made in this process, and what `nexus-coordinator restore` took per member.
    pub(crate) file_bytes: u64,
    pub(crate) offline_restore_seconds: f64,
    /// From starting the restored members until the leader serves every workspace.
    pub(crate) cluster_up_seconds: f64,
    pub(crate) create_seconds: f64,
    pub(crate) created_bytes: u64,
    pub(crate) verify_seconds: f64,
    pub(crate) online_restore_seconds: f64,
    pub(crate) catch_up_seconds: f64,
    pub(crate) term_before: u64,
    pub(crate) term_after: u64,
    pub(crate) at_scale: AtScale,
}

/// The API with the whole state in place (issue 28, item 6).
#[derive(Debug, Serialize)]
pub(crate) struct AtScale {
    /// `nexus workspace list -o json` of every workspace, a process each, from spawn to exit.
    pub(crate) list_cli: Percentiles,
    /// Each page of one walk of the list ([`listing::PAGE`] a page), on one connection.
    pub(crate) list_pages: Percentiles,
    /// That walk, whole.
    pub(crate) list_walk_ms: f64,
    /// The whole list as one stream of pages (`ListStream`), on the same connection.
    pub(crate) list_stream_ms: f64,
    /// Creates one after another on one connection, each until placed and committed.
    pub(crate) create: Percentiles,
    /// What the one-request list (`WorkspaceRequest::List`) answers at this size: how many
    /// workspaces, or its error.
    pub(crate) whole_list: Result<usize, String>,
    pub(crate) whole_list_ms: f64,
}

/// Times the list (by the CLI, and page by page) and creates, once the fleet is whole.
async fn list_and_create(
    pki: &TestPki,
    cluster: &TestCluster,
    workspaces: usize,
    creates: usize,
) -> AtScale {
    let mut lists = Vec::new();
    for _ in 0..5 {
        let (seconds, out) = timed(pki, cluster, &["workspace", "list"]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(listed.as_array().unwrap().len() >= workspaces);
        lists.push(Duration::from_secs_f64(seconds));
    }
    let list_cli = Percentiles::of(lists);
    println!("workspace list (the CLI, whole): {list_cli:?}");
    let leader = cluster.leader(pki, Duration::from_secs(60)).await;
    let address = cluster.members[cluster.index_of(leader.node.get())].address;
    let admin = connect(pki, &pki::user("bench", Role::Admin), address)
        .await
        .unwrap();
    let (mut pages, mut after, mut listed) = (Vec::new(), None, 0);
    let walk = Instant::now();
    loop {
        let asked = Instant::now();
        let page = WorkspaceRequest::ListPage {
            after: after.take(),
            limit: listing::PAGE,
        };
        let Response::WorkspacePage { workspaces, next } =
            admin.request(Request::Workspace(page)).await.unwrap()
        else {
            panic!("not a page")
        };
        pages.push(asked.elapsed());
        listed += workspaces.len();
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let list_walk_ms = walk.elapsed().as_secs_f64() * 1000.0;
    let streamed = Instant::now();
    let mut pages_of_stream = admin
        .subscribe(Request::Workspace(WorkspaceRequest::ListStream))
        .await
        .unwrap();
    let mut in_stream = 0;
    loop {
        match pages_of_stream.next().await {
            Some(Ok(Response::WorkspacePage { workspaces, next })) => {
                in_stream += workspaces.len();
                if next.is_none() {
                    break;
                }
            }
            other => panic!("the stream ended before its last page: {other:?}"),
        }
    }
    let list_stream_ms = streamed.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(in_stream, listed, "the stream and the walk list as many");
    let asked = Instant::now();
    let whole_list = match admin
        .request(Request::Workspace(WorkspaceRequest::List))
        .await
    {
        Ok(Response::Workspaces(views)) => Ok(views.len()),
        Ok(other) => Err(format!("{other:?}")),
        Err(error) => Err(format!("{}: {}", error.code, error.message)),
    };
    let whole_list_ms = asked.elapsed().as_secs_f64() * 1000.0;
    println!("the one-request list: {whole_list:?} in {whole_list_ms:.0} ms");
    assert!(listed >= workspaces);
    let list_pages = Percentiles::of(pages);
    println!(
        "the list's pages: {list_pages:?}; the walk {list_walk_ms:.0} ms; the stream {list_stream_ms:.0} ms"
    );
    let mut timings = Vec::new();
    for i in 0..creates {
        let spec = nexus_fixtures::spec(&format!("new{i:04}"));
        let asked = Instant::now();
        let answer = admin
            .request(Request::Workspace(WorkspaceRequest::Create(spec)))
            .await;
        assert!(matches!(answer, Ok(Response::Workspace(_))), "{answer:?}");
        timings.push(asked.elapsed());
    }
    let create = Percentiles::of(timings);
    println!("creates, one at a time: {create:?}");
    AtScale {
        list_cli,
        list_pages,
        list_walk_ms,
        list_stream_ms,
        create,
        whole_list,
        whole_list_ms,
    }
}

/// `nexus-coordinator restore` of `file` into `data_dir` as `node`, with `peers`.
fn restore_member(pki: &TestPki, file: &Path, data_dir: &Path, node: u64, peers: &[String]) {
    let mut command = std::process::Command::new(binary("nexus-coordinator"));
    command
        .arg("restore")
        .arg("--from")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--node-id", &node.to_string()])
        .arg("--tls-dir")
        .arg(pki.dir());
    for peer in peers {
        command.args(["--peer", peer]);
    }
    let out = command.output().expect("nexus-coordinator runs");
    assert!(
        out.status.success(),
        "restore {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the admin CLI against `cluster` and answers how long it took, with its output.
fn timed(pki: &TestPki, cluster: &TestCluster, args: &[&str]) -> (f64, Output) {
    let home = pki.scratch("home-bench");
    let mut command = cli_command(
        pki,
        &pki::user("bench", Role::Admin),
        &home,
        &cluster.live_addresses(),
    );
    command.args(["-o", "json"]).args(args);
    let started = Instant::now();
    let out = command.output().expect("nexus runs");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "nexus {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    (seconds, out)
}

/// Waits until the replica at `address` holds `workspaces` workspaces; answers when it did.
async fn until_held(pki: &TestPki, address: std::net::SocketAddr, workspaces: usize) -> Instant {
    let observer = connect(pki, &pki::user("bench", Role::Admin), address)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(stats) = fleet_stats(&observer).await {
            let held: usize = stats.workspaces.iter().map(|(_, n)| *n as usize).sum();
            if held >= workspaces {
                let running = count_of(&stats.workspaces, &WorkspaceState::Running);
                println!("  {address} holds {held} workspaces ({running} running)");
                return Instant::now();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{address} never held {workspaces} workspaces"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        hosts,
        workspaces,
        election_ticks,
        creates,
    } = args;
    let pki = TestPki::new();
    pki.issue(&pki::user("bench", Role::Admin));
    let cluster_id = pki.issue(&pki::coordinator(1)).ca_fingerprint().to_string();

    let started = Instant::now();
    let state = snapshot::build(hosts, workspaces, None);
    let payload = state.to_snapshot().unwrap();
    let header = BackupHeader {
        id: "20261203T000000Z-i1".to_string(),
        cluster: cluster_id,
        node: NodeId::new(1).unwrap(),
        index: 1,
        term: 1,
        created_at: clock::now(),
        software: nexus_protocol::SOFTWARE_VERSION.to_string(),
        state_format: STATE_FORMAT,
        counts: state.table_counts(),
    };
    drop(state);
    let bytes = backup::encode(&header, &payload).unwrap();
    drop(payload);
    let file = pki.scratch("offsite").join("fleet.nxbackup");
    std::fs::write(&file, &bytes).unwrap();
    let file_bytes = bytes.len() as u64;
    drop(bytes);
    println!(
        "a backup of {hosts} hosts and {workspaces} workspaces: {file_bytes} bytes, made in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Three members made from the file, on the addresses of a cluster started for them.
    let flags = coordinator_flags(&["--host-ttl", "86400"], election_ticks);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::start(&pki, 3, &flags).await;
    cluster.leader(&pki, Duration::from_secs(30)).await;
    for index in 0..cluster.members.len() {
        cluster.kill(index);
    }
    let members = cluster.members.clone();
    let mut offline = Vec::new();
    for member in &members {
        std::fs::remove_dir_all(&member.data_dir).unwrap();
        let peers: Vec<String> = members
            .iter()
            .filter(|m| m.id != member.id)
            .map(|m| format!("{}={}", m.id, m.address))
            .collect();
        let started = Instant::now();
        restore_member(&pki, &file, &member.data_dir, member.id, &peers);
        offline.push(started.elapsed().as_secs_f64());
    }
    let offline_restore_seconds = offline.iter().copied().fold(0.0, f64::max);
    let started = Instant::now();
    for index in 0..members.len() {
        cluster.restart(&pki, index).await;
    }
    let leader = cluster.leader(&pki, Duration::from_secs(60)).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    until_held(&pki, leader_address, workspaces).await;
    let cluster_up_seconds = started.elapsed().as_secs_f64();
    println!("the restored cluster serves every workspace after {cluster_up_seconds:.1} s");
    // The new leader backs up at once (its directory is empty): let that pass before timing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The list and creates first, on the state as restored (the creates go into the backups).
    let at_scale = list_and_create(&pki, &cluster, workspaces, creates).await;
    let term_before = cluster.leader(&pki, Duration::from_secs(60)).await.term;

    let (create_seconds, out) = timed(&pki, &cluster, &["admin", "backup", "create"]);
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    let created_bytes = made["size_bytes"].as_u64().unwrap_or_default();
    println!("backup create: {create_seconds:.2} s ({created_bytes} bytes, {id})");
    let (verify_seconds, _) = timed(&pki, &cluster, &["admin", "backup", "verify", &id]);
    println!("backup verify: {verify_seconds:.2} s");
    let (online_restore_seconds, _) = timed(
        &pki,
        &cluster,
        &["admin", "backup", "restore", &id, "--yes"],
    );
    println!("backup restore (online, until applied): {online_restore_seconds:.2} s");

    let fourth = cluster.start_joiner(&pki, 4).await;
    let fourth_address = cluster.members[fourth].address;
    let asked = Instant::now();
    // A restore of this size may cost an election after it (see docs/benchmarks.md): the add is
    // asked again of whoever leads until one takes it.
    loop {
        let leader = cluster.leader(&pki, Duration::from_secs(60)).await;
        let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
        let added = admin_to_leader(
            &pki,
            leader_address,
            Request::Admin(AdminRequest::ClusterAdd {
                id: NodeId::new(4).unwrap(),
                address: fourth_address.to_string(),
            }),
        )
        .await;
        match added {
            Ok(Response::ClusterStatus(_)) => break,
            Err(error) if asked.elapsed() < Duration::from_secs(120) => {
                println!("  adding the fourth member: {}; again", error.message);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => panic!("{other:?}\n{}", cluster.logs()),
        }
    }
    let held = until_held(&pki, fourth_address, workspaces).await;
    let catch_up_seconds = held.duration_since(asked).as_secs_f64();
    println!("a new member caught up in {catch_up_seconds:.2} s");
    let term_after = cluster.leader(&pki, Duration::from_secs(60)).await.term;
    Report {
        hosts,
        workspaces,
        file_bytes,
        offline_restore_seconds,
        cluster_up_seconds,
        create_seconds,
        created_bytes,
        verify_seconds,
        online_restore_seconds,
        catch_up_seconds,
        term_before,
        term_after,
        at_scale,
    }
}
