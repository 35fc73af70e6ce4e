//! The command tree of the contract exists (the end-to-end suites in `tests/` drive it further).

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_commands_of_the_contract_exist() {
    let top = help(&[]);
    for command in [
        "up",
        "pki",
        "admin",
        "--coordinator",
        "--ca",
        "--cert",
        "--key",
        "--output",
    ] {
        assert!(top.contains(command), "{command} missing");
    }
    for kind in ["coordinator", "agent", "user"] {
        assert!(help(&["pki", "issue"]).contains(kind));
    }
    assert!(help(&["pki", "issue", "coordinator"]).contains("--ip"));
}

#[test]
fn the_workspace_and_admin_commands_of_the_contract_exist() {
    let workspace = help(&["workspace"]);
    for command in [
        "create", "list", "inspect", "start", "stop", "restart", "destroy", "switch", "repair",
        "cleanup", "logs", "exec",
    ] {
        assert!(workspace.contains(command), "workspace {command} missing");
    }
    let admin = help(&["admin"]);
    for command in [
        "status",
        "stats",
        "health-check",
        "hosts",
        "ports",
        "top",
        "host",
        "limits",
        "cluster",
        "workspace",
    ] {
        assert!(admin.contains(command), "admin {command} missing");
    }
    let set = help(&["admin", "limits", "set"]);
    for flag in [
        "--max-workspaces-per-host",
        "--max-ports-per-workspace",
        "--max-concurrent-ops",
        "--host",
    ] {
        assert!(set.contains(flag), "limits set {flag} missing");
    }
    assert!(help(&["workspace", "start"]).contains("--no-wait"));
    assert!(help(&["admin", "top"]).contains("--sort"));
}

#[test]
fn the_restore_and_orphans_commands_exist() {
    let restore = help(&["admin", "backup", "restore"]);
    for flag in ["--file", "--yes", "--force", "latest"] {
        assert!(restore.contains(flag), "{flag} missing");
    }
    let orphans = help(&["admin", "workspace", "orphans"]);
    for flag in ["--host", "--remove"] {
        assert!(orphans.contains(flag), "{flag} missing");
    }
}

#[test]
fn a_restore_is_refused_without_a_terminal_or_yes_and_a_damaged_file_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.nxbackup");
    let nexus = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nexus"))
            // Nothing listens here: a refusal that contacted it would be a network error.
            .args(["--coordinator", "127.0.0.1:9", "-o", "json"])
            // Settings complete without a config file in HOME (never read: nothing is sent).
            .args([
                "--ca",
                "/nonexistent",
                "--cert",
                "/nonexistent",
                "--key",
                "/nonexistent",
            ])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let good = nexus_protocol::backup::encode(
        &nexus_protocol::backup::BackupHeader {
            id: "b1".into(),
            cluster: "ab".repeat(32),
            node: nexus_protocol::NodeId::new(1).unwrap(),
            index: 1,
            term: 1,
            created_at: nexus_protocol::clock::Timestamp(0),
            software: "test".into(),
            state_format: 4,
            counts: vec![],
        },
        b"state",
    )
    .unwrap();
    std::fs::write(&file, &good[..good.len() - 1]).unwrap();
    let out = nexus(&[
        "admin",
        "backup",
        "restore",
        "--file",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BACKUP_CORRUPT"), "{stderr}");
    std::fs::write(&file, &good).unwrap();
    let out = nexus(&[
        "admin",
        "backup",
        "restore",
        "--file",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(stderr.contains("INVALID_ARGUMENT"), "{stderr}");
}

#[test]
fn the_request_id_and_trace_commands_exist() {
    let top = help(&[]);
    assert!(top.contains("--request-id"));
    assert!(top.contains("NEXUS_REQUEST_ID"));
    assert!(top.contains("--verbose"));
    assert!(help(&["admin"]).contains("trace"));
    assert!(help(&["admin", "trace"]).contains("REQUEST_ID"));
    assert!(help(&["admin", "workspace"]).contains("exec"));
    assert!(help(&["admin", "workspace", "exec"]).contains("--debug"));
}

#[test]
fn shell_completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_nexus"))
            .args(["completions", shell])
            .env("NEXUS_CONFIG", "/nonexistent/nexus.toml")
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("workspace") && script.contains("cleanup"),
            "{shell}"
        );
    }
}

#[test]
fn a_bad_limit_is_refused_before_anything_is_sent() {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args([
            "--coordinator",
            "127.0.0.1:1",
            "--ca",
            "/nonexistent",
            "--cert",
            "/nonexistent",
            "--key",
            "/nonexistent",
            "-o",
            "json",
            "admin",
            "limits",
            "set",
        ])
        .env("NEXUS_CONFIG", "/nonexistent/nexus.toml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to set")
    );
}

#[test]
fn the_fleet_security_commands_exist_and_take_no_secret_as_a_flag() {
    let admin = help(&["admin"]);
    for command in ["token", "certs", "user"] {
        assert!(admin.contains(command), "admin {command} missing");
    }
    for command in ["create", "list", "revoke"] {
        assert!(
            help(&["admin", "token"]).contains(command),
            "token {command}"
        );
    }
    assert!(help(&["admin", "host"]).contains("remove"));
    assert!(help(&["admin", "host", "remove"]).contains("--force"));
    assert!(help(&["admin", "user"]).contains("revoke"));
    let login = help(&["login"]);
    assert!(login.contains("--token-file") && login.contains("NEXUS_TOKEN"));
    assert!(!login.contains("--token "));
}

#[test]
fn a_wrong_token_spec_is_refused_before_anything_is_needed_or_sent() {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args([
            "admin", "token", "create", "--role", "agent", "--name", "bob", "-o", "json",
        ])
        .env("NEXUS_CONFIG", "/nonexistent/nexus.toml")
        .env_remove("NEXUS_COORDINATORS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INVALID_ARGUMENT"), "{stderr}");
    assert!(
        stderr.contains("--name is for user and admin tokens"),
        "{stderr}"
    );
}
