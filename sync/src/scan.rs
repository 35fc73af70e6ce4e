//! Reading one side's directory into a [`Tree`]: every file's SHA-256 (kept between scans and
//! reused while the file's size, modification and change times and inode stay the same; the
//! change time because a tool may put the old modification time back, and no one can set it),
//! directories, and symlinks whose targets stay inside the root. What cannot be synced safely is
//! left out and said: symlinks that escape, names that are not UTF-8, sockets and devices. A
//! file that changes while it is read fails the scan (the caller scans again a moment later)
//! rather than being left out, which the other side would take for a deletion.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::filter::Filter;
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
}

/// How many times a file that changes while read is read again before the scan gives up.
const READ_ATTEMPTS: usize = 3;

/// Scans one root again and again, hashing only what changed.
#[derive(Debug)]
pub struct Scanner {
    root: PathBuf,
    digests: BTreeMap<RelPath, (Stamp, Digest)>,
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
        Scanner {
            root: root.into(),
            digests: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remembers the digest of a file this process has just written at `path` (`metadata` is
    /// the written file's, taken before anyone else could reach it), so that the next scan
    /// does not read it again to learn what it already knows.
    pub fn written(&mut self, path: &RelPath, metadata: &fs::Metadata, digest: Digest) {
        self.digests
            .insert(path.clone(), (Stamp::of(metadata), digest));
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
        let mut scan = Scan::default();
        let mut seen = BTreeMap::new();
        self.walk_dir(None, filter, &mut scan, &mut seen)?;
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
        let mut scan = Scan::default();
        let mut seen = BTreeMap::new();
        let full = self.root.join(path.as_str());
        match fs::symlink_metadata(&full) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => return Err(ScanError::Io { path: full, source }),
            Ok(metadata) => self.visit(path.clone(), &metadata, filter, &mut scan, &mut seen)?,
        }
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
        scan: &mut Scan,
        seen: &mut BTreeMap<RelPath, (Stamp, Digest)>,
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
                scan.refused.push(Refused {
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
                    scan.refused.push(Refused {
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
            self.visit(path, &metadata, filter, scan, seen)?;
        }
        Ok(())
    }

    fn visit(
        &mut self,
        path: RelPath,
        metadata: &fs::Metadata,
        filter: &Filter,
        scan: &mut Scan,
        seen: &mut BTreeMap<RelPath, (Stamp, Digest)>,
    ) -> Result<(), ScanError> {
        let kind = metadata.file_type();
        if filter.ignored(&path, kind.is_dir()) {
            return Ok(());
        }
        let full = self.root.join(path.as_str());
        if kind.is_dir() {
            scan.tree.insert(path.clone(), Entry::Dir);
            return self.walk_dir(Some(&path), filter, scan, seen);
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
        let (stamp, digest) = match self.digests.get(&path) {
            Some((cached, digest)) if *cached == stamp => (stamp, *digest),
            _ => {
                scan.hashed += 1;
                self.read_digest(&path, &full)?
            }
        };
        seen.insert(path.clone(), (stamp, digest));
        scan.tree.insert(
            path,
            Entry::File {
                digest,
                size: stamp.size,
                executable,
            },
        );
        Ok(())
    }

    /// Hashes the file, again if it changed meanwhile.
    fn read_digest(&self, path: &RelPath, full: &Path) -> Result<(Stamp, Digest), ScanError> {
        let io = |source| ScanError::Io {
            path: full.to_path_buf(),
            source,
        };
        for _ in 0..READ_ATTEMPTS {
            let mut file = fs::File::open(full).map_err(io)?;
            let before = Stamp::of(&file.metadata().map_err(io)?);
            let digest = digest_of(&mut file).map_err(io)?;
            let after = Stamp::of(&fs::symlink_metadata(full).map_err(io)?);
            if before == after {
                return Ok((after, digest));
            }
        }
        Err(ScanError::Busy(path.clone()))
    }
}

/// SHA-256 of everything `reader` yields.
pub fn digest_of(reader: &mut impl Read) -> std::io::Result<Digest> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0; 256 << 10];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        context.update(&buffer[..read]);
    }
    let mut digest = [0; 32];
    digest.copy_from_slice(context.finish().as_ref());
    Ok(Digest(digest))
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
