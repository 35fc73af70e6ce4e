//! The `nexus` binary as users and scripts drive it: `nexus pki` (checked with `openssl verify`),
//! errors as JSON with stable exit codes, and `nexus up` / `down` bringing a one-host fleet up and
//! down on this machine.

use std::path::Path;
use std::process::{Command, Output};

use nexus_tests::process::{binary, free_port};
use serde_json::Value;

fn nexus(args: &[&str], home: &Path) -> Output {
    Command::new(binary("nexus"))
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("NEXUS_COORDINATORS")
        .env_remove("NEXUS_CONFIG")
        .output()
        .expect("nexus runs")
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pki_output_verifies_with_openssl_and_carries_the_identity() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("pki");
    let dir = dir.to_str().unwrap();
    let init = nexus(&["pki", "init", "--dir", dir, "-o", "json"], home.path());
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(
        json(&init.stdout)["ca"]
            .as_str()
            .unwrap()
            .ends_with("ca.pem")
    );

    let cases: [(&[&str], &str, &str); 3] = [
        (
            &[
                "coordinator",
                "--node-id",
                "3",
                "--ip",
                "10.1.2.3",
                "--dns",
                "coord3.example",
            ],
            "coordinator-3",
            "URI:nexus://coordinator/3",
        ),
        (
            &["agent", "--host-id", "dev-01"],
            "agent-dev-01",
            "URI:nexus://agent/dev-01",
        ),
        (
            &["user", "--name", "alice", "--role", "admin"],
            "user-alice",
            "URI:nexus://user/alice?role=admin",
        ),
    ];
    for (args, stem, uri) in cases {
        let mut full = vec!["pki", "issue"];
        full.extend_from_slice(args);
        full.extend(["--dir", dir]);
        let out = nexus(&full, home.path());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = format!("{dir}/{stem}.pem");
        let verified = openssl(&["verify", "-CAfile", &format!("{dir}/ca.pem"), &cert]);
        assert!(verified.contains(": OK"), "{verified}");
        let sans = openssl(&["x509", "-in", &cert, "-noout", "-ext", "subjectAltName"]);
        assert!(sans.contains(uri), "{stem}: {sans}");
        let usage = openssl(&["x509", "-in", &cert, "-noout", "-ext", "extendedKeyUsage"]);
        assert!(
            usage.contains("TLS Web Server Authentication")
                && usage.contains("TLS Web Client Authentication"),
            "{usage}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(format!("{dir}/{stem}.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{stem}.key");
        }
    }
    let sans = openssl(&[
        "x509",
        "-in",
        &format!("{dir}/coordinator-3.pem"),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(
        sans.contains("IP Address:10.1.2.3") && sans.contains("DNS:coord3.example"),
        "{sans}"
    );
    let ca = openssl(&[
        "x509",
        "-in",
        &format!("{dir}/ca.pem"),
        "-noout",
        "-ext",
        "basicConstraints",
    ]);
    assert!(ca.contains("CA:TRUE"), "{ca}");

    // An existing key is never replaced without --force; the error is a stable code.
    let again = nexus(
        &[
            "pki",
            "issue",
            "agent",
            "--host-id",
            "dev-01",
            "--dir",
            dir,
            "-o",
            "json",
        ],
        home.path(),
    );
    assert_eq!(
        again.status.code(),
        Some(26),
        "INVALID_ARGUMENT's exit code"
    );
    let error = json(&again.stderr);
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT");
    assert!(
        error["error"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("--force")
    );
    let forced = nexus(
        &[
            "pki",
            "issue",
            "agent",
            "--host-id",
            "dev-01",
            "--dir",
            dir,
            "--force",
        ],
        home.path(),
    );
    assert!(forced.status.success());
    let reinit = nexus(&["pki", "init", "--dir", dir], home.path());
    assert_eq!(reinit.status.code(), Some(26));
}

#[test]
fn errors_have_stable_codes_for_scripts() {
    let home = tempfile::tempdir().unwrap();
    // Nothing configured: told what to configure.
    let out = nexus(&["ping", "-o", "json"], home.path());
    assert_eq!(out.status.code(), Some(26));
    let error = json(&out.stderr);
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("coordinator")
    );
    assert!(out.stdout.is_empty(), "errors go to stderr only");
    // A usage error is clap's exit code 2.
    assert_eq!(
        nexus(&["workspace-nope"], home.path()).status.code(),
        Some(2)
    );
    assert_eq!(
        nexus(
            &[
                "pki", "issue", "user", "--name", "Bad Name", "--role", "admin", "--dir", "x"
            ],
            home.path()
        )
        .status
        .code(),
        Some(2)
    );
    // Limits that could fail a disk without a warning first are refused before any request.
    let out = nexus(
        &[
            "admin",
            "health-check",
            "--disk-warn-below",
            "10",
            "--disk-fail-below",
            "20%",
            "-o",
            "json",
        ],
        home.path(),
    );
    assert_eq!(out.status.code(), Some(26));
    let error = json(&out.stderr);
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--disk-fail-below 20 is above --disk-warn-below 10"),
        "{error}"
    );
    let out = nexus(
        &["admin", "health-check", "--disk-fail-below", "101"],
        home.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn up_brings_a_fleet_up_that_the_cli_can_use_and_down_stops_it() {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state");
    let state = state.to_str().unwrap();
    let port = free_port().to_string();
    let up = nexus(
        &[
            "up",
            "--detach",
            "--state-dir",
            state,
            "--port",
            &port,
            "-o",
            "json",
        ],
        home.path(),
    );
    assert!(
        up.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let summary = json(&up.stdout);
    assert_eq!(summary["coordinator"], format!("127.0.0.1:{port}"));
    // Both daemons serve their metrics where `up` says, 80 and 81 ports above.
    let base: u16 = port.parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (offset, role) in [(80, "coordinator"), (81, "agent")] {
        let address: std::net::SocketAddr = ([127, 0, 0, 1], base + offset).into();
        assert!(
            summary["metrics"]
                .as_array()
                .unwrap()
                .contains(&format!("http://{address}/metrics").into()),
            "{summary}"
        );
        let (status, text) = runtime.block_on(nexus_tests::http::get(address, "/metrics"));
        assert_eq!(status, 200);
        assert!(
            text.contains(&format!("role=\"{role}\"")),
            "{role}'s metrics: {text}"
        );
    }
    let config = home.path().join(".config/nexus/config.toml");
    assert_eq!(summary["config"], config.to_str().unwrap());

    // The CLI works right away with what `up` configured.
    let ping = nexus(&["ping", "-o", "json"], home.path());
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert_eq!(json(&ping.stdout)["server"], "nexus://coordinator/1");
    // A coordinator that never answers, first in the list, is passed over for the next.
    let silent = format!("127.0.0.1:{}", free_port());
    let live = format!("127.0.0.1:{port}");
    let ping = nexus(
        &[
            "ping",
            "--coordinator",
            &silent,
            "--coordinator",
            &live,
            "-o",
            "json",
        ],
        home.path(),
    );
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert_eq!(json(&ping.stdout)["server"], "nexus://coordinator/1");
    let hosts = nexus(&["admin", "hosts", "-o", "json"], home.path());
    assert!(
        hosts.status.success(),
        "{}",
        String::from_utf8_lossy(&hosts.stderr)
    );
    let hosts = json(&hosts.stdout);
    assert_eq!(hosts.as_array().unwrap().len(), 1);
    assert_eq!(hosts[0]["host_id"], summary["host_id"]);
    assert_eq!(hosts[0]["status"], "ready");
    let table = nexus(&["admin", "hosts"], home.path());
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("HOST"));

    // Idempotent while up.
    let again = nexus(
        &[
            "up",
            "--detach",
            "--state-dir",
            state,
            "--port",
            &port,
            "-o",
            "json",
        ],
        home.path(),
    );
    assert_eq!(json(&again.stdout)["already_up"], true);

    // A config file the user wrote is never overwritten.
    std::fs::write(&config, "coordinators = [\"10.9.9.9:7400\"]\n").unwrap();
    let down = nexus(&["down", "--state-dir", state, "-o", "json"], home.path());
    assert!(down.status.success());
    assert_eq!(json(&down.stdout)["processes"], 2);
    let up = nexus(
        &["up", "--detach", "--state-dir", state, "--port", &port],
        home.path(),
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(String::from_utf8_lossy(&up.stdout).contains("kept your own"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "coordinators = [\"10.9.9.9:7400\"]\n"
    );
    assert!(
        nexus(&["down", "--state-dir", state], home.path())
            .status
            .success()
    );
    // The agent stopped cleanly, and the networks it made ahead of workspaces went with it.
    if summary["runtime"] == "docker" {
        let filter = format!("label=nexus.ready={}", summary["host_id"].as_str().unwrap());
        let left = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &filter])
            .output()
            .unwrap();
        assert!(left.status.success());
        assert_eq!(
            String::from_utf8_lossy(&left.stdout).trim(),
            "",
            "ready networks left"
        );
    }

    // Down: the coordinator no longer answers (a network error, with its exit code).
    let ping = nexus(
        &[
            "ping",
            "--config",
            &format!("{state}/cli.toml"),
            "-o",
            "json",
        ],
        home.path(),
    );
    assert_eq!(
        ping.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert_eq!(json(&ping.stderr)["error"]["code"], "NETWORK_ERROR");
    let nothing = nexus(&["down", "--state-dir", state, "-o", "json"], home.path());
    assert_eq!(json(&nothing.stdout)["stopped"], false);
}
