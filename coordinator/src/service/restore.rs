//! An admin's online restore: a backup from this coordinator's directory, checked, replaces the
//! replicated state in one Raft entry.

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::Response;
use nexus_protocol::transport::Peer;

use super::Service;

impl Service {
    pub(super) async fn restore_backup(
        &self,
        _peer: &Peer,
        _request_id: RequestId,
        _id: &str,
        _force: bool,
    ) -> Result<Response, WireError> {
        Err(WireError::new(
            ErrorCode::Unsupported,
            "this coordinator does not restore backups yet",
        ))
    }
}
