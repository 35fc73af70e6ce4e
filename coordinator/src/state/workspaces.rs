//! The workspaces table and what users and admins ask of it: create (with a placement already
//! chosen, checked here), run or stop, restart, switch, repair, destroy, clean up. Each change to
//! what a host should run bumps that host's desired-state version.
//!
//! Not here: choosing a host for a create (`placement`, with the scheduler), what agents report
//! (`reports`), and the port table (`ports`).

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::{HostStatus, PortBinding, WorkspaceSpec, WorkspaceState};
use nexus_protocol::{HostId, UserName, WorkspaceName};

use super::{Outcome, State, WorkspaceRecord, reject};

impl State {
    /// Every workspace, by name.
    pub fn workspaces(&self) -> &BTreeMap<WorkspaceName, WorkspaceRecord> {
        &self.workspaces
    }

    /// Creates a workspace on `host` with these host ports, if they pass every check: the name
    /// is free, the host fits (the fit rules), and each container port of the spec is bound once
    /// to a free port of the host's range.
    pub(super) fn create(
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

    /// Runs or stops a workspace (not one being destroyed).
    pub(super) fn set_desired_run(
        &mut self,
        at: Timestamp,
        name: &WorkspaceName,
        run: DesiredRun,
    ) -> Outcome {
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
        };
        if workspace.state == WorkspaceState::Destroying {
            return reject(
                ErrorCode::InvalidArgument,
                format!("workspace {name} is being destroyed"),
            );
        }
        workspace.desired = run;
        workspace.restart_pending = false;
        workspace.updated_at = at;
        let host = workspace.host.clone();
        self.bump(&host);
        Outcome::Applied
    }

    /// Starts destroying a workspace; it is forgotten once its host reports it gone.
    pub(super) fn destroy(&mut self, at: Timestamp, name: &WorkspaceName) -> Outcome {
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

    /// Destroys those of `names` that are still stopped; the others, and unknown names, are
    /// left as they are.
    pub(super) fn destroy_stopped(&mut self, at: Timestamp, names: &[WorkspaceName]) -> Outcome {
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

    /// Stops the workspace, then starts it again once its agent reports it stopped (a failed
    /// one is made again).
    pub(super) fn restart(&mut self, at: Timestamp, name: &WorkspaceName) -> Outcome {
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

    /// Stops every other workspace `owner` wants running and runs `name` (a context switch).
    pub(super) fn switch(
        &mut self,
        at: Timestamp,
        owner: &UserName,
        name: &WorkspaceName,
    ) -> Outcome {
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

    /// Recreates the container from its spec: a new generation, wanted running. Not on a down
    /// host, which holds its files.
    pub(super) fn repair(&mut self, at: Timestamp, name: &WorkspaceName) -> Outcome {
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
}
