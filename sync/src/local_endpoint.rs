//! A side in a directory on this machine ([`LocalEndpoint`]): scanned into a tree (with a
//! watcher, only what its events name is read again, and everything now and then on a thread
//! beside the cycles, the safety net under a missed event), read, and written through
//! [`crate::local`]. Every step of its tree goes into its history, so it can answer what changed
//! since a version. It is not the session (see [`crate::session`]), which drives it through the
//! [`Endpoint`] contract.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::delta::{self, Signature};
use crate::endpoint::{Content, Endpoint, EndpointError, checked};
use crate::filter::Filter;
use crate::history::{self, History, Since, Version};
use crate::local::{self, Source};
use crate::path::RelPath;
use crate::reconcile::Change;
use crate::scan::{ScanError, Scanner};
use crate::tree::{Digest, Entry, Tree};
use crate::watch::{Dirty, WatchError};

/// How long a watched side goes on rescanning only what its watcher names before it scans
/// everything again, the safety net under a missed event: 10 s for a small tree, a millisecond
/// per entry for a large one (100 s at 100,000 entries, whose full scan costs a few hundred
/// milliseconds of CPU), at most 10 minutes. A queue overflow is not left to it: the watcher says
/// so, and the next scan is full.
pub fn full_rescan_after(entries: usize) -> std::time::Duration {
    let per_entry = std::time::Duration::from_millis(u64::try_from(entries).unwrap_or(u64::MAX));
    per_entry.clamp(FULL_RESCAN, std::time::Duration::from_secs(600))
}

/// The shortest interval between full scans of a watched side.
pub const FULL_RESCAN: std::time::Duration = std::time::Duration::from_secs(10);

/// A side in a directory on this machine.
#[derive(Debug)]
pub struct LocalEndpoint {
    scanner: Scanner,
    filter: Filter,
    /// With a watcher: what it says changed, and the tree as of the last scan (with when the
    /// last full scan began).
    watch: Option<Watching>,
    tree: Option<(Tree, std::time::Instant)>,
    /// Every step of `tree`: rescans and this side's own changes.
    history: History,
    /// The safety-net full scan, when one is running beside the cycles.
    full_scan: Option<FullScan>,
    /// Overrides [`full_rescan_after`].
    full_rescan: Option<std::time::Duration>,
    /// For tests: each full scan, once done, meets this barrier twice before it may be taken in.
    full_scan_gate: Option<Arc<std::sync::Barrier>>,
}

struct Watching {
    _watcher: crate::watch::Watcher,
    dirty: Arc<Mutex<Dirty>>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Watching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watching")
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

type FullScanThread = std::thread::JoinHandle<(Scanner, Result<crate::scan::Scan, ScanError>)>;

/// A full scan on a thread of its own, so that a cycle never waits for it: the safety net of
/// a large tree costs hundreds of milliseconds, and the cycles go on from the watcher's events
/// meanwhile (with a scanner that starts without digests, and so reads again what they touch).
#[derive(Debug)]
struct FullScan {
    started: std::time::Instant,
    thread: FullScanThread,
    /// What the cycles read again or wrote while it ran: the full scan may have seen each of
    /// them before or after it changed, so each is read again over the full scan's tree.
    touched: Vec<RelPath>,
}

impl LocalEndpoint {
    pub fn new(root: impl Into<PathBuf>, filter: Filter) -> LocalEndpoint {
        LocalEndpoint {
            scanner: Scanner::new(root),
            filter,
            watch: None,
            tree: None,
            history: History::new(),
            full_scan: None,
            full_rescan: None,
            full_scan_gate: None,
        }
    }

    /// For tests: each full scan beside the cycles, once it has read the disk, waits at `gate`
    /// (with the test, which then knows the scan is done) and again (until the test lets it be
    /// taken in), so that a test can change files between the two.
    #[doc(hidden)]
    pub fn with_full_scan_gate(mut self, gate: Arc<std::sync::Barrier>) -> LocalEndpoint {
        self.full_scan_gate = Some(gate);
        self
    }

    /// Scans everything again this often instead of after [`full_rescan_after`].
    pub fn with_full_rescan(mut self, every: std::time::Duration) -> LocalEndpoint {
        self.full_rescan = Some(every);
        self
    }

    /// Whether a full scan is running beside the cycles (or has finished, and is not taken in
    /// yet).
    pub fn full_scan_running(&self) -> bool {
        self.full_scan.is_some()
    }

    fn full_scan_due(&self, tree: &Tree, full_at: std::time::Instant) -> bool {
        full_at.elapsed()
            >= self
                .full_rescan
                .unwrap_or_else(|| full_rescan_after(tree.len()))
    }

    /// Watches the root: scans then read again only what changed (and everything every
    /// [`full_rescan_after`], beside the cycles); `wake` is called on every change, and when a
    /// full scan has finished.
    pub fn watch(&mut self, wake: impl Fn() + Send + Sync + 'static) -> Result<(), WatchError> {
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let marks = dirty.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
        let woken = wake.clone();
        let root = self.scanner.root().to_path_buf();
        let watcher = crate::watch::Watcher::with_paths(&root.clone(), move |paths| {
            marks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .mark(&root, paths);
            woken();
        })?;
        self.watch = Some(Watching {
            _watcher: watcher,
            dirty,
            wake,
        });
        self.tree = None;
        Ok(())
    }

    /// Brings the tree up to date, reading again only where the watcher saw changes when it
    /// can, and records the step in the history. A scan that fails part way may have changed
    /// the cached tree without a step to say so: the cache is then dropped, and the next scan is
    /// a whole one (and answers the whole tree).
    fn refresh(&mut self) -> Result<(), EndpointError> {
        let refreshed = self.refresh_cached();
        if refreshed.is_err() {
            self.tree = None;
            self.cancel_full_scan();
        }
        refreshed
    }

    fn refresh_cached(&mut self) -> Result<(), EndpointError> {
        self.adopt_full_scan()?;
        let mut touched = Vec::new();
        if let Some(watching) = &self.watch {
            let dirty = std::mem::take(
                &mut *watching
                    .dirty
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if let Some((tree, full_at)) = &self.tree
                && self.full_scan.is_none()
                && !dirty.everything()
                && self.full_scan_due(tree, *full_at)
            {
                self.start_full_scan();
            }
            if let Some((tree, _)) = &mut self.tree
                && !dirty.everything()
            {
                touched = dirty.roots();
                read_again(&mut self.scanner, &self.filter, tree, &touched)?;
                if let Some(full_scan) = &mut self.full_scan {
                    full_scan.touched.extend(touched.iter().cloned());
                }
                // Each subtree read again must hang from a directory the tree holds (else a
                // directory above it is new too, and only a full scan finds it).
                let whole = touched.iter().all(|path| {
                    tree.get(path).is_none()
                        || path
                            .parent()
                            .is_none_or(|parent| tree.get(&parent).is_some_and(Entry::is_dir))
                });
                if whole {
                    self.history.record(touched);
                    return Ok(());
                }
            }
        }
        // A full scan here and now supersedes one running beside.
        self.cancel_full_scan();
        let fresh = self.scanner.scan(&self.filter)?.tree;
        match &self.tree {
            // The subtrees read again above changed the cached tree too.
            Some((old, _)) => {
                touched.extend(history::differences(old, &fresh));
                self.history.record(history::minimal(touched));
            }
            None => self.history.record_everything(),
        }
        self.tree = Some((fresh, std::time::Instant::now()));
        Ok(())
    }

    /// Starts the safety-net full scan on a thread of its own, with this side's scanner (and
    /// its digests); the cycles go on with a fresh one meanwhile.
    fn start_full_scan(&mut self) {
        let root = self.scanner.root().to_path_buf();
        let mut scanner = std::mem::replace(&mut self.scanner, Scanner::new(root));
        let filter = self.filter.clone();
        let wake = self.watch.as_ref().map(|watching| watching.wake.clone());
        let gate = self.full_scan_gate.clone();
        let thread = std::thread::Builder::new()
            .name("nexus-sync-full-scan".into())
            .spawn(move || {
                let scan = scanner.scan(&filter);
                if let Some(gate) = gate {
                    gate.wait();
                    gate.wait();
                }
                if let Some(wake) = wake {
                    wake();
                }
                (scanner, scan)
            });
        // Without a thread to be had, the next refresh tries again (the scanner's digests are
        // lost, and read again).
        if let Ok(thread) = thread {
            self.full_scan = Some(FullScan {
                started: std::time::Instant::now(),
                thread,
                touched: Vec::new(),
            });
        }
    }

    /// Takes a finished full scan's tree as the side's: what the cycles read again or wrote
    /// while it ran is read again over it, and what it found that the watcher missed is a step.
    fn adopt_full_scan(&mut self) -> Result<(), EndpointError> {
        let Some(full_scan) = self
            .full_scan
            .take_if(|full_scan| full_scan.thread.is_finished())
        else {
            return Ok(());
        };
        // A full scan that failed (a directory removed under it, say) changes nothing: the
        // cached tree stands, and the next comes after the usual interval.
        let Some(Ok(scan)) = self.take_back_scanner(full_scan.thread) else {
            if let Some((_, full_at)) = &mut self.tree {
                *full_at = std::time::Instant::now();
            }
            return Ok(());
        };
        let mut fresh = scan.tree;
        let touched = history::minimal(full_scan.touched);
        read_again(&mut self.scanner, &self.filter, &mut fresh, &touched)?;
        if let Some((old, _)) = &self.tree {
            let missed = history::differences(old, &fresh);
            if !missed.is_empty() {
                self.history.record(history::minimal(missed));
            }
        } else {
            self.history.record_everything();
        }
        self.tree = Some((fresh, full_scan.started));
        Ok(())
    }

    /// Waits for a running full scan and drops its tree, keeping its scanner's digests.
    fn cancel_full_scan(&mut self) {
        if let Some(full_scan) = self.full_scan.take() {
            self.take_back_scanner(full_scan.thread);
        }
    }

    /// Waits for a full scan's thread, and takes back its scanner with what the cycles' scanner
    /// learned meanwhile; `None` if the thread panicked.
    fn take_back_scanner(
        &mut self,
        thread: FullScanThread,
    ) -> Option<Result<crate::scan::Scan, ScanError>> {
        let (mut scanner, scan) = thread.join().ok()?;
        scanner.absorb(std::mem::replace(
            &mut self.scanner,
            Scanner::new(scanner.root().to_path_buf()),
        ));
        self.scanner = scanner;
        Some(scan)
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
        let stale = |_| EndpointError::Stale(path.clone());
        let (mut file, _) = self.open_file(path)?;
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

    /// A regular file, opened without following a symlink anywhere on the way, and its full
    /// path.
    fn open_file(&self, path: &RelPath) -> Result<(std::fs::File, PathBuf), EndpointError> {
        let full = self.regular_file(path)?;
        match std::fs::symlink_metadata(&full) {
            Ok(metadata) if metadata.file_type().is_file() => {}
            _ => return Err(EndpointError::Stale(path.clone())),
        }
        let file = std::fs::File::open(&full).map_err(|_| EndpointError::Stale(path.clone()))?;
        Ok((file, full))
    }

    /// A regular file's bytes, refusing to follow a symlink anywhere on the way.
    fn read_file(&self, path: &RelPath) -> Result<Vec<u8>, EndpointError> {
        let (mut file, _) = self.open_file(path)?;
        read_whole(&mut file, None).map_err(|_| EndpointError::Stale(path.clone()))
    }
}

impl Endpoint for LocalEndpoint {
    async fn scan(&mut self, since: Option<Version>) -> Result<Since, EndpointError> {
        self.refresh()?;
        let tree = self.tree.as_ref().map(|(tree, _)| tree);
        Ok(self.history.answer(tree.unwrap_or(&Tree::new()), since))
    }

    async fn read(&mut self, path: &RelPath, digest: &Digest) -> Result<Vec<u8>, EndpointError> {
        let stale = |_| EndpointError::Stale(path.clone());
        let (mut file, full) = self.open_file(path)?;
        let before = file.metadata().map_err(stale)?;
        let bytes = read_whole(&mut file, Some(&before)).map_err(stale)?;
        let after = std::fs::symlink_metadata(&full).map_err(stale)?;
        // A file the last scan hashed, unchanged since, is sent without hashing it again: the
        // sending side's scan and its reads each hashed every byte of an initial sync.
        if self.scanner.knows(path, &before, &after, digest) {
            return Ok(bytes);
        }
        checked(path, bytes, digest)
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
        if let Some(full_scan) = &mut self.full_scan {
            full_scan.touched.push(change.path.clone());
        }
        self.history.record(vec![change.path.clone()]);
        Ok(())
    }
}

/// The rest of `file`, with room for its whole length (`metadata`'s, or asked) made at once,
/// if it can be had (a sparse file may claim more than memory holds).
fn read_whole(
    file: &mut std::fs::File,
    metadata: Option<&std::fs::Metadata>,
) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let len = match metadata {
        Some(metadata) => metadata.len(),
        None => file.metadata()?.len(),
    };
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(std::io::Error::other)?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads `paths` again into `tree`, from the disk as it is now.
fn read_again(
    scanner: &mut Scanner,
    filter: &Filter,
    tree: &mut Tree,
    paths: &[RelPath],
) -> Result<(), EndpointError> {
    let root = scanner.root().to_path_buf();
    for path in paths {
        // Never through a symlink: a path whose parents are not directories is gone.
        if local::parents_are_directories(&root, path).unwrap_or(false) {
            let entries = scanner.scan_subtree(path, filter)?;
            tree.replace_subtree(path, &entries);
        } else {
            tree.remove_subtree(path);
        }
    }
    Ok(())
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
