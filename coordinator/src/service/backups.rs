//! Admins' backups: create one now (at an index the leader confirmed), list, verify, read out in
//! pieces, take one in in pieces, and the schedule, with the leader's loop that follows it.
//! Restoring one is [`super::restore`]; the directory and its files are [`crate::backups`].
//!
//! A backup is made on the leader only: a linearizable read (ReadIndex, the fence) gives the
//! state with the index and term it was applied to, at one point. There, on the driver's thread,
//! the state is copied ([`crate::state::State::snapshot_copy`]: the tables that grow with the
//! workspaces in constant time, sharing what is unchanged), as for the store's periodic snapshot;
//! the copy is encoded, and the file sealed, written, re-read and verified, on blocking threads.
//! (A deep clone was measured slower than encoding the state in place: 40,000 workspaces, debug
//! build, clone 357 ms, encode 279 ms.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nexus_protocol::RequestId;
use nexus_protocol::backup::{self, BackupHeader, BackupInfo};
use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::{AdminRequest, Response};
use nexus_protocol::transport::Peer;

use super::Service;
use super::checks::require;
use crate::backups::{
    BackupDir, MAX_BACKUP_BYTES, MAX_READ_BYTES, backup_due, check_schedule, refusal,
};
use crate::cluster::Consistency;
use crate::locks::lock;
use crate::state::{Command, STATE_FORMAT, State};

/// Uploads in flight at once on one coordinator.
const MAX_UPLOADS: usize = 4;
/// An upload without a piece for this long is abandoned, and its file removed.
const UPLOAD_IDLE: Duration = Duration::from_secs(300);

/// What a coordinator needs to make and keep backups: its directory and the cluster it belongs
/// to (its CA's fingerprint, which every backup names), and the uploads in flight.
#[derive(Debug)]
pub struct Backups {
    dir: BackupDir,
    cluster: String,
    uploads: Mutex<BTreeMap<String, Upload>>,
}

/// What the schedule remembers between rounds.
#[derive(Debug, Default)]
pub struct ScheduleMemory {
    /// When this node, not leading, last pruned its directory, and to how many.
    pruned: Option<(Instant, u32)>,
    leading: bool,
    /// Since when this node leads, as this schedule saw it.
    leading_since: Option<Timestamp>,
    /// When the newest backup was made (or last tried).
    last: Option<Timestamp>,
}

/// How often a coordinator that does not lead prunes its backup directory, besides whenever the
/// number to keep changes (the leader prunes after each backup it makes).
const FOLLOWER_PRUNE_PERIOD: Duration = Duration::from_secs(600);

/// A backup file arriving in pieces.
#[derive(Debug)]
struct Upload {
    path: PathBuf,
    next: u64,
    total: u64,
    touched: Instant,
}

impl Backups {
    pub fn new(dir: BackupDir, cluster: String) -> Backups {
        Backups {
            dir,
            cluster,
            uploads: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn dir(&self) -> &BackupDir {
        &self.dir
    }

    /// The cluster's identity (its CA's fingerprint), which its backups name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

/// Whether an upload id (chosen by the CLI) is safe in a file name.
fn is_upload_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WireError> + Send + 'static,
) -> Result<T, WireError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        WireError::new(
            ErrorCode::Internal,
            format!("the backup's work stopped: {error}"),
        )
    })?
}

/// Runs a backup's encoding, writing and verifying behind every other thread of the machine
/// ([`crate::background`]): at a million workspaces that is 10 s of two cores' work, which the
/// heartbeats of 20,000 agents cannot wait for.
async fn in_the_background<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WireError> + Send + 'static,
) -> Result<T, WireError> {
    crate::background::run("backup", work)
        .await
        .map_err(|error| {
            WireError::new(ErrorCode::Internal, format!("the backup's work: {error}"))
        })?
}

fn no_backups() -> WireError {
    WireError::new(
        ErrorCode::Unsupported,
        "this coordinator keeps no backups (it runs without a backup directory)",
    )
}

impl Service {
    fn backup_store(&self) -> Result<&Backups, WireError> {
        self.backups.as_ref().ok_or_else(no_backups)
    }

    pub(super) async fn backups(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        require(peer, &[IdentityKind::Admin])?;
        match request {
            AdminRequest::BackupCreate => Ok(Response::Backup(self.create_backup().await?)),
            AdminRequest::BackupList => {
                let dir = self.backup_store()?.dir.clone();
                Ok(Response::Backups(blocking(move || dir.list()).await?))
            }
            AdminRequest::BackupVerify(id) => {
                let dir = self.backup_store()?.dir.clone();
                let verified = blocking(move || dir.verify(&id)).await?;
                Ok(Response::Backup(verified.info))
            }
            AdminRequest::BackupRead { id, offset, len } => {
                if len > MAX_READ_BYTES {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("read at most {MAX_READ_BYTES} bytes at a time, not {len}"),
                    ));
                }
                let dir = self.backup_store()?.dir.clone();
                let bytes = blocking(move || dir.read_range(&id, offset, len)).await?;
                Ok(Response::BackupBytes(bytes))
            }
            AdminRequest::BackupUpload {
                upload,
                offset,
                total,
                bytes,
            } => self.upload_piece(upload, offset, total, bytes).await,
            AdminRequest::BackupSchedule(change) => {
                if let Some(schedule) = &change {
                    check_schedule(schedule)?;
                }
                let schedule = self
                    .cluster
                    .change_then_read(
                        request_id,
                        peer.identity.clone(),
                        change.map(Command::SetBackupSchedule),
                        consistency,
                        State::backup_schedule,
                    )
                    .await?;
                Ok(Response::BackupSchedule(schedule))
            }
            AdminRequest::ClusterIdentity => Ok(Response::ClusterIdentity(
                self.backup_store()?.cluster.clone(),
            )),
            // The admin room routes only the requests above here; a restore is its own room.
            _ => Err(WireError::new(
                ErrorCode::Internal,
                "a request routed to backups that is not one",
            )),
        }
    }

    /// Makes a backup now, on the leader: the fence, the state at one point, then the file
    /// written, re-read and verified. Counted in the backup metrics either way.
    pub async fn create_backup(&self) -> Result<BackupInfo, WireError> {
        let result = self.create_backup_uncounted().await;
        let metrics = self.cluster.metrics();
        match &result {
            Ok(info) => {
                metrics.backups.inc(["ok"]);
                metrics
                    .backup_last_success
                    .set(info.header.created_at.as_millis() as f64 / 1000.0);
                metrics.backup_size_bytes.set(info.size_bytes as f64);
            }
            Err(_) => metrics.backups.inc(["failed"]),
        }
        result
    }

    async fn create_backup_uncounted(&self) -> Result<BackupInfo, WireError> {
        let backups = self.backup_store()?;
        self.cluster.require_leader().await?;
        let started = Instant::now();
        // The fence: a linearizable read sees every write acknowledged before it was asked. The
        // Raft thread only copies the state (its large tables in constant time); the copy is
        // encoded here, off it.
        let (copy, counts, index, term) = self
            .cluster
            .read_applied(Consistency::Linearizable, |applied| {
                (
                    applied.state.snapshot_copy(),
                    applied.state.table_counts(),
                    applied.index,
                    applied.term,
                )
            })
            .await?;
        let payload = in_the_background(move || {
            copy.to_snapshot().map_err(|error| {
                WireError::new(ErrorCode::Internal, format!("cannot back up: {error}"))
            })
        })
        .await?;
        let encoded = started.elapsed();
        let dir = backups.dir.clone();
        let cluster = backups.cluster.clone();
        let node = self.cluster.id();
        let created_at = clock::now();
        let info = in_the_background(move || {
            let header = BackupHeader {
                id: dir.fresh_id(created_at, index),
                cluster,
                node,
                index,
                term,
                created_at,
                software: nexus_protocol::SOFTWARE_VERSION.to_string(),
                state_format: STATE_FORMAT,
                counts,
            };
            let file = backup::encode(&header, &payload).map_err(|e| e.to_wire())?;
            drop(payload);
            dir.write(&header.id, &file)?;
            drop(file);
            dir.verify(&header.id).map(|verified| verified.info)
        })
        .await?;
        tracing::info!(
            id = %info.header.id,
            index,
            term,
            bytes = info.size_bytes,
            encode_ms = encoded.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "backup written and verified"
        );
        Ok(info)
    }

    /// One piece of an upload; the last one checks the whole file and keeps it.
    async fn upload_piece(
        &self,
        upload: String,
        offset: u64,
        total: u64,
        bytes: Vec<u8>,
    ) -> Result<Response, WireError> {
        let backups = self.backup_store()?;
        if !is_upload_id(&upload) {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "an upload id is 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if total == 0 || total > MAX_BACKUP_BYTES {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("a backup file is 1 to {MAX_BACKUP_BYTES} bytes, not {total}"),
            ));
        }
        let end = offset.saturating_add(bytes.len() as u64);
        if end > total {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("a piece ending at {end} of a file of {total} bytes"),
            ));
        }
        let path = {
            let mut uploads = lock(&backups.uploads);
            let abandoned: Vec<String> = uploads
                .iter()
                .filter(|(_, upload)| upload.touched.elapsed() > UPLOAD_IDLE)
                .map(|(id, _)| id.clone())
                .collect();
            for id in abandoned {
                if let Some(gone) = uploads.remove(&id) {
                    let _ = std::fs::remove_file(gone.path);
                }
            }
            if offset == 0 {
                if let Some(earlier) = uploads.remove(&upload) {
                    let _ = std::fs::remove_file(earlier.path);
                }
                if uploads.len() >= MAX_UPLOADS {
                    return Err(WireError::new(
                        ErrorCode::ResourceExhausted,
                        format!("{MAX_UPLOADS} uploads are already in flight here; retry later"),
                    ));
                }
                let path = backups.dir.upload_path(&upload)?;
                uploads.insert(
                    upload.clone(),
                    Upload {
                        path: path.clone(),
                        next: end,
                        total,
                        touched: Instant::now(),
                    },
                );
                path
            } else {
                let Some(known) = uploads.get_mut(&upload) else {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("no upload {upload} is in flight here (start at offset 0)"),
                    ));
                };
                if known.next != offset || known.total != total {
                    let gone = uploads.remove(&upload);
                    if let Some(gone) = gone {
                        let _ = std::fs::remove_file(gone.path);
                    }
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("upload {upload}: a piece out of order; start again at offset 0"),
                    ));
                }
                // The next piece is expected after this one from now on: a second copy of this
                // piece sent meanwhile is out of order, not appended twice.
                known.next = end;
                known.touched = Instant::now();
                known.path.clone()
            }
        };
        let piece_path = path.clone();
        let written = blocking(move || {
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut file = if offset == 0 {
                    crate::files::private_file(&piece_path)?
                } else {
                    std::fs::OpenOptions::new().append(true).open(&piece_path)?
                };
                file.write_all(&bytes)?;
                if end == total {
                    file.sync_all()?;
                }
                Ok(())
            };
            write().map_err(|error| {
                WireError::new(
                    ErrorCode::Internal,
                    format!("cannot write the upload: {error}"),
                )
            })
        })
        .await;
        if let Err(error) = written {
            self.forget_upload(&upload);
            return Err(error);
        }
        if end < total {
            return Ok(Response::Ack);
        }
        lock(&backups.uploads).remove(&upload);
        let dir = backups.dir.clone();
        let kept = blocking(move || {
            let bytes = std::fs::read(&path).map_err(|error| {
                WireError::new(
                    ErrorCode::Internal,
                    format!("cannot read the upload: {error}"),
                )
            })?;
            let decoded = match backup::decode(&bytes, STATE_FORMAT) {
                Ok(decoded) => decoded,
                Err(error) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(refusal("uploaded", &error));
                }
            };
            let id = decoded.header.id.clone();
            if let Err(error) = dir.adopt(&id, &path) {
                let _ = std::fs::remove_file(&path);
                return Err(error);
            }
            Ok(dir.verify(&id)?.info)
        })
        .await?;
        Ok(Response::Backup(kept))
    }

    fn forget_upload(&self, upload: &str) {
        if let Some(backups) = &self.backups
            && let Some(gone) = lock(&backups.uploads).remove(upload)
        {
            let _ = std::fs::remove_file(gone.path);
        }
    }

    /// The backup schedule, for as long as the process runs: every `period`, a
    /// [`Service::scheduled_backup`] round.
    pub async fn follow_backup_schedule(&self, period: Duration) {
        if self.backups.is_none() {
            return;
        }
        if let Some(backups) = &self.backups {
            let dir = backups.dir.clone();
            // What a process that died mid-write left: temporary files, never backups.
            let _ = blocking(move || {
                dir.remove_leftovers();
                Ok(())
            })
            .await;
        }
        let mut memory = ScheduleMemory::default();
        loop {
            tokio::time::sleep(period).await;
            self.scheduled_backup(&mut memory).await;
        }
    }

    /// Prunes this node's backup directory to the schedule's number to keep, read at
    /// `consistency` (uploads just come spared); the number, unless it could not be read. Every
    /// node prunes, so a former leader's backups follow the schedule too.
    async fn prune_backups(&self, consistency: Consistency) -> Option<u32> {
        let backups = self.backups.as_ref()?;
        let keep = self
            .cluster
            .read(consistency, |state| state.backup_schedule().keep)
            .await
            .ok()?;
        let dir = backups.dir.clone();
        match blocking(move || dir.prune(keep)).await {
            Ok(pruned) if !pruned.is_empty() => {
                tracing::info!(pruned = ?pruned, keep, "old backups pruned");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("cannot prune the backups: {}", error.message),
        }
        Some(keep)
    }

    /// One round of the schedule: while this node leads, it makes a backup if the replicated
    /// schedule says one is due (from the newest backup in its own directory; a new leader with
    /// none waits [`crate::backups::NEW_LEADER_GRACE`] or an interval, whichever is shorter), verifies it and prunes to the number to keep. A failure is
    /// logged and counted, and tried again an interval later.
    pub async fn scheduled_backup(&self, memory: &mut ScheduleMemory) {
        let Some(backups) = &self.backups else {
            return;
        };
        let metrics = self.cluster.metrics().clone();
        if self.cluster.require_leader().await.is_err() {
            let pruned = memory.pruned;
            *memory = ScheduleMemory {
                pruned,
                ..ScheduleMemory::default()
            };
            metrics.backup_interval.set(0.0);
            // Due when `keep` moved (as this replica has it) or a period passed; then pruned to
            // `keep` as a linearizable read gives it, so that a replica still catching up (just
            // restarted) never prunes to an old number.
            let keep = self
                .cluster
                .read(Consistency::Stale, |state| state.backup_schedule().keep)
                .await;
            let due = match (pruned, keep) {
                (_, Err(_)) => false,
                (None, Ok(_)) => true,
                (Some((at, before)), Ok(keep)) => {
                    keep != before || at.elapsed() >= FOLLOWER_PRUNE_PERIOD
                }
            };
            if due && let Some(keep) = self.prune_backups(Consistency::Linearizable).await {
                memory.pruned = Some((Instant::now(), keep));
            }
            return;
        }
        memory.pruned = None;
        let Ok(schedule) = self
            .cluster
            .read(Consistency::Stale, State::backup_schedule)
            .await
        else {
            return;
        };
        metrics.backup_interval.set(schedule.every_secs as f64);
        if !memory.leading {
            memory.leading = true;
            memory.leading_since = Some(clock::now());
            let dir = backups.dir.clone();
            memory.last = blocking(move || dir.list()).await.ok().and_then(|list| {
                list.into_iter()
                    .filter(|info| info.verified != Some(false))
                    .map(|info| info.header.created_at)
                    .max()
            });
            if let Some(at) = memory.last
                && metrics.backup_last_success.get() == 0.0
            {
                metrics
                    .backup_last_success
                    .set(at.as_millis() as f64 / 1000.0);
            }
        }
        let now = clock::now();
        let leading_since = memory.leading_since.unwrap_or(now);
        if !backup_due(now, memory.last, schedule.every_secs, leading_since) {
            return;
        }
        memory.last = Some(now);
        match self.create_backup().await {
            Ok(info) => {
                tracing::info!(id = %info.header.id, index = info.header.index, "scheduled backup made");
                self.prune_backups(Consistency::Stale).await;
            }
            Err(error) => {
                tracing::warn!(code = %error.code, "a scheduled backup failed: {}", error.message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::testing::{ask, leading, one_node, peer, user};
    use nexus_protocol::backup::BackupSchedule;
    use nexus_protocol::identity::{Identity, Role};
    use nexus_protocol::message::Request;

    #[test]
    fn upload_ids_are_plain_names() {
        assert!(is_upload_id("abc-123_X"));
        for bad in ["", "../x", "a/b", "a.b", &"x".repeat(65)] {
            assert!(!is_upload_id(bad), "{bad:?}");
        }
    }

    fn admin() -> Peer {
        peer(Identity::User {
            name: nexus_protocol::UserName::new("root").unwrap(),
            role: Role::Admin,
        })
    }

    async fn backing_up() -> (tempfile::TempDir, crate::Node, Service) {
        let (dir, node, service) = one_node().await;
        let backups = Backups::new(
            BackupDir::new(dir.path().join("backups"), node.cluster.id()),
            "cd".repeat(32),
        );
        let service = service.with_backups(backups);
        leading(&service).await;
        (dir, node, service)
    }

    #[tokio::test]
    async fn a_backup_is_made_listed_verified_read_and_uploaded_back() {
        let (dir, node, service) = backing_up().await;
        let admin = admin();
        let Response::Backup(made) =
            ask(&service, &admin, Request::Admin(AdminRequest::BackupCreate))
                .await
                .unwrap()
        else {
            panic!("not a backup")
        };
        assert_eq!(made.verified, Some(true));
        assert_eq!(made.header.cluster, "cd".repeat(32));
        // The identity a backup names is the one the cluster answers (a CLI that trusts only a
        // later CA asks for it).
        assert_eq!(
            ask(
                &service,
                &admin,
                Request::Admin(AdminRequest::ClusterIdentity)
            )
            .await
            .unwrap(),
            Response::ClusterIdentity("cd".repeat(32))
        );
        assert!(made.header.index >= 1);
        assert_eq!(made.header.state_format, STATE_FORMAT);
        assert_eq!(made.header.count("hosts"), 0);
        assert_eq!(service.cluster.metrics().backups.get(["ok"]), 1);

        let Response::Backups(listed) =
            ask(&service, &admin, Request::Admin(AdminRequest::BackupList))
                .await
                .unwrap()
        else {
            panic!("not a list")
        };
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].header, made.header);
        assert_eq!(listed[0].sha256, made.sha256);

        let verify = |id: &str| Request::Admin(AdminRequest::BackupVerify(id.to_string()));
        let answer = ask(&service, &admin, verify(&made.header.id))
            .await
            .unwrap();
        assert_eq!(answer, Response::Backup(made.clone()));
        let missing = ask(&service, &admin, verify("20261203T120000Z-i1")).await;
        assert_eq!(missing.unwrap_err().code, ErrorCode::BackupNotFound);

        // Read out in pieces, the file is the one written.
        let mut file = Vec::new();
        loop {
            let read = AdminRequest::BackupRead {
                id: made.header.id.clone(),
                offset: file.len() as u64,
                len: 100,
            };
            let Response::BackupBytes(piece) =
                ask(&service, &admin, Request::Admin(read)).await.unwrap()
            else {
                panic!("not bytes")
            };
            if piece.is_empty() {
                break;
            }
            file.extend(piece);
        }
        assert_eq!(file.len() as u64, made.size_bytes);
        let too_much = AdminRequest::BackupRead {
            id: made.header.id.clone(),
            offset: 0,
            len: MAX_READ_BYTES + 1,
        };
        assert_eq!(
            ask(&service, &admin, Request::Admin(too_much))
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument
        );

        // Users may not: a backup is the whole fleet's state.
        let refused = ask(
            &service,
            &user(Role::User),
            Request::Admin(AdminRequest::BackupList),
        )
        .await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::PermissionDenied);

        // Uploaded back under another name after its original is gone: kept, verified.
        std::fs::remove_file(
            dir.path()
                .join("backups")
                .join(format!("{}.nxbackup", made.header.id)),
        )
        .unwrap();
        let upload = |offset: usize, piece: &[u8], total: usize| {
            Request::Admin(AdminRequest::BackupUpload {
                upload: "u1".to_string(),
                offset: offset as u64,
                total: total as u64,
                bytes: piece.to_vec(),
            })
        };
        // A damaged upload is refused with the decode's code, and nothing is kept.
        let mut damaged = file.clone();
        damaged[40] ^= 1;
        let refused = ask(&service, &admin, upload(0, &damaged, damaged.len())).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::BackupCorrupt);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Out of order: refused, and the upload forgotten.
        let half = file.len() / 2;
        assert_eq!(
            ask(&service, &admin, upload(0, &file[..half], file.len()))
                .await
                .unwrap(),
            Response::Ack
        );
        let skipped = ask(
            &service,
            &admin,
            upload(half + 1, &file[half + 1..], file.len()),
        )
        .await;
        assert_eq!(skipped.unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(
            ask(&service, &admin, upload(0, &file[..half], file.len()))
                .await
                .unwrap(),
            Response::Ack
        );
        let kept = ask(&service, &admin, upload(half, &file[half..], file.len()))
            .await
            .unwrap();
        assert_eq!(kept, Response::Backup(made.clone()));
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_schedule_is_replicated_and_checked() {
        let (_dir, node, service) = backing_up().await;
        let admin = admin();
        let schedule = |change| Request::Admin(AdminRequest::BackupSchedule(change));
        assert_eq!(
            ask(&service, &admin, schedule(None)).await.unwrap(),
            Response::BackupSchedule(BackupSchedule::default())
        );
        let every_minute = BackupSchedule {
            every_secs: 60,
            keep: 3,
        };
        assert_eq!(
            ask(&service, &admin, schedule(Some(every_minute)))
                .await
                .unwrap(),
            Response::BackupSchedule(every_minute)
        );
        let bad = BackupSchedule {
            every_secs: 60,
            keep: 0,
        };
        assert_eq!(
            ask(&service, &admin, schedule(Some(bad)))
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            service
                .cluster
                .read(Consistency::Linearizable, State::backup_schedule)
                .await
                .unwrap(),
            every_minute
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn scheduled_backups_keep_the_newest_few_each_verifiable() {
        let (dir, node, service) = backing_up().await;
        let admin = admin();
        let every_second = BackupSchedule {
            every_secs: 1,
            keep: 2,
        };
        ask(
            &service,
            &admin,
            Request::Admin(AdminRequest::BackupSchedule(Some(every_second))),
        )
        .await
        .unwrap();
        let backups = BackupDir::new(dir.path().join("backups"), node.cluster.id());
        let mut memory = ScheduleMemory::default();
        // A new leader with no backup waits an interval (here shorter than the grace) first.
        service.scheduled_backup(&mut memory).await;
        assert_eq!(backups.ids().unwrap().len(), 0);
        memory.leading_since = Some(Timestamp::EPOCH);
        service.scheduled_backup(&mut memory).await;
        assert_eq!(backups.ids().unwrap().len(), 1);
        // Not due again within the interval.
        service.scheduled_backup(&mut memory).await;
        assert_eq!(service.cluster.metrics().backups.get(["ok"]), 1);
        for made in 2..=4 {
            memory.last = Some(Timestamp::EPOCH);
            service.scheduled_backup(&mut memory).await;
            assert_eq!(service.cluster.metrics().backups.get(["ok"]), made);
            assert_eq!(backups.ids().unwrap().len(), 2.min(made as usize));
        }
        for id in backups.ids().unwrap() {
            assert_eq!(backups.verify(&id).unwrap().info.verified, Some(true));
        }
        assert!(service.cluster.metrics().backup_last_success.get() > 0.0);
        assert_eq!(service.cluster.metrics().backup_interval.get(), 1.0);
        // Off: no more.
        let off = BackupSchedule {
            every_secs: 0,
            keep: 2,
        };
        ask(
            &service,
            &admin,
            Request::Admin(AdminRequest::BackupSchedule(Some(off))),
        )
        .await
        .unwrap();
        memory.last = Some(Timestamp::EPOCH);
        service.scheduled_backup(&mut memory).await;
        assert_eq!(service.cluster.metrics().backups.get(["ok"]), 4);
        node.stop().await.unwrap();
    }
}
