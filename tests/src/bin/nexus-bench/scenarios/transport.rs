//! The `transport` scenario: one coordinator process on loopback; connection setup (QUIC, mTLS,
//! hello), sequential request round trips, and throughput over concurrent streams.

use std::sync::Arc;
use std::time::Instant;

use nexus_protocol::identity::{IdentityKind, Role};
use nexus_protocol::message::{Request, Response};
use nexus_protocol::transport::{Connector, TransportConfig};
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::CoordinatorProcess;
use serde::Serialize;

use crate::measure::{Load, Percentiles, Usage, concurrently};

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 200)]
    pub(crate) connections: usize,
    #[arg(long, default_value_t = 5_000)]
    pub(crate) requests: usize,
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
}

/// What the `transport` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) connection_setup: Percentiles,
    pub(crate) sequential_round_trip: Percentiles,
    pub(crate) concurrent: Concurrent,
    pub(crate) coordinator_rss_mib: f64,
}

/// Requests over concurrent streams on one connection.
#[derive(Debug, Serialize)]
pub(crate) struct Concurrent {
    pub(crate) streams: usize,
    pub(crate) requests: usize,
    pub(crate) seconds: f64,
    pub(crate) requests_per_second: f64,
    pub(crate) coordinator_cpu_percent_of_one_core: f64,
}

pub(crate) async fn run(args: Args) -> Report {
    let Args {
        connections,
        requests,
        concurrency,
    } = args;
    let concurrency = concurrency.max(1);
    let pki = TestPki::new();
    let coordinator = CoordinatorProcess::start(&pki, 1).await;
    let pid = coordinator.process.pid();
    let credentials = pki.issue(&pki::user("bench", Role::Admin));
    let connector = Connector::new(&credentials, TransportConfig::default()).unwrap();
    let connect = || {
        connector.connect(
            coordinator.address,
            "127.0.0.1",
            &[IdentityKind::Coordinator],
        )
    };

    let mut setup = Vec::with_capacity(connections);
    for _ in 0..connections {
        let started = Instant::now();
        let connection = connect().await.unwrap();
        setup.push(started.elapsed());
        connection.close();
    }

    let connection = connect().await.unwrap();
    let mut round_trips = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let answer = connection.request(Request::Ping).await.unwrap();
        round_trips.push(started.elapsed());
        assert!(matches!(answer, Response::Pong(_)));
    }

    let connection = Arc::new(connection);
    let before = Usage::of(pid);
    let (total, elapsed) = concurrently(concurrency, requests, |per_task| {
        let connection = connection.clone();
        async move {
            for _ in 0..per_task {
                assert!(matches!(
                    connection.request(Request::Ping).await.unwrap(),
                    Response::Pong(_)
                ));
            }
        }
    })
    .await;
    let load = Load::between(&before, &Usage::of(pid), elapsed);
    Report {
        connection_setup: Percentiles::of(setup),
        sequential_round_trip: Percentiles::of(round_trips),
        concurrent: Concurrent {
            streams: concurrency,
            requests: total,
            seconds: elapsed.as_secs_f64(),
            requests_per_second: total as f64 / elapsed.as_secs_f64(),
            coordinator_cpu_percent_of_one_core: load.cpu_percent_of_one_core,
        },
        coordinator_rss_mib: load.rss_mib,
    }
}
