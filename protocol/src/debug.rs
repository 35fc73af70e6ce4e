//! The vocabulary of debugging the fleet: daemons' log records and the query that selects them,
//! the hops of a request's trace, workspace events, a workspace's health as its agent sees it,
//! and the diagnostics a support bundle gathers.
//!
//! Plain data that crosses the wire (bincode, like every message): **append-only** like
//! [`crate::message`]: enums only grow at the end.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::WireError;
use crate::id::{HostId, RequestId, UserName, WorkspaceName};
use crate::identity::Identity;
use crate::model::{DesiredRun, WorkspaceState};

/// A log record's severity, least severe first (so `level >= min` selects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }
}

/// Which of a daemon's log records to send (`nexus admin logs`, `admin trace`, `workspace logs
/// --system`). Every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Records at or after this time, in microseconds since the Unix epoch.
    pub since_us: Option<u64>,
    /// Records before this time.
    pub until_us: Option<u64>,
    pub min_level: LogLevel,
    /// A regular expression the record's message (or one of its fields) must match.
    pub grep: Option<String>,
    /// Records written inside this request.
    pub request: Option<RequestId>,
    /// Records about this workspace.
    pub workspace: Option<WorkspaceName>,
    /// At most this many records: the newest that match, sent oldest first. The server caps it.
    pub limit: u32,
    /// After the matching records, keep sending new ones as they are written (a subscription).
    pub follow: bool,
    /// Only the records of closed hops ([`LogRecord::span`] set), for traces.
    pub spans_only: bool,
}

/// One line of a daemon's structured log, as written to its log directory and read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it was written (for a hop: when the hop began), microseconds since the Unix epoch.
    pub at_us: u64,
    pub level: LogLevel,
    /// The module that wrote it (`nexus_agent::reconcile`).
    pub target: String,
    /// The daemon that wrote it: `coordinator-1`, `agent-host-a`, `syncd`.
    pub source: String,
    pub request_id: Option<RequestId>,
    pub workspace: Option<WorkspaceName>,
    pub message: String,
    /// The event's other fields, in the order written, as text.
    pub fields: Vec<(String, String)>,
    /// Set when the record is a hop that ended: its name, how long it took and how it ended.
    pub span: Option<SpanRecord>,
}

/// A hop of a request (a `tracing` span named [`HOP_SPAN`]) that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// What the hop did: the span's [`HOP_FIELD`], e.g. `coordinator.propose`.
    pub name: String,
    pub duration_us: u64,
    /// The span's [`OUTCOME_FIELD`] if the code recorded one: `ok`, or an error code and message.
    pub outcome: Option<String>,
}

/// The name of every hop's span. A hop is a span `tracing::info_span!(HOP_SPAN, hop = "...",
/// request_id = %id, workspace = ..., outcome = tracing::field::Empty)`; the file logger writes a
/// [`LogRecord`] with [`LogRecord::span`] when it closes.
pub const HOP_SPAN: &str = "hop";
/// The field that names a hop.
pub const HOP_FIELD: &str = "hop";
/// The field that carries a request id (the `Display` of [`RequestId`]), on a hop or any span
/// that encloses the records of one request.
pub const REQUEST_ID_FIELD: &str = "request_id";
/// The field that names a workspace, on a span or an event.
pub const WORKSPACE_FIELD: &str = "workspace";
/// The field a hop records its outcome in, before it closes.
pub const OUTCOME_FIELD: &str = "outcome";

/// Who changed a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A person (user or admin), an agent or a coordinator, by its certificate's identity.
    Identity(Identity),
    /// The failure detector (a host went silent, or came back).
    Detector,
    /// An automatic policy, by name.
    Policy(String),
}

/// What happened to a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Placed on a host.
    Created { host: HostId },
    /// Someone asked for it to run, stop or go away.
    Wanted(DesiredRun),
    /// Its state changed (as its agent reported, or as the fleet decided).
    State {
        from: WorkspaceState,
        to: WorkspaceState,
    },
    /// A restart was asked for.
    Restart,
    /// Its container is to be recreated, at this generation.
    Repair { generation: u64 },
    /// Its host ports were given anew after a conflict.
    PortsReassigned,
    /// Held: exempt from every automatic action.
    Held,
    /// Released from a hold: its policies apply again.
    Released,
    /// Its lifetime was pushed out by this many seconds.
    Extended { by_secs: u64 },
    /// A policy told its owner of an action to come (the reason is the notice's text).
    Noticed,
}

/// One entry of a workspace's history, replicated with the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceEvent {
    /// The workspace's own event counter: gaps mean older events were dropped.
    pub seq: u64,
    pub at: Timestamp,
    pub actor: Actor,
    /// The request that caused it, when one did.
    pub request_id: Option<RequestId>,
    pub kind: EventKind,
    pub reason: Option<String>,
    pub error: Option<WireError>,
}

/// What the replicated state remembers of one request (`nexus admin trace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When its proposer proposed it.
    pub at: Timestamp,
    /// `None`: applied; else why it was rejected.
    pub rejected: Option<WireError>,
    /// The workspace events it caused, as still remembered.
    pub events: Vec<(WorkspaceName, WorkspaceEvent)>,
}

/// What a daemon can tell about itself for a support bundle, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Diagnostic {
    /// Its effective configuration (TOML), secrets redacted.
    Config,
    /// Its `/metrics` exposition (the classic text format).
    Metrics,
    /// Its certificates' subjects and expiries (JSON).
    Certificates,
    /// Its `/readyz?verbose` checks.
    Readiness,
    /// Agents: the engine's version and the containers it holds (JSON).
    Engine,
}

/// A workspace's health as its agent observes it (`nexus admin workspace health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceHealth {
    pub workspace: WorkspaceName,
    /// `None`: the agent holds no container for it.
    pub container: Option<ContainerHealth>,
    pub ports: Vec<PortProbe>,
    pub sync: Vec<SyncSessionView>,
    /// The size of the workspace's files directory, if it has one.
    pub files_bytes: Option<u64>,
    /// The most the files directory may hold, if there is a limit.
    pub files_limit_bytes: Option<u64>,
    /// The walk of the files directory stopped at its bound (entries or time): `files_bytes`
    /// is then what it counted, a lower bound.
    pub files_partial: bool,
}

/// What the engine says of a workspace's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHealth {
    pub running: bool,
    /// The engine's word for its state (`running`, `exited`, ...).
    pub status: String,
    pub restarts: u64,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// The engine's error, if starting it failed.
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The image's own healthcheck, if it has one: `healthy`, `unhealthy` or `starting`, and
    /// its last output.
    pub healthcheck: Option<(String, Option<String>)>,
}

/// Whether a published port accepts a connection on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortProbe {
    pub container: u16,
    pub host: u16,
    pub accepting: bool,
    pub error: Option<String>,
}

/// One sync session a workspace's agent serves, as the agent last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSessionView {
    pub session: u64,
    pub user: Option<UserName>,
    pub provider: String,
    /// `syncing`, `watching`, `paused`, `failed`.
    pub state: String,
    pub last_cycle: Option<Timestamp>,
    /// Changes the session moved since the agent began to hear from it.
    pub changes: u64,
    pub conflicts: u64,
}

/// One engine event about a workspace's container (`workspace logs --system`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub at: Timestamp,
    /// The engine's action: `create`, `start`, `die`, `oom`, `kill`, ...
    pub action: String,
    pub attributes: Vec<(String, String)>,
}

/// One certificate a daemon holds ([`Diagnostic::Certificates`], as a JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Which: `node` (the daemon's own) or `ca` (the earliest-expiring trusted CA).
    pub certificate: String,
    /// The identity it names (`nexus://agent/h1`), for the daemon's own.
    pub subject: Option<String>,
    /// When it expires, in seconds since the Unix epoch, if known.
    pub not_after: Option<i64>,
}

impl CertificateInfo {
    /// A daemon's certificates: its own, naming `identity`, expiring at `own`, and its CA's
    /// (the earliest-expiring trusted one), at `ca` (seconds since the Unix epoch, as
    /// `Credentials::expiries` gives them).
    pub fn of(
        identity: Option<&Identity>,
        own: Option<i64>,
        ca: Option<i64>,
    ) -> Vec<CertificateInfo> {
        vec![
            CertificateInfo {
                certificate: "node".into(),
                subject: identity.map(Identity::uri),
                not_after: own,
            },
            CertificateInfo {
                certificate: "ca".into(),
                subject: None,
                not_after: ca,
            },
        ]
    }
}

/// An agent's container engine ([`Diagnostic::Engine`], as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// The runtime: `docker` or `hollow`.
    pub runtime: String,
    pub version: Option<String>,
    pub api_version: Option<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
    /// The containers labelled for this host (never their environment).
    pub containers: Vec<EngineContainer>,
}

/// One of the containers an engine holds for its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineContainer {
    pub name: String,
    pub image: String,
    /// The engine's word for its state (`running`, `exited`, ...).
    pub state: String,
    pub workspace: Option<WorkspaceName>,
    pub generation: Option<u64>,
}

/// One setting a reload changed: its config file key, and its value before and after (secrets
/// redacted, as [`Diagnostic::Config`] shows them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedSetting {
    pub key: String,
    pub old: String,
    pub new: String,
}

/// What a daemon did when asked to reload its configuration (`nexus config reload`, SIGHUP):
/// every hot setting that changed was applied at once, or, with `errors`, none was and the old
/// settings stay in force.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Who answers: `coordinator-1`, `agent-host-a`.
    pub source: String,
    /// The hot settings that changed and are now in force (empty when `errors` is not).
    pub applied: Vec<ChangedSetting>,
    /// The keys of settings that changed in the file but take effect only at the next start.
    pub needs_restart: Vec<String>,
    /// Why nothing was applied: the file does not read, a value is out of its range, a
    /// certificate does not load.
    pub errors: Vec<String>,
}

impl ReloadReport {
    /// Whether the reload was refused.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// What a daemon tells its service manager after a reload (`systemctl status`'s line).
    pub fn status_line(&self) -> String {
        if self.failed() {
            return format!(
                "serving; the reload was refused, nothing changed: {}",
                self.errors.join("; ")
            );
        }
        if self.needs_restart.is_empty() {
            "serving; configuration reloaded".to_string()
        } else {
            format!(
                "serving; configuration reloaded; at the next start: {}",
                self.needs_restart.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_tells_the_service_manager_what_it_did() {
        let mut report = ReloadReport::default();
        assert_eq!(report.status_line(), "serving; configuration reloaded");
        report.needs_restart = vec!["listen".into(), "data_dir".into()];
        assert_eq!(
            report.status_line(),
            "serving; configuration reloaded; at the next start: listen, data_dir"
        );
        report.errors = vec!["line 3: unknown field `bogus`".into()];
        assert_eq!(
            report.status_line(),
            "serving; the reload was refused, nothing changed: line 3: unknown field `bogus`"
        );
    }
}
