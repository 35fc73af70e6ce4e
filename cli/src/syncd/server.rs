//! The daemon's socket server: it binds the socket, carries on the sessions an earlier daemon
//! saved, and answers each [`Control`] by starting, asking or stopping a session. It runs until a
//! connection ends with no session left. What a session does is `session`'s; where the files are
//! is `saved`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;
use nexus_sync::filter::Filter;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::control::{Control, ControlAnswer, to_line};
use super::lock;
use super::saved::{self, Paths};
use super::session::{self, Command, Running};

/// A daemon that cannot start, or cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot make {}: {source}", .dir.display())]
    MakeDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Another daemon serves this directory: one per user is enough.
    #[error("a sync daemon already answers at {}", .socket.display())]
    AlreadyRunning { socket: PathBuf },
    #[error("cannot listen on {}: {source}", .socket.display())]
    Listen {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot accept on {}: {source}", .socket.display())]
    Accept {
        socket: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the daemon until it has no sessions left (after at least one request).
pub async fn run(paths: Paths) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&paths.dir).map_err(|source| DaemonError::MakeDir {
        dir: paths.dir.clone(),
        source,
    })?;
    let socket = paths.socket();
    if UnixStream::connect(&socket).await.is_ok() {
        return Err(DaemonError::AlreadyRunning { socket });
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| DaemonError::Listen {
        socket: socket.clone(),
        source,
    })?;
    // A daemon whose directory is removed has nothing left to keep: it goes too.
    let dir = paths.dir.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !dir.is_dir() {
                std::process::exit(0);
            }
        }
    });
    // Sessions saved by an earlier daemon carry on.
    let sessions = saved::saved_sessions(&paths)
        .into_iter()
        .map(|config| (config.workspace.clone(), session::start(config, &paths)))
        .collect();
    serve(listener, sessions, &paths).await
}

/// Answers each connection's requests, one line each, until a connection ends with no session
/// left; then removes the socket.
async fn serve(
    listener: UnixListener,
    mut sessions: BTreeMap<WorkspaceName, Running>,
    paths: &Paths,
) -> Result<(), DaemonError> {
    let socket = paths.socket();
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|source| DaemonError::Accept {
                socket: socket.clone(),
                source,
            })?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let answer = match serde_json::from_str::<Control>(&line) {
                Ok(control) => handle(control, &mut sessions, paths).await,
                Err(e) => ControlAnswer::error(
                    ErrorCode::InvalidArgument,
                    format!("not a sync request: {e}"),
                ),
            };
            // An answer always encodes; were it not to, an empty line still ends the wait.
            let text = to_line(&answer).unwrap_or_else(|_| "\n".into());
            if write.write_all(text.as_bytes()).await.is_err() {
                break;
            }
        }
        if sessions.is_empty() {
            let _ = std::fs::remove_file(&socket);
            return Ok(());
        }
    }
}

async fn handle(
    control: Control,
    sessions: &mut BTreeMap<WorkspaceName, Running>,
    paths: &Paths,
) -> ControlAnswer {
    let status_of = |running: &Running| ControlAnswer::Session(lock(&running.status).clone());
    match control {
        Control::Start(config) => {
            if let Some(running) = sessions.get(&config.workspace) {
                return status_of(running);
            }
            if !config.local.is_dir() {
                return ControlAnswer::error(
                    ErrorCode::InvalidArgument,
                    format!("{} is not a directory", config.local.display()),
                );
            }
            if let Err(e) = Filter::new(&config.ignore, config.ignore_vcs) {
                return ControlAnswer::error(ErrorCode::InvalidArgument, e.to_string());
            }
            if let Err(e) = saved::save_config(paths, &config) {
                return ControlAnswer::error(
                    ErrorCode::SyncSessionFailed,
                    format!("cannot save the session: {e}"),
                );
            }
            let name = config.workspace.clone();
            let running = session::start(config, paths);
            let answer = status_of(&running);
            sessions.insert(name, running);
            answer
        }
        Control::Status => {
            ControlAnswer::Sessions(sessions.values().map(|r| lock(&r.status).clone()).collect())
        }
        Control::Flush(name) => {
            let Some(running) = sessions.get(&name) else {
                return no_session(&name);
            };
            if lock(&running.status).state == "paused" {
                return ControlAnswer::error(
                    ErrorCode::SyncPaused,
                    format!("the sync of {name} is paused"),
                );
            }
            let (reply, answer) = oneshot::channel();
            let _ = running.commands.send(Command::Flush(reply)).await;
            match answer.await {
                Ok(Ok(())) => {
                    let status = lock(&running.status).clone();
                    if status.conflicts.is_empty() {
                        ControlAnswer::Session(status)
                    } else {
                        ControlAnswer::error(
                            ErrorCode::SyncConflict,
                            format!(
                                "{} conflict(s) in the sync of {name}; see `nexus workspace sync conflicts {name}`",
                                status.conflicts.len()
                            ),
                        )
                    }
                }
                Ok(Err(e)) => ControlAnswer::error(ErrorCode::SyncSessionFailed, e.to_string()),
                Err(_) => ControlAnswer::error(ErrorCode::SyncSessionFailed, "the session ended"),
            }
        }
        Control::Resolve {
            workspace,
            path,
            keep,
        } => {
            let Some(running) = sessions.get(&workspace) else {
                return no_session(&workspace);
            };
            let (reply, answer) = oneshot::channel();
            let _ = running
                .commands
                .send(Command::Resolve(path, keep, reply))
                .await;
            match answer.await {
                Ok(Ok(())) => status_of(running),
                Ok(Err(e)) => ControlAnswer::error(ErrorCode::InvalidArgument, e.to_string()),
                Err(_) => ControlAnswer::error(ErrorCode::SyncSessionFailed, "the session ended"),
            }
        }
        Control::Pause(ref name) | Control::Resume(ref name) => {
            let Some(running) = sessions.get(name) else {
                return no_session(name);
            };
            let pause = matches!(control, Control::Pause(_));
            let command = if pause {
                Command::Pause
            } else {
                Command::Resume
            };
            let _ = running.commands.send(command).await;
            lock(&running.status).state = if pause { "paused" } else { "watching" }.into();
            status_of(running)
        }
        Control::Stop(name) => {
            let Some(running) = sessions.remove(&name) else {
                return no_session(&name);
            };
            let _ = running.commands.send(Command::Stop).await;
            saved::forget(paths, &name);
            let mut status = lock(&running.status).clone();
            status.state = "stopped".into();
            ControlAnswer::Session(status)
        }
    }
}

fn no_session(name: &WorkspaceName) -> ControlAnswer {
    ControlAnswer::error(
        ErrorCode::WorkspaceNotFound,
        format!(
            "no sync session for {name}; start one with `nexus workspace sync start {name} --local DIR`"
        ),
    )
}

#[cfg(test)]
mod tests {
    use nexus_sync::Mode;

    use super::*;
    use crate::settings::Settings;
    use crate::syncd::client::ask;
    use crate::syncd::control::SessionConfig;

    fn name(name: &str) -> WorkspaceName {
        WorkspaceName::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let paths = Paths {
            dir: dir.path().to_path_buf(),
        };
        (dir, paths)
    }

    /// A session of `web` on `local`, whose agent cannot be reached (there are no credentials):
    /// it starts, and fails to connect, without a network.
    fn config(local: &std::path::Path) -> SessionConfig {
        SessionConfig {
            workspace: name("web"),
            local: local.to_path_buf(),
            mode: Mode::TwoWaySafe,
            ignore: vec![],
            ignore_vcs: true,
            settings: Settings {
                coordinators: vec![],
                ca: local.join("no-ca.pem"),
                cert: local.join("no-cert.pem"),
                key: local.join("no-key.pem"),
                request_id: None,
            },
        }
    }

    fn error_of(answer: ControlAnswer) -> (ErrorCode, String) {
        match answer {
            ControlAnswer::Error { code, message } => (code, message),
            other => panic!("not an error: {other:?}"),
        }
    }

    fn session_of(answer: ControlAnswer) -> crate::syncd::SessionStatus {
        match answer {
            ControlAnswer::Session(status) => status,
            other => panic!("not a session: {other:?}"),
        }
    }

    async fn next_answer(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    ) -> ControlAnswer {
        let line = lines.next_line().await.unwrap_or_else(|e| panic!("{e}"));
        let line = line.unwrap_or_else(|| panic!("no answer"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_daemon_answers_its_client_and_goes_when_no_session_is_left() {
        let (_dir, paths) = paths();
        let listener = UnixListener::bind(paths.socket()).unwrap_or_else(|e| panic!("{e}"));
        let serving = paths.clone();
        let daemon = tokio::spawn(async move { serve(listener, BTreeMap::new(), &serving).await });
        let answer = ask(&paths.socket(), &Control::Status).await;
        assert_eq!(
            answer.unwrap_or_else(|e| panic!("{e}")),
            ControlAnswer::Sessions(vec![])
        );
        let served = daemon.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(served.is_ok(), "{served:?}");
        assert!(!paths.socket().exists());
    }

    #[tokio::test]
    async fn a_line_that_is_no_request_is_answered_and_the_connection_goes_on() {
        let (_dir, paths) = paths();
        let listener = UnixListener::bind(paths.socket()).unwrap_or_else(|e| panic!("{e}"));
        let serving = paths.clone();
        let daemon = tokio::spawn(async move { serve(listener, BTreeMap::new(), &serving).await });
        let stream = UnixStream::connect(paths.socket())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"hello\n\"Status\"\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut lines = BufReader::new(read).lines();
        let (code, message) = error_of(next_answer(&mut lines).await);
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(message.starts_with("not a sync request: "), "{message}");
        assert_eq!(
            next_answer(&mut lines).await,
            ControlAnswer::Sessions(vec![])
        );
        drop(write);
        let served = daemon.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(served.is_ok(), "{served:?}");
    }

    #[tokio::test]
    async fn asking_about_a_session_that_is_not_there_says_how_to_start_one() {
        let (_dir, paths) = paths();
        let mut sessions = BTreeMap::new();
        let web = name("web");
        for control in [
            Control::Flush(web.clone()),
            Control::Resolve {
                workspace: web.clone(),
                path: "a".parse().unwrap_or_else(|e| panic!("{e}")),
                keep: nexus_sync::Side::Alpha,
            },
            Control::Pause(web.clone()),
            Control::Resume(web.clone()),
            Control::Stop(web.clone()),
        ] {
            let (code, message) = error_of(handle(control, &mut sessions, &paths).await);
            assert_eq!(code, ErrorCode::WorkspaceNotFound);
            assert_eq!(
                message,
                "no sync session for web; start one with `nexus workspace sync start web --local DIR`"
            );
        }
    }

    #[tokio::test]
    async fn a_start_without_a_directory_or_with_bad_patterns_starts_nothing() {
        let (dir, paths) = paths();
        let mut sessions = BTreeMap::new();
        let missing = config(&dir.path().join("missing"));
        let (code, message) =
            error_of(handle(Control::Start(missing), &mut sessions, &paths).await);
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(message.ends_with("missing is not a directory"), "{message}");
        let mut patterns = config(dir.path());
        patterns.ignore = vec!["a\nb".into()];
        let (code, message) =
            error_of(handle(Control::Start(patterns), &mut sessions, &paths).await);
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert_eq!(message, "\"a\\nb\": one pattern per --ignore");
        assert!(sessions.is_empty());
        assert_eq!(saved::saved_sessions(&paths), vec![]);
    }

    #[tokio::test]
    async fn a_started_session_is_saved_listed_paused_and_stopped() {
        let (_dir, paths) = paths();
        let local = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut sessions = BTreeMap::new();
        let start = || Control::Start(config(local.path()));
        let started = session_of(handle(start(), &mut sessions, &paths).await);
        assert_eq!(
            (started.workspace.as_str(), started.state.as_str()),
            ("web", "connecting")
        );
        assert_eq!(saved::saved_sessions(&paths), [config(local.path())]);
        // A second start of the same workspace is the first session.
        session_of(handle(start(), &mut sessions, &paths).await);
        assert_eq!(sessions.len(), 1);
        match handle(Control::Status, &mut sessions, &paths).await {
            ControlAnswer::Sessions(listed) => {
                assert_eq!(listed.len(), 1, "{listed:?}");
                assert_eq!(listed[0].workspace, name("web"));
            }
            other => panic!("{other:?}"),
        }
        let paused = session_of(handle(Control::Pause(name("web")), &mut sessions, &paths).await);
        assert_eq!(paused.state, "paused");
        let stopped = session_of(handle(Control::Stop(name("web")), &mut sessions, &paths).await);
        assert_eq!(stopped.state, "stopped");
        assert!(sessions.is_empty());
        assert_eq!(saved::saved_sessions(&paths), vec![]);
    }
}
