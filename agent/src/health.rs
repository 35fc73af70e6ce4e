//! A workspace's health as this agent observes it (`nexus admin workspace health`): what the
//! engine says of its container (through [`Runtime::inspect`]), whether each port its container
//! publishes accepts a connection on this host (all at once, each within [`PORT_LIMIT`]), the
//! sync sessions the agent serves for it (handed in), and the size of its files directory.
//!
//! Facts only: the verdict (healthy, degraded, unhealthy) is the CLI's, which also knows what
//! the coordinators want of the workspace.
//!
//! There is no limit on a files directory's size today (sync refuses only a single change of
//! more than `nexus_sync::endpoint::MAX_STAGED` bytes), so `files_limit_bytes` is `None`.

use std::path::Path;
use std::time::{Duration, Instant};

use nexus_protocol::debug::{PortProbe, SyncSessionView, WorkspaceHealth};
use nexus_protocol::message::Assignment;

use crate::runtime::{Runtime, RuntimeError};

/// How long each port has to accept.
pub const PORT_LIMIT: Duration = Duration::from_secs(1);
/// The most entries, and the longest time, the walk of a files directory takes; past either it
/// stops and says its count is partial.
pub const WALK_ENTRIES: u64 = 200_000;
pub const WALK_TIME: Duration = Duration::from_secs(2);

/// The workspace's health: its newest container, its ports, `sync` (its sessions, as the agent
/// heard them) and the size of its files directory under `files` (the root of every
/// workspace's), if any.
pub async fn gather<R: Runtime>(
    runtime: &R,
    assignment: &Assignment,
    files: Option<&Path>,
    sync: Vec<SyncSessionView>,
) -> Result<WorkspaceHealth, RuntimeError> {
    let workspace = assignment.spec.name.clone();
    let current = runtime
        .list()
        .await?
        .into_iter()
        .filter(|c| c.workspace == workspace)
        .max_by_key(|c| c.generation);
    let (container, ports) = match current {
        None => (None, Vec::new()),
        Some(current) => {
            let health = runtime.inspect(&current.id).await?;
            let ports = if health.running {
                let probes = current
                    .ports
                    .iter()
                    .map(|port| runtime.probe_port(*port, PORT_LIMIT));
                futures_util::future::join_all(probes).await
            } else {
                current
                    .ports
                    .iter()
                    .map(|port| PortProbe {
                        container: port.container,
                        host: port.host,
                        accepting: false,
                        error: Some("not tried: the container is not running".into()),
                    })
                    .collect()
            };
            (Some(health), ports)
        }
    };
    let size = match files {
        Some(root) => {
            let dir = root.join(workspace.as_str());
            tokio::task::spawn_blocking(move || size_of(&dir, WALK_ENTRIES, WALK_TIME))
                .await
                .unwrap_or(None)
        }
        None => None,
    };
    Ok(WorkspaceHealth {
        workspace,
        container,
        ports,
        sync,
        files_bytes: size.map(|s| s.bytes),
        files_limit_bytes: None,
        files_partial: size.is_some_and(|s| s.partial),
    })
}

/// What a walk of a directory counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// The files' lengths, summed.
    pub bytes: u64,
    pub entries: u64,
    /// The walk stopped at a bound: the counts are lower bounds.
    pub partial: bool,
}

/// The size of the files under `dir` (symbolic links are not followed), counting at most
/// `most` entries for at most `limit`; `None` when `dir` is not a directory. Entries it cannot
/// read are skipped.
pub fn size_of(dir: &Path, most: u64, limit: Duration) -> Option<Size> {
    if !std::fs::symlink_metadata(dir).ok()?.is_dir() {
        return None;
    }
    let started = Instant::now();
    let mut size = Size {
        bytes: 0,
        entries: 0,
        partial: false,
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            if size.entries >= most || started.elapsed() > limit {
                size.partial = true;
                return Some(size);
            }
            size.entries += 1;
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                size.bytes = size.bytes.saturating_add(metadata.len());
            }
        }
    }
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_summed_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("a/one"), [0u8; 20]).unwrap();
        std::fs::write(dir.path().join("a/b/two"), [0u8; 3]).unwrap();
        // A link is not followed: what it points to is counted where it is, once.
        std::os::unix::fs::symlink(dir.path().join("top"), dir.path().join("a/link")).unwrap();
        let size = size_of(dir.path(), 1_000, Duration::from_secs(10)).unwrap();
        assert_eq!(
            size,
            Size {
                bytes: 123,
                entries: 6,
                partial: false
            }
        );

        let cut = size_of(dir.path(), 2, Duration::from_secs(10)).unwrap();
        assert!(cut.partial);
        assert_eq!(cut.entries, 2);

        assert_eq!(size_of(&dir.path().join("top"), 10, Duration::ZERO), None);
        assert_eq!(
            size_of(&dir.path().join("absent"), 10, Duration::ZERO),
            None
        );
    }
}
