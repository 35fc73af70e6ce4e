//! Applying a [`Change`] to a directory on this machine. Nothing outside the root is ever
//! touched: paths cannot climb (they are [`RelPath`]s), every directory on the way must be a
//! real directory (a symlink there is refused, so nothing is written through it), and a symlink
//! is made only if its target stays inside. The change lands only if the disk still holds what
//! it was planned against; files are written to a temporary name beside their place and renamed
//! over it, so nobody ever sees half a file; content is checked against its digest first.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::filter::{Filter, TEMP_PREFIX};
use crate::parallel;
use crate::path::RelPath;
use crate::reconcile::Change;
use crate::scan::{ScanError, Scanner, digest_bytes, stays_inside};
use crate::tree::{Digest, Entry};

/// Where a file's content comes from: the other side.
pub trait Source {
    /// The bytes of the file the other side holds at `path`, which should have `digest`.
    fn content(&mut self, path: &RelPath, digest: &Digest) -> std::io::Result<Vec<u8>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The disk no longer holds what the change was planned against: nothing was changed
    /// there; the next cycle plans again.
    #[error("{0} changed since the plan was made")]
    Stale(RelPath),
    #[error("refused to write {path}: {why}")]
    Unsafe { path: RelPath, why: String },
    #[error("the content for {0} does not match its digest (it changed on the other side)")]
    Content(RelPath),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Scan(#[from] ScanError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the disk at `change.path` hold `change.desired`, if it still holds `change.expected`.
pub fn apply(
    scanner: &mut Scanner,
    filter: &Filter,
    change: &Change,
    source: &mut dyn Source,
) -> Result<(), ApplyError> {
    let root = scanner.root().to_path_buf();
    let path = &change.path;
    if !parents_are_directories(&root, path)? {
        // Its directory is gone (or is a file now): the sides changed since the plan.
        return Err(ApplyError::Stale(path.clone()));
    }
    let current = scanner.scan_subtree(path, filter)?;
    if current != change.expected {
        return Err(ApplyError::Stale(path.clone()));
    }
    let current: BTreeMap<RelPath, Entry> = current.into_iter().collect();
    let desired: BTreeMap<&RelPath, &Entry> = change.desired.iter().map(|(p, e)| (p, e)).collect();

    // Remove what goes or changes kind, deepest first. A file whose content changes is not
    // removed: its new content is renamed over it.
    for (p, entry) in current.iter().rev() {
        let keep = match desired.get(p) {
            Some(Entry::Dir) => entry.is_dir(),
            Some(Entry::File { .. }) => matches!(entry, Entry::File { .. }),
            Some(wanted) => *wanted == entry,
            None => false,
        };
        if keep {
            continue;
        }
        let full = root.join(p.as_str());
        if entry.is_dir() {
            fs::remove_dir(&full).map_err(io(&full))?;
        } else {
            fs::remove_file(&full).map_err(io(&full))?;
        }
    }

    // Then make what is wanted, parents first; new files last, on several threads if there
    // are many (nothing is beneath a file, so nothing waits for one).
    let mut new_files = Vec::new();
    for (p, wanted) in &change.desired {
        if !p.is_within(path) {
            return Err(ApplyError::Unsafe {
                path: p.clone(),
                why: format!("it is outside the change at {path}"),
            });
        }
        let full = root.join(p.as_str());
        let before = current.get(p);
        match wanted {
            Entry::Dir => {
                if !before.is_some_and(Entry::is_dir) {
                    fs::create_dir(&full).map_err(io(&full))?;
                }
            }
            Entry::Symlink { target } => {
                if before == Some(wanted) {
                    continue;
                }
                if !stays_inside(p, target) {
                    return Err(ApplyError::Unsafe {
                        path: p.clone(),
                        why: format!("a symlink to {target} would lead outside the root"),
                    });
                }
                std::os::unix::fs::symlink(target, &full).map_err(io(&full))?;
            }
            Entry::File {
                digest, executable, ..
            } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                match before {
                    Some(Entry::File { digest: had, .. }) if had == digest => {
                        // Same content: only the executable bit changes.
                        fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                            .map_err(io(&full))?;
                    }
                    Some(had @ Entry::File { .. }) => {
                        let file = content_of(source, p, full, *digest, mode)?;
                        // The file may have been edited since it was scanned: look again just
                        // before replacing it.
                        if scanner.scan_subtree(p, filter)? != vec![(p.clone(), had.clone())] {
                            return Err(ApplyError::Stale(p.clone()));
                        }
                        if let Some(written) = file.write()? {
                            scanner.written(p, &written, *digest);
                        }
                    }
                    _ => new_files.push(content_of(source, p, full, *digest, mode)?),
                }
            }
        }
    }
    let bytes = new_files.iter().map(|file| file.bytes.len() as u64).sum();
    let threads = parallel::threads_for(new_files.len(), bytes);
    let written = parallel::map(&new_files, threads, "nexus-sync-write", NewFile::write);
    for (file, written) in new_files.iter().zip(written) {
        if let Some(written) = written? {
            scanner.written(&file.path, &written, file.digest);
        }
    }
    Ok(())
}

/// A file's new content, checked against its digest, and where it goes.
struct NewFile {
    path: RelPath,
    full: PathBuf,
    bytes: Vec<u8>,
    digest: Digest,
    mode: u32,
}

impl NewFile {
    /// Writes the file into place ([`write_atomically`]) after checking its content.
    fn write(&self) -> Result<Option<fs::Metadata>, ApplyError> {
        if digest_bytes(&self.bytes) != self.digest {
            return Err(ApplyError::Content(self.path.clone()));
        }
        write_atomically(&self.full, &self.bytes, self.mode)
    }
}

/// The content `source` has for the file at `path`, which should have `digest`.
fn content_of(
    source: &mut dyn Source,
    path: &RelPath,
    full: PathBuf,
    digest: Digest,
    mode: u32,
) -> Result<NewFile, ApplyError> {
    let bytes = source.content(path, &digest).map_err(|error| {
        // Content that cannot be rebuilt (a delta against a version that changed meanwhile)
        // is a stale change, not a broken side.
        if error.kind() == std::io::ErrorKind::InvalidData {
            ApplyError::Content(path.clone())
        } else {
            ApplyError::Io {
                path: full.clone(),
                source: error,
            }
        }
    })?;
    Ok(NewFile {
        path: path.clone(),
        full,
        bytes,
        digest,
        mode,
    })
}

/// Whether every directory above `path` is a real directory (not a symlink, not missing).
pub(crate) fn parents_are_directories(root: &Path, path: &RelPath) -> Result<bool, ApplyError> {
    let mut parents = Vec::new();
    let mut next = path.parent();
    while let Some(parent) = next {
        next = parent.parent();
        parents.push(parent);
    }
    for parent in parents.iter().rev() {
        let full = root.join(parent.as_str());
        match fs::symlink_metadata(&full) {
            Ok(metadata) if metadata.file_type().is_dir() => {}
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(ApplyError::Unsafe {
                    path: path.clone(),
                    why: format!("{parent} is a symlink, and nothing is written through one"),
                });
            }
            Ok(_) => return Ok(false),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(ApplyError::Io { path: full, source }),
        }
    }
    Ok(true)
}

/// Writes `bytes` to a temporary file beside `target` and renames it into place; answers the
/// file's metadata as written and renamed (the rename moves its change time), or `None` if its
/// size or modification time moved once it was reachable at `target` (someone wrote it
/// meanwhile: the next scan reads it).
fn write_atomically(
    target: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<Option<fs::Metadata>, ApplyError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(|e| ApplyError::Io {
        path: target.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let temp = parent.join(format!("{TEMP_PREFIX}{name}"));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        // Its modification time a nanosecond (a tick, once the file system rounds it) before
        // the write's: no later write can leave the same stamp, so the scanner may trust the
        // digest it is told at once (`Scanner::written`).
        let wrote = file.metadata()?.modified()?;
        if let Some(before) = wrote.checked_sub(Duration::from_nanos(1)) {
            file.set_modified(before)?;
        }
        let written = file.metadata()?;
        fs::rename(&temp, target)?;
        let renamed = file.metadata()?;
        let same = |m: &fs::Metadata| (m.len(), m.modified().ok());
        Ok((same(&written) == same(&renamed)).then_some(renamed))
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&temp);
        ApplyError::Io {
            path: target.to_path_buf(),
            source,
        }
    })
}

/// Content read from another directory on this machine (tests, and local-to-local sessions).
#[derive(Debug)]
pub struct DirectorySource {
    root: PathBuf,
}

impl DirectorySource {
    pub fn new(root: impl Into<PathBuf>) -> DirectorySource {
        DirectorySource { root: root.into() }
    }
}

impl Source for DirectorySource {
    fn content(&mut self, path: &RelPath, _digest: &Digest) -> std::io::Result<Vec<u8>> {
        fs::read(self.root.join(path.as_str()))
    }
}
