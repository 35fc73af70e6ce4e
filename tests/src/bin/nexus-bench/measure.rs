//! What the scenarios share to measure: percentiles of durations, operations run from many tasks
//! under one timer, and a process's CPU time and resident memory from /proc. It measures only;
//! bringing up what is measured is `setup`'s, and printing the numbers is `report`'s.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) n: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Percentiles {
    /// The percentiles of `samples`, which must not be empty: a scenario that measured nothing
    /// has failed, and fails here.
    pub(crate) fn of(mut samples: Vec<Duration>) -> Percentiles {
        samples.sort();
        let at = |p: usize| {
            samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1000.0
        };
        Percentiles {
            n: samples.len(),
            p50_ms: at(50),
            p95_ms: at(95),
            p99_ms: at(99),
            max_ms: at(100),
        }
    }
}

/// Runs `count` operations (rounded up to a multiple of `tasks`) from `tasks` tasks at once:
/// `task(n)` is a task's work, `n` operations one after another. Answers how many operations ran
/// and how long they took together, from the first task's start to the last one's end.
pub(crate) async fn concurrently<F, Fut>(tasks: usize, count: usize, task: F) -> (usize, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let per_task = count.div_ceil(tasks);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        set.spawn(task(per_task));
    }
    set.join_all().await;
    (per_task * tasks, started.elapsed())
}

/// A process's share of one core over a window, and its resident memory at the window's end.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Load {
    pub(crate) cpu_percent_of_one_core: f64,
    pub(crate) rss_mib: f64,
}

impl Load {
    /// The load between two readings of one process taken `over` apart.
    pub(crate) fn between(before: &Usage, after: &Usage, over: Duration) -> Load {
        Load {
            cpu_percent_of_one_core: cpu_percent(
                after.cpu_ticks.saturating_sub(before.cpu_ticks),
                over,
            ),
            rss_mib: after.rss_mib(),
        }
    }

    /// Each process's load between two readings of a set of processes, in the same order.
    pub(crate) fn of_each(before: &[Usage], after: &[Usage], over: Duration) -> Vec<Load> {
        before
            .iter()
            .zip(after)
            .map(|(before, after)| Load::between(before, after, over))
            .collect()
    }
}

/// One reading of a process's counters, to take differences between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) rss_kib: u64,
    /// User and system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
}

impl Usage {
    /// A process's resident memory and CPU time from /proc; zeros for what cannot be read (a
    /// process that has exited).
    pub(crate) fn of(pid: u32) -> Usage {
        let rss_kib = status_field(&proc_status(pid), "VmRSS:");
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
        Usage {
            rss_kib,
            // utime and stime, counted from field 3 (state) as 0.
            cpu_ticks: ticks(11) + ticks(12),
        }
    }

    /// A reading of each of a set of processes.
    pub(crate) fn of_each(pids: &[u32]) -> Vec<Usage> {
        pids.iter().map(|pid| Usage::of(*pid)).collect()
    }

    pub(crate) fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// A process's /proc status, or nothing if it cannot be read.
pub(crate) fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// A numeric field of a /proc status (`name` with its colon, as `VmRSS:`) in its own unit (kB
/// for memory); 0 when absent.
pub(crate) fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// CPU time in clock ticks (USER_HZ, 100 on Linux) as a share of one core over `over`, in %.
fn cpu_percent(ticks: u64, over: Duration) -> f64 {
    ticks as f64 / 100.0 / over.as_secs_f64() * 100.0
}
