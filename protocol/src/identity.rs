//! Who a peer is. A peer's identity is the one `nexus://` URI among its certificate's subject
//! alternative names:
//!
//! - `nexus://coordinator/<node-id>`
//! - `nexus://agent/<host-id>`
//! - `nexus://user/<name>?role=admin` or `nexus://user/<name>?role=user`
//!
//! The CA vouches for the URI, so nothing else (a claimed name in a message, an address) is
//! trusted to say who is speaking.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;
use crate::id::{HostId, InvalidId, NodeId, UserName};

const SCHEME: &str = "nexus://";

/// What a user may do: see and change only their own workspaces, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = InvalidValue;
    fn from_str(value: &str) -> Result<Role, InvalidValue> {
        match value {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(InvalidValue(format!(
                "unknown role {other:?} (expected admin or user)"
            ))),
        }
    }
}

/// A peer's identity, as its certificate states it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Identity {
    Coordinator(NodeId),
    Agent(HostId),
    User { name: UserName, role: Role },
}

/// The kinds of identity, for policies such as "this endpoint accepts agents and admins".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdentityKind {
    Coordinator,
    Agent,
    User,
    Admin,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Coordinator => "coordinator",
            IdentityKind::Agent => "agent",
            IdentityKind::User => "user",
            IdentityKind::Admin => "admin",
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a certificate or URI does not carry a usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("the certificate carries no nexus:// identity URI")]
    Missing,
    #[error("the certificate carries more than one nexus:// identity URI")]
    Ambiguous,
    #[error("invalid identity URI {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
}

impl Identity {
    pub fn kind(&self) -> IdentityKind {
        match self {
            Identity::Coordinator(_) => IdentityKind::Coordinator,
            Identity::Agent(_) => IdentityKind::Agent,
            Identity::User {
                role: Role::User, ..
            } => IdentityKind::User,
            Identity::User {
                role: Role::Admin, ..
            } => IdentityKind::Admin,
        }
    }

    /// The SAN URI that carries this identity.
    pub fn uri(&self) -> String {
        match self {
            Identity::Coordinator(id) => format!("{SCHEME}coordinator/{id}"),
            Identity::Agent(host) => format!("{SCHEME}agent/{host}"),
            Identity::User { name, role } => format!("{SCHEME}user/{name}?role={}", role.as_str()),
        }
    }

    pub fn from_uri(uri: &str) -> Result<Identity, IdentityError> {
        let bad = |reason: &str| IdentityError::BadUri {
            uri: uri.into(),
            reason: reason.into(),
        };
        let from_id = |e: InvalidId| bad(&e.to_string());
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("must start with nexus://"))?;
        let (kind, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected nexus://KIND/NAME"))?;
        match kind {
            "coordinator" => Ok(Identity::Coordinator(rest.parse().map_err(from_id)?)),
            "agent" => Ok(Identity::Agent(rest.parse().map_err(from_id)?)),
            "user" => {
                let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
                let role = match query {
                    "" | "role=user" => Role::User,
                    "role=admin" => Role::Admin,
                    _ => return Err(bad("the only query allowed is role=admin or role=user")),
                };
                Ok(Identity::User {
                    name: name.parse().map_err(from_id)?,
                    role,
                })
            }
            _ => Err(bad("the kind must be coordinator, agent or user")),
        }
    }

    /// The identity in a DER-encoded certificate: its one `nexus://` SAN URI.
    pub fn from_certificate(der: &[u8]) -> Result<Identity, IdentityError> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let mut uris = san
            .into_iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            });
        let uri = uris.next().ok_or(IdentityError::Missing)?;
        if uris.next().is_some() {
            return Err(IdentityError::Ambiguous);
        }
        Identity::from_uri(uri)
    }
}

/// When a DER-encoded certificate expires, in seconds since the epoch (`None`: not a certificate).
/// When a certificate begins, in seconds since the epoch (`None`: it cannot be parsed).
pub fn not_before(der: &[u8]) -> Option<i64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_before.timestamp())
}

/// The IP addresses and DNS names a certificate is valid for (its SANs but the identity URI), as
/// text. Empty when it cannot be parsed or names none.
pub fn subject_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether the certificate `leaf` (DER) names the CA certificate `ca` (DER) as its issuer: the
/// issuer's name is the CA's subject. Nexus CAs' names carry a random suffix, so two CAs of a
/// cluster (before and after a rotation) are told apart. `false` when either does not parse.
pub fn issued_by(leaf: &[u8], ca: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(leaf),
        X509Certificate::from_der(ca),
    ) else {
        return false;
    };
    leaf.issuer().as_raw() == ca.subject().as_raw()
}

/// The PEM block of `bundle_pem` whose certificate holds the public key `key_bits` (the bits of
/// its subject public key): which certificate of a bundle goes with a key.
pub fn certificate_for_key(bundle_pem: &str, key_bits: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = bundle_pem;
    while let Some(begin) = rest.find("-----BEGIN CERTIFICATE-----") {
        let length = rest[begin..].find(END)?;
        let block = format!("{}\n", &rest[begin..begin + length + END.len()]);
        rest = &rest[begin + length + END.len()..];
        let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(block.as_bytes()) else {
            continue;
        };
        let matches = X509Certificate::from_der(&pem.contents)
            .is_ok_and(|(_, cert)| cert.public_key().subject_public_key.data == key_bits);
        if matches {
            return Some(block);
        }
    }
    None
}

/// Whether a certificate (DER) is a CA's (basic constraints say so).
pub fn is_ca(der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der).is_ok_and(|(_, cert)| cert.is_ca())
}

pub fn not_after(der: &[u8]) -> Option<i64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Coordinator(id) => write!(f, "coordinator {id}"),
            Identity::Agent(host) => write!(f, "agent {host}"),
            Identity::User { name, role } => write!(f, "{} {name}", role.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let identities = [
            Identity::Coordinator(NodeId::new(7).unwrap()),
            Identity::Agent(HostId::new("dev-01").unwrap()),
            Identity::User {
                name: UserName::new("alice").unwrap(),
                role: Role::Admin,
            },
            Identity::User {
                name: UserName::new("bob").unwrap(),
                role: Role::User,
            },
        ];
        for identity in identities {
            assert_eq!(
                Identity::from_uri(&identity.uri()),
                Ok(identity.clone()),
                "{identity}"
            );
        }
        assert_eq!(
            Identity::from_uri("nexus://user/carol").map(|i| i.kind()),
            Ok(IdentityKind::User)
        );
    }

    #[test]
    fn bad_uris_are_refused() {
        for uri in [
            "https://agent/dev-01",
            "nexus://agent",
            "nexus://agent/",
            "nexus://agent/a/b",
            "nexus://coordinator/0",
            "nexus://coordinator/x",
            "nexus://robot/r2",
            "nexus://user/alice?role=root",
            "nexus://user/alice?admin=1",
            "nexus://user/Alice",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri} was accepted");
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            Identity::from_certificate(b"not a certificate"),
            Err(IdentityError::BadCertificate(_))
        ));
    }
}
