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
