//! Stable error codes: what every error that crosses the wire or reaches a user is, what the user
//! is told, whether and how to retry, and which process exit code the CLI uses for it.
//!
//! The codes, their names and their exit codes are a contract (scripts match on them): append new
//! codes at the end, never renumber or rename one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{NodeId, RequestId};

/// How a failed operation may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Retrying will not help; the user must act.
    Never,
    /// Retry up to `attempts` times (`None`: until it succeeds), waiting `initial` before the first
    /// retry and doubling the wait each time when `exponential`, capped at `max_delay`.
    Retry {
        attempts: Option<u32>,
        initial: Duration,
        exponential: bool,
        max_delay: Duration,
    },
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 for the first retry), or `None` when the policy
    /// allows no such retry. Callers add their own jitter.
    pub fn delay_before(self, attempt: u32) -> Option<Duration> {
        let RetryPolicy::Retry {
            attempts,
            initial,
            exponential,
            max_delay,
        } = self
        else {
            return None;
        };
        if attempt == 0 || attempts.is_some_and(|limit| attempt > limit) {
            return None;
        }
        if !exponential {
            return Some(initial.min(max_delay));
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        Some(initial.saturating_mul(factor).min(max_delay))
    }
}

/// What changes between attempts, besides waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryChange {
    Nothing,
    /// Ask for a different host port (the old one is held by someone else).
    NewPort,
    /// Allow the next attempt a longer timeout.
    LongerTimeout,
}

struct CodeInfo {
    name: &'static str,
    message: &'static str,
    suggestion: &'static str,
    retry: RetryPolicy,
    change: RetryChange,
    exit_code: u8,
}

const NEVER: RetryPolicy = RetryPolicy::Never;

const fn retry(attempts: u32, initial_ms: u64, exponential: bool) -> RetryPolicy {
    RetryPolicy::Retry {
        attempts: Some(attempts),
        initial: Duration::from_millis(initial_ms),
        exponential,
        max_delay: Duration::from_secs(30),
    }
}

const fn retry_forever(every_ms: u64) -> RetryPolicy {
    RetryPolicy::Retry {
        attempts: None,
        initial: Duration::from_millis(every_ms),
        exponential: false,
        max_delay: Duration::from_millis(every_ms),
    }
}

/// A stable, machine-readable error code. Serialized as its index (bincode) on the wire and as its
/// `SCREAMING_SNAKE_CASE` name in JSON and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    WorkspaceNotFound,
    WorkspaceAlreadyExists,
    WorkspaceStartFailed,
    PortConflict,
    ResourceExhausted,
    BackendUnavailable,
    ContainerError,
    PermissionDenied,
    AuthenticationFailed,
    Timeout,
    NetworkError,
    DiskFull,
    SyncSessionFailed,
    SyncConflict,
    SyncPaused,
    SyncProviderNotFound,
    /// The request itself is malformed (a bad name, a flag out of range).
    InvalidArgument,
    /// The peer broke the protocol: undecodable or oversized frames, an unexpected message.
    ProtocolError,
    /// The peers speak incompatible protocol versions.
    VersionMismatch,
    /// This coordinator is not the leader; the detail names the leader when it is known.
    NotLeader,
    /// The server understood the request but does not serve it (yet, or any more).
    Unsupported,
    /// A bug or an unexpected failure on the server's side.
    Internal,
    /// A backup file is damaged: its checksum does not match, it is truncated, or it is not a
    /// Nexus backup at all.
    BackupCorrupt,
    /// A backup was written by a newer Nexus (its file or state format is unknown here).
    BackupVersionUnsupported,
    /// A backup of another cluster (another CA), refused unless forced.
    BackupClusterMismatch,
    /// No backup has this id.
    BackupNotFound,
    /// A git remote refused the credentials (or asked for some and none are stored).
    GitAuthFailed,
    /// A git operation failed for another reason: an unknown branch or commit, an unreachable
    /// remote, a damaged mirror or worktree.
    GitFailed,
    /// The credential store cannot be read or written here: no key file is configured, or a
    /// record names a key this coordinator does not hold.
    CredentialsKeyMissing,
    /// A join token that names no token of this cluster, or whose secret does not match.
    TokenInvalid,
    /// A join token past its expiry.
    TokenExpired,
    /// A join token with no enrolments left.
    TokenUsedUp,
    /// A join token an admin revoked.
    TokenRevoked,
    /// The coordinator reached presents another CA than the one the join token names.
    CaMismatch,
    /// A certificate does not name what its holder is reached at or advertises.
    CertificateMismatch,
    /// A CA rotation was asked for while one is in progress.
    CaRotationInProgress,
    /// A CA rotation's step was asked for while none is in progress.
    NoCaRotation,
    /// An agent's report for a host the cluster has marked down: refused until a heartbeat
    /// returns the host, after which the agent sends it again.
    HostDown,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 38] = [
        ErrorCode::WorkspaceNotFound,
        ErrorCode::WorkspaceAlreadyExists,
        ErrorCode::WorkspaceStartFailed,
        ErrorCode::PortConflict,
        ErrorCode::ResourceExhausted,
        ErrorCode::BackendUnavailable,
        ErrorCode::ContainerError,
        ErrorCode::PermissionDenied,
        ErrorCode::AuthenticationFailed,
        ErrorCode::Timeout,
        ErrorCode::NetworkError,
        ErrorCode::DiskFull,
        ErrorCode::SyncSessionFailed,
        ErrorCode::SyncConflict,
        ErrorCode::SyncPaused,
        ErrorCode::SyncProviderNotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::ProtocolError,
        ErrorCode::VersionMismatch,
        ErrorCode::NotLeader,
        ErrorCode::Unsupported,
        ErrorCode::Internal,
        ErrorCode::BackupCorrupt,
        ErrorCode::BackupVersionUnsupported,
        ErrorCode::BackupClusterMismatch,
        ErrorCode::BackupNotFound,
        ErrorCode::GitAuthFailed,
        ErrorCode::GitFailed,
        ErrorCode::CredentialsKeyMissing,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::TokenUsedUp,
        ErrorCode::TokenRevoked,
        ErrorCode::CaMismatch,
        ErrorCode::CertificateMismatch,
        ErrorCode::CaRotationInProgress,
        ErrorCode::NoCaRotation,
        ErrorCode::HostDown,
    ];

    fn info(self) -> CodeInfo {
        use ErrorCode::*;
        let (name, message, suggestion, retry, change, exit_code) = match self {
            WorkspaceNotFound => (
                "WORKSPACE_NOT_FOUND",
                "Workspace doesn't exist",
                "list your workspaces with `nexus workspace list`",
                NEVER,
                RetryChange::Nothing,
                10,
            ),
            WorkspaceAlreadyExists => (
                "WORKSPACE_ALREADY_EXISTS",
                "Workspace already exists",
                "switch to it with `nexus workspace switch NAME`, or pick another name",
                NEVER,
                RetryChange::Nothing,
                11,
            ),
            WorkspaceStartFailed => (
                "WORKSPACE_START_FAILED",
                "Failed to start",
                "Nexus retries by itself; if it keeps failing, run `nexus workspace repair NAME`",
                retry(3, 1_000, true),
                RetryChange::Nothing,
                12,
            ),
            PortConflict => (
                "PORT_CONFLICT",
                "Port already in use",
                "Nexus assigns another port by itself; free the port if you need that one",
                retry(1, 0, false),
                RetryChange::NewPort,
                13,
            ),
            ResourceExhausted => (
                "RESOURCE_EXHAUSTED",
                "Not enough resources",
                "destroy unused workspaces (`nexus workspace cleanup`) or try again in 30 s",
                retry(1, 30_000, false),
                RetryChange::Nothing,
                14,
            ),
            BackendUnavailable => (
                "BACKEND_UNAVAILABLE",
                "Docker daemon not responding",
                "check that dockerd runs on the host (`systemctl status docker`); Nexus retries every 5 s",
                retry_forever(5_000),
                RetryChange::Nothing,
                15,
            ),
            ContainerError => (
                "CONTAINER_ERROR",
                "Container crashed",
                "look at `nexus workspace logs NAME`, then run `nexus workspace repair NAME`",
                NEVER,
                RetryChange::Nothing,
                16,
            ),
            PermissionDenied => (
                "PERMISSION_DENIED",
                "You don't have permission",
                "ask an admin for access",
                NEVER,
                RetryChange::Nothing,
                17,
            ),
            AuthenticationFailed => (
                "AUTHENTICATION_FAILED",
                "Authentication failed",
                "the message says which certificate was refused; a user whose session expired runs `nexus login`",
                NEVER,
                RetryChange::Nothing,
                18,
            ),
            Timeout => (
                "TIMEOUT",
                "Operation timed out",
                "Nexus retries once with a longer timeout; check the coordinators with `nexus admin health-check`",
                retry(1, 0, false),
                RetryChange::LongerTimeout,
                19,
            ),
            NetworkError => (
                "NETWORK_ERROR",
                "Network connection failed",
                "check the coordinator address and that it is running; Nexus retries by itself",
                retry(5, 200, true),
                RetryChange::Nothing,
                20,
            ),
            DiskFull => (
                "DISK_FULL",
                "Not enough disk space",
                "free space with `nexus workspace cleanup`",
                NEVER,
                RetryChange::Nothing,
                21,
            ),
            SyncSessionFailed => (
                "SYNC_SESSION_FAILED",
                "File sync failed to start",
                "check the sync provider; Nexus retries 3 times",
                retry(3, 1_000, false),
                RetryChange::Nothing,
                22,
            ),
            SyncConflict => (
                "SYNC_CONFLICT",
                "File sync conflict detected",
                "list them with `nexus workspace sync conflicts NAME`, then `nexus workspace sync resolve`",
                NEVER,
                RetryChange::Nothing,
                23,
            ),
            SyncPaused => (
                "SYNC_PAUSED",
                "File sync is paused",
                "it resumes when the workspace starts, or run `nexus workspace sync resume NAME`",
                NEVER,
                RetryChange::Nothing,
                24,
            ),
            SyncProviderNotFound => (
                "SYNC_PROVIDER_NOT_FOUND",
                "Mutagen not installed",
                "install Mutagen, or use the embedded provider (the default)",
                NEVER,
                RetryChange::Nothing,
                25,
            ),
            InvalidArgument => (
                "INVALID_ARGUMENT",
                "Invalid request",
                "check the command's arguments (`--help`)",
                NEVER,
                RetryChange::Nothing,
                26,
            ),
            ProtocolError => (
                "PROTOCOL_ERROR",
                "The peer broke the Nexus protocol",
                "check that both sides run compatible Nexus versions; report a bug if they do",
                NEVER,
                RetryChange::Nothing,
                27,
            ),
            VersionMismatch => (
                "VERSION_MISMATCH",
                "Incompatible Nexus versions",
                "upgrade the older side so that both speak the same protocol version",
                NEVER,
                RetryChange::Nothing,
                28,
            ),
            NotLeader => (
                "NOT_LEADER",
                "This coordinator is not the leader",
                "the CLI follows the leader by itself; check `nexus admin status` if it cannot",
                retry(5, 100, true),
                RetryChange::Nothing,
                29,
            ),
            Unsupported => (
                "UNSUPPORTED",
                "Not supported by this server",
                "upgrade the coordinator, or check `nexus --version` on both sides",
                NEVER,
                RetryChange::Nothing,
                30,
            ),
            Internal => (
                "INTERNAL",
                "Internal error",
                "report a bug with the request id (`nexus admin trace REQUEST-ID`)",
                NEVER,
                RetryChange::Nothing,
                31,
            ),
            BackupCorrupt => (
                "BACKUP_CORRUPT",
                "The backup file is damaged",
                "use another backup (`nexus admin backup list`); check each with `nexus admin backup verify ID`",
                NEVER,
                RetryChange::Nothing,
                32,
            ),
            BackupVersionUnsupported => (
                "BACKUP_VERSION_UNSUPPORTED",
                "The backup was made by a newer Nexus",
                "restore it with the Nexus version that made it (`nexus admin backup inspect FILE`)",
                NEVER,
                RetryChange::Nothing,
                33,
            ),
            BackupClusterMismatch => (
                "BACKUP_CLUSTER_MISMATCH",
                "The backup belongs to another cluster",
                "check you chose the right file; `--force` restores it anyway",
                NEVER,
                RetryChange::Nothing,
                34,
            ),
            BackupNotFound => (
                "BACKUP_NOT_FOUND",
                "No such backup",
                "list the backups with `nexus admin backup list`",
                NEVER,
                RetryChange::Nothing,
                35,
            ),
            GitAuthFailed => (
                "GIT_AUTH_FAILED",
                "Git authentication failed",
                "check the credentials: `nexus admin credentials check NAME`; refresh the token with `nexus admin credentials rotate NAME --password-stdin`, then `nexus workspace repair NAME`",
                NEVER,
                RetryChange::Nothing,
                36,
            ),
            GitFailed => (
                "GIT_FAILED",
                "Git operation failed",
                "check the repository URL, branch and ref; `nexus admin worktree verify --repair` mends a damaged worktree; Nexus retries 3 times",
                retry(3, 2_000, true),
                RetryChange::Nothing,
                37,
            ),
            CredentialsKeyMissing => (
                "CREDENTIALS_KEY_MISSING",
                "The credential store's key is not available",
                "give every coordinator the key file (`--credentials-key-file`, made by `nexus admin credentials new-key`) and reload it",
                NEVER,
                RetryChange::Nothing,
                38,
            ),
            TokenInvalid => (
                "TOKEN_INVALID",
                "The join token is not valid",
                "check that the whole token was copied; `nexus admin token list` shows the cluster's tokens",
                NEVER,
                RetryChange::Nothing,
                39,
            ),
            TokenExpired => (
                "TOKEN_EXPIRED",
                "The join token has expired",
                "ask an admin for a new one (`nexus admin token create`)",
                NEVER,
                RetryChange::Nothing,
                40,
            ),
            TokenUsedUp => (
                "TOKEN_USED_UP",
                "The join token has no uses left",
                "ask an admin for a new one (`nexus admin token create --uses N`)",
                NEVER,
                RetryChange::Nothing,
                41,
            ),
            TokenRevoked => (
                "TOKEN_REVOKED",
                "The join token was revoked",
                "ask an admin for a new one (`nexus admin token create`)",
                NEVER,
                RetryChange::Nothing,
                42,
            ),
            CaMismatch => (
                "CA_MISMATCH",
                "The coordinator's CA is not the token's",
                "check the coordinator address: the one reached is not of the cluster that made the token (or something is in the way)",
                NEVER,
                RetryChange::Nothing,
                43,
            ),
            CertificateMismatch => (
                "CERTIFICATE_MISMATCH",
                "The certificate does not match the address",
                "give the certificate the name or address it is reached at, or advertise one it holds (the message says which flag)",
                NEVER,
                RetryChange::Nothing,
                44,
            ),
            CaRotationInProgress => (
                "CA_ROTATION_IN_PROGRESS",
                "A CA rotation is already in progress",
                "follow it with `nexus admin ca status`; a host that stays down holds it up: bring it back, or `nexus admin ca rotate --finish --force`",
                NEVER,
                RetryChange::Nothing,
                45,
            ),
            NoCaRotation => (
                "NO_CA_ROTATION",
                "No CA rotation is in progress",
                "start one with `nexus admin ca rotate`",
                NEVER,
                RetryChange::Nothing,
                46,
            ),
            HostDown => (
                "HOST_DOWN",
                "The host is marked down",
                "the agent sends its report again once its next heartbeat returns the host; if the host stays down, check its agent (`nexus admin hosts`)",
                NEVER,
                RetryChange::Nothing,
                47,
            ),
        };
        CodeInfo {
            name,
            message,
            suggestion,
            retry,
            change,
            exit_code,
        }
    }

    /// The stable name, e.g. `RESOURCE_EXHAUSTED`.
    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    /// The short message a user sees.
    pub fn message(self) -> &'static str {
        self.info().message
    }

    /// What the user can do about it.
    pub fn suggestion(self) -> &'static str {
        self.info().suggestion
    }

    pub fn retry_policy(self) -> RetryPolicy {
        self.info().retry
    }

    pub fn retry_change(self) -> RetryChange {
        self.info().change
    }

    /// The CLI's process exit code for this error: stable, distinct, and clear of 0 (success),
    /// 1 (an error without a code) and 2 (bad command line).
    pub fn exit_code(self) -> u8 {
        self.info().exit_code
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = InvalidValue;
    fn from_str(name: &str) -> Result<ErrorCode, InvalidValue> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
            .ok_or_else(|| InvalidValue(format!("unknown error code {name:?}")))
    }
}

/// A value that a person or a file gave (a flag, a config key) that does not parse or is out of
/// bounds. Its message names the value and what was expected; callers show it as it is (clap
/// prints it under the flag, the configuration loader under the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Facts some errors carry beyond their code, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorDetail {
    /// The host port that a foreign process holds.
    PortConflict { port: u16 },
    /// Where the leader is, when this node knows.
    NotLeader {
        leader: Option<NodeId>,
        address: Option<String>,
    },
    /// The protocol versions of both sides.
    VersionMismatch { ours: u16, theirs: u16 },
    /// A workspace's container stopped on its own: its exit code and the last lines it wrote.
    ContainerExited {
        exit_code: i64,
        oom_killed: bool,
        last_lines: Vec<String>,
    },
}

/// An error as it crosses the wire: a stable code, a specific message, optional detail, and the id
/// of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<ErrorDetail>,
    pub request_id: Option<RequestId>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
            detail: None,
            request_id: None,
        }
    }

    pub fn with_detail(mut self, detail: ErrorDetail) -> WireError {
        self.detail = Some(detail);
        self
    }

    pub fn with_request_id(mut self, request_id: RequestId) -> WireError {
        self.request_id = Some(request_id);
        self
    }

    /// The error, naming `request_id` unless it names a request already (a server's answer
    /// names its own).
    pub fn or_request_id(mut self, request_id: RequestId) -> WireError {
        self.request_id.get_or_insert(request_id);
        self
    }

    pub fn suggestion(&self) -> &'static str {
        self.code.suggestion()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_code_is_listed_once_in_wire_order() {
        let config = bincode::config::standard();
        for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
            let bytes = bincode::serde::encode_to_vec(code, config).unwrap();
            assert_eq!(
                bytes,
                vec![u8::try_from(index).unwrap()],
                "{code} moved on the wire"
            );
        }
    }

    #[test]
    fn names_and_exit_codes_are_unique_and_round_trip() {
        let mut names = BTreeSet::new();
        let mut exits = BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(names.insert(code.as_str()), "{code} name repeats");
            assert!(exits.insert(code.exit_code()), "{code} exit code repeats");
            assert!(
                code.exit_code() >= 10,
                "{code} collides with generic exit codes"
            );
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(serde_plain_name(code), code.as_str());
            assert!(!code.message().is_empty() && !code.suggestion().is_empty());
        }
        assert!("NOPE".parse::<ErrorCode>().is_err());
    }

    /// The serde name (as JSON shows it) equals the table's name.
    fn serde_plain_name(code: ErrorCode) -> String {
        let text = format!("{code:?}");
        let mut out = String::new();
        for (i, c) in text.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    #[test]
    fn the_design_table_is_kept() {
        let expect = expect_test::expect![[r#"
            WORKSPACE_NOT_FOUND exit=10 retry=[] change=Nothing | Workspace doesn't exist
            WORKSPACE_ALREADY_EXISTS exit=11 retry=[] change=Nothing | Workspace already exists
            WORKSPACE_START_FAILED exit=12 retry=[1s, 2s, 4s] change=Nothing | Failed to start
            PORT_CONFLICT exit=13 retry=[0ns] change=NewPort | Port already in use
            RESOURCE_EXHAUSTED exit=14 retry=[30s] change=Nothing | Not enough resources
            BACKEND_UNAVAILABLE exit=15 retry=[5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, ...] change=Nothing | Docker daemon not responding
            CONTAINER_ERROR exit=16 retry=[] change=Nothing | Container crashed
            PERMISSION_DENIED exit=17 retry=[] change=Nothing | You don't have permission
            AUTHENTICATION_FAILED exit=18 retry=[] change=Nothing | Authentication failed
            TIMEOUT exit=19 retry=[0ns] change=LongerTimeout | Operation timed out
            NETWORK_ERROR exit=20 retry=[200ms, 400ms, 800ms, 1.6s, 3.2s] change=Nothing | Network connection failed
            DISK_FULL exit=21 retry=[] change=Nothing | Not enough disk space
            SYNC_SESSION_FAILED exit=22 retry=[1s, 1s, 1s] change=Nothing | File sync failed to start
            SYNC_CONFLICT exit=23 retry=[] change=Nothing | File sync conflict detected
            SYNC_PAUSED exit=24 retry=[] change=Nothing | File sync is paused
            SYNC_PROVIDER_NOT_FOUND exit=25 retry=[] change=Nothing | Mutagen not installed
            INVALID_ARGUMENT exit=26 retry=[] change=Nothing | Invalid request
            PROTOCOL_ERROR exit=27 retry=[] change=Nothing | The peer broke the Nexus protocol
            VERSION_MISMATCH exit=28 retry=[] change=Nothing | Incompatible Nexus versions
            NOT_LEADER exit=29 retry=[100ms, 200ms, 400ms, 800ms, 1.6s] change=Nothing | This coordinator is not the leader
            UNSUPPORTED exit=30 retry=[] change=Nothing | Not supported by this server
            INTERNAL exit=31 retry=[] change=Nothing | Internal error
            BACKUP_CORRUPT exit=32 retry=[] change=Nothing | The backup file is damaged
            BACKUP_VERSION_UNSUPPORTED exit=33 retry=[] change=Nothing | The backup was made by a newer Nexus
            BACKUP_CLUSTER_MISMATCH exit=34 retry=[] change=Nothing | The backup belongs to another cluster
            BACKUP_NOT_FOUND exit=35 retry=[] change=Nothing | No such backup
            GIT_AUTH_FAILED exit=36 retry=[] change=Nothing | Git authentication failed
            GIT_FAILED exit=37 retry=[2s, 4s, 8s] change=Nothing | Git operation failed
            CREDENTIALS_KEY_MISSING exit=38 retry=[] change=Nothing | The credential store's key is not available
            TOKEN_INVALID exit=39 retry=[] change=Nothing | The join token is not valid
            TOKEN_EXPIRED exit=40 retry=[] change=Nothing | The join token has expired
            TOKEN_USED_UP exit=41 retry=[] change=Nothing | The join token has no uses left
            TOKEN_REVOKED exit=42 retry=[] change=Nothing | The join token was revoked
            CA_MISMATCH exit=43 retry=[] change=Nothing | The coordinator's CA is not the token's
            CERTIFICATE_MISMATCH exit=44 retry=[] change=Nothing | The certificate does not match the address
            CA_ROTATION_IN_PROGRESS exit=45 retry=[] change=Nothing | A CA rotation is already in progress
            NO_CA_ROTATION exit=46 retry=[] change=Nothing | No CA rotation is in progress
            HOST_DOWN exit=47 retry=[] change=Nothing | The host is marked down
        "#]];
        let mut table = String::new();
        for code in ErrorCode::ALL {
            let delays: Vec<String> = (1..=8)
                .map_while(|attempt| code.retry_policy().delay_before(attempt))
                .map(|d| format!("{d:?}"))
                .collect();
            let more = if code.retry_policy().delay_before(9).is_some() {
                ", ..."
            } else {
                ""
            };
            table.push_str(&format!(
                "{} exit={} retry=[{}{more}] change={:?} | {}\n",
                code,
                code.exit_code(),
                delays.join(", "),
                code.retry_change(),
                code.message()
            ));
        }
        expect.assert_eq(&table);
    }

    #[test]
    fn backoff_saturates_and_caps() {
        let policy = RetryPolicy::Retry {
            attempts: None,
            initial: Duration::from_millis(100),
            exponential: true,
            max_delay: Duration::from_secs(10),
        };
        assert_eq!(policy.delay_before(0), None);
        assert_eq!(policy.delay_before(1), Some(Duration::from_millis(100)));
        assert_eq!(
            policy.delay_before(8),
            Some(Duration::from_millis(12_800).min(Duration::from_secs(10)))
        );
        assert_eq!(policy.delay_before(u32::MAX), Some(Duration::from_secs(10)));
        assert_eq!(RetryPolicy::Never.delay_before(1), None);
    }
}
