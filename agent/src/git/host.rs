//! The host's git, as the reconciler and the endpoint use it: worktrees made (with a credential
//! asked of the leader for the fetch only), removed and looked at, and what the leader must
//! know (a worktree's facts, a kept branch) told to it, retried until it acknowledges.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::credentials::{CredentialAsk, CredentialPurpose, GrantedCredential};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::{KeptBranch, RepoSource, WorktreeFacts, WorktreeStatus};
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::{UserName, WorkspaceName};

use super::layout::{Layout, WorktreeRecord};
use super::mirror::Mirrors;
use super::worktree::{self, Made, Plan};
use crate::asker::Asker;

/// How long a credential may take to come from the leader.
const CREDENTIAL_DEADLINE: Duration = Duration::from_secs(10);
/// How long one report to the leader may take, and the longest pause between tries.
const REPORT_DEADLINE: Duration = Duration::from_secs(10);
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Tries of one report before it is given up (about a day at the longest pause).
const REPORT_TRIES: u32 = 1500;

/// The host's git: its mirrors and its way to the leader.
#[derive(Debug)]
pub struct GitHost {
    mirrors: Mirrors,
    asker: Option<Asker>,
}

impl GitHost {
    /// The git state under `data_dir` ([`Layout`]); with `asker`, credentials are asked of the
    /// leader and facts told to it.
    pub fn new(data_dir: &Path, asker: Option<Asker>) -> Arc<GitHost> {
        Arc::new(GitHost {
            mirrors: Mirrors::new(Layout::new(data_dir)),
            asker,
        })
    }

    pub fn layout(&self) -> &Layout {
        self.mirrors.layout()
    }

    /// The mirrors, with the locks that making and removing worktrees hold.
    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// Makes `workspace`'s worktree of `repo` (or keeps the one made before) and tells the
    /// leader its facts.
    pub async fn prepare(
        &self,
        workspace: &WorkspaceName,
        repo: &RepoSource,
    ) -> Result<WorktreeRecord, WireError> {
        let (plan, _) = worktree::current(self.layout(), workspace, &repo.url)?;
        let auth = if plan == Plan::Make {
            self.credential(workspace, &repo.url).await
        } else {
            None
        };
        let made = worktree::make(&self.mirrors, workspace, repo, auth.as_ref()).await?;
        drop(auth);
        if let Made::Kept(record) = &made {
            tracing::debug!(%workspace, branch = %record.branch, "worktree kept as it is");
        }
        let record = made.record().clone();
        self.report(AgentRequest::Worktree {
            workspace: workspace.clone(),
            facts: WorktreeFacts {
                branch: record.branch.clone(),
                base_commit: record.base_commit.clone(),
            },
        });
        Ok(record)
    }

    /// Removes `workspace`'s worktree, if the host made one; a kept branch is told to `owner`.
    pub async fn destroy(
        &self,
        workspace: &WorkspaceName,
        owner: &UserName,
    ) -> Result<Option<KeptBranch>, WireError> {
        let kept = worktree::destroy(&self.mirrors, workspace, clock::now()).await?;
        if let Some(kept) = &kept {
            self.report(AgentRequest::KeptBranch {
                owner: owner.clone(),
                kept: kept.clone(),
            });
        }
        Ok(kept)
    }

    /// How `workspace`'s worktree stands.
    pub async fn status(&self, workspace: &WorkspaceName) -> Result<WorktreeStatus, WireError> {
        super::status::status(self.layout(), workspace).await
    }

    /// The mirror a workspace of `repo` uses (mounted into its container at the same path).
    pub fn mirror_of(&self, repo: &RepoSource) -> std::path::PathBuf {
        self.layout().mirror(&repo.url)
    }

    /// The credential the leader has for fetching `url` for `workspace`, if any. The leader
    /// without a store (UNSUPPORTED), or out of reach, means none: the fetch goes without.
    async fn credential(&self, workspace: &WorkspaceName, url: &str) -> Option<GrantedCredential> {
        let asker = self.asker.as_ref()?;
        let ask = Request::Agent(AgentRequest::Credential(CredentialAsk {
            workspace: workspace.clone(),
            purpose: CredentialPurpose::Git { url: url.into() },
        }));
        match asker.ask(ask, CREDENTIAL_DEADLINE).await {
            Ok(Response::Credential(granted)) => granted,
            Ok(other) => {
                tracing::warn!(%workspace, "the leader answered a credential ask with {other:?}; fetching without one");
                None
            }
            Err(error) if error.code == ErrorCode::Unsupported => None,
            Err(error) => {
                tracing::warn!(%workspace, code = %error.code, "no credential from the leader; fetching without one: {}", error.message);
                None
            }
        }
    }

    /// Tells the leader `request` in the background, until it acknowledges (or refuses it as
    /// wrong: a workspace this host no longer holds).
    fn report(&self, request: AgentRequest) {
        let Some(asker) = self.asker.clone() else {
            return;
        };
        tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            for _ in 0..REPORT_TRIES {
                match asker
                    .ask(Request::Agent(request.clone()), REPORT_DEADLINE)
                    .await
                {
                    Ok(_) => return,
                    Err(error) if !retried(error.code) => {
                        tracing::warn!(code = %error.code, "the leader refused a git report: {}", error.message);
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(code = %error.code, "a git report to the leader failed; trying again: {}", error.message);
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(REPORT_BACKOFF_MAX);
            }
            tracing::warn!("a git report to the leader was given up");
        });
    }
}

/// Whether a report refused with `code` is tried again: only when the refusal is about reaching
/// the leader, not about the report.
fn retried(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::WorkspaceNotFound
            | ErrorCode::PermissionDenied
            | ErrorCode::InvalidArgument
            | ErrorCode::Unsupported
            | ErrorCode::ProtocolError
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_retried_only_for_trouble_reaching_the_leader() {
        let cases = [
            (ErrorCode::NetworkError, true),
            (ErrorCode::NotLeader, true),
            (ErrorCode::Internal, true),
            (ErrorCode::WorkspaceNotFound, false),
            (ErrorCode::PermissionDenied, false),
            (ErrorCode::Unsupported, false),
        ];
        for (code, expected) in cases {
            assert_eq!(retried(code), expected, "{code}");
        }
    }
}
