//! `nexus-sync`: the file sync engine's pure core. It compares two trees, alpha (the user's
//! directory) and beta (the workspace's), against the last state both agreed on (the ancestor),
//! and says what to copy which way, what conflicts, and what is now agreed. That core reads no
//! disk, clock or socket: scanning, transfer and watching sit around it, in modules of their own,
//! so every case is tested here deterministically.
//!
//! - [`path`]: relative paths that cannot leave the root.
//! - [`tree`]: entries (files by content digest, directories, symlinks) and flat trees of them.
//! - [`reconcile`]: the three-way reconciliation, per synchronization mode.
//! - [`filter`]: what a session leaves out (`.gitignore` syntax).
//! - [`history`]: a side's versions, and what changed between them.
//! - [`delta`]: rsync-style delta transfer of a changed file.
//! - [`endpoint`]: the contract between a session and its sides: the `Endpoint` trait, its
//!   errors, and the requests and answers that carry its calls across a network.
//! - [`session`]: cycles between two endpoints, and the state that lets a session resume.
//! - [`measure`]: what a session measures for its agent's metrics (initial sync, latency).
//! - [`local_endpoint`]: a side in a directory on this machine, watched.
//! - [`remote`]: a side across the network: serving requests, and the endpoint that sends them.
//! - [`watch`]: file events, coalesced into cycles.
//! - [`parallel`]: disk work (hashing, writing) on a few threads, results in order.
//! - [`scan`]: reading a directory into a tree; [`local`]: applying a change to one. With
//!   [`local_endpoint`] (reading files) and [`session`] (its state file), the only modules here
//!   that touch the disk.

pub mod delta;
pub mod endpoint;
pub mod filter;
pub mod history;
pub mod local;
pub mod local_endpoint;
pub mod measure;
pub mod parallel;
pub mod path;
pub mod reconcile;
pub mod remote;
pub mod scan;
pub mod session;
pub mod tree;
pub mod watch;

pub use path::RelPath;
pub use reconcile::{
    Change, Conflict, Mode, Plan, Planned, Side, reconcile, reconcile_in_place, resolve,
};
pub use tree::{Digest, Entry, Stale, Tree};
