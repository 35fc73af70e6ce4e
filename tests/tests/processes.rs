//! Real `nexus-coordinator` and `nexus-agent` processes on loopback: the agent registers and
//! heartbeats over mTLS QUIC, survives a coordinator killed with SIGKILL, and comes back by itself;
//! bad configuration fails fast with a clear message.

use std::time::Duration;

use nexus_protocol::clock::Timestamp;
use nexus_tests::eventually;
use nexus_tests::pki::TestPki;
use nexus_tests::process::{AgentProcess, CoordinatorProcess, Process};

async fn last_heartbeat(
    coordinator: &CoordinatorProcess,
    pki: &TestPki,
    host: &str,
) -> Option<Timestamp> {
    let hosts = coordinator.hosts(pki).await.ok()?;
    hosts
        .into_iter()
        .find(|h| h.info.host_id.as_str() == host)?
        .last_heartbeat
}

#[tokio::test]
async fn an_agent_registers_heartbeats_and_returns_after_its_coordinator_is_killed() {
    let pki = TestPki::new();
    let mut coordinator = CoordinatorProcess::start(&pki, 1).await;
    let mut agent = AgentProcess::start(
        &pki,
        "dev-01",
        &[coordinator.address],
        &["--label", "zone=a"],
    );

    let first = eventually("the agent to register", Duration::from_secs(10), || {
        last_heartbeat(&coordinator, &pki, "dev-01")
    })
    .await;
    let hosts = coordinator.hosts(&pki).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0].info.labels.get("zone").map(String::as_str),
        Some("a")
    );
    assert!(hosts[0].info.cpus >= 1 && hosts[0].info.memory_bytes > 0);
    eventually("a later heartbeat", Duration::from_secs(5), || async {
        last_heartbeat(&coordinator, &pki, "dev-01")
            .await
            .filter(|t| *t > first)
    })
    .await;

    // SIGKILL the coordinator: the agent keeps running and retries.
    coordinator.process.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        agent.process.exited().is_none(),
        "the agent died with its coordinator:\n{}",
        agent.process.log()
    );

    // A new coordinator process on the same address and data dir: the agent finds it by itself.
    let restarted =
        CoordinatorProcess::start_at(&pki, 1, coordinator.address, coordinator.data_dir.clone())
            .await;
    eventually("the agent to re-register", Duration::from_secs(15), || {
        last_heartbeat(&restarted, &pki, "dev-01")
    })
    .await;
    assert!(
        agent.process.log().contains("coordinator link lost"),
        "{}",
        agent.process.log()
    );
}

#[tokio::test]
async fn an_agent_without_its_certificate_fails_fast_and_says_why() {
    let pki = TestPki::new();
    let dir = pki.scratch("agent-x");
    let args: Vec<String> = [
        "--host-id",
        "x",
        "--coordinator",
        "127.0.0.1:1",
        "--tls-dir",
        pki.dir().to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let mut agent = Process::spawn("nexus-agent", &args, dir.join("log"));
    let status = eventually("the agent to exit", Duration::from_secs(10), || {
        let status = agent.exited();
        async move { status }
    })
    .await;
    assert_eq!(status.code(), Some(1));
    assert!(
        agent.log().contains("cannot load this agent's TLS files"),
        "{}",
        agent.log()
    );
    assert!(agent.log().contains("agent-x.pem"), "{}", agent.log());
}

#[tokio::test]
async fn a_coordinator_with_bad_flags_fails_fast_and_says_why() {
    let pki = TestPki::new();
    let dir = pki.scratch("c");
    // In the scratch dir: the coordinator makes its data dir (and log) before it fails.
    let data_dir = dir.join("d").display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--listen", "127.0.0.1:1"], "--node-id is required"),
        (&["--node-id", "0"], "must not be 0"),
        (
            &[
                "--node-id",
                "1",
                "--listen",
                "127.0.0.1:1",
                "--data-dir",
                &data_dir,
                "--tls-dir",
                "/nonexistent",
            ],
            "cannot load this coordinator's TLS files",
        ),
    ];
    for (flags, expect) in cases {
        let args: Vec<String> = flags.iter().map(ToString::to_string).collect();
        let mut process = Process::spawn("nexus-coordinator", &args, dir.join("log"));
        let status = eventually("the coordinator to exit", Duration::from_secs(10), || {
            let status = process.exited();
            async move { status }
        })
        .await;
        assert!(!status.success(), "{flags:?} started");
        assert!(
            process.log().contains(expect),
            "{flags:?}: {}",
            process.log()
        );
    }
}
