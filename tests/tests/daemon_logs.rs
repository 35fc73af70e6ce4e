//! The daemons' logs on disk and `nexus admin logs`, on real processes: three coordinators and a
//! hollow agent write JSON lines to their log directories; an error on the agent (a workspace
//! whose creation fails for good) is found by `admin logs --errors`, labelled with its host;
//! `admin workspace logs --system` finds the agent's lines about that workspace; `--follow`
//! prints what is written after; a coordinator that was killed is named, and not fatal.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use nexus_protocol::identity::Role;
use nexus_tests::cluster::TestCluster;
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, cli_command};
use serde_json::Value;

/// Every line of `bytes` as JSON.
fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

/// A daemon's log file: every line a record with every key, stamped with `source`.
fn check_log_file(path: &Path, source: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no log file {}: {e}", path.display()));
    let lines = json_lines(text.as_bytes());
    assert!(!lines.is_empty(), "{} is empty", path.display());
    for line in &lines {
        for key in [
            "at_us",
            "time",
            "level",
            "target",
            "source",
            "request_id",
            "workspace",
            "message",
            "fields",
            "span",
        ] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
        assert_eq!(line["source"], source, "{line}");
        assert!(line["at_us"].as_u64().is_some(), "{line}");
    }
    lines
}

#[tokio::test]
async fn the_fleets_logs_are_on_disk_merged_and_a_dead_daemon_is_named() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster.leader(&pki, Duration::from_secs(20)).await.node;
    let addresses = cluster.live_addresses();
    // Every create and start fails on this host: after its retries, the agent gives up on the
    // workspace and says so at error.
    let agent = AgentProcess::start(&pki, "h1", &addresses, &["--hollow-failure-rate", "1"]);
    let admin = pki::user("ops", Role::Admin);
    let home = pki.scratch("home-ops");
    let nexus = |coordinators: &[SocketAddr], args: &[&str]| -> Output {
        cli_command(&pki, &admin, &home, coordinators)
            .args(args)
            .output()
            .expect("nexus runs")
    };
    let create = |name: &'static str| {
        eventually(
            "the host to take a workspace",
            Duration::from_secs(30),
            || {
                let out = nexus(
                    &addresses,
                    &[
                        "workspace",
                        "create",
                        name,
                        "--image",
                        "dev:latest",
                        "--no-wait",
                    ],
                );
                async move { out.status.success().then_some(()) }
            },
        )
    };
    create("api").await;

    let error = eventually(
        "the agent's error in admin logs --errors",
        Duration::from_secs(60),
        || {
            let out = nexus(
                &addresses,
                &[
                    "admin", "logs", "--errors", "--last", "5m", "--output", "json",
                ],
            );
            async move {
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let records = json_lines(&out.stdout);
                for record in &records {
                    assert_eq!(record["level"], "ERROR", "--errors let through {record}");
                }
                records
                    .into_iter()
                    .find(|r| r["source"] == "agent-h1" && r["workspace"] == "api")
            }
        },
    )
    .await;
    assert_eq!(error["fields"]["code"], "WORKSPACE_START_FAILED", "{error}");
    assert!(
        error["target"].as_str().unwrap().starts_with("nexus_agent"),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("simulated failure"),
        "{error}"
    );

    // On disk: one file of JSON lines per daemon, in its log directory (DATA_DIR/logs).
    for member in &cluster.members {
        let source = format!("coordinator-{}", member.id);
        check_log_file(
            &member.data_dir.join("logs").join(format!("{source}.jsonl")),
            &source,
        );
    }
    let lines = check_log_file(&agent.data_dir.join("logs/agent-h1.jsonl"), "agent-h1");
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l["workspace"] == "api"),
        "{lines:?}"
    );

    // The agent's own lines about the workspace, by its workspace field.
    let out = nexus(
        &addresses,
        &[
            "admin",
            "workspace",
            "logs",
            "api",
            "--system",
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let document: Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = document["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["level"] == "ERROR"), "{document}");
    for record in records {
        assert_eq!(record["workspace"], "api", "{record}");
        assert_eq!(record["source"], "agent-h1", "{record}");
    }

    // Following the agent: what it writes after the backlog comes as it is written.
    let mut follow = cli_command(&pki, &admin, &home, &addresses)
        .args([
            "admin", "logs", "--follow", "--host", "h1", "--level", "warn", "--last", "1m",
            "--output", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_in, lines) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_in.send(line).is_err() {
                break;
            }
        }
    });
    create("web").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let followed = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break None;
        };
        let record: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["source"], "agent-h1", "{record}");
        if record["workspace"] == "web" {
            break Some(record);
        }
        seen.push(line);
    };
    let _ = follow.kill();
    let _ = follow.wait();
    let followed = followed.unwrap_or_else(|| panic!("--follow printed nothing of web: {seen:?}"));
    // The first failure of web's create: a retry's warning or, if the follow's backlog was read
    // after the retries ran out, the final error.
    assert!(
        followed["level"] == "WARN" || followed["level"] == "ERROR",
        "{followed}"
    );

    // A coordinator that is gone is named on stderr; the others still answer.
    let victim = cluster
        .members
        .iter()
        .find(|m| m.id != leader.get())
        .unwrap()
        .id;
    cluster.kill(cluster.index_of(victim));
    let out = nexus(
        &cluster.live_addresses(),
        &["admin", "logs", "--last", "5m", "--output", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failures = json_lines(&out.stderr);
    let victim_source = format!("coordinator-{victim}");
    assert!(
        failures
            .iter()
            .any(|f| f["source"] == victim_source.as_str() && f["error"].is_string()),
        "{failures:?}"
    );
    let records = json_lines(&out.stdout);
    let leader_source = format!("coordinator-{leader}");
    for source in ["agent-h1", leader_source.as_str()] {
        assert!(
            records.iter().any(|r| r["source"] == source),
            "nothing from {source}"
        );
    }
    assert!(
        !records
            .iter()
            .any(|r| r["source"] == victim_source.as_str())
    );
    // In time order.
    let times: Vec<u64> = records
        .iter()
        .map(|r| r["at_us"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}
