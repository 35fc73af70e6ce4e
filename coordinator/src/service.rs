//! The coordinator's request handler: who may ask what, and the answers this build can give.
//!
//! The registry of hosts here is soft state in this process's memory: agents re-register on every
//! connect, so losing it loses nothing. The replicated hosts table replaces it as the source of
//! truth when the Raft state machine lands; heartbeats and stats stay here by design.

use std::collections::BTreeMap;
use std::sync::Mutex;

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, IdentityKind};
use nexus_protocol::message::{AdminRequest, AgentRequest, HostView, Pong, Request, Response};
use nexus_protocol::model::{HostInfo, HostStatus};
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{HostId, RequestId};

#[derive(Debug)]
pub struct Service {
    identity: Identity,
    hosts: Mutex<BTreeMap<HostId, HostView>>,
}

impl Service {
    pub fn new(identity: Identity) -> Service {
        Service {
            identity,
            hosts: Mutex::new(BTreeMap::new()),
        }
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, BTreeMap<HostId, HostView>> {
        // A panic while holding this lock cannot leave the map half-updated (every update is one
        // insert or one field write), so a poisoned lock is still safe to use.
        self.hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers one request from `peer`.
    pub fn answer(&self, peer: &Peer, request: Request) -> Result<Response, WireError> {
        match request {
            Request::Ping => Ok(Response::Pong(Pong {
                software: nexus_protocol::SOFTWARE_VERSION.into(),
                server: self.identity.clone(),
                client: peer.identity.clone(),
                time: clock::now(),
            })),
            Request::Agent(request) => self.agent(peer, request),
            Request::Admin(AdminRequest::Hosts) => {
                require(peer, &[IdentityKind::Admin, IdentityKind::Coordinator])?;
                Ok(Response::Hosts(self.hosts().values().cloned().collect()))
            }
            Request::Admin(AdminRequest::Status) | Request::Workspace(_) => Err(WireError::new(
                ErrorCode::Unsupported,
                "this coordinator build does not serve that request yet (it arrives with the Raft state machine)",
            )),
        }
    }

    fn agent(&self, peer: &Peer, request: AgentRequest) -> Result<Response, WireError> {
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
                self.register(info);
                Ok(Response::Registered {
                    host_id: host_id.clone(),
                })
            }
            AgentRequest::Heartbeat { sequence: _, stats } => {
                let mut hosts = self.hosts();
                let host = hosts.get_mut(host_id).ok_or_else(|| {
                    WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("host {host_id} has not registered; register first"),
                    )
                })?;
                host.last_heartbeat = Some(clock::now());
                if stats.is_some() {
                    host.stats = stats;
                }
                Ok(Response::Ack)
            }
            AgentRequest::WatchDesired { .. } | AgentRequest::ReportObserved(_) => {
                Err(WireError::new(
                    ErrorCode::Unsupported,
                    "this coordinator build does not assign workspaces yet",
                ))
            }
        }
    }

    fn register(&self, info: HostInfo) {
        let now = clock::now();
        let mut hosts = self.hosts();
        match hosts.get_mut(&info.host_id) {
            Some(host) => {
                host.info = info;
                host.last_heartbeat = Some(now);
            }
            None => {
                tracing::info!(host = %info.host_id, cpus = info.cpus, "host registered");
                let view = HostView {
                    info,
                    status: HostStatus::Ready,
                    workspaces: 0,
                    stats: None,
                    last_heartbeat: Some(now),
                };
                hosts.insert(view.info.host_id.clone(), view);
            }
        }
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

impl Handler for Service {
    async fn handle(&self, peer: &Peer, request_id: RequestId, request: Request) -> Reply {
        let result = self.answer(peer, request);
        if let Err(error) = &result {
            tracing::debug!(%request_id, peer = %peer.identity, code = %error.code, "request refused: {}", error.message);
        }
        Reply::Once(result)
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::identity::Role;
    use nexus_protocol::model::PortRange;
    use nexus_protocol::{NodeId, UserName};

    use super::*;

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

    #[test]
    fn agents_speak_only_for_their_own_host() {
        let service = Service::new(Identity::Coordinator(NodeId::new(1).unwrap()));
        let register =
            |p: &Peer, host| service.answer(p, Request::Agent(AgentRequest::Register(info(host))));
        assert_eq!(
            code(register(&agent("h1"), "h2")),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(register(&user(Role::Admin), "h1")),
            Some(ErrorCode::PermissionDenied)
        );
        let heartbeat = Request::Agent(AgentRequest::Heartbeat {
            sequence: 1,
            stats: None,
        });
        assert_eq!(
            code(service.answer(&agent("h1"), heartbeat.clone())),
            Some(ErrorCode::InvalidArgument)
        );
        assert!(matches!(
            register(&agent("h1"), "h1"),
            Ok(Response::Registered { .. })
        ));
        assert!(matches!(
            service.answer(&agent("h1"), heartbeat),
            Ok(Response::Ack)
        ));
    }

    #[test]
    fn only_admins_list_hosts() {
        let service = Service::new(Identity::Coordinator(NodeId::new(1).unwrap()));
        service
            .answer(
                &agent("h1"),
                Request::Agent(AgentRequest::Register(info("h1"))),
            )
            .unwrap();
        let hosts = Request::Admin(AdminRequest::Hosts);
        assert_eq!(
            code(service.answer(&user(Role::User), hosts.clone())),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(service.answer(&agent("h1"), hosts.clone())),
            Some(ErrorCode::PermissionDenied)
        );
        match service.answer(&user(Role::Admin), hosts) {
            Ok(Response::Hosts(list)) => assert_eq!(list.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unbuilt_requests_say_so() {
        let service = Service::new(Identity::Coordinator(NodeId::new(1).unwrap()));
        let status = service.answer(&user(Role::Admin), Request::Admin(AdminRequest::Status));
        assert_eq!(code(status), Some(ErrorCode::Unsupported));
    }
}
