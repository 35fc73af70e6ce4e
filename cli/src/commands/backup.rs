//! `nexus admin backup ...`: make a backup on the leader (and fetch it here in pieces), list every
//! coordinator's backups, inspect and verify a backup file here or a backup in the coordinators'
//! directories, and the schedule. The renderings are [`crate::output::backups`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_protocol::backup::{self, BackupInfo, BackupSchedule};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::transport::Credentials;

use crate::args::{BackupCommand, OutputFormat};
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::output::{self, backups as render};
use crate::progress::Progress;
use crate::settings::Settings;

use super::restore::{PIECE_BYTES, STATE_FORMAT};

/// How long a backup may take to make (a large state's encode and fsync).
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a read or a piece of a backup may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(
    command: BackupCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        BackupCommand::Create { file } => create(settings, format, file).await,
        BackupCommand::List => list(settings, format).await,
        BackupCommand::Inspect { backup } => inspect(settings, format, &backup).await,
        BackupCommand::Verify { backup } => verify(settings, format, &backup).await,
        BackupCommand::Schedule { every, keep } => schedule(settings, format, every, keep).await,
        BackupCommand::Restore(args) => crate::commands::restore::run(settings, args, format).await,
    }
}

async fn create(
    settings: &Settings,
    format: OutputFormat,
    file: Option<PathBuf>,
) -> Result<(), CliError> {
    if let Some(file) = &file
        && file.exists()
    {
        return Err(CliError::local(
            ErrorCode::InvalidArgument,
            format!("{} exists; a backup never replaces a file", file.display()),
        )
        .suggest("choose a new file name, or move the old file away"));
    }
    let info = match settings
        .request(Request::Admin(AdminRequest::BackupCreate), CREATE_TIMEOUT)
        .await?
    {
        Response::Backup(info) => info,
        other => return Err(CliError::unexpected(&other)),
    };
    if let Some(file) = &file {
        let bytes = fetch(settings, &info).await?;
        write_private(file, &bytes).map_err(|error| {
            CliError::local(
                ErrorCode::Internal,
                format!("cannot write {}: {error}", file.display()),
            )
        })?;
    }
    output::emit(format, &render::created_json(&info), || {
        render::created_text(&info, file.as_deref())
    });
    Ok(())
}

/// The backup's file, fetched in pieces from the coordinator that holds it, and checked whole
/// against the checksum it was answered with.
async fn fetch(settings: &Settings, info: &BackupInfo) -> Result<Vec<u8>, CliError> {
    let roster = Roster::discover(settings, &[], &[info.location], READ_TIMEOUT).await?;
    let Some(daemon) = roster
        .daemons
        .iter()
        .find(|daemon| matches!(daemon, Daemon::Coordinator { id, .. } if *id == info.location))
    else {
        return Err(CliError::local(
            ErrorCode::NetworkError,
            format!(
                "the backup is on coordinator {}, whose address is not known",
                info.location
            ),
        ));
    };
    let connection = fleet::connect(settings, daemon).await?;
    let pieces = info.size_bytes.div_ceil(u64::from(PIECE_BYTES));
    let progress = Progress::new(pieces, "fetching");
    let mut bytes = Vec::with_capacity(usize::try_from(info.size_bytes).unwrap_or(0));
    loop {
        let read = AdminRequest::BackupRead {
            id: info.header.id.clone(),
            offset: bytes.len() as u64,
            len: PIECE_BYTES,
        };
        let answer = connection
            .request_with(
                settings.next_request_id(),
                Request::Admin(read),
                READ_TIMEOUT,
            )
            .await?;
        match answer {
            Response::BackupBytes(piece) if piece.is_empty() => break,
            Response::BackupBytes(piece) => {
                bytes.extend_from_slice(&piece);
                progress.advance(&output::bytes(bytes.len() as u64));
                if bytes.len() as u64 > info.size_bytes {
                    break;
                }
            }
            other => return Err(CliError::unexpected(&other)),
        }
    }
    connection.close();
    progress.finish();
    let decoded = backup::decode(&bytes, u32::MAX).map_err(|error| {
        CliError::from(WireError::new(
            error.code(),
            format!("the fetched backup: {error}"),
        ))
    })?;
    if decoded.sha256 != info.sha256 || bytes.len() as u64 != info.size_bytes {
        return Err(CliError::local(
            ErrorCode::BackupCorrupt,
            "the fetched backup is not the one the coordinator made (it changed on the way)",
        ));
    }
    Ok(bytes)
}

/// Writes `bytes` to a new file `path` (0600), whole or not at all: a temporary file beside it,
/// synced, then renamed.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map_or_else(
        || "backup".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temporary = dir.join(format!(".{name}.partial"));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if path.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the file appeared meanwhile",
            ));
        }
        fs::rename(&temporary, path)?;
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Every coordinator, each asked `request` at once, with those that could not be listed.
async fn ask_coordinators(
    settings: &Settings,
    request: AdminRequest,
) -> Result<Vec<(Daemon, Result<Response, CliError>)>, CliError> {
    let roster = Roster::discover(settings, &[], &[], READ_TIMEOUT).await?;
    let coordinators: Vec<Daemon> = roster
        .daemons
        .into_iter()
        .filter(|daemon| !daemon.is_agent())
        .collect();
    let mut answers = fleet::ask_each(
        settings,
        &coordinators,
        settings.next_request_id(),
        READ_TIMEOUT,
        |_| Some(Request::Admin(request.clone())),
    )
    .await;
    for (label, error) in roster.unlisted {
        if label.starts_with("coordinator-") {
            eprintln!(
                "warning: {label} could not be asked: {}",
                error.error.message
            );
        }
    }
    answers.sort_by_key(|(daemon, _)| daemon.label());
    Ok(answers)
}

async fn list(settings: &Settings, format: OutputFormat) -> Result<(), CliError> {
    let mut lists = Vec::new();
    for (daemon, answer) in ask_coordinators(settings, AdminRequest::BackupList).await? {
        match answer {
            Ok(Response::Backups(backups)) => lists.push(backups),
            Ok(other) => return Err(CliError::unexpected(&other)),
            Err(error) => eprintln!(
                "warning: {daemon} did not list its backups: {}",
                error.error.message
            ),
        }
    }
    let merged = render::merge(lists);
    output::emit(format, &render::list_json(&merged), || {
        if merged.is_empty() {
            "no backups\n".to_string()
        } else {
            render::list_table(&merged)
        }
    });
    Ok(())
}

/// How long a backup file's check waits for the cluster to name its identity.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(5);

/// A backup file here, read and checked whole: its checksum, its format, and that it is a backup
/// of the cluster whose CA this CLI trusts. A cluster keeps its first CA's fingerprint as its
/// identity across CA rotations, so a file that names another is checked against the identity
/// the cluster answers ([`AdminRequest::ClusterIdentity`]) before it is refused.
async fn check_file(settings: &Settings, path: &Path) -> Result<BackupInfo, CliError> {
    let bytes = fs::read(path).map_err(|error| {
        CliError::local(
            ErrorCode::InvalidArgument,
            format!("cannot read {}: {error}", path.display()),
        )
    })?;
    let decoded = backup::decode(&bytes, STATE_FORMAT).map_err(|error| {
        CliError::from(WireError::new(
            error.code(),
            format!("{}: {error}", path.display()),
        ))
    })?;
    let ca = Credentials::load(&settings.ca, &settings.cert, &settings.key).map_err(|e| {
        CliError::local(ErrorCode::AuthenticationFailed, e.to_string())
            .suggest("check --ca, --cert and --key: the backup's cluster is checked against the CA")
    })?;
    let named = &decoded.header.cluster;
    if *named != ca.ca_fingerprint() {
        // One try, bounded: without a cluster to ask, the refusal comes at once rather than
        // after a client's retries.
        let ask = async {
            let connection = settings.connect().await?;
            connection
                .request_with(
                    settings.next_request_id(),
                    Request::Admin(AdminRequest::ClusterIdentity),
                    IDENTITY_TIMEOUT,
                )
                .await
                .map_err(CliError::from)
        };
        let asked = tokio::time::timeout(IDENTITY_TIMEOUT, ask)
            .await
            .unwrap_or_else(|_| {
                Err(CliError::local(
                    ErrorCode::Timeout,
                    format!("no coordinator answered within {IDENTITY_TIMEOUT:?}"),
                ))
            });
        match asked {
            Ok(Response::ClusterIdentity(identity)) if identity == *named => {}
            Ok(Response::ClusterIdentity(identity)) => {
                return Err(CliError::local(
                    ErrorCode::BackupClusterMismatch,
                    format!(
                        "{} is a backup of cluster {named}, not of this one ({identity})",
                        path.display()
                    ),
                ));
            }
            Ok(other) => return Err(CliError::unexpected(&other)),
            Err(error) => return Err(identity_unknown(path, named, &ca, &error)),
        }
    }
    Ok(BackupInfo {
        size_bytes: bytes.len() as u64,
        sha256: decoded.sha256,
        location: decoded.header.node,
        verified: Some(true),
        header: decoded.header,
    })
}

/// A file that names another cluster than this CLI's CA, when the cluster could not say its own
/// identity: after a CA rotation that is every backup of the cluster, so the answer says how to
/// tell.
fn identity_unknown(path: &Path, named: &str, ca: &Credentials, asked: &CliError) -> CliError {
    CliError::local(
        ErrorCode::BackupClusterMismatch,
        format!(
            "{} is a backup of cluster {named}, not of the CA this CLI trusts ({}), and the \
             cluster did not say its identity ({}: {})",
            path.display(),
            ca.ca_fingerprint(),
            asked.error.code,
            asked.error.message
        ),
    )
    .suggest(
        "after a CA rotation a cluster keeps its first CA's fingerprint as its identity: run \
         this again when a coordinator answers, or compare with cluster-id in a coordinator's \
         --tls-dir",
    )
}

/// Each coordinator's verdict on backup `id`: those that hold it, good or not.
async fn verify_everywhere(
    settings: &Settings,
    id: &str,
) -> Result<Vec<(String, Result<BackupInfo, CliError>)>, CliError> {
    let answers = ask_coordinators(settings, AdminRequest::BackupVerify(id.to_string())).await?;
    let mut results = Vec::new();
    let mut unreachable = None;
    for (daemon, answer) in answers {
        match answer {
            Ok(Response::Backup(info)) => results.push((daemon.label(), Ok(info))),
            Ok(other) => return Err(CliError::unexpected(&other)),
            Err(error) if error.error.code == ErrorCode::BackupNotFound => {}
            Err(error)
                if matches!(
                    error.error.code,
                    ErrorCode::BackupCorrupt | ErrorCode::BackupVersionUnsupported
                ) =>
            {
                results.push((daemon.label(), Err(error)));
            }
            Err(error) => unreachable = Some(error),
        }
    }
    if results.is_empty() {
        return Err(unreachable.unwrap_or_else(|| {
            CliError::local(
                ErrorCode::BackupNotFound,
                format!("no coordinator holds a backup {id}"),
            )
        }));
    }
    Ok(results)
}

async fn inspect(settings: &Settings, format: OutputFormat, backup: &str) -> Result<(), CliError> {
    let (info, source) = if Path::new(backup).exists() {
        (
            check_file(settings, Path::new(backup)).await?,
            backup.to_string(),
        )
    } else {
        let results = verify_everywhere(settings, backup).await?;
        let first_good = results
            .iter()
            .find_map(|(source, result)| result.as_ref().ok().map(|info| (info, source)));
        match first_good {
            Some((info, source)) => (info.clone(), source.clone()),
            None => {
                let (_, first) = results.into_iter().next().ok_or_else(|| {
                    CliError::local(ErrorCode::BackupNotFound, "no coordinator holds it")
                })?;
                return Err(first.err().unwrap_or_else(|| {
                    CliError::local(ErrorCode::Internal, "no verdict on the backup")
                }));
            }
        }
    };
    output::emit(format, &render::inspect_json(&info, &source), || {
        render::inspect_text(&info, &source)
    });
    Ok(())
}

async fn verify(settings: &Settings, format: OutputFormat, backup: &str) -> Result<(), CliError> {
    let results: Vec<(String, Result<BackupInfo, CliError>)> = if Path::new(backup).exists() {
        vec![(
            backup.to_string(),
            Ok(check_file(settings, Path::new(backup)).await?),
        )]
    } else {
        verify_everywhere(settings, backup).await?
    };
    let shown: Vec<(String, Result<BackupInfo, String>)> = results
        .iter()
        .map(|(location, result)| {
            (
                location.clone(),
                result
                    .clone()
                    .map_err(|error| format!("{}: {}", error.error.code, error.error.message)),
            )
        })
        .collect();
    output::emit(format, &render::verified_json(&shown), || {
        render::verified_text(&shown)
    });
    match results.into_iter().find_map(|(_, result)| result.err()) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn schedule(
    settings: &Settings,
    format: OutputFormat,
    every: Option<u64>,
    keep: Option<u32>,
) -> Result<(), CliError> {
    let current = match settings
        .request(
            Request::Admin(AdminRequest::BackupSchedule(None)),
            READ_TIMEOUT,
        )
        .await?
    {
        Response::BackupSchedule(schedule) => schedule,
        other => return Err(CliError::unexpected(&other)),
    };
    let schedule = if every.is_none() && keep.is_none() {
        current
    } else {
        let wanted = BackupSchedule {
            every_secs: every.unwrap_or(current.every_secs),
            keep: keep.unwrap_or(current.keep),
        };
        match settings
            .request(
                Request::Admin(AdminRequest::BackupSchedule(Some(wanted))),
                READ_TIMEOUT,
            )
            .await?
        {
            Response::BackupSchedule(schedule) => schedule,
            other => return Err(CliError::unexpected(&other)),
        }
    };
    output::emit(format, &render::schedule_json(&schedule), || {
        render::schedule_text(&schedule)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_whole_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.nxbackup");
        write_private(&path, b"backup").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"backup");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_private(&path, b"other").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"backup");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
