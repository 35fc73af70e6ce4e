//! The user's side of a file sync session with a workspace: the carrier that takes the sync
//! engine's requests to the workspace's agent (over its QUIC endpoint, the connection `logs`
//! and `exec` use) and brings back the answers, and the mapping between the engine's refusal
//! codes and the protocol's error codes. The daemon that runs sessions is [`crate::syncd`].

use std::time::Duration;

use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{HostRequest, Request, Response};
use nexus_protocol::transport::Connection;
use nexus_protocol::{RequestId, WorkspaceName, codec};
use nexus_sync::endpoint::{Answer, EndpointError, Refusal, RefusalCode};
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
    /// `agents::agent_of`).
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
            // Refusals (not the owner, no such workspace, a request the agent cannot read) are
            // for good; the rest may pass.
            Err(error) => match refusal_code(error.code) {
                Some(code) => Err(EndpointError::Refused(Refusal::new(code, error.message))),
                None => Err(EndpointError::Unavailable(error.message)),
            },
        }
    }
}

/// The protocol's code for a sync refusal: what a user or a script is told.
pub fn error_code(code: RefusalCode) -> ErrorCode {
    match code {
        RefusalCode::PermissionDenied => ErrorCode::PermissionDenied,
        RefusalCode::NotFound => ErrorCode::WorkspaceNotFound,
        RefusalCode::InvalidFilter => ErrorCode::InvalidArgument,
        RefusalCode::Unspecified | RefusalCode::OutsideRoot | RefusalCode::TooLarge => {
            ErrorCode::SyncSessionFailed
        }
        RefusalCode::NotUnderstood => ErrorCode::ProtocolError,
    }
}

/// The refusal an agent's error is, when it is one for good (`None`: it may pass).
fn refusal_code(code: ErrorCode) -> Option<RefusalCode> {
    match code {
        ErrorCode::PermissionDenied => Some(RefusalCode::PermissionDenied),
        ErrorCode::WorkspaceNotFound => Some(RefusalCode::NotFound),
        // The agent cannot read the request: it is older than the request, and stays so.
        ErrorCode::ProtocolError => Some(RefusalCode::NotUnderstood),
        _ => None,
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_code_maps_to_an_error_code() {
        let mapped: Vec<(RefusalCode, ErrorCode)> = RefusalCode::ALL
            .into_iter()
            .map(|code| (code, error_code(code)))
            .collect();
        assert_eq!(
            mapped,
            [
                (RefusalCode::Unspecified, ErrorCode::SyncSessionFailed),
                (RefusalCode::OutsideRoot, ErrorCode::SyncSessionFailed),
                (RefusalCode::InvalidFilter, ErrorCode::InvalidArgument),
                (RefusalCode::TooLarge, ErrorCode::SyncSessionFailed),
                (RefusalCode::PermissionDenied, ErrorCode::PermissionDenied),
                (RefusalCode::NotFound, ErrorCode::WorkspaceNotFound),
                (RefusalCode::NotUnderstood, ErrorCode::ProtocolError),
            ]
        );
    }

    #[test]
    fn an_agents_refusal_keeps_its_code_both_ways() {
        let refusals: Vec<ErrorCode> = ErrorCode::ALL
            .into_iter()
            .filter(|code| refusal_code(*code).is_some())
            .collect();
        assert_eq!(
            refusals,
            [
                ErrorCode::WorkspaceNotFound,
                ErrorCode::PermissionDenied,
                ErrorCode::ProtocolError
            ]
        );
        for code in refusals {
            assert_eq!(refusal_code(code).map(error_code), Some(code), "{code}");
        }
    }
}
