//! What the scenarios share to measure: percentiles of durations, and a process's CPU time and
//! resident memory from /proc. It measures only; bringing up what is measured is `setup`'s.

use std::time::Duration;

use serde_json::json;

/// Percentiles of durations, in milliseconds.
pub(crate) fn percentiles(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let at =
        |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1000.0;
    json!({ "n": samples.len(), "p50_ms": at(50), "p95_ms": at(95), "p99_ms": at(99), "max_ms": at(100) })
}

/// CPU time in clock ticks (USER_HZ, 100 on Linux) as a share of one core over `over`, in %.
pub(crate) fn cpu_percent(ticks: u64, over: Duration) -> f64 {
    ticks as f64 / 100.0 / over.as_secs_f64() * 100.0
}

/// A process's resident memory (KiB) and CPU time (clock ticks) from /proc.
pub(crate) fn process_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (rss, ticks(11) + ticks(12)) // utime and stime, counted from field 3 (state) as 0
}

/// CPU time (clock ticks) and resident memory (KiB) of a set of processes, to take differences.
pub(crate) fn usage_of(pids: &[u32]) -> Vec<(u64, u64)> {
    pids.iter().map(|pid| process_usage(*pid)).collect()
}

/// Each process's share of one core between two readings, and its resident memory at the end.
pub(crate) fn cpu_and_rss(
    before: &[(u64, u64)],
    after: &[(u64, u64)],
    over: Duration,
) -> serde_json::Value {
    before
        .iter()
        .zip(after)
        .map(|((_, cpu0), (rss, cpu1))| {
            json!({
                "cpu_percent_of_one_core": cpu_percent(cpu1.saturating_sub(*cpu0), over),
                "rss_mib": *rss as f64 / 1024.0,
            })
        })
        .collect()
}
