//! Who may join the fleet and who is shut out of it: the join tokens (only a hash of each
//! secret), the newest certificate the cluster knows of each identity, and the deny list every
//! coordinator's handshakes are checked against.
//!
//! Not here: signing (the service, with the CA key each coordinator holds), the handshake check
//! itself (`nexus_protocol::transport::Gate`, fed from [`Security::deny_list`]).

use std::collections::BTreeMap;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::WireError;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::join::{
    CertRecord, CertView, Denial, DenyList, MAX_TOKENS, TokenId, TokenRole, TokenSpec, TokenView,
    same_hash,
};
use nexus_protocol::{ErrorCode, HostId};
use serde::{Deserialize, Serialize};

use super::{Outcome, State, reject};

/// One join token: what anyone may see of it, and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub view: TokenView,
    pub secret_hash: String,
}

/// The fleet's tokens, known certificates and denials.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Security {
    tokens: BTreeMap<TokenId, TokenRecord>,
    certificates: BTreeMap<Identity, CertRecord>,
    deny: DenyList,
    denials: BTreeMap<Identity, Denial>,
}

impl Security {
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    pub fn token(&self, id: &TokenId) -> Option<&TokenRecord> {
        self.tokens.get(id)
    }

    /// The deny list every handshake is checked against.
    pub fn deny_list(&self) -> &DenyList {
        &self.deny
    }

    pub fn denial(&self, identity: &Identity) -> Option<&Denial> {
        self.denials.get(&nexus_protocol::join::key(identity))
    }

    pub fn certificate(&self, identity: &Identity) -> Option<&CertRecord> {
        self.certificates.get(identity)
    }

    /// Every known certificate, with its identity's denial if any.
    pub fn certificates(&self) -> Vec<CertView> {
        self.certificates
            .iter()
            .map(|(identity, cert)| CertView {
                identity: identity.clone(),
                cert: cert.clone(),
                denied_at: self
                    .denial(identity)
                    .filter(|denial| cert.not_before <= denial.cutoff_secs)
                    .map(|denial| denial.at),
            })
            .collect()
    }

    /// The token `token_id` if its secret hashes to `secret_hash` and it may enrol someone at
    /// `at`; else the refusal (`TOKEN_INVALID`, `TOKEN_REVOKED`, `TOKEN_EXPIRED`,
    /// `TOKEN_USED_UP`). What `Enrol` checks on apply, and what a coordinator checks first on
    /// its own replica, so that junk costs neither a signature nor a log entry.
    pub fn redeemable(
        &self,
        at: Timestamp,
        token_id: &TokenId,
        secret_hash: &str,
    ) -> Result<&TokenRecord, WireError> {
        let Some(token) = self.tokens.get(token_id) else {
            return Err(WireError::new(
                ErrorCode::TokenInvalid,
                "the join token is not one of this cluster's (it may have been pruned, or mistyped)",
            ));
        };
        if !same_hash(&token.secret_hash, secret_hash) {
            return Err(WireError::new(
                ErrorCode::TokenInvalid,
                format!("the secret of join token {token_id} does not match: was it copied whole?"),
            ));
        }
        if let Some(revoked) = token.view.revoked_at {
            return Err(WireError::new(
                ErrorCode::TokenRevoked,
                format!(
                    "join token {token_id} was revoked at {}",
                    revoked.to_offset_date_time()
                ),
            ));
        }
        if at >= token.view.expires_at {
            return Err(WireError::new(
                ErrorCode::TokenExpired,
                format!(
                    "join token {token_id} expired at {}",
                    token.view.expires_at.to_offset_date_time()
                ),
            ));
        }
        if token.view.uses_left == Some(0) {
            return Err(WireError::new(
                ErrorCode::TokenUsedUp,
                format!(
                    "join token {token_id} has no uses left (it allowed {})",
                    token.view.used
                ),
            ));
        }
        Ok(token)
    }

    /// Rows, for `nexus admin status`'s table sizes.
    pub fn rows(&self) -> usize {
        self.tokens.len() + self.certificates.len() + self.denials.len()
    }

    /// The running cluster's security after a restore: what it knows now wins, and denials are
    /// never undone by a backup taken before them.
    pub fn merged_for_restore(running: Security, backup: Security) -> Security {
        let mut merged = running;
        for (identity, denial) in backup.denials {
            if !merged.denials.contains_key(&identity) {
                merged.deny.deny(identity.clone(), denial.cutoff_secs);
                merged.denials.insert(identity, denial);
            }
        }
        for (identity, cert) in backup.certificates {
            merged.certificates.entry(identity).or_insert(cert);
        }
        merged
    }
}

impl State {
    pub fn security(&self) -> &Security {
        &self.security
    }
}

fn secs(at: Timestamp) -> i64 {
    i64::try_from(at.0 / 1000).unwrap_or(i64::MAX)
}

impl State {
    /// Keeps a new token. Its secret was hashed by the proposer; the state never sees it.
    pub(super) fn create_token(
        &mut self,
        at: Timestamp,
        id: &TokenId,
        spec: &TokenSpec,
        secret_hash: &str,
        created_by: &str,
    ) -> Outcome {
        if let Err(e) = spec.check() {
            return reject(ErrorCode::InvalidArgument, e.0);
        }
        if self.security.tokens.contains_key(id) {
            return reject(ErrorCode::InvalidArgument, format!("token {id} exists"));
        }
        // Tokens that can enrol no one any more make room for new ones.
        if self.security.tokens.len() >= MAX_TOKENS {
            let dead: Vec<TokenId> = self
                .security
                .tokens
                .iter()
                .filter(|(_, token)| token.view.status(at) != "usable")
                .map(|(id, _)| id.clone())
                .collect();
            for id in dead {
                self.security.tokens.remove(&id);
            }
        }
        if self.security.tokens.len() >= MAX_TOKENS {
            return reject(
                ErrorCode::ResourceExhausted,
                format!(
                    "the cluster keeps at most {MAX_TOKENS} usable tokens: revoke some (`nexus admin token revoke ID`)"
                ),
            );
        }
        let view = TokenView {
            id: id.clone(),
            role: spec.role.clone(),
            labels: spec.labels.clone(),
            created_at: at,
            created_by: created_by.to_string(),
            expires_at: at.saturating_add(std::time::Duration::from_secs(spec.ttl_secs)),
            uses_left: spec.uses,
            used: 0,
            revoked_at: None,
        };
        self.security.tokens.insert(
            id.clone(),
            TokenRecord {
                view,
                secret_hash: secret_hash.to_string(),
            },
        );
        Outcome::Applied
    }

    pub(super) fn revoke_token(&mut self, at: Timestamp, id: &TokenId) -> Outcome {
        match self.security.tokens.get_mut(id) {
            None => no_token(id),
            Some(token) => {
                token.view.revoked_at.get_or_insert(at);
                Outcome::Applied
            }
        }
    }

    /// Redeems one use of a token for `identity` and records the certificate issued for it.
    /// Refused, changing nothing, when the token is unknown, its secret does not match, it is
    /// revoked, expired or used up, it is not for this identity, or the host is in the fleet with
    /// a certificate still valid (remove it first).
    pub(super) fn enrol(
        &mut self,
        at: Timestamp,
        token_id: &TokenId,
        secret_hash: &str,
        identity: &Identity,
        cert: &CertRecord,
    ) -> Outcome {
        let token = match self.security.redeemable(at, token_id, secret_hash) {
            Ok(token) => token,
            Err(error) => return Outcome::rejected(error),
        };
        // A token made before its identity was shut out does not let it back in: only one an
        // admin made since does (a revoked user's or a removed host's old token, unlimited or
        // with uses left, is worth nothing for it).
        if let Some(denial) = self.security.denial(identity)
            && token.view.created_at <= denial.at
        {
            return reject(
                ErrorCode::PermissionDenied,
                format!(
                    "{identity} was shut out at {} ({}), after join token {token_id} was made: only a token made since lets it back in",
                    denial.at.to_offset_date_time(),
                    denial.reason
                ),
            );
        }
        // A signer whose replica lagged a denial cannot slip a certificate past it.
        if self.security.deny.refuses(identity, cert.not_before) {
            return reject(
                ErrorCode::AuthenticationFailed,
                format!("the certificate signed for {identity} begins before its denial"),
            );
        }
        match (&token.view.role, identity) {
            (TokenRole::Agent, Identity::Agent(host)) => {
                if let Some(refusal) = self.host_enrolled(at, host) {
                    return refusal;
                }
            }
            (TokenRole::User { name, role }, Identity::User { name: n, role: r })
                if name == n && role == r => {}
            (role, identity) => {
                return reject(
                    ErrorCode::PermissionDenied,
                    format!("join token {token_id} is for {role}, not {identity}"),
                );
            }
        }
        // Found by `redeemable` above.
        if let Some(token) = self.security.tokens.get_mut(token_id) {
            token.view.used += 1;
            if let Some(left) = token.view.uses_left.as_mut() {
                *left -= 1;
            }
        }
        self.security
            .certificates
            .insert(identity.clone(), cert.clone());
        Outcome::Applied
    }

    /// A host id may not be taken over by a token while a certificate of it is still good: one
    /// the cluster recorded and has not denied or seen expire, or, for a host in the fleet whose
    /// certificate the cluster never recorded (made by hand with `nexus pki`), any. The refusal,
    /// or `None`.
    fn host_enrolled(&self, at: Timestamp, host: &HostId) -> Option<Outcome> {
        let identity = Identity::Agent(host.clone());
        let Some(cert) = self.security.certificates.get(&identity) else {
            if !self.hosts.contains_key(host) || self.security.denial(&identity).is_some() {
                return None;
            }
            return Some(reject(
                ErrorCode::PermissionDenied,
                format!(
                    "host {host} is in the fleet with a certificate the cluster did not issue: a token cannot replace it; remove the host first (`nexus admin host remove {host}`), or enrol under another --host-id"
                ),
            ));
        };
        let denied = self.security.deny.refuses(&identity, cert.not_before);
        if denied || cert.not_after <= secs(at) {
            return None;
        }
        Some(reject(
            ErrorCode::PermissionDenied,
            format!(
                "host {host} is in the fleet with a certificate valid until {} (unix seconds): remove it first (`nexus admin host remove {host}`), or enrol under another --host-id",
                cert.not_after
            ),
        ))
    }

    /// Records the newest certificate of an identity (a renewal, a coordinator's own, one seen
    /// at a handshake). An older one than the record's never replaces it.
    pub(super) fn record_certificate(&mut self, identity: &Identity, cert: &CertRecord) -> Outcome {
        // A renewal signed by a replica that lagged a denial is refused, and so never handed out.
        if self.security.deny.refuses(identity, cert.not_before) {
            return reject(
                ErrorCode::AuthenticationFailed,
                format!("{identity} is shut out of the fleet: its certificate is not renewed"),
            );
        }
        match self.security.certificates.get(identity) {
            Some(known) if known.not_before > cert.not_before => {}
            _ => {
                self.security
                    .certificates
                    .insert(identity.clone(), cert.clone());
            }
        }
        Outcome::Applied
    }

    /// Shuts `identity` out: every certificate of it beginning at or before now is refused.
    pub(super) fn deny(
        &mut self,
        at: Timestamp,
        identity: &Identity,
        by: &str,
        reason: &str,
    ) -> Outcome {
        let key = nexus_protocol::join::key(identity);
        // Every certificate the cluster knows of the identity is caught, even one a coordinator
        // whose clock runs ahead of this proposer's signed.
        let known = match &key {
            Identity::User { name, .. } => [Role::User, Role::Admin]
                .into_iter()
                .filter_map(|role| {
                    self.security.certificates.get(&Identity::User {
                        name: name.clone(),
                        role,
                    })
                })
                .map(|cert| cert.not_before)
                .max(),
            other => self.security.certificates.get(other).map(|c| c.not_before),
        };
        let cutoff_secs = secs(at).max(known.unwrap_or(i64::MIN));
        self.security.deny.deny(key.clone(), cutoff_secs);
        self.security.denials.insert(
            key,
            Denial {
                cutoff_secs,
                at,
                by: by.to_string(),
                reason: reason.to_string(),
            },
        );
        Outcome::Applied
    }
}

fn no_token(id: &TokenId) -> Outcome {
    reject(
        ErrorCode::InvalidArgument,
        format!("no token has the id {id}: `nexus admin token list` shows them"),
    )
}
