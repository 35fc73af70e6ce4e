//! Learning at once that the leader's process is gone, instead of waiting out an election
//! timeout. Pure: the driver feeds it the node's view each tick and the probes' answers, and does
//! what it decides.
//!
//! A follower that has not heard from its leader for [`SILENT_TICKS`] (a heartbeat is due every
//! three) probes the leader's address with a datagram on a connected socket. A process that
//! crashed has no socket there any more, and the operating system answers "port unreachable",
//! which a connected socket reports as a refused connection. A paused, slow or partitioned leader
//! still holds its socket (or answers nothing at all): only a process that is gone is refused. So
//! the probe can never depose a leader that is merely late, and pre-vote still guards against a
//! follower that is itself cut off.
//!
//! On a refusal the follower forgets the leader (so that it grants its pre-vote to a peer at
//! once instead of honouring the dead leader's lease) and, if it ranks first among the voters
//! left, campaigns. The others campaign one after another, [`RANK_TICKS`] apart, only if no
//! leader has appeared by their turn, so two followers that learn of the crash together do not
//! split the vote. A follower that has granted a peer's pre-vote since it found the leader gone
//! does not take its turn at all: an election it agreed to is under way, and a campaign of its
//! own would only split the vote with it (on a starved machine a pre-vote round can outlast a
//! turn); Raft's own timeout is still there if that election fails. A pre-vote refused because a peer has not yet seen the crash is asked again
//! every [`RETRY_TICKS`]. Once a leader is known, or after an election timeout, Raft's own timers
//! take over again.

use nexus_protocol::NodeId;

/// Ticks without a word from the leader before it is probed.
pub(super) const SILENT_TICKS: usize = 2;
/// Ticks between the campaigns of followers of consecutive rank.
pub(super) const RANK_TICKS: usize = 3;
/// Ticks between a follower's campaigns while its pre-vote is refused. One: a peer that had
/// not seen the crash when the first pre-vote came usually sees it within the tick, and a
/// pre-vote round raises no term.
pub(super) const RETRY_TICKS: usize = 1;

/// The node as the watch sees it at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen<'a> {
    pub(super) me: NodeId,
    pub(super) leader: Option<NodeId>,
    pub(super) term: u64,
    pub(super) role: Role,
    /// Ticks since this node last heard from its leader (Raft's election clock).
    pub(super) silent: usize,
    /// The voters of the current configuration, in any order.
    pub(super) voters: &'a [NodeId],
    /// Raft's election timeout, in ticks.
    pub(super) election_ticks: usize,
}

/// The node's part in the election, as far as the watch cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Follower,
    /// Asking for pre-votes: its campaign may be asked again.
    PreCandidate,
    /// Asking for votes in a new term: left to Raft.
    Candidate,
    Leader,
}

/// What the driver should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Nothing,
    /// Send a probe to this leader's address.
    Probe(NodeId),
    /// Forget the leader, and campaign if `campaign`.
    Forget {
        campaign: bool,
    },
    Campaign,
}

/// The watch's memory: the leader found gone, in which term, and how many ticks ago.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CrashWatch {
    gone: Option<Gone>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gone {
    leader: NodeId,
    term: u64,
    ticks: usize,
    /// This node granted a peer's pre-vote since: it leaves the election to that peer.
    granted: bool,
}

impl CrashWatch {
    /// The leader found gone, if the watch is acting on it.
    #[cfg(test)]
    fn gone(&self) -> Option<NodeId> {
        self.gone.map(|gone| gone.leader)
    }

    /// Called once per tick, after Raft's own tick.
    pub(super) fn tick(&mut self, seen: &Seen<'_>) -> Step {
        if let Some(gone) = &mut self.gone {
            gone.ticks += 1;
            let Gone {
                leader: dead,
                term,
                ticks,
                granted,
            } = *gone;
            // A leader again (the dead one restarted, or another won), an election under way in
            // a later term (this node voted in it: campaigning now would only disrupt it), or
            // Raft's own election timeout has come: the watch's part is over.
            if seen.leader.is_some()
                || seen.role == Role::Leader
                || seen.term > term
                || ticks >= seen.election_ticks
            {
                self.gone = None;
                return Step::Nothing;
            }
            let Some(rank) = rank(seen.me, dead, seen.voters) else {
                return Step::Nothing;
            };
            // The first voter left campaigns whatever it granted: it is the one the others
            // wait for.
            if granted && rank > 0 {
                return Step::Nothing;
            }
            let first = rank * RANK_TICKS;
            let due = match seen.role {
                Role::Follower => ticks >= first,
                Role::PreCandidate => ticks >= first && (ticks - first).is_multiple_of(RETRY_TICKS),
                Role::Candidate | Role::Leader => false,
            };
            return if due { Step::Campaign } else { Step::Nothing };
        }
        match (seen.role, seen.leader) {
            (Role::Follower, Some(leader)) if leader != seen.me && seen.silent >= SILENT_TICKS => {
                Step::Probe(leader)
            }
            _ => Step::Nothing,
        }
    }

    /// A probe of `node` was refused: its process is gone. Acted on only if `node` is still
    /// the leader this node follows.
    pub(super) fn refused(&mut self, node: NodeId, seen: &Seen<'_>) -> Step {
        if seen.role != Role::Follower || seen.leader != Some(node) || self.gone.is_some() {
            return Step::Nothing;
        }
        self.gone = Some(Gone {
            leader: node,
            term: seen.term,
            ticks: 0,
            granted: false,
        });
        Step::Forget {
            campaign: rank(seen.me, node, seen.voters) == Some(0),
        }
    }

    /// This node granted a peer's pre-vote. Remembered only while the watch acts on a leader
    /// found gone (before that, a follower within its leader's lease grants none).
    pub(super) fn granted_pre_vote(&mut self) {
        if let Some(gone) = &mut self.gone {
            gone.granted = true;
        }
    }
}

/// This node's place among the voters left when `dead` is taken out (by id); `None` for a node
/// that is not a voter (a learner never campaigns).
fn rank(me: NodeId, dead: NodeId, voters: &[NodeId]) -> Option<usize> {
    let mut left: Vec<NodeId> = voters.iter().copied().filter(|v| *v != dead).collect();
    left.sort_unstable();
    left.dedup();
    left.iter().position(|v| *v == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u64) -> NodeId {
        NodeId::new(id).unwrap()
    }

    const VOTERS: [u64; 3] = [1, 2, 3];

    fn seen(
        me: u64,
        leader: Option<u64>,
        role: Role,
        silent: usize,
    ) -> (NodeId, Option<NodeId>, Role, usize) {
        (n(me), leader.map(n), role, silent)
    }

    fn view(
        voters: &[NodeId],
        (me, leader, role, silent): (NodeId, Option<NodeId>, Role, usize),
    ) -> Seen<'_> {
        Seen {
            me,
            leader,
            term: 5,
            role,
            silent,
            voters,
            election_ticks: 10,
        }
    }

    fn voters() -> Vec<NodeId> {
        VOTERS.iter().map(|id| n(*id)).collect()
    }

    #[test]
    fn a_follower_probes_only_a_silent_leader() {
        let voters = voters();
        let mut watch = CrashWatch::default();
        let fresh = view(&voters, seen(2, Some(1), Role::Follower, 1));
        assert_eq!(watch.tick(&fresh), Step::Nothing);
        let silent = view(&voters, seen(2, Some(1), Role::Follower, SILENT_TICKS));
        assert_eq!(watch.tick(&silent), Step::Probe(n(1)));
        // No leader, a leader itself, a candidate: nothing to probe.
        for (leader, role) in [
            (None, Role::Follower),
            (Some(2), Role::Leader),
            (Some(1), Role::PreCandidate),
            (Some(1), Role::Candidate),
        ] {
            let seen = view(&voters, seen(2, leader, role, 9));
            assert_eq!(watch.tick(&seen), Step::Nothing, "{leader:?} {role:?}");
        }
    }

    #[test]
    fn the_first_voter_left_campaigns_at_once_and_the_next_waits_its_turn() {
        let voters = voters();
        // Leader 1 is gone: 2 ranks first, 3 second.
        let mut second = CrashWatch::default();
        let mut first = CrashWatch::default();
        let at_2 = view(&voters, seen(2, Some(1), Role::Follower, 2));
        let at_3 = view(&voters, seen(3, Some(1), Role::Follower, 2));
        assert_eq!(first.refused(n(1), &at_2), Step::Forget { campaign: true });
        assert_eq!(
            second.refused(n(1), &at_3),
            Step::Forget { campaign: false }
        );
        assert_eq!(first.gone(), Some(n(1)));
        // Node 3, leaderless now, campaigns only after RANK_TICKS without a leader.
        let leaderless = view(&voters, seen(3, None, Role::Follower, 0));
        let steps: Vec<Step> = (0..RANK_TICKS).map(|_| second.tick(&leaderless)).collect();
        assert_eq!(
            steps[..RANK_TICKS - 1],
            vec![Step::Nothing; RANK_TICKS - 1][..]
        );
        assert_eq!(steps[RANK_TICKS - 1], Step::Campaign);
    }

    #[test]
    fn a_follower_that_granted_a_pre_vote_leaves_its_turn_to_that_election() {
        let voters = voters();
        let leaderless = |me| view(&voters, seen(me, None, Role::Follower, 0));
        // Node 3 found leader 1 gone, then granted node 2's pre-vote: its turn passes.
        let mut granted = CrashWatch::default();
        granted.refused(n(1), &view(&voters, seen(3, Some(1), Role::Follower, 2)));
        granted.granted_pre_vote();
        for _ in 0..RANK_TICKS * 2 {
            assert_eq!(granted.tick(&leaderless(3)), Step::Nothing);
        }
        // A grant before the leader was found gone is not remembered.
        let mut early = CrashWatch::default();
        early.granted_pre_vote();
        early.refused(n(1), &view(&voters, seen(3, Some(1), Role::Follower, 2)));
        let steps: Vec<Step> = (0..RANK_TICKS)
            .map(|_| early.tick(&leaderless(3)))
            .collect();
        assert_eq!(steps[RANK_TICKS - 1], Step::Campaign);
        // The first voter left still campaigns (and asks again) after granting one.
        let mut first = CrashWatch::default();
        first.refused(n(1), &view(&voters, seen(2, Some(1), Role::Follower, 2)));
        first.granted_pre_vote();
        let pre = view(&voters, seen(2, None, Role::PreCandidate, 0));
        let steps: Vec<Step> = (0..RETRY_TICKS).map(|_| first.tick(&pre)).collect();
        assert_eq!(steps[RETRY_TICKS - 1], Step::Campaign);
    }

    #[test]
    fn a_refused_pre_vote_is_asked_again_and_a_real_election_is_left_to_raft() {
        let voters = voters();
        let mut watch = CrashWatch::default();
        watch.refused(n(1), &view(&voters, seen(2, Some(1), Role::Follower, 2)));
        let pre = view(&voters, seen(2, None, Role::PreCandidate, 0));
        let steps: Vec<Step> = (1..=4).map(|_| watch.tick(&pre)).collect();
        // Ticks 1..=4: every RETRY_TICKS.
        let expected: Vec<Step> = (1..=4usize)
            .map(|tick| {
                if tick.is_multiple_of(RETRY_TICKS) {
                    Step::Campaign
                } else {
                    Step::Nothing
                }
            })
            .collect();
        assert_eq!(steps, expected);
        let candidate = view(&voters, seen(2, None, Role::Candidate, 0));
        assert_eq!(watch.tick(&candidate), Step::Nothing);
        assert_eq!(watch.tick(&candidate), Step::Nothing);
    }

    #[test]
    fn a_follower_that_voted_in_a_later_term_leaves_the_election_to_raft() {
        let voters = voters();
        let mut watch = CrashWatch::default();
        watch.refused(n(1), &view(&voters, seen(3, Some(1), Role::Follower, 2)));
        // Node 2 campaigned and node 3 voted for it: term 6, no leader known yet. Node 3's turn
        // comes, and it stays out of the way.
        let mut voted = view(&voters, seen(3, None, Role::Follower, 0));
        voted.term = 6;
        for _ in 0..RANK_TICKS {
            assert_eq!(watch.tick(&voted), Step::Nothing);
        }
        assert_eq!(watch.gone(), None);
    }

    #[test]
    fn a_known_leader_or_an_election_timeout_ends_the_watch() {
        let voters = voters();
        let mut watch = CrashWatch::default();
        watch.refused(n(1), &view(&voters, seen(3, Some(1), Role::Follower, 2)));
        let led = view(&voters, seen(3, Some(2), Role::Follower, 0));
        assert_eq!(watch.tick(&led), Step::Nothing);
        assert_eq!(watch.gone(), None);

        let mut watch = CrashWatch::default();
        watch.refused(n(1), &view(&voters, seen(3, Some(1), Role::Follower, 2)));
        let pre = view(&voters, seen(3, None, Role::PreCandidate, 0));
        for _ in 0..9 {
            watch.tick(&pre);
        }
        assert!(watch.gone().is_some());
        assert_eq!(watch.tick(&pre), Step::Nothing);
        assert_eq!(watch.gone(), None);
    }

    #[test]
    fn a_refusal_from_anyone_but_the_leader_followed_is_ignored() {
        let voters = voters();
        let mut watch = CrashWatch::default();
        // A stale probe of an earlier leader.
        let following_3 = view(&voters, seen(2, Some(3), Role::Follower, 2));
        assert_eq!(watch.refused(n(1), &following_3), Step::Nothing);
        // This node leads, or campaigns already.
        let leading = view(&voters, seen(2, Some(2), Role::Leader, 0));
        assert_eq!(watch.refused(n(2), &leading), Step::Nothing);
        assert_eq!(watch.gone(), None);
    }

    #[test]
    fn a_learner_forgets_the_leader_but_never_campaigns() {
        let voters = voters();
        let mut watch = CrashWatch::default();
        let learner = view(&voters, seen(4, Some(1), Role::Follower, 2));
        assert_eq!(
            watch.refused(n(1), &learner),
            Step::Forget { campaign: false }
        );
        let leaderless = view(&voters, seen(4, None, Role::Follower, 0));
        for _ in 0..9 {
            assert_eq!(watch.tick(&leaderless), Step::Nothing);
        }
    }
}
