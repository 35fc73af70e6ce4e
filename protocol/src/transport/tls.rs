//! Credentials and the rustls configurations built from them. The ring provider only, TLS 1.3
//! only (QUIC requires it), ALPN `nexus/1`, and client certificates required and checked for a
//! Nexus identity before the handshake completes.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::identity::Identity;
use crate::message::ALPN;
use crate::pki::PkiDir;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("the certificate in {path} has no usable identity: {reason}")]
    Identity { path: String, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// What one party needs to speak mTLS: the cluster CA to trust, and its own certificate chain and
/// key (a client may go without, and will be refused; see the tests).
#[derive(Debug)]
pub struct Credentials {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) own: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    identity: Option<Identity>,
    ca_fingerprint: String,
    expiries: Expiries,
}

/// When the certificates expire, in seconds since the epoch (`None`: not parsed, or absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiries {
    /// This party's own certificate.
    pub own: Option<i64>,
    /// The earliest-expiring trusted CA certificate.
    pub ca: Option<i64>,
}

impl Clone for Credentials {
    fn clone(&self) -> Credentials {
        Credentials {
            roots: self.roots.clone(),
            own: self
                .own
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
            identity: self.identity.clone(),
            expiries: self.expiries,
            ca_fingerprint: self.ca_fingerprint.clone(),
        }
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Credentials {
    /// Reads the CA certificate, this party's certificate chain and its private key from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Credentials, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| TlsError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let (ca_pem, cert_pem, key_pem) = (read(ca)?, read(cert)?, read(key)?);
        let labels = [ca, cert, key].map(|path| path.display().to_string());
        Credentials::parse(&ca_pem, Some((&cert_pem, &key_pem)), &labels)
    }

    /// Reads the files of `identity` from a `nexus pki` directory.
    pub fn from_pki_dir(dir: &Path, identity: &Identity) -> Result<Credentials, TlsError> {
        let pki = PkiDir::new(dir);
        Credentials::load(&pki.ca_cert(), &pki.cert(identity), &pki.key(identity))
    }

    /// From PEM bytes. `own` is this party's certificate chain and key.
    pub fn from_pem(ca_pem: &[u8], own: Option<(&[u8], &[u8])>) -> Result<Credentials, TlsError> {
        let labels = ["the CA PEM", "the certificate PEM", "the key PEM"].map(String::from);
        Credentials::parse(ca_pem, own, &labels)
    }

    /// Like [`Credentials::from_pem`], but accepts an own certificate without a Nexus identity,
    /// so tests can show that servers refuse such a certificate.
    #[doc(hidden)]
    pub fn from_pem_without_identity(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Credentials, TlsError> {
        let labels = ["the CA PEM", "the certificate PEM", "the key PEM"].map(String::from);
        let mut credentials = Credentials::parse(ca_pem, None, &labels)?;
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Read {
                path: labels[1].clone(),
                reason: e.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Read {
            path: labels[2].clone(),
            reason: e.to_string(),
        })?;
        credentials.own = Some((chain, key));
        Ok(credentials)
    }

    /// `labels` name the CA, certificate and key sources in errors.
    fn parse(
        ca_pem: &[u8],
        own: Option<(&[u8], &[u8])>,
        labels: &[String; 3],
    ) -> Result<Credentials, TlsError> {
        let [ca_label, cert_label, key_label] = labels;
        let read_error = |label: &String, e: &dyn std::fmt::Display| TlsError::Read {
            path: label.clone(),
            reason: e.to_string(),
        };
        let mut roots = RootCertStore::empty();
        let mut digest = crate::hash::Sha256::default();
        let mut expiries = Expiries::default();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| read_error(ca_label, &e))?;
            digest.update(&cert);
            if let Some(expiry) = crate::identity::not_after(&cert) {
                expiries.ca = Some(expiries.ca.map_or(expiry, |earliest| earliest.min(expiry)));
            }
            roots.add(cert).map_err(|e| read_error(ca_label, &e))?;
        }
        let ca_fingerprint = crate::hash::hex(&digest.finish());
        if roots.is_empty() {
            return Err(TlsError::Empty {
                path: ca_label.clone(),
                what: "CA certificate",
            });
        }
        let (own, identity) = match own {
            None => (None, None),
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| read_error(cert_label, &e))?;
                let leaf = chain.first().ok_or_else(|| TlsError::Empty {
                    path: cert_label.clone(),
                    what: "certificate",
                })?;
                let identity =
                    Identity::from_certificate(leaf).map_err(|e| TlsError::Identity {
                        path: cert_label.clone(),
                        reason: e.to_string(),
                    })?;
                expiries.own = crate::identity::not_after(leaf);
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| read_error(key_label, &e))?;
                (Some((chain, key)), Some(identity))
            }
        };
        Ok(Credentials {
            roots: Arc::new(roots),
            own,
            identity,
            ca_fingerprint,
            expiries,
        })
    }

    /// When this party's certificate and its CA expire (for `nexus_cert_expiry_timestamp_seconds`).
    pub fn expiries(&self) -> Expiries {
        self.expiries
    }

    /// The SHA-256 of the trusted CA certificates (DER, in file order), in hex: the cluster's
    /// identity, which a coordinator's data dir is bound to.
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// The identity in this party's own certificate, if it has one.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let (chain, key) = self
            .own
            .as_ref()
            .ok_or_else(|| TlsError::Config("a server needs its own certificate".into()))?;
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let verifier = Arc::new(IdentityClientVerifier { inner });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_webpki_verifier(verifier);
        let mut config = match &self.own {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

/// The webpki client verifier, plus: the certificate must carry exactly one valid Nexus identity.
/// A certificate without one is refused during the handshake, like one from another CA.
#[derive(Debug)]
struct IdentityClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for IdentityClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        Identity::from_certificate(end_entity).map_err(|e| {
            tracing::debug!(error = %e, "refused a client certificate without a Nexus identity");
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
