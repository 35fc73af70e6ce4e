//! The host's facts, as sent when registering.
//!
//! Read from `/proc` with the standard library for now; the stats module (sysinfo, with live CPU,
//! memory, disk and network figures) replaces this with the Agent issue.

use nexus_protocol::model::HostInfo;

use crate::config::Config;

pub fn describe(config: &Config) -> HostInfo {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| config.host_id.to_string());
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    HostInfo {
        host_id: config.host_id.clone(),
        hostname,
        os: std::env::consts::OS.to_string(),
        cpus,
        memory_bytes: total_memory().unwrap_or(0),
        disk_bytes: 0,
        labels: config.labels.clone(),
        port_range: config.port_range,
        agent_version: nexus_protocol::SOFTWARE_VERSION.to_string(),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&meminfo)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        assert_eq!(
            parse_mem_total("MemFree: 1 kB\nMemTotal:  2048 kB\n"),
            Some(2 << 20)
        );
        assert_eq!(parse_mem_total("MemTotal: lots\n"), None);
        assert_eq!(parse_mem_total(""), None);
    }
}
