//! A small run of every `nexus-bench` scenario, so the bench cannot rot. The numbers come from
//! full runs (docs/benchmarks.md), not from here.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn the_transport_scenario_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("transport.json");
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-bench"))
        .args([
            "--json",
            json.to_str().unwrap(),
            "transport",
            "--connections",
            "3",
            "--requests",
            "20",
            "--concurrency",
            "4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("requests/s"));
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(result["connection_setup"]["n"], 3);
    assert_eq!(result["sequential_round_trip"]["n"], 20);
    assert_eq!(result["concurrent"]["requests"], 20);
    assert!(result["sequential_round_trip"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(result["coordinator_rss_mib"].as_f64().unwrap() > 0.0);
}
