//! Private files written whole: what the backups and the store's snapshots share. A file is
//! written to a temporary name, synced, renamed over its path, and its directory synced, so a
//! reader (or a restart after a crash) finds the whole old file or the whole new one; files are
//! 0600 and their directories 0700 (a backup and a snapshot are the fleet's whole state, sealed
//! secrets with it).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

/// Whether a write waits for the disk ([`write_atomically`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// The file and its directory are synced before the write returns.
    Synced,
    /// Left to the operating system (simulation).
    Unsynced,
}

/// Writes `bytes` to `temporary` (0600), syncs it, renames it to `path` and syncs the directory
/// (with [`Sync::Synced`]). A failure leaves no temporary file behind.
pub fn write_atomically(
    temporary: &Path,
    path: &Path,
    bytes: &[u8],
    sync: Sync,
) -> std::io::Result<()> {
    let result = (|| {
        let mut file = private_file(temporary)?;
        file.write_all(bytes)?;
        if sync == Sync::Synced {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(temporary, path)?;
        if sync == Sync::Unsynced {
            return Ok(());
        }
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
            _ => sync_dir(Path::new(".")),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(temporary);
    }
    result
}

/// A new file, readable by its owner only, replacing any earlier one at `path`.
pub fn private_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    set_mode(path, 0o600)?;
    Ok(file)
}

/// Makes `dir` (and its parents) if missing, and makes it its owner's only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Sets a file's or directory's permission bits (Unix only).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Syncs a directory: its entries (a rename, a new or removed file) reach the disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::{Sync, write_atomically};

    #[test]
    fn a_file_is_replaced_whole_and_is_its_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        for sync in [Sync::Synced, Sync::Unsynced] {
            let path = dir.path().join(format!("{sync:?}"));
            let temporary = dir.path().join(format!("{sync:?}.tmp"));
            write_atomically(&temporary, &path, b"first", sync).unwrap();
            write_atomically(&temporary, &path, b"second", sync).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"second");
            assert!(!temporary.exists());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        // A failed write leaves no temporary file: here the rename's target is a directory.
        let target = dir.path().join("taken");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"x").unwrap();
        let temporary = dir.path().join("taken.tmp");
        assert!(write_atomically(&temporary, &target, b"x", Sync::Synced).is_err());
        assert!(!temporary.exists());
    }
}
