//! `nexus admin backup restore (ID | latest | --file FILE) [--yes] [--force]`: an online
//! restore. An id or `latest` is looked for in every coordinator's backup directory (each answers
//! `BackupList` for its own), and the restore is asked of the coordinator that holds it; a file
//! of this machine is checked here, uploaded to the leader in pieces (unless the leader holds that
//! very file already), then restored there. On a
//! terminal it asks first, unless `--yes`; without one, `--yes` is required.
//!
//! Which coordinator's backup a name means is pure ([`choose`]), tested below.

use std::time::Duration;

use nexus_protocol::NodeId;
use nexus_protocol::backup::{self, BackupHeader, BackupInfo};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, Request, Response};
use serde_json::json;

use crate::args::{BackupRestoreArgs, OutputFormat};
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::output;
use crate::progress::Progress;
use crate::settings::Settings;

/// How long a coordinator may take to list its backups, or take a piece of an upload.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the restore may take: the coordinator reads and checks the backup, and the entry
/// carrying its state is replicated and applied.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(180);

/// The newest state format this build's coordinator reads (`nexus_coordinator::state::
/// STATE_FORMAT`; a test in `nexus-tests` holds them equal): a backup file of a newer one is
/// refused here as the coordinator would refuse it.
pub const STATE_FORMAT: u32 = 8;
/// The size of each piece of a backup file fetched or uploaded (well under a frame).
pub const PIECE_BYTES: u32 = 4 << 20;

pub async fn run(
    settings: &Settings,
    args: BackupRestoreArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request_id = settings.next_request_id();
    let (holder, info) = match (&args.backup, &args.file) {
        (_, Some(path)) => {
            let file = std::fs::read(path).map_err(|e| {
                CliError::local(
                    ErrorCode::InvalidArgument,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let decoded = backup::decode(&file, STATE_FORMAT)
                .map_err(|e| CliError::local(e.code(), format!("{}: {e}", path.display())))?;
            confirm(&decoded.header, &path.display().to_string(), args.yes)?;
            let (roster, coordinators) = coordinators(settings).await?;
            let leader = leader_of(&roster, &coordinators)?;
            // A file the leader holds already (fetched with `backup create --file`) is not sent
            // again: a directory keeps one backup per id.
            let held = match fleet::ask(
                settings,
                &leader,
                request_id,
                Request::Admin(AdminRequest::BackupList),
                ASK_TIMEOUT,
            )
            .await
            {
                Ok(Response::Backups(list)) => list.into_iter().find(|info| {
                    info.header.id == decoded.header.id && info.sha256 == decoded.sha256
                }),
                _ => None,
            };
            let info = match held {
                Some(info) => info,
                None => upload(settings, &leader, &file).await?,
            };
            (leader, info)
        }
        (Some(wanted), None) => {
            let (roster, coordinators) = coordinators(settings).await?;
            let lists = fleet::ask_each(settings, &coordinators, request_id, ASK_TIMEOUT, |_| {
                Some(Request::Admin(AdminRequest::BackupList))
            })
            .await;
            let lists: Vec<(NodeId, Result<Vec<BackupInfo>, String>)> = lists
                .into_iter()
                .filter_map(|(daemon, answer)| {
                    let Daemon::Coordinator { id, .. } = daemon else {
                        return None;
                    };
                    let list = match answer {
                        Ok(Response::Backups(list)) => Ok(list),
                        Ok(other) => Err(CliError::unexpected(&other).error.message.clone()),
                        Err(error) => Err(error.error.message.clone()),
                    };
                    Some((id, list))
                })
                .collect();
            let (node, info) = choose(&lists, wanted, roster.status.leader)?;
            let holder = coordinators
                .iter()
                .find(|d| matches!(d, Daemon::Coordinator { id, .. } if *id == node))
                .cloned()
                .ok_or_else(|| {
                    CliError::local(
                        ErrorCode::NetworkError,
                        format!("coordinator {node} holds it, but its address is not known"),
                    )
                })?;
            confirm(&info.header, &format!("coordinator-{node}"), args.yes)?;
            (holder, info)
        }
        (None, None) => {
            return Err(CliError::local(
                ErrorCode::InvalidArgument,
                "name a backup (an id, or latest) or --file FILE",
            ));
        }
    };
    let request = Request::Admin(AdminRequest::BackupRestore {
        id: info.header.id.clone(),
        force: args.force,
    });
    let answer = fleet::ask(settings, &holder, request_id, request, RESTORE_TIMEOUT).await?;
    let Response::Backup(restored) = answer else {
        return Err(CliError::unexpected(&answer));
    };
    print_restored(format, &restored, &holder);
    Ok(())
}

/// The coordinator whose backup `wanted` (an id, or `latest`: the newest by time and index)
/// means, from each coordinator's list. The same id in several directories is the same backup:
/// the leader's copy first, else the lowest node's. An error names what was not found, and the
/// coordinators that could not say.
pub fn choose(
    lists: &[(NodeId, Result<Vec<BackupInfo>, String>)],
    wanted: &str,
    leader: Option<NodeId>,
) -> Result<(NodeId, BackupInfo), CliError> {
    let held = lists.iter().flat_map(|(node, list)| {
        list.iter()
            .flatten()
            .filter(|info| info.verified != Some(false))
            .map(move |info| (*node, info))
    });
    let preference = |node: NodeId| (Some(node) != leader, node);
    let chosen = if wanted == "latest" {
        held.max_by(|(a_node, a), (b_node, b)| {
            (a.header.created_at, a.header.index)
                .cmp(&(b.header.created_at, b.header.index))
                // The preferred copy is the greatest: the leader's, then the lowest node.
                .then_with(|| preference(*b_node).cmp(&preference(*a_node)))
        })
    } else {
        held.filter(|(_, info)| info.header.id == wanted)
            .min_by_key(|(node, _)| preference(*node))
    };
    if let Some((node, info)) = chosen {
        return Ok((node, info.clone()));
    }
    let silent: Vec<String> = lists
        .iter()
        .filter_map(|(node, list)| {
            list.as_ref()
                .err()
                .map(|why| format!("coordinator-{node}: {why}"))
        })
        .collect();
    let what = if wanted == "latest" {
        "no coordinator holds a backup".to_string()
    } else {
        format!("no coordinator holds backup {wanted}")
    };
    let message = if silent.is_empty() {
        what
    } else {
        format!("{what} (not asked: {})", silent.join("; "))
    };
    Err(CliError::local(ErrorCode::BackupNotFound, message))
}

/// The cluster's members as the coordinators say, and those that can be asked.
async fn coordinators(settings: &Settings) -> Result<(Roster, Vec<Daemon>), CliError> {
    let roster = Roster::discover(settings, &[], &[], ASK_TIMEOUT).await?;
    let coordinators = roster
        .daemons
        .iter()
        .filter(|d| !d.is_agent())
        .cloned()
        .collect();
    Ok((roster, coordinators))
}

/// The coordinator an upload goes to: the leader, else the first that is listed.
fn leader_of(roster: &Roster, coordinators: &[Daemon]) -> Result<Daemon, CliError> {
    let leader = roster.status.leader;
    coordinators
        .iter()
        .find(|d| matches!(d, Daemon::Coordinator { id, .. } if Some(*id) == leader))
        .or_else(|| coordinators.first())
        .cloned()
        .ok_or_else(|| CliError::local(ErrorCode::NetworkError, "no coordinator can be reached"))
}

/// Sends the backup file `bytes` to coordinator `daemon` in pieces, on one connection: it checks
/// the whole file and keeps it in its backup directory (answered as it lists it). For a restore
/// from a file that no coordinator holds.
pub async fn upload(
    settings: &Settings,
    daemon: &Daemon,
    bytes: &[u8],
) -> Result<BackupInfo, CliError> {
    if bytes.is_empty() {
        return Err(CliError::local(
            ErrorCode::BackupCorrupt,
            "an empty file is not a backup",
        ));
    }
    let connection = fleet::connect(settings, daemon).await?;
    let upload = format!("u{}", settings.next_request_id());
    let total = bytes.len() as u64;
    let pieces = bytes.chunks(PIECE_BYTES as usize);
    let progress = Progress::new(pieces.len() as u64, "uploading");
    let mut offset = 0u64;
    let mut kept = None;
    for piece in pieces {
        let request = AdminRequest::BackupUpload {
            upload: upload.clone(),
            offset,
            total,
            bytes: piece.to_vec(),
        };
        let answer = connection
            .request_with(
                settings.next_request_id(),
                Request::Admin(request),
                ASK_TIMEOUT,
            )
            .await?;
        offset += piece.len() as u64;
        progress.advance(&output::bytes(offset));
        match answer {
            Response::Ack if offset < total => {}
            Response::Backup(info) if offset == total => kept = Some(info),
            other => return Err(CliError::unexpected(&other)),
        }
    }
    connection.close();
    progress.finish();
    kept.ok_or_else(|| CliError::local(ErrorCode::Internal, "the upload was not answered"))
}

/// Asks on a terminal before a restore; refuses without one unless `yes`.
fn confirm(header: &BackupHeader, from: &str, yes: bool) -> Result<(), CliError> {
    let question = question(header, from);
    crate::confirm::confirm(
        crate::confirm::Confirmation {
            question: &question,
            why: "a restore replaces the running cluster's state",
            suggestion: "add --yes to restore without being asked",
            declined: "not restored: not confirmed",
        },
        yes,
    )
}

/// What the confirmation asks.
pub fn question(header: &BackupHeader, from: &str) -> String {
    format!(
        "Restore backup {} ({}; index {}, term {}; {} hosts, {} workspaces) from {from}?\n\
         It replaces the running cluster's state. Workspaces made since are forgotten; their \
         containers keep running as orphans (`nexus admin workspace orphans`). [y/N] ",
        header.id,
        output::rfc3339(header.created_at),
        header.index,
        header.term,
        header.count("hosts"),
        header.count("workspaces"),
    )
}

fn print_restored(format: OutputFormat, info: &BackupInfo, holder: &Daemon) {
    let header = &info.header;
    let json = json!({
        "restored": true,
        "id": header.id,
        "index": header.index,
        "term": header.term,
        "created_at": output::rfc3339(header.created_at),
        "cluster": header.cluster,
        "hosts": header.count("hosts"),
        "workspaces": header.count("workspaces"),
        "location": holder.label(),
        "sha256": info.sha256,
    });
    output::emit(format, &json, || {
        format!(
            "restored backup {} (index {}, made {}) from {}: {} hosts, {} workspaces\n\
             agents now reconcile to it; containers of workspaces made since keep running as \
             orphans: `nexus admin workspace orphans`\n",
            header.id,
            header.index,
            output::rfc3339(header.created_at),
            holder.label(),
            header.count("hosts"),
            header.count("workspaces"),
        )
    });
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;

    use super::*;

    fn node(id: u64) -> NodeId {
        NodeId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn info(id: &str, index: u64, at: u64, on: u64) -> BackupInfo {
        BackupInfo {
            header: BackupHeader {
                id: id.into(),
                cluster: "ab".repeat(32),
                node: node(on),
                index,
                term: 2,
                created_at: Timestamp(at),
                software: "test".into(),
                state_format: 4,
                counts: vec![("hosts".into(), 1), ("workspaces".into(), 3)],
            },
            size_bytes: 100,
            sha256: "00".repeat(32),
            location: node(on),
            verified: None,
        }
    }

    fn chosen(
        lists: &[(NodeId, Result<Vec<BackupInfo>, String>)],
        wanted: &str,
        leader: u64,
    ) -> Result<(u64, String), ErrorCode> {
        choose(lists, wanted, Some(node(leader)))
            .map(|(node, info)| (node.get(), info.header.id))
            .map_err(|e| e.error.code)
    }

    #[test]
    fn a_name_means_the_newest_or_that_id_preferring_the_leaders_copy() {
        let lists = vec![
            (
                node(1),
                Ok(vec![info("old", 5, 1_000, 1), info("new", 9, 2_000, 1)]),
            ),
            (node(2), Ok(vec![info("new", 9, 2_000, 2)])),
            (node(3), Err("timed out".to_string())),
        ];
        assert_eq!(chosen(&lists, "latest", 2), Ok((2, "new".into())));
        assert_eq!(chosen(&lists, "latest", 3), Ok((1, "new".into())));
        assert_eq!(chosen(&lists, "old", 2), Ok((1, "old".into())));
        assert_eq!(chosen(&lists, "new", 1), Ok((1, "new".into())));
        let missing = choose(&lists, "gone", Some(node(1))).unwrap_err();
        assert_eq!(missing.error.code, ErrorCode::BackupNotFound);
        assert!(
            missing.error.message.contains("coordinator-3: timed out"),
            "{}",
            missing.error.message
        );
    }

    #[test]
    fn a_backup_listed_as_damaged_is_never_chosen() {
        let mut damaged = info("newest", 20, 9_000, 1);
        damaged.verified = Some(false);
        let lists = vec![(node(1), Ok(vec![damaged, info("older", 10, 1_000, 1)]))];
        assert_eq!(chosen(&lists, "latest", 1), Ok((1, "older".into())));
        assert_eq!(chosen(&lists, "newest", 1), Err(ErrorCode::BackupNotFound));
        assert_eq!(chosen(&[], "latest", 1), Err(ErrorCode::BackupNotFound));
    }

    #[test]
    fn the_question_says_what_is_lost_and_what_stays() {
        let text = question(&info("b1", 42, 0, 1).header, "coordinator-1");
        assert!(text.starts_with("Restore backup b1 (1970-01-01T00:00:00Z; index 42, term 2; 1 hosts, 3 workspaces) from coordinator-1?"), "{text}");
        assert!(text.contains("keep running as orphans"), "{text}");
    }
}
