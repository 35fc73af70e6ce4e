//! Joining the fleet and staying in it (pure): join tokens, the enrolment and renewal requests, the
//! certificates the cluster knows of, and the deny list every handshake is checked against.
//!
//! A join token reads `NXJT1-<CA fingerprint>-<id>-<secret>`: the SHA-256 of the cluster CA's
//! certificate (so a new host trusts the coordinator it reaches only if its CA is that one), an id
//! that is safe to log and list, and a 256-bit secret of which the cluster keeps only a hash.
//! Not here: signing (`pki`), the anonymous enrolment connection (`transport`), the token table
//! (the coordinator's state).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::credentials::Secret;
use crate::error::InvalidValue;
use crate::id::{HostId, NodeId, UserName};
use crate::identity::{Identity, Role};
use crate::model::Labels;

/// What every join token starts with: the format's name and version.
pub const TOKEN_PREFIX: &str = "NXJT1";
/// Hex digits of a token's id (64 bits).
pub const TOKEN_ID_LEN: usize = 16;
/// Hex digits of a token's secret (256 bits).
pub const TOKEN_SECRET_LEN: usize = 64;
/// Hex digits of a CA fingerprint (SHA-256).
pub const FINGERPRINT_LEN: usize = 64;
/// Tokens kept at most (used-up and expired ones count until they are pruned).
pub const MAX_TOKENS: usize = 1024;
/// The longest a token may live.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;
/// How long a token lives unless told.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// How long an agent's or a coordinator's certificate lives unless configured.
pub const DEFAULT_NODE_CERT_SECS: u64 = 90 * 24 * 3600;
/// How long a user's session (certificate) lives unless configured.
pub const DEFAULT_USER_CERT_SECS: u64 = 12 * 3600;
/// The largest signing request accepted, in bytes of PEM.
pub const MAX_CSR_LEN: usize = 8 * 1024;
/// Addresses and names one certificate may be asked to carry.
pub const MAX_CERT_NAMES: usize = 16;

/// The id of a join token: 16 lowercase hex digits. Safe to log, and checked when read from
/// the wire (an anonymous enrolment names one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct TokenId(String);

impl TryFrom<String> for TokenId {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<TokenId, InvalidValue> {
        value.parse()
    }
}

impl TokenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh random id.
    pub fn generate() -> Result<TokenId, InvalidValue> {
        Ok(TokenId(crate::hash::hex(&random::<8>()?)))
    }
}

impl FromStr for TokenId {
    type Err = InvalidValue;
    fn from_str(value: &str) -> Result<TokenId, InvalidValue> {
        if value.len() == TOKEN_ID_LEN && is_lower_hex(value) {
            Ok(TokenId(value.to_string()))
        } else {
            Err(InvalidValue(format!(
                "{value:?} is not a token id ({TOKEN_ID_LEN} hex digits, as `nexus admin token list` shows)"
            )))
        }
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_lower_hex(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Random bytes from the system's secure source, or an error (never zeros).
fn random<const N: usize>() -> Result<[u8; N], InvalidValue> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| InvalidValue("the system's random source failed".into()))?;
    Ok(bytes)
}

/// A whole join token, as printed once by `nexus admin token create` and given to a new host or
/// user. Its `Debug` hides the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The SHA-256 (hex) of the cluster CA's certificate, DER.
    pub ca_fingerprint: String,
    pub id: TokenId,
    pub secret: Secret,
}

impl JoinToken {
    /// A fresh token of this cluster (`ca_fingerprint`).
    pub fn generate(ca_fingerprint: &str) -> Result<JoinToken, InvalidValue> {
        check_fingerprint(ca_fingerprint)?;
        Ok(JoinToken {
            ca_fingerprint: ca_fingerprint.to_string(),
            id: TokenId::generate()?,
            secret: Secret::new(crate::hash::hex(&random::<32>()?)),
        })
    }

    /// The token as text, secret included: only to print it once, or to hand it to a process.
    pub fn reveal(&self) -> Secret {
        Secret::new(format!(
            "{TOKEN_PREFIX}-{}-{}-{}",
            self.ca_fingerprint,
            self.id,
            self.secret.expose()
        ))
    }

    /// What the cluster keeps of the secret.
    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }

    /// Reads a token: the first line that is not blank, its surrounding whitespace ignored, so a
    /// file may hold the token alone or `nexus admin token create`'s whole text output (the
    /// token first). The error never repeats the text, which may be most of a secret.
    pub fn parse(text: &str) -> Result<JoinToken, InvalidValue> {
        let mistyped = |what: &str| {
            InvalidValue(format!(
                "this is not a Nexus join token ({what}); a token reads {TOKEN_PREFIX}-<CA fingerprint>-<id>-<secret>, as `nexus admin token create` prints it"
            ))
        };
        let text = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .unwrap_or("");
        let mut parts = text.split('-');
        let (Some(prefix), Some(fingerprint), Some(id), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(mistyped("it does not have four parts"));
        };
        if prefix != TOKEN_PREFIX {
            return Err(mistyped("it does not start with NXJT1"));
        }
        check_fingerprint(fingerprint).map_err(|_| mistyped("the CA fingerprint is malformed"))?;
        let id = id
            .parse::<TokenId>()
            .map_err(|_| mistyped("the id is malformed"))?;
        if secret.len() != TOKEN_SECRET_LEN || !is_lower_hex(secret) {
            return Err(mistyped("the secret is malformed"));
        }
        Ok(JoinToken {
            ca_fingerprint: fingerprint.to_string(),
            id,
            secret: Secret::new(secret.to_string()),
        })
    }
}

/// A CA fingerprint must be 64 lowercase hex digits.
pub fn check_fingerprint(fingerprint: &str) -> Result<(), InvalidValue> {
    if fingerprint.len() == FINGERPRINT_LEN && is_lower_hex(fingerprint) {
        Ok(())
    } else {
        Err(InvalidValue(
            "a CA fingerprint is 64 lowercase hex digits (SHA-256)".into(),
        ))
    }
}

/// The SHA-256 (hex) of a token's secret, under a label of its own: what the state keeps.
pub fn secret_hash(secret: &Secret) -> String {
    let mut hash = crate::hash::Sha256::default();
    hash.update(b"nexus join token secret v1\0");
    hash.update(secret.expose().as_bytes());
    crate::hash::hex(&hash.finish())
}

/// Compares two hashes in time independent of where they differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Who a token lets in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenRole {
    /// A host: its agent names its own host id when it enrols.
    Agent,
    /// One user, named when the token is made.
    User { name: UserName, role: Role },
}

impl fmt::Display for TokenRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRole::Agent => f.write_str("agent"),
            TokenRole::User { name, role } => write!(f, "{} {name}", role.as_str()),
        }
    }
}

/// What an admin asks for in `nexus admin token create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    pub role: TokenRole,
    pub ttl_secs: u64,
    /// How many enrolments it allows; `None`: any number until it expires.
    pub uses: Option<u32>,
    /// Given to the host that enrols with it (agent tokens only), beside its own labels.
    pub labels: Labels,
}

impl TokenSpec {
    /// The rules a spec must follow, checked by the CLI and again by the coordinator.
    pub fn check(&self) -> Result<(), InvalidValue> {
        if self.ttl_secs == 0 || self.ttl_secs > MAX_TOKEN_TTL_SECS {
            return Err(InvalidValue(format!(
                "a token lives between 1 s and {} days",
                MAX_TOKEN_TTL_SECS / 86_400
            )));
        }
        if self.uses == Some(0) {
            return Err(InvalidValue("a token must allow at least one use".into()));
        }
        if matches!(self.role, TokenRole::User { .. }) && !self.labels.is_empty() {
            return Err(InvalidValue(
                "labels are for hosts: a user token takes none".into(),
            ));
        }
        if self.labels.len() > 32
            || self
                .labels
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 253)
        {
            return Err(InvalidValue(
                "at most 32 labels, each KEY=VALUE with a key of 1 to 63 bytes".into(),
            ));
        }
        Ok(())
    }
}

/// A token as anyone may see it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: TokenId,
    pub role: TokenRole,
    pub labels: Labels,
    pub created_at: Timestamp,
    pub created_by: String,
    pub expires_at: Timestamp,
    /// Enrolments left; `None`: unlimited.
    pub uses_left: Option<u32>,
    pub used: u32,
    pub revoked_at: Option<Timestamp>,
}

impl TokenView {
    /// `usable`, `expired`, `used up` or `revoked`, at `now`.
    pub fn status(&self, now: Timestamp) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.uses_left == Some(0) {
            "used up"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "usable"
        }
    }
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub view: TokenView,
    /// The whole token (`NXJT1-…`).
    pub token: Secret,
}

/// A new host's or user's request for a certificate, sent without a certificate of its own over
/// a connection that pins the token's CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub token_id: TokenId,
    /// Checked against the stored hash; never logged.
    pub secret: Secret,
    /// A PKCS#10 request, PEM, signed by the key the requester made and keeps. Only its public
    /// key is used: the cluster decides what the certificate says.
    pub csr_pem: String,
    /// The host id an agent asks for (agent tokens only; a user token names its user).
    pub host_id: Option<HostId>,
    /// The IP addresses and DNS names the agent serves at, for its certificate.
    pub names: Vec<String>,
}

/// A request to renew one's certificate, over one's own authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// A PKCS#10 request for a fresh key, PEM.
    pub csr_pem: String,
    /// The names the new certificate should carry.
    pub names: Vec<String>,
}

/// A certificate the cluster issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub identity: Identity,
    pub cert_pem: String,
    /// Every CA the cluster trusts now, PEM: the enrolled party's `ca.pem`.
    pub ca_pem: String,
    /// Given to the host by its token.
    pub labels: Labels,
}

/// Where a certificate the cluster knows came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertSource {
    /// Issued at enrolment with this token.
    Token(TokenId),
    /// Issued as a renewal of an earlier one.
    Renewal,
    /// A coordinator's own, reported by it (made by `nexus pki` or renewed by itself).
    Coordinator(NodeId),
    /// Presented by a peer at its handshake, made outside the cluster (`nexus pki issue`).
    Seen,
}

impl fmt::Display for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSource::Token(id) => write!(f, "token {id}"),
            CertSource::Renewal => f.write_str("renewal"),
            CertSource::Coordinator(id) => write!(f, "coordinator {id}"),
            CertSource::Seen => f.write_str("seen"),
        }
    }
}

/// The newest certificate of one identity the cluster knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// The SHA-256 (hex) of the certificate, DER.
    pub fingerprint: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub recorded_at: Timestamp,
    pub source: CertSource,
}

/// One line of `nexus admin certs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertView {
    pub identity: Identity,
    pub cert: CertRecord,
    /// When the identity was shut out, if it was.
    pub denied_at: Option<Timestamp>,
}

/// Why and when an identity was shut out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// Every certificate of the identity that begins (`not_before`) at or before this is refused.
    pub cutoff_secs: i64,
    pub at: Timestamp,
    pub by: String,
    pub reason: String,
}

/// The identities shut out of the fleet: checked at every handshake, and live connections of a
/// newly denied identity are closed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DenyList {
    denied: BTreeMap<Identity, i64>,
}

impl DenyList {
    /// Shuts `identity` out: its certificates beginning at or before `cutoff_secs` are refused.
    pub fn deny(&mut self, identity: Identity, cutoff_secs: i64) {
        let cutoff = self.denied.entry(key(&identity)).or_insert(cutoff_secs);
        *cutoff = (*cutoff).max(cutoff_secs);
    }

    /// Whether a certificate of `identity` beginning at `not_before_secs` is refused. A user's
    /// identity is denied whatever role its certificate states.
    pub fn refuses(&self, identity: &Identity, not_before_secs: i64) -> bool {
        self.denied
            .get(&key(identity))
            .is_some_and(|&cutoff| not_before_secs <= cutoff)
    }

    pub fn is_empty(&self) -> bool {
        self.denied.is_empty()
    }

    pub fn len(&self) -> usize {
        self.denied.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Identity, i64)> {
        self.denied
            .iter()
            .map(|(identity, &cutoff)| (identity, cutoff))
    }
}

/// The form an identity is denied under: a user by name (as a plain user), whatever role a
/// certificate of theirs states.
pub fn key(identity: &Identity) -> Identity {
    match identity {
        Identity::User { name, .. } => Identity::User {
            name: name.clone(),
            role: Role::User,
        },
        other => other.clone(),
    }
}

/// When a certificate for `identity` issued now must begin: a minute back against clock skew,
/// but after any denial of the identity, so that a re-admitted host's new certificate is not
/// caught by the denial of its old one.
pub fn not_before_for(deny: &DenyList, identity: &Identity, now_secs: i64) -> i64 {
    let skewed = now_secs - 60;
    match deny.denied.get(&key(identity)) {
        Some(&cutoff) if skewed <= cutoff => cutoff + 1,
        _ => skewed,
    }
}

/// When a certificate should be renewed: two thirds into its life.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn a_token_reads_back_what_it_prints_and_hides_its_secret() {
        let token = JoinToken::generate(&fingerprint()).unwrap();
        let text = token.reveal();
        assert!(text.expose().starts_with("NXJT1-abab"));
        let parsed = JoinToken::parse(&format!("{}\n", text.expose())).unwrap();
        // A file may hold the create command's whole text output: the token is its first line.
        let output = format!(
            "\n{}\n  id       {}\n  role     agent\n",
            text.expose(),
            token.id
        );
        assert_eq!(JoinToken::parse(&output).unwrap(), token);
        assert_eq!(parsed, token);
        assert_eq!(parsed.secret_hash(), token.secret_hash());
        assert!(!format!("{token:?}").contains(token.secret.expose()));
        let other = JoinToken::generate(&fingerprint()).unwrap();
        assert_ne!(other.id, token.id);
        assert!(!same_hash(&other.secret_hash(), &token.secret_hash()));
        assert!(same_hash(&token.secret_hash(), &parsed.secret_hash()));
    }

    #[test]
    fn a_mistyped_token_says_what_is_wrong_without_echoing_it() {
        let token = JoinToken::generate(&fingerprint()).unwrap().reveal();
        let text = token.expose();
        let cases = [
            ("", "four parts"),
            (&text[..text.len() - 1], "secret is malformed"),
            (&text.replacen("NXJT1", "NXJT2", 1), "start with NXJT1"),
            (&text.replacen("-abab", "-ABAB", 1), "fingerprint"),
            (&format!("{text}-x"), "four parts"),
        ];
        for (input, expected) in cases {
            let error = JoinToken::parse(input).unwrap_err().0;
            assert!(error.contains(expected), "{input:?}: {error}");
            assert!(!error.contains(&text[80..]), "{error}");
        }
    }

    #[test]
    fn a_denial_refuses_older_certificates_only() {
        let host = Identity::Agent(HostId::new("h1").unwrap());
        let mut deny = DenyList::default();
        assert!(!deny.refuses(&host, 100));
        assert_eq!(not_before_for(&deny, &host, 1_000), 940);
        deny.deny(host.clone(), 1_000);
        assert!(deny.refuses(&host, 940));
        assert!(deny.refuses(&host, 1_000));
        assert!(!deny.refuses(&host, 1_001));
        // A certificate issued just after the denial begins after it.
        let begins = not_before_for(&deny, &host, 1_010);
        assert_eq!(begins, 1_001);
        assert!(!deny.refuses(&host, begins));
        // A later denial never moves the cutoff back.
        deny.deny(host.clone(), 500);
        assert!(deny.refuses(&host, 1_000));
        // A user is denied whatever role their certificate states.
        let name = UserName::new("alice").unwrap();
        deny.deny(
            Identity::User {
                name: name.clone(),
                role: Role::Admin,
            },
            1_000,
        );
        assert!(deny.refuses(
            &Identity::User {
                name,
                role: Role::User
            },
            999
        ));
    }

    #[test]
    fn renewal_is_due_two_thirds_into_a_life() {
        assert_eq!(renew_at(0, 90), 60);
        assert_eq!(renew_at(100, 100), 100);
    }

    #[test]
    fn a_spec_keeps_to_the_rules() {
        let mut spec = TokenSpec {
            role: TokenRole::Agent,
            ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            uses: Some(1),
            labels: Labels::new(),
        };
        assert!(spec.check().is_ok());
        spec.uses = Some(0);
        assert!(spec.check().is_err());
        spec.uses = None;
        spec.ttl_secs = 0;
        assert!(spec.check().is_err());
        spec.ttl_secs = 60;
        spec.role = TokenRole::User {
            name: UserName::new("bob").unwrap(),
            role: Role::User,
        };
        spec.labels.insert("zone".into(), "a".into());
        assert!(spec.check().is_err());
    }
}
