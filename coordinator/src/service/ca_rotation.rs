//! A CA rotation's requests: an admin starts one (`RotateCa`: the leader makes the new CA and
//! seals its key under its seal key before it proposes), looks at it (`CaStatus`) or finishes
//! it while a host is down (`FinishCaRotation`); an agent follows the CA certificates to trust
//! (`WatchTrust`) and says when it trusts a rotation's (`TrustsCa`); a renewal signed by the new
//! CA counts as the party's re-issue (a user's session renewal, which lets the CLI that waits on
//! a rotation through it, is `service::security`'s). The transitions are the state's
//! (`state::rotation`), this node's own steps `crate::trust`'s.

use nexus_protocol::ca_rotation::{CaPhase, CaStatus, TrustBundle};
use nexus_protocol::clock;
use nexus_protocol::credentials::Secret;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, IdentityKind};
use nexus_protocol::message::{AdminRequest, Response};
use nexus_protocol::pki::{CertificateAuthority, DEFAULT_CA_VALIDITY};
use nexus_protocol::transport::{Peer, Reply, Update, first_certificate_der};
use nexus_protocol::{RequestId, seal};
use tokio::sync::mpsc;

use super::Service;
use super::checks::{denied, require};
use super::watch::next_change_while_leading;
use crate::cluster::{Cluster, Consistency};
use crate::state::{CaRotations, CaStep, Command, NewCa};
use crate::trust::key_binding;

impl Service {
    /// `RotateCa`, `CaStatus`, `FinishCaRotation`.
    pub(super) async fn ca_admin(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        match request {
            AdminRequest::RotateCa => {
                require(peer, &[IdentityKind::Admin])?;
                let command = self.new_rotation(peer).await?;
                let new_ca = match &command {
                    Command::StartCaRotation { new, .. } => new.new_ca.clone(),
                    _ => String::new(),
                };
                self.cluster
                    .propose(request_id, peer.identity.clone(), command)
                    .await?;
                tracing::info!(by = %peer.identity, new_ca = %&new_ca[..16.min(new_ca.len())], "started a CA rotation");
                self.ca_status(Consistency::Linearizable).await
            }
            AdminRequest::CaStatus => self.ca_status(consistency).await,
            AdminRequest::FinishCaRotation => {
                require(peer, &[IdentityKind::Admin])?;
                let command = Command::FinishCaRotation {
                    by: peer.identity.to_string(),
                };
                self.cluster
                    .propose(request_id, peer.identity.clone(), command)
                    .await?;
                tracing::warn!(by = %peer.identity, "finished the CA rotation by force");
                self.ca_status(Consistency::Linearizable).await
            }
            other => Err(WireError::new(
                ErrorCode::Internal,
                format!("{other:?} is not a CA request"),
            )),
        }
    }

    /// The leader's new CA, its key sealed, and who to wait for. Refused where no rotation can
    /// start: not the leader (the proposal must carry the members it sees), no CA key or no seal
    /// key here, a rotation in progress.
    async fn new_rotation(&self, peer: &Peer) -> Result<Command, WireError> {
        let view = self.cluster.require_leader().await?;
        let signing = self.signing_for_rotation()?;
        let keys = self.credentials.keys()?;
        let seal_key = keys.newest().ok_or_else(|| {
            WireError::new(
                ErrorCode::CredentialsKeyMissing,
                "the seal key file (--credentials-key-file) holds no key to seal the new CA's key with",
            )
        })?;
        let current = self
            .cluster
            .read(Consistency::Linearizable, |state| {
                state.ca_rotations().current().is_some()
            })
            .await?;
        if current {
            return Err(WireError::new(
                ErrorCode::CaRotationInProgress,
                "a CA rotation is in progress: `nexus admin ca status` shows it",
            ));
        }
        let ca = CertificateAuthority::for_cluster(clock::now(), DEFAULT_CA_VALIDITY)
            .map_err(|e| WireError::new(ErrorCode::Internal, format!("cannot make a CA: {e}")))?;
        let new_ca = first_certificate_der(ca.cert_pem())
            .map(|der| nexus_protocol::ca_rotation::fingerprint(&der))
            .ok_or_else(|| WireError::new(ErrorCode::Internal, "the new CA cannot be read back"))?;
        let secret = Secret::new(ca.key_pem().to_string());
        let sealed_key = seal::seal_for(seal_key, &key_binding(&new_ca), &secret)
            .map_err(|e| WireError::new(ErrorCode::Internal, e.0))?;
        let coordinators: Vec<_> = view
            .members
            .iter()
            .filter(|member| member.voter)
            .map(|member| member.id)
            .collect();
        Ok(Command::StartCaRotation {
            new: NewCa {
                old_ca_pem: signing.ca_pem(),
                old_ca: signing.ca_fingerprint(),
                new_ca_pem: ca.cert_pem().to_string(),
                new_ca,
                sealed_key,
            },
            coordinators,
            by: peer.identity.to_string(),
        })
    }

    fn signing_for_rotation(&self) -> Result<&crate::signing::Signing, WireError> {
        let signing = self.signing.as_deref().ok_or_else(|| {
            WireError::new(
                ErrorCode::Unsupported,
                "this coordinator was started without its CA (fleet security is off)",
            )
        })?;
        if !signing.holds_key() {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                "the leader holds no CA key (ca.key in its --tls-dir): a rotation needs every coordinator to hold it",
            ));
        }
        Ok(signing)
    }

    async fn ca_status(&self, consistency: Consistency) -> Result<Response, WireError> {
        let rotations = self
            .cluster
            .read(consistency, |state| state.ca_rotations().clone())
            .await?;
        let bundle = self.trust_bundle(&rotations);
        Ok(Response::CaStatus(Box::new(CaStatus {
            trusted_pem: bundle.ca_pem,
            signer: bundle.signer,
            rotation: rotations.current().map(|rotation| rotation.view()),
            last: rotations.last().cloned(),
        })))
    }

    /// What every party is to trust: the state's once a rotation ran, else this node's files.
    fn trust_bundle(&self, rotations: &CaRotations) -> TrustBundle {
        rotations.trust_bundle().unwrap_or_else(|| TrustBundle {
            ca_pem: self
                .signing
                .as_deref()
                .map(crate::signing::Signing::ca_pem)
                .unwrap_or_default(),
            signer: self
                .signing
                .as_deref()
                .map(crate::signing::Signing::ca_fingerprint)
                .unwrap_or_default(),
            rotating_to: None,
        })
    }

    /// An agent trusts the bundle of the rotation to `new_ca`.
    pub(super) async fn trusts_ca(
        &self,
        peer: &Peer,
        new_ca: String,
    ) -> Result<Response, WireError> {
        self.ca_step(peer, new_ca, CaStep::Trusts).await?;
        Ok(Response::Ack)
    }

    /// Records `peer`'s step of the rotation to `new_ca`.
    async fn ca_step(&self, peer: &Peer, new_ca: String, step: CaStep) -> Result<(), WireError> {
        let identity = peer.identity.clone();
        self.cluster
            .propose(
                RequestId::random(),
                identity.clone(),
                Command::CaProgress {
                    identity,
                    new_ca,
                    step,
                },
            )
            .await
    }

    /// Where a certificate this coordinator just signed stands in a rotation's re-issue phase:
    /// `None` outside that phase, else the new CA's fingerprint and whether the certificate is
    /// the new CA's. Read linearizably: the party renewed because the leader told it the new CA
    /// signs, and a follower that has not applied the phase yet must not take the renewal for
    /// one of no rotation.
    pub(super) async fn reissue_of(
        &self,
        cert_pem: &str,
    ) -> Result<Option<(String, bool)>, WireError> {
        let Some(leaf) = first_certificate_der(cert_pem) else {
            return Ok(None);
        };
        self.cluster
            .read(Consistency::Linearizable, move |state| {
                state
                    .ca_rotations()
                    .current()
                    .filter(|rotation| rotation.phase == CaPhase::Reissue)
                    .map(|rotation| {
                        let by_new = first_certificate_der(&rotation.new_ca_pem)
                            .is_some_and(|ca| nexus_protocol::identity::issued_by(&leaf, &ca));
                        (rotation.new_ca.clone(), by_new)
                    })
            })
            .await
    }

    /// A renewal's certificate against the rotation ([`Service::reissue_of`]): one of the old
    /// CA during the re-issue phase is refused, because this coordinator has not switched to
    /// the new CA yet (it applies the phase a moment after the leader pushed the new bundle to
    /// the party). Handed out, it looked renewed to the party, which never renewed again, and
    /// the rotation waited for it for ever; refused, the party renews again after its backoff (a
    /// second). `Some(new CA)` when the party is done with the rotation, once the certificate is
    /// recorded ([`Service::renewed`]).
    pub(super) fn check_signer(
        reissue: Option<(String, bool)>,
    ) -> Result<Option<String>, WireError> {
        match reissue {
            Some((_, false)) => Err(WireError::new(
                ErrorCode::BackendUnavailable,
                "this coordinator does not sign with the rotation's new CA yet; renew again in a moment",
            )),
            Some((new_ca, true)) => Ok(Some(new_ca)),
            None => Ok(None),
        }
    }

    /// After a renewal by the rotation's new CA: the party is done with it.
    pub(super) async fn renewed(&self, peer: &Peer, new_ca: String) -> Result<(), WireError> {
        self.ca_step(peer, new_ca, CaStep::Reissued).await
    }

    /// An agent's trust watch: the bundle now and after every change, while this node leads.
    pub(super) async fn watch_trust(&self, peer: &Peer) -> Reply {
        if !matches!(peer.identity, Identity::Agent(_)) {
            return Reply::Once(Err(denied(peer, "only agents watch the CA bundle")));
        }
        if let Err(error) = self.cluster.require_leader().await {
            return Reply::Once(Err(error));
        }
        let (sender, updates) = mpsc::channel(2);
        let fallback = self.trust_bundle(&CaRotations::default());
        tokio::spawn(push_trust(self.cluster.clone(), fallback, sender));
        Reply::Stream(updates)
    }
}

async fn push_trust(cluster: Cluster, fallback: TrustBundle, updates: mpsc::Sender<Update>) {
    let mut changes = cluster.ca_rotations();
    let mut leadership = cluster.leadership();
    changes.borrow_and_update();
    let first = cluster
        .read(Consistency::Linearizable, |state| {
            state.ca_rotations().trust_bundle()
        })
        .await;
    let mut bundle = match first {
        Ok(bundle) => bundle.unwrap_or_else(|| fallback.clone()),
        Err(error) => {
            let _ = updates.send(Box::new(Err(error))).await;
            return;
        }
    };
    let mut sent: Option<TrustBundle> = None;
    loop {
        if sent.as_ref() != Some(&bundle)
            && updates
                .send(Box::new(Ok(Response::TrustBundle(bundle.clone()))))
                .await
                .is_err()
        {
            return;
        }
        sent = Some(bundle.clone());
        if !next_change_while_leading(&cluster, &mut changes, &mut leadership, &updates).await {
            return;
        }
        bundle = changes
            .borrow_and_update()
            .trust_bundle()
            .unwrap_or_else(|| fallback.clone());
    }
}

#[cfg(test)]
#[path = "ca_rotation_tests.rs"]
mod tests;
