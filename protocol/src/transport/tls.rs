//! Credentials and the rustls configurations built from them. The ring provider only, TLS 1.3
//! only (QUIC requires it), ALPN `nexus/1`, and client certificates required and checked for a
//! Nexus identity before the handshake completes.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::gate::Gate;
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
///
/// The own certificate and key can be replaced while servers and connectors made from these
/// credentials run ([`Credentials::rotate`]): each handshake reads the one in force, so new
/// connections present the new certificate and existing ones keep theirs. So can the CA
/// certificates trusted ([`Credentials::trust`], a CA rotation): each handshake is verified
/// against the bundle in force. Clones share both.
#[derive(Debug, Clone)]
pub struct Credentials {
    trust: Arc<Trust>,
    own: Option<Arc<OwnCert>>,
    identity: Option<Identity>,
    ca_fingerprint: String,
}

/// The CA certificates trusted now, and the verifiers made of them, read at each handshake.
#[derive(Debug)]
struct Trust {
    current: RwLock<Arc<TrustInForce>>,
}

#[derive(Debug)]
struct TrustInForce {
    fingerprint: String,
    cas: Vec<CertificateDer<'static>>,
    expiry: Option<i64>,
    /// The clients' verifiers (a server's): certificate required, and certificate optional (a
    /// coordinator that takes enrolments).
    required: Arc<dyn ClientCertVerifier>,
    optional: Arc<dyn ClientCertVerifier>,
    /// The servers' verifier (a client's).
    servers: Arc<WebPkiServerVerifier>,
}

impl Trust {
    fn get(&self) -> Arc<TrustInForce> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The CA certificates of a PEM bundle, with the bundle's fingerprint and earliest expiry.
struct Bundle {
    cas: Vec<CertificateDer<'static>>,
    fingerprint: String,
    expiry: Option<i64>,
}

impl Bundle {
    fn parse(ca_pem: &[u8], label: &str) -> Result<Bundle, TlsError> {
        let mut digest = crate::hash::Sha256::default();
        let mut expiry: Option<i64> = None;
        let mut cas = Vec::new();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| TlsError::Read {
                path: label.to_string(),
                reason: e.to_string(),
            })?;
            digest.update(&cert);
            if let Some(not_after) = crate::identity::not_after(&cert) {
                expiry = Some(expiry.map_or(not_after, |earliest| earliest.min(not_after)));
            }
            cas.push(cert);
        }
        if cas.is_empty() {
            return Err(TlsError::Empty {
                path: label.to_string(),
                what: "CA certificate",
            });
        }
        Ok(Bundle {
            cas,
            fingerprint: crate::hash::hex(&digest.finish()),
            expiry,
        })
    }

    /// The verifiers of this bundle: every certificate must be a usable trust anchor.
    fn in_force(&self, label: &str) -> Result<TrustInForce, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in &self.cas {
            roots.add(cert.clone()).map_err(|e| TlsError::Read {
                path: label.to_string(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let config = |e: rustls::server::VerifierBuilderError| TlsError::Config(e.to_string());
        let required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(config)?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(config)?;
        let servers = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(config)?;
        Ok(TrustInForce {
            fingerprint: self.fingerprint.clone(),
            cas: self.cas.clone(),
            expiry: self.expiry,
            required,
            optional,
            servers,
        })
    }
}

/// This party's certificate and key in force, read at each handshake.
#[derive(Debug)]
struct OwnCert {
    current: RwLock<(Arc<CertifiedKey>, Option<i64>)>,
    /// Derived from the key this party started with (a renewed key does not change it).
    endpoint_secret: super::reset::EndpointSecret,
}

impl OwnCert {
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        label: &str,
    ) -> Result<OwnCert, TlsError> {
        let endpoint_secret = super::reset::EndpointSecret::of(key.secret_der());
        let certified = certified(chain, key, label)?;
        let not_after = certified
            .cert
            .first()
            .and_then(|leaf| crate::identity::not_after(leaf));
        Ok(OwnCert {
            current: RwLock::new((Arc::new(certified), not_after)),
            endpoint_secret,
        })
    }

    fn get(&self) -> (Arc<CertifiedKey>, Option<i64>) {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A chain and its key, checked to belong together.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    label: &str,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Read {
        path: label.to_string(),
        reason: format!("the key does not go with the certificate: {e}"),
    })
}

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().0)
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get().0)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// When the certificates expire, in seconds since the epoch (`None`: not parsed, or absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiries {
    /// This party's own certificate.
    pub own: Option<i64>,
    /// The earliest-expiring trusted CA certificate.
    pub ca: Option<i64>,
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
        credentials.own = Some(Arc::new(OwnCert::new(chain, key, &labels[2])?));
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
        let bundle = Bundle::parse(ca_pem, ca_label)?;
        let trust = bundle.in_force(ca_label)?;
        let cas = &bundle.cas;
        let (own, identity) = match own {
            None => (None, None),
            Some((cert_pem, key_pem)) => {
                let mut chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| read_error(cert_label, &e))?;
                // The CA certificates go out with a lone leaf, so a client that pins the CA by
                // its fingerprint (an enrolling host: `transport::enrol`) can find it.
                if chain.len() == 1 {
                    let leaf = chain[0].clone();
                    chain.extend(cas.iter().filter(|ca| **ca != leaf).cloned());
                }
                let leaf = chain.first().ok_or_else(|| TlsError::Empty {
                    path: cert_label.clone(),
                    what: "certificate",
                })?;
                let identity =
                    Identity::from_certificate(leaf).map_err(|e| TlsError::Identity {
                        path: cert_label.clone(),
                        reason: e.to_string(),
                    })?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| read_error(key_label, &e))?;
                let own = OwnCert::new(chain, key, key_label)?;
                (Some(Arc::new(own)), Some(identity))
            }
        };
        Ok(Credentials {
            trust: Arc::new(Trust {
                current: RwLock::new(Arc::new(trust)),
            }),
            own,
            identity,
            ca_fingerprint: bundle.fingerprint,
        })
    }

    /// When this party's certificate (the one in force) and its CA expire (for
    /// `nexus_cert_expiry_timestamp_seconds`).
    pub fn expiries(&self) -> Expiries {
        Expiries {
            own: self.own.as_ref().and_then(|own| own.get().1),
            ca: self.trust.get().expiry,
        }
    }

    /// This party's certificate in force (DER of the leaf), if it has one.
    pub fn own_certificate(&self) -> Option<Vec<u8>> {
        let own = self.own.as_ref()?.get().0;
        own.cert.first().map(|leaf| leaf.to_vec())
    }

    /// This party's certificate in force, for logs and reload reports: the first 16 hex digits
    /// of its SHA-256 and when it expires (seconds since the epoch).
    pub fn own_summary(&self) -> Option<String> {
        let der = self.own_certificate()?;
        let digest = crate::hash::hex(&crate::hash::sha256(&der));
        let not_after = crate::identity::not_after(&der)
            .map_or_else(|| "unknown".to_string(), |t| t.to_string());
        Some(format!("sha256 {} not after {not_after}", &digest[..16]))
    }

    /// Reads this party's certificate and key again from the `nexus pki` directory `dir` and
    /// checks that they can replace the ones in force ([`Credentials::rotate`]'s rules), changing
    /// nothing yet: `None` when the files hold the certificate in force.
    pub fn prepare_rotation(&self, dir: &Path) -> Result<Option<Rotation>, TlsError> {
        let identity = self
            .identity
            .clone()
            .ok_or_else(|| TlsError::Config("only a party with an identity can rotate".into()))?;
        let fresh = Credentials::from_pki_dir(dir, &identity)?;
        self.check_rotation(&fresh)?;
        if fresh.own_certificate() == self.own_certificate() {
            return Ok(None);
        }
        Ok(Some(Rotation { fresh }))
    }

    fn check_rotation(&self, fresh: &Credentials) -> Result<(), TlsError> {
        if self.own.is_none() || fresh.own.is_none() {
            return Err(TlsError::Config(
                "only a party with its own certificate can rotate it".into(),
            ));
        }
        if fresh.identity != self.identity {
            return Err(TlsError::Config(format!(
                "the new certificate is for {}, not {}: a certificate for another identity needs a restart",
                fresh
                    .identity
                    .as_ref()
                    .map_or("nobody".into(), ToString::to_string),
                self.identity
                    .as_ref()
                    .map_or("nobody".into(), ToString::to_string),
            )));
        }
        self.check_same_trust(fresh)
    }

    /// Puts `fresh`'s certificate and key in force for the handshakes that follow, in every
    /// server and connector made from these credentials or their clones. Refused, changing
    /// nothing, when `fresh` is for another identity or trusts another CA: those need a restart.
    /// Answers whether the certificate changed.
    pub fn rotate(&self, fresh: &Credentials) -> Result<bool, TlsError> {
        let (Some(own), Some(new)) = (&self.own, &fresh.own) else {
            return Err(TlsError::Config(
                "only a party with its own certificate can rotate it".into(),
            ));
        };
        if fresh.identity != self.identity {
            return Err(TlsError::Config(format!(
                "the new certificate is for {}, not {}: a certificate for another identity needs a restart",
                fresh
                    .identity
                    .as_ref()
                    .map_or("nobody".into(), ToString::to_string),
                self.identity
                    .as_ref()
                    .map_or("nobody".into(), ToString::to_string),
            )));
        }
        self.check_same_trust(fresh)?;
        let next = new.get();
        let mut current = own.current.write().unwrap_or_else(PoisonError::into_inner);
        let changed = current.0.cert != next.0.cert;
        if changed {
            *current = next;
        }
        Ok(changed)
    }

    /// A certificate read from the files must be issued by a CA trusted now: the bundle trusted
    /// changes only through [`Credentials::trust`] (during a CA rotation the files may already
    /// name a bundle in another order, or the next one).
    fn check_same_trust(&self, fresh: &Credentials) -> Result<(), TlsError> {
        let leaf = fresh.own_certificate().unwrap_or_default();
        let trusted = self.trust.get();
        let issued = trusted
            .cas
            .iter()
            .any(|ca| crate::identity::issued_by(&leaf, ca));
        if !issued {
            return Err(TlsError::Config(
                "the CA certificate changed: a new CA is put in force by `nexus admin ca rotate` (or a restart)".into(),
            ));
        }
        Ok(())
    }

    /// Puts the CA certificates of `ca_pem` in force for the handshakes that follow, in every
    /// server and connector made from these credentials or their clones; connections already
    /// made keep going. Refused, changing nothing, when the bundle holds no usable CA
    /// certificate. Answers whether the bundle changed. This party's own certificate chain is
    /// not changed: the one it renews next carries the new bundle.
    pub fn trust(&self, ca_pem: &[u8]) -> Result<bool, TlsError> {
        let label = "the CA bundle";
        let bundle = Bundle::parse(ca_pem, label)?;
        if bundle.fingerprint == self.trusted_fingerprint() {
            return Ok(false);
        }
        let next = Arc::new(bundle.in_force(label)?);
        *self
            .trust
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next;
        Ok(true)
    }

    /// The SHA-256 of the CA certificates trusted now (DER, in order), in hex.
    pub fn trusted_fingerprint(&self) -> String {
        self.trust.get().fingerprint.clone()
    }

    /// The SHA-256 of the CA certificates these credentials were loaded with (DER, in file
    /// order), in hex: the cluster's identity, which a coordinator's data dir and its backups are
    /// bound to, unless the `nexus pki` directory names it (`cluster-id`, kept through a CA
    /// rotation: [`crate::pki::PkiDir::cluster_id`]).
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// The identity in this party's own certificate, if it has one.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// What a server's endpoint keys its stateless resets with ([`super::reset`]).
    pub(crate) fn endpoint_secret(&self) -> Option<super::reset::EndpointSecret> {
        self.own.as_ref().map(|own| own.endpoint_secret.clone())
    }

    /// The IP addresses and DNS names this party's certificate in force is valid for.
    pub fn own_names(&self) -> Vec<String> {
        self.own_certificate()
            .map(|der| crate::identity::subject_names(&der))
            .unwrap_or_default()
    }

    /// A server's TLS configuration: client certificates required and checked for an identity
    /// and against `gate`'s deny list; with `enrolment`, a client may also come without one (the
    /// server then only takes an enrolment from it).
    pub(crate) fn server_config(
        &self,
        gate: Option<Gate>,
        enrolment: bool,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let own = self
            .own
            .clone()
            .ok_or_else(|| TlsError::Config("a server needs its own certificate".into()))?;
        let verifier = Arc::new(IdentityClientVerifier {
            trust: self.trust.clone(),
            enrolment,
            gate,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(own);
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = Arc::new(TrustedServerVerifier {
            trust: self.trust.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.own {
            Some(own) => builder.with_client_cert_resolver(own.clone()),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

/// A certificate and key read again and checked ([`Credentials::prepare_rotation`]), to be put
/// in force with [`Rotation::commit`].
#[derive(Debug)]
pub struct Rotation {
    fresh: Credentials,
}

impl Rotation {
    /// Puts the new certificate in force in `credentials` (the ones it was prepared from) and
    /// says what changed, as a reload reports it (key `certificate`).
    pub fn commit(
        self,
        credentials: &Credentials,
    ) -> Result<crate::debug::ChangedSetting, TlsError> {
        let old = credentials.own_summary().unwrap_or_default();
        credentials.rotate(&self.fresh)?;
        Ok(crate::debug::ChangedSetting {
            key: "certificate".into(),
            old,
            new: credentials.own_summary().unwrap_or_default(),
        })
    }
}

/// The webpki client verifier of the CA certificates trusted now, plus: the certificate must
/// carry exactly one valid Nexus identity, and the deny list must not refuse it. A certificate
/// without one is refused during the handshake, like one from another CA; a denied one as
/// revoked.
#[derive(Debug)]
struct IdentityClientVerifier {
    trust: Arc<Trust>,
    /// A client may come without a certificate (to enrol).
    enrolment: bool,
    gate: Option<Gate>,
}

impl IdentityClientVerifier {
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let trust = self.trust.get();
        if self.enrolment {
            trust.optional.clone()
        } else {
            trust.required.clone()
        }
    }
}

impl ClientCertVerifier for IdentityClientVerifier {
    /// No hints: the CAs trusted change during a rotation, and a Nexus client has one
    /// certificate to offer whatever the server names.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.enrolment
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner()
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = Identity::from_certificate(end_entity).map_err(|e| {
            tracing::debug!(error = %e, "refused a client certificate without a Nexus identity");
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })?;
        if let Some(gate) = &self.gate {
            let not_before = crate::identity::not_before(end_entity).unwrap_or(i64::MIN);
            if gate.refuses(&identity, not_before) {
                tracing::info!(peer = %identity, "refused a revoked certificate");
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Revoked,
                ));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// The webpki server verifier of the CA certificates trusted now.
#[derive(Debug)]
struct TrustedServerVerifier {
    trust: Arc<Trust>,
}

impl ServerCertVerifier for TrustedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.trust.get().servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .get()
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .get()
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.get().servers.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::pki::{DEFAULT_CA_VALIDITY, SubjectName, Validity};

    fn issue(pki: &PkiDir, identity: &Identity) {
        let validity = Validity::starting(clock::now(), std::time::Duration::from_secs(3600));
        let names = [SubjectName::Dns("localhost".into())];
        pki.issue(identity, &names, validity, true).unwrap();
    }

    #[test]
    fn a_rotation_takes_a_new_certificate_of_the_same_identity_and_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir::new(dir.path());
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
        let agent = Identity::Agent(crate::HostId::new("h1").unwrap());
        issue(&pki, &agent);
        let credentials = Credentials::from_pki_dir(dir.path(), &agent).unwrap();
        let shared = credentials.clone();
        let old = credentials.own_certificate().unwrap();
        // The same files: nothing to rotate.
        assert!(credentials.prepare_rotation(dir.path()).unwrap().is_none());
        // A new certificate in the same files: in force in every clone once committed.
        issue(&pki, &agent);
        let rotation = credentials.prepare_rotation(dir.path()).unwrap().unwrap();
        assert_eq!(
            credentials.own_certificate().unwrap(),
            old,
            "nothing changes before"
        );
        let change = rotation.commit(&credentials).unwrap();
        assert_eq!(change.key, "certificate");
        assert_ne!(change.old, change.new);
        assert_ne!(shared.own_certificate().unwrap(), old);
        assert_eq!(shared.own_summary().unwrap(), change.new);
        // Another identity's files, or another CA: refused, nothing changes.
        let other = Identity::Agent(crate::HostId::new("h2").unwrap());
        issue(&pki, &other);
        let error = credentials
            .rotate(&Credentials::from_pki_dir(dir.path(), &other).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("another identity"), "{error}");
        let elsewhere = tempfile::tempdir().unwrap();
        let second = PkiDir::new(elsewhere.path());
        second
            .init(clock::now(), DEFAULT_CA_VALIDITY, false)
            .unwrap();
        issue(&second, &agent);
        let error = credentials.prepare_rotation(elsewhere.path()).unwrap_err();
        assert!(
            error.to_string().contains("CA certificate changed"),
            "{error}"
        );
        assert_eq!(shared.own_summary().unwrap(), change.new);
    }
}
