//! A workspace's worktree as this host sees it (`HostRequest::WorktreeStatus`, issue 24): for a
//! coordinator (`workspace inspect` asks through the leader), the workspace's owner or an admin.

use std::sync::Arc;

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::Response;
use nexus_protocol::transport::Peer;

use super::Endpoint;
use crate::runtime::Runtime;

impl<R: Runtime> Endpoint<R> {
    /// Answers `WorktreeStatus` from the host's git.
    pub fn with_git(mut self, git: Arc<crate::git::host::GitHost>) -> Endpoint<R> {
        self.git = Some(git);
        self
    }

    /// How a workspace's worktree stands, for a coordinator (`workspace inspect` asks through
    /// it), or the workspace's owner or an admin.
    pub(super) async fn worktree_status(
        &self,
        peer: &Peer,
        workspace: WorkspaceName,
    ) -> Result<Response, WireError> {
        if !matches!(peer.identity, Identity::Coordinator(_)) {
            self.authorise(peer, &workspace)?;
        }
        let Some(git) = &self.git else {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                "this agent keeps no workspace files, so no worktrees",
            ));
        };
        let status = git.status(&workspace).await?;
        let facts = nexus_protocol::git::WorktreeFacts {
            branch: status.branch.clone(),
            base_commit: status.base_commit.clone(),
        };
        Ok(Response::Worktree {
            facts: Some(facts),
            status: Some(status),
        })
    }
}
