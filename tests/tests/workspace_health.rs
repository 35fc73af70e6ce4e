//! A workspace's health, its sync sessions and the daemons' diagnostics, as admins ask for them.
//! One test runs a real agent endpoint in this process (QUIC with mTLS, the hollow runtime, a
//! files directory) and asks it directly; the other runs a coordinator and a `nexus-agent`
//! process and asks through the `nexus` CLI, as an operator would: `admin workspace health`,
//! `admin health-check` (and their exit codes), `admin workspace sync-status`, and each
//! daemon's diagnostics, which never hold a secret planted in the agent's configuration. The last
//! runs three coordinators and a Docker agent: `health` finds the port of a server that died
//! inside its container.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_agent::endpoint::Endpoint;
use nexus_agent::endpoint::syncstats::SyncStats;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_agent::runtime::{CreateSpec, Runtime};
use nexus_protocol::debug::{CertificateInfo, Diagnostic, WorkspaceHealth};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, IdentityKind, Role};
use nexus_protocol::message::{
    AdminRequest, Assignment, DesiredRun, DesiredState, HostRequest, Request, Response,
};
use nexus_protocol::model::{PortBinding, ResourceClass};
use nexus_protocol::transport::{
    AcceptPolicy, Connection, Connector, Credentials, Server, TransportConfig,
};
use nexus_protocol::{HostId, WorkspaceName};
use nexus_sync::endpoint::{MAX_WAIT_MS, SessionReport, SyncState};
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::remote::RemoteEndpoint;
use nexus_sync::session::{SessionState, cycle};
use nexus_telemetry::metrics::Registry;
use nexus_tests::eventually;
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, cli_as};
use tokio::sync::watch;

fn unique_host(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// A port of the agent's default range (20000–32000) that nothing listens on now.
fn free_port_in_range() -> u16 {
    let start = 21_000 + u16::try_from(std::process::id() % 10_000).unwrap();
    (start..=32_000)
        .chain(20_000..start)
        .find(|&port| std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).is_ok())
        .expect("a free port in 20000-32000")
}

fn web() -> WorkspaceName {
    "web".parse().unwrap()
}

/// Connects to the agent at `address` as `identity` (issuing its certificate if needed).
async fn connect_as(pki: &TestPki, identity: &Identity, address: SocketAddr) -> Connection {
    let (cert, _) = pki.paths(identity);
    let credentials = if cert.exists() {
        Credentials::from_pki_dir(pki.dir(), identity).unwrap()
    } else {
        pki.issue(identity)
    };
    Connector::new(&credentials, TransportConfig::default())
        .unwrap()
        .connect(address, "127.0.0.1", &[IdentityKind::Agent])
        .await
        .unwrap()
}

fn ada() -> Identity {
    pki::user("ada", Role::User)
}

async fn ask(connection: &Connection, request: HostRequest) -> Result<Response, ErrorCode> {
    connection
        .request(Request::Host(request))
        .await
        .map_err(|e| e.code)
}

async fn health(connection: &Connection) -> WorkspaceHealth {
    match ask(connection, HostRequest::Health(web())).await {
        Ok(Response::Health(health)) => *health,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_agent_tells_a_workspaces_health_sync_sessions_and_events() {
    let pki = TestPki::new();
    let host: HostId = unique_host("health").parse().unwrap();
    let identity = pki::agent(host.as_str());
    let credentials = pki.issue(&identity);
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    let port = PortBinding {
        container: 3000,
        host: 20_001,
    };
    let id = runtime
        .create(&CreateSpec {
            host: host.clone(),
            workspace: web(),
            generation: 1,
            owner: "ada".parse().unwrap(),
            image: "dev:latest".into(),
            class: ResourceClass::Small,
            env: Default::default(),
            command: vec![],
            ports: vec![port],
            files: None,
            mirror: None,
        })
        .await
        .unwrap();
    runtime.start(&id).await.unwrap();
    let (_desired, desired) = watch::channel(Some(DesiredState {
        version: 1,
        assignments: vec![Assignment {
            spec: nexus_fixtures::spec("web"),
            owner: "ada".parse().unwrap(),
            generation: 1,
            run: DesiredRun::Running,
            ports: vec![port],
        }],
    }));
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("web")).unwrap();
    std::fs::write(files.path().join("web/notes.txt"), [b'x'; 300]).unwrap();
    let stats = SyncStats::register(&mut Registry::new());
    let endpoint = Endpoint::new(identity, runtime.clone(), desired)
        .with_files(files.path().to_path_buf())
        .with_sync_stats(stats);
    let server = Server::bind(
        ([127, 0, 0, 1], 0).into(),
        &credentials,
        AcceptPolicy::only(&[IdentityKind::User, IdentityKind::Admin]),
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(server.serve(Arc::new(endpoint), std::future::pending()));
    let owner = connect_as(&pki, &ada(), address).await;

    // Running, its port served, its files counted, no sync session yet.
    let first = health(&owner).await;
    let container = first.container.as_ref().unwrap();
    assert!(container.running, "{first:?}");
    assert_eq!(first.ports.len(), 1);
    assert!(first.ports[0].accepting, "{first:?}");
    assert_eq!(first.files_bytes, Some(300));
    assert_eq!(
        (first.files_limit_bytes, first.files_partial),
        (None, false)
    );
    assert!(first.sync.is_empty());

    // A sync session cycles (the agent serves its scan) and reports.
    let carrier = |connection| {
        RemoteEndpoint::new(
            nexus_cli::sync::AgentCarrier::new(connection, web()),
            vec![],
            true,
        )
    };
    let mut beta = carrier(connect_as(&pki, &ada(), address).await);
    let local = tempfile::tempdir().unwrap();
    let mut alpha = LocalEndpoint::new(local.path(), Filter::new(&[], true).unwrap());
    cycle(&mut SessionState::default(), &mut alpha, &mut beta)
        .await
        .unwrap();
    beta.report(SessionReport {
        session: 42,
        state: SyncState::Conflicted,
        conflicts: 2,
        initial_sync_ms: Some(900),
        latencies_ms: vec![120, 80],
    })
    .await
    .unwrap();
    let sessions = match ask(&owner, HostRequest::SyncSessions(web())).await {
        Ok(Response::SyncSessions(sessions)) => sessions,
        other => panic!("{other:?}"),
    };
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let session = &sessions[0];
    assert_eq!(
        (
            session.session,
            session.user.as_ref().map(|u| u.as_str()),
            session.provider.as_str(),
            session.state.as_str(),
            session.changes,
            session.conflicts
        ),
        (42, Some("ada"), "embedded", "conflicted", 2, 2)
    );
    assert!(session.last_cycle.is_some(), "{session:?}");
    assert_eq!(health(&owner).await.sync, sessions);

    // A flush wakes a session waiting on the agent's side at once.
    let mut waiting = carrier(connect_as(&pki, &ada(), address).await);
    let seen = waiting.wait_change(0, 0).await.unwrap();
    let woken = tokio::spawn(async move { waiting.wait_change(seen, MAX_WAIT_MS).await });
    assert_eq!(
        ask(&owner, HostRequest::SyncFlush(web())).await,
        Ok(Response::Ack)
    );
    assert_eq!(woken.await.unwrap().unwrap(), seen + 1);

    // Its server dies: the port refuses. Then the container dies.
    runtime.serve_port(port.host, false);
    let refusing = health(&owner).await;
    assert!(refusing.container.as_ref().unwrap().running);
    assert!(!refusing.ports[0].accepting, "{refusing:?}");
    assert!(runtime.crash(&web(), 3));
    let crashed = health(&owner).await;
    let container = crashed.container.as_ref().unwrap();
    assert_eq!((container.running, container.exit_code), (false, Some(3)));
    assert_eq!(
        crashed.ports[0].error.as_deref(),
        Some("not tried: the container is not running")
    );

    // Only its owner and admins ask; only admins read the engine's events and diagnostics.
    let bob = connect_as(&pki, &pki::user("bob", Role::User), address).await;
    for request in [
        HostRequest::Health(web()),
        HostRequest::SyncSessions(web()),
        HostRequest::SyncFlush(web()),
    ] {
        assert_eq!(ask(&bob, request).await, Err(ErrorCode::PermissionDenied));
    }
    let events = HostRequest::ContainerEvents {
        workspace: web(),
        since: None,
    };
    assert_eq!(
        ask(&owner, events.clone()).await,
        Err(ErrorCode::PermissionDenied)
    );
    assert_eq!(
        ask(&owner, HostRequest::Diagnostic(Diagnostic::Config)).await,
        Err(ErrorCode::PermissionDenied)
    );
    let admin = connect_as(&pki, &pki::user("root", Role::Admin), address).await;
    let events = match ask(&admin, events).await {
        Ok(Response::ContainerEvents(events)) => events,
        other => panic!("{other:?}"),
    };
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["create", "start", "die"]);
    assert_eq!(
        events[2].attributes,
        [
            ("name".to_string(), format!("nexus.{host}.web.g1")),
            ("exitCode".into(), "3".into())
        ]
    );
    assert!(matches!(
        ask(&admin, HostRequest::Health(web())).await,
        Ok(Response::Health(_))
    ));
    // This endpoint was made without diagnostics.
    assert_eq!(
        ask(&admin, HostRequest::Diagnostic(Diagnostic::Readiness)).await,
        Err(ErrorCode::Unsupported)
    );
}

/// The planted secrets: a registry password in the agent's configuration, and (below) a key
/// file's content.
const PLANTED: &str = "planted-registry-secret-42";

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The check of `name` (`agent h1`) in a health-check's JSON.
fn check<'a>(
    report: &'a serde_json::Value,
    kind: &str,
    target: Option<&str>,
) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == kind && c["target"].as_str() == target)
        .unwrap_or_else(|| panic!("no {kind} {target:?} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_ask_a_fleet_and_a_workspace_how_they_are() {
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let host = unique_host("fleet");
    let config = pki.scratch("agent-config").join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[registry]]\nserver = \"registry.example:5000\"\nusername = \"robot\"\npassword = \"{PLANTED}\"\n"
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::start(
        &pki,
        &host,
        &[coordinator.address],
        &["--config", config.to_str().unwrap()],
    );
    let host_id: HostId = host.parse().unwrap();
    eventually("the agent to register", Duration::from_secs(20), || async {
        coordinator
            .read({
                let host_id = host_id.clone();
                move |state| state.hosts().contains_key(&host_id)
            })
            .await
            .then_some(())
    })
    .await;
    let port = free_port_in_range();
    coordinator
        .place(&host_id, "web", "dev:latest", &[(3000, port)], &[])
        .await
        .unwrap();
    let home = pki.scratch("home");
    let admin = pki::user("root", Role::Admin);
    let nexus = |args: &[&str]| cli_as(&pki, &admin, &home, coordinator.address, args);
    let started = Instant::now();
    let out = eventually(
        "web to run and be healthy",
        Duration::from_secs(30),
        || async {
            let out = nexus(&["-o", "json", "admin", "workspace", "health", "web"]);
            out.status.success().then_some(out)
        },
    )
    .await;
    let report = json(&out);
    assert_eq!(report["verdict"], "healthy", "{report}");
    assert_eq!(report["host"], host.as_str());
    assert_eq!(report["ports"][0]["accepting"], true);
    assert!(started.elapsed() < Duration::from_secs(60));

    // The fleet: one coordinator, one agent, its engine and their certificates (the harness's
    // last 90 days). This machine's own disk decides the disk check, which may warn or fail: the
    // exit code follows the fails, whatever they are.
    let out = nexus(&["-o", "json", "admin", "health-check"]);
    let report = json(&out);
    let agent_name = format!("agent-{host}");
    for (kind, target) in [
        ("quorum", None),
        ("agent", Some(host.as_str())),
        ("engine", Some(host.as_str())),
        ("certificates", Some("coordinator-1")),
        ("certificates", Some(agent_name.as_str())),
        ("workspaces", None),
    ] {
        assert_eq!(check(&report, kind, target)["status"], "ok", "{report}");
    }
    let detail = check(&report, "certificates", Some("coordinator-1"))["detail"].clone();
    assert!(
        detail.as_str().unwrap().starts_with("node expires in 89 d"),
        "{detail}"
    );
    let fails = report["summary"]["fail"].as_u64().unwrap();
    let disk = check(&report, "disk", Some(host.as_str()))["status"].clone();
    assert_eq!(fails, u64::from(disk == "fail"), "{report}");
    assert_eq!(report["healthy"], fails == 0);
    assert_eq!(
        out.status.code(),
        Some(if fails == 0 { 0 } else { 4 }),
        "{report}"
    );
    assert_eq!(report["voters"], 1);

    // The sessions the agent serves for web: none.
    let out = nexus(&["-o", "json", "admin", "workspace", "sync-status", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["sessions"], serde_json::json!([]));

    // The daemons' diagnostics hold no secret: not the registry's password, not a key file's
    // content.
    let agent_address = match nexus_tests::process::connect(&pki, &admin, coordinator.address)
        .await
        .unwrap()
        .request(Request::Admin(AdminRequest::Endpoints))
        .await
        .unwrap()
    {
        Response::Endpoints(endpoints) => endpoints[0].1.parse::<SocketAddr>().unwrap(),
        other => panic!("{other:?}"),
    };
    let to_agent = connect_as(&pki, &admin, agent_address).await;
    let to_coordinator = nexus_tests::process::connect(&pki, &admin, coordinator.address)
        .await
        .unwrap();
    let (_, agent_key) = pki.paths(&pki::agent(&host));
    let key = std::fs::read_to_string(agent_key).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    for diagnostic in [
        Diagnostic::Config,
        Diagnostic::Metrics,
        Diagnostic::Certificates,
        Diagnostic::Readiness,
        Diagnostic::Engine,
    ] {
        let text = match ask(&to_agent, HostRequest::Diagnostic(diagnostic)).await {
            Ok(Response::Diagnostic(text)) => text,
            other => panic!("{diagnostic:?}: {other:?}"),
        };
        assert!(!text.contains(PLANTED), "{diagnostic:?}: {text}");
        assert!(!text.contains(key_line), "{diagnostic:?}: {text}");
        match diagnostic {
            Diagnostic::Config => {
                assert!(
                    text.contains("server = \"registry.example:5000\""),
                    "{text}"
                );
                assert!(text.contains(&format!("host_id = \"{host}\"")), "{text}");
            }
            Diagnostic::Metrics => assert!(text.contains("nexus_build_info{"), "{text}"),
            Diagnostic::Certificates => {
                let certificates: Vec<CertificateInfo> = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    certificates[0].subject.as_deref(),
                    Some(format!("nexus://agent/{host}").as_str())
                );
            }
            Diagnostic::Readiness => assert!(text.contains("[+]engine ok"), "{text}"),
            Diagnostic::Engine => {
                assert!(text.contains("\"runtime\": \"hollow\""), "{text}");
                assert!(text.contains(&format!("nexus.{host}.web.g")), "{text}");
            }
        }
        let asked = to_coordinator
            .request(Request::Admin(AdminRequest::Diagnostic(diagnostic)))
            .await;
        match (diagnostic, asked) {
            (Diagnostic::Engine, Err(error)) => assert_eq!(error.code, ErrorCode::Unsupported),
            (_, Ok(Response::Diagnostic(text))) => {
                assert!(
                    !text.contains(PLANTED) && !text.contains(key_line),
                    "{text}"
                );
            }
            (_, other) => panic!("{diagnostic:?}: {other:?}"),
        }
    }

    // The agent dies: the workspace's health and the fleet's fail, and say where.
    agent.process.kill();
    let out = nexus(&["-o", "json", "admin", "workspace", "health", "web"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = json(&out);
    assert_eq!(report["verdict"], "unhealthy");
    let out = nexus(&["-o", "json", "admin", "health-check"]);
    assert_eq!(out.status.code(), Some(4));
    let report = json(&out);
    assert_eq!(report["healthy"], false);
    assert_eq!(
        check(&report, "agent", Some(host.as_str()))["status"],
        "fail"
    );
    coordinator.stop().await;
}

#[tokio::test]
async fn health_finds_a_port_whose_server_died_inside_the_container() {
    let fleet = nexus_tests::docker_fleet::DockerFleet::start("health", 1).await;
    let (user, role) = ("ada", Role::User);
    // httpd goes to the background; the container lives on in `sleep` after it dies.
    fleet.ok(
        user,
        role,
        &[
            "workspace",
            "create",
            "api",
            "--image",
            nexus_tests::docker::TEST_IMAGE,
            "--class",
            "small",
            "--port",
            "8080",
            "--",
            "sh",
            "-c",
            "httpd -p 8080; exec sleep 1000000",
        ],
    );
    let health = |expect: i32| {
        let out = fleet.run(
            "root",
            Role::Admin,
            &["admin", "workspace", "health", "api"],
        );
        (out.status.code() == Some(expect)).then(|| json(&out))
    };
    let healthy = eventually("api to be healthy", Duration::from_secs(20), || async {
        health(0)
    })
    .await;
    assert_eq!(healthy["verdict"], "healthy", "{healthy}");
    assert_eq!(healthy["ports"][0]["container"], 8080);
    assert_eq!(healthy["ports"][0]["accepting"], true);

    fleet.ok(
        user,
        role,
        &["workspace", "exec", "api", "--", "killall", "httpd"],
    );
    let broken = eventually("api's port to refuse", Duration::from_secs(20), || async {
        health(4)
    })
    .await;
    assert_eq!(broken["verdict"], "unhealthy", "{broken}");
    assert_eq!(broken["container"]["running"], true, "{broken}");
    assert_eq!(broken["ports"][0]["accepting"], false, "{broken}");
    let reason = broken["reasons"][0].as_str().unwrap();
    assert!(reason.starts_with("port 8080->"), "{reason}");
}
