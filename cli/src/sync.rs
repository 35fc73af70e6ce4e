//! The user's side of a file sync session with a workspace: the carrier that takes the sync
//! engine's requests to the workspace's agent (over its QUIC endpoint, the connection `logs`
//! and `exec` use) and brings back the answers.

use std::time::Duration;

use nexus_protocol::message::{HostRequest, Request, Response};
use nexus_protocol::transport::Connection;
use nexus_protocol::{RequestId, WorkspaceName, codec};
use nexus_sync::endpoint::{Answer, EndpointError};
use nexus_sync::remote::Carrier;

/// How long one sync request may take (a scan of a large tree, a piece of a large file).
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// Carries one workspace's sync requests to its agent.
#[derive(Debug, Clone)]
pub struct AgentCarrier {
    connection: Connection,
    workspace: WorkspaceName,
}

impl AgentCarrier {
    /// A carrier on `connection`, which must be to `workspace`'s agent (see
    /// `commands::host::agent_of`).
    pub fn new(connection: Connection, workspace: WorkspaceName) -> AgentCarrier {
        AgentCarrier {
            connection,
            workspace,
        }
    }
}

impl Carrier for AgentCarrier {
    async fn call(
        &mut self,
        request: nexus_sync::endpoint::Request,
    ) -> Result<Answer, EndpointError> {
        let payload = codec::encode_payload(&request)
            .map_err(|e| EndpointError::Unavailable(e.to_string()))?;
        let request = Request::Host(HostRequest::Sync {
            workspace: self.workspace.clone(),
            payload,
        });
        match self
            .connection
            .request_with(RequestId::random(), request, SYNC_TIMEOUT)
            .await
        {
            Ok(Response::Sync(bytes)) => codec::decode(&bytes)
                .map_err(|e| EndpointError::Unavailable(format!("not a sync answer: {e}"))),
            Ok(other) => Err(EndpointError::Unavailable(format!(
                "unexpected answer from the agent: {other:?}"
            ))),
            // Refusals (not the owner, no such workspace) are for good; the rest may pass.
            Err(error) => match error.code {
                nexus_protocol::ErrorCode::PermissionDenied
                | nexus_protocol::ErrorCode::WorkspaceNotFound => {
                    Err(EndpointError::Refused(error.message))
                }
                _ => Err(EndpointError::Unavailable(error.message)),
            },
        }
    }
}
