//! Workspace events and bulk repair, end to end: three real `nexus-coordinator` processes, hollow
//! hosts in this process (whose containers a test can crash), and the real `nexus` binary.
//! - the events a workspace's life leaves (created, wanted, each state, with who and under which
//!   request) survive killing the leader, and a request's record holds its events;
//! - `inspect` shows the last few, `--follow` prints new ones and ends when the workspace goes;
//! - `admin workspace repair --all --state failed` repairs the crashed workspaces and leaves the
//!   lost one, and `--all` names the lost one's refusal and exits non-zero.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::{RequestId, WorkspaceName};
use nexus_tests::cluster::{TestCluster, admin_to_leader};
use nexus_tests::eventually;
use nexus_tests::fleet::{FleetOptions, HollowFleet};
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::cli_command;
use serde_json::Value;

/// Three coordinators (host TTL 2 s) and `hosts` hollow hosts, every one ready.
async fn fleet(prefix: &str, hosts: usize) -> (TestPki, TestCluster, HollowFleet) {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &["--host-ttl", "2"]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let options = FleetOptions {
        prefix: prefix.into(),
        hosts,
        heartbeat_interval: Duration::from_millis(500),
        start_latency: Duration::from_millis(20),
        ..FleetOptions::default()
    };
    let fleet = HollowFleet::start(&pki, &cluster.live_addresses(), &options).await;
    let (pki_ref, cluster_ref) = (&pki, &cluster);
    eventually("every host ready", Duration::from_secs(30), || async move {
        let hosts = ok(pki_ref, cluster_ref, "root", &["admin", "hosts"]).await;
        let ready = hosts
            .as_array()?
            .iter()
            .filter(|h| h["status"] == "ready")
            .count();
        (ready == options.hosts).then_some(())
    })
    .await;
    (pki, cluster, fleet)
}

fn role(user: &str) -> Role {
    if user == "root" {
        Role::Admin
    } else {
        Role::User
    }
}

/// `nexus -o json ARGS` as `user` (`root` is an admin), off the runtime's threads: the hollow
/// hosts run on them meanwhile.
async fn run(pki: &TestPki, cluster: &TestCluster, user: &str, args: &[&str]) -> Output {
    let home = pki.scratch(&format!("home-{user}"));
    let mut command = cli_command(
        pki,
        &pki::user(user, role(user)),
        &home,
        &cluster.live_addresses(),
    );
    command.args(["-o", "json"]).args(args);
    tokio::task::spawn_blocking(move || command.output().expect("nexus runs"))
        .await
        .unwrap()
}

/// The JSON a command printed; fails the test if it failed.
async fn ok(pki: &TestPki, cluster: &TestCluster, user: &str, args: &[&str]) -> Value {
    let out = run(pki, cluster, user, args).await;
    assert!(
        out.status.success(),
        "nexus {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each event as `kind[:detail]` and its request id.
fn summary(events: &Value) -> Vec<(String, String)> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let kind = match e["kind"].as_str().unwrap() {
                "created" => format!("created:{}", e["host"].as_str().unwrap()),
                "wanted" => format!("wanted:{}", e["wanted"].as_str().unwrap()),
                "state" => format!(
                    "state:{}>{}",
                    e["from"].as_str().unwrap(),
                    e["to"].as_str().unwrap()
                ),
                other => other.to_string(),
            };
            (kind, e["request_id"].as_str().unwrap_or("-").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_leader_kill_and_follow_a_workspace_until_it_goes() {
    let (pki, mut cluster, _fleet) = fleet("ev", 1).await;
    ok(
        &pki,
        &cluster,
        "ada",
        &["workspace", "create", "w", "--image", "dev:latest"],
    )
    .await;
    ok(&pki, &cluster, "ada", &["workspace", "stop", "w"]).await;
    let before = ok(
        &pki,
        &cluster,
        "root",
        &["admin", "workspace", "events", "w"],
    )
    .await;
    let seen = summary(&before);
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds[0], "created:ev-00001", "{seen:?}");
    assert!(kinds.contains(&"wanted:stopped"), "{seen:?}");
    // The agent reports what it sees when it looks: states in between may be skipped.
    assert!(kinds.last().unwrap().ends_with(">stopped"), "{seen:?}");
    assert!(
        kinds.iter().any(|k| k.ends_with(">running")),
        "the agent's reports: {seen:?}"
    );
    // Each state the agent reports carries the request it works for: the create's until the
    // stop, the stop's after.
    let stop_at = kinds.iter().position(|k| *k == "wanted:stopped").unwrap();
    let (create, stop) = (&seen[0].1, &seen[stop_at].1);
    assert_ne!(create, stop);
    for (i, (kind, request)) in seen.iter().enumerate() {
        let expected = if i < stop_at { create } else { stop };
        assert_eq!(request, expected, "{kind} at {i}: {seen:?}");
    }
    assert_eq!(
        before[0]["actor"],
        serde_json::json!({"kind": "user", "name": "ada"})
    );
    assert_eq!(before[stop_at + 1]["actor"]["kind"], "agent");

    // The leader dies; the new one holds every event.
    let leader = cluster.leader(&pki, Duration::from_secs(10)).await;
    cluster.kill(cluster.index_of(leader.node.get()));
    let new = cluster.leader(&pki, Duration::from_secs(20)).await;
    assert_ne!(new.node, leader.node);
    let after = ok(
        &pki,
        &cluster,
        "root",
        &["admin", "workspace", "events", "w"],
    )
    .await;
    assert_eq!(after, before, "a failover loses no event");
    // The create's record, from the new leader: when, applied, and the events under it.
    let id: RequestId = create.parse().unwrap();
    let record = admin_to_leader(
        &pki,
        cluster.live_addresses()[0],
        Request::Admin(AdminRequest::RequestRecord(id)),
    )
    .await
    .unwrap();
    let Response::RequestRecord(Some(record)) = record else {
        panic!("the create is remembered: {record:?}");
    };
    assert_eq!(record.rejected, None);
    let w: WorkspaceName = "w".parse().unwrap();
    assert_eq!(record.events.len(), stop_at, "{record:?}");
    assert!(record.events.iter().all(|(name, _)| *name == w));

    // inspect: the detail, and the last 5 events under it.
    let inspect = ok(&pki, &cluster, "ada", &["workspace", "inspect", "w"]).await;
    let last: Vec<(String, String)> = seen[seen.len().saturating_sub(5)..].to_vec();
    assert_eq!(summary(&inspect["events"]), last);
    assert_eq!(inspect["state"], "stopped");

    // --follow: the events so far, then each new one, until the workspace is gone.
    let home = pki.scratch("home-root");
    let mut follow = cli_command(
        &pki,
        &pki::user("root", Role::Admin),
        &home,
        &cluster.live_addresses(),
    )
    .args([
        "-o",
        "json",
        "admin",
        "workspace",
        "events",
        "w",
        "--follow",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(serde_json::from_str::<Value>(&line).unwrap());
        }
    });
    let next = |what: &str| {
        received
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {what} from --follow"))
    };
    for (i, _) in seen.iter().enumerate() {
        assert_eq!(next("old event")["seq"], before[i]["seq"]);
    }
    ok(&pki, &cluster, "ada", &["workspace", "start", "w"]).await;
    assert_eq!(next("new event")["wanted"], "running");
    // A hollow host destroys so fast that the workspace may be gone before the destroy is
    // answered: the answer is the state the destroy's own entry made, so it succeeds all the
    // same.
    let destroy = run(&pki, &cluster, "ada", &["workspace", "destroy", "w"]).await;
    assert!(
        destroy.status.success(),
        "{}",
        String::from_utf8_lossy(&destroy.stderr)
    );
    let status = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = follow.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = follow.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "--follow ends, and well, when the workspace is gone: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_all_repairs_the_failed_and_names_what_it_could_not() {
    let (pki, cluster, fleet) = fleet("rp", 2).await;
    for (name, host) in [("a", "rp-00001"), ("b", "rp-00001"), ("c", "rp-00002")] {
        let create = [
            "workspace",
            "create",
            name,
            "--image",
            "dev:latest",
            "--host",
            host,
        ];
        ok(&pki, &cluster, "ada", &create).await;
    }
    // a and b crash (a crashed container is not started again: it is failed); c's host dies.
    for name in ["a", "b"] {
        assert!(fleet.hosts[0].runtime.crash(&name.parse().unwrap(), 1));
    }
    fleet.kill(1);
    let states = |list: &Value| -> Vec<(String, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let name = w["name"].as_str().unwrap().to_string();
                (name, w["state"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let (pki_ref, cluster_ref) = (&pki, &cluster);
    let wanted = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect()
    };
    let broken = wanted(&[("a", "failed"), ("b", "failed"), ("c", "lost")]);
    eventually("a and b failed, c lost", Duration::from_secs(30), || {
        let broken = broken.clone();
        async move {
            let list = ok(
                pki_ref,
                cluster_ref,
                "root",
                &["admin", "workspace", "list"],
            )
            .await;
            (states(&list) == broken).then_some(())
        }
    })
    .await;

    let repair = ["admin", "workspace", "repair", "--all", "--state", "failed"];
    let summary = ok(&pki, &cluster, "root", &repair).await;
    assert_eq!(
        summary,
        serde_json::json!({"selected": 2, "repaired": ["a", "b"], "failed": []})
    );
    let list = ok(&pki, &cluster, "root", &["admin", "workspace", "list"]).await;
    assert_eq!(
        states(&list),
        wanted(&[("a", "running"), ("b", "running"), ("c", "lost")])
    );
    let events = ok(
        &pki,
        &cluster,
        "root",
        &["admin", "workspace", "events", "a"],
    )
    .await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let failed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "failed")
        .unwrap();
    assert_eq!(failed["error"]["code"], "CONTAINER_ERROR", "{events}");
    assert_eq!(failed["actor"]["kind"], "agent");
    let repaired = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "repair")
        .unwrap_or_else(|| panic!("no repair in {kinds:?}"));
    assert_eq!(repaired["generation"], 2);
    assert_eq!(
        repaired["actor"],
        serde_json::json!({"kind": "admin", "name": "root"})
    );

    // Everything failed or lost: only c, whose host is down, so its repair is refused.
    let out = run(
        &pki,
        &cluster,
        "root",
        &["admin", "workspace", "repair", "--all"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(i32::from(ErrorCode::BackendUnavailable.exit_code())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["selected"], 1);
    assert_eq!(summary["repaired"], serde_json::json!([]));
    assert_eq!(summary["failed"][0]["name"], "c");
    assert_eq!(summary["failed"][0]["code"], "BACKEND_UNAVAILABLE");
    assert!(
        summary["failed"][0]["message"]
            .as_str()
            .unwrap()
            .contains("is down"),
        "{summary}"
    );
}
