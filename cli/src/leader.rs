//! What a command knows of the coordinators' leader: whether the leader itself answered, or only
//! a node that names it (and when that node last heard it), or one that knows none. Plain data,
//! made by [`crate::cluster`] and printed by [`crate::output`].

use std::time::Duration;

use nexus_protocol::NodeId;
use nexus_protocol::message::ClusterStatus;

/// How long after its start a command waits for the leader's own answer once some node has
/// answered: a live leader on a LAN answers in milliseconds; a dead one never does.
pub const LEADER_WAIT: Duration = Duration::from_millis(300);

/// How far the status printed vouches for the leader it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderState {
    /// The leader answered itself: the status is its own view.
    Confirmed,
    /// The node reached names a leader that did not answer in time ([`LEADER_WAIT`]; it may
    /// have just died): the status is the reached node's view, and the leader's last contact with it
    /// says how long ago it was heard.
    Unreachable,
    /// The node reached knows no leader (an election is under way, or it is cut off).
    Unknown,
}

impl LeaderState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaderState::Confirmed => "confirmed",
            LeaderState::Unreachable => "unreachable",
            LeaderState::Unknown => "unknown",
        }
    }
}

/// The cluster's status as a command got it, and what it knows of the leader.
#[derive(Debug, Clone)]
pub struct StatusSeen {
    pub status: ClusterStatus,
    pub leader_state: LeaderState,
    /// How long ago the node that answered last heard from the leader: 0 when the leader itself
    /// answered, none when no leader is known or it was never heard.
    pub leader_last_heard_ms: Option<u64>,
}

impl StatusSeen {
    /// A status that came as the answer to a change, which only the leader makes.
    pub fn answered(status: ClusterStatus) -> StatusSeen {
        StatusSeen::of(status, false)
    }

    pub(crate) fn of(status: ClusterStatus, reached_leader: bool) -> StatusSeen {
        let Some(leader) = status.leader else {
            return StatusSeen {
                status,
                leader_state: LeaderState::Unknown,
                leader_last_heard_ms: None,
            };
        };
        let confirmed = reached_leader || leader == status.node;
        let leader_last_heard_ms = if confirmed {
            Some(0)
        } else {
            last_contact(&status, leader)
        };
        StatusSeen {
            status,
            leader_state: if confirmed {
                LeaderState::Confirmed
            } else {
                LeaderState::Unreachable
            },
            leader_last_heard_ms,
        }
    }
}

fn last_contact(status: &ClusterStatus, node: NodeId) -> Option<u64> {
    status
        .members
        .iter()
        .find(|m| m.id == node)
        .and_then(|m| m.last_contact_ms)
}

#[cfg(test)]
mod tests {
    use nexus_protocol::message::{MemberRole, MemberView};

    use super::*;

    fn status(node: u64, leader: Option<u64>) -> ClusterStatus {
        ClusterStatus {
            node: NodeId::new(node).unwrap(),
            leader: leader.map(|l| NodeId::new(l).unwrap()),
            term: 3,
            commit_index: 10,
            applied_index: 10,
            members: (1..=3)
                .map(|id| MemberView {
                    id: NodeId::new(id).unwrap(),
                    addr: format!("127.0.0.1:{id}"),
                    role: MemberRole::Follower,
                    healthy: true,
                    last_contact_ms: (id != node).then_some(40 * id),
                    matched_index: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_leader_that_answered_or_answers_itself_is_confirmed() {
        let seen = StatusSeen::of(status(1, Some(1)), false);
        assert_eq!(seen.leader_state, LeaderState::Confirmed);
        assert_eq!(seen.leader_last_heard_ms, Some(0));
        let seen = StatusSeen::of(status(2, Some(2)), true);
        assert_eq!(seen.leader_state, LeaderState::Confirmed);
    }

    #[test]
    fn a_leader_not_reached_is_unreachable_with_the_reached_nodes_last_contact() {
        let seen = StatusSeen::of(status(2, Some(3)), false);
        assert_eq!(seen.leader_state, LeaderState::Unreachable);
        assert_eq!(seen.leader_last_heard_ms, Some(120));
    }

    #[test]
    fn no_leader_is_unknown() {
        let seen = StatusSeen::of(status(2, None), false);
        assert_eq!(seen.leader_state, LeaderState::Unknown);
        assert_eq!(seen.leader_last_heard_ms, None);
    }
}
