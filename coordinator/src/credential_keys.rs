//! This coordinator's credential store keys: its key file's (`--credentials-key-file`), read at
//! start and again at each reload, shared by the service (which seals and opens with them) and
//! the reloader (which replaces them). Never replicated, never in a snapshot or a backup.

use std::path::Path;
use std::sync::{Arc, Mutex};

use nexus_protocol::error::{ErrorCode, InvalidValue, WireError};
use nexus_protocol::seal::{self, KeyRing};

use crate::locks::lock;

/// The keys in force, if this node was given a key file.
#[derive(Debug, Default)]
pub struct CredentialKeys {
    keys: Mutex<Option<Arc<KeyRing>>>,
}

impl CredentialKeys {
    /// The keys of `path` (none without one): what a start or a reload reads.
    pub fn read(path: Option<&Path>) -> Result<Option<KeyRing>, InvalidValue> {
        path.map(seal::read_key_file).transpose()
    }

    pub fn new(keys: Option<KeyRing>) -> CredentialKeys {
        CredentialKeys {
            keys: Mutex::new(keys.map(Arc::new)),
        }
    }

    /// Puts `keys` in force (a reload).
    pub fn replace(&self, keys: Option<KeyRing>) {
        *lock(&self.keys) = keys.map(Arc::new);
    }

    /// The ids of the keys in force, oldest first.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.keys)
            .as_ref()
            .map(|k| k.ids())
            .unwrap_or_default()
    }

    /// The keys in force, or `CREDENTIALS_KEY_MISSING`.
    pub fn current(&self) -> Result<Arc<KeyRing>, WireError> {
        lock(&self.keys).clone().ok_or_else(|| {
            WireError::new(
                ErrorCode::CredentialsKeyMissing,
                "this coordinator was given no credentials key file (--credentials-key-file)",
            )
        })
    }
}
