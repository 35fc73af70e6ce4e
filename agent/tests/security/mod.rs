//! An in-test coordinator for the agent's side of fleet security: it enrols hosts whose token
//! secret it knows, renews the certificate of whoever asks over its connection, and pushes a deny
//! list it is told; its certificates live as long as the test says. Real QUIC on loopback.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::credentials::Secret;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::join::{DenyList, EnrolRequest, Issued, JoinToken, RenewRequest, TokenId};
use nexus_protocol::message::{AgentRequest, Pong, Request, Response};
use nexus_protocol::model::Labels;
use nexus_protocol::pki::{
    CertificateAuthority, DEFAULT_CA_VALIDITY, PkiDir, SubjectName, Validity,
};
use nexus_protocol::transport::{
    AcceptPolicy, Credentials, Handler, Peer, Reply, Server, TransportConfig,
};
use nexus_protocol::{HostId, NodeId, RequestId, UserName};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot, watch};

/// A cluster CA in a temporary directory.
pub struct Cluster {
    pub dir: TempDir,
    pub pki: PkiDir,
}

impl Cluster {
    pub fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir::new(dir.path().join("ca"));
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
        Cluster { dir, pki }
    }

    pub fn ca(&self) -> CertificateAuthority {
        self.pki.load_ca().unwrap()
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.pki.ca_cert()).unwrap()
    }

    pub fn fingerprint(&self) -> String {
        Credentials::from_pem(self.ca_pem().as_bytes(), None)
            .unwrap()
            .ca_fingerprint()
            .to_string()
    }

    /// A join token of this cluster whose secret [`Coordinator`]s of it accept.
    pub fn token(&self) -> JoinToken {
        JoinToken {
            ca_fingerprint: self.fingerprint(),
            id: "0123456789abcdef".parse::<TokenId>().unwrap(),
            secret: Secret::new("5".repeat(64)),
        }
    }

    /// Files for `identity` in this cluster's directory, valid for `validity` on loopback.
    pub fn credentials(&self, identity: &Identity, validity: Validity) -> Credentials {
        self.pki
            .issue(identity, &loopback(), validity, true)
            .unwrap();
        Credentials::from_pki_dir(self.pki.path(), identity).unwrap()
    }

    /// Writes `identity`'s files, valid for `validity`, into `dir` (with this CA's ca.pem).
    pub fn issue_into(&self, dir: &Path, identity: &Identity, validity: Validity) {
        let issued = self.ca().issue(identity, &loopback(), validity).unwrap();
        PkiDir::new(dir)
            .write_issued(identity, &issued.cert_pem, &issued.key_pem, &self.ca_pem())
            .unwrap();
    }
}

pub fn loopback() -> Vec<SubjectName> {
    vec![
        SubjectName::Ip([127, 0, 0, 1].into()),
        SubjectName::Dns("localhost".into()),
    ]
}

pub fn host(name: &str) -> Identity {
    Identity::Agent(HostId::new(name).unwrap())
}

pub fn user(name: &str) -> Identity {
    Identity::User {
        name: UserName::new(name).unwrap(),
        role: Role::User,
    }
}

/// Valid from now (not a minute back, so that a life of seconds is that long) for `life`.
pub fn lasting(life: Duration) -> Validity {
    let now = clock::now();
    Validity {
        not_before: now,
        not_after: now.saturating_add(life),
    }
}

/// Valid for an hour that ended an hour ago.
pub fn expired() -> Validity {
    let now = clock::now().0;
    Validity {
        not_before: Timestamp(now - 2 * 3_600_000),
        not_after: Timestamp(now - 3_600_000),
    }
}

/// What the in-test coordinator does and saw.
pub struct Behaviour {
    pub ca: CertificateAuthority,
    pub ca_pem: String,
    pub secret: String,
    /// How long the certificates it issues live.
    pub life: Duration,
    pub labels: Labels,
    /// Renewals to refuse before it signs any.
    pub refuse_renewals: AtomicU32,
    pub enrolments: Mutex<Vec<EnrolRequest>>,
    pub renewals: Mutex<Vec<(Identity, RenewRequest)>>,
    pub deny: watch::Sender<DenyList>,
    /// Deny-list subscriptions opened.
    pub deny_watches: AtomicU32,
}

impl Behaviour {
    fn sign(
        &self,
        identity: &Identity,
        csr_pem: &str,
        names: &[String],
    ) -> Result<Issued, WireError> {
        let names: Vec<SubjectName> = names.iter().map(|n| SubjectName::parse(n)).collect();
        let cert_pem = self
            .ca
            .sign_request(csr_pem, identity, &names, lasting(self.life))
            .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        Ok(Issued {
            identity: identity.clone(),
            cert_pem,
            ca_pem: self.ca_pem.clone(),
            labels: self.labels.clone(),
        })
    }

    fn renew(&self, peer: &Peer, request: RenewRequest) -> Result<Response, WireError> {
        let refuse = self
            .refuse_renewals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        self.renewals
            .lock()
            .unwrap()
            .push((peer.identity.clone(), request.clone()));
        if refuse {
            return Err(WireError::new(ErrorCode::BackendUnavailable, "not now"));
        }
        let issued = self.sign(&peer.identity, &request.csr_pem, &request.names)?;
        Ok(Response::Issued(Box::new(issued)))
    }

    fn watch_deny_list(&self) -> Reply {
        self.deny_watches.fetch_add(1, Ordering::SeqCst);
        let (sender, receiver) = mpsc::channel(4);
        let mut deny = self.deny.subscribe();
        tokio::spawn(async move {
            loop {
                let list = deny.borrow_and_update().clone();
                if sender
                    .send(Box::new(Ok(Response::DenyList(list))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    changed = deny.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                }
            }
        });
        Reply::Stream(receiver)
    }
}

pub struct Coordinator {
    pub address: SocketAddr,
    pub behaviour: Arc<Behaviour>,
    _stop: oneshot::Sender<()>,
}

struct Serving(Arc<Behaviour>);

impl Handler for Serving {
    async fn handle(&self, peer: &Peer, _id: RequestId, request: Request) -> Reply {
        match request {
            Request::Ping => Reply::Once(Ok(Response::Pong(Pong {
                software: "test".into(),
                server: Identity::Coordinator(NodeId::new(1).unwrap()),
                client: peer.identity.clone(),
                time: clock::now(),
            }))),
            Request::Agent(AgentRequest::Renew(renew)) => Reply::Once(self.0.renew(peer, renew)),
            Request::Agent(AgentRequest::WatchDenyList) => self.0.watch_deny_list(),
            _ => Reply::Once(Err(WireError::new(ErrorCode::Unsupported, "not here"))),
        }
    }

    async fn enrol(
        &self,
        _address: SocketAddr,
        request: EnrolRequest,
    ) -> Result<Issued, WireError> {
        self.0.enrolments.lock().unwrap().push(request.clone());
        if request.secret.expose() != self.0.secret {
            return Err(WireError::new(ErrorCode::TokenInvalid, "no such token"));
        }
        let identity = Identity::Agent(request.host_id.clone().unwrap());
        self.0.sign(&identity, &request.csr_pem, &request.names)
    }
}

impl Coordinator {
    /// A coordinator of `cluster` on loopback whose certificates live `life`.
    pub fn start(cluster: &Cluster, life: Duration) -> Coordinator {
        let credentials = cluster.credentials(
            &Identity::Coordinator(NodeId::new(1).unwrap()),
            lasting(Duration::from_secs(3600)),
        );
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            &credentials,
            AcceptPolicy::everyone().with_enrolment(),
            TransportConfig::default(),
        )
        .unwrap();
        let address = server.local_addr().unwrap();
        let behaviour = Arc::new(Behaviour {
            ca: cluster.ca(),
            ca_pem: cluster.ca_pem(),
            secret: cluster.token().secret.expose().to_string(),
            life,
            labels: Labels::from([("zone".to_string(), "eu-1".to_string())]),
            refuse_renewals: AtomicU32::new(0),
            enrolments: Mutex::new(Vec::new()),
            renewals: Mutex::new(Vec::new()),
            deny: watch::Sender::new(DenyList::default()),
            deny_watches: AtomicU32::new(0),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(Arc::new(Serving(behaviour.clone())), async {
            let _ = stopped.await;
        }));
        Coordinator {
            address,
            behaviour,
            _stop: stop,
        }
    }
}

/// An agent's configuration from the required flags and `extra`, its data dir in `dir`.
pub fn agent_config(
    dir: &Path,
    host: &str,
    coordinator: SocketAddr,
    extra: &[&str],
) -> nexus_agent::Config {
    use clap::Parser;
    let data = dir.join("data");
    let mut list = vec![
        "nexus-agent".to_string(),
        "--host-id".into(),
        host.into(),
        "--coordinator".into(),
        coordinator.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    list.extend(extra.iter().map(|s| s.to_string()));
    let args = nexus_agent::config::Args::try_parse_from(list).unwrap();
    nexus_agent::Config::from_args(args).unwrap()
}

/// Writes `token` into a file in `dir` and answers its path.
pub fn token_file(dir: &Path, token: &JoinToken) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{}\n", token.reveal().expose())).unwrap();
    path
}
