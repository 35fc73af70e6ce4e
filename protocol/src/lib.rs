//! The shared vocabulary of Nexus: everything the coordinator, the agent and the CLI must agree
//! on to talk to each other.
//!
//! - [`id`], [`model`]: validated identifiers and the plain data of workspaces and hosts;
//! - [`error`]: the stable [`ErrorCode`]s with their user messages, retry policies and exit codes;
//! - [`debug`]: log records and queries, trace hops, workspace events and health, diagnostics;
//!   [`hop`]: making a request's hops (spans) and recording how they ended;
//! - [`message`]: the append-only request, response and push enums that cross the wire;
//! - [`codec`]: length-prefixed bincode frames with a bounded size (sans-IO, plus async helpers);
//! - [`identity`], [`pki`]: who a peer is (from its certificate's SAN URI) and how certificates
//!   are made;
//! - [`transport`]: QUIC endpoints with mutual TLS, the version handshake, request/response and
//!   push streams;
//! - [`logging`]: what every binary does at its top (logging to stderr, the exit code);
//! - [`backup`]: a backup file of the replicated state, its header and its checksum;
//! - [`settings`]: a configuration's settings as shown, what a reload changes (pure);
//! - [`git`]: workspaces from a repository (sources, worktrees, verification);
//!   [`credentials`]: the credential store's records, secrets and choices (pure); [`seal`]: its
//!   secrets sealed with an AEAD under a key file's keys;
//! - [`join`]: join tokens, enrolment and renewal, the certificates the cluster knows and the
//!   deny list (pure); [`ca_rotation`]: a CA rotation's phases, progress and trust bundle.
//!
//! This crate depends on none of the other Nexus crates. It is the only place that names `quinn`,
//! `rustls`, `rcgen` or `bincode`.

pub mod backup;
pub mod ca_rotation;
pub mod clock;
pub mod codec;
pub mod credentials;
pub mod debug;
pub mod error;
pub mod git;
pub mod hash;
pub mod hop;
pub mod id;
pub mod identity;
pub mod join;
pub mod logging;
pub mod maintenance;
pub mod message;
pub mod model;
pub mod pki;
pub mod policy;
pub mod seal;
pub mod settings;
pub mod transport;

pub use error::{ErrorCode, WireError};
pub use id::{HostId, NodeId, RequestId, UserName, WorkspaceName};
pub use identity::{Identity, Role};

/// The software version, sent in the handshake and shown by `--version`.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
