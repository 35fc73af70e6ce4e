//! A real `nexus-agent` process with real coordinators: it registers, shows up with live stats,
//! runs on the Docker engine what the coordinator assigns it and reports it back through Raft,
//! survives SIGKILL without duplicating a container, and follows the leader of a three-node
//! cluster, moving when the leader dies.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use nexus_protocol::HostId;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, DesiredRun, HostView, Request, Response};
use nexus_protocol::model::WorkspaceState;
use nexus_tests::cluster::{TestCluster, admin_request, admin_to_leader};
use nexus_tests::docker::{HostCleanup, containers_of};
use nexus_tests::eventually;
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::TestPki;
use nexus_tests::process::AgentProcess;

const IMAGE: &str = "nexus-test/busybox:latest";

async fn hosts(pki: &TestPki, address: std::net::SocketAddr) -> Vec<HostView> {
    match admin_request(
        pki,
        address,
        Request::Stale(nexus_protocol::message::StaleRead::Admin(
            AdminRequest::Hosts,
        )),
    )
    .await
    {
        Ok(Response::Hosts(hosts)) => hosts,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A port of the agent's default range (20000–32000) that nothing listens on now.
fn free_port_in_range() -> u16 {
    let start = 20_000 + u16::try_from(std::process::id() % 10_000).unwrap();
    (start..=32_000)
        .chain(20_000..start)
        .find(|&port| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok())
        .expect("a free port in 20000-32000")
}

async fn state_of(
    coordinator: &InProcessCoordinator,
    name: &'static str,
) -> Option<WorkspaceState> {
    coordinator
        .read(move |state| {
            state
                .workspaces()
                .get(&name.parse::<nexus_protocol::WorkspaceName>().unwrap())
                .map(|w| w.state)
        })
        .await
}

#[tokio::test]
async fn an_agent_runs_what_it_is_assigned_on_docker_reports_it_and_survives_sigkill() {
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let host = format!("e2e-{}", std::process::id());
    let host_id: HostId = host.parse().unwrap();
    let _cleanup = HostCleanup(host.clone());
    let flags = ["--runtime", "docker", "--stats-interval", "0.3"];
    let mut agent = AgentProcess::start(&pki, &host, &[coordinator.address], &flags);

    // Registered, with live stats from sysinfo.
    let view = eventually(
        "the host with its stats",
        Duration::from_secs(20),
        || async {
            hosts(&pki, coordinator.address)
                .await
                .into_iter()
                .find(|h| h.info.host_id == host_id && h.stats.is_some())
        },
    )
    .await;
    let stats = view.stats.unwrap();
    assert!(stats.memory_total_bytes > 0 && stats.memory_used_bytes > 0);
    assert!(stats.disk_total_bytes > 0);
    assert!(view.info.disk_bytes > 0 && view.info.cpus >= 1);

    let port = free_port_in_range();
    coordinator
        .place(
            &host_id,
            "web",
            IMAGE,
            &[(8080, port)],
            &["httpd", "-f", "-p", "8080"],
        )
        .await
        .unwrap();
    eventually(
        "web running, as the agent reports",
        Duration::from_secs(20),
        || async {
            (state_of(&coordinator, "web").await == Some(WorkspaceState::Running)).then_some(())
        },
    )
    .await;
    eventually(
        "the published port to answer",
        Duration::from_secs(5),
        || async { TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok() },
    )
    .await;
    let first = containers_of(&host);
    assert_eq!(first.len(), 1);

    // SIGKILL the agent and start it again: it adopts the container, makes no second one, and
    // the workspace is still running.
    agent.process.kill();
    let agent = AgentProcess::start(&pki, &host, &[coordinator.address], &flags);
    eventually(
        "the restarted agent to heartbeat",
        Duration::from_secs(20),
        || async {
            let log = agent.process.log();
            log.contains("registered; watching the desired state")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(containers_of(&host), first, "{}", agent.process.log());
    assert_eq!(
        state_of(&coordinator, "web").await,
        Some(WorkspaceState::Running)
    );
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());

    // No coordinator at all: what runs keeps running.
    let address = coordinator.address;
    coordinator.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(containers_of(&host), first);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
    assert!(
        agent.process.log().contains("coordinator link lost"),
        "{}",
        agent.process.log()
    );
    let coordinator = InProcessCoordinator::start_on(&pki, address).await;

    coordinator
        .set_run("web", DesiredRun::Stopped)
        .await
        .unwrap();
    eventually("web stopped", Duration::from_secs(20), || async {
        (state_of(&coordinator, "web").await == Some(WorkspaceState::Stopped)).then_some(())
    })
    .await;
    coordinator.destroy("web").await.unwrap();
    eventually(
        "web gone and its port free",
        Duration::from_secs(20),
        || async {
            let ports = coordinator.read(|state| state.ports().len()).await;
            (state_of(&coordinator, "web").await.is_none() && ports == 0).then_some(())
        },
    )
    .await;
    assert!(containers_of(&host).is_empty());
    coordinator.stop().await;
}

#[tokio::test]
async fn an_agent_heartbeats_the_leader_and_moves_when_the_leader_dies() {
    let pki = TestPki::new();
    // A TTL of 5 s: a failover (about 1 s) plus the agent finding the new leader (a heartbeat's
    // deadline of 2 s, then a reconnect) fits in it, and the new leader's grace must cover it.
    let mut cluster = TestCluster::start(&pki, 3, &["--host-ttl", "5"]).await;
    let leader = cluster.leader(&pki, Duration::from_secs(20)).await.node;
    let leader_index = cluster.index_of(leader.get());
    // The leader last in the list: the agent must be sent there.
    let mut addresses: Vec<_> = cluster.members.iter().map(|m| m.address).collect();
    let leader_address = addresses.remove(leader_index);
    addresses.push(leader_address);
    let agent = AgentProcess::start(&pki, "follower", &addresses, &[]);

    let heard_by = |address| {
        let pki = &pki;
        async move {
            hosts(pki, address)
                .await
                .into_iter()
                .find(|h| h.info.host_id.as_str() == "follower")
                .and_then(|h| h.last_heartbeat)
        }
    };
    eventually(
        "the leader to hear heartbeats",
        Duration::from_secs(20),
        || heard_by(leader_address),
    )
    .await;
    // Liveness is the leader's alone: the followers keep none, and send a reader who does not
    // ask for their stale view to the leader (as `nexus admin hosts` is followed there).
    for address in &addresses[..2] {
        assert_eq!(heard_by(*address).await, None);
        let refused = admin_request(&pki, *address, Request::Admin(AdminRequest::Hosts))
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::NotLeader, "{refused:?}");
        let Ok(Response::Hosts(hosts)) =
            admin_to_leader(&pki, *address, Request::Admin(AdminRequest::Hosts)).await
        else {
            panic!("the leader answers the hosts");
        };
        assert!(
            hosts
                .iter()
                .any(|h| h.info.host_id.as_str() == "follower" && h.last_heartbeat.is_some()),
            "{hosts:?}"
        );
    }

    cluster.kill(leader_index);
    let new_leader = cluster.leader(&pki, Duration::from_secs(20)).await.node;
    let new_address = cluster.members[cluster.index_of(new_leader.get())].address;
    eventually(
        "the new leader to hear heartbeats",
        Duration::from_secs(30),
        || heard_by(new_address),
    )
    .await;
    assert!(
        agent.process.log().contains("following the leader"),
        "{}",
        agent.process.log()
    );
    // The failover raised no false alarm: no coordinator marked the host down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !cluster.logs().contains("marking the host down"),
        "{}",
        cluster.logs()
    );
    let view = hosts(&pki, new_address)
        .await
        .into_iter()
        .find(|h| h.info.host_id.as_str() == "follower")
        .unwrap();
    assert_eq!(view.status, nexus_protocol::model::HostStatus::Ready);
}

/// Runs `nexus` as user `name` against `coordinator`.
fn nexus_as(
    pki: &TestPki,
    name: &str,
    role: nexus_protocol::identity::Role,
    coordinator: std::net::SocketAddr,
    args: &[&str],
) -> std::process::Output {
    let home = pki.scratch(&format!("home-{name}"));
    nexus_tests::process::cli_as(
        pki,
        &nexus_tests::pki::user(name, role),
        &home,
        coordinator,
        args,
    )
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "nexus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn users_drive_their_workspaces_with_the_cli() {
    use nexus_protocol::identity::Role;
    let pki = TestPki::new();
    let coordinator = nexus_tests::process::CoordinatorProcess::start(&pki, 1).await;
    let address = coordinator.address;
    let _agent = AgentProcess::start(&pki, "cli-host", &[address], &[]);

    eventually("the agent to register", Duration::from_secs(20), || async {
        (!hosts(&pki, address).await.is_empty()).then_some(())
    })
    .await;

    let created = json_of(&nexus_as(
        &pki,
        "ada",
        Role::User,
        address,
        &[
            "-o",
            "json",
            "workspace",
            "create",
            "web",
            "--image",
            "dev:latest",
            "--port",
            "3000",
            "--class",
            "small",
            "--env",
            "A=b",
            "--",
            "sleep",
            "600",
        ],
    ));
    assert_eq!(created["name"], "web");
    assert_eq!(created["owner"], "ada");
    assert_eq!(created["host"], "cli-host");
    assert_eq!(created["ports"][0]["container"], 3000);
    assert_eq!(created["ports"][0]["host"], 20000);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    // The create waited for the host: it answers with the workspace running.
    assert_eq!(created["state"], "running");

    let state = |name: &'static str| {
        let pki = &pki;
        async move {
            let out = nexus_as(
                pki,
                "ada",
                Role::User,
                address,
                &["-o", "json", "workspace", "inspect", name],
            );
            json_of(&out)["state"].as_str().map(str::to_string)
        }
    };
    eventually("web running", Duration::from_secs(20), || async {
        (state("web").await.as_deref() == Some("running")).then_some(())
    })
    .await;
    let table = nexus_as(&pki, "ada", Role::User, address, &["workspace", "list"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("web") && table.contains("running") && table.contains("20000:3000"),
        "{table}"
    );

    // An admin sees the port fleet-wide; cordoning the only host stops new placements there.
    let ports = json_of(&nexus_as(
        &pki,
        "root",
        Role::Admin,
        address,
        &["-o", "json", "admin", "ports"],
    ));
    assert_eq!(
        ports,
        serde_json::json!([{"host": "cli-host", "port": 20000, "workspace": "web", "container": 3000}])
    );
    json_of(&nexus_as(
        &pki,
        "root",
        Role::Admin,
        address,
        &["-o", "json", "admin", "host", "cordon", "cli-host"],
    ));
    let refused = nexus_as(
        &pki,
        "ada",
        Role::User,
        address,
        &[
            "-o",
            "json",
            "workspace",
            "create",
            "more",
            "--image",
            "dev:latest",
        ],
    );
    let error: serde_json::Value = serde_json::from_slice(&refused.stderr).unwrap();
    assert_eq!(error["error"]["code"], "RESOURCE_EXHAUSTED");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cli-host: cordoned"),
        "{error}"
    );
    json_of(&nexus_as(
        &pki,
        "root",
        Role::Admin,
        address,
        &["-o", "json", "admin", "host", "uncordon", "cli-host"],
    ));
    let denied = nexus_as(
        &pki,
        "ada",
        Role::User,
        address,
        &["-o", "json", "admin", "ports"],
    );
    assert!(!denied.status.success());

    // Bob sees nothing of it and may not touch it.
    let listed = json_of(&nexus_as(
        &pki,
        "bob",
        Role::User,
        address,
        &["-o", "json", "workspace", "list"],
    ));
    assert_eq!(listed, serde_json::json!([]));
    let denied = nexus_as(
        &pki,
        "bob",
        Role::User,
        address,
        &["-o", "json", "workspace", "stop", "web"],
    );
    assert!(!denied.status.success());
    let error: serde_json::Value = serde_json::from_slice(&denied.stderr).unwrap();
    assert_eq!(error["error"]["code"], "PERMISSION_DENIED");
    assert_eq!(
        denied.status.code(),
        Some(i32::from(
            nexus_protocol::ErrorCode::PermissionDenied.exit_code()
        ))
    );

    // Each change waits for the host and answers with where it left the workspace.
    let ada = |args: &[&str]| {
        let mut all = vec!["-o", "json", "workspace"];
        all.extend_from_slice(args);
        json_of(&nexus_as(&pki, "ada", Role::User, address, &all))
    };
    assert_eq!(ada(&["stop", "web"])["state"], "stopped");
    assert_eq!(state("web").await.as_deref(), Some("stopped"));
    assert_eq!(ada(&["start", "web"])["state"], "running");
    assert_eq!(ada(&["restart", "web"])["state"], "running");
    let inspected = ada(&["inspect", "web"]);
    assert_eq!(inspected["desired"], "running");
    assert_eq!(inspected["env"]["A"], "b");
    assert_eq!(inspected["command"], serde_json::json!(["sleep", "600"]));

    // Switch: the other workspace runs and this one stops.
    let other = ada(&[
        "create",
        "other",
        "--image",
        "dev:latest",
        "--class",
        "small",
        "--no-wait",
    ]);
    assert_ne!(
        other["state"], "running",
        "--no-wait answers before the host acts"
    );
    assert_eq!(ada(&["switch", "other"])["state"], "running");
    eventually(
        "web stopped by the switch",
        Duration::from_secs(20),
        || async { (state("web").await.as_deref() == Some("stopped")).then_some(()) },
    )
    .await;
    // Cleanup takes the stopped one only.
    let cleaned = ada(&["cleanup", "--older-than", "0s"]);
    assert_eq!(cleaned[0]["name"], "web", "{cleaned}");
    assert_eq!(cleaned.as_array().unwrap().len(), 1, "{cleaned}");

    // An admin may destroy anyone's; the command waits until the agent has removed it.
    json_of(&nexus_as(
        &pki,
        "root",
        Role::Admin,
        address,
        &["-o", "json", "workspace", "destroy", "other"],
    ));
    let out = nexus_as(
        &pki,
        "ada",
        Role::User,
        address,
        &["-o", "json", "workspace", "inspect", "other"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WORKSPACE_NOT_FOUND"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_silent_host_is_marked_down_its_workspaces_lost_and_both_come_back() {
    use nexus_protocol::identity::Role;
    let pki = TestPki::new();
    pki.issue(&nexus_tests::pki::coordinator(1));
    let coordinator = nexus_tests::process::CoordinatorProcess::start_with(
        &pki,
        1,
        ([127, 0, 0, 1], nexus_tests::process::free_port()).into(),
        pki.scratch("coordinator-1"),
        &[],
        &["--host-ttl", "1"],
    )
    .await;
    let address = coordinator.address;
    let mut agent = AgentProcess::start(&pki, "flaky", &[address], &[]);
    let status_of_host = || {
        let pki = &pki;
        async move {
            hosts(pki, address)
                .await
                .into_iter()
                .find(|h| h.info.host_id.as_str() == "flaky")
                .map(|h| h.status)
        }
    };
    eventually("the host ready", Duration::from_secs(20), || async {
        (status_of_host().await == Some(nexus_protocol::model::HostStatus::Ready)).then_some(())
    })
    .await;
    json_of(&nexus_as(
        &pki,
        "ada",
        Role::User,
        address,
        &[
            "-o",
            "json",
            "workspace",
            "create",
            "web",
            "--image",
            "img",
            "--class",
            "small",
        ],
    ));
    let state = || {
        let pki = &pki;
        async move {
            let out = nexus_as(
                pki,
                "ada",
                Role::User,
                address,
                &["-o", "json", "workspace", "inspect", "web"],
            );
            json_of(&out)["state"].as_str().map(str::to_string)
        }
    };
    eventually("web running", Duration::from_secs(20), || async {
        (state().await.as_deref() == Some("running")).then_some(())
    })
    .await;

    // The agent dies: within about the TTL the host is down and its workspace lost (its files
    // are there; it is not moved).
    agent.process.kill();
    let started = std::time::Instant::now();
    eventually("web lost", Duration::from_secs(10), || async {
        (state().await.as_deref() == Some("lost")).then_some(())
    })
    .await;
    assert_eq!(
        status_of_host().await,
        Some(nexus_protocol::model::HostStatus::Down)
    );
    // Not at once: the TTL (1 s) runs from the last heartbeat, which came shortly before the
    // kill (0.2 s apart, give or take the scheduling of two busy cores).
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "down {:?} after the kill, well before the TTL",
        started.elapsed()
    );

    // It returns: the host is ready and the workspace runs again.
    let _agent = AgentProcess::start(&pki, "flaky", &[address], &[]);
    eventually("web running again", Duration::from_secs(20), || async {
        (state().await.as_deref() == Some("running")).then_some(())
    })
    .await;
    eventually("the host ready again", Duration::from_secs(10), || async {
        (status_of_host().await == Some(nexus_protocol::model::HostStatus::Ready)).then_some(())
    })
    .await;
}
