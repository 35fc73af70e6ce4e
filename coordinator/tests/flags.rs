//! The binary's command line (the end-to-end suites in `tests/` drive it further).

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn help_names_every_flag_of_the_contract() {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-coordinator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--node-id",
        "--listen",
        "--peer",
        "--data-dir",
        "--tls-dir",
        "--config",
        "--cert-lifetime",
        "--user-cert-lifetime",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
