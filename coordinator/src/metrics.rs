//! The coordinator's metrics: every handle, registered once by [`Metrics::register`] and handed
//! to what records (the driver, the store, the peers, the service, the placer). The names are a
//! contract (`docs/operations.md`, the alert rules and the dashboard read them); the label values
//! are bounded, and their mappings from the protocol's types are here.
//!
//! Gauges read from the replicated state (hosts by status, workspaces by state, term, leader,
//! indices) are set just before a scrape, by [`crate::probes`]; counters and histograms are
//! recorded where the event happens.
//!
//! Not here: the HTTP server and the process's own metrics (`nexus-telemetry`).

use nexus_protocol::message::{AdminRequest, AgentRequest, PeerRequest, Request, StaleRead};
use nexus_protocol::message::{HostRequest, WorkspaceRequest};
use nexus_protocol::model::HostStatus;
use nexus_protocol::policy::PolicyAction;
use nexus_telemetry::{Counter, Counters, Gauge, Gauges, Histogram, Histograms, Registry};

use crate::starts::{StartKind, StartOutcome};

/// Raft's commit and apply, and a synced RocksDB write: an alert reads p99 above 100 ms.
pub const RAFT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// A request's answer, from a stale read (milliseconds) to a create waiting for its commit.
pub const API_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// A workspace's start, at the spec's thresholds: a warm start within 1 s, a cold one within 15 s.
pub const START_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0];

/// Every handle the coordinator records into. Cheap to clone: the handles share their values.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub raft_has_leader: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_term: Gauge,
    pub raft_leader_changes: Counter,
    pub raft_commit_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_entry_version: Gauge,
    /// By `outcome`: [`ProposalOutcome::as_str`].
    pub raft_proposals: Counters<1>,
    pub raft_commit_duration: Histogram,
    pub raft_apply_duration: Histogram,
    pub storage_sync_duration: Histogram,
    pub raft_snapshots: Counter,
    /// By `peer` (a node id).
    pub peer_rtt: Gauges<1>,
    /// By `kind` ([`request_kind`]) and `code` (`OK` or the error code).
    pub api_requests: Counters<2>,
    /// By `kind`.
    pub api_request_duration: Histograms<1>,
    /// By `status` ([`host_status`]), every status always present.
    pub hosts: Gauges<1>,
    /// By `state` (`WorkspaceState::as_str`), every state always present.
    pub workspaces: Gauges<1>,
    /// By `outcome`: `placed`, `no_capacity`, `rejected` (a refusal other than capacity) or
    /// `failed` (the batch was not committed).
    pub placements: Counters<1>,
    pub heartbeats: Counter,
    /// Agents' reports this coordinator took, by `kind` ([`REPORT_KINDS`]): `change`, proposed
    /// to the log, or `repeat`, acknowledged from the state without an entry.
    pub reports: Counters<1>,
    pub hosts_marked_down: Counter,
    /// Hosts not down that this coordinator, leading, has not heard since it took the lead.
    pub hosts_unheard: Gauge,
    /// By `kind`: `cold`, `warm` or `switch` ([`crate::starts`]).
    pub workspace_start_duration: Histograms<1>,
    /// By `kind` and `outcome` (`ok`, `failed`, `timeout`).
    pub workspace_starts: Counters<2>,
    /// Backups this node made (asked for or scheduled), by `outcome`: [`BACKUP_OUTCOMES`].
    pub backups: Counters<1>,
    /// When this node last made a backup that verified (Unix seconds; 0: never).
    pub backup_last_success: Gauge,
    /// The size of that backup's file.
    pub backup_size_bytes: Gauge,
    /// The replicated schedule's interval while this node leads (0: off, or not leading).
    pub backup_interval: Gauge,
    /// What the lifecycle policies did, by `action` (`PolicyAction::as_str`).
    pub policy_actions: Counters<1>,
    /// The credential store's operations, by `kind` (`git`, `registry`, `all` for a key
    /// rotation), `op` ([`CREDENTIAL_OPS`]) and `outcome` (`ok`, `failed`, `denied`, `none`).
    pub credential_operations: Counters<3>,
    /// Enrolments this coordinator answered, by `outcome`: `ok` or the refusal's error code in
    /// lower case ([`ENROLMENT_OUTCOMES`] are present from the start).
    pub enrolments: Counters<1>,
    /// Certificates renewed by this coordinator, by `kind` (`agent`: an agent's request;
    /// `coordinator`: its own) and `outcome` (`ok` or the error code in lower case).
    pub renewals: Counters<2>,
    /// The parties the CA rotation in progress still waits for in its phase, by this replica
    /// (0: none in progress).
    pub ca_rotation_waiting: Gauge,
}

/// The `outcome` labels of `nexus_enrolments_total` present from the start (others, rarer
/// error codes, appear when they happen).
pub const ENROLMENT_OUTCOMES: &[&str] = &[
    "ok",
    "token_invalid",
    "token_expired",
    "token_used_up",
    "token_revoked",
    "invalid_argument",
    "permission_denied",
    "unsupported",
];

/// The credential store's operations, as `nexus_credential_operations_total`'s `op` label.
pub const CREDENTIAL_OPS: &[&str] = &["set", "rotate", "delete", "check", "grant", "rotate_key"];

impl Metrics {
    /// Registers every coordinator metric in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let r = registry;
        Metrics {
            raft_has_leader: r.gauge(
                "nexus_raft_has_leader",
                "1 if this coordinator knows a leader, else 0.",
            ),
            raft_is_leader: r.gauge(
                "nexus_raft_is_leader",
                "1 if this coordinator is the leader, else 0.",
            ),
            raft_term: r.gauge("nexus_raft_term", "The Raft term this coordinator is in."),
            raft_entry_version: r.gauge(
                "nexus_raft_entry_version",
                "The newest version of log entries every member applies, as this coordinator last learned.",
            ),
            raft_leader_changes: r.counter(
                "nexus_raft_leader_changes_total",
                "Times this coordinator saw a new leader.",
            ),
            raft_commit_index: r.gauge(
                "nexus_raft_commit_index",
                "The highest log index this coordinator knows committed.",
            ),
            raft_applied_index: r.gauge(
                "nexus_raft_applied_index",
                "The highest log index this coordinator applied to its state.",
            ),
            raft_proposals: r.counters(
                "nexus_raft_proposals_total",
                "Proposals made to this coordinator's Raft node, by outcome.",
                ["outcome"],
            ),
            raft_commit_duration: r.histogram(
                "nexus_raft_commit_duration_seconds",
                "From proposing on this coordinator to its entry being applied here.",
                RAFT_BUCKETS,
            ),
            raft_apply_duration: r.histogram(
                "nexus_raft_apply_duration_seconds",
                "Applying one batch of committed entries to the state machine.",
                RAFT_BUCKETS,
            ),
            storage_sync_duration: r.histogram(
                "nexus_storage_sync_duration_seconds",
                "One synced write to the Raft store (RocksDB).",
                RAFT_BUCKETS,
            ),
            raft_snapshots: r.counter(
                "nexus_raft_snapshots_total",
                "Snapshots of the state this coordinator made, or restored from its leader.",
            ),
            peer_rtt: r.gauges(
                "nexus_peer_rtt_seconds",
                "The last round trip of a batch of Raft messages to each peer.",
                ["peer"],
            ),
            api_requests: r.counters(
                "nexus_api_requests_total",
                "Requests answered, by kind and error code (OK for a success).",
                ["kind", "code"],
            ),
            api_request_duration: r.histograms(
                "nexus_api_request_duration_seconds",
                "How long requests took to answer, by kind.",
                ["kind"],
                API_BUCKETS,
            ),
            hosts: r.gauges(
                "nexus_hosts",
                "Hosts by status, in this coordinator's replica.",
                ["status"],
            ),
            workspaces: r.gauges(
                "nexus_workspaces",
                "Workspaces by state, in this coordinator's replica.",
                ["state"],
            ),
            placements: r.counters(
                "nexus_placements_total",
                "Workspace creates this coordinator placed or could not, by outcome.",
                ["outcome"],
            ),
            heartbeats: r.counter(
                "nexus_heartbeats_total",
                "Agents' heartbeats this coordinator took as leader.",
            ),
            reports: r.counters(
                "nexus_reports_total",
                "Agents' reports this coordinator took, by kind: a change (proposed) or a repeat of the state (no log entry).",
                ["kind"],
            ),
            hosts_marked_down: r.counter(
                "nexus_hosts_marked_down_total",
                "Hosts this coordinator marked down for silence.",
            ),
            hosts_unheard: r.gauge(
                "nexus_hosts_unheard",
                "Hosts not down that this coordinator, as leader, has not heard from since it \
                 took the lead (after a failover: the agents yet to reconnect); 0 on a follower.",
            ),
            workspace_start_duration: r.histograms(
                "nexus_workspace_start_duration_seconds",
                "From a start's commit to its agent's report of running: cold (create), warm \
                 (start or restart) or switch.",
                ["kind"],
                START_BUCKETS,
            ),
            workspace_starts: r.counters(
                "nexus_workspace_starts_total",
                "Workspace starts by kind and outcome (ok, failed, timeout).",
                ["kind", "outcome"],
            ),
            backups: r.counters(
                "nexus_backups_total",
                "Backups this coordinator made, asked for or scheduled, by outcome (ok: written \
                 and verified; failed).",
                ["outcome"],
            ),
            backup_last_success: r.gauge(
                "nexus_backup_last_success_timestamp_seconds",
                "When this coordinator last wrote a backup that verified (Unix time; 0: never).",
            ),
            backup_size_bytes: r.gauge(
                "nexus_backup_size_bytes",
                "The size of the last backup this coordinator wrote.",
            ),
            backup_interval: r.gauge(
                "nexus_backup_interval_seconds",
                "The backup schedule's interval on the leader (0 on followers, or when off).",
            ),
            policy_actions: r.counters(
                "nexus_policy_actions_total",
                "What the lifecycle policies did, through Raft, by action: stop, notice, destroy, withdraw.",
                ["action"],
            ),
            credential_operations: r.counters(
                "nexus_credential_operations_total",
                "The credential store's operations (set, rotate, delete, check, grant, rotate_key), by kind and outcome.",
                ["kind", "op", "outcome"],
            ),
            enrolments: r.counters(
                "nexus_enrolments_total",
                "Enrolments (a join token for a certificate) this coordinator answered, by outcome: ok or the error code.",
                ["outcome"],
            ),
            renewals: r.counters(
                "nexus_certificate_renewals_total",
                "Certificates this coordinator renewed, by kind (agent, coordinator: its own) and outcome (ok or the error code).",
                ["kind", "outcome"],
            ),
            ca_rotation_waiting: r.gauge(
                "nexus_ca_rotation_waiting",
                "The coordinators and hosts the CA rotation in progress still waits for in its phase (0: none in progress).",
            ),
        }
        .init()
    }

    /// Creates every series of the families whose labels are known in advance, at zero: a
    /// family is exported only once it has a series, and the alert rules and the dashboard must
    /// find theirs before the first event.
    fn init(self) -> Metrics {
        for outcome in ProposalOutcome::ALL {
            self.raft_proposals.inc_by([outcome.as_str()], 0);
        }
        for outcome in PLACEMENT_OUTCOMES {
            self.placements.inc_by([outcome], 0);
        }
        for outcome in BACKUP_OUTCOMES {
            self.backups.inc_by([outcome], 0);
        }
        for kind in REPORT_KINDS {
            self.reports.inc_by([kind], 0);
        }
        for outcome in ENROLMENT_OUTCOMES {
            self.enrolments.inc_by([outcome], 0);
        }
        for kind in ["agent", "coordinator"] {
            self.renewals.inc_by([kind, "ok"], 0);
        }
        for action in PolicyAction::ALL {
            self.policy_actions.inc_by([action.as_str()], 0);
        }
        for kind in StartKind::ALL {
            self.workspace_start_duration.init([kind.as_str()]);
            for outcome in StartOutcome::ALL {
                self.workspace_starts
                    .inc_by([kind.as_str(), outcome.as_str()], 0);
            }
        }
        self
    }

    /// Handles that record into a registry nobody serves: for tools and tests that run a node
    /// without its HTTP server.
    pub fn detached() -> Metrics {
        Metrics::register(&mut Registry::new())
    }

    /// The `outcome` label of a security operation: `ok` or the error code in lower case.
    pub fn outcome_label<T>(result: &Result<T, nexus_protocol::error::WireError>) -> String {
        match result {
            Ok(_) => "ok".to_string(),
            Err(error) => error.code.as_str().to_ascii_lowercase(),
        }
    }

    /// Records one answered request.
    pub fn request(&self, kind: &str, code: &str, took: std::time::Duration) {
        self.api_requests.inc([kind, code]);
        self.api_request_duration.observe_duration([kind], took);
    }
}

/// What became of a proposal made to this node's Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Applied.
    Ok,
    /// Applied as a refusal of the state machine.
    Rejected,
    /// This node does not lead (a follower then forwards it, counted by the leader).
    NotLeader,
    /// Not applied within its deadline.
    Timeout,
    /// Its waiter was dropped (the driver stopped) or it could not be encoded.
    Dropped,
}

impl ProposalOutcome {
    pub const ALL: [ProposalOutcome; 5] = [
        ProposalOutcome::Ok,
        ProposalOutcome::Rejected,
        ProposalOutcome::NotLeader,
        ProposalOutcome::Timeout,
        ProposalOutcome::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProposalOutcome::Ok => "ok",
            ProposalOutcome::Rejected => "rejected",
            ProposalOutcome::NotLeader => "not_leader",
            ProposalOutcome::Timeout => "timeout",
            ProposalOutcome::Dropped => "dropped",
        }
    }
}

/// The `outcome` labels of `nexus_placements_total` (see [`Metrics::placements`]).
pub const PLACEMENT_OUTCOMES: [&str; 4] = ["placed", "no_capacity", "rejected", "failed"];

/// The `kind` labels of `nexus_reports_total` (see [`Metrics::reports`]).
pub const REPORT_KINDS: [&str; 2] = ["change", "repeat"];

/// The `outcome` labels of `nexus_backups_total`.
pub const BACKUP_OUTCOMES: [&str; 2] = ["ok", "failed"];

/// Every host status, for a family where each is present even at 0.
pub const HOST_STATUSES: [HostStatus; 4] = [
    HostStatus::Ready,
    HostStatus::Down,
    HostStatus::Draining,
    HostStatus::Cordoned,
];

pub fn host_status(status: HostStatus) -> &'static str {
    match status {
        HostStatus::Ready => "ready",
        HostStatus::Down => "down",
        HostStatus::Draining => "draining",
        HostStatus::Cordoned => "cordoned",
    }
}

/// The `kind` label of a request: its variant's short name (a stale read is named as the read).
pub fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Ping => "ping",
        Request::Agent(request) => agent_kind(request),
        Request::Workspace(request) | Request::Stale(StaleRead::Workspace(request)) => {
            workspace_kind(request)
        }
        Request::Admin(request) | Request::Stale(StaleRead::Admin(request)) => admin_kind(request),
        Request::Peer(PeerRequest::Raft(_)) => "peer_raft",
        Request::Peer(PeerRequest::Propose(_)) => "peer_propose",
        Request::Peer(PeerRequest::Chunk { .. }) => "peer_chunk",
        Request::Peer(PeerRequest::EntryVersion) => "peer_entry_version",
        Request::Host(HostRequest::Logs { .. }) => "host_logs",
        Request::Host(HostRequest::Exec { .. }) => "host_exec",
        Request::Host(HostRequest::Networks) => "host_networks",
        Request::Host(HostRequest::Sync { .. }) => "host_sync",
        Request::Host(HostRequest::DaemonLogs(_)) => "host_daemon_logs",
        Request::Host(HostRequest::Diagnostic(_)) => "host_diagnostic",
        Request::Host(HostRequest::Health(_)) => "host_health",
        Request::Host(HostRequest::ContainerEvents { .. }) => "host_container_events",
        Request::Host(HostRequest::SyncSessions(_)) => "host_sync_sessions",
        Request::Host(HostRequest::SyncFlush(_)) => "host_sync_flush",
        Request::Host(HostRequest::Orphans) => "host_orphans",
        Request::Host(HostRequest::RemoveOrphan { .. }) => "host_remove_orphan",
        Request::Host(HostRequest::ReloadConfig) => "host_reload_config",
        Request::Host(HostRequest::Maintain(_)) => "host_maintain",
        Request::Host(HostRequest::CheckCredential(_)) => "host_check_credential",
        Request::Host(HostRequest::Worktrees { .. }) => "host_worktrees",
        Request::Host(HostRequest::WorktreeStatus(_)) => "host_worktree_status",
    }
}

fn agent_kind(request: &AgentRequest) -> &'static str {
    match request {
        AgentRequest::Register(_) => "agent_register",
        AgentRequest::Heartbeat { .. } => "agent_heartbeat",
        AgentRequest::WatchDesired { .. } => "agent_watch_desired",
        AgentRequest::ReportObserved(_) => "agent_report_observed",
        AgentRequest::ContainerStats(_) => "agent_container_stats",
        AgentRequest::Serving(_) => "agent_serving",
        AgentRequest::WatchDesiredCauses { .. } => "agent_watch_desired_causes",
        AgentRequest::Activity(_) => "agent_activity",
        AgentRequest::Credential(_) => "agent_credential",
        AgentRequest::Worktree { .. } => "agent_worktree",
        AgentRequest::KeptBranch { .. } => "agent_kept_branch",
        AgentRequest::Renew(_) => "agent_renew",
        AgentRequest::WatchDenyList => "agent_watch_deny_list",
        AgentRequest::WatchTrust => "agent_watch_trust",
        AgentRequest::TrustsCa { .. } => "agent_trusts_ca",
    }
}

fn workspace_kind(request: &WorkspaceRequest) -> &'static str {
    match request {
        WorkspaceRequest::Create(_) => "workspace_create",
        WorkspaceRequest::List => "workspace_list",
        WorkspaceRequest::ListPage { .. } => "workspace_list_page",
        WorkspaceRequest::ListStream => "workspace_list_stream",
        WorkspaceRequest::Watch(_) => "workspace_watch",
        WorkspaceRequest::Inspect(_) => "workspace_inspect",
        WorkspaceRequest::Start(_) => "workspace_start",
        WorkspaceRequest::Stop(_) => "workspace_stop",
        WorkspaceRequest::Restart(_) => "workspace_restart",
        WorkspaceRequest::Destroy(_) => "workspace_destroy",
        WorkspaceRequest::Switch(_) => "workspace_switch",
        WorkspaceRequest::Repair(_) => "workspace_repair",
        WorkspaceRequest::Cleanup { .. } => "workspace_cleanup",
        WorkspaceRequest::CreateWith { .. } => "workspace_create_with",
        WorkspaceRequest::Describe(_) => "workspace_describe",
        WorkspaceRequest::Endpoint(_) => "workspace_endpoint",
        WorkspaceRequest::CleanupOf { .. } => "workspace_cleanup_of",
        WorkspaceRequest::Events(_) => "workspace_events",
        WorkspaceRequest::Notices => "workspace_notices",
        WorkspaceRequest::Lifecycle(_) => "workspace_lifecycle",
        WorkspaceRequest::Hold(_) => "workspace_hold",
        WorkspaceRequest::Release(_) => "workspace_release",
        WorkspaceRequest::Worktree(_) => "workspace_worktree",
        WorkspaceRequest::RenewSession(_) => "workspace_renew_session",
    }
}

fn admin_kind(request: &AdminRequest) -> &'static str {
    match request {
        AdminRequest::Status => "admin_status",
        AdminRequest::Hosts => "admin_hosts",
        AdminRequest::ClusterAdd { .. } => "admin_cluster_add",
        AdminRequest::ClusterRemove(_) => "admin_cluster_remove",
        AdminRequest::TransferLeader(_) => "admin_transfer_leader",
        AdminRequest::SetHostStatus { .. } => "admin_set_host_status",
        AdminRequest::Ports => "admin_ports",
        AdminRequest::Limits => "admin_limits",
        AdminRequest::SetLimits { .. } => "admin_set_limits",
        AdminRequest::Stats => "admin_stats",
        AdminRequest::Top => "admin_top",
        AdminRequest::Endpoints => "admin_endpoints",
        AdminRequest::DaemonLogs(_) => "admin_daemon_logs",
        AdminRequest::Diagnostic(_) => "admin_diagnostic",
        AdminRequest::RequestRecord(_) => "admin_request_record",
        AdminRequest::BackupCreate => "admin_backup_create",
        AdminRequest::BackupList => "admin_backup_list",
        AdminRequest::BackupVerify(_) => "admin_backup_verify",
        AdminRequest::BackupRead { .. } => "admin_backup_read",
        AdminRequest::BackupUpload { .. } => "admin_backup_upload",
        AdminRequest::BackupRestore { .. } => "admin_backup_restore",
        AdminRequest::BackupSchedule(_) => "admin_backup_schedule",
        AdminRequest::ReloadConfig => "admin_reload_config",
        AdminRequest::Maintain(_) => "admin_maintain",
        AdminRequest::MaintenanceSchedule(_) => "admin_maintenance_schedule",
        AdminRequest::PostNotice { .. } => "admin_post_notice",
        AdminRequest::Notices => "admin_notices",
        AdminRequest::ClearNotices(_) => "admin_clear_notices",
        AdminRequest::Policies => "admin_policies",
        AdminRequest::SetPolicy { .. } => "admin_set_policy",
        AdminRequest::ExtendLifetime { .. } => "admin_extend_lifetime",
        AdminRequest::StopIdle { .. } => "admin_stop_idle",
        AdminRequest::SetCredential { .. } => "admin_set_credential",
        AdminRequest::RotateCredential { .. } => "admin_rotate_credential",
        AdminRequest::DeleteCredential(_) => "admin_delete_credential",
        AdminRequest::Credentials => "admin_credentials",
        AdminRequest::CheckCredential { .. } => "admin_check_credential",
        AdminRequest::RotateCredentialsKey => "admin_rotate_credentials_key",
        AdminRequest::CredentialKeys => "admin_credential_keys",
        AdminRequest::VerifyWorktrees { .. } => "admin_verify_worktrees",
        AdminRequest::CreateToken(_) => "admin_create_token",
        AdminRequest::Tokens => "admin_tokens",
        AdminRequest::RevokeToken(_) => "admin_revoke_token",
        AdminRequest::Certificates => "admin_certificates",
        AdminRequest::RemoveHost { .. } => "admin_remove_host",
        AdminRequest::RevokeUser(_) => "admin_revoke_user",
        AdminRequest::RotateCa => "admin_rotate_ca",
        AdminRequest::CaStatus => "admin_ca_status",
        AdminRequest::FinishCaRotation => "admin_finish_ca_rotation",
        AdminRequest::ClusterIdentity => "admin_cluster_identity",
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::model::WorkspaceState;
    use nexus_telemetry::metrics::Format;

    use super::*;

    #[test]
    fn every_contracted_name_is_exposed_once() {
        let mut registry = Registry::new();
        let metrics = Metrics::register(&mut registry);
        metrics.raft_proposals.inc(["ok"]);
        metrics.peer_rtt.set(["2"], 0.001);
        metrics.request("ping", "OK", std::time::Duration::from_millis(1));
        metrics.hosts.set(["ready"], 1.0);
        metrics.workspaces.set(["running"], 1.0);
        metrics.placements.inc(["placed"]);
        metrics.workspace_start_duration.observe(["cold"], 3.0);
        metrics.workspace_starts.inc(["cold", "ok"]);
        metrics
            .credential_operations
            .inc(["registry", "grant", "ok"]);
        let text = registry.encode(Format::Classic);
        for name in [
            "nexus_raft_has_leader",
            "nexus_raft_is_leader",
            "nexus_raft_term",
            "nexus_raft_leader_changes_total",
            "nexus_raft_commit_index",
            "nexus_raft_applied_index",
            "nexus_raft_entry_version",
            "nexus_raft_proposals_total",
            "nexus_raft_commit_duration_seconds",
            "nexus_raft_apply_duration_seconds",
            "nexus_storage_sync_duration_seconds",
            "nexus_raft_snapshots_total",
            "nexus_peer_rtt_seconds",
            "nexus_api_requests_total",
            "nexus_api_request_duration_seconds",
            "nexus_hosts",
            "nexus_workspaces",
            "nexus_placements_total",
            "nexus_heartbeats_total",
            "nexus_reports_total",
            "nexus_hosts_marked_down_total",
            "nexus_hosts_unheard",
            "nexus_workspace_start_duration_seconds",
            "nexus_workspace_starts_total",
            "nexus_backups_total",
            "nexus_backup_last_success_timestamp_seconds",
            "nexus_backup_size_bytes",
            "nexus_backup_interval_seconds",
            "nexus_policy_actions_total",
            "nexus_credential_operations_total",
        ] {
            let declared = format!("# TYPE {name} ");
            assert_eq!(text.matches(&declared).count(), 1, "{name} in\n{text}");
        }
        assert!(
            text.contains(
                "nexus_workspace_start_duration_seconds_bucket{le=\"15.0\",kind=\"cold\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn buckets_hold_the_thresholds_alerts_read() {
        for (buckets, thresholds) in [
            (RAFT_BUCKETS, &[0.1][..]),
            (API_BUCKETS, &[0.005, 10.0]),
            (START_BUCKETS, &[1.0, 15.0]),
        ] {
            assert!(buckets.len() <= 12);
            assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]));
            for threshold in thresholds {
                assert!(buckets.contains(threshold), "{threshold} in {buckets:?}");
            }
        }
    }

    #[test]
    fn label_values_are_short_distinct_names() {
        let statuses: std::collections::BTreeSet<_> =
            HOST_STATUSES.into_iter().map(host_status).collect();
        assert_eq!(statuses.len(), HOST_STATUSES.len());
        let states: std::collections::BTreeSet<_> = WorkspaceState::ALL
            .into_iter()
            .map(WorkspaceState::as_str)
            .collect();
        assert_eq!(states.len(), WorkspaceState::ALL.len());
        let name = || "w".parse().unwrap();
        assert_eq!(request_kind(&Request::Ping), "ping");
        assert_eq!(
            request_kind(&Request::Workspace(WorkspaceRequest::Switch(name()))),
            "workspace_switch"
        );
        assert_eq!(
            request_kind(&Request::Stale(StaleRead::Admin(AdminRequest::Hosts))),
            "admin_hosts"
        );
        assert_eq!(
            request_kind(&Request::Agent(AgentRequest::Heartbeat {
                sequence: 1,
                stats: None
            })),
            "agent_heartbeat"
        );
    }

    /// A new status or state must be added to the lists above: this match fails to compile
    /// until it is.
    #[allow(dead_code)]
    fn lists_are_complete(status: HostStatus, state: WorkspaceState) {
        match status {
            HostStatus::Ready | HostStatus::Down | HostStatus::Draining | HostStatus::Cordoned => {}
        }
        match state {
            WorkspaceState::Pending
            | WorkspaceState::Scheduled
            | WorkspaceState::Starting
            | WorkspaceState::Running
            | WorkspaceState::Stopping
            | WorkspaceState::Stopped
            | WorkspaceState::Failed
            | WorkspaceState::Destroying
            | WorkspaceState::Gone
            | WorkspaceState::Lost => {}
        }
    }
}
