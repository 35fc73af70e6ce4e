//! The coordinator's request handler: who may ask what, and the answers. It does not own the
//! Raft node (that is [`crate::cluster`]) nor decide who is down ([`crate::detector`]).
//!
//! Writes go through Raft ([`Cluster::propose`]; a follower forwards them to the leader) and are
//! answered once applied. Reads are linearizable (ReadIndex) unless the client asks for a stale
//! read. Heartbeats and host stats are soft state in this process's memory, never in the Raft log:
//! agents send them every few seconds, so losing them loses nothing.
//!
//! [`Service`] is one type; its requests are answered in one submodule per kind of caller:
//! `admin` (admins' fleet and cluster requests), `agents` (registration, heartbeats, reports),
//! `workspaces` (users' workspace requests), `peers` (the other coordinators' Raft traffic),
//! `watch` (agents' desired-state subscriptions), `list_stream` (the whole list as a stream of
//! pages) and `logs` (this node's own log, for admins). `liveness` keeps the heartbeats and runs
//! the failure detector's loop; `checks` says who may ask and what a request may hold; `views`
//! turns the state into answers; `history` answers what the state remembers (a workspace's
//! events, a request's record).

mod activity;
mod admin;
mod agents;
mod backups;
mod ca_rotation;
mod checks;
mod credentials;
mod history;
mod list_stream;
mod liveness;
mod logs;
mod maintenance;
mod notices;
mod peers;
mod policies;
mod repos;
mod restore;
mod security;
#[cfg(test)]
mod testing;
mod views;
mod watch;
mod watch_deny;
mod workspace_watch;
mod workspaces;
mod worktrees;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::hop::Hop;
use nexus_protocol::identity::Identity;
use nexus_protocol::logging::LogFiles;
use nexus_protocol::message::{
    AdminRequest, AgentRequest, Pong, Request, Response, StaleRead, WorkspaceRequest,
};
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{HostId, RequestId};
use tracing::Instrument;

pub use self::backups::{Backups, ScheduleMemory};
pub use self::credentials::CredentialStore;
pub use self::maintenance::Maintainer;
pub use self::views::cluster_status;

use self::liveness::Liveness;
use crate::cluster::{Cluster, Consistency};
use crate::detector;
use crate::hops;
use crate::locks::lock;
use crate::metrics::request_kind;
use crate::placer::Placer;

/// The handler of every request a coordinator takes. Shared by every connection (in an `Arc`);
/// its maps are this node's soft state, which only the leader fills.
#[derive(Debug)]
pub struct Service {
    identity: Identity,
    cluster: Cluster,
    /// Each host's latest heartbeat and samples.
    liveness: Mutex<BTreeMap<HostId, Liveness>>,
    /// The newest desired-state watch of each host: a new watch replaces the host's older one.
    watches: watch::Watches,
    /// Creates go through it, batched into shared log entries.
    placer: Placer,
    /// Where each host's agent serves logs and exec, as it last said (soft state, like
    /// heartbeats: an agent says it again to every new leader).
    endpoints: Mutex<BTreeMap<HostId, String>>,
    watch_numbers: std::sync::atomic::AtomicU64,
    /// How long a host may be silent before the leader marks it down (a reload may change it).
    host_ttl: crate::reload::HostTtl,
    /// This node's log (`nexus admin logs`), when it writes one.
    logs: Option<LogFiles>,
    /// What this node tells admins of itself; without it, diagnostics are `UNSUPPORTED`.
    diagnostics: Option<Arc<crate::diagnostics::Diagnostics>>,
    /// Re-reads this node's configuration (`ReloadConfig`); without it, `UNSUPPORTED`.
    reloader: Option<Arc<crate::reload::Reloader>>,
    /// This node's backup directory; without it, backups are `UNSUPPORTED`.
    backups: Option<Backups>,
    /// This node's store and metrics for host maintenance; without it, `UNSUPPORTED`.
    maintainer: Option<Arc<maintenance::Maintainer>>,
    /// The credential store's keys (this node's key file) and soft state.
    credentials: Arc<CredentialStore>,
    /// The cluster CA as this node holds it; without it, fleet security is `UNSUPPORTED`.
    signing: Option<Arc<crate::signing::Signing>>,
    /// Other coordinators' requests arriving in pieces, by sender.
    chunks: Mutex<crate::peers::chunks::Assembler<nexus_protocol::NodeId>>,
    /// Each host's last report found a repeat, by digest, and its workspaces' epoch then.
    repeats: agents::Repeats,
    /// The lists being streamed ([`list_stream::STREAMS_AT_ONCE`] at most).
    list_streams: Arc<tokio::sync::Semaphore>,
    /// The workspaces' watches ([`workspace_watch::WATCHES_AT_ONCE`] at most).
    workspace_watches: workspace_watch::Watches,
}

impl Service {
    /// Proposes a change this coordinator decided itself (a loop's: the failure detector, the
    /// policies, the maintenance window), as itself, under a request id of its own.
    async fn propose_own(&self, command: crate::state::Command) -> Result<(), WireError> {
        self.cluster
            .propose(RequestId::random(), self.identity.clone(), command)
            .await
    }

    /// Must be called within the Tokio runtime (it starts the placement task).
    pub fn new(identity: Identity, cluster: Cluster) -> Service {
        let placer = Placer::start(cluster.clone(), views::view_of);
        Service {
            identity,
            cluster,
            liveness: Mutex::new(BTreeMap::new()),
            watches: Arc::new(Mutex::new(BTreeMap::new())),
            placer,
            endpoints: Mutex::new(BTreeMap::new()),
            watch_numbers: std::sync::atomic::AtomicU64::new(1),
            host_ttl: Arc::new(Mutex::new(detector::DEFAULT_HOST_TTL)),
            logs: None,
            diagnostics: None,
            backups: None,
            repeats: agents::Repeats::default(),
            chunks: Mutex::new(crate::peers::chunks::Assembler::new(
                crate::peers::chunks::Bounds::default(),
            )),
            reloader: None,
            maintainer: None,
            credentials: Arc::new(CredentialStore::default()),
            signing: None,
            list_streams: list_stream::streams(),
            workspace_watches: workspace_watch::watches(),
        }
    }

    /// The same service, making join tokens and signing certificates with `signing`.
    pub fn with_signing(mut self, signing: Arc<crate::signing::Signing>) -> Service {
        self.signing = Some(signing);
        self
    }

    /// The same service, making and keeping backups in `backups`.
    pub fn with_backups(mut self, backups: Backups) -> Service {
        self.backups = Some(backups);
        self
    }

    /// The same service, answering admins' diagnostics from `diagnostics`.
    pub fn with_diagnostics(
        mut self,
        diagnostics: Arc<crate::diagnostics::Diagnostics>,
    ) -> Service {
        self.diagnostics = Some(diagnostics);
        self
    }

    /// The same service, reloading its configuration with `reloader` when an admin asks.
    pub fn with_reloader(mut self, reloader: Arc<crate::reload::Reloader>) -> Service {
        self.reloader = Some(reloader);
        self
    }

    /// The host TTL's handle: what a reload changes.
    pub fn host_ttl_handle(&self) -> crate::reload::HostTtl {
        self.host_ttl.clone()
    }

    /// The host TTL in force.
    fn host_ttl(&self) -> Duration {
        *lock(&self.host_ttl)
    }

    /// The same service, answering `DaemonLogs` from the log in `files`.
    pub fn with_logs(mut self, files: LogFiles) -> Service {
        self.logs = Some(files);
        self
    }

    /// The same service, marking hosts down after `ttl` of silence.
    pub fn with_host_ttl(self, ttl: Duration) -> Service {
        *lock(&self.host_ttl) = ttl;
        self
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

    /// The hosts' latest heartbeats, locked.
    fn liveness(&self) -> std::sync::MutexGuard<'_, BTreeMap<HostId, Liveness>> {
        lock(&self.liveness)
    }
}

impl Handler for Service {
    async fn handle(&self, peer: &Peer, request_id: RequestId, request: Request) -> Reply {
        let kind = request_kind(&request);
        let started = Instant::now();
        let watch = match request {
            Request::Agent(AgentRequest::WatchDesired { known_version }) => {
                Some((known_version, false))
            }
            Request::Agent(AgentRequest::WatchDesiredCauses { known_version }) => {
                Some((known_version, true))
            }
            _ => None,
        };
        if let Request::Agent(AgentRequest::WatchDenyList | AgentRequest::WatchTrust) = request {
            let reply = if let Request::Agent(AgentRequest::WatchTrust) = request {
                self.watch_trust(peer).await
            } else {
                self.watch_deny_list(peer).await
            };
            let code = match &reply {
                Reply::Once(Err(error)) => error.code.as_str(),
                _ => "OK",
            };
            self.cluster.metrics().api_requests.inc([kind, code]);
            return reply;
        }
        if let Some((known_version, with_causes)) = watch {
            // A subscription: counted when it starts (or is refused), its life not timed.
            let reply = self.watch_desired(peer, known_version, with_causes).await;
            let code = match &reply {
                Reply::Once(Err(error)) => error.code.as_str(),
                _ => "OK",
            };
            self.cluster.metrics().api_requests.inc([kind, code]);
            return reply;
        }
        // A log may be a subscription (`--follow`), the whole list is a stream of pages and a
        // workspace's watch a stream of its details: answered as streams, like an agent's
        // watch, timed until the stream is handed over.
        let streamed = match request {
            Request::Admin(AdminRequest::DaemonLogs(query))
            | Request::Stale(StaleRead::Admin(AdminRequest::DaemonLogs(query))) => {
                Ok(self.daemon_logs(peer, query).await)
            }
            Request::Workspace(WorkspaceRequest::ListStream) => {
                Ok(self.list_stream(peer, Consistency::Linearizable).await)
            }
            Request::Stale(StaleRead::Workspace(WorkspaceRequest::ListStream)) => {
                Ok(self.list_stream(peer, Consistency::Stale).await)
            }
            Request::Workspace(WorkspaceRequest::Watch(name)) => Ok(self
                .watch_workspace(peer, name, Consistency::Linearizable)
                .await),
            Request::Stale(StaleRead::Workspace(WorkspaceRequest::Watch(name))) => {
                Ok(self.watch_workspace(peer, name, Consistency::Stale).await)
            }
            request => Err(request),
        };
        let request = match streamed {
            Ok(reply) => {
                let code = match &reply {
                    Reply::Once(Err(error)) => error.code.as_str(),
                    _ => "OK",
                };
                self.cluster
                    .metrics()
                    .request(kind, code, started.elapsed());
                return reply;
            }
            Err(request) => request,
        };
        // The request's hop: writes at INFO, reads at DEBUG, the fleet's pulse not at all.
        let hop = hops::request_level(&request).map(|level| {
            let mut hop = Hop::new(hops::REQUEST, Some(request_id)).kind(kind);
            if let Some(workspace) = hops::request_workspace(&request) {
                hop = hop.workspace(workspace);
            }
            hop.at(level)
        });
        let span = hop.clone().unwrap_or_else(tracing::Span::none);
        let result = self
            .answer(peer, request_id, request)
            .instrument(span)
            .await;
        if let Some(span) = &hop {
            nexus_protocol::hop::record(span, &result);
        }
        let code = match &result {
            Ok(_) => "OK",
            Err(error) => {
                tracing::debug!(%request_id, peer = %peer.identity, code = %error.code, "request refused: {}", error.message);
                error.code.as_str()
            }
        };
        self.cluster
            .metrics()
            .request(kind, code, started.elapsed());
        Reply::Once(result)
    }

    async fn enrol(
        &self,
        address: std::net::SocketAddr,
        request: nexus_protocol::join::EnrolRequest,
    ) -> Result<nexus_protocol::join::Issued, WireError> {
        self.enrol_anonymous(address, request).await
    }
}
