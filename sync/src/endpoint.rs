//! The contract between a session and its sides: the [`Endpoint`] trait each side implements (a
//! directory on this machine, or a workspace's directory behind its agent), what can go wrong
//! there ([`EndpointError`]), the [`Content`] a change carries, and the [`Request`]s and
//! [`Answer`]s that make the same calls across a network. The session ([`crate::session`]) drives
//! endpoints and the network side ([`crate::remote`]) serves and sends these messages; both import
//! this module, which imports neither. How a request travels is not here (see
//! [`crate::remote::Carrier`]).
//!
//! **The wire enums are append-only**, as the protocol's are: bincode encodes a variant by its
//! index, so a variant is never removed, reordered or changed; a new need gets a new variant at
//! the end.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::delta::{Op, Signature};
use crate::history::{Since, Version};
use crate::local::ApplyError;
use crate::path::RelPath;
use crate::reconcile::Change;
use crate::scan::ScanError;
use crate::tree::{Digest, Tree};

/// One side of a session.
pub trait Endpoint: Send {
    /// The side's tree: what changed since `since` (a version an earlier scan answered), or the
    /// whole tree when there is no `since` or the side cannot say.
    fn scan(
        &mut self,
        since: Option<Version>,
    ) -> impl Future<Output = Result<Since, EndpointError>> + Send;
    /// The whole content of the file at `path`, which should have `digest`.
    fn read(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> impl Future<Output = Result<Vec<u8>, EndpointError>> + Send;
    /// The signature of the file at `path` as this side holds it (for a delta to it).
    fn signature(
        &mut self,
        path: &RelPath,
    ) -> impl Future<Output = Result<Signature, EndpointError>> + Send;
    /// Applies `change` with the content of its files (those whose content this side lacks).
    fn apply(
        &mut self,
        change: &Change,
        contents: BTreeMap<RelPath, Content>,
    ) -> impl Future<Output = Result<(), EndpointError>> + Send;
}

/// What went wrong on a side, split by what the session does about it.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The side changed since it was scanned: the change was not made; the next cycle sees it.
    #[error("{0} changed meanwhile")]
    Stale(RelPath),
    /// The side cannot be read or written now (a scan that met a busy file, a full disk, an
    /// unreachable agent): the cycle is abandoned and tried again.
    #[error("{0}")]
    Unavailable(String),
    /// A change that must never be made (it would leave the root): refused for good.
    #[error("{0}")]
    Refused(String),
}

/// A file's new content, as it travels to the side that lacks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    Whole(Vec<u8>),
    /// Rebuilt from the target's current version at the same path.
    Delta {
        block_size: u32,
        ops: Vec<Op>,
    },
}

/// The most bytes one request or answer carries of a file.
pub const CHUNK: usize = 4 << 20;
/// The most bytes a serving side holds staged for one session's next change.
pub const MAX_STAGED: usize = 256 << 20;

/// A call on the side across the network, as it travels there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Scan the root with this filter (sent with every scan: the session's filter is the rule).
    Scan {
        ignore: Vec<String>,
        ignore_vcs: bool,
    },
    /// Up to `len` bytes of a file from `offset`.
    Read {
        path: RelPath,
        offset: u64,
        len: u32,
    },
    Signature {
        path: RelPath,
    },
    /// A piece of a file's new content, kept until the change that needs it.
    Stage {
        path: RelPath,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Applies a change; contents not given are the staged ones.
    Apply {
        change: Change,
        contents: BTreeMap<RelPath, Content>,
    },
    /// Scan the root with this filter, and say what changed since `since`
    /// ([`Answer::Since`]). Added after `Scan`, which is still answered (with the whole tree).
    ScanSince {
        ignore: Vec<String>,
        ignore_vcs: bool,
        since: Option<Version>,
    },
    /// Answer ([`Answer::Changes`]) once the root's watcher has counted more than `seen`
    /// changes, or after `within_ms` (at most [`MAX_WAIT_MS`]) with the count as it is: what
    /// lets a session hear of a change on this side at once instead of polling for it. Served by
    /// the agent itself (it must not hold the session's side while it waits), not by [`crate::remote::Served`].
    WaitChange {
        seen: u64,
        within_ms: u32,
    },
}

/// The longest a [`Request::WaitChange`] is held.
pub const MAX_WAIT_MS: u32 = 25_000;

/// What the side across the network answers a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Tree(Tree),
    Bytes(Vec<u8>),
    Signature(Signature),
    Done,
    Stale(RelPath),
    Refused(String),
    Unavailable(String),
    Since(Since),
    /// How many changes the root's watcher has counted (since the agent began serving it).
    Changes(u64),
}

impl From<EndpointError> for Answer {
    fn from(error: EndpointError) -> Answer {
        match error {
            EndpointError::Stale(path) => Answer::Stale(path),
            EndpointError::Refused(why) => Answer::Refused(why),
            EndpointError::Unavailable(why) => Answer::Unavailable(why),
        }
    }
}

impl From<ApplyError> for EndpointError {
    fn from(error: ApplyError) -> EndpointError {
        match error {
            ApplyError::Stale(path) | ApplyError::Content(path) => EndpointError::Stale(path),
            ApplyError::Unsafe { .. } => EndpointError::Refused(error.to_string()),
            other => EndpointError::Unavailable(other.to_string()),
        }
    }
}

impl From<ScanError> for EndpointError {
    fn from(error: ScanError) -> EndpointError {
        EndpointError::Unavailable(error.to_string())
    }
}

/// `bytes` if they are the version with `digest`: a file read while it changed is stale.
pub fn checked(path: &RelPath, bytes: Vec<u8>, digest: &Digest) -> Result<Vec<u8>, EndpointError> {
    let actual = crate::scan::digest_of(&mut bytes.as_slice())
        .map_err(|e| EndpointError::Unavailable(e.to_string()))?;
    if actual != *digest {
        return Err(EndpointError::Stale(path.clone()));
    }
    Ok(bytes)
}
