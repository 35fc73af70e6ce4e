//! The `failover` scenario: three coordinators under a steady stream of writes, the leader killed
//! with SIGKILL again and again; the time until a write sent after the kill is acknowledged, and
//! a check that every acknowledged write is on every member. The stream's client is here too.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nexus_protocol::HostId;
use nexus_protocol::RequestId;
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::transport::{Connection, Connector, Credentials, TransportConfig};
use nexus_tests::cluster::{self, TestCluster};
use nexus_tests::pki::{self, TestPki};
use serde::Serialize;

use crate::measure::Percentiles;
use crate::setup::register_once;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 20)]
    pub(crate) kills: usize,
    /// Writes per second in the steady stream.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Writers of the stream, each with one write in flight.
    #[arg(long, default_value_t = 8)]
    pub(crate) writers: usize,
}

/// What the `failover` scenario measured, and what it checked.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) kill_to_first_write: Percentiles,
    /// The most terms one failover took (one: a single election); none without failovers.
    pub(crate) terms_per_failover_max: Option<u64>,
    pub(crate) stream: Stream,
    /// Acknowledged writes missing at the leader: must be 0.
    pub(crate) acknowledged_missing_at_leader: usize,
    /// Acknowledged writes missing on each member once caught up: must be 0 each.
    pub(crate) acknowledged_missing_on_members: Vec<usize>,
}

/// The steady stream of writes that ran through the kills.
#[derive(Debug, Serialize)]
pub(crate) struct Stream {
    pub(crate) writers: usize,
    pub(crate) rate_asked: f64,
    pub(crate) acknowledged: usize,
    pub(crate) writes_per_second: f64,
    pub(crate) latency: Percentiles,
    pub(crate) longest_gap_ms: f64,
}

pub(crate) async fn run(args: Args) -> Report {
    let (kills, rate, writers) = (args.kills.max(1), args.rate.max(1.0), args.writers.max(1));
    let pki = Arc::new(TestPki::new());
    // The stream's hosts never heartbeat: an hour's TTL keeps the leader from marking them down
    // (a burst of writes of its own) in the middle of the measurement.
    let mut cluster = TestCluster::start(&pki, 3, &["--host-ttl", "3600"]).await;
    cluster.leader(&pki, Duration::from_secs(30)).await;
    let addresses: Vec<SocketAddr> = cluster.members.iter().map(|m| m.address).collect();

    // Each write needs a certificate of its own. A thread issues them ahead of the stream, a
    // few seconds' worth at a time, so signing keeps pace without a burst during an election.
    let (credentials_tx, credentials_rx) =
        tokio::sync::mpsc::channel::<(HostId, Credentials)>((rate * 5.0) as usize + 16);
    let stop = Arc::new(AtomicBool::new(false));
    let issuer = {
        let pki = pki.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            // In batches: each batch loads the CA once.
            for batch in 0usize.. {
                let hosts: Vec<HostId> = (batch * 64..(batch + 1) * 64)
                    .map(|n| HostId::new(format!("w-{n:07}")).unwrap())
                    .collect();
                let issued = pki.issue_agents_in_memory(&hosts);
                for pair in hosts.into_iter().zip(issued) {
                    if stop.load(Ordering::Relaxed) || credentials_tx.blocking_send(pair).is_err() {
                        return;
                    }
                }
            }
        })
    };
    let credentials_rx = Arc::new(tokio::sync::Mutex::new(credentials_rx));
    let config = TransportConfig {
        handshake_timeout: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    let writer = Arc::new(FailoverWriter {
        base: Connector::new(
            &pki.issue_in_memory(&[pki::agent("w-base")]).pop().unwrap(),
            config,
        )
        .unwrap(),
        addresses: addresses.clone(),
        target: AtomicUsize::new(0),
        silent_until: addresses.iter().map(|_| Default::default()).collect(),
        epoch: Instant::now(),
    });
    let acked: Arc<std::sync::Mutex<Vec<Acked>>> = Arc::default();
    let tickets = Arc::new(AtomicUsize::new(0));
    let stream_started = Instant::now();
    let mut stream = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (writer, acked, tickets, stop, credentials_rx) = (
            writer.clone(),
            acked.clone(),
            tickets.clone(),
            stop.clone(),
            credentials_rx.clone(),
        );
        stream.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A steady rate: the n-th write is due n/rate seconds into the stream.
                let n = tickets.fetch_add(1, Ordering::Relaxed);
                let due = stream_started + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let Some((host, credentials)) = credentials_rx.lock().await.recv().await else {
                    break;
                };
                let done = writer.write(host, &credentials).await;
                acked.lock().unwrap().push(done);
            }
        });
    }

    let mut samples = Vec::with_capacity(kills);
    let mut elections = Vec::with_capacity(kills);
    for round in 0..kills {
        let leader = cluster.leader(&pki, Duration::from_secs(30)).await;
        // Every member healthy, as the leader sees it, and a second of the steady stream before
        // the kill.
        cluster::wait_healthy(&pki, &cluster, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let victim = cluster.index_of(leader.node.get());
        let seen = acked.lock().unwrap().len();
        let killed_at = Instant::now();
        cluster.kill(victim);
        // The first write sent after the kill and acknowledged: the stream flows again.
        let resumed =
            nexus_tests::eventually("a write after the kill", Duration::from_secs(30), || {
                let acked = acked.clone();
                async move {
                    acked.lock().unwrap()[seen..]
                        .iter()
                        .filter(|a| a.sent >= killed_at)
                        .map(|a| a.acked)
                        .min()
                }
            })
            .await;
        samples.push(resumed - killed_at);
        let new_leader = cluster.leader(&pki, Duration::from_secs(30)).await;
        elections.push(new_leader.term - leader.term);
        println!(
            "round {round}: leader {} killed, writes again after {:.0} ms (new leader {}, term +{})",
            leader.node,
            (resumed - killed_at).as_secs_f64() * 1000.0,
            new_leader.node,
            new_leader.term - leader.term
        );
        cluster.restart(&pki, victim).await;
    }
    stop.store(true, Ordering::Relaxed);
    // Writes in flight finish (each until acknowledged); the issuer stops at its next send.
    stream.join_all().await;
    drop(credentials_rx);
    issuer.join().unwrap();
    let stream_seconds = stream_started.elapsed().as_secs_f64();
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    let (at_leader, on_members) = missing_writes(&pki, &cluster, &addresses, &acked).await;
    let mut acks: Vec<Instant> = acked.iter().map(|a| a.acked).collect();
    acks.sort();
    let longest_gap = acks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    Report {
        kill_to_first_write: Percentiles::of(samples),
        terms_per_failover_max: elections.iter().max().copied(),
        stream: Stream {
            writers,
            rate_asked: rate,
            acknowledged: acked.len(),
            writes_per_second: acked.len() as f64 / stream_seconds,
            latency: Percentiles::of(acked.iter().map(|a| a.latency).collect()),
            longest_gap_ms: longest_gap.as_secs_f64() * 1000.0,
        },
        acknowledged_missing_at_leader: at_leader,
        acknowledged_missing_on_members: on_members,
    }
}

/// Counts the acknowledged writes that are missing, none of which may be: at the leader (a
/// linearizable read), and on each member once it has caught up (or after 30 s of trying).
async fn missing_writes(
    pki: &TestPki,
    cluster: &TestCluster,
    addresses: &[SocketAddr],
    acked: &[Acked],
) -> (usize, Vec<usize>) {
    cluster.leader(pki, Duration::from_secs(30)).await;
    cluster::wait_healthy(pki, cluster, Duration::from_secs(30)).await;
    let missing_of = |hosts: &[HostId]| {
        let present: HashSet<&HostId> = hosts.iter().collect();
        acked.iter().filter(|a| !present.contains(&a.host)).count()
    };
    let at_leader =
        match cluster::admin_to_leader(pki, addresses[0], Request::Admin(AdminRequest::Hosts))
            .await
            .unwrap()
        {
            Response::Hosts(hosts) => {
                let ids: Vec<HostId> = hosts.into_iter().map(|h| h.info.host_id).collect();
                missing_of(&ids)
            }
            other => panic!("unexpected answer {other:?}"),
        };
    let mut on_members = Vec::new();
    for address in addresses {
        let started = Instant::now();
        let missing = loop {
            let missing = missing_of(&cluster::replica_hosts(pki, *address).await.unwrap());
            if missing == 0 || started.elapsed() > Duration::from_secs(30) {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        on_members.push(missing);
    }
    (at_leader, on_members)
}

/// A write of the failover stream that the cluster acknowledged.
#[derive(Debug)]
struct Acked {
    host: HostId,
    /// When the attempt that succeeded was sent.
    sent: Instant,
    acked: Instant,
    /// From the write's first attempt to its acknowledgement.
    latency: Duration,
}

/// The failover scenario's client: writes one at a time until acknowledged, each a host's
/// registration under that host's own certificate (so that every acknowledged write leaves a
/// record of its own to look for afterwards), one request id throughout its retries (so that a
/// retry never applies twice). It sends to the member that last answered, and moves on to the
/// next on any failure, passing over for a while a member that did not answer at all (as a
/// client that knows its cluster does, rather than wait out a dead member's timeout each time).
struct FailoverWriter {
    base: Connector,
    addresses: Vec<SocketAddr>,
    target: AtomicUsize,
    /// Per member: until when (ms after `epoch`) it is passed over.
    silent_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl FailoverWriter {
    async fn write(&self, host: HostId, credentials: &Credentials) -> Acked {
        let connector = self.base.sharing(credentials).unwrap();
        let request_id = RequestId::random();
        let first = Instant::now();
        let mut connection: Option<(usize, Connection)> = None;
        loop {
            let index = self.target.load(Ordering::Relaxed);
            let sent = Instant::now();
            if connection.as_ref().is_none_or(|(at, _)| *at != index) {
                connection = connector
                    .connect(
                        self.addresses[index],
                        "127.0.0.1",
                        &[IdentityKind::Coordinator],
                    )
                    .await
                    .ok()
                    .map(|c| (index, c));
            }
            let result = match &connection {
                // 500 ms per attempt: a healthy write takes about 2 ms.
                Some((_, c)) => {
                    Some(register_once(c, request_id, Duration::from_millis(500)).await)
                }
                None => None,
            };
            if let Some(Ok(())) = result {
                let acked = Instant::now();
                return Acked {
                    host,
                    sent,
                    acked,
                    latency: acked - first,
                };
            }
            let next = match result {
                Some(Err(nexus_protocol::WireError {
                    detail:
                        Some(nexus_protocol::error::ErrorDetail::NotLeader {
                            address: Some(leader),
                            ..
                        }),
                    ..
                })) => self
                    .addresses
                    .iter()
                    .position(|a| a.to_string() == leader)
                    .unwrap_or((index + 1) % self.addresses.len()),
                other => {
                    let now = self.epoch.elapsed().as_millis() as u64;
                    // No connection, or a connection that failed: nobody there.
                    if other.as_ref().is_none_or(|result| {
                        result
                            .as_ref()
                            .is_err_and(|e| e.code == nexus_protocol::ErrorCode::NetworkError)
                    }) {
                        self.silent_until[index].store(now + 2_000, Ordering::Relaxed);
                    }
                    let members = self.addresses.len();
                    (1..=members)
                        .map(|step| (index + step) % members)
                        .find(|m| self.silent_until[*m].load(Ordering::Relaxed) <= now)
                        .unwrap_or((index + 1) % members)
                }
            };
            let _ = self
                .target
                .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
            connection = None;
            // A quick refusal (no leader yet) waits a little rather than spin on the two cores
            // the election needs.
            if sent.elapsed() < Duration::from_millis(10) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                first.elapsed() < Duration::from_secs(60),
                "a write of {host} was not acknowledged within 60 s"
            );
        }
    }
}
