//! The monitoring server on a real loopback socket: routes, formats, status codes and a stalled
//! probe, asked as Prometheus and `curl` ask; and the bounds on its connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nexus_telemetry::http::{Bound, Bounds, Probes};
use nexus_telemetry::{Check, Gauge, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct Daemon {
    ready: AtomicBool,
    stall: AtomicBool,
    refreshed: Gauge,
}

impl Probes for Daemon {
    async fn refresh(&self) {
        self.refreshed.set(self.refreshed.get() + 1.0);
    }

    async fn live(&self) -> Vec<Check> {
        if self.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        vec![Check::ok("loop")]
    }

    async fn ready(&self) -> Vec<Check> {
        let ready = self.ready.load(Ordering::SeqCst);
        vec![
            Check::ok("registered"),
            Check::from_failure("engine", (!ready).then(|| "docker does not answer".into())),
        ]
    }
}

async fn get(addr: std::net::SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|line| line.strip_prefix("content-type: "))
        .unwrap_or("")
        .to_string();
    (status, content_type, body.to_string())
}

async fn serve() -> (std::net::SocketAddr, Arc<Daemon>) {
    serve_with(Bounds::DEFAULT).await
}

async fn serve_with(bounds: Bounds) -> (std::net::SocketAddr, Arc<Daemon>) {
    let (mut registry, common) = Registry::for_daemon("test", "0.0.0");
    common.cert_expiry.set(["node"], 1.9e9);
    let daemon = Arc::new(Daemon {
        ready: AtomicBool::new(true),
        stall: AtomicBool::new(false),
        refreshed: registry.gauge("nexus_test_refreshes", "How often a scrape refreshed."),
    });
    let bound = Bound::bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .with_bounds(bounds);
    let addr = bound.local_addr().unwrap();
    tokio::spawn(bound.serve(Arc::new(registry), daemon.clone(), std::future::pending()));
    (addr, daemon)
}

#[tokio::test]
async fn metrics_answer_in_the_format_asked_for_after_a_refresh() {
    let (addr, _daemon) = serve().await;
    let (status, content_type, body) = get(addr, "/metrics", "*/*").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        "nexus_build_info{version=\"0.0.0\",role=\"test\"} 1.0",
        "nexus_cert_expiry_timestamp_seconds{cert=\"node\"} 1900000000.0",
        "nexus_test_refreshes 1.0",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    let (_, content_type, body) = get(
        addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(body.contains("nexus_test_refreshes 2.0"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[tokio::test]
async fn readiness_names_the_failing_check() {
    let (addr, daemon) = serve().await;
    assert_eq!(get(addr, "/readyz", "*/*").await.0, 200);
    daemon.ready.store(false, Ordering::SeqCst);
    let (status, _, body) = get(addr, "/readyz?verbose", "*/*").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "[+]registered ok\n[-]engine failed: docker does not answer\nreadyz check failed\n"
    );
}

#[tokio::test]
async fn a_stalled_probe_fails_liveness_instead_of_hanging() {
    let (addr, daemon) = serve().await;
    assert_eq!(
        get(addr, "/livez", "*/*").await,
        (
            200,
            "text/plain; charset=utf-8".into(),
            "livez check passed\n".into()
        )
    );
    daemon.stall.store(true, Ordering::SeqCst);
    let (status, _, body) = get(addr, "/livez", "*/*").await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("[-]probes failed: the checks did not answer within 2s"),
        "{body}"
    );
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let (addr, _daemon) = serve().await;
    let (status, _, body) = get(addr, "/debug/pprof", "*/*").await;
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"), "{body}");
}

/// A connection that says nothing is closed once silent for the idle time, and its place goes
/// to the next one.
#[tokio::test]
async fn a_silent_connection_is_closed_and_gives_its_place_back() {
    let bounds = Bounds {
        connections: 1,
        idle: Duration::from_millis(300),
        ..Bounds::DEFAULT
    };
    let (addr, _daemon) = serve_with(bounds).await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut byte))
        .await
        .expect("the silent connection was kept past its idle time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let next = tokio::time::timeout(Duration::from_secs(20), get(addr, "/livez", "*/*"))
        .await
        .expect("the closed connection's place was not given back");
    assert_eq!(next.0, 200);
}

/// Past the bound a connection waits (in the kernel's backlog) until one ends, then is served.
#[tokio::test]
async fn a_connection_past_the_bound_waits_for_one_to_end() {
    let bounds = Bounds {
        connections: 1,
        idle: Duration::from_secs(60),
        ..Bounds::DEFAULT
    };
    let (addr, _daemon) = serve_with(bounds).await;
    let held = tokio::net::TcpStream::connect(addr).await.unwrap();
    let waiting = tokio::spawn(get(addr, "/livez", "*/*"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served past the bound");
    drop(held);
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("not served once the held connection ended")
        .unwrap();
    assert_eq!(answer.0, 200);
}

/// A request sent a byte at a time is cut once it has not come whole and been answered within
/// the request's time, however often its bytes come; a kept connection that asks again later is
/// not, since an answer starts the next request's time afresh.
#[tokio::test]
async fn a_request_trickled_in_is_cut_and_a_kept_connection_is_not() {
    let bounds = Bounds {
        idle: Duration::from_secs(60),
        request: Duration::from_millis(500),
        ..Bounds::DEFAULT
    };
    let (addr, _daemon) = serve_with(bounds).await;
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickle.write_all(b"GET /livez HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let cut = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a trickled request was kept for 20 s"
        );
        if trickle.write_all(b"X").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(100), trickle.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => panic!("the trickled request was answered"),
            Err(_) => {}
        }
    };
    assert!(cut >= Duration::from_millis(400), "cut after {cut:?}");

    // Two requests on one kept connection, a pause longer than the request's time between.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    for round in 0..2 {
        kept.write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).ends_with("check passed\n") {
            let mut piece = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut piece))
                .await
                .expect("no answer on the kept connection")
                .unwrap();
            assert!(read > 0, "the kept connection was closed in round {round}");
            answer.extend_from_slice(&piece[..read]);
        }
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
}

/// One address holds at most its share of the places: one more from it is closed at once, and
/// another address is still served.
#[tokio::test]
async fn one_address_holds_at_most_its_share() {
    let bounds = Bounds {
        connections: 4,
        per_source: 2,
        idle: Duration::from_secs(60),
        ..Bounds::DEFAULT
    };
    let (addr, _daemon) = serve_with(bounds).await;
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((ip, 0).into()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let _held = [from([127, 0, 0, 1]).await, from([127, 0, 0, 1]).await];
    let mut third = from([127, 0, 0, 1]).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(20), third.read(&mut byte))
        .await
        .expect("a third connection from one address was kept");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let mut other = from([127, 0, 0, 2]).await;
    other
        .write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), other.read_to_string(&mut answer))
        .await
        .expect("another address was not served")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
