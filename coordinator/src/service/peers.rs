//! The other coordinators' requests: batches of Raft messages, each checked against the
//! sender's certificate, and writes a follower forwarded to this leader. The sending side is
//! [`crate::peers`].

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{PeerRequest, Response};
use nexus_protocol::transport::Peer;

use super::Service;
use super::checks::denied;
use crate::consensus;

impl Service {
    pub(super) async fn peer(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: PeerRequest,
    ) -> Result<Response, WireError> {
        let Identity::Coordinator(from) = peer.identity else {
            return Err(denied(peer, "only coordinators of this cluster speak Raft"));
        };
        match request {
            PeerRequest::Raft(batch) => {
                let mut messages = Vec::with_capacity(batch.len());
                for bytes in &batch {
                    let message = consensus::decode_message(bytes).inspect_err(|error| {
                        tracing::warn!(peer = %from, "dropped a corrupt raft message: {}", error.message);
                    })?;
                    if message.from != from.get() || message.to != self.cluster.id().get() {
                        tracing::warn!(
                            peer = %from,
                            claimed_from = message.from,
                            to = message.to,
                            "dropped a raft message that does not match its sender's certificate or is not for this node"
                        );
                        return Err(denied(
                            peer,
                            &format!(
                                "a raft message from node {} to node {} arrived from {} at node {}",
                                message.from,
                                message.to,
                                peer.identity,
                                self.cluster.id()
                            ),
                        ));
                    }
                    consensus::check_peer_message(&message).inspect_err(|error| {
                        tracing::warn!(peer = %from, "dropped a raft message: {}", error.message);
                    })?;
                    messages.push(message);
                }
                self.cluster.step(from, messages).await?;
                Ok(Response::Ack)
            }
            PeerRequest::Propose(bytes) => {
                let proposal = consensus::decode_forwarded(&bytes).map_err(|error| {
                    WireError::new(
                        ErrorCode::ProtocolError,
                        format!("a corrupt forwarded proposal: {error}"),
                    )
                })?;
                if proposal.request_id != request_id {
                    return Err(WireError::new(
                        ErrorCode::ProtocolError,
                        "a forwarded proposal must travel under its own request id",
                    ));
                }
                self.cluster.propose_here(proposal).await?;
                Ok(Response::Ack)
            }
            PeerRequest::Chunk { .. } => Err(WireError::new(
                ErrorCode::Unsupported,
                "this coordinator does not take chunked peer requests yet",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::NodeId;
    use nexus_protocol::error::ErrorCode;
    use nexus_protocol::identity::{Identity, Role};
    use nexus_protocol::message::{PeerRequest, Request, Response};

    use crate::consensus;
    use crate::service::testing::{ask, code, one_node, peer, user};

    #[tokio::test]
    async fn only_coordinators_speak_raft_and_only_for_themselves() {
        let (_dir, node, service) = one_node().await;
        let raft = |bytes: Vec<u8>| Request::Peer(PeerRequest::Raft(vec![bytes]));
        assert_eq!(
            code(ask(&service, &user(Role::Admin), raft(vec![])).await),
            Some(ErrorCode::PermissionDenied)
        );
        let coordinator2 = peer(Identity::Coordinator(NodeId::new(2).unwrap()));
        assert_eq!(
            code(ask(&service, &coordinator2, raft(vec![0xff, 0xff, 0xff])).await),
            Some(ErrorCode::ProtocolError)
        );
        // A well-formed message that claims to come from node 3, sent by node 2.
        let mut message = consensus::RaftMessage {
            from: 3,
            to: 1,
            ..Default::default()
        };
        let forged = consensus::encode_message(&message).unwrap();
        assert_eq!(
            code(ask(&service, &coordinator2, raft(forged)).await),
            Some(ErrorCode::PermissionDenied)
        );
        message.from = 2;
        message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
        let honest = consensus::encode_message(&message).unwrap();
        assert!(matches!(
            ask(&service, &coordinator2, raft(honest)).await,
            Ok(Response::Ack)
        ));
        // A proposal in Raft's own form would put unchecked bytes in the log, and a local
        // message never travels: both are refused, however well-formed.
        for kind in [
            raft::eraftpb::MessageType::MsgPropose,
            raft::eraftpb::MessageType::MsgHup,
        ] {
            message.set_msg_type(kind);
            message.mut_entries().push(raft::eraftpb::Entry {
                data: vec![0xff; 8].into(),
                ..Default::default()
            });
            let refused = consensus::encode_message(&message).unwrap();
            assert_eq!(
                code(ask(&service, &coordinator2, raft(refused)).await),
                Some(ErrorCode::ProtocolError),
                "{kind:?}"
            );
        }
        let corrupt = Request::Peer(PeerRequest::Propose(vec![1, 2, 3]));
        assert_eq!(
            code(ask(&service, &coordinator2, corrupt).await),
            Some(ErrorCode::ProtocolError)
        );
        node.stop().await.unwrap();
    }
}
