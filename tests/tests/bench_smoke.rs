//! A small run of every `nexus-bench` scenario, so the bench cannot rot. The numbers come from
//! full runs (docs/benchmarks.md), not from here.

use std::process::Command;

use serde_json::json;

#[test]
fn the_transport_scenario_runs_and_reports() {
    let result = run_bench(&[
        "transport",
        "--connections",
        "3",
        "--requests",
        "20",
        "--concurrency",
        "4",
    ]);
    assert_eq!(result["connection_setup"]["n"], 3);
    assert_eq!(result["sequential_round_trip"]["n"], 20);
    assert_eq!(result["concurrent"]["requests"], 20);
    assert!(result["sequential_round_trip"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(result["coordinator_rss_mib"].as_f64().unwrap() > 0.0);
}

/// `--keep-files` leaves the run's files where they were made and says where: the coordinator's
/// log among them. Without it they go (`run_bench`'s runs leave nothing behind).
#[test]
fn the_bench_keeps_a_runs_files_when_asked() {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-bench"))
        .args(["--keep-files", "transport", "--connections", "1"])
        .args(["--requests", "2", "--concurrency", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let kept = stderr
        .lines()
        .find_map(|line| line.strip_prefix("keeping this run's files in "))
        .unwrap_or_else(|| panic!("where the files were kept: {stderr}"));
    let kept = std::path::Path::new(kept);
    let log = kept.join("coordinator-1").join("coordinator.log");
    let found = log.is_file();
    std::fs::remove_dir_all(kept).unwrap();
    assert!(found, "{} kept", log.display());
}

fn run_bench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-bench"))
        .args(["--json", json.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    // What the bench said, shown with a test that fails on its result.
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

#[test]
fn the_raft_scenario_runs_and_reports() {
    let result = run_bench(&["raft", "--writes", "10", "--concurrency", "2"]);
    assert_eq!(result["sequential_write_at_leader"]["n"], 10);
    assert_eq!(result["sequential_write_at_follower"]["n"], 10);
    assert_eq!(result["concurrent"]["writes"], 10);
    assert!(result["concurrent"]["writes_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_failover_scenario_runs_and_reports() {
    let result = run_bench(&["failover", "--kills", "1", "--rate", "50", "--writers", "4"]);
    assert_eq!(result["kill_to_first_write"]["n"], 1);
    assert!(result["kill_to_first_write"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(result["stream"]["acknowledged"].as_u64().unwrap() > 50);
    assert_eq!(result["acknowledged_missing_at_leader"], 0);
    assert_eq!(result["acknowledged_missing_on_members"], json!([0, 0, 0]));
}

#[test]
fn the_failover_scenario_runs_beside_etcd_and_reports_both() {
    let result = run_bench(&[
        "failover",
        "--kills",
        "1",
        "--rate",
        "20",
        "--writers",
        "4",
        "--against",
        "etcd",
    ]);
    assert_eq!(result["kill_to_first_write"]["n"], 1);
    assert_eq!(result["acknowledged_missing_at_leader"], 0);
    let etcd = &result["against"];
    assert!(
        etcd["peer"].as_str().unwrap().starts_with("etcd "),
        "{etcd}"
    );
    assert_eq!(etcd["kill_to_first_write"]["n"], 1);
    assert!(etcd["stream"]["acknowledged"].as_u64().unwrap() > 20);
    assert_eq!(etcd["acknowledged_missing_at_leader"], 0);
    assert_eq!(etcd["acknowledged_missing_on_members"], json!([0, 0, 0]));
    assert!(etcd["ratio_p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_status_failover_scenario_runs_and_never_names_the_dead_leader() {
    let result = run_bench(&["status-failover", "--kills", "1"]);
    assert_eq!(result["after_kill"]["n"], 1);
    assert_eq!(result["healthy"]["n"], 1);
    assert_eq!(result["failed"], 0);
    assert_eq!(result["named_dead_leader"], 0);
    assert_eq!(result["healthy_unconfirmed"], 0);
}

#[test]
fn the_start_scenario_runs_on_docker_beside_the_engine_and_reports() {
    let result = run_bench(&["start", "--trials", "2", "--against", "docker"]);
    for key in ["create_to_running", "warm_start", "switch"] {
        assert_eq!(result[key]["n"], 2, "{key}");
        assert!(result[key]["p50_ms"].as_f64().unwrap() > 0.0, "{key}");
    }
    let engine = &result["against"];
    for key in ["run_with_network", "run_on_network", "start"] {
        assert_eq!(engine[key]["n"], 2, "{key}");
    }
    assert!(engine["ratio_create_p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_sync_scenario_runs_beside_unison_and_rsync_and_reports() {
    let result = run_bench(&[
        "sync",
        "--files",
        "20",
        "--total-mb",
        "1",
        "--trials",
        "2",
        "--against",
        "unison",
    ]);
    assert_eq!(result["files"], 20);
    assert_eq!(result["change_cycle"]["n"], 2);
    assert!(result["initial_seconds"].as_f64().unwrap() > 0.0);
    let unison = &result["against"];
    assert!(
        unison["peer"].as_str().unwrap().starts_with("unison "),
        "{unison}"
    );
    assert_eq!(unison["change"]["n"], 2);
    assert!(unison["initial_seconds"].as_f64().unwrap() > 0.0);
    assert!(unison["rsync_initial_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_fleet_scenario_places_on_hollow_hosts_and_checks_them() {
    let result = run_bench(&[
        "fleet",
        "--hosts",
        "5",
        "--workspaces",
        "40",
        "--concurrency",
        "8",
        "--idle",
        "1",
    ]);
    assert_eq!(result["placed"], 40);
    assert_eq!(result["refused"], 0);
    assert_eq!(result["create_latency"]["n"], 40);
    assert!(result["placements_per_second"].as_f64().unwrap() > 0.0);
    for key in ["missing", "doubled", "unexpected", "hosts_over_limit"] {
        assert_eq!(result["check"][key], 0, "{key}");
    }
}

#[test]
fn the_detect_scenario_finds_the_dead_hosts_and_no_others() {
    let result = run_bench(&[
        "detect",
        "--hosts",
        "10",
        "--kill-share",
        "0.2",
        "--failovers",
        "1",
        "--heartbeat",
        "0.5",
        // Three seconds, not two: an agent notices a killed leader only when a heartbeat's
        // deadline (at least 2 s, whatever the TTL) passes, and on a loaded two-core machine the
        // election can take as long again; a new leader's grace is two TTLs.
        "--ttl",
        "3",
    ]);
    assert_eq!(result["killed"], 2);
    assert_eq!(result["detected"], 2);
    assert_eq!(result["false_downs_after_failover"], 0);
    assert_eq!(result["live_hosts_marked_down"], 0);
    let p50 = result["kill_to_down"]["p50_ms"].as_f64().unwrap();
    assert!(
        p50 >= 2_000.0,
        "marked down {p50} ms after the kill, before the TTL could pass"
    );
}

#[test]
fn the_agent_idle_scenario_runs_and_reports() {
    let result = run_bench(&[
        "agent-idle",
        "--runtime",
        "hollow",
        "--workspaces",
        "2",
        "--seconds",
        "2",
        // Nothing is measured here: no start-up to let settle before the window.
        "--settle",
        "0",
    ]);
    assert_eq!(result["workspaces"], 2);
    assert!(result["agent_rss_mib"]["max"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_scrape_scenario_runs_and_reports() {
    let result = run_bench(&["scrape", "--hosts", "5", "--scrapes", "5"]);
    assert_eq!(result["scrape"]["n"], 5);
    assert!(result["bytes"].as_u64().unwrap() > 1_000);
    assert!(result["samples"].as_u64().unwrap() > 10);
    assert!(result["cpu_percent_at_interval"].as_f64().unwrap() >= 0.0);
}

#[test]
fn the_debug_scenario_runs_and_reports() {
    let result = run_bench(&["debug", "--hosts", "2", "--workspaces", "2", "--runs", "1"]);
    assert_eq!(result["logs"]["n"], 1);
    assert!(result["log_records"].as_u64().unwrap() > 0);
    assert!(result["trace_hops"].as_u64().unwrap() > 0);
    assert!(result["bundle_bytes"].as_u64().unwrap() > 0);
    assert_eq!(result["bundle_missing"], 0);
}

#[test]
fn the_snapshot_scenario_runs_and_reports() {
    let result = run_bench(&[
        "snapshot",
        "--hosts",
        "4",
        "--workspaces",
        "40",
        "--rounds",
        "1",
        "--concurrency",
        "4",
    ]);
    assert_eq!(result["workspaces"], 40);
    assert!(result["snapshot_bytes"].as_u64().unwrap() > 1_000);
    let restored = result["catch_up"]["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 1, "the new member restored one snapshot");
}

#[test]
fn the_backup_scenario_runs_and_reports() {
    let result = run_bench(&[
        "backup",
        "--hosts",
        "4",
        "--workspaces",
        "40",
        "--creates",
        "20",
    ]);
    assert_eq!(result["workspaces"], 40);
    assert_eq!(result["at_scale"]["list_cli"]["n"], 5);
    assert_eq!(result["at_scale"]["list_pages"]["n"], 1, "40 in one page");
    assert!(result["at_scale"]["list_stream_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(result["at_scale"]["create"]["n"], 20);
    assert_eq!(result["at_scale"]["whole_list"]["Ok"], 40);
    assert!(result["file_bytes"].as_u64().unwrap() > 1_000);
    assert!(result["created_bytes"].as_u64().unwrap() > 1_000);
    assert!(result["online_restore_seconds"].as_f64().unwrap() > 0.0);
    assert!(result["catch_up_seconds"].as_f64().unwrap() > 0.0);
}
