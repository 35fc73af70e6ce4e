//! The contract between a session and its sides: the [`Endpoint`] trait each side implements (a
//! directory on this machine, or a workspace's directory behind its agent), what can go wrong
//! there ([`EndpointError`], a refusal with its stable [`RefusalCode`]), the [`Content`] a change
//! carries, and the [`Request`]s and
//! [`Answer`]s that make the same calls across a network. The session ([`crate::session`]) drives
//! endpoints and the network side ([`crate::remote`]) serves and sends these messages; both import
//! this module, which imports neither. How a request travels is not here (see
//! [`crate::remote::Carrier`]).
//!
//! **The wire enums are append-only**, as the protocol's are: bincode encodes a variant by its
//! index, so a variant is never removed, reordered or changed; a new need gets a new variant at
//! the end. Their golden bytes are pinned where they are encoded, in the CLI's carrier
//! (`cli/src/sync/golden.rs`): this crate depends on no codec.

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
    /// Applies each of `batch`'s changes (at disjoint paths) as [`Endpoint::apply`] would, and
    /// answers each one's outcome in the batch's order. A side across a network has them in
    /// flight together; one on this machine applies them in turn.
    fn apply_batch(
        &mut self,
        batch: Vec<(Change, BTreeMap<RelPath, Content>)>,
    ) -> impl Future<Output = Vec<(Change, Result<(), EndpointError>)>> + Send {
        async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            for (change, contents) in batch {
                let outcome = self.apply(&change, contents).await;
                outcomes.push((change, outcome));
            }
            outcomes
        }
    }
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
    /// A change or a request that must never be made (it would leave the root, say): refused
    /// for good.
    #[error("{0}")]
    Refused(Refusal),
}

/// A refusal for good: a stable code for programs, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Why a side refused, as a code a program may match on; the CLI maps each to a
/// `nexus_protocol::ErrorCode` (this crate depends on no Nexus crate). Append-only, like the
/// wire enums that carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The refusal came without a code: from an agent older than codes ([`Answer::Refused`]).
    Unspecified,
    /// The change would write outside the root, or through a symlink.
    OutsideRoot,
    /// The session's ignore patterns make no filter.
    InvalidFilter,
    /// More than [`MAX_STAGED`] bytes of new content at once.
    TooLarge,
    /// The caller may not reach this side (the workspace is not theirs).
    PermissionDenied,
    /// There is no such side to reach (no such workspace where it was looked for).
    NotFound,
    /// The side cannot read the request: it is older than the request (a new variant an older
    /// agent does not know). Made by the carrier from the agent's `PROTOCOL_ERROR`.
    NotUnderstood,
}

impl RefusalCode {
    /// Every code, in wire order.
    pub const ALL: [RefusalCode; 7] = [
        RefusalCode::Unspecified,
        RefusalCode::OutsideRoot,
        RefusalCode::InvalidFilter,
        RefusalCode::TooLarge,
        RefusalCode::PermissionDenied,
        RefusalCode::NotFound,
        RefusalCode::NotUnderstood,
    ];
}

/// A file's new content, as it travels to the side that lacks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    Whole(#[serde(with = "serde_bytes")] Vec<u8>),
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
        #[serde(with = "serde_bytes")]
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
    /// the agent itself (it must not hold the session's side while it waits), not by
    /// [`crate::remote::Served`].
    WaitChange {
        seen: u64,
        within_ms: u32,
    },
    /// What a session measured and where it stands, told to the side that serves the other end
    /// (the workspace's agent, which exports it as metrics), answered [`Answer::Done`]. Served
    /// by the agent itself, not by [`crate::remote::Served`]. An agent older than it cannot
    /// read it and refuses it; the session then stops reporting to that agent.
    Report(SessionReport),
}

/// A session's report: see [`Request::Report`] and [`crate::measure`] for what is measured.
/// Every count and duration is within the bounds below: a side refuses a report beyond them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The session's id, random, the same for the session's life (across reconnections).
    pub session: u64,
    pub state: SyncState,
    /// The conflicts the session's last cycle found, at most [`MAX_REPORTED_CONFLICTS`].
    pub conflicts: u32,
    /// The initial sync's duration, once, in the first report after it ended.
    pub initial_sync_ms: Option<u32>,
    /// Sync latencies measured since the last report, at most [`MAX_REPORTED_LATENCIES`].
    pub latencies_ms: Vec<u32>,
}

/// The most latencies one report carries (a session keeps the latest).
pub const MAX_REPORTED_LATENCIES: usize = 256;
/// The longest duration a report carries (a day); a longer one is reported as this.
pub const MAX_REPORTED_MS: u32 = 86_400_000;
/// The most conflicts a report counts; more are reported as this.
pub const MAX_REPORTED_CONFLICTS: u32 = 1_000_000;

/// Where a session stands, as it reports it. Append-only, like the wire enums that carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SyncState {
    /// Both sides agree, but for refused changes, if any: the session waits for changes.
    Watching,
    /// The session has not yet caught up: before its initial sync ended, or after a cycle
    /// that left changes to make again.
    Syncing,
    /// Paused by its user.
    Paused,
    /// Caught up but for conflicts, which wait for the user.
    Conflicted,
    /// Its last cycle failed.
    Failed,
}

impl SyncState {
    /// Every state, in wire order.
    pub const ALL: [SyncState; 5] = [
        SyncState::Watching,
        SyncState::Syncing,
        SyncState::Paused,
        SyncState::Conflicted,
        SyncState::Failed,
    ];

    /// The state's name, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Watching => "watching",
            SyncState::Syncing => "syncing",
            SyncState::Paused => "paused",
            SyncState::Conflicted => "conflicted",
            SyncState::Failed => "failed",
        }
    }
}

/// The longest a [`Request::WaitChange`] is held.
pub const MAX_WAIT_MS: u32 = 25_000;

/// What the side across the network answers a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Tree(Tree),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Signature(Signature),
    Done,
    Stale(RelPath),
    /// A refusal's message, without its code (read as [`RefusalCode::Unspecified`]).
    Refused(String),
    Unavailable(String),
    Since(Since),
    /// How many changes the root's watcher has counted (since the agent began serving it).
    Changes(u64),
    /// A refusal with its code. Added after [`Answer::Refused`], which is what a side still
    /// sends (see `From<EndpointError> for Answer`); a reader takes either.
    RefusedWithCode(Refusal),
}

impl Answer {
    /// The error an answer carries, or the answer itself when it carries none.
    pub fn into_result(self) -> Result<Answer, EndpointError> {
        match self {
            Answer::Stale(path) => Err(EndpointError::Stale(path)),
            Answer::Refused(message) => Err(EndpointError::Refused(Refusal::new(
                RefusalCode::Unspecified,
                message,
            ))),
            Answer::RefusedWithCode(refusal) => Err(EndpointError::Refused(refusal)),
            Answer::Unavailable(why) => Err(EndpointError::Unavailable(why)),
            answer => Ok(answer),
        }
    }
}

impl From<EndpointError> for Answer {
    fn from(error: EndpointError) -> Answer {
        match error {
            EndpointError::Stale(path) => Answer::Stale(path),
            // Without its code: a CLI older than `RefusedWithCode` cannot decode it, and agents
            // are upgraded before CLIs (docs/architecture.md), so an agent must still answer the
            // older CLIs. Once none is served, this becomes `RefusedWithCode(refusal)`.
            EndpointError::Refused(refusal) => Answer::Refused(refusal.message),
            EndpointError::Unavailable(why) => Answer::Unavailable(why),
        }
    }
}

impl From<ApplyError> for EndpointError {
    fn from(error: ApplyError) -> EndpointError {
        match error {
            ApplyError::Stale(path) | ApplyError::Content(path) => EndpointError::Stale(path),
            ApplyError::Unsafe { .. } => {
                EndpointError::Refused(Refusal::new(RefusalCode::OutsideRoot, error.to_string()))
            }
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
    if crate::scan::digest_bytes(&bytes) != *digest {
        return Err(EndpointError::Stale(path.clone()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> RelPath {
        RelPath::new(p).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn all_lists_every_refusal_code_in_declaration_order() {
        // A new code fails to compile here until it is placed, and then until `ALL` lists it.
        let index = |code: RefusalCode| match code {
            RefusalCode::Unspecified => 0,
            RefusalCode::OutsideRoot => 1,
            RefusalCode::InvalidFilter => 2,
            RefusalCode::TooLarge => 3,
            RefusalCode::PermissionDenied => 4,
            RefusalCode::NotFound => 5,
            RefusalCode::NotUnderstood => 6,
        };
        for (position, code) in RefusalCode::ALL.into_iter().enumerate() {
            assert_eq!(index(code), position, "{code:?}");
        }
    }

    #[test]
    fn all_lists_every_sync_state_in_declaration_order_with_its_own_name() {
        let index = |state: SyncState| match state {
            SyncState::Watching => 0,
            SyncState::Syncing => 1,
            SyncState::Paused => 2,
            SyncState::Conflicted => 3,
            SyncState::Failed => 4,
        };
        for (position, state) in SyncState::ALL.into_iter().enumerate() {
            assert_eq!(index(state), position, "{state:?}");
        }
        let names: std::collections::BTreeSet<&str> =
            SyncState::ALL.into_iter().map(SyncState::name).collect();
        assert_eq!(names.len(), SyncState::ALL.len());
    }

    #[test]
    fn a_side_sends_refusals_in_the_form_older_clis_read() {
        let refused = EndpointError::Refused(Refusal::new(RefusalCode::TooLarge, "too big"));
        assert_eq!(Answer::from(refused), Answer::Refused("too big".into()));
        let stale = EndpointError::Stale(path("a"));
        assert_eq!(Answer::from(stale), Answer::Stale(path("a")));
        let unavailable = EndpointError::Unavailable("busy".into());
        assert_eq!(
            Answer::from(unavailable),
            Answer::Unavailable("busy".into())
        );
    }

    #[test]
    fn a_reader_takes_refusals_with_and_without_their_code() {
        let refused = |answer: Answer| match answer.into_result() {
            Err(EndpointError::Refused(refusal)) => refusal,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(Answer::Refused("no".into())),
            Refusal::new(RefusalCode::Unspecified, "no")
        );
        let coded = Refusal::new(RefusalCode::OutsideRoot, "no");
        assert_eq!(refused(Answer::RefusedWithCode(coded.clone())), coded);
    }

    #[test]
    fn answers_that_are_errors_become_errors_and_the_rest_pass() {
        assert!(matches!(
            Answer::Stale(path("a")).into_result(),
            Err(EndpointError::Stale(p)) if p == path("a")
        ));
        assert!(matches!(
            Answer::Unavailable("busy".into()).into_result(),
            Err(EndpointError::Unavailable(why)) if why == "busy"
        ));
        assert_eq!(Answer::Done.into_result().ok(), Some(Answer::Done));
        assert_eq!(
            Answer::Changes(3).into_result().ok(),
            Some(Answer::Changes(3))
        );
    }

    #[test]
    fn an_unsafe_change_is_refused_as_outside_the_root_and_a_stale_one_is_stale() {
        let unsafe_change = ApplyError::Unsafe {
            path: path("l/f"),
            why: "l is a symlink".into(),
        };
        let message = unsafe_change.to_string();
        match EndpointError::from(unsafe_change) {
            EndpointError::Refused(refusal) => {
                assert_eq!(refusal, Refusal::new(RefusalCode::OutsideRoot, message));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            EndpointError::from(ApplyError::Content(path("a"))),
            EndpointError::Stale(_)
        ));
    }
}
