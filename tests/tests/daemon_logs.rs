//! The daemons' logs on disk and `nexus admin logs`, on real processes: three coordinators and a
//! hollow agent write JSON lines to their log directories; an error on the agent (a workspace
//! whose creation fails for good) is found by `admin logs --errors`, labelled with its host;
//! `admin workspace logs --system` finds the agent's lines about that workspace; `--follow`
//! prints what is written after, and takes in agents that connect or come back after it began;
//! a coordinator that was killed is named, and not fatal.

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

/// `--follow` looks at the roster again as it runs: an agent that connects after the follow
/// began is followed, and one that stops and starts again is named once and followed again from
/// its newest record printed, with nothing printed twice.
#[tokio::test]
async fn a_follow_takes_in_agents_that_come_and_come_back() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let addresses = cluster.live_addresses();
    let admin = pki::user("ops", Role::Admin);
    let home = pki.scratch("home-ops");
    let mut follow = cli_command(&pki, &admin, &home, &addresses)
        .args([
            "admin", "logs", "--follow", "--level", "info", "--last", "1m", "--output", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |from: Box<dyn std::io::Read + Send>| {
        let (lines_in, lines) = std::sync::mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                if lines_in.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        lines
    };
    let stdout = lines(Box::new(follow.stdout.take().unwrap()));
    let stderr = lines(Box::new(follow.stderr.take().unwrap()));
    let mut printed: Vec<Value> = Vec::new();
    until(
        &stdout,
        "coordinator record",
        &|l| l["source"] == "coordinator-1",
        &mut printed,
    );

    // An agent that connects after the follow began.
    let mut agent = AgentProcess::start(&pki, "late", &addresses, &[]);
    until(
        &stdout,
        "record of the late agent",
        &|l| l["source"] == "agent-late",
        &mut printed,
    );

    // It stops (its stream ends: named on stderr) and starts again: followed again.
    agent.process.ask_to_stop();
    assert!(
        agent
            .process
            .reap_within(std::time::Instant::now() + Duration::from_secs(20)),
        "the agent stops on SIGTERM"
    );
    let ended = until(
        &stderr,
        "the stream's end named",
        &|l| l["source"] == "agent-late",
        &mut Vec::new(),
    );
    assert!(
        ended["error"]
            .as_str()
            .unwrap()
            .ends_with("asked again every 10 s"),
        "{ended}"
    );
    // Written after the first process was reaped: the second's.
    let restarted_us = nexus_protocol::clock::now_us();
    let _agent = AgentProcess::start(&pki, "late", &addresses, &[]);
    until(
        &stdout,
        "a record of the agent started again",
        &|l| l["source"] == "agent-late" && l["at_us"].as_u64().unwrap() > restarted_us,
        &mut printed,
    );
    let _ = follow.kill();
    let _ = follow.wait();
    // Nothing twice: an ask again starts at the newest record printed and leaves it out.
    let mut seen = std::collections::BTreeSet::new();
    for line in &printed {
        assert!(seen.insert(line.to_string()), "printed twice: {line}");
    }
}

/// Reads `from` until a line passes `wanted` (within 40 s), keeping every record read in `printed`.
fn until(
    from: &std::sync::mpsc::Receiver<Value>,
    what: &str,
    wanted: &dyn Fn(&Value) -> bool,
    printed: &mut Vec<Value>,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = from
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {what} within 40 s; printed {printed:?}"));
        if line.get("at_us").is_some() {
            printed.push(line.clone());
        }
        if wanted(&line) {
            return line;
        }
    }
}
