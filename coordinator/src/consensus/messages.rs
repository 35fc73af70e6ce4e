//! Raft's messages as they travel between coordinators: their wire form (protobuf), which of
//! them a peer may send, and how the sender sorts them (snapshots, whose fate Raft must learn;
//! heartbeats and votes, which get a lane of their own).

use nexus_protocol::error::{ErrorCode, WireError};
use raft::eraftpb::MessageType;

use super::RaftMessage;

/// Whether a message carries a snapshot (whose fate the sender must learn, see
/// [`super::RaftNode::report_snapshot`]).
pub fn carries_snapshot(message: &RaftMessage) -> bool {
    message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
}

/// Whether a message grants a peer's pre-vote (this node would vote for it in the next term).
pub fn grants_pre_vote(message: &RaftMessage) -> bool {
    message.get_msg_type() == MessageType::MsgRequestPreVoteResponse && !message.reject
}

/// Whether a message only keeps leadership and elections going (heartbeats, votes and their
/// answers): it carries no entries and no snapshot, and Raft is as safe with it reordered
/// against the log's messages as with it dropped. The sender gives these a lane of their own, so
/// that a large append or snapshot in flight to a peer cannot hold back the heartbeats that keep
/// it from starting an election.
pub fn is_control(message: &RaftMessage) -> bool {
    use raft::eraftpb::MessageType::*;
    matches!(
        message.get_msg_type(),
        MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgTimeoutNow
    )
}

/// A Raft message in its wire form (protobuf).
pub fn encode_message(message: &RaftMessage) -> Result<Vec<u8>, WireError> {
    protobuf::Message::write_to_bytes(message).map_err(|e| {
        WireError::new(
            ErrorCode::Internal,
            format!("cannot encode a raft message: {e}"),
        )
    })
}

/// Reads a Raft message from a peer. Only authenticated coordinators' bytes reach this (protobuf 2
/// is not hardened against hostile input, see `docs/crate-notes.md`); a bad one is an error, never a
/// panic.
pub fn decode_message(bytes: &[u8]) -> Result<RaftMessage, WireError> {
    <RaftMessage as protobuf::Message>::parse_from_bytes(bytes).map_err(|e| {
        WireError::new(
            ErrorCode::ProtocolError,
            format!("a corrupt raft message: {e}"),
        )
    })
}

/// Refuses the well-formed Raft messages that a peer never sends: a node's local messages, and
/// proposals. Nexus forwards a proposal as a request of its own, decoded and checked; a raw
/// `MsgPropose` would put unchecked bytes in the log, where every replica would fail to apply them.
pub fn check_peer_message(message: &RaftMessage) -> Result<(), WireError> {
    match message.get_msg_type() {
        MessageType::MsgPropose => Err(WireError::new(
            ErrorCode::ProtocolError,
            "a raft message may not carry a proposal: proposals are forwarded as requests",
        )),
        kind @ (MessageType::MsgHup
        | MessageType::MsgBeat
        | MessageType::MsgUnreachable
        | MessageType::MsgSnapStatus
        | MessageType::MsgCheckQuorum) => Err(WireError::new(
            ErrorCode::ProtocolError,
            format!("a raft message of type {kind:?} is local to a node and never travels"),
        )),
        _ => Ok(()),
    }
}
