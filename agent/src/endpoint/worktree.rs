//! This host's worktrees for the endpoint (issue 24): a workspace's as this host sees it
//! (`HostRequest::WorktreeStatus`: for a coordinator, the workspace's owner or an admin), and
//! all of them verified and mended (`HostRequest::Worktrees`: for a coordinator only).

use std::sync::Arc;

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::Response;
use nexus_protocol::transport::Peer;

use super::Endpoint;
use crate::runtime::Runtime;

impl<R: Runtime> Endpoint<R> {
    /// Verifies (and mends) this host's worktrees with `verifier` when a coordinator asks.
    pub fn with_worktrees(mut self, verifier: crate::git::verify::Verifier) -> Endpoint<R> {
        self.worktrees = Some(Arc::new(verifier));
        self
    }

    /// `worktree verify [--repair]` of this host's worktrees: asked by a coordinator only (an
    /// admin asks it there, and it asks every host).
    pub(super) async fn verify_worktrees(
        &self,
        peer: &Peer,
        repair: bool,
    ) -> Result<Response, WireError> {
        if !matches!(peer.identity, Identity::Coordinator(_)) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "a host's worktrees are verified through the coordinators: `nexus admin worktree verify [--host H] [--repair]`",
            ));
        }
        let Some(verifier) = self.worktrees.clone() else {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                "this agent keeps no worktrees (it was started without a data directory for them)",
            ));
        };
        let host = self.host()?;
        let desired = self.desired.borrow().clone();
        let report = verifier.report(host, desired.as_ref(), repair).await;
        Ok(Response::Worktrees(vec![report]))
    }

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
