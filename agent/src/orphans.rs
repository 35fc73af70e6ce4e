//! Orphans: containers of this host whose workspace the desired state does not name (workspaces
//! created after the backup a cluster was restored from, or left by a lost coordinator state).
//! The reconciler leaves them alone ([`crate::plan`]); admins list them and remove one on their
//! word. Pure: which containers are orphans, and whether one may be removed, from the desired
//! state and the engine's list; the endpoint does the asking and the removing.

use nexus_protocol::HostId;
use nexus_protocol::debug::EngineContainer;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{DesiredState, OrphanView};

/// The orphans among `containers` (the engine's containers labelled for `host`), by name. A
/// container whose labels do not name a workspace and generation is not Nexus's to judge (the
/// reconciler never lists it either), so it is no orphan.
pub fn find(
    host: &HostId,
    desired: &DesiredState,
    containers: &[EngineContainer],
) -> Vec<OrphanView> {
    let mut orphans: Vec<OrphanView> = containers
        .iter()
        .filter(|c| is_orphan(desired, c))
        .map(|c| OrphanView {
            host: host.clone(),
            container: c.name.clone(),
            workspace: c
                .workspace
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            image: c.image.clone(),
            state: c.state.clone(),
        })
        .collect();
    orphans.sort_by(|a, b| a.container.cmp(&b.container));
    orphans
}

/// The container named `name` if it is an orphan now, or why it may not be removed: no such
/// container, or its workspace is one this host is told to run (that is a workspace to
/// destroy, not an orphan).
pub fn removable<'a>(
    desired: &DesiredState,
    containers: &'a [EngineContainer],
    name: &str,
) -> Result<&'a EngineContainer, WireError> {
    let container = containers
        .iter()
        .find(|c| c.name == name && c.workspace.is_some() && c.generation.is_some())
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "no Nexus container {name} on this host; list the orphans with \
                     `nexus admin workspace orphans`"
                ),
            )
        })?;
    if !is_orphan(desired, container) {
        let workspace = container
            .workspace
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!(
                "container {name} is not an orphan: this host runs workspace {workspace}; \
                 destroy the workspace instead (`nexus workspace destroy {workspace}`)"
            ),
        ));
    }
    Ok(container)
}

/// The refusal when the agent has no desired state: it cannot tell an orphan from a workspace
/// it has not heard of yet.
pub fn no_desired_state() -> WireError {
    WireError::new(
        ErrorCode::InvalidArgument,
        "this agent has not had a desired state from the coordinators yet, so it cannot tell \
         orphans; try again once it is registered",
    )
}

fn is_orphan(desired: &DesiredState, container: &EngineContainer) -> bool {
    let (Some(workspace), Some(_)) = (&container.workspace, container.generation) else {
        return false;
    };
    !desired
        .assignments
        .iter()
        .any(|assignment| &assignment.spec.name == workspace)
}

#[cfg(test)]
mod tests {
    use nexus_protocol::message::{Assignment, DesiredRun};

    use super::*;

    fn desired(names: &[&str]) -> DesiredState {
        DesiredState {
            version: 3,
            assignments: names
                .iter()
                .map(|name| Assignment {
                    spec: nexus_fixtures::spec(name),
                    owner: "ada".parse().unwrap(),
                    generation: 1,
                    run: DesiredRun::Running,
                    ports: vec![],
                })
                .collect(),
        }
    }

    fn container(name: &str, workspace: Option<&str>, generation: Option<u64>) -> EngineContainer {
        EngineContainer {
            name: name.into(),
            image: "img".into(),
            state: "running".into(),
            workspace: workspace.map(|w| w.parse().unwrap()),
            generation,
        }
    }

    fn containers() -> Vec<EngineContainer> {
        vec![
            container("nexus.h1.b.g1", Some("b"), Some(1)),
            container("nexus.h1.a.g1", Some("a"), Some(1)),
            container("nexus.h1.a.g2", Some("a"), Some(2)),
            container("nexus.h1.keep.g1", Some("keep"), Some(1)),
            container("damaged", None, Some(1)),
        ]
    }

    #[test]
    fn orphans_are_the_containers_of_workspaces_not_named() {
        let host: HostId = "h1".parse().unwrap();
        let orphans = find(&host, &desired(&["keep"]), &containers());
        let names: Vec<&str> = orphans.iter().map(|o| o.container.as_str()).collect();
        assert_eq!(names, ["nexus.h1.a.g1", "nexus.h1.a.g2", "nexus.h1.b.g1"]);
        assert_eq!(orphans[2].workspace, "b");
        assert_eq!(orphans[2].host, host);
        assert_eq!(orphans[2].state, "running");
        assert!(find(&host, &desired(&["a", "b", "keep"]), &containers()).is_empty());
    }

    #[test]
    fn only_an_orphan_may_be_removed() {
        let all = containers();
        let desired = desired(&["keep"]);
        assert_eq!(
            removable(&desired, &all, "nexus.h1.b.g1").unwrap().name,
            "nexus.h1.b.g1"
        );
        let named = removable(&desired, &all, "nexus.h1.keep.g1").unwrap_err();
        assert_eq!(named.code, ErrorCode::InvalidArgument);
        assert!(named.message.contains("not an orphan"), "{}", named.message);
        let missing = removable(&desired, &all, "nexus.h1.c.g1").unwrap_err();
        assert!(
            missing.message.contains("no Nexus container"),
            "{}",
            missing.message
        );
        assert!(
            removable(&desired, &all, "damaged").is_err(),
            "an unlabelled container is never Nexus's to remove"
        );
    }
}
