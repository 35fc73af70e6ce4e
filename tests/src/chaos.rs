//! A Jepsen-style fault campaign (issue 27): concurrent clients drive the workspace registry
//! through the CLI's client library while nemeses break the network, processes and clocks; every
//! operation is recorded, and the history is checked for linearizability and for the fleet's
//! invariants.
//!
//! - [`history`]: the recorded operations and their outcomes (ok, definite failure, unknown).
//! - [`clients`]: the workload, and the final reads after healing.
//! - [`linear`]: the linearizability checker (Wing & Gong, porcupine's optimisations). Pure.
//! - [`invariants`]: limits, ports, and the end state against the history. Pure.
//! - [`rng`]: the seeded generator behind every choice.

pub mod clients;
pub mod history;
pub mod invariants;
pub mod linear;
pub mod rng;
