//! A sync session between two endpoints: each cycle scans both, plans, moves the content each
//! change needs (a delta against the target's old version for a large file, else the whole
//! file) and has the target apply it; then records what both sides now agree on. The ancestor
//! is kept in a state file after every cycle, so a session that stops (or whose either side
//! restarts) carries on from what was agreed, without copying anything again.
//!
//! An endpoint is where one side lives: a directory on this machine ([`LocalEndpoint`]), or a
//! workspace's directory behind its agent (the network endpoint, built on the same trait).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::delta::{self, Op, Signature, WORTH_A_DELTA};
use crate::filter::Filter;
use crate::local::{self, ApplyError, Source};
use crate::path::RelPath;
use crate::reconcile::{Change, Conflict, Mode, Side, reconcile};
use crate::scan::{ScanError, Scanner};
use crate::tree::{Digest, Entry, Tree};
use crate::watch::Dirty;

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

/// One side of a session.
pub trait Endpoint: Send {
    fn scan(&mut self) -> impl Future<Output = Result<Tree, EndpointError>> + Send;
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

/// What a cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub applied: usize,
    /// Changes dropped because their side changed meanwhile (the next cycle plans again).
    pub stale: usize,
    /// Changes refused for good (they would leave a root).
    pub refused: Vec<String>,
    pub conflicts: Vec<Conflict>,
    /// Bytes of file content sent whole, and as deltas (literals only).
    pub whole_bytes: u64,
    pub delta_bytes: u64,
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
    pub fn load(path: &Path) -> Result<Option<SessionState>, String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let not_ours =
            |e: serde_json::Error| format!("{} is not a sync session's state: {e}", path.display());
        // The format first, so that another version's file says so rather than fail to decode.
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header = serde_json::from_slice(&bytes).map_err(not_ours)?;
        if header.format != STATE_FORMAT {
            return Err(format!(
                "{} has format {}, this build reads {STATE_FORMAT}",
                path.display(),
                header.format
            ));
        }
        let file: StateFile = serde_json::from_slice(&bytes).map_err(not_ours)?;
        Ok(Some(file.state))
    }

    /// Saves atomically (a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let bytes = serde_json::to_vec(&StateFile {
            format: STATE_FORMAT,
            state: self.clone(),
        })
        .map_err(|e| e.to_string())?;
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, bytes)
            .and_then(|()| std::fs::rename(&temp, path))
            .map_err(|e| format!("cannot save {}: {e}", path.display()))
    }
}

/// Runs one cycle between `alpha` and `beta`, updating `state`.
pub async fn cycle(
    state: &mut SessionState,
    alpha: &mut impl Endpoint,
    beta: &mut impl Endpoint,
) -> Result<CycleReport, EndpointError> {
    let alpha_tree = alpha.scan().await?;
    let beta_tree = beta.scan().await?;
    let mut plan = reconcile(&state.ancestor, &alpha_tree, &beta_tree, state.mode);
    let mut report = CycleReport {
        conflicts: plan.conflicts.clone(),
        ..CycleReport::default()
    };
    // Taken, not cloned: a first sync's changes carry whole subtrees.
    for change in std::mem::take(&mut plan.changes) {
        let result = match change.side {
            Side::Beta => carry(&change, &beta_tree, alpha, beta, &mut report).await,
            Side::Alpha => carry(&change, &alpha_tree, beta, alpha, &mut report).await,
        };
        match result {
            Ok(()) => {
                plan.applied(&change);
                report.applied += 1;
            }
            Err(EndpointError::Stale(_)) => report.stale += 1,
            Err(EndpointError::Refused(why)) => report.refused.push(why),
            Err(unavailable) => {
                // Keep what was agreed so far; the rest waits for the next cycle.
                state.ancestor = plan.ancestor;
                return Err(unavailable);
            }
        }
    }
    state.ancestor = plan.ancestor;
    Ok(report)
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
        match target.get(path) {
            // The target has this content already (only the executable bit may change).
            Some(Entry::File { digest: had, .. }) if had == digest => continue,
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
                if literal > bytes.len() / 2 || literal > crate::remote::CHUNK {
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

/// How long a watched side goes on rescanning only what its watcher names before it scans
/// everything again: the safety net under a missed event.
pub const FULL_RESCAN: std::time::Duration = std::time::Duration::from_secs(10);

/// A side in a directory on this machine.
#[derive(Debug)]
pub struct LocalEndpoint {
    scanner: Scanner,
    filter: Filter,
    /// With a watcher: what it says changed, and the tree as of the last scan (with when the
    /// last full scan was).
    watch: Option<(crate::watch::Watcher, Arc<Mutex<Dirty>>)>,
    tree: Option<(Tree, std::time::Instant)>,
}

impl LocalEndpoint {
    pub fn new(root: impl Into<PathBuf>, filter: Filter) -> LocalEndpoint {
        LocalEndpoint {
            scanner: Scanner::new(root),
            filter,
            watch: None,
            tree: None,
        }
    }

    /// Watches the root: scans then read again only what changed (and everything every
    /// [`FULL_RESCAN`]); `wake` is called on every change.
    pub fn watch(&mut self, wake: impl Fn() + Send + 'static) -> Result<(), String> {
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let marks = dirty.clone();
        let root = self.scanner.root().to_path_buf();
        let watcher = crate::watch::Watcher::with_paths(&root.clone(), move |paths| {
            marks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .mark(&root, paths);
            wake();
        })?;
        self.watch = Some((watcher, dirty));
        self.tree = None;
        Ok(())
    }

    /// The tree, read again only where the watcher saw changes when it can.
    fn scan_tree(&mut self) -> Result<Tree, EndpointError> {
        let Some((_, dirty)) = &self.watch else {
            return Ok(self.scanner.scan(&self.filter)?.tree);
        };
        let dirty = std::mem::take(
            &mut *dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if let Some((tree, full_at)) = &mut self.tree
            && !dirty.everything()
            && full_at.elapsed() < FULL_RESCAN
        {
            let root = self.scanner.root().to_path_buf();
            for path in dirty.roots() {
                // Never through a symlink: a path whose parents are not directories is gone.
                if local::parents_are_directories(&root, &path).unwrap_or(false) {
                    let entries = self.scanner.scan_subtree(&path, &self.filter)?;
                    tree.replace_subtree(&path, &entries);
                } else {
                    tree.remove_subtree(&path);
                }
            }
            if tree.check().is_ok() {
                return Ok(tree.clone());
            }
        }
        let tree = self.scanner.scan(&self.filter)?.tree;
        self.tree = Some((tree.clone(), std::time::Instant::now()));
        Ok(tree)
    }

    pub fn root(&self) -> &Path {
        self.scanner.root()
    }

    fn full(&self, path: &RelPath) -> PathBuf {
        self.scanner.root().join(path.as_str())
    }

    /// Up to `len` bytes of a regular file from `offset` (fewer at its end).
    pub fn read_range(
        &self,
        path: &RelPath,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, EndpointError> {
        use std::io::{Read, Seek, SeekFrom};
        let full = self.regular_file(path)?;
        let stale = |_| EndpointError::Stale(path.clone());
        match std::fs::symlink_metadata(&full) {
            Ok(metadata) if metadata.file_type().is_file() => {}
            _ => return Err(EndpointError::Stale(path.clone())),
        }
        let mut file = std::fs::File::open(&full).map_err(stale)?;
        file.seek(SeekFrom::Start(offset)).map_err(stale)?;
        let mut bytes = Vec::with_capacity(len.min(1 << 20));
        file.take(len as u64)
            .read_to_end(&mut bytes)
            .map_err(stale)?;
        Ok(bytes)
    }

    /// The full path of a regular file inside the root, reached without following a symlink
    /// anywhere on the way (a request may name any path; this is where it is checked).
    fn regular_file(&self, path: &RelPath) -> Result<PathBuf, EndpointError> {
        if !local::parents_are_directories(self.scanner.root(), path)? {
            return Err(EndpointError::Stale(path.clone()));
        }
        Ok(self.full(path))
    }

    /// A regular file's bytes, refusing to follow a symlink anywhere on the way.
    fn read_file(&self, path: &RelPath) -> Result<Vec<u8>, EndpointError> {
        let full = self.regular_file(path)?;
        match std::fs::symlink_metadata(&full) {
            Ok(metadata) if metadata.file_type().is_file() => {}
            _ => return Err(EndpointError::Stale(path.clone())),
        }
        std::fs::read(&full).map_err(|_| EndpointError::Stale(path.clone()))
    }
}

impl Endpoint for LocalEndpoint {
    async fn scan(&mut self) -> Result<Tree, EndpointError> {
        self.scan_tree()
    }

    async fn read(&mut self, path: &RelPath, digest: &Digest) -> Result<Vec<u8>, EndpointError> {
        checked(path, self.read_file(path)?, digest)
    }

    async fn signature(&mut self, path: &RelPath) -> Result<Signature, EndpointError> {
        Ok(delta::signature(&self.read_file(path)?))
    }

    async fn apply(
        &mut self,
        change: &Change,
        contents: BTreeMap<RelPath, Content>,
    ) -> Result<(), EndpointError> {
        let mut source = Contents {
            endpoint_root: self.scanner.root().to_path_buf(),
            contents,
        };
        local::apply(&mut self.scanner, &self.filter, change, &mut source)?;
        // What was just written is known: the cached tree must not wait for the watcher's
        // events to see it (a tree without it would read as a deletion here).
        if let Some((tree, _)) = &mut self.tree {
            tree.replace_subtree(&change.path, &change.desired);
        }
        Ok(())
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

/// The content sent with a change, rebuilding deltas against the file on disk.
struct Contents {
    endpoint_root: PathBuf,
    contents: BTreeMap<RelPath, Content>,
}

impl Source for Contents {
    fn content(&mut self, path: &RelPath, digest: &Digest) -> std::io::Result<Vec<u8>> {
        match self.contents.remove(path) {
            Some(Content::Whole(bytes)) => Ok(bytes),
            Some(Content::Delta { block_size, ops }) => {
                let old = std::fs::read(self.endpoint_root.join(path.as_str()))?;
                delta::patch(&old, block_size, &ops, digest).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })
            }
            None => Err(std::io::Error::other(format!(
                "no content was sent for {path}"
            ))),
        }
    }
}
