//! What becomes of the proposals and reads waiting on the driver when the term they were taken
//! in ends (answered soon, as unknown or not-leader) or their deadline passes.

use std::time::Instant;

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};

use super::super::{Leadership, timed_out};
use super::{Driver, no_leader};

impl Driver {
    /// Gives everything that waited on this node's term, now gone, its answer soon: each
    /// proposal `TIMEOUT` unless its entry applies here within [`ORPHAN_GRACE`] (the old leader
    /// may have replicated it, and the next leader may commit it, so its outcome is unknown until
    /// it is asked again under the same request id), each read still waiting for its ReadIndex
    /// `NOT_LEADER` at once (a read changes nothing; asking again is safe).
    ///
    /// Held until their deadline instead (10 s), a client's write that a deposed, cut-off or
    /// paused leader had taken waited out the whole proposal timeout before it could be asked
    /// again. Answered at once, a write the next leader committed a moment later was answered
    /// unknown though a short wait would have told its outcome (seen in CI: an election under
    /// load failed a test's creates that were in fact committed).
    pub(super) fn abandon(&mut self, before: Leadership) {
        let until = Instant::now() + ORPHAN_GRACE;
        let mut orphaned = 0;
        for request_id in self.proposals.keys() {
            if !self.orphans.contains_key(request_id) {
                self.orphans.insert(*request_id, (before.term, until));
                orphaned += 1;
            }
        }
        if orphaned > 0 {
            tracing::info!(
                term = before.term,
                proposals = orphaned,
                "leadership changed with proposals pending; they are answered as unknown unless applied within the grace"
            );
        }
        for (_, (_, query)) in std::mem::take(&mut self.reads_waiting) {
            query(Err(no_leader(self.node.id())));
        }
    }

    /// Answers the orphaned proposals whose grace is over and whose entries did not apply here.
    pub(super) fn expire_orphans(&mut self) {
        let now = Instant::now();
        let over: Vec<(RequestId, u64)> = self
            .orphans
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(request_id, (term, _))| (*request_id, *term))
            .collect();
        for (request_id, term) in over {
            self.orphans.remove(&request_id);
            for (_, _, reply) in self.proposals.remove(&request_id).unwrap_or_default() {
                let _ = reply.send(Err(abandoned(term).with_request_id(request_id)));
            }
        }
        // An orphan answered by its entry (or by a retry that proposed it again here) is done.
        let proposals = &self.proposals;
        self.orphans
            .retain(|request_id, _| proposals.contains_key(request_id));
    }

    /// Answers waiters whose deadline passed, and forgets those whose caller went away.
    pub(super) fn expire(&mut self) {
        self.expire_orphans();
        self.proposals.retain(|request_id, waiters| {
            waiters.retain(|(since, limit, reply)| {
                if reply.is_closed() {
                    return false;
                }
                since.elapsed() < *limit
            });
            if waiters.is_empty() {
                tracing::debug!(%request_id, "a proposal's waiters gave up");
            }
            !waiters.is_empty()
        });
        // A read at apply whose proposal never made it (refused, dropped, timed out): its caller
        // gave up long before.
        let limit = self.config.proposal_timeout + self.config.read_timeout;
        self.reads_at_apply.retain(|_, reads| {
            reads.retain(|(since, _)| since.elapsed() < limit);
            !reads.is_empty()
        });
        let limit = self.config.read_timeout;
        let expired: Vec<u64> = self
            .reads_waiting
            .iter()
            .filter(|(_, (since, _))| since.elapsed() >= limit)
            .map(|(context, _)| *context)
            .collect();
        for context in expired {
            if let Some((_, query)) = self.reads_waiting.remove(&context) {
                query(Err(timed_out("the read", limit)));
            }
        }
        // A read that has its index but whose replica is slow to reach it (cut off, or catching
        // up) gives up on the same deadline.
        if self
            .reads_ready
            .iter()
            .any(|(_, since, _)| since.elapsed() >= limit)
        {
            let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
                .into_iter()
                .partition(|(_, since, _)| since.elapsed() >= limit);
            self.reads_ready = waiting;
            for (_, _, query) in expired {
                query(Err(timed_out("the read", limit)));
            }
        }
    }
}

/// How long a proposal of a term that ended waits for its entry to apply here before it is
/// answered as unknown: about two election timeouts, time for the next leader to be elected and
/// to commit it.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a change of leadership from `before` to `now` leaves this node's waiters without
/// the term they were taken in: it stopped leading, or the term moved on. (A follower holds no
/// proposals, but its reads wait on the leader of its term.)
pub(super) fn abandons_waiters(before: Leadership, now: Leadership) -> bool {
    before.term != now.term || (before.leading && !now.leading)
}

fn abandoned(term: u64) -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!(
            "the leadership of term {term} ended with the write pending: it may still be \
             committed, so its outcome is unknown until it is asked again under the same request id"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(term: u64, leading: bool) -> Leadership {
        Leadership { leading, term }
    }

    #[test]
    fn waiters_are_abandoned_when_their_term_or_the_lead_ends() {
        // A leader deposed in a new term, a leader stepping down in its term (a lost quorum's
        // check), a follower that moved to a new term: each abandons what waited.
        assert!(abandons_waiters(at(3, true), at(4, false)));
        assert!(abandons_waiters(at(3, true), at(3, false)));
        assert!(abandons_waiters(at(3, false), at(4, false)));
        // A follower becoming the leader of a new term has nothing of the old term pending.
        assert!(abandons_waiters(at(3, false), at(4, true)));
        // Nothing changed, or a follower that became leader within its term (it cannot).
        assert!(!abandons_waiters(at(3, true), at(3, true)));
        assert!(!abandons_waiters(at(3, false), at(3, false)));
    }
}
