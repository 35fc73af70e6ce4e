//! The command line, as clap parses it. Names, flags and JSON fields are a contract (see
//! docs/cli.md): extend freely, change only with a reason written down.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nexus_protocol::identity::Role;
use nexus_protocol::model::parse_key_value;
use nexus_protocol::{HostId, NodeId, UserName, WorkspaceName};

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
    /// Stop the fleet that `nexus up --detach` started.
    Down(StateArgs),
    /// Check that a coordinator answers, and who it is.
    Ping,
    /// Make the cluster's CA and certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Operate the fleet (admins).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Your workspaces (all of them, for an admin).
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace; the scheduler picks a host (or `--host`) and host ports.
    Create(CreateArgs),
    /// Your workspaces.
    List {
        /// Answer from the coordinator's own replica (may be a little behind).
        #[arg(long)]
        stale: bool,
    },
    /// One workspace.
    Inspect { name: WorkspaceName },
    /// Start a stopped workspace (the same container).
    Start { name: WorkspaceName },
    /// Stop a workspace; its container and files stay.
    Stop { name: WorkspaceName },
    /// Destroy a workspace: its container, network and ports.
    Destroy { name: WorkspaceName },
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
    /// The command to run instead of the image's, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
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
pub enum PkiCommand {
    /// Make the cluster CA: DIR/ca.pem and DIR/ca.key (mode 0600).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
        #[arg(long, default_value_t = 3650)]
        validity_days: u32,
    },
    /// Issue a certificate signed by the CA in DIR.
    #[command(subcommand)]
    Issue(IssueCommand),
}

#[derive(Debug, Subcommand)]
pub enum IssueCommand {
    /// A coordinator's certificate: DIR/coordinator-N.pem and .key.
    Coordinator {
        #[arg(long)]
        node_id: NodeId,
        #[command(flatten)]
        common: IssueArgs,
    },
    /// An agent's certificate: DIR/agent-H.pem and .key.
    Agent {
        #[arg(long)]
        host_id: HostId,
        #[command(flatten)]
        common: IssueArgs,
    },
    /// A user's certificate: DIR/user-U.pem and .key.
    User {
        #[arg(long)]
        name: UserName,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        common: IssueArgs,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    value.parse()
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The PKI directory holding ca.pem and ca.key.
    #[arg(long)]
    pub dir: PathBuf,
    /// An IP address the holder is reached at. Repeat for each.
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// A DNS name the holder is reached at. Repeat for each.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    #[arg(long, default_value_t = 365)]
    pub validity_days: u32,
    /// Replace an existing key.
    #[arg(long)]
    pub force: bool,
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
    /// Exit 0 if the cluster has a leader and a quorum of healthy voters, non-zero otherwise.
    HealthCheck,
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
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// No new workspaces on the host; the ones it has stay (moving them comes later).
    Drain { host: HostId },
    /// No new workspaces on the host.
    Cordon { host: HostId },
    /// The host takes new workspaces again.
    Uncordon { host: HostId },
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
