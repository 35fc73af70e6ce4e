//! `nexus login` as a user runs it, against a server on loopback that enrols like a coordinator
//! (real QUIC, real TLS): the token comes from a file, the key is made here and kept 0600, the
//! settings point at the session, and the next command connects with it. A token of another
//! cluster gets nothing; a user's own config file is never overwritten. And a server's refusal
//! of an expired certificate reads "Session expired", as the transport words it today.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::credentials::Secret;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::join::{EnrolRequest, Issued, JoinToken, TokenId};
use nexus_protocol::message::{Pong, Request, Response};
use nexus_protocol::pki::{CertificateAuthority, SubjectName, Validity};
use nexus_protocol::transport::{
    AcceptPolicy, Credentials, Handler, Peer, Reply, Server, TransportConfig,
};
use nexus_protocol::{NodeId, RequestId, UserName, clock};

const SECRET: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
const TOKEN_ID: &str = "0123456789abcdef";

/// Answers pings; gives alice a certificate for the right secret.
struct Enroller {
    ca: CertificateAuthority,
}

impl Handler for Enroller {
    async fn handle(&self, peer: &Peer, _id: RequestId, request: Request) -> Reply {
        match request {
            Request::Ping => Reply::Once(Ok(Response::Pong(Pong {
                software: "test".into(),
                server: Identity::Coordinator(NodeId::new(1).unwrap()),
                client: peer.identity.clone(),
                time: clock::now(),
            }))),
            _ => Reply::Once(Err(WireError::new(ErrorCode::Unsupported, "not here"))),
        }
    }

    async fn enrol(
        &self,
        _address: SocketAddr,
        request: EnrolRequest,
    ) -> Result<Issued, WireError> {
        if request.secret.expose() != SECRET || request.token_id.as_str() != TOKEN_ID {
            return Err(WireError::new(ErrorCode::TokenInvalid, "no such token"));
        }
        let identity = Identity::User {
            name: UserName::new("alice").unwrap(),
            role: Role::User,
        };
        let validity = Validity::starting(clock::now(), Duration::from_secs(12 * 3600));
        let cert_pem = self
            .ca
            .sign_request(&request.csr_pem, &identity, &[], validity)
            .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        Ok(Issued {
            identity,
            cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
            labels: Default::default(),
        })
    }
}

/// A server of a fresh CA on loopback; answers its address and its CA's fingerprint.
fn serve(runtime: &tokio::runtime::Runtime) -> (SocketAddr, String) {
    let (address, fingerprint, _) = serve_with_ca(runtime);
    (address, fingerprint)
}

/// As [`serve`], and the CA's certificate and key (PEM), to make clients of it.
fn serve_with_ca(runtime: &tokio::runtime::Runtime) -> (SocketAddr, String, (String, String)) {
    let validity = Validity::starting(
        clock::Timestamp(clock::now().0 - 86_400_000),
        Duration::from_secs(3 * 86_400),
    );
    let ca = CertificateAuthority::generate("login test CA", validity).unwrap();
    let ca_files = (ca.cert_pem().to_string(), ca.key_pem().to_string());
    let coordinator = Identity::Coordinator(NodeId::new(1).unwrap());
    let own = ca
        .issue(
            &coordinator,
            &[SubjectName::Ip([127, 0, 0, 1].into())],
            validity,
        )
        .unwrap();
    let credentials = Credentials::from_pem(
        ca.cert_pem().as_bytes(),
        Some((own.cert_pem.as_bytes(), own.key_pem.as_bytes())),
    )
    .unwrap();
    let fingerprint = credentials.ca_fingerprint().to_string();
    let _guard = runtime.enter();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &credentials,
        AcceptPolicy::everyone().with_enrolment(),
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    runtime.spawn(server.serve(Arc::new(Enroller { ca }), std::future::pending::<()>()));
    (address, fingerprint, ca_files)
}

fn token(fingerprint: &str) -> String {
    let token = JoinToken {
        ca_fingerprint: fingerprint.to_string(),
        id: TOKEN_ID.parse::<TokenId>().unwrap(),
        secret: Secret::new(SECRET.into()),
    };
    token.reveal().expose().to_string()
}

fn nexus(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("NEXUS_CONFIG")
        .env_remove("NEXUS_TOKEN")
        .env_remove("NEXUS_COORDINATORS")
        .env("NEXUS_NO_NOTICES", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn login_makes_a_key_here_gets_a_session_and_the_next_command_uses_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (address, fingerprint) = serve(&runtime);
    let address = address.to_string();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{}\n", token(&fingerprint))).unwrap();

    let out = nexus(
        home.path(),
        &[
            "login",
            "--coordinator",
            &address,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("logged in as alice (user) until "),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET), "{stdout}");
    let login = home.path().join(".local/state/nexus/login");
    let key = login.join("user-alice.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = home.path().join(".config/nexus/config.toml");
    let settings = std::fs::read_to_string(&config).unwrap();
    assert!(settings.starts_with("# Written by"), "{settings}");
    assert!(settings.contains("user-alice.pem"), "{settings}");
    assert!(!settings.contains(SECRET), "{settings}");

    // The next command connects as alice, with nothing but the settings login wrote.
    let ping = nexus(home.path(), &["ping", "-o", "json"]);
    assert!(ping.status.success(), "{}", text(&ping.stderr));
    let pong: serde_json::Value = serde_json::from_slice(&ping.stdout).unwrap();
    assert_eq!(pong["client"], "nexus://user/alice?role=user", "{pong}");

    // A config file the user wrote is kept; the session's own copy is named instead.
    std::fs::write(&config, "output = \"json\"\n").unwrap();
    let out = nexus(
        home.path(),
        &[
            "login",
            "--coordinator",
            &address,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "output = \"json\"\n"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["config"], login.join("cli.toml").to_str().unwrap());
    assert_eq!(json["user"], "alice");
    assert_eq!(json["role"], "user");
}

#[test]
fn a_token_of_another_cluster_or_a_wrong_secret_gets_no_session() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (address, fingerprint) = serve(&runtime);
    let address = address.to_string();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    let login = |token: &str| {
        std::fs::write(&token_file, token).unwrap();
        nexus(
            home.path(),
            &[
                "login",
                "--coordinator",
                &address,
                "--token-file",
                token_file.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    };
    let code = |out: &Output| {
        let error: serde_json::Value = serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
        error["error"]["code"].as_str().unwrap().to_string()
    };
    let out = login(&token(&"ab".repeat(32)));
    assert_eq!(code(&out), "CA_MISMATCH");
    assert_eq!(
        out.status.code(),
        Some(ErrorCode::CaMismatch.exit_code().into())
    );
    let wrong = token(&fingerprint).replace(SECRET, &"0".repeat(64));
    assert_eq!(code(&login(&wrong)), "TOKEN_INVALID");
    assert!(!home.path().join(".local/state/nexus/login").exists());
    assert!(!home.path().join(".config/nexus/config.toml").exists());
}

#[test]
fn a_server_that_refuses_an_expired_certificate_is_an_expired_session() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (address, _, (ca_pem, ca_key)) = serve_with_ca(&runtime);
    let ca = CertificateAuthority::from_pem(&ca_pem, &ca_key).unwrap();
    let bob = Identity::User {
        name: UserName::new("bob").unwrap(),
        role: Role::User,
    };
    // Twelve hours that ended an hour ago. The CLI would say so before connecting; the
    // transport is asked directly to see the server's own refusal.
    let began = clock::Timestamp(clock::now().0 - 13 * 3_600_000);
    let issued = ca
        .issue(
            &bob,
            &[],
            Validity::starting(began, Duration::from_secs(12 * 3600)),
        )
        .unwrap();
    let credentials = Credentials::from_pem(
        ca_pem.as_bytes(),
        Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
    )
    .unwrap();
    let refusal = runtime.block_on(async {
        let connector =
            nexus_protocol::transport::Connector::new(&credentials, TransportConfig::default())
                .unwrap();
        let connection = connector
            .connect(
                address,
                "127.0.0.1",
                &[nexus_protocol::identity::IdentityKind::Coordinator],
            )
            .await;
        // QUIC may finish the client's side of the handshake before the server's verdict
        // arrives: then the first request carries it.
        match connection {
            Err(error) => error,
            Ok(connection) => connection.request(Request::Ping).await.unwrap_err(),
        }
    });
    let error = nexus_cli::session::explain(refusal.clone());
    assert!(
        error.error.message.starts_with("Session expired"),
        "the transport said: {refusal}"
    );
    assert_eq!(
        error.suggestion.as_deref(),
        Some(nexus_cli::session::LOGIN_SUGGESTION)
    );
}
