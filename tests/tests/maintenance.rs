//! Host maintenance on real processes: three `nexus-coordinator`s and a Docker `nexus-agent` on a
//! dockerd of the test's own (a run prunes the engine it is given, so never the shared one),
//! driven through the `nexus` CLI. The engine holds a dangling image nobody uses (built twice
//! under one tag, locally: no registry), a dangling image a container uses, the test image a
//! running workspace uses, a volume nobody mounts and one a container mounts. A dry run removes
//! nothing and says what it would; a run removes the dangling unused image and the free
//! anonymous volume (a named one nobody mounts stays),
//! and keeps everything in use; each coordinator answers its store's compaction; the agent counts
//! its run in its metrics.

use std::path::Path;
use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::identity::Role;
use nexus_protocol::maintenance::WeeklyTime;
use nexus_tests::cluster::TestCluster;
use nexus_tests::docker::{HostCleanup, PrivateEngine, TEST_IMAGE, private_engine};
use nexus_tests::eventually;
use nexus_tests::http::get;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, cli_command};
use serde_json::Value;

struct Fleet {
    pki: TestPki,
    cluster: TestCluster,
    agent: AgentProcess,
    host: String,
}

impl Fleet {
    fn run(&self, user: &str, role: Role, args: &[&str]) -> std::process::Output {
        let identity = pki::user(user, role);
        let home = self.pki.scratch(&format!("home-{user}"));
        cli_command(&self.pki, &identity, &home, &self.cluster.live_addresses())
            .args(["-o", "json"])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, user: &str, role: Role, args: &[&str]) -> Value {
        let out = self.run(user, role, args);
        assert!(
            out.status.success(),
            "nexus {args:?} failed: {}\n{}\n--- agent\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.cluster.logs(),
            self.agent.process.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn admin(&self, args: &[&str]) -> Value {
        self.ok("root", Role::Admin, args)
    }
}

/// `docker` on the private engine; its stdout, trimmed. Fails the test when it fails.
fn docker(engine: &PrivateEngine, args: &[&str]) -> String {
    let out = engine
        .cli()
        .env("DOCKER_BUILDKIT", "0")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn exists(engine: &PrivateEngine, kind: &str, name: &str) -> bool {
    engine
        .cli()
        .args([kind, "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// Builds `tag` from the test image with a payload of `fill` (256 KiB); answers the image's id.
fn build(engine: &PrivateEngine, dir: &Path, tag: &str, fill: u8) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {TEST_IMAGE}\nLABEL nexus.test=maintenance\nCOPY payload /payload\n"),
    )
    .unwrap();
    std::fs::write(dir.join("payload"), vec![fill; 256 << 10]).unwrap();
    docker(engine, &["build", "-q", "-t", tag, dir.to_str().unwrap()]);
    docker(engine, &["image", "inspect", "-f", "{{.Id}}", tag])
}

fn report<'a>(answer: &'a Value, daemon: &str) -> &'a Value {
    answer["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["daemon"] == daemon)
        .unwrap_or_else(|| panic!("no report of {daemon} in {answer}"))
}

fn removed(report: &Value, kind: &str) -> Vec<String> {
    report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// The value of the sample `series` (name and labels, as written) in `metrics`.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

#[tokio::test]
async fn a_maintenance_run_prunes_what_no_one_uses_and_keeps_every_image_in_use() {
    let engine = private_engine();
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;

    // What the engine holds before the agent starts.
    let scratch = pki.scratch("images");
    let dangling = build(&engine, &scratch.join("a"), "maint-app:latest", b'a');
    build(&engine, &scratch.join("b"), "maint-app:latest", b'b');
    let used = build(&engine, &scratch.join("c"), "maint-used:latest", b'c');
    docker(
        &engine,
        &[
            "create",
            "--name",
            &format!("maint-user-{}", std::process::id()),
            "-v",
            "maint-mounted:/data",
            "maint-used:latest",
        ],
    );
    build(&engine, &scratch.join("d"), "maint-used:latest", b'd');
    // Anonymous (the engine names it): the kind a run removes. A named one nobody mounts stays.
    let free = docker(&engine, &["volume", "create"]);
    docker(&engine, &["volume", "create", "maint-named"]);
    let listed = docker(
        &engine,
        &["images", "-q", "--no-trunc", "--filter", "dangling=true"],
    );
    assert!(
        listed.contains(&dangling) && listed.contains(&used),
        "{listed}"
    );

    let host = format!("maint-{}", std::process::id());
    let _cleanup = HostCleanup(host.clone());
    let socket = engine.socket().display().to_string();
    let agent = AgentProcess::start(
        &pki,
        &host,
        &cluster.live_addresses(),
        &[
            "--runtime",
            "docker",
            "--docker-socket",
            &socket,
            "--network-pool",
            "10.251.0.0/16",
        ],
    );
    let fleet = Fleet {
        pki,
        cluster,
        agent,
        host: host.clone(),
    };
    eventually("the agent registered", Duration::from_secs(30), || async {
        let hosts = fleet.admin(&["admin", "hosts"]);
        hosts
            .as_array()?
            .iter()
            .any(|h| h["status"] == "ready")
            .then_some(())
    })
    .await;
    let created = fleet.ok(
        "ada",
        Role::User,
        &[
            "workspace",
            "create",
            "busy",
            "--image",
            TEST_IMAGE,
            "--class",
            "small",
            "--",
            "sleep",
            "1000000",
        ],
    );
    assert_eq!(created["state"], "running");
    let agent_label = format!("agent-{}", fleet.host);
    // The window is Sunday 02:00 by default. No scheduled run while the test runs (were it
    // Sunday 02:00 now), until it asks for one.
    let status = fleet.admin(&["admin", "maintenance", "status"]);
    assert_eq!(status["schedule"], "sun 02:00", "{status}");
    assert!(status["next"].is_string(), "{status}");
    fleet.admin(&["admin", "maintenance", "schedule", "--off"]);

    // Users may not.
    let out = fleet.run("ada", Role::User, &["admin", "maintenance", "run", "--all"]);
    assert!(!out.status.success());

    // A dry run says what would go, and removes nothing.
    let dry = fleet.admin(&["admin", "maintenance", "run", "--all", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let agent_dry = report(&dry, &agent_label);
    assert_eq!(
        removed(agent_dry, "image"),
        std::slice::from_ref(&dangling),
        "{dry}"
    );
    assert_eq!(removed(agent_dry, "volume"), [free.as_str()], "{dry}");
    assert!(agent_dry["bytes"].as_u64().unwrap() >= 256 << 10, "{dry}");
    for id in 1..=3 {
        let compaction = report(&dry, &format!("coordinator-{id}"));
        assert_eq!(removed(compaction, "store").len(), 1, "{dry}");
    }
    assert!(exists(&engine, "image", &dangling));
    assert!(exists(&engine, "volume", &free));

    // The run, on the agent alone.
    let run = fleet.admin(&["admin", "maintenance", "run", "--host", &fleet.host]);
    assert_eq!(run["reports"].as_array().unwrap().len(), 1, "{run}");
    let agent_run = report(&run, &agent_label);
    assert_eq!(agent_run["errors"], Value::Array(vec![]), "{run}");
    assert_eq!(
        removed(agent_run, "image"),
        std::slice::from_ref(&dangling),
        "{run}"
    );
    assert_eq!(removed(agent_run, "volume"), [free.as_str()], "{run}");
    assert!(
        !exists(&engine, "image", &dangling),
        "the dangling image is still there"
    );
    assert!(!exists(&engine, "volume", &free));
    // Everything in use stays: the workspace's image, the dangling one a container uses, the
    // tagged ones, the mounted volume; and the workspace runs on.
    for image in [
        TEST_IMAGE,
        used.as_str(),
        "maint-app:latest",
        "maint-used:latest",
    ] {
        assert!(exists(&engine, "image", image), "{image} was removed");
    }
    assert!(exists(&engine, "volume", "maint-mounted"));
    assert!(exists(&engine, "volume", "maint-named"));
    let busy = fleet.ok("ada", Role::User, &["workspace", "inspect", "busy"]);
    assert_eq!(busy["state"], "running", "{busy}");

    // A second run finds nothing more.
    let again = fleet.admin(&["admin", "maintenance", "run", "--host", &fleet.host]);
    assert_eq!(
        report(&again, &agent_label)["removed"],
        Value::Array(vec![])
    );

    // A coordinator's compaction, alone.
    let compacted = fleet.admin(&["admin", "maintenance", "run", "--node", "2", "--compact"]);
    assert_eq!(
        compacted["reports"].as_array().unwrap().len(),
        1,
        "{compacted}"
    );
    let store = report(&compacted, "coordinator-2");
    assert_eq!(store["errors"], Value::Array(vec![]), "{compacted}");
    assert_eq!(removed(store, "store").len(), 1, "{compacted}");

    // An agent does not compact: asked for that alone, the CLI says so and asks no one.
    let nothing = fleet.run(
        "root",
        Role::Admin,
        &[
            "admin",
            "maintenance",
            "run",
            "--host",
            &fleet.host,
            "--compact",
        ],
    );
    assert!(!nothing.status.success());
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("INVALID_ARGUMENT"),
        "{}",
        String::from_utf8_lossy(&nothing.stderr)
    );

    // The agent counted its runs (not the dry one), with the bytes.
    let http = fleet.agent.http.unwrap();
    let (_, metrics) = get(http, "/metrics").await;
    assert_eq!(
        value(&metrics, "nexus_maintenance_runs_total{outcome=\"ok\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        value(&metrics, "nexus_maintenance_reclaimed_bytes_total").is_some_and(|b| b >= 262_144.0),
        "{metrics}"
    );
    assert!(
        value(&metrics, "nexus_maintenance_last_run_timestamp_seconds").is_some_and(|t| t > 0.0)
    );

    // The schedule, changed live, and off.
    let changed = fleet.admin(&["admin", "maintenance", "schedule", "--at", "wed 03:30"]);
    assert_eq!(changed["schedule"], "wed 03:30", "{changed}");
    let off = fleet.admin(&["admin", "maintenance", "schedule", "--off"]);
    assert_eq!(off["schedule"], Value::Null, "{off}");
    assert_eq!(off["next"], Value::Null, "{off}");
    let bad = fleet.run(
        "root",
        Role::Admin,
        &["admin", "maintenance", "schedule", "--at", "someday 25:00"],
    );
    assert!(!bad.status.success());

    // A window open now: the leader runs it on every coordinator and on the agent (which takes
    // the leader's certificate for it), and records what each reclaimed. A window runs once: on
    // Sundays from 02:00 UTC the default window is open when the fleet starts, and the run it
    // made then may fall in this very minute and count as this window's. Then the window to open
    // is the next minute's.
    let ran_before = fleet.admin(&["admin", "maintenance", "status"])["last"].is_object();
    let (opens, wait) = if ran_before {
        (clock::now().saturating_add(Duration::from_secs(60)), 90)
    } else {
        (clock::now(), 30)
    };
    let now = WeeklyTime::of(opens).to_string();
    fleet.admin(&["admin", "maintenance", "schedule", "--at", &now]);
    let last = eventually(
        "the scheduled run recorded",
        Duration::from_secs(wait),
        || async {
            let status = fleet.admin(&["admin", "maintenance", "status"]);
            let last = status["last"].clone();
            (last["daemons"].as_array()?.len() == 4).then_some(last)
        },
    )
    .await;
    let daemons: Vec<String> = last["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(d["bytes"].is_u64(), "{last}");
            d["daemon"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(daemons.contains(&agent_label), "{last}");
    let (_, metrics) = get(http, "/metrics").await;
    assert_eq!(
        value(&metrics, "nexus_maintenance_runs_total{outcome=\"ok\"}"),
        Some(3.0),
        "{metrics}"
    );
}
