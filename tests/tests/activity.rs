//! What keeps a workspace in use, and what the fleet tells its users, end to end: three
//! `nexus-coordinator` processes, a `nexus-agent` on the real Docker engine sampling every
//! second, and the `nexus` CLI. An exec, a logs read, traffic on a published port, a sync
//! session's start and a sync cycle that carries a file each move the workspace's last activity
//! (as its lifecycle read tells), and keeps an inactivity policy from stopping it until it stops
//! for good; an admin's notice shows on a
//! user's next command's stderr, never in its JSON on stdout, and is gone once cleared.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use nexus_protocol::identity::Role;
use nexus_protocol::message::{LifecycleView, Request, Response, WorkspaceRequest};
use nexus_protocol::model::{Activity, ActivityKind};
use nexus_tests::docker_fleet::{DockerFleet, IMAGE};
use nexus_tests::process::connect;
use nexus_tests::{eventually, pki};
use serde_json::Value;

const ADA: (&str, Role) = ("ada", Role::User);
const ROOT: (&str, Role) = ("root", Role::Admin);

/// The workspace's last activity, as its owner reads it from the first live coordinator.
async fn last_activity(fleet: &DockerFleet, name: &str) -> Activity {
    let identity = pki::user(ADA.0, ADA.1);
    let address = fleet.cluster.live_addresses()[0];
    let connection = connect(&fleet.pki, &identity, address).await.unwrap();
    let request = Request::Workspace(WorkspaceRequest::Lifecycle(name.parse().unwrap()));
    match connection.request(request).await.unwrap() {
        Response::Lifecycle(view) => {
            let LifecycleView { last_activity, .. } = *view;
            last_activity
        }
        other => panic!("{other:?}"),
    }
}

/// Does `act` until the workspace's last activity is of `kind` and newer than `after`; fails
/// with the last activity seen and the daemons' logs after 40 s.
async fn moves_to(
    fleet: &DockerFleet,
    name: &str,
    kind: ActivityKind,
    after: Activity,
    act: impl Fn(),
) -> Activity {
    let started = std::time::Instant::now();
    loop {
        act();
        // The agent reports every six heartbeats (1.2 s here).
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let last = last_activity(fleet, name).await;
        if last.kind == kind && last.at > after.at {
            return last;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the last activity is still {last:?}, not {kind} after {after:?}\n{}",
            fleet.logs()
        );
    }
}

/// Some HTTP requests to the published port, answered or not (any answer is traffic). Says on
/// stderr how many were answered, for a failure's report.
fn traffic(port: u16) {
    let (mut answered, mut bytes) = (0, 0);
    for _ in 0..40 {
        if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            answered += usize::from(!answer.is_empty());
            bytes += answer.len();
        }
    }
    eprintln!("traffic: {answered} of 40 requests to port {port} answered, {bytes} bytes");
}

#[tokio::test]
async fn exec_logs_port_traffic_and_sync_keep_a_docker_workspace_in_use() {
    let fleet = DockerFleet::start_with(
        "activity",
        1,
        &[
            "--stats-interval",
            "1",
            "--log-filter",
            "info,nexus_agent::activity=debug,nexus_agent::link=debug",
            // Apart from other suites' workspace networks on the shared engine (`nexus up`'s,
            // the default pool): two bridges with one subnet route each other's traffic, and
            // this test needs its requests to reach the container. (A bridge an engine left
            // behind when it was killed still routes its subnet, unknown to the engine.)
            "--network-pool",
            "10.251.0.0/16",
        ],
    )
    .await;
    let (user, role) = ADA;
    let web = fleet.ok(
        user,
        role,
        &[
            "workspace",
            "create",
            "web",
            "--image",
            IMAGE,
            "--class",
            "small",
            "--port",
            "8080",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    );
    assert_eq!(web["state"], "running", "{web}");
    let port = u16::try_from(web["ports"][0]["host"].as_u64().unwrap()).unwrap();
    let created = last_activity(&fleet, "web").await;
    assert_eq!(created.kind, ActivityKind::Created, "{created:?}");

    let exec = moves_to(&fleet, "web", ActivityKind::Exec, created, || {
        fleet.ok(user, role, &["workspace", "exec", "web", "--", "true"]);
    })
    .await;
    let logs = moves_to(&fleet, "web", ActivityKind::Logs, exec, || {
        fleet.ok(user, role, &["workspace", "logs", "web"]);
    })
    .await;
    let trafficked = moves_to(&fleet, "web", ActivityKind::PortTraffic, logs, || {
        traffic(port);
    })
    .await;

    // A sync session's first scan starts it; a cycle that carries a file moves changes.
    let fleet_ref = &fleet;
    let started = eventually(
        "the last activity to be sync-start",
        Duration::from_secs(40),
        || async move {
            let mut beta = remote(fleet_ref, "web").await;
            nexus_sync::endpoint::Endpoint::scan(&mut beta, None)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let last = last_activity(fleet_ref, "web").await;
            (last.kind == ActivityKind::SyncStart && last.at > trafficked.at).then_some(last)
        },
    )
    .await;
    let local = tempfile::tempdir().unwrap();
    let local = local.path();
    let cycles = std::sync::atomic::AtomicU32::new(0);
    let cycles = &cycles;
    eventually(
        "the last activity to be sync-cycle",
        Duration::from_secs(40),
        || async move {
            let n = cycles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::fs::write(local.join(format!("file-{n}.txt")), "from the laptop\n").unwrap();
            let mut beta = remote(fleet_ref, "web").await;
            let mut alpha = nexus_sync::local_endpoint::LocalEndpoint::new(
                local,
                nexus_sync::filter::Filter::new(&[], true).unwrap(),
            );
            let mut state = nexus_sync::session::SessionState::default();
            let report = nexus_sync::session::cycle(&mut state, &mut alpha, &mut beta)
                .await
                .unwrap();
            assert!(report.applied >= 1, "{report:?}");
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let last = last_activity(fleet_ref, "web").await;
            (last.kind == ActivityKind::SyncCycle && last.at > started.at).then_some(last)
        },
    )
    .await;

    // What the agent reports keeps the inactivity policy off: with a policy of 10 s, an exec
    // and requests to its port every second keep the workspace running for twice as long, and
    // once they end it is stopped by the policy, with the reason in its events.
    fleet.ok(
        ROOT.0,
        ROOT.1,
        &["admin", "limits", "set", "--inactive-stop-after", "10s"],
    );
    for round in 0..20 {
        if round % 2 == 0 {
            fleet.ok(user, role, &["workspace", "exec", "web", "--", "true"]);
        } else {
            traffic(port);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let busy = fleet.ok(user, role, &["workspace", "inspect", "web"]);
    assert_eq!(busy["state"], "running", "{busy:#}");
    eventually(
        "the idle workspace to be stopped by the policy",
        Duration::from_secs(60),
        || async {
            (fleet.ok(user, role, &["workspace", "inspect", "web"])["state"] == "stopped")
                .then_some(())
        },
    )
    .await;
    let events = fleet.ok(user, role, &["workspace", "events", "web"]);
    let by_policy: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["actor"]["kind"] == "policy")
        .collect();
    assert_eq!(by_policy.len(), 1, "{events:#}");
    assert_eq!(
        by_policy[0]["reason"], "stopped by policy: inactive for 10 s",
        "{events:#}"
    );
}

/// A sync session's side in `workspace`, through its agent (found through the leader, which
/// alone knows where agents serve).
async fn remote(
    fleet: &DockerFleet,
    workspace: &str,
) -> nexus_sync::remote::RemoteEndpoint<nexus_cli::sync::AgentCarrier> {
    let leader = fleet
        .cluster
        .leader(&fleet.pki, Duration::from_secs(10))
        .await;
    let leader_address = fleet.cluster.members[fleet.cluster.index_of(leader.node.get())].address;
    let identity = pki::user(ADA.0, ADA.1);
    let as_owner = connect(&fleet.pki, &identity, leader_address)
        .await
        .unwrap();
    let request = Request::Workspace(WorkspaceRequest::Endpoint(workspace.parse().unwrap()));
    let address = match as_owner.request(request).await.unwrap() {
        Response::Endpoint { address, .. } => address,
        other => panic!("{other:?}"),
    };
    let credentials =
        nexus_protocol::transport::Credentials::from_pki_dir(fleet.pki.dir(), &identity).unwrap();
    let connection = nexus_protocol::transport::Connector::new(
        &credentials,
        nexus_protocol::transport::TransportConfig::default(),
    )
    .unwrap()
    .connect(
        address.parse().unwrap(),
        "127.0.0.1",
        &[nexus_protocol::identity::IdentityKind::Agent],
    )
    .await
    .unwrap();
    nexus_sync::remote::RemoteEndpoint::new(
        nexus_cli::sync::AgentCarrier::new(connection, workspace.parse().unwrap()),
        vec![],
        true,
    )
}

/// Runs a command as `who` with JSON output: (stdout as JSON, stderr as text).
fn json_and_stderr(fleet: &DockerFleet, who: (&str, Role), args: &[&str]) -> (Value, String) {
    let out = fleet
        .command(who.0, who.1)
        .args(["-o", "json"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "nexus {args:?}: {stderr}");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON only ({e}): {out:?}"));
    (json, stderr)
}

#[tokio::test]
async fn an_admins_notice_shows_on_users_stderr_until_cleared() {
    let fleet = DockerFleet::start("notice", 1).await;
    let (_, stderr) = json_and_stderr(&fleet, ADA, &["workspace", "list"]);
    assert!(!stderr.contains("notice:"), "{stderr}");

    let posted = fleet.ok(
        ROOT.0,
        ROOT.1,
        &[
            "admin",
            "notice",
            "set",
            "maintenance tonight at 02:00",
            "--until",
            "1h",
        ],
    );
    let id = posted[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(posted[0]["user"], Value::Null, "{posted}");
    fleet.ok(
        ROOT.0,
        ROOT.1,
        &["admin", "notice", "set", "bob: your quota", "--user", "bob"],
    );

    // Ada's next command shows the fleet's notice on stderr; her JSON stays JSON.
    let (listed, stderr) = json_and_stderr(&fleet, ADA, &["workspace", "list"]);
    assert_eq!(listed, serde_json::json!([]));
    assert!(
        stderr.contains("notice: maintenance tonight at 02:00"),
        "{stderr}"
    );
    assert!(!stderr.contains("bob"), "Ada sees Bob's notice: {stderr}");
    // A script silences them.
    let quiet = fleet
        .command(ADA.0, ADA.1)
        .env("NEXUS_NO_NOTICES", "1")
        .args(["workspace", "list"])
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("notice:"));

    // Admins see every notice; bad input is refused with a reason.
    let all = fleet.ok(ROOT.0, ROOT.1, &["admin", "notice", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    for bad in [
        vec!["admin", "notice", "set", "  "],
        vec![
            "admin",
            "notice",
            "set",
            "late",
            "--until",
            "2020-01-01T00:00:00Z",
        ],
        vec!["admin", "notice", "clear", "999"],
    ] {
        let (code, message) = fleet.refused(ROOT.0, ROOT.1, &bad);
        assert_eq!(code, "INVALID_ARGUMENT", "{bad:?}: {message}");
    }

    // Cleared, it is gone from Ada's next command.
    fleet.ok(ROOT.0, ROOT.1, &["admin", "notice", "clear", &id]);
    let (_, stderr) = json_and_stderr(&fleet, ADA, &["workspace", "list"]);
    assert!(!stderr.contains("notice:"), "{stderr}");
    let (_, stderr) = json_and_stderr(&fleet, ("bob", Role::User), &["workspace", "list"]);
    assert!(stderr.contains("notice: bob: your quota"), "{stderr}");
    let left = fleet.ok(ROOT.0, ROOT.1, &["admin", "notice", "clear", "--all"]);
    assert_eq!(left, serde_json::json!([]));
}
