//! A credential tried from this host (`HostRequest::CheckCredential`, issue 24): for a
//! coordinator only, which opened the secret; used for this one try and dropped.

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::Response;
use nexus_protocol::transport::Peer;

use super::Endpoint;
use crate::runtime::Runtime;

impl<R: Runtime> Endpoint<R> {
    /// Tries a credential from this host (`nexus admin credentials check`): only a coordinator
    /// may ask (it opened the secret); the secret is used for this one try and dropped.
    pub(super) async fn check_credential(
        &self,
        peer: &Peer,
        probe: nexus_protocol::credentials::CredentialProbe,
    ) -> Result<Response, WireError> {
        use nexus_protocol::credentials::{CredentialCheckReport, CredentialKind};
        if !matches!(peer.identity, Identity::Coordinator(_)) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "only a coordinator may have this agent try a credential",
            ));
        }
        let host = self.host()?;
        let name = probe.spec.name.clone();
        let result = match probe.spec.kind {
            CredentialKind::Registry => {
                self.runtime
                    .registry_login(&probe.spec.scope, &probe.spec.username, &probe.secret)
                    .await
            }
            // `git ls-remote` of the repository named (the scope when none is), with the
            // secret in git's environment only.
            CredentialKind::Git => {
                let granted = nexus_protocol::credentials::GrantedCredential {
                    name: name.clone(),
                    username: probe.spec.username.clone(),
                    secret: probe.secret.clone(),
                };
                crate::git::run::ls_remote(&probe.target, Some(&granted)).await
            }
        };
        drop(probe);
        match &result {
            Ok(()) => tracing::info!(credential = %name, "a credential check passed"),
            Err(error) => {
                tracing::warn!(credential = %name, code = %error.code, "a credential check failed: {}", error.message)
            }
        }
        Ok(Response::CredentialChecked(CredentialCheckReport {
            name,
            host,
            error: result.err(),
        }))
    }
}
