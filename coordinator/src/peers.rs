//! The other coordinators, as this one reaches them: the address book, one cached QUIC connection
//! per peer, and two sender tasks per peer that batch the Raft messages queued for it: one for
//! the log's messages, one for heartbeats and votes, so that an append or snapshot of tens of
//! megabytes in flight does not hold back the heartbeats (the peer would start an election).
//!
//! Sending never blocks the Raft driver: [`Peers::send`] only queues (a full queue drops the
//! message, which Raft tolerates and repairs). The sender tasks report each failed batch, and the
//! fate of each snapshot, as a [`Delivery`] on the channel [`Peers::new`] returns; the driver
//! reads it and tells Raft (`report_unreachable`, `report_snapshot`) so replication to that peer
//! resumes instead of stalling. This module knows nothing of the driver beyond that channel.
//!
//! Every connection is checked to end at the coordinator it was meant for: an address that answers
//! with another node's certificate is refused, so a stale address book cannot cross-wire nodes.
//!
//! A request whose encoding is larger than a piece ([`chunks::chunk_size`] of the frame limit,
//! 4 MiB by default) travels in pieces (`PeerRequest::Chunk`), in order on one connection, one
//! such transfer at a time per peer; the last piece is answered as the whole request is. So a
//! Raft snapshot of a large state, a batch of large entries and a forwarded proposal carrying a
//! whole state all reach the peer, whatever the frame limit. The receiving side is
//! `service::peers`, which assembles them with [`chunks::Assembler`].

pub mod chunks;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nexus_protocol::codec;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, IdentityKind};
use nexus_protocol::message::{PeerRequest, Request, Response};
use nexus_protocol::transport::{self, Connection, Connector};
use nexus_protocol::{NodeId, RequestId};
use nexus_telemetry::Gauges;
use tokio::sync::mpsc;

use crate::consensus::{self, RaftMessage, carries_snapshot};
use crate::locks::{lock, read, write};
use crate::state::Proposal;

/// Messages queued for one peer before new ones are dropped.
const QUEUE: usize = 4096;
/// Messages sent in one request.
const BATCH: usize = 256;
/// The pause after a failed batch, so a dead peer costs little.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a peer's Raft batches may all go unanswered before its connection counts as gone
/// and is made anew. Not at the first late batch: a peer busy with a storm of agents'
/// handshakes answers late, and a new connection would wait behind those handshakes (followers
/// that reconnected so at their first late batch lost a leader its quorum in half the fleet-ups
/// of 5,000 hosts). Not much longer either: a paused or cut-off peer's connection holds streams
/// it will never answer, and the election timeout is 1 s.
const GONE_AFTER: Duration = Duration::from_secs(1);
/// A round trip measured longer ago than this is no longer shown: a follower sends only to its
/// leader, so what it measured to the others while it led (or campaigned) would stay.
const RTT_SHOWN_FOR: Duration = Duration::from_secs(30);

/// A sender task's report on what it sent to `to`: a batch that was not delivered
/// (`snapshot: false, delivered: false`), or the fate of one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub to: NodeId,
    pub snapshot: bool,
    pub delivered: bool,
}

/// The address book and the senders.
pub struct Peers {
    me: NodeId,
    connector: Connector,
    /// A Raft batch's deadline (a snapshot, or a batch sent in pieces, may take longer: see
    /// `snapshot_timeout`).
    timeout: Duration,
    /// The deadline of each piece of a request sent in pieces, and of a Raft batch that is sent
    /// so (a snapshot's last piece is answered once the peer has decoded and queued it).
    snapshot_timeout: Duration,
    /// Requests larger than this many bytes travel in pieces of this size.
    chunk_size: usize,
    /// Held while a request travels in pieces to a peer: one such transfer at a time per peer,
    /// as the receiver assembles one per sender.
    transfers: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Members with a probe in flight: the driver asks every tick while a leader is silent, and
    /// a probe may wait longer than a tick.
    probing: Mutex<std::collections::HashSet<NodeId>>,
    addresses: RwLock<BTreeMap<NodeId, String>>,
    connections: Mutex<HashMap<NodeId, Connection>>,
    /// One queue and sender task per peer and lane: `true` for control messages (heartbeats,
    /// votes; see [`consensus::is_control`]), `false` for the log's (appends, snapshots).
    queues: Mutex<HashMap<(NodeId, bool), mpsc::Sender<RaftMessage>>>,
    reports: mpsc::Sender<Delivery>,
    runtime: tokio::runtime::Handle,
    /// Each peer's last round trip of a batch (`nexus_peer_rtt_seconds{peer}`).
    rtt: Gauges<1>,
    /// When each peer's round trip shown was measured.
    measured: Mutex<HashMap<NodeId, Instant>>,
    /// Since when each late peer's Raft batches have gone unanswered ([`GONE_AFTER`]).
    late: Mutex<Lateness>,
}

/// Since when each peer's requests have gone unanswered: whether its connection counts as gone.
/// Each late peer's first and last unanswered request's sending.
#[derive(Debug, Default)]
struct Lateness(HashMap<NodeId, (Instant, Instant)>);

impl Lateness {
    /// `to` answered, or its connection is new: it is not late.
    fn answered(&mut self, to: NodeId) {
        self.0.remove(&to);
    }

    /// A request sent to `to` at `sent` went unanswered; whether, as of `now`, `to` has answered
    /// nothing for [`GONE_AFTER`] (and is forgotten, to be counted afresh on a new connection).
    /// A run of late requests that ended [`GONE_AFTER`] before this one was sent (nothing was
    /// sent to `to` meanwhile, as when this node stopped leading) does not count.
    fn unanswered(&mut self, to: NodeId, sent: Instant, now: Instant) -> bool {
        let (since, last) = self.0.entry(to).or_insert((sent, sent));
        if sent.saturating_duration_since(*last) >= GONE_AFTER {
            *since = sent;
        }
        *last = sent;
        let gone = now.saturating_duration_since(*since) >= GONE_AFTER;
        if gone {
            self.0.remove(&to);
        }
        gone
    }
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.me)
            .field("addresses", &*read(&self.addresses))
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// `addresses` are the founders' (from the configuration); members added later are learned
    /// with [`Peers::learn`]. Sender tasks run on `runtime`, and set each delivered batch's round
    /// trip in `rtt`, by peer. Requests larger than a piece sized for `max_frame_len` (the
    /// connections' frame limit) travel in pieces. The receiver yields the senders' reports, for
    /// whoever drives Raft.
    pub fn new(
        me: NodeId,
        connector: Connector,
        addresses: BTreeMap<NodeId, String>,
        timeout: Duration,
        max_frame_len: usize,
        runtime: tokio::runtime::Handle,
        rtt: Gauges<1>,
    ) -> (Arc<Peers>, mpsc::Receiver<Delivery>) {
        let (reports, deliveries) = mpsc::channel(QUEUE);
        let peers = Arc::new(Peers {
            me,
            connector,
            timeout,
            snapshot_timeout: timeout.max(Duration::from_secs(30)),
            chunk_size: chunks::chunk_size(max_frame_len),
            transfers: Mutex::default(),
            probing: Mutex::default(),
            addresses: RwLock::new(addresses),
            connections: Mutex::default(),
            queues: Mutex::default(),
            reports,
            runtime,
            rtt,
            measured: Mutex::default(),
            late: Mutex::default(),
        });
        (peers, deliveries)
    }

    /// A member's address, if known.
    pub fn address(&self, node: NodeId) -> Option<String> {
        read(&self.addresses).get(&node).cloned()
    }

    /// Every known address.
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        read(&self.addresses).clone()
    }

    /// Adds addresses learned from applied membership changes (they win over the configuration:
    /// they are what the cluster agreed on).
    pub fn learn(&self, learned: &BTreeMap<NodeId, String>) {
        let mut addresses = write(&self.addresses);
        for (node, address) in learned {
            if addresses.get(node) != Some(address) {
                tracing::info!(node = %node, %address, "learned a member's address");
                addresses.insert(*node, address.clone());
                lock(&self.connections).remove(node);
            }
        }
    }

    /// Forgets every peer outside `members` (this node aside): its queues (their sender tasks
    /// end once what is queued is sent or has failed), its connection and its round-trip series.
    /// A member removed from the cluster is sent nothing more (or only answers, while it still
    /// runs), so its last `nexus_peer_rtt_seconds` would otherwise stay until the process
    /// restarts. And stops showing round trips measured over [`RTT_SHOWN_FOR`] ago. Cheap enough
    /// for every tick: a few entries.
    pub fn tidy(&self, members: &BTreeSet<NodeId>) {
        let gone = |node: &NodeId| *node != self.me && !members.contains(node);
        let mut forgotten = BTreeSet::new();
        lock(&self.queues).retain(|(node, _), _| {
            if gone(node) {
                forgotten.insert(*node);
                return false;
            }
            true
        });
        lock(&self.connections).retain(|node, _| !gone(node));
        for node in &forgotten {
            tracing::debug!(peer = %node, "forgot a peer that is no longer a member");
        }
        let now = Instant::now();
        let mut measured = lock(&self.measured);
        measured.retain(|node, at| {
            let keep = !forgotten.contains(node) && now.duration_since(*at) <= RTT_SHOWN_FOR;
            if !keep {
                self.rtt.remove([&node.to_string()]);
            }
            keep
        });
        for node in forgotten {
            self.rtt.remove([&node.to_string()]);
        }
    }

    /// Shows `to`'s round trip (`None`: none to show, the peer cannot be reached).
    fn show_rtt(&self, to: NodeId, took: Option<Duration>) {
        let mut measured = lock(&self.measured);
        match took {
            Some(took) => {
                measured.insert(to, Instant::now());
                self.rtt.set([&to.to_string()], took.as_secs_f64());
            }
            None => {
                measured.remove(&to);
                self.rtt.remove([&to.to_string()]);
            }
        }
    }

    /// Queues a message for its recipient. False if it could not be queued (no such recipient, a
    /// full queue): the caller tells Raft.
    pub fn send(self: &Arc<Self>, message: RaftMessage) -> bool {
        let Ok(to) = NodeId::new(message.to) else {
            return false;
        };
        let control = consensus::is_control(&message);
        let mut queues = lock(&self.queues);
        let queue = queues.entry((to, control)).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            self.runtime.spawn(self.clone().pump(to, receiver));
            sender
        });
        queue.try_send(message).is_ok()
    }

    /// Probes `to`'s address in the background and sends `to` on `refused` if nothing listens
    /// there any more ([`refused`]). Unknown members are not probed, nor one whose last probe
    /// is still waiting.
    pub fn probe(self: &Arc<Self>, to: NodeId, refused: mpsc::Sender<NodeId>) {
        let Some(address) = self.address(to) else {
            return;
        };
        if !lock(&self.probing).insert(to) {
            return;
        }
        let peers = self.clone();
        self.runtime.spawn(async move {
            let gone = self::refused(&address).await;
            lock(&peers.probing).remove(&to);
            if gone {
                let _ = refused.try_send(to);
            }
        });
    }

    /// Sends what is queued for `to`, a batch at a time, until the queue is dropped.
    async fn pump(self: Arc<Self>, to: NodeId, mut queue: mpsc::Receiver<RaftMessage>) {
        let mut failing = false;
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            let snapshots = batch.iter().filter(|m| carries_snapshot(m)).count();
            // A batch that opens the connection takes its handshake too: not a round trip.
            let connected = lock(&self.connections).contains_key(&to);
            let started = Instant::now();
            let result = self.deliver(to, &batch, snapshots > 0).await;
            if result.is_err() {
                // No round trip to show while the peer cannot be reached.
                self.show_rtt(to, None);
            } else if snapshots == 0 && connected {
                self.show_rtt(to, Some(started.elapsed()));
            }
            match &result {
                Ok(()) if failing => {
                    tracing::info!(peer = %to, "reaching the peer again");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    tracing::warn!(peer = %to, code = %error.code, "cannot reach the peer: {}", error.message);
                    failing = true;
                }
                Err(error) => {
                    tracing::debug!(peer = %to, "still cannot reach the peer: {}", error.message)
                }
            }
            let delivered = result.is_ok();
            if !delivered {
                let _ = self
                    .reports
                    .send(Delivery {
                        to,
                        snapshot: false,
                        delivered,
                    })
                    .await;
            }
            for _ in 0..snapshots {
                let _ = self
                    .reports
                    .send(Delivery {
                        to,
                        snapshot: true,
                        delivered,
                    })
                    .await;
            }
            if !delivered {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        // Forgotten ([`Peers::tidy`]): a batch under way then may have set a round trip.
        self.show_rtt(to, None);
    }

    async fn deliver(
        &self,
        to: NodeId,
        batch: &[RaftMessage],
        has_snapshot: bool,
    ) -> Result<(), WireError> {
        let encoded = batch
            .iter()
            .map(consensus::encode_message)
            .collect::<Result<Vec<_>, _>>()?;
        let large = encoded.iter().map(Vec::len).sum::<usize>() > self.chunk_size;
        let limit = if has_snapshot || large {
            self.snapshot_timeout
        } else {
            self.timeout
        };
        let request = PeerRequest::Raft(encoded);
        // A Raft batch is answered as soon as the peer has queued it: no answer for a while
        // ([`GONE_AFTER`]) means the connection (or the peer) is gone.
        match self
            .carry(to, RequestId::random(), request, limit, true)
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Hands a client's write to the leader and waits for its outcome (the leader answers once it
    /// is applied, or with the rejection).
    pub async fn forward(
        &self,
        leader: NodeId,
        proposal: &Proposal,
        limit: Duration,
    ) -> Result<(), WireError> {
        let bytes = consensus::encode_forwarded(proposal)?;
        let request = PeerRequest::Propose(bytes);
        // A forward is answered once the write is applied: running out of time says nothing of
        // the connection, which Raft's own traffic keeps using.
        match self
            .carry(leader, proposal.request_id, request, limit, false)
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The newest version of log entries member `to` applies ([`PeerRequest::EntryVersion`]).
    pub async fn entry_version(&self, to: NodeId, limit: Duration) -> Result<u32, WireError> {
        let request = PeerRequest::EntryVersion;
        entry_version(
            self.carry(to, RequestId::random(), request, limit, false)
                .await,
        )
    }

    /// [`Peers::entry_version`] of coordinator `to` at `address`, on a connection of its own:
    /// asked before it is added to the cluster.
    pub async fn entry_version_at(
        &self,
        to: NodeId,
        address: &str,
        limit: Duration,
    ) -> Result<u32, WireError> {
        let connection = self.connect(to, address).await?;
        let request = Request::Peer(PeerRequest::EntryVersion);
        let answer = connection
            .request_with(RequestId::random(), request, limit)
            .await;
        connection.close();
        entry_version(answer)
    }

    /// Sends `request` to `to` and answers its answer: whole if its encoding fits in a piece,
    /// else in pieces on one connection, each but the last within `snapshot_timeout`, the last
    /// (answered as the whole request) within `limit`.
    async fn carry(
        &self,
        to: NodeId,
        request_id: RequestId,
        request: PeerRequest,
        limit: Duration,
        timeout_means_gone: bool,
    ) -> Result<Response, WireError> {
        let bytes = codec::encode_payload(&request).map_err(|e| e.to_wire())?;
        if bytes.len() <= self.chunk_size {
            let connection = self.connection(to).await?;
            let request = Request::Peer(request);
            return self
                .request(
                    to,
                    &connection,
                    request_id,
                    request,
                    limit,
                    timeout_means_gone,
                )
                .await;
        }
        drop(request);
        let turn = lock(&self.transfers).entry(to).or_default().clone();
        let _turn = turn.lock().await;
        let connection = self.connection(to).await?;
        let transfer = nexus_protocol::id::random_u64();
        let total = bytes.len() as u64;
        tracing::debug!(peer = %to, transfer, total, "sending a request in pieces");
        for (offset, piece) in chunks::split(&bytes, self.chunk_size) {
            let last = offset + piece.len() as u64 == total;
            let chunk = Request::Peer(PeerRequest::Chunk {
                transfer,
                offset,
                total,
                bytes: piece.to_vec(),
            });
            let within = if last { limit } else { self.snapshot_timeout };
            let answer = self
                .request(
                    to,
                    &connection,
                    request_id,
                    chunk,
                    within,
                    timeout_means_gone,
                )
                .await?;
            match answer {
                answer if last => return Ok(answer),
                Response::Ack => {}
                other => return Err(unexpected(&other)),
            }
        }
        Err(WireError::new(
            ErrorCode::Internal,
            "a request in pieces had no last piece",
        ))
    }

    async fn request(
        &self,
        to: NodeId,
        connection: &Connection,
        request_id: RequestId,
        request: Request,
        limit: Duration,
        timeout_means_gone: bool,
    ) -> Result<Response, WireError> {
        let result = connection.request_with(request_id, request, limit).await;
        let gone = match &result {
            Ok(_) => {
                lock(&self.late).answered(to);
                false
            }
            Err(error) if error.code == ErrorCode::NetworkError => true,
            Err(error) if timeout_means_gone && error.code == ErrorCode::Timeout => {
                let now = Instant::now();
                let sent = now.checked_sub(limit).unwrap_or(now);
                lock(&self.late).unanswered(to, sent, now)
            }
            Err(_) => false,
        };
        if gone {
            // The next request reconnects. Only this connection is forgotten: another task may
            // have replaced it with a working one meanwhile.
            let mut connections = lock(&self.connections);
            if connections
                .get(&to)
                .is_some_and(|c| c.id() == connection.id())
            {
                connections.remove(&to);
            }
        }
        result
    }

    async fn connection(&self, to: NodeId) -> Result<Connection, WireError> {
        if let Some(connection) = lock(&self.connections).get(&to) {
            return Ok(connection.clone());
        }
        let address = self.address(to).ok_or_else(|| {
            WireError::new(
                ErrorCode::InvalidArgument,
                format!("no address is known for coordinator {to}"),
            )
        })?;
        let connection = self.connect(to, &address).await?;
        lock(&self.connections).insert(to, connection.clone());
        lock(&self.late).answered(to);
        Ok(connection)
    }

    /// A new connection to coordinator `to` at `address`, refused unless it answers as `to`.
    async fn connect(&self, to: NodeId, address: &str) -> Result<Connection, WireError> {
        let (socket, server_name) = transport::resolve(address).await?;
        let connection = self
            .connector
            .connect(socket, &server_name, &[IdentityKind::Coordinator])
            .await?;
        let expected = Identity::Coordinator(to);
        if connection.server() != &expected {
            let error = WireError::new(
                ErrorCode::AuthenticationFailed,
                format!(
                    "{address} answers as {}, not {expected}: check the peer addresses",
                    connection.server()
                ),
            );
            connection.close();
            return Err(error);
        }
        Ok(connection)
    }
}

/// A member's answer to [`PeerRequest::EntryVersion`]: a build from before the question
/// answers `PROTOCOL_ERROR`, and applies version 1.
fn entry_version(answer: Result<Response, WireError>) -> Result<u32, WireError> {
    match answer {
        Ok(Response::EntryVersion(version)) => Ok(version),
        Ok(other) => Err(unexpected(&other)),
        Err(error) if error.code == ErrorCode::ProtocolError => Ok(1),
        Err(error) => Err(error),
    }
}

/// Whether the member at `address` (HOST:PORT) refuses a datagram: its host is up and nothing
/// listens there any more, as when its process has crashed ([`transport::probe`]).
pub async fn refused(address: &str) -> bool {
    match tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut found| found.next())
    {
        Some(target) => transport::probe::refused(target).await,
        None => false,
    }
}

fn unexpected(response: &Response) -> WireError {
    WireError::new(
        ErrorCode::ProtocolError,
        format!("a peer answered with an unexpected {response:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_gone_once_it_answered_nothing_for_a_while_not_at_its_first_late_answer() {
        let (one, two) = (NodeId::new(1).unwrap(), NodeId::new(2).unwrap());
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut late = Lateness::default();
        // Batches sent every 300 ms, each unanswered at its deadline.
        assert!(!late.unanswered(one, at(0), at(300)));
        assert!(!late.unanswered(one, at(300), at(600)));
        assert!(!late.unanswered(one, at(600), at(900)));
        // Another peer's lateness is its own.
        assert!(!late.unanswered(two, at(800), at(1_100)));
        assert!(late.unanswered(one, at(900), at(1_200)));
        // Counted afresh after: the next connection gets its own second.
        assert!(!late.unanswered(one, at(1_200), at(1_500)));
        // An answer between late batches means the peer is busy, not gone.
        late.answered(one);
        assert!(!late.unanswered(one, at(1_800), at(2_100)));
        assert!(!late.unanswered(one, at(2_400), at(2_700)));
        // Nothing sent for a while (this node stopped leading): an old run does not count.
        assert!(!late.unanswered(one, at(9_000), at(9_300)));
        assert!(!late.unanswered(one, at(9_300), at(9_600)));
    }
}
