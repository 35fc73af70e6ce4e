//! Workspaces end to end, as a user drives them: three `nexus-coordinator` processes, two
//! `nexus-agent` processes on the real Docker engine, and the `nexus` CLI. Published ports
//! answer, limits hold under concurrency, a killed leader loses and duplicates nothing, a dead
//! host's workspaces are lost and come back, and users stay out of each other's workspaces.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Output, Stdio};
use std::time::Duration;

use nexus_protocol::identity::Role;
use nexus_tests::docker::containers_of;
use nexus_tests::docker_fleet::{DockerFleet, IMAGE};
use nexus_tests::eventually;
use nexus_tests::pki;
use serde_json::Value;

fn ada() -> (&'static str, Role) {
    ("ada", Role::User)
}

#[tokio::test]
async fn a_user_creates_reaches_switches_and_destroys_workspaces_on_docker() {
    let fleet = DockerFleet::start("life", 2).await;
    let (user, role) = ada();
    let host0 = fleet.hosts[0].as_str();

    // Create waits until the host runs it; its published port answers.
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
            "--host",
            host0,
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    );
    assert_eq!(web["state"], "running", "{web}");
    let port = u16::try_from(web["ports"][0]["host"].as_u64().unwrap()).unwrap();
    assert_eq!(
        port, fleet.ranges[0].0,
        "the first port of the host's range"
    );
    eventually(
        "the published port to answer",
        Duration::from_secs(10),
        || async { TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok() },
    )
    .await;

    // A port held by a foreign listener: the agent reports PORT_CONFLICT and the workspace gets
    // another port, once, by itself.
    let foreign = TcpListener::bind((Ipv4Addr::UNSPECIFIED, fleet.ranges[0].0 + 1)).unwrap();
    let api = fleet.ok(
        user,
        role,
        &[
            "workspace",
            "create",
            "api",
            "--image",
            IMAGE,
            "--class",
            "small",
            "--port",
            "8080",
            "--host",
            host0,
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    );
    assert_eq!(api["state"], "running", "{api}");
    let api_port = u16::try_from(api["ports"][0]["host"].as_u64().unwrap()).unwrap();
    assert_ne!(
        api_port,
        fleet.ranges[0].0 + 1,
        "the foreign port was not reassigned"
    );
    let detail = fleet.ok(user, role, &["workspace", "inspect", "api"]);
    assert_eq!(detail["port_reassigned"], true, "{detail}");
    eventually(
        "the reassigned port to answer",
        Duration::from_secs(10),
        || async { TcpStream::connect((Ipv4Addr::LOCALHOST, api_port)).ok() },
    )
    .await;
    drop(foreign);

    // Eleven ports are more than a workspace may have.
    let mut eleven = vec!["workspace", "create", "many", "--image", IMAGE];
    eleven.extend(std::iter::repeat_n(["--port", "80"], 11).flatten());
    let (code, _) = fleet.refused(user, role, &eleven);
    assert_eq!(code, "INVALID_ARGUMENT");

    // Bob sees none of Ada's workspaces and may not change them.
    let listed = fleet.ok("bob", Role::User, &["workspace", "list"]);
    assert_eq!(listed, serde_json::json!([]));
    for verb in ["inspect", "stop", "destroy", "switch", "restart"] {
        let (code, _) = fleet.refused("bob", Role::User, &["workspace", verb, "web"]);
        assert_eq!(code, "PERMISSION_DENIED", "bob may not {verb}");
    }

    // Switch to web: api stops, web keeps running; then back.
    let switched = fleet.ok(user, role, &["workspace", "switch", "web"]);
    assert_eq!(switched["state"], "running");
    eventually(
        "api stopped by the switch",
        Duration::from_secs(20),
        || async {
            let api = fleet.ok(user, role, &["workspace", "inspect", "api"]);
            (api["state"] == "stopped").then_some(())
        },
    )
    .await;
    assert_eq!(
        fleet.ok(user, role, &["workspace", "switch", "api"])["state"],
        "running"
    );
    eventually(
        "web stopped by the switch",
        Duration::from_secs(20),
        || async {
            let web = fleet.ok(user, role, &["workspace", "inspect", "web"]);
            (web["state"] == "stopped").then_some(())
        },
    )
    .await;

    // Restart and repair keep one container per workspace.
    assert_eq!(fleet.containers(), 2);
    let before = containers_of(host0);
    assert_eq!(
        fleet.ok(user, role, &["workspace", "restart", "api"])["state"],
        "running"
    );
    assert_eq!(
        containers_of(host0),
        before,
        "a restart keeps the container"
    );
    assert_eq!(
        fleet.ok(user, role, &["workspace", "repair", "api"])["state"],
        "running"
    );
    assert_eq!(fleet.containers(), 2, "a repair replaces the container");

    // Destroy waits until the container is gone and the port is free again.
    fleet.ok(user, role, &["workspace", "destroy", "web"]);
    fleet.ok(user, role, &["workspace", "destroy", "api"]);
    assert_eq!(fleet.containers(), 0);
    let ports = fleet.ok("root", Role::Admin, &["admin", "ports"]);
    assert_eq!(ports, serde_json::json!([]));
}

#[tokio::test]
async fn concurrent_creates_never_overfill_a_host_and_the_51st_is_refused() {
    let fleet = DockerFleet::start("full", 2).await;
    // Room for 15 per host; CPU overcommit raised so that the workspace count is what binds on
    // this 2-core machine.
    fleet.ok(
        "root",
        Role::Admin,
        &[
            "admin",
            "limits",
            "set",
            "--max-workspaces-per-host",
            "15",
            "--cpu-overcommit",
            "10000",
        ],
    );
    let mut created = BTreeSet::new();
    let mut refused = 0;
    for (name, out) in fleet.create_at_once("w", 40) {
        if out.status.success() {
            created.insert(name);
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("RESOURCE_EXHAUSTED"), "{stderr}");
            refused += 1;
        }
    }
    assert_eq!((created.len(), refused), (30, 10));
    let workspaces = fleet.all_running(Duration::from_secs(120)).await;
    let names: BTreeSet<String> = workspaces.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(names, created, "exactly the acknowledged creates exist");
    for host in &fleet.hosts {
        let on_host = workspaces.iter().filter(|(_, _, h)| h == host).count();
        assert_eq!(on_host, 15, "host {host}");
        assert_eq!(
            containers_of(host).len(),
            15,
            "one container each on {host}"
        );
    }

    // A one-host fleet: cordon the second host, give the first the default 50 (and room for the
    // burst of 35 creates in flight at once, above the default 20), and fill it.
    fleet.ok(
        "root",
        Role::Admin,
        &["admin", "host", "cordon", &fleet.hosts[1]],
    );
    fleet.ok(
        "root",
        Role::Admin,
        &[
            "admin",
            "limits",
            "set",
            "--host",
            &fleet.hosts[0],
            "--max-workspaces-per-host",
            "50",
            "--max-concurrent-ops",
            "40",
        ],
    );
    for (_, out) in fleet.create_at_once("x", 35) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, message) = fleet.refused(
        "ada",
        Role::User,
        &[
            "workspace",
            "create",
            "the51st",
            "--image",
            IMAGE,
            "--class",
            "small",
        ],
    );
    assert_eq!(code, "RESOURCE_EXHAUSTED");
    assert!(
        message.contains(&format!(
            "{}: holds its maximum of 50 workspaces",
            fleet.hosts[0]
        )) && message.contains(&format!("{}: cordoned", fleet.hosts[1])),
        "the error names the limit and the host: {message}"
    );
    let stats = fleet.ok("root", Role::Admin, &["admin", "stats"]);
    let total: u64 = stats["workspaces"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(total, 65, "{stats}");
}

#[tokio::test]
async fn a_killed_leader_or_a_dead_host_loses_and_duplicates_nothing() {
    let mut fleet = DockerFleet::start("fail", 2).await;
    // Twenty creates in flight while the leader is killed with SIGKILL.
    let leader = fleet
        .cluster
        .leader(&fleet.pki, Duration::from_secs(10))
        .await;
    let index = fleet.cluster.index_of(leader.node.get());
    let pid = fleet.cluster.running[index].as_ref().unwrap().process.pid();
    let creates = std::thread::scope(|scope| {
        let creates = scope.spawn(|| fleet.create_at_once("k", 20));
        std::thread::sleep(Duration::from_millis(150));
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        creates.join().unwrap()
    });
    fleet.cluster.kill(index);
    let mut acknowledged = BTreeSet::new();
    for (name, out) in creates {
        if out.status.success() {
            acknowledged.insert(name);
        } else {
            // A create cut off by the kill may fail, but only with a network or leader error,
            // and then it may or may not have been applied: never a wrong answer.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("NETWORK_ERROR")
                    || stderr.contains("NOT_LEADER")
                    || stderr.contains("TIMEOUT"),
                "{stderr}"
            );
        }
    }
    assert!(
        acknowledged.len() >= 15,
        "most creates should ride out a failover: {acknowledged:?}\n{}",
        fleet.logs()
    );
    let workspaces = fleet.all_running(Duration::from_secs(120)).await;
    let names: BTreeSet<String> = workspaces.iter().map(|(n, _, _)| n.clone()).collect();
    assert!(
        acknowledged.is_subset(&names),
        "an acknowledged create is missing: {acknowledged:?} vs {names:?}"
    );
    assert_eq!(
        fleet.containers(),
        names.len(),
        "one container per workspace"
    );

    // The second agent dies: after the TTL its host is down and its workspaces lost, never
    // moved; started again, they run again in the same containers.
    let dead = fleet.hosts[1].clone();
    let before = containers_of(&dead);
    let on_dead: BTreeSet<String> = workspaces
        .iter()
        .filter(|(_, _, h)| *h == dead)
        .map(|(n, _, _)| n.clone())
        .collect();
    assert!(
        !on_dead.is_empty(),
        "bin-packing filled host 0 first? {workspaces:?}"
    );
    fleet.kill_agent(1);
    // Exactly its workspaces: a live host marked down meanwhile would be a false alarm.
    let started = std::time::Instant::now();
    loop {
        let all = fleet.workspaces();
        let lost: BTreeSet<String> = all
            .iter()
            .filter(|(_, state, _)| state == "lost")
            .map(|(n, _, _)| n.clone())
            .collect();
        if lost == on_dead {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the dead host's workspaces {on_dead:?} were not exactly the lost ones: {all:?}\nhosts: {}\n{}",
            fleet.ok("root", Role::Admin, &["admin", "hosts"]),
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hosts = fleet.ok("root", Role::Admin, &["admin", "hosts"]);
    let status = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host_id"] == dead.as_str())
        .map(|h| h["status"].clone());
    assert_eq!(status, Some(Value::from("down")));
    fleet.start_agent(1);
    fleet.all_running(Duration::from_secs(60)).await;
    assert_eq!(
        containers_of(&dead),
        before,
        "the same containers, no duplicates"
    );
}

#[tokio::test]
async fn logs_and_exec_come_from_the_workspaces_own_agent_and_only_to_its_owner() {
    use std::io::{BufRead, BufReader};

    let fleet = DockerFleet::start("logs", 1).await;
    let (user, role) = ada();
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
            "--",
            "sh",
            "-c",
            "echo hello-from-web; exec sleep 1000000",
        ],
    );
    assert_eq!(web["state"], "running");

    // Logs, from the agent.
    let fleet_ref = &fleet;
    eventually(
        "the first line in the logs",
        Duration::from_secs(10),
        || async {
            let logs = fleet_ref.ok(user, role, &["workspace", "logs", "web"]);
            (logs["lines"] == serde_json::json!(["hello-from-web"])).then_some(())
        },
    )
    .await;

    // Exec: output and exit code pass through (table output writes the bytes as they are).
    let out = fleet
        .command(user, role)
        .args(["-o", "table"])
        .args([
            "workspace",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let json = fleet.ok(
        user,
        role,
        &["workspace", "exec", "web", "--", "echo", "hi"],
    );
    assert_eq!(
        (json["exit_code"].as_i64(), json["stdout"].as_str()),
        (Some(0), Some("hi\n"))
    );
    // The workspace's files directory on its host is mounted at /workspace.
    fleet.ok(
        user,
        role,
        &[
            "workspace",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo from-container > /workspace/f",
        ],
    );
    let files = fleet.agents.lock().unwrap()[0]
        .as_ref()
        .unwrap()
        .data_dir
        .join("workspaces/web");
    assert_eq!(
        std::fs::read_to_string(files.join("f")).unwrap(),
        "from-container\n"
    );

    // A command that writes more than an answer carries: cut at 4 MiB, and said so.
    let flood = fleet.ok(
        user,
        role,
        &[
            "workspace",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "yes | head -c 5000000",
        ],
    );
    assert_eq!(flood["truncated"], true);
    assert_eq!(flood["stdout"].as_str().unwrap().len(), 4 << 20);

    // Following: a line the container writes later arrives.
    let mut follow = fleet
        .command(user, role)
        .args(["-o", "table", "workspace", "logs", "web", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "hello-from-web");
    fleet.ok(
        user,
        role,
        &[
            "workspace",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo later > /proc/1/fd/1",
        ],
    );
    assert_eq!(lines.next().unwrap().unwrap(), "later");
    follow.kill().unwrap();
    let _ = follow.wait();

    // Bob is refused by the coordinator, and by the agent itself when he goes there directly.
    for args in [
        &["workspace", "logs", "web"][..],
        &["workspace", "exec", "web", "--", "true"][..],
    ] {
        let (code, _) = fleet.refused("bob", Role::User, args);
        assert_eq!(code, "PERMISSION_DENIED", "{args:?}");
    }
    // Where the agent serves, as the coordinators tell its owner.
    let (host, _) = endpoint(&fleet, "web").await;
    assert_eq!(host.as_str(), fleet.hosts[0]);
    let connection = agent_connection(&fleet, "bob", Role::User, "web").await;
    let denied = connection
        .request(nexus_protocol::message::Request::Host(
            nexus_protocol::message::HostRequest::Exec {
                workspace: "web".parse().unwrap(),
                command: vec!["true".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code, nexus_protocol::ErrorCode::PermissionDenied);
    let unknown = connection
        .request(nexus_protocol::message::Request::Host(
            nexus_protocol::message::HostRequest::Logs {
                workspace: "nope".parse().unwrap(),
                tail: 10,
                follow: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code, nexus_protocol::ErrorCode::WorkspaceNotFound);

    // An admin sees the host's networks, asked of its agent; a user may not.
    let networks = fleet.ok("root", Role::Admin, &["admin", "networks"]);
    // Its network is one the agent made ahead (`ready_networks`), or one made for it.
    let listed = networks["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["workspace"] == "web")
        .unwrap_or_else(|| panic!("{networks}"));
    let name = listed["name"].as_str().unwrap();
    assert!(
        name == format!("nexus.{}.web", fleet.hosts[0])
            || name.starts_with(&format!("nexus-ready.{}.", fleet.hosts[0])),
        "{listed}"
    );
    assert_eq!(listed["host"], fleet.hosts[0].as_str());
    assert!(
        listed["subnet"].as_str().unwrap().starts_with("10.213."),
        "{listed}"
    );
    assert_eq!(networks["unreachable"], serde_json::json!([]));
    let (code, _) = fleet.refused(user, role, &["admin", "networks"]);
    assert_eq!(code, "PERMISSION_DENIED");

    // Destroyed, its files go with it.
    fleet.ok(user, role, &["workspace", "destroy", "web"]);
    assert!(!files.exists(), "{} is still there", files.display());
}

/// The host of `workspace` and where its agent serves, as the leader tells the owner (ada).
async fn endpoint(fleet: &DockerFleet, workspace: &str) -> (nexus_protocol::HostId, String) {
    let leader = fleet
        .cluster
        .leader(&fleet.pki, Duration::from_secs(10))
        .await;
    let leader_address = fleet.cluster.members[fleet.cluster.index_of(leader.node.get())].address;
    let as_owner =
        nexus_tests::process::connect(&fleet.pki, &pki::user("ada", Role::User), leader_address)
            .await
            .unwrap();
    match as_owner
        .request(nexus_protocol::message::Request::Workspace(
            nexus_protocol::message::WorkspaceRequest::Endpoint(workspace.parse().unwrap()),
        ))
        .await
        .unwrap()
    {
        nexus_protocol::message::Response::Endpoint { host, address } => (host, address),
        other => panic!("{other:?}"),
    }
}

/// Connects to the agent serving `workspace` as `user`, after asking the leader where it is.
async fn agent_connection(
    fleet: &DockerFleet,
    user: &str,
    role: Role,
    workspace: &str,
) -> nexus_protocol::transport::Connection {
    let (_, address) = endpoint(fleet, workspace).await;
    let identity = pki::user(user, role);
    fleet.pki.issue(&identity);
    let credentials =
        nexus_protocol::transport::Credentials::from_pki_dir(fleet.pki.dir(), &identity).unwrap();
    nexus_protocol::transport::Connector::new(
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
    .unwrap()
}

#[tokio::test]
async fn a_sync_session_carries_edits_between_a_local_directory_and_the_container() {
    use nexus_sync::endpoint::EndpointError;
    use nexus_sync::filter::Filter;
    use nexus_sync::local_endpoint::LocalEndpoint;
    use nexus_sync::remote::RemoteEndpoint;
    use nexus_sync::session::{SessionState, cycle};

    let fleet = DockerFleet::start("sync", 1).await;
    let (user, role) = ada();
    fleet.create_sleeper("web");
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("hello.txt"), "from the laptop\n").unwrap();
    let connection = agent_connection(&fleet, user, role, "web").await;
    let carrier = nexus_cli::sync::AgentCarrier::new(connection, "web".parse().unwrap());
    let mut beta = RemoteEndpoint::new(carrier, vec![], true);
    let mut alpha = LocalEndpoint::new(local.path(), Filter::new(&[], true).unwrap());
    let mut state = SessionState::default();
    let exec = |script: &str| {
        let out = fleet.ok(
            user,
            role,
            &["workspace", "exec", "web", "--", "sh", "-c", script],
        );
        out["stdout"].as_str().unwrap().to_string()
    };

    // Local to container.
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(exec("cat /workspace/hello.txt"), "from the laptop\n");

    // Container to local. The agent says when its side changed: a wait held open beside the
    // session (on its own carrier) ends with the edit, not at its 20 s limit; a wait with nothing
    // to see ends at its limit with the same count.
    let mut waiting = RemoteEndpoint::new(
        nexus_cli::sync::AgentCarrier::new(
            agent_connection(&fleet, user, role, "web").await,
            "web".parse().unwrap(),
        ),
        vec![],
        true,
    );
    let quiet = waiting.wait_change(0, 0).await.unwrap();
    assert_eq!(waiting.wait_change(quiet, 300).await.unwrap(), quiet);
    let wait = tokio::spawn(async move { waiting.wait_change(quiet, 20_000).await });
    exec("mkdir -p /workspace/src && echo 'made inside' > /workspace/src/made.txt");
    let told = tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .expect("the wait ended with the edit")
        .unwrap()
        .unwrap();
    assert!(told > quiet, "{told} changes after {quiet}");
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(
        std::fs::read_to_string(local.path().join("src/made.txt")).unwrap(),
        "made inside\n"
    );

    // Both sides edit one file: a conflict, neither edit lost; keeping the local one settles it.
    std::fs::write(local.path().join("hello.txt"), "laptop edit\n").unwrap();
    exec("echo 'container edit' > /workspace/hello.txt");
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(exec("cat /workspace/hello.txt"), "container edit\n");
    let path = report.conflicts[0].path.clone();
    nexus_sync::session::resolve_conflict(
        &mut state,
        &mut alpha,
        &mut beta,
        &path,
        nexus_sync::Side::Alpha,
    )
    .await
    .unwrap();
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(
        (report.applied, report.conflicts.len()),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(exec("cat /workspace/hello.txt"), "laptop edit\n");

    // Someone who does not own the workspace gets nothing from its agent.
    let stranger = agent_connection(&fleet, "bob", Role::User, "web").await;
    let mut theirs = RemoteEndpoint::new(
        nexus_cli::sync::AgentCarrier::new(stranger, "web".parse().unwrap()),
        vec![],
        true,
    );
    let refused = {
        use nexus_sync::endpoint::Endpoint;
        theirs.scan(None).await.unwrap_err()
    };
    assert!(matches!(refused, EndpointError::Refused(_)), "{refused}");
}

#[tokio::test]
async fn nexus_workspace_sync_runs_sessions_in_the_background() {
    let fleet = DockerFleet::start("syncd", 1).await;
    let (user, role) = ada();
    fleet.create_sleeper("web");
    let local = tempfile::tempdir().unwrap();
    let local_dir = local.path().to_str().unwrap().to_string();
    std::fs::write(local.path().join("a.txt"), "one\n").unwrap();
    let sync_dir = fleet.pki.scratch("sync-ada");
    let sync = |who: &str, who_role: Role, dir: &std::path::Path, args: &[&str]| {
        fleet
            .command(who, who_role)
            .env("NEXUS_SYNC_DIR", dir)
            .args(["-o", "json", "workspace", "sync"])
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = sync(user, role, &sync_dir, args);
        assert!(
            out.status.success(),
            "sync {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let code = |out: Output| {
        assert!(!out.status.success());
        let error: Value = serde_json::from_slice(&out.stderr).unwrap();
        error["error"]["code"].as_str().unwrap().to_string()
    };
    let exec = |script: &str| {
        let out = fleet.ok(
            user,
            role,
            &["workspace", "exec", "web", "--", "sh", "-c", script],
        );
        out["stdout"].as_str().unwrap().to_string()
    };

    let started = ok(&["start", "web", "--local", &local_dir, "--ignore", "*.tmp"]);
    assert_eq!(started["workspace"], "web");
    // The command returned; the session goes on in the daemon.
    let fleet_ref = &fleet;
    let _ = fleet_ref;
    eventually(
        "a.txt in the container",
        Duration::from_secs(20),
        || async { (exec("cat /workspace/a.txt 2>/dev/null") == "one\n").then_some(()) },
    )
    .await;
    exec("echo made inside > /workspace/b.txt");
    eventually("b.txt locally", Duration::from_secs(20), || async {
        std::fs::read_to_string(local.path().join("b.txt"))
            .ok()
            .filter(|text| text == "made inside\n")
    })
    .await;
    std::fs::write(local.path().join("skip.tmp"), "ignored").unwrap();
    ok(&["flush", "web"]);
    assert_eq!(exec("ls /workspace"), "a.txt\nb.txt\n");

    // A conflict: flush says so, conflicts lists it, resolve settles it.
    ok(&["pause", "web"]);
    assert_eq!(
        code(sync(user, role, &sync_dir, &["flush", "web"])),
        "SYNC_PAUSED"
    );
    std::fs::write(local.path().join("a.txt"), "local edit\n").unwrap();
    exec("echo remote edit > /workspace/a.txt");
    ok(&["resume", "web"]);
    assert_eq!(
        code(sync(user, role, &sync_dir, &["flush", "web"])),
        "SYNC_CONFLICT"
    );
    let conflicts = ok(&["conflicts", "web"]);
    assert_eq!(conflicts[0]["path"], "a.txt", "{conflicts}");
    ok(&["resolve", "web", "a.txt", "--keep", "local"]);
    ok(&["flush", "web"]);
    assert_eq!(exec("cat /workspace/a.txt"), "local edit\n");
    let status = ok(&["status"]);
    assert_eq!(status[0]["conflicts"], serde_json::json!([]), "{status}");
    assert!(status[0]["last_sync"].is_string(), "{status}");

    // The fleet's view, from the workspace's agent: the session, whose it is, when it last
    // cycled; a flush wakes it.
    let view = eventually(
        "the session's report to its agent",
        Duration::from_secs(20),
        || async {
            let view = fleet.ok(
                "root",
                Role::Admin,
                &["admin", "workspace", "sync-status", "web"],
            );
            (view["sessions"][0]["conflicts"] == 0).then_some(view)
        },
    )
    .await;
    let session = &view["sessions"][0];
    assert_eq!(session["user"], user, "{view}");
    assert_eq!(session["provider"], "embedded", "{view}");
    assert!(session["last_cycle"].is_string(), "{view}");
    let flushed = fleet.ok(
        "root",
        Role::Admin,
        &["admin", "workspace", "sync-flush", "web"],
    );
    assert_eq!(flushed["woken"], 1, "{flushed}");

    // The agent dies mid-sync and comes back (a new port, the same files): the session
    // reconnects and carries on, and what changed meanwhile travels without a fresh copy.
    fleet.kill_agent(0);
    std::fs::write(
        local.path().join("during.txt"),
        "written while the agent was down\n",
    )
    .unwrap();
    fleet.start_agent(0);
    let exec = |script: &str| {
        let out = fleet.ok(
            user,
            role,
            &["workspace", "exec", "web", "--", "sh", "-c", script],
        );
        out["stdout"].as_str().unwrap().to_string()
    };
    eventually(
        "during.txt in the container",
        Duration::from_secs(30),
        || async {
            // Until the agent is back and has said where, exec itself fails: try again.
            let out = fleet.run(
                user,
                role,
                &[
                    "workspace",
                    "exec",
                    "web",
                    "--",
                    "cat",
                    "/workspace/during.txt",
                ],
            );
            let json: Value = serde_json::from_slice(&out.stdout).ok()?;
            (json["stdout"] == "written while the agent was down\n").then_some(())
        },
    )
    .await;
    let changes_before = ok(&["status"])[0]["changes"].as_u64().unwrap();
    ok(&["flush", "web"]);
    assert_eq!(exec("cat /workspace/a.txt"), "local edit\n");
    assert_eq!(
        ok(&["status"])[0]["changes"].as_u64().unwrap(),
        changes_before,
        "nothing copied again after the reconnection"
    );

    // Someone else's workspace: the session cannot reach it, and says why.
    let bob_dir = fleet.pki.scratch("sync-bob");
    let out = sync(
        "bob",
        Role::User,
        &bob_dir,
        &["start", "web", "--local", &local_dir],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        code(sync("bob", Role::User, &bob_dir, &["flush", "web"])),
        "SYNC_SESSION_FAILED"
    );
    let out = sync("bob", Role::User, &bob_dir, &["status"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status[0]["last_error"].as_str().unwrap().contains("not"),
        "{status}"
    );
    sync("bob", Role::User, &bob_dir, &["stop", "web"]);

    // Mutagen, absent here, is named as the missing provider.
    assert_eq!(
        code(sync(
            user,
            role,
            &sync_dir,
            &[
                "start",
                "web",
                "--local",
                &local_dir,
                "--provider",
                "mutagen"
            ]
        )),
        "SYNC_PROVIDER_NOT_FOUND"
    );
    let stopped = ok(&["stop", "web"]);
    assert_eq!(stopped["state"], "stopped");
    // The daemon leaves with its last session.
    eventually("the daemon gone", Duration::from_secs(5), || async {
        (!sync_dir.join("daemon.sock").exists()).then_some(())
    })
    .await;

    // With a `mutagen` on PATH, `--provider mutagen` drives it. The real one cannot be installed
    // here (only package registries are reachable), so a stand-in records what it is asked and
    // keeps one session's JSON as Mutagen's `sync list` prints it.
    let fake = fleet.pki.scratch("fake-mutagen");
    let script = fake.join("mutagen");
    std::fs::write(&script, FAKE_MUTAGEN).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let with_mutagen = |who: &str, who_role: Role, args: &[&str]| {
        fleet
            .command(who, who_role)
            .env("NEXUS_SYNC_DIR", &sync_dir)
            .env("PATH", &path)
            .env_remove("DOCKER_HOST")
            .args(["-o", "json", "workspace", "sync"])
            .args(args)
            .output()
            .unwrap()
    };
    let calls = || std::fs::read_to_string(fake.join("calls")).unwrap_or_default();
    let mutagen_ok = |args: &[&str]| {
        let out = with_mutagen(user, role, args);
        assert!(
            out.status.success(),
            "sync {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let start = [
        "start",
        "web",
        "--local",
        &local_dir,
        "--provider",
        "mutagen",
        "--mode",
        "two-way-resolved",
        "--ignore",
        "*.tmp",
    ];
    // Someone else's workspace: refused before Mutagen is asked anything.
    let out = with_mutagen("bob", Role::User, &start);
    assert!(!out.status.success());
    assert_eq!(calls(), "", "Mutagen was asked for bob");
    let started = mutagen_ok(&start);
    assert_eq!(started["provider"], "mutagen", "{started}");
    assert_eq!(started["state"], "watching", "{started}");
    assert_eq!(started["mode"], "two-way-resolved", "{started}");
    // The other end is the workspace's running container, through this machine's engine (this
    // fleet's: other suites on the shared engine may run a `web` of their own meanwhile).
    let container = String::from_utf8(
        std::process::Command::new("docker")
            .args([
                "ps",
                "--filter",
                "label=nexus.workspace=web",
                "--filter",
                &format!("label=nexus.host={}", fleet.hosts[0]),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(
        container.starts_with("nexus.") && container.contains(".web.g"),
        "{container}"
    );
    let local_real = std::fs::canonicalize(local.path()).unwrap();
    assert!(
        calls().contains(&format!(
            "DOCKER_HOST= sync create --name nexus-web --label nexus-workspace=web --mode two-way-resolved --ignore *.tmp {} docker://{container}/workspace\n",
            local_real.display()
        )),
        "{}",
        calls()
    );
    // One provider a workspace.
    let out = with_mutagen(user, role, &["start", "web", "--local", &local_dir]);
    assert!(!out.status.success());
    let error: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mutagen syncs web already"),
        "{error}"
    );
    let status = mutagen_ok(&["status"]);
    assert_eq!(status.as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status[0]["provider"], "mutagen", "{status}");
    assert_eq!(status[0]["local"], local_real.display().to_string());
    // The session commands go to Mutagen, by the session's name.
    assert_eq!(mutagen_ok(&["pause", "web"])["state"], "paused");
    assert_eq!(
        code(with_mutagen(user, role, &["flush", "web"])),
        "SYNC_PAUSED"
    );
    assert_eq!(mutagen_ok(&["resume", "web"])["state"], "watching");
    mutagen_ok(&["flush", "web"]);
    assert_eq!(
        code(with_mutagen(
            user,
            role,
            &["resolve", "web", "a.txt", "--keep", "local"]
        )),
        "UNSUPPORTED"
    );
    assert_eq!(mutagen_ok(&["stop", "web"])["state"], "stopped");
    assert_eq!(mutagen_ok(&["status"]), serde_json::json!([]));
    let asked: Vec<_> = calls()
        .lines()
        .filter(|line| !line.contains(" sync list "))
        .map(|line| line.split_once(' ').unwrap().1.to_string())
        .collect();
    assert_eq!(
        asked[1..],
        [
            "sync pause nexus-web",
            "sync resume nexus-web",
            "sync flush nexus-web",
            "sync terminate nexus-web"
        ],
        "{asked:?}"
    );
}

/// A stand-in for Mutagen's CLI: appends `DOCKER_HOST=... ARGS` to `calls` beside itself, and
/// keeps the one session's JSON in `session.json`, in the form `mutagen sync list --template
/// '{{ json . }}'` prints.
const FAKE_MUTAGEN: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "DOCKER_HOST=${DOCKER_HOST:-} $*" >> "$dir/calls"
state="$dir/session.json"
case "$1 $2" in
"sync create")
    shift 2
    while [ $# -gt 2 ]; do
        case "$1" in
        --label) label=$2; shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --name|--ignore) shift 2 ;;
        *) shift ;;
        esac
    done
    ws=${label#nexus-workspace=}
    printf '{"name":"nexus-%s","labels":{"nexus-workspace":"%s"},"alpha":{"protocol":"local","path":"%s"},"beta":{"protocol":"docker","path":"%s"},"mode":"%s","paused":false,"status":"watching","successfulCycles":1,"conflicts":[]}'         "$ws" "$ws" "$1" "$2" "$mode" > "$state" ;;
"sync list")
    case "$*" in
    "sync list --label-selector nexus-workspace --template {{ json . }}") ;;
    "sync list --label-selector nexus-workspace="*" --template {{ json . }}") ;;
    *) echo "not how Nexus lists: $*" >&2; exit 1 ;;
    esac
    if [ "$MUTAGEN_DISABLE_AUTOSTART" != 1 ]; then echo "listing would start the daemon" >&2; exit 1; fi
    if [ -f "$state" ]; then printf '[%s]\n' "$(cat "$state")"; else echo null; fi ;;
"sync pause")
    sed -i 's/"paused":false/"paused":true/' "$state" ;;
"sync resume")
    sed -i 's/"paused":true/"paused":false/' "$state" ;;
"sync flush") ;;
"sync terminate")
    rm -f "$state" ;;
*)
    echo "unknown command: $*" >&2; exit 1 ;;
esac
"#;
