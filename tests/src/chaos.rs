//! A Jepsen-style fault campaign (issue 27, `docs/reliability.md`): concurrent clients drive the
//! workspace registry through the CLI's client library while nemeses break the network,
//! processes, clocks and disks; every operation is recorded, and the history is checked for
//! linearizability and for the fleet's invariants.
//!
//! - [`net`], [`members`], [`engine`]: the network of namespaces, the coordinators inside it and
//!   the private Docker engine that the nemeses act through (I/O).
//! - [`nemesis`]: the seeded plan of faults. Pure.
//! - [`history`]: the recorded operations and their outcomes (ok, definite failure, unknown).
//! - [`clients`]: the workload, and the final reads after healing.
//! - [`linear`]: the linearizability checker (Wing & Gong, porcupine's optimisations). Pure.
//! - [`invariants`]: limits, ports, and the end state against the history. Pure.
//! - [`measure`]: the campaign's numbers. Pure.
//! - [`runner`]: one campaign, end to end (I/O).
//! - [`rng`]: the seeded generator behind every choice.

pub mod clients;
pub mod engine;
pub mod history;
pub mod invariants;
pub mod linear;
pub mod measure;
pub mod members;
pub mod nemesis;
pub mod net;
pub mod rng;
pub mod runner;
