//! CA bundles: the CA certificates a party trusts, as PEM. The checks on one received from the
//! network ([`check_bundle`]), a bundle made of two ([`bundle`]) and its fingerprint as
//! `Credentials` names the bundle it trusts ([`bundle_fingerprint`]). Pure.

use crate::ca_rotation::{TrustBundle, fingerprint};

use super::enrol::{certificates_der, certificates_pem};

/// The most CA certificates a trust bundle may hold (a rotation needs two).
pub const MAX_BUNDLE_CERTS: usize = 4;
/// The most bytes of a trust bundle's PEM.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024;

/// Why a pushed bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the trust bundle is {0} bytes, more than {MAX_BUNDLE_BYTES}")]
    TooLarge(usize),
    #[error("the trust bundle holds {0} certificates, not 1 to {MAX_BUNDLE_CERTS}")]
    Count(usize),
    #[error("the trust bundle does not hold its signer {0}")]
    NoSigner(String),
    #[error("the trust bundle holds a certificate that is not a CA's")]
    NotCa,
}

/// Checks a bundle received from the network before it is written or trusted: bounded, every
/// certificate a CA's, the signer among them. Answers the certificates (DER).
pub fn check_bundle(bundle: &TrustBundle) -> Result<Vec<Vec<u8>>, BundleError> {
    if bundle.ca_pem.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bundle.ca_pem.len()));
    }
    let certs = certificates_der(&bundle.ca_pem);
    if certs.is_empty() || certs.len() > MAX_BUNDLE_CERTS {
        return Err(BundleError::Count(certs.len()));
    }
    if !certs.iter().all(|der| crate::identity::is_ca(der)) {
        return Err(BundleError::NotCa);
    }
    if !certs.iter().any(|der| fingerprint(der) == bundle.signer) {
        return Err(BundleError::NoSigner(bundle.signer.clone()));
    }
    Ok(certs)
}

/// The SHA-256 (hex) of a bundle's certificates (DER, in order): how `Credentials` names the
/// bundle it trusts ([`crate::transport::Credentials::trusted_fingerprint`]).
pub fn bundle_fingerprint(ca_pem: &str) -> String {
    let mut digest = crate::hash::Sha256::default();
    for der in certificates_der(ca_pem) {
        digest.update(&der);
    }
    crate::hash::hex(&digest.finish())
}

/// The bundle of `first` then `rest`, without repeats (PEM certificates, each ending in a line
/// break).
pub fn bundle(first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut seen = Vec::new();
    for pem in [first, rest] {
        for (der, text) in certificates_pem(pem) {
            if !seen.contains(&der) {
                seen.push(der);
                out.push_str(&text);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::identity::Identity;
    use crate::pki::{CertificateAuthority, DEFAULT_CA_VALIDITY, Validity};
    use crate::transport::first_certificate_der;

    fn ca(name: &str) -> CertificateAuthority {
        CertificateAuthority::generate(name, Validity::starting(clock::now(), DEFAULT_CA_VALIDITY))
            .unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        first_certificate_der(pem).unwrap()
    }

    #[test]
    fn a_bundle_keeps_order_without_repeats_and_is_checked() {
        let (old, new) = (ca("old"), ca("new"));
        let both = bundle(old.cert_pem(), new.cert_pem());
        let again = bundle(&both, new.cert_pem());
        assert_eq!(both, again);
        let signer = fingerprint(&der(new.cert_pem()));
        let good = TrustBundle {
            ca_pem: bundle(new.cert_pem(), &both),
            signer: signer.clone(),
            rotating_to: Some(signer.clone()),
        };
        let certs = check_bundle(&good).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(fingerprint(&certs[0]), signer, "the signer first");

        let mut no_signer = good.clone();
        no_signer.ca_pem = old.cert_pem().to_string();
        assert!(matches!(
            check_bundle(&no_signer),
            Err(BundleError::NoSigner(_))
        ));
        let mut empty = good.clone();
        empty.ca_pem = "junk".into();
        assert_eq!(check_bundle(&empty), Err(BundleError::Count(0)));
        let mut huge = good.clone();
        huge.ca_pem = "x".repeat(MAX_BUNDLE_BYTES + 1);
        assert!(matches!(check_bundle(&huge), Err(BundleError::TooLarge(_))));
        let leaf = new
            .issue(
                &Identity::Coordinator(crate::NodeId::new(1).unwrap()),
                &[],
                Validity::starting(clock::now(), std::time::Duration::from_secs(60)),
            )
            .unwrap();
        let mut not_ca = good;
        not_ca.ca_pem = bundle(new.cert_pem(), &leaf.cert_pem);
        assert_eq!(check_bundle(&not_ca), Err(BundleError::NotCa));
        assert!(crate::identity::issued_by(
            &der(&leaf.cert_pem),
            &der(new.cert_pem())
        ));
        assert!(!crate::identity::issued_by(
            &der(&leaf.cert_pem),
            &der(old.cert_pem())
        ));
    }
}
