//! Sync sessions tell the workspace's agent what they measured, and the agent exports it. Each
//! test runs a real agent endpoint in this process (QUIC with mTLS, the hollow runtime, a files
//! directory), whose `SyncStats` are then read as a scrape reads them; the session is the
//! engine's cycles measured by `nexus_sync::measure` and carried by the CLI's carrier, or the
//! sync daemon itself (`nexus workspace sync start`, found through an in-process coordinator).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_agent::endpoint::Endpoint;
use nexus_agent::endpoint::syncstats::SyncStats;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_protocol::identity::{IdentityKind, Role};
use nexus_protocol::message::{AgentRequest, Request};
use nexus_protocol::message::{Assignment, DesiredRun, DesiredState};
use nexus_protocol::transport::{
    AcceptPolicy, Connection, Connector, Credentials, Server, TransportConfig,
};
use nexus_sync::endpoint::{EndpointError, RefusalCode, SessionReport, SyncState};
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::measure::Meter;
use nexus_sync::remote::RemoteEndpoint;
use nexus_sync::session::{SessionState, cycle};
use nexus_telemetry::metrics::{Format, Registry};
use nexus_tests::eventually;
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::cli_command;
use tokio::sync::watch;

/// An agent's endpoint serving `web` from a files directory, in this process.
struct Agent {
    address: SocketAddr,
    files: tempfile::TempDir,
    _desired: watch::Sender<Option<DesiredState>>,
}

/// A host id no other test (or test process) uses.
fn unique_host(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// Serves `owner`'s `web` as host `host`'s agent.
fn serve(pki: &TestPki, host: &str, owner: &str, stats: Option<SyncStats>) -> Agent {
    let identity = pki::agent(host);
    let credentials = pki.issue(&identity);
    let runtime = Arc::new(HollowRuntime::new(
        host.parse().unwrap(),
        HollowConfig::default(),
    ));
    let assignment = Assignment {
        spec: nexus_fixtures::spec("web"),
        owner: owner.parse().unwrap(),
        generation: 1,
        run: DesiredRun::Running,
        ports: vec![],
    };
    let (desired, desired_now) = watch::channel(Some(DesiredState {
        version: 1,
        assignments: vec![assignment],
    }));
    let files = tempfile::tempdir().unwrap();
    let mut endpoint =
        Endpoint::new(identity, runtime, desired_now).with_files(files.path().to_path_buf());
    if let Some(stats) = stats {
        endpoint = endpoint.with_sync_stats(stats);
    }
    let server = Server::bind(
        ([127, 0, 0, 1], 0).into(),
        &credentials,
        AcceptPolicy::only(&[IdentityKind::User, IdentityKind::Admin]),
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(server.serve(Arc::new(endpoint), std::future::pending()));
    Agent {
        address,
        files,
        _desired: desired,
    }
}

async fn connect_as(pki: &TestPki, user: &str, address: SocketAddr) -> Connection {
    let credentials: Credentials = pki.issue(&pki::user(user, Role::User));
    Connector::new(&credentials, TransportConfig::default())
        .unwrap()
        .connect(address, "127.0.0.1", &[IdentityKind::Agent])
        .await
        .unwrap()
}

fn remote(connection: Connection) -> RemoteEndpoint<nexus_cli::sync::AgentCarrier> {
    RemoteEndpoint::new(
        nexus_cli::sync::AgentCarrier::new(connection, "web".parse().unwrap()),
        vec![],
        true,
    )
}

/// The value of `metric` in `text`.
fn value(text: &str, metric: &str) -> f64 {
    line(text, metric)[metric.len()..].trim().parse().unwrap()
}

/// The line of `metric` in `text`.
fn line(text: &str, metric: &str) -> String {
    text.lines()
        .find(|line| line.starts_with(metric) && line[metric.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {metric} in\n{text}"))
        .to_string()
}

#[tokio::test]
async fn a_sessions_initial_sync_and_latency_reach_its_agents_metrics() {
    let pki = TestPki::new();
    let mut registry = Registry::new();
    let stats = SyncStats::register(&mut registry);
    let agent = serve(&pki, &unique_host("reports"), "ada", Some(stats.clone()));
    let mut beta = remote(connect_as(&pki, "ada", agent.address).await);
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("a.txt"), "one\n").unwrap();
    let mut alpha = LocalEndpoint::new(local.path(), Filter::new(&[], true).unwrap());
    let mut state = SessionState::default();
    let mut meter = Meter::new(Instant::now());
    let session = 42;

    // The initial sync: the session's first cycle, which copies a.txt.
    let from = meter.cycle_started(Instant::now());
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert!(meter.cycle_ended(from, Instant::now(), &report));
    let first = meter.report(session);
    assert!(first.initial_sync_ms.is_some(), "{first:?}");
    beta.report(first).await.unwrap();

    // A change the watcher noticed, carried by the next cycle: one latency.
    std::fs::write(local.path().join("b.txt"), "two\n").unwrap();
    meter.noticed(Instant::now());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let from = meter.cycle_started(Instant::now());
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert!(meter.cycle_ended(from, Instant::now(), &report));
    let second = meter.report(session);
    assert_eq!(
        (
            second.state,
            second.initial_sync_ms,
            second.latencies_ms.len()
        ),
        (SyncState::Watching, None, 1),
        "{second:?}"
    );
    assert!(second.latencies_ms[0] >= 20, "{second:?}");
    beta.report(second).await.unwrap();

    // What the agent's scrape shows.
    stats.refresh(Instant::now());
    let text = registry.encode(Format::Classic);
    assert_eq!(
        line(&text, "nexus_initial_sync_duration_seconds_count"),
        "nexus_initial_sync_duration_seconds_count 1"
    );
    assert_eq!(
        line(&text, "nexus_sync_latency_seconds_count"),
        "nexus_sync_latency_seconds_count 1"
    );
    assert_eq!(
        line(&text, "nexus_sync_sessions{state=\"watching\"}"),
        "nexus_sync_sessions{state=\"watching\"} 1.0"
    );
    assert_eq!(
        line(&text, "nexus_sync_sessions{state=\"syncing\"}"),
        "nexus_sync_sessions{state=\"syncing\"} 0.0"
    );
    assert_eq!(
        line(&text, "nexus_sync_conflicts"),
        "nexus_sync_conflicts 0.0"
    );

    // A report out of bounds is refused with its code, and changes nothing; so is a report
    // from someone who does not own the workspace.
    let mut bad = SessionReport {
        session,
        state: SyncState::Failed,
        conflicts: 0,
        initial_sync_ms: None,
        latencies_ms: vec![1; 257],
    };
    let connection = connect_as(&pki, "ada", agent.address).await;
    let refused = connection
        .request(nexus_protocol::message::Request::Host(
            nexus_protocol::message::HostRequest::Sync {
                workspace: "web".parse().unwrap(),
                payload: nexus_protocol::codec::encode_payload(
                    &nexus_sync::endpoint::Request::Report(bad.clone()),
                )
                .unwrap(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code,
        nexus_protocol::error::ErrorCode::InvalidArgument,
        "{refused}"
    );
    bad.latencies_ms.clear();
    let mut theirs = remote(connect_as(&pki, "bob", agent.address).await);
    match theirs.report(bad).await {
        Err(EndpointError::Refused(refusal)) => {
            assert_eq!(refusal.code, RefusalCode::PermissionDenied, "{refusal}");
        }
        other => panic!("{other:?}"),
    }
    stats.refresh(Instant::now());
    let text = registry.encode(Format::Classic);
    assert_eq!(
        line(&text, "nexus_sync_sessions{state=\"failed\"}"),
        "nexus_sync_sessions{state=\"failed\"} 0.0"
    );
    assert_eq!(
        line(&text, "nexus_sync_latency_seconds_count"),
        "nexus_sync_latency_seconds_count 1"
    );
}

#[tokio::test]
async fn an_agent_without_sync_stats_takes_reports_and_drops_them() {
    let pki = TestPki::new();
    let agent = serve(&pki, &unique_host("nostats"), "ada", None);
    let mut beta = remote(connect_as(&pki, "ada", agent.address).await);
    let report = SessionReport {
        session: 1,
        state: SyncState::Syncing,
        conflicts: 0,
        initial_sync_ms: Some(1_200),
        latencies_ms: vec![30],
    };
    beta.report(report).await.unwrap();
}

/// An agent older than reports: it cannot read the request, as it cannot read any variant it
/// does not know, and says so with `PROTOCOL_ERROR`.
struct OlderAgent;

impl nexus_protocol::transport::Handler for OlderAgent {
    async fn handle(
        &self,
        _peer: &nexus_protocol::transport::Peer,
        _request_id: nexus_protocol::RequestId,
        _request: nexus_protocol::message::Request,
    ) -> nexus_protocol::transport::Reply {
        nexus_protocol::transport::Reply::Once(Err(nexus_protocol::WireError::new(
            nexus_protocol::error::ErrorCode::ProtocolError,
            "not a sync request: unknown variant index 7",
        )))
    }
}

#[tokio::test]
async fn an_older_agent_refuses_a_report_as_not_understood() {
    let pki = TestPki::new();
    let credentials = pki.issue(&pki::agent(&unique_host("older")));
    let server = Server::bind(
        ([127, 0, 0, 1], 0).into(),
        &credentials,
        AcceptPolicy::only(&[IdentityKind::User, IdentityKind::Admin]),
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(server.serve(Arc::new(OlderAgent), std::future::pending()));
    let mut beta = remote(connect_as(&pki, "ada", address).await);
    let report = SessionReport {
        session: 1,
        state: SyncState::Watching,
        conflicts: 0,
        initial_sync_ms: None,
        latencies_ms: vec![],
    };
    // What the session's reporter takes as "this agent takes no reports", and stops.
    match beta.report(report).await {
        Err(EndpointError::Refused(refusal)) => {
            assert_eq!(refusal.code, RefusalCode::NotUnderstood, "{refusal}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_sync_daemons_sessions_report_to_the_workspaces_agent() {
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let mut registry = Registry::new();
    let stats = SyncStats::register(&mut registry);
    let host = unique_host("daemon");
    let agent = serve(&pki, &host, "harness", Some(stats.clone()));
    // The host registers and says where it serves, as an agent's link does; `web` is placed
    // there (its owner is the harness's user).
    let as_agent = nexus_tests::process::connect(&pki, &pki::agent(&host), coordinator.address)
        .await
        .unwrap();
    for request in [
        AgentRequest::Register(nexus_fixtures::host(&host)),
        AgentRequest::Serving(agent.address.to_string()),
    ] {
        as_agent.request(Request::Agent(request)).await.unwrap();
    }
    coordinator
        .place(&host.parse().unwrap(), "web", "img", &[], &["sleep", "1"])
        .await
        .unwrap();

    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("a.txt"), "one\n").unwrap();
    let home = pki.scratch("home-harness");
    let sync_dir = pki.scratch("sync-harness");
    let address = coordinator.address;
    let run = |args: &[&str]| {
        cli_command(&pki, &pki::user("harness", Role::User), &home, &[address])
            .env("NEXUS_SYNC_DIR", &sync_dir)
            .args(["-o", "json", "workspace", "sync"])
            .args(args)
            .output()
            .unwrap()
    };
    let sync = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "sync {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sync(&["start", "web", "--local", local.path().to_str().unwrap()]);
    // The daemon goes when its last session does, even when the test fails.
    let _stop = OnDrop(|| {
        run(&["stop", "web"]);
    });
    let remote_file =
        |name: &str| std::fs::read_to_string(agent.files.path().join("web").join(name));
    eventually("a.txt on the agent", Duration::from_secs(20), || async {
        remote_file("a.txt").ok().filter(|text| text == "one\n")
    })
    .await;
    // Once caught up, a change: the session measures its latency.
    std::fs::write(local.path().join("b.txt"), "two\n").unwrap();
    eventually("b.txt on the agent", Duration::from_secs(20), || async {
        remote_file("b.txt").ok().filter(|text| text == "two\n")
    })
    .await;
    let text = eventually(
        "the agent's metrics to show the session's measures",
        Duration::from_secs(20),
        || async {
            stats.refresh(Instant::now());
            let text = registry.encode(Format::Classic);
            // One initial sync; at least one latency (a write may land in two cycles).
            (value(&text, "nexus_initial_sync_duration_seconds_count") == 1.0
                && value(&text, "nexus_sync_latency_seconds_count") >= 1.0
                && line(&text, "nexus_sync_sessions{state=\"watching\"}")
                    == "nexus_sync_sessions{state=\"watching\"} 1.0")
                .then_some(text)
        },
    )
    .await;
    assert_eq!(
        line(&text, "nexus_sync_conflicts"),
        "nexus_sync_conflicts 0.0"
    );
    // The sync daemon first (the guard), then the coordinator: RocksDB's threads must end
    // before the process does, or its exit can abort in them ("pthread lock: Invalid argument").
    drop(_stop);
    coordinator.stop().await;
}

/// Runs its closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
