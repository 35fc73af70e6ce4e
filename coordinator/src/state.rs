//! The replicated state machine: the fleet's truth, changed only by applying [`Proposal`]s from
//! the Raft log in order.
//!
//! Pure and deterministic: [`State::apply`] reads no clock, RNG, disk or socket. Time and ids come
//! in the proposal (the proposer stamps them). Every table is a `BTreeMap`. `apply` never fails:
//! a proposal that breaks a rule becomes [`Outcome::Rejected`], the same on every replica, and it
//! re-checks every limit, so two proposals that each fit alone can never overfill a host together.
//! A request id seen before is answered with its first outcome and changes nothing.
//!
//! Not here: Raft, storage, the scheduler's choice of host (it proposes a placement, and `apply`
//! checks it), and soft state such as heartbeats and stats.

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{Assignment, DesiredRun, DesiredState, ObservedWorkspace};
use nexus_protocol::model::{HostInfo, HostStatus, PortBinding, WorkspaceSpec, WorkspaceState};
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};
use serde::{Deserialize, Serialize};

/// How many times over a host's CPUs and memory may be promised to workspaces. A resource class
/// is a ceiling the runtime enforces, not a use: developers' workspaces idle most of the time.
pub const CPU_OVERCOMMIT: u64 = 4;
pub const MEMORY_OVERCOMMIT: u64 = 4;

/// Why a host cannot take a workspace. The scheduler and `apply` ask the same question here, so
/// a placement the scheduler chose never fails `apply` for a reason the scheduler did not see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    NotReady(HostStatus),
    Workspaces {
        max: u32,
    },
    Cpu {
        reserved_millis: u64,
        capacity_millis: u64,
    },
    Memory {
        reserved_bytes: u64,
        capacity_bytes: u64,
    },
    Ports {
        free: u32,
        needed: u32,
    },
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const GIB: f64 = (1u64 << 30) as f64;
        match self {
            Unfit::NotReady(status) => write!(f, "{}", format!("{status:?}").to_lowercase()),
            Unfit::Workspaces { max } => write!(f, "holds its maximum of {max} workspaces"),
            Unfit::Cpu {
                reserved_millis,
                capacity_millis,
            } => write!(
                f,
                "CPU: {:.1} of {:.1} cores promised",
                *reserved_millis as f64 / 1000.0,
                *capacity_millis as f64 / 1000.0
            ),
            Unfit::Memory {
                reserved_bytes,
                capacity_bytes,
            } => write!(
                f,
                "memory: {:.1} of {:.1} GiB promised",
                *reserved_bytes as f64 / GIB,
                *capacity_bytes as f64 / GIB
            ),
            Unfit::Ports { free, needed } => write!(f, "{free} free ports, {needed} needed"),
        }
    }
}

/// How long a completed request's outcome is remembered for retries.
pub const JOURNAL_RETENTION_MS: u64 = 24 * 3600 * 1000;

/// Limits, cluster-wide or for one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_workspaces_per_host: u32,
    pub max_ports_per_workspace: u32,
    pub max_concurrent_ops_per_host: u32,
}

impl Default for Limits {
    /// The design's defaults.
    fn default() -> Limits {
        Limits {
            max_workspaces_per_host: 50,
            max_ports_per_workspace: 10,
            max_concurrent_ops_per_host: 20,
        }
    }
}

/// A change of limits: each `Some` replaces that limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitsPatch {
    pub max_workspaces_per_host: Option<u32>,
    pub max_ports_per_workspace: Option<u32>,
    pub max_concurrent_ops_per_host: Option<u32>,
}

impl LimitsPatch {
    fn over(self, base: Limits) -> Limits {
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
        }
    }

    fn merge(self, newer: LimitsPatch) -> LimitsPatch {
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
        }
    }
}

/// One entry of the Raft log: who asked, when, under which request id, for what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: RequestId,
    /// The proposer's clock when it proposed; every replica applies this same time.
    pub at: Timestamp,
    pub proposer: Identity,
    pub command: Command,
}

/// What a proposal asks. **Append-only**: bincode encodes the variant index, and old log entries
/// must keep their meaning. A new need is a new variant at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Add a host, or update the facts of a known one (its status is kept).
    RegisterHost(HostInfo),
    SetHostStatus {
        host: HostId,
        status: HostStatus,
    },
    /// Place a new workspace on `host` with these host ports (the scheduler's choice).
    CreateWorkspace {
        spec: WorkspaceSpec,
        owner: UserName,
        host: HostId,
        ports: Vec<PortBinding>,
    },
    SetDesiredRun {
        name: WorkspaceName,
        run: DesiredRun,
    },
    /// What a host's agent reports it observed.
    RecordObserved {
        host: HostId,
        observed: Vec<ObservedWorkspace>,
    },
    /// Start destroying a workspace; it is forgotten once its host reports it gone.
    DestroyWorkspace {
        name: WorkspaceName,
    },
    /// Change the cluster limits (`host: None`) or one host's overrides.
    SetLimits {
        host: Option<HostId>,
        patch: LimitsPatch,
    },
}

/// What applying a proposal did. Identical on every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    Rejected(WireError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub info: HostInfo,
    pub status: HostStatus,
    pub registered_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    pub spec: WorkspaceSpec,
    pub owner: UserName,
    pub host: HostId,
    pub ports: Vec<PortBinding>,
    pub desired: DesiredRun,
    pub state: WorkspaceState,
    /// Bumped when the container must be recreated.
    pub generation: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_error: Option<WireError>,
}

/// The whole replicated state. Serialized as it is for snapshots.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    hosts: BTreeMap<HostId, HostRecord>,
    workspaces: BTreeMap<WorkspaceName, WorkspaceRecord>,
    /// Every allocated host port and the workspace that holds it: no port is given twice.
    ports: BTreeMap<(HostId, u16), WorkspaceName>,
    limits: Limits,
    host_limits: BTreeMap<HostId, LimitsPatch>,
    /// Each host's desired-state version: bumped whenever what that host should run changes.
    desired_versions: BTreeMap<HostId, u64>,
    /// Completed requests and their outcomes, for idempotent retries.
    journal: BTreeMap<RequestId, (Timestamp, Outcome)>,
    /// The journal in time order, for pruning.
    journal_by_time: BTreeSet<(Timestamp, RequestId)>,
    /// The addresses of coordinators added after the cluster was founded (founders' come from
    /// each node's configuration). Written by the Raft node when it applies a membership change.
    member_addresses: BTreeMap<NodeId, String>,
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Outcome {
    Outcome::Rejected(WireError::new(code, message))
}

impl State {
    /// Coordinators' addresses learned from membership changes.
    pub fn member_addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.member_addresses
    }

    /// Records (or, with `None`, forgets) a member's address. Called only while applying a
    /// committed membership change, so every replica does the same.
    pub fn set_member_address(&mut self, node: NodeId, address: Option<String>) {
        match address {
            Some(address) => self.member_addresses.insert(node, address),
            None => self.member_addresses.remove(&node),
        };
    }

    pub fn hosts(&self) -> &BTreeMap<HostId, HostRecord> {
        &self.hosts
    }

    pub fn workspaces(&self) -> &BTreeMap<WorkspaceName, WorkspaceRecord> {
        &self.workspaces
    }

    pub fn ports(&self) -> &BTreeMap<(HostId, u16), WorkspaceName> {
        &self.ports
    }

    pub fn cluster_limits(&self) -> Limits {
        self.limits
    }

    /// The limits in force on `host`: its overrides over the cluster's.
    pub fn limits_for(&self, host: &HostId) -> Limits {
        self.host_limits
            .get(host)
            .map_or(self.limits, |patch| patch.over(self.limits))
    }

    pub fn desired_version(&self, host: &HostId) -> u64 {
        self.desired_versions.get(host).copied().unwrap_or(0)
    }

    /// What `host` should run: every workspace placed on it, at the host's desired-state version.
    /// A workspace being destroyed is said `Absent` until its agent reports it gone.
    pub fn desired_for(&self, host: &HostId) -> DesiredState {
        let assignments = self
            .workspaces
            .values()
            .filter(|w| &w.host == host)
            .map(|w| Assignment {
                spec: w.spec.clone(),
                owner: w.owner.clone(),
                generation: w.generation,
                run: if w.state == WorkspaceState::Destroying {
                    DesiredRun::Absent
                } else {
                    w.desired
                },
                ports: w.ports.clone(),
            })
            .collect();
        DesiredState {
            version: self.desired_version(host),
            assignments,
        }
    }

    /// The first outcome of a request, if it was applied and is still remembered.
    pub fn outcome_of(&self, request_id: RequestId) -> Option<&Outcome> {
        self.journal.get(&request_id).map(|(_, outcome)| outcome)
    }

    /// What `host`'s workspaces are promised: (CPU millis, memory bytes), by their classes.
    pub fn reserved_on(&self, host: &HostId) -> (u64, u64) {
        self.workspaces
            .values()
            .filter(|w| &w.host == host)
            .map(|w| w.spec.class.resources())
            .fold((0, 0), |(cpu, memory), r| {
                (cpu + u64::from(r.cpu_millis), memory + r.memory_bytes)
            })
    }

    /// How many host ports of `host`'s range are not allocated.
    pub fn free_ports_on(&self, host: &HostId) -> u32 {
        let Some(record) = self.hosts.get(host) else {
            return 0;
        };
        let used = self
            .ports
            .range((host.clone(), 0)..=(host.clone(), u16::MAX))
            .filter(|((_, port), _)| record.info.port_range.contains(*port))
            .count();
        record
            .info
            .port_range
            .len()
            .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
    }

    /// Whether `host` can take one more workspace of `class` with `ports` host ports; the first
    /// reason it cannot, if not. (An unknown host is the caller's to refuse.)
    pub fn unfit(
        &self,
        host: &HostId,
        class: nexus_protocol::model::ResourceClass,
        ports: u32,
    ) -> Option<Unfit> {
        let record = self.hosts.get(host)?;
        if record.status != HostStatus::Ready {
            return Some(Unfit::NotReady(record.status));
        }
        let limits = self.limits_for(host);
        if self.workspaces_on(host) >= limits.max_workspaces_per_host {
            return Some(Unfit::Workspaces {
                max: limits.max_workspaces_per_host,
            });
        }
        let (cpu, memory) = self.reserved_on(host);
        let wanted = class.resources();
        let cpu_capacity = u64::from(record.info.cpus) * 1000 * CPU_OVERCOMMIT;
        if cpu + u64::from(wanted.cpu_millis) > cpu_capacity {
            return Some(Unfit::Cpu {
                reserved_millis: cpu,
                capacity_millis: cpu_capacity,
            });
        }
        let memory_capacity = record.info.memory_bytes.saturating_mul(MEMORY_OVERCOMMIT);
        if memory + wanted.memory_bytes > memory_capacity {
            return Some(Unfit::Memory {
                reserved_bytes: memory,
                capacity_bytes: memory_capacity,
            });
        }
        let free = self.free_ports_on(host);
        if free < ports {
            return Some(Unfit::Ports {
                free,
                needed: ports,
            });
        }
        None
    }

    /// How many workspaces `host` holds (every state but gone).
    pub fn workspaces_on(&self, host: &HostId) -> u32 {
        let count = self.workspaces.values().filter(|w| &w.host == host).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Applies one proposal. Deterministic: the same state and proposal give the same result on
    /// every replica.
    pub fn apply(&mut self, proposal: &Proposal) -> Outcome {
        if let Some((_, outcome)) = self.journal.get(&proposal.request_id) {
            return outcome.clone();
        }
        let outcome = self.execute(proposal.at, &proposal.command);
        self.remember(proposal.request_id, proposal.at, outcome.clone());
        outcome
    }

    fn remember(&mut self, request_id: RequestId, at: Timestamp, outcome: Outcome) {
        let horizon = Timestamp(at.as_millis().saturating_sub(JOURNAL_RETENTION_MS));
        while let Some(&(time, id)) = self.journal_by_time.first() {
            if time >= horizon {
                break;
            }
            self.journal_by_time.remove(&(time, id));
            self.journal.remove(&id);
        }
        self.journal.insert(request_id, (at, outcome));
        self.journal_by_time.insert((at, request_id));
    }

    fn bump(&mut self, host: &HostId) {
        *self.desired_versions.entry(host.clone()).or_insert(0) += 1;
    }

    fn execute(&mut self, at: Timestamp, command: &Command) -> Outcome {
        match command {
            Command::RegisterHost(info) => {
                if info.port_range.is_empty() || info.port_range.first == 0 {
                    return reject(
                        ErrorCode::InvalidArgument,
                        format!("invalid port range {}", info.port_range),
                    );
                }
                match self.hosts.get_mut(&info.host_id) {
                    Some(host) => host.info = info.clone(),
                    None => {
                        let record = HostRecord {
                            info: info.clone(),
                            status: HostStatus::Ready,
                            registered_at: at,
                        };
                        self.hosts.insert(info.host_id.clone(), record);
                    }
                }
                Outcome::Applied
            }
            Command::SetHostStatus { host, status } => {
                let Some(record) = self.hosts.get_mut(host) else {
                    return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
                };
                record.status = *status;
                self.mark_lost(host, *status == HostStatus::Down, at);
                Outcome::Applied
            }
            Command::CreateWorkspace {
                spec,
                owner,
                host,
                ports,
            } => self.create(at, spec, owner, host, ports),
            Command::SetDesiredRun { name, run } => {
                let Some(workspace) = self.workspaces.get_mut(name) else {
                    return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
                };
                if workspace.state == WorkspaceState::Destroying {
                    return reject(
                        ErrorCode::InvalidArgument,
                        format!("workspace {name} is being destroyed"),
                    );
                }
                workspace.desired = *run;
                workspace.updated_at = at;
                let host = workspace.host.clone();
                self.bump(&host);
                Outcome::Applied
            }
            Command::RecordObserved { host, observed } => {
                for report in observed {
                    self.observe(at, host, report);
                }
                Outcome::Applied
            }
            Command::DestroyWorkspace { name } => {
                let Some(workspace) = self.workspaces.get_mut(name) else {
                    return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
                };
                workspace.state = WorkspaceState::Destroying;
                workspace.desired = DesiredRun::Stopped;
                workspace.updated_at = at;
                let host = workspace.host.clone();
                self.bump(&host);
                Outcome::Applied
            }
            Command::SetLimits { host: None, patch } => {
                self.limits = patch.over(self.limits);
                Outcome::Applied
            }
            Command::SetLimits {
                host: Some(host),
                patch,
            } => {
                if !self.hosts.contains_key(host) {
                    return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
                }
                let merged = self
                    .host_limits
                    .get(host)
                    .copied()
                    .unwrap_or_default()
                    .merge(*patch);
                self.host_limits.insert(host.clone(), merged);
                Outcome::Applied
            }
        }
    }

    /// Every workspace on a host that went down is lost (its files live there); when the host
    /// comes back they return to what their agent reports.
    fn mark_lost(&mut self, host: &HostId, down: bool, at: Timestamp) {
        for workspace in self.workspaces.values_mut().filter(|w| &w.host == host) {
            if down && workspace.state != WorkspaceState::Destroying {
                workspace.state = WorkspaceState::Lost;
                workspace.updated_at = at;
            } else if !down && workspace.state == WorkspaceState::Lost {
                workspace.state = WorkspaceState::Scheduled;
                workspace.updated_at = at;
            }
        }
    }

    fn create(
        &mut self,
        at: Timestamp,
        spec: &WorkspaceSpec,
        owner: &UserName,
        host: &HostId,
        ports: &[PortBinding],
    ) -> Outcome {
        if self.workspaces.contains_key(&spec.name) {
            return reject(
                ErrorCode::WorkspaceAlreadyExists,
                format!("workspace {} already exists", spec.name),
            );
        }
        let Some(record) = self.hosts.get(host) else {
            return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
        };
        let limits = self.limits_for(host);
        let wanted = u32::try_from(ports.len()).unwrap_or(u32::MAX);
        if wanted > limits.max_ports_per_workspace {
            return reject(
                ErrorCode::InvalidArgument,
                format!(
                    "{wanted} ports asked, at most {} per workspace",
                    limits.max_ports_per_workspace
                ),
            );
        }
        if let Some(unfit) = self.unfit(host, spec.class, wanted) {
            return reject(
                ErrorCode::ResourceExhausted,
                format!("host {host}: {unfit}"),
            );
        }
        let container_ports: BTreeSet<u16> = spec.ports.iter().map(|p| p.container).collect();
        let bound: BTreeSet<u16> = ports.iter().map(|p| p.container).collect();
        if bound != container_ports || bound.len() != ports.len() {
            return reject(
                ErrorCode::InvalidArgument,
                "the placement must bind each container port of the spec once",
            );
        }
        let range = record.info.port_range;
        let mut seen = BTreeSet::new();
        for binding in ports {
            if !range.contains(binding.host) {
                return reject(
                    ErrorCode::InvalidArgument,
                    format!(
                        "port {} is outside host {host}'s range {range}",
                        binding.host
                    ),
                );
            }
            if !seen.insert(binding.host) || self.ports.contains_key(&(host.clone(), binding.host))
            {
                return Outcome::Rejected(
                    WireError::new(
                        ErrorCode::PortConflict,
                        format!("port {} on host {host} is taken", binding.host),
                    )
                    .with_detail(ErrorDetail::PortConflict { port: binding.host }),
                );
            }
        }
        for binding in ports {
            self.ports
                .insert((host.clone(), binding.host), spec.name.clone());
        }
        self.workspaces.insert(
            spec.name.clone(),
            WorkspaceRecord {
                spec: spec.clone(),
                owner: owner.clone(),
                host: host.clone(),
                ports: ports.to_vec(),
                desired: DesiredRun::Running,
                state: WorkspaceState::Scheduled,
                generation: 1,
                created_at: at,
                updated_at: at,
                last_error: None,
            },
        );
        self.bump(host);
        Outcome::Applied
    }

    /// Takes one observation from `host`'s agent. Reports about another host's workspace, or an
    /// older generation, are ignored: an agent speaks only for what it currently runs.
    fn observe(&mut self, at: Timestamp, host: &HostId, report: &ObservedWorkspace) {
        let Some(workspace) = self.workspaces.get_mut(&report.name) else {
            return;
        };
        if &workspace.host != host || report.generation != workspace.generation {
            return;
        }
        if workspace.state == WorkspaceState::Destroying && report.state == WorkspaceState::Gone {
            let name = report.name.clone();
            for binding in &workspace.ports {
                self.ports.remove(&(host.clone(), binding.host));
            }
            self.workspaces.remove(&name);
            self.bump(host);
            return;
        }
        if workspace.state == WorkspaceState::Destroying {
            return;
        }
        workspace.state = report.state;
        workspace.last_error = report.error.clone();
        workspace.updated_at = at;
    }

    /// The state as snapshot bytes (the protocol's codec, bounded by the largest frame).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, String> {
        let config =
            nexus_protocol::codec::CodecConfig::new(nexus_protocol::codec::HARD_MAX_FRAME_LEN)
                .unwrap_or_default();
        nexus_protocol::codec::encode(self, config)
            .map_err(|e| format!("cannot encode the state: {e}"))
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<State, String> {
        let config =
            nexus_protocol::codec::CodecConfig::new(nexus_protocol::codec::HARD_MAX_FRAME_LEN)
                .unwrap_or_default();
        let (payload, _) = nexus_protocol::codec::split_frame(bytes, config)
            .map_err(|e| format!("corrupt state snapshot: {e}"))?
            .ok_or_else(|| "truncated state snapshot".to_string())?;
        nexus_protocol::codec::decode(payload).map_err(|e| format!("corrupt state snapshot: {e}"))
    }

    /// The invariants no sequence of proposals may break: every workspace is on a known host, every
    /// bound port is allocated to it alone, and the indexes agree. Returns the first one broken.
    ///
    /// Two rules hold at creation rather than forever, and are checked there: a host's workspace
    /// count within its limit (lowering a limit evicts nothing), and ports inside the host's range
    /// (a host that re-registers with a narrower range keeps the ports its containers hold).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut bindings = 0;
        for (name, workspace) in &self.workspaces {
            if !self.hosts.contains_key(&workspace.host) {
                return Err(format!("{name} is on unknown host {}", workspace.host));
            }
            for binding in &workspace.ports {
                bindings += 1;
                if self.ports.get(&(workspace.host.clone(), binding.host)) != Some(name) {
                    return Err(format!(
                        "{name}'s port {} is not allocated to it",
                        binding.host
                    ));
                }
            }
        }
        if bindings != self.ports.len() {
            return Err(format!(
                "{} ports allocated, {bindings} bound",
                self.ports.len()
            ));
        }
        if self.journal.len() != self.journal_by_time.len() {
            return Err("the journal's two indexes disagree".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::identity::Role;
    use nexus_protocol::model::{PortRange, PortSpec, ResourceClass};

    use super::*;

    fn host(id: &str, first: u16, last: u16) -> HostInfo {
        HostInfo {
            host_id: HostId::new(id).unwrap(),
            hostname: id.into(),
            os: "linux".into(),
            cpus: 8,
            memory_bytes: 32 << 30,
            disk_bytes: 0,
            labels: Default::default(),
            port_range: PortRange::new(first, last).unwrap(),
            agent_version: "test".into(),
        }
    }

    fn spec(name: &str, container_ports: &[u16]) -> WorkspaceSpec {
        WorkspaceSpec {
            name: WorkspaceName::new(name).unwrap(),
            image: "img".into(),
            class: ResourceClass::Small,
            ports: container_ports
                .iter()
                .map(|&container| PortSpec { container })
                .collect(),
            env: Default::default(),
            labels: Default::default(),
            command: vec![],
            host: None,
        }
    }

    fn create(name: &str, on: &str, bindings: &[(u16, u16)]) -> Command {
        let container: Vec<u16> = bindings.iter().map(|b| b.0).collect();
        Command::CreateWorkspace {
            spec: spec(name, &container),
            owner: UserName::new("alice").unwrap(),
            host: HostId::new(on).unwrap(),
            ports: bindings
                .iter()
                .map(|&(container, host)| PortBinding { container, host })
                .collect(),
        }
    }

    /// Applies `commands` in order, each under a fresh request id, and returns the outcome codes
    /// (`None` for applied) with the final state.
    fn check(commands: Vec<Command>) -> (Vec<Option<ErrorCode>>, State) {
        let mut state = State::default();
        let codes = commands
            .into_iter()
            .enumerate()
            .map(|(i, command)| {
                let proposal = Proposal {
                    request_id: RequestId::from_u128(i as u128 + 1),
                    at: Timestamp(1_000 + i as u64),
                    proposer: Identity::User {
                        name: UserName::new("alice").unwrap(),
                        role: Role::Admin,
                    },
                    command,
                };
                let outcome = state.apply(&proposal);
                state.check_invariants().unwrap();
                match outcome {
                    Outcome::Applied => None,
                    Outcome::Rejected(error) => Some(error.code),
                }
            })
            .collect();
        (codes, state)
    }

    fn h(id: &str) -> HostId {
        HostId::new(id).unwrap()
    }

    fn w(name: &str) -> WorkspaceName {
        WorkspaceName::new(name).unwrap()
    }

    #[test]
    fn creation_checks_host_names_ports_and_limits() {
        use ErrorCode::*;
        let (codes, state) = check(vec![
            create("a", "h1", &[(80, 20000)]), // no such host
            Command::RegisterHost(host("h1", 20000, 20002)),
            create("a", "h1", &[(80, 20000)]),              // fits
            create("a", "h1", &[(80, 20001)]),              // name taken
            create("b", "h1", &[(80, 20000)]),              // port taken
            create("b", "h1", &[(80, 19999)]),              // port outside the range
            create("b", "h1", &[(80, 20001), (81, 20001)]), // the same port twice
            create("b", "h1", &[(80, 20001), (81, 20002)]), // fits
            Command::SetLimits {
                host: None,
                patch: LimitsPatch {
                    max_workspaces_per_host: Some(2),
                    ..Default::default()
                },
            },
            create("c", "h1", &[]), // host full
            Command::SetLimits {
                host: Some(h("h1")),
                patch: LimitsPatch {
                    max_workspaces_per_host: Some(3),
                    max_ports_per_workspace: Some(1),
                    ..Default::default()
                },
            },
            create("c", "h1", &[(1, 20002), (2, 20003)]), // too many ports for h1
            create("c", "h1", &[]),                       // the override lets it in
        ]);
        assert_eq!(
            codes,
            [
                Some(InvalidArgument),
                None,
                None,
                Some(WorkspaceAlreadyExists),
                Some(PortConflict),
                Some(InvalidArgument),
                Some(PortConflict),
                None,
                None,
                Some(ResourceExhausted),
                None,
                Some(InvalidArgument),
                None,
            ]
        );
        assert_eq!(state.workspaces().len(), 3);
        assert_eq!(state.ports().len(), 3);
        assert_eq!(state.limits_for(&h("h1")).max_ports_per_workspace, 1);
        assert_eq!(state.cluster_limits().max_ports_per_workspace, 10);
        assert_eq!(state.desired_version(&h("h1")), 3);
    }

    #[test]
    fn a_port_conflict_names_the_port() {
        let mut state = State::default();
        let mut apply = |i: u128, command| {
            let proposal = Proposal {
                request_id: RequestId::from_u128(i),
                at: Timestamp(0),
                proposer: Identity::Agent(h("h1")),
                command,
            };
            state.apply(&proposal)
        };
        apply(1, Command::RegisterHost(host("h1", 20000, 20010)));
        apply(2, create("a", "h1", &[(80, 20005)]));
        match apply(3, create("b", "h1", &[(80, 20005)])) {
            Outcome::Rejected(error) => assert_eq!(
                error.detail,
                Some(ErrorDetail::PortConflict { port: 20005 })
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hosts_that_are_not_ready_take_nothing_and_their_workspaces_are_lost_until_they_return() {
        let (codes, state) = check(vec![
            Command::RegisterHost(host("h1", 20000, 20010)),
            create("a", "h1", &[]),
            Command::SetHostStatus {
                host: h("h1"),
                status: HostStatus::Down,
            },
            create("b", "h1", &[]),
        ]);
        assert_eq!(codes[3], Some(ErrorCode::ResourceExhausted));
        assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Lost);
        let (_, state) = check(vec![
            Command::RegisterHost(host("h1", 20000, 20010)),
            create("a", "h1", &[]),
            Command::SetHostStatus {
                host: h("h1"),
                status: HostStatus::Down,
            },
            Command::SetHostStatus {
                host: h("h1"),
                status: HostStatus::Ready,
            },
        ]);
        assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Scheduled);
    }

    fn observed(name: &str, generation: u64, state: WorkspaceState) -> ObservedWorkspace {
        ObservedWorkspace {
            name: w(name),
            generation,
            state,
            ports: vec![],
            error: None,
        }
    }

    #[test]
    fn observations_count_only_from_the_workspaces_host_and_generation() {
        let (_, state) = check(vec![
            Command::RegisterHost(host("h1", 20000, 20010)),
            Command::RegisterHost(host("h2", 20000, 20010)),
            create("a", "h1", &[(80, 20000)]),
            Command::RecordObserved {
                host: h("h2"),
                observed: vec![observed("a", 1, WorkspaceState::Failed)],
            },
            Command::RecordObserved {
                host: h("h1"),
                observed: vec![observed("a", 0, WorkspaceState::Failed)],
            },
            Command::RecordObserved {
                host: h("h1"),
                observed: vec![observed("a", 1, WorkspaceState::Running)],
            },
            Command::RecordObserved {
                host: h("h1"),
                observed: vec![observed("nobody", 1, WorkspaceState::Running)],
            },
        ]);
        assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Running);
    }

    #[test]
    fn destruction_releases_ports_once_the_host_reports_it_gone() {
        let (codes, state) = check(vec![
            Command::RegisterHost(host("h1", 20000, 20010)),
            create("a", "h1", &[(80, 20000)]),
            Command::DestroyWorkspace { name: w("a") },
            Command::SetDesiredRun {
                name: w("a"),
                run: DesiredRun::Running,
            },
            Command::RecordObserved {
                host: h("h1"),
                observed: vec![observed("a", 1, WorkspaceState::Running)],
            },
        ]);
        assert_eq!(codes[3], Some(ErrorCode::InvalidArgument));
        assert_eq!(
            state.workspaces()[&w("a")].state,
            WorkspaceState::Destroying,
            "a late report does not revive it"
        );
        assert_eq!(
            state.ports().len(),
            1,
            "the port stays allocated until the container is gone"
        );
        let (_, state) = check(vec![
            Command::RegisterHost(host("h1", 20000, 20010)),
            create("a", "h1", &[(80, 20000)]),
            Command::DestroyWorkspace { name: w("a") },
            Command::RecordObserved {
                host: h("h1"),
                observed: vec![observed("a", 1, WorkspaceState::Gone)],
            },
            create("a", "h1", &[(80, 20000)]),
        ]);
        assert_eq!(
            state.workspaces().len(),
            1,
            "the name and the port are free again"
        );
    }

    #[test]
    fn each_host_is_told_its_own_workspaces_and_a_destroyed_one_is_absent() {
        let (_, state) = check(vec![
            Command::RegisterHost(host("h1", 20000, 20010)),
            Command::RegisterHost(host("h2", 20000, 20010)),
            create("a", "h1", &[(80, 20000)]),
            create("b", "h1", &[]),
            create("c", "h2", &[]),
            Command::SetDesiredRun {
                name: w("b"),
                run: DesiredRun::Stopped,
            },
            Command::DestroyWorkspace { name: w("a") },
        ]);
        let desired = state.desired_for(&h("h1"));
        assert_eq!(desired.version, state.desired_version(&h("h1")));
        assert_eq!(desired.version, 4, "two creates, a stop and a destroy");
        let runs: Vec<_> = desired
            .assignments
            .iter()
            .map(|a| (a.spec.name.as_str(), a.run, a.generation))
            .collect();
        assert_eq!(
            runs,
            [("a", DesiredRun::Absent, 1), ("b", DesiredRun::Stopped, 1)]
        );
        assert_eq!(desired.assignments[0].ports[0].host, 20000);
        let other = state.desired_for(&h("h2"));
        assert_eq!(other.assignments.len(), 1);
        assert_eq!(state.desired_for(&h("nowhere")).assignments.len(), 0);
    }

    #[test]
    fn a_retried_request_gets_its_first_outcome_and_changes_nothing() {
        let mut state = State::default();
        let proposal = |id: u128, at: u64, command| Proposal {
            request_id: RequestId::from_u128(id),
            at: Timestamp(at),
            proposer: Identity::Agent(h("h1")),
            command,
        };
        state.apply(&proposal(
            1,
            0,
            Command::RegisterHost(host("h1", 20000, 20010)),
        ));
        assert_eq!(
            state.apply(&proposal(2, 1, create("a", "h1", &[]))),
            Outcome::Applied
        );
        let before = state.clone();
        // The same request again (a client retry after a lost answer): applied once only.
        assert_eq!(
            state.apply(&proposal(2, 5, create("a", "h1", &[]))),
            Outcome::Applied
        );
        assert_eq!(state, before);
        // A different request for the same name is a real conflict.
        assert!(matches!(
            state.apply(&proposal(3, 6, create("a", "h1", &[]))),
            Outcome::Rejected(_)
        ));
        // After the retention window the journal forgets, deterministically by proposal time.
        state.apply(&proposal(
            4,
            JOURNAL_RETENTION_MS + 10,
            Command::SetLimits {
                host: None,
                patch: LimitsPatch::default(),
            },
        ));
        assert!(state.outcome_of(RequestId::from_u128(2)).is_none());
        assert!(state.outcome_of(RequestId::from_u128(4)).is_some());
        state.check_invariants().unwrap();
    }
}
