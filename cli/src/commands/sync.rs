//! `nexus workspace sync ...`: the user's sync sessions, run by the per-user daemon
//! ([`crate::syncd`]), which this starts when it is not running.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_protocol::WorkspaceName;
use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::ErrorCode;
use nexus_sync::{RelPath, Side};
use serde_json::json;

use crate::args::{KeepArg, OutputFormat, ProviderArg, SyncCommand};
use crate::commands::mutagen;
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
    // The daemon writes its log itself (appending, rotating); what reaches its stdout and
    // stderr (a panic) is appended to the same file, never truncating an earlier daemon's.
    let log = paths.log().current();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| failed(format!("{}: {e}", log.display())))?;
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

/// Which engine runs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Embedded,
    Mutagen,
}

impl Provider {
    fn as_str(self) -> &'static str {
        match self {
            Provider::Embedded => "embedded",
            Provider::Mutagen => "mutagen",
        }
    }
}

fn status_json(status: &SessionStatus, provider: Provider) -> serde_json::Value {
    json!({
        "workspace": status.workspace.as_str(),
        "provider": provider.as_str(),
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
        "last_sync": status.last_sync.map(output::rfc3339),
    })
}

fn status_table(sessions: &[(SessionStatus, Provider)], now: Timestamp) -> String {
    if sessions.is_empty() {
        return "no sync sessions\n".into();
    }
    output::table(
        &[
            "WORKSPACE",
            "PROVIDER",
            "LOCAL",
            "MODE",
            "STATE",
            "LAST SYNC",
            "CHANGES",
            "CONFLICTS",
            "LAST ERROR",
        ],
        sessions
            .iter()
            .map(|(s, provider)| {
                // Mutagen does not say when it last synced.
                let last_sync = match provider {
                    Provider::Embedded => output::ago(s.last_sync, now),
                    Provider::Mutagen => "-".to_string(),
                };
                vec![
                    s.workspace.to_string(),
                    provider.as_str().to_string(),
                    s.local.display().to_string(),
                    s.mode.to_string(),
                    s.state.clone(),
                    last_sync,
                    s.changes.to_string(),
                    s.conflicts.len().to_string(),
                    s.last_error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    )
}

fn print_session(format: OutputFormat, status: &SessionStatus, provider: Provider) {
    output::emit(format, &status_json(status, provider), || {
        status_table(&[(status.clone(), provider)], clock::now())
    });
}

pub async fn run(
    command: SyncCommand,
    settings: Result<Settings, CliError>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let paths = paths()?;
    // A workspace whose session is Mutagen's: Mutagen does what is asked.
    let mutagen_verb = match &command {
        SyncCommand::Flush { name } => Some((name, Some(mutagen::Verb::Flush))),
        SyncCommand::Pause { name } => Some((name, Some(mutagen::Verb::Pause))),
        SyncCommand::Resume { name } => Some((name, Some(mutagen::Verb::Resume))),
        SyncCommand::Stop { name } => Some((name, Some(mutagen::Verb::Stop))),
        SyncCommand::Resolve { name, .. } => Some((name, None)),
        SyncCommand::Start(_) | SyncCommand::Status | SyncCommand::Conflicts { .. } => None,
    };
    if let Some((name, verb)) = mutagen_verb
        && let Some(before) = mutagen::session_of(name).await
    {
        let Some(verb) = verb else {
            return Err(mutagen::resolve_refused(name));
        };
        let status = mutagen::drive(name, before, verb).await?;
        print_session(format, &status, Provider::Mutagen);
        return Ok(());
    }
    let (control, start) = match command {
        SyncCommand::Start(args) => {
            // One provider a workspace: two would sync the same files against each other.
            if args.provider == ProviderArg::Mutagen {
                let binary = mutagen::required()?;
                if embedded_session(&paths, &args.name).await.is_some() {
                    return Err(failed(format!(
                        "the embedded provider syncs {} already",
                        args.name
                    ))
                    .suggest(&format!(
                        "stop that session first: nexus workspace sync stop {}",
                        args.name
                    )));
                }
                let status = mutagen::start(&binary, &args, &settings?).await?;
                print_session(format, &status, Provider::Mutagen);
                return Ok(());
            }
            if mutagen::session_of(&args.name).await.is_some() {
                return Err(
                    failed(format!("Mutagen syncs {} already", args.name)).suggest(&format!(
                        "stop that session first: nexus workspace sync stop {}",
                        args.name
                    )),
                );
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
        SyncCommand::Status => {
            let sessions = all_sessions(&paths).await?;
            let json = serde_json::Value::Array(
                sessions
                    .iter()
                    .map(|(status, provider)| status_json(status, *provider))
                    .collect(),
            );
            output::emit(format, &json, || status_table(&sessions, clock::now()));
            return Ok(());
        }
        SyncCommand::Conflicts { name } => {
            let sessions = all_sessions(&paths).await?;
            let Some((session, provider)) = sessions.into_iter().find(|(s, _)| s.workspace == name)
            else {
                return Err(CliError::local(
                    ErrorCode::WorkspaceNotFound,
                    format!("no sync session for {name}"),
                ));
            };
            let json = status_json(&session, provider)["conflicts"].clone();
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
            print_session(format, &status, Provider::Embedded);
            Ok(())
        }
        answer @ ControlAnswer::Sessions(_) => {
            Err(failed(format!("unexpected answer: {answer:?}")))
        }
        ControlAnswer::Error { code, message } => Err(CliError::local(code, message)),
    }
}

/// The daemon's session of `workspace`, if the daemon runs and has one.
async fn embedded_session(paths: &Paths, workspace: &WorkspaceName) -> Option<SessionStatus> {
    match syncd::ask(&paths.socket(), &Control::Status).await {
        Ok(ControlAnswer::Sessions(sessions)) => {
            sessions.into_iter().find(|s| &s.workspace == workspace)
        }
        _ => None,
    }
}

/// Every session: the daemon's (if it runs) and Mutagen's (if it is installed).
async fn all_sessions(paths: &Paths) -> Result<Vec<(SessionStatus, Provider)>, CliError> {
    let mut sessions = match syncd::ask(&paths.socket(), &Control::Status).await {
        Ok(ControlAnswer::Sessions(sessions)) => sessions
            .into_iter()
            .map(|status| (status, Provider::Embedded))
            .collect(),
        Ok(answer) => return Err(failed(format!("unexpected answer: {answer:?}"))),
        // No daemon: no embedded sessions.
        Err(_) => vec![],
    };
    sessions.extend(
        mutagen::sessions()
            .await
            .into_iter()
            .map(|status| (status, Provider::Mutagen)),
    );
    Ok(sessions)
}
