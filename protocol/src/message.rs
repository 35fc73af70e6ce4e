//! Everything that crosses the wire after the handshake.
//!
//! Each bidirectional QUIC stream carries one request: the client sends one [`RequestFrame`] and
//! finishes its side; the server answers with one [`ResponseFrame`], or, for a subscription (such
//! as an agent's watch of its desired state), with a frame per update until either side closes.
//!
//! **These enums are append-only.** bincode encodes a variant by its index, so a variant is never
//! removed, reordered or changed; a new need gets a new variant at the end. The golden-byte tests
//! in `tests/golden.rs` fail on an accidental change.

use serde::{Deserialize, Serialize};

use crate::ca_rotation::{CaStatus, TrustBundle};

use crate::clock::Timestamp;
use crate::credentials::{
    CredentialAsk, CredentialCheckReport, CredentialProbe, CredentialSpec, CredentialView,
    GrantedCredential, KeyRotationReport, Secret,
};
use crate::debug::{
    ContainerEvent, Diagnostic, LogQuery, LogRecord, ReloadReport, RequestRecord, SyncSessionView,
    WorkspaceEvent, WorkspaceHealth,
};
use crate::error::WireError;
use crate::git::{KeptBranch, WorktreeFacts, WorktreeReport, WorktreeStatus};
use crate::id::{HostId, NodeId, RequestId, UserName, WorkspaceName};
use crate::identity::{Identity, IdentityKind};
use crate::join::{
    CertView, CreatedToken, DenyList, Issued, RenewRequest, TokenId, TokenSpec, TokenView,
};
use crate::maintenance::{
    MaintenanceReport, MaintenanceRequest, MaintenanceSchedule, MaintenanceStatus,
};
pub use crate::model::DesiredRun;
use crate::model::{
    Activity, BackupInfo, BackupSchedule, ContainerStats, HostInfo, HostStats, HostStatus,
    LimitsPatch, Notice, Scoring, WorkspaceSpec, WorkspaceView,
};
use crate::policy::{PoliciesView, PolicyPatch, PolicyScope};

mod byte_runs;
mod views;

pub use views::{
    Assignment, ClusterStatus, DesiredState, ExecResult, FleetStats, HostLimits, HostView,
    LifecycleView, LimitsView, MemberRole, MemberView, NetworkView, ObservedWorkspace, OrphanView,
    Pong, PortAllocation, WorkspaceDetail, WorkspaceUsage,
};

/// The protocol version both sides must share. Raised on an incompatible change of any message
/// (which the append-only rule should make rare).
pub const PROTOCOL_VERSION: u16 = 1;

/// The TLS application protocol. It names the major protocol generation only; versions within it
/// are negotiated by the hello, so that a mismatch is reported clearly instead of as a TLS alert.
pub const ALPN: &[u8] = b"nexus/1";

/// The body of the client's first frame (after the fixed magic and version, see
/// [`crate::codec::encode_hello`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The software version, for logs and `admin status`.
    pub software: String,
    /// The role the client means to speak in. It must match the identity in its certificate.
    pub role: IdentityKind,
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted {
        software: String,
        /// The server's own identity.
        server: Identity,
        /// The client's identity as the server read it from the client's certificate.
        client: Identity,
    },
    Refused(WireError),
}

/// A request and the id that names it end to end (retries, traces, errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub request_id: RequestId,
    pub request: Request,
}

/// A response (or one update of a subscription) to the request of the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub request_id: RequestId,
    pub result: Result<Response, WireError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Is the server there, and who is it? Answered by [`Response::Pong`].
    Ping,
    /// From an agent, about its own host.
    Agent(AgentRequest),
    /// From a user (or an admin), about workspaces.
    Workspace(WorkspaceRequest),
    /// From an admin, about the fleet and the cluster.
    Admin(AdminRequest),
    /// From another coordinator of the same cluster (refused from anyone else).
    Peer(PeerRequest),
    /// A read answered from the receiving coordinator's own replica, without confirming with the
    /// leader that it is current (the default read is linearizable). Cheaper, works without a
    /// quorum, and may be behind by a few entries.
    Stale(StaleRead),
    /// To an agent, from a user or an admin: about one workspace on the agent's host (`nexus
    /// workspace logs|exec`). The agent serves only the workspace's owner, or an admin.
    Host(HostRequest),
}

/// What a user asks of a workspace's host directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostRequest {
    /// The container's last `tail` lines (stdout and stderr): one [`Response::LogLines`]; with
    /// `follow`, a frame per batch of new lines after it, until the container stops.
    Logs {
        workspace: WorkspaceName,
        tail: u32,
        follow: bool,
    },
    /// Runs `command` in the running container, without a terminal or input, and answers
    /// [`Response::Exec`] when it ends.
    Exec {
        workspace: WorkspaceName,
        command: Vec<String>,
    },
    /// The host's workspace networks (admins only): [`Response::Networks`].
    Networks,
    /// One step of a file sync session with the workspace's files directory: `payload` is a
    /// request of the sync engine's (`nexus_sync::endpoint::Request`), encoded by
    /// [`crate::codec::encode_payload`]; answered with [`Response::Sync`].
    Sync {
        workspace: WorkspaceName,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The agent's own log records (admins only): [`Response::LogRecords`]; with `follow`, a
    /// frame per batch of new records after it.
    DaemonLogs(LogQuery),
    /// What the agent can tell about itself (admins only): [`Response::Diagnostic`].
    Diagnostic(Diagnostic),
    /// The workspace's health as the agent observes it: [`Response::Health`].
    Health(WorkspaceName),
    /// The engine's events for the workspace's container since a time (admins only):
    /// [`Response::ContainerEvents`].
    ContainerEvents {
        workspace: WorkspaceName,
        since: Option<Timestamp>,
    },
    /// The sync sessions the agent serves for the workspace: [`Response::SyncSessions`].
    SyncSessions(WorkspaceName),
    /// Wake the workspace's sync sessions for a cycle now: [`Response::Ack`].
    SyncFlush(WorkspaceName),
    /// Nexus containers on the host whose workspace the coordinator does not name (admins
    /// only): [`Response::Orphans`]. The agent leaves them alone; an admin decides.
    Orphans,
    /// Remove one orphan container, by its name (admins only): [`Response::Ack`]. Refused for a
    /// container whose workspace the desired state names.
    RemoveOrphan { container: String },
    /// Re-read the agent's configuration and apply its hot settings (admins only):
    /// [`Response::Reloaded`].
    ReloadConfig,
    // Host maintenance (issue 23).
    /// Prune the host's dangling images and unused volumes, never one a container uses or a
    /// workspace's spec names (admins, or a coordinator on the schedule):
    /// [`Response::Maintained`].
    Maintain(MaintenanceRequest),
    // Git worktrees and the credential store (issue 24).
    /// Try a credential from this host (`git ls-remote`, a registry login):
    /// [`Response::CredentialChecked`]. Only a coordinator may ask.
    CheckCredential(CredentialProbe),
    /// Verify (and with `repair`, mend) every worktree of this host's workspaces:
    /// [`Response::Worktrees`] with this host's report.
    Worktrees { repair: bool },
    /// How one workspace's worktree stands: [`Response::Worktree`].
    WorktreeStatus(WorkspaceName),
}

/// The reads that may be served stale. Writes have no stale form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaleRead {
    Admin(AdminRequest),
    Workspace(WorkspaceRequest),
}

/// Coordinator to coordinator. The payloads are opaque here: Raft's own encoding (protobuf) and the
/// coordinator's log-entry encoding, which only coordinators of one cluster exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft messages, each protobuf-encoded, all from the sending node. Answered [`Response::Ack`]
    /// once queued for the receiver's Raft node.
    Raft(#[serde(with = "byte_runs")] Vec<Vec<u8>>),
    /// A follower forwards a client's write (an encoded proposal) to the leader. Answered like the
    /// write: [`Response::Ack`] once applied, or the rejection.
    Propose(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One piece of a peer request too large for one frame (a Raft snapshot, a restore's
    /// proposal): `bytes` are `total` bytes' piece at `offset` of the request's encoding
    /// ([`crate::codec::encode_payload`] of a `PeerRequest`). The pieces of one `transfer` come
    /// in order on one connection; each is answered [`Response::Ack`] except the last, which is
    /// answered as the whole request is.
    Chunk {
        transfer: u64,
        offset: u64,
        total: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The newest version of log entries the receiving coordinator's build applies:
    /// [`Response::EntryVersion`]. A coordinator proposes an entry of a newer version only once
    /// every member has said it applies it (a build from before the question answers
    /// `PROTOCOL_ERROR`: version 1).
    EntryVersion,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentRequest {
    /// Join the fleet, or say again who this host is after a reconnect.
    Register(HostInfo),
    /// Still alive. Soft state: the leader keeps it in memory, never in the Raft log.
    Heartbeat {
        sequence: u64,
        stats: Option<HostStats>,
    },
    /// Subscribe to this host's desired state: a push of [`Response::Desired`] now (unless the
    /// agent already has `known_version`) and after every change.
    WatchDesired { known_version: Option<u64> },
    /// What the agent sees running, after reconciling.
    ReportObserved(Vec<ObservedWorkspace>),
    /// Per-workspace resource use, sent at the stats interval. Soft state, like heartbeats: the
    /// leader keeps the latest sample in memory.
    ContainerStats(Vec<ContainerStats>),
    /// Where this agent serves users' [`HostRequest`]s, as HOST:PORT (a name or address its
    /// certificate holds). Soft state on the leader, sent again after every (re)connection.
    Serving(String),
    /// [`AgentRequest::WatchDesired`], answered with [`Response::DesiredWithCauses`]: each push
    /// also names the request that last changed each workspace, so that the agent's work on it
    /// is traced under that request's id.
    WatchDesiredCauses { known_version: Option<u64> },
    /// What the agent saw its workspaces used for since its last such report (exec sessions,
    /// logs read, sync, port traffic), each workspace's latest: answered [`Response::Ack`]. The
    /// leader records it through Raft for the lifecycle policies.
    Activity(Vec<(WorkspaceName, Activity)>),
    // Git worktrees and the credential store (issue 24).
    /// A credential for an operation of one of this host's workspaces (a fetch, a pull):
    /// [`Response::Credential`], `None` when no stored credential serves it. Leader only.
    Credential(CredentialAsk),
    /// The worktree this host made for a workspace: recorded in its record. [`Response::Ack`].
    Worktree {
        workspace: WorkspaceName,
        facts: WorktreeFacts,
    },
    /// A destroy kept a branch with commits that exist nowhere else: told to its owner.
    /// [`Response::Ack`].
    KeptBranch { owner: UserName, kept: KeptBranch },
    /// A fresh certificate for this host, two thirds into its current one's life:
    /// [`Response::Issued`].
    Renew(RenewRequest),
    /// Subscribe to the fleet's deny list, which the agent's own endpoint (logs, exec, sync)
    /// enforces like the coordinators: a push of [`Response::DenyList`] now and after every
    /// change.
    WatchDenyList,
    /// Subscribe to the CA certificates to trust (a CA rotation changes them): a push of
    /// [`Response::TrustBundle`] now and after every change.
    WatchTrust,
    /// This host trusts the bundle of the rotation to the CA of this SHA-256 (it is written to
    /// its pki dir and in force): [`Response::Ack`].
    TrustsCa { new_ca: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkspaceRequest {
    Create(WorkspaceSpec),
    List,
    Inspect(WorkspaceName),
    Start(WorkspaceName),
    Stop(WorkspaceName),
    Restart(WorkspaceName),
    Destroy(WorkspaceName),
    /// Stop the user's current workspace and start this one.
    Switch(WorkspaceName),
    /// Recreate the container from its spec.
    Repair(WorkspaceName),
    /// Destroy the caller's stopped workspaces older than this many seconds.
    Cleanup {
        older_than_secs: u64,
    },
    /// Create, choosing the scoring for this one placement (`None`: the cluster's).
    CreateWith {
        spec: WorkspaceSpec,
        scoring: Option<Scoring>,
    },
    /// Everything known of one workspace: [`Response::WorkspaceDetail`].
    Describe(WorkspaceName),
    /// Where the workspace's host serves `logs` and `exec`: [`Response::Endpoint`].
    Endpoint(WorkspaceName),
    /// Admins: [`WorkspaceRequest::Cleanup`] of one user's workspaces, or everyone's.
    CleanupOf {
        owner: Option<UserName>,
        older_than_secs: u64,
    },
    /// The workspace's recent events, oldest first: [`Response::Events`].
    Events(WorkspaceName),
    /// The caller's current notices (the fleet's and their own): [`Response::Notices`].
    Notices,
    /// What the workspace's lifecycle policies go by and will do: [`Response::Lifecycle`].
    Lifecycle(WorkspaceName),
    /// Exempt the workspace from every automatic action (owner or admin):
    /// [`Response::Lifecycle`]. Its policy notices are cleared.
    Hold(WorkspaceName),
    /// Give the workspace back to its policies: [`Response::Lifecycle`].
    Release(WorkspaceName),
    // Git worktrees (issue 24).
    /// How the workspace's worktree stands, asked of its host: [`Response::Worktree`].
    Worktree(WorkspaceName),
    // A CA rotation (issue 25).
    /// A fresh certificate for this user (its role and name as now) over a key made on the
    /// user's machine, from the CA that signs now: what lets a CLI through a CA rotation
    /// without a new login. [`Response::Issued`].
    RenewSession(RenewRequest),
    // At scale (issue 28).
    /// The workspaces the caller may see (an admin: all), in name order, after `after`, at most
    /// `limit` (the server caps it at [`LIST_PAGE_MAX`]): [`Response::WorkspacePage`]. A fleet's
    /// whole list can pass a frame; this one never does.
    ListPage {
        after: Option<WorkspaceName>,
        limit: u32,
    },
    /// The workspaces the caller may see, as [`WorkspaceRequest::ListPage`] walks them, answered
    /// as a stream: a [`Response::WorkspacePage`] of at most [`LIST_PAGE_MAX`] after another,
    /// all of one read of the state (linearizable unless sent stale), the last with no `next`.
    /// No page waits on a round trip of its own, and each `next` is where a walk by pages goes
    /// on should the stream end early.
    ListStream,
    /// The workspace's detail now, then again each time it changes, as a stream of
    /// [`Response::WorkspaceDetail`]s, until it is gone (the stream's last update is then
    /// `WORKSPACE_NOT_FOUND`; also when another workspace takes its name) or the client closes
    /// it: what a command waiting for the workspace's host reads instead of asking again and
    /// again. Each detail is of the replica reached, as it applies each change; the first comes
    /// after a linearizable read (unless sent stale), so it is at least as new as the request.
    /// A replica cut off from its leader goes quiet rather than failing.
    Watch(WorkspaceName),
}

/// The most workspaces one [`WorkspaceRequest::ListPage`] answers (a view is well under 1 KiB,
/// so a page stays far below the 16 MiB frame).
pub const LIST_PAGE_MAX: u32 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The cluster's members, leader and term.
    Status,
    /// Every host with its status, workspaces, capacity and latest stats.
    Hosts,
    /// Add a coordinator: it joins as a learner, catches up, and is promoted to voter. Answered
    /// with the cluster's status once it votes.
    ClusterAdd {
        id: NodeId,
        address: String,
    },
    /// Remove a coordinator from the cluster.
    ClusterRemove(NodeId),
    /// Hand leadership to another voter.
    TransferLeader(NodeId),
    /// Drain, cordon or uncordon a host (`Ready`, `Draining` or `Cordoned`; `Down` is the failure
    /// detector's). Answered with the fleet's hosts.
    SetHostStatus {
        host: HostId,
        status: HostStatus,
    },
    /// Every allocated host port, fleet-wide.
    Ports,
    /// The cluster's limits and each host's overrides: [`Response::Limits`].
    Limits,
    /// Change the cluster's limits (`host: None`) or one host's overrides. Answered with the
    /// limits.
    SetLimits {
        host: Option<HostId>,
        patch: LimitsPatch,
    },
    /// The fleet in numbers: [`Response::FleetStats`].
    Stats,
    /// Every workspace container's latest resource sample, fleet-wide: [`Response::Usage`].
    Top,
    /// Where each host's agent serves [`HostRequest`]s, as the leader last heard:
    /// [`Response::Endpoints`].
    Endpoints,
    /// The answering coordinator's own log records: [`Response::LogRecords`]; with `follow`, a
    /// frame per batch of new records after it.
    DaemonLogs(LogQuery),
    /// What the answering coordinator can tell about itself: [`Response::Diagnostic`].
    Diagnostic(Diagnostic),
    /// What the replicated state remembers of a request: [`Response::RequestRecord`].
    RequestRecord(RequestId),
    /// Back up the replicated state now, at an index the leader confirmed: written into the
    /// leader's backup directory, answered [`Response::Backup`].
    BackupCreate,
    /// The backups in the answering coordinator's directory, newest first:
    /// [`Response::Backups`].
    BackupList,
    /// One backup of the answering coordinator's directory, its checksum verified:
    /// [`Response::Backup`] (or `BACKUP_NOT_FOUND`, `BACKUP_CORRUPT`, ...).
    BackupVerify(String),
    /// Up to `len` bytes of a backup file from `offset`: [`Response::BackupBytes`] (empty at
    /// the end). How the CLI fetches a backup larger than one frame.
    BackupRead {
        id: String,
        offset: u64,
        len: u32,
    },
    /// One piece of a backup file the CLI sends, at `offset` of `total` bytes, under an upload id
    /// it chose. Answered [`Response::Ack`], and the last piece with [`Response::Backup`] once the
    /// whole file is checked and kept in the answering coordinator's directory.
    BackupUpload {
        upload: String,
        offset: u64,
        total: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Replace the replicated state with a backup from the answering coordinator's directory
    /// (one Raft entry, applied alike on every replica). `force` restores another cluster's
    /// backup. Answered [`Response::Backup`] once applied.
    BackupRestore {
        id: String,
        force: bool,
    },
    /// The backup schedule ([`Response::BackupSchedule`]); with a value, change it first.
    BackupSchedule(Option<BackupSchedule>),
    /// Re-read the answering coordinator's configuration and apply its hot settings:
    /// [`Response::Reloaded`]. Never forwarded.
    ReloadConfig,
    // Host maintenance (issue 23).
    /// Compact the answering coordinator's state store (its `compact` flag; the agents' flags
    /// are ignored): [`Response::Maintained`]. Never forwarded.
    Maintain(MaintenanceRequest),
    /// The maintenance schedule and the last scheduled run ([`Response::Maintenance`]); with a
    /// value, change the schedule first.
    MaintenanceSchedule(Option<MaintenanceSchedule>),
    /// Post a notice for every user, or for one (`user`), shown until `until` (or until
    /// cleared): [`Response::Notices`] with the notice as posted (its id).
    PostNotice {
        text: String,
        until: Option<Timestamp>,
        user: Option<UserName>,
    },
    /// Every notice kept, whoever it is for, current or expired, oldest first:
    /// [`Response::Notices`].
    Notices,
    /// Clear the notices of these ids, or (`None`) every notice: [`Response::Notices`] with
    /// those left. An id that names no notice is refused, and nothing is cleared.
    ClearNotices(Option<Vec<u64>>),
    /// The lifecycle policies, cluster-wide and overridden: [`Response::Policies`].
    Policies,
    /// Change the cluster's policy, or a host's or a workspace's override of it: answered with
    /// the policies.
    SetPolicy {
        scope: PolicyScope,
        patch: PolicyPatch,
    },
    /// Push a workspace's lifetime out by this many seconds: [`Response::Lifecycle`]. Its
    /// destroy notices are cleared.
    ExtendLifetime {
        name: WorkspaceName,
        by_secs: u64,
    },
    /// Stop every running workspace idle at least this long, held ones excepted: answered
    /// [`Response::Workspaces`] with those it stopped.
    StopIdle {
        idle_for_secs: u64,
    },
    // Git worktrees and the credential store (issue 24).
    /// Store a credential, or replace one of the same name: [`Response::Ack`].
    SetCredential {
        spec: CredentialSpec,
        secret: Secret,
    },
    /// Replace a credential's secret: [`Response::Ack`].
    RotateCredential {
        name: String,
        secret: Secret,
    },
    DeleteCredential(String),
    /// [`Response::Credentials`], never a secret.
    Credentials,
    /// Have a host try a credential (`host`, or any ready one): [`Response::CredentialChecked`].
    CheckCredential {
        name: String,
        host: Option<HostId>,
        /// For git, the repository to `ls-remote` when the scope is only a prefix.
        target: Option<String>,
    },
    /// Seal every record again under the newest key of the leader's key file:
    /// [`Response::KeysRotated`].
    RotateCredentialsKey,
    /// The key ids this coordinator holds (answered by the node asked, leader or not):
    /// [`Response::CredentialKeys`].
    CredentialKeys,
    /// Verify (and mend) the worktrees of every host's workspaces, or one host's:
    /// [`Response::Worktrees`].
    VerifyWorktrees {
        host: Option<HostId>,
        repair: bool,
    },
    // Fleet security (issue 25).
    /// Make a join token: [`Response::TokenCreated`], the only answer that holds its secret.
    CreateToken(TokenSpec),
    /// Every token kept, never a secret: [`Response::Tokens`].
    Tokens,
    /// Revoke a token: it enrols no one from then on. [`Response::Ack`].
    RevokeToken(TokenId),
    /// Every identity's newest known certificate and its expiry: [`Response::Certificates`].
    Certificates,
    /// Take a host out of the fleet and shut its certificate out: refused while the host holds
    /// workspaces unless `force` (they are then forgotten with it). [`Response::Ack`].
    RemoveHost {
        host: HostId,
        force: bool,
    },
    /// Shut a user's certificates out of the fleet: [`Response::Ack`].
    RevokeUser(UserName),
    /// Start replacing the cluster CA (`nexus admin ca rotate`): refused with
    /// `CA_ROTATION_IN_PROGRESS` while one is. [`Response::CaStatus`].
    RotateCa,
    /// Where the CA and a rotation stand: [`Response::CaStatus`].
    CaStatus,
    /// Finish the rotation in progress now although the parties listed are not done: they must
    /// enrol again. Refused until every coordinator trusts the new CA. [`Response::CaStatus`].
    FinishCaRotation,
    /// The cluster's identity, which its backups name: [`Response::ClusterIdentity`]. It is the
    /// first CA's fingerprint, kept across CA rotations, so a CLI that trusts only a later CA
    /// asks for it to check a backup file. Answered by any coordinator, from its `--tls-dir`.
    ClusterIdentity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Pong(Pong),
    /// Done; nothing to say.
    Ack,
    Registered {
        host_id: HostId,
    },
    /// One update of a [`AgentRequest::WatchDesired`] subscription.
    Desired(DesiredState),
    Workspace(WorkspaceView),
    Workspaces(Vec<WorkspaceView>),
    ClusterStatus(ClusterStatus),
    Hosts(Vec<HostView>),
    Ports(Vec<PortAllocation>),
    Limits(LimitsView),
    FleetStats(FleetStats),
    Usage(Vec<WorkspaceUsage>),
    /// Boxed: the largest answer by far, it would otherwise size every response.
    WorkspaceDetail(Box<WorkspaceDetail>),
    /// Lines a container wrote.
    LogLines(Vec<String>),
    Exec(ExecResult),
    /// A workspace's host and where its agent serves [`HostRequest`]s.
    Endpoint {
        host: HostId,
        address: String,
    },
    Networks(Vec<NetworkView>),
    /// Each host and where its agent serves [`HostRequest`]s.
    Endpoints(Vec<(HostId, String)>),
    /// The sync engine's answer (`nexus_sync::endpoint::Answer`), encoded like the request.
    Sync(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A daemon's log records, oldest first (or one batch of a followed log).
    LogRecords(Vec<LogRecord>),
    /// A [`Diagnostic`] as text.
    Diagnostic(String),
    RequestRecord(Option<RequestRecord>),
    Events(Vec<WorkspaceEvent>),
    Health(Box<WorkspaceHealth>),
    ContainerEvents(Vec<ContainerEvent>),
    SyncSessions(Vec<SyncSessionView>),
    /// A host's desired state, with the request that last changed each workspace in it: the
    /// answer to [`AgentRequest::WatchDesiredCauses`].
    DesiredWithCauses {
        state: DesiredState,
        causes: Vec<(WorkspaceName, RequestId)>,
    },
    Backup(BackupInfo),
    Backups(Vec<BackupInfo>),
    BackupBytes(#[serde(with = "serde_bytes")] Vec<u8>),
    BackupSchedule(BackupSchedule),
    Orphans(Vec<OrphanView>),
    /// What a configuration reload applied, what needs a restart and what was wrong.
    Reloaded(ReloadReport),
    Notices(Vec<Notice>),
    Lifecycle(Box<LifecycleView>),
    // Host maintenance (issue 23).
    /// What a daemon's maintenance run removed (or would) and the bytes reclaimed.
    Maintained(MaintenanceReport),
    /// The maintenance schedule, its next window and the last scheduled run.
    Maintenance(MaintenanceStatus),
    Policies(Box<PoliciesView>),
    // Git worktrees and the credential store (issue 24).
    Credential(Option<GrantedCredential>),
    Credentials(Vec<CredentialView>),
    CredentialChecked(CredentialCheckReport),
    KeysRotated(KeyRotationReport),
    CredentialKeys {
        node: NodeId,
        /// Every key id this node can open, the newest (what it seals with) last.
        keys: Vec<String>,
    },
    Worktrees(Vec<WorktreeReport>),
    /// A workspace's worktree: what its record holds and, when its host answered, how it
    /// stands now.
    Worktree {
        facts: Option<WorktreeFacts>,
        status: Option<WorktreeStatus>,
    },
    // Fleet security (issue 25).
    TokenCreated(Box<CreatedToken>),
    Tokens(Vec<TokenView>),
    Certificates(Vec<CertView>),
    Issued(Box<Issued>),
    DenyList(DenyList),
    CaStatus(Box<CaStatus>),
    TrustBundle(TrustBundle),
    /// A page of [`WorkspaceRequest::ListPage`] (or of a [`WorkspaceRequest::ListStream`]);
    /// `next`: ask again after it (`None`: the end). A page may hold fewer than asked, or none,
    /// and still have a next.
    WorkspacePage {
        workspaces: Vec<WorkspaceView>,
        next: Option<WorkspaceName>,
    },
    /// The answer to [`AdminRequest::ClusterIdentity`]: the SHA-256 (hex) that names the
    /// cluster in its backups.
    ClusterIdentity(String),
    /// The answer to [`PeerRequest::EntryVersion`].
    EntryVersion(u32),
}
