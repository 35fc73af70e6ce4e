//! The credential store on the coordinators: admins set, rotate, delete, list and check
//! credentials and rotate the key; agents ask for one for an operation of their own workspace.
//!
//! The leader seals each secret (`nexus_protocol::seal`) under the newest key of its key file
//! before it proposes, so apply stays deterministic and the state holds only ciphertext. The key
//! file is this node's ([`CredentialStore`]), read at start and at every reload; without one,
//! every credential operation answers `CREDENTIALS_KEY_MISSING`. Opening a secret happens only
//! to hand it on: to a host that checks it, or to an agent for one operation of one of its own
//! workspaces. A secret is never logged, and no answer but those two carries one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_protocol::credentials::{
    self, CredentialAsk, CredentialCheckReport, CredentialKind, CredentialProbe, CredentialPurpose,
    CredentialSpec, GrantedCredential, KeyRotationReport, MAX_SECRET_LEN, Secret,
};
use nexus_protocol::error::{ErrorCode, InvalidValue, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use nexus_protocol::model::HostStatus;
use nexus_protocol::seal::{self, KeyRing, OpenError};
use nexus_protocol::transport::{Connector, Peer};
use nexus_protocol::{HostId, RequestId};

use super::Service;
use super::checks::denied;
use crate::cluster::Consistency;
use crate::credential_keys::CredentialKeys;
use crate::locks::lock;
use crate::state::{Command, CredentialRecord, Resealed};

/// How often a credential's last use is recorded, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How long a host has to try a credential.
const CHECK_LIMIT: Duration = Duration::from_secs(60);
/// Re-sealed records per Raft entry.
const RESEAL_BATCH: usize = 128;

/// The credential store's side of this node: its keys (reloaded) and soft state.
#[derive(Debug, Default)]
pub struct CredentialStore {
    keys: Arc<CredentialKeys>,
    /// When each credential's last use was last recorded (the leader's soft state).
    touched: Mutex<BTreeMap<String, Instant>>,
    /// As this coordinator, to ask an agent to check a credential.
    connector: Option<Connector>,
}

impl CredentialStore {
    /// A store sealing with `keys`, reaching agents through `connector`.
    pub fn new(keys: Arc<CredentialKeys>, connector: Option<Connector>) -> CredentialStore {
        CredentialStore {
            keys,
            touched: Mutex::new(BTreeMap::new()),
            connector,
        }
    }

    /// The ids of the keys in force, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.ids()
    }

    pub(super) fn keys(&self) -> Result<Arc<KeyRing>, WireError> {
        self.keys.current()
    }

    /// Whether a use of `name` is to be recorded now (at most once per [`TOUCH_EVERY`]).
    fn touch_due(&self, name: &str) -> bool {
        let now = Instant::now();
        let mut touched = lock(&self.touched);
        // Names of credentials deleted since stay: bounded all the same.
        if touched.len() > 4 * credentials::MAX_CREDENTIALS {
            touched.clear();
        }
        match touched.get(name) {
            Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                touched.insert(name.to_string(), now);
                true
            }
        }
    }
}

fn opened(record: &CredentialRecord, keys: &KeyRing) -> Result<Secret, WireError> {
    seal::open(keys, &record.spec, &record.sealed).map_err(|error| match error {
        OpenError::KeyMissing(_) => WireError::new(
            ErrorCode::CredentialsKeyMissing,
            format!("credential {:?}: {error}", record.spec.name),
        ),
        OpenError::Damaged => WireError::new(
            ErrorCode::Internal,
            format!("credential {:?}: {error}", record.spec.name),
        ),
    })
}

fn sealed_for(
    keys: &KeyRing,
    spec: &CredentialSpec,
    secret: &Secret,
) -> Result<seal::Sealed, WireError> {
    let key = keys.newest().ok_or_else(|| {
        WireError::new(
            ErrorCode::CredentialsKeyMissing,
            "the key file holds no key",
        )
    })?;
    seal::seal(key, spec, secret).map_err(|error| WireError::new(ErrorCode::Internal, error.0))
}

fn check_secret(secret: &Secret) -> Result<(), WireError> {
    let value = secret.expose();
    if value.is_empty() || value.len() > MAX_SECRET_LEN || value.chars().any(char::is_control) {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("a secret is 1 to {MAX_SECRET_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

fn no_such(name: &str) -> WireError {
    WireError::new(
        ErrorCode::InvalidArgument,
        format!("no credential is named {name:?}: `nexus admin credentials list` shows them"),
    )
}

fn invalid(error: InvalidValue) -> WireError {
    WireError::new(ErrorCode::InvalidArgument, error.0)
}

impl Service {
    /// The same service, sealing and opening credentials with `store`'s keys.
    pub fn with_credentials(mut self, store: Arc<CredentialStore>) -> Service {
        self.credentials = store;
        self
    }

    fn count_credential(&self, kind: &str, op: &str, outcome: &str) {
        self.cluster
            .metrics()
            .credential_operations
            .inc([kind, op, outcome]);
    }

    /// Counts a credential operation's result under `kind` and `op`.
    fn counted<T>(
        &self,
        kind: &str,
        op: &str,
        result: Result<T, WireError>,
    ) -> Result<T, WireError> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) if error.code == ErrorCode::PermissionDenied => "denied",
            Err(_) => "failed",
        };
        self.count_credential(kind, op, outcome);
        result
    }

    async fn credential(&self, name: &str) -> Result<CredentialRecord, WireError> {
        let name = name.to_string();
        let key = name.clone();
        self.cluster
            .read(Consistency::Linearizable, move |state| {
                state.credentials().get(&key).cloned()
            })
            .await?
            .ok_or_else(|| no_such(&name))
    }

    /// Admins' credential requests.
    pub(super) async fn credentials_admin(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        match request {
            AdminRequest::SetCredential { spec, secret } => {
                let kind = spec.kind.as_str();
                let result = self.set_credential(peer, request_id, spec, secret).await;
                self.counted(kind, "set", result)
            }
            AdminRequest::RotateCredential { name, secret } => {
                let result = self
                    .rotate_credential(peer, request_id, &name, secret)
                    .await;
                let kind = result.as_ref().map_or("unknown", |kind| kind.as_str());
                self.counted(kind, "rotate", result.map(|_| Response::Ack))
            }
            AdminRequest::DeleteCredential(name) => {
                let result = async {
                    let record = self.credential(&name).await?;
                    self.cluster
                        .propose(
                            request_id,
                            peer.identity.clone(),
                            Command::DeleteCredential { name: name.clone() },
                        )
                        .await?;
                    tracing::info!(credential = %name, by = %peer.identity, "credential deleted");
                    Ok(record.spec.kind)
                }
                .await;
                let kind = result.as_ref().map_or("unknown", |kind| kind.as_str());
                self.counted(kind, "delete", result.map(|_| Response::Ack))
            }
            AdminRequest::Credentials => {
                let views = self
                    .cluster
                    .read(consistency, |state| {
                        state
                            .credentials()
                            .iter()
                            .map(CredentialRecord::view)
                            .collect()
                    })
                    .await?;
                Ok(Response::Credentials(views))
            }
            AdminRequest::CheckCredential { name, host, target } => {
                let result = self.check_credential(&name, host, target).await;
                let kind = result.as_ref().map_or("unknown", |(kind, _)| kind.as_str());
                let outcome = match &result {
                    Ok((_, report)) if report.error.is_none() => "ok",
                    _ => "failed",
                };
                self.count_credential(kind, "check", outcome);
                result.map(|(_, report)| Response::CredentialChecked(report))
            }
            AdminRequest::RotateCredentialsKey => {
                let result = self.rotate_key(peer).await;
                self.counted("all", "rotate_key", result.map(Response::KeysRotated))
            }
            AdminRequest::CredentialKeys => Ok(Response::CredentialKeys {
                node: self.cluster.id(),
                keys: self.credentials.ids(),
            }),
            _ => Err(WireError::new(
                ErrorCode::Internal,
                "not a credential request",
            )),
        }
    }

    async fn set_credential(
        &self,
        peer: &Peer,
        request_id: RequestId,
        spec: CredentialSpec,
        secret: Secret,
    ) -> Result<Response, WireError> {
        spec.check().map_err(invalid)?;
        check_secret(&secret)?;
        let keys = self.credentials.keys()?;
        // Sealed under the leader's newest key, which every member must hold.
        self.cluster.require_leader().await?;
        let sealed = sealed_for(&keys, &spec, &secret)?;
        drop(secret);
        let (name, kind, key) = (spec.name.clone(), spec.kind, sealed.key_id.clone());
        self.cluster
            .propose(
                request_id,
                peer.identity.clone(),
                Command::SetCredential { spec, sealed },
            )
            .await?;
        tracing::info!(credential = %name, kind = kind.as_str(), key = %key, by = %peer.identity, "credential set");
        Ok(Response::Ack)
    }

    async fn rotate_credential(
        &self,
        peer: &Peer,
        request_id: RequestId,
        name: &str,
        secret: Secret,
    ) -> Result<CredentialKind, WireError> {
        check_secret(&secret)?;
        let keys = self.credentials.keys()?;
        self.cluster.require_leader().await?;
        let record = self.credential(name).await?;
        let sealed = sealed_for(&keys, &record.spec, &secret)?;
        drop(secret);
        let key = sealed.key_id.clone();
        self.cluster
            .propose(
                request_id,
                peer.identity.clone(),
                Command::RotateCredential {
                    spec: record.spec.clone(),
                    sealed,
                },
            )
            .await?;
        tracing::info!(credential = %name, key = %key, by = %peer.identity, "credential rotated");
        Ok(record.spec.kind)
    }

    /// Has a host try a credential: `host`, or the first ready host whose agent serves.
    async fn check_credential(
        &self,
        name: &str,
        host: Option<HostId>,
        target: Option<String>,
    ) -> Result<(CredentialKind, CredentialCheckReport), WireError> {
        let keys = self.credentials.keys()?;
        // Only the leader knows where agents serve.
        self.cluster.require_leader().await?;
        let record = self.credential(name).await?;
        let kind = record.spec.kind;
        let target = match (kind, target) {
            (CredentialKind::Registry, _) => record.spec.scope.clone(),
            (CredentialKind::Git, Some(url)) => {
                nexus_protocol::git::check_url(&url).map_err(invalid)?;
                // A secret goes only where it is meant for: never to a server outside its scope.
                let purpose =
                    nexus_protocol::credentials::CredentialPurpose::Git { url: url.clone() };
                let covered = nexus_protocol::credentials::choose(
                    [(kind, record.spec.scope.as_str(), name)],
                    &purpose,
                )
                .is_some();
                if !covered {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!(
                            "{url} is not under credential {name}'s URL prefix {}: a secret is tried only where it is meant for",
                            record.spec.scope
                        ),
                    ));
                }
                url
            }
            (CredentialKind::Git, None) => record.spec.scope.clone(),
        };
        let ready: Vec<HostId> = self
            .cluster
            .read(Consistency::Linearizable, |state| {
                state
                    .hosts()
                    .iter()
                    .filter(|(_, h)| h.status == HostStatus::Ready)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .await?;
        let endpoints = lock(&self.endpoints).clone();
        let (host, address) = match host {
            Some(host) => {
                let address = endpoints.get(&host).cloned().ok_or_else(|| {
                    WireError::new(
                        ErrorCode::BackendUnavailable,
                        format!("the leader knows no address for host {host}'s agent (is it up and connected?)"),
                    )
                })?;
                (host, address)
            }
            None => ready
                .into_iter()
                .find_map(|host| endpoints.get(&host).cloned().map(|a| (host, a)))
                .ok_or_else(|| {
                    WireError::new(
                        ErrorCode::BackendUnavailable,
                        "no ready host's agent is connected to try the credential; name one with --host",
                    )
                })?,
        };
        let connector = self.credentials.connector.clone().ok_or_else(|| {
            WireError::new(
                ErrorCode::Unsupported,
                "this coordinator cannot reach agents (no connector)",
            )
        })?;
        let probe = CredentialProbe {
            secret: opened(&record, &keys)?,
            spec: record.spec.clone(),
            target,
        };
        let asked = super::maintenance::ask_daemon(
            &connector,
            &address,
            Identity::Agent(host.clone()),
            Request::Host(HostRequest::CheckCredential(probe)),
            CHECK_LIMIT,
        )
        .await;
        let report = match asked {
            Ok(Response::CredentialChecked(report)) => report,
            Ok(_) => {
                return Err(WireError::new(
                    ErrorCode::ProtocolError,
                    format!("host {host} answered a credential check with something else"),
                ));
            }
            Err(error) => return Err(error),
        };
        match &report.error {
            None => tracing::info!(credential = %name, %host, "credential check passed"),
            Some(error) => {
                tracing::warn!(credential = %name, %host, code = %error.code, "credential check failed: {}", error.message)
            }
        }
        Ok((kind, report))
    }

    /// Seals every record again under the newest key of this (the leader's) key file.
    async fn rotate_key(&self, peer: &Peer) -> Result<KeyRotationReport, WireError> {
        let keys = self.credentials.keys()?;
        self.cluster.require_leader().await?;
        let newest = keys.newest().ok_or_else(|| {
            WireError::new(
                ErrorCode::CredentialsKeyMissing,
                "the key file holds no key",
            )
        })?;
        let records: Vec<CredentialRecord> = self
            .cluster
            .read(Consistency::Linearizable, |state| {
                state.credentials().iter().cloned().collect()
            })
            .await?;
        let mut already = 0u32;
        let mut resealed = Vec::new();
        for record in &records {
            if record.sealed.key_id == newest.id() {
                already += 1;
                continue;
            }
            let secret = opened(record, &keys)?;
            let now = seal::seal(newest, &record.spec, &secret)
                .map_err(|error| WireError::new(ErrorCode::Internal, error.0))?;
            resealed.push(Resealed {
                name: record.spec.name.clone(),
                was: record.sealed.clone(),
                now,
            });
        }
        for batch in resealed.chunks(RESEAL_BATCH) {
            self.cluster
                .propose(
                    RequestId::random(),
                    peer.identity.clone(),
                    Command::ResealCredentials(batch.to_vec()),
                )
                .await?;
        }
        // What landed: a record set or rotated meanwhile kept its own (newer) seal.
        let landed: Vec<(String, seal::Sealed)> = resealed
            .into_iter()
            .map(|each| (each.name, each.now))
            .collect();
        let reencrypted = self
            .cluster
            .read(Consistency::Linearizable, move |state| {
                landed
                    .iter()
                    .filter(|(name, now)| {
                        state
                            .credentials()
                            .get(name)
                            .is_some_and(|record| &record.sealed == now)
                    })
                    .count()
            })
            .await?;
        let report = KeyRotationReport {
            key_id: newest.id().to_string(),
            reencrypted: u32::try_from(reencrypted).unwrap_or(u32::MAX),
            already,
        };
        tracing::info!(key = %report.key_id, reencrypted = report.reencrypted, already = report.already, by = %peer.identity, "credentials re-sealed under the newest key");
        Ok(report)
    }

    /// An agent's request for a credential for an operation of one of its host's workspaces.
    pub(super) async fn grant_credential(
        &self,
        peer: &Peer,
        host: &HostId,
        ask: CredentialAsk,
    ) -> Result<Response, WireError> {
        let kind = match ask.purpose {
            CredentialPurpose::Git { .. } => "git",
            CredentialPurpose::Registry { .. } => "registry",
        };
        let result = self.grant(peer, host, ask).await;
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "none",
            Err(error) if error.code == ErrorCode::PermissionDenied => "denied",
            Err(_) => "failed",
        };
        self.count_credential(kind, "grant", outcome);
        result.map(Response::Credential)
    }

    async fn grant(
        &self,
        peer: &Peer,
        host: &HostId,
        ask: CredentialAsk,
    ) -> Result<Option<GrantedCredential>, WireError> {
        self.cluster.require_leader().await?;
        let workspace = ask.workspace.clone();
        let (placed, chosen) = {
            let purpose = ask.purpose.clone();
            let workspace = workspace.clone();
            self.cluster
                .read(Consistency::Linearizable, move |state| {
                    let placed = state
                        .workspaces()
                        .get(&workspace)
                        .map(|w| (w.host.clone(), w.spec.image.clone(), w.spec.repo.clone()));
                    let stored = state.credentials();
                    let name = credentials::choose(
                        stored
                            .iter()
                            .map(|r| (r.spec.kind, r.spec.scope.as_str(), r.spec.name.as_str())),
                        &purpose,
                    )
                    .map(str::to_string);
                    let chosen = name.and_then(|name| stored.get(&name).cloned());
                    (placed, chosen)
                })
                .await?
        };
        let Some((on, image, repo)) = placed.filter(|(on, _, _)| on == host) else {
            return Err(denied(
                peer,
                &format!("workspace {workspace} is not on this agent's host"),
            ));
        };
        // Only for what the workspace's own spec uses: its image's registry, its repository.
        let wanted = match &ask.purpose {
            CredentialPurpose::Registry { server } => {
                credentials::registry_of(&image) == Some(server.as_str())
            }
            CredentialPurpose::Git { url } => repo.as_ref().is_some_and(|repo| &repo.url == url),
        };
        if !wanted {
            return Err(denied(
                peer,
                &format!("workspace {workspace}'s spec does not use what it asks a credential for"),
            ));
        }
        let Some(record) = chosen else {
            return Ok(None);
        };
        let keys = self.credentials.keys()?;
        let secret = opened(&record, &keys)?;
        let name = record.spec.name.clone();
        tracing::info!(credential = %name, host = %on, %workspace, "credential granted");
        if self.credentials.touch_due(&name) {
            let touched = self
                .propose_own(Command::TouchCredential {
                    name: name.clone(),
                    host: on,
                })
                .await;
            if let Err(error) = touched {
                tracing::debug!(credential = %name, code = %error.code, "cannot record a credential's use: {}", error.message);
            }
        }
        Ok(Some(GrantedCredential {
            name,
            username: record.spec.username,
            secret,
        }))
    }
}

#[cfg(test)]
mod tests;
