//! `nexus admin limits`' subcommands and flags, with the lifecycle policy's values (which
//! `admin workspace policy` takes too).

use clap::{Args, Subcommand};
use nexus_protocol::HostId;
use nexus_protocol::model::Scoring;

use super::parse_scoring;

/// A policy duration: 30s, 15m, 24h, 7d; 0 turns the policy off.
pub fn parse_policy_secs(value: &str) -> Result<u64, String> {
    nexus_protocol::policy::parse_secs(value).map_err(|e| e.0)
}

/// The lifecycle policy's values, each a duration (`0`: off).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct PolicyArgs {
    /// Stop a running workspace unused for this long (default 7d; 0: never).
    #[arg(long, value_name = "DUR", value_parser = parse_policy_secs)]
    pub inactive_stop_after: Option<u64>,
    /// Destroy a workspace this long after its creation, after two notices (default 30d; 0:
    /// never).
    #[arg(long, value_name = "DUR", value_parser = parse_policy_secs)]
    pub max_lifetime: Option<u64>,
    /// The first notice's lead before a destroy (default 24h).
    #[arg(long, value_name = "DUR", value_parser = parse_policy_secs)]
    pub first_notice: Option<u64>,
    /// The last notice's lead before a destroy (default 1h).
    #[arg(long, value_name = "DUR", value_parser = parse_policy_secs)]
    pub last_notice: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// The cluster's limits and each host's overrides.
    Show,
    /// Change the cluster's limits, or one host's with `--host`.
    Set(LimitsSetArgs),
}

#[derive(Debug, Args)]
pub struct LimitsSetArgs {
    /// Override this host's limits instead of the cluster's.
    #[arg(long)]
    pub host: Option<HostId>,
    #[arg(long, value_name = "N")]
    pub max_workspaces_per_host: Option<u32>,
    #[arg(long, value_name = "N")]
    pub max_ports_per_workspace: Option<u32>,
    /// Workspaces being scheduled, started, stopped or destroyed on one host at once.
    #[arg(long, value_name = "N")]
    pub max_concurrent_ops: Option<u32>,
    /// How far a host's CPUs may be promised, in percent (400 = 4 times).
    #[arg(long, value_name = "PERCENT")]
    pub cpu_overcommit: Option<u32>,
    /// How far a host's memory may be promised, in percent.
    #[arg(long, value_name = "PERCENT")]
    pub memory_overcommit: Option<u32>,
    /// The scoring for creates that do not choose (cluster-wide only).
    #[arg(long, value_parser = parse_scoring)]
    pub scoring: Option<Scoring>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}
