//! Container runtimes: the real Docker engine ([`docker`]) and the simulated one ([`hollow`]).
//!
//! Both keep the same contract, so the reconciler cannot tell them apart:
//!
//! - Every container an agent makes carries the labels [`LABEL_HOST`], [`LABEL_WORKSPACE`] and
//!   [`LABEL_GENERATION`] (plus the owner and the published ports). [`Runtime::list`] returns
//!   only containers labelled with this agent's host, so two agents sharing one engine never see,
//!   let alone touch, each other's containers, and nothing unlabelled is ever touched.
//! - Names are derived from host, workspace and generation, so a create retried after a lost
//!   answer finds the first attempt's container instead of making a second.
//! - Errors are classified ([`ErrorKind`]) so the reconciler can apply the design's retry policy.

pub mod docker;
pub mod hollow;
pub mod probe;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{ContainerEvent, ContainerHealth, EngineInfo, PortProbe};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::model::{ContainerStats, PortBinding, ResourceClass};
use nexus_protocol::{HostId, UserName, WorkspaceName};
use tokio::sync::{Notify, mpsc};

pub use nexus_protocol::model::{FILES_MOUNT, LABEL_HOST, LABEL_WORKSPACE};
pub const LABEL_GENERATION: &str = "nexus.generation";
pub const LABEL_OWNER: &str = "nexus.owner";
/// The published ports, as `CONTAINER:HOST` pairs separated by commas.
pub const LABEL_PORTS: &str = "nexus.ports";

/// A container as the runtime reports it: only containers of this agent's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub workspace: WorkspaceName,
    pub generation: u64,
    pub status: ContainerStatus,
    pub ports: Vec<PortBinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContainerStatus {
    /// Made, never started.
    Created,
    /// Running (or paused, or being restarted by the engine).
    Running,
    /// Stopped: exited, dead, or being removed.
    Exited,
}

/// Everything needed to make one workspace's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    pub host: HostId,
    pub workspace: WorkspaceName,
    pub generation: u64,
    pub owner: UserName,
    pub image: String,
    pub class: ResourceClass,
    pub env: BTreeMap<String, String>,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    pub ports: Vec<PortBinding>,
    /// The workspace's files on this host, mounted at [`FILES_MOUNT`] (what sync keeps in step
    /// with the user's copy); `None`: no files directory.
    pub files: Option<std::path::PathBuf>,
    /// The bare git mirror the files directory is a worktree of, mounted (read-write) at the
    /// same absolute path, so that the worktree's `.git` link holds inside the container.
    pub mirror: Option<std::path::PathBuf>,
}

impl CreateSpec {
    /// The container's name: unique per host, workspace and generation.
    pub fn container_name(&self) -> String {
        format!(
            "nexus.{}.{}.g{}",
            self.host, self.workspace, self.generation
        )
    }

    /// The labels that mark the container as this agent's.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_HOST.to_string(), self.host.to_string()),
            (LABEL_WORKSPACE.to_string(), self.workspace.to_string()),
            (LABEL_GENERATION.to_string(), self.generation.to_string()),
            (LABEL_OWNER.to_string(), self.owner.to_string()),
            (LABEL_PORTS.to_string(), format_ports(&self.ports)),
        ])
    }
}

/// The network of one workspace on one host.
pub fn network_name(host: &HostId, workspace: &WorkspaceName) -> String {
    format!("nexus.{host}.{workspace}")
}

pub fn format_ports(ports: &[PortBinding]) -> String {
    ports
        .iter()
        .map(|p| format!("{}:{}", p.container, p.host))
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`format_ports`]; `None` for anything malformed.
pub fn parse_ports(text: &str) -> Option<Vec<PortBinding>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|pair| {
            let (container, host) = pair.split_once(':')?;
            Some(PortBinding {
                container: container.parse().ok()?,
                host: host.parse().ok()?,
            })
        })
        .collect()
}

/// Reads our labels back into a [`Container`]; `None` when the container is not `host`'s or its
/// labels are damaged (such a container is left alone).
pub fn container_from_labels(
    host: &HostId,
    id: String,
    labels: &std::collections::HashMap<String, String>,
    status: ContainerStatus,
) -> Option<Container> {
    if labels.get(LABEL_HOST).map(String::as_str) != Some(host.as_str()) {
        return None;
    }
    let workspace = labels.get(LABEL_WORKSPACE)?.parse().ok()?;
    let generation = labels.get(LABEL_GENERATION)?.parse().ok()?;
    let ports = parse_ports(labels.get(LABEL_PORTS).map_or("", String::as_str))?;
    Some(Container {
        id,
        workspace,
        generation,
        status,
        ports,
    })
}

/// How a container stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitDetails {
    pub exit_code: i64,
    pub oom_killed: bool,
    pub last_lines: Vec<String>,
}

/// The most output lines a crash report carries, and the longest line (a report becomes a Raft
/// entry and stays in the state).
pub const REPORTED_LINES: usize = 20;
pub const REPORTED_LINE_BYTES: usize = 512;
/// The longest error message reported.
pub const REPORTED_MESSAGE_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes, on a character boundary, marked when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl ExitDetails {
    /// The report of a container that stopped on its own: `CONTAINER_ERROR` with the details,
    /// cut to what a report may carry.
    pub fn to_error(&self, workspace: &WorkspaceName) -> WireError {
        let why = if self.oom_killed {
            " (killed: out of memory)"
        } else {
            ""
        };
        let skip = self.last_lines.len().saturating_sub(REPORTED_LINES);
        let last_lines: Vec<String> = self.last_lines[skip..]
            .iter()
            .map(|line| truncate(line, REPORTED_LINE_BYTES))
            .collect();
        let tail = last_lines.last().map_or(String::new(), |line| {
            format!("; last output: {}", truncate(line, 200))
        });
        WireError::new(
            ErrorCode::ContainerError,
            format!(
                "workspace {workspace}'s container exited with code {}{why}{tail}",
                self.exit_code
            ),
        )
        .with_detail(ErrorDetail::ContainerExited {
            exit_code: self.exit_code,
            oom_killed: self.oom_killed,
            last_lines,
        })
    }
}

/// One workspace network on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub workspace: Option<WorkspaceName>,
    /// Its IPv4 subnet, when it has one (the hollow runtime's have none).
    pub subnet: Option<String>,
}

/// An image the engine holds (host maintenance prunes the dangling ones no one uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:...`.
    pub id: String,
    /// `repo:tag`s; empty (or only `<none>:<none>`) for a dangling image.
    pub tags: Vec<String>,
    /// `repo@sha256:...`s.
    pub digests: Vec<String>,
    /// What removing it alone gives back: its size less what it shares with other images.
    pub bytes: u64,
    /// Containers made from it, of any host or none; `None` when the engine did not say.
    pub containers: Option<u64>,
}

/// A volume the engine holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub bytes: u64,
    /// Containers that mount it, of any host or none; `None` when the engine did not say.
    pub containers: Option<u64>,
}

/// The result of running a command in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What went wrong, in the terms the reconciler's retry policy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The engine does not answer: retried every 5 s until it does.
    Unavailable,
    /// The container (or network, or image) does not exist.
    NotFound,
    /// A name is taken (a create that already happened) or the thing is in the wrong state.
    Conflict,
    /// A host port is held by something else.
    PortInUse(u16),
    DiskFull,
    /// The image could not be found or pulled.
    Image,
    /// Anything else the engine refused.
    Failed,
    /// Making the workspace's git worktree failed: the remote refused the credentials
    /// (GIT_AUTH_FAILED, not retried by itself).
    GitAuth,
    /// Making the workspace's git worktree failed otherwise (GIT_FAILED).
    Git,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RuntimeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RuntimeError {
        RuntimeError {
            kind,
            message: message.into(),
        }
    }

    /// The error as reported to the coordinator, with the design's code (one of
    /// [`RuntimeError::CODES`]).
    pub fn to_wire(&self) -> WireError {
        let code = match self.kind {
            ErrorKind::Unavailable => ErrorCode::BackendUnavailable,
            ErrorKind::PortInUse(_) => ErrorCode::PortConflict,
            ErrorKind::DiskFull => ErrorCode::DiskFull,
            ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Image | ErrorKind::Failed => {
                ErrorCode::WorkspaceStartFailed
            }
            ErrorKind::GitAuth => ErrorCode::GitAuthFailed,
            ErrorKind::Git => ErrorCode::GitFailed,
        };
        let error = WireError::new(code, truncate(&self.message, REPORTED_MESSAGE_BYTES));
        match self.kind {
            ErrorKind::PortInUse(port) => error.with_detail(ErrorDetail::PortConflict { port }),
            _ => error,
        }
    }
}

impl RuntimeError {
    /// Every code [`RuntimeError::to_wire`] reports an engine's error under (a step's git
    /// errors, [`ErrorKind::Git`] and [`ErrorKind::GitAuth`], are not the engine's).
    pub const CODES: [ErrorCode; 4] = [
        ErrorCode::BackendUnavailable,
        ErrorCode::PortConflict,
        ErrorCode::DiskFull,
        ErrorCode::WorkspaceStartFailed,
    ];
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Exited => "exited",
        })
    }
}

/// The grace a container gets to stop before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The most engine events one answer carries: the newest.
pub const MAX_EVENTS: usize = 500;
/// The longest output of an image's healthcheck kept.
pub const HEALTHCHECK_OUTPUT_BYTES: usize = 1024;

/// A runtime that cannot answer a diagnostic (a test's double).
fn unsupported(what: &str) -> RuntimeError {
    RuntimeError::new(
        ErrorKind::Failed,
        format!("this runtime cannot tell {what}"),
    )
}

/// A container engine, as the reconciler drives it. Every operation is idempotent in effect:
/// starting a running container, stopping a stopped one or removing a missing one succeeds.
pub trait Runtime: Send + Sync + 'static {
    /// `docker` or `hollow`, for logs.
    fn name(&self) -> &'static str;

    /// Does the engine answer?
    fn ping(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// This host's containers (by label), in every state.
    fn list(&self) -> impl Future<Output = Result<Vec<Container>, RuntimeError>> + Send;

    /// Makes the workspace's network (if missing), pulls the image (if missing) and creates the
    /// container; answers its id. An existing container of the same name is answered as is.
    fn create(
        &self,
        spec: &CreateSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Pulls `image` if it is missing; answers whether it pulled. [`Runtime::create`] pulls a
    /// missing image too: this lets the reconciler time a pull apart from the create. A runtime
    /// with no images answers `false`.
    fn pull(&self, image: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send {
        let _ = image;
        async { Ok(false) }
    }

    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Asks the container to stop (SIGTERM to its init), killing it after `grace`.
    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes the container (stopping it first if need be).
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes a workspace's network, if there is one.
    fn remove_network(
        &self,
        host: &HostId,
        workspace: &WorkspaceName,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// This host's workspace networks (those labelled for it).
    fn networks(&self) -> impl Future<Output = Result<Vec<NetworkInfo>, RuntimeError>> + Send;

    /// How a stopped container ended.
    fn exit_details(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ExitDetails, RuntimeError>> + Send;

    /// The last `tail` lines the container wrote (stdout and stderr).
    fn logs(
        &self,
        id: &str,
        tail: usize,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;

    /// Sends the last `tail` lines the container wrote, then every new line as it is written,
    /// until the container stops (answered `Ok`) or `lines`' receiver goes away (also `Ok`).
    fn follow_logs(
        &self,
        id: &str,
        tail: usize,
        lines: mpsc::Sender<String>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs a command in a running container and waits for it.
    fn exec(
        &self,
        id: &str,
        command: &[String],
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send;

    /// One sample of the container's resource use. CPU % is measured against the previous sample
    /// of the same container (the first sample of a container reports 0).
    fn stats(&self, id: &str) -> impl Future<Output = Result<ContainerStats, RuntimeError>> + Send;

    /// What the engine says of the container now, for its workspace's health: its state, the
    /// last exit, restarts, and the image's own healthcheck.
    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerHealth, RuntimeError>> + Send {
        let _ = id;
        async { Err(unsupported("a container's state")) }
    }

    /// Whether `port`, published for a running container, accepts a connection on this host
    /// within `limit`.
    fn probe_port(
        &self,
        port: PortBinding,
        limit: Duration,
    ) -> impl Future<Output = PortProbe> + Send {
        let _ = limit;
        async move {
            PortProbe {
                container: port.container,
                host: port.host,
                accepting: false,
                error: Some(unsupported("whether a port accepts").message),
            }
        }
    }

    /// The engine's events about `workspace`'s containers on this host since `since` (or as far
    /// back as it remembers), oldest first: the newest [`MAX_EVENTS`].
    fn events(
        &self,
        workspace: &WorkspaceName,
        since: Option<Timestamp>,
    ) -> impl Future<Output = Result<Vec<ContainerEvent>, RuntimeError>> + Send {
        let _ = (workspace, since);
        async { Err(unsupported("its events")) }
    }

    /// Every image the engine holds, with what each would give back and its users (host
    /// maintenance). A runtime without images answers none.
    fn images(&self) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Removes an image by id, never by force: an image a container uses is refused
    /// (`Conflict`). A missing one counts as removed.
    fn remove_image(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let _ = id;
        async { Err(unsupported("its images")) }
    }

    /// Every volume the engine holds, with its size and its users.
    fn volumes(&self) -> impl Future<Output = Result<Vec<VolumeInfo>, RuntimeError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Removes a volume by name, never by force (one in use is refused). A missing one counts
    /// as removed.
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let _ = name;
        async { Err(unsupported("its volumes")) }
    }

    /// The engine's version and the containers it holds for this host.
    fn engine(&self) -> impl Future<Output = Result<EngineInfo, RuntimeError>> + Send {
        async { Err(unsupported("its version")) }
    }

    /// Wakes `wake` whenever one of this host's containers changes (starts, dies, is removed) or
    /// the engine comes back after an outage. Never returns; the agent runs it in a task of its
    /// own and aborts the task when it stops.
    fn watch_events(&self, wake: Arc<Notify>) -> impl Future<Output = ()> + Send;

    // The credential store (issue 24, credentials).
    /// [`Runtime::pull`] for `workspace`: a runtime that can ask the coordinators for the
    /// image's registry credential does so first (used for this pull only, never kept).
    fn pull_for(
        &self,
        image: &str,
        workspace: &WorkspaceName,
    ) -> impl Future<Output = Result<bool, RuntimeError>> + Send {
        let _ = workspace;
        self.pull(image)
    }

    /// Logs in to a registry with these credentials, as a pull would (`credentials check`):
    /// `Ok` when the registry took them. A runtime with no engine cannot tell.
    fn registry_login(
        &self,
        server: &str,
        username: &str,
        secret: &nexus_protocol::credentials::Secret,
    ) -> impl Future<Output = Result<(), WireError>> + Send {
        let _ = (server, username, secret);
        async {
            Err(WireError::new(
                ErrorCode::Unsupported,
                "this agent's runtime has no container engine to log in to a registry with",
            ))
        }
    }
}

/// Runs `runtime`'s event watch in a task of its own, waking `wake`; abort the handle to stop it.
pub fn spawn_events<R: Runtime>(
    runtime: &Arc<R>,
    wake: &Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    let runtime = runtime.clone();
    let wake = wake.clone();
    tokio::spawn(async move { runtime.watch_events(wake).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_cut_to_size() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghijk", 8), "abcde...");
        // Never inside a character.
        assert_eq!(truncate("ééééé", 6), "é...");
        let details = ExitDetails {
            exit_code: 3,
            oom_killed: true,
            last_lines: (0..100)
                .map(|i| format!("{i}{}", "x".repeat(2000)))
                .collect(),
        };
        let error = details.to_error(&"w".parse().unwrap());
        assert!(error.message.contains("code 3") && error.message.contains("out of memory"));
        assert!(error.message.len() < 400);
        match error.detail {
            Some(ErrorDetail::ContainerExited { last_lines, .. }) => {
                assert_eq!(last_lines.len(), REPORTED_LINES);
                assert!(last_lines[0].starts_with("80x"), "the last lines are kept");
                assert!(last_lines.iter().all(|l| l.len() <= REPORTED_LINE_BYTES));
            }
            other => panic!("{other:?}"),
        }
        let long = RuntimeError::new(ErrorKind::Failed, "y".repeat(5000)).to_wire();
        assert!(long.message.len() <= REPORTED_MESSAGE_BYTES);
    }

    #[test]
    fn ports_round_trip_and_damage_is_refused() {
        let ports = vec![
            PortBinding {
                container: 3000,
                host: 20001,
            },
            PortBinding {
                container: 22,
                host: 20002,
            },
        ];
        assert_eq!(parse_ports(&format_ports(&ports)), Some(ports));
        assert_eq!(parse_ports(""), Some(vec![]));
        assert_eq!(parse_ports("3000"), None);
        assert_eq!(parse_ports("3000:99999"), None);
        assert_eq!(parse_ports("a:1"), None);
    }

    #[test]
    fn labels_are_read_back_only_for_our_host() {
        let spec = CreateSpec {
            host: "h1".parse().unwrap(),
            workspace: "api".parse().unwrap(),
            generation: 3,
            owner: "ada".parse().unwrap(),
            image: "img".into(),
            class: ResourceClass::Small,
            env: BTreeMap::new(),
            command: vec![],
            ports: vec![PortBinding {
                container: 80,
                host: 20000,
            }],
            files: None,
            mirror: None,
        };
        let labels: std::collections::HashMap<_, _> = spec.labels().into_iter().collect();
        let container =
            container_from_labels(&spec.host, "id".into(), &labels, ContainerStatus::Running)
                .unwrap();
        assert_eq!(container.workspace, spec.workspace);
        assert_eq!(container.generation, 3);
        assert_eq!(container.ports, spec.ports);
        let other: HostId = "h2".parse().unwrap();
        assert!(
            container_from_labels(&other, "id".into(), &labels, ContainerStatus::Running).is_none()
        );
        let mut damaged = labels.clone();
        damaged.insert(LABEL_GENERATION.into(), "x".into());
        assert!(
            container_from_labels(&spec.host, "id".into(), &damaged, ContainerStatus::Running)
                .is_none()
        );
        assert_eq!(spec.container_name(), "nexus.h1.api.g3");
    }
}
