//! Architecture invariants that a test can hold (docs/architecture.md lists them all):
//! - dependency direction: `protocol` and `sync` depend on no Nexus crate; `coordinator` on
//!   `protocol`; `agent` and `cli` on `protocol` and `sync`, never on each other; `fixtures` on
//!   `protocol`, and only as a dev-dependency of the others;
//! - one home per external dependency: outside its home, no non-test code names it;
//! - no module imports another that imports it back.

use std::path::{Path, PathBuf};

/// Every crate of the workspace, by folder.
const CRATES: [&str; 9] = [
    "protocol",
    "telemetry",
    "coordinator",
    "agent",
    "cli",
    "sync",
    "fixtures",
    "tests",
    "packaging",
];

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
fn every_workspace_crate_is_checked() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&manifest).unwrap();
    let members: Vec<&str> = manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member.as_str().unwrap())
        .collect();
    let mut members = members;
    members.sort_unstable();
    let mut checked = CRATES.to_vec();
    checked.sort_unstable();
    assert_eq!(members, checked, "CRATES must list every workspace member");
}

#[test]
fn dependencies_point_one_way() {
    assert_eq!(nexus_dependencies("protocol"), Vec::<String>::new());
    // The sync engine is a pure core: it depends on none of ours.
    assert_eq!(nexus_dependencies("sync"), Vec::<String>::new());
    // What the daemons show an operator over HTTP: none of ours, so any daemon (or tool) can.
    assert_eq!(nexus_dependencies("telemetry"), Vec::<String>::new());
    assert_eq!(
        nexus_dependencies("coordinator"),
        ["nexus-protocol", "nexus-telemetry"]
    );
    // Test data, only ever a dev-dependency of the daemons and the CLI (checked by the exact
    // lists here, which hold normal dependencies only).
    assert_eq!(nexus_dependencies("fixtures"), ["nexus-protocol"]);
    // The agent serves sync sessions and the CLI drives them, both with the engine.
    assert_eq!(
        nexus_dependencies("agent"),
        ["nexus-protocol", "nexus-sync", "nexus-telemetry"]
    );
    assert_eq!(nexus_dependencies("cli"), ["nexus-protocol", "nexus-sync"]);
    // The packages' man pages and completions, from the three programs' command lines.
    assert_eq!(
        nexus_dependencies("packaging"),
        ["nexus-agent", "nexus-cli", "nexus-coordinator"]
    );
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
    let homes: [(&str, &[&str]); 24] = [
        ("quinn::", &["protocol/src/transport/"]),
        ("quinn_proto::", &["protocol/src/transport/"]),
        ("rustls::", &["protocol/src/transport/"]),
        ("rcgen::", &["protocol/src/pki.rs"]),
        ("bincode::", &["protocol/src/codec.rs"]),
        ("x509_parser::", &["protocol/src/identity.rs"]),
        (
            "raft::",
            &[
                "coordinator/src/consensus",
                "coordinator/src/store.rs",
                "coordinator/src/store/",
            ],
        ),
        (
            "protobuf::",
            &["coordinator/src/consensus", "coordinator/src/store.rs"],
        ),
        ("rocksdb::", &["coordinator/src/store.rs"]),
        ("bollard::", &["agent/src/runtime/docker/"]),
        ("sysinfo::", &["agent/src/stats.rs"]),
        ("ignore::", &["sync/src/filter.rs"]),
        ("notify::", &["sync/src/watch.rs"]),
        ("prometheus_client::", &["telemetry/src/metrics"]),
        ("axum::", &["telemetry/src/http"]),
        ("flate2::", &["cli/src/bundle/archive.rs"]),
        ("tar::", &["cli/src/bundle/archive.rs"]),
        ("indicatif::", &["cli/src/progress.rs"]),
        ("regex::", &["protocol/src/logging/read.rs"]),
        ("clap_mangen::", &["packaging/src/main.rs"]),
        ("socket2::", &["protocol/src/transport/socket.rs"]),
        ("imbl::", &["coordinator/src/state.rs"]),
        ("compact_str::", &["protocol/src/id.rs"]),
        ("thread_priority::", &["coordinator/src/background.rs"]),
    ];
    let mut files = vec![];
    for krate in CRATES {
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

/// A module's path inside its crate: `coordinator/src/service/admin.rs` is `["service",
/// "admin"]`; `lib.rs`, `main.rs` and a binary's `main.rs` are the crate root, `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    // A binary with modules of its own (`src/bin/NAME/main.rs`) is a crate of its own.
    if parts.first().is_some_and(|first| first == "bin") {
        parts.drain(..2.min(parts.len()));
    }
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_string());
    }
    parts
}

/// Code without its line comments, so prose that names a path is not a reference.
fn without_comments(code: &str) -> String {
    code.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path that `code` (in module `at`) names with `crate::` or `super::`, including
/// each branch of a grouped import (`use crate::{a::X, b::Y}` names `a` and `b`).
fn referenced_paths(at: &[String], code: &str) -> Vec<Vec<String>> {
    let code = without_comments(code);
    let bytes = code.as_bytes();
    let mut found = vec![];
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let base = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            Some((vec![], "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut base = at.to_vec();
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                base.pop();
                len += "super::".len();
            }
            Some((base, len))
        } else {
            None
        };
        match base {
            Some((base, len)) => {
                let (paths, used) = use_tree(&code[i + len..]);
                for path in paths {
                    let mut full = base.clone();
                    full.extend(path);
                    found.push(full);
                }
                i += len + used.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

/// Parses a path or a grouped use tree at the start of `text`; returns every path it names (as
/// segments) and how many bytes it read.
fn use_tree(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut segments = vec![];
    let mut at = 0;
    loop {
        let rest = &text[at..];
        if let Some(inner) = rest.strip_prefix('{') {
            // A group: each branch continues the path so far.
            let mut paths = vec![];
            let mut used = 1;
            let mut inner = inner;
            loop {
                let trimmed = inner.trim_start();
                used += inner.len() - trimmed.len();
                if let Some(after) = trimmed.strip_prefix('}') {
                    let _ = after;
                    used += 1;
                    break;
                }
                let (branches, read) = use_tree(trimmed);
                for branch in branches {
                    let mut full = segments.clone();
                    full.extend(branch);
                    paths.push(full);
                }
                used += read;
                inner = &trimmed[read..];
                let trimmed = inner.trim_start();
                used += inner.len() - trimmed.len();
                inner = trimmed;
                if let Some(after) = inner.strip_prefix(',') {
                    used += 1;
                    inner = after;
                } else if !inner.starts_with('}') {
                    break; // Not a use tree after all.
                }
            }
            return (paths, at + used);
        }
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            return (vec![segments], at);
        }
        segments.push(ident.clone());
        at += ident.len();
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            return (vec![segments], at);
        }
    }
}

/// The edges between sibling modules: `(parent, from, to)` where code in `parent::from` (or
/// below it) names `parent::to` (or something below it).
fn sibling_edges(
    modules: &[(Vec<String>, String)],
) -> std::collections::BTreeSet<(Vec<String>, String, String)> {
    let known: std::collections::BTreeSet<&Vec<String>> =
        modules.iter().map(|(path, _)| path).collect();
    let mut edges = std::collections::BTreeSet::new();
    for (at, code) in modules {
        for mut target in referenced_paths(at, code) {
            // The module part of the path: its longest prefix that is a module.
            while !target.is_empty() && !known.contains(&target) {
                target.pop();
            }
            let common = at.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < at.len() && common < target.len() {
                edges.insert((
                    at[..common].to_vec(),
                    at[common].clone(),
                    target[common].clone(),
                ));
            }
        }
    }
    edges
}

/// The cycles among siblings, each as `parent: a -> b -> a`.
fn module_cycles(modules: &[(Vec<String>, String)]) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (parent, from, to) in sibling_edges(modules) {
        graphs
            .entry(parent)
            .or_default()
            .entry(from)
            .or_default()
            .insert(to);
    }
    let mut cycles = vec![];
    for (parent, graph) in &graphs {
        // A depth-first search from every node, reporting each cycle by its smallest member.
        for start in graph.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            while let Some((node, path)) = stack.pop() {
                for next in graph.get(&node).into_iter().flatten() {
                    if next == start {
                        if path.iter().all(|member| member >= start) {
                            let mut shown = path.clone();
                            shown.push(start.clone());
                            let parent = if parent.is_empty() {
                                "crate".to_string()
                            } else {
                                parent.join("::")
                            };
                            cycles.push(format!("{parent}: {}", shown.join(" -> ")));
                        }
                    } else if !path.contains(next) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }
    cycles
}

#[test]
fn module_check_sees_cycles_through_groups_and_super() {
    let modules = |files: &[(&[&str], &str)]| -> Vec<(Vec<String>, String)> {
        files
            .iter()
            .map(|(path, code)| {
                (
                    path.iter().map(|s| s.to_string()).collect(),
                    code.to_string(),
                )
            })
            .collect()
    };
    let cyclic = modules(&[
        (&[], "pub mod a; pub mod b;"),
        (&["a"], "use crate::{b::Thing, a::Other};"),
        (&["b"], "fn f() { super::a::go(); }"),
    ]);
    assert_eq!(module_cycles(&cyclic), ["crate: a -> b -> a"]);
    let nested = modules(&[
        (&["s"], "mod x; mod y;"),
        (&["s", "x"], "use super::y::Y;"),
        (&["s", "y"], "use crate::s::{x::X};"),
    ]);
    assert_eq!(module_cycles(&nested), ["s: x -> y -> x"]);
    let acyclic = modules(&[
        (&["a"], "use crate::b::Thing; // crate::a::is_prose"),
        (&["b"], "use crate::c::{self, Other};"),
        (&["c"], "use super::super::x;"),
    ]);
    assert_eq!(module_cycles(&acyclic), Vec::<String>::new());
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let mut cycles = vec![];
    for krate in CRATES {
        let src = root().join(krate).join("src");
        let mut files = vec![];
        rust_files(&src, &mut files);
        // Binaries of one file are crates of their own with no modules; a binary folder is one
        // crate, checked apart from the library.
        let mut crates: std::collections::BTreeMap<String, Vec<(Vec<String>, String)>> =
            Default::default();
        for file in &files {
            let relative = file.strip_prefix(&src).unwrap();
            let unit = match relative.iter().next().map(|p| p.to_string_lossy()) {
                Some(first) if first == "bin" => relative
                    .iter()
                    .nth(1)
                    .map(|p| format!("bin/{}", p.to_string_lossy()))
                    .unwrap_or_default(),
                _ => "lib".to_string(),
            };
            crates
                .entry(unit)
                .or_default()
                .push((module_path(&src, file), non_test_code(file)));
        }
        for (unit, modules) in crates {
            for cycle in module_cycles(&modules) {
                cycles.push(format!("{krate} ({unit}) {cycle}"));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that import each other:\n{}",
        cycles.join("\n")
    );
}
