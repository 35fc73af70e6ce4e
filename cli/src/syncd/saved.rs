//! What a daemon keeps in its directory: its socket, and for each session its configuration
//! (`NAME.session.json`, read back when a daemon starts again, so sessions outlive it) and its
//! state (`NAME.state.json`, what both sides last agreed on). The state's content and format are
//! the engine's (`nexus_sync::session::SessionState`); this module only says where it lives.

use std::path::PathBuf;

use nexus_protocol::WorkspaceName;

use super::control::SessionConfig;

/// Where the daemon keeps its socket and its sessions.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("daemon.sock")
    }

    pub(super) fn config(&self, workspace: &WorkspaceName) -> PathBuf {
        self.dir.join(format!("{workspace}.session.json"))
    }

    pub(super) fn state(&self, workspace: &WorkspaceName) -> PathBuf {
        self.dir.join(format!("{workspace}.state.json"))
    }
}

/// A session's configuration that could not be saved.
#[derive(Debug, thiserror::Error)]
pub(super) enum SaveError {
    #[error("{0}")]
    Encode(serde_json::Error),
    #[error("{0}")]
    Write(std::io::Error),
}

/// Saves a session's configuration, for the user's eyes only: it says where the user's key is.
pub(super) fn save_config(paths: &Paths, config: &SessionConfig) -> Result<(), SaveError> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec(config).map_err(SaveError::Encode)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(paths.config(&config.workspace))
        .map_err(SaveError::Write)?;
    std::io::Write::write_all(&mut file, &bytes).map_err(SaveError::Write)
}

/// The sessions an earlier daemon saved. A file that does not read as one is passed over: one
/// damaged file must not keep the others from carrying on.
pub(super) fn saved_sessions(paths: &Paths) -> Vec<SessionConfig> {
    let Ok(entries) = std::fs::read_dir(&paths.dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".session.json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

/// Forgets a stopped session: its configuration and its state.
pub(super) fn forget(paths: &Paths, workspace: &WorkspaceName) {
    let _ = std::fs::remove_file(paths.config(workspace));
    let _ = std::fs::remove_file(paths.state(workspace));
}
