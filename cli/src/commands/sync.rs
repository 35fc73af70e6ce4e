//! `nexus workspace sync ...`: the user's sync sessions, run by the per-user daemon
//! ([`crate::syncd`]), which this starts when it is not running.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_protocol::error::ErrorCode;
use nexus_sync::{RelPath, Side};
use serde_json::json;

use crate::args::{KeepArg, OutputFormat, ProviderArg, SyncCommand};
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;
use crate::syncd::{self, Control, ControlAnswer, Paths, SessionConfig, SessionStatus};

/// Where the daemon lives: `$NEXUS_SYNC_DIR`, else the state directory's `sync/`.
pub fn paths() -> Result<Paths, CliError> {
    if let Some(dir) = std::env::var_os("NEXUS_SYNC_DIR") {
        return Ok(Paths {
            dir: PathBuf::from(dir),
        });
    }
    let state = crate::commands::up::state_dir(&crate::args::StateArgs { state_dir: None })?;
    Ok(Paths {
        dir: state.join("sync"),
    })
}

/// The settings with absolute paths: the daemon outlives the directory this ran in.
fn absolute(mut settings: Settings) -> Result<Settings, CliError> {
    for path in [&mut settings.ca, &mut settings.cert, &mut settings.key] {
        *path = std::fs::canonicalize(&*path).map_err(|e| {
            CliError::local(
                ErrorCode::AuthenticationFailed,
                format!("{}: {e}", path.display()),
            )
        })?;
    }
    Ok(settings)
}

fn failed(message: impl Into<String>) -> CliError {
    CliError::local(ErrorCode::SyncSessionFailed, message)
}

/// Asks the daemon, starting it first when none answers.
async fn ask(paths: &Paths, control: &Control, start: bool) -> Result<ControlAnswer, CliError> {
    let socket = paths.socket();
    if let Ok(answer) = syncd::ask(&socket, control).await {
        return Ok(answer);
    }
    if !start {
        return Err(failed("no sync daemon is running (no sessions)")
            .suggest("start one with `nexus workspace sync start NAME --local DIR`"));
    }
    std::fs::create_dir_all(&paths.dir)
        .map_err(|e| failed(format!("cannot make {}: {e}", paths.dir.display())))?;
    let exe = std::env::current_exe().map_err(|e| failed(e.to_string()))?;
    let log = paths.dir.join("daemon.log");
    let out = std::fs::File::create(&log).map_err(|e| failed(format!("{}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| failed(e.to_string()))?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["sync-daemon", "--dir"])
        .arg(&paths.dir)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // Its own process group: it outlives this terminal.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .spawn()
        .map_err(|e| failed(format!("cannot start the sync daemon: {e}")))?;
    let started = Instant::now();
    loop {
        if let Ok(answer) = syncd::ask(&socket, control).await {
            return Ok(answer);
        }
        if started.elapsed() > Duration::from_secs(5) {
            return Err(failed(format!(
                "the sync daemon did not start; see {}",
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_json(status: &SessionStatus) -> serde_json::Value {
    json!({
        "workspace": status.workspace.as_str(),
        "local": status.local.display().to_string(),
        "mode": status.mode.as_str(),
        "state": status.state,
        "cycles": status.cycles,
        "changes": status.changes,
        "conflicts": status.conflicts.iter().map(|c| json!({
            "path": c.path, "local": c.local, "remote": c.remote,
        })).collect::<Vec<_>>(),
        "last_error": status.last_error,
        "refused": status.refused,
    })
}

fn status_table(sessions: &[SessionStatus]) -> String {
    if sessions.is_empty() {
        return "no sync sessions\n".into();
    }
    output::table(
        &[
            "WORKSPACE",
            "LOCAL",
            "MODE",
            "STATE",
            "CHANGES",
            "CONFLICTS",
            "LAST ERROR",
        ],
        sessions
            .iter()
            .map(|s| {
                vec![
                    s.workspace.to_string(),
                    s.local.display().to_string(),
                    s.mode.to_string(),
                    s.state.clone(),
                    s.changes.to_string(),
                    s.conflicts.len().to_string(),
                    s.last_error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    )
}

fn print_session(format: OutputFormat, status: &SessionStatus) {
    output::emit(format, &status_json(status), || {
        status_table(std::slice::from_ref(status))
    });
}

pub async fn run(
    command: SyncCommand,
    settings: Result<Settings, CliError>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let paths = paths()?;
    let (control, start) = match command {
        SyncCommand::Start(args) => {
            if args.provider == ProviderArg::Mutagen {
                let found = std::env::var_os("PATH").is_some_and(|path| {
                    std::env::split_paths(&path).any(|dir| dir.join("mutagen").is_file())
                });
                if !found {
                    return Err(CliError::local(
                        ErrorCode::SyncProviderNotFound,
                        "no `mutagen` on PATH",
                    )
                    .suggest("install Mutagen, or use the embedded provider (the default): drop --provider"));
                }
                return Err(CliError::local(
                    ErrorCode::Unsupported,
                    "driving Mutagen is not built yet",
                )
                .suggest("use the embedded provider (the default): drop --provider"));
            }
            let local = std::fs::canonicalize(&args.local).map_err(|e| {
                CliError::local(
                    ErrorCode::InvalidArgument,
                    format!("{}: {e}", args.local.display()),
                )
            })?;
            let config = SessionConfig {
                workspace: args.name,
                local,
                mode: args.mode,
                ignore: args.ignore,
                ignore_vcs: args.ignore_vcs,
                settings: absolute(settings?)?,
            };
            (Control::Start(config), true)
        }
        SyncCommand::Status => (Control::Status, false),
        SyncCommand::Conflicts { name } => {
            let answer = ask(&paths, &Control::Status, false).await?;
            let ControlAnswer::Sessions(sessions) = answer else {
                return Err(failed(format!("unexpected answer: {answer:?}")));
            };
            let Some(session) = sessions.into_iter().find(|s| s.workspace == name) else {
                return Err(CliError::local(
                    ErrorCode::WorkspaceNotFound,
                    format!("no sync session for {name}"),
                ));
            };
            let json = status_json(&session)["conflicts"].clone();
            output::emit(format, &json, || {
                if session.conflicts.is_empty() {
                    return "no conflicts\n".into();
                }
                output::table(
                    &["PATH", "LOCAL", "REMOTE"],
                    session
                        .conflicts
                        .iter()
                        .map(|c| {
                            vec![
                                c.path.clone(),
                                c.local.clone().unwrap_or_else(|| "deleted".into()),
                                c.remote.clone().unwrap_or_else(|| "deleted".into()),
                            ]
                        })
                        .collect(),
                )
            });
            return Ok(());
        }
        SyncCommand::Resolve { name, path, keep } => {
            let path: RelPath = path.parse().map_err(|e: nexus_sync::path::PathError| {
                CliError::local(ErrorCode::InvalidArgument, e.to_string())
            })?;
            let keep = match keep {
                KeepArg::Local => Side::Alpha,
                KeepArg::Remote => Side::Beta,
            };
            (
                Control::Resolve {
                    workspace: name,
                    path,
                    keep,
                },
                false,
            )
        }
        SyncCommand::Flush { name } => (Control::Flush(name), false),
        SyncCommand::Pause { name } => (Control::Pause(name), false),
        SyncCommand::Resume { name } => (Control::Resume(name), false),
        SyncCommand::Stop { name } => (Control::Stop(name), false),
    };
    match ask(&paths, &control, start).await? {
        ControlAnswer::Session(status) => {
            print_session(format, &status);
            Ok(())
        }
        ControlAnswer::Sessions(sessions) => {
            let json = serde_json::Value::Array(sessions.iter().map(status_json).collect());
            output::emit(format, &json, || status_table(&sessions));
            Ok(())
        }
        ControlAnswer::Error { code, message } => Err(CliError::local(code, message)),
    }
}
