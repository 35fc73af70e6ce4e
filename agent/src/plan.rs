//! The reconciler's plan: desired × actual → steps. Pure: no I/O, no clock, no randomness.
//!
//! For each workspace the coordinator assigned to this host, [`plan`] says which steps bring its
//! containers to what is desired, and which state to report once they are done. The reconciler
//! runs the plan, lists the containers again and plans again until there is nothing left to do:
//! level-triggered, so a lost event, a crashed agent or a step that failed halfway is repaired by
//! the next pass.
//!
//! Two rules keep the agent from doing harm:
//!
//! - Only containers of workspaces the coordinator names are touched. A container labelled for
//!   this host whose workspace the coordinator does not name is an *orphan*: reported in the log,
//!   never removed (a coordinator restored from an old backup must not destroy people's work).
//!   Until the agent has a desired state (from the coordinator, or its cache on disk), nothing is
//!   touched at all.
//! - A container that stopped on its own is not restarted: it is reported `Failed` with its exit
//!   code (the user repairs it). A container is started again only when the agent stopped it on
//!   purpose (the workspace was desired stopped), or when it was interrupted by an outage of the
//!   engine; the caller says which in [`Memory::restartable`].

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::WorkspaceName;
use nexus_protocol::message::{DesiredRun, DesiredState};
use nexus_protocol::model::WorkspaceState;

use crate::runtime::{Container, ContainerStatus};

/// One step, for one workspace. A workspace's steps run in order; different workspaces' steps
/// run concurrently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Remove a container: of an older generation, or of a workspace being destroyed.
    Remove {
        id: String,
    },
    /// Check the host ports, then create and start the current generation's container.
    Launch,
    /// Check the host ports, then start this (created or stopped) container.
    Start {
        id: String,
    },
    Stop {
        id: String,
    },
    /// Find out how a container that stopped on its own ended, to report it.
    ReadExit {
        id: String,
    },
    /// Remove the workspace's network: its last container is gone.
    RemoveNetwork,
}

/// The plan for one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePlan {
    pub name: WorkspaceName,
    pub generation: u64,
    pub steps: Vec<Step>,
    /// The state to report once the steps are done (now, when there are none).
    pub state: WorkspaceState,
    /// The container of the current generation, if there is one.
    pub container: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub workspaces: Vec<WorkspacePlan>,
    /// Containers of this host whose workspace the coordinator does not name: left alone.
    pub orphans: Vec<Container>,
    /// Containers of a generation newer than the desired one: this desired state is older than
    /// what the host already ran, so their workspaces are left alone until a newer one comes.
    pub ahead: Vec<Container>,
}

/// What the reconciler remembers between passes, as the plan needs it.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Workspace generations whose stopped container may be started: the agent stopped it on
    /// purpose, or an engine outage interrupted it.
    pub restartable: BTreeSet<(WorkspaceName, u64)>,
    /// Containers that stopped on their own and whose exit has been read already.
    pub exits_read: BTreeSet<String>,
    /// Workspaces being destroyed whose network is already removed.
    pub networks_removed: BTreeSet<WorkspaceName>,
}

/// Plans every workspace of `desired` against the `actual` containers. With no desired state yet,
/// plans nothing and reports every container as an orphan.
pub fn plan(desired: Option<&DesiredState>, actual: &[Container], memory: &Memory) -> Plan {
    let mut by_workspace: BTreeMap<&WorkspaceName, Vec<&Container>> = BTreeMap::new();
    for container in actual {
        by_workspace
            .entry(&container.workspace)
            .or_default()
            .push(container);
    }
    let Some(desired) = desired else {
        return Plan {
            workspaces: Vec::new(),
            orphans: actual.to_vec(),
            ahead: Vec::new(),
        };
    };
    let named: BTreeSet<&WorkspaceName> =
        desired.assignments.iter().map(|a| &a.spec.name).collect();
    let orphans = actual
        .iter()
        .filter(|c| !named.contains(&c.workspace))
        .cloned()
        .collect();
    let mut ahead = Vec::new();
    let workspaces = desired
        .assignments
        .iter()
        .filter_map(|assignment| {
            let name = &assignment.spec.name;
            let containers = by_workspace.remove(name).unwrap_or_default();
            let newer: Vec<Container> = containers
                .iter()
                .filter(|c| c.generation > assignment.generation)
                .map(|c| (*c).clone())
                .collect();
            if !newer.is_empty() {
                ahead.extend(newer);
                return None;
            }
            Some(plan_one(
                name,
                assignment.generation,
                assignment.run,
                &containers,
                memory,
            ))
        })
        .collect();
    Plan {
        workspaces,
        orphans,
        ahead,
    }
}

fn plan_one(
    name: &WorkspaceName,
    generation: u64,
    run: DesiredRun,
    containers: &[&Container],
    memory: &Memory,
) -> WorkspacePlan {
    let mut steps = Vec::new();
    let mut current = None;
    for container in containers {
        // At most one container per generation (names are unique); anything else is stale, as is
        // every container of a workspace being destroyed.
        if run != DesiredRun::Absent && container.generation == generation && current.is_none() {
            current = Some(*container);
        } else {
            steps.push(Step::Remove {
                id: container.id.clone(),
            });
        }
    }
    let state = match run {
        DesiredRun::Absent => {
            if !steps.is_empty() || !memory.networks_removed.contains(name) {
                steps.push(Step::RemoveNetwork);
            }
            WorkspaceState::Gone
        }
        DesiredRun::Stopped => {
            if let Some(container) = current
                && container.status == ContainerStatus::Running
            {
                steps.push(Step::Stop {
                    id: container.id.clone(),
                });
            }
            WorkspaceState::Stopped
        }
        DesiredRun::Running => match current {
            None => {
                steps.push(Step::Launch);
                WorkspaceState::Running
            }
            Some(container) => match container.status {
                ContainerStatus::Running => WorkspaceState::Running,
                ContainerStatus::Created => {
                    steps.push(Step::Start {
                        id: container.id.clone(),
                    });
                    WorkspaceState::Running
                }
                ContainerStatus::Exited
                    if memory.restartable.contains(&(name.clone(), generation)) =>
                {
                    steps.push(Step::Start {
                        id: container.id.clone(),
                    });
                    WorkspaceState::Running
                }
                ContainerStatus::Exited => {
                    if !memory.exits_read.contains(&container.id) {
                        steps.push(Step::ReadExit {
                            id: container.id.clone(),
                        });
                    }
                    WorkspaceState::Failed
                }
            },
        },
    };
    WorkspacePlan {
        name: name.clone(),
        generation,
        steps,
        state,
        container: current.map(|c| c.id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::message::Assignment;
    use nexus_protocol::model::{PortBinding, WorkspaceSpec};

    use super::*;

    fn name(value: &str) -> WorkspaceName {
        value.parse().unwrap()
    }

    fn assignment(workspace: &str, generation: u64, run: DesiredRun) -> Assignment {
        Assignment {
            spec: WorkspaceSpec {
                image: "img".into(),
                ..nexus_fixtures::spec(workspace)
            },
            owner: "ada".parse().unwrap(),
            generation,
            run,
            ports: vec![],
        }
    }

    fn container(id: &str, workspace: &str, generation: u64, status: ContainerStatus) -> Container {
        Container {
            id: id.into(),
            workspace: name(workspace),
            generation,
            status,
            ports: vec![PortBinding {
                container: 80,
                host: 20000,
            }],
        }
    }

    fn desired(assignments: Vec<Assignment>) -> DesiredState {
        DesiredState {
            version: 1,
            assignments,
        }
    }

    /// The container of one workspace as a test case describes it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Current {
        None,
        Created,
        Running,
        /// Exited, and the agent stopped it (or an outage did).
        ExitedRestartable,
        /// Exited on its own; its exit not yet read.
        Crashed,
        /// Exited on its own; its exit already read and reported.
        CrashRead,
    }

    const ALL_CURRENT: [Current; 6] = [
        Current::None,
        Current::Created,
        Current::Running,
        Current::ExitedRestartable,
        Current::Crashed,
        Current::CrashRead,
    ];

    /// What the plan must be for one workspace, whatever else is on the host: the whole table.
    fn expected(run: DesiredRun, current: Current, stale: bool) -> (Vec<Step>, WorkspaceState) {
        let mut steps = Vec::new();
        if stale {
            steps.push(Step::Remove { id: "old".into() });
        }
        let id = || "cur".to_string();
        let state = match (run, current) {
            (DesiredRun::Absent, current) => {
                if current != Current::None {
                    steps.push(Step::Remove { id: id() });
                }
                steps.push(Step::RemoveNetwork);
                WorkspaceState::Gone
            }
            (DesiredRun::Stopped, Current::Running) => {
                steps.push(Step::Stop { id: id() });
                WorkspaceState::Stopped
            }
            (DesiredRun::Stopped, _) => WorkspaceState::Stopped,
            (DesiredRun::Running, Current::None) => {
                steps.push(Step::Launch);
                WorkspaceState::Running
            }
            (DesiredRun::Running, Current::Running) => WorkspaceState::Running,
            (DesiredRun::Running, Current::Created | Current::ExitedRestartable) => {
                steps.push(Step::Start { id: id() });
                WorkspaceState::Running
            }
            (DesiredRun::Running, Current::Crashed) => {
                steps.push(Step::ReadExit { id: id() });
                WorkspaceState::Failed
            }
            (DesiredRun::Running, Current::CrashRead) => WorkspaceState::Failed,
        };
        (steps, state)
    }

    #[test]
    fn every_combination_of_desired_and_actual() {
        let mut cases = 0;
        for run in [DesiredRun::Running, DesiredRun::Stopped, DesiredRun::Absent] {
            for current in ALL_CURRENT {
                for stale in [false, true] {
                    let mut actual = Vec::new();
                    let mut memory = Memory::default();
                    if stale {
                        actual.push(container("old", "w", 1, ContainerStatus::Running));
                    }
                    let status = match current {
                        Current::None => None,
                        Current::Created => Some(ContainerStatus::Created),
                        Current::Running => Some(ContainerStatus::Running),
                        Current::ExitedRestartable | Current::Crashed | Current::CrashRead => {
                            Some(ContainerStatus::Exited)
                        }
                    };
                    if let Some(status) = status {
                        actual.push(container("cur", "w", 2, status));
                    }
                    if current == Current::ExitedRestartable {
                        memory.restartable.insert((name("w"), 2));
                    }
                    if current == Current::CrashRead {
                        memory.exits_read.insert("cur".into());
                    }
                    // Another workspace's containers never change this one's plan.
                    actual.push(container("x", "other", 1, ContainerStatus::Running));
                    let desired = desired(vec![
                        assignment("w", 2, run),
                        assignment("other", 1, DesiredRun::Running),
                    ]);
                    let plan = plan(Some(&desired), &actual, &memory);
                    let (steps, state) = expected(run, current, stale);
                    let mine = &plan.workspaces[0];
                    assert_eq!(
                        (&mine.steps, mine.state),
                        (&steps, state),
                        "{run:?} {current:?} stale={stale}"
                    );
                    let expect_container = run != DesiredRun::Absent && current != Current::None;
                    assert_eq!(mine.container.is_some(), expect_container);
                    assert!(plan.workspaces[1].steps.is_empty());
                    assert!(plan.orphans.is_empty());
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 36);
    }

    #[test]
    fn nothing_is_touched_without_a_desired_state() {
        let actual = vec![container("a", "w", 1, ContainerStatus::Running)];
        let plan = plan(None, &actual, &Memory::default());
        assert!(plan.workspaces.is_empty());
        assert_eq!(plan.orphans, actual);
    }

    #[test]
    fn containers_of_unnamed_workspaces_are_orphans_and_left_alone() {
        let actual = vec![
            container("a", "w", 1, ContainerStatus::Running),
            container("b", "stray", 4, ContainerStatus::Exited),
        ];
        let plan = plan(
            Some(&desired(vec![assignment("w", 1, DesiredRun::Running)])),
            &actual,
            &Memory::default(),
        );
        assert_eq!(plan.orphans, vec![actual[1].clone()]);
        assert!(plan.workspaces[0].steps.is_empty());
        // An empty desired set (the coordinator has nothing for this host) removes nothing either.
        let empty = super::plan(Some(&desired(vec![])), &actual, &Memory::default());
        assert_eq!(empty.orphans.len(), 2);
    }

    #[test]
    fn a_destroyed_workspace_with_its_network_gone_needs_nothing() {
        let mut memory = Memory::default();
        memory.networks_removed.insert(name("w"));
        let plan = plan(
            Some(&desired(vec![assignment("w", 1, DesiredRun::Absent)])),
            &[],
            &memory,
        );
        assert!(plan.workspaces[0].steps.is_empty());
        assert_eq!(plan.workspaces[0].state, WorkspaceState::Gone);
    }

    #[test]
    fn a_desired_state_older_than_the_host_touches_nothing_of_that_workspace() {
        // The host runs generation 3; a stale desired state says generation 2 (or destroy it).
        for run in [DesiredRun::Running, DesiredRun::Stopped, DesiredRun::Absent] {
            let actual = vec![
                container("new", "w", 3, ContainerStatus::Running),
                container("old", "w", 2, ContainerStatus::Exited),
            ];
            let plan = plan(
                Some(&desired(vec![
                    assignment("w", 2, run),
                    assignment("x", 1, DesiredRun::Running),
                ])),
                &actual,
                &Memory::default(),
            );
            assert_eq!(plan.workspaces.len(), 1, "{run:?}");
            assert_eq!(plan.workspaces[0].name, name("x"));
            assert_eq!(plan.ahead, vec![actual[0].clone()]);
            assert!(plan.orphans.is_empty());
        }
    }

    #[test]
    fn duplicate_containers_of_one_generation_keep_one() {
        let actual = vec![
            container("a", "w", 1, ContainerStatus::Running),
            container("b", "w", 1, ContainerStatus::Running),
        ];
        let plan = plan(
            Some(&desired(vec![assignment("w", 1, DesiredRun::Running)])),
            &actual,
            &Memory::default(),
        );
        assert_eq!(
            plan.workspaces[0].steps,
            vec![Step::Remove { id: "b".into() }]
        );
        assert_eq!(plan.workspaces[0].container.as_deref(), Some("a"));
    }

    #[test]
    fn planning_is_idempotent_once_done() {
        // After the steps of a plan have run, the same desired state plans nothing.
        let desired = desired(vec![
            assignment("a", 1, DesiredRun::Running),
            assignment("b", 3, DesiredRun::Stopped),
        ]);
        let actual = vec![
            container("a1", "a", 1, ContainerStatus::Running),
            container("b3", "b", 3, ContainerStatus::Exited),
        ];
        let plan = plan(Some(&desired), &actual, &Memory::default());
        assert!(plan.workspaces.iter().all(|w| w.steps.is_empty()));
        assert_eq!(
            plan.workspaces.iter().map(|w| w.state).collect::<Vec<_>>(),
            [WorkspaceState::Running, WorkspaceState::Stopped]
        );
    }
}
