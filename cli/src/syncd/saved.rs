//! What a daemon keeps in its directory: its socket, and for each session its configuration
//! (`NAME.session.json`, read back when a daemon starts again, so sessions outlive it) and its
//! state (`NAME.state.json`, what both sides last agreed on). The state's content and format are
//! the engine's (`nexus_sync::session::SessionState`); this module only says where it lives.

use std::path::PathBuf;

use nexus_protocol::WorkspaceName;
use nexus_protocol::logging::LogFiles;

use super::control::SessionConfig;

/// The most the sync daemon's log keeps, in all its files.
pub const LOG_MAX_BYTES: u64 = 16 << 20;

/// Where the daemon keeps its socket and its sessions.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("daemon.sock")
    }

    /// The daemon's log: `daemon.log`, appended to by each daemon and set aside as
    /// `daemon.log.NNNNNN` when it grows past an eighth of [`LOG_MAX_BYTES`].
    pub fn log(&self) -> LogFiles {
        LogFiles::new(&self.dir, "daemon.log")
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nexus_sync::Mode;

    use super::*;
    use crate::settings::Settings;

    fn config(name: &str) -> SessionConfig {
        SessionConfig {
            workspace: WorkspaceName::new(name).unwrap_or_else(|e| panic!("{e}")),
            local: format!("/home/ada/{name}").into(),
            mode: Mode::TwoWaySafe,
            ignore: vec![],
            ignore_vcs: true,
            settings: Settings {
                coordinators: vec!["127.0.0.1:7000".into()],
                ca: "/pki/ca.pem".into(),
                cert: "/pki/ada.pem".into(),
                key: "/pki/ada.key".into(),
                request_id: None,
            },
        }
    }

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let paths = Paths {
            dir: dir.path().to_path_buf(),
        };
        (dir, paths)
    }

    fn sorted(mut configs: Vec<SessionConfig>) -> Vec<SessionConfig> {
        configs.sort_by(|a, b| a.workspace.cmp(&b.workspace));
        configs
    }

    #[test]
    fn saved_sessions_read_back_and_only_the_user_may_read_them() {
        let (_dir, paths) = paths();
        assert_eq!(saved_sessions(&paths), vec![]);
        for name in ["api", "web"] {
            save_config(&paths, &config(name)).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            sorted(saved_sessions(&paths)),
            [config("api"), config("web")]
        );
        let file = paths.config(&config("web").workspace);
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }

    #[test]
    fn saving_again_replaces_the_configuration() {
        let (_dir, paths) = paths();
        save_config(&paths, &config("web")).unwrap_or_else(|e| panic!("{e}"));
        let mut changed = config("web");
        changed.ignore = vec!["*.log".into()];
        save_config(&paths, &changed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(saved_sessions(&paths), [changed]);
    }

    #[test]
    fn damaged_and_foreign_files_are_passed_over() {
        let (_dir, paths) = paths();
        save_config(&paths, &config("web")).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(paths.dir.join(name), bytes).unwrap_or_else(|e| panic!("{e}"));
        };
        write("api.session.json", b"{\"workspace\": \"api\", \"loc");
        write("db.session.json", b"not json");
        // A state file and the daemon's log are not sessions.
        write("web.state.json", b"{}");
        write("daemon.log", b"");
        assert_eq!(saved_sessions(&paths), [config("web")]);
    }

    #[test]
    fn a_directory_that_is_not_there_has_no_sessions() {
        let (dir, paths) = paths();
        drop(dir);
        assert_eq!(saved_sessions(&paths), vec![]);
        assert!(matches!(
            save_config(&paths, &config("web")),
            Err(SaveError::Write(_))
        ));
    }

    #[test]
    fn forgetting_a_session_removes_its_configuration_and_state_only() {
        let (_dir, paths) = paths();
        for name in ["api", "web"] {
            save_config(&paths, &config(name)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(paths.state(&config(name).workspace), b"{}")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        forget(&paths, &config("web").workspace);
        assert_eq!(saved_sessions(&paths), [config("api")]);
        assert!(!paths.state(&config("web").workspace).exists());
        assert!(paths.state(&config("api").workspace).exists());
        // Forgetting what is already gone is no error.
        forget(&paths, &config("web").workspace);
    }
}
