//! A sync session between two endpoints: each cycle asks both what changed, plans, moves the
//! content each change needs (a delta against the target's old version for a large file, else
//! the whole file) and has the target apply it; then records what both sides now agree on. The
//! ancestor is kept in a state file, so a session that stops (or whose either side restarts)
//! carries on from what was agreed, without copying anything again.
//!
//! A cycle's changes are carried in batches: a batch's content is read from its source while
//! the batch before it is applied on the target, and a side across a network has a batch's
//! changes in flight together ([`Endpoint::apply_batch`]), so neither side waits on the other
//! file by file. A change that may travel as a delta asks the target for its old version's
//! signature first, and goes alone.
//!
//! It drives sides through the [`Endpoint`] contract only; the sides themselves live elsewhere:
//! a directory on this machine in [`crate::local_endpoint`], a workspace's directory behind its
//! agent in [`crate::remote`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::delta::{self, WORTH_A_DELTA};
use crate::endpoint::{CHUNK, Content, Endpoint, EndpointError, Refusal};
use crate::history::{self, Since, Version};
use crate::path::RelPath;
use crate::reconcile::{Change, Conflict, Mode, OneWayOnly, Side, reconcile_in_place};
use crate::tree::{Entry, Tree};

/// The most content (bytes of whole files) one batch reads: a batch is applied while the next
/// one is read, so a session holds about twice this at a time.
const BATCH_BYTES: u64 = 16 << 20;
/// The most changes in one batch.
const BATCH_CHANGES: usize = 64;

/// What a cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub applied: usize,
    /// Changes dropped because their side changed meanwhile (the next cycle plans again).
    pub stale: usize,
    /// Changes refused for good (they would leave a root).
    pub refused: Vec<Refusal>,
    pub conflicts: Vec<Conflict>,
    /// Bytes of file content sent whole, and as deltas (literals only).
    pub whole_bytes: u64,
    pub delta_bytes: u64,
    /// Whether the ancestor changed (a change landed, or an agreement was recorded): what a
    /// saved state must catch up with.
    pub ancestor_changed: bool,
}

impl CycleReport {
    /// Whether the cycle found nothing to do.
    pub fn quiet(&self) -> bool {
        self.applied == 0 && self.stale == 0 && self.refused.is_empty()
    }
}

/// What a session keeps between cycles and across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub mode: Mode,
    pub ancestor: Tree,
    /// What the session knows of the sides now; in memory only.
    #[serde(skip)]
    pub sides: Sides,
}

/// A session's picture of both sides between cycles: their trees as last scanned, the versions
/// they were at, and the paths the next plan must walk. It lives in memory only. A session that
/// starts again scans both sides whole and walks every path once, and so does a copy of one
/// (a clone starts empty, and any two compare equal).
#[derive(Debug, Default)]
pub struct Sides {
    alpha: Option<(Version, Tree)>,
    beta: Option<(Version, Tree)>,
    /// The roots the next plan walks; `None`: every path.
    next: Option<BTreeSet<RelPath>>,
}

impl Clone for Sides {
    fn clone(&self) -> Sides {
        Sides::default()
    }
}

impl PartialEq for Sides {
    fn eq(&self, _: &Sides) -> bool {
        true
    }
}

impl Eq for Sides {}

impl Sides {
    /// The trees of both sides, once both were scanned.
    pub fn trees(&self) -> Option<(&Tree, &Tree)> {
        match (&self.alpha, &self.beta) {
            (Some((_, alpha)), Some((_, beta))) => Some((alpha, beta)),
            _ => None,
        }
    }

    /// Makes the next plan walk `path` too.
    pub fn plan_again(&mut self, path: &RelPath) {
        if let Some(next) = &mut self.next {
            next.insert(path.clone());
        }
    }
}

/// Takes a side's answer into its picture (`slot`), noting in `next` what the next plan must
/// walk.
fn absorb(
    slot: &mut Option<(Version, Tree)>,
    next: &mut Option<BTreeSet<RelPath>>,
    answer: Since,
) -> Result<(), EndpointError> {
    match history::absorb(slot, answer).map_err(|e| EndpointError::Unavailable(e.to_string()))? {
        None => *next = None,
        Some(roots) => {
            if let Some(next) = next {
                next.extend(roots);
            }
        }
    }
    Ok(())
}

/// Brings the session's picture of both sides up to date: each is asked what changed since the
/// version last seen of it.
pub async fn refresh(
    state: &mut SessionState,
    alpha: &mut impl Endpoint,
    beta: &mut impl Endpoint,
) -> Result<(), EndpointError> {
    let sides = &mut state.sides;
    let answer = alpha.scan(sides.alpha.as_ref().map(|(v, _)| *v)).await?;
    absorb(&mut sides.alpha, &mut sides.next, answer)?;
    let answer = beta.scan(sides.beta.as_ref().map(|(v, _)| *v)).await?;
    absorb(&mut sides.beta, &mut sides.next, answer)
}

/// Settles the conflict at `path` for the side to `keep` (see [`crate::resolve`]), against both
/// sides as they are now; the next cycle carries the kept version over.
pub async fn resolve_conflict(
    state: &mut SessionState,
    alpha: &mut impl Endpoint,
    beta: &mut impl Endpoint,
    path: &RelPath,
    keep: Side,
) -> Result<(), ResolveError> {
    refresh(state, alpha, beta).await?;
    let SessionState {
        mode,
        ancestor,
        sides,
    } = state;
    let (alpha_tree, beta_tree) = sides.trees().ok_or(ResolveError::NotScanned)?;
    crate::resolve(ancestor, alpha_tree, beta_tree, *mode, path, keep)?;
    sides.plan_again(path);
    Ok(())
}

/// Why a conflict could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A side could not say what it holds now.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("both sides must be scanned first")]
    NotScanned,
    /// The side to keep cannot be kept in this mode.
    #[error(transparent)]
    OneWayOnly(#[from] OneWayOnly),
}

/// The state file's format: raised on any incompatible change.
const STATE_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    state: SessionState,
}

impl SessionState {
    /// Loads a session's state, or `None` when it has none yet.
    pub fn load(path: &Path) -> Result<Option<SessionState>, StateFileError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let not_ours = |source| StateFileError::NotOurs {
            path: path.to_path_buf(),
            source,
        };
        // The format first, so that another version's file says so rather than fail to decode.
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header = serde_json::from_slice(&bytes).map_err(not_ours)?;
        if header.format != STATE_FORMAT {
            return Err(StateFileError::Format {
                path: path.to_path_buf(),
                format: header.format,
            });
        }
        let file: StateFile = serde_json::from_slice(&bytes).map_err(not_ours)?;
        Ok(Some(file.state))
    }

    /// Saves atomically (a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), StateFileError> {
        #[derive(Serialize)]
        struct StateFileRef<'a> {
            format: u32,
            state: &'a SessionState,
        }
        let bytes = serde_json::to_vec(&StateFileRef {
            format: STATE_FORMAT,
            state: self,
        })
        .map_err(StateFileError::Encode)?;
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, bytes)
            .and_then(|()| std::fs::rename(&temp, path))
            .map_err(|source| StateFileError::Save {
                path: path.to_path_buf(),
                source,
            })
    }
}

/// A state file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not JSON of ours: another program's file, or a damaged one.
    #[error("{} is not a sync session's state: {source}", .path.display())]
    NotOurs {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Another build's format, which this one cannot read.
    #[error("{} has format {format}, this build reads {STATE_FORMAT}", .path.display())]
    Format { path: PathBuf, format: u32 },
    #[error("{0}")]
    Encode(serde_json::Error),
    #[error("cannot save {}: {source}", .path.display())]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs one cycle between `alpha` and `beta`, updating `state`. The plan walks only the paths
/// either side changed since the last cycle, with those the last cycle left unsettled; every
/// path when a side was scanned whole.
pub async fn cycle(
    state: &mut SessionState,
    alpha: &mut impl Endpoint,
    beta: &mut impl Endpoint,
) -> Result<CycleReport, EndpointError> {
    refresh(state, alpha, beta).await?;
    let SessionState {
        mode,
        ancestor,
        sides,
    } = state;
    let scope = sides
        .next
        .replace(BTreeSet::new())
        .map(|roots| history::minimal(roots.into_iter().collect()));
    let Sides {
        alpha: Some((_, alpha_tree)),
        beta: Some((_, beta_tree)),
        next,
    } = sides
    else {
        return Err(EndpointError::Unavailable("a side was not scanned".into()));
    };
    let planned = reconcile_in_place(ancestor, alpha_tree, beta_tree, *mode, scope.as_deref());
    let mut report = CycleReport {
        conflicts: planned.conflicts,
        ancestor_changed: planned.recorded,
        ..CycleReport::default()
    };
    let mut unsettled = planned.unsettled;
    // Changes are at disjoint paths, so their order does not matter: those to beta, then
    // those to alpha.
    let (to_beta, to_alpha): (Vec<Change>, Vec<Change>) = planned
        .changes
        .into_iter()
        .partition(|change| change.side == Side::Beta);
    let mut outcomes = carry_all(to_beta, beta_tree, alpha, beta, &mut report).await;
    if !outcomes.iter().any(|(_, outcome)| unavailable(outcome)) {
        outcomes.extend(carry_all(to_alpha, alpha_tree, beta, alpha, &mut report).await);
    }
    let mut gone = None;
    for (change, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                // Both sides hold it now; the target's next scan names it again, and the walk
                // then finds it agreed.
                ancestor.replace_subtree(&change.path, &change.desired);
                report.applied += 1;
                report.ancestor_changed = true;
            }
            Err(EndpointError::Stale(_)) => {
                report.stale += 1;
                unsettled.push(change.path);
            }
            Err(EndpointError::Refused(refusal)) => {
                report.refused.push(refusal);
                unsettled.push(change.path);
            }
            Err(error) => {
                gone.get_or_insert(error);
            }
        }
    }
    if let Some(error) = gone {
        // Keep what was agreed so far; the next cycle walks every path again.
        *next = None;
        return Err(error);
    }
    if let Some(next) = next {
        next.extend(unsettled);
    }
    Ok(report)
}

fn unavailable(outcome: &Result<(), EndpointError>) -> bool {
    matches!(outcome, Err(EndpointError::Unavailable(_)))
}

/// The outcome of each change carried from `from` to `to` (whose scan is `target`), in batches
/// (see the module's documentation). Stops after the batch in which a side became unavailable:
/// the changes not tried then have no outcome.
async fn carry_all<F: Endpoint, T: Endpoint>(
    changes: Vec<Change>,
    target: &Tree,
    from: &mut F,
    to: &mut T,
    report: &mut CycleReport,
) -> Vec<(Change, Result<(), EndpointError>)> {
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut queue = changes.into_iter().peekable();
    // Read, and waiting to be applied.
    let mut ready = Vec::new();
    loop {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(change) = queue.peek()
            && batch.len() < BATCH_CHANGES
            && bytes < BATCH_BYTES
            && !wants_a_delta(change, target)
        {
            bytes += new_bytes(change, target);
            batch.extend(queue.next());
        }
        if batch.is_empty() && ready.is_empty() {
            let Some(change) = queue.next() else { break };
            // It asks the target for a signature: alone.
            let outcome = carry(&change, target, from, to, report).await;
            let stop = unavailable(&outcome);
            outcomes.push((change, outcome));
            if stop {
                break;
            }
            continue;
        }
        // The batch read before is sent first: its requests travel, and the other side
        // applies them, while this one is read.
        let (applied, read) = futures_util::future::join(
            to.apply_batch(std::mem::take(&mut ready)),
            read_batch(batch, target, from),
        )
        .await;
        let mut stop = applied.iter().any(|(_, outcome)| unavailable(outcome));
        outcomes.extend(applied);
        for (change, contents) in read {
            match contents {
                Ok((contents, bytes)) => {
                    report.whole_bytes += bytes;
                    ready.push((change, contents));
                }
                Err(error) => {
                    stop |= matches!(error, EndpointError::Unavailable(_));
                    outcomes.push((change, Err(error)));
                }
            }
        }
        if stop {
            break;
        }
    }
    outcomes
}

/// Whether `change` holds a file that may travel as a delta against the target's old version
/// (both versions large enough to be worth one).
fn wants_a_delta(change: &Change, target: &Tree) -> bool {
    change
        .desired
        .iter()
        .any(|(path, entry)| match (entry, target.get(path)) {
            (
                Entry::File { digest, size, .. },
                Some(Entry::File {
                    digest: had,
                    size: old,
                    ..
                }),
            ) => had != digest && *size >= WORTH_A_DELTA && *old >= WORTH_A_DELTA,
            _ => false,
        })
}

/// The bytes of the files whose content `change` brings to the target.
fn new_bytes(change: &Change, target: &Tree) -> u64 {
    change
        .desired
        .iter()
        .filter_map(|(path, entry)| match entry {
            Entry::File { digest, size, .. } if !target_has(target, path, digest) => Some(*size),
            _ => None,
        })
        .sum()
}

fn target_has(target: &Tree, path: &RelPath, digest: &crate::tree::Digest) -> bool {
    matches!(target.get(path), Some(Entry::File { digest: had, .. }) if had == digest)
}

/// Reads from `from` the content of each change's files that the target lacks (all whole),
/// with how many bytes that is.
async fn read_batch(
    batch: Vec<Change>,
    target: &Tree,
    from: &mut impl Endpoint,
) -> Vec<(
    Change,
    Result<(BTreeMap<RelPath, Content>, u64), EndpointError>,
)> {
    let mut read = Vec::with_capacity(batch.len());
    for change in batch {
        let mut contents = BTreeMap::new();
        let mut bytes = 0;
        let mut outcome = Ok(());
        for (path, entry) in &change.desired {
            let Entry::File { digest, .. } = entry else {
                continue;
            };
            if target_has(target, path, digest) {
                continue;
            }
            match from.read(path, digest).await {
                Ok(content) => {
                    let before = bytes;
                    bytes += content.len() as u64;
                    if before / YIELD_EVERY != bytes / YIELD_EVERY {
                        yield_once().await;
                    }
                    contents.insert(path.clone(), Content::Whole(content));
                }
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        read.push((change, outcome.map(|()| (contents, bytes))));
    }
    read
}

/// How many bytes a batch reads between letting the batch before it go on travelling: reads
/// of a side on this machine block, and the batch before is sent from the same task.
const YIELD_EVERY: u64 = 1 << 20;

/// Lets the task's other futures run once (those joined with this one).
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Moves the content `change` needs from `from` and applies it on `to` (whose scan is `target`).
async fn carry(
    change: &Change,
    target: &Tree,
    from: &mut impl Endpoint,
    to: &mut impl Endpoint,
    report: &mut CycleReport,
) -> Result<(), EndpointError> {
    let mut contents = BTreeMap::new();
    for (path, entry) in &change.desired {
        let Entry::File { digest, size, .. } = entry else {
            continue;
        };
        if target_has(target, path, digest) {
            // The target has this content already (only the executable bit may change).
            continue;
        }
        match target.get(path) {
            // An old version worth a delta.
            Some(Entry::File { size: old, .. })
                if *size >= WORTH_A_DELTA && *old >= WORTH_A_DELTA =>
            {
                let signature = to.signature(path).await?;
                let bytes = from.read(path, digest).await?;
                let ops = delta::delta(&signature, &bytes);
                let literal = delta::literal_bytes(&ops);
                // A delta that carries most of the file, or more than one message holds, is
                // worth nothing: the file goes whole (in pieces, across a network).
                if literal > bytes.len() / 2 || literal > CHUNK {
                    report.whole_bytes += bytes.len() as u64;
                    contents.insert(path.clone(), Content::Whole(bytes));
                    continue;
                }
                report.delta_bytes += literal as u64;
                contents.insert(
                    path.clone(),
                    Content::Delta {
                        block_size: signature.block_size,
                        ops,
                    },
                );
            }
            _ => {
                let bytes = from.read(path, digest).await?;
                report.whole_bytes += bytes.len() as u64;
                contents.insert(path.clone(), Content::Whole(bytes));
            }
        }
    }
    to.apply(change, contents).await
}
