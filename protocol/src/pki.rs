//! The cluster's certificate authority: one CA made with rcgen, and certificates that carry an
//! [`Identity`] as a SAN URI plus the IP addresses and DNS names a server is reached at.
//!
//! Files live flat in one directory (`nexus pki --dir DIR`): `ca.pem`, `ca.key`, and
//! `<kind>-<name>.pem` / `.key` per identity (`coordinator-1`, `agent-dev-01`, `user-alice`).
//! Private keys are written with mode 0600 and never overwritten unless asked (`force`).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::clock::Timestamp;
use crate::identity::Identity;

/// How long certificates are valid by default.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path} already exists (pass --force to replace it)")]
    Exists { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid subject name {0:?}: {1}")]
    BadName(String, String),
    #[error("the signing request is not usable: {0}")]
    BadRequest(String),
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Validity {
    /// From a minute before `now` (allowing for small clock skew) until `now + duration`.
    pub fn starting(now: Timestamp, duration: Duration) -> Validity {
        let not_before = Timestamp(now.0.saturating_sub(60_000));
        Validity {
            not_before,
            not_after: now.saturating_add(duration),
        }
    }
}

/// A name a server is reached at, besides its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectName {
    Ip(IpAddr),
    Dns(String),
}

impl SubjectName {
    /// An IP address if it reads as one, else a DNS name (checked when the certificate is made).
    pub fn parse(name: &str) -> SubjectName {
        match name.parse::<IpAddr>() {
            Ok(ip) => SubjectName::Ip(ip),
            Err(_) => SubjectName::Dns(name.to_string()),
        }
    }
}

impl std::fmt::Display for SubjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubjectName::Ip(ip) => write!(f, "{ip}"),
            SubjectName::Dns(dns) => f.write_str(dns),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA, able to issue certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA with a fresh key.
    pub fn generate(
        common_name: &str,
        validity: Validity,
    ) -> Result<CertificateAuthority, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before.to_offset_date_time();
        params.not_after = validity.not_after.to_offset_date_time();
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A new cluster CA valid from `now` for `validity`: `nexus pki init`'s, and a CA rotation's.
    /// A random suffix in its name tells CAs apart, in logs and TLS alerts, and tells a
    /// certificate's issuer among the CAs of one cluster (`identity::issued_by`).
    pub fn for_cluster(
        now: Timestamp,
        validity: Duration,
    ) -> Result<CertificateAuthority, PkiError> {
        let suffix = format!("{:08x}", crate::id::random_u64() as u32);
        CertificateAuthority::generate(
            &format!("Nexus cluster CA {suffix}"),
            Validity::starting(now, validity),
        )
    }

    /// A CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            issuer,
        })
    }

    /// The CA of `key_pem` from a bundle of CA certificates (`ca.pem`): the certificate whose
    /// public key is the key's, wherever it stands in the bundle (a CA rotation changes the
    /// order, and a crash between writing the key and the bundle must not make it sign under
    /// another certificate's name). `None` when no certificate goes with the key.
    pub fn from_bundle(
        bundle_pem: &str,
        key_pem: &str,
    ) -> Result<Option<CertificateAuthority>, rcgen::Error> {
        use rcgen::PublicKeyData;
        let key = KeyPair::from_pem(key_pem)?;
        if let Some(pem) = crate::identity::certificate_for_key(bundle_pem, key.der_bytes()) {
            return CertificateAuthority::from_pem(&pem, key_pem).map(Some);
        }
        Ok(None)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for `identity`, usable for both server and client authentication
    /// (coordinators are both; agents serve sync sessions).
    pub fn issue(
        &self,
        identity: &Identity,
        names: &[SubjectName],
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        self.sign(Some(identity), names, validity)
    }

    /// A certificate from this CA that carries no Nexus identity, which every Nexus endpoint must
    /// refuse. For tests of exactly that.
    #[doc(hidden)]
    pub fn issue_plain(&self, names: &[SubjectName]) -> Result<(String, String), PkiError> {
        let validity = Validity::starting(crate::clock::now(), DEFAULT_CERT_VALIDITY);
        let issued = self.sign(None, names, validity)?;
        Ok((issued.cert_pem, issued.key_pem))
    }

    /// Signs a certificate for `identity` over the public key of a PKCS#10 request (PEM), whose
    /// own signature proves its sender holds the key. Nothing else of the request is used: the
    /// identity, names and validity are the caller's decision. Answers the certificate, PEM.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        identity: &Identity,
        names: &[SubjectName],
        validity: Validity,
    ) -> Result<String, PkiError> {
        if csr_pem.len() > crate::join::MAX_CSR_LEN {
            return Err(PkiError::BadRequest(format!(
                "the signing request is larger than {} bytes",
                crate::join::MAX_CSR_LEN
            )));
        }
        let request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        let params = leaf_params(Some(identity), names, validity)?;
        Ok(params.signed_by(&request.public_key, &self.issuer)?.pem())
    }

    fn sign(
        &self,
        identity: Option<&Identity>,
        names: &[SubjectName],
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate()?;
        let params = leaf_params(identity, names, validity)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A key made here, and a signing request for it to send to the cluster. The key never leaves the
/// machine that made it.
#[derive(Clone)]
pub struct KeyRequest {
    /// The private key, PEM.
    pub key_pem: crate::credentials::Secret,
    /// The PKCS#10 request, PEM.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRequest")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

impl KeyRequest {
    /// A fresh key and a request for it (its subject is only a label: the cluster decides what
    /// the certificate says).
    pub fn generate(label: &str) -> Result<KeyRequest, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(label);
        let csr = params.serialize_request(&key)?;
        Ok(KeyRequest {
            key_pem: crate::credentials::Secret::new(key.serialize_pem()),
            csr_pem: csr.pem()?,
        })
    }
}

/// The parameters of a leaf certificate: the identity as a SAN URI, the names, both server and
/// client authentication.
fn leaf_params(
    identity: Option<&Identity>,
    names: &[SubjectName],
    validity: Validity,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let common_name = identity.map_or("nexus (no identity)".to_string(), |id| {
        format!("nexus {id}")
    });
    params.distinguished_name = distinguished_name(&common_name);
    if let Some(identity) = identity {
        params
            .subject_alt_names
            .push(SanType::URI(ia5(&identity.uri())?));
    }
    for name in names {
        params.subject_alt_names.push(match name {
            SubjectName::Ip(ip) => SanType::IpAddress(*ip),
            SubjectName::Dns(dns) => SanType::DnsName(ia5(dns)?),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = validity.not_before.to_offset_date_time();
    params.not_after = validity.not_after.to_offset_date_time();
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Nexus");
    name.push(DnType::CommonName, common_name);
    name
}

fn ia5(text: &str) -> Result<rcgen::string::Ia5String, PkiError> {
    rcgen::string::Ia5String::try_from(text)
        .map_err(|e| PkiError::BadName(text.into(), e.to_string()))
}

/// The file stem of an identity's certificate and key: `coordinator-1`, `agent-dev-01`,
/// `user-alice`.
pub fn file_stem(identity: &Identity) -> String {
    match identity {
        Identity::Coordinator(id) => format!("coordinator-{id}"),
        Identity::Agent(host) => format!("agent-{host}"),
        Identity::User { name, .. } => format!("user-{name}"),
    }
}

/// Paths of the files in a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    dir: PathBuf,
}

impl PkiDir {
    pub fn new(dir: impl Into<PathBuf>) -> PkiDir {
        PkiDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn cert(&self, identity: &Identity) -> PathBuf {
        self.dir.join(format!("{}.pem", file_stem(identity)))
    }

    pub fn key(&self, identity: &Identity) -> PathBuf {
        self.dir.join(format!("{}.key", file_stem(identity)))
    }

    /// The cluster's identity, kept once the CA certificates of `ca.pem` change (a CA rotation),
    /// so that a coordinator's data dir and backups stay bound to the cluster, not to its CA.
    pub fn cluster_id_file(&self) -> PathBuf {
        self.dir.join("cluster-id")
    }

    /// The cluster's identity: `cluster-id`'s when the directory has one, else `fallback` (the
    /// fingerprint of the CA certificates in force, which it was before any rotation).
    pub fn cluster_id(&self, fallback: &str) -> Result<String, PkiError> {
        match fs::read_to_string(self.cluster_id_file()) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            Ok(_) => Ok(fallback.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(fallback.to_string()),
            Err(source) => Err(PkiError::Read {
                path: self.cluster_id_file(),
                source,
            }),
        }
    }

    /// Writes `cluster-id` unless the directory has one: before `ca.pem` first changes.
    pub fn keep_cluster_id(&self, cluster: &str) -> Result<(), PkiError> {
        if self.cluster_id_file().exists() {
            return Ok(());
        }
        write_file(
            &self.cluster_id_file(),
            format!("{cluster}\n").as_bytes(),
            false,
        )
    }

    /// Replaces the CA certificates to trust (`ca.pem`), whole.
    pub fn write_ca_bundle(&self, ca_pem: &str) -> Result<(), PkiError> {
        write_file(&self.ca_cert(), ca_pem.as_bytes(), false)
    }

    /// Replaces the CA key (`ca.key`, 0600) that signs: a CA rotation's new key, written before
    /// the bundle that names its certificate first.
    pub fn write_ca_key(&self, key_pem: &str) -> Result<(), PkiError> {
        write_file(&self.ca_key(), key_pem.as_bytes(), true)
    }

    /// Makes a new CA and writes it, refusing to replace an existing key unless `force`.
    pub fn init(
        &self,
        now: Timestamp,
        validity: Duration,
        force: bool,
    ) -> Result<CertificateAuthority, PkiError> {
        refuse_existing(&self.ca_key(), force)?;
        let ca = CertificateAuthority::for_cluster(now, validity)?;
        create_dir(&self.dir)?;
        write_file(&self.ca_key(), ca.key_pem().as_bytes(), true)?;
        write_file(&self.ca_cert(), ca.cert_pem().as_bytes(), false)?;
        Ok(ca)
    }

    /// The CA of `ca.key`, with its certificate from `ca.pem` (which may hold others: see
    /// [`CertificateAuthority::from_bundle`]).
    pub fn load_ca(&self) -> Result<CertificateAuthority, PkiError> {
        let cert = read_text(&self.ca_cert())?;
        let key = read_text(&self.ca_key())?;
        let invalid = |reason: String| PkiError::Invalid {
            path: self.ca_key(),
            what: "CA certificate and key",
            reason,
        };
        CertificateAuthority::from_bundle(&cert, &key)
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| {
                invalid(format!(
                    "no certificate of {} goes with the key",
                    self.ca_cert().display()
                ))
            })
    }

    /// Issues a certificate for `identity` with the directory's CA and writes both files.
    /// Returns the certificate's and the key's paths.
    pub fn issue(
        &self,
        identity: &Identity,
        names: &[SubjectName],
        validity: Validity,
        force: bool,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let (cert_path, key_path) = (self.cert(identity), self.key(identity));
        refuse_existing(&key_path, force)?;
        let issued = self.load_ca()?.issue(identity, names, validity)?;
        write_file(&key_path, issued.key_pem.as_bytes(), true)?;
        write_file(&cert_path, issued.cert_pem.as_bytes(), false)?;
        Ok((cert_path, key_path))
    }
}

impl PkiDir {
    /// Writes a certificate the cluster issued for `identity`, the key it was made for (0600) and
    /// the CA certificates to trust, replacing what was there: what an enrolment or a renewal
    /// leaves on disk. The key is written first, so a crash between leaves a key without its
    /// certificate (the next start enrols again), never a certificate with a lost key.
    pub fn write_issued(
        &self,
        identity: &Identity,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<(), PkiError> {
        create_dir(&self.dir)?;
        write_file(&self.key(identity), key_pem.as_bytes(), true)?;
        write_file(&self.cert(identity), cert_pem.as_bytes(), false)?;
        write_file(&self.ca_cert(), ca_pem.as_bytes(), false)
    }
}

/// Writes a PEM file whole through a temporary name of its own and a rename; `secret` files
/// (keys) are 0600 from their creation on. What a client keeps of a renewed session.
pub fn write_pem(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    write_file(path, contents.as_bytes(), secret)
}

fn refuse_existing(path: &Path, force: bool) -> Result<(), PkiError> {
    if !force && path.exists() {
        return Err(PkiError::Exists { path: path.into() });
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.into(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.into(),
        source,
    })
}

/// Writes a file whole, through a temporary file and a rename, so a crash never leaves half a key.
/// Secret files get mode 0600 from their creation on.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.into(),
        source,
    };
    // A temporary name of this file's and this writer's own (`agent-h1.key.<pid>.<random>.tmp`,
    // never shared with `agent-h1.pem` nor with another process writing the same file: the
    // coordinators of one host may share a directory), made afresh: a leftover from a crash,
    // whatever its mode, is never written into.
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{:08x}.tmp",
        std::process::id(),
        crate::id::random_u64() as u32
    ));
    let tmp = path.with_file_name(name);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{HostId, NodeId};

    const NOW: Timestamp = Timestamp(1_750_000_000_000);

    #[test]
    fn issued_certificates_carry_the_identity() {
        let ca =
            CertificateAuthority::generate("test", Validity::starting(NOW, DEFAULT_CA_VALIDITY))
                .unwrap();
        let identity = Identity::Agent(HostId::new("dev-01").unwrap());
        let issued = ca
            .issue(
                &identity,
                &[SubjectName::Ip("127.0.0.1".parse().unwrap())],
                Validity::starting(NOW, DEFAULT_CERT_VALIDITY),
            )
            .unwrap();
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(Identity::from_certificate(&der), Ok(identity));
        // A CA reloaded from its files issues as well.
        let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let coordinator = Identity::Coordinator(NodeId::new(1).unwrap());
        assert!(
            reloaded
                .issue(
                    &coordinator,
                    &[],
                    Validity::starting(NOW, DEFAULT_CERT_VALIDITY)
                )
                .is_ok()
        );
    }

    use rustls::pki_types::pem::PemObject;

    #[test]
    fn a_request_gets_the_identity_the_ca_decides_over_its_own_key() {
        let ca =
            CertificateAuthority::generate("test", Validity::starting(NOW, DEFAULT_CA_VALIDITY))
                .unwrap();
        let request = KeyRequest::generate("nexus enrolment").unwrap();
        assert!(!format!("{request:?}").contains("PRIVATE"));
        let identity = Identity::Agent(HostId::new("dev-02").unwrap());
        let cert_pem = ca
            .sign_request(
                &request.csr_pem,
                &identity,
                &[
                    SubjectName::parse("127.0.0.1"),
                    SubjectName::parse("dev-02"),
                ],
                Validity::starting(NOW, DEFAULT_CERT_VALIDITY),
            )
            .unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        assert_eq!(Identity::from_certificate(&der), Ok(identity.clone()));
        // The certificate goes with the requester's key, and no other.
        let ca_pem = ca.cert_pem().as_bytes();
        assert!(
            crate::transport::Credentials::from_pem(
                ca_pem,
                Some((cert_pem.as_bytes(), request.key_pem.expose().as_bytes()))
            )
            .is_ok()
        );
        let other = KeyRequest::generate("other").unwrap();
        assert!(
            crate::transport::Credentials::from_pem(
                ca_pem,
                Some((cert_pem.as_bytes(), other.key_pem.expose().as_bytes()))
            )
            .is_err()
        );
        // A request whose signature does not hold, or no request at all, is refused.
        let mut tampered = request.csr_pem.clone().into_bytes();
        let at = tampered.len() / 2;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let validity = Validity::starting(NOW, DEFAULT_CERT_VALIDITY);
        for bad in [tampered.as_str(), "junk", ""] {
            assert!(matches!(
                ca.sign_request(bad, &identity, &[], validity),
                Err(PkiError::BadRequest(_))
            ));
        }
        let huge = "A".repeat(crate::join::MAX_CSR_LEN + 1);
        assert!(ca.sign_request(&huge, &identity, &[], validity).is_err());
    }

    #[test]
    fn credentials_know_when_their_certificates_expire() {
        let ca =
            CertificateAuthority::generate("test", Validity::starting(NOW, DEFAULT_CA_VALIDITY))
                .unwrap();
        let identity = Identity::Coordinator(NodeId::new(1).unwrap());
        let issued = ca
            .issue(
                &identity,
                &[],
                Validity::starting(NOW, DEFAULT_CERT_VALIDITY),
            )
            .unwrap();
        let credentials = crate::transport::Credentials::from_pem(
            ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
        )
        .unwrap();
        let start = (NOW.0 / 1000) as i64;
        let expiries = credentials.expiries();
        let own = expiries.own.unwrap();
        let ca_expiry = expiries.ca.unwrap();
        // Certificates may be back-dated a little against clock skew; the end is what counts.
        assert!(
            (own - start - DEFAULT_CERT_VALIDITY.as_secs() as i64).abs() < 86_400,
            "{own}"
        );
        assert!((ca_expiry - start - DEFAULT_CA_VALIDITY.as_secs() as i64).abs() < 86_400);
        assert_eq!(crate::identity::not_after(b"not a certificate"), None);
    }

    #[test]
    fn keys_are_private_and_never_overwritten_silently() {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir::new(dir.path().join("pki"));
        pki.init(NOW, DEFAULT_CA_VALIDITY, false).unwrap();
        assert!(matches!(
            pki.init(NOW, DEFAULT_CA_VALIDITY, false),
            Err(PkiError::Exists { .. })
        ));
        let identity = Identity::Coordinator(NodeId::new(1).unwrap());
        let validity = Validity::starting(NOW, DEFAULT_CERT_VALIDITY);
        let (cert, key) = pki.issue(&identity, &[], validity, false).unwrap();
        assert!(cert.ends_with("coordinator-1.pem") && key.ends_with("coordinator-1.key"));
        let before = fs::read(&key).unwrap();
        assert!(matches!(
            pki.issue(&identity, &[], validity, false),
            Err(PkiError::Exists { .. })
        ));
        assert_eq!(fs::read(&key).unwrap(), before);
        pki.issue(&identity, &[], validity, true).unwrap();
        assert_ne!(fs::read(&key).unwrap(), before);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [pki.ca_key(), key] {
                assert_eq!(
                    fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                    0o600,
                    "{path:?}"
                );
            }
        }
    }
}
