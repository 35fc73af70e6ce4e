//! Lifecycle policies end to end, with policies in seconds: a real `nexus-coordinator` process,
//! hollow hosts in this process, and the real `nexus` binary.
//! - an idle workspace is stopped by the inactivity policy, with the reason in its events, while
//!   one kept busy by its owner's starts is not; `inspect` shows the last activity and the next
//!   action;
//! - the lifetime destroys a workspace only after both notices were posted to its owner, a held
//!   one survives, and a workspace's own override turns its lifetime off;
//! - the admin's bulk stop of idle workspaces spares held ones.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{Request, Response, WorkspaceRequest};
use nexus_protocol::model::NoticeSource;
use nexus_tests::cluster::TestCluster;
use nexus_tests::eventually;
use nexus_tests::fleet::{FleetOptions, HollowFleet};
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{cli_command, connect};
use serde_json::Value;

/// One coordinator and one hollow host, ready.
async fn fleet(prefix: &str) -> (TestPki, TestCluster, HollowFleet) {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let options = FleetOptions {
        prefix: prefix.into(),
        hosts: 1,
        heartbeat_interval: Duration::from_millis(500),
        start_latency: Duration::from_millis(20),
        ..FleetOptions::default()
    };
    let fleet = HollowFleet::start(&pki, &cluster.live_addresses(), &options).await;
    let (pki_ref, cluster_ref) = (&pki, &cluster);
    eventually("the host ready", Duration::from_secs(30), || async move {
        let hosts = ok(pki_ref, cluster_ref, "root", &["admin", "hosts"]).await;
        hosts
            .as_array()?
            .iter()
            .any(|h| h["status"] == "ready")
            .then_some(())
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

/// `nexus -o json ARGS` as `user` (`root` is an admin), off the runtime's threads.
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

/// What `nexus workspace inspect` says `name` is wanted (`running`, `stopped`), if it still
/// exists.
async fn desired(pki: &TestPki, cluster: &TestCluster, name: &str) -> Option<String> {
    let out = run(pki, cluster, "root", &["workspace", "inspect", name]).await;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no workspace"), "{stderr}");
        return None;
    }
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(detail["desired"].as_str().unwrap_or("?").to_string())
}

/// `user`'s current notices' texts about workspaces, as the coordinator answers them.
async fn notices(pki: &TestPki, cluster: &TestCluster, user: &str) -> Vec<(String, String)> {
    let address = cluster.live_addresses()[0];
    let connection = connect(pki, &pki::user(user, Role::User), address)
        .await
        .unwrap();
    let answer = connection
        .request_with(
            RequestId::random(),
            Request::Workspace(WorkspaceRequest::Notices),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let Response::Notices(notices) = answer else {
        panic!("{answer:?}");
    };
    notices
        .into_iter()
        .filter_map(|n| match n.source {
            NoticeSource::Policy { workspace } => Some((workspace.to_string(), n.text)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_workspace_is_stopped_with_its_reason_and_a_busy_one_is_not() {
    let (pki, cluster, _fleet) = fleet("pi").await;
    for name in ["idle", "busy"] {
        ok(
            &pki,
            &cluster,
            "ada",
            &["workspace", "create", name, "--image", "dev:latest"],
        )
        .await;
    }
    let limits = ok(
        &pki,
        &cluster,
        "root",
        &[
            "admin",
            "limits",
            "set",
            "--inactive-stop-after",
            "10s",
            "--max-lifetime",
            "0",
        ],
    )
    .await;
    assert_eq!(
        limits["policies"]["cluster"]["inactive_stop_after_secs"],
        10
    );
    // Kept busy by its owner's starts, about one a second, for over twice the policy's duration.
    let mut idle_stopped = false;
    for _ in 0..22 {
        ok(&pki, &cluster, "ada", &["workspace", "start", "busy"]).await;
        idle_stopped |= desired(&pki, &cluster, "idle").await.as_deref() == Some("stopped");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        desired(&pki, &cluster, "busy").await.as_deref(),
        Some("running")
    );
    if !idle_stopped {
        eventually("the idle one stopped", Duration::from_secs(20), || async {
            (desired(&pki, &cluster, "idle").await.as_deref() == Some("stopped")).then_some(())
        })
        .await;
    }
    let events = ok(&pki, &cluster, "ada", &["workspace", "events", "idle"]).await;
    let by_policy: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"]["kind"] == "policy")
        .collect();
    assert_eq!(by_policy.len(), 1, "{events:#}");
    assert_eq!(by_policy[0]["kind"], "wanted");
    assert_eq!(by_policy[0]["wanted"], "stopped");
    assert_eq!(by_policy[0]["actor"]["name"], "inactivity");
    assert_eq!(
        by_policy[0]["reason"],
        "stopped by policy: inactive for 10 s"
    );
    let busy_events = ok(&pki, &cluster, "ada", &["workspace", "events", "busy"]).await;
    assert!(
        busy_events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"]["kind"] != "policy"),
        "{busy_events:#}"
    );
    // `inspect` shows the last activity, the policy and the next action.
    let inspect = ok(&pki, &cluster, "ada", &["workspace", "inspect", "busy"]).await;
    let lifecycle = &inspect["lifecycle"];
    assert_eq!(lifecycle["last_activity"]["kind"], "start", "{inspect:#}");
    assert_eq!(lifecycle["held"], false);
    assert_eq!(lifecycle["policy"]["inactive_stop_after_secs"], 10);
    assert_eq!(lifecycle["next"]["action"], "stop");
    assert_eq!(lifecycle["next"]["reason"], "inactive for 10 s");
    let stopped = ok(&pki, &cluster, "ada", &["workspace", "inspect", "idle"]).await;
    assert!(stopped["lifecycle"]["next"].is_null(), "{stopped:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_destroys_only_after_two_notices_and_spares_held_workspaces() {
    let (pki, cluster, _fleet) = fleet("pl").await;
    for name in ["old", "kept", "spare"] {
        ok(
            &pki,
            &cluster,
            "ada",
            &["workspace", "create", name, "--image", "dev:latest"],
        )
        .await;
    }
    let held = ok(&pki, &cluster, "ada", &["workspace", "hold", "kept"]).await;
    assert_eq!(held["held"], true);
    ok(
        &pki,
        &cluster,
        "root",
        &[
            "admin",
            "workspace",
            "policy",
            "spare",
            "--max-lifetime",
            "0",
        ],
    )
    .await;
    // The lifetime is over at once: the first notice goes out, the last 4 s later, and the
    // destroy 4 s after that.
    ok(
        &pki,
        &cluster,
        "root",
        &[
            "admin",
            "limits",
            "set",
            "--inactive-stop-after",
            "0",
            "--max-lifetime",
            "1s",
            "--first-notice",
            "8s",
            "--last-notice",
            "4s",
        ],
    )
    .await;
    // Every policy notice ada was shown while `old` lived (each is shown for its lead).
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    // And what ada's own commands printed on stderr meanwhile.
    let mut shown = String::new();
    let started = std::time::Instant::now();
    loop {
        seen.extend(notices(&pki, &cluster, "ada").await);
        let listed = run(&pki, &cluster, "ada", &["workspace", "list"]).await;
        shown.push_str(&String::from_utf8_lossy(&listed.stderr));
        if desired(&pki, &cluster, "old").await.is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "old not destroyed: {seen:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let texts: Vec<&(String, String)> = seen.iter().collect();
    assert!(
        seen.contains(&(
            "old".into(),
            "old will be destroyed in 8 s: lifetime 1 s; `nexus workspace hold old` to keep it"
                .into()
        )),
        "{texts:?}"
    );
    assert!(
        seen.contains(&(
            "old".into(),
            "old will be destroyed in 4 s: lifetime 1 s; `nexus workspace hold old` to keep it"
                .into()
        )),
        "{texts:?}"
    );
    assert!(seen.iter().all(|(w, _)| w == "old"), "{texts:?}");
    assert!(
        shown.contains("notice: old will be destroyed in "),
        "ada's commands never showed the notice: {shown}"
    );
    // Destroyed, its notices went with it; the held one and the overridden one stay.
    assert!(notices(&pki, &cluster, "ada").await.is_empty());
    assert_eq!(
        desired(&pki, &cluster, "kept").await.as_deref(),
        Some("running")
    );
    assert_eq!(
        desired(&pki, &cluster, "spare").await.as_deref(),
        Some("running")
    );
    let inspect = ok(&pki, &cluster, "ada", &["workspace", "inspect", "kept"]).await;
    assert_eq!(inspect["lifecycle"]["held"], true);
    let events = ok(&pki, &cluster, "ada", &["workspace", "events", "kept"]).await;
    let held: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "held")
        .collect();
    assert_eq!(held.len(), 1, "{events:#}");
    assert_eq!(held[0]["actor"]["name"], "ada");
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "noticed"),
        "held from the start, it was never noticed: {events:#}"
    );
    assert!(inspect["lifecycle"]["next"].is_null(), "{inspect:#}");
    // The admin's bulk stop spares the held one.
    let stopped = ok(
        &pki,
        &cluster,
        "root",
        &["admin", "workspace", "stop", "--idle-for", "1s"],
    )
    .await;
    let names: Vec<&str> = stopped
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["spare"]);
    assert_eq!(
        desired(&pki, &cluster, "kept").await.as_deref(),
        Some("running")
    );
    // Released, it is the lifetime's again.
    ok(&pki, &cluster, "ada", &["workspace", "release", "kept"]).await;
    eventually("kept destroyed", Duration::from_secs(40), || async {
        desired(&pki, &cluster, "kept")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}
