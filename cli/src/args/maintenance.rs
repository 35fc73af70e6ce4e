//! `nexus admin maintenance`'s subcommands and flags.

use clap::{Args, Subcommand};
use nexus_protocol::maintenance::WeeklyTime;
use nexus_protocol::{HostId, NodeId};

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Run host maintenance now: agents prune dangling images (never one a container uses or
    /// a workspace's spec names) and volumes no container uses; coordinators compact their
    /// state store. Without --prune-images, --prune-volumes or --compact: all three. Each
    /// daemon answers what it removed (or would, with --dry-run) and the bytes reclaimed.
    Run(MaintenanceRunArgs),
    /// Show the weekly maintenance window, or change it (UTC; the leader runs it, with a notice
    /// to everyone a day before).
    Schedule {
        /// The window's start: a day and a UTC time, like "sun 02:00".
        #[arg(long, value_name = "DAY HH:MM", conflicts_with = "off")]
        at: Option<WeeklyTime>,
        /// No scheduled maintenance.
        #[arg(long)]
        off: bool,
    },
    /// The window, the next run, and what the last scheduled run reclaimed on each daemon.
    Status,
}

/// `admin maintenance run [--host H ... | --node N ... | --all] [--prune-images]
/// [--prune-volumes] [--compact] [--dry-run]`.
#[derive(Debug, Args)]
pub struct MaintenanceRunArgs {
    /// Only this host's agent (may repeat).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<HostId>,
    /// Only this coordinator (may repeat).
    #[arg(long = "node", value_name = "N")]
    pub nodes: Vec<NodeId>,
    /// Every coordinator and every agent.
    #[arg(long, conflicts_with_all = ["hosts", "nodes"])]
    pub all: bool,
    /// Agents: remove dangling images no container uses and no workspace's spec names.
    #[arg(long)]
    pub prune_images: bool,
    /// Agents: remove volumes no container uses.
    #[arg(long)]
    pub prune_volumes: bool,
    /// Coordinators: compact the state store.
    #[arg(long)]
    pub compact: bool,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}
