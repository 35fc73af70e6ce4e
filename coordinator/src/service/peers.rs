//! The other coordinators' requests: batches of Raft messages, each checked against the
//! sender's certificate, writes a follower forwarded to this leader, and either of them in
//! pieces when it is larger than a piece (a snapshot, a restore's proposal): the pieces are
//! assembled per sending coordinator (as its certificate names it) and the whole is handled as
//! if it had arrived in one frame, with the same checks. The sending side is [`crate::peers`].

use std::time::Instant;

use nexus_protocol::codec;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{PeerRequest, Response};
use nexus_protocol::transport::Peer;
use nexus_protocol::{NodeId, RequestId};

use super::Service;
use super::checks::denied;
use crate::consensus;
use crate::locks::lock;
use crate::peers::chunks::{Piece, Progress};
use crate::state::ENTRY_VERSION;

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
        let now = Instant::now();
        let PeerRequest::Chunk {
            transfer,
            offset,
            total,
            bytes,
        } = request
        else {
            // Every peer request sweeps the abandoned transfers: Raft's heartbeats come often.
            let expired = lock(&self.chunks).expire(now);
            if expired > 0 {
                tracing::warn!(
                    expired,
                    "dropped requests in pieces that their senders abandoned"
                );
            }
            return self
                .whole_peer_request(peer, from, request_id, request)
                .await;
        };
        let piece = Piece {
            transfer,
            offset,
            total,
            bytes: &bytes,
        };
        let taken = lock(&self.chunks).take(&from, piece, now);
        let whole = match taken {
            Ok(Progress::More) => {
                self.cluster.heard_from(from);
                return Ok(Response::Ack);
            }
            Ok(Progress::Whole(whole)) => whole,
            Err(error) => {
                tracing::warn!(peer = %from, transfer, "refused a piece of a request: {error}");
                return Err(error.to_wire());
            }
        };
        drop(bytes);
        let request: PeerRequest = codec::decode(&whole).map_err(|error| {
            tracing::warn!(peer = %from, transfer, "dropped a corrupt request in pieces: {error}");
            WireError::new(
                ErrorCode::ProtocolError,
                format!("the {total} bytes of transfer {transfer} are not a peer request: {error}"),
            )
        })?;
        drop(whole);
        if matches!(request, PeerRequest::Chunk { .. }) {
            return Err(WireError::new(
                ErrorCode::ProtocolError,
                "a request in pieces may not itself be a piece of another",
            ));
        }
        tracing::debug!(peer = %from, transfer, total, "assembled a request in pieces");
        self.whole_peer_request(peer, from, request_id, request)
            .await
    }

    /// A peer request as it arrived in one frame, or as it was assembled from its pieces.
    async fn whole_peer_request(
        &self,
        peer: &Peer,
        from: NodeId,
        request_id: RequestId,
        request: PeerRequest,
    ) -> Result<Response, WireError> {
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
            PeerRequest::EntryVersion => Ok(Response::EntryVersion(ENTRY_VERSION)),
            PeerRequest::Chunk { .. } => Err(WireError::new(
                ErrorCode::ProtocolError,
                "a piece of a request is not a request of its own",
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
    use nexus_protocol::transport::Peer;

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

    /// `request` as the pieces a peer sends: its encoding cut every `size` bytes.
    fn pieces(request: &PeerRequest, transfer: u64, size: usize) -> Vec<Request> {
        let bytes = nexus_protocol::codec::encode_payload(request).unwrap();
        let total = bytes.len() as u64;
        crate::peers::chunks::split(&bytes, size)
            .map(|(offset, piece)| {
                Request::Peer(PeerRequest::Chunk {
                    transfer,
                    offset,
                    total,
                    bytes: piece.to_vec(),
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn requests_in_pieces_are_assembled_checked_and_handled_whole() {
        let (_dir, node, service) = one_node().await;
        let coordinator2 = peer(Identity::Coordinator(NodeId::new(2).unwrap()));
        let mut message = consensus::RaftMessage {
            from: 2,
            to: 1,
            ..Default::default()
        };
        message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
        let honest = PeerRequest::Raft(vec![consensus::encode_message(&message).unwrap()]);
        let honest_pieces = pieces(&honest, 7, 3);
        assert!(honest_pieces.len() > 2);
        let last = honest_pieces.len() - 1;
        for (i, piece) in honest_pieces.iter().enumerate() {
            let answer = ask(&service, &coordinator2, piece.clone()).await;
            assert!(
                matches!(answer, Ok(Response::Ack)),
                "piece {i} of {last}: {answer:?}"
            );
        }

        // The whole gets the checks it would get in one frame: a message that claims another
        // sender is refused once assembled, as is a piece of a piece or bytes that are no request.
        message.from = 3;
        let forged = PeerRequest::Raft(vec![consensus::encode_message(&message).unwrap()]);
        let nested = PeerRequest::Chunk {
            transfer: 1,
            offset: 0,
            total: 1,
            bytes: vec![0],
        };
        let garbage = PeerRequest::Propose(vec![0xff; 40]);
        for (whole, expected) in [
            (&forged, ErrorCode::PermissionDenied),
            (&nested, ErrorCode::ProtocolError),
            (&garbage, ErrorCode::ProtocolError),
        ] {
            let mut answers = Vec::new();
            for piece in pieces(whole, 8, 5) {
                answers.push(ask(&service, &coordinator2, piece).await);
            }
            let (last, rest) = answers.split_last().unwrap();
            assert!(
                rest.iter().all(|a| matches!(a, Ok(Response::Ack))),
                "{rest:?}"
            );
            assert_eq!(code(last.clone()), Some(expected), "{whole:?}: {last:?}");
        }
        let mut not_a_request = pieces(&honest, 9, 4);
        let Some(Request::Peer(PeerRequest::Chunk { bytes, .. })) = not_a_request.first_mut()
        else {
            panic!()
        };
        bytes[0] = 0xff;
        let mut last = None;
        for piece in not_a_request {
            last = Some(ask(&service, &coordinator2, piece).await);
        }
        assert_eq!(code(last.unwrap()), Some(ErrorCode::ProtocolError));

        // Only coordinators send pieces.
        assert_eq!(
            code(ask(&service, &user(Role::Admin), honest_pieces[0].clone()).await),
            Some(ErrorCode::PermissionDenied)
        );
        node.stop().await.unwrap();
    }

    /// Pieces, each with who sends it.
    type Sequence<'a> = Vec<(&'a Peer, Request)>;

    #[tokio::test]
    async fn bad_sequences_of_pieces_are_refused_and_start_over() {
        let (_dir, node, service) = one_node().await;
        let coordinator2 = peer(Identity::Coordinator(NodeId::new(2).unwrap()));
        let coordinator3 = peer(Identity::Coordinator(NodeId::new(3).unwrap()));
        let mut message = consensus::RaftMessage {
            from: 2,
            to: 1,
            ..Default::default()
        };
        message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
        let honest = PeerRequest::Raft(vec![consensus::encode_message(&message).unwrap()]);
        let p = pieces(&honest, 5, 4);
        assert!(p.len() >= 3);
        let chunk = |transfer: u64, offset: u64, total: u64, len: usize| {
            Request::Peer(PeerRequest::Chunk {
                transfer,
                offset,
                total,
                bytes: vec![0; len],
            })
        };
        let cases: Vec<(&str, Sequence, ErrorCode)> = vec![
            (
                "a gap",
                vec![(&coordinator2, p[0].clone()), (&coordinator2, p[2].clone())],
                ErrorCode::ProtocolError,
            ),
            (
                "a piece twice",
                vec![
                    (&coordinator2, p[0].clone()),
                    (&coordinator2, p[1].clone()),
                    (&coordinator2, p[1].clone()),
                ],
                ErrorCode::ProtocolError,
            ),
            (
                "a piece without its start",
                vec![(&coordinator2, p[1].clone())],
                ErrorCode::ProtocolError,
            ),
            (
                "another sender's transfer",
                vec![(&coordinator2, p[0].clone()), (&coordinator3, p[1].clone())],
                ErrorCode::ProtocolError,
            ),
            (
                "a total that changes",
                vec![
                    (&coordinator2, chunk(6, 0, 10, 4)),
                    (&coordinator2, chunk(6, 4, 12, 4)),
                ],
                ErrorCode::ProtocolError,
            ),
            (
                "past its total",
                vec![(&coordinator2, chunk(6, 0, 3, 4))],
                ErrorCode::ProtocolError,
            ),
            (
                "an empty piece",
                vec![(&coordinator2, chunk(6, 0, 3, 0))],
                ErrorCode::ProtocolError,
            ),
            (
                "a total above the bound",
                vec![(&coordinator2, chunk(6, 0, 3 << 30, 4))],
                ErrorCode::InvalidArgument,
            ),
        ];
        for (name, sequence, expected) in cases {
            let (last, first) = sequence.split_last().unwrap();
            for (from, request) in first {
                assert!(
                    matches!(
                        ask(&service, from, request.clone()).await,
                        Ok(Response::Ack)
                    ),
                    "{name}"
                );
            }
            assert_eq!(
                code(ask(&service, last.0, last.1.clone()).await),
                Some(expected),
                "{name}"
            );
            // A refusal drops the transfer; the sender starts over, and the whole goes through.
            for piece in &p {
                let answer = ask(&service, &coordinator2, piece.clone()).await;
                assert!(matches!(answer, Ok(Response::Ack)), "{name}: {answer:?}");
            }
        }
        node.stop().await.unwrap();
    }
}
