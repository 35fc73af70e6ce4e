//! The answers' shapes that are not requests: views of workspaces, hosts, the cluster and the
//! fleet, as [`super::Response`] carries them.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::WireError;
use crate::id::{HostId, NodeId, UserName, WorkspaceName};
use crate::identity::Identity;
use crate::model::{
    Activity, ContainerStats, DesiredRun, HostInfo, HostStats, HostStatus, Limits, LimitsPatch,
    PortBinding, WorkspaceSpec, WorkspaceState, WorkspaceView,
};
use crate::policy::{NextAction, Policy, PolicyPatch};

/// A workspace's lifecycle as its policies see it (`nexus workspace inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleView {
    pub workspace: WorkspaceName,
    /// When it was last in use, and how.
    pub last_activity: Activity,
    /// Exempt from every automatic action.
    pub held: bool,
    /// The policy in force on it (its override over its host's over the cluster's).
    pub policy: Policy,
    /// Its own override, if an admin set one.
    pub policy_override: PolicyPatch,
    /// How long admins extended its lifetime by, in seconds.
    pub extended_secs: u64,
    /// The next automatic action and when (`None`: none to come, or held).
    pub next: Option<NextAction>,
}

/// A Nexus container whose workspace the host's desired state does not name (one created after
/// the backup a cluster was restored from, or left by a lost coordinator's state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanView {
    pub host: HostId,
    /// The container's name, which `HostRequest::RemoveOrphan` takes.
    pub container: String,
    /// The workspace its labels name.
    pub workspace: String,
    pub image: String,
    /// The engine's word for its state (`running`, `exited`, ...).
    pub state: String,
}

/// One workspace network of a host (`nexus admin networks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub name: String,
    pub workspace: Option<WorkspaceName>,
    pub subnet: Option<String>,
}

/// How a command run in a workspace ended, and what it wrote (each stream cut at
/// [`ExecResult::MAX_OUTPUT`] bytes, with `truncated` set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i64,
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

impl ExecResult {
    /// The most of each stream an answer carries: well inside a frame.
    pub const MAX_OUTPUT: usize = 4 << 20;
}

/// The limits in force: the cluster's, and per host its overrides and what they make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    pub cluster: Limits,
    pub hosts: Vec<HostLimits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLimits {
    pub host: HostId,
    pub overrides: LimitsPatch,
    pub effective: Limits,
}

/// The fleet in numbers (`nexus admin stats`). Promised CPU and memory count every workspace
/// by its class; capacity is the hosts' own times their overcommit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStats {
    pub hosts: Vec<(HostStatus, u32)>,
    pub workspaces: Vec<(WorkspaceState, u32)>,
    pub cpu_promised_millis: u64,
    pub cpu_capacity_millis: u64,
    pub memory_promised_bytes: u64,
    pub memory_capacity_bytes: u64,
    pub ports_allocated: u64,
    pub ports_total: u64,
    /// Workspaces on their way somewhere (scheduled, starting, stopping, destroying).
    pub operations_in_flight: u64,
}

/// One workspace container's latest sample, with where it runs and whose it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceUsage {
    pub host: HostId,
    pub owner: Option<UserName>,
    pub stats: ContainerStats,
}

/// Everything the coordinator knows of one workspace (`nexus workspace inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceDetail {
    pub view: WorkspaceView,
    pub spec: WorkspaceSpec,
    pub desired: DesiredRun,
    pub generation: u64,
    pub updated_at: Timestamp,
    /// Why it failed, as its agent reported.
    pub last_error: Option<WireError>,
    /// Whether its host ports were already reassigned once after a `PORT_CONFLICT`.
    pub port_reassigned: bool,
}

/// One allocated host port (`nexus admin ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAllocation {
    pub host: HostId,
    pub port: u16,
    pub workspace: WorkspaceName,
    /// The container port it is published for.
    pub container: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub software: String,
    pub server: Identity,
    pub client: Identity,
    pub time: Timestamp,
}

/// One workspace a host should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub spec: WorkspaceSpec,
    pub owner: UserName,
    /// Bumped when the container must be recreated (a repair, a new port), so the agent can tell
    /// an old container from a current one by its label.
    pub generation: u64,
    pub run: DesiredRun,
    pub ports: Vec<PortBinding>,
}

/// Everything one host should run, at a version that only grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub version: u64,
    pub assignments: Vec<Assignment>,
}

/// What an agent observed of one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObservedWorkspace {
    pub name: WorkspaceName,
    pub generation: u64,
    pub state: WorkspaceState,
    pub ports: Vec<PortBinding>,
    pub error: Option<WireError>,
}

/// The cluster as one coordinator sees it (`nexus admin status`). Members' health and progress are
/// known on the leader; a follower reports what it can (its own view, and the leader's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The coordinator that answered.
    pub node: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The answering node's commit and applied index.
    pub commit_index: u64,
    pub applied_index: u64,
    pub members: Vec<MemberView>,
}

/// A member's place in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    Leader,
    Follower,
    /// Receives the log but does not vote (a joining node, until it has caught up).
    Learner,
    Candidate,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Learner => "learner",
            MemberRole::Candidate => "candidate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: NodeId,
    pub addr: String,
    pub role: MemberRole,
    /// Heard from within the election timeout (always true for the answering node itself).
    pub healthy: bool,
    /// Milliseconds since the answering node last heard from this member, if ever.
    pub last_contact_ms: Option<u64>,
    /// The highest log index known to be replicated on this member (leader's view only).
    pub matched_index: Option<u64>,
}

/// A host as `nexus admin hosts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub info: HostInfo,
    pub status: HostStatus,
    pub workspaces: u32,
    pub stats: Option<HostStats>,
    pub last_heartbeat: Option<Timestamp>,
}
