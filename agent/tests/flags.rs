//! The binary's command line (the end-to-end suites in `tests/` drive it further).

use std::process::Command;

#[test]
fn help_names_every_flag_of_the_contract() {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--host-id",
        "--coordinator",
        "--tls-dir",
        "--data-dir",
        "--runtime",
        "--port-range",
        "--label",
        "--config",
        "--join-token-file",
        "NEXUS_JOIN_TOKEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn an_agent_without_a_certificate_or_a_token_says_which_flag_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-agent"))
        .args([
            "--host-id",
            "h1",
            "--coordinator",
            "127.0.0.1:9",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--http-listen", "off", "--runtime", "hollow"])
        .env_remove("NEXUS_JOIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent-h1.pem") && stderr.contains("--join-token-file"),
        "{stderr}"
    );
}

#[test]
fn a_mistyped_token_in_the_environment_is_refused_without_being_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-agent"))
        .args([
            "--host-id",
            "h1",
            "--coordinator",
            "127.0.0.1:9",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--http-listen", "off", "--runtime", "hollow"])
        .env("NEXUS_JOIN_TOKEN", "NXJT1-planted-secret-hunter2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TOKEN_INVALID") && stderr.contains("$NEXUS_JOIN_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
