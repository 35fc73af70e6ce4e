//! The scenarios, one module each. A scenario brings up what it measures, measures it, tears it
//! down and returns its results; printing them is `report`'s.

pub(crate) mod agent_idle;
pub(crate) mod backup;
pub(crate) mod debug;
pub(crate) mod detect;
pub(crate) mod failover;
pub(crate) mod fleet;
// The `raft` scenario. Its module has a longer name because paths through a module named
// `raft` would read, to tests/tests/architecture.rs, as the raft crate outside the coordinator.
pub(crate) mod raft_writes;
pub(crate) mod scrape;
pub(crate) mod snapshot;
pub(crate) mod start;
pub(crate) mod status_failover;
pub(crate) mod sync;
pub(crate) mod transport;
