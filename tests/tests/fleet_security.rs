//! Fleet security on real processes: a host joins with one token and one command and its key
//! never leaves it; every kind of bad token is refused with its own code, and a coordinator of
//! another CA gets nothing; certificates of seconds renew while the host stays ready, and a host
//! whose certificate ran out while it was off comes back with a fresh token; coordinators renew
//! without losing the leader; a removed host and a revoked user are cut off within a second; an
//! expired user session says so, and `nexus login` fixes it; the CA rotates on a running fleet
//! with no heartbeat lapsing, every certificate re-issued and the old CA refused.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nexus_protocol::ca_rotation::CaStatus;
use nexus_protocol::clock;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, IdentityKind, Role};
use nexus_protocol::join::CertView;
use nexus_protocol::message::{AdminRequest, Request, Response, WorkspaceRequest};
use nexus_protocol::model::{HostStatus, WorkspaceState};
use nexus_protocol::pki::Validity;
use nexus_protocol::transport::{
    Connector, Credentials, TransportConfig, certificates_der, first_certificate_der,
};
use nexus_tests::cluster::{TestCluster, admin_to_leader, status};
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, binary, cli_command, connect};
use serde_json::Value;

/// Runs the CLI as the admin `root` with JSON output.
fn admin(pki: &TestPki, cluster: &TestCluster, args: &[&str]) -> Output {
    let home = pki.scratch("home-root");
    cli_command(
        pki,
        &pki::user("root", Role::Admin),
        &home,
        &cluster.live_addresses(),
    )
    .args(["-o", "json"])
    .args(args)
    .output()
    .unwrap()
}

fn admin_ok(pki: &TestPki, cluster: &TestCluster, args: &[&str]) -> Value {
    let out = admin(pki, cluster, args);
    assert!(
        out.status.success(),
        "nexus {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Makes a token with `nexus admin token create` and writes it to a private file; answers the
/// file and the CLI's JSON answer.
fn token(pki: &TestPki, cluster: &TestCluster, name: &str, args: &[&str]) -> (PathBuf, Value) {
    let mut all = vec!["admin", "token", "create"];
    all.extend_from_slice(args);
    let created = admin_ok(pki, cluster, &all);
    for key in ["id", "token", "role", "expires_at", "uses_left"] {
        assert!(created.get(key).is_some(), "no {key} in {created}");
    }
    let file = pki.scratch("tokens").join(name);
    write_private(&file, created["token"].as_str().unwrap());
    (file, created)
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(file, "{text}").unwrap();
}

async fn certificates(pki: &TestPki, cluster: &TestCluster) -> Vec<CertView> {
    let address = cluster.live_addresses()[0];
    match admin_to_leader(pki, address, Request::Admin(AdminRequest::Certificates))
        .await
        .unwrap()
    {
        Response::Certificates(certs) => certs,
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn certificate_of(pki: &TestPki, cluster: &TestCluster, who: &Identity) -> Option<CertView> {
    certificates(pki, cluster)
        .await
        .into_iter()
        .find(|view| &view.identity == who)
}

async fn host_status(pki: &TestPki, cluster: &TestCluster, host: &str) -> Option<HostStatus> {
    let address = cluster.live_addresses()[0];
    match admin_to_leader(pki, address, Request::Admin(AdminRequest::Hosts)).await {
        Ok(Response::Hosts(hosts)) => hosts
            .into_iter()
            .find(|view| view.info.host_id.as_str() == host)
            .map(|view| view.status),
        _ => None,
    }
}

async fn wait_ready(pki: &TestPki, cluster: &TestCluster, agent: &mut AgentProcess) {
    let host = agent.host_id.to_string();
    let limit = Duration::from_secs(30);
    let started = Instant::now();
    loop {
        if host_status(pki, cluster, &host).await == Some(HostStatus::Ready) {
            return;
        }
        if let Some(status) = agent.process.exited() {
            panic!("the agent exited ({status}):\n{}", agent.process.log());
        }
        assert!(
            started.elapsed() < limit,
            "{host} never became ready:\n{}\n{}",
            agent.process.log(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for an agent that must refuse to run to exit, and answers its log.
async fn refused_to_run(mut agent: AgentProcess) -> String {
    let log = eventually("the agent to give up", Duration::from_secs(30), || {
        let exited = agent.process.exited();
        let log = agent.process.log();
        async move { exited.map(|status| (status, log)) }
    })
    .await;
    assert!(!log.0.success(), "the agent exited happily:\n{}", log.1);
    log.1
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_host_joins_with_one_token_and_bad_tokens_get_their_own_codes() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &[]).await;
    let addresses = cluster.live_addresses();
    let (file, created) = token(
        &pki,
        &cluster,
        "joiner",
        &["--role", "agent", "--uses", "1", "--label", "zone=a"],
    );
    assert_eq!(created["uses_left"], 1);
    let secret = created["token"].as_str().unwrap().to_string();
    let mut joiner = AgentProcess::enrol(&pki, "joiner", &addresses, Some(&file), &[]);
    wait_ready(&pki, &cluster, &mut joiner).await;

    // Its key was made on the host, kept private there, and never issued by anyone else.
    let own_pki = joiner.data_dir.join("pki");
    let keys: Vec<PathBuf> = std::fs::read_dir(&own_pki)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "key"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(mode(&keys[0]), 0o600);
    assert!(!pki.paths(&pki::agent("joiner")).1.exists());
    let known = certificate_of(&pki, &cluster, &pki::agent("joiner"))
        .await
        .expect("the cluster knows the certificate it issued");
    assert_eq!(
        known.cert.source.to_string(),
        format!("token {}", created["id"].as_str().unwrap())
    );
    // The token's label reached the host.
    let hosts = admin_ok(&pki, &cluster, &["admin", "hosts"]);
    assert!(hosts.to_string().contains("zone"), "{hosts}");
    // Listing tokens shows the use, never the secret.
    let list = admin(&pki, &cluster, &["admin", "token", "list"]);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(!text.contains(&secret[secret.len() - 64..]), "{text}");

    // Used up.
    let again = AgentProcess::enrol(&pki, "second", &addresses, Some(&file), &[]);
    let log = refused_to_run(again).await;
    assert!(log.contains("TOKEN_USED_UP"), "{log}");
    // Mistyped: a wrong secret, and no token at all.
    let (good, _) = token(&pki, &cluster, "typo", &["--role", "agent"]);
    let text = std::fs::read_to_string(&good).unwrap();
    let last = text.trim().chars().last().unwrap();
    let wrong = format!(
        "{}{}",
        &text.trim()[..text.trim().len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let typo = pki.scratch("tokens").join("wrong");
    write_private(&typo, &wrong);
    let log = refused_to_run(AgentProcess::enrol(
        &pki,
        "typo",
        &addresses,
        Some(&typo),
        &[],
    ))
    .await;
    assert!(log.contains("TOKEN_INVALID"), "{log}");
    assert!(
        !log.contains(&wrong[wrong.len() - 64..]),
        "the log repeats the secret: {log}"
    );
    let garbage = pki.scratch("tokens").join("garbage");
    write_private(&garbage, "not-a-token");
    let log = refused_to_run(AgentProcess::enrol(
        &pki,
        "junk",
        &addresses,
        Some(&garbage),
        &[],
    ))
    .await;
    assert!(log.contains("join token"), "{log}");
    // Expired.
    let (short, _) = token(&pki, &cluster, "short", &["--role", "agent", "--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = refused_to_run(AgentProcess::enrol(
        &pki,
        "late",
        &addresses,
        Some(&short),
        &[],
    ))
    .await;
    assert!(log.contains("TOKEN_EXPIRED"), "{log}");
    // Revoked.
    let (revoked, made) = token(&pki, &cluster, "revoked", &["--role", "agent"]);
    admin_ok(
        &pki,
        &cluster,
        &["admin", "token", "revoke", made["id"].as_str().unwrap()],
    );
    let log = refused_to_run(AgentProcess::enrol(
        &pki,
        "banned",
        &addresses,
        Some(&revoked),
        &[],
    ))
    .await;
    assert!(log.contains("TOKEN_REVOKED"), "{log}");
    // No certificate and no token: it says what is missing and which flag gives it.
    let log = refused_to_run(AgentProcess::enrol(&pki, "bare", &addresses, None, &[])).await;
    assert!(log.contains("--join-token-file"), "{log}");
    // None of the refused hosts got in.
    for host in ["second", "typo", "junk", "late", "banned", "bare"] {
        assert_eq!(host_status(&pki, &cluster, host).await, None, "{host}");
    }

    // A coordinator of another cluster (another CA) gets nothing, not even the secret.
    let other = TestPki::new();
    let elsewhere = TestCluster::start(&other, 1, &[]).await;
    let (usable, _) = token(&pki, &cluster, "usable", &["--role", "agent"]);
    let log = refused_to_run(AgentProcess::enrol(
        &pki,
        "lost",
        &elsewhere.live_addresses(),
        Some(&usable),
        &[],
    ))
    .await;
    assert!(log.contains("CA_MISMATCH"), "{log}");
    assert!(!elsewhere.logs().contains("lost"), "{}", elsewhere.logs());
}

#[tokio::test]
async fn certificates_of_seconds_renew_and_an_expired_host_re_enrols() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &["--cert-lifetime", "10s"]).await;
    let addresses = cluster.live_addresses();
    let (file, _) = token(&pki, &cluster, "renewer", &["--role", "agent"]);
    let mut agent = AgentProcess::enrol(&pki, "renewer", &addresses, Some(&file), &[]);
    wait_ready(&pki, &cluster, &mut agent).await;
    let me = pki::agent("renewer");
    let first = certificate_of(&pki, &cluster, &me).await.unwrap();
    assert!(first.cert.not_after - first.cert.not_before <= 10 + 60);

    // For 20 s the certificate renews (about every 7 s) while the host never stops being ready.
    let mut fingerprints = BTreeSet::from([first.cert.fingerprint.clone()]);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let status = host_status(&pki, &cluster, "renewer").await;
        assert_eq!(
            status,
            Some(HostStatus::Ready),
            "the host lapsed after {:?}:\n{}\n{}",
            started.elapsed(),
            agent.process.log(),
            cluster.logs()
        );
        if let Some(view) = certificate_of(&pki, &cluster, &me).await {
            fingerprints.insert(view.cert.fingerprint);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        fingerprints.len() >= 3,
        "{} certificates in 20 s:\n{}",
        fingerprints.len(),
        agent.process.log()
    );

    // Off past its certificate's end: without a token it says so; with a fresh one it is back.
    agent.process.kill();
    let last = certificate_of(&pki, &cluster, &me).await.unwrap();
    let now = (clock::now().as_millis() / 1000) as i64;
    let wait = (last.cert.not_after - now + 2).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let log = refused_to_run(AgentProcess::enrol(&pki, "renewer", &addresses, None, &[])).await;
    assert!(log.contains("expired"), "{log}");
    assert!(log.contains("--join-token-file"), "{log}");
    let (fresh, _) = token(&pki, &cluster, "fresh", &["--role", "agent"]);
    let mut back = AgentProcess::enrol(&pki, "renewer", &addresses, Some(&fresh), &[]);
    wait_ready(&pki, &cluster, &mut back).await;
}

#[tokio::test]
async fn coordinators_renew_without_losing_the_leader() {
    let pki = TestPki::new();
    let lifetime = Duration::from_secs(10);
    let validity = Validity::starting(clock::now(), lifetime);
    let cluster =
        TestCluster::start_with_validity(&pki, 3, &["--cert-lifetime", "10s"], validity).await;
    let before = cluster.leader(&pki, Duration::from_secs(20)).await;
    let mut seen: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(16) {
        for view in certificates(&pki, &cluster).await {
            if let Identity::Coordinator(id) = view.identity {
                seen[id.get() as usize - 1].insert(view.cert.fingerprint);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Past the first certificates' end, the cluster still answers, under one leader.
    let after = status(&pki, cluster.live_addresses()[0]).await.unwrap();
    assert_eq!(after.leader, before.leader, "{}", cluster.logs());
    assert_eq!(after.term, before.term, "{}", cluster.logs());
    for (index, fingerprints) in seen.iter().enumerate() {
        assert!(
            fingerprints.len() >= 2,
            "coordinator {} renewed {} times:\n{}",
            index + 1,
            fingerprints.len().saturating_sub(1),
            cluster.logs()
        );
    }
}

#[tokio::test]
async fn a_removed_host_and_a_revoked_user_are_cut_off_within_a_second() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &[]).await;
    let address = cluster.live_addresses()[0];
    // A host with a certificate made by hand, holding a workspace.
    let mut agent = AgentProcess::start(&pki, "gone", &cluster.live_addresses(), &[]);
    wait_ready(&pki, &cluster, &mut agent).await;
    let user_home = pki.scratch("home-ann");
    let create = cli_command(
        &pki,
        &pki::user("ann", Role::User),
        &user_home,
        &cluster.live_addresses(),
    )
    .args([
        "workspace",
        "create",
        "held",
        "--image",
        "busybox",
        "--host",
        "gone",
    ])
    .output()
    .unwrap();
    assert!(
        create.status.success(),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );
    // Refused while it holds a workspace.
    let out = admin(
        &pki,
        &cluster,
        &["admin", "host", "remove", "gone", "--yes"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        host_status(&pki, &cluster, "gone").await,
        Some(HostStatus::Ready)
    );

    // A live connection with the host's certificate, and one of a user.
    let host_link = connect(&pki, &pki::agent("gone"), address).await.unwrap();
    let mallory = pki::user("mallory", Role::User);
    let user_link = connect(&pki, &mallory, address).await.unwrap();
    assert!(matches!(
        user_link.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));

    admin_ok(
        &pki,
        &cluster,
        &["admin", "host", "remove", "gone", "--force", "--yes"],
    );
    let removed = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(1), host_link.closed())
        .await
        .expect("the removed host's connection closed within a second");
    assert!(reason.message.contains("revoked"), "{reason}");
    assert!(removed.elapsed() < Duration::from_secs(1));
    let error = connect(&pki, &pki::agent("gone"), address)
        .await
        .unwrap_err();
    assert!(error.message.contains("revoked"), "{error}");
    // The host stays out: its agent cannot register again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(host_status(&pki, &cluster, "gone").await, None);

    admin_ok(
        &pki,
        &cluster,
        &["admin", "user", "revoke", "mallory", "--yes"],
    );
    let revoked = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), user_link.closed())
        .await
        .expect("the revoked user's connection closed within a second");
    assert!(revoked.elapsed() < Duration::from_secs(1));
    let home = pki.scratch("home-mallory");
    let out = cli_command(&pki, &mallory, &home, &cluster.live_addresses())
        .args(["-o", "json", "workspace", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    let error: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"]["code"], "AUTHENTICATION_FAILED");
    assert!(
        !error.to_string().contains("Session expired"),
        "a revoked certificate is not an expired session: {error}"
    );
    // Other users are untouched.
    let other = connect(&pki, &pki::user("ann", Role::User), address)
        .await
        .unwrap();
    assert!(matches!(
        other.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));
}

/// The CLI with `home` as its home and nothing else: whatever `nexus login` left is all it has.
fn bare_cli(home: &Path, args: &[&str]) -> Output {
    Command::new(binary("nexus"))
        .args(args)
        .env("HOME", home)
        .env_remove("NEXUS_CONFIG")
        .env_remove("NEXUS_COORDINATOR")
        .env_remove("NEXUS_CA")
        .env_remove("NEXUS_CERT")
        .env_remove("NEXUS_KEY")
        .env_remove("NEXUS_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap()
}

fn login(home: &Path, coordinator: SocketAddr, token: &Path) {
    let out = bare_cli(
        home,
        &[
            "login",
            "--coordinator",
            &coordinator.to_string(),
            "--token-file",
            &token.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bob"));
}

#[tokio::test]
async fn an_expired_session_says_so_and_login_fixes_it() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &["--user-cert-lifetime", "10s"]).await;
    let address = cluster.live_addresses()[0];
    let home = pki.scratch("home-bob");
    let (first, _) = token(&pki, &cluster, "bob", &["--role", "user", "--name", "bob"]);
    login(&home, address, &first);
    let list = bare_cli(&home, &["-o", "json", "workspace", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    // The session's key is private, and its certificate names bob as a user.
    let keys: Vec<PathBuf> = walk(&home)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "key"))
        .collect();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|key| mode(key) == 0o600), "{keys:?}");

    // The session's certificate began at most a second back (a tenth of its life); it ends 10 s on.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let out = bare_cli(&home, &["-o", "json", "workspace", "list"]);
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    let error: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"]["code"], "AUTHENTICATION_FAILED", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Session expired"),
        "{error}"
    );
    assert!(
        error["error"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("nexus login"),
        "{error}"
    );
    let (second, _) = token(
        &pki,
        &cluster,
        "bob-again",
        &["--role", "user", "--name", "bob"],
    );
    login(&home, address, &second);
    let list = bare_cli(&home, &["-o", "json", "workspace", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Asks as the harness admin. Once the old CA is dropped its certificate (and root's, the
/// CLI's) is of a CA no one trusts any more, so both are issued again by the directory's CA,
/// which the coordinators replaced with the new one, and the request is asked again.
async fn ask_admin(pki: &TestPki, cluster: &TestCluster, request: Request) -> Response {
    for _ in 0..2 {
        let address = cluster.live_addresses()[0];
        match admin_to_leader(pki, address, request.clone()).await {
            Ok(response) => return response,
            Err(error) if error.code == ErrorCode::AuthenticationFailed => {
                pki.issue(&pki::user("harness", Role::Admin));
                pki.issue(&pki::user("root", Role::Admin));
            }
            Err(error) => panic!("{request:?}: {error}\n{}", cluster.logs()),
        }
    }
    panic!(
        "the admin is refused with a certificate of the new CA:\n{}",
        cluster.logs()
    );
}

async fn ca_status(pki: &TestPki, cluster: &TestCluster) -> CaStatus {
    match ask_admin(pki, cluster, Request::Admin(AdminRequest::CaStatus)).await {
        Response::CaStatus(status) => *status,
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn rotating_host(pki: &TestPki, cluster: &TestCluster) -> Option<HostStatus> {
    match ask_admin(pki, cluster, Request::Admin(AdminRequest::Hosts)).await {
        Response::Hosts(hosts) => hosts
            .into_iter()
            .find(|view| view.info.host_id.as_str() == "rotating")
            .map(|view| view.status),
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn kept_workspace(pki: &TestPki, cluster: &TestCluster) -> Option<WorkspaceState> {
    match ask_admin(pki, cluster, Request::Workspace(WorkspaceRequest::List)).await {
        Response::Workspaces(list) => list
            .into_iter()
            .find(|w| w.name.as_str() == "kept")
            .map(|w| w.state),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn der_of(path: &Path) -> Vec<u8> {
    first_certificate_der(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_ca_rotates_on_a_running_fleet_without_a_lapse() {
    let pki = TestPki::new();
    let seal_key = pki.scratch("keys").join("seal.key");
    nexus_protocol::seal::write_new_key(&seal_key).unwrap();
    let cluster = TestCluster::start(
        &pki,
        3,
        &[
            "--host-ttl",
            "3",
            "--credentials-key-file",
            seal_key.to_str().unwrap(),
        ],
    )
    .await;
    let before = cluster.leader(&pki, Duration::from_secs(20)).await;
    let addresses = cluster.live_addresses();
    let (file, _) = token(&pki, &cluster, "rotating", &["--role", "agent"]);
    let mut agent = AgentProcess::enrol(&pki, "rotating", &addresses, Some(&file), &[]);
    wait_ready(&pki, &cluster, &mut agent).await;
    let created = admin_ok(
        &pki,
        &cluster,
        &[
            "workspace",
            "create",
            "kept",
            "--image",
            "dev:latest",
            "--",
            "sleep",
            "600",
        ],
    );
    assert_eq!(created["name"], "kept", "{created}");
    eventually("the workspace to run", Duration::from_secs(30), || async {
        (kept_workspace(&pki, &cluster).await == Some(WorkspaceState::Running)).then_some(())
    })
    .await;
    // A backup made before the rotation, kept as a file here (checked again after it).
    let backup_file = pki.scratch("backups").join("before.nxbackup");
    admin_ok(
        &pki,
        &cluster,
        &[
            "admin",
            "backup",
            "create",
            "--file",
            backup_file.to_str().unwrap(),
        ],
    );
    let old_ca_pem = String::from_utf8(pki.ca_pem()).unwrap();
    let (root_cert, root_key) = pki.paths(&pki::user("root", Role::Admin));
    let old_root = (
        std::fs::read(root_cert).unwrap(),
        std::fs::read(root_key).unwrap(),
    );

    // An admin with files of their own (as after `nexus login`) rotates and waits.
    let ops = pki::user("ops", Role::Admin);
    pki.issue(&ops);
    let own = pki.scratch("home-ops");
    let (ops_cert, ops_key) = pki.paths(&ops);
    let ops_files = [own.join("ca.pem"), own.join("ops.pem"), own.join("ops.key")];
    std::fs::copy(pki.ca_cert_path(), &ops_files[0]).unwrap();
    std::fs::copy(ops_cert, &ops_files[1]).unwrap();
    std::fs::copy(ops_key, &ops_files[2]).unwrap();
    let ops_cli_to = |coordinators: &str, args: &[&str]| {
        let mut command = Command::new(binary("nexus"));
        command
            .args(["--coordinator", coordinators])
            .arg("--ca")
            .arg(&ops_files[0])
            .arg("--cert")
            .arg(&ops_files[1])
            .arg("--key")
            .arg(&ops_files[2])
            .env("HOME", &own)
            .env_remove("NEXUS_CONFIG")
            .env_remove("NEXUS_COORDINATORS")
            .env_remove("NEXUS_OUTPUT")
            .args(["-o", "json"])
            .args(args);
        command
    };
    let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let ops_cli = |args: &[&str]| ops_cli_to(&list.join(","), args);
    let rotating = ops_cli(&["admin", "ca", "rotate", "--timeout", "60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let new_ca = eventually("the rotation to start", Duration::from_secs(20), || async {
        let status = ca_status(&pki, &cluster).await;
        status
            .rotation
            .map(|rotation| rotation.new_ca)
            .or(status.last.map(|last| last.new_ca))
    })
    .await;

    // Until it is done the host never lapses and its workspace keeps running.
    let started_at = Instant::now();
    let mut phases = BTreeSet::new();
    loop {
        let status = ca_status(&pki, &cluster).await;
        assert_eq!(
            rotating_host(&pki, &cluster).await,
            Some(HostStatus::Ready),
            "the host lapsed after {:?}:\n{}\n{}",
            started_at.elapsed(),
            agent.process.log(),
            cluster.logs()
        );
        assert_eq!(
            kept_workspace(&pki, &cluster).await,
            Some(WorkspaceState::Running)
        );
        match &status.rotation {
            Some(rotation) => {
                phases.insert(rotation.phase.as_str());
            }
            None => {
                assert_eq!(status.last.as_ref().unwrap().new_ca, new_ca);
                assert!(status.last.as_ref().unwrap().left.is_empty());
                break;
            }
        }
        assert!(
            started_at.elapsed() < Duration::from_secs(60),
            "the rotation is stuck: {status:?}\n{}\n{}",
            agent.process.log(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It may be over before the first look: seen phases are only those it was caught in.
    assert!(
        phases
            .iter()
            .all(|phase| ["trust", "reissue"].contains(phase))
    );

    // The rotating admin's CLI renewed its own certificate on the new CA and trusts it alone, so
    // its next command connects without a new login. Other users (the test's admins here) are
    // not re-issued: they log in again.
    let waited = rotating.wait_with_output().unwrap();
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let shown: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(shown["last"]["new_ca"], new_ca.as_str(), "{shown}");
    pki.issue(&pki::user("harness", Role::Admin));
    pki.issue(&pki::user("root", Role::Admin));

    // Every identity's certificate is the new CA's, and the cluster records the ones in force.
    let new_ca_pem = String::from_utf8(pki.ca_pem()).unwrap();
    let new_ca_der = first_certificate_der(&new_ca_pem).unwrap();
    assert_eq!(
        nexus_protocol::ca_rotation::fingerprint(&new_ca_der),
        new_ca
    );
    assert_eq!(
        certificates_der(&new_ca_pem).len(),
        1,
        "the old CA is dropped"
    );
    let agent_pki = pki.scratch("agent-rotating").join("pki");
    assert_eq!(
        std::fs::read_to_string(agent_pki.join("ca.pem")).unwrap(),
        new_ca_pem
    );
    let certs = certificates(&pki, &cluster).await;
    let mut files = vec![(pki::agent("rotating"), agent_pki.join("agent-rotating.pem"))];
    for id in 1..=3 {
        files.push((pki::coordinator(id), pki.paths(&pki::coordinator(id)).0));
    }
    for (identity, path) in files {
        let der = der_of(&path);
        assert!(
            nexus_protocol::identity::issued_by(&der, &new_ca_der),
            "{identity} is not re-issued"
        );
        let recorded = certs.iter().find(|view| view.identity == identity).unwrap();
        assert_eq!(
            recorded.cert.fingerprint,
            nexus_protocol::ca_rotation::fingerprint(&der),
            "{identity}"
        );
    }
    // The leader did not change for it.
    let after = status(&pki, cluster.live_addresses()[0]).await.unwrap();
    assert_eq!(after.leader, before.leader, "{}", cluster.logs());

    // A certificate of the old CA is refused at the handshake, even trusting the new CA.
    let stale = Credentials::from_pem(&pki.ca_pem(), Some((&old_root.0, &old_root.1))).unwrap();
    let error = Connector::new(&stale, TransportConfig::default())
        .unwrap()
        .connect(
            cluster.live_addresses()[0],
            "127.0.0.1",
            &[IdentityKind::Coordinator],
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert_ne!(old_ca_pem, new_ca_pem);

    // The backup made before is still the cluster's: its identity is its first CA's, which a CLI
    // trusting only the new CA asks the cluster for. Without a cluster to ask, the refusal says
    // why and how to tell.
    let out = ops_cli(&["admin", "backup", "verify", backup_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified[0]["ok"], true, "{verified}");
    let out = ops_cli_to(
        "127.0.0.1:9",
        &["admin", "backup", "verify", backup_file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(34), "{stderr}");
    assert!(stderr.contains("cluster-id"), "{stderr}");

    // A token made now pins the new CA, and a new host joins with it.
    let (fresh, made) = token(&pki, &cluster, "after", &["--role", "agent"]);
    assert!(made["token"].as_str().unwrap().contains(&new_ca), "{made}");
    let mut joiner = AgentProcess::enrol(&pki, "joiner", &addresses, Some(&fresh), &[]);
    wait_ready(&pki, &cluster, &mut joiner).await;

    // A coordinator restarted after the rotation opens its data dir (bound to the cluster, not
    // to its CA) and serves.
    let mut cluster = cluster;
    cluster.kill(0);
    cluster.restart(&pki, 0).await;
    eventually(
        "the restarted coordinator to serve",
        Duration::from_secs(30),
        || {
            let address = cluster.members[0].address;
            let pki = &pki;
            async move { status(pki, address).await.ok().and_then(|s| s.leader) }
        },
    )
    .await;
    let out = ops_cli(&["admin", "ca", "status"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["signer"], new_ca.as_str(), "{shown}");
    assert_eq!(shown["rotation"], Value::Null, "{shown}");
    let ops_der = der_of(&ops_files[1]);
    assert!(nexus_protocol::identity::issued_by(&ops_der, &new_ca_der));
    assert_eq!(std::fs::read_to_string(&ops_files[0]).unwrap(), new_ca_pem);
    assert_eq!(mode(&ops_files[2]) & 0o777, 0o600);
}

/// A host that is down holds the rotation in its phase, never silently: `rotate` times out
/// naming it, a user may not rotate, and `--finish --force` ends it, naming the host left to
/// enrol again; the coordinator, never re-issued, renews at once on the new CA.
#[tokio::test]
async fn a_host_that_is_down_holds_the_rotation_until_an_admin_finishes_it() {
    let pki = TestPki::new();
    let seal_key = pki.scratch("keys").join("seal.key");
    nexus_protocol::seal::write_new_key(&seal_key).unwrap();
    let cluster = TestCluster::start(
        &pki,
        1,
        &["--credentials-key-file", seal_key.to_str().unwrap()],
    )
    .await;
    let addresses = cluster.live_addresses();
    let (file, _) = token(&pki, &cluster, "gone", &["--role", "agent"]);
    let mut agent = AgentProcess::enrol(&pki, "gone", &addresses, Some(&file), &[]);
    wait_ready(&pki, &cluster, &mut agent).await;
    agent.process.kill();

    let waited = admin(
        &pki,
        &cluster,
        &["admin", "ca", "rotate", "--timeout", "2s"],
    );
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert_eq!(waited.status.code(), Some(19), "TIMEOUT: {stderr}");
    assert!(stderr.contains("waiting for agent gone"), "{stderr}");
    let status = admin_ok(&pki, &cluster, &["admin", "ca", "status"]);
    assert_eq!(status["rotation"]["phase"], "trust", "{status}");
    assert_eq!(
        status["rotation"]["waiting"],
        serde_json::json!(["agent gone"])
    );
    let http = cluster.running[0].as_ref().unwrap().http.unwrap();
    let (_, metrics) = nexus_tests::http::get(http, "/metrics").await;
    assert!(
        metrics.contains("nexus_ca_rotation_waiting 1"),
        "{}",
        metrics
            .lines()
            .filter(|line| line.contains("ca_rotation"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let again = admin(&pki, &cluster, &["admin", "ca", "rotate", "--no-wait"]);
    assert_eq!(
        again.status.code(),
        Some(45),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("CA_ROTATION_IN_PROGRESS"));

    let home = pki.scratch("home-bob");
    let user = cli_command(&pki, &pki::user("bob", Role::User), &home, &addresses)
        .args(["admin", "ca", "rotate", "--finish", "--force"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&user.stderr).contains("PERMISSION_DENIED"),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );

    let finished = admin_ok(
        &pki,
        &cluster,
        &["admin", "ca", "rotate", "--finish", "--force"],
    );
    assert_eq!(finished["rotation"], Value::Null, "{finished}");
    assert_eq!(finished["last"]["left"], serde_json::json!(["agent gone"]));
    let new_ca = finished["last"]["new_ca"].as_str().unwrap().to_string();

    // The coordinator was never re-issued before the end: it renews on the new CA (and so it
    // signs with it: the admins are issued again by the directory's CA after that).
    eventually(
        "the coordinator to renew on the new CA",
        Duration::from_secs(20),
        || {
            let bundle = String::from_utf8(pki.ca_pem()).unwrap();
            let ca = certificates_der(&bundle)
                .into_iter()
                .find(|der| nexus_protocol::ca_rotation::fingerprint(der) == new_ca);
            let der = der_of(&pki.paths(&pki::coordinator(1)).0);
            let issued = ca.is_some_and(|ca| nexus_protocol::identity::issued_by(&der, &ca))
                && certificates_der(&bundle).len() == 1;
            async move { issued.then_some(()) }
        },
    )
    .await;
    pki.issue(&pki::user("harness", Role::Admin));
    pki.issue(&pki::user("root", Role::Admin));
    let again = admin(
        &pki,
        &cluster,
        &["admin", "ca", "rotate", "--finish", "--force"],
    );
    assert_eq!(again.status.code(), Some(46), "NO_CA_ROTATION");
    assert!(status_of_leader(&pki, &cluster).await);
}

async fn status_of_leader(pki: &TestPki, cluster: &TestCluster) -> bool {
    status(pki, cluster.live_addresses()[0])
        .await
        .is_ok_and(|s| s.leader.is_some())
}
