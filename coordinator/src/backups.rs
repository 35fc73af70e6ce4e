//! A coordinator's backup directory: backup files named `ID.nxbackup`, written atomically (a
//! temporary file, synced, renamed, the directory synced; 0600 in a 0700 directory: a backup is
//! the fleet's whole state), listed newest first, read whole and verified, read in pieces, and
//! pruned to the newest N. The file's format is `nexus_protocol::backup`; when a backup is made
//! and what goes in it is the service's business (`service::backups`).
//!
//! The pure parts are apart and tested by table: a backup's id from its time and index
//! ([`backup_id`]), whether a name is an id ([`is_backup_id`], the guard against a path in a
//! request), the order of ids ([`newest_first`]) and which to prune ([`to_prune`]).
//!
//! An uploaded backup (adopted from `backup upload`, to be restored) is marked `ID.uploaded`, and
//! for [`UPLOAD_SPARED`] after it came pruning neither deletes it nor counts it towards the
//! number kept: it is usually older than every backup the schedule made, so it would be the
//! first to go.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use nexus_protocol::NodeId;
use std::time::Duration;

use nexus_protocol::backup::{self, BackupError, BackupHeader, BackupInfo, BackupSchedule};
use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};

use crate::files::{Sync, private_dir, set_mode, sync_dir, write_atomically};
use crate::state::STATE_FORMAT;

/// The largest backup file a coordinator keeps or takes in: the state's snapshot is one local
/// frame (at most 4 GiB), plus room for the header and checksum.
pub const MAX_BACKUP_BYTES: u64 = nexus_protocol::codec::MAX_LOCAL_FRAME_LEN as u64 + (1 << 20);

/// The most bytes one `BackupRead` answers with.
pub const MAX_READ_BYTES: u32 = 4 << 20;

/// The id of a backup made at `created_at` of the state at `index`: its UTC time to the second,
/// then the index (`20261203T121500Z-i4521`), so that ids sort by time; `attempt` > 0 adds a
/// suffix for a second backup in the same second at the same index.
pub fn backup_id(created_at: Timestamp, index: u64, attempt: u32) -> String {
    let at = created_at.to_offset_date_time();
    let mut id = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-i{index}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if attempt > 0 {
        id.push_str(&format!("-{attempt}"));
    }
    id
}

/// Whether `name` is a backup id as [`backup_id`] makes them. Every id that arrives in a request
/// or a file's header is checked with it before it becomes part of a path.
pub fn is_backup_id(name: &str) -> bool {
    id_key(name).is_some()
}

/// An id's sort key: (time, index, attempt).
fn id_key(id: &str) -> Option<(&str, u64, u32)> {
    let (time, rest) = id.split_once("Z-i")?;
    let digits = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    let (date, clock) = time.split_once('T')?;
    if !digits(date, 8) || !digits(clock, 6) {
        return None;
    }
    let (index, attempt) = match rest.split_once('-') {
        Some((index, attempt)) => (index, Some(attempt)),
        None => (rest, None),
    };
    let number = |s: &str, most: usize| {
        (!s.is_empty() && s.len() <= most && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let index = number(index, 20)?;
    let attempt = match attempt {
        Some(attempt) => u32::try_from(number(attempt, 4)?).ok()?,
        None => 0,
    };
    Some((time, index, attempt))
}

/// Orders ids newest first (by time, then index, then attempt); names that are not ids last.
pub fn newest_first(a: &str, b: &str) -> Ordering {
    match (id_key(a), id_key(b)) {
        (Some(a), Some(b)) => b.cmp(&a),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// How long an uploaded backup is spared by pruning: a day to restore it.
pub const UPLOAD_SPARED: Duration = Duration::from_secs(24 * 3600);

/// The extension of an uploaded backup's marker, `ID.uploaded`: its modification time is when
/// the upload came.
const UPLOADED: &str = "uploaded";

/// Of the backups `ids`, those to delete so that the newest `keep` remain (at least one is
/// always kept); those `spared` (uploads just come) are neither deleted nor counted.
pub fn to_prune(ids: &[String], keep: u32, spared: &BTreeSet<String>) -> Vec<String> {
    let mut sorted: Vec<&String> = ids
        .iter()
        .filter(|id| is_backup_id(id) && !spared.contains(*id))
        .collect();
    sorted.sort_by(|a, b| newest_first(a, b));
    let keep = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
    sorted.into_iter().skip(keep).cloned().collect()
}

/// The longest schedule interval: a backup at least every 30 days.
pub const MAX_EVERY_SECS: u64 = 30 * 24 * 3600;
/// The most backups a schedule keeps.
pub const MAX_KEEP: u32 = 10_000;
/// Whether a schedule may be set: every_secs 0 (off) or between 1 s and [`MAX_EVERY_SECS`];
/// keep between 1 and [`MAX_KEEP`].
pub fn check_schedule(schedule: &BackupSchedule) -> Result<(), WireError> {
    if schedule.every_secs > MAX_EVERY_SECS {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!(
                "a backup interval is at most {MAX_EVERY_SECS} s (30 days), not {} s",
                schedule.every_secs
            ),
        ));
    }
    if schedule.keep == 0 || schedule.keep > MAX_KEEP {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!(
                "a schedule keeps between 1 and {MAX_KEEP} backups, not {}",
                schedule.keep
            ),
        ));
    }
    Ok(())
}

/// How long a new leader with no backup of its own waits before its first scheduled one (or the
/// schedule's interval, if shorter). A new leader may have just been elected after a failover or
/// a restore; encoding a large state at once holds its Raft thread for a second or more and can
/// cost it the leadership again (measured with `nexus-bench backup` at 250,000 workspaces).
pub const NEW_LEADER_GRACE: Duration = Duration::from_secs(60);

/// Whether a scheduled backup is due at `now`, the newest one in the directory having been made
/// at `last`. With none, it is due [`NEW_LEADER_GRACE`] (or one interval, if shorter) after this
/// node began leading, at `leading_since`.
pub fn backup_due(
    now: Timestamp,
    last: Option<Timestamp>,
    every_secs: u64,
    leading_since: Timestamp,
) -> bool {
    if every_secs == 0 {
        return false;
    }
    let every = Duration::from_secs(every_secs);
    match last {
        None => now.saturating_since(leading_since) >= every.min(NEW_LEADER_GRACE),
        Some(last) => now.saturating_since(last) >= every,
    }
}

/// A backup directory. Cheap to clone; nothing is opened until asked.
#[derive(Debug, Clone)]
pub struct BackupDir {
    dir: PathBuf,
    /// The node whose directory it is (where its backups are, in answers).
    node: NodeId,
}

/// A backup file read whole and checked.
#[derive(Debug, Clone)]
pub struct Verified {
    pub info: BackupInfo,
    pub bytes: Vec<u8>,
}

impl BackupDir {
    pub fn new(dir: impl Into<PathBuf>, node: NodeId) -> BackupDir {
        BackupDir {
            dir: dir.into(),
            node,
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where backup `id` lives (the id is checked by the caller).
    fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{}", backup::EXTENSION))
    }

    /// Creates the directory (0700) if it is missing.
    fn ensure(&self) -> std::io::Result<()> {
        private_dir(&self.dir)
    }

    /// An id for a backup at `created_at` and `index` that no file in the directory has yet.
    pub fn fresh_id(&self, created_at: Timestamp, index: u64) -> String {
        (0..10_000)
            .map(|attempt| backup_id(created_at, index, attempt))
            .find(|id| !self.file(id).exists())
            .unwrap_or_else(|| backup_id(created_at, index, 9_999))
    }

    /// Writes backup file `bytes` as backup `id`, atomically: a reader sees the whole file or
    /// none. Refuses to replace an existing backup.
    pub fn write(&self, id: &str, bytes: &[u8]) -> Result<(), WireError> {
        check_id(id)?;
        self.ensure().map_err(|e| self.io_error("create", &e))?;
        let path = self.file(id);
        if path.exists() {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("a backup {id} is already in {}", self.dir.display()),
            ));
        }
        let temporary = self.dir.join(format!(".{id}.{}.tmp", backup::EXTENSION));
        write_atomically(&temporary, &path, bytes, Sync::Synced)
            .map_err(|e| self.io_error("write", &e))
    }

    /// Moves a complete file (an upload, already checked) in as backup `id`.
    pub fn adopt(&self, id: &str, from: &Path) -> Result<(), WireError> {
        check_id(id)?;
        let path = self.file(id);
        if path.exists() {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("a backup {id} is already in {}", self.dir.display()),
            ));
        }
        let result = (|| {
            set_mode(from, 0o600)?;
            fs::rename(from, &path)?;
            File::create(self.marker(id))?;
            sync_dir(&self.dir)
        })();
        result.map_err(|e| self.io_error("keep", &e))
    }

    /// Where backup `id`'s upload marker lives (the id is checked by the caller).
    fn marker(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{UPLOADED}"))
    }

    /// The uploaded backups that pruning spares at `now`, and the markers that have lapsed
    /// (their upload older than [`UPLOAD_SPARED`], or their backup gone).
    fn uploads(&self, now: Timestamp) -> (BTreeSet<String>, Vec<PathBuf>) {
        let mut spared = BTreeSet::new();
        let mut lapsed = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (spared, lapsed);
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(&format!(".{UPLOADED}")))
                .filter(|id| is_backup_id(id))
            else {
                continue;
            };
            let came = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|came| came.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|came| Timestamp::from_millis(u64::try_from(came.as_millis()).unwrap_or(0)));
            let fresh = came.is_some_and(|came| came.saturating_add(UPLOAD_SPARED) > now);
            if fresh && self.file(id).exists() {
                spared.insert(id.to_string());
            } else {
                lapsed.push(entry.path());
            }
        }
        (spared, lapsed)
    }

    /// Where a temporary upload `name` is written, in the directory (so the final rename is
    /// atomic); the directory is created if needed.
    pub fn upload_path(&self, name: &str) -> Result<PathBuf, WireError> {
        self.ensure().map_err(|e| self.io_error("create", &e))?;
        Ok(self.dir.join(format!(".upload-{name}.tmp")))
    }

    /// Removes the temporary files (a backup being written, an upload) that a process stopped
    /// midway left in the directory. Call it before anything writes there.
    pub fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Backup `id` read whole and checked (its checksum, its format against this build's).
    pub fn verify(&self, id: &str) -> Result<Verified, WireError> {
        check_id(id)?;
        let path = self.file(id);
        let bytes = fs::read(&path).map_err(|e| self.not_found_or(id, &e))?;
        let decoded = backup::decode(&bytes, STATE_FORMAT).map_err(|e| refusal(id, &e))?;
        let info = BackupInfo {
            header: decoded.header,
            size_bytes: bytes.len() as u64,
            sha256: decoded.sha256,
            location: self.node,
            verified: Some(true),
        };
        Ok(Verified { info, bytes })
    }

    /// Up to `len` bytes of backup `id` from `offset` (none at or past the end).
    pub fn read_range(&self, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, WireError> {
        check_id(id)?;
        let len = len.min(MAX_READ_BYTES);
        let mut file = File::open(self.file(id)).map_err(|e| self.not_found_or(id, &e))?;
        let size = file
            .metadata()
            .map_err(|e| self.io_error("read", &e))?
            .len();
        if offset >= size {
            return Ok(Vec::new());
        }
        let want = (size - offset).min(u64::from(len));
        let mut bytes = vec![0; usize::try_from(want).unwrap_or(0)];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| self.io_error("read", &e))?;
        Ok(bytes)
    }

    /// Every backup in the directory, newest first: its header as the file says (not checked:
    /// `verified` is `None`), its size and its stored checksum. A file whose header cannot be
    /// read is listed with `verified: Some(false)` and what its name says, never hidden.
    pub fn list(&self) -> Result<Vec<BackupInfo>, WireError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(self.io_error("list", &error)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io_error("list", &e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(&format!(".{}", backup::EXTENSION)))
            else {
                continue;
            };
            if is_backup_id(id) {
                ids.push(id.to_string());
            }
        }
        ids.sort_by(|a, b| newest_first(a, b));
        Ok(ids.iter().map(|id| self.peek(id)).collect())
    }

    /// The ids of the backups in the directory, newest first.
    pub fn ids(&self) -> Result<Vec<String>, WireError> {
        Ok(self
            .list()?
            .into_iter()
            .map(|info| info.header.id)
            .collect())
    }

    /// Deletes all but the newest `keep` backups, sparing uploads younger than
    /// [`UPLOAD_SPARED`]; returns the ids deleted.
    pub fn prune(&self, keep: u32) -> Result<Vec<String>, WireError> {
        self.prune_at(keep, nexus_protocol::clock::now())
    }

    /// [`BackupDir::prune`] as of `now`.
    fn prune_at(&self, keep: u32, now: Timestamp) -> Result<Vec<String>, WireError> {
        let (spared, lapsed) = self.uploads(now);
        let doomed = to_prune(&self.ids()?, keep, &spared);
        for id in &doomed {
            fs::remove_file(self.file(id)).map_err(|e| self.io_error("prune", &e))?;
        }
        for marker in &lapsed {
            let _ = fs::remove_file(marker);
        }
        if !doomed.is_empty() || !lapsed.is_empty() {
            sync_dir(&self.dir).map_err(|e| self.io_error("prune", &e))?;
        }
        Ok(doomed)
    }

    /// One backup as a listing shows it.
    fn peek(&self, id: &str) -> BackupInfo {
        let damaged = |size_bytes: u64| BackupInfo {
            header: BackupHeader {
                id: id.to_string(),
                cluster: String::new(),
                node: self.node,
                index: 0,
                term: 0,
                created_at: Timestamp::EPOCH,
                software: String::new(),
                state_format: 0,
                counts: Vec::new(),
            },
            size_bytes,
            sha256: String::new(),
            location: self.node,
            verified: Some(false),
        };
        let Ok(mut file) = File::open(self.file(id)) else {
            return damaged(0);
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut start = Vec::new();
        if (&mut file)
            .take(backup::HEADER_READ_LEN as u64)
            .read_to_end(&mut start)
            .is_err()
        {
            return damaged(size);
        }
        let header = match backup::peek_header(&start) {
            Ok(header) if header.id == id => header,
            _ => return damaged(size),
        };
        let mut digest = [0u8; backup::DIGEST_BYTES];
        let sha256 = match file
            .seek(SeekFrom::End(-(backup::DIGEST_BYTES as i64)))
            .and_then(|_| file.read_exact(&mut digest))
        {
            Ok(()) => nexus_protocol::hash::hex(&digest),
            Err(_) => return damaged(size),
        };
        BackupInfo {
            header,
            size_bytes: size,
            sha256,
            location: self.node,
            verified: None,
        }
    }

    fn io_error(&self, what: &str, error: &std::io::Error) -> WireError {
        WireError::new(
            ErrorCode::Internal,
            format!(
                "cannot {what} in the backup directory {}: {error}",
                self.dir.display()
            ),
        )
    }

    fn not_found_or(&self, id: &str, error: &std::io::Error) -> WireError {
        if error.kind() == std::io::ErrorKind::NotFound {
            WireError::new(
                ErrorCode::BackupNotFound,
                format!("coordinator {} has no backup {id}", self.node),
            )
        } else {
            self.io_error("read", error)
        }
    }
}

/// A decode error as an answer, naming the backup.
pub fn refusal(id: &str, error: &BackupError) -> WireError {
    WireError::new(error.code(), format!("backup {id}: {error}"))
}

fn check_id(id: &str) -> Result<(), WireError> {
    if is_backup_id(id) {
        Ok(())
    } else {
        Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!(
                "{:?} is not a backup id (like 20261203T121500Z-i4521)",
                id.chars().take(80).collect::<String>()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: u64 = 1_796_299_200_000; // 2026-12-03T12:00:00Z

    #[test]
    fn schedules_are_checked() {
        let check = |every_secs: u64, keep: u32, ok: bool| {
            let result = check_schedule(&BackupSchedule { every_secs, keep });
            assert_eq!(
                result.is_ok(),
                ok,
                "{every_secs} s, keep {keep}: {result:?}"
            );
        };
        check(3600, 24, true);
        check(0, 1, true);
        check(1, 1, true);
        check(MAX_EVERY_SECS, MAX_KEEP, true);
        check(MAX_EVERY_SECS + 1, 24, false);
        check(3600, 0, false);
        check(3600, MAX_KEEP + 1, false);
    }

    #[test]
    fn a_backup_is_due_an_interval_after_the_last() {
        let at = |secs: u64| Timestamp::from_millis(secs * 1000);
        // Leading since 40 s.
        let check = |now: u64, last: Option<u64>, every: u64, due: bool| {
            assert_eq!(
                backup_due(at(now), last.map(at), every, at(40)),
                due,
                "now {now}, last {last:?}, every {every}"
            );
        };
        // A new leader with none: after the grace, or one interval if shorter.
        check(100, None, 60, true);
        check(99, None, 60, false);
        check(100, None, 3600, true);
        check(99, None, 3600, false);
        check(41, None, 1, true);
        check(100, None, 0, false);
        check(100, Some(50), 60, false);
        check(110, Some(50), 60, true);
        check(200, Some(50), 0, false);
        // A clock that went back is not a reason to back up.
        check(40, Some(50), 60, false);
    }

    #[test]
    fn ids_name_the_time_and_the_index() {
        let check = |millis: u64, index: u64, attempt: u32, want: &str| {
            let id = backup_id(Timestamp::from_millis(millis), index, attempt);
            assert_eq!(id, want);
            assert!(is_backup_id(&id), "{id}");
        };
        check(NOON, 42, 0, "20261203T120000Z-i42");
        check(NOON + 15 * 60_000 + 999, 4521, 0, "20261203T121500Z-i4521");
        check(NOON, 42, 2, "20261203T120000Z-i42-2");
        check(0, 0, 0, "19700101T000000Z-i0");
    }

    #[test]
    fn only_ids_pass_as_ids() {
        for name in [
            "",
            "../etc/passwd",
            "20261203T120000Z-i42/..",
            "20261203T120000Z-i",
            "20261203T120000Z-ix",
            "20261203T12000Z-i42",
            "2026120AT120000Z-i42",
            "20261203T120000Z-i42-",
            "20261203T120000Z-i42-12345",
            "20261203T120000Z-i42.nxbackup",
            "20261203T120000Z-i123456789012345678901",
            " 20261203T120000Z-i42",
        ] {
            assert!(!is_backup_id(name), "{name:?}");
        }
    }

    #[test]
    fn ids_sort_newest_first_by_time_then_index() {
        let mut ids = vec![
            "20261203T120000Z-i999".to_string(),
            "20261203T120000Z-i1000".to_string(),
            "20261203T120000Z-i1000-1".to_string(),
            "20261204T000000Z-i5".to_string(),
            "junk".to_string(),
            "20251203T120000Z-i99999".to_string(),
        ];
        ids.sort_by(|a, b| newest_first(a, b));
        assert_eq!(
            ids,
            [
                "20261204T000000Z-i5",
                "20261203T120000Z-i1000-1",
                "20261203T120000Z-i1000",
                "20261203T120000Z-i999",
                "20251203T120000Z-i99999",
                "junk"
            ]
        );
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let ids: Vec<String> = (1..=5)
            .map(|hour| backup_id(Timestamp::from_millis(NOON + hour * 3_600_000), hour, 0))
            .collect();
        let check = |keep: u32, want: &[&str]| {
            let mut doomed = to_prune(&ids, keep, &BTreeSet::new());
            doomed.sort();
            assert_eq!(doomed, want, "keep {keep}");
        };
        check(3, &["20261203T130000Z-i1", "20261203T140000Z-i2"]);
        check(5, &[]);
        check(9, &[]);
        // Keeping none would delete the only good backup: at least one stays.
        check(
            0,
            &[
                "20261203T130000Z-i1",
                "20261203T140000Z-i2",
                "20261203T150000Z-i3",
                "20261203T160000Z-i4",
            ],
        );
        assert!(to_prune(&["junk".to_string()], 0, &BTreeSet::new()).is_empty());
        // An upload spared is neither deleted nor counted: the newest three others stay.
        let spared = BTreeSet::from([ids[0].clone()]);
        let mut doomed = to_prune(&ids, 3, &spared);
        doomed.sort();
        assert_eq!(doomed, ["20261203T140000Z-i2"]);
    }

    fn header(id: &str) -> BackupHeader {
        BackupHeader {
            id: id.to_string(),
            cluster: "ab".repeat(32),
            node: NodeId::new(1).unwrap(),
            index: 42,
            term: 3,
            created_at: Timestamp::from_millis(NOON),
            software: "0.1.0".to_string(),
            state_format: STATE_FORMAT,
            counts: vec![("hosts".to_string(), 1)],
        }
    }

    fn file(id: &str) -> Vec<u8> {
        let state = crate::state::State::default().to_snapshot().unwrap();
        backup::encode(&header(id), &state).unwrap()
    }

    #[test]
    fn a_directory_writes_lists_verifies_reads_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let backups = BackupDir::new(dir.path().join("backups"), NodeId::new(1).unwrap());
        assert!(backups.list().unwrap().is_empty());
        let ids: Vec<String> = (0..3)
            .map(|i| backup_id(Timestamp::from_millis(NOON + i * 1000), 40 + i, 0))
            .collect();
        for id in &ids {
            backups.write(id, &file(id)).unwrap();
        }
        assert_eq!(
            backups.write(&ids[0], &file(&ids[0])).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(backups.path()), 0o700);
            assert_eq!(mode(&backups.file(&ids[0])), 0o600);
        }
        // A damaged file is listed as such; a stray file is not a backup.
        let damaged = backup_id(Timestamp::from_millis(NOON + 60_000), 1, 0);
        fs::write(backups.file(&damaged), b"NXBACKUP\x00").unwrap();
        fs::write(backups.path().join("notes.txt"), b"hello").unwrap();
        let listed = backups.list().unwrap();
        let listed_ids: Vec<&str> = listed.iter().map(|b| b.header.id.as_str()).collect();
        assert_eq!(listed_ids, [&damaged, &ids[2], &ids[1], &ids[0]]);
        assert_eq!(listed[0].verified, Some(false));
        assert_eq!(listed[1].verified, None);
        assert_eq!(listed[1].header, header(&ids[2]));
        assert_eq!(listed[1].size_bytes, file(&ids[2]).len() as u64);

        let verified = backups.verify(&ids[1]).unwrap();
        assert_eq!(verified.info.verified, Some(true));
        assert_eq!(verified.info.sha256, listed[2].sha256);
        assert_eq!(verified.bytes, file(&ids[1]));
        assert_eq!(
            backups.verify(&damaged).unwrap_err().code,
            ErrorCode::BackupCorrupt
        );
        assert_eq!(
            backups.verify("20261203T120000Z-i7").unwrap_err().code,
            ErrorCode::BackupNotFound
        );
        assert_eq!(
            backups.verify("../../etc/passwd").unwrap_err().code,
            ErrorCode::InvalidArgument
        );

        let whole = file(&ids[1]);
        let mut read = Vec::new();
        loop {
            let piece = backups.read_range(&ids[1], read.len() as u64, 7).unwrap();
            if piece.is_empty() {
                break;
            }
            read.extend(piece);
        }
        assert_eq!(read, whole);

        assert_eq!(backups.prune(2).unwrap(), [ids[1].clone(), ids[0].clone()]);
        let leftover = backups.upload_path("u1").unwrap();
        fs::write(&leftover, b"half").unwrap();
        backups.remove_leftovers();
        assert!(!leftover.exists());
        assert_eq!(backups.ids().unwrap(), [damaged, ids[2].clone()]);
    }

    /// An uploaded backup, older than every backup the schedule made, is spared by pruning (and
    /// not counted) for a day after it came, then pruned like the others, its marker with it.
    #[test]
    fn an_upload_is_spared_by_pruning_for_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let backups = BackupDir::new(dir.path().join("backups"), NodeId::new(1).unwrap());
        let made: Vec<String> = (1..=3)
            .map(|i| backup_id(Timestamp::from_millis(NOON + i * 3_600_000), 100 + i, 0))
            .collect();
        for id in &made {
            backups.write(id, &file(id)).unwrap();
        }
        let old = backup_id(Timestamp::from_millis(NOON - 86_400_000), 7, 0);
        let upload = backups.upload_path("u1").unwrap();
        fs::write(&upload, file(&old)).unwrap();
        backups.adopt(&old, &upload).unwrap();
        let now = nexus_protocol::clock::now();
        assert_eq!(
            backups.prune_at(2, now).unwrap(),
            [made[0].clone()],
            "the two newest made stay, and the upload beside them"
        );
        assert_eq!(
            backups.ids().unwrap(),
            [made[2].clone(), made[1].clone(), old.clone()]
        );
        let later = now.saturating_add(UPLOAD_SPARED + Duration::from_secs(60));
        assert_eq!(
            backups.prune_at(2, later).unwrap(),
            std::slice::from_ref(&old)
        );
        assert!(!backups.marker(&old).exists(), "its marker goes with it");
    }
}
