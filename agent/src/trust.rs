//! The CA certificates this agent trusts, as the cluster says: a CA rotation changes them while
//! the agent runs. The agent subscribes on its session with the leader
//! (`AgentRequest::WatchTrust`, afresh on every new session), checks each bundle pushed (it is
//! input from the network: bounded, CA certificates only, the signer among them), writes it to
//! its pki dir's `ca.pem` (whole, through a private temporary name) and puts it in force for new
//! handshakes, its link's and its users' endpoint's alike (open connections keep going). During
//! a rotation it then tells the cluster it trusts the bundle (`AgentRequest::TrustsCa`), and once
//! the new CA signs, has its certificate renewed at once (`crate::renewal`) rather than at two
//! thirds of its life.
//!
//! Not here: the renewal itself, the deny list (`denials`), the handshake (`transport`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::ca_rotation::{TrustBundle, fingerprint};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::pki::PkiDir;
use nexus_protocol::transport::{Credentials, bundle_fingerprint, check_bundle};
use tokio::sync::Notify;

use crate::asker::{Asker, Subscription, follow_sessions};

/// How long the agent's word that it trusts a bundle may take.
const ACK_DEADLINE: Duration = Duration::from_secs(10);

/// What this agent should do about a bundle pushed, given its `ca.pem` and its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Write and trust the bundle: it is not `ca.pem`'s.
    pub trust: bool,
    /// Tell the cluster it trusts the rotation's bundle (to this CA).
    pub ack: Option<String>,
    /// Renew now: its certificate is not the signer's.
    pub renew: bool,
}

/// The pure decision. `own` is this agent's certificate in force (DER); `certs` the bundle's,
/// checked ([`check_bundle`]).
pub fn plan(bundle: &TrustBundle, certs: &[Vec<u8>], ca_pem_now: &str, own: Option<&[u8]>) -> Plan {
    let signer = certs.iter().find(|der| fingerprint(der) == bundle.signer);
    Plan {
        trust: bundle.ca_pem != ca_pem_now,
        ack: bundle.rotating_to.clone(),
        renew: match (own, signer) {
            (Some(own), Some(signer)) => !nexus_protocol::identity::issued_by(own, signer),
            _ => false,
        },
    }
}

/// Follows the cluster's bundle until `shutdown` completes.
#[derive(Debug)]
pub struct TrustFollower {
    pub asker: Asker,
    pub credentials: Credentials,
    pub tls_dir: PathBuf,
    /// Wakes the renewer to renew now.
    pub renew_now: Arc<Notify>,
}

impl TrustFollower {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        follow_sessions(&self.asker, shutdown, &self).await;
    }
}

impl Subscription for TrustFollower {
    const WHAT: &'static str = "the cluster's CA certificates";

    fn request(&self) -> Request {
        Request::Agent(AgentRequest::WatchTrust)
    }

    fn unsupported(&self, code: ErrorCode) -> bool {
        matches!(code, ErrorCode::Unsupported | ErrorCode::InvalidArgument)
    }

    async fn take(&self, response: Response) -> Result<(), Response> {
        match response {
            Response::TrustBundle(bundle) => {
                self.follow(&bundle).await;
                Ok(())
            }
            other => Err(other),
        }
    }
}

impl TrustFollower {
    /// Puts one bundle pushed in force, as [`plan`] says.
    async fn follow(&self, bundle: &TrustBundle) {
        let certs = match check_bundle(bundle) {
            Ok(certs) => certs,
            Err(error) => {
                tracing::warn!("refused the CA certificates the coordinator pushed: {error}");
                return;
            }
        };
        let pki = PkiDir::new(&self.tls_dir);
        let ca_now = std::fs::read_to_string(pki.ca_cert()).unwrap_or_default();
        let own = self.credentials.own_certificate();
        let plan = plan(bundle, &certs, &ca_now, own.as_deref());
        if plan.trust {
            if let Err(error) = put_in_force(&pki, &self.credentials, &bundle.ca_pem) {
                tracing::warn!("cannot trust the cluster's new CA certificates: {error}");
                return;
            }
            tracing::info!(
                trusted = %short(&self.credentials.trusted_fingerprint()),
                signer = %short(&bundle.signer),
                "put the cluster's CA certificates in force"
            );
        } else if self.credentials.trusted_fingerprint() != bundle_fingerprint(&bundle.ca_pem) {
            // Written by a run that stopped before it trusted them.
            if let Err(error) = self.credentials.trust(bundle.ca_pem.as_bytes()) {
                tracing::warn!("cannot trust the cluster's CA certificates: {error}");
                return;
            }
        }
        if let Some(new_ca) = plan.ack {
            let request = Request::Agent(AgentRequest::TrustsCa {
                new_ca: new_ca.clone(),
            });
            match self.asker.ask(request, ACK_DEADLINE).await {
                Ok(_) => {
                    tracing::info!(new_ca = %short(&new_ca), "told the cluster this host trusts the new CA")
                }
                Err(error) => {
                    tracing::warn!(code = %error.code, "cannot tell the cluster this host trusts the new CA: {}", error.message)
                }
            }
        }
        if plan.renew {
            tracing::info!("this host's certificate is not the signing CA's: renewing it now");
            self.renew_now.notify_one();
        }
    }
}

/// Writes `ca_pem` as the pki dir's `ca.pem` and trusts it.
fn put_in_force(pki: &PkiDir, credentials: &Credentials, ca_pem: &str) -> Result<(), String> {
    pki.write_ca_bundle(ca_pem).map_err(|e| e.to_string())?;
    credentials
        .trust(ca_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..16.min(fingerprint.len())]
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock;
    use nexus_protocol::identity::Identity;
    use nexus_protocol::pki::{CertificateAuthority, Validity};

    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        nexus_protocol::transport::first_certificate_der(pem).unwrap()
    }

    #[test]
    fn an_agent_trusts_says_so_and_renews_when_the_signer_is_not_its_issuer() {
        let life = std::time::Duration::from_secs(3600);
        let old = CertificateAuthority::for_cluster(clock::now(), life).unwrap();
        let new = CertificateAuthority::for_cluster(clock::now(), life).unwrap();
        let host = Identity::Agent("h1".parse().unwrap());
        let mine = old
            .issue(&host, &[], Validity::starting(clock::now(), life))
            .unwrap();
        let both = nexus_protocol::transport::bundle(old.cert_pem(), new.cert_pem());
        let trust_phase = TrustBundle {
            ca_pem: both.clone(),
            signer: fingerprint(&der(old.cert_pem())),
            rotating_to: Some(fingerprint(&der(new.cert_pem()))),
        };
        let certs = check_bundle(&trust_phase).unwrap();
        let own = der(&mine.cert_pem);
        let step = plan(&trust_phase, &certs, old.cert_pem(), Some(&own));
        assert!(step.trust && !step.renew);
        assert_eq!(step.ack, trust_phase.rotating_to);
        // Written already: only the word again.
        assert!(!plan(&trust_phase, &certs, &both, Some(&own)).trust);

        let reissue = TrustBundle {
            ca_pem: nexus_protocol::transport::bundle(new.cert_pem(), old.cert_pem()),
            signer: fingerprint(&der(new.cert_pem())),
            ..trust_phase
        };
        let certs = check_bundle(&reissue).unwrap();
        let step = plan(&reissue, &certs, &both, Some(&own));
        assert!(step.trust && step.renew);
        let renewed = new
            .issue(&host, &[], Validity::starting(clock::now(), life))
            .unwrap();
        let step = plan(
            &reissue,
            &certs,
            &reissue.ca_pem,
            Some(&der(&renewed.cert_pem)),
        );
        assert!(!step.trust && !step.renew);
        assert_eq!(bundle_fingerprint(&reissue.ca_pem).len(), 64);
    }
}
