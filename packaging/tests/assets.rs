//! `nexus-packaging assets DIR`, run as the build script runs it: a page for every program and
//! subcommand, each in its program's directory, with the flags the command lines define, and
//! the CLI's completions. (Being an integration test, it also has cargo build the program for
//! the package tests.)

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn every_program_and_subcommand_gets_a_page_and_the_cli_its_completions() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_nexus-packaging"))
        .arg("assets")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let man = dir.path().join("man");
    for page in [
        "nexus/nexus.1",
        "nexus-coordinator/nexus-coordinator.1",
        "nexus-coordinator/nexus-coordinator-restore.1",
        "nexus-agent/nexus-agent.1",
        "nexus/nexus-workspace-create.1",
        "nexus/nexus-admin-token-create.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.starts_with(".ie"), "{page}: {text}");
    }
    // The flags are the command line's own.
    let agent = std::fs::read_to_string(man.join("nexus-agent/nexus-agent.1")).unwrap();
    assert!(agent.contains("join\\-token\\-file"), "{agent}");
    let bash = std::fs::read_to_string(dir.path().join("completions/nexus.bash")).unwrap();
    assert!(bash.contains("workspace"));
    for shell in ["_nexus", "nexus.fish"] {
        assert!(dir.path().join("completions").join(shell).is_file());
    }
    // Without a directory: the usage, and a failure.
    let bare = Command::new(env!("CARGO_BIN_EXE_nexus-packaging"))
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("usage"));
}
