//! The `failover` scenario: three coordinators under a steady stream of writes, the leader killed
//! with SIGKILL again and again; the time until a write sent after the kill is acknowledged, and
//! a check that every acknowledged write is on every member. The stream's client is here too.
//!
//! With `--against etcd`, three etcd members run beside the coordinators from the start, under a
//! stream of their own at the same rate, and the rounds alternate: a Nexus leader killed and
//! measured, then an etcd leader, so that both see the same load from the machine and from each
//! other. The peer's stream, kills and checks are in [`peer`].

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

mod peer;

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
    /// Also a peer, measured in the same run, its rounds alternating with Nexus's.
    #[arg(long, value_enum)]
    pub(crate) against: Option<Peer>,
}

/// The peers the failover scenario runs beside Nexus.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Peer {
    /// Debian's etcd-server: three members on loopback with their default election settings.
    Etcd,
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
    /// The peer measured in the same run, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) against: Option<PeerReport>,
}

/// The peer's failover, measured as Nexus's is, and Nexus's time as a multiple of the peer's.
#[derive(Debug, Serialize)]
pub(crate) struct PeerReport {
    /// The peer and its version, e.g. `etcd 3.4.23`.
    pub(crate) peer: String,
    pub(crate) kill_to_first_write: Percentiles,
    pub(crate) terms_per_failover_max: Option<u64>,
    pub(crate) stream: Stream,
    pub(crate) acknowledged_missing_at_leader: usize,
    pub(crate) acknowledged_missing_on_members: Vec<usize>,
    /// Nexus's kill → next acknowledged write over the peer's (above 1: Nexus is slower).
    pub(crate) ratio_p50: f64,
    pub(crate) ratio_p99: f64,
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
    let mut nexus = NexusSide::start(rate, writers).await;
    let mut etcd = match args.against {
        Some(Peer::Etcd) => Some(peer::EtcdSide::start(rate, writers).await),
        None => None,
    };
    for round in 0..kills {
        nexus.round(round).await;
        if let Some(etcd) = &mut etcd {
            etcd.round(round).await;
        }
    }
    let mut report = nexus.finish().await;
    if let Some(etcd) = etcd {
        let peer = etcd.finish().await;
        report.against = Some(PeerReport {
            ratio_p50: report.kill_to_first_write.p50_ms / peer.kill_to_first_write.p50_ms,
            ratio_p99: report.kill_to_first_write.p99_ms / peer.kill_to_first_write.p99_ms,
            peer: peer.peer,
            kill_to_first_write: peer.kill_to_first_write,
            terms_per_failover_max: peer.terms_per_failover_max,
            stream: peer.stream,
            acknowledged_missing_at_leader: peer.acknowledged_missing_at_leader,
            acknowledged_missing_on_members: peer.acknowledged_missing_on_members,
        });
    }
    report
}

/// A side of the scenario, Nexus's or a peer's, measured the same way.
pub(super) struct Measured {
    pub(super) peer: String,
    pub(super) kill_to_first_write: Percentiles,
    pub(super) terms_per_failover_max: Option<u64>,
    pub(super) stream: Stream,
    pub(super) acknowledged_missing_at_leader: usize,
    pub(super) acknowledged_missing_on_members: Vec<usize>,
}

/// Three coordinators, their stream of writes, and the kills' samples so far.
struct NexusSide {
    pki: Arc<TestPki>,
    cluster: TestCluster,
    addresses: Vec<SocketAddr>,
    stream: WriteStream,
    credentials_rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<(HostId, Credentials)>>>,
    issuer: std::thread::JoinHandle<()>,
    samples: Vec<Duration>,
    elections: Vec<u64>,
}

impl NexusSide {
    async fn start(rate: f64, writers: usize) -> NexusSide {
        let pki = Arc::new(TestPki::new());
        // The stream's hosts never heartbeat: an hour's TTL keeps the leader from marking them
        // down (a burst of writes of its own) in the middle of the measurement.
        let cluster = TestCluster::start(&pki, 3, &["--host-ttl", "3600"]).await;
        cluster.leader(&pki, Duration::from_secs(30)).await;
        let addresses: Vec<SocketAddr> = cluster.members.iter().map(|m| m.address).collect();

        // Each write needs a certificate of its own. A thread issues them ahead of the stream,
        // a few seconds' worth at a time, so signing keeps pace without a burst during an
        // election.
        let (credentials_tx, credentials_rx) =
            tokio::sync::mpsc::channel::<(HostId, Credentials)>((rate * 5.0) as usize + 16);
        let issuing = Arc::new(AtomicBool::new(true));
        let issuer = {
            let pki = pki.clone();
            std::thread::spawn(move || {
                // In batches: each batch loads the CA once.
                for batch in 0usize.. {
                    let hosts: Vec<HostId> = (batch * 64..(batch + 1) * 64)
                        .map(|n| HostId::new(format!("w-{n:07}")).unwrap())
                        .collect();
                    let issued = pki.issue_agents_in_memory(&hosts);
                    for pair in hosts.into_iter().zip(issued) {
                        if !issuing.load(Ordering::Relaxed)
                            || credentials_tx.blocking_send(pair).is_err()
                        {
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
        let stream = {
            let credentials_rx = credentials_rx.clone();
            WriteStream::start(rate, writers, move |_| {
                let (writer, credentials_rx) = (writer.clone(), credentials_rx.clone());
                async move {
                    let (host, credentials) = credentials_rx.lock().await.recv().await?;
                    Some(writer.write(host, &credentials).await)
                }
            })
        };
        NexusSide {
            pki,
            cluster,
            addresses,
            stream,
            credentials_rx,
            issuer,
            samples: Vec::new(),
            elections: Vec::new(),
        }
    }

    async fn round(&mut self, round: usize) {
        let pki = &self.pki;
        let leader = self.cluster.leader(pki, Duration::from_secs(30)).await;
        // Every member healthy, as the leader sees it, and a second of the steady stream before
        // the kill.
        cluster::wait_healthy(pki, &self.cluster, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let victim = self.cluster.index_of(leader.node.get());
        let cluster = &mut self.cluster;
        let took = self.stream.time_a_kill(|| cluster.kill(victim)).await;
        self.samples.push(took);
        let new_leader = self.cluster.leader(pki, Duration::from_secs(30)).await;
        self.elections.push(new_leader.term - leader.term);
        println!(
            "round {round}: leader {} killed, writes again after {:.0} ms (new leader {}, term +{})",
            leader.node,
            took.as_secs_f64() * 1000.0,
            new_leader.node,
            new_leader.term - leader.term
        );
        self.cluster.restart(pki, victim).await;
    }

    async fn finish(self) -> Report {
        let (stream, acked) = self.stream.stop().await;
        // The issuer stops at its next send, the channel gone.
        drop(self.credentials_rx);
        self.issuer.join().unwrap();
        let (at_leader, on_members) =
            missing_writes(&self.pki, &self.cluster, &self.addresses, &acked).await;
        Report {
            kill_to_first_write: Percentiles::of(self.samples),
            terms_per_failover_max: self.elections.iter().max().copied(),
            stream,
            acknowledged_missing_at_leader: at_leader,
            acknowledged_missing_on_members: on_members,
            against: None,
        }
    }
}

/// A steady stream of writes from `writers` tasks at `rate` a second, each write until it is
/// acknowledged, and the acknowledgements as they came.
pub(super) struct WriteStream {
    acked: Arc<std::sync::Mutex<Vec<Acked>>>,
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    started: Instant,
    writers: usize,
    rate: f64,
}

impl WriteStream {
    /// Starts the stream; `write(n)` makes the n-th write and answers it once acknowledged
    /// (`None`: there are no more writes to make).
    pub(super) fn start<W, F>(rate: f64, writers: usize, write: W) -> WriteStream
    where
        W: Fn(usize) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Option<Acked>> + Send,
    {
        let acked: Arc<std::sync::Mutex<Vec<Acked>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tickets = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..writers {
            let (acked, tickets, stop, write) =
                (acked.clone(), tickets.clone(), stop.clone(), write.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // A steady rate: the n-th write is due n/rate seconds into the stream.
                    let n = tickets.fetch_add(1, Ordering::Relaxed);
                    let due = started + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let Some(done) = write(n).await else {
                        break;
                    };
                    acked.lock().unwrap().push(done);
                }
            });
        }
        WriteStream {
            acked,
            stop,
            tasks,
            started,
            writers,
            rate,
        }
    }

    /// Kills (with `kill`) and answers the time until the first write sent after the kill was
    /// acknowledged: the stream flows again.
    pub(super) async fn time_a_kill(&self, kill: impl FnOnce()) -> Duration {
        let seen = self.acked.lock().unwrap().len();
        let killed_at = Instant::now();
        kill();
        let resumed =
            nexus_tests::eventually("a write after the kill", Duration::from_secs(30), || {
                let acked = self.acked.clone();
                async move {
                    acked.lock().unwrap()[seen..]
                        .iter()
                        .filter(|a| a.sent >= killed_at)
                        .map(|a| a.acked)
                        .min()
                }
            })
            .await;
        resumed - killed_at
    }

    /// Stops the stream once the writes in flight are acknowledged: its numbers, and every
    /// acknowledged write.
    pub(super) async fn stop(self) -> (Stream, Vec<Acked>) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.join_all().await;
        let seconds = self.started.elapsed().as_secs_f64();
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let mut acks: Vec<Instant> = acked.iter().map(|a| a.acked).collect();
        acks.sort();
        let longest_gap = acks
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let stream = Stream {
            writers: self.writers,
            rate_asked: self.rate,
            acknowledged: acked.len(),
            writes_per_second: acked.len() as f64 / seconds,
            latency: Percentiles::of(acked.iter().map(|a| a.latency).collect()),
            longest_gap_ms: longest_gap.as_secs_f64() * 1000.0,
        };
        (stream, acked)
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
        let present: HashSet<&str> = hosts.iter().map(HostId::as_str).collect();
        acked
            .iter()
            .filter(|a| !present.contains(a.key.as_str()))
            .count()
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

/// A write of a failover stream that the cluster acknowledged.
#[derive(Debug)]
pub(super) struct Acked {
    /// What it wrote: a host's id (Nexus), a key (a peer).
    pub(super) key: String,
    /// When the attempt that succeeded was sent.
    pub(super) sent: Instant,
    pub(super) acked: Instant,
    /// From the write's first attempt to its acknowledgement.
    pub(super) latency: Duration,
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
                    key: host.to_string(),
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
