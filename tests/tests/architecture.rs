//! Architecture invariants that a test can hold (docs/architecture.md lists them all):
//! - dependency direction: `protocol` depends on no Nexus crate; `coordinator`, `agent` and `cli`
//!   depend on `protocol` only, never on each other;
//! - one home per external dependency: outside its home, no non-test code names it.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Nexus crates a crate's manifest depends on (normal dependencies only).
fn nexus_dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&manifest).unwrap();
    let Some(dependencies) = manifest.get("dependencies").and_then(|d| d.as_table()) else {
        return vec![];
    };
    dependencies
        .keys()
        .filter(|name| name.starts_with("nexus-"))
        .cloned()
        .collect()
}

#[test]
fn dependencies_point_one_way() {
    assert_eq!(nexus_dependencies("protocol"), Vec::<String>::new());
    // The sync engine is a pure core: it depends on none of ours, and none of ours on it yet.
    assert_eq!(nexus_dependencies("sync"), Vec::<String>::new());
    assert_eq!(nexus_dependencies("coordinator"), ["nexus-protocol"]);
    // Test data, only ever a dev-dependency of the daemons and the CLI (checked by the exact
    // lists here, which hold normal dependencies only).
    assert_eq!(nexus_dependencies("fixtures"), ["nexus-protocol"]);
    // The agent serves sync sessions and the CLI drives them, both with the engine.
    for krate in ["agent", "cli"] {
        assert_eq!(
            nexus_dependencies(krate),
            ["nexus-protocol", "nexus-sync"],
            "{krate}"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file before its `#[cfg(test)]` module (tests may use anything).
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[test]
fn each_external_dependency_has_one_home() {
    // (what code names, where it may)
    let homes: [(&str, &[&str]); 12] = [
        ("quinn::", &["protocol/src/transport/"]),
        ("rustls::", &["protocol/src/transport/"]),
        ("rcgen::", &["protocol/src/pki.rs"]),
        ("bincode::", &["protocol/src/codec.rs"]),
        ("x509_parser::", &["protocol/src/identity.rs"]),
        (
            "raft::",
            &["coordinator/src/consensus.rs", "coordinator/src/store.rs"],
        ),
        (
            "protobuf::",
            &["coordinator/src/consensus.rs", "coordinator/src/store.rs"],
        ),
        ("rocksdb::", &["coordinator/src/store.rs"]),
        ("bollard::", &["agent/src/runtime/docker/"]),
        ("sysinfo::", &["agent/src/stats.rs"]),
        ("ignore::", &["sync/src/filter.rs"]),
        ("notify::", &["sync/src/watch.rs"]),
    ];
    let mut files = vec![];
    for krate in [
        "protocol",
        "coordinator",
        "agent",
        "cli",
        "sync",
        "fixtures",
        "tests",
    ] {
        rust_files(&root().join(krate).join("src"), &mut files);
    }
    let mut violations = vec![];
    for file in &files {
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let code = non_test_code(file);
        for (name, allowed) in &homes {
            if code.contains(name) && !allowed.iter().any(|home| relative.starts_with(home)) {
                violations.push(format!("{relative} names {name}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies outside their home:\n{}",
        violations.join("\n")
    );
}

#[test]
fn docs_list_every_error_code_with_its_exit_code() {
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    for code in nexus_protocol::ErrorCode::ALL {
        let row = format!(
            "| `{}` | {} | {} |",
            code.as_str(),
            code.exit_code(),
            code.message()
        );
        assert!(
            doc.contains(&row),
            "docs/protocol.md lacks or misstates {code}: expected a row starting {row}"
        );
    }
}
