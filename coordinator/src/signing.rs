//! The cluster CA as this coordinator holds it: what it signs (enrolments, renewals, its own
//! certificate), for how long, and what the cluster records of each certificate. Every
//! coordinator holds the CA key (`ca.key` in its `--tls-dir`, as `nexus pki` lays it out); one
//! without it still serves everything else and answers signing requests `UNSUPPORTED`.
//!
//! The decisions are pure functions of their inputs ([`validity`], [`check_names`],
//! [`cert_record`]); [`Signing`] adds the key and the lifetimes in force. Not here: redeeming a
//! token (the state's `Enrol`), the requests (`service::security`), the coordinator's own renewal
//! loop (`crate::renewal`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::join::{self, CertRecord, CertSource, DenyList, MAX_CERT_NAMES};
use nexus_protocol::pki::{CertificateAuthority, PkiDir, PkiError, SubjectName, Validity};
use nexus_protocol::transport::{Credentials, first_certificate_der};

use crate::config::lifetimes::Lifetimes;
use crate::locks::lock;

/// The lifetimes in force, shared with the reloader that changes them.
pub type LifetimesHandle = Arc<Mutex<Lifetimes>>;

/// The longest a certificate is back-dated against clock skew.
pub const MAX_SKEW_SECS: u64 = 60;

/// The CA key (if this node holds it), the CA certificates every enrolled party trusts, and the
/// lifetimes of what it signs. The CA changes in place during a CA rotation
/// ([`Signing::reload`]).
#[derive(Debug)]
pub struct Signing {
    current: RwLock<Arc<Signer>>,
    lifetimes: LifetimesHandle,
}

/// The CA in force.
#[derive(Debug)]
struct Signer {
    ca: Option<CertificateAuthority>,
    ca_pem: String,
    ca_fingerprint: String,
}

impl Signer {
    fn load(tls_dir: &Path, credentials: &Credentials) -> Result<Signer, PkiError> {
        let pki = PkiDir::new(tls_dir);
        let ca_pem = std::fs::read_to_string(pki.ca_cert()).map_err(|source| PkiError::Read {
            path: pki.ca_cert(),
            source,
        })?;
        let ca = if pki.ca_key().exists() {
            Some(pki.load_ca()?)
        } else {
            None
        };
        // A token pins one certificate: the CA that signs (its own PEM when this node holds the
        // key, else the first of `ca.pem`), never the digest of a bundle of several, which no
        // enrolling client could match against the one it is shown.
        let signer_pem = ca.as_ref().map_or(ca_pem.as_str(), |ca| ca.cert_pem());
        let ca_fingerprint = nexus_protocol::transport::first_certificate_der(signer_pem)
            .map_or_else(
                || credentials.ca_fingerprint().to_string(),
                |der| nexus_protocol::ca_rotation::fingerprint(&der),
            );
        Ok(Signer {
            ca,
            ca_pem,
            ca_fingerprint,
        })
    }
}

impl Signing {
    /// Loads the CA from `tls_dir` when its key is there. A key that is there but unusable is an
    /// error (a start should fail loudly rather than refuse every enrolment later).
    pub fn load(
        tls_dir: &Path,
        credentials: &Credentials,
        lifetimes: LifetimesHandle,
    ) -> Result<Signing, PkiError> {
        Ok(Signing {
            current: RwLock::new(Arc::new(Signer::load(tls_dir, credentials)?)),
            lifetimes,
        })
    }

    /// Reads the CA from `tls_dir` again and signs with it from now on (a CA rotation wrote a
    /// new key or bundle there). On an error the CA in force stays.
    pub fn reload(&self, tls_dir: &Path, credentials: &Credentials) -> Result<(), PkiError> {
        let signer = Signer::load(tls_dir, credentials)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(signer);
        Ok(())
    }

    fn signer(&self) -> Arc<Signer> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether this node can sign.
    pub fn holds_key(&self) -> bool {
        self.signer().ca.is_some()
    }

    /// The SHA-256 of the cluster CA certificate that signs: what a join token pins.
    pub fn ca_fingerprint(&self) -> String {
        self.signer().ca_fingerprint.clone()
    }

    /// The CA certificates an enrolled party should trust (this node's `ca.pem`).
    pub fn ca_pem(&self) -> String {
        self.signer().ca_pem.clone()
    }

    /// How long a certificate for `identity` lives now.
    pub fn lifetime_for(&self, identity: &Identity) -> Duration {
        let lifetimes = *lock(&self.lifetimes);
        match identity {
            Identity::User { .. } => lifetimes.user,
            Identity::Agent(_) | Identity::Coordinator(_) => lifetimes.node,
        }
    }

    /// The CA in force, or the refusal of a node without its key.
    fn ca(&self) -> Result<Arc<Signer>, WireError> {
        let signer = self.signer();
        if signer.ca.is_none() {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                "this coordinator holds no CA key (`ca.key` in its --tls-dir): enrol and renew against a coordinator that does, or give it the cluster's ca.key",
            ));
        }
        Ok(signer)
    }

    /// Signs a certificate for `identity` over the key of `csr_pem`, valid from now (see
    /// [`validity`]) for its lifetime, with `names`. A request that is not a usable PKCS#10 is
    /// `INVALID_ARGUMENT`.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        identity: &Identity,
        names: &[SubjectName],
        deny: &DenyList,
        now: Timestamp,
    ) -> Result<String, WireError> {
        let signer = self.ca()?;
        let ca = signer.ca.as_ref().ok_or_else(no_key)?;
        let validity = validity(deny, identity, now, self.lifetime_for(identity));
        ca.sign_request(csr_pem, identity, names, validity)
            .map_err(|error| match error {
                PkiError::BadRequest(_) | PkiError::BadName(..) => {
                    WireError::new(ErrorCode::InvalidArgument, error.to_string())
                }
                other => WireError::new(
                    ErrorCode::Internal,
                    format!("cannot sign the certificate: {other}"),
                ),
            })
    }

    /// A fresh key and certificate for `identity` (this coordinator's own renewal): the
    /// certificate and key, PEM.
    pub fn issue(
        &self,
        identity: &Identity,
        names: &[SubjectName],
        deny: &DenyList,
        now: Timestamp,
    ) -> Result<(String, String), WireError> {
        let signer = self.ca()?;
        let ca = signer.ca.as_ref().ok_or_else(no_key)?;
        let validity = validity(deny, identity, now, self.lifetime_for(identity));
        let issued = ca.issue(identity, names, validity).map_err(|error| {
            WireError::new(
                ErrorCode::Internal,
                format!("cannot make the certificate: {error}"),
            )
        })?;
        Ok((issued.cert_pem, issued.key_pem))
    }
}

fn no_key() -> WireError {
    WireError::new(ErrorCode::Internal, "the CA in force lost its key")
}

/// When a certificate for `identity` issued at `now` for `lifetime` is valid: from a little before
/// now (against clock skew: a tenth of its life, at most a minute, so that a certificate of
/// seconds is not due for renewal the moment it is made) but always after any denial of the
/// identity (`join::not_before_for`), until `lifetime` after it begins.
pub fn validity(
    deny: &DenyList,
    identity: &Identity,
    now: Timestamp,
    lifetime: Duration,
) -> Validity {
    let now_secs = secs(now);
    let skew = i64::try_from((lifetime.as_secs() / 10).min(MAX_SKEW_SECS)).unwrap_or(0);
    let not_before = join::not_before_for(deny, identity, now_secs).max(now_secs - skew);
    let life = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let not_after = now_secs
        .saturating_add(life)
        .max(not_before.saturating_add(life / 2));
    Validity {
        not_before: from_secs(not_before),
        not_after: from_secs(not_after),
    }
}

/// The names a certificate is asked to carry, checked: at most [`MAX_CERT_NAMES`], each an IP
/// address or a DNS name (letters, digits, hyphens, dots; 253 bytes at most).
pub fn check_names(names: &[String]) -> Result<Vec<SubjectName>, WireError> {
    if names.len() > MAX_CERT_NAMES {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!(
                "a certificate carries at most {MAX_CERT_NAMES} addresses and names, not {}",
                names.len()
            ),
        ));
    }
    let mut checked = Vec::with_capacity(names.len());
    for name in names {
        if let Ok(ip) = name.parse::<IpAddr>() {
            checked.push(SubjectName::Ip(ip));
        } else if is_dns_name(name) {
            checked.push(SubjectName::Dns(name.to_ascii_lowercase()));
        } else {
            let shown: String = name.chars().take(64).collect();
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("{shown:?} is neither an IP address nor a DNS name"),
            ));
        }
    }
    Ok(checked)
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What the cluster records of a certificate it issued or was shown (PEM): its fingerprint and
/// dates. `None` when `cert_pem` holds no readable certificate.
pub fn cert_record(cert_pem: &str, source: CertSource, at: Timestamp) -> Option<CertRecord> {
    let der = first_certificate_der(cert_pem)?;
    Some(CertRecord {
        fingerprint: nexus_protocol::hash::hex(&nexus_protocol::hash::sha256(&der)),
        not_before: nexus_protocol::identity::not_before(&der)?,
        not_after: nexus_protocol::identity::not_after(&der)?,
        recorded_at: at,
        source,
    })
}

/// Seconds since the epoch.
pub fn secs(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis() / 1000).unwrap_or(i64::MAX)
}

fn from_secs(secs: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use nexus_protocol::HostId;

    use super::*;

    fn host() -> Identity {
        Identity::Agent(HostId::new("h1").unwrap())
    }

    #[test]
    fn a_short_certificate_is_not_due_for_renewal_when_it_is_made() {
        let now = from_secs(1_000_000);
        let short = validity(&DenyList::default(), &host(), now, Duration::from_secs(20));
        let (begins, ends) = (secs(short.not_before), secs(short.not_after));
        assert_eq!((begins, ends), (999_998, 1_000_020));
        assert!(join::renew_at(begins, ends) > 1_000_010);
        let long = validity(
            &DenyList::default(),
            &host(),
            now,
            Duration::from_secs(86_400),
        );
        assert_eq!(secs(long.not_before), 999_940);
    }

    #[test]
    fn a_certificate_after_a_denial_begins_after_it() {
        let mut deny = DenyList::default();
        deny.deny(host(), 1_000_005);
        let now = from_secs(1_000_000);
        let valid = validity(&deny, &host(), now, Duration::from_secs(3600));
        assert_eq!(secs(valid.not_before), 1_000_006);
        assert!(!deny.refuses(&host(), secs(valid.not_before)));
        assert!(secs(valid.not_after) > secs(valid.not_before) + 1800);
    }

    #[test]
    fn names_are_bounded_and_checked() {
        let good =
            check_names(&["127.0.0.1".into(), "::1".into(), "Host-1.example".into()]).unwrap();
        assert_eq!(good[2], SubjectName::Dns("host-1.example".into()));
        for bad in [
            "",
            "-a",
            "a..b",
            "a b",
            "x".repeat(300).as_str(),
            "é.example",
        ] {
            assert!(check_names(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_CERT_NAMES).map(|i| format!("h{i}")).collect();
        assert_eq!(
            check_names(&many).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}
