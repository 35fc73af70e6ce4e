//! Each workspace's recent events: what changed, who did it, under which request.
//!
//! TEMPORARY while issue 21 is built: the events are recorded by the events work; until then the
//! cause of every workspace is unknown.

use nexus_protocol::{RequestId, WorkspaceName};

use super::State;

impl State {
    /// The request that last changed what `name`'s host should do with it (create, start, stop,
    /// restart, repair, destroy), for tracing the agent's work under that request's id.
    pub fn cause_of(&self, _name: &WorkspaceName) -> Option<RequestId> {
        None
    }
}
