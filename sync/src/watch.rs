//! Noticing changes: the operating system's file events for a root (inotify on Linux, through
//! the `notify` crate), and a [`Coalescer`] that turns a burst of them (a `git checkout` of
//! thousands of files) into one cycle, soon after the burst ends and never later than a bound
//! after it began. Events only say "look again": every cycle scans, so a lost or overflowing
//! event queue costs latency, never correctness; a periodic rescan is the safety net.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::path::RelPath;

use notify::{RecursiveMode, Watcher as _};

/// Watches one root for as long as it lives.
#[derive(Debug)]
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

impl Watcher {
    /// Calls `changed` (from another thread) whenever something beneath `root` may have
    /// changed, including when the event queue overflowed.
    pub fn start(root: &Path, changed: impl Fn() + Send + 'static) -> Result<Watcher, WatchError> {
        Watcher::with_paths(root, move |_| changed())
    }

    /// Calls `changed` with the paths an event names, or `None` when it names none usable (an
    /// error, an overflowed queue): then anything may have changed.
    pub fn with_paths(
        root: &Path,
        changed: impl Fn(Option<Vec<PathBuf>>) + Send + 'static,
    ) -> Result<Watcher, WatchError> {
        let mut inner =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                // Reading changes nothing (and a scan's own reads would wake it for ever).
                Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
                Ok(event) if !event.need_rescan() && !event.paths.is_empty() => {
                    changed(Some(event.paths));
                }
                _ => changed(None),
            })
            .map_err(|source| WatchError::new(root, source))?;
        inner
            .watch(root, RecursiveMode::Recursive)
            .map_err(|source| WatchError::new(root, source))?;
        Ok(Watcher { _inner: inner })
    }
}

/// The operating system would not watch a root (too many watches, a root that is gone). Without
/// events every scan reads the whole tree: slower, still right.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", .root.display())]
pub struct WatchError {
    root: PathBuf,
    source: notify::Error,
}

impl WatchError {
    fn new(root: &Path, source: notify::Error) -> WatchError {
        WatchError {
            root: root.to_path_buf(),
            source,
        }
    }
}

/// The paths changed since the last scan, as the watcher named them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    paths: BTreeSet<RelPath>,
    everything: bool,
}

impl Dirty {
    /// Records an event's paths (absolute, beneath `root`); a path it cannot place makes
    /// everything dirty.
    pub fn mark(&mut self, root: &Path, paths: Option<Vec<PathBuf>>) {
        let Some(paths) = paths else {
            self.everything = true;
            return;
        };
        for path in paths {
            let relative = path
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .map(RelPath::new);
            match relative {
                Some(Ok(path)) => {
                    self.paths.insert(path);
                }
                // The root itself, or a name that cannot be a path here.
                _ => self.everything = true,
            }
        }
    }

    pub fn everything(&self) -> bool {
        self.everything
    }

    /// The dirty paths, none beneath another.
    pub fn roots(&self) -> Vec<RelPath> {
        crate::history::minimal(self.paths.iter().cloned().collect())
    }
}

/// When to run the next cycle, given when changes were noticed. Pure: times in, a time out.
#[derive(Debug, Clone)]
pub struct Coalescer {
    /// How long the files must be still before a cycle runs.
    quiet: Duration,
    /// The longest a noticed change waits, however long the burst.
    max_wait: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Coalescer {
    pub fn new(quiet: Duration, max_wait: Duration) -> Coalescer {
        Coalescer {
            quiet,
            max_wait,
            first: None,
            last: None,
        }
    }

    /// A change was noticed at `at`.
    pub fn noticed(&mut self, at: Instant) {
        self.first.get_or_insert(at);
        self.last = Some(at);
    }

    /// When the pending changes should be looked at; `None` when nothing is pending.
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max_wait))
    }

    /// A cycle ran: what was noticed before it is handled.
    pub fn ran(&mut self) {
        self.first = None;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_burst_becomes_one_cycle_soon_after_it_ends_and_never_too_late() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut coalescer = Coalescer::new(Duration::from_millis(10), Duration::from_millis(100));
        assert_eq!(coalescer.due(), None);
        coalescer.noticed(ms(0));
        assert_eq!(coalescer.due(), Some(ms(10)));
        // A checkout: an event every millisecond for a second. The cycle waits for the burst
        // to be still, but at most 100 ms from its start.
        for n in 1..1000 {
            coalescer.noticed(ms(n));
        }
        assert_eq!(coalescer.due(), Some(ms(100)));
        coalescer.ran();
        assert_eq!(coalescer.due(), None);
        coalescer.noticed(ms(2000));
        coalescer.noticed(ms(2004));
        assert_eq!(coalescer.due(), Some(ms(2014)));
    }

    #[test]
    fn changes_beneath_the_root_are_noticed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let _watcher = Watcher::start(dir.path(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let wait_for_more_than = |n: usize| {
            let started = Instant::now();
            while seen.load(Ordering::SeqCst) <= n {
                assert!(started.elapsed() < Duration::from_secs(5), "no event");
                std::thread::sleep(Duration::from_millis(5));
            }
            seen.load(Ordering::SeqCst)
        };
        std::fs::write(dir.path().join("f"), "x").unwrap_or_else(|e| panic!("{e}"));
        let n = wait_for_more_than(0);
        std::fs::create_dir(dir.path().join("d")).unwrap_or_else(|e| panic!("{e}"));
        let n = wait_for_more_than(n);
        // A directory made after the watch began is watched too.
        std::thread::sleep(Duration::from_millis(50));
        let n = seen.load(Ordering::SeqCst).max(n);
        std::fs::write(dir.path().join("d/g"), "y").unwrap_or_else(|e| panic!("{e}"));
        wait_for_more_than(n);
    }
}
