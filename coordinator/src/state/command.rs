//! The vocabulary of the Raft log: a [`Proposal`] carries a [`Command`], and applying it gives
//! an [`Outcome`]. All of it is bincode-encoded in log entries and snapshots, so it only grows:
//! a new need is a new variant at the end, never a changed or reordered one.
//!
//! Not here: what applying each command does (the other modules of `state`).

use nexus_protocol::backup::{BackupHeader, BackupSchedule};
use nexus_protocol::clock::Timestamp;
use nexus_protocol::credentials::CredentialSpec;
use nexus_protocol::error::WireError;
use nexus_protocol::identity::Identity;
use nexus_protocol::join::{CertRecord, TokenId, TokenSpec};
use nexus_protocol::maintenance::{MaintenanceSchedule, MaintenanceSummary};
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::{
    Activity, HostInfo, HostStatus, LimitsPatch, NoticeAudience, NoticeSource, PortBinding,
    WorkspaceSpec,
};
use nexus_protocol::policy::{PolicyPatch, PolicyScope};
use nexus_protocol::{HostId, RequestId, UserName, WorkspaceName};
use serde::{Deserialize, Serialize};

use super::credentials::{Resealed, Sealed};

/// One entry of the Raft log: who asked, when, under which request id, for what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: RequestId,
    /// The proposer's clock when it proposed; every replica applies this same time.
    pub at: Timestamp,
    pub proposer: Identity,
    pub command: Command,
}

/// What a proposal asks. **Append-only**: bincode encodes the variant index, and old log entries
/// must keep their meaning. A new need is a new variant at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Add a host, or update the facts of a known one (its status is kept).
    RegisterHost(HostInfo),
    SetHostStatus {
        host: HostId,
        status: HostStatus,
    },
    /// Create a workspace on `host` with these host ports: a placement chosen before proposing,
    /// which `apply` checks by the same fit rules. The coordinator's own creates go as
    /// [`Command::PlaceWorkspaces`] instead; tools and tests propose this one.
    CreateWorkspace {
        spec: WorkspaceSpec,
        owner: UserName,
        host: HostId,
        ports: Vec<PortBinding>,
    },
    SetDesiredRun {
        name: WorkspaceName,
        run: DesiredRun,
    },
    /// What a host's agent reports it observed.
    RecordObserved {
        host: HostId,
        observed: Vec<ObservedWorkspace>,
    },
    /// Start destroying a workspace; it is forgotten once its host reports it gone.
    DestroyWorkspace {
        name: WorkspaceName,
    },
    /// Change the cluster limits (`host: None`) or one host's overrides.
    SetLimits {
        host: Option<HostId>,
        patch: LimitsPatch,
    },
    /// Stop the workspace's container, then start it again once its agent reports it stopped.
    RestartWorkspace {
        name: WorkspaceName,
    },
    /// Stop every other workspace `owner` wants running and run `name` (a context switch).
    SwitchWorkspace {
        owner: UserName,
        name: WorkspaceName,
    },
    /// Recreate the container from its spec: a new generation, wanted running.
    RepairWorkspace {
        name: WorkspaceName,
    },
    /// Destroy those of `names` that are still stopped (`nexus workspace cleanup`).
    DestroyStopped {
        names: Vec<WorkspaceName>,
    },
    /// A down host heartbeats again: it returns to the status its admins gave it, and its lost
    /// workspaces to what its agent reports.
    HostReturned {
        host: HostId,
    },
    /// Creates, many in one entry: each is scheduled here, at apply, against the state as the
    /// creates before it left it, and its outcome journaled under its own request id. The
    /// scheduler is a pure function of the state and the proposal's time, so every replica
    /// places alike; and no two creates can both take a host's last room.
    PlaceWorkspaces(Vec<PlaceRequest>),
    /// The leader's backup schedule, for every leader to follow.
    SetBackupSchedule(BackupSchedule),
    /// Replace the state with a backup's (`state`: its payload, the snapshot bytes), keeping
    /// what belongs to the running cluster rather than to the backup (see `state::restore`).
    Restore {
        header: BackupHeader,
        /// Read and written whole (the encoding of a plain `Vec<u8>`, as entries of older
        /// builds have it).
        #[serde(with = "nexus_protocol::codec::bytes")]
        state: Vec<u8>,
    },
    /// What agents saw their workspaces used for: each workspace's latest activity.
    RecordActivity {
        /// The host whose agent reported: only its own workspaces are touched.
        host: HostId,
        activity: Vec<(WorkspaceName, Activity)>,
    },
    /// Post a notice (numbered at apply).
    PostNotice {
        text: String,
        audience: NoticeAudience,
        source: NoticeSource,
        until: Option<Timestamp>,
    },
    /// Clear the notices of these ids.
    ClearNotices(Vec<u64>),
    // Host maintenance (issue 23).
    /// The weekly maintenance window, for every leader to follow.
    SetMaintenanceSchedule(MaintenanceSchedule),
    /// What the leader's scheduled maintenance run did, daemon by daemon (`maintenance status`).
    RecordMaintenance(MaintenanceSummary),
    /// Change the cluster's lifecycle policy, or a host's or a workspace's override of it.
    SetPolicy {
        scope: PolicyScope,
        patch: PolicyPatch,
    },
    /// Hold a workspace (exempt from every automatic action), or release it.
    HoldWorkspace {
        name: WorkspaceName,
        held: bool,
    },
    /// Push a workspace's lifetime out by this many seconds.
    ExtendLifetime {
        name: WorkspaceName,
        by_secs: u64,
    },
    /// Stop each workspace still running, not held and idle at least its seconds: the
    /// inactivity policy's (`by_policy`) or an admin's bulk stop.
    StopIdle {
        stops: Vec<(WorkspaceName, u64)>,
        by_policy: bool,
    },
    /// Destroy a workspace whose lifetime is over and whose owner was told, if still due.
    PolicyDestroy {
        name: WorkspaceName,
        reason: String,
    },
    // Git worktrees (issue 24, workspaces from a repository).
    /// The worktree a host made for a workspace: kept in its record if that host holds it.
    RecordWorktree {
        host: HostId,
        workspace: WorkspaceName,
        facts: nexus_protocol::git::WorktreeFacts,
    },
    // The credential store (issue 24, credentials). The leader seals each secret before it
    // proposes (apply stays deterministic); the state keeps only ciphertext.
    /// Store a credential, or replace the one of its name.
    SetCredential {
        spec: CredentialSpec,
        sealed: Sealed,
    },
    /// Replace a credential's secret, sealed for `spec`: refused if the record's spec changed
    /// since (its ciphertext would not open under the new one).
    RotateCredential {
        spec: CredentialSpec,
        sealed: Sealed,
    },
    DeleteCredential {
        name: String,
    },
    /// Records re-sealed under the leader's newest key (`credentials rotate-key`), each only if
    /// it still holds what the leader re-sealed.
    ResealCredentials(Vec<Resealed>),
    /// A host was given a credential (recorded at most once a minute per credential).
    TouchCredential {
        name: String,
        host: HostId,
    },
    // Fleet security (issue 25). The proposer hashes a token's secret and signs certificates
    // before it proposes; the state keeps hashes and certificates' fingerprints only.
    /// Keep a new join token.
    CreateToken {
        id: TokenId,
        spec: TokenSpec,
        secret_hash: String,
        created_by: String,
    },
    RevokeToken {
        id: TokenId,
    },
    /// Redeem one use of a token for `identity`, recording the certificate signed for it (which
    /// is handed out only if this is applied).
    Enrol {
        token_id: TokenId,
        secret_hash: String,
        identity: Identity,
        cert: CertRecord,
    },
    /// The newest certificate of an identity: a renewal, a coordinator's own.
    RecordCertificate {
        identity: Identity,
        cert: CertRecord,
    },
    /// Shut a user's certificates out.
    RevokeUser {
        name: UserName,
        by: String,
    },
    /// Take a host out of the fleet (refused while it holds workspaces, unless `force`) and shut
    /// its certificates out.
    RemoveHost {
        host: HostId,
        force: bool,
        by: String,
    },
    // A CA rotation (issue 25, `nexus admin ca rotate`). The leader makes the new CA and seals
    // its key under the coordinators' seal key before it proposes; the state keeps ciphertext.
    /// Start a rotation to `new`, waiting for `coordinators` (the members when it was proposed)
    /// and every host.
    StartCaRotation {
        new: super::NewCa,
        coordinators: Vec<nexus_protocol::NodeId>,
        by: String,
    },
    /// A party took a step of the rotation to the CA of SHA-256 `new_ca`.
    CaProgress {
        identity: Identity,
        new_ca: String,
        step: super::CaStep,
    },
    /// Finish the rotation in progress now, leaving the parties not done to enrol again.
    FinishCaRotation {
        by: String,
    },
    /// A user's change of workspaces (entry version 2, [`ENTRY_VERSION`]): applied only to
    /// workspaces the proposer owns, unless the proposer is an admin. The coordinator checks
    /// ownership before it proposes, but an entry can commit seconds after that read (a retried
    /// write's first attempt), when the name may be another user's new workspace.
    Owned(Box<Command>),
}

impl Command {
    /// The change itself: the command an [`Command::Owned`] carries, else this one. What a
    /// reader of the log (traces, start SLIs) looks at.
    pub fn inner(&self) -> &Command {
        match self {
            Command::Owned(change) => change.inner(),
            command => command,
        }
    }
}

/// The newest version of log entries this build applies. A coordinator proposes an entry of a
/// newer version than 1 only once every member of its cluster has said it applies that version
/// (`PeerRequest::EntryVersion`), so that a rolling upgrade never hands a member an entry it
/// cannot read. 1: every entry before [`Command::Owned`]; 2: [`Command::Owned`].
pub const ENTRY_VERSION: u32 = 2;
/// The version that brought [`Command::Owned`].
pub const OWNED_ENTRIES: u32 = 2;

/// One create of a [`Command::PlaceWorkspaces`] batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceRequest {
    /// The client's request id: a retry is answered with this create's first outcome.
    pub request_id: RequestId,
    pub owner: UserName,
    pub spec: WorkspaceSpec,
    /// `None`: the cluster's scoring.
    pub scoring: Option<crate::scheduler::Scoring>,
}

/// What applying a proposal did. Identical on every replica. The error is boxed: the journal
/// keeps an outcome for every request, most of them `Applied`, and inline the error made each
/// one 112 bytes (serialized as the error itself, so the snapshot's bytes are as they were).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    Rejected(Box<WireError>),
}

impl Outcome {
    /// Refused with `error`.
    pub fn rejected(error: WireError) -> Outcome {
        Outcome::Rejected(Box::new(error))
    }
}
