//! The coordinator's monitoring HTTP on real processes: `/readyz` and `/livez` as a cluster
//! loses its quorum, and `/metrics` moving with the requests, the fleet and a workspace's start.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nexus_protocol::RequestId;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{
    AdminRequest, AgentRequest, ObservedWorkspace, Request, Response, WorkspaceRequest,
};
use nexus_protocol::model::{HostInfo, WorkspaceState};
use nexus_tests::cluster::{TestCluster, admin_request};
use nexus_tests::eventually;
use nexus_tests::http::get;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{Process, connect};

const CONVERGE: Duration = Duration::from_secs(30);

fn http(cluster: &TestCluster, index: usize) -> SocketAddr {
    cluster.running[index]
        .as_ref()
        .and_then(|process| process.http)
        .expect("a running member serving HTTP")
}

/// The value of the sample `series` (name and labels, as written) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_its_leader_is_live_but_not_ready() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster.leader(&pki, CONVERGE).await;
    for index in 0..3 {
        let addr = http(&cluster, index);
        eventually("every member ready", CONVERGE, || async {
            let (status, body) = get(addr, "/readyz?verbose").await;
            (status == 200).then_some(body)
        })
        .await;
    }
    let (status, body) = get(http(&cluster, 0), "/readyz?verbose").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "[+]leader ok\n[+]applied ok\n[+]store ok\nreadyz check passed\n"
    );
    // Kill the leader and the other follower: the survivor has no leader, and no quorum to
    // elect one.
    let leading = cluster.index_of(leader.node.get());
    let survivor = (leading + 1) % 3;
    for index in (0..3).filter(|index| *index != survivor) {
        cluster.kill(index);
    }
    // At first it still knows the dead leader, which no longer confirms its reads; within an
    // election timeout it knows none.
    let addr = http(&cluster, survivor);
    let body = eventually("the survivor to know no leader", CONVERGE, || async {
        let (status, body) = get(addr, "/readyz").await;
        assert!(
            status == 200 || body.contains("[-]applied failed"),
            "{body}"
        );
        (status == 503 && body.contains("[-]leader failed")).then_some(body)
    })
    .await;
    assert!(body.contains("[-]leader failed: no leader known"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    let (status, body) = get(addr, "/readyz?verbose").await;
    assert_eq!(status, 503);
    assert!(body.contains("[+]store ok"), "{body}");
    let (status, body) = get(addr, "/livez?verbose").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "[+]raft-driver ok\nlivez check passed\n")
    );
    let (_, metrics) = get(addr, "/metrics").await;
    assert_eq!(sample(&metrics, "nexus_raft_has_leader"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_metrics_follow_raft_the_fleet_requests_and_starts() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    let status = cluster.leader(&pki, CONVERGE).await;
    let leading = cluster.index_of(status.node.get());
    let leader = cluster.members[leading].address;
    let addr = http(&cluster, leading);

    // A host registers; its agent heartbeats.
    let agent = connect(&pki, &pki::agent("h1"), leader).await.unwrap();
    let ask = |request| {
        let agent = agent.clone();
        async move {
            agent
                .request_with(RequestId::random(), request, Duration::from_secs(15))
                .await
        }
    };
    let host = HostInfo {
        cpus: 8,
        memory_bytes: 32 << 30,
        ..nexus_fixtures::host("h1")
    };
    ask(Request::Agent(AgentRequest::Register(host)))
        .await
        .unwrap();
    ask(Request::Agent(AgentRequest::Heartbeat {
        sequence: 1,
        stats: None,
    }))
    .await
    .unwrap();

    let started = Instant::now();
    let (code, text) = get(addr, "/metrics").await;
    eprintln!(
        "a scrape of the leader of 3 with 1 host: {} bytes in {:?}",
        text.len(),
        started.elapsed()
    );
    assert_eq!(code, 200);
    for (series, value) in [
        ("nexus_raft_is_leader", 1.0),
        ("nexus_raft_has_leader", 1.0),
        ("nexus_hosts{status=\"ready\"}", 1.0),
        ("nexus_hosts{status=\"down\"}", 0.0),
        ("nexus_workspaces{state=\"running\"}", 0.0),
        ("nexus_heartbeats_total", 1.0),
        (
            "nexus_api_requests_total{kind=\"agent_register\",code=\"OK\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    for series in [
        "nexus_raft_term",
        "nexus_raft_commit_index",
        "nexus_raft_applied_index",
        "nexus_raft_proposals_total{outcome=\"ok\"}",
        "nexus_raft_commit_duration_seconds_count",
        "nexus_raft_apply_duration_seconds_count",
        "nexus_storage_sync_duration_seconds_count",
        "nexus_cert_expiry_timestamp_seconds{cert=\"node\"}",
        "nexus_cert_expiry_timestamp_seconds{cert=\"ca\"}",
    ] {
        let value = sample(&text, series);
        assert!(value.is_some_and(|v| v > 0.0), "{series} in\n{text}");
    }
    assert!(
        text.contains("nexus_peer_rtt_seconds{peer=\""),
        "peer rtt in\n{text}"
    );

    // Requests move their counters.
    let statuses = "nexus_api_requests_total{kind=\"admin_status\",code=\"OK\"}";
    let before = sample(&text, statuses).unwrap_or(0.0);
    admin_request(&pki, leader, Request::Admin(AdminRequest::Status))
        .await
        .unwrap();
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(sample(&text, statuses), Some(before + 1.0), "{text}");
    assert!(
        sample(
            &text,
            "nexus_api_request_duration_seconds_count{kind=\"admin_status\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // A create, then its agent's report of running: a cold start, measured.
    let user = connect(&pki, &pki::user("alice", Role::User), leader)
        .await
        .unwrap();
    let created = user
        .request_with(
            RequestId::random(),
            Request::Workspace(WorkspaceRequest::Create(nexus_fixtures::spec("api"))),
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    assert!(matches!(created, Response::Workspace(_)), "{created:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = |state| {
        Request::Agent(AgentRequest::ReportObserved(vec![ObservedWorkspace {
            name: nexus_fixtures::workspace_name("api"),
            generation: 1,
            state,
            ports: vec![],
            error: None,
        }]))
    };
    ask(report(WorkspaceState::Running)).await.unwrap();
    let text = eventually("the start counted", CONVERGE, || async {
        let (_, text) = get(addr, "/metrics").await;
        (sample(
            &text,
            "nexus_workspace_starts_total{kind=\"cold\",outcome=\"ok\"}",
        ) == Some(1.0))
        .then_some(text)
    })
    .await;
    let took = sample(
        &text,
        "nexus_workspace_start_duration_seconds_sum{kind=\"cold\"}",
    )
    .unwrap();
    assert!((0.3..15.0).contains(&took), "{took} in\n{text}");
    assert_eq!(
        sample(&text, "nexus_placements_total{outcome=\"placed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "nexus_workspaces{state=\"running\"}"),
        Some(1.0)
    );

    // The agent's 30-second refresh of the same report: acknowledged without a log entry.
    let (changes, repeats) = (
        "nexus_reports_total{kind=\"change\"}",
        "nexus_reports_total{kind=\"repeat\"}",
    );
    assert_eq!(sample(&text, changes), Some(1.0), "{text}");
    assert_eq!(sample(&text, repeats), Some(0.0), "{text}");
    ask(report(WorkspaceState::Running)).await.unwrap();
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(sample(&text, changes), Some(1.0), "{text}");
    assert_eq!(sample(&text, repeats), Some(1.0), "{text}");

    // Stopped, then started again: a warm start.
    let api = || nexus_fixtures::workspace_name("api");
    for (request, reported) in [
        (WorkspaceRequest::Stop(api()), WorkspaceState::Stopped),
        (WorkspaceRequest::Start(api()), WorkspaceState::Running),
    ] {
        user.request_with(
            RequestId::random(),
            Request::Workspace(request),
            Duration::from_secs(15),
        )
        .await
        .unwrap();
        ask(report(reported)).await.unwrap();
    }
    let warm = "nexus_workspace_starts_total{kind=\"warm\",outcome=\"ok\"}";
    eventually("the warm start counted", CONVERGE, || async {
        let (_, text) = get(addr, "/metrics").await;
        (sample(&text, warm) == Some(1.0)).then_some(())
    })
    .await;

    // Followers count nothing of it, and say they do not lead: asked once a follower has applied
    // everything the leader had (a start it never saw would be 0 as well).
    let (_, text) = get(addr, "/metrics").await;
    let applied = sample(&text, "nexus_raft_applied_index").unwrap();
    let follower = http(&cluster, (leading + 1) % 3);
    let text = eventually(
        "the follower to apply what the leader did",
        CONVERGE,
        || async {
            let (_, text) = get(follower, "/metrics").await;
            (sample(&text, "nexus_raft_applied_index")? >= applied).then_some(text)
        },
    )
    .await;
    assert_eq!(sample(&text, "nexus_raft_is_leader"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "nexus_workspace_starts_total{kind=\"cold\",outcome=\"ok\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_monitoring_address_already_taken_stops_the_coordinator_and_names_the_flag() {
    let pki = TestPki::new();
    pki.issue(&pki::coordinator(1));
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let mut process = Process::spawn(
        "nexus-coordinator",
        &[
            "--node-id".into(),
            "1".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--http-listen".into(),
            taken.to_string(),
            "--data-dir".into(),
            pki.scratch("coordinator-1").display().to_string(),
            "--tls-dir".into(),
            pki.dir().display().to_string(),
        ],
        pki.scratch("log").join("coordinator.log"),
    );
    let status = eventually("the coordinator to exit", CONVERGE, || {
        let status = process.exited();
        async move { status }
    })
    .await;
    assert!(!status.success());
    let log = process.log();
    assert!(
        log.contains(&format!(
            "cannot serve HTTP monitoring on {taken} (--http-listen)"
        )),
        "{log}"
    );
}
