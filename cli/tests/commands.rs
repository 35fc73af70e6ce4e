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
