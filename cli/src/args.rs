//! The command line, as clap parses it. Names, flags and JSON fields are a contract (see
//! docs/cli.md): extend freely, change only with a reason written down.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nexus_protocol::debug::LogLevel;
use nexus_protocol::error::InvalidValue;
use nexus_protocol::model::{Scoring, parse_key_value};
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};

mod backup;
mod credentials;
mod limits;
mod maintenance;
mod notice;
mod pki;
mod repo;
mod security;
mod worktree;
pub use backup::{BackupCommand, BackupRestoreArgs};
pub use credentials::{CredentialsCommand, SetCredential};
pub use limits::{LimitsCommand, LimitsSetArgs, PolicyArgs, parse_policy_secs};
pub use maintenance::{MaintenanceCommand, MaintenanceRunArgs};
pub use notice::NoticeCommand;
pub use pki::{IssueArgs, IssueCommand, PkiCommand};
pub use repo::RepoArgs;
pub use security::{
    HostRemoveArgs, LoginArgs, TokenCommand, TokenCreateArgs, TokenRoleArg, UserCommand,
};
pub use worktree::WorktreeCommand;

#[derive(Debug, Parser)]
#[command(
    name = "nexus",
    version,
    about = "Nexus: a fleet manager for developer workspaces",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// How to print results.
    #[arg(long, short = 'o', value_enum, env = "NEXUS_OUTPUT", global = true)]
    pub output: Option<OutputFormat>,
    /// The request id this command's requests go under (32 hex digits), to find them with
    /// `nexus admin trace`; a fresh one by default. A retry keeps it.
    #[arg(long, env = "NEXUS_REQUEST_ID", global = true, value_name = "ID")]
    pub request_id: Option<RequestId>,
    /// Say on stderr the request id this command's requests go under.
    #[arg(long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the coordinators are and who this user is. Each falls back to its environment variable,
/// then to ~/.config/nexus/config.toml.
#[derive(Debug, Args, Default, Clone)]
pub struct ConnectionArgs {
    /// Coordinators, as HOST:PORT, comma-separated.
    #[arg(
        long = "coordinator",
        env = "NEXUS_COORDINATORS",
        value_delimiter = ',',
        global = true
    )]
    pub coordinators: Vec<String>,
    /// The cluster CA certificate.
    #[arg(long, env = "NEXUS_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// This user's certificate.
    #[arg(long, env = "NEXUS_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// This user's private key.
    #[arg(long, env = "NEXUS_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// The CLI's config file (default: ~/.config/nexus/config.toml).
    #[arg(long = "config", env = "NEXUS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring up a one-host fleet here: a one-node coordinator and an agent.
    Up(UpArgs),
    /// The per-user sync daemon (started by `nexus workspace sync start`).
    #[command(hide = true)]
    SyncDaemon {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print a shell completion script: `nexus completions bash > /etc/bash_completion.d/nexus`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Stop the fleet that `nexus up --detach` started.
    Down(StateArgs),
    /// Check that a coordinator answers, and who it is.
    Ping,
    /// Start a session with a user token from an admin: makes a key here, gets a short-lived
    /// certificate for it, and points the CLI's settings at them.
    Login(LoginArgs),
    /// Make the cluster's CA and certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Operate the fleet (admins).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Your workspaces (all of them, for an admin).
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Settings: the CLI's (show, validate, edit), and, for an admin, a daemon's (show, reload).
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The CLI's effective settings; with --node or --host, that daemon's (admins), secrets
    /// redacted.
    Show {
        /// Say where each setting comes from: flag, environment, file or default.
        #[arg(long)]
        origin: bool,
        /// A coordinator's, by node id. (`--coordinator` is taken by the coordinators'
        /// addresses.)
        #[arg(long = "node", value_name = "N", conflicts_with = "host")]
        node: Option<NodeId>,
        /// A host's agent's.
        #[arg(long, value_name = "H")]
        host: Option<HostId>,
    },
    /// Check a config file: its syntax (with line and column), unknown keys, ranges, and that
    /// the files it names exist. Exits non-zero if it is not valid.
    Validate {
        /// The file (default: the CLI's own, as `--config`/NEXUS_CONFIG or the default place).
        file: Option<PathBuf>,
        /// Whose file it is: the CLI's, a coordinator's or an agent's (checked by the daemon's
        /// own `--check-config`).
        #[arg(long, value_enum, default_value_t = ConfigKind::Cli)]
        kind: ConfigKind,
    },
    /// Edit the CLI's config file with $VISUAL, $EDITOR or vi: saved only once it is valid.
    Edit,
    /// Make daemons read their configuration again and apply what is hot (admins). Says what
    /// was applied, what needs a restart and what was wrong.
    Reload {
        /// A coordinator, by node id. Repeat for each.
        #[arg(long = "node", value_name = "N")]
        nodes: Vec<NodeId>,
        /// A host's agent. Repeat for each.
        #[arg(long = "host", value_name = "H")]
        hosts: Vec<HostId>,
        /// Every coordinator and every agent.
        #[arg(long, conflicts_with_all = ["nodes", "hosts"])]
        all: bool,
    },
}

/// Whose config file `nexus config validate` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigKind {
    Cli,
    Coordinator,
    Agent,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace; the scheduler picks a host (or `--host`) and host ports. Waits until
    /// it runs.
    Create(CreateArgs),
    /// Your workspaces.
    List {
        /// Answer from the coordinator's own replica (may be a little behind).
        #[arg(long)]
        stale: bool,
    },
    /// One workspace: its state, spec, desired state and last error.
    Inspect { name: WorkspaceName },
    /// Start a stopped workspace (the same container). Waits until it runs.
    Start(Target),
    /// Stop a workspace; its container and files stay. Waits until it has stopped.
    Stop(Target),
    /// Stop and start a workspace's container. Waits until it runs again.
    Restart(Target),
    /// Destroy a workspace: its container, network and ports. Waits until it is gone.
    Destroy(Target),
    /// Stop your other running workspaces and start this one. Waits until it runs.
    Switch(Target),
    /// Recreate a workspace's container from its spec (its files stay). Waits until it runs.
    Repair(Target),
    /// Destroy your stopped workspaces that have not changed for a while.
    Cleanup(CleanupArgs),
    /// What the workspace's container wrote, from its host.
    Logs(LogsArgs),
    /// Keep a local directory in sync with the workspace's files (/workspace in its container).
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Run a command in the running workspace, without a terminal or input; exits with its
    /// exit code.
    Exec {
        name: WorkspaceName,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Exempt the workspace from every automatic action (the inactivity stop, the lifetime's
    /// destroy, an admin's bulk stop); its destroy notices are taken back.
    Hold { name: WorkspaceName },
    /// Give a held workspace back to its policies.
    Release { name: WorkspaceName },
    /// The workspace's recent events, oldest first: who changed it, how, why (a policy's reason
    /// too), under which request.
    Events(EventsArgs),
}

/// A workspace to change, and whether to wait for the change.
#[derive(Debug, Args)]
pub struct Target {
    pub name: WorkspaceName,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct WaitArgs {
    /// Return once the coordinator has accepted the change, without waiting for the host.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the host, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: WorkspaceName,
    /// How many of the last lines.
    #[arg(long, default_value_t = 100)]
    pub tail: u32,
    /// Keep printing new lines until the container stops (or Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Start syncing DIR with the workspace, in the background (a per-user daemon).
    Start(SyncStartArgs),
    /// Your sync sessions.
    Status,
    /// The paths both sides changed, which wait for you.
    Conflicts {
        name: WorkspaceName,
    },
    /// Settle a conflict by keeping one side's version.
    Resolve {
        name: WorkspaceName,
        /// The path, relative to the synced directory.
        path: String,
        #[arg(long, value_enum)]
        keep: KeepArg,
    },
    /// Sync now, and wait until both sides agree (or say why not).
    Flush {
        name: WorkspaceName,
    },
    /// Stop carrying changes until `resume`.
    Pause {
        name: WorkspaceName,
    },
    Resume {
        name: WorkspaceName,
    },
    /// End the session (the files stay on both sides).
    Stop {
        name: WorkspaceName,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeepArg {
    /// Your directory's version.
    Local,
    /// The workspace's version.
    Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    /// Nexus' own engine: nothing to install.
    Embedded,
    /// A `mutagen` binary on PATH.
    Mutagen,
}

#[derive(Debug, Args)]
pub struct SyncStartArgs {
    pub name: WorkspaceName,
    /// The local directory.
    #[arg(long)]
    pub local: PathBuf,
    /// two-way-safe, two-way-resolved, one-way-safe or one-way-replica.
    #[arg(long, default_value = "two-way-safe", value_parser = parse_mode)]
    pub mode: nexus_sync::Mode,
    /// A path to leave out, in .gitignore syntax. Repeat for each.
    #[arg(long = "ignore")]
    pub ignore: Vec<String>,
    /// Leave out .git, .svn, .hg and their kind.
    #[arg(long)]
    pub ignore_vcs: bool,
    #[arg(long, value_enum, default_value = "embedded")]
    pub provider: ProviderArg,
}

fn parse_mode(value: &str) -> Result<nexus_sync::Mode, String> {
    value
        .parse()
        .map_err(|e: nexus_sync::reconcile::UnknownMode| e.to_string())
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Only workspaces stopped at least this long: 90s, 30m, 12h, 7d.
    #[arg(long, value_parser = parse_age, value_name = "AGE")]
    pub older_than: u64,
}

/// `90s`, `30m`, `12h`, `7d` (or plain seconds) as seconds.
pub fn parse_age(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, unit) = match value.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&value[..at], c),
        _ => (value, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not an age like 90s, 30m, 12h or 7d"))?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{value:?} is too long"))
}

#[derive(Debug, Args, Clone, Copy)]
pub struct HealthCheckArgs {
    /// A host whose disk has less free than this, in percent, warns.
    #[arg(long, env = "NEXUS_DISK_WARN_BELOW", value_name = "PERCENT", default_value = "15",
          value_parser = parse_percent)]
    pub disk_warn_below: f64,
    /// A host whose disk has less free than this, in percent, fails the check.
    #[arg(long, env = "NEXUS_DISK_FAIL_BELOW", value_name = "PERCENT", default_value = "5",
          value_parser = parse_percent)]
    pub disk_fail_below: f64,
}

/// A percentage from 0 to 100 (`7.5`, `7.5%`).
pub fn parse_percent(value: &str) -> Result<f64, String> {
    let number = value.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(percent),
        _ => Err(format!("{value:?} is not a percentage from 0 to 100")),
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: WorkspaceName,
    /// The image to run, e.g. dev:latest.
    #[arg(long)]
    pub image: String,
    /// A container port to publish on a host port. Repeat for each.
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    #[arg(long, value_enum, default_value = "medium")]
    pub class: ClassArg,
    /// Put it on this host instead of letting the scheduler choose.
    #[arg(long)]
    pub host: Option<HostId>,
    /// Only on hosts with this label, K=V. Repeat for each.
    #[arg(long = "label", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// An environment variable, K=V. Repeat for each.
    #[arg(long = "env", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// How to choose among the hosts it fits on (default: the cluster's, see `admin limits`).
    #[arg(long, value_parser = parse_scoring)]
    pub scoring: Option<Scoring>,
    /// Short for `--scoring spread`: the emptiest host.
    #[arg(long, conflicts_with = "scoring")]
    pub spread: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The command to run instead of the image's, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub(crate) fn parse_scoring(value: &str) -> Result<Scoring, InvalidValue> {
    value.parse()
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClassArg {
    Small,
    Medium,
    Large,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// Where the local fleet keeps its PKI, data and logs (default: ~/.local/state/nexus).
    #[arg(long, env = "NEXUS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The coordinator's UDP port on 127.0.0.1.
    #[arg(long, default_value_t = 7400)]
    pub port: u16,
    /// Return once the fleet is up, leaving it running (stop it with `nexus down`).
    #[arg(long)]
    pub detach: bool,
    /// Seconds to wait for the fleet to come up.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Every host with its status, workspaces, capacity and latest stats.
    Hosts {
        /// Answer from the coordinator's own replica without confirming with the leader: works
        /// without a quorum, may be a little behind.
        #[arg(long)]
        stale: bool,
    },
    /// The coordinators: members, roles, the leader, term, commit and applied index, health and
    /// last contact (as the leader sees them, when one is reachable).
    Status,
    /// The whole fleet, each check ok, warn or fail: quorum, every agent's readiness and
    /// engine, certificates, hosts' free disk, failed or lost workspaces. Exit 0 when none
    /// fails, 4 when one does (NOT_LEADER's code without a quorum).
    HealthCheck(HealthCheckArgs),
    /// The coordinator cluster's membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Take a host out of scheduling, or put it back.
    #[command(subcommand)]
    Host(HostCommand),
    /// Every allocated host port, fleet-wide.
    Ports {
        /// Answer from the coordinator's own replica (may be a little behind).
        #[arg(long)]
        stale: bool,
    },
    /// The fleet in numbers: hosts and workspaces by state, CPU, memory and ports promised.
    Stats,
    /// Every host's workspace networks, asked of each host's agent.
    Networks,
    /// Every workspace container's latest CPU, memory and network use, fleet-wide.
    Top {
        #[arg(long, value_enum, default_value = "cpu")]
        sort: TopSort,
        /// Only the first N.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// The limits the scheduler enforces, cluster-wide and per host.
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Any user's workspaces.
    #[command(subcommand)]
    Workspace(AdminWorkspaceCommand),
    /// Gather what it takes to debug the fleet into one .tar.gz: versions, cluster status,
    /// hosts, limits, workspaces (no environment values), and every daemon's configuration
    /// (secrets redacted), metrics, certificates, readiness, engine and recent logs.
    SupportBundle {
        /// Where to write it (default: nexus-support-TIME.tar.gz here). Never replaced.
        #[arg(long, value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// How far back the logs go.
        #[arg(long, value_name = "DUR", default_value = "24h", value_parser = parse_age)]
        since: u64,
        /// List what it would collect, and collect nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemons' own log records, from every coordinator and agent, merged in time order.
    Logs(AdminLogsArgs),
    /// One request's timeline across the fleet: each hop with its coordinator or host, offset,
    /// duration and outcome, and where it failed.
    Trace(TraceArgs),
    /// Backups of the replicated state: make one, list, inspect and verify them, the schedule,
    /// and restore one online.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Host maintenance: prune images and volumes, compact the stores; now or on the weekly
    /// schedule.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Notices every command shows its users on stderr (maintenance windows, announcements):
    /// post one, list them, clear them.
    #[command(subcommand)]
    Notice(NoticeCommand),
    // worktree verify (issue 24, item 3):
    /// Git worktrees of repository workspaces: verify them on every host, and repair them.
    #[command(subcommand)]
    Worktree(WorktreeCommand),
    /// The encrypted credential store (git and registry logins): set, list, check, rotate,
    /// delete; the key: new-key, rotate-key.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Join tokens, with which hosts and users get their certificates: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Every identity's newest certificate and when it expires: denied, expired, renew due or
    /// ok.
    Certs,
    /// The cluster CA: replace it (every party trusts both, every certificate is re-issued, the
    /// old CA is dropped), and see where a rotation stands.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Users: shut one out of the fleet.
    #[command(subcommand)]
    User(UserCommand),
}

/// `nexus admin ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Start replacing the cluster CA and show each coordinator's and host's progress until it
    /// is done. Refused with CA_ROTATION_IN_PROGRESS while one is in progress.
    Rotate(CaRotateArgs),
    /// Where the CA and a rotation stand: the phase, and who it waits for.
    Status,
}

#[derive(Debug, Args)]
pub struct CaRotateArgs {
    /// Start it and return; `nexus admin ca status` follows it.
    #[arg(long)]
    pub no_wait: bool,
    /// Finish the rotation in progress now, although the hosts listed as waiting are not done
    /// (each must then enrol again with a new token). Needs --force.
    #[arg(long, requires = "force")]
    pub finish: bool,
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the rotation to finish: 90s, 30m, 1h.
    #[arg(long, value_name = "DUR", default_value = "30m", value_parser = parse_age)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The request id, as an error or `--verbose` printed it (32 hex digits).
    pub request_id: RequestId,
}

/// `nexus admin logs`: which records, from which daemons.
#[derive(Debug, Args)]
pub struct AdminLogsArgs {
    /// Only errors (`--level error`).
    #[arg(long, conflicts_with = "level")]
    pub errors: bool,
    /// The least severe level shown: trace, debug, info, warn or error.
    #[arg(long, value_parser = parse_level, default_value = "info")]
    pub level: LogLevel,
    /// How far back: 90s, 30m, 1h, 2d (default 1h).
    #[arg(long, value_parser = parse_age, value_name = "DUR", conflicts_with = "since")]
    pub last: Option<u64>,
    /// From this time on, RFC 3339: 2026-12-03T08:00:00Z.
    #[arg(long, value_parser = crate::fleetlogs::parse_time, value_name = "TS")]
    pub since: Option<u64>,
    /// Only this host's agent. Repeat for each. With neither --host nor --node, every daemon.
    #[arg(long = "host", value_name = "H")]
    pub hosts: Vec<HostId>,
    /// Only the coordinator with this node id. Repeat for each. (`--coordinator` is taken by the
    /// coordinators' addresses.)
    #[arg(long = "node", value_name = "N")]
    pub nodes: Vec<NodeId>,
    /// Only records whose message, target or a field matches this regular expression.
    #[arg(long, value_name = "RE")]
    pub grep: Option<String>,
    /// Only records written under this request id.
    #[arg(long, value_name = "ID")]
    pub request: Option<RequestId>,
    /// Keep printing new records as they are written (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// At most this many records from each daemon: the newest.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub limit: u32,
}

fn parse_level(value: &str) -> Result<LogLevel, String> {
    nexus_protocol::logging::record::parse_level(value)
        .ok_or_else(|| format!("{value:?} is not a level: trace, debug, info, warn or error"))
}

/// `nexus admin workspace logs`: the application's output, or with `--system` the agent's.
#[derive(Debug, Args)]
pub struct WorkspaceLogsArgs {
    #[command(flatten)]
    pub logs: LogsArgs,
    /// Instead of the application's output: the agent's own records about the workspace and the
    /// engine's events for its container, in time order.
    #[arg(long)]
    pub system: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopSort {
    Cpu,
    Memory,
}

#[derive(Debug, Subcommand)]
pub enum AdminWorkspaceCommand {
    /// Every workspace, or those on one host or of one owner.
    List {
        #[arg(long)]
        host: Option<HostId>,
        #[arg(long)]
        owner: Option<UserName>,
        /// Answer from the coordinator's own replica (may be a little behind).
        #[arg(long)]
        stale: bool,
    },
    /// Any user's workspace, in full.
    Inspect { name: WorkspaceName },
    /// Recreate a workspace's container from its spec (its files stay), or with `--all` every
    /// failed or lost one; waits until each runs.
    Repair(RepairArgs),
    /// A workspace's recent events, oldest first: who changed it, how, why, under which request.
    Events(EventsArgs),
    /// Any user's workspace's logs; `--system` for what its agent and engine say of it.
    Logs(WorkspaceLogsArgs),
    /// A workspace's health: its container, healthcheck, ports, sync sessions and files, with a
    /// verdict. Exit 0 when healthy, 3 when degraded, 4 when unhealthy.
    Health { name: WorkspaceName },
    /// The sync sessions the workspace's agent serves: who, provider, last cycle, changes,
    /// conflicts.
    SyncStatus { name: WorkspaceName },
    /// The workspace's sync sessions that hold conflicts.
    SyncConflicts { name: WorkspaceName },
    /// Wake the workspace's sync sessions for a cycle now.
    SyncFlush { name: WorkspaceName },
    /// Run a command in any user's running workspace (as `workspace exec`); exits with its exit
    /// code.
    Exec {
        name: WorkspaceName,
        /// Then print the request's hops and timings, and the agent's lines about it, on stderr.
        #[arg(long)]
        debug: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Containers of workspaces the coordinators do not name (after a restore from an older
    /// backup), asked of every agent or those of --host; `--remove CONTAINER --host H` removes
    /// one.
    Orphans(OrphansArgs),
    /// Destroy stopped workspaces unchanged for a while: one user's (`--owner`) or everyone's.
    Cleanup {
        #[arg(long)]
        owner: Option<UserName>,
        #[command(flatten)]
        age: CleanupArgs,
    },
    /// Override the lifecycle policy for one workspace (over its host's and the cluster's).
    Policy {
        name: WorkspaceName,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Push a workspace's lifetime out; its destroy notices are taken back.
    Extend {
        name: WorkspaceName,
        /// By how long: 30s, 24h, 7d.
        #[arg(long, value_name = "DUR", value_parser = parse_policy_secs)]
        by: u64,
    },
    /// Stop every running workspace idle at least this long (held ones excepted), and print
    /// those it stopped.
    Stop {
        /// How long unused: 30m, 24h, 7d.
        #[arg(long, value_name = "DUR", value_parser = parse_policy_secs)]
        idle_for: u64,
    },
}

/// `admin workspace orphans [--host H]... [--remove CONTAINER --host H]`.
#[derive(Debug, Args)]
pub struct OrphansArgs {
    /// Only this host's agent. Repeat for each; with --remove, exactly one.
    #[arg(long = "host", value_name = "H")]
    pub hosts: Vec<HostId>,
    /// Remove this orphan container (its name, as listed) from the host of --host. Refused
    /// unless it is an orphan at that moment; its files stay.
    #[arg(long, value_name = "CONTAINER", requires = "hosts")]
    pub remove: Option<String>,
}

/// `admin workspace repair (NAME | --all [--host H] [--state failed|lost])`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<WorkspaceName>,
    /// Every workspace that is failed or lost (narrowed by --state and --host), 8 at a time.
    #[arg(long)]
    pub all: bool,
    /// With --all: only the workspaces on this host.
    #[arg(long, conflicts_with = "name")]
    pub host: Option<HostId>,
    /// With --all: only the workspaces in this state (default: failed and lost).
    #[arg(long, value_enum, conflicts_with = "name")]
    pub state: Option<RepairState>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RepairState {
    Failed,
    Lost,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    pub name: WorkspaceName,
    /// Keep printing new events (asking every second) until interrupted or the workspace is
    /// gone.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// No new workspaces on the host; the ones it has stay (moving them comes later).
    Drain { host: HostId },
    /// No new workspaces on the host.
    Cordon { host: HostId },
    /// The host takes new workspaces again.
    Uncordon { host: HostId },
    /// Take the host out of the fleet and refuse its certificate from now on (its open
    /// connections are closed); refused while it holds workspaces, unless --force. It comes
    /// back only with a new join token. Asks for confirmation on a terminal unless --yes.
    Remove(HostRemoveArgs),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The members, as `admin status` shows them.
    Members,
    /// Add a coordinator (started with `--join`): it joins as a learner, catches up, and is
    /// promoted to voter.
    Add {
        /// Its node id.
        id: NodeId,
        /// The address others reach it at, HOST:PORT.
        address: String,
    },
    /// Remove a coordinator from the cluster.
    Remove { id: NodeId },
    /// Hand leadership to another voter.
    TransferLeader { id: NodeId },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_with_their_units() {
        assert_eq!(parse_age("90"), Ok(90));
        assert_eq!(parse_age("90s"), Ok(90));
        assert_eq!(parse_age("30m"), Ok(1800));
        assert_eq!(parse_age("12h"), Ok(43_200));
        assert_eq!(parse_age("7d"), Ok(604_800));
        assert!(parse_age("7w").unwrap_err().contains("unknown unit"));
        assert!(parse_age("d").is_err());
        assert!(parse_age("-1h").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }

    #[test]
    fn a_request_id_is_32_hex_digits() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let cli = parse(&[
            "nexus",
            "--request-id",
            "0123456789abcdef0123456789abcdef",
            "ping",
        ])
        .unwrap();
        assert_eq!(
            cli.request_id,
            Some(RequestId::from_u128(
                0x0123_4567_89ab_cdef_0123_4567_89ab_cdef
            ))
        );
        // Global: after the command too.
        let cli = parse(&[
            "nexus",
            "ping",
            "--verbose",
            "--request-id",
            &format!("{}1", "0".repeat(31)),
        ])
        .unwrap();
        assert_eq!(cli.request_id, Some(RequestId::from_u128(1)));
        assert!(cli.verbose);
        assert!(parse(&["nexus", "--request-id", "abc", "ping"]).is_err());
        let trace = parse(&["nexus", "admin", "trace", &"f".repeat(32)]).unwrap();
        assert!(matches!(
            trace.command,
            Command::Admin(AdminCommand::Trace(TraceArgs { request_id })) if request_id == RequestId::from_u128(u128::MAX)
        ));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
