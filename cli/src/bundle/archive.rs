//! Writing a bundle: a gzipped tar, the one home of `tar` and `flate2`. Written beside its final
//! path and renamed into place once whole, readable by its owner only (it holds logs).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// A bundle being written.
pub struct Archive {
    builder: tar::Builder<GzEncoder<BufWriter<File>>>,
    partial: PathBuf,
    path: PathBuf,
    mtime: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("path", &self.path).finish()
    }
}

impl Archive {
    /// Starts `path` (as `path.partial` until [`Archive::finish`]); refuses to replace a file.
    pub fn create(path: &Path, mtime_secs: u64) -> io::Result<Archive> {
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let partial = path.with_extension("partial");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&partial)?;
        Ok(Archive {
            builder: tar::Builder::new(GzEncoder::new(
                BufWriter::new(file),
                Compression::default(),
            )),
            partial,
            path: path.to_path_buf(),
            mtime: mtime_secs,
        })
    }

    /// Adds one file under `name` (a relative path inside the bundle).
    pub fn add(&mut self, name: &str, content: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, format!("nexus-support/{name}"), content)
    }

    /// Ends the archive and moves it into place.
    pub fn finish(self) -> io::Result<PathBuf> {
        let encoder = self.builder.into_inner()?;
        let mut writer = encoder.finish()?;
        writer.flush()?;
        let file = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&self.partial, &self.path)?;
        Ok(self.path)
    }
}

/// Reads a bundle back: each file's name (inside `nexus-support/`) and content. For tests and
/// for checking a bundle before handing it over.
pub fn read(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let file = File::open(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut content = Vec::new();
        io::Read::read_to_end(&mut entry, &mut content)?;
        let name = name
            .strip_prefix("nexus-support/")
            .unwrap_or(&name)
            .to_string();
        files.push((name, content));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_added_reads_back_and_an_existing_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("b.tar.gz");
        let mut archive = Archive::create(&path, 1_700_000_000).unwrap_or_else(|e| panic!("{e}"));
        archive
            .add("manifest.json", b"{}")
            .unwrap_or_else(|e| panic!("{e}"));
        archive
            .add("agents/agent-a/logs.jsonl", b"line\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let written = archive.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(written, path);
        assert!(!path.with_extension("partial").exists());
        let files = read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            files,
            vec![
                ("manifest.json".to_string(), b"{}".to_vec()),
                ("agents/agent-a/logs.jsonl".to_string(), b"line\n".to_vec()),
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(Archive::create(&path, 0).is_err());
    }
}
