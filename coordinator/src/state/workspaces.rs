//! The workspaces table and what users and admins ask of it: create (with a placement already
//! chosen, checked here), run or stop, restart, switch, repair, destroy, clean up. Each change to
//! what a host should run bumps that host's desired-state version.
//!
//! Not here: choosing a host for a create (`placement`, with the scheduler), what agents report
//! (`reports`), and the port table (`ports`).

use std::collections::BTreeSet;

use nexus_protocol::debug::EventKind;
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::{HostStatus, PortBinding, WorkspaceSpec, WorkspaceState};
use nexus_protocol::{HostId, UserName, WorkspaceName};

use super::{Lifecycle, Origin, Outcome, State, WorkspaceRecord, Workspaces, reject};

impl State {
    /// Every workspace, by name.
    pub fn workspaces(&self) -> &Workspaces {
        &self.workspaces
    }

    /// Creates a workspace on `host` with these host ports, if they pass every check: the name
    /// is free, the host fits (the fit rules), and each container port of the spec is bound once
    /// to a free port of the host's range.
    pub(super) fn create(
        &mut self,
        origin: Origin<'_>,
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
        let at = origin.at;
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
                return Outcome::rejected(
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
        self.recheck_room(host);
        let generation = self.first_generation(host);
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
                generation,
                created_at: at,
                updated_at: at,
                last_error: None,
                restart_pending: false,
                port_reassigned: false,
                lifecycle: Lifecycle::created(at),
                worktree: None,
            },
        );
        self.tally
            .moved(host, None, Some(WorkspaceState::Scheduled));
        self.bump(host);
        let placed = EventKind::Created { host: host.clone() };
        self.record_asked(&spec.name, origin, placed, None);
        Outcome::Applied
    }

    /// Runs or stops a workspace (not one being destroyed).
    pub(super) fn set_desired_run(
        &mut self,
        origin: Origin<'_>,
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
        workspace.updated_at = origin.at;
        let host = workspace.host.clone();
        self.bump(&host);
        self.record_asked(name, origin, EventKind::Wanted(run), None);
        if run == DesiredRun::Running {
            self.touch_started(name, origin.at);
        }
        Outcome::Applied
    }

    /// The generation a new workspace on `host` starts at: the host's desired-state version
    /// (at least 1), so that no report about an earlier workspace of the same name on the host
    /// can match it. Every change on a host bumps its version, repairs included (each a
    /// generation more), and a destroy bumps it once more, so the version when a name is made
    /// again is above every generation its predecessor reached. With generation 1 for every new
    /// workspace, the campaign found a late report about a destroyed workspace forgetting its
    /// successor while the successor's container still ran, leaked for good (the agent never
    /// removes a container the coordinator does not name).
    fn first_generation(&self, host: &HostId) -> u64 {
        self.desired_version(host).max(1)
    }

    /// Starts destroying a workspace; it is forgotten once its host reports it gone.
    pub(super) fn destroy(&mut self, origin: Origin<'_>, name: &WorkspaceName) -> Outcome {
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
        };
        let from = workspace.state;
        workspace.state = WorkspaceState::Destroying;
        self.tally
            .moved(&workspace.host, Some(from), Some(workspace.state));
        workspace.desired = DesiredRun::Stopped;
        workspace.restart_pending = false;
        workspace.updated_at = origin.at;
        let host = workspace.host.clone();
        self.bump(&host);
        self.clear_policy_notices(name);
        self.record_asked(name, origin, EventKind::Wanted(DesiredRun::Absent), None);
        Outcome::Applied
    }

    /// Destroys those of `names` that are still stopped; the others, and unknown names, are
    /// left as they are.
    pub(super) fn destroy_stopped(
        &mut self,
        origin: Origin<'_>,
        names: &[WorkspaceName],
    ) -> Outcome {
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
            self.tally.moved(
                &workspace.host,
                Some(WorkspaceState::Stopped),
                Some(workspace.state),
            );
            workspace.updated_at = origin.at;
            let host = workspace.host.clone();
            self.bump(&host);
            self.clear_policy_notices(name);
            let why = "cleanup: stopped and unchanged for long enough".to_string();
            self.record_asked(
                name,
                origin,
                EventKind::Wanted(DesiredRun::Absent),
                Some(why),
            );
        }
        Outcome::Applied
    }

    /// Stops the workspace, then starts it again once its agent reports it stopped (a failed
    /// one is made again).
    pub(super) fn restart(&mut self, origin: Origin<'_>, name: &WorkspaceName) -> Outcome {
        let workspace = match self.changeable(name) {
            Ok(workspace) => workspace,
            Err(refusal) => return refusal,
        };
        // A failed container is not started again as it is (the agent remembers the failure of
        // that generation): restarting it means making it again.
        if workspace.state == WorkspaceState::Failed {
            let why = "a restart of a failed workspace makes its container again";
            return self.repair(origin, name, Some(why.to_string()));
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
        workspace.updated_at = origin.at;
        let host = workspace.host.clone();
        self.bump(&host);
        self.record_asked(name, origin, EventKind::Restart, None);
        self.touch_started(name, origin.at);
        Outcome::Applied
    }

    /// Stops every other workspace `owner` wants running and runs `name` (a context switch).
    pub(super) fn switch(
        &mut self,
        origin: Origin<'_>,
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
        let mut stopped = Vec::new();
        let stops = |other: &WorkspaceName, workspace: &WorkspaceRecord| {
            other != name
                && &workspace.owner == owner
                && workspace.desired == DesiredRun::Running
                && workspace.state != WorkspaceState::Destroying
        };
        self.workspaces.update_where(
            |other, workspace| other == name || stops(other, workspace),
            |other, workspace| {
                let stop = stops(other, workspace);
                workspace.desired = if stop {
                    DesiredRun::Stopped
                } else {
                    DesiredRun::Running
                };
                workspace.restart_pending = false;
                workspace.updated_at = origin.at;
                hosts.insert(workspace.host.clone());
                if stop {
                    stopped.push(other.clone());
                }
            },
        );
        for host in hosts {
            self.bump(&host);
        }
        for other in stopped {
            let why = format!("switch to {name}");
            let wanted = EventKind::Wanted(DesiredRun::Stopped);
            self.record_asked(&other, origin, wanted, Some(why));
        }
        let wanted = EventKind::Wanted(DesiredRun::Running);
        self.record_asked(name, origin, wanted, Some("switch".to_string()));
        self.touch_started(name, origin.at);
        Outcome::Applied
    }

    /// Recreates the container from its spec: a new generation, wanted running. Not on a down
    /// host, which holds its files. `reason`: why, when it was not asked for as a repair.
    pub(super) fn repair(
        &mut self,
        origin: Origin<'_>,
        name: &WorkspaceName,
        reason: Option<String>,
    ) -> Outcome {
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
        let mut generation = 0;
        if let Some(workspace) = self.workspaces.get_mut(name) {
            workspace.generation += 1;
            let from = workspace.state;
            workspace.state = WorkspaceState::Scheduled;
            self.tally
                .moved(&workspace.host, Some(from), Some(workspace.state));
            workspace.desired = DesiredRun::Running;
            workspace.restart_pending = false;
            workspace.port_reassigned = false;
            workspace.last_error = None;
            workspace.updated_at = origin.at;
            generation = workspace.generation;
        }
        self.bump(&host);
        self.record_asked(name, origin, EventKind::Repair { generation }, reason);
        self.touch_started(name, origin.at);
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
