//! A fresh cluster CA per test, and certificates for any identity.

use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, PkiDir, SubjectName, Validity};
use nexus_protocol::transport::Credentials;
use nexus_protocol::{HostId, NodeId, UserName};
use tempfile::TempDir;

/// Whether a [`TestPki`] made from now on keeps its directory: see [`keep_files`].
static KEEP_FILES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps the directory of every [`TestPki`] made from now on (its certificates and keys, and the
/// scratch directories beside them: the daemons' data and logs), and says where on stderr. For
/// a benchmark's run looked into afterwards (`nexus-bench --keep-files`); a test's files go.
pub fn keep_files() {
    KEEP_FILES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A PKI directory with a fresh CA, removed when dropped (unless [`keep_files`] was called).
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
    pki: PkiDir,
}

pub fn coordinator(id: u64) -> Identity {
    Identity::Coordinator(NodeId::new(id).expect("test node ids are positive"))
}

pub fn agent(host: &str) -> Identity {
    Identity::Agent(HostId::new(host).expect("test host ids are valid"))
}

pub fn user(name: &str, role: Role) -> Identity {
    Identity::User {
        name: UserName::new(name).expect("test user names are valid"),
        role,
    }
}

/// The names a server on this machine is reached at.
pub fn loopback() -> Vec<SubjectName> {
    vec![
        SubjectName::Ip([127, 0, 0, 1].into()),
        SubjectName::Ip(Ipv6Addr::LOCALHOST.into()),
        SubjectName::Dns("localhost".into()),
    ]
}

/// Ninety days from a minute ago: longer than the month under which `nexus admin health-check`
/// warns of a certificate's end, so that a test's fleet is healthy.
pub fn default_validity() -> Validity {
    Validity::starting(clock::now(), Duration::from_secs(90 * 86_400))
}

impl TestPki {
    pub fn new() -> TestPki {
        let mut dir = tempfile::tempdir().expect("a temporary directory");
        if KEEP_FILES.load(std::sync::atomic::Ordering::Relaxed) {
            dir.disable_cleanup(true);
            eprintln!("keeping this run's files in {}", dir.path().display());
        }
        let pki = PkiDir::new(dir.path().join("pki"));
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false)
            .expect("a fresh CA");
        TestPki { dir, pki }
    }

    pub fn dir(&self) -> &Path {
        self.pki.path()
    }

    /// A scratch directory beside the PKI, removed with it.
    pub fn scratch(&self, name: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("a scratch directory");
        path
    }

    /// Issues (or re-issues) `identity`'s files, valid for 90 days from a minute ago and
    /// reachable on loopback, and returns its credentials. Longer than the month under which
    /// `nexus admin health-check` warns of a certificate's end, so that a test's fleet is healthy.
    pub fn issue(&self, identity: &Identity) -> Credentials {
        self.issue_with(identity, default_validity())
    }

    pub fn issue_with(&self, identity: &Identity, validity: Validity) -> Credentials {
        self.issue_with_names(identity, &loopback(), validity)
    }

    /// Issues (or re-issues) `identity`'s files for a server reached at `names` (a coordinator
    /// in a network namespace: its address there, with [`loopback`] for the harness's own
    /// connections, which name 127.0.0.1).
    pub fn issue_with_names(
        &self,
        identity: &Identity,
        names: &[SubjectName],
        validity: Validity,
    ) -> Credentials {
        self.pki
            .issue(identity, names, validity, true)
            .expect("an issued certificate");
        Credentials::from_pki_dir(self.dir(), identity).expect("loadable credentials")
    }

    /// An agent's credentials for each of `hosts`, issued in memory (see
    /// [`TestPki::issue_in_memory`]).
    pub fn issue_agents_in_memory(&self, hosts: &[HostId]) -> Vec<Credentials> {
        let identities: Vec<Identity> = hosts
            .iter()
            .map(|host| Identity::Agent(host.clone()))
            .collect();
        self.issue_in_memory(&identities)
    }

    /// Credentials for each of `identities`, issued in memory (no files): a hollow fleet's
    /// thousands of agents. Valid for a day, reachable on loopback.
    pub fn issue_in_memory(&self, identities: &[Identity]) -> Vec<Credentials> {
        let ca = self.pki.load_ca().expect("the CA");
        let ca_pem = self.ca_pem();
        let validity = Validity::starting(clock::now(), Duration::from_secs(86_400));
        identities
            .iter()
            .map(|identity| {
                let issued = ca
                    .issue(identity, &loopback(), validity)
                    .expect("an issued certificate");
                Credentials::from_pem(
                    &ca_pem,
                    Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
                )
                .expect("credentials")
            })
            .collect()
    }

    /// Credentials whose certificate expired yesterday.
    pub fn expired(&self, identity: &Identity) -> Credentials {
        let now = clock::now().as_millis();
        let day = 86_400_000;
        let validity = Validity {
            not_before: Timestamp(now - 3 * day),
            not_after: Timestamp(now - day),
        };
        self.issue_with(identity, validity)
    }

    /// The CA, able to sign.
    pub fn ca(&self) -> nexus_protocol::pki::CertificateAuthority {
        self.pki.load_ca().expect("the CA")
    }

    /// The CA certificate's SHA-256, as a join token names it.
    pub fn fingerprint(&self) -> String {
        Credentials::from_pem(&self.ca_pem(), None)
            .expect("the CA certificate")
            .ca_fingerprint()
            .to_string()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.pki.ca_cert()).expect("the CA certificate")
    }

    pub fn ca_cert_path(&self) -> std::path::PathBuf {
        self.pki.ca_cert()
    }

    pub fn paths(&self, identity: &Identity) -> (std::path::PathBuf, std::path::PathBuf) {
        (self.pki.cert(identity), self.pki.key(identity))
    }

    /// A certificate and key signed by this CA that carries no Nexus identity.
    pub fn without_identity(&self) -> Credentials {
        let ca = self.pki.load_ca().expect("the CA");
        let (cert, key) = ca.issue_plain(&loopback()).expect("a plain certificate");
        Credentials::from_pem_without_identity(&self.ca_pem(), cert.as_bytes(), key.as_bytes())
            .expect("credentials without identity")
    }
}

impl Default for TestPki {
    fn default() -> TestPki {
        TestPki::new()
    }
}
