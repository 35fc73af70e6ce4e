//! The replicated state machine: the fleet's truth, changed only by applying [`Proposal`]s from
//! the Raft log in order.
//!
//! Pure and deterministic: [`State::apply`] reads no clock, RNG, disk or socket. Time and ids come
//! in the proposal (the proposer stamps them). Every table is a `BTreeMap`. `apply` never fails:
//! a proposal that breaks a rule becomes [`Outcome::Rejected`], the same on every replica, and it
//! re-checks every limit, so two proposals that each fit alone can never overfill a host together.
//! A request id seen before is answered with its first outcome and changes nothing.
//!
//! Creates are scheduled here, at apply: the coordinator proposes them in batches
//! ([`Command::PlaceWorkspaces`]), and each is placed by the pure scheduler over the state as the
//! creates before it left it (`placement`), so every replica places alike. A create that comes
//! with its placement ([`Command::CreateWorkspace`]) is checked by the same fit rules.
//!
//! This module holds the tables ([`State`] and its records) and `apply`, which hands each command
//! to the module of its concern: `hosts`, `limits`, `workspaces`, `reports` (what agents
//! observe), `ports`, `placement`, with `desired` (each host's desired state and its version),
//! `journal` (completed request ids) and `events` (each workspace's recent events and the request
//! that last changed it, recorded by the others as they apply) beside them; `command` is the log's
//! vocabulary, `snapshot` the state's bytes, `invariants` what the tests check after every apply.
//!
//! Not here: Raft and storage (`consensus`, `store`), the scheduler's filter and score
//! (`scheduler`, `fit`), and soft state such as heartbeats and stats.

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::backup::BackupSchedule;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::{HostInfo, HostStatus, PortBinding, WorkspaceSpec, WorkspaceState};
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};
use serde::{Deserialize, Serialize};

mod command;
mod credentials;
mod desired;
mod events;
mod hosts;
mod invariants;
mod journal;
mod lifecycle;
mod limits;
mod maintenance;
mod notices;
mod owners;
mod placement;
mod ports;
mod reports;
mod restore;
mod rotation;
mod security;
mod snapshot;
mod workspace_table;
mod workspaces;
mod worktrees;

pub use command::{Command, ENTRY_VERSION, OWNED_ENTRIES, Outcome, PlaceRequest, Proposal};
pub use credentials::{CredentialRecord, Credentials, Resealed, Sealed};
pub use desired::ChangedHosts;
pub use events::{EVENT_TEXT_BYTES, EVENTS_KEPT, History, RECORD_EVENTS_MAX};
use hosts::RosterChanged;
pub use invariants::BrokenInvariant;
pub use journal::JOURNAL_RETENTION_MS;
pub use lifecycle::{Lifecycle, Policies, PolicyCopy};
pub use maintenance::Maintenance;
pub use nexus_protocol::model::{Limits, LimitsPatch};
pub use notices::{NOTICES_MAX, Notices};
pub use ports::FOREIGN_PORT_MEMORY_MS;
pub use restore::{ReadBackup, format_refusal};
pub use rotation::{CaRotation, CaRotations, CaStep, NewCa, TrustedCa};
pub use security::{Security, TokenRecord};
pub use snapshot::{STATE_FORMAT, SnapshotCopy, SnapshotError};
#[cfg(test)]
pub(crate) use workspace_table::test_record;
pub use workspace_table::{Records, Workspaces};

pub use crate::fit::{Unfit, Usage};

/// A table of the state that grows with the fleet's workspaces: copied in constant time, the
/// copy and the original sharing what neither changed since, so that a snapshot encodes a copy
/// off the Raft thread ([`State::snapshot_copy`]). Serialized as std's `BTreeMap` is (a length,
/// then the pairs in order), so the snapshot bytes are the same.
pub type Map<K, V> = imbl::OrdMap<K, V>;
/// The set beside [`Map`], serialized as std's `BTreeSet`.
pub type Set<T> = imbl::OrdSet<T>;

/// The whole replicated state. Serialized as it is for snapshots, so its fields (and the
/// records') are snapshot bytes in this order: a change to them is a new snapshot format.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    hosts: Map<HostId, HostRecord>,
    /// Every change to a workspace moves its host's epoch ([`Workspaces`]).
    workspaces: Workspaces,
    /// Every allocated host port and the workspace that holds it: no port is given twice.
    ports: Map<(HostId, u16), WorkspaceName>,
    /// Ports an agent found held by something else, and when: skipped for
    /// [`FOREIGN_PORT_MEMORY_MS`] when ports are handed out.
    foreign_ports: BTreeMap<(HostId, u16), Timestamp>,
    limits: Limits,
    host_limits: BTreeMap<HostId, LimitsPatch>,
    /// Each host's desired-state version: bumped whenever what that host should run changes.
    desired_versions: BTreeMap<HostId, u64>,
    /// Completed requests and their outcomes, for idempotent retries.
    journal: Map<RequestId, (Timestamp, Outcome)>,
    /// The journal in time order, for pruning.
    journal_by_time: Set<(Timestamp, RequestId)>,
    /// The addresses of coordinators added after the cluster was founded (founders' come from
    /// each node's configuration). Written by the Raft node when it applies a membership change.
    member_addresses: BTreeMap<NodeId, String>,
    /// Per host: how many workspaces it holds and what they are promised. An index of
    /// `workspaces`, kept where workspaces come and go, so that the scheduler's filter costs
    /// the same however many workspaces the fleet has.
    usage: BTreeMap<HostId, Usage>,
    /// Each workspace's recent events and the request that last changed what its host should do
    /// with it; forgotten with the workspace.
    events: Map<WorkspaceName, History>,
    /// When the leader backs the state up by itself, and how many backups each node keeps.
    backup_schedule: BackupSchedule,
    /// What the CLI shows users: admins' announcements, policies' warnings.
    notices: Notices,
    /// Host maintenance: the weekly window, the last scheduled run.
    maintenance: Maintenance,
    /// The lifecycle policies: the cluster's and hosts' (workspaces' are in their records).
    policies: Policies,
    /// The credential store: each credential sealed under a key the state never holds.
    credentials: Credentials,
    /// Join tokens, the certificates the cluster knows, the deny list.
    security: Security,
    /// A CA rotation in progress, the last one finished and the CA certificates trusted since.
    ca_rotations: CaRotations,
    /// Which workspaces hold events under each request id: an index of `events`, so that a
    /// request's record costs its own events rather than the fleet's. Derived like `on_host`.
    #[serde(skip)]
    events_by_request: BTreeSet<(RequestId, WorkspaceName)>,
    /// Which workspaces each host holds: an index of `workspaces`, so that a host's desired state
    /// costs that host's workspaces rather than the fleet's. Derived, so not serialized: rebuilt
    /// when a snapshot is read.
    #[serde(skip)]
    on_host: BTreeMap<HostId, BTreeSet<WorkspaceName>>,
    /// Per host, how many of its workspaces are on their way somewhere (`fit::is_in_flight`),
    /// and how many workspaces are in each state: counts of `workspaces`, kept wherever a
    /// workspace's state changes ([`hosts::Tally`]). Derived like `on_host`.
    #[serde(skip)]
    tally: hosts::Tally,
    /// The workspaces with a policy override of their own: an index of `workspaces`, so that the
    /// policy loop's pace, read every second, costs the overrides rather than the fleet. Derived
    /// like `on_host`.
    #[serde(skip)]
    overridden: BTreeSet<WorkspaceName>,
    /// The hosts' ids in order, for the scheduler to start its search anywhere in the fleet.
    /// Derived like `on_host`.
    #[serde(skip)]
    host_ids: Vec<HostId>,
    /// The hosts below their workspace limit: an index of `usage` and the limits, so that near a
    /// full fleet a create visits the hosts with room rather than all of them
    /// ([`crate::scheduler::FleetView::with_room`]). Derived like `on_host`.
    #[serde(skip)]
    room: BTreeSet<HostId>,
    /// Which hosts' desired states changed since the driver last looked, so that only those
    /// hosts' watches wake. A note for this process, not replicated state: never serialized,
    /// never compared.
    #[serde(skip)]
    changed_hosts: ChangedHosts,
    /// Whether the roster (which hosts are in the fleet, and which of them are down) changed
    /// since the driver last looked: what a heartbeat asks of the state. A note for this
    /// process, like `changed_hosts`.
    #[serde(skip)]
    roster_changed: RosterChanged,
}

/// A host as the state knows it: what its agent registered, and its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub info: HostInfo,
    /// What the scheduler goes by: `Down` while the host is silent, else `admin_status`.
    pub status: HostStatus,
    /// What its admins set (ready, draining or cordoned), kept while the host is down so that a
    /// cordoned host that fails and returns is still cordoned.
    pub admin_status: HostStatus,
    pub registered_at: Timestamp,
}

/// A workspace as the state knows it: its spec and owner, where it is placed, what is wanted
/// of it and what its agent last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    pub spec: WorkspaceSpec,
    pub owner: UserName,
    pub host: HostId,
    pub ports: Vec<PortBinding>,
    pub desired: DesiredRun,
    pub state: WorkspaceState,
    /// Bumped when the container must be recreated.
    pub generation: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_error: Option<WireError>,
    /// Stopping in order to start again: the next stopped report from its agent starts it.
    pub restart_pending: bool,
    /// Its host ports were already reassigned once after a `PORT_CONFLICT`; a second conflict
    /// leaves it failed for a person to look at.
    pub port_reassigned: bool,
    /// What its lifecycle policies go by: when it was last in use.
    pub lifecycle: Lifecycle,
    /// The worktree its host made of its repository (`spec.repo`), once the host reported it.
    pub worktree: Option<nexus_protocol::git::WorktreeFacts>,
}

impl State {
    /// Applies one proposal. Deterministic: the same state and proposal give the same result on
    /// every replica.
    pub fn apply(&mut self, proposal: &Proposal) -> Outcome {
        self.apply_read(proposal, None)
    }

    /// [`State::apply`], with a restore's backup already read from the proposal's own bytes
    /// ([`ReadBackup::read`], off the Raft thread); `None` reads it here.
    pub fn apply_read(&mut self, proposal: &Proposal, read: Option<ReadBackup>) -> Outcome {
        if let Some((_, outcome)) = self.journal.get(&proposal.request_id) {
            return outcome.clone();
        }
        let origin = Origin {
            request_id: proposal.request_id,
            at: proposal.at,
            proposer: &proposal.proposer,
        };
        let outcome = match &proposal.command {
            Command::Restore { .. } => {
                let read = read.unwrap_or_else(|| ReadBackup::read(proposal));
                self.restore(origin, read)
            }
            command => self.execute(origin, command),
        };
        self.remember(proposal.request_id, proposal.at, outcome.clone());
        outcome
    }

    /// The backup schedule every leader follows.
    pub fn backup_schedule(&self) -> BackupSchedule {
        self.backup_schedule
    }

    /// Rows per table, for a backup's header: hosts, workspaces, allocated ports, events (of
    /// every workspace) and the journal of completed requests.
    pub fn table_counts(&self) -> Vec<(String, u64)> {
        let events: usize = self.events.values().map(History::len).sum();
        [
            ("hosts", self.hosts.len()),
            ("workspaces", self.workspaces.len()),
            ("ports", self.ports.len()),
            ("events", events),
            ("journal", self.journal.len()),
        ]
        .into_iter()
        .map(|(table, rows)| (table.to_string(), rows as u64))
        .collect()
    }

    /// The state for a new cluster made from a backup of this one: the addresses of members
    /// added to the old cluster are forgotten (the new one's members are its founders').
    pub fn for_new_cluster(mut self) -> State {
        self.member_addresses.clear();
        self
    }

    /// Coordinators' addresses learned from membership changes.
    pub fn member_addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.member_addresses
    }

    /// Records (or, with `None`, forgets) a member's address. Called only while applying a
    /// committed membership change, so every replica does the same.
    pub fn set_member_address(&mut self, node: NodeId, address: Option<String>) {
        match address {
            Some(address) => self.member_addresses.insert(node, address),
            None => self.member_addresses.remove(&node),
        };
    }

    /// Does what `command` asks, at the origin's time; every rule broken is a rejected outcome.
    fn execute(&mut self, origin: Origin<'_>, command: &Command) -> Outcome {
        let at = origin.at;
        match command {
            Command::RegisterHost(info) => self.register_host(at, info),
            Command::SetHostStatus { host, status } => self.set_host_status(origin, host, *status),
            Command::CreateWorkspace {
                spec,
                owner,
                host,
                ports,
            } => self.create(origin, spec, owner, host, ports),
            Command::SetDesiredRun { name, run } => self.set_desired_run(origin, name, *run),
            Command::RecordObserved { host, observed } => self.record_observed(at, host, observed),
            Command::DestroyWorkspace { name } => self.destroy(origin, name),
            Command::SetLimits { host, patch } => self.set_limits(host.as_ref(), patch),
            Command::RestartWorkspace { name } => self.restart(origin, name),
            Command::SwitchWorkspace { owner, name } => self.switch(origin, owner, name),
            Command::RepairWorkspace { name } => self.repair(origin, name, None),
            Command::DestroyStopped { names } => self.destroy_stopped(origin, names),
            Command::HostReturned { host } => self.host_returned(origin, host),
            Command::PlaceWorkspaces(requests) => {
                self.place_all(at, requests);
                Outcome::Applied
            }
            Command::SetBackupSchedule(schedule) => {
                if schedule.keep == 0 {
                    return reject(
                        ErrorCode::InvalidArgument,
                        "a backup schedule keeps at least one backup",
                    );
                }
                self.backup_schedule = *schedule;
                Outcome::Applied
            }
            // `apply_read` takes a restore before it gets here (its backup may be read already).
            Command::Restore { .. } => reject(
                ErrorCode::Internal,
                "a restore is applied with its backup read",
            ),
            Command::RecordActivity { host, activity } => self.record_activity(host, activity),
            Command::PostNotice {
                text,
                audience,
                source,
                until,
            } => self.post_notice(origin, text, audience, source, *until),
            Command::ClearNotices(ids) => self.clear_notices(ids),
            Command::SetMaintenanceSchedule(schedule) => self.set_maintenance_schedule(schedule),
            Command::RecordMaintenance(summary) => self.record_maintenance(summary),
            Command::SetPolicy { scope, patch } => self.set_policy(scope, patch),
            Command::HoldWorkspace { name, held } => self.hold(origin, name, *held),
            Command::ExtendLifetime { name, by_secs } => {
                self.extend_lifetime(origin, name, *by_secs)
            }
            Command::StopIdle { stops, by_policy } => self.stop_idle(origin, stops, *by_policy),
            Command::PolicyDestroy { name, reason } => self.policy_destroy(origin, name, reason),
            Command::RecordWorktree {
                host,
                workspace,
                facts,
            } => self.record_worktree(host, workspace, facts),
            Command::SetCredential { spec, sealed } => self.set_credential(at, spec, sealed),
            Command::RotateCredential { spec, sealed } => self.rotate_credential(at, spec, sealed),
            Command::DeleteCredential { name } => self.delete_credential(name),
            Command::ResealCredentials(resealed) => self.reseal_credentials(resealed),
            Command::TouchCredential { name, host } => self.touch_credential(at, name, host),
            Command::CreateToken {
                id,
                spec,
                secret_hash,
                created_by,
            } => self.create_token(at, id, spec, secret_hash, created_by),
            Command::RevokeToken { id } => self.revoke_token(at, id),
            Command::Enrol {
                token_id,
                secret_hash,
                identity,
                cert,
            } => self.enrol(at, token_id, secret_hash, identity, cert),
            Command::RecordCertificate { identity, cert } => {
                self.record_certificate(identity, cert)
            }
            Command::RevokeUser { name, by } => self.deny(
                at,
                &Identity::User {
                    name: name.clone(),
                    role: nexus_protocol::Role::User,
                },
                by,
                "user revoked",
            ),
            Command::RemoveHost { host, force, by } => {
                let outcome = self.remove_host(origin, host, *force, by);
                if outcome == Outcome::Applied {
                    self.ca_rotations.forget(at, &Identity::Agent(host.clone()));
                }
                outcome
            }
            Command::StartCaRotation {
                new,
                coordinators,
                by,
            } => self.start_ca_rotation(at, new, coordinators, by),
            Command::CaProgress {
                identity,
                new_ca,
                step,
            } => self.ca_progress(at, identity, new_ca, *step),
            Command::FinishCaRotation { .. } => self.finish_ca_rotation(at),
            Command::Owned(change) => self.as_owner(origin, change),
        }
    }
}

/// Where a change comes from: the request that asked for it, when it was proposed and by whom.
/// What the events it causes record of it.
#[derive(Debug, Clone, Copy)]
struct Origin<'a> {
    request_id: RequestId,
    at: Timestamp,
    proposer: &'a Identity,
}

/// A refusal: `apply`'s answer to a command that breaks a rule.
fn reject(code: ErrorCode, message: impl Into<String>) -> Outcome {
    Outcome::rejected(WireError::new(code, message))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod reports_tests;
#[cfg(test)]
mod roster_tests;

#[cfg(test)]
mod security_tests;

#[cfg(test)]
mod snapshot_tests;

#[cfg(test)]
mod rotation_tests;
