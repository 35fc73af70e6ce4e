//! A CA rotation as the replicated state holds it (`nexus admin ca rotate`), and the CA
//! certificates the cluster trusts once one finished.
//!
//! Pure: the transitions take the time and the parties as arguments. A rotation starts with the
//! new CA's certificate and its key sealed under the coordinators' seal key (the leader made
//! both; the state never holds the key in clear), and the parties to wait for: the coordinators
//! and the hosts. Then, driven by the parties' acknowledgements ([`CaStep`]):
//!
//! | phase | every party trusts | coordinators sign with | advances when |
//! |---|---|---|---|
//! | [`CaPhase::Trust`] | old + new | the old CA | every party trusts both (a coordinator: and wrote the new key); the sealed key is dropped |
//! | [`CaPhase::Reissue`] | new + old | the new CA | every party's certificate is the new CA's |
//! | finished | new | the new CA | |
//!
//! An admin may finish a rotation that waits for a host that is down (`force`): once every
//! coordinator holds the new key, never before (a coordinator without it could not sign). The
//! parties left are named in [`FinishedRotation::left`]: each must enrol again.
//!
//! Not here: making the CA and sealing its key (the service), following the phases on a node
//! (`crate::trust`), the handshake (`nexus_protocol::transport`).

use std::collections::BTreeSet;

use nexus_protocol::ca_rotation::{
    CaPhase, CaRotationView, FinishedRotation, PartyProgress, TrustBundle,
};
use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::seal::Sealed;
use nexus_protocol::transport::bundle;
use serde::{Deserialize, Serialize};

use super::Outcome;

/// A party's acknowledgement of a rotation's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaStep {
    /// It trusts the old and the new CA (a coordinator: and wrote the new CA's key).
    Trusts,
    /// Its certificate in force is the new CA's.
    Reissued,
}

/// The rotation in progress, the last one finished, and what the cluster trusts since.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaRotations {
    current: Option<CaRotation>,
    last: Option<FinishedRotation>,
    /// The CA certificates trusted since the last rotation finished: `None` before any (each
    /// node's files say).
    trusted: Option<TrustedCa>,
}

/// The CA certificates a finished rotation left the cluster with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedCa {
    pub ca_pem: String,
    /// The SHA-256 (hex) of the signing CA certificate.
    pub signer: String,
}

/// A rotation in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    pub phase: CaPhase,
    pub started_at: Timestamp,
    pub started_by: String,
    /// The CA certificates trusted before (the signer's first), and the signer's SHA-256.
    pub old_ca_pem: String,
    pub old_ca: String,
    pub new_ca_pem: String,
    pub new_ca: String,
    /// The new CA's key, sealed; dropped when the rotation leaves [`CaPhase::Trust`], since
    /// every coordinator has written it to its `--tls-dir` by then.
    pub sealed_key: Option<Sealed>,
    pub parties: BTreeSet<Identity>,
    pub trusting: BTreeSet<Identity>,
    pub reissued: BTreeSet<Identity>,
}

/// What a new rotation starts with (see [`CaRotations::start`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCa {
    pub old_ca_pem: String,
    pub old_ca: String,
    pub new_ca_pem: String,
    pub new_ca: String,
    pub sealed_key: Sealed,
}

impl CaRotation {
    /// The CA certificates every party trusts in this phase, the signer's first.
    pub fn trust_pem(&self) -> String {
        match self.phase {
            CaPhase::Trust => bundle(&self.old_ca_pem, &self.new_ca_pem),
            CaPhase::Reissue => bundle(&self.new_ca_pem, &self.old_ca_pem),
        }
    }

    /// The SHA-256 of the CA that signs in this phase.
    pub fn signer(&self) -> &str {
        match self.phase {
            CaPhase::Trust => &self.old_ca,
            CaPhase::Reissue => &self.new_ca,
        }
    }

    /// The parties not done with this phase.
    pub fn waiting(&self) -> Vec<Identity> {
        let done = match self.phase {
            CaPhase::Trust => &self.trusting,
            CaPhase::Reissue => &self.reissued,
        };
        self.parties.difference(done).cloned().collect()
    }

    pub fn view(&self) -> CaRotationView {
        CaRotationView {
            phase: self.phase,
            started_at: self.started_at,
            started_by: self.started_by.clone(),
            old_ca: self.old_ca.clone(),
            new_ca: self.new_ca.clone(),
            parties: self
                .parties
                .iter()
                .map(|identity| PartyProgress {
                    identity: identity.clone(),
                    trusts: self.trusting.contains(identity),
                    reissued: self.reissued.contains(identity),
                })
                .collect(),
        }
    }

    fn coordinators_waiting_for_trust(&self) -> Vec<&Identity> {
        self.parties
            .iter()
            .filter(|party| matches!(party, Identity::Coordinator(_)))
            .filter(|party| !self.trusting.contains(*party))
            .collect()
    }
}

impl CaRotations {
    pub fn current(&self) -> Option<&CaRotation> {
        self.current.as_ref()
    }

    pub fn last(&self) -> Option<&FinishedRotation> {
        self.last.as_ref()
    }

    /// What every party is to trust and who signs, by the state: `None` when no rotation ever
    /// ran (each node's files say).
    pub fn trust_bundle(&self) -> Option<TrustBundle> {
        if let Some(rotation) = &self.current {
            return Some(TrustBundle {
                ca_pem: rotation.trust_pem(),
                signer: rotation.signer().to_string(),
                rotating_to: Some(rotation.new_ca.clone()),
            });
        }
        self.trusted.as_ref().map(|trusted| TrustBundle {
            ca_pem: trusted.ca_pem.clone(),
            signer: trusted.signer.clone(),
            rotating_to: None,
        })
    }

    /// Starts a rotation to `new`, waiting for `parties`. Refused while one is in progress
    /// (`CA_ROTATION_IN_PROGRESS`), to the CA in force, or with no party.
    pub fn start(
        &mut self,
        at: Timestamp,
        by: &str,
        new: &NewCa,
        parties: BTreeSet<Identity>,
    ) -> Result<(), WireError> {
        if let Some(current) = &self.current {
            return Err(WireError::new(
                ErrorCode::CaRotationInProgress,
                format!(
                    "a rotation to CA {} started at {} by {} is in its {} phase",
                    short(&current.new_ca),
                    current.started_at.as_millis(),
                    current.started_by,
                    current.phase.as_str()
                ),
            ));
        }
        if new.new_ca == new.old_ca {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "the new CA is the one in force",
            ));
        }
        if parties.is_empty() {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "a rotation waits for at least one coordinator",
            ));
        }
        self.current = Some(CaRotation {
            phase: CaPhase::Trust,
            started_at: at,
            started_by: by.to_string(),
            old_ca_pem: new.old_ca_pem.clone(),
            old_ca: new.old_ca.clone(),
            new_ca_pem: new.new_ca_pem.clone(),
            new_ca: new.new_ca.clone(),
            sealed_key: Some(new.sealed_key.clone()),
            parties,
            trusting: BTreeSet::new(),
            reissued: BTreeSet::new(),
        });
        Ok(())
    }

    /// Records that `identity` took `step` of the rotation to `new_ca`, and moves the rotation on
    /// when every party did. A step of another rotation (a late one) is `NO_CA_ROTATION`; of a
    /// party the rotation does not wait for, nothing.
    pub fn progress(
        &mut self,
        at: Timestamp,
        identity: &Identity,
        new_ca: &str,
        step: CaStep,
    ) -> Result<(), WireError> {
        let Some(rotation) = self.current.as_mut().filter(|r| r.new_ca == new_ca) else {
            return Err(WireError::new(
                ErrorCode::NoCaRotation,
                format!("no rotation to CA {} is in progress", short(new_ca)),
            ));
        };
        if !rotation.parties.contains(identity) {
            return Ok(());
        }
        match step {
            CaStep::Trusts => {
                rotation.trusting.insert(identity.clone());
            }
            CaStep::Reissued => {
                if rotation.phase == CaPhase::Trust {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "no certificate is re-issued before every party trusts the new CA",
                    ));
                }
                rotation.trusting.insert(identity.clone());
                rotation.reissued.insert(identity.clone());
            }
        }
        self.advance(at);
        Ok(())
    }

    /// The rotation no longer waits for `identity` (a host removed from the fleet).
    pub fn forget(&mut self, at: Timestamp, identity: &Identity) {
        if let Some(rotation) = &mut self.current
            && rotation.parties.remove(identity)
        {
            rotation.trusting.remove(identity);
            rotation.reissued.remove(identity);
            self.advance(at);
        }
    }

    /// Finishes the rotation now, leaving the parties not re-issued to enrol again. Refused
    /// with none in progress (`NO_CA_ROTATION`), and while a coordinator has not taken the new
    /// CA's key (`CA_ROTATION_IN_PROGRESS`).
    pub fn finish(&mut self, at: Timestamp) -> Result<(), WireError> {
        let Some(rotation) = &self.current else {
            return Err(WireError::new(
                ErrorCode::NoCaRotation,
                "no CA rotation is in progress",
            ));
        };
        let missing = rotation.coordinators_waiting_for_trust();
        if !missing.is_empty() {
            return Err(WireError::new(
                ErrorCode::CaRotationInProgress,
                format!(
                    "{} not taken the new CA yet and could not sign without it: bring {} back first (or remove {} from the cluster)",
                    names(&missing),
                    if missing.len() == 1 { "it" } else { "them" },
                    if missing.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        self.finished(at);
        Ok(())
    }

    /// Moves the rotation on as far as its parties allow.
    fn advance(&mut self, at: Timestamp) {
        let Some(rotation) = &mut self.current else {
            return;
        };
        if rotation.phase == CaPhase::Trust && rotation.waiting().is_empty() {
            rotation.phase = CaPhase::Reissue;
            rotation.sealed_key = None;
        }
        if rotation.phase == CaPhase::Reissue && rotation.waiting().is_empty() {
            self.finished(at);
        }
    }

    fn finished(&mut self, at: Timestamp) {
        let Some(rotation) = self.current.take() else {
            return;
        };
        self.last = Some(FinishedRotation {
            started_at: rotation.started_at,
            finished_at: at,
            new_ca: rotation.new_ca.clone(),
            // Coordinators hold the new key (a forced finish waits for that) and renew
            // themselves; a host not re-issued must enrol again.
            left: rotation
                .parties
                .difference(&rotation.reissued)
                .filter(|party| !matches!(party, Identity::Coordinator(_)))
                .cloned()
                .collect(),
        });
        self.trusted = Some(TrustedCa {
            ca_pem: rotation.new_ca_pem,
            signer: rotation.new_ca,
        });
    }
}

impl super::State {
    /// The CA rotation in progress, the last finished, what the cluster trusts since.
    pub fn ca_rotations(&self) -> &CaRotations {
        &self.ca_rotations
    }

    /// Starts a rotation waiting for `coordinators` and every host in the fleet.
    pub(super) fn start_ca_rotation(
        &mut self,
        at: Timestamp,
        new: &NewCa,
        coordinators: &[nexus_protocol::NodeId],
        by: &str,
    ) -> Outcome {
        let parties = coordinators
            .iter()
            .map(|id| Identity::Coordinator(*id))
            .chain(self.hosts.keys().map(|host| Identity::Agent(host.clone())))
            .collect();
        outcome(self.ca_rotations.start(at, by, new, parties))
    }

    pub(super) fn ca_progress(
        &mut self,
        at: Timestamp,
        identity: &Identity,
        new_ca: &str,
        step: CaStep,
    ) -> Outcome {
        outcome(self.ca_rotations.progress(at, identity, new_ca, step))
    }

    pub(super) fn finish_ca_rotation(&mut self, at: Timestamp) -> Outcome {
        outcome(self.ca_rotations.finish(at))
    }
}

fn outcome(result: Result<(), WireError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Applied,
        Err(error) => Outcome::rejected(error),
    }
}

/// The first 16 hex digits of a fingerprint, as messages show it.
fn short(fingerprint: &str) -> &str {
    &fingerprint[..16.min(fingerprint.len())]
}

fn names(parties: &[&Identity]) -> String {
    let listed: Vec<String> = parties.iter().map(ToString::to_string).collect();
    let verb = if parties.len() == 1 { "has" } else { "have" };
    format!("{} {verb}", listed.join(", "))
}

#[cfg(test)]
mod tests {
    use nexus_protocol::{HostId, NodeId};

    use super::*;

    const OLD: &str = "-----BEGIN CERTIFICATE-----\nb2xk\n-----END CERTIFICATE-----\n";
    const NEW: &str = "-----BEGIN CERTIFICATE-----\nbmV3\n-----END CERTIFICATE-----\n";

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn coordinator(id: u64) -> Identity {
        Identity::Coordinator(NodeId::new(id).unwrap())
    }

    fn host(name: &str) -> Identity {
        Identity::Agent(HostId::new(name).unwrap())
    }

    fn new_ca() -> NewCa {
        NewCa {
            old_ca_pem: OLD.into(),
            old_ca: "0ld".into(),
            new_ca_pem: NEW.into(),
            new_ca: "new".into(),
            sealed_key: Sealed {
                key_id: "k1".into(),
                nonce: vec![0; 12],
                ciphertext: vec![1, 2, 3],
            },
        }
    }

    fn started() -> CaRotations {
        let mut rotations = CaRotations::default();
        let parties = [coordinator(1), coordinator(2), host("h1")].into();
        rotations
            .start(at(10), "admin root", &new_ca(), parties)
            .unwrap();
        rotations
    }

    fn phase(rotations: &CaRotations) -> Option<CaPhase> {
        rotations.current().map(|r| r.phase)
    }

    #[test]
    fn a_rotation_trusts_both_then_reissues_then_drops_the_old_ca() {
        let mut rotations = started();
        assert_eq!(phase(&rotations), Some(CaPhase::Trust));
        let bundle = rotations.trust_bundle().unwrap();
        assert_eq!(
            (bundle.signer.as_str(), bundle.rotating_to.as_deref()),
            ("0ld", Some("new"))
        );
        assert!(rotations.current().unwrap().sealed_key.is_some());
        assert_eq!(rotations.current().unwrap().waiting().len(), 3);

        for party in [coordinator(1), coordinator(2)] {
            rotations
                .progress(at(11), &party, "new", CaStep::Trusts)
                .unwrap();
        }
        // Again: nothing more.
        rotations
            .progress(at(11), &coordinator(1), "new", CaStep::Trusts)
            .unwrap();
        assert_eq!(rotations.current().unwrap().waiting(), [host("h1")]);
        assert_eq!(phase(&rotations), Some(CaPhase::Trust));
        rotations
            .progress(at(12), &host("h1"), "new", CaStep::Trusts)
            .unwrap();

        // Everyone trusts both: the new CA signs, and the sealed key is gone from the state.
        assert_eq!(phase(&rotations), Some(CaPhase::Reissue));
        let rotation = rotations.current().unwrap();
        assert!(rotation.sealed_key.is_none());
        assert_eq!(rotation.signer(), "new");
        let bundle = rotations.trust_bundle().unwrap();
        assert_eq!(bundle.signer, "new");

        for party in [coordinator(2), host("h1"), coordinator(1)] {
            assert!(rotations.current().is_some());
            rotations
                .progress(at(20), &party, "new", CaStep::Reissued)
                .unwrap();
        }
        assert!(rotations.current().is_none());
        let last = rotations.last().unwrap();
        assert_eq!((last.started_at, last.finished_at), (at(10), at(20)));
        assert!(last.left.is_empty());
        let trusted = rotations.trust_bundle().unwrap();
        assert_eq!(trusted.ca_pem, NEW);
        assert_eq!(
            (trusted.signer.as_str(), trusted.rotating_to),
            ("new", None)
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let mut none = CaRotations::default();
        assert_eq!(none.trust_bundle(), None);
        assert_eq!(
            none.finish(at(1)).unwrap_err().code,
            ErrorCode::NoCaRotation
        );
        let late = none.progress(at(1), &host("h1"), "new", CaStep::Trusts);
        assert_eq!(late.unwrap_err().code, ErrorCode::NoCaRotation);
        let mut same = new_ca();
        same.new_ca = same.old_ca.clone();
        let refused = none.start(at(1), "a", &same, [coordinator(1)].into());
        assert_eq!(refused.unwrap_err().code, ErrorCode::InvalidArgument);
        let refused = none.start(at(1), "a", &new_ca(), BTreeSet::new());
        assert_eq!(refused.unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(none, CaRotations::default());

        let mut rotations = started();
        let before = rotations.clone();
        let again = rotations.start(at(11), "a", &new_ca(), [coordinator(1)].into());
        assert_eq!(again.unwrap_err().code, ErrorCode::CaRotationInProgress);
        // A step of another rotation, and a re-issue before everyone trusts.
        let other = rotations.progress(at(11), &host("h1"), "other", CaStep::Trusts);
        assert_eq!(other.unwrap_err().code, ErrorCode::NoCaRotation);
        let early = rotations.progress(at(11), &host("h1"), "new", CaStep::Reissued);
        assert_eq!(early.unwrap_err().code, ErrorCode::InvalidArgument);
        // A party it does not wait for (a host that joined since): nothing.
        rotations
            .progress(at(11), &host("h9"), "new", CaStep::Trusts)
            .unwrap();
        assert_eq!(rotations, before);
    }

    #[test]
    fn a_forced_finish_waits_for_the_coordinators_and_names_who_is_left() {
        let mut rotations = started();
        rotations
            .progress(at(11), &coordinator(1), "new", CaStep::Trusts)
            .unwrap();
        let refused = rotations.finish(at(12)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::CaRotationInProgress);
        assert!(
            refused.message.contains("coordinator 2 has not"),
            "{refused}"
        );
        rotations
            .progress(at(12), &coordinator(2), "new", CaStep::Trusts)
            .unwrap();
        // The host is down: it never trusts, so the rotation never re-issues by itself.
        assert_eq!(phase(&rotations), Some(CaPhase::Trust));
        rotations.finish(at(13)).unwrap();
        let last = rotations.last().unwrap();
        assert_eq!(last.left, [host("h1")], "coordinators renew by themselves");
        assert_eq!(rotations.trust_bundle().unwrap().ca_pem, NEW);
    }

    #[test]
    fn a_removed_host_is_no_longer_waited_for() {
        let mut rotations = started();
        for party in [coordinator(1), coordinator(2)] {
            rotations
                .progress(at(11), &party, "new", CaStep::Trusts)
                .unwrap();
        }
        rotations.forget(at(12), &host("h1"));
        assert_eq!(phase(&rotations), Some(CaPhase::Reissue));
        for party in [coordinator(1), coordinator(2)] {
            rotations
                .progress(at(13), &party, "new", CaStep::Reissued)
                .unwrap();
        }
        assert!(rotations.current().is_none());
        assert!(rotations.last().unwrap().left.is_empty());
    }
}
