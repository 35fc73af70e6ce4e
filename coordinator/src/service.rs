//! The coordinator's request handler: who may ask what, and the answers.
//!
//! Writes go through Raft ([`Cluster::propose`]; a follower forwards them to the leader) and are
//! answered once applied. Reads are linearizable (ReadIndex) unless the client asks for a stale
//! read. Heartbeats and host stats are soft state in this process's memory, never in the Raft log:
//! agents send them every few seconds, so losing them loses nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::{Identity, IdentityKind, Role};
use nexus_protocol::message::{
    AdminRequest, AgentRequest, ClusterStatus, DesiredRun, FleetStats, HostLimits, HostView,
    LimitsView, MemberRole, MemberView, ObservedWorkspace, PeerRequest, Pong, PortAllocation,
    Request, Response, StaleRead, WorkspaceDetail, WorkspaceRequest, WorkspaceUsage,
};
use nexus_protocol::model::{
    ContainerStats, HostStats, HostStatus, WorkspaceSpec, WorkspaceState, WorkspaceView,
};
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};

use crate::cluster::{Cluster, Consistency, NodeView};
use crate::consensus;
use crate::detector::{self, Decision, Memory, Policy};
use crate::locks::lock;
use crate::placer::Placer;
use crate::scheduler::{Scoring, is_in_flight};
use crate::state::{Command, PlaceRequest, State, WorkspaceRecord};

/// How long a membership change or leader transfer may take before it is answered `TIMEOUT`.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// A host's latest heartbeat, as this coordinator received it.
#[derive(Debug, Clone)]
struct Liveness {
    at: Timestamp,
    stats: Option<HostStats>,
    /// The latest sample of each workspace container on the host.
    containers: Vec<ContainerStats>,
}

/// How often a desired-state watch checks that a newer watch has not replaced it. It also wakes
/// when its host's desired state changes and when this node's leadership does: a watch on a
/// node that lost the lead ends with `NOT_LEADER`, naming the new leader, and the agent moves
/// there.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

/// At most this many entries in one report or stats message: a host holds 50 workspaces by
/// default, so more is a confused or hostile agent.
const MAX_ENTRIES: usize = 1_000;

#[derive(Debug)]
pub struct Service {
    identity: Identity,
    cluster: Cluster,
    liveness: Mutex<BTreeMap<HostId, Liveness>>,
    /// The newest desired-state watch of each host: a new watch replaces the host's older one.
    watches: Arc<Mutex<BTreeMap<HostId, u64>>>,
    /// Creates go through it, batched into shared log entries.
    placer: Placer,
    /// Where each host's agent serves logs and exec, as it last said (soft state, like
    /// heartbeats: an agent says it again to every new leader).
    endpoints: Mutex<BTreeMap<HostId, String>>,
    watch_numbers: std::sync::atomic::AtomicU64,
    /// How long a host may be silent before the leader marks it down.
    host_ttl: Duration,
}

impl Service {
    /// Must be called within the Tokio runtime (it starts the placement task).
    pub fn new(identity: Identity, cluster: Cluster) -> Service {
        let placer = Placer::start(cluster.clone());
        Service {
            identity,
            cluster,
            liveness: Mutex::new(BTreeMap::new()),
            watches: Arc::new(Mutex::new(BTreeMap::new())),
            placer,
            endpoints: Mutex::new(BTreeMap::new()),
            watch_numbers: std::sync::atomic::AtomicU64::new(1),
            host_ttl: detector::DEFAULT_HOST_TTL,
        }
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, BTreeMap<HostId, Liveness>> {
        lock(&self.liveness)
    }

    /// Answers one request from `peer`.
    pub async fn answer(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: Request,
    ) -> Result<Response, WireError> {
        match request {
            Request::Ping => Ok(Response::Pong(Pong {
                software: nexus_protocol::SOFTWARE_VERSION.into(),
                server: self.identity.clone(),
                client: peer.identity.clone(),
                time: clock::now(),
            })),
            Request::Agent(request) => self.agent(peer, request_id, request).await,
            Request::Admin(request) => {
                self.admin(peer, request_id, request, Consistency::Linearizable)
                    .await
            }
            Request::Stale(StaleRead::Admin(request)) => {
                self.admin(peer, request_id, request, Consistency::Stale)
                    .await
            }
            Request::Peer(request) => self.peer(peer, request_id, request).await,
            Request::Workspace(request) => {
                self.workspace(peer, request_id, request, Consistency::Linearizable)
                    .await
            }
            Request::Stale(StaleRead::Workspace(request)) => {
                self.workspace(peer, request_id, request, Consistency::Stale)
                    .await
            }
            Request::Host(_) => Err(WireError::new(
                ErrorCode::InvalidArgument,
                "logs and exec are served by the workspace's agent, not by a coordinator",
            )),
        }
    }

    async fn admin(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        require(peer, &[IdentityKind::Admin, IdentityKind::Coordinator])?;
        let write = matches!(
            request,
            AdminRequest::ClusterAdd { .. }
                | AdminRequest::ClusterRemove(_)
                | AdminRequest::TransferLeader(_)
                | AdminRequest::SetHostStatus { .. }
                | AdminRequest::SetLimits { .. }
        );
        if consistency == Consistency::Stale && write {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "only reads may be stale; send the change without --stale",
            ));
        }
        match request {
            AdminRequest::Hosts => {
                let liveness = self.liveness().clone();
                let hosts = self
                    .cluster
                    .read(consistency, move |state| host_views(state, &liveness))
                    .await?;
                Ok(Response::Hosts(hosts))
            }
            AdminRequest::Status => Ok(Response::ClusterStatus(self.status().await?)),
            AdminRequest::ClusterAdd { id, address } => {
                nexus_protocol::transport::resolve(&address).await?;
                self.cluster
                    .add_member(id, address, MEMBERSHIP_TIMEOUT)
                    .await?;
                Ok(Response::ClusterStatus(self.status().await?))
            }
            AdminRequest::ClusterRemove(id) => {
                self.cluster.remove_member(id, MEMBERSHIP_TIMEOUT).await?;
                Ok(Response::ClusterStatus(self.status().await?))
            }
            AdminRequest::TransferLeader(to) => {
                self.cluster.transfer_leader(to, MEMBERSHIP_TIMEOUT).await?;
                Ok(Response::ClusterStatus(self.status().await?))
            }
            AdminRequest::SetHostStatus { host, status } => {
                if status == HostStatus::Down {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "a host is marked down by the failure detector, not by hand; cordon it",
                    ));
                }
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::SetHostStatus { host, status },
                    )
                    .await?;
                let liveness = self.liveness().clone();
                let hosts = self
                    .cluster
                    .read(Consistency::Linearizable, move |state| {
                        host_views(state, &liveness)
                    })
                    .await?;
                Ok(Response::Hosts(hosts))
            }
            AdminRequest::Ports => {
                let ports = self
                    .cluster
                    .read(consistency, |state| {
                        state
                            .ports()
                            .iter()
                            .map(|((host, port), workspace)| PortAllocation {
                                host: host.clone(),
                                port: *port,
                                workspace: workspace.clone(),
                                container: state.workspaces().get(workspace).and_then(|w| {
                                    w.ports
                                        .iter()
                                        .find(|b| b.host == *port)
                                        .map(|b| b.container)
                                }),
                            })
                            .collect()
                    })
                    .await?;
                Ok(Response::Ports(ports))
            }
            AdminRequest::Limits => Ok(Response::Limits(
                self.cluster.read(consistency, limits_view).await?,
            )),
            AdminRequest::SetLimits { host, patch } => {
                if patch.is_empty() {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "no limit given; `nexus admin limits set --help` lists them",
                    ));
                }
                patch
                    .check()
                    .map_err(|why| WireError::new(ErrorCode::InvalidArgument, why))?;
                if host.is_some() && patch.scoring.is_some() {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "scoring chooses between hosts, so it is cluster-wide; drop --host",
                    ));
                }
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::SetLimits { host, patch },
                    )
                    .await?;
                Ok(Response::Limits(
                    self.cluster
                        .read(Consistency::Linearizable, limits_view)
                        .await?,
                ))
            }
            AdminRequest::Stats => Ok(Response::FleetStats(
                self.cluster.read(consistency, fleet_stats).await?,
            )),
            AdminRequest::Endpoints => {
                self.cluster.require_leader().await?;
                let endpoints = lock(&self.endpoints)
                    .iter()
                    .map(|(host, address)| (host.clone(), address.clone()))
                    .collect();
                Ok(Response::Endpoints(endpoints))
            }
            AdminRequest::Top => {
                // Samples live on the leader (agents send them there).
                if consistency == Consistency::Linearizable {
                    self.cluster.require_leader().await?;
                }
                let samples: Vec<(HostId, ContainerStats)> = self
                    .liveness()
                    .iter()
                    .flat_map(|(host, live)| {
                        live.containers.iter().map(|c| (host.clone(), c.clone()))
                    })
                    .collect();
                let usage = self
                    .cluster
                    .read(consistency, move |state| {
                        samples
                            .into_iter()
                            .map(|(host, stats)| WorkspaceUsage {
                                owner: stats
                                    .workspace
                                    .as_ref()
                                    .and_then(|name| state.workspaces().get(name))
                                    .map(|w| w.owner.clone()),
                                host,
                                stats,
                            })
                            .collect()
                    })
                    .await?;
                Ok(Response::Usage(usage))
            }
        }
    }

    /// The cluster as this node sees it.
    pub async fn status(&self) -> Result<ClusterStatus, WireError> {
        let view = self.cluster.view().await?;
        Ok(cluster_status(
            &view,
            &self.cluster.peers().addresses(),
            self.cluster.config().health_window(),
        ))
    }

    async fn peer(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: PeerRequest,
    ) -> Result<Response, WireError> {
        let Identity::Coordinator(from) = peer.identity else {
            return Err(denied(peer, "only coordinators of this cluster speak Raft"));
        };
        match request {
            PeerRequest::Raft(batch) => {
                let mut messages = Vec::with_capacity(batch.len());
                for bytes in &batch {
                    let message = consensus::decode_message(bytes).inspect_err(|error| {
                        tracing::warn!(peer = %from, "dropped a corrupt raft message: {}", error.message);
                    })?;
                    if message.from != from.get() || message.to != self.cluster.id().get() {
                        tracing::warn!(
                            peer = %from,
                            claimed_from = message.from,
                            to = message.to,
                            "dropped a raft message that does not match its sender's certificate or is not for this node"
                        );
                        return Err(denied(
                            peer,
                            &format!(
                                "a raft message from node {} to node {} arrived from {} at node {}",
                                message.from,
                                message.to,
                                peer.identity,
                                self.cluster.id()
                            ),
                        ));
                    }
                    consensus::check_peer_message(&message).inspect_err(|error| {
                        tracing::warn!(peer = %from, "dropped a raft message: {}", error.message);
                    })?;
                    messages.push(message);
                }
                self.cluster.step(from, messages).await?;
                Ok(Response::Ack)
            }
            PeerRequest::Propose(bytes) => {
                let proposal = consensus::decode_forwarded(&bytes).map_err(|error| {
                    WireError::new(
                        ErrorCode::ProtocolError,
                        format!("a corrupt forwarded proposal: {error}"),
                    )
                })?;
                if proposal.request_id != request_id {
                    return Err(WireError::new(
                        ErrorCode::ProtocolError,
                        "a forwarded proposal must travel under its own request id",
                    ));
                }
                self.cluster.propose_here(proposal).await?;
                Ok(Response::Ack)
            }
        }
    }

    async fn agent(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AgentRequest,
    ) -> Result<Response, WireError> {
        let Identity::Agent(host_id) = &peer.identity else {
            return Err(denied(peer, "only agents speak for hosts"));
        };
        match request {
            AgentRequest::Register(info) => {
                if &info.host_id != host_id {
                    return Err(denied(
                        peer,
                        &format!(
                            "an agent may speak only for its own host, not {}",
                            info.host_id
                        ),
                    ));
                }
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::RegisterHost(info),
                    )
                    .await?;
                // Liveness starts with the first heartbeat, which only the leader takes: a
                // follower that forwarded the registration keeps no record of the host's health.
                Ok(Response::Registered {
                    host_id: host_id.clone(),
                })
            }
            AgentRequest::Heartbeat { sequence: _, stats } => {
                // Liveness is the leader's to judge: agents heartbeat the leader.
                self.cluster.require_leader().await?;
                let host = host_id.clone();
                let status = self
                    .cluster
                    .read(Consistency::Stale, move |state| {
                        state.hosts().get(&host).map(|h| h.status)
                    })
                    .await?;
                let known = status.is_some();
                if status == Some(HostStatus::Down) {
                    // Back: its workspaces return from lost to what its agent reports.
                    tracing::info!(host = %host_id, "a host that was down heartbeats again");
                    self.cluster
                        .propose(
                            RequestId::random(),
                            self.identity.clone(),
                            Command::HostReturned {
                                host: host_id.clone(),
                            },
                        )
                        .await?;
                }
                if !known {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("host {host_id} has not registered; register first"),
                    ));
                }
                let mut liveness = self.liveness();
                let entry = liveness.entry(host_id.clone()).or_insert(Liveness {
                    at: clock::now(),
                    stats: None,
                    containers: Vec::new(),
                });
                entry.at = clock::now();
                if stats.is_some() {
                    entry.stats = stats;
                }
                Ok(Response::Ack)
            }
            AgentRequest::ReportObserved(observed) => {
                too_many(observed.len())?;
                check_report(&observed)?;
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::RecordObserved {
                            host: host_id.clone(),
                            observed,
                        },
                    )
                    .await?;
                Ok(Response::Ack)
            }
            AgentRequest::ContainerStats(containers) => {
                too_many(containers.len())?;
                self.cluster.require_leader().await?;
                if let Some(entry) = self.liveness().get_mut(host_id) {
                    entry.containers = containers;
                }
                Ok(Response::Ack)
            }
            AgentRequest::Serving(address) => {
                check_endpoint(&address)?;
                self.cluster.require_leader().await?;
                lock(&self.endpoints).insert(host_id.clone(), address);
                Ok(Response::Ack)
            }
            AgentRequest::WatchDesired { .. } => Err(WireError::new(
                ErrorCode::InvalidArgument,
                "a desired-state watch is a subscription; open it as one",
            )),
        }
    }
}

/// An agent's endpoint as it may say it: HOST:PORT, short, with a port.
fn check_endpoint(address: &str) -> Result<(), WireError> {
    let port = address
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
        .and_then(|port| port.parse::<u16>().ok());
    if address.len() > 255 || port.is_none_or(|port| port == 0) {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("{address:.64?} is not HOST:PORT"),
        ));
    }
    Ok(())
}

fn limits_view(state: &State) -> LimitsView {
    LimitsView {
        cluster: state.cluster_limits(),
        hosts: state
            .hosts()
            .keys()
            .map(|host| HostLimits {
                host: host.clone(),
                overrides: state.host_overrides(host),
                effective: state.limits_for(host),
            })
            .collect(),
    }
}

fn fleet_stats(state: &State) -> FleetStats {
    let mut hosts = BTreeMap::new();
    let mut stats = FleetStats {
        hosts: Vec::new(),
        workspaces: Vec::new(),
        cpu_promised_millis: 0,
        cpu_capacity_millis: 0,
        memory_promised_bytes: 0,
        memory_capacity_bytes: 0,
        ports_allocated: u64::try_from(state.ports().len()).unwrap_or(u64::MAX),
        ports_total: 0,
        operations_in_flight: state
            .workspaces()
            .values()
            .filter(|w| is_in_flight(w.state))
            .count() as u64,
    };
    for (id, host) in state.hosts() {
        *hosts.entry(host.status).or_insert(0) += 1;
        let (cpu, memory) = state.reserved_on(id);
        let (cpu_capacity, memory_capacity) = state.capacity_of(id);
        stats.cpu_promised_millis += cpu;
        stats.memory_promised_bytes += memory;
        stats.cpu_capacity_millis += cpu_capacity;
        stats.memory_capacity_bytes += memory_capacity;
        stats.ports_total += u64::from(host.info.port_range.len());
    }
    let mut workspaces = BTreeMap::new();
    for workspace in state.workspaces().values() {
        *workspaces.entry(workspace.state).or_insert(0) += 1;
    }
    stats.hosts = hosts.into_iter().collect();
    stats.workspaces = workspaces.into_iter().collect();
    stats
}

fn host_views(state: &State, liveness: &BTreeMap<HostId, Liveness>) -> Vec<HostView> {
    state
        .hosts()
        .iter()
        .map(|(id, record)| {
            let live = liveness.get(id);
            HostView {
                info: record.info.clone(),
                status: record.status,
                workspaces: state.workspaces_on(id),
                stats: live.and_then(|l| l.stats),
                last_heartbeat: live.map(|l| l.at),
            }
        })
        .collect()
}

/// `admin status` from a node's view: members' roles, health (heard from within `window`) and
/// replication progress.
pub fn cluster_status(
    view: &NodeView,
    addresses: &BTreeMap<NodeId, String>,
    window: Duration,
) -> ClusterStatus {
    let members = view
        .members
        .iter()
        .map(|member| {
            let me = member.id == view.id;
            let heard = view.last_heard.get(&member.id).copied();
            let role = if me {
                view.role
            } else if view.leader == Some(member.id) {
                MemberRole::Leader
            } else if !member.voter {
                MemberRole::Learner
            } else {
                MemberRole::Follower
            };
            MemberView {
                id: member.id,
                addr: addresses.get(&member.id).cloned().unwrap_or_default(),
                role,
                healthy: me || heard.is_some_and(|ago| ago < window),
                last_contact_ms: if me {
                    Some(0)
                } else {
                    heard.map(|ago| u64::try_from(ago.as_millis()).unwrap_or(u64::MAX))
                },
                matched_index: member.matched,
            }
        })
        .collect();
    ClusterStatus {
        node: view.id,
        leader: view.leader,
        term: view.term,
        commit_index: view.commit_index,
        applied_index: view.applied_index,
        members,
    }
}

fn require(peer: &Peer, kinds: &[IdentityKind]) -> Result<(), WireError> {
    if kinds.contains(&peer.identity.kind()) {
        return Ok(());
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    Err(denied(
        peer,
        &format!("this request needs the role {}", names.join(" or ")),
    ))
}

fn denied(peer: &Peer, why: &str) -> WireError {
    WireError::new(
        ErrorCode::PermissionDenied,
        format!("{} may not do this: {why}", peer.identity),
    )
}

/// The largest report, encoded, that becomes a Raft entry: a hostile or confused agent must not
/// put an entry in the log that the peers' frames cannot carry, nor grow the state without bound.
const MAX_REPORT_BYTES: usize = 1 << 20;
/// Per workspace: an error's message and output lines as stored in the state.
const MAX_MESSAGE_BYTES: usize = 4 << 10;
const MAX_LAST_LINES: usize = 50;
const MAX_PORTS: usize = 64;

/// Refuses a report an honest agent would not send: states only the coordinator sets, or fields
/// beyond what the state keeps.
fn check_report(observed: &[ObservedWorkspace]) -> Result<(), WireError> {
    let invalid = |why: String| Err(WireError::new(ErrorCode::InvalidArgument, why));
    for report in observed {
        if !matches!(
            report.state,
            WorkspaceState::Starting
                | WorkspaceState::Running
                | WorkspaceState::Stopping
                | WorkspaceState::Stopped
                | WorkspaceState::Failed
                | WorkspaceState::Gone
        ) {
            return invalid(format!(
                "an agent may not report workspace {} {}: the coordinator sets that state",
                report.name, report.state
            ));
        }
        if report.ports.len() > MAX_PORTS {
            return invalid(format!("{} ports for {}", report.ports.len(), report.name));
        }
        if let Some(error) = &report.error {
            let lines = match &error.detail {
                Some(ErrorDetail::ContainerExited { last_lines, .. }) => last_lines.as_slice(),
                _ => &[],
            };
            if error.message.len() > MAX_MESSAGE_BYTES
                || lines.len() > MAX_LAST_LINES
                || lines.iter().any(|line| line.len() > MAX_MESSAGE_BYTES)
            {
                return invalid(format!(
                    "the error reported for {} is too long",
                    report.name
                ));
            }
        }
    }
    let limit = nexus_protocol::codec::CodecConfig::new(MAX_REPORT_BYTES).unwrap_or_default();
    if nexus_protocol::codec::encode(&observed, limit).is_err() {
        return invalid(format!("a report larger than {MAX_REPORT_BYTES} bytes"));
    }
    Ok(())
}

/// The longest image reference a workspace may name.
const MAX_IMAGE_LEN: usize = 512;

/// A workspace as users see it.
fn view_of(record: &WorkspaceRecord) -> WorkspaceView {
    WorkspaceView {
        name: record.spec.name.clone(),
        owner: record.owner.clone(),
        state: record.state,
        host: Some(record.host.clone()),
        image: record.spec.image.clone(),
        class: record.spec.class,
        ports: record.ports.clone(),
        created_at: record.created_at,
    }
}

fn detail_of(record: &WorkspaceRecord) -> WorkspaceDetail {
    WorkspaceDetail {
        view: view_of(record),
        spec: record.spec.clone(),
        desired: record.desired,
        generation: record.generation,
        updated_at: record.updated_at,
        last_error: record.last_error.clone(),
        port_reassigned: record.port_reassigned,
    }
}

/// Refuses a spec no host could run, before it reaches the scheduler.
fn check_spec(spec: &WorkspaceSpec) -> Result<(), WireError> {
    let invalid = |why: String| Err(WireError::new(ErrorCode::InvalidArgument, why));
    if spec.image.trim().is_empty() || spec.image.len() > MAX_IMAGE_LEN {
        return invalid(format!(
            "the image must be named (at most {MAX_IMAGE_LEN} characters)"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for port in &spec.ports {
        if port.container == 0 || !seen.insert(port.container) {
            return invalid(format!(
                "container port {} is zero or given twice",
                port.container
            ));
        }
    }
    if let Some(key) = spec
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return invalid(format!("invalid environment variable name {key:?}"));
    }
    let bytes = crate::placer::spec_bytes(spec);
    if bytes > crate::placer::MAX_SPEC_BYTES {
        return invalid(format!(
            "the spec takes {bytes} bytes (image, environment, labels and command); at most {}",
            crate::placer::MAX_SPEC_BYTES
        ));
    }
    Ok(())
}

fn too_many(entries: usize) -> Result<(), WireError> {
    if entries > MAX_ENTRIES {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("{entries} entries in one message; at most {MAX_ENTRIES}"),
        ));
    }
    Ok(())
}

impl Service {
    /// The same service, marking hosts down after `ttl` of silence.
    pub fn with_host_ttl(mut self, ttl: Duration) -> Service {
        self.host_ttl = ttl;
        self
    }

    /// The failure detector, for as long as the process runs: on the leader, it looks at the
    /// fleet every [`Policy::period`] and marks down through Raft the hosts that
    /// [`detector::decide`] names (the rules are there), all at once. While most of the fleet is
    /// silent it holds off instead, and says so at most every 30 s.
    pub async fn detect_failures(&self) {
        let policy = Policy { ttl: self.host_ttl };
        // What the detector remembers while this node leads; none while it does not.
        let mut leading: Option<Memory> = None;
        let mut held_off_said: Option<std::time::Instant> = None;
        loop {
            tokio::time::sleep(policy.period()).await;
            if self.cluster.require_leader().await.is_err() {
                leading = None;
                continue;
            }
            let now = clock::now();
            let memory = leading.get_or_insert_with(|| Memory::new(now));
            let Ok(hosts) = self
                .cluster
                .read(Consistency::Stale, |state| {
                    state
                        .hosts()
                        .iter()
                        .map(|(id, h)| (id.clone(), h.status))
                        .collect::<BTreeMap<_, _>>()
                })
                .await
            else {
                continue;
            };
            let decision = {
                let liveness = self.liveness();
                detector::decide(
                    now,
                    &hosts,
                    |host| liveness.get(host).map(|l| l.at),
                    memory,
                    &policy,
                )
            };
            memory.observe(now, &hosts, &policy);
            let silent = match decision {
                Decision::MarkDown(silent) => silent,
                Decision::HoldOff {
                    silent,
                    recently_down,
                    fleet,
                } => {
                    if held_off_said.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!(
                            silent,
                            down = recently_down,
                            hosts = fleet,
                            "most of the fleet is silent at once: not marking hosts down, since the \
                             fault is more likely here (an overloaded leader, a partition) than on \
                             all of them"
                        );
                        held_off_said = Some(std::time::Instant::now());
                    }
                    continue;
                }
            };
            // All at once: Raft batches them, so a thousand hosts lost together (a rack, a
            // zone) are marked down in one or two appends, not one after another.
            let marking = silent.into_iter().map(|host| async move {
                tracing::warn!(%host, ttl = ?self.host_ttl, "no heartbeat within the TTL; marking the host down");
                let proposal = self
                    .cluster
                    .propose(
                        RequestId::random(),
                        self.identity.clone(),
                        Command::SetHostStatus {
                            host: host.clone(),
                            status: HostStatus::Down,
                        },
                    )
                    .await;
                match proposal {
                    Ok(()) => Some(host),
                    Err(error) => {
                        tracing::warn!(%host, code = %error.code, "cannot mark the host down: {}", error.message);
                        None
                    }
                }
            });
            let marked: Vec<Option<HostId>> = futures_util::future::join_all(marking).await;
            memory.marked_down(now, marked.into_iter().flatten());
        }
    }

    /// A user's (or an admin's) workspace request. Users see and change their own workspaces;
    /// admins all of them.
    async fn workspace(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: WorkspaceRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        let Identity::User { name: user, role } = &peer.identity else {
            return Err(denied(peer, "only users manage workspaces"));
        };
        let admin = *role == Role::Admin;
        let reading = matches!(
            request,
            WorkspaceRequest::List
                | WorkspaceRequest::Inspect(_)
                | WorkspaceRequest::Describe(_)
                | WorkspaceRequest::Endpoint(_)
        );
        if consistency == Consistency::Stale && !reading {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "only reads may be stale; send the change without --stale",
            ));
        }
        match request {
            WorkspaceRequest::List => {
                let user = user.clone();
                let views = self
                    .cluster
                    .read(consistency, move |state| {
                        state
                            .workspaces()
                            .values()
                            .filter(|w| admin || w.owner == user)
                            .map(view_of)
                            .collect()
                    })
                    .await?;
                Ok(Response::Workspaces(views))
            }
            WorkspaceRequest::Inspect(name) => Ok(Response::Workspace(
                self.owned(peer, &name, admin, consistency).await?,
            )),
            WorkspaceRequest::Describe(name) => {
                self.owned(peer, &name, admin, consistency).await?;
                let wanted = name.clone();
                self.cluster
                    .read(consistency, move |state| {
                        state
                            .workspaces()
                            .get(&wanted)
                            .map(|w| Box::new(detail_of(w)))
                    })
                    .await?
                    .map(Response::WorkspaceDetail)
                    .ok_or_else(|| {
                        WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
                    })
            }
            WorkspaceRequest::Endpoint(name) => {
                let view = self
                    .owned(peer, &name, admin, Consistency::Linearizable)
                    .await?;
                let host = view.host.ok_or_else(|| {
                    WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("workspace {name} has no host"),
                    )
                })?;
                // Only the leader hears agents (a former leader's book may be stale): a
                // follower sends the client there.
                self.cluster.require_leader().await?;
                if let Some(address) = lock(&self.endpoints).get(&host).cloned() {
                    return Ok(Response::Endpoint { host, address });
                }
                Err(WireError::new(
                    ErrorCode::BackendUnavailable,
                    format!("host {host}'s agent has not said where it serves logs and exec"),
                ))
            }
            WorkspaceRequest::Create(spec) => self.create(request_id, user, spec, None).await,
            WorkspaceRequest::CreateWith { spec, scoring } => {
                self.create(request_id, user, spec, scoring).await
            }
            WorkspaceRequest::Start(name) => {
                self.set_run(peer, request_id, &name, admin, DesiredRun::Running)
                    .await
            }
            WorkspaceRequest::Stop(name) => {
                self.set_run(peer, request_id, &name, admin, DesiredRun::Stopped)
                    .await
            }
            WorkspaceRequest::Destroy(name) => {
                let command = Command::DestroyWorkspace { name: name.clone() };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Restart(name) => {
                let command = Command::RestartWorkspace { name: name.clone() };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Repair(name) => {
                let command = Command::RepairWorkspace { name: name.clone() };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Switch(name) => {
                // In the owner's context: an admin switching a user's workspace stops that
                // user's others, not the admin's.
                let owner = self
                    .owned(peer, &name, admin, Consistency::Linearizable)
                    .await?
                    .owner;
                let command = Command::SwitchWorkspace {
                    owner,
                    name: name.clone(),
                };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Cleanup { older_than_secs } => {
                self.cleanup(peer, request_id, Some(user.clone()), older_than_secs)
                    .await
            }
            WorkspaceRequest::CleanupOf {
                owner,
                older_than_secs,
            } => {
                if !admin {
                    return Err(denied(peer, "only admins clean up others' workspaces"));
                }
                self.cleanup(peer, request_id, owner, older_than_secs).await
            }
        }
    }

    /// Destroys the stopped workspaces (of `owner`, or everyone's) unchanged for
    /// `older_than_secs`; answers them, being destroyed.
    async fn cleanup(
        &self,
        peer: &Peer,
        request_id: RequestId,
        owner: Option<UserName>,
        older_than_secs: u64,
    ) -> Result<Response, WireError> {
        let horizon = clock::now()
            .as_millis()
            .saturating_sub(older_than_secs.saturating_mul(1000));
        let names: Vec<WorkspaceName> = self
            .cluster
            .read(Consistency::Linearizable, move |state| {
                state
                    .workspaces()
                    .values()
                    .filter(|w| {
                        owner.as_ref().is_none_or(|owner| &w.owner == owner)
                            && w.state == WorkspaceState::Stopped
                            && w.desired == DesiredRun::Stopped
                            && w.updated_at.as_millis() <= horizon
                    })
                    .map(|w| w.spec.name.clone())
                    .collect()
            })
            .await?;
        too_many(names.len())?;
        self.cluster
            .propose(
                request_id,
                peer.identity.clone(),
                Command::DestroyStopped {
                    names: names.clone(),
                },
            )
            .await?;
        let views = self
            .cluster
            .read(Consistency::Linearizable, move |state| {
                names
                    .iter()
                    .filter_map(|name| state.workspaces().get(name))
                    .filter(|w| w.state == WorkspaceState::Destroying)
                    .map(view_of)
                    .collect()
            })
            .await?;
        Ok(Response::Workspaces(views))
    }

    /// Checks that `peer` may change `name`, proposes `command`, and answers the workspace as it
    /// is after.
    async fn change(
        &self,
        peer: &Peer,
        request_id: RequestId,
        name: &WorkspaceName,
        admin: bool,
        command: Command,
    ) -> Result<Response, WireError> {
        self.owned(peer, name, admin, Consistency::Linearizable)
            .await?;
        self.cluster
            .propose(request_id, peer.identity.clone(), command)
            .await?;
        Ok(Response::Workspace(
            self.owned(peer, name, admin, Consistency::Linearizable)
                .await?,
        ))
    }

    async fn set_run(
        &self,
        peer: &Peer,
        request_id: RequestId,
        name: &WorkspaceName,
        admin: bool,
        run: DesiredRun,
    ) -> Result<Response, WireError> {
        let command = Command::SetDesiredRun {
            name: name.clone(),
            run,
        };
        self.change(peer, request_id, name, admin, command).await
    }

    /// The workspace `name`, if `peer` may see it: `WORKSPACE_NOT_FOUND` or
    /// `PERMISSION_DENIED` otherwise.
    async fn owned(
        &self,
        peer: &Peer,
        name: &WorkspaceName,
        admin: bool,
        consistency: Consistency,
    ) -> Result<WorkspaceView, WireError> {
        let wanted = name.clone();
        let view = self
            .cluster
            .read(consistency, move |state| {
                state.workspaces().get(&wanted).map(view_of)
            })
            .await?
            .ok_or_else(|| {
                WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
            })?;
        if let Identity::User { name: user, .. } = &peer.identity
            && (admin || &view.owner == user)
        {
            return Ok(view);
        }
        Err(denied(peer, &format!("workspace {name} is not theirs")))
    }

    /// Places and commits a new workspace, on the leader, through the placer: concurrent creates
    /// share log entries, and each is scheduled at apply against the state the ones before it
    /// left, so none is refused for room another host had and none overfills a host. A retried
    /// request is answered with its first outcome.
    async fn create(
        &self,
        request_id: RequestId,
        user: &UserName,
        spec: WorkspaceSpec,
        scoring: Option<Scoring>,
    ) -> Result<Response, WireError> {
        check_spec(&spec)?;
        self.cluster.require_leader().await?;
        let name = spec.name.clone();
        tracing::debug!(workspace = %name, %request_id, "placing");
        self.placer
            .place(PlaceRequest {
                request_id,
                owner: user.clone(),
                spec,
                scoring,
            })
            .await?;
        let found = name.clone();
        self.cluster
            .read(Consistency::Stale, move |state| {
                state.workspaces().get(&found).map(view_of)
            })
            .await?
            .map(Response::Workspace)
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::WorkspaceNotFound,
                    format!("workspace {name} was created and is gone already"),
                )
            })
    }

    /// An agent's watch of its host's desired state: the state now (unless the agent has that
    /// version already), then again after every change, for as long as this node leads.
    async fn watch_desired(&self, peer: &Peer, known_version: Option<u64>) -> Reply {
        let Identity::Agent(host) = &peer.identity else {
            return Reply::Once(Err(denied(
                peer,
                "only agents watch a host's desired state",
            )));
        };
        if let Err(error) = self.cluster.require_leader().await {
            return Reply::Once(Err(error));
        }
        let (sender, updates) = mpsc::channel(2);
        // Numbers never reused (a host's entry goes when its watch ends), so a stale watch can
        // never mistake a newer one for itself.
        let generation = self
            .watch_numbers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.watches).insert(host.clone(), generation);
        let watch = Watch {
            cluster: self.cluster.clone(),
            host: host.clone(),
            generation,
            watches: self.watches.clone(),
        };
        tokio::spawn(watch.run(known_version, sender));
        Reply::Stream(updates)
    }
}

/// One agent's watch of its host's desired state.
struct Watch {
    cluster: Cluster,
    host: HostId,
    /// Which of the host's watches this is; a newer one ends it.
    generation: u64,
    watches: Arc<Mutex<BTreeMap<HostId, u64>>>,
}

impl Watch {
    fn replaced(&self) -> bool {
        lock(&self.watches).get(&self.host) != Some(&self.generation)
    }

    async fn run(self, sent: Option<u64>, updates: mpsc::Sender<Result<Response, WireError>>) {
        watch_desired(&self, sent, &updates).await;
        let mut watches = lock(&self.watches);
        if watches.get(&self.host) == Some(&self.generation) {
            watches.remove(&self.host);
        }
    }
}

async fn watch_desired(
    watch: &Watch,
    mut sent: Option<u64>,
    updates: &mpsc::Sender<Result<Response, WireError>>,
) {
    let Watch { cluster, host, .. } = watch;
    let mut changes = cluster.desired_changes(host);
    let mut leadership = cluster.leadership();
    let mut first = true;
    // Whether the host's desired state may have changed since the last look.
    let mut dirty = true;
    loop {
        changes.borrow_and_update();
        let leading = leadership.borrow_and_update().leading;
        if watch.replaced() {
            let _ = updates
                .send(Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("a newer watch of host {host} replaced this one"),
                )))
                .await;
            return;
        }
        // The driver is asked only at the start and when the lead seems lost (the answer names
        // the new leader); otherwise the driver's published leadership is enough.
        if (first || !leading)
            && let Err(error) = cluster.require_leader().await
        {
            let _ = updates.send(Err(error)).await;
            return;
        }
        if dirty {
            let wanted = host.clone();
            let last = sent;
            // The first look is linearizable (the replica has applied everything committed when
            // it was asked); later ones read the leader's own replica, which only moves forward.
            let update = cluster
                .read(
                    if first {
                        Consistency::Linearizable
                    } else {
                        Consistency::Stale
                    },
                    move |state| {
                        // Only ever forward: what an earlier leader sent is not sent back in time.
                        let version = state.desired_version(&wanted);
                        let ahead = last.is_some_and(|last| version < last);
                        let push = last.is_none_or(|last| version > last) || (first && ahead);
                        (push.then(|| state.desired_for(&wanted)), ahead)
                    },
                )
                .await;
            let update = match update {
                Ok((desired, ahead)) => {
                    if first && ahead {
                        // Even a current replica is behind the agent: this is another history
                        // (the cluster's data was rebuilt). Say so on both sides; the agent
                        // keeps what it has until someone removes its saved state.
                        tracing::warn!(%host, agent_version = ?last, "an agent holds a newer desired state than this cluster has ever made; was the cluster rebuilt? (the agent ignores older ones)");
                    }
                    Ok(desired)
                }
                Err(error) => Err(error),
            };
            first = false;
            match update {
                Ok(Some(desired)) => {
                    sent = Some(desired.version);
                    if updates.send(Ok(Response::Desired(desired))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    let _ = updates.send(Err(error)).await;
                    return;
                }
            }
        }
        dirty = false;
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() { return }
                dirty = true;
            }
            changed = leadership.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(LEADERSHIP_CHECK) => {}
            () = updates.closed() => return,
        }
    }
}

impl Handler for Service {
    async fn handle(&self, peer: &Peer, request_id: RequestId, request: Request) -> Reply {
        if let Request::Agent(AgentRequest::WatchDesired { known_version }) = request {
            return self.watch_desired(peer, known_version).await;
        }
        let result = self.answer(peer, request_id, request).await;
        if let Err(error) = &result {
            tracing::debug!(%request_id, peer = %peer.identity, code = %error.code, "request refused: {}", error.message);
        }
        Reply::Once(result)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::identity::Role;
    use nexus_protocol::model::{HostInfo, PortRange};
    use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, PkiDir, SubjectName, Validity};
    use nexus_protocol::transport::Credentials;
    use nexus_protocol::{NodeId, UserName};

    use super::*;
    use crate::{Config, Node};

    /// A one-node cluster on a real store in a temporary directory.
    async fn one_node() -> (tempfile::TempDir, Node, Service) {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir::new(dir.path().join("pki"));
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
        let identity = Identity::Coordinator(NodeId::new(1).unwrap());
        pki.issue(
            &identity,
            &[SubjectName::Ip([127, 0, 0, 1].into())],
            Validity::starting(clock::now(), Duration::from_secs(3600)),
            false,
        )
        .unwrap();
        let credentials = Credentials::from_pki_dir(pki.path(), &identity).unwrap();
        let mut config = Config::from_args(crate::config::Args {
            node_id: Some(NodeId::new(1).unwrap()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            data_dir: Some(dir.path().join("data")),
            tls_dir: Some(pki.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        config.driver.tick = Duration::from_millis(10);
        let node = Node::start(&config, &credentials).unwrap();
        let service = Service::new(identity, node.cluster.clone());
        (dir, node, service)
    }

    fn peer(identity: Identity) -> Peer {
        Peer {
            identity,
            address: "127.0.0.1:1".parse().unwrap(),
            software: "test".into(),
        }
    }

    fn agent(host: &str) -> Peer {
        peer(Identity::Agent(HostId::new(host).unwrap()))
    }

    fn user(role: Role) -> Peer {
        peer(Identity::User {
            name: UserName::new("alice").unwrap(),
            role,
        })
    }

    fn info(host: &str) -> HostInfo {
        HostInfo {
            host_id: HostId::new(host).unwrap(),
            hostname: host.into(),
            os: "linux".into(),
            cpus: 2,
            memory_bytes: 1 << 30,
            disk_bytes: 0,
            labels: Default::default(),
            port_range: PortRange::DEFAULT,
            agent_version: "test".into(),
        }
    }

    fn code(result: Result<Response, WireError>) -> Option<ErrorCode> {
        result.err().map(|e| e.code)
    }

    async fn ask(service: &Service, peer: &Peer, request: Request) -> Result<Response, WireError> {
        service.answer(peer, RequestId::random(), request).await
    }

    /// A one-node cluster that leads, with host h1 registered.
    async fn one_node_with_h1() -> (tempfile::TempDir, Node, Service) {
        let (dir, node, service) = one_node().await;
        leading(&service).await;
        ask(
            &service,
            &agent("h1"),
            Request::Agent(AgentRequest::Register(info("h1"))),
        )
        .await
        .unwrap();
        (dir, node, service)
    }

    /// Waits for the one node to elect itself.
    async fn leading(service: &Service) {
        for _ in 0..500 {
            if service.cluster.require_leader().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the one-node cluster elected no leader");
    }

    #[tokio::test]
    async fn agents_speak_only_for_their_own_host() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let register = |host: &'static str| Request::Agent(AgentRequest::Register(info(host)));
        assert_eq!(
            code(ask(&service, &agent("h1"), register("h2")).await),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(ask(&service, &user(Role::Admin), register("h1")).await),
            Some(ErrorCode::PermissionDenied)
        );
        let heartbeat = Request::Agent(AgentRequest::Heartbeat {
            sequence: 1,
            stats: None,
        });
        assert_eq!(
            code(ask(&service, &agent("h1"), heartbeat.clone()).await),
            Some(ErrorCode::InvalidArgument)
        );
        assert!(matches!(
            ask(&service, &agent("h1"), register("h1")).await,
            Ok(Response::Registered { .. })
        ));
        assert!(matches!(
            ask(&service, &agent("h1"), heartbeat).await,
            Ok(Response::Ack)
        ));
        node.stop().await.unwrap();
    }

    fn named(name: &str, role: Role) -> Peer {
        peer(Identity::User {
            name: UserName::new(name).unwrap(),
            role,
        })
    }

    fn workspace_spec(name: &str, ports: &[u16]) -> WorkspaceSpec {
        WorkspaceSpec {
            name: name.parse().unwrap(),
            image: "dev:latest".into(),
            class: nexus_protocol::model::ResourceClass::Small,
            ports: ports
                .iter()
                .map(|&container| nexus_protocol::model::PortSpec { container })
                .collect(),
            env: Default::default(),
            labels: Default::default(),
            command: vec![],
            host: None,
        }
    }

    fn ws(request: WorkspaceRequest) -> Request {
        Request::Workspace(request)
    }

    #[tokio::test]
    async fn users_create_see_and_change_only_their_own_workspaces() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, bob, admin) = (
            named("ada", Role::User),
            named("bob", Role::User),
            named("root", Role::Admin),
        );
        let create = ws(WorkspaceRequest::Create(workspace_spec("w", &[3000])));
        let id = RequestId::random();
        let first = service.answer(&ada, id, create.clone()).await.unwrap();
        let Response::Workspace(view) = &first else {
            panic!("{first:?}");
        };
        assert_eq!(view.owner.as_str(), "ada");
        assert_eq!(view.host.as_ref().map(HostId::as_str), Some("h1"));
        assert_eq!(view.state, WorkspaceState::Scheduled);
        assert_eq!(view.ports[0].host, PortRange::DEFAULT.first);

        // The host is full now; a retry of the same request still gets its first answer.
        service
            .cluster
            .propose(
                RequestId::random(),
                admin.identity.clone(),
                Command::SetLimits {
                    host: None,
                    patch: crate::state::LimitsPatch {
                        max_workspaces_per_host: Some(1),
                        ..Default::default()
                    },
                },
            )
            .await
            .unwrap();
        assert_eq!(
            service.answer(&ada, id, create.clone()).await.unwrap(),
            first
        );
        let refused = ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("x", &[]))),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceExhausted);
        assert!(
            refused.message.contains("h1: holds its maximum of 1"),
            "{}",
            refused.message
        );
        assert_eq!(
            code(ask(&service, &ada, create.clone()).await),
            Some(ErrorCode::WorkspaceAlreadyExists)
        );
        let eleven: Vec<u16> = (1..=11).collect();
        assert_eq!(
            code(
                ask(
                    &service,
                    &ada,
                    ws(WorkspaceRequest::Create(workspace_spec("y", &eleven)))
                )
                .await
            ),
            Some(ErrorCode::InvalidArgument)
        );

        // Each sees their own; an admin sees all.
        let list = |who: Peer| {
            let service = &service;
            async move {
                match ask(service, &who, ws(WorkspaceRequest::List))
                    .await
                    .unwrap()
                {
                    Response::Workspaces(views) => views.len(),
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(
            (
                list(ada.clone()).await,
                list(bob.clone()).await,
                list(admin.clone()).await
            ),
            (1, 0, 1)
        );
        let name: WorkspaceName = "w".parse().unwrap();
        for request in [
            WorkspaceRequest::Inspect(name.clone()),
            WorkspaceRequest::Describe(name.clone()),
            WorkspaceRequest::Stop(name.clone()),
            WorkspaceRequest::Restart(name.clone()),
            WorkspaceRequest::Repair(name.clone()),
            WorkspaceRequest::Switch(name.clone()),
            WorkspaceRequest::Destroy(name.clone()),
        ] {
            assert_eq!(
                code(ask(&service, &bob, ws(request)).await),
                Some(ErrorCode::PermissionDenied)
            );
        }
        assert_eq!(
            code(ask(&service, &agent("h1"), ws(WorkspaceRequest::List)).await),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(
                ask(
                    &service,
                    &ada,
                    ws(WorkspaceRequest::Inspect("nope".parse().unwrap()))
                )
                .await
            ),
            Some(ErrorCode::WorkspaceNotFound)
        );

        // The owner stops it, an admin destroys it.
        ask(&service, &ada, ws(WorkspaceRequest::Stop(name.clone())))
            .await
            .unwrap();
        let desired = service
            .cluster
            .read(Consistency::Linearizable, |state| {
                state.desired_for(&HostId::new("h1").unwrap())
            })
            .await
            .unwrap();
        assert_eq!(desired.assignments[0].run, DesiredRun::Stopped);
        match ask(&service, &admin, ws(WorkspaceRequest::Destroy(name)))
            .await
            .unwrap()
        {
            Response::Workspace(view) => assert_eq!(view.state, WorkspaceState::Destroying),
            other => panic!("{other:?}"),
        }
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn only_admins_read_and_set_limits_and_limits_bind_creates() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, admin) = (named("ada", Role::User), named("root", Role::Admin));
        let admin_request = |request| Request::Admin(request);
        let one = nexus_protocol::model::LimitsPatch {
            max_workspaces_per_host: Some(1),
            ..Default::default()
        };
        for request in [
            AdminRequest::Limits,
            AdminRequest::Stats,
            AdminRequest::Top,
            AdminRequest::SetLimits {
                host: None,
                patch: one,
            },
        ] {
            assert_eq!(
                code(ask(&service, &ada, admin_request(request)).await),
                Some(ErrorCode::PermissionDenied)
            );
        }
        let zero = nexus_protocol::model::LimitsPatch {
            max_workspaces_per_host: Some(0),
            ..Default::default()
        };
        let per_host_scoring = nexus_protocol::model::LimitsPatch {
            scoring: Some(Scoring::Spread),
            ..Default::default()
        };
        for (host, patch) in [
            (None, zero),
            (Some(HostId::new("h1").unwrap()), per_host_scoring),
        ] {
            assert_eq!(
                code(
                    ask(
                        &service,
                        &admin,
                        admin_request(AdminRequest::SetLimits { host, patch })
                    )
                    .await
                ),
                Some(ErrorCode::InvalidArgument)
            );
        }
        let set = AdminRequest::SetLimits {
            host: Some(HostId::new("h1").unwrap()),
            patch: one,
        };
        match ask(&service, &admin, admin_request(set)).await.unwrap() {
            Response::Limits(view) => {
                assert_eq!(view.cluster.max_workspaces_per_host, 50);
                assert_eq!(view.hosts[0].effective.max_workspaces_per_host, 1);
            }
            other => panic!("{other:?}"),
        }
        ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("a", &[]))),
        )
        .await
        .unwrap();
        let refused = ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("b", &[]))),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceExhausted, "{refused:?}");
        match ask(&service, &admin, admin_request(AdminRequest::Stats))
            .await
            .unwrap()
        {
            Response::FleetStats(stats) => {
                assert_eq!(stats.hosts, vec![(HostStatus::Ready, 1)]);
                assert_eq!(stats.workspaces, vec![(WorkspaceState::Scheduled, 1)]);
            }
            other => panic!("{other:?}"),
        }
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_host_that_registers_late_gets_a_full_ttl_before_it_is_marked_down() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let service = Arc::new(service.with_host_ttl(Duration::from_millis(400)));
        let detector = tokio::spawn({
            let service = service.clone();
            async move { service.detect_failures().await }
        });
        // Long past the grace of the election: the next host to register has no heartbeat yet.
        tokio::time::sleep(Duration::from_millis(700)).await;
        ask(
            &service,
            &agent("h1"),
            Request::Agent(AgentRequest::Register(info("h1"))),
        )
        .await
        .unwrap();
        let status = |service: Arc<Service>| async move {
            service
                .cluster
                .read(Consistency::Linearizable, |state| {
                    state.hosts()[&HostId::new("h1").unwrap()].status
                })
                .await
                .unwrap()
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(status(service.clone()).await, HostStatus::Ready);
        // Still silent a TTL later: down.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(status(service.clone()).await, HostStatus::Down);
        detector.abort();
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn most_of_a_fleet_silent_at_once_is_not_marked_down_and_a_few_are() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let ttl = Duration::from_millis(400);
        let service = Arc::new(service.with_host_ttl(ttl));
        let hosts: Vec<String> = (0..14).map(|i| format!("h{i}")).collect();
        for host in &hosts {
            ask(
                &service,
                &agent(host),
                Request::Agent(AgentRequest::Register(info(host))),
            )
            .await
            .unwrap();
        }
        // Hosts 0 and 1 heartbeat throughout; the other twelve are silent at first.
        let beating = |from: usize, to: usize| {
            let (service, hosts) = (service.clone(), hosts.clone());
            tokio::spawn(async move {
                loop {
                    for host in &hosts[from..to] {
                        let heartbeat = AgentRequest::Heartbeat {
                            sequence: 1,
                            stats: None,
                        };
                        let _ = ask(&service, &agent(host), Request::Agent(heartbeat)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let few = beating(0, 2);
        let detector = tokio::spawn({
            let service = service.clone();
            async move { service.detect_failures().await }
        });
        let downs = |service: Arc<Service>| async move {
            service
                .cluster
                .read(Consistency::Linearizable, |state| {
                    state
                        .hosts()
                        .values()
                        .filter(|h| h.status == HostStatus::Down)
                        .count()
                })
                .await
                .unwrap()
        };
        // Well past the grace of the election (two TTLs) and a TTL of silence: 12 of 14 silent
        // is a mass silence, so nobody is marked down.
        tokio::time::sleep(ttl * 5).await;
        assert_eq!(downs(service.clone()).await, 0);
        // Most hosts speak again; the three still silent are a minority, and are marked down.
        let most = beating(2, 11);
        tokio::time::sleep(ttl * 4).await;
        assert_eq!(downs(service.clone()).await, 3);
        // Two TTLs on, those three are old news: when nine more fall silent, the three do not
        // count towards a mass silence (hosts down for good would otherwise hold off every
        // later marking), and the nine are marked down.
        tokio::time::sleep(ttl * 2).await;
        most.abort();
        tokio::time::sleep(ttl * 4).await;
        assert_eq!(downs(service.clone()).await, 12);
        for task in [few, detector] {
            task.abort();
        }
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_spec_too_large_for_the_log_is_refused() {
        let (_dir, node, service) = one_node_with_h1().await;
        let mut spec = workspace_spec("big", &[]);
        spec.env.insert("BLOB".into(), "x".repeat(100 << 10));
        let refused = ask(
            &service,
            &named("ada", Role::User),
            ws(WorkspaceRequest::Create(spec)),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidArgument);
        assert!(refused.message.contains("at most 65536"), "{refused:?}");
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn owners_learn_where_the_host_serves_logs_and_exec() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, bob) = (named("ada", Role::User), named("bob", Role::User));
        let h1 = agent("h1");
        ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
        )
        .await
        .unwrap();
        let endpoint = || ws(WorkspaceRequest::Endpoint("w".parse().unwrap()));
        assert_eq!(
            code(ask(&service, &ada, endpoint()).await),
            Some(ErrorCode::BackendUnavailable),
            "before the agent has said"
        );
        for bad in ["nope", ":7401", "h:0", "h:99999"] {
            let serving = Request::Agent(AgentRequest::Serving(bad.into()));
            assert_eq!(
                code(ask(&service, &h1, serving).await),
                Some(ErrorCode::InvalidArgument),
                "{bad}"
            );
        }
        let serving = Request::Agent(AgentRequest::Serving("10.0.0.5:7401".into()));
        ask(&service, &h1, serving).await.unwrap();
        match ask(&service, &ada, endpoint()).await.unwrap() {
            Response::Endpoint { host, address } => {
                assert_eq!((host.as_str(), address.as_str()), ("h1", "10.0.0.5:7401"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code(ask(&service, &bob, endpoint()).await),
            Some(ErrorCode::PermissionDenied)
        );
        let logs = Request::Host(nexus_protocol::message::HostRequest::Logs {
            workspace: "w".parse().unwrap(),
            tail: 1,
            follow: false,
        });
        assert_eq!(
            code(ask(&service, &ada, logs).await),
            Some(ErrorCode::InvalidArgument)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn cleanup_destroys_only_the_callers_old_stopped_workspaces() {
        let (_dir, node, service) = one_node_with_h1().await;
        let h1 = agent("h1");
        let (ada, bob) = (named("ada", Role::User), named("bob", Role::User));
        ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
        )
        .await
        .unwrap();
        ask(
            &service,
            &bob,
            ws(WorkspaceRequest::Create(workspace_spec("v", &[]))),
        )
        .await
        .unwrap();
        for (who, name) in [(&ada, "w"), (&bob, "v")] {
            ask(
                &service,
                who,
                ws(WorkspaceRequest::Stop(name.parse().unwrap())),
            )
            .await
            .unwrap();
        }
        let stopped = |name: &str| ObservedWorkspace {
            name: name.parse().unwrap(),
            generation: 1,
            state: WorkspaceState::Stopped,
            ports: vec![],
            error: None,
        };
        ask(
            &service,
            &h1,
            Request::Agent(AgentRequest::ReportObserved(vec![
                stopped("w"),
                stopped("v"),
            ])),
        )
        .await
        .unwrap();
        let cleanup = |older_than_secs| ws(WorkspaceRequest::Cleanup { older_than_secs });
        // Nothing is a day old yet.
        match ask(&service, &ada, cleanup(86_400)).await.unwrap() {
            Response::Workspaces(views) => assert!(views.is_empty(), "{views:?}"),
            other => panic!("{other:?}"),
        }
        match ask(&service, &ada, cleanup(0)).await.unwrap() {
            Response::Workspaces(views) => {
                let names: Vec<_> = views.iter().map(|v| v.name.to_string()).collect();
                assert_eq!(names, ["w"]);
                assert_eq!(views[0].state, WorkspaceState::Destroying);
            }
            other => panic!("{other:?}"),
        }
        match ask(
            &service,
            &bob,
            ws(WorkspaceRequest::Inspect("v".parse().unwrap())),
        )
        .await
        .unwrap()
        {
            Response::Workspace(view) => assert_eq!(view.state, WorkspaceState::Stopped),
            other => panic!("{other:?}"),
        }
        // Others' workspaces: admins only, one owner's or everyone's.
        let of_bob = ws(WorkspaceRequest::CleanupOf {
            owner: Some(UserName::new("bob").unwrap()),
            older_than_secs: 0,
        });
        assert_eq!(
            code(ask(&service, &ada, of_bob.clone()).await),
            Some(ErrorCode::PermissionDenied)
        );
        match ask(&service, &named("root", Role::Admin), of_bob)
            .await
            .unwrap()
        {
            Response::Workspaces(views) => {
                let names: Vec<_> = views.iter().map(|v| v.name.to_string()).collect();
                assert_eq!(names, ["v"]);
            }
            other => panic!("{other:?}"),
        }
        node.stop().await.unwrap();
    }

    fn report(state: WorkspaceState, error: Option<WireError>) -> Request {
        Request::Agent(AgentRequest::ReportObserved(vec![ObservedWorkspace {
            name: "w".parse().unwrap(),
            generation: 1,
            state,
            ports: vec![],
            error,
        }]))
    }

    #[tokio::test]
    async fn reports_an_agent_may_not_send_are_refused() {
        let (_dir, node, service) = one_node_with_h1().await;
        let h1 = agent("h1");
        // States only the coordinator sets.
        for state in [
            WorkspaceState::Destroying,
            WorkspaceState::Lost,
            WorkspaceState::Scheduled,
        ] {
            assert_eq!(
                code(ask(&service, &h1, report(state, None)).await),
                Some(ErrorCode::InvalidArgument),
                "{state}"
            );
        }
        // Errors longer than the state keeps.
        let long = WireError::new(ErrorCode::ContainerError, "x".repeat(5_000));
        assert_eq!(
            code(ask(&service, &h1, report(WorkspaceState::Failed, Some(long))).await),
            Some(ErrorCode::InvalidArgument)
        );
        let lines = WireError::new(ErrorCode::ContainerError, "exited").with_detail(
            ErrorDetail::ContainerExited {
                exit_code: 1,
                oom_killed: false,
                last_lines: vec!["y".into(); 51],
            },
        );
        assert_eq!(
            code(ask(&service, &h1, report(WorkspaceState::Failed, Some(lines))).await),
            Some(ErrorCode::InvalidArgument)
        );
        // A report of a workspace the state does not know changes nothing, and is fine.
        assert!(matches!(
            ask(&service, &h1, report(WorkspaceState::Running, None)).await,
            Ok(Response::Ack)
        ));
        node.stop().await.unwrap();
    }

    async fn next_update(reply: &mut Reply) -> Option<Result<Response, WireError>> {
        update_within(reply, Duration::from_millis(500)).await
    }

    async fn update_within(
        reply: &mut Reply,
        limit: Duration,
    ) -> Option<Result<Response, WireError>> {
        let Reply::Stream(updates) = reply else {
            panic!("not a stream");
        };
        tokio::time::timeout(limit, updates.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_watch_pushes_only_newer_versions_and_a_new_watch_replaces_the_old() {
        let (_dir, node, service) = one_node_with_h1().await;
        let h1 = agent("h1");
        let watch = |known_version| Request::Agent(AgentRequest::WatchDesired { known_version });
        let mut first = service.handle(&h1, RequestId::random(), watch(None)).await;
        match next_update(&mut first).await {
            Some(Ok(Response::Desired(desired))) => assert_eq!(desired.version, 0),
            other => panic!("{other:?}"),
        }
        // An agent ahead of even a linearizable read holds another history (a rebuilt
        // cluster): it is told the current state once (it ignores it, and says so), then only
        // newer ones.
        let mut ahead = service
            .handle(&h1, RequestId::random(), watch(Some(5)))
            .await;
        match next_update(&mut ahead).await {
            Some(Ok(Response::Desired(desired))) => assert_eq!(desired.version, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(next_update(&mut ahead).await, None);
        // The newer watch replaced the first, which ends with a reason.
        assert_eq!(
            code(
                update_within(&mut first, Duration::from_secs(3))
                    .await
                    .expect("an end within the watch's leadership check (1 s)")
            ),
            Some(ErrorCode::InvalidArgument)
        );
        // Only agents watch.
        let mut refused = service
            .handle(&user(Role::Admin), RequestId::random(), watch(None))
            .await;
        let Reply::Once(result) = &mut refused else {
            panic!("a refusal is one answer");
        };
        assert_eq!(
            result.as_ref().err().map(|e| e.code),
            Some(ErrorCode::PermissionDenied)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn only_admins_list_hosts_and_writes_are_never_stale() {
        let (_dir, node, service) = one_node_with_h1().await;
        let hosts = Request::Admin(AdminRequest::Hosts);
        assert_eq!(
            code(ask(&service, &user(Role::User), hosts.clone()).await),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(ask(&service, &agent("h1"), hosts.clone()).await),
            Some(ErrorCode::PermissionDenied)
        );
        for request in [hosts, Request::Stale(StaleRead::Admin(AdminRequest::Hosts))] {
            match ask(&service, &user(Role::Admin), request).await {
                Ok(Response::Hosts(list)) => assert_eq!(list.len(), 1),
                other => panic!("{other:?}"),
            }
        }
        let stale_write = Request::Stale(StaleRead::Admin(AdminRequest::ClusterRemove(
            NodeId::new(1).unwrap(),
        )));
        assert_eq!(
            code(ask(&service, &user(Role::Admin), stale_write).await),
            Some(ErrorCode::InvalidArgument)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn only_coordinators_speak_raft_and_only_for_themselves() {
        let (_dir, node, service) = one_node().await;
        let raft = |bytes: Vec<u8>| Request::Peer(PeerRequest::Raft(vec![bytes]));
        assert_eq!(
            code(ask(&service, &user(Role::Admin), raft(vec![])).await),
            Some(ErrorCode::PermissionDenied)
        );
        let coordinator2 = peer(Identity::Coordinator(NodeId::new(2).unwrap()));
        assert_eq!(
            code(ask(&service, &coordinator2, raft(vec![0xff, 0xff, 0xff])).await),
            Some(ErrorCode::ProtocolError)
        );
        // A well-formed message that claims to come from node 3, sent by node 2.
        let mut message = consensus::RaftMessage {
            from: 3,
            to: 1,
            ..Default::default()
        };
        let forged = consensus::encode_message(&message).unwrap();
        assert_eq!(
            code(ask(&service, &coordinator2, raft(forged)).await),
            Some(ErrorCode::PermissionDenied)
        );
        message.from = 2;
        message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
        let honest = consensus::encode_message(&message).unwrap();
        assert!(matches!(
            ask(&service, &coordinator2, raft(honest)).await,
            Ok(Response::Ack)
        ));
        // A proposal in Raft's own form would put unchecked bytes in the log, and a local
        // message never travels: both are refused, however well-formed.
        for kind in [
            raft::eraftpb::MessageType::MsgPropose,
            raft::eraftpb::MessageType::MsgHup,
        ] {
            message.set_msg_type(kind);
            message.mut_entries().push(raft::eraftpb::Entry {
                data: vec![0xff; 8].into(),
                ..Default::default()
            });
            let refused = consensus::encode_message(&message).unwrap();
            assert_eq!(
                code(ask(&service, &coordinator2, raft(refused)).await),
                Some(ErrorCode::ProtocolError),
                "{kind:?}"
            );
        }
        let corrupt = Request::Peer(PeerRequest::Propose(vec![1, 2, 3]));
        assert_eq!(
            code(ask(&service, &coordinator2, corrupt).await),
            Some(ErrorCode::ProtocolError)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_last_voter_cannot_be_removed() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let remove = Request::Admin(AdminRequest::ClusterRemove(NodeId::new(1).unwrap()));
        assert_eq!(
            code(ask(&service, &user(Role::Admin), remove).await),
            Some(ErrorCode::InvalidArgument)
        );
        // Refused before it reached the log: the node still leads, and its driver still runs.
        let status = admin_status(&service).await;
        assert_eq!(status.leader, NodeId::new(1).ok());
        assert_eq!(status.members.len(), 1);
        node.stop().await.unwrap();
    }

    async fn admin_status(service: &Service) -> ClusterStatus {
        match ask(
            service,
            &user(Role::Admin),
            Request::Admin(AdminRequest::Status),
        )
        .await
        {
            Ok(Response::ClusterStatus(status)) => status,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn status_names_the_one_node_as_leader() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let status = admin_status(&service).await;
        assert_eq!(status.leader, Some(NodeId::new(1).unwrap()));
        assert_eq!(status.members.len(), 1);
        assert_eq!(status.members[0].role, MemberRole::Leader);
        assert!(status.members[0].healthy);
        assert!(status.applied_index >= 2, "{status:?}");
        node.stop().await.unwrap();
    }
}
