//! An agent's enrolment at start, against an in-test coordinator over real QUIC: a host without
//! a certificate gets one for the key it made (written 0600) and the token's labels; a
//! coordinator of another CA learns nothing and nothing is written; an agent whose certificate
//! expired while it was off enrols afresh with a token, and without one refuses to start saying
//! what is wrong and which flag fixes it.

use crate::security;

use std::sync::Arc;
use std::time::Duration;

use crate::security::{Cluster, Coordinator, agent_config, expired, host, token_file};
use nexus_agent::enrol;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_agent::standing::{self, Standing};
use nexus_protocol::pki::PkiDir;
use nexus_protocol::transport::Credentials;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_host_without_a_certificate_enrols_with_its_token() {
    let cluster = Cluster::new();
    let coordinator = Coordinator::start(&cluster, HOUR);
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), &cluster.token());
    let config = agent_config(
        dir.path(),
        "new-host",
        coordinator.address,
        &[
            "--join-token-file",
            token.to_str().unwrap(),
            "--label",
            "zone=mine",
        ],
    );
    assert_eq!(config.tls_dir, dir.path().join("data/pki"));
    enrol::ensure(&config, Some("box")).await.unwrap();

    let identity = host("new-host");
    let pki = PkiDir::new(&config.tls_dir);
    let credentials = Credentials::from_pki_dir(&config.tls_dir, &identity).unwrap();
    assert_eq!(credentials.identity(), Some(&identity));
    assert_eq!(credentials.ca_fingerprint(), cluster.fingerprint());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.key(&identity))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let seen = coordinator.behaviour.enrolments.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].token_id, cluster.token().id);
    assert_eq!(seen[0].host_id.as_ref().unwrap().as_str(), "new-host");
    // Where it listens (one address), then loopback.
    assert_eq!(seen[0].names, ["127.0.0.1", "::1", "localhost"]);
    // The token's labels stay with the host; its own flags win.
    let labels = enrol::with_token_labels(enrol::token_labels(&config.data_dir), &config.labels);
    assert_eq!(labels.get("zone").map(String::as_str), Some("mine"));
    let kept = enrol::token_labels(&config.data_dir);
    assert_eq!(kept.get("zone").map(String::as_str), Some("eu-1"));

    // Started again with the token still given: the certificate is used, the token is not.
    enrol::ensure(&config, Some("box")).await.unwrap();
    assert_eq!(coordinator.behaviour.enrolments.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_coordinator_of_another_ca_learns_nothing_and_nothing_is_written() {
    let cluster = Cluster::new();
    let impostor = Cluster::new();
    let coordinator = Coordinator::start(&impostor, HOUR);
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), &cluster.token());
    let config = agent_config(
        dir.path(),
        "h1",
        coordinator.address,
        &["--join-token-file", token.to_str().unwrap()],
    );
    let error = enrol::ensure(&config, None).await.unwrap_err().to_string();
    assert!(
        error.contains("CA_MISMATCH")
            && error.contains("no coordinator is of the join token's cluster"),
        "{error}"
    );
    assert!(coordinator.behaviour.enrolments.lock().unwrap().is_empty());
    assert!(!config.tls_dir.exists(), "nothing is written");
}

#[tokio::test]
async fn a_refused_token_is_final_and_a_mistyped_one_is_not_echoed() {
    let cluster = Cluster::new();
    let coordinator = Coordinator::start(&cluster, HOUR);
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = cluster.token();
    wrong.secret = nexus_protocol::credentials::Secret::new("6".repeat(64));
    let token = token_file(dir.path(), &wrong);
    let config = agent_config(
        dir.path(),
        "h1",
        coordinator.address,
        &["--join-token-file", token.to_str().unwrap()],
    );
    let error = enrol::ensure(&config, None).await.unwrap_err().to_string();
    assert!(error.contains("TOKEN_INVALID"), "{error}");
    assert!(!config.tls_dir.join("agent-h1.pem").exists());

    std::fs::write(&token, "NXJT1-not-a-token-6666666666666666666\n").unwrap();
    let error = enrol::ensure(&config, None).await.unwrap_err().to_string();
    assert!(
        error.contains("TOKEN_INVALID") && error.contains("not a Nexus join token"),
        "{error}"
    );
    assert!(!error.contains("6666666666"), "{error}");
    assert_eq!(coordinator.behaviour.enrolments.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_expired_certificate_is_replaced_with_a_token_and_refused_without_one() {
    let cluster = Cluster::new();
    let coordinator = Coordinator::start(&cluster, HOUR);
    let dir = tempfile::tempdir().unwrap();
    let identity = host("h1");
    let without = agent_config(dir.path(), "h1", coordinator.address, &[]);
    cluster.issue_into(&without.tls_dir, &identity, expired());
    assert!(matches!(
        standing::inspect(&without.tls_dir, &identity, i64::MAX / 2),
        Standing::Expired { .. }
    ));

    // Without a token the agent does not start, and says what to do.
    let runtime = Arc::new(HollowRuntime::new(
        without.host_id.clone(),
        HollowConfig::default(),
    ));
    let error = nexus_agent::run_with(without.clone(), runtime, std::future::pending())
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    for part in ["expired at", "--join-token-file PATH", "NEXUS_JOIN_TOKEN"] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(coordinator.behaviour.enrolments.lock().unwrap().is_empty());

    // With one it enrols afresh, and the new certificate is valid.
    let token = token_file(dir.path(), &cluster.token());
    let with = agent_config(
        dir.path(),
        "h1",
        coordinator.address,
        &["--join-token-file", token.to_str().unwrap()],
    );
    enrol::ensure(&with, None).await.unwrap();
    assert_eq!(coordinator.behaviour.enrolments.lock().unwrap().len(), 1);
    let now = i64::try_from(nexus_protocol::clock::now().0 / 1000).unwrap();
    assert!(matches!(
        standing::inspect(&with.tls_dir, &identity, now),
        Standing::Valid { .. }
    ));
}

#[tokio::test]
async fn a_host_without_a_certificate_or_a_token_is_told_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "h1", "127.0.0.1:9".parse().unwrap(), &[]);
    let error = enrol::ensure(&config, None).await.unwrap_err().to_string();
    for part in [
        "agent-h1.pem",
        "agent-h1.key",
        "missing",
        "--join-token-file",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
}

#[tokio::test]
async fn an_advertised_name_the_certificate_lacks_refuses_the_start() {
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(
        dir.path(),
        "h1",
        "127.0.0.1:9".parse().unwrap(),
        &["--advertise", "dev-01.example:7401", "--http-listen", "off"],
    );
    cluster.issue_into(&config.tls_dir, &host("h1"), security::lasting(HOUR));
    let runtime = Arc::new(HollowRuntime::new(
        config.host_id.clone(),
        HollowConfig::default(),
    ));
    let error = nexus_agent::run_with(config, runtime, std::future::pending())
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    for part in [
        "CERTIFICATE_MISMATCH",
        "dev-01.example (--advertise)",
        "127.0.0.1, localhost",
        "--advertise HOST:PORT",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

#[test]
fn the_configuration_check_passes_an_agent_that_will_enrol() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = [
        "nexus-agent",
        "--host-id",
        "h1",
        "--coordinator",
        "127.0.0.1:9",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let problems = |extra: &[&str]| {
        let args = nexus_agent::config::Args::try_parse_from(base.iter().chain(extra)).unwrap();
        nexus_agent::config::check::problems(args)
    };
    let without = problems(&[]);
    assert!(
        without
            .iter()
            .any(|p| p.contains("--tls-dir") && p.contains("--join-token-file")),
        "{without:?}"
    );
    let token = dir.path().join("token");
    std::fs::write(&token, "x").unwrap();
    let with = problems(&["--join-token-file", token.to_str().unwrap()]);
    assert!(with.iter().all(|p| !p.contains("--tls-dir")), "{with:?}");
}
