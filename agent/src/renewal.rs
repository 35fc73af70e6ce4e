//! Renewing this agent's certificate two thirds into its life ([`join::renew_at`]), over its own
//! authenticated session with the leader (through the [`Asker`]): a fresh key made here, a
//! signing request for it, the certificate the leader issues written into the tls dir with the
//! key (0600), and put in force without a restart by the same in-place rotation a reload uses.
//! Connections already open (the link's, users' sessions) keep the certificate they began with;
//! new ones present the new one, so workspaces and heartbeats go on undisturbed.
//!
//! A failed renewal is tried again after a backoff that starts at a second and doubles, capped at
//! a tenth of the life left and never past the expiry ([`next_wait`], pure). Each renewal is
//! logged (never the key) and counted in `nexus_agent_cert_renewals_total{outcome}`.
//! A CA rotation has it renew at once ([`Renewer::renew_now`], woken by `trust`), and a bundle
//! of CA certificates the leader hands out with the certificate is written and trusted.
//! Not here: the first certificate (`enrol`), reloading files an admin replaced (`reload`).

use std::path::PathBuf;
use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::debug::ChangedSetting;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{self, Identity};
use nexus_protocol::join::{self, RenewRequest};
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::pki::{KeyRequest, PkiDir, PkiError};
use nexus_protocol::transport::{Credentials, TlsError};
use nexus_telemetry::Common;

use crate::asker::Asker;
use crate::metrics::Metrics;

/// How long one renewal may take in all, waiting for a session included.
const RENEW_DEADLINE: Duration = Duration::from_secs(30);
/// The first retry after a failure; each failure doubles it.
const FIRST_RETRY_MS: u64 = 1_000;
/// The shortest wait between two attempts, even near the end of a short life.
const MIN_WAIT_MS: u64 = 100;
/// The longest wait between attempts once the certificate has expired (the session open before
/// may still carry a renewal).
const EXPIRED_RETRY_MS: u64 = 60_000;

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    #[error("the agent has no certificate of its own to renew")]
    NoCertificate,
    #[error("cannot make a fresh key: {0}")]
    Key(PkiError),
    #[error("the leader did not renew it: {0}")]
    Refused(WireError),
    #[error("the leader answered {0} instead of a certificate")]
    Unexpected(String),
    #[error("the leader issued a certificate for {0}, not for this agent")]
    OtherIdentity(Identity),
    #[error("cannot write the new certificate: {0}")]
    Write(PkiError),
    #[error("cannot put the new certificate in force (it is written; a restart takes it up): {0}")]
    Rotate(TlsError),
}

/// The longest the renewer sleeps before looking at the certificate in force again.
const MAX_SLEEP: Duration = Duration::from_secs(600);

/// How long to wait before the next attempt, at `now_ms` (milliseconds since the epoch), for a
/// certificate valid from `not_before` to `not_after` (seconds), after `failures` failed
/// attempts in a row: until [`join::renew_at`] at first; after a failure, a second doubling
/// with each, capped at a tenth of the life left and never past the expiry.
pub fn next_wait(now_ms: u64, not_before: i64, not_after: i64, failures: u32) -> Duration {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let expiry = not_after.saturating_mul(1000);
    if failures == 0 {
        let due = join::renew_at(not_before, not_after).saturating_mul(1000);
        return Duration::from_millis(u64::try_from(due - now).unwrap_or(0));
    }
    let backoff = FIRST_RETRY_MS.saturating_mul(1u64 << (failures - 1).min(32));
    let left = u64::try_from(expiry - now).unwrap_or(0);
    let wait = if left == 0 {
        backoff.min(EXPIRED_RETRY_MS)
    } else {
        backoff.min(left / 10).max(MIN_WAIT_MS).min(left)
    };
    Duration::from_millis(wait)
}

/// Renews the agent's certificate in force in `credentials`, keeping the files in `tls_dir`.
pub struct Renewer {
    credentials: Credentials,
    tls_dir: PathBuf,
    asker: Asker,
    /// Names the agent wants in its certificate beside those the current one holds.
    wanted: Vec<String>,
    metrics: Metrics,
    expiries: Option<Common>,
    /// Renew now, whatever the certificate's age (a CA rotation: `crate::trust`).
    renew_now: std::sync::Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer")
            .field("tls_dir", &self.tls_dir)
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

impl Renewer {
    pub fn new(
        credentials: Credentials,
        tls_dir: PathBuf,
        asker: Asker,
        wanted: Vec<String>,
    ) -> Renewer {
        Renewer {
            credentials,
            tls_dir,
            asker,
            wanted,
            metrics: Metrics::unserved(),
            expiries: None,
            renew_now: std::sync::Arc::default(),
        }
    }

    /// What wakes this renewer to renew at once.
    pub fn renew_now(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.renew_now.clone()
    }

    /// Counts renewals in `metrics` and shows each new certificate's expiry in `expiries`.
    pub fn monitored(mut self, metrics: Metrics, expiries: Common) -> Renewer {
        self.metrics = metrics;
        self.expiries = Some(expiries);
        self
    }

    /// Renews at each certificate's time until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let Some((not_before, not_after)) = self.in_force() else {
                tracing::error!("{}", RenewalError::NoCertificate);
                return;
            };
            let wait = next_wait(clock::now().0, not_before, not_after, failures);
            tracing::debug!(?wait, not_after, failures, "next certificate renewal");
            // Look again at least every few minutes: a reload may have put a certificate with
            // another end in force meanwhile.
            let mut early = false;
            tokio::select! {
                () = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                () = self.renew_now.notified() => early = true,
                () = &mut shutdown => return,
            }
            if wait > MAX_SLEEP && !early {
                continue;
            }
            match self.renew().await {
                Ok(change) => {
                    failures = 0;
                    self.metrics.renewal(true);
                    tracing::info!(old = %change.old, new = %change.new, "renewed this agent's certificate");
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.metrics.renewal(false);
                    tracing::warn!(
                        failures,
                        not_after,
                        "cannot renew this agent's certificate yet: {error}"
                    );
                }
            }
        }
    }

    /// When the certificate in force begins and ends (seconds since the epoch).
    fn in_force(&self) -> Option<(i64, i64)> {
        let der = self.credentials.own_certificate()?;
        Some((identity::not_before(&der)?, identity::not_after(&der)?))
    }

    /// One renewal: a fresh key, the leader's certificate for it, both written and put in force.
    pub async fn renew(&self) -> Result<ChangedSetting, RenewalError> {
        let identity = self
            .credentials
            .identity()
            .cloned()
            .ok_or(RenewalError::NoCertificate)?;
        let key = KeyRequest::generate(&format!("nexus {identity} (renewal)"))
            .map_err(RenewalError::Key)?;
        let names = crate::names::merged(&self.credentials.own_names(), &self.wanted);
        let request = Request::Agent(AgentRequest::Renew(RenewRequest {
            csr_pem: key.csr_pem.clone(),
            names,
        }));
        let issued = match self.asker.ask(request, RENEW_DEADLINE).await {
            Ok(Response::Issued(issued)) => issued,
            Ok(other) => return Err(RenewalError::Unexpected(format!("{other:?}"))),
            Err(error) => return Err(RenewalError::Refused(error)),
        };
        if issued.identity != identity {
            return Err(RenewalError::OtherIdentity(issued.identity));
        }
        let pki = PkiDir::new(&self.tls_dir);
        let ca_now = std::fs::read_to_string(pki.ca_cert()).unwrap_or_default();
        // ca.pem is left as it is unless the CAs the cluster trusts changed (compared by their
        // certificates, not by how the PEM is laid out).
        let same_cas = fingerprint_of(&ca_now).is_some()
            && fingerprint_of(&ca_now) == fingerprint_of(&issued.ca_pem);
        let ca_pem = if same_cas {
            ca_now.as_str()
        } else {
            tracing::info!(
                "the cluster's CA certificates changed (a CA rotation): ca.pem is rewritten and trusted"
            );
            issued.ca_pem.as_str()
        };
        pki.write_issued(&identity, &issued.cert_pem, key.key_pem.expose(), ca_pem)
            .map_err(RenewalError::Write)?;
        if !same_cas {
            self.credentials
                .trust(ca_pem.as_bytes())
                .map_err(RenewalError::Rotate)?;
        }
        let change = match self.credentials.prepare_rotation(&self.tls_dir) {
            Ok(Some(rotation)) => rotation
                .commit(&self.credentials)
                .map_err(RenewalError::Rotate)?,
            Ok(None) => {
                return Err(RenewalError::Refused(WireError::new(
                    ErrorCode::Internal,
                    "the leader issued the certificate already in force",
                )));
            }
            Err(error) => return Err(RenewalError::Rotate(error)),
        };
        if let Some(expiries) = &self.expiries {
            let now = self.credentials.expiries();
            expiries.set_cert_expiries(now.own, now.ca);
        }
        Ok(change)
    }
}

/// The fingerprint of the CA certificates in `ca_pem`, if it holds any.
fn fingerprint_of(ca_pem: &str) -> Option<String> {
    Credentials::from_pem(ca_pem.as_bytes(), None)
        .ok()
        .map(|credentials| credentials.trusted_fingerprint())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    #[test]
    fn a_certificate_is_renewed_two_thirds_into_its_life() {
        // Valid from 0 to 90 s: due at 60 s.
        assert_eq!(next_wait(0, 0, 90, 0), Duration::from_secs(60));
        assert_eq!(next_wait(59 * S, 0, 90, 0), Duration::from_secs(1));
        // Past due (an agent that started late): at once.
        assert_eq!(next_wait(70 * S, 0, 90, 0), Duration::ZERO);
    }

    #[test]
    fn failures_back_off_within_a_tenth_of_the_life_left_and_never_past_the_expiry() {
        let day = 86_400;
        // 30 days left: a second, doubling.
        let now = 60 * day as u64 * S;
        let waits: Vec<u64> = (1..=4)
            .map(|failures| next_wait(now, 0, 90 * day, failures).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8]);
        // Capped at a tenth of the 30 days left (3 days).
        assert_eq!(
            next_wait(now, 0, 90 * day, 40),
            Duration::from_secs(3 * day as u64)
        );
        // 2 s left: a tenth of it, but not under the floor.
        assert_eq!(next_wait(88 * S, 0, 90, 3), Duration::from_millis(200));
        assert_eq!(next_wait(89_900, 0, 90, 3), Duration::from_millis(100));
        // Expired: still tried now and then, the session open before may carry it.
        assert_eq!(next_wait(100 * S, 0, 90, 1), Duration::from_secs(1));
        assert_eq!(next_wait(100 * S, 0, 90, 30), Duration::from_secs(60));
    }
}
