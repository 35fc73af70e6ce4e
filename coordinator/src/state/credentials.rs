//! The credential store's records: each credential's public part and its secret sealed by an
//! AEAD under a named key. Only ciphertext is replicated, snapshotted and backed up; the keys are
//! files each coordinator is given and never enter the state.
//!
//! Not here: sealing and opening (`nexus_protocol::seal`, by the service with the key file),
//! who may ask for a secret.

use std::collections::BTreeMap;

use nexus_protocol::HostId;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::credentials::{CredentialSpec, CredentialView};
use serde::{Deserialize, Serialize};

use super::State;

/// A secret as the state keeps it (sealed under a named key, with its nonce): the protocol's,
/// which seals and opens it.
pub use nexus_protocol::seal::Sealed;

/// One stored credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub spec: CredentialSpec,
    pub sealed: Sealed,
    pub created_at: Timestamp,
    pub rotated_at: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
    pub last_used_by: Option<HostId>,
}

impl CredentialRecord {
    /// What anyone may see of it.
    pub fn view(&self) -> CredentialView {
        CredentialView {
            spec: self.spec.clone(),
            key_id: self.sealed.key_id.clone(),
            created_at: self.created_at,
            rotated_at: self.rotated_at,
            last_used: self.last_used,
            last_used_by: self.last_used_by.clone(),
        }
    }
}

/// Every stored credential, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Credentials {
    by_name: BTreeMap<String, CredentialRecord>,
}

impl Credentials {
    pub fn get(&self, name: &str) -> Option<&CredentialRecord> {
        self.by_name.get(name)
    }

    /// Every record, by name.
    pub fn iter(&self) -> impl Iterator<Item = &CredentialRecord> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl State {
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}
