//! Applying a restore: a backup's state replaces this one, except what belongs to the running
//! cluster rather than to the backup. Pure like every apply: the same state and command give the
//! same result on every replica.
//!
//! Table by table (the why is in `docs/decisions.md`, "Online restore"):
//!
//! | table | after the restore |
//! |---|---|
//! | workspaces, ports, limits, host limits, events | the backup's |
//! | hosts | the backup's, plus every host registered since; a host the running cluster knows keeps the running record (facts, liveness, admin status), so live agents are not stranded |
//! | each workspace | the backup's record; its generation kept at the running container's when the running state has it on the same host with the same spec and ports (so that container is left alone), else above both (so its container is made anew); `Lost` while its host is down; an event saying it was restored, under the restore's request |
//! | foreign ports | the running cluster's, plus the ports of workspaces the backup does not hold (their containers become orphans and still hold them) |
//! | desired versions | every host's above both the running one and the backup's, so every agent takes the new desired state |
//! | journal | the running cluster's: a request retried across the restore is answered as it was first, and the restore's own request is journaled by `apply` after |
//! | member addresses, backup schedule, maintenance (window, last run) | the running cluster's |
//! | lifecycle policies | the backup's |
//! | each workspace's lifecycle | the backup's, but last used at the restore (`restored`) and with no destroy notice posted: the policies start afresh, so a restore neither stops a fleet that looks idle since the backup nor destroys a workspace on notices its owner never saw after the restore |
//! | notices | the running cluster's, without the policies' (they are posted again as due) |
//! | CA rotations (in progress, last, the CA trusted since) | the running cluster's |
//!
//! A backup of a state format this build does not read is refused (`BACKUP_VERSION_UNSUPPORTED`),
//! as are bytes that do not decode or a state that breaks the invariants (`BACKUP_CORRUPT`);
//! a refusal changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::HostId;
use nexus_protocol::backup::BackupHeader;
use nexus_protocol::debug::EventKind;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::model::{Activity, ActivityKind, HostStatus, WorkspaceState};

use super::desired::ChangedHosts;
use super::{
    Command, Origin, Outcome, Proposal, STATE_FORMAT, Security, State, WorkspaceRecord, reject,
};
use crate::fit::Usage;

/// A backup's state read and checked, ahead of its restore's apply: either the state or the
/// refusal the apply gives. Reading is the costly part of a restore (tens of megabytes decoded,
/// every invariant checked: seconds at 250,000 workspaces) and needs nothing but the entry's own
/// bytes, so [`crate::consensus`] reads a large restore on a thread of its own as soon as its
/// entry is in the log, and the Raft thread, which must keep ticking, only swaps it in.
pub struct ReadBackup(Result<State, Outcome>);

impl std::fmt::Debug for ReadBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(state) => write!(f, "ReadBackup({} workspaces)", state.workspaces.len()),
            Err(refusal) => write!(f, "ReadBackup({refusal:?})"),
        }
    }
}

impl ReadBackup {
    /// Reads the backup that `proposal` (a restore) carries, and records in it what the restore
    /// tells each of its workspaces (see [`restored`]). Pure: the same proposal gives the same
    /// result on every replica, whichever thread reads it.
    pub fn read(proposal: &Proposal) -> ReadBackup {
        let Command::Restore { header, state } = &proposal.command else {
            return ReadBackup(Err(reject(
                ErrorCode::Internal,
                "a restore's backup read from another command",
            )));
        };
        if let Some(refusal) = format_refusal(header) {
            return ReadBackup(Err(Outcome::rejected(refusal)));
        }
        let mut backup = match State::from_snapshot(state) {
            Ok(backup) => backup,
            Err(error) => {
                return ReadBackup(Err(reject(
                    ErrorCode::BackupCorrupt,
                    format!("backup {}'s state cannot be read: {error}", header.id),
                )));
            }
        };
        if let Err(broken) = backup.check_invariants() {
            return ReadBackup(Err(reject(
                ErrorCode::BackupCorrupt,
                format!("backup {}'s state is inconsistent: {broken}", header.id),
            )));
        }
        // The restored workspaces' events are the backup's and do not depend on the running
        // state, so they are written here, off the Raft thread: one per workspace, 250,000 at
        // the largest states measured.
        let origin = Origin {
            request_id: proposal.request_id,
            at: proposal.at,
            proposer: &proposal.proposer,
        };
        let reason = format!(
            "restored from backup {} (index {}, term {})",
            header.id, header.index, header.term
        );
        let names: Vec<_> = backup
            .workspaces
            .iter()
            .map(|(name, workspace)| (name.clone(), workspace.desired))
            .collect();
        for (name, run) in names {
            backup.record_asked(&name, origin, EventKind::Wanted(run), Some(reason.clone()));
        }
        ReadBackup(Ok(backup))
    }
}

impl State {
    /// Restores the backup that `read` holds (read from this command's own proposal).
    pub(super) fn restore(&mut self, origin: Origin<'_>, read: ReadBackup) -> Outcome {
        let backup = match read.0 {
            Ok(backup) => backup,
            Err(refusal) => return refusal,
        };
        let running = std::mem::take(self);
        *self = restored(running, backup, origin);
        Outcome::Applied
    }
}

/// The state after restoring `backup` onto `running` (see the module's table).
fn restored(running: State, mut backup: State, origin: Origin<'_>) -> State {
    let mut hosts = std::mem::take(&mut backup.hosts);
    hosts.extend(running.hosts);
    let down = |host: &HostId| {
        hosts
            .get(host)
            .is_some_and(|record| record.status == HostStatus::Down)
    };
    let mut workspaces = std::mem::take(&mut backup.workspaces);
    workspaces.update_where(
        |_, _| true,
        |name, workspace| {
            workspace.generation = match running.workspaces.get(name) {
                Some(now) if same_container(now, workspace) => {
                    workspace.generation.max(now.generation)
                }
                Some(now) => workspace.generation.max(now.generation) + 1,
                None => workspace.generation,
            };
            // The policies start afresh: a backup's activity is as old as the backup (an 8-day-old
            // one would make the whole fleet look idle for 7 days), and its destroy notices were
            // shown days ago, or never to the running cluster's users. A restore counts as a use,
            // and a destroy by policy is announced again in full.
            workspace.lifecycle.touch(Activity {
                at: origin.at,
                kind: ActivityKind::Restored,
            });
            workspace.lifecycle.notices.clear();
            if down(&workspace.host) && workspace.state != WorkspaceState::Destroying {
                workspace.state = WorkspaceState::Lost;
            } else if !down(&workspace.host) && workspace.state == WorkspaceState::Lost {
                workspace.state = WorkspaceState::Scheduled;
            }
        },
    );
    let mut foreign_ports = running.foreign_ports;
    for (key, _) in running.ports {
        if !backup.ports.contains_key(&key) {
            foreign_ports.insert(key, origin.at);
        }
    }
    let mut desired_versions = BTreeMap::new();
    for host in hosts.keys() {
        let was = running.desired_versions.get(host).copied().unwrap_or(0);
        let backed_up = backup.desired_versions.get(host).copied().unwrap_or(0);
        desired_versions.insert(host.clone(), was.max(backed_up) + 1);
    }
    let mut usage: BTreeMap<HostId, Usage> = BTreeMap::new();
    for workspace in workspaces.values() {
        usage
            .entry(workspace.host.clone())
            .or_default()
            .add(workspace.spec.class);
    }
    let mut state = State {
        hosts,
        workspaces,
        ports: backup.ports,
        foreign_ports,
        limits: backup.limits,
        host_limits: backup.host_limits,
        desired_versions,
        journal: running.journal,
        journal_by_time: running.journal_by_time,
        member_addresses: running.member_addresses,
        usage,
        events: backup.events,
        backup_schedule: running.backup_schedule,
        notices: running.notices.without_policy_notices(),
        maintenance: running.maintenance,
        policies: backup.policies,
        // Credentials rotated since the backup must not come back: the running cluster's stay,
        // unless it has none (a fresh cluster rebuilt from the backup).
        credentials: if running.credentials.is_empty() {
            backup.credentials
        } else {
            running.credentials
        },
        security: Security::merged_for_restore(running.security, backup.security),
        // The CA belongs to the running cluster: a backup never brings back an old CA, nor a
        // rotation's sealed key.
        ca_rotations: running.ca_rotations,
        events_by_request: backup.events_by_request,
        on_host: BTreeMap::new(),
        tally: Default::default(),
        overridden: BTreeSet::new(),
        host_ids: Vec::new(),
        room: BTreeSet::new(),
        changed_hosts: ChangedHosts::All,
        roster_changed: Default::default(),
    };
    state.on_host = state.hosts_index();
    state.tally = state.tally_index();
    state.overridden = state.overrides_index();
    state.host_ids = state.hosts.keys().cloned().collect();
    state.room = state.room_index();
    // The running state's largest tables are freed on a thread of their own: a quarter of a
    // million records took the Raft thread hundreds of milliseconds to free.
    free_aside((
        running.workspaces,
        running.events,
        running.events_by_request,
    ));
    state
}

/// Frees `tables` on a thread of their own (or here, if no thread can be had).
fn free_aside<T: Send + 'static>(tables: T) {
    let _ = std::thread::Builder::new()
        .name("restore-free".into())
        .spawn(move || drop(tables));
}

/// Whether the running cluster's workspace runs in the container the backup's record describes:
/// same host, same spec, same ports. Its container is then kept as it is.
fn same_container(running: &WorkspaceRecord, backup: &WorkspaceRecord) -> bool {
    running.host == backup.host && running.spec == backup.spec && running.ports == backup.ports
}

/// Why a backup's state cannot be restored by this build, if it cannot: a state format other than
/// this one's, newer or older (there is no migration between state formats yet). Online and
/// offline restores refuse alike.
pub fn format_refusal(header: &BackupHeader) -> Option<WireError> {
    if header.state_format == STATE_FORMAT {
        return None;
    }
    let which = if header.state_format > STATE_FORMAT {
        "a newer"
    } else {
        "an older"
    };
    Some(WireError::new(
        ErrorCode::BackupVersionUnsupported,
        format!(
            "backup {} holds state format {}, made by {which} Nexus; this one restores state \
             format {STATE_FORMAT} only",
            header.id, header.state_format
        ),
    ))
}

#[cfg(test)]
mod tests;
