//! The one printer of the scenarios' reports: every report as the table printed on stdout at the
//! end of a run, and as the JSON that `--json` writes. Both forms are read by people and scripts
//! (docs/benchmarks.md, tests/tests/bench_smoke.rs), so they change only on purpose. The lines a
//! scenario prints while it runs (its progress) are the scenario's own.

use std::fmt::Write as _;

use serde::Serialize;

use crate::measure::Percentiles;
use crate::scenarios::{
    agent_idle, backup, debug, detect, failover, fleet, raft_writes, scrape, snapshot, start,
    status_failover, sync, transport,
};

/// A scenario's report. In JSON, the scenario's name is its `scenario` field.
#[derive(Debug, Serialize)]
#[serde(tag = "scenario", rename_all = "kebab-case")]
pub(crate) enum Report {
    Transport(transport::Report),
    Raft(raft_writes::Report),
    Failover(failover::Report),
    StatusFailover(status_failover::Report),
    Start(start::Report),
    Sync(sync::Report),
    Fleet(fleet::Report),
    Detect(detect::Report),
    AgentIdle(agent_idle::Report),
    Scrape(scrape::Report),
    Debug(debug::Report),
    Snapshot(snapshot::Report),
    Backup(backup::Report),
}

impl Report {
    /// The table printed at the end of a run, a line of it a measurement.
    pub(crate) fn text(&self) -> String {
        let mut out = Lines::default();
        match self {
            Report::Transport(report) => transport_text(&mut out, report),
            Report::Raft(report) => raft_text(&mut out, report),
            Report::Failover(report) => failover_text(&mut out, report),
            Report::StatusFailover(report) => status_failover_text(&mut out, report),
            Report::Start(report) => start_text(&mut out, report),
            Report::Sync(report) => sync_text(&mut out, report),
            Report::Fleet(report) => fleet_text(&mut out, report),
            Report::Detect(report) => detect_text(&mut out, report),
            Report::AgentIdle(report) => agent_idle_text(&mut out, report),
            Report::Scrape(report) => scrape_text(&mut out, report),
            Report::Debug(report) => debug_text(&mut out, report),
            Report::Snapshot(report) => snapshot_text(&mut out, report),
            Report::Backup(report) => backup_text(&mut out, report),
        }
        out.0
    }

    /// The report as pretty-printed JSON, its keys in alphabetical order at every level.
    pub(crate) fn json(&self) -> String {
        // Through a `Value`, whose maps keep their keys sorted: the order the file has always
        // had, whatever the order of the fields in the report's types.
        serde_json::to_string_pretty(&json_value(self)).expect("a JSON value always prints") // Invariant: its map keys are strings.
    }
}

fn transport_text(out: &mut Lines, report: &transport::Report) {
    out.percentiles(
        "connection setup (QUIC + mTLS + hello)",
        &report.connection_setup,
    );
    out.percentiles(
        "request round trip (sequential)",
        &report.sequential_round_trip,
    );
    let concurrent = &report.concurrent;
    out.line(format_args!(
        "{:<42} {:.0} requests/s over {} streams ({} requests), coordinator CPU {:.0}% of one core",
        "request throughput (one connection)",
        concurrent.requests_per_second,
        concurrent.streams,
        concurrent.requests,
        concurrent.coordinator_cpu_percent_of_one_core
    ));
    out.line(format_args!(
        "{:<42} {:.1} MiB resident",
        "coordinator memory after", report.coordinator_rss_mib
    ));
}

fn raft_text(out: &mut Lines, report: &raft_writes::Report) {
    out.percentiles(
        "write at the leader (one at a time)",
        &report.sequential_write_at_leader,
    );
    out.percentiles(
        "write at a follower (forwarded)",
        &report.sequential_write_at_follower,
    );
    let concurrent = &report.concurrent;
    out.line(format_args!(
        "{:<42} {:.0} writes/s with {} in flight ({} writes)",
        "write throughput", concurrent.writes_per_second, concurrent.in_flight, concurrent.writes
    ));
    out.line(format_args!(
        "{:<42} {} MiB",
        "coordinators' memory after",
        compact(&report.coordinator_rss_mib)
    ));
}

fn failover_text(out: &mut Lines, report: &failover::Report) {
    out.percentiles(
        "kill -9 leader → a write sent after it acknowledged",
        &report.kill_to_first_write,
    );
    let stream = &report.stream;
    out.line(format_args!(
        "stream: {} writes acknowledged ({:.0}/s), longest gap {:.0} ms",
        stream.acknowledged, stream.writes_per_second, stream.longest_gap_ms
    ));
    out.percentiles("write, first attempt → acknowledged", &stream.latency);
    out.line(format_args!(
        "acknowledged writes missing: {} at the leader, {} on the members",
        report.acknowledged_missing_at_leader,
        compact(&report.acknowledged_missing_on_members)
    ));
    if let Some(peer) = &report.against {
        let name = &peer.peer;
        out.percentiles(
            &format!("{name}: kill -9 leader → next write acked"),
            &peer.kill_to_first_write,
        );
        let stream = &peer.stream;
        out.line(format_args!(
            "{name} stream: {} writes acknowledged ({:.0}/s), longest gap {:.0} ms",
            stream.acknowledged, stream.writes_per_second, stream.longest_gap_ms
        ));
        out.percentiles(
            &format!("{name}: write, first attempt → acked"),
            &stream.latency,
        );
        out.line(format_args!(
            "{name} acknowledged writes missing: {} at the leader, {} on the members",
            peer.acknowledged_missing_at_leader,
            compact(&peer.acknowledged_missing_on_members)
        ));
        out.line(format_args!(
            "Nexus / {name}, kill → next acked write: p50 ×{:.2}, p99 ×{:.2}",
            peer.ratio_p50, peer.ratio_p99
        ));
    }
}

fn status_failover_text(out: &mut Lines, report: &status_failover::Report) {
    out.percentiles("admin status, every member up", &report.healthy);
    out.line(format_args!(
        "  of which the leader not confirmed: {}",
        report.healthy_unconfirmed
    ));
    out.percentiles(
        "admin status right after kill -9 leader",
        &report.after_kill,
    );
    out.line(format_args!(
        "after a kill: {} named the dead node as leader without saying it was not reached, {} failed; leader_state {}",
        report.named_dead_leader,
        report.failed,
        compact(&report.leader_states)
    ));
    out.line(format_args!("CLI: {}", report.binary));
}

fn start_text(out: &mut Lines, report: &start::Report) {
    out.percentiles("create → running (CLI, Docker)", &report.create_to_running);
    out.percentiles("warm start: stopped → running", &report.warm_start);
    out.percentiles("switch: stop one, start the other", &report.switch);
    if let Some(peer) = &report.against {
        let name = &peer.peer;
        out.percentiles(
            &format!("{name}: network create + run -d"),
            &peer.run_with_network,
        );
        out.percentiles(
            &format!("{name}: run -d onto a network made before"),
            &peer.run_on_network,
        );
        out.percentiles(&format!("{name}: start (stopped)"), &peer.start);
        out.line(format_args!(
            "Nexus / {name}: create → running p50 ×{:.2}, p95 ×{:.2} (over run -d alone: p50 ×{:.2}); warm start p50 ×{:.2}, p95 ×{:.2}",
            peer.ratio_create_p50,
            peer.ratio_create_p95,
            peer.ratio_create_on_network_p50,
            peer.ratio_warm_p50,
            peer.ratio_warm_p95
        ));
    }
}

fn sync_text(out: &mut Lines, report: &sync::Report) {
    out.line(format_args!(
        "initial sync of {} files ({} MB): {:.2} s",
        report.files, report.total_mb, report.initial_seconds
    ));
    let cycles: Vec<String> = report
        .initial_cycles
        .iter()
        .map(|c| format!("{:.2} s ({} applied)", c.seconds, c.applied))
        .collect();
    out.line(format_args!("  its cycles: {}", cycles.join(", ")));
    out.percentiles("single-file change, one cycle", &report.change_cycle);
    out.percentiles(
        "a quiet look at both sides (changes since)",
        &report.quiet_look_both,
    );
    out.percentiles(
        "the workspace's whole tree (a fresh session)",
        &report.whole_remote_tree,
    );
    out.percentiles(
        "a change in the workspace → the wait told",
        &report.workspace_change_told,
    );
    out.percentiles(
        "a change in the workspace → landed here",
        &report.workspace_change_landed,
    );
    if let Some(peer) = &report.against {
        let name = &peer.peer;
        out.line(format_args!(
            "{name}: initial sync {:.2} s; rsync -a initial copy {:.2} s",
            peer.initial_seconds, peer.rsync_initial_seconds
        ));
        out.percentiles(&format!("{name}: one file changed, one run"), &peer.change);
        out.line(format_args!(
            "Nexus / {name}: initial ×{:.2} (/ rsync ×{:.2}); single-file change p50 ×{:.2}",
            peer.ratio_initial, peer.ratio_initial_rsync, peer.ratio_change_p50
        ));
    }
}

fn fleet_text(out: &mut Lines, report: &fleet::Report) {
    out.line(format_args!(
        "{} hosts, {} workspaces: {:.0} placements/s, all running after {:.2} s, {} refused, \
         {} placed after waiting for room",
        report.hosts,
        report.workspaces,
        report.placements_per_second,
        report.all_running_seconds,
        report.refused,
        report.waited_for_room
    ));
    out.percentiles("create (placed and committed)", &report.create_latency);
    out.line(format_args!(
        "idle coordinators: {}",
        compact(&report.idle.coordinators)
    ));
    out.line(format_args!(
        "busy coordinators: {}",
        compact(&report.busy.coordinators)
    ));
    if let Some(full) = &report.full {
        out.line(format_args!(
            "full, {} s: {:.0} entries/s applied, coordinators: {}",
            full.seconds,
            full.entries_per_second,
            compact(&full.coordinators)
        ));
    }
    out.line(format_args!("check: {}", compact(&report.check)));
}

fn detect_text(out: &mut Lines, report: &detect::Report) {
    out.line(format_args!(
        "{} hosts up in {:.1} s; steady {} s with {} marked down",
        report.hosts, report.fleet_up_seconds, report.steady_seconds, report.false_downs_steady
    ));
    if let Some(elected) = &report.leader_elected_after {
        out.percentiles("leader kill → new leader", elected);
    }
    out.percentiles("kill → marked down", &report.kill_to_down);
    out.line(format_args!(
        "{} of {} killed hosts detected; false downs after {} failovers: {}; live hosts marked down: {}",
        report.detected,
        report.killed,
        report.failovers,
        report.false_downs_after_failover,
        report.live_hosts_marked_down
    ));
}

fn agent_idle_text(out: &mut Lines, report: &agent_idle::Report) {
    let rss = &report.agent_rss_mib;
    out.line(format_args!(
        "agent ({} runtime, {} workspaces, all running after {:.1} s), idle {:.0} s: CPU {:.3}% of one core; RSS mean {:.1} / max {:.1} / end {:.1} MiB (peak ever {:.1}); {} threads",
        report.runtime,
        report.workspaces,
        report.seconds_to_all_running,
        report.idle_seconds,
        report.agent_cpu_percent_of_one_core,
        rss.mean,
        rss.max,
        rss.end,
        rss.peak_ever,
        report.agent_threads,
    ));
}

fn scrape_text(out: &mut Lines, report: &scrape::Report) {
    out.percentiles(
        &format!("scrape of the leader at {} hosts", report.hosts),
        &report.scrape,
    );
    out.line(format_args!(
        "scrape size {} bytes, {} samples; leader CPU {:.2} ms per scrape = {:.3}% of a core at one scrape per {} s (unscraped leader: {:.1}%)",
        report.bytes,
        report.samples,
        report.cpu_ms_per_scrape,
        report.cpu_percent_at_interval,
        report.interval_seconds,
        report.leader_idle_cpu_percent,
    ));
}

fn debug_text(out: &mut Lines, report: &debug::Report) {
    let fleet = format!("{} agents, {} workspaces", report.hosts, report.workspaces);
    out.percentiles(&format!("admin logs --last 1h, {fleet}"), &report.logs);
    out.line(format_args!("  {} records printed", report.log_records));
    out.percentiles(&format!("admin trace of a create, {fleet}"), &report.trace);
    out.line(format_args!("  {} hops", report.trace_hops));
    out.percentiles(&format!("admin support-bundle, {fleet}"), &report.bundle);
    out.line(format_args!(
        "  {} bytes, {} sections, {} missing",
        report.bundle_bytes, report.bundle_sections, report.bundle_missing
    ));
}

fn snapshot_text(out: &mut Lines, report: &snapshot::Report) {
    out.line(format_args!(
        "state of {} hosts and {} workspaces: {} bytes, copied in {:.4} s, encoded in {:.3} s, \
         decoded in {:.3} s",
        report.hosts,
        report.workspaces,
        report.snapshot_bytes,
        report.copy_seconds,
        report.encode_seconds,
        report.decode_seconds
    ));
    if let Some(marking) = &report.marking {
        out.line(format_args!(
            "{} hosts ({} workspaces) marked down in {:.3} s, back in {:.3} s; with a copy of the \
             state held, {:.3} s and {:.3} s",
            marking.hosts,
            marking.workspaces,
            marking.down_seconds,
            marking.back_seconds,
            marking.down_seconds_with_a_copy,
            marking.back_seconds_with_a_copy
        ));
    }
    if let Some(catch_up) = &report.catch_up {
        out.line(format_args!(
            "new member: added in {:.1} s, serving every workspace after {:.1} s; term {} -> {}",
            catch_up.add_seconds,
            catch_up.serving_seconds,
            catch_up.term_before,
            catch_up.term_after
        ));
        for line in catch_up.leader_snapshots.iter().chain(&catch_up.restored) {
            out.line(format_args!("  {line}"));
        }
        for syncs in &catch_up.syncs {
            out.line(format_args!(
                "node {} during the fill: {} synced writes, {} over 0.1 s, {} over 0.25 s, {} over \
                 1 s; {} long rounds of the Raft thread, persisting up to {} ms",
                syncs.node,
                syncs.writes,
                syncs.over_100ms,
                syncs.over_250ms,
                syncs.over_1s,
                syncs.long_rounds,
                syncs.longest_persisting_ms
            ));
        }
    }
}

fn backup_text(out: &mut Lines, report: &backup::Report) {
    out.line(format_args!(
        "state of {} hosts and {} workspaces: a {} byte backup; nexus-coordinator restore {:.2} s \
         per member, cluster serving it {:.1} s after start",
        report.hosts,
        report.workspaces,
        report.file_bytes,
        report.offline_restore_seconds,
        report.cluster_up_seconds
    ));
    out.line(format_args!(
        "backup create {:.2} s ({} bytes), verify {:.2} s, online restore {:.2} s, new member \
         caught up {:.2} s; term {} -> {}",
        report.create_seconds,
        report.created_bytes,
        report.verify_seconds,
        report.online_restore_seconds,
        report.catch_up_seconds,
        report.term_before,
        report.term_after
    ));
}

/// The text form, built a line at a time.
#[derive(Debug, Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, line: std::fmt::Arguments<'_>) {
        // Invariant: writing to a String cannot fail.
        writeln!(self.0, "{line}").expect("a String takes any text");
    }

    /// One measured duration's line: its name, then its count and percentiles.
    fn percentiles(&mut self, name: &str, p: &Percentiles) {
        // The count is not padded: the table has always printed it so (the padding once asked
        // for never applied to the JSON number it was given), and its readers expect it so.
        self.line(format_args!(
            "{name:<42} n={} p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            p.n, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
        ));
    }
}

/// A part of a report as one line of JSON, as the table shows lists and checks.
fn compact(part: &impl Serialize) -> String {
    json_value(part).to_string()
}

fn json_value(part: &impl Serialize) -> serde_json::Value {
    // Invariant: reports hold numbers, strings, lists and structs, all of which JSON takes.
    serde_json::to_value(part).expect("a report is plain data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Load;

    fn percentiles(n: usize) -> Percentiles {
        Percentiles {
            n,
            p50_ms: 1.5,
            p95_ms: 2.25,
            p99_ms: 3.0,
            max_ms: 4.125,
        }
    }

    #[test]
    fn the_table_pads_names_not_counts_and_shows_lists_as_json() {
        let report = Report::Failover(failover::Report {
            kill_to_first_write: percentiles(1),
            terms_per_failover_max: Some(1),
            stream: failover::Stream {
                writers: 4,
                rate_asked: 50.0,
                acknowledged: 157,
                writes_per_second: 49.6,
                latency: percentiles(157),
                longest_gap_ms: 994.4,
            },
            acknowledged_missing_at_leader: 0,
            acknowledged_missing_on_members: vec![0, 0, 0],
            against: None,
        });
        assert_eq!(
            report.text(),
            "kill -9 leader → a write sent after it acknowledged n=1 p50 1.500 ms  p95 2.250 ms  p99 3.000 ms  max 4.125 ms\n\
             stream: 157 writes acknowledged (50/s), longest gap 994 ms\n\
             write, first attempt → acknowledged        n=157 p50 1.500 ms  p95 2.250 ms  p99 3.000 ms  max 4.125 ms\n\
             acknowledged writes missing: 0 at the leader, [0,0,0] on the members\n"
        );
    }

    #[test]
    fn the_table_shows_loads_and_checks_as_json_with_sorted_keys() {
        let loads = vec![Load {
            cpu_percent_of_one_core: 0.0,
            rss_mib: 22.5,
        }];
        let report = Report::Fleet(fleet::Report {
            hosts: 5,
            workspaces: 40,
            concurrency: 8,
            heartbeat_seconds: 5.0,
            fleet_up_seconds: 0.25,
            idle: fleet::Idle {
                seconds: 1,
                heartbeats_per_second: 1.0,
                coordinators: loads.clone(),
                leader: 0,
            },
            placed: 40,
            refused: 0,
            waited_for_room: 2,
            placement_seconds: 0.175,
            placements_per_second: 228.4,
            running: 40,
            all_running_seconds: 0.406,
            create_latency: percentiles(40),
            busy: fleet::Busy {
                coordinators: loads.clone(),
            },
            full: Some(fleet::Full {
                seconds: 30,
                entries_per_second: 12.4,
                coordinators: loads,
            }),
            check: fleet::Check {
                missing: 1,
                doubled: 2,
                unexpected: 3,
                hosts_over_limit: 4,
            },
        });
        assert_eq!(
            report.text(),
            "5 hosts, 40 workspaces: 228 placements/s, all running after 0.41 s, 0 refused, 2 placed after waiting for room\n\
             create (placed and committed)              n=40 p50 1.500 ms  p95 2.250 ms  p99 3.000 ms  max 4.125 ms\n\
             idle coordinators: [{\"cpu_percent_of_one_core\":0.0,\"rss_mib\":22.5}]\n\
             busy coordinators: [{\"cpu_percent_of_one_core\":0.0,\"rss_mib\":22.5}]\n\
             full, 30 s: 12 entries/s applied, coordinators: [{\"cpu_percent_of_one_core\":0.0,\"rss_mib\":22.5}]\n\
             check: {\"doubled\":2,\"hosts_over_limit\":4,\"missing\":1,\"unexpected\":3}\n"
        );
    }

    #[test]
    fn the_json_names_the_scenario_and_sorts_the_keys() {
        let report = Report::AgentIdle(agent_idle::Report {
            runtime: "hollow".into(),
            workspaces: 2,
            seconds_to_all_running: 0.5,
            idle_seconds: 2.0,
            agent_cpu_percent_of_one_core: 0.0,
            agent_rss_mib: agent_idle::Memory {
                mean: 15.0,
                max: 15.25,
                end: 15.0,
                peak_ever: 16.0,
            },
            agent_threads: 3,
        });
        assert_eq!(
            report.json(),
            r#"{
  "agent_cpu_percent_of_one_core": 0.0,
  "agent_rss_mib": {
    "end": 15.0,
    "max": 15.25,
    "mean": 15.0,
    "peak_ever": 16.0
  },
  "agent_threads": 3,
  "idle_seconds": 2.0,
  "runtime": "hollow",
  "scenario": "agent-idle",
  "seconds_to_all_running": 0.5,
  "workspaces": 2
}"#
        );
    }
}
