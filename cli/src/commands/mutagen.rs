//! `--provider mutagen`: sync sessions run by a `mutagen` binary on PATH instead of the embedded
//! engine.
//!
//! Nexus does what Mutagen cannot: it authorises (the coordinator tells only the workspace's
//! owner, or an admin, where the workspace runs) and finds the workspace's container by its
//! labels. Mutagen is then handed the two ends, the local directory and
//! `docker://CONTAINER/workspace`, and reaches the container through the Docker engine of the
//! workspace's host: this machine's when the host's address is on loopback, else
//! `ssh://HOST` (so the user needs SSH and Docker access to the host), unless `DOCKER_HOST` is
//! set, which Mutagen takes as it is. Mutagen's sessions are named `nexus-NAME` and carry the
//! label `nexus-workspace=NAME`; `status` and the session commands find them by it.
//!
//! Mutagen resolves a conflict when the losing copy is deleted; `resolve` says so rather than
//! pretending.

use std::path::{Path, PathBuf};

use nexus_protocol::error::ErrorCode;
use nexus_protocol::model::{FILES_MOUNT, LABEL_HOST, LABEL_WORKSPACE};
use nexus_protocol::{HostId, WorkspaceName};
use nexus_sync::Mode;
use serde::Deserialize;

use crate::args::SyncStartArgs;
use crate::error::CliError;
use crate::settings::Settings;
use crate::syncd::{ConflictView, SessionStatus};

/// The label that marks a Mutagen session as a workspace's.
pub const LABEL: &str = "nexus-workspace";

/// The `mutagen` binary on PATH, if there is one.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("mutagen"))
        .find(|candidate| candidate.is_file())
}

/// The binary, or the error that says to install it or use the embedded provider.
pub fn required() -> Result<PathBuf, CliError> {
    binary().ok_or_else(|| {
        CliError::local(ErrorCode::SyncProviderNotFound, "no `mutagen` on PATH")
            .suggest("install Mutagen, or use the embedded provider (the default): drop --provider")
    })
}

fn session_name(workspace: &WorkspaceName) -> String {
    format!("nexus-{workspace}")
}

fn failed(message: impl Into<String>) -> CliError {
    CliError::local(ErrorCode::SyncSessionFailed, message)
}

/// How long listing Mutagen's sessions may take.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long any other Mutagen command may take (a flush waits for a whole cycle).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs a command for at most `limit` and gives its standard output, or its failure as
/// `SYNC_SESSION_FAILED`.
async fn output(
    command: &mut tokio::process::Command,
    what: &str,
    limit: std::time::Duration,
) -> Result<String, CliError> {
    let running = command
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, running)
        .await
        .map_err(|_| failed(format!("{what} did not answer within {limit:?}")))?
        .map_err(|e| failed(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| failed(format!("{what} printed something not UTF-8")))
}

/// `DOCKER_HOST` for reaching the engine of the host whose agent is at `address`: none for this
/// machine (or when the user has set `DOCKER_HOST`), else `ssh://HOST`.
fn docker_host(address: &str) -> Option<String> {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return None;
    }
    let host = match address.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    };
    let ip = host.parse::<std::net::IpAddr>().ok();
    let local = host == "localhost" || ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if local {
        return None;
    }
    Some(match ip {
        Some(std::net::IpAddr::V6(v6)) => format!("ssh://[{v6}]"),
        _ => format!("ssh://{host}"),
    })
}

/// Starts a Mutagen session between `args.local` and the workspace's container, and gives its
/// status.
pub async fn start(
    mutagen: &Path,
    args: &SyncStartArgs,
    settings: &Settings,
) -> Result<SessionStatus, CliError> {
    let local = std::fs::canonicalize(&args.local).map_err(|e| {
        CliError::local(
            ErrorCode::InvalidArgument,
            format!("{}: {e}", args.local.display()),
        )
    })?;
    // The coordinator answers only the workspace's owner or an admin.
    let (host, address) = crate::agents::endpoint_of(settings, &args.name).await?;
    let docker_host = docker_host(&address);
    let container = container_of(&host, &args.name, docker_host.as_deref()).await?;
    // (A Mutagen whose daemon is not running has no sessions; `create` starts it.)
    if existing(mutagen, &args.name)
        .await
        .is_ok_and(|sessions| !sessions.is_empty())
    {
        return Err(failed(format!(
            "a Mutagen session for {} exists already",
            args.name
        ))
        .suggest(&format!(
            "stop it first: nexus workspace sync stop {}",
            args.name
        )));
    }
    let mut command = tokio::process::Command::new(mutagen);
    command.args(create_args(args, &local, &container));
    if let Some(docker_host) = &docker_host {
        command.env("DOCKER_HOST", docker_host);
    }
    output(&mut command, "mutagen sync create", COMMAND_TIMEOUT).await?;
    let mut sessions = existing(mutagen, &args.name).await?;
    sessions
        .pop()
        .ok_or_else(|| failed("mutagen made no session (it lists none)"))
}

fn create_args(args: &SyncStartArgs, local: &Path, container: &str) -> Vec<String> {
    let mut list = vec![
        "sync".to_string(),
        "create".into(),
        "--name".into(),
        session_name(&args.name),
        "--label".into(),
        format!("{LABEL}={}", args.name),
        "--mode".into(),
        args.mode.as_str().into(),
    ];
    for pattern in &args.ignore {
        list.extend(["--ignore".into(), pattern.clone()]);
    }
    if args.ignore_vcs {
        list.push("--ignore-vcs".into());
    }
    list.push(local.display().to_string());
    list.push(format!("docker://{container}{FILES_MOUNT}"));
    list
}

/// The name of the workspace's container on its host, found by the labels the agent puts on it.
async fn container_of(
    host: &HostId,
    workspace: &WorkspaceName,
    docker_host: Option<&str>,
) -> Result<String, CliError> {
    let mut command = tokio::process::Command::new("docker");
    command.args([
        "ps",
        "--filter",
        &format!("label={LABEL_HOST}={host}"),
        "--filter",
        &format!("label={LABEL_WORKSPACE}={workspace}"),
        "--format",
        "{{.Names}}",
    ]);
    if let Some(docker_host) = docker_host {
        command.env("DOCKER_HOST", docker_host);
    }
    let names = output(&mut command, "docker ps", LIST_TIMEOUT).await.map_err(|e| {
        e.suggest(&format!(
            "Mutagen reaches the workspace through the Docker engine of host {host}: this machine needs the docker CLI and access to that engine (DOCKER_HOST, or SSH to the host)"
        ))
    })?;
    let mut names = names.lines().filter(|line| !line.is_empty());
    match (names.next(), names.next()) {
        (Some(name), None) => Ok(name.to_string()),
        (None, _) => Err(CliError::local(
            ErrorCode::InvalidArgument,
            format!("workspace {workspace} has no running container on host {host}"),
        )
        .suggest(&format!(
            "start it first: nexus workspace start {workspace}"
        ))),
        (Some(_), Some(_)) => Err(failed(format!(
            "workspace {workspace} has more than one running container on host {host}"
        ))
        .suggest("wait for the agent to remove the old one, then try again")),
    }
}

/// What `mutagen sync list --template '{{ json . }}'` says of a session (the fields used).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    alpha: ListedEndpoint,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    successful_cycles: u64,
    #[serde(default)]
    conflicts: Vec<ListedConflict>,
    #[serde(default)]
    last_error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ListedEndpoint {
    #[serde(default)]
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedConflict {
    root: String,
    #[serde(default)]
    alpha_changes: Vec<ListedChange>,
    #[serde(default)]
    beta_changes: Vec<ListedChange>,
}

#[derive(Debug, Deserialize)]
struct ListedChange {
    #[serde(default)]
    new: Option<ListedEntry>,
}

#[derive(Debug, Deserialize)]
struct ListedEntry {
    #[serde(default)]
    kind: String,
}

/// What one side's changes left at a conflict's root: the kind of entry, or `None` if deleted.
fn left(changes: &[ListedChange]) -> Option<String> {
    changes
        .first()
        .and_then(|change| change.new.as_ref())
        .map(|entry| entry.kind.clone())
}

impl Listed {
    fn status(self) -> Option<SessionStatus> {
        let workspace = self.labels.get(LABEL)?.parse().ok()?;
        let state = if self.paused {
            "paused".to_string()
        } else {
            self.status.unwrap_or_else(|| "unknown".into())
        };
        Some(SessionStatus {
            workspace,
            local: PathBuf::from(self.alpha.path),
            mode: self
                .mode
                .and_then(|mode| mode.parse().ok())
                .unwrap_or(Mode::TwoWaySafe),
            state,
            cycles: self.successful_cycles,
            changes: 0,
            conflicts: self
                .conflicts
                .into_iter()
                .map(|conflict| ConflictView {
                    local: left(&conflict.alpha_changes),
                    remote: left(&conflict.beta_changes),
                    path: conflict.root,
                })
                .collect(),
            last_error: self.last_error,
            refused: vec![],
            last_sync: None,
        })
    }
}

/// Mutagen's sessions for `workspace`, or for every workspace. Listing never starts Mutagen's
/// daemon: none running means no sessions (and a failure, which the callers that only look
/// leave out).
async fn list(
    mutagen: &Path,
    workspace: Option<&WorkspaceName>,
) -> Result<Vec<SessionStatus>, CliError> {
    let selector = match workspace {
        Some(workspace) => format!("{LABEL}={workspace}"),
        None => LABEL.to_string(),
    };
    let json = output(
        tokio::process::Command::new(mutagen)
            .env("MUTAGEN_DISABLE_AUTOSTART", "1")
            .args([
                "sync",
                "list",
                "--label-selector",
                &selector,
                "--template",
                "{{ json . }}",
            ]),
        "mutagen sync list",
        LIST_TIMEOUT,
    )
    .await?;
    let listed: Option<Vec<Listed>> = serde_json::from_str(json.trim()).map_err(|e| {
        failed(format!(
            "mutagen sync list printed what is not its JSON: {e}"
        ))
    })?;
    Ok(listed
        .unwrap_or_default()
        .into_iter()
        .filter_map(Listed::status)
        .collect())
}

async fn existing(
    mutagen: &Path,
    workspace: &WorkspaceName,
) -> Result<Vec<SessionStatus>, CliError> {
    list(mutagen, Some(workspace)).await
}

/// Says on stderr that Mutagen could not be asked, and goes on without its sessions: a broken
/// Mutagen must not stop the embedded provider's commands.
fn unasked(error: &CliError) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "nexus: Mutagen's sessions are left out: {}",
        error.error.message
    );
}

/// Every workspace's Mutagen sessions; none when Mutagen is not installed (or fails).
pub async fn sessions() -> Vec<SessionStatus> {
    let Some(mutagen) = binary() else {
        return vec![];
    };
    list(&mutagen, None).await.unwrap_or_else(|error| {
        unasked(&error);
        vec![]
    })
}

/// The Mutagen session of `workspace`, if Mutagen is installed and runs one. A Mutagen that
/// cannot answer (its daemon not running, most often) runs none: the embedded provider's
/// commands go on, and `status` says what failed.
pub async fn session_of(workspace: &WorkspaceName) -> Option<SessionStatus> {
    existing(&binary()?, workspace).await.ok()?.pop()
}

/// What a session command does to a Mutagen session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Flush,
    Pause,
    Resume,
    Stop,
}

/// Runs `verb` on the Mutagen session of `workspace` (which [`session_of`] found), and gives
/// its status after.
pub async fn drive(
    workspace: &WorkspaceName,
    before: SessionStatus,
    verb: Verb,
) -> Result<SessionStatus, CliError> {
    let mutagen = required()?;
    if verb == Verb::Flush && before.state == "paused" {
        return Err(CliError::local(
            ErrorCode::SyncPaused,
            format!("the sync session of {workspace} is paused"),
        )
        .suggest(&format!(
            "resume it: nexus workspace sync resume {workspace}"
        )));
    }
    let word = match verb {
        Verb::Flush => "flush",
        Verb::Pause => "pause",
        Verb::Resume => "resume",
        Verb::Stop => "terminate",
    };
    output(
        tokio::process::Command::new(&mutagen).args(["sync", word, &session_name(workspace)]),
        &format!("mutagen sync {word}"),
        COMMAND_TIMEOUT,
    )
    .await?;
    if verb == Verb::Stop {
        return Ok(SessionStatus {
            state: "stopped".into(),
            ..before
        });
    }
    let after = existing(&mutagen, workspace)
        .await?
        .pop()
        .ok_or_else(|| failed(format!("the Mutagen session of {workspace} is gone")))?;
    if verb == Verb::Flush && !after.conflicts.is_empty() {
        return Err(CliError::local(
            ErrorCode::SyncConflict,
            format!(
                "{} conflict(s) in the sync session of {workspace}",
                after.conflicts.len()
            ),
        )
        .suggest(&format!(
            "see them with `nexus workspace sync conflicts {workspace}`; Mutagen settles one when you delete the copy you do not want"
        )));
    }
    Ok(after)
}

/// Mutagen has no command to keep one side of a conflict.
pub fn resolve_refused(workspace: &WorkspaceName) -> CliError {
    CliError::local(
        ErrorCode::Unsupported,
        format!("the sync session of {workspace} is Mutagen's, which has no resolve command"),
    )
    .suggest("delete the copy you do not want (locally, or with `nexus workspace exec`): Mutagen then propagates the other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_engine_is_this_machines_for_a_loopback_host() {
        // A DOCKER_HOST of the user's is used as it is (and makes these answers None).
        if std::env::var_os("DOCKER_HOST").is_some() {
            return;
        }
        assert_eq!(docker_host("127.0.0.1:7100"), None);
        assert_eq!(docker_host("[::1]:7100"), None);
        assert_eq!(docker_host("localhost:7100"), None);
        assert_eq!(
            docker_host("dev-17.example.com:7100"),
            Some("ssh://dev-17.example.com".into())
        );
        assert_eq!(docker_host("10.0.0.7:7100"), Some("ssh://10.0.0.7".into()));
    }

    #[test]
    fn a_listed_session_reads_as_a_status() {
        let json = r#"[{"identifier":"sync_x","name":"nexus-web","labels":{"nexus-workspace":"web"},
            "alpha":{"protocol":"local","path":"/home/ada/web","connected":true},
            "beta":{"protocol":"docker","host":"nexus.h1.web.g1","path":"/workspace"},
            "mode":"two-way-resolved","paused":false,"status":"watching","successfulCycles":3,
            "conflicts":[{"root":"a.txt","alphaChanges":[{"path":"a.txt","old":null,"new":{"kind":"file"}}],
            "betaChanges":[{"path":"a.txt","old":{"kind":"file"},"new":null}]}],
            "lastError":"beta: disconnected"},
            {"name":"other","alpha":{"path":"/x"},"beta":{"path":"/y"},"status":"watching"}]"#;
        let listed: Vec<Listed> = serde_json::from_str(json).unwrap();
        let statuses: Vec<_> = listed.into_iter().filter_map(Listed::status).collect();
        assert_eq!(statuses.len(), 1, "a session without our label is not ours");
        let web = &statuses[0];
        assert_eq!(web.workspace.as_str(), "web");
        assert_eq!(web.local, PathBuf::from("/home/ada/web"));
        assert_eq!(web.mode, Mode::TwoWayResolved);
        assert_eq!(web.state, "watching");
        assert_eq!(web.cycles, 3);
        assert_eq!(
            web.conflicts,
            vec![ConflictView {
                path: "a.txt".into(),
                local: Some("file".into()),
                remote: None,
            }]
        );
        assert_eq!(web.last_error.as_deref(), Some("beta: disconnected"));
        let paused: Listed = serde_json::from_str(
            r#"{"labels":{"nexus-workspace":"web"},"alpha":{"path":"/a"},"paused":true}"#,
        )
        .unwrap();
        assert_eq!(paused.status().unwrap().state, "paused");
        // Mutagen prints `null` when it has no sessions.
        let none: Option<Vec<Listed>> = serde_json::from_str("null").unwrap();
        assert!(none.is_none());
    }
}
