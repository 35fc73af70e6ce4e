//! Workspaces' git worktrees, coordinator side (issue 24): the facts an agent reports are kept in
//! the workspace's record (a Raft write); a branch a destroy kept is told to the workspace's
//! owner as a notice; `workspace inspect` reads the record and asks the host how the worktree
//! stands now.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::{KeptBranch, WorktreeFacts, check_ref, check_url};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{HostRequest, Request, Response};
use nexus_protocol::model::{NoticeAudience, NoticeSource};
use nexus_protocol::transport::Peer;
use nexus_protocol::{HostId, RequestId, UserName, WorkspaceName};

use super::Service;
use crate::cluster::Consistency;
use crate::locks::lock;
use crate::state::Command;

/// How long a host has to say how a worktree stands.
const STATUS_LIMIT: Duration = Duration::from_secs(10);
/// How long a kept branch's notice is shown.
const KEPT_NOTICE_FOR: Duration = Duration::from_secs(14 * 24 * 3600);

impl Service {
    /// An agent's `Worktree`: kept in the workspace's record if its host holds it.
    pub(super) async fn record_worktree(
        &self,
        request_id: RequestId,
        peer: &Peer,
        host: &HostId,
        workspace: WorkspaceName,
        facts: WorktreeFacts,
    ) -> Result<Response, WireError> {
        let command = Command::RecordWorktree {
            host: host.clone(),
            workspace,
            facts,
        };
        self.cluster
            .propose(request_id, peer.identity.clone(), command)
            .await?;
        Ok(Response::Ack)
    }

    /// An agent's `KeptBranch`: a notice to the owner naming the branch, its commits and the
    /// host.
    pub(super) async fn kept_branch(
        &self,
        host: &HostId,
        owner: UserName,
        kept: KeptBranch,
    ) -> Result<Response, WireError> {
        check_ref(&kept.branch)
            .and_then(|()| check_url(&kept.url))
            .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.0))?;
        tracing::warn!(%host, workspace = %kept.workspace, %owner, branch = %kept.branch, commits = kept.unique_commits, "a destroy kept a branch with commits found nowhere else");
        let command = Command::PostNotice {
            text: kept_text(host, &kept),
            audience: NoticeAudience::User(owner),
            source: NoticeSource::KeptBranch {
                workspace: kept.workspace.clone(),
                host: host.clone(),
            },
            until: Some(clock::now().saturating_add(KEPT_NOTICE_FOR)),
        };
        self.propose_own(command).await?;
        Ok(Response::Ack)
    }

    /// A workspace's worktree: its record's facts and, if its host answers, how it stands now.
    pub(super) async fn worktree(
        &self,
        name: &WorkspaceName,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        // Only the leader hears where agents serve: a follower sends the client there.
        self.cluster.require_leader().await?;
        let wanted = name.clone();
        let (host, repo, facts) = self
            .cluster
            .read(consistency, move |state| {
                state
                    .workspaces()
                    .get(&wanted)
                    .map(|w| (w.host.clone(), w.spec.repo.clone(), w.worktree.clone()))
            })
            .await?
            .ok_or_else(|| {
                WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
            })?;
        if repo.is_none() {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("workspace {name} was not created from a repository"),
            ));
        }
        let status = match self
            .ask_host(&host, HostRequest::WorktreeStatus(name.clone()))
            .await
        {
            Ok(Response::Worktree { status, .. }) => status,
            Ok(other) => {
                tracing::warn!(%host, "a host answered a worktree's status with {other:?}");
                None
            }
            Err(error) => {
                tracing::debug!(%host, code = %error.code, "no worktree status from the host: {}", error.message);
                None
            }
        };
        Ok(Response::Worktree { facts, status })
    }

    /// Asks `host`'s agent `request`, as this coordinator, within [`STATUS_LIMIT`]. Only the
    /// leader knows where agents serve.
    async fn ask_host(&self, host: &HostId, request: HostRequest) -> Result<Response, WireError> {
        let unavailable = |why: String| WireError::new(ErrorCode::BackendUnavailable, why);
        let connector = self
            .maintainer
            .as_ref()
            .and_then(|m| m.connector())
            .ok_or_else(|| unavailable("this coordinator cannot reach agents".into()))?;
        let address = lock(&self.endpoints).get(host).cloned().ok_or_else(|| {
            unavailable(format!("host {host}'s agent has not said where it serves"))
        })?;
        super::maintenance::ask_daemon(
            &connector,
            &address,
            Identity::Agent(host.clone()),
            Request::Host(request),
            STATUS_LIMIT,
        )
        .await
    }
}

/// The notice a kept branch gives its owner (within a notice's bound: the URL is cut).
fn kept_text(host: &HostId, kept: &KeptBranch) -> String {
    let mut url = kept.url.clone();
    if url.len() > 300 {
        let mut cut = 300;
        while !url.is_char_boundary(cut) {
            cut -= 1;
        }
        url.truncate(cut);
        url.push('…');
    }
    let commits = match kept.unique_commits {
        1 => "1 commit".to_string(),
        n => format!("{n} commits"),
    };
    format!(
        "Workspace {} was destroyed, but its branch {} of {url} holds {commits} found nowhere \
         else: it was kept in host {host}'s mirror of the repository.",
        kept.workspace, kept.branch
    )
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::model::Notice;

    use super::*;

    #[test]
    fn a_kept_branch_notice_names_the_branch_the_commits_and_the_host() {
        let host: HostId = "h1".parse().unwrap();
        let mut kept = KeptBranch {
            workspace: "api".parse().unwrap(),
            url: "https://git.example/app.git".into(),
            branch: "nexus/api".into(),
            unique_commits: 1,
            at: Timestamp::from_millis(1),
        };
        let text = kept_text(&host, &kept);
        for part in [
            "api",
            "nexus/api",
            "1 commit ",
            "h1",
            "https://git.example/app.git",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        kept.unique_commits = 3;
        kept.url = format!("https://h/{}", "é".repeat(1500));
        let text = kept_text(&host, &kept);
        assert!(text.contains("3 commits"));
        assert!(text.len() <= Notice::TEXT_MAX, "{}", text.len());
    }
}

#[cfg(test)]
mod service_tests {
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::git::{RepoBase, RepoSource};
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{AgentRequest, WorkspaceRequest};
    use nexus_protocol::model::WorkspaceSpec;

    use super::*;
    use crate::service::testing::{
        agent, ask, code, named, one_node_with_h1, register, user, workspace_spec, ws,
    };

    #[tokio::test]
    async fn agents_facts_reach_the_record_and_a_kept_branch_reaches_its_owner() {
        let (_dir, node, service) = one_node_with_h1().await;
        let repo = RepoSource {
            url: "https://git.example/app.git".into(),
            base: RepoBase::Branch("main".into()),
        };
        let bad = WorkspaceSpec {
            repo: Some(RepoSource {
                base: RepoBase::Branch("-x".into()),
                ..repo.clone()
            }),
            ..workspace_spec("bad", &[])
        };
        assert_eq!(
            code(
                ask(
                    &service,
                    &user(Role::User),
                    ws(WorkspaceRequest::Create(bad))
                )
                .await
            ),
            Some(ErrorCode::InvalidArgument)
        );
        let spec = WorkspaceSpec {
            repo: Some(repo),
            ..workspace_spec("api", &[])
        };
        ask(
            &service,
            &user(Role::User),
            ws(WorkspaceRequest::Create(spec)),
        )
        .await
        .unwrap();
        ask(
            &service,
            &user(Role::User),
            ws(WorkspaceRequest::Create(workspace_spec("plain", &[]))),
        )
        .await
        .unwrap();
        let api: WorkspaceName = "api".parse().unwrap();
        let facts = WorktreeFacts {
            branch: "nexus/api".into(),
            base_commit: "b".repeat(40),
        };
        let report = Request::Agent(AgentRequest::Worktree {
            workspace: api.clone(),
            facts: facts.clone(),
        });
        // Only the workspace's own host speaks for it.
        register(&service, "h2").await;
        assert_eq!(
            code(ask(&service, &agent("h2"), report.clone()).await),
            Some(ErrorCode::WorkspaceNotFound)
        );
        assert!(matches!(
            ask(&service, &agent("h1"), report.clone()).await,
            Ok(Response::Ack)
        ));
        // A host marked down has its report refused until a heartbeat returns it.
        crate::service::testing::mark_down(&service, "h1").await;
        assert_eq!(
            code(ask(&service, &agent("h1"), report.clone()).await),
            Some(ErrorCode::HostDown)
        );
        let beat = Request::Agent(AgentRequest::Heartbeat {
            sequence: 1,
            stats: None,
        });
        ask(&service, &agent("h1"), beat).await.unwrap();
        assert!(matches!(
            ask(&service, &agent("h1"), report).await,
            Ok(Response::Ack)
        ));
        // Inspect: the record's facts; the host has not said where it serves, so no status.
        let asked = ask(
            &service,
            &user(Role::User),
            ws(WorkspaceRequest::Worktree(api.clone())),
        )
        .await;
        assert_eq!(
            asked.unwrap(),
            Response::Worktree {
                facts: Some(facts),
                status: None
            }
        );
        assert_eq!(
            code(
                ask(
                    &service,
                    &named("bob", Role::User),
                    ws(WorkspaceRequest::Worktree(api.clone()))
                )
                .await
            ),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(
                ask(
                    &service,
                    &user(Role::User),
                    ws(WorkspaceRequest::Worktree("plain".parse().unwrap()))
                )
                .await
            ),
            Some(ErrorCode::InvalidArgument)
        );
        // A kept branch: a notice for its owner only.
        let kept = Request::Agent(AgentRequest::KeptBranch {
            owner: "alice".parse().unwrap(),
            kept: KeptBranch {
                workspace: api,
                url: "https://git.example/app.git".into(),
                branch: "nexus/api".into(),
                unique_commits: 2,
                at: Timestamp::from_millis(1),
            },
        });
        assert!(matches!(
            ask(&service, &agent("h1"), kept).await,
            Ok(Response::Ack)
        ));
        let notices = |who| {
            let service = &service;
            async move {
                match ask(service, &who, ws(WorkspaceRequest::Notices)).await {
                    Ok(Response::Notices(notices)) => notices,
                    other => panic!("{other:?}"),
                }
            }
        };
        let alice = notices(user(Role::User)).await;
        assert_eq!(alice.len(), 1);
        assert!(alice[0].text.contains("nexus/api") && alice[0].text.contains("2 commits"));
        assert!(matches!(alice[0].source, NoticeSource::KeptBranch { .. }));
        assert!(notices(named("bob", Role::User)).await.is_empty());
        node.stop().await.unwrap();
    }
}
