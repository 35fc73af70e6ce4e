//! The vocabulary of a CA rotation (`nexus admin ca rotate`): its phases, what the CLI is shown
//! of its progress, and the trust bundle every party follows. Pure data and the bundle's rules;
//! the replicated record and its transitions are the coordinator's (`state::rotation`).
//!
//! The checks on a bundle received from the network, and bundles made of two, are
//! `transport::bundle`'s (they read PEM).
//!
//! A rotation goes through two phases, like Docker Swarm's `swarm ca --rotate`: every party
//! first trusts the old and the new CA ([`CaPhase::Trust`]); then every certificate is re-issued
//! by the new CA ([`CaPhase::Reissue`]); then the old CA is dropped from every bundle.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::identity::Identity;

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaPhase {
    /// Every party is to trust both CAs; coordinators still sign with the old one.
    Trust,
    /// Coordinators sign with the new CA; every party renews its certificate early.
    Reissue,
}

impl CaPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            CaPhase::Trust => "trust",
            CaPhase::Reissue => "reissue",
        }
    }
}

/// One party a rotation waits for: a coordinator or a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyProgress {
    pub identity: Identity,
    /// It trusts the old and the new CA (a coordinator: and holds the new CA's key).
    pub trusts: bool,
    /// Its certificate in force is the new CA's.
    pub reissued: bool,
}

/// A rotation in progress, as `nexus admin ca status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotationView {
    pub phase: CaPhase,
    pub started_at: Timestamp,
    pub started_by: String,
    /// The SHA-256 (hex) of the CA certificate being replaced, and of the new one.
    pub old_ca: String,
    pub new_ca: String,
    pub parties: Vec<PartyProgress>,
}

/// The last rotation that finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedRotation {
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub new_ca: String,
    /// Finished by an admin's `--force` while these hosts were not re-issued: each must enrol
    /// again with a new token. (Coordinators hold the new key by then and renew themselves.)
    pub left: Vec<Identity>,
}

/// `nexus admin ca status`, and the answer to `nexus admin ca rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaStatus {
    /// The CA certificates the cluster trusts now, PEM (public): what a party's `ca.pem` holds.
    pub trusted_pem: String,
    /// The SHA-256 (hex) of the CA certificate that signs now: what a join token pins.
    pub signer: String,
    pub rotation: Option<CaRotationView>,
    pub last: Option<FinishedRotation>,
}

/// The CA certificates a party is to trust, pushed to agents (`AgentRequest::WatchTrust`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// PEM, the signing CA's certificate first.
    pub ca_pem: String,
    /// The signing CA certificate's SHA-256 (hex): a party whose certificate is of another CA
    /// renews now.
    pub signer: String,
    /// The new CA's SHA-256 (hex) while a rotation is in progress: what the party acknowledges
    /// once it trusts the bundle (`AgentRequest::TrustsCa`).
    pub rotating_to: Option<String>,
}

/// The SHA-256 (hex) of a certificate (DER): how a CA is named here and in join tokens.
pub fn fingerprint(der: &[u8]) -> String {
    crate::hash::hex(&crate::hash::sha256(der))
}
