//! The process's own metrics, read from Linux's `/proc` at each scrape, under the names every
//! Prometheus client library uses (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! …), so that the usual dashboards and alerts work on Nexus as they do on anything else.

use crate::metrics::{Readings, Source};

/// The kernel reports CPU times to user space in ticks of `USER_HZ`, which is 100 on every
/// architecture Linux supports today (the value is part of the ABI, unlike the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// Reads `/proc/self` (and the boot time in `/proc/stat`) when asked.
#[derive(Debug, Default)]
pub struct Process;

impl Source for Process {
    fn read(&self, out: &mut Readings) {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        if let Some(stat) = &stat {
            out.counter(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                (stat.user_ticks + stat.system_ticks) as f64 / USER_HZ,
            );
            out.gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.virtual_bytes as f64,
            );
            if let Some(boot) = boot {
                out.gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.start_ticks as f64 / USER_HZ,
                );
            }
        }
        if let Some(kib) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|text| parse_resident_kib(&text))
        {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (kib * 1024) as f64,
            );
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            out.gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                entries.count() as f64,
            );
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_fds(&text))
        {
            out.gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max as f64,
            );
        }
    }
}

/// What `/proc/self/stat` says that the metrics need.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    user_ticks: u64,
    system_ticks: u64,
    start_ticks: u64,
    virtual_bytes: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Fields 3 onwards; field N is at index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        user_ticks: field(14)?,
        system_ticks: field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// The boot time, in seconds since the epoch, from `/proc/stat`'s `btime` line.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// `VmRSS` from `/proc/self/status`, in KiB.
fn parse_resident_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit on open files from `/proc/self/limits` (none when it is "unlimited").
fn parse_max_fds(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_end_of_the_name() {
        let text = "6632 (a (b) c) R 6630 6630 4218 0 -1 4194304 101 0 0 0 250 30 0 0 20 0 1 0 \
                    1370030 3133440 362 18446744073709551615 94645495287808";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                user_ticks: 250,
                system_ticks: 30,
                start_ticks: 1_370_030,
                virtual_bytes: 3_133_440,
            })
        );
        assert_eq!(parse_stat("6632 (cat) R 1 2"), None);
        assert_eq!(parse_stat("no name"), None);
    }

    #[test]
    fn status_limits_and_boot_time_lines() {
        assert_eq!(
            parse_resident_kib("Name:\tcat\nVmRSS:\t    1924 kB\n"),
            Some(1924)
        );
        assert_eq!(parse_resident_kib("Name:\tkthreadd\n"), None);
        assert_eq!(
            parse_max_fds(
                "Limit Soft Limit Hard Limit Units\nMax open files            20000                20000                files\n"
            ),
            Some(20_000)
        );
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1796265914\nprocesses 9\n"),
            Some(1_796_265_914)
        );
    }

    #[test]
    fn this_process_reads_as_alive() {
        let mut readings = Readings::default();
        Process.read(&mut readings);
        let names = readings.names();
        for name in [
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }
}
