//! Where a host keeps its git state, under the agent's data directory:
//!
//! - `git/mirrors/<16 hex of SHA-256(url)>.git`: one bare mirror per repository URL, its remote
//!   `origin` the URL, fetched into `refs/remotes/origin/*`. Every workspace of that repository on
//!   this host is a worktree of it, so they share one object store.
//! - `workspaces/<workspace>`: the workspace's files directory (mounted at `/workspace`), which is
//!   the worktree; its branch is `nexus/<workspace>` and git's record of it is
//!   `<mirror>/worktrees/<workspace>`. The container mounts the mirror at the same absolute path,
//!   so the worktree's `.git` link holds inside the container as on the host.
//! - `git/worktrees/<workspace>.json`: what the host made ([`WorktreeRecord`]), written when the
//!   worktree is made and removed when it is destroyed: what verification checks against.
//! - `git/aside/<workspace>-<millis>`: a damaged worktree's files, moved aside by a repair.
//! - `git/kept.json`: branches destroys kept because they hold commits found nowhere else.

use std::path::{Path, PathBuf};

use nexus_protocol::WorkspaceName;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::git::KeptBranch;
use serde::{Deserialize, Serialize};

/// The parts of a mirror a container may read but never write (mounted read-only over its
/// read-write mount): what could make git, run by the agent as root, execute a program, send a
/// credential elsewhere (`url.*.insteadOf`, a proxy), or read another repository's objects
/// (`objects/info/alternates`).
pub const MIRROR_READ_ONLY: [&str; 3] = ["config", "hooks", "objects/info"];

/// What a host made of a workspace's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeRecord {
    pub workspace: WorkspaceName,
    pub url: String,
    pub branch: String,
    pub base_commit: String,
    /// The remote branch the workspace started from, if any (`origin/<branch>`).
    pub upstream: Option<String>,
    pub mirror: PathBuf,
    pub made_at: Timestamp,
}

/// The paths of a host's git state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    git: PathBuf,
    files: PathBuf,
}

impl Layout {
    /// The layout under an agent's data directory.
    pub fn new(data_dir: &Path) -> Layout {
        Layout {
            git: data_dir.join("git"),
            files: data_dir.join("workspaces"),
        }
    }

    /// The bare mirror of `url`.
    pub fn mirror(&self, url: &str) -> PathBuf {
        let mut hash = nexus_protocol::hash::Sha256::default();
        hash.update(url.as_bytes());
        let digest = hash.finish();
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.git.join("mirrors").join(format!("{name}.git"))
    }

    /// Every mirror's directory.
    pub fn mirrors_dir(&self) -> PathBuf {
        self.git.join("mirrors")
    }

    /// The workspace's files directory: its worktree.
    pub fn worktree(&self, workspace: &WorkspaceName) -> PathBuf {
        self.files.join(workspace.as_str())
    }

    /// Where the host's record of the workspace's worktree is kept.
    pub fn record_path(&self, workspace: &WorkspaceName) -> PathBuf {
        self.git
            .join("worktrees")
            .join(format!("{}.json", workspace.as_str()))
    }

    /// Where a repair moves a damaged worktree's files.
    pub fn aside(&self, workspace: &WorkspaceName, at: Timestamp) -> PathBuf {
        self.git
            .join("aside")
            .join(format!("{}-{}", workspace.as_str(), at.as_millis()))
    }

    /// The list of branches destroys kept.
    pub fn kept_path(&self) -> PathBuf {
        self.git.join("kept.json")
    }

    /// The record of a workspace's worktree, if the host made one.
    pub fn read_record(
        &self,
        workspace: &WorkspaceName,
    ) -> std::io::Result<Option<WorktreeRecord>> {
        read_json(&self.record_path(workspace))
    }

    /// Writes a worktree's record (whole or not at all).
    pub fn write_record(&self, record: &WorktreeRecord) -> std::io::Result<()> {
        write_json(&self.record_path(&record.workspace), record)
    }

    pub fn remove_record(&self, workspace: &WorkspaceName) -> std::io::Result<()> {
        match std::fs::remove_file(self.record_path(workspace)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Every worktree record on this host, by workspace name; unreadable ones are skipped and
    /// logged.
    pub fn records(&self) -> Vec<WorktreeRecord> {
        let Ok(entries) = std::fs::read_dir(self.git.join("worktrees")) else {
            return Vec::new();
        };
        let mut records: Vec<WorktreeRecord> = entries
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
            .filter_map(|entry| match read_json(&entry.path()) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(path = %entry.path().display(), "unreadable worktree record skipped: {error}");
                    None
                }
            })
            .collect();
        records.sort_by(|a: &WorktreeRecord, b| a.workspace.cmp(&b.workspace));
        records
    }

    /// The branches destroys kept.
    pub fn kept(&self) -> Vec<KeptBranch> {
        read_json(&self.kept_path())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub fn write_kept(&self, kept: &[KeptBranch]) -> std::io::Result<()> {
        write_json(&self.kept_path(), &kept)
    }
}

/// Moves every entry of `dir` into `aside` (made new), keeping `dir` itself; a `dir` that is not
/// a directory is moved in whole. Its `.git` becomes `.git.aside`: git must not take the files
/// aside for the fresh worktree. Nothing is deleted; a failure stops with what is moved so far
/// moved.
pub fn move_aside(dir: &Path, aside: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(aside)?;
    if !dir.is_dir() {
        let name = dir.file_name().unwrap_or_else(|| "files".as_ref());
        return std::fs::rename(dir, aside.join(name));
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let to = if name == ".git" {
            aside.join(".git.aside")
        } else {
            aside.join(&name)
        };
        std::fs::rename(entry.path(), to)?;
    }
    Ok(())
}

/// A failure on the host's disk, in its git state.
pub fn io_error(error: std::io::Error) -> nexus_protocol::WireError {
    nexus_protocol::WireError::new(
        nexus_protocol::ErrorCode::GitFailed,
        format!("the host's git state: {error}"),
    )
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mirror_per_url_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let a = layout.mirror("https://x/a.git");
        assert_eq!(a, layout.mirror("https://x/a.git"));
        assert_ne!(a, layout.mirror("https://x/b.git"));
        assert!(a.starts_with(dir.path().join("git/mirrors")));
        let ws: WorkspaceName = "api".parse().unwrap();
        assert_eq!(layout.worktree(&ws), dir.path().join("workspaces/api"));
        assert_eq!(layout.read_record(&ws).unwrap(), None);
        let record = WorktreeRecord {
            workspace: ws.clone(),
            url: "https://x/a.git".into(),
            branch: "nexus/api".into(),
            base_commit: "a".repeat(40),
            upstream: Some("origin/main".into()),
            mirror: a,
            made_at: Timestamp::from_millis(7),
        };
        layout.write_record(&record).unwrap();
        assert_eq!(layout.read_record(&ws).unwrap(), Some(record.clone()));
        std::fs::write(layout.git.join("worktrees/bad.json"), "{").unwrap();
        assert_eq!(layout.records(), vec![record]);
        layout.remove_record(&ws).unwrap();
        layout.remove_record(&ws).unwrap();
        assert_eq!(layout.read_record(&ws).unwrap(), None);
    }
}
