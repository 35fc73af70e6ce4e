//! Admins' backups: create one now (at an index the leader confirmed), list, verify, read out in
//! pieces, take one in in pieces, and the schedule. Restoring one is [`super::restore`].

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{AdminRequest, Response};
use nexus_protocol::transport::Peer;

use super::Service;
use crate::cluster::Consistency;

impl Service {
    pub(super) async fn backups(
        &self,
        _peer: &Peer,
        _request_id: RequestId,
        _request: AdminRequest,
        _consistency: Consistency,
    ) -> Result<Response, WireError> {
        Err(WireError::new(
            ErrorCode::Unsupported,
            "this coordinator does not make backups yet",
        ))
    }
}
