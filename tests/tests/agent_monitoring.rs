//! What an agent shows an operator over HTTP, from a real `nexus-agent` process on a dockerd of
//! the test's own: `/readyz` passes while the agent is registered, heartbeating and its engine
//! answers, and names the engine when it stops; `/livez` does not care about the engine;
//! `/metrics` shows the host, the workspaces and the operations the reconciler ran.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use nexus_protocol::HostId;
use nexus_protocol::model::ResourceClass;
use nexus_tests::docker::{TEST_IMAGE, private_engine};
use nexus_tests::eventually;
use nexus_tests::http::get;
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::TestPki;
use nexus_tests::process::AgentProcess;

/// A port of the agent's default range (20000–32000) that nothing listens on now.
fn free_port_in_range() -> u16 {
    let start = 21_000 + u16::try_from(std::process::id() % 10_000).unwrap();
    (start..=32_000)
        .chain(20_000..start)
        .find(|&port| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok())
        .expect("a free port in 20000-32000")
}

/// The value of the sample `series` (name and labels, as written) in `metrics`.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

async fn readyz(http: SocketAddr, want: u16) -> String {
    eventually(
        &format!("/readyz to answer {want}"),
        Duration::from_secs(30),
        || async {
            let (status, body) = get(http, "/readyz?verbose").await;
            (status == want).then_some(body)
        },
    )
    .await
}

#[tokio::test]
async fn an_agent_serves_its_metrics_and_its_readiness_names_a_stopped_engine() {
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let mut engine = private_engine();
    let socket = engine.socket().display().to_string();
    let host = format!("mon-{}", std::process::id());
    let host_id: HostId = host.parse().unwrap();
    let flags = [
        "--runtime",
        "docker",
        "--docker-socket",
        &socket,
        "--stats-interval",
        "0.3",
        // Apart from the shared engine's workspace networks: two bridges with one subnet
        // would route each other's traffic.
        "--network-pool",
        "10.252.0.0/16",
    ];
    let agent = AgentProcess::start(&pki, &host, &[coordinator.address], &flags);
    let http = agent
        .http
        .expect("the harness gives each agent an HTTP port");
    eventually("the agent to listen", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(http).await.ok()
    })
    .await;
    let ready = readyz(http, 200).await;
    assert_eq!(
        ready,
        "[+]registered ok\n[+]heartbeat ok\n[+]engine ok\nreadyz check passed\n"
    );
    assert!(
        agent
            .process
            .log()
            .contains(&format!("serving HTTP monitoring on {http}")),
        "{}",
        agent.process.log()
    );
    assert_eq!(
        get(http, "/livez").await,
        (200, "livez check passed\n".into())
    );
    let (_, metrics) = get(http, "/metrics").await;
    assert_eq!(
        value(&metrics, "nexus_agent_connected"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "nexus_agent_engine_up"),
        Some(1.0),
        "{metrics}"
    );
    assert!(value(&metrics, "nexus_agent_heartbeat_rtt_seconds").is_some_and(|rtt| rtt > 0.0));
    // The host's gauges come from the stats loop, which runs apart from readiness: once, under
    // CI's load, they were still unset when the agent was ready (the first sample reads the
    // disks and every mount).
    eventually(
        "the host's first sample",
        Duration::from_secs(20),
        || async {
            let (_, metrics) = get(http, "/metrics").await;
            (value(&metrics, "nexus_host_memory_total_bytes").is_some_and(|m| m > 0.0)
                && value(&metrics, "nexus_host_disk_free_bytes").is_some_and(|d| d > 0.0))
            .then_some(())
        },
    )
    .await;
    assert!(
        value(
            &metrics,
            r#"nexus_cert_expiry_timestamp_seconds{cert="node"}"#
        )
        .is_some_and(|at| at > 1.7e9),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, r#"nexus_agent_containers{state="running"}"#),
        Some(0.0)
    );

    // A workspace: its series appear, and the operations that started it are counted.
    let port = free_port_in_range();
    coordinator
        .place(
            &host_id,
            "web",
            TEST_IMAGE,
            &[(8080, port)],
            &["sleep", "3600"],
        )
        .await
        .unwrap();
    let metrics = eventually(
        "the running workspace's series",
        Duration::from_secs(30),
        || async {
            let (_, metrics) = get(http, "/metrics").await;
            (value(&metrics, r#"nexus_agent_containers{state="running"}"#) == Some(1.0)
                && value(&metrics, r#"nexus_workspace_memory_bytes{workspace="web"}"#).is_some())
            .then_some(metrics)
        },
    )
    .await;
    #[allow(clippy::cast_precision_loss)]
    // The harness places the fixtures' spec, of the small class.
    let limit = ResourceClass::Small.resources().memory_bytes as f64;
    assert_eq!(
        value(
            &metrics,
            r#"nexus_workspace_memory_limit_bytes{workspace="web"}"#
        ),
        Some(limit),
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            r#"nexus_workspace_cpu_usage_ratio{workspace="web"}"#
        )
        .is_some_and(|ratio| (0.0..=1.0).contains(&ratio)),
        "{metrics}"
    );
    for op in ["create", "start"] {
        assert_eq!(
            value(
                &metrics,
                &format!(r#"nexus_agent_operations_total{{op="{op}",outcome="ok"}}"#)
            ),
            Some(1.0),
            "{metrics}"
        );
    }
    assert_eq!(
        value(
            &metrics,
            r#"nexus_agent_operation_duration_seconds_count{op="start"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(value(&metrics, "nexus_ports_allocated"), Some(1.0));
    assert_eq!(
        value(&metrics, "nexus_agent_operations_in_flight"),
        Some(0.0)
    );
    let started = Instant::now();
    let (_, scraped) = get(http, "/metrics").await;
    eprintln!(
        "a scrape with one workspace: {} bytes, {} lines, {:?}",
        scraped.len(),
        scraped.lines().count(),
        started.elapsed()
    );

    // The engine stops: not ready, naming it; still live.
    engine.stop();
    let unready = readyz(http, 503).await;
    assert_eq!(
        unready
            .lines()
            .map(|l| l.split(':').next().unwrap())
            .collect::<Vec<_>>(),
        [
            "[+]registered ok",
            "[+]heartbeat ok",
            "[-]engine failed",
            "readyz check failed"
        ],
        "{unready}"
    );
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.starts_with("[-]engine failed: "), "{body}");
    let (_, metrics) = get(http, "/metrics").await;
    assert_eq!(
        value(&metrics, "nexus_agent_engine_up"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(get(http, "/livez").await.0, 200);
    // The reconciler's next listing fails too, counted under the code it is reported with.
    eventually(
        "the engine's errors to be counted",
        Duration::from_secs(40),
        || async {
            let (_, metrics) = get(http, "/metrics").await;
            value(
                &metrics,
                r#"nexus_agent_engine_errors_total{code="BACKEND_UNAVAILABLE"}"#,
            )
            .filter(|&errors| errors >= 1.0)
        },
    )
    .await;

    // It comes back: ready again.
    engine.restart();
    readyz(http, 200).await;
    let (_, metrics) = get(http, "/metrics").await;
    assert_eq!(
        value(&metrics, "nexus_agent_engine_up"),
        Some(1.0),
        "{metrics}"
    );
    drop(agent);
    coordinator.stop().await;
}

#[tokio::test]
async fn an_agent_that_cannot_serve_http_stops_and_names_the_flag() {
    let pki = TestPki::new();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let host = format!("busy-{}", std::process::id());
    // No coordinator answers there: the agent stops before it would try.
    let mut agent = AgentProcess::start(
        &pki,
        &host,
        &["127.0.0.1:9".parse().unwrap()],
        &["--http-listen", &addr],
    );
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = agent.process.exited() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(20),
            "the agent still runs: {}",
            agent.process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = agent.process.log();
    assert!(
        log.contains(&format!(
            "cannot serve HTTP monitoring on {addr} (--http-listen, or `off`)"
        )),
        "{log}"
    );
}
