//! This coordinator follows the cluster's CA rotation (`state::rotation`) as its replica applies
//! it, the way its gate follows the deny list: it takes the new CA's key out of the state into
//! its `--tls-dir`, writes the CA certificates to trust (`ca.pem`), puts them in force for new
//! handshakes ([`Credentials::trust`]; open connections, Raft's among them, keep going, so
//! leadership is not disturbed), signs with the new CA once the rotation says so, has its own
//! certificate renewed early, and tells the cluster each step it took.
//!
//! The decision is pure ([`plan`]); [`CaFollower::run`] does the I/O. The files:
//!
//! | file | written |
//! |---|---|
//! | `cluster-id` | once, before `ca.pem` first changes: the cluster's identity (its first CA's bundle) that the data dir and backups are bound to |
//! | `ca-next.key` (0600) | in the trust phase: the new CA's key, opened with this node's seal key |
//! | `ca.key` (0600) | from `ca-next.key` when the new CA signs (then `ca-next.key` is removed) |
//! | `ca.pem` | the bundle of the phase: old + new, new + old, then new |
//!
//! Not here: the transitions (`state::rotation`), renewing the certificate (`crate::renewal`,
//! woken through [`CaFollower::renew_now`]), agents' bundles (`service::watch_trust`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::ca_rotation::CaPhase;
use nexus_protocol::credentials::Secret;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::pki::PkiDir;
use nexus_protocol::seal::{self, Sealed};
use nexus_protocol::transport::Credentials;
use nexus_protocol::{NodeId, RequestId};
use tokio::sync::Notify;

use crate::cluster::Cluster;
use crate::credential_keys::CredentialKeys;
use crate::signing::Signing;
use crate::state::{CaRotations, CaStep, Command};

/// How often the follower looks again while a rotation is in progress (a step may have failed
/// for want of a leader).
const BUSY: Duration = Duration::from_secs(1);
/// How often it looks when none is.
const IDLE: Duration = Duration::from_secs(60);

/// What this node holds now, as [`plan`] needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Held {
    /// `ca.pem`'s text.
    pub ca_pem: String,
    /// `ca-next.key` is there.
    pub next_key: bool,
    /// Its certificate in force is the signing CA's (by the state: during `reissue` and after,
    /// the new CA's).
    pub reissued: bool,
    /// The fingerprint of the bundle it trusts now, and of the CA it signs with.
    pub trusted: String,
    pub signer: String,
}

/// What this node should do about the CA, given the state it applied and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Take the new CA's key out of the state into `ca-next.key`.
    pub take_key: bool,
    /// Sign with the new CA: `ca-next.key` becomes `ca.key`.
    pub switch_key: bool,
    /// The CA certificates to write, when they are not those of `ca.pem`.
    pub bundle: Option<String>,
    /// Trust `ca.pem` and sign with the CA of `ca.key`: what is in force is not what the state
    /// says. (The files may be ahead of this node: coordinators of one host may share a
    /// directory.)
    pub reload: bool,
    /// Tell the cluster this node took this step of the rotation to this CA.
    pub ack: Option<(String, CaStep)>,
    /// Have this node's certificate renewed now: it is not the new CA's.
    pub renew: bool,
}

/// The pure decision: see the module's table.
pub fn plan(rotations: &CaRotations, me: &Identity, held: &Held) -> Plan {
    let mut plan = Plan::default();
    let Some(bundle) = rotations.trust_bundle() else {
        return plan;
    };
    if bundle.ca_pem != held.ca_pem {
        plan.bundle = Some(bundle.ca_pem.clone());
    }
    plan.reload = nexus_protocol::transport::bundle_fingerprint(&bundle.ca_pem) != held.trusted
        || bundle.signer != held.signer;
    match rotations.current() {
        Some(rotation) if rotation.phase == CaPhase::Trust => {
            plan.take_key = !held.next_key;
            if !rotation.trusting.contains(me) && rotation.parties.contains(me) {
                plan.ack = Some((rotation.new_ca.clone(), CaStep::Trusts));
            }
        }
        Some(rotation) => {
            plan.switch_key = held.next_key;
            if !rotation.reissued.contains(me) && rotation.parties.contains(me) {
                if held.reissued {
                    plan.ack = Some((rotation.new_ca.clone(), CaStep::Reissued));
                } else {
                    plan.renew = true;
                }
            }
        }
        // Finished (by force, maybe before this node was re-issued): a certificate of the old
        // CA is trusted by no one now.
        None => {
            plan.switch_key = held.next_key;
            plan.renew = !held.reissued;
        }
    }
    plan
}

/// What binds a sealed CA key to its rotation: it opens only as the key of the CA `new_ca`.
pub fn key_binding(new_ca: &str) -> Vec<u8> {
    format!("nexus-ca-key v1 {new_ca}").into_bytes()
}

/// The loop that follows the rotation on this node, and what it needs.
#[derive(Debug)]
pub struct CaFollower {
    pub node_id: NodeId,
    pub tls_dir: PathBuf,
    pub credentials: Credentials,
    pub signing: Arc<Signing>,
    pub cluster: Cluster,
    /// This node's seal keys (`--credentials-key-file`), which open the new CA's key.
    pub keys: Arc<CredentialKeys>,
    /// The cluster's identity, written to `cluster-id` before `ca.pem` first changes.
    pub cluster_id: String,
    /// Wakes the own certificate's renewal (`crate::renewal`) to renew now.
    pub renew_now: Arc<Notify>,
}

impl CaFollower {
    fn pki(&self) -> PkiDir {
        PkiDir::new(&self.tls_dir)
    }

    fn next_key_path(&self) -> PathBuf {
        self.tls_dir.join("ca-next.key")
    }

    fn held(&self, rotations: &CaRotations) -> Held {
        let own = self.credentials.own_certificate();
        let signer = rotations.trust_bundle().and_then(|bundle| {
            nexus_protocol::transport::certificates_der(&bundle.ca_pem)
                .into_iter()
                .find(|der| nexus_protocol::ca_rotation::fingerprint(der) == bundle.signer)
        });
        Held {
            ca_pem: std::fs::read_to_string(self.pki().ca_cert()).unwrap_or_default(),
            next_key: self.next_key_path().exists(),
            reissued: match (own, signer) {
                (Some(own), Some(ca)) => nexus_protocol::identity::issued_by(&own, &ca),
                _ => false,
            },
            trusted: self.credentials.trusted_fingerprint(),
            signer: self.signing.ca_fingerprint(),
        }
    }

    /// Follows the applied rotations until the cluster's driver stops.
    pub async fn run(self) {
        let mut changes = self.cluster.ca_rotations();
        loop {
            let rotations = changes.borrow_and_update().clone();
            let waiting = rotations
                .current()
                .map_or(0, |rotation| rotation.waiting().len());
            self.cluster
                .metrics()
                .ca_rotation_waiting
                .set(f64::from(u32::try_from(waiting).unwrap_or(u32::MAX)));
            if let Err(error) = self.step(&rotations).await {
                tracing::warn!(code = %error.code, "cannot follow the CA rotation yet: {}", error.message);
            }
            let wait = if rotations.current().is_some() {
                BUSY
            } else {
                IDLE
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One look: does what [`plan`] says, in its order (the key, the bundle, then the word).
    async fn step(&self, rotations: &CaRotations) -> Result<(), WireError> {
        let me = Identity::Coordinator(self.node_id);
        let plan = plan(rotations, &me, &self.held(rotations));
        if plan.take_key
            && let Some(rotation) = rotations.current()
        {
            let sealed = rotation.sealed_key.as_ref().ok_or_else(|| {
                internal("the rotation's sealed key is gone before this node took it".into())
            })?;
            let key = self.open_key(&rotation.new_ca, sealed)?;
            write_secret(&self.next_key_path(), key.expose())?;
            tracing::info!(new_ca = %short(&rotation.new_ca), "took the new CA's key");
        }
        if plan.switch_key {
            let key = std::fs::read_to_string(self.next_key_path())
                .map_err(|e| internal(format!("cannot read ca-next.key: {e}")))?;
            self.pki()
                .write_ca_key(&key)
                .map_err(|e| internal(e.to_string()))?;
            std::fs::remove_file(self.next_key_path())
                .map_err(|e| internal(format!("cannot remove ca-next.key: {e}")))?;
            tracing::info!("signs with the new CA from now on");
        }
        if let Some(bundle) = &plan.bundle {
            let pki = self.pki();
            pki.keep_cluster_id(&self.cluster_id)
                .map_err(|e| internal(e.to_string()))?;
            pki.write_ca_bundle(bundle)
                .map_err(|e| internal(e.to_string()))?;
        }
        if plan.reload || plan.bundle.is_some() || plan.switch_key {
            let bundle = std::fs::read(self.pki().ca_cert())
                .map_err(|e| internal(format!("cannot read ca.pem back: {e}")))?;
            self.credentials
                .trust(&bundle)
                .map_err(|e| internal(format!("cannot trust the new CA bundle: {e}")))?;
            self.signing
                .reload(&self.tls_dir, &self.credentials)
                .map_err(|e| internal(format!("cannot sign with the new CA: {e}")))?;
            tracing::info!(
                trusted = %short(&self.credentials.trusted_fingerprint()),
                signer = %short(&self.signing.ca_fingerprint()),
                "put the cluster's CA certificates in force"
            );
        }
        if plan.renew {
            self.renew_now.notify_one();
        }
        if let Some((new_ca, step)) = plan.ack {
            self.cluster
                .propose(
                    RequestId::random(),
                    me.clone(),
                    Command::CaProgress {
                        identity: me,
                        new_ca,
                        step,
                    },
                )
                .await?;
            tracing::info!(?step, "told the cluster this node's CA rotation step");
        }
        Ok(())
    }

    fn open_key(&self, new_ca: &str, sealed: &Sealed) -> Result<Secret, WireError> {
        let keys = self.keys.current()?;
        seal::open_for(&keys, &key_binding(new_ca), sealed).map_err(|error| {
            WireError::new(
                ErrorCode::CredentialsKeyMissing,
                format!("cannot open the new CA's key: {error}"),
            )
        })
    }
}

fn internal(message: String) -> WireError {
    WireError::new(ErrorCode::Internal, message)
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..16.min(fingerprint.len())]
}

/// Writes a secret file whole (0600 from its creation on) through a private temporary name.
fn write_secret(path: &std::path::Path, text: &str) -> Result<(), WireError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| internal(format!("cannot write {}: {e}", path.display()));
    let temporary = path.with_extension(format!(
        "tmp-{}-{:08x}",
        std::process::id(),
        nexus_protocol::id::random_u64() as u32
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use nexus_protocol::HostId;
    use nexus_protocol::seal::Sealed;

    use super::*;
    use crate::state::NewCa;

    const OLD: &str = "-----BEGIN CERTIFICATE-----\nb2xk\n-----END CERTIFICATE-----\n";
    const NEW: &str = "-----BEGIN CERTIFICATE-----\nbmV3\n-----END CERTIFICATE-----\n";

    fn me() -> Identity {
        Identity::Coordinator(NodeId::new(1).unwrap())
    }

    fn rotating() -> CaRotations {
        let mut rotations = CaRotations::default();
        let new = NewCa {
            old_ca_pem: OLD.into(),
            old_ca: "0ld".into(),
            new_ca_pem: NEW.into(),
            new_ca: "new".into(),
            sealed_key: Sealed {
                key_id: "k".into(),
                nonce: vec![0; 12],
                ciphertext: vec![1],
            },
        };
        let host = Identity::Agent(HostId::new("h1").unwrap());
        let at = nexus_protocol::clock::Timestamp::from_millis(1000);
        rotations
            .start(at, "root", &new, [me(), host].into())
            .unwrap();
        rotations
    }

    /// What a node holds once it put `ca_pem` in force, signing with `signer`.
    fn in_force(ca_pem: &str, signer: &str, next_key: bool, reissued: bool) -> Held {
        Held {
            ca_pem: ca_pem.into(),
            next_key,
            reissued,
            trusted: nexus_protocol::transport::bundle_fingerprint(ca_pem),
            signer: signer.into(),
        }
    }

    #[test]
    fn nothing_to_do_before_any_rotation() {
        let held = Held {
            ca_pem: OLD.into(),
            ..Held::default()
        };
        assert_eq!(plan(&CaRotations::default(), &me(), &held), Plan::default());
    }

    #[test]
    fn each_phase_asks_for_its_steps_in_order() {
        let mut rotations = rotating();
        let at = nexus_protocol::clock::Timestamp::from_millis(2000);
        let both = nexus_protocol::transport::bundle(OLD, NEW);
        // Trust: take the key, trust both, then say so.
        let mut held = Held {
            ca_pem: OLD.into(),
            ..Held::default()
        };
        let step = plan(&rotations, &me(), &held);
        assert!(step.take_key && !step.switch_key && !step.renew && step.reload);
        assert_eq!(step.bundle.as_deref(), Some(both.as_str()));
        assert_eq!(step.ack, Some(("new".into(), CaStep::Trusts)));
        // Another coordinator of this host wrote the files already: put them in force.
        held = in_force(&both, "old", true, false);
        held.trusted = "stale".into();
        let step = plan(&rotations, &me(), &held);
        assert!(step.reload && step.bundle.is_none() && !step.take_key);
        held = in_force(&both, "0ld", true, false);
        rotations
            .progress(at, &me(), "new", CaStep::Trusts)
            .unwrap();
        assert_eq!(plan(&rotations, &me(), &held), Plan::default());

        // Reissue (the host trusts too): sign with the new key, trust new first, renew.
        let host = Identity::Agent(HostId::new("h1").unwrap());
        rotations
            .progress(at, &host, "new", CaStep::Trusts)
            .unwrap();
        let step = plan(&rotations, &me(), &held);
        assert!(step.switch_key && step.renew && !step.take_key);
        assert_eq!(
            step.bundle,
            Some(nexus_protocol::transport::bundle(NEW, OLD))
        );
        assert_eq!(step.ack, None);
        held = in_force(&step.bundle.unwrap(), "new", false, true);
        let step = plan(&rotations, &me(), &held);
        assert_eq!(step.ack, Some(("new".into(), CaStep::Reissued)));
        assert!(!step.renew && !step.reload);

        // Finished: the old CA goes.
        rotations
            .progress(at, &me(), "new", CaStep::Reissued)
            .unwrap();
        rotations
            .progress(at, &host, "new", CaStep::Reissued)
            .unwrap();
        let step = plan(&rotations, &me(), &held);
        assert_eq!(step.bundle.as_deref(), Some(NEW));
        assert_eq!(step.ack, None);
        held = in_force(NEW, "new", false, true);
        assert_eq!(plan(&rotations, &me(), &held), Plan::default());
        // Finished by force before this node was re-issued: it renews.
        held.reissued = false;
        assert!(plan(&rotations, &me(), &held).renew);
    }
}
