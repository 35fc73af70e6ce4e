//! The journal of completed requests: each request id's first outcome, remembered for
//! [`JOURNAL_RETENTION_MS`] by proposal time (never the local clock), so a retried request is
//! answered as it was first and changes nothing.

use nexus_protocol::RequestId;
use nexus_protocol::clock::Timestamp;

use super::{Outcome, State};

/// How long a completed request's outcome is remembered for retries.
pub const JOURNAL_RETENTION_MS: u64 = 24 * 3600 * 1000;

impl State {
    /// The first outcome of a request, if it was applied and is still remembered.
    pub fn outcome_of(&self, request_id: RequestId) -> Option<&Outcome> {
        self.journal.get(&request_id).map(|(_, outcome)| outcome)
    }

    /// Journals `outcome` under `request_id` at `at`, and forgets what is older than the
    /// retention.
    pub(super) fn remember(&mut self, request_id: RequestId, at: Timestamp, outcome: Outcome) {
        let horizon = Timestamp(at.as_millis().saturating_sub(JOURNAL_RETENTION_MS));
        while let Some(&(time, id)) = self.journal_by_time.get_min() {
            if time >= horizon {
                break;
            }
            self.journal_by_time.remove(&(time, id));
            self.journal.remove(&id);
        }
        self.journal.insert(request_id, (at, outcome));
        self.journal_by_time.insert((at, request_id));
    }
}
