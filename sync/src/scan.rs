//! Reading one side's directory into a [`Tree`]: every file's SHA-256 (kept between scans and
//! reused while the file's size, modification and change times and inode stay the same; the
//! change time because a tool may put the old modification time back, and no one can set it),
//! directories, and symlinks whose targets stay inside the root. What cannot be synced safely is
//! left out and said: symlinks that escape, names that are not UTF-8, sockets and devices. A
//! file that changes while it is read fails the scan (the caller scans again a moment later)
//! rather than being left out, which the other side would take for a deletion.
//!
//! A digest read within its file's timestamp tick is not reused ("racily clean", as Git calls
//! it): a second write of the same size in the same tick would leave the same stamp, and the
//! scanner would keep the first content for good. Such a file is read again at every scan until
//! a read begins after its tick; a file whose modification time lies before its change time
//! (put back by a tool, or by [`crate::local`] on each file it writes) is safe at once, since
//! any later write sets the modification time to the clock, past that change time.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::filter::Filter;
use crate::parallel;
use crate::path::RelPath;
use crate::tree::{Digest, Entry, Tree};

/// A path left out of a scan, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub path: String,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("the sync root {0} is not a directory")]
    Root(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} kept changing while it was read; scan again")]
    Busy(RelPath),
}

/// What a file looked like when its digest was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    inode: u64,
}

impl Stamp {
    fn of(metadata: &fs::Metadata) -> Stamp {
        Stamp {
            size: metadata.len(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
        }
    }

    /// Whether a digest whose read began at `read_from` holds for as long as the file keeps this
    /// stamp: its modification time lies before its change time (any later write moves the
    /// modification time to the clock, past it), or the read began at least a `tick` (two
    /// seconds where the times have no nanoseconds, unless `tick` is zero) after the change.
    fn settled(&self, read_from: SystemTime, tick: Duration) -> bool {
        if self.mtime < self.ctime {
            return true;
        }
        let (seconds, nanos) = self.ctime;
        let (Ok(seconds), Ok(nanos)) = (u64::try_from(seconds), u32::try_from(nanos)) else {
            return true;
        };
        let tick = if nanos == 0 && self.mtime.1 == 0 && !tick.is_zero() {
            tick.max(COARSE_TICK)
        } else {
            tick
        };
        let changed = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos);
        read_from
            .duration_since(changed)
            .is_ok_and(|since| since >= tick)
    }
}

/// How long after a change a file's times may stay the same through another write: the file
/// system's timestamp tick (the kernel's coarse clock, a jiffy of at most 10 ms, where times
/// carry nanoseconds), with room for a busy machine.
pub const TICK: Duration = Duration::from_millis(100);

/// The tick of a file system whose times are whole seconds (and FAT's two).
const COARSE_TICK: Duration = Duration::from_secs(2);

/// The wall clock, to set against the file system's times. (The house reads it through
/// `nexus_protocol::clock`; this crate depends on no Nexus crate, and only this reads it.)
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// A file's digest, as the cache keeps it.
#[derive(Debug, Clone, Copy)]
struct Cached {
    stamp: Stamp,
    digest: Digest,
    /// Whether the digest may be reused while the stamp is unchanged ([`Stamp::settled`]).
    settled: bool,
}

/// What a walk of the disk gathers: the scan so far, the digests it found still good, and the
/// files it must read (hashed once the walk is done, on several threads if there are many).
#[derive(Default)]
struct Walk {
    scan: Scan,
    seen: BTreeMap<RelPath, Cached>,
    pending: Vec<Unread>,
}

/// A file whose digest a walk could not take from the cache.
struct Unread {
    path: RelPath,
    full: PathBuf,
    size: u64,
    executable: bool,
}

/// Takes a file and its digest into `scan`, and the digest into `seen`.
fn found(
    scan: &mut Scan,
    seen: &mut BTreeMap<RelPath, Cached>,
    path: RelPath,
    cached: Cached,
    executable: bool,
) {
    seen.insert(path.clone(), cached);
    scan.tree.insert(
        path,
        Entry::File {
            digest: cached.digest,
            size: cached.stamp.size,
            executable,
        },
    );
}

/// How many times a file that changes while read is read again before the scan gives up.
const READ_ATTEMPTS: usize = 3;

/// Scans one root again and again, hashing only what changed.
#[derive(Debug)]
pub struct Scanner {
    root: PathBuf,
    digests: BTreeMap<RelPath, Cached>,
    tick: Duration,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub tree: Tree,
    pub refused: Vec<Refused>,
    /// Files whose content was read (not taken from the cache).
    pub hashed: usize,
}

impl Scanner {
    pub fn new(root: impl Into<PathBuf>) -> Scanner {
        Scanner::with_tick(root, TICK)
    }

    /// A scanner that takes the file system's timestamp tick to be `tick` (tests: an hour to
    /// see every file as just written, zero to trust every digest as scanners once did).
    pub fn with_tick(root: impl Into<PathBuf>, tick: Duration) -> Scanner {
        Scanner {
            root: root.into(),
            digests: BTreeMap::new(),
            tick,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remembers the digest of a file this process has just written at `path` (`metadata` is
    /// the written file's, taken before anyone else could reach it), so that the next scan
    /// does not read it again to learn what it already knows: if its modification time was put
    /// before the write's, as [`crate::local`] does; otherwise the next scan reads it.
    pub fn written(&mut self, path: &RelPath, metadata: &fs::Metadata, digest: Digest) {
        let stamp = Stamp::of(metadata);
        let settled = stamp.settled(wall_clock(), self.tick);
        self.digests.insert(
            path.clone(),
            Cached {
                stamp,
                digest,
                settled,
            },
        );
    }

    /// Takes the digests `other` learned (newer than this one's) into this scanner.
    pub fn absorb(&mut self, other: Scanner) {
        self.digests.extend(other.digests);
    }

    /// The whole root.
    pub fn scan(&mut self, filter: &Filter) -> Result<Scan, ScanError> {
        let metadata = fs::metadata(&self.root).map_err(|_| ScanError::Root(self.root.clone()))?;
        if !metadata.is_dir() {
            return Err(ScanError::Root(self.root.clone()));
        }
        let mut walk = Walk::default();
        self.walk_dir(None, filter, &mut walk)?;
        let (scan, seen) = self.finish(walk)?;
        // Forget the digests of files that are gone.
        self.digests = seen;
        Ok(scan)
    }

    /// `path` and what is beneath it, as the disk holds it now (for checking a change's
    /// expectation just before applying it).
    pub fn scan_subtree(
        &mut self,
        path: &RelPath,
        filter: &Filter,
    ) -> Result<Vec<(RelPath, Entry)>, ScanError> {
        let mut walk = Walk::default();
        let full = self.root.join(path.as_str());
        match fs::symlink_metadata(&full) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => return Err(ScanError::Io { path: full, source }),
            Ok(metadata) => self.visit(path.clone(), &metadata, filter, &mut walk)?,
        }
        let (scan, seen) = self.finish(walk)?;
        self.digests.extend(seen);
        Ok(scan
            .tree
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect())
    }

    fn walk_dir(
        &mut self,
        dir: Option<&RelPath>,
        filter: &Filter,
        walk: &mut Walk,
    ) -> Result<(), ScanError> {
        let full = dir.map_or_else(|| self.root.clone(), |d| self.root.join(d.as_str()));
        let io = |source| ScanError::Io {
            path: full.clone(),
            source,
        };
        let items = match fs::read_dir(&full) {
            Ok(items) => items,
            // A directory removed since its parent was listed.
            Err(error) if dir.is_some() && error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(error) => return Err(io(error)),
        };
        for item in items {
            let item = item.map_err(io)?;
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                walk.scan.refused.push(Refused {
                    path: format!("{}/{}", full.display(), name.to_string_lossy()),
                    why: "its name is not UTF-8".into(),
                });
                continue;
            };
            let path = match dir {
                Some(dir) => dir.join(name),
                None => RelPath::new(name),
            };
            let path = match path {
                Ok(path) => path,
                Err(error) => {
                    walk.scan.refused.push(Refused {
                        path: name.to_string(),
                        why: error.to_string(),
                    });
                    continue;
                }
            };
            let metadata = match fs::symlink_metadata(item.path()) {
                Ok(metadata) => metadata,
                // Listed, then gone (a temporary file renamed into place, a directory removed):
                // it is not there any more, and its removal is an event of its own.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ScanError::Io {
                        path: item.path(),
                        source,
                    });
                }
            };
            self.visit(path, &metadata, filter, walk)?;
        }
        Ok(())
    }

    fn visit(
        &mut self,
        path: RelPath,
        metadata: &fs::Metadata,
        filter: &Filter,
        walk: &mut Walk,
    ) -> Result<(), ScanError> {
        let scan = &mut walk.scan;
        let kind = metadata.file_type();
        if filter.ignored(&path, kind.is_dir()) {
            return Ok(());
        }
        let full = self.root.join(path.as_str());
        if kind.is_dir() {
            scan.tree.insert(path.clone(), Entry::Dir);
            return self.walk_dir(Some(&path), filter, walk);
        }
        if kind.is_symlink() {
            let target = fs::read_link(&full).map_err(|source| ScanError::Io {
                path: full.clone(),
                source,
            })?;
            match target.to_str() {
                Some(target) if stays_inside(&path, target) => {
                    scan.tree.insert(
                        path,
                        Entry::Symlink {
                            target: target.to_string(),
                        },
                    );
                }
                _ => scan.refused.push(Refused {
                    path: path.to_string(),
                    why: format!("a symlink to {} leads outside the root", target.display()),
                }),
            }
            return Ok(());
        }
        if !kind.is_file() {
            scan.refused.push(Refused {
                path: path.to_string(),
                why: "not a file, directory or symlink".into(),
            });
            return Ok(());
        }
        let executable = metadata.mode() & 0o111 != 0;
        let stamp = Stamp::of(metadata);
        match self.digests.get(&path) {
            Some(cached) if cached.settled && cached.stamp == stamp => {
                found(scan, &mut walk.seen, path, *cached, executable);
            }
            _ => walk.pending.push(Unread {
                path,
                full,
                size: stamp.size,
                executable,
            }),
        }
        Ok(())
    }

    /// A walk's scan and the digests it holds, once the files it found changed or new are read.
    fn finish(&self, walk: Walk) -> Result<(Scan, BTreeMap<RelPath, Cached>), ScanError> {
        let Walk {
            mut scan,
            mut seen,
            pending,
        } = walk;
        let digests = self.read_digests(&pending);
        for (file, cached) in pending.into_iter().zip(digests) {
            scan.hashed += 1;
            found(&mut scan, &mut seen, file.path, cached?, file.executable);
        }
        Ok((scan, seen))
    }

    /// Each file's digest, in order: on several threads when there is enough to read (a
    /// scan's hashing on one core was a fifth of an initial sync's time, the other idle).
    fn read_digests(&self, files: &[Unread]) -> Vec<Result<Cached, ScanError>> {
        let bytes = files.iter().map(|file| file.size).sum();
        let threads = parallel::threads_for(files.len(), bytes);
        parallel::map(files, threads, "nexus-sync-hash", |file| {
            self.read_digest(&file.path, &file.full)
        })
    }

    /// Whether `digest` is the content of the file at `path` that was read while it had the
    /// metadata `before` (of the open file, before the read) and `after` (of the path, after
    /// it), as this scanner knows without hashing it: it took `digest` from the file under
    /// that very stamp, and may reuse it ([`Stamp::settled`]). A scan would report `digest`
    /// for it without reading it, so a side may send the bytes it read as that version.
    pub fn knows(
        &self,
        path: &RelPath,
        before: &fs::Metadata,
        after: &fs::Metadata,
        digest: &Digest,
    ) -> bool {
        let stamp = Stamp::of(before);
        stamp == Stamp::of(after)
            && self.digests.get(path).is_some_and(|cached| {
                cached.settled && cached.stamp == stamp && cached.digest == *digest
            })
    }

    /// Hashes the file, again if it changed meanwhile.
    fn read_digest(&self, path: &RelPath, full: &Path) -> Result<Cached, ScanError> {
        let io = |source| ScanError::Io {
            path: full.to_path_buf(),
            source,
        };
        for _ in 0..READ_ATTEMPTS {
            let read_from = wall_clock();
            let mut file = fs::File::open(full).map_err(io)?;
            let before = Stamp::of(&file.metadata().map_err(io)?);
            let digest = digest_of(&mut file).map_err(io)?;
            let after = Stamp::of(&fs::symlink_metadata(full).map_err(io)?);
            if before == after {
                return Ok(Cached {
                    stamp: after,
                    digest,
                    settled: after.settled(read_from, self.tick),
                });
            }
        }
        Err(ScanError::Busy(path.clone()))
    }
}

/// SHA-256 of everything `reader` yields, read through the standard library's copy (a buffer
/// on the stack, never zeroed): a buffer allocated for each file cost every file of an initial
/// sync a quarter of a megabyte of page faults and zeroing, on both sides.
pub fn digest_of(reader: &mut impl Read) -> std::io::Result<Digest> {
    let mut hashing = Hashing(ring::digest::Context::new(&ring::digest::SHA256));
    std::io::copy(reader, &mut hashing)?;
    Ok(finished(&hashing.0.finish()))
}

/// SHA-256 of `bytes`, in memory.
pub fn digest_bytes(bytes: &[u8]) -> Digest {
    finished(&ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn finished(digest: &ring::digest::Digest) -> Digest {
    let mut bytes = [0; 32];
    bytes.copy_from_slice(digest.as_ref());
    Digest(bytes)
}

/// A writer that hashes what it is given.
struct Hashing(ring::digest::Context);

impl std::io::Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a symlink at `link` pointing to `target` resolves inside the root (following only
/// the target's own components; a link through another link is checked when that one is).
pub fn stays_inside(link: &RelPath, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth = link.depth() - 1;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(mtime: (i64, i64), ctime: (i64, i64)) -> Stamp {
        Stamp {
            size: 6,
            mtime,
            ctime,
            inode: 1,
        }
    }

    fn at(seconds: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos)
    }

    #[test]
    fn a_digest_holds_once_read_a_tick_after_the_change() {
        let written = stamp((1_000, 5_000_000), (1_000, 5_000_000));
        // Read in the same tick, or just before its end: another write may leave this stamp.
        assert!(!written.settled(at(1_000, 5_000_000), TICK));
        assert!(!written.settled(at(1_000, 104_999_999), TICK));
        // Read a tick after the change, or later.
        assert!(written.settled(at(1_000, 105_000_000), TICK));
        assert!(written.settled(at(2_000, 0), TICK));
        // Read before the change (a clock stepped back): not trusted.
        assert!(!written.settled(at(999, 0), TICK));
    }

    #[test]
    fn times_of_whole_seconds_wait_out_a_coarse_tick() {
        let written = stamp((1_000, 0), (1_000, 0));
        assert!(!written.settled(at(1_001, 999_999_999), TICK));
        assert!(written.settled(at(1_002, 0), TICK));
        // A tick of zero trusts every read (a test's scanner).
        assert!(written.settled(at(1_000, 0), Duration::ZERO));
        // Nanoseconds in the times: the file system keeps them.
        let fine = stamp((1_000, 1), (1_000, 1));
        assert!(!fine.settled(at(1_000, 100_000_000), TICK));
        assert!(fine.settled(at(1_000, 100_000_001), TICK));
    }

    #[test]
    fn a_modification_time_before_the_change_holds_at_once() {
        // Put back by a tool, or a nanosecond before the write by `local`'s own writes.
        let backdated = stamp((1_000, 4_999_999), (1_000, 5_000_000));
        assert!(backdated.settled(at(1_000, 5_000_000), TICK));
        // A modification time after the change time (a clock stepped back) proves nothing.
        let ahead = stamp((1_000, 6_000_000), (1_000, 5_000_000));
        assert!(!ahead.settled(at(1_000, 5_000_000), TICK));
    }

    #[test]
    fn times_before_the_epoch_are_trusted_as_long_settled() {
        assert!(stamp((-5, 0), (-5, 0)).settled(at(0, 0), TICK));
    }
}
