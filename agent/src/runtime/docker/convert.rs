//! Translations between the engine's API types (bollard) and ours: errors sorted into the
//! reconciler's kinds (a port conflict with its port, a full disk, an engine that does not
//! answer), container states, stats samples, log frames, and image references.

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerStatsResponse, ContainerSummaryStateEnum};
use nexus_protocol::clock;
use nexus_protocol::model::ContainerStats;

use crate::runtime::{ContainerStatus, ErrorKind, RuntimeError};

/// `repo:tag` → (`repo`, `tag`), with `latest` when no tag is given. A registry's port is not a
/// tag (`127.0.0.1:5000/img`); a digest is kept whole.
pub fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_part = image.rsplit('/').next().unwrap_or(image);
    match last_part.rsplit_once(':') {
        Some((_, tag)) => {
            let repository = &image[..image.len() - tag.len() - 1];
            (repository, tag)
        }
        None => (image, "latest"),
    }
}

pub(super) fn status_of(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(super) fn describe(error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Sorts a bollard error into the reconciler's kinds; `context` prefixes the message.
pub(super) fn classify(error: &BollardError, context: &str) -> RuntimeError {
    let message = describe(error);
    let text = if context.is_empty() {
        message.clone()
    } else {
        format!("{context}: {message}")
    };
    let lower = message.to_ascii_lowercase();
    let kind = match error {
        BollardError::DockerResponseServerError { status_code, .. } => {
            if lower.contains("no space left on device") {
                ErrorKind::DiskFull
            } else if let Some(port) = port_in_use(&message) {
                ErrorKind::PortInUse(port)
            } else {
                match status_code {
                    404 => ErrorKind::NotFound,
                    304 | 409 => ErrorKind::Conflict,
                    _ => ErrorKind::Failed,
                }
            }
        }
        BollardError::DockerStreamError { .. } | BollardError::JsonDataError { .. } => {
            ErrorKind::Failed
        }
        // Socket missing, connection refused or reset, a timed-out call: the engine is not
        // answering.
        _ => ErrorKind::Unavailable,
    };
    RuntimeError::new(kind, text)
}

/// The host port in Docker's "port is already allocated" or "address already in use" messages.
fn port_in_use(message: &str) -> Option<u16> {
    let lower = message.to_ascii_lowercase();
    if !(lower.contains("address already in use") || lower.contains("port is already allocated")) {
        return None;
    }
    // "... 0.0.0.0:20001 failed: port is already allocated" or "listen tcp4 0.0.0.0:20001: bind:
    // address already in use".
    lower
        .split(|c: char| c.is_whitespace())
        .filter_map(|word| word.trim_end_matches(':').rsplit_once(':'))
        .find_map(|(_, port)| port.parse::<u16>().ok())
}

pub(super) fn status_from(state: Option<ContainerSummaryStateEnum>) -> ContainerStatus {
    match state {
        Some(
            ContainerSummaryStateEnum::RUNNING
            | ContainerSummaryStateEnum::PAUSED
            | ContainerSummaryStateEnum::RESTARTING,
        ) => ContainerStatus::Running,
        Some(ContainerSummaryStateEnum::CREATED) => ContainerStatus::Created,
        _ => ContainerStatus::Exited,
    }
}

/// CPU % (of one core) between two samples of cumulative usage, in nanoseconds of CPU time
/// and of system time (which counts every core).
pub fn cpu_percent(previous: (u64, u64), current: (u64, u64), online_cpus: u32) -> f32 {
    let used = current.0.saturating_sub(previous.0);
    let system = current.1.saturating_sub(previous.1);
    if system == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let percent = used as f64 / system as f64 * f64::from(online_cpus.max(1)) * 100.0;
    #[allow(clippy::cast_possible_truncation)]
    let percent = percent as f32;
    percent
}

/// A sample's cumulative CPU use: (the container's, the system's), in nanoseconds.
pub(super) fn cpu_sample(sample: &ContainerStatsResponse) -> (u64, u64) {
    let cpu = sample.cpu_stats.as_ref();
    (
        cpu.and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0),
        cpu.and_then(|c| c.system_cpu_usage).unwrap_or(0),
    )
}

pub(super) fn stats_from(
    sample: &ContainerStatsResponse,
    previous: Option<(u64, u64)>,
) -> ContainerStats {
    let online = sample
        .cpu_stats
        .as_ref()
        .and_then(|c| c.online_cpus)
        .unwrap_or(1);
    let memory = sample.memory_stats.as_ref();
    // Page cache is reclaimable: report what `docker stats` reports (usage minus inactive file).
    let cache = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    let (mut rx, mut tx) = (0, 0);
    for network in sample.networks.iter().flat_map(HashMap::values) {
        rx += network.rx_bytes.unwrap_or(0);
        tx += network.tx_bytes.unwrap_or(0);
    }
    let (mut read, mut write) = (0, 0);
    for entry in sample
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
    {
        match entry.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read += entry.value.unwrap_or(0),
            Some("write") => write += entry.value.unwrap_or(0),
            _ => {}
        }
    }
    ContainerStats {
        workspace: None,
        at: Some(clock::now()),
        cpu_percent: previous.map_or(0.0, |p| cpu_percent(p, cpu_sample(sample), online)),
        memory_used_bytes: memory
            .and_then(|m| m.usage)
            .unwrap_or(0)
            .saturating_sub(cache),
        memory_limit_bytes: memory.and_then(|m| m.limit).unwrap_or(0),
        network_rx_bytes: rx,
        network_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
    }
}

/// Docker's log stream frames as text lines. The bytes are joined before decoding: a frame may
/// end inside a character.
pub(super) fn lines_of(chunks: Vec<LogOutput>) -> Vec<String> {
    let bytes: Vec<u8> = chunks
        .into_iter()
        .flat_map(|chunk| chunk.into_bytes())
        .collect();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_and_tag() {
        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(split_image("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_image("127.0.0.1:5000/team/dev"),
            ("127.0.0.1:5000/team/dev", "latest")
        );
        assert_eq!(
            split_image("127.0.0.1:5000/team/dev:v2"),
            ("127.0.0.1:5000/team/dev", "v2")
        );
        assert_eq!(split_image("img@sha256:abc"), ("img@sha256:abc", ""));
    }

    #[test]
    fn port_conflicts_are_recognised_with_their_port() {
        assert_eq!(
            port_in_use(
                "driver failed programming external connectivity on endpoint x: Bind for 0.0.0.0:20001 failed: port is already allocated"
            ),
            Some(20001)
        );
        assert_eq!(
            port_in_use(
                "Error starting userland proxy: listen tcp4 0.0.0.0:20002: bind: address already in use"
            ),
            Some(20002)
        );
        assert_eq!(port_in_use("no such image"), None);
    }

    #[test]
    fn cpu_percent_is_per_core() {
        // Half of the system's time over 2 cores is one full core: 100 %.
        assert!((cpu_percent((0, 0), (50, 100), 2) - 100.0).abs() < 0.01);
        assert!(cpu_percent((10, 10), (10, 10), 4).abs() < f32::EPSILON);
        // Counters that went backwards (a restarted container) read as idle, not as garbage.
        assert!(cpu_percent((100, 100), (50, 200), 1).abs() < f32::EPSILON);
    }
}
