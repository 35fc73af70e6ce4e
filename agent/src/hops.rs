//! The agent's hops in a request's trace (see `nexus_protocol::hop`): their names, the causes
//! that say under which request the agent's work on each workspace goes, and the words for a
//! step. Pure.
//!
//! The coordinator names, with each desired state it pushes, the request that last changed each
//! workspace ([`Causes`]); the reconciler runs that workspace's steps in a hop under that id, and
//! the link's report of the result goes under it too. Users' requests to the agent's endpoint
//! carry their own id in their frame.

use std::collections::BTreeMap;

use nexus_protocol::{RequestId, WorkspaceName};

use crate::plan::Step;

/// One workspace's steps in one reconcile pass (`kind`: the steps, `launch`, `stop+remove`).
pub const RECONCILE: &str = "agent.reconcile";
/// One step (`kind`: `launch`, `start`, `stop`, `remove`, `read_exit`, `remove_network`).
pub const STEP: &str = "agent.step";
/// One call to the container engine (`kind`: `pull`, `create`, `start`, `stop`, `remove`,
/// `remove_network`, `read_exit`); its outcome carries the code the engine's error is reported
/// under (one of `RuntimeError::CODES`).
pub const ENGINE: &str = "agent.engine";
/// Git work for a workspace from a repository (`kind`: `worktree`, the worktree made or kept
/// before the container; `remove_worktree`, at destroy); its outcome carries GIT_AUTH_FAILED or
/// GIT_FAILED.
pub const GIT: &str = "agent.git";
/// The report to the coordinators of what a workspace's steps left (`kind`: the state).
pub const REPORT: &str = "agent.report";
/// Users' requests to the agent's endpoint, under their frame's request id.
pub const LOGS: &str = "agent.logs";
pub const EXEC: &str = "agent.exec";
pub const NETWORKS: &str = "agent.networks";
/// An admin's removal of an orphan container (`kind`: the container's name).
pub const REMOVE_ORPHAN: &str = "agent.remove_orphan";
/// A maintenance run (`kind`: `dry_run` or `run`).
pub const MAINTAIN: &str = "agent.maintain";
/// A sync session's request: DEBUG, for a session asks several times a second.
pub const SYNC: &str = "agent.sync";
// worktree verify (issue 24, item 3):
/// A verification of the host's worktrees, asked by the leader (`kind`: `verify` or `repair`).
pub const WORKTREES: &str = "agent.worktrees";

/// The request that last changed each workspace, as the coordinator said with the desired state
/// of `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Causes {
    pub version: Option<u64>,
    pub by_workspace: BTreeMap<WorkspaceName, RequestId>,
}

impl Causes {
    pub fn new(version: u64, causes: Vec<(WorkspaceName, RequestId)>) -> Causes {
        Causes {
            version: Some(version),
            by_workspace: causes.into_iter().collect(),
        }
    }

    /// `workspace`'s cause, if these causes came with the desired state of `version` (causes of
    /// another version may name another change).
    pub fn of(&self, workspace: &WorkspaceName, version: Option<u64>) -> Option<RequestId> {
        if version.is_none() || self.version != version {
            return None;
        }
        self.by_workspace.get(workspace).copied()
    }

    /// Whether causes that came with `version` should replace these: never older ones (a new
    /// leader a few entries behind sends an older state, which the reconciler ignores too).
    pub fn replaced_by(&self, version: u64) -> bool {
        self.version.is_none_or(|held| version >= held)
    }
}

/// A step's word: its `kind` in its hop.
pub fn step_kind(step: &Step) -> &'static str {
    match step {
        Step::Remove { .. } => "remove",
        Step::Launch => "launch",
        Step::Start { .. } => "start",
        Step::Stop { .. } => "stop",
        Step::ReadExit { .. } => "read_exit",
        Step::RemoveNetwork => "remove_network",
    }
}

/// A workspace's steps in a pass, as one word: `stop+remove+launch`.
pub fn steps_kind(steps: &[Step]) -> String {
    steps.iter().map(step_kind).collect::<Vec<_>>().join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> WorkspaceName {
        WorkspaceName::new(text).unwrap()
    }

    #[test]
    fn a_cause_counts_only_for_the_version_it_came_with() {
        let id = RequestId::from_u128(7);
        let causes = Causes::new(3, vec![(name("api"), id)]);
        assert_eq!(causes.of(&name("api"), Some(3)), Some(id));
        assert_eq!(causes.of(&name("web"), Some(3)), None);
        assert_eq!(causes.of(&name("api"), Some(4)), None);
        assert_eq!(causes.of(&name("api"), None), None);
        assert_eq!(Causes::default().of(&name("api"), None), None);
        assert!(Causes::default().replaced_by(0));
        assert!(causes.replaced_by(3));
        assert!(causes.replaced_by(4));
        assert!(!causes.replaced_by(2));
    }

    #[test]
    fn steps_are_named_as_their_hops_say() {
        let id = || "c1".to_string();
        assert_eq!(steps_kind(&[]), "");
        assert_eq!(steps_kind(&[Step::Launch]), "launch");
        assert_eq!(
            steps_kind(&[
                Step::Stop { id: id() },
                Step::Remove { id: id() },
                Step::Launch
            ]),
            "stop+remove+launch"
        );
        assert_eq!(
            steps_kind(&[
                Step::Start { id: id() },
                Step::ReadExit { id: id() },
                Step::RemoveNetwork
            ]),
            "start+read_exit+remove_network"
        );
    }
}
