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
use nexus_protocol::message::{Assignment, DesiredRun, DesiredState, ObservedWorkspace};
use nexus_protocol::model::{
    HostInfo, HostStatus, PortBinding, ResourceClass, WorkspaceSpec, WorkspaceState,
};
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};
use serde::{Deserialize, Serialize};

use crate::fit::HostFacts;
pub use crate::fit::{Unfit, Usage};

mod command;
mod placement;

pub use command::{Command, Outcome, PlaceRequest, Proposal};

/// How long a completed request's outcome is remembered for retries.
pub const JOURNAL_RETENTION_MS: u64 = 24 * 3600 * 1000;

pub use nexus_protocol::model::{Limits, LimitsPatch};

/// How long a port found held by something else on a host (a `PORT_CONFLICT`) is skipped when
/// ports are handed out there. Such holders come and go, so the memory fades.
pub const FOREIGN_PORT_MEMORY_MS: u64 = 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub info: HostInfo,
    /// What the scheduler goes by: `Down` while the host is silent, else `admin_status`.
    pub status: HostStatus,
    /// What its admins set (ready, draining or cordoned), kept while the host is down so that a
    /// cordoned host that fails and returns is still cordoned.
    pub admin_status: HostStatus,
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
    /// Stopping in order to start again: the next stopped report from its agent starts it.
    pub restart_pending: bool,
    /// Its host ports were already reassigned once after a `PORT_CONFLICT`; a second conflict
    /// leaves it failed for a person to look at.
    pub port_reassigned: bool,
}

/// The whole replicated state. Serialized as it is for snapshots.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    hosts: BTreeMap<HostId, HostRecord>,
    workspaces: BTreeMap<WorkspaceName, WorkspaceRecord>,
    /// Every allocated host port and the workspace that holds it: no port is given twice.
    ports: BTreeMap<(HostId, u16), WorkspaceName>,
    /// Ports an agent found held by something else, and when: skipped for
    /// [`FOREIGN_PORT_MEMORY_MS`] when ports are handed out.
    foreign_ports: BTreeMap<(HostId, u16), Timestamp>,
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
    /// Per host: how many workspaces it holds and what they are promised. An index of
    /// `workspaces`, kept where workspaces come and go, so that the scheduler's filter costs
    /// the same however many workspaces the fleet has.
    usage: BTreeMap<HostId, Usage>,
    /// Which workspaces each host holds: an index of `workspaces`, so that a host's desired state
    /// costs that host's workspaces rather than the fleet's. Derived, so not serialized: rebuilt
    /// when a snapshot is read.
    #[serde(skip)]
    on_host: BTreeMap<HostId, BTreeSet<WorkspaceName>>,
    /// The hosts' ids in order, for the scheduler to start its search anywhere in the fleet.
    /// Derived like `on_host`.
    #[serde(skip)]
    host_ids: Vec<HostId>,
    /// Which hosts' desired states changed since the driver last looked, so that only those
    /// hosts' watches wake. A note for this process, not replicated state: never serialized,
    /// never compared.
    #[serde(skip)]
    changed_hosts: ChangedHosts,
}

/// Hosts whose desired state changed: a set, or (after a restore, or too many to list) all.
#[derive(Debug, Clone)]
pub enum ChangedHosts {
    Some(BTreeSet<HostId>),
    All,
}

/// More changed hosts than this between two looks are reported as all of them, so a state
/// nobody drains (a test's, a simulation's) stays small.
const MAX_CHANGED_HOSTS: usize = 65_536;

impl Default for ChangedHosts {
    /// A state just made or restored: nothing is known about what changed.
    fn default() -> ChangedHosts {
        ChangedHosts::All
    }
}

impl PartialEq for ChangedHosts {
    fn eq(&self, _: &ChangedHosts) -> bool {
        true
    }
}

impl ChangedHosts {
    fn note(&mut self, host: &HostId) {
        if let ChangedHosts::Some(hosts) = self {
            hosts.insert(host.clone());
            if hosts.len() > MAX_CHANGED_HOSTS {
                *self = ChangedHosts::All;
            }
        }
    }
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

    /// `host`'s own overrides of the cluster's limits.
    pub fn host_overrides(&self, host: &HostId) -> LimitsPatch {
        self.host_limits.get(host).copied().unwrap_or_default()
    }

    pub fn desired_version(&self, host: &HostId) -> u64 {
        self.desired_versions.get(host).copied().unwrap_or(0)
    }

    /// What `host` should run: every workspace placed on it, at the host's desired-state version.
    /// A workspace being destroyed is said `Absent` until its agent reports it gone.
    pub fn desired_for(&self, host: &HostId) -> DesiredState {
        let assignments = self
            .on_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|name| self.workspaces.get(name))
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
        let usage = self.usage.get(host).copied().unwrap_or_default();
        (usage.cpu_millis, usage.memory_bytes)
    }

    /// How many host ports of `host`'s range are not allocated.
    pub fn free_ports_on(&self, host: &HostId, now: Timestamp) -> u32 {
        let Some(record) = self.hosts.get(host) else {
            return 0;
        };
        let span = (host.clone(), 0)..=(host.clone(), u16::MAX);
        let allocated = self
            .ports
            .range(span.clone())
            .filter(|((_, port), _)| record.info.port_range.contains(*port))
            .count();
        // Held by something else, as an agent found, and not allocated to a workspace.
        let foreign = self
            .foreign_ports
            .range(span)
            .filter(|(key, _)| {
                record.info.port_range.contains(key.1)
                    && !self.ports.contains_key(key)
                    && !self.port_free(host, key.1, now)
            })
            .count();
        let used = allocated + foreign;
        record
            .info
            .port_range
            .len()
            .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
    }

    /// What the fit rules need of `host`, if it is known.
    pub fn facts(&self, host: &HostId) -> Option<HostFacts<'_>> {
        let record = self.hosts.get(host)?;
        Some(HostFacts {
            info: &record.info,
            status: record.status,
            limits: self.limits_for(host),
            usage: self.usage.get(host).copied().unwrap_or_default(),
        })
    }

    /// Whether `host` can take one more workspace of `class` with `ports` host ports; the first
    /// reason it cannot, if not. (An unknown host is the caller's to refuse.)
    pub fn unfit(
        &self,
        host: &HostId,
        class: ResourceClass,
        ports: u32,
        now: Timestamp,
    ) -> Option<Unfit> {
        self.facts(host)?
            .unfit(class, ports, || self.free_ports_on(host, now))
    }

    /// What `host` may be promised: (CPU millis, memory bytes), its own times its overcommit.
    pub fn capacity_of(&self, host: &HostId) -> (u64, u64) {
        self.facts(host).map_or((0, 0), |facts| facts.capacity())
    }

    /// Whether `port` on `host` may be handed out at `now`: not allocated, and not found held by
    /// something else within [`FOREIGN_PORT_MEMORY_MS`].
    pub fn port_free(&self, host: &HostId, port: u16, now: Timestamp) -> bool {
        let key = (host.clone(), port);
        !self.ports.contains_key(&key)
            && self.foreign_ports.get(&key).is_none_or(|seen| {
                now.as_millis() >= seen.as_millis().saturating_add(FOREIGN_PORT_MEMORY_MS)
            })
    }

    /// The ports found held by something else, and when.
    pub fn foreign_ports(&self) -> &BTreeMap<(HostId, u16), Timestamp> {
        &self.foreign_ports
    }

    /// How many of `host`'s workspaces are on their way somewhere (see
    /// [`crate::fit::is_in_flight`]).
    pub fn in_flight_on(&self, host: &HostId) -> u32 {
        let names = self.on_host.get(host).into_iter().flatten();
        let moving = names
            .filter_map(|name| self.workspaces.get(name))
            .filter(|w| crate::fit::is_in_flight(w.state))
            .count();
        u32::try_from(moving).unwrap_or(u32::MAX)
    }

    /// Every host's id, in order.
    pub fn host_ids(&self) -> &[HostId] {
        &self.host_ids
    }

    /// How many workspaces `host` holds (every state but gone).
    pub fn workspaces_on(&self, host: &HostId) -> u32 {
        self.usage.get(host).map_or(0, |u| u.workspaces)
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
        self.changed_hosts.note(host);
    }

    /// The hosts whose desired state changed since the last call (all of them, the first time).
    pub fn take_changed_hosts(&mut self) -> ChangedHosts {
        std::mem::replace(&mut self.changed_hosts, ChangedHosts::Some(BTreeSet::new()))
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
                            admin_status: HostStatus::Ready,
                            registered_at: at,
                        };
                        self.hosts.insert(info.host_id.clone(), record);
                        if let Err(at) = self.host_ids.binary_search(&info.host_id) {
                            self.host_ids.insert(at, info.host_id.clone());
                        }
                    }
                }
                Outcome::Applied
            }
            Command::SetHostStatus { host, status } => {
                let Some(record) = self.hosts.get_mut(host) else {
                    return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
                };
                if *status == HostStatus::Down {
                    record.status = HostStatus::Down;
                    self.mark_lost(host, true, at);
                } else {
                    // An admin's word holds from now on, and is what a down host returns to.
                    record.admin_status = *status;
                    if record.status != HostStatus::Down {
                        record.status = *status;
                    }
                }
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
                workspace.restart_pending = false;
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
                workspace.restart_pending = false;
                workspace.updated_at = at;
                let host = workspace.host.clone();
                self.bump(&host);
                Outcome::Applied
            }
            Command::RestartWorkspace { name } => self.restart(at, name),
            Command::SwitchWorkspace { owner, name } => self.switch(at, owner, name),
            Command::RepairWorkspace { name } => self.repair(at, name),
            Command::DestroyStopped { names } => {
                for name in names {
                    let Some(workspace) = self.workspaces.get_mut(name) else {
                        continue;
                    };
                    if workspace.state != WorkspaceState::Stopped
                        || workspace.desired != DesiredRun::Stopped
                    {
                        continue;
                    }
                    workspace.state = WorkspaceState::Destroying;
                    workspace.updated_at = at;
                    let host = workspace.host.clone();
                    self.bump(&host);
                }
                Outcome::Applied
            }
            Command::PlaceWorkspaces(requests) => {
                self.place_all(at, requests);
                Outcome::Applied
            }
            Command::HostReturned { host } => {
                let Some(record) = self.hosts.get_mut(host) else {
                    return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
                };
                if record.status == HostStatus::Down {
                    record.status = record.admin_status;
                    self.mark_lost(host, false, at);
                }
                Outcome::Applied
            }
            Command::SetLimits { patch, .. } if patch.check().is_err() => reject(
                ErrorCode::InvalidArgument,
                patch.check().err().unwrap_or_default(),
            ),
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
        let names = self.on_host.get(host).into_iter().flatten();
        for name in names {
            let Some(workspace) = self.workspaces.get_mut(name) else {
                continue;
            };
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
        if let Some(unfit) = self.unfit(host, spec.class, wanted, at) {
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
        self.usage.entry(host.clone()).or_default().add(spec.class);
        self.on_host
            .entry(host.clone())
            .or_default()
            .insert(spec.name.clone());
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
                restart_pending: false,
                port_reassigned: false,
            },
        );
        self.bump(host);
        Outcome::Applied
    }

    /// The workspace `name` if it may be changed (not being destroyed), else the refusal.
    fn changeable(&mut self, name: &WorkspaceName) -> Result<&mut WorkspaceRecord, Outcome> {
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return Err(reject(
                ErrorCode::WorkspaceNotFound,
                format!("no workspace {name}"),
            ));
        };
        if workspace.state == WorkspaceState::Destroying {
            return Err(reject(
                ErrorCode::InvalidArgument,
                format!("workspace {name} is being destroyed"),
            ));
        }
        Ok(workspace)
    }

    fn restart(&mut self, at: Timestamp, name: &WorkspaceName) -> Outcome {
        let workspace = match self.changeable(name) {
            Ok(workspace) => workspace,
            Err(refusal) => return refusal,
        };
        // A failed container is not started again as it is (the agent remembers the failure of
        // that generation): restarting it means making it again.
        if workspace.state == WorkspaceState::Failed {
            return self.repair(at, name);
        }
        // Stopped already (or never started): a restart is a start.
        if workspace.desired == DesiredRun::Running
            && !matches!(
                workspace.state,
                WorkspaceState::Stopped | WorkspaceState::Scheduled
            )
        {
            workspace.desired = DesiredRun::Stopped;
            workspace.restart_pending = true;
        } else {
            workspace.desired = DesiredRun::Running;
            workspace.restart_pending = false;
        }
        workspace.updated_at = at;
        let host = workspace.host.clone();
        self.bump(&host);
        Outcome::Applied
    }

    fn switch(&mut self, at: Timestamp, owner: &UserName, name: &WorkspaceName) -> Outcome {
        match self.changeable(name) {
            Ok(target) if &target.owner != owner => {
                return reject(
                    ErrorCode::PermissionDenied,
                    format!("workspace {name} is not {owner}'s"),
                );
            }
            Ok(_) => {}
            Err(refusal) => return refusal,
        }
        let mut hosts = BTreeSet::new();
        for (other, workspace) in &mut self.workspaces {
            let stop = other != name
                && &workspace.owner == owner
                && workspace.desired == DesiredRun::Running
                && workspace.state != WorkspaceState::Destroying;
            if stop || other == name {
                workspace.desired = if stop {
                    DesiredRun::Stopped
                } else {
                    DesiredRun::Running
                };
                workspace.restart_pending = false;
                workspace.updated_at = at;
                hosts.insert(workspace.host.clone());
            }
        }
        for host in hosts {
            self.bump(&host);
        }
        Outcome::Applied
    }

    fn repair(&mut self, at: Timestamp, name: &WorkspaceName) -> Outcome {
        let host = match self.changeable(name) {
            Ok(workspace) => workspace.host.clone(),
            Err(refusal) => return refusal,
        };
        if self.hosts.get(&host).map(|h| h.status) == Some(HostStatus::Down) {
            return reject(
                ErrorCode::BackendUnavailable,
                format!("host {host} of workspace {name} is down; its files live there"),
            );
        }
        if let Some(workspace) = self.workspaces.get_mut(name) {
            workspace.generation += 1;
            workspace.state = WorkspaceState::Scheduled;
            workspace.desired = DesiredRun::Running;
            workspace.restart_pending = false;
            workspace.port_reassigned = false;
            workspace.last_error = None;
            workspace.updated_at = at;
        }
        self.bump(&host);
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
            if let Some(gone) = self.workspaces.remove(&name)
                && let Some(usage) = self.usage.get_mut(host)
            {
                usage.remove(gone.spec.class);
                if usage.workspaces == 0 {
                    self.usage.remove(host);
                }
            }
            if let Some(names) = self.on_host.get_mut(host) {
                names.remove(&name);
                if names.is_empty() {
                    self.on_host.remove(host);
                }
            }
            self.bump(host);
            return;
        }
        if workspace.state == WorkspaceState::Destroying {
            return;
        }
        // A report repeats what the agent sees (every 30 s): only a change is an update, so
        // `cleanup --older-than` measures how long a workspace has been as it is.
        if workspace.state != report.state || workspace.last_error != report.error {
            workspace.updated_at = at;
        }
        workspace.state = report.state;
        workspace.last_error = report.error.clone();
        let stopped = matches!(
            report.state,
            WorkspaceState::Stopped | WorkspaceState::Failed
        );
        if workspace.restart_pending && stopped && workspace.desired == DesiredRun::Stopped {
            workspace.restart_pending = false;
            workspace.desired = DesiredRun::Running;
            self.bump(host);
            return;
        }
        let conflict = report.error.as_ref().and_then(|error| match error.detail {
            Some(ErrorDetail::PortConflict { port }) if error.code == ErrorCode::PortConflict => {
                Some(port)
            }
            _ => None,
        });
        if let Some(port) = conflict
            && report.state == WorkspaceState::Failed
        {
            let name = report.name.clone();
            self.reassign_port(at, host, &name, port);
        }
    }

    /// `port` on `host` is held by something else: remember that, and give `name` another port,
    /// as a new generation, once. No free port, or a second conflict: it stays failed.
    fn reassign_port(&mut self, at: Timestamp, host: &HostId, name: &WorkspaceName, port: u16) {
        self.foreign_ports
            .retain(|_, seen| at.as_millis() < seen.as_millis() + FOREIGN_PORT_MEMORY_MS);
        self.foreign_ports.insert((host.clone(), port), at);
        let Some(workspace) = self.workspaces.get(name) else {
            return;
        };
        let bound = workspace.ports.iter().any(|b| b.host == port);
        if workspace.port_reassigned || workspace.desired != DesiredRun::Running || !bound {
            return;
        }
        let Some(range) = self.hosts.get(host).map(|h| h.info.port_range) else {
            return;
        };
        let Some(new_port) =
            (range.first..=range.last).find(|&candidate| self.port_free(host, candidate, at))
        else {
            return;
        };
        self.ports.remove(&(host.clone(), port));
        self.ports.insert((host.clone(), new_port), name.clone());
        if let Some(workspace) = self.workspaces.get_mut(name) {
            for binding in &mut workspace.ports {
                if binding.host == port {
                    binding.host = new_port;
                }
            }
            workspace.generation += 1;
            workspace.state = WorkspaceState::Scheduled;
            workspace.port_reassigned = true;
            workspace.updated_at = at;
        }
        self.bump(host);
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
        let mut state: State = nexus_protocol::codec::decode(payload)
            .map_err(|e| format!("corrupt state snapshot: {e}"))?;
        state.on_host = state.hosts_index();
        state.host_ids = state.hosts.keys().cloned().collect();
        Ok(state)
    }

    /// The `on_host` index, from the workspaces.
    fn hosts_index(&self) -> BTreeMap<HostId, BTreeSet<WorkspaceName>> {
        let mut index: BTreeMap<HostId, BTreeSet<WorkspaceName>> = BTreeMap::new();
        for (name, workspace) in &self.workspaces {
            index
                .entry(workspace.host.clone())
                .or_default()
                .insert(name.clone());
        }
        index
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
        let mut usage: BTreeMap<HostId, Usage> = BTreeMap::new();
        for workspace in self.workspaces.values() {
            usage
                .entry(workspace.host.clone())
                .or_default()
                .add(workspace.spec.class);
        }
        if usage != self.usage {
            return Err(format!(
                "the usage index {:?} is not the workspaces' {usage:?}",
                self.usage
            ));
        }
        if !self.host_ids.iter().eq(self.hosts.keys()) {
            return Err("the list of host ids is not the hosts'".into());
        }
        if self.hosts_index() != self.on_host {
            return Err("the index of workspaces by host is not the workspaces'".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
