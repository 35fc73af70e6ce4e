//! A script's request id, end to end on real processes: `nexus --request-id` (or
//! `NEXUS_REQUEST_ID`) sends the command's requests under the id given, the servers answer
//! under it, `--verbose` says it, and every error names it, the CLI's own findings included (a
//! create that failed on its host). Three coordinators and a hollow agent whose every create
//! fails, which also runs the agent's watch with causes against the coordinators.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use nexus_protocol::identity::Role;
use nexus_tests::cluster::TestCluster;
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, cli_command};
use serde_json::Value;

fn nexus(
    pki: &TestPki,
    coordinators: &[SocketAddr],
    role: Role,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let name = if role == Role::Admin { "root" } else { "ada" };
    let home = pki.scratch(&format!("home-{name}"));
    let mut command = cli_command(pki, &pki::user(name, role), &home, coordinators);
    command.env_remove("NEXUS_REQUEST_ID");
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .args(["-o", "json"])
        .args(args)
        .output()
        .expect("nexus runs")
}

/// The JSON error on the last line of stderr (`--verbose` writes before it).
fn error_of(out: &Output) -> Value {
    assert!(!out.status.success(), "the command succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

#[tokio::test]
async fn the_request_id_given_reaches_the_servers_and_every_error() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let coordinators = cluster.live_addresses();
    let host = format!("fails-{}", std::process::id());
    let _agent = AgentProcess::start(&pki, &host, &coordinators, &["--hollow-failure-rate", "1"]);
    eventually("the agent registered", Duration::from_secs(30), || async {
        let out = nexus(&pki, &coordinators, Role::Admin, &["admin", "hosts"], &[]);
        let hosts: Value = serde_json::from_slice(&out.stdout).ok()?;
        (hosts.as_array()?.len() == 1).then_some(())
    })
    .await;

    // The create is accepted, then fails on its host: the CLI's wait finds it, and its error
    // names the request the script gave, which `--verbose` said first.
    let first = "0123456789abcdef0123456789abcd01";
    let out = nexus(
        &pki,
        &coordinators,
        Role::User,
        &[
            "--verbose",
            "--request-id",
            first,
            "workspace",
            "create",
            "api",
            "--image",
            "dev:latest",
            "--class",
            "small",
        ],
        &[],
    );
    let error = error_of(&out);
    assert_eq!(error["error"]["code"], "WORKSPACE_START_FAILED", "{error}");
    assert_eq!(error["error"]["request_id"], first);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("request id: {first}\n")),
        "{stderr}"
    );

    // A second create of the name, under the environment's id: the coordinators refuse it under
    // that id.
    let second = "0123456789abcdef0123456789abcd02";
    let out = nexus(
        &pki,
        &coordinators,
        Role::User,
        &[
            "workspace",
            "create",
            "api",
            "--image",
            "dev:latest",
            "--no-wait",
        ],
        &[("NEXUS_REQUEST_ID", second)],
    );
    let error = error_of(&out);
    assert_eq!(
        error["error"]["code"], "WORKSPACE_ALREADY_EXISTS",
        "{error}"
    );
    assert_eq!(error["error"]["request_id"], second);

    // Without one, every command draws its own, and its errors name it all the same.
    let out = nexus(
        &pki,
        &coordinators,
        Role::User,
        &["workspace", "inspect", "nope"],
        &[],
    );
    let error = error_of(&out);
    assert_eq!(error["error"]["code"], "WORKSPACE_NOT_FOUND");
    let drawn = error["error"]["request_id"].as_str().unwrap();
    assert_eq!(drawn.len(), 32);
    assert!(drawn != first && drawn != second);

    // An id that is not one is refused before anything is sent.
    let out = nexus(
        &pki,
        &coordinators,
        Role::User,
        &["--request-id", "not-an-id", "workspace", "list"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}
