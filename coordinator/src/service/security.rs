//! Fleet security's requests: admins' join tokens, the known certificates, removing a host and
//! revoking a user; a new host's or user's enrolment (anonymous, so untrusted); an agent's
//! renewal. Signing is [`crate::signing`]'s; redeeming a token is the state's (`Enrol`, through
//! Raft, so that a token's uses are counted once cluster-wide and a certificate is handed out
//! only if its enrolment applied).

use std::net::SocketAddr;

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, IdentityKind};
use nexus_protocol::join::{
    self, CertSource, CreatedToken, EnrolRequest, Issued, JoinToken, MAX_CSR_LEN, RenewRequest,
    TokenRole,
};
use nexus_protocol::message::{AdminRequest, Response};
use nexus_protocol::model::Labels;
use nexus_protocol::transport::Peer;
use nexus_protocol::{HostId, RequestId};

use super::Service;
use super::checks::require;
use crate::cluster::Consistency;
use crate::locks::lock;
use crate::metrics::Metrics;
use crate::signing::{Signing, cert_record, check_names};
use crate::state::Command;

impl Service {
    /// This node's CA, or the refusal of a node started without one.
    fn signing(&self) -> Result<&Signing, WireError> {
        self.signing.as_deref().ok_or_else(|| {
            WireError::new(
                ErrorCode::Unsupported,
                "this coordinator was started without its CA (fleet security is off)",
            )
        })
    }

    /// `CreateToken`, `Tokens`, `RevokeToken`, `Certificates`, `RemoveHost`, `RevokeUser`.
    pub(super) async fn security_admin(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        let by = peer.identity.to_string();
        match request {
            AdminRequest::CreateToken(spec) => {
                require(peer, &[IdentityKind::Admin])?;
                spec.check()
                    .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.0))?;
                let token = JoinToken::generate(&self.signing()?.ca_fingerprint())
                    .map_err(|e| WireError::new(ErrorCode::Internal, e.0))?;
                let id = token.id.clone();
                let command = Command::CreateToken {
                    id: id.clone(),
                    spec,
                    secret_hash: token.secret_hash(),
                    created_by: by,
                };
                self.cluster
                    .propose(request_id, peer.identity.clone(), command)
                    .await?;
                tracing::info!(token = %id, by = %peer.identity, "made a join token");
                let view = self
                    .cluster
                    .read(Consistency::Linearizable, move |state| {
                        state.security().token(&id).map(|t| t.view.clone())
                    })
                    .await?
                    .ok_or_else(|| {
                        WireError::new(
                            ErrorCode::Internal,
                            "the token was not kept (a retry of an earlier request?): make another",
                        )
                    })?;
                Ok(Response::TokenCreated(Box::new(CreatedToken {
                    view,
                    token: token.reveal(),
                })))
            }
            AdminRequest::Tokens => {
                let tokens = self
                    .cluster
                    .read(consistency, |state| {
                        state
                            .security()
                            .tokens()
                            .map(|token| token.view.clone())
                            .collect()
                    })
                    .await?;
                Ok(Response::Tokens(tokens))
            }
            AdminRequest::RevokeToken(id) => {
                require(peer, &[IdentityKind::Admin])?;
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::RevokeToken { id: id.clone() },
                    )
                    .await?;
                tracing::info!(token = %id, by = %peer.identity, "revoked a join token");
                Ok(Response::Ack)
            }
            AdminRequest::Certificates => {
                let certificates = self
                    .cluster
                    .read(consistency, |state| state.security().certificates())
                    .await?;
                Ok(Response::Certificates(certificates))
            }
            AdminRequest::RemoveHost { host, force } => {
                require(peer, &[IdentityKind::Admin])?;
                let command = Command::RemoveHost {
                    host: host.clone(),
                    force,
                    by,
                };
                self.cluster
                    .propose(request_id, peer.identity.clone(), command)
                    .await?;
                self.forget_host(&host);
                tracing::info!(%host, force, by = %peer.identity, "removed a host and shut its certificates out");
                Ok(Response::Ack)
            }
            AdminRequest::RevokeUser(name) => {
                require(peer, &[IdentityKind::Admin])?;
                let command = Command::RevokeUser {
                    name: name.clone(),
                    by,
                };
                self.cluster
                    .propose(request_id, peer.identity.clone(), command)
                    .await?;
                tracing::info!(user = %name, by = %peer.identity, "revoked a user's certificates");
                Ok(Response::Ack)
            }
            other => Err(WireError::new(
                ErrorCode::Internal,
                format!("{other:?} is not a fleet security request"),
            )),
        }
    }

    /// Drops a removed host's soft state: its heartbeats, samples and endpoint.
    fn forget_host(&self, host: &HostId) {
        self.liveness().remove(host);
        lock(&self.endpoints).remove(host);
    }

    /// A user's renewal (a CLI through a CA rotation): a certificate for the user's own identity,
    /// which carries no names, over a fresh key, recorded.
    pub(super) async fn renew_session(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: RenewRequest,
    ) -> Result<Response, WireError> {
        if !request.names.is_empty() {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "a user's certificate carries no addresses or names",
            ));
        }
        let result = self.renew_for(peer, request_id, request).await;
        self.cluster
            .metrics()
            .renewals
            .inc(["user", &Metrics::outcome_label(&result)]);
        match &result {
            Ok(_) => tracing::info!(peer = %peer.identity, "renewed a user's certificate"),
            Err(error) => {
                tracing::warn!(peer = %peer.identity, code = %error.code, "refused a user's renewal: {}", error.message);
            }
        }
        result
    }

    /// An agent's renewal: a certificate for its own identity over a fresh key, recorded.
    pub(super) async fn renew(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: RenewRequest,
    ) -> Result<Response, WireError> {
        let result = self.renew_for(peer, request_id, request).await;
        self.cluster
            .metrics()
            .renewals
            .inc(["agent", &Metrics::outcome_label(&result)]);
        match &result {
            Ok(_) => tracing::info!(peer = %peer.identity, "renewed an agent's certificate"),
            Err(error) => {
                tracing::warn!(peer = %peer.identity, code = %error.code, "refused a renewal: {}", error.message);
            }
        }
        result
    }

    async fn renew_for(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: RenewRequest,
    ) -> Result<Response, WireError> {
        let signing = self.signing()?;
        check_csr_len(&request.csr_pem)?;
        let names = check_names(&request.names)?;
        let identity = peer.identity.clone();
        let deny = self.cluster.deny_list().borrow().clone();
        let now = clock::now();
        let cert_pem = signing.sign_request(&request.csr_pem, &identity, &names, &deny, now)?;
        let reissued = Self::check_signer(self.reissue_of(&cert_pem).await?)?;
        let cert = cert_record(&cert_pem, CertSource::Renewal, now).ok_or_else(unreadable)?;
        let ca_pem = signing.ca_pem();
        self.cluster
            .propose(
                request_id,
                identity.clone(),
                Command::RecordCertificate {
                    identity: identity.clone(),
                    cert,
                },
            )
            .await?;
        // Re-issued by a rotation's new CA: this party is done with it. The certificate is
        // handed out whatever this says; the agent's next renewal tells it again.
        if let Some(new_ca) = reissued
            && let Err(error) = self.renewed(peer, new_ca).await
        {
            tracing::warn!(peer = %peer.identity, code = %error.code, "cannot record a re-issue of the CA rotation: {}", error.message);
        }
        Ok(Response::Issued(Box::new(Issued {
            identity,
            cert_pem,
            ca_pem,
            labels: Labels::new(),
        })))
    }

    /// A client without a certificate asks for one with a join token. Counted and logged (never
    /// the secret); see [`Service::enrol_checked`].
    pub async fn enrol_anonymous(
        &self,
        address: SocketAddr,
        request: EnrolRequest,
    ) -> Result<Issued, WireError> {
        let token = request.token_id.clone();
        let result = self.enrol_checked(request).await;
        self.cluster
            .metrics()
            .enrolments
            .inc([&Metrics::outcome_label(&result)]);
        match &result {
            Ok(issued) => {
                tracing::info!(%address, %token, identity = %issued.identity, "enrolled with a join token");
            }
            Err(error) => {
                tracing::warn!(%address, %token, code = %error.code, "refused an enrolment: {}", error.message);
            }
        }
        result
    }

    /// The cheap checks first (sizes, names, the token against this replica), so that junk costs
    /// neither a signature nor a log entry; then the signature; then the redemption through
    /// Raft, which checks the token again and counts its use; the certificate only if it applied.
    async fn enrol_checked(&self, request: EnrolRequest) -> Result<Issued, WireError> {
        let signing = self.signing()?;
        check_csr_len(&request.csr_pem)?;
        let names = check_names(&request.names)?;
        let secret_hash = join::secret_hash(&request.secret);
        let token_id = request.token_id.clone();
        let look = {
            let (token_id, secret_hash) = (token_id.clone(), secret_hash.clone());
            move |state: &crate::state::State| {
                let security = state.security();
                let known = security.token(&token_id).is_some();
                let found = security
                    .redeemable(clock::now(), &token_id, &secret_hash)
                    .map(|token| {
                        (
                            token.view.role.clone(),
                            token.view.labels.clone(),
                            security.deny_list().clone(),
                        )
                    });
                (known, found)
            }
        };
        let (known, mut found) = self.cluster.read(Consistency::Stale, look.clone()).await?;
        if !known {
            // Unknown here may be only not yet applied here: ask the cluster before refusing.
            found = self.cluster.read(Consistency::Linearizable, look).await?.1;
        }
        let (role, labels, deny) = found?;
        let (identity, names) = match (role, request.host_id) {
            (TokenRole::Agent, Some(host)) => (Identity::Agent(host), names),
            (TokenRole::Agent, None) => {
                return Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    "an agent enrols under its host id (--host-id): the request names none",
                ));
            }
            // A user's certificate is only a client's: it carries no addresses.
            (TokenRole::User { name, role }, None) => (Identity::User { name, role }, Vec::new()),
            (TokenRole::User { .. }, Some(host)) => {
                return Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("join token {token_id} is a user's: it cannot enrol host {host}"),
                ));
            }
        };
        let now = clock::now();
        let cert_pem = signing.sign_request(&request.csr_pem, &identity, &names, &deny, now)?;
        let cert = cert_record(&cert_pem, CertSource::Token(token_id.clone()), now)
            .ok_or_else(unreadable)?;
        let command = Command::Enrol {
            token_id,
            secret_hash,
            identity: identity.clone(),
            cert,
        };
        self.propose_own(command).await?;
        Ok(Issued {
            identity,
            cert_pem,
            ca_pem: signing.ca_pem(),
            labels,
        })
    }
}

fn check_csr_len(csr_pem: &str) -> Result<(), WireError> {
    if csr_pem.len() > MAX_CSR_LEN {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("the signing request is larger than {MAX_CSR_LEN} bytes"),
        ));
    }
    Ok(())
}

fn unreadable() -> WireError {
    WireError::new(
        ErrorCode::Internal,
        "the certificate just signed could not be read back",
    )
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
