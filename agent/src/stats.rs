//! The host's facts and load, from sysinfo.
//!
//! One long-lived [`HostSampler`] refreshes only what is reported (CPU, memory, the data dir's
//! disk, networks, load): about a tenth of a millisecond, where a full refresh with processes
//! costs tens. CPU % is measured between two refreshes, so the first sample reads 0.

use std::path::{Path, PathBuf};

use nexus_protocol::clock;
use nexus_protocol::model::{HostInfo, HostStats};
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System};

use crate::config::Config;

/// Interfaces that are Docker's plumbing, not the host's traffic: every container's veth pair,
/// the default bridge and user-defined bridges, and loopback.
pub fn is_host_interface(name: &str) -> bool {
    !(name.starts_with("veth") || name == "docker0" || name.starts_with("br-") || name == "lo")
}

/// This boot's id (Linux's `/proc/sys/kernel/random/boot_id`): it changes at every boot, and
/// unlike a boot time it does not move with the wall clock.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

#[derive(Debug)]
pub struct HostSampler {
    system: System,
    disks: Disks,
    networks: Networks,
    data_dir: PathBuf,
}

impl HostSampler {
    pub fn new(data_dir: &Path) -> Result<HostSampler, sysinfo::Error> {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )?;
        Ok(HostSampler {
            system,
            disks: Disks::new_with_refreshed_list()?,
            networks: Networks::new_with_refreshed_list()?,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The disk holding the data dir (the longest mount point that prefixes it): (total,
    /// available) bytes.
    fn data_disk(&self) -> (u64, u64) {
        let target = self
            .data_dir
            .canonicalize()
            .unwrap_or_else(|_| self.data_dir.clone());
        self.disks
            .iter()
            .filter(|disk| target.starts_with(disk.mount_point()))
            .max_by_key(|disk| disk.mount_point().as_os_str().len())
            .map_or((0, 0), |disk| (disk.total_space(), disk.available_space()))
    }

    /// A fresh sample.
    pub fn sample(&mut self) -> HostStats {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(false);
        self.networks.refresh(true);
        let (rx, tx) = self
            .networks
            .iter()
            .filter(|(name, _)| is_host_interface(&name.to_string_lossy()))
            .fold((0, 0), |(rx, tx), (_, data)| {
                (rx + data.total_received(), tx + data.total_transmitted())
            });
        let (disk_total, disk_available) = self.data_disk();
        #[allow(clippy::cast_possible_truncation)]
        let load = System::load_average().map_or(0.0, |load| load.one as f32);
        HostStats {
            at: Some(clock::now()),
            cpu_percent: self.system.global_cpu_usage(),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk_used_bytes: disk_total.saturating_sub(disk_available),
            disk_total_bytes: disk_total,
            network_rx_bytes: rx,
            network_tx_bytes: tx,
            load_average_1m: load,
        }
    }

    /// The host's facts for registration, with the configured capacity overrides.
    pub fn describe(&mut self, config: &Config) -> HostInfo {
        self.system.refresh_memory();
        let cpus = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        let (disk_total, _) = self.data_disk();
        HostInfo {
            host_id: config.host_id.clone(),
            hostname: System::host_name().unwrap_or_else(|_| config.host_id.to_string()),
            os: System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.to_string()),
            cpus: config.capacity_cpus.unwrap_or(cpus),
            memory_bytes: config
                .capacity_memory_bytes
                .unwrap_or(self.system.total_memory()),
            disk_bytes: disk_total,
            labels: config.labels.clone(),
            port_range: config.port_range,
            agent_version: nexus_protocol::SOFTWARE_VERSION.to_string(),
        }
    }
}

/// This machine's hostname, if it can be read.
pub fn host_name() -> Option<String> {
    System::host_name().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_boot_has_an_id() {
        let id = boot_id().expect("a boot id");
        assert_eq!(boot_id().as_deref(), Some(id.as_str()));
    }

    #[test]
    fn docker_plumbing_is_not_host_traffic() {
        for name in ["veth12ab", "docker0", "br-3f2a", "lo"] {
            assert!(!is_host_interface(name), "{name}");
        }
        for name in ["eth0", "ens5", "wlan0"] {
            assert!(is_host_interface(name), "{name}");
        }
    }

    #[test]
    fn a_sample_reads_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut sampler = HostSampler::new(dir.path()).unwrap();
        let first = sampler.sample();
        assert!(first.memory_total_bytes > 0);
        assert!(first.memory_used_bytes <= first.memory_total_bytes);
        assert!(
            first.disk_total_bytes > 0,
            "the data dir's disk was not found"
        );
        assert!(first.disk_used_bytes <= first.disk_total_bytes);
        let second = sampler.sample();
        assert!((0.0..=100.0).contains(&second.cpu_percent));
    }
}
