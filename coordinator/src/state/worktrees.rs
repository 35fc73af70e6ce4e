//! Workspaces' worktrees as their hosts made them (issue 24): the facts an agent reports are
//! kept in the workspace's record, only from the host that holds it.
//!
//! A workspace never moves between hosts (a repair or a restart recreates its container where
//! its files are), so its worktree's facts stand until it is destroyed; a workspace created again
//! under the same name starts without them.

use nexus_protocol::error::ErrorCode;
use nexus_protocol::git::{WorktreeFacts, check_ref};
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::{HostId, WorkspaceName};

use super::{Outcome, State, reject};

impl State {
    /// Keeps `facts` in `workspace`'s record, if `host` holds it and it has a repository.
    pub(super) fn record_worktree(
        &mut self,
        host: &HostId,
        workspace: &WorkspaceName,
        facts: &WorktreeFacts,
    ) -> Outcome {
        if check_ref(&facts.branch).is_err()
            || !nexus_protocol::git::is_commit_id(&facts.base_commit)
        {
            return reject(
                ErrorCode::InvalidArgument,
                "a worktree's facts need a valid branch and a full base commit id",
            );
        }
        let Some(record) = self.workspaces.get_mut(workspace) else {
            return reject(
                ErrorCode::WorkspaceNotFound,
                format!("no workspace {workspace}"),
            );
        };
        if &record.host != host
            || record.spec.repo.is_none()
            || record.state == WorkspaceState::Destroying
        {
            return reject(
                ErrorCode::WorkspaceNotFound,
                format!("host {host} holds no workspace {workspace} with a repository"),
            );
        }
        record.worktree = Some(facts.clone());
        Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::git::{RepoBase, RepoSource};
    use nexus_protocol::identity::{Identity, Role};
    use nexus_protocol::model::{HostInfo, PortRange, WorkspaceSpec};
    use nexus_protocol::{RequestId, UserName};

    use super::super::{Command, Proposal};
    use super::*;

    fn apply(state: &mut State, i: u64, command: Command) -> Option<ErrorCode> {
        let proposal = Proposal {
            request_id: RequestId::from_u128(u128::from(i)),
            at: Timestamp::from_millis(1_000 + i),
            proposer: Identity::User {
                name: UserName::new("alice").unwrap(),
                role: Role::Admin,
            },
            command,
        };
        match state.apply(&proposal) {
            Outcome::Applied => None,
            Outcome::Rejected(error) => Some(error.code),
        }
    }

    fn create(name: &str, on: &str, repo: bool) -> Command {
        Command::CreateWorkspace {
            spec: WorkspaceSpec {
                image: "img".into(),
                repo: repo.then(|| RepoSource {
                    url: "https://git.example/app.git".into(),
                    base: RepoBase::Default,
                }),
                ..nexus_fixtures::spec(name)
            },
            owner: UserName::new("alice").unwrap(),
            host: on.parse().unwrap(),
            ports: vec![],
        }
    }

    #[test]
    fn facts_are_kept_only_from_the_host_holding_a_workspace_with_a_repository() {
        let mut state = State::default();
        for (i, on) in ["h1", "h2"].into_iter().enumerate() {
            let info = HostInfo {
                cpus: 8,
                memory_bytes: 32 << 30,
                port_range: PortRange::new(20_000, 20_100).unwrap(),
                ..nexus_fixtures::host(on)
            };
            assert_eq!(
                apply(&mut state, i as u64 + 1, Command::RegisterHost(info)),
                None
            );
        }
        assert_eq!(apply(&mut state, 3, create("api", "h1", true)), None);
        assert_eq!(apply(&mut state, 4, create("plain", "h1", false)), None);
        let facts = WorktreeFacts {
            branch: "nexus/api".into(),
            base_commit: "a".repeat(40),
        };
        let record = |host: &str, workspace: &str, facts: &WorktreeFacts| Command::RecordWorktree {
            host: host.parse().unwrap(),
            workspace: workspace.parse().unwrap(),
            facts: facts.clone(),
        };
        let bad = WorktreeFacts {
            base_commit: "xyz".into(),
            ..facts.clone()
        };
        let cases = [
            (
                record("h2", "api", &facts),
                Some(ErrorCode::WorkspaceNotFound),
            ),
            (
                record("h1", "plain", &facts),
                Some(ErrorCode::WorkspaceNotFound),
            ),
            (
                record("h1", "nope", &facts),
                Some(ErrorCode::WorkspaceNotFound),
            ),
            (record("h1", "api", &bad), Some(ErrorCode::InvalidArgument)),
            (record("h1", "api", &facts), None),
        ];
        for (i, (command, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                apply(&mut state, 10 + i as u64, command.clone()),
                expected,
                "{command:?}"
            );
        }
        let name: WorkspaceName = "api".parse().unwrap();
        assert_eq!(state.workspaces()[&name].worktree, Some(facts.clone()));
        assert_eq!(
            state.workspaces()[&"plain".parse::<WorkspaceName>().unwrap()].worktree,
            None
        );
        state.check_invariants().unwrap();
    }
}
