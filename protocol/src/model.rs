//! The plain data of the fleet: workspace specs and states, resource classes, host facts and
//! stats. No behaviour beyond validation and small conversions lives here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::InvalidValue;
use crate::id::{HostId, NodeId, UserName, WorkspaceName};

/// Free-form key/value labels on hosts and workspaces. A `BTreeMap`, so replicated state that
/// holds labels stays deterministic.
pub type Labels = BTreeMap<String, String>;

/// Parses `KEY=VALUE` (a label or an environment variable, as command lines take them).
pub fn parse_key_value(value: &str) -> Result<(String, String), InvalidValue> {
    match value.split_once('=') {
        Some((key, val)) if !key.is_empty() => Ok((key.to_string(), val.to_string())),
        _ => Err(InvalidValue(format!(
            "invalid {value:?}: expected KEY=VALUE"
        ))),
    }
}

/// The size of a workspace: what the scheduler reserves and the runtime enforces.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum ResourceClass {
    Small,
    #[default]
    Medium,
    Large,
}

/// What a resource class reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Thousandths of a CPU core.
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

const GIB: u64 = 1 << 30;

impl ResourceClass {
    pub const ALL: [ResourceClass; 3] = [
        ResourceClass::Small,
        ResourceClass::Medium,
        ResourceClass::Large,
    ];

    pub fn resources(self) -> Resources {
        match self {
            ResourceClass::Small => Resources {
                cpu_millis: 500,
                memory_bytes: GIB,
            },
            ResourceClass::Medium => Resources {
                cpu_millis: 1_000,
                memory_bytes: 2 * GIB,
            },
            ResourceClass::Large => Resources {
                cpu_millis: 2_000,
                memory_bytes: 4 * GIB,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceClass::Small => "small",
            ResourceClass::Medium => "medium",
            ResourceClass::Large => "large",
        }
    }
}

impl fmt::Display for ResourceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceClass {
    type Err = InvalidValue;
    fn from_str(value: &str) -> Result<ResourceClass, InvalidValue> {
        ResourceClass::ALL
            .into_iter()
            .find(|class| class.as_str() == value)
            .ok_or_else(|| {
                InvalidValue(format!(
                    "unknown resource class {value:?} (expected small, medium or large)"
                ))
            })
    }
}

/// A port the workspace's container listens on, to be published on some host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    pub container: u16,
}

/// A container port and the host port it is published on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    pub container: u16,
    pub host: u16,
}

/// What the user asked for. The coordinator adds the owner, the placement and the ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSpec {
    pub name: WorkspaceName,
    pub image: String,
    pub class: ResourceClass,
    pub ports: Vec<PortSpec>,
    pub env: BTreeMap<String, String>,
    pub labels: Labels,
    /// The command to run instead of the image's default; empty for the default.
    pub command: Vec<String>,
    /// Pin to this host instead of letting the scheduler choose.
    pub host: Option<HostId>,
    /// Check this repository out in the workspace's files (a worktree of its host's mirror).
    pub repo: Option<crate::git::RepoSource>,
}

/// Where a workspace is in its life. Transitions are the coordinator's; the agent reports what it
/// observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkspaceState {
    Pending,
    Scheduled,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    Destroying,
    Gone,
    /// Its host is down; its files live there, so it is never moved silently.
    Lost,
}

impl WorkspaceState {
    /// Every state, in declaration order.
    pub const ALL: [WorkspaceState; 10] = [
        WorkspaceState::Pending,
        WorkspaceState::Scheduled,
        WorkspaceState::Starting,
        WorkspaceState::Running,
        WorkspaceState::Stopping,
        WorkspaceState::Stopped,
        WorkspaceState::Failed,
        WorkspaceState::Destroying,
        WorkspaceState::Gone,
        WorkspaceState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceState::Pending => "pending",
            WorkspaceState::Scheduled => "scheduled",
            WorkspaceState::Starting => "starting",
            WorkspaceState::Running => "running",
            WorkspaceState::Stopping => "stopping",
            WorkspaceState::Stopped => "stopped",
            WorkspaceState::Failed => "failed",
            WorkspaceState::Destroying => "destroying",
            WorkspaceState::Gone => "gone",
            WorkspaceState::Lost => "lost",
        }
    }
}

impl fmt::Display for WorkspaceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label on every container an agent makes that names its host (a Docker label: what
/// `docker ps --filter label=...` finds).
pub const LABEL_HOST: &str = "nexus.host";
/// The label on every container an agent makes that names its workspace.
pub const LABEL_WORKSPACE: &str = "nexus.workspace";
/// Where a workspace's files directory (what sync keeps in step) appears inside its container.
pub const FILES_MOUNT: &str = "/workspace";

/// A workspace as the coordinator shows it to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceView {
    pub name: WorkspaceName,
    pub owner: UserName,
    pub state: WorkspaceState,
    pub host: Option<HostId>,
    pub image: String,
    pub class: ResourceClass,
    pub ports: Vec<PortBinding>,
    pub created_at: Timestamp,
}

/// A host's health as the coordinator judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HostStatus {
    Ready,
    Down,
    Draining,
    Cordoned,
}

/// A range of host ports, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const DEFAULT: PortRange = PortRange {
        first: 20_000,
        last: 32_000,
    };

    pub fn new(first: u16, last: u16) -> Result<PortRange, InvalidValue> {
        if first == 0 || first > last {
            return Err(InvalidValue(format!(
                "invalid port range {first}-{last}: expected FIRST-LAST with 0 < FIRST <= LAST"
            )));
        }
        Ok(PortRange { first, last })
    }

    /// How many ports; zero for a range whose ends are the wrong way round (which
    /// [`PortRange::new`] refuses, but a decoded message may carry).
    pub fn len(self) -> u32 {
        if self.first > self.last {
            return 0;
        }
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = InvalidValue;
    fn from_str(value: &str) -> Result<PortRange, InvalidValue> {
        let bad = || {
            InvalidValue(format!(
                "invalid port range {value:?}: expected FIRST-LAST, e.g. 20000-32000"
            ))
        };
        let (first, last) = value.split_once('-').ok_or_else(bad)?;
        let first = first.trim().parse::<u16>().map_err(|_| bad())?;
        let last = last.trim().parse::<u16>().map_err(|_| bad())?;
        PortRange::new(first, last)
    }
}

/// What an agent tells the coordinator about its host when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub host_id: HostId,
    pub hostname: String,
    pub os: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub labels: Labels,
    pub port_range: PortRange,
    pub agent_version: String,
}

/// A sample of a host's load, sent at the stats interval. Soft state: never a Raft entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct HostStats {
    pub at: Option<Timestamp>,
    /// Percent of all cores, 0–100.
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub load_average_1m: f32,
}

/// One workspace container's resource use, as the agent last sampled it. Soft state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerStats {
    pub workspace: Option<WorkspaceName>,
    pub at: Option<Timestamp>,
    /// Percent of one core (a container using two full cores shows 200).
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

/// How the scheduler scores the hosts a workspace fits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Scoring {
    /// The fullest host that fits (as Nomad): keeps whole hosts free.
    #[default]
    BinPack,
    /// The emptiest host: spreads load and the cost of a host failure.
    Spread,
}

impl Scoring {
    pub fn as_str(self) -> &'static str {
        match self {
            Scoring::BinPack => "binpack",
            Scoring::Spread => "spread",
        }
    }
}

impl fmt::Display for Scoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scoring {
    type Err = InvalidValue;
    fn from_str(value: &str) -> Result<Scoring, InvalidValue> {
        match value {
            "binpack" | "bin-pack" => Ok(Scoring::BinPack),
            "spread" => Ok(Scoring::Spread),
            _ => Err(InvalidValue(format!(
                "unknown scoring {value:?} (expected binpack or spread)"
            ))),
        }
    }
}

/// The limits the scheduler and the state machine enforce, cluster-wide or on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_workspaces_per_host: u32,
    pub max_ports_per_workspace: u32,
    pub max_concurrent_ops_per_host: u32,
    /// How many times over a host's CPUs may be promised, in percent (400 = 4×). A resource
    /// class is a ceiling the runtime enforces, not a use: workspaces idle most of the time.
    pub cpu_overcommit_percent: u32,
    /// The same for memory.
    pub memory_overcommit_percent: u32,
    /// Bin-pack or spread, for creates that do not ask (cluster-wide only).
    pub scoring: Scoring,
}

impl Default for Limits {
    /// The design's defaults.
    fn default() -> Limits {
        Limits {
            max_workspaces_per_host: 50,
            max_ports_per_workspace: 10,
            max_concurrent_ops_per_host: 20,
            cpu_overcommit_percent: 400,
            memory_overcommit_percent: 400,
            scoring: Scoring::BinPack,
        }
    }
}

/// The bounds a limit must stay within: a typo must not make a host refuse everything (0) or
/// promise a thousand times its memory.
pub const LIMIT_BOUNDS: [(&str, u32, u32); 5] = [
    ("max-workspaces-per-host", 1, 10_000),
    ("max-ports-per-workspace", 0, 64),
    ("max-concurrent-ops-per-host", 1, 1_000),
    ("cpu-overcommit-percent", 100, 10_000),
    ("memory-overcommit-percent", 100, 10_000),
];

/// A change of limits: each `Some` replaces that limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitsPatch {
    pub max_workspaces_per_host: Option<u32>,
    pub max_ports_per_workspace: Option<u32>,
    pub max_concurrent_ops_per_host: Option<u32>,
    pub cpu_overcommit_percent: Option<u32>,
    pub memory_overcommit_percent: Option<u32>,
    pub scoring: Option<Scoring>,
}

impl LimitsPatch {
    fn numbers(&self) -> [Option<u32>; 5] {
        [
            self.max_workspaces_per_host,
            self.max_ports_per_workspace,
            self.max_concurrent_ops_per_host,
            self.cpu_overcommit_percent,
            self.memory_overcommit_percent,
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.numbers().iter().all(Option::is_none) && self.scoring.is_none()
    }

    /// The first value outside [`LIMIT_BOUNDS`], as a message.
    pub fn check(&self) -> Result<(), InvalidValue> {
        for (value, (name, low, high)) in self.numbers().into_iter().zip(LIMIT_BOUNDS) {
            if let Some(value) = value
                && !(low..=high).contains(&value)
            {
                return Err(InvalidValue(format!(
                    "{name} {value} is outside {low}..={high}"
                )));
            }
        }
        Ok(())
    }

    /// `base` with this patch's values in place of its own.
    pub fn over(self, base: Limits) -> Limits {
        Limits {
            max_workspaces_per_host: self
                .max_workspaces_per_host
                .unwrap_or(base.max_workspaces_per_host),
            max_ports_per_workspace: self
                .max_ports_per_workspace
                .unwrap_or(base.max_ports_per_workspace),
            max_concurrent_ops_per_host: self
                .max_concurrent_ops_per_host
                .unwrap_or(base.max_concurrent_ops_per_host),
            cpu_overcommit_percent: self
                .cpu_overcommit_percent
                .unwrap_or(base.cpu_overcommit_percent),
            memory_overcommit_percent: self
                .memory_overcommit_percent
                .unwrap_or(base.memory_overcommit_percent),
            scoring: self.scoring.unwrap_or(base.scoring),
        }
    }

    /// This patch with `newer`'s values where it has them.
    pub fn merge(self, newer: LimitsPatch) -> LimitsPatch {
        LimitsPatch {
            max_workspaces_per_host: newer
                .max_workspaces_per_host
                .or(self.max_workspaces_per_host),
            max_ports_per_workspace: newer
                .max_ports_per_workspace
                .or(self.max_ports_per_workspace),
            max_concurrent_ops_per_host: newer
                .max_concurrent_ops_per_host
                .or(self.max_concurrent_ops_per_host),
            cpu_overcommit_percent: newer.cpu_overcommit_percent.or(self.cpu_overcommit_percent),
            memory_overcommit_percent: newer
                .memory_overcommit_percent
                .or(self.memory_overcommit_percent),
            scoring: newer.scoring.or(self.scoring),
        }
    }
}

/// Whether a workspace should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesiredRun {
    Running,
    Stopped,
    /// Being destroyed: the agent removes the container and the workspace's network, then reports
    /// the workspace `Gone`. Said until the agent has reported it, so a lost report is repaired by
    /// the next one rather than leaving the workspace half-destroyed.
    Absent,
}

// Backups: what a backup file says of itself (its format is `crate::backup`).

/// What a backup says of itself, checked by its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// Unique in a cluster, and the file's name without its extension.
    pub id: String,
    /// The cluster's identity (the fingerprint of its CA) that made it.
    pub cluster: String,
    /// The coordinator that wrote it.
    pub node: NodeId,
    /// The Raft index and term of the applied state it holds.
    pub index: u64,
    pub term: u64,
    pub created_at: Timestamp,
    /// The Nexus version that wrote it.
    pub software: String,
    /// The coordinator's state (snapshot) format of the payload.
    pub state_format: u32,
    /// Rows per table ("hosts", "workspaces", "ports", ...), for people and for `inspect`.
    pub counts: Vec<(String, u64)>,
}

impl BackupHeader {
    /// The count of one table, 0 if it is not named.
    pub fn count(&self, table: &str) -> u64 {
        self.counts
            .iter()
            .find(|(name, _)| name == table)
            .map_or(0, |(_, count)| *count)
    }
}

/// A backup as lists and answers show it: its header, its size and checksum, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub header: BackupHeader,
    /// The whole file's size.
    pub size_bytes: u64,
    /// The file's checksum (its last 32 bytes), in hex.
    pub sha256: String,
    /// The coordinator whose backup directory holds it.
    pub location: NodeId,
    /// Whether the file was read whole and its checksum matched when this was answered
    /// (`None`: not checked for this answer).
    pub verified: Option<bool>,
}

/// When the leader makes backups by itself, and how many each coordinator keeps. Replicated, so
/// every leader follows the same schedule and an admin changes it live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchedule {
    /// Seconds between scheduled backups; 0 turns them off.
    pub every_secs: u64,
    /// Backups each coordinator keeps in its directory (the newest); at least 1.
    pub keep: u32,
}

impl Default for BackupSchedule {
    fn default() -> BackupSchedule {
        BackupSchedule {
            every_secs: 3600,
            keep: 24,
        }
    }
}

// Lifecycle: what keeps a workspace in use, and what the fleet tells its users.

/// Why a workspace last counted as in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActivityKind {
    /// It was created.
    Created,
    /// A user started it (start, restart, switch, repair).
    Start,
    /// A command ran in it (`nexus workspace exec`), or an exec session was open.
    Exec,
    /// A user read its logs.
    Logs,
    /// A file sync session with it began.
    SyncStart,
    /// A sync cycle moved changes into or out of it.
    SyncCycle,
    /// Its container's network counters moved (traffic on its published ports).
    PortTraffic,
    /// The cluster was restored from a backup: the policies count from then.
    Restored,
}

impl ActivityKind {
    pub const ALL: [ActivityKind; 8] = [
        ActivityKind::Created,
        ActivityKind::Start,
        ActivityKind::Exec,
        ActivityKind::Logs,
        ActivityKind::SyncStart,
        ActivityKind::SyncCycle,
        ActivityKind::PortTraffic,
        ActivityKind::Restored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Created => "created",
            ActivityKind::Start => "start",
            ActivityKind::Exec => "exec",
            ActivityKind::Logs => "logs",
            ActivityKind::SyncStart => "sync-start",
            ActivityKind::SyncCycle => "sync-cycle",
            ActivityKind::PortTraffic => "port-traffic",
            ActivityKind::Restored => "restored",
        }
    }
}

impl fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a workspace was last in use, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub at: Timestamp,
    pub kind: ActivityKind,
}

/// Who a notice is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NoticeAudience {
    /// Every user of the fleet (a maintenance window, an admin's announcement).
    Everyone,
    /// One user (a policy's warning about one of their workspaces).
    User(UserName),
}

/// Where a notice came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeSource {
    /// An admin posted it (`nexus admin notice set`).
    Admin,
    /// A lifecycle policy announces an action on a workspace.
    Policy { workspace: WorkspaceName },
    /// The maintenance schedule announces its next run.
    Maintenance,
    // Git worktrees (issue 24, workspaces from a repository).
    /// A destroy kept a workspace's branch, holding commits found nowhere else, on its host.
    KeptBranch {
        workspace: WorkspaceName,
        host: HostId,
    },
}

/// A message the CLI shows its users on stderr until it expires or is cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Given when it is posted, never reused.
    pub id: u64,
    pub text: String,
    pub audience: NoticeAudience,
    pub source: NoticeSource,
    pub posted_at: Timestamp,
    /// Shown until then; `None`: until cleared.
    pub until: Option<Timestamp>,
}

impl Notice {
    /// The longest text a notice keeps (a notice is replicated and shown on every command).
    pub const TEXT_MAX: usize = 1024;

    /// Whether it is still shown at `now`.
    pub fn is_current(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|until| now < until)
    }

    /// Whether `user` sees it.
    pub fn is_for(&self, user: &UserName) -> bool {
        match &self.audience {
            NoticeAudience::Everyone => true,
            NoticeAudience::User(to) => to == user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse() {
        assert_eq!("20000-32000".parse::<PortRange>(), Ok(PortRange::DEFAULT));
        assert_eq!(PortRange::DEFAULT.len(), 12_001);
        assert!(PortRange::DEFAULT.contains(20_000) && PortRange::DEFAULT.contains(32_000));
        assert!(!PortRange::DEFAULT.contains(32_001));
        assert!("5-4".parse::<PortRange>().is_err());
        assert!("0-4".parse::<PortRange>().is_err());
        assert!("70000-70001".parse::<PortRange>().is_err());
        assert!("20000".parse::<PortRange>().is_err());
    }

    #[test]
    fn resource_classes_parse_and_grow() {
        for class in ResourceClass::ALL {
            assert_eq!(class.as_str().parse::<ResourceClass>(), Ok(class));
        }
        assert!("huge".parse::<ResourceClass>().is_err());
        let sizes: Vec<_> = ResourceClass::ALL
            .iter()
            .map(|c| c.resources().cpu_millis)
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]));
    }
}
