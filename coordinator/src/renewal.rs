//! This coordinator's own certificate: recorded in the cluster (so `nexus admin certs` lists it),
//! and renewed two thirds into its life with a fresh key from the CA this node holds. The new
//! certificate and key are written into `--tls-dir` (never `ca.pem`) and put in force in place,
//! as a reload does: new handshakes present it, open connections (peers', agents', the Raft
//! traffic) keep theirs, so nothing is dropped and leadership is not disturbed.
//!
//! Also here: keeping this node's [`Gate`] in step with the replicated deny list.
//!
//! The decision of when is pure ([`next_step`]); the loop ([`OwnCertificate::run`]) does the I/O.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::join::{self, CertSource, DenyList};
use nexus_protocol::pki::{PkiDir, SubjectName};
use nexus_protocol::transport::{Credentials, Gate};
use nexus_protocol::{NodeId, RequestId};
use nexus_telemetry::Common;
use tokio::sync::watch;

use crate::cluster::{Cluster, Consistency};
use crate::metrics::Metrics;
use crate::signing::{Signing, cert_record, secs};
use crate::state::Command;

/// The longest the loop sleeps before it looks again (a reload may have put another certificate
/// in force meanwhile).
const MAX_SLEEP: Duration = Duration::from_secs(600);
/// The longest it waits before trying a failed renewal again.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long it waits before trying to record its certificate again (at a start, until there is
/// a leader).
const RECORD_RETRY: Duration = Duration::from_millis(500);

/// Puts every change of the replicated deny list in force in `gate`: later handshakes are
/// checked against it and live connections it refuses are closed at once. Runs until the
/// cluster's driver stops.
pub async fn keep_gate(mut deny: watch::Receiver<DenyList>, gate: Gate) {
    loop {
        let list = deny.borrow_and_update().clone();
        let closed = gate.update(list);
        if closed > 0 {
            tracing::info!(closed, "closed the connections of newly denied identities");
        }
        if deny.changed().await.is_err() {
            return;
        }
    }
}

/// What the loop should do next about a certificate valid `not_before..not_after` (seconds) at
/// `now`: renew it now, or wait this long first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Renew,
    Wait(Duration),
}

/// Renew at two thirds of the certificate's life; until then, wait (at most [`MAX_SLEEP`]).
pub fn next_step(not_before: i64, not_after: i64, now: i64) -> Step {
    let due = join::renew_at(not_before, not_after);
    if now >= due {
        return Step::Renew;
    }
    let wait = Duration::from_secs(u64::try_from(due - now).unwrap_or(0));
    Step::Wait(wait.min(MAX_SLEEP))
}

/// How long to wait after a failure: a tenth of what is left of the certificate, between a
/// second and [`MAX_RETRY`].
pub fn retry_after(not_after: i64, now: i64) -> Duration {
    let left = u64::try_from(not_after - now).unwrap_or(0);
    Duration::from_secs(left / 10).clamp(Duration::from_secs(1), MAX_RETRY)
}

/// This coordinator's own certificate, and what renews it.
#[derive(Debug)]
pub struct OwnCertificate {
    pub node_id: NodeId,
    pub tls_dir: PathBuf,
    pub credentials: Credentials,
    pub signing: Arc<Signing>,
    pub cluster: Cluster,
    /// `nexus_cert_expiry_timestamp_seconds`, moved to each new certificate.
    pub expiries: Common,
    /// Renew now, whatever the certificate's age: a CA rotation re-issues every certificate
    /// (`crate::trust`).
    pub renew_now: Arc<tokio::sync::Notify>,
}

impl OwnCertificate {
    fn identity(&self) -> Identity {
        Identity::Coordinator(self.node_id)
    }

    /// The certificate in force: PEM-less facts (fingerprint, dates) as the cluster records
    /// them, or `None` if it cannot be read.
    fn in_force(&self, source: CertSource) -> Option<join::CertRecord> {
        let der = self.credentials.own_certificate()?;
        Some(join::CertRecord {
            fingerprint: nexus_protocol::hash::hex(&nexus_protocol::hash::sha256(&der)),
            not_before: nexus_protocol::identity::not_before(&der)?,
            not_after: nexus_protocol::identity::not_after(&der)?,
            recorded_at: clock::now(),
            source,
        })
    }

    /// Records the certificate in force unless the cluster already has it.
    async fn record(&self) -> Result<(), WireError> {
        let Some(cert) = self.in_force(CertSource::Coordinator(self.node_id)) else {
            return Ok(());
        };
        let identity = self.identity();
        let known = {
            let identity = identity.clone();
            self.cluster
                .read(Consistency::Linearizable, move |state| {
                    state
                        .security()
                        .certificate(&identity)
                        .map(|c| c.fingerprint.clone())
                })
                .await?
        };
        if known.as_deref() == Some(cert.fingerprint.as_str()) {
            return Ok(());
        }
        self.cluster
            .propose(
                RequestId::random(),
                identity.clone(),
                Command::RecordCertificate { identity, cert },
            )
            .await
    }

    /// Makes a fresh key and certificate (same identity and names), writes them, puts them in
    /// force and records them.
    async fn renew(&self) -> Result<(), WireError> {
        let identity = self.identity();
        let names: Vec<SubjectName> = self
            .credentials
            .own_names()
            .iter()
            .map(|name| SubjectName::parse(name))
            .collect();
        let deny = self.cluster.deny_list().borrow().clone();
        let now = clock::now();
        let (cert_pem, key_pem) = self.signing.issue(&identity, &names, &deny, now)?;
        let record = cert_record(&cert_pem, CertSource::Coordinator(self.node_id), now)
            .ok_or_else(|| internal("the new certificate could not be read back"))?;
        let pki = PkiDir::new(&self.tls_dir);
        // The key first: a crash between leaves the old certificate with a key that is not its
        // own, which the next start refuses loudly rather than serving with a stale pair.
        write_atomically(&pki.key(&identity), key_pem.as_bytes(), true)?;
        write_atomically(&pki.cert(&identity), cert_pem.as_bytes(), false)?;
        let rotation = self
            .credentials
            .prepare_rotation(&self.tls_dir)
            .map_err(|e| internal(&format!("cannot read the new certificate back: {e}")))?;
        if let Some(rotation) = rotation {
            let change = rotation
                .commit(&self.credentials)
                .map_err(|e| internal(&format!("cannot put the new certificate in force: {e}")))?;
            tracing::info!(old = %change.old, new = %change.new, "renewed this coordinator's certificate");
        }
        let expiries = self.credentials.expiries();
        self.expiries.set_cert_expiries(expiries.own, expiries.ca);
        let identity = self.identity();
        self.cluster
            .propose(
                RequestId::random(),
                identity.clone(),
                Command::RecordCertificate {
                    identity,
                    cert: record,
                },
            )
            .await
    }

    /// Records the certificate in force, then renews it whenever it is due, until the task is
    /// aborted.
    pub async fn run(self) {
        if !self.signing.holds_key() {
            tracing::warn!(
                "this coordinator holds no CA key (ca.key in its --tls-dir): it cannot renew its own certificate"
            );
        }
        let mut recorded = false;
        let mut early = false;
        loop {
            let now = secs(clock::now());
            let Some(cert) = self.in_force(CertSource::Coordinator(self.node_id)) else {
                return;
            };
            if !recorded {
                match self.record().await {
                    Ok(()) => recorded = true,
                    Err(error) => {
                        // Most often no leader yet, just after a start: a cheap look, soon again.
                        tracing::debug!(
                            "cannot record this coordinator's certificate yet: {}",
                            error.message
                        );
                        tokio::time::sleep(RECORD_RETRY).await;
                        continue;
                    }
                }
            }
            let step = if std::mem::take(&mut early) {
                Step::Renew
            } else {
                next_step(cert.not_before, cert.not_after, now)
            };
            let wait = match step {
                Step::Wait(wait) => wait,
                Step::Renew if !self.signing.holds_key() => MAX_SLEEP,
                Step::Renew => {
                    let result = self.renew().await;
                    self.cluster
                        .metrics()
                        .renewals
                        .inc(["coordinator", &Metrics::outcome_label(&result)]);
                    match result {
                        Ok(()) => continue,
                        Err(error) => {
                            tracing::warn!(code = %error.code, "cannot renew this coordinator's certificate: {}", error.message);
                            // Written and in force but not recorded: record it next round.
                            recorded = false;
                            retry_after(cert.not_after, now)
                        }
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.renew_now.notified() => early = true,
            }
        }
    }
}

fn internal(message: &str) -> WireError {
    WireError::new(ErrorCode::Internal, message.to_string())
}

/// Writes a file whole through a temporary file and a rename; `private` files are made 0600.
fn write_atomically(path: &std::path::Path, bytes: &[u8], private: bool) -> Result<(), WireError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| internal(&format!("cannot write {}: {e}", path.display()));
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, Validity};

    use super::*;
    use crate::config::lifetimes::Lifetimes;
    use crate::{Config, Node};

    /// A one-node cluster in `dir` whose own certificate began 100 s ago and ends in 20 s (past
    /// two thirds: due), signing for `lifetime`; its credentials.
    fn node(dir: &std::path::Path) -> (Node, Credentials, Arc<Signing>) {
        let pki = PkiDir::new(dir.join("pki"));
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
        let identity = Identity::Coordinator(NodeId::new(1).unwrap());
        let now = clock::now().as_millis();
        let validity = Validity {
            not_before: Timestamp::from_millis(now - 100_000),
            not_after: Timestamp::from_millis(now + 20_000),
        };
        let names = [
            SubjectName::parse("127.0.0.1"),
            SubjectName::parse("c1.example"),
        ];
        pki.issue(&identity, &names, validity, false).unwrap();
        let credentials = Credentials::from_pki_dir(pki.path(), &identity).unwrap();
        let mut config = Config::from_args(crate::config::Args {
            node_id: Some(NodeId::new(1).unwrap()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            data_dir: Some(dir.join("data")),
            tls_dir: Some(pki.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        config.driver.tick = Duration::from_millis(10);
        let node = Node::start(&config, &credentials).unwrap();
        let lifetimes = Lifetimes {
            node: Duration::from_secs(600),
            user: Duration::from_secs(60),
        };
        let signing = Signing::load(
            pki.path(),
            &credentials,
            Arc::new(std::sync::Mutex::new(lifetimes)),
        )
        .unwrap();
        (node, credentials, Arc::new(signing))
    }

    #[tokio::test]
    async fn a_coordinator_renews_its_due_certificate_in_place_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let (node, credentials, signing) = node(dir.path());
        let before = credentials.own_certificate().unwrap();
        let cert_file = PkiDir::new(dir.path().join("pki"))
            .cert(&Identity::Coordinator(NodeId::new(1).unwrap()));
        let on_disk = std::fs::read(&cert_file).unwrap();
        let (_registry, common) = nexus_telemetry::Registry::for_daemon("coordinator", "test");
        let renewal = tokio::spawn(
            OwnCertificate {
                node_id: NodeId::new(1).unwrap(),
                tls_dir: dir.path().join("pki"),
                credentials: credentials.clone(),
                signing,
                cluster: node.cluster.clone(),
                expiries: common.clone(),
                renew_now: Arc::default(),
            }
            .run(),
        );
        let mut renewed = None;
        for _ in 0..500 {
            let identity = Identity::Coordinator(NodeId::new(1).unwrap());
            let recorded = node
                .cluster
                .read(Consistency::Stale, move |state| {
                    state.security().certificate(&identity).cloned()
                })
                .await
                .unwrap();
            if let Some(record) = recorded
                && record.not_after - record.not_before > 120
            {
                renewed = Some(record);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The loop counts the renewal once its proposal returns, a moment after the state shows
        // it: wait for that before stopping the loop.
        for _ in 0..100 {
            if node.cluster.metrics().renewals.get(["coordinator", "ok"]) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        renewal.abort();
        let record = renewed.expect("the renewed certificate was recorded");
        assert_eq!(
            record.source,
            CertSource::Coordinator(NodeId::new(1).unwrap())
        );
        let after = credentials.own_certificate().unwrap();
        assert_ne!(after, before, "the new certificate is in force in place");
        assert_eq!(
            record.fingerprint,
            nexus_protocol::hash::hex(&nexus_protocol::hash::sha256(&after))
        );
        assert!((600..=661).contains(&(record.not_after - record.not_before)));
        let mut names = credentials.own_names();
        names.sort();
        assert_eq!(
            names,
            ["127.0.0.1", "c1.example"],
            "the same names as before"
        );
        assert_ne!(
            std::fs::read(&cert_file).unwrap(),
            on_disk,
            "written to --tls-dir"
        );
        assert_eq!(
            credentials.expiries().own,
            Some(record.not_after),
            "the expiry metric's source follows"
        );
        assert_eq!(
            node.cluster.metrics().renewals.get(["coordinator", "ok"]),
            1
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_gate_follows_the_replicated_deny_list() {
        let dir = tempfile::tempdir().unwrap();
        let (node, _credentials, _signing) = node(dir.path());
        let gate = Gate::new();
        let keeper = tokio::spawn(keep_gate(node.cluster.deny_list(), gate.clone()));
        let bob = Identity::User {
            name: "bob".parse().unwrap(),
            role: nexus_protocol::Role::User,
        };
        assert!(!gate.refuses(&bob, 0));
        let mut proposed = false;
        for _ in 0..500 {
            let revoke = Command::RevokeUser {
                name: "bob".parse().unwrap(),
                by: "test".into(),
            };
            if node
                .cluster
                .propose(RequestId::from_u128(7), bob.clone(), revoke)
                .await
                .is_ok()
            {
                proposed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            proposed,
            "the one node elected itself and applied the revocation"
        );
        let started = std::time::Instant::now();
        while !gate.refuses(&bob, 0) {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "in force within a second"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        keeper.abort();
        node.stop().await.unwrap();
    }

    #[test]
    fn renewal_is_due_two_thirds_in_and_the_loop_never_sleeps_long() {
        assert_eq!(next_step(0, 90, 59), Step::Wait(Duration::from_secs(1)));
        assert_eq!(next_step(0, 90, 60), Step::Renew);
        assert_eq!(next_step(0, 90, 100), Step::Renew);
        assert_eq!(
            next_step(0, 90 * 86_400, 0),
            Step::Wait(MAX_SLEEP),
            "a long wait is cut short so a reloaded certificate is seen"
        );
        assert_eq!(retry_after(100, 95), Duration::from_secs(1));
        assert_eq!(retry_after(1_000_000, 0), MAX_RETRY);
        assert_eq!(retry_after(100, 200), Duration::from_secs(1));
    }
}
