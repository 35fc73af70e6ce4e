//! The one printer of the scenarios' results: a table a scenario on stdout. Lines printed while a
//! scenario runs (its progress) are the scenario's own.

pub(crate) fn print_table(result: &serde_json::Value) {
    match result["scenario"].as_str() {
        Some("raft") => return print_raft(result),
        Some("failover") => {
            print_percentiles(
                "kill -9 leader → a write sent after it acknowledged",
                &result["kill_to_first_write"],
            );
            let stream = &result["stream"];
            println!(
                "stream: {} writes acknowledged ({:.0}/s), longest gap {:.0} ms",
                stream["acknowledged"],
                stream["writes_per_second"].as_f64().unwrap_or(0.0),
                stream["longest_gap_ms"].as_f64().unwrap_or(0.0)
            );
            print_percentiles("write, first attempt → acknowledged", &stream["latency"]);
            println!(
                "acknowledged writes missing: {} at the leader, {} on the members",
                result["acknowledged_missing_at_leader"], result["acknowledged_missing_on_members"]
            );
            return;
        }
        Some("fleet") => {
            println!(
                "{} hosts, {} workspaces: {:.0} placements/s, all running after {:.2} s, {} refused",
                result["hosts"],
                result["workspaces"],
                result["placements_per_second"].as_f64().unwrap_or(0.0),
                result["all_running_seconds"].as_f64().unwrap_or(0.0),
                result["refused"]
            );
            print_percentiles("create (placed and committed)", &result["create_latency"]);
            println!("idle coordinators: {}", result["idle"]["coordinators"]);
            println!("busy coordinators: {}", result["busy"]["coordinators"]);
            println!("check: {}", result["check"]);
            return;
        }
        Some("detect") => {
            print_percentiles("kill → marked down", &result["kill_to_down"]);
            println!(
                "{} of {} killed hosts detected; false downs after {} failovers: {}; live hosts marked down: {}",
                result["detected"],
                result["killed"],
                result["failovers"],
                result["false_downs_after_failover"],
                result["live_hosts_marked_down"]
            );
            return;
        }
        Some("sync") => {
            println!(
                "initial sync of {} files ({} MB): {:.2} s",
                result["files"],
                result["total_mb"],
                result["initial_seconds"].as_f64().unwrap_or(0.0)
            );
            print_percentiles("single-file change, one cycle", &result["change_cycle"]);
            print_percentiles(
                "a quiet look at both sides (changes since)",
                &result["quiet_look_both"],
            );
            print_percentiles(
                "the workspace's whole tree (a fresh session)",
                &result["whole_remote_tree"],
            );
            print_percentiles(
                "a change in the workspace → the wait told",
                &result["workspace_change_told"],
            );
            print_percentiles(
                "a change in the workspace → landed here",
                &result["workspace_change_landed"],
            );
            return;
        }
        Some("start") => {
            for (name, key) in [
                ("create → running (CLI, Docker)", "create_to_running"),
                ("warm start: stopped → running", "warm_start"),
                ("switch: stop one, start the other", "switch"),
            ] {
                print_percentiles(name, &result[key]);
            }
            return;
        }
        Some("agent-idle") => {
            let rss = &result["agent_rss_mib"];
            let mib = |key: &str| rss[key].as_f64().unwrap_or(0.0);
            println!(
                "agent ({} runtime, {} workspaces, all running after {:.1} s), idle {:.0} s: CPU {:.3}% of one core; RSS mean {:.1} / max {:.1} / end {:.1} MiB (peak ever {:.1}); {} threads",
                result["runtime"].as_str().unwrap_or("?"),
                result["workspaces"],
                result["seconds_to_all_running"].as_f64().unwrap_or(0.0),
                result["idle_seconds"].as_f64().unwrap_or(0.0),
                result["agent_cpu_percent_of_one_core"]
                    .as_f64()
                    .unwrap_or(0.0),
                mib("mean"),
                mib("max"),
                mib("end"),
                mib("peak_ever"),
                result["agent_threads"],
            );
            return;
        }
        _ => {}
    }
    for (name, key) in [
        ("connection setup (QUIC + mTLS + hello)", "connection_setup"),
        ("request round trip (sequential)", "sequential_round_trip"),
    ] {
        print_percentiles(name, &result[key]);
    }
    let c = &result["concurrent"];
    println!(
        "{:<42} {:.0} requests/s over {} streams ({} requests), coordinator CPU {:.0}% of one core",
        "request throughput (one connection)",
        c["requests_per_second"].as_f64().unwrap_or(0.0),
        c["streams"],
        c["requests"],
        c["coordinator_cpu_percent_of_one_core"]
            .as_f64()
            .unwrap_or(0.0)
    );
    println!(
        "{:<42} {:.1} MiB resident",
        "coordinator memory after",
        result["coordinator_rss_mib"].as_f64().unwrap_or(0.0)
    );
}

fn print_percentiles(name: &str, p: &serde_json::Value) {
    let ms = |v: &serde_json::Value| format!("{:.3}", v.as_f64().unwrap_or(0.0));
    println!(
        "{name:<42} n={:<6} p50 {} ms  p95 {} ms  p99 {} ms  max {} ms",
        p["n"],
        ms(&p["p50_ms"]),
        ms(&p["p95_ms"]),
        ms(&p["p99_ms"]),
        ms(&p["max_ms"])
    );
}

fn print_raft(result: &serde_json::Value) {
    print_percentiles(
        "write at the leader (one at a time)",
        &result["sequential_write_at_leader"],
    );
    print_percentiles(
        "write at a follower (forwarded)",
        &result["sequential_write_at_follower"],
    );
    let c = &result["concurrent"];
    println!(
        "{:<42} {:.0} writes/s with {} in flight ({} writes)",
        "write throughput",
        c["writes_per_second"].as_f64().unwrap_or(0.0),
        c["in_flight"],
        c["writes"]
    );
    println!(
        "{:<42} {} MiB",
        "coordinators' memory after", result["coordinator_rss_mib"]
    );
}
