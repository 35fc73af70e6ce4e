//! The credential store's records: each credential's public part and its secret sealed by an
//! AEAD under a named key. Only ciphertext is replicated, snapshotted and backed up; the keys are
//! files each coordinator is given and never enter the state.
//!
//! Not here: sealing and opening (`nexus_protocol::seal`, by the service with the key file),
//! who may ask for a secret.

use std::collections::BTreeMap;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::credentials::{
    CredentialSpec, CredentialView, MAX_CREDENTIALS, MAX_SECRET_LEN,
};
use nexus_protocol::{ErrorCode, HostId};
use serde::{Deserialize, Serialize};

use super::{Outcome, State, reject};

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

/// How a key rotation's record was sealed when the leader read it, and how it is sealed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resealed {
    pub name: String,
    /// The record's sealed secret as the leader opened it: the record is replaced only if it
    /// still holds this (a set or rotate since then wins).
    pub was: Sealed,
    pub now: Sealed,
}

fn no_such(name: &str) -> Outcome {
    reject(
        ErrorCode::InvalidArgument,
        format!("no credential is named {name:?}: `nexus admin credentials list` shows them"),
    )
}

fn check_sealed(sealed: &Sealed) -> Result<(), Outcome> {
    if sealed.key_id.is_empty() || sealed.key_id.len() > 64 || sealed.ciphertext.is_empty() {
        return Err(reject(
            ErrorCode::InvalidArgument,
            "a credential's sealed secret names no key or holds nothing",
        ));
    }
    if sealed.ciphertext.len() > MAX_SECRET_LEN + 64 || sealed.nonce.len() > 64 {
        return Err(reject(
            ErrorCode::InvalidArgument,
            "a credential's sealed secret is too large",
        ));
    }
    Ok(())
}

impl State {
    /// Stores a credential, or replaces the one of its name (keeping when it was created and
    /// last used).
    pub(super) fn set_credential(
        &mut self,
        at: Timestamp,
        spec: &CredentialSpec,
        sealed: &Sealed,
    ) -> Outcome {
        if let Err(error) = spec.check() {
            return reject(ErrorCode::InvalidArgument, error.0);
        }
        if let Err(outcome) = check_sealed(sealed) {
            return outcome;
        }
        match self.credentials.by_name.get_mut(&spec.name) {
            Some(record) => {
                record.spec = spec.clone();
                record.sealed = sealed.clone();
                record.rotated_at = Some(at);
            }
            None => {
                if self.credentials.by_name.len() >= MAX_CREDENTIALS {
                    return reject(
                        ErrorCode::ResourceExhausted,
                        format!(
                            "the credential store holds its most, {MAX_CREDENTIALS}: delete one first"
                        ),
                    );
                }
                self.credentials.by_name.insert(
                    spec.name.clone(),
                    CredentialRecord {
                        spec: spec.clone(),
                        sealed: sealed.clone(),
                        created_at: at,
                        rotated_at: None,
                        last_used: None,
                        last_used_by: None,
                    },
                );
            }
        }
        Outcome::Applied
    }

    /// Replaces a credential's secret, sealed for `spec`.
    pub(super) fn rotate_credential(
        &mut self,
        at: Timestamp,
        spec: &CredentialSpec,
        sealed: &Sealed,
    ) -> Outcome {
        if let Err(outcome) = check_sealed(sealed) {
            return outcome;
        }
        let Some(record) = self.credentials.by_name.get_mut(&spec.name) else {
            return no_such(&spec.name);
        };
        if record.spec != *spec {
            return reject(
                ErrorCode::InvalidArgument,
                format!(
                    "the credential {:?} was replaced meanwhile; rotate it again",
                    spec.name
                ),
            );
        }
        record.sealed = sealed.clone();
        record.rotated_at = Some(at);
        Outcome::Applied
    }

    pub(super) fn delete_credential(&mut self, name: &str) -> Outcome {
        match self.credentials.by_name.remove(name) {
            Some(_) => Outcome::Applied,
            None => no_such(name),
        }
    }

    /// Re-sealed records: each replaced only if it still holds what the leader re-sealed.
    pub(super) fn reseal_credentials(&mut self, resealed: &[Resealed]) -> Outcome {
        for each in resealed {
            if let Err(outcome) = check_sealed(&each.now) {
                return outcome;
            }
        }
        for each in resealed {
            if let Some(record) = self.credentials.by_name.get_mut(&each.name)
                && record.sealed == each.was
            {
                record.sealed = each.now.clone();
            }
        }
        Outcome::Applied
    }

    /// Notes that `host` was given the credential `name` (no-op for one deleted since).
    pub(super) fn touch_credential(&mut self, at: Timestamp, name: &str, host: &HostId) -> Outcome {
        if let Some(record) = self.credentials.by_name.get_mut(name) {
            record.last_used = Some(at);
            record.last_used_by = Some(host.clone());
        }
        Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::credentials::{CredentialKind, CredentialSpec};
    use nexus_protocol::identity::{Identity, Role};
    use nexus_protocol::{ErrorCode, RequestId, UserName};

    use super::*;
    use crate::state::{Command, Proposal};

    fn spec(name: &str, scope: &str) -> CredentialSpec {
        CredentialSpec {
            name: name.into(),
            kind: CredentialKind::Registry,
            scope: scope.into(),
            username: "bot".into(),
        }
    }

    fn sealed(key: &str, byte: u8) -> Sealed {
        Sealed {
            key_id: key.into(),
            nonce: vec![byte; 12],
            ciphertext: vec![byte; 24],
        }
    }

    fn run(state: &mut State, commands: Vec<Command>) -> Vec<Option<ErrorCode>> {
        commands
            .into_iter()
            .map(|command| {
                let proposal = Proposal {
                    request_id: RequestId::random(),
                    at: Timestamp(5_000),
                    proposer: Identity::User {
                        name: UserName::new("alice").unwrap(),
                        role: Role::Admin,
                    },
                    command,
                };
                match state.apply(&proposal) {
                    Outcome::Applied => None,
                    Outcome::Rejected(error) => Some(error.code),
                }
            })
            .collect()
    }

    #[test]
    fn credentials_are_set_rotated_touched_and_deleted() {
        use ErrorCode::*;
        let mut state = State::default();
        let host = HostId::new("h1").unwrap();
        let codes = run(
            &mut state,
            vec![
                Command::SetCredential {
                    spec: spec("reg", "127.0.0.1:5000"),
                    sealed: sealed("k1", 1),
                },
                // A bad spec, an empty seal, an unknown name.
                Command::SetCredential {
                    spec: spec("Bad Name", "x"),
                    sealed: sealed("k1", 1),
                },
                Command::SetCredential {
                    spec: spec("reg2", "x"),
                    sealed: Sealed {
                        ciphertext: vec![],
                        ..sealed("k1", 1)
                    },
                },
                Command::RotateCredential {
                    spec: spec("nope", "127.0.0.1:5000"),
                    sealed: sealed("k1", 2),
                },
                // Sealed for a spec the record no longer has.
                Command::RotateCredential {
                    spec: spec("reg", "127.0.0.1:5999"),
                    sealed: sealed("k1", 2),
                },
                Command::DeleteCredential {
                    name: "nope".into(),
                },
                Command::RotateCredential {
                    spec: spec("reg", "127.0.0.1:5000"),
                    sealed: sealed("k1", 3),
                },
                Command::TouchCredential {
                    name: "reg".into(),
                    host: host.clone(),
                },
                Command::TouchCredential {
                    name: "gone".into(),
                    host: host.clone(),
                },
            ],
        );
        assert_eq!(
            codes,
            vec![
                None,
                Some(InvalidArgument),
                Some(InvalidArgument),
                Some(InvalidArgument),
                Some(InvalidArgument),
                Some(InvalidArgument),
                None,
                None,
                None
            ]
        );
        let record = state.credentials().get("reg").unwrap();
        assert_eq!(record.sealed, sealed("k1", 3));
        assert_eq!(record.rotated_at, Some(Timestamp(5_000)));
        assert_eq!(record.last_used_by, Some(host));
        assert_eq!(state.credentials().len(), 1);
        // Replacing keeps when it was made.
        run(
            &mut state,
            vec![Command::SetCredential {
                spec: spec("reg", "127.0.0.1:5001"),
                sealed: sealed("k1", 4),
            }],
        );
        let record = state.credentials().get("reg").unwrap();
        assert_eq!(record.spec.scope, "127.0.0.1:5001");
        assert_eq!(record.created_at, Timestamp(5_000));
        assert!(record.last_used.is_some());
        assert_eq!(
            run(
                &mut state,
                vec![Command::DeleteCredential { name: "reg".into() }]
            ),
            vec![None]
        );
        assert!(state.credentials().is_empty());
    }

    #[test]
    fn a_reseal_skips_records_changed_since_the_leader_read_them() {
        let mut state = State::default();
        run(
            &mut state,
            vec![
                Command::SetCredential {
                    spec: spec("a", "a.example.com"),
                    sealed: sealed("old", 1),
                },
                Command::SetCredential {
                    spec: spec("b", "b.example.com"),
                    sealed: sealed("old", 2),
                },
            ],
        );
        // The leader read both; then b was rotated before the reseal was applied.
        run(
            &mut state,
            vec![Command::RotateCredential {
                spec: spec("b", "b.example.com"),
                sealed: sealed("new", 9),
            }],
        );
        let codes = run(
            &mut state,
            vec![Command::ResealCredentials(vec![
                Resealed {
                    name: "a".into(),
                    was: sealed("old", 1),
                    now: sealed("new", 5),
                },
                Resealed {
                    name: "b".into(),
                    was: sealed("old", 2),
                    now: sealed("new", 6),
                },
                Resealed {
                    name: "deleted".into(),
                    was: sealed("old", 3),
                    now: sealed("new", 7),
                },
            ])],
        );
        assert_eq!(codes, vec![None]);
        assert_eq!(
            state.credentials().get("a").unwrap().sealed,
            sealed("new", 5)
        );
        assert_eq!(
            state.credentials().get("b").unwrap().sealed,
            sealed("new", 9)
        );
        assert!(state.credentials().get("deleted").is_none());
    }

    #[test]
    fn the_store_is_capped() {
        let mut state = State::default();
        let commands = (0..=MAX_CREDENTIALS)
            .map(|i| Command::SetCredential {
                spec: spec(&format!("c{i}"), "r.example.com"),
                sealed: sealed("k", 1),
            })
            .collect();
        let codes = run(&mut state, commands);
        assert!(codes[..MAX_CREDENTIALS].iter().all(Option::is_none));
        assert_eq!(codes[MAX_CREDENTIALS], Some(ErrorCode::ResourceExhausted));
        // Replacing one at the cap is still allowed.
        let codes = run(
            &mut state,
            vec![Command::SetCredential {
                spec: spec("c0", "r.example.com"),
                sealed: sealed("k", 2),
            }],
        );
        assert_eq!(codes, vec![None]);
    }
}
