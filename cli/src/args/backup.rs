//! `nexus admin backup`'s subcommands and flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse_age;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the replicated state now, on the leader (at an index it confirmed), into its
    /// backup directory; with --file, fetch it here too.
    Create {
        /// Also write the backup to FILE here (0600; never replaced).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Every coordinator's backups, newest first, with where each is.
    List,
    /// A backup's header, its checksum verified: FILE if it is a path here, else the backup ID
    /// from the coordinators' directories.
    Inspect {
        #[arg(value_name = "ID|FILE")]
        backup: String,
    },
    /// Check a backup whole (checksum, format, cluster): FILE here, or ID on every coordinator
    /// that holds it. Exit 0 only when it is good.
    Verify {
        #[arg(value_name = "ID|FILE")]
        backup: String,
    },
    /// Show the backup schedule, or change it: an interval (0 turns it off) and how many
    /// backups each coordinator keeps.
    Schedule {
        /// Time between scheduled backups, e.g. 1h, 30m, 90 (seconds); 0 turns them off.
        #[arg(long, value_name = "DUR", value_parser = parse_age)]
        every: Option<u64>,
        /// How many backups each coordinator keeps (the newest).
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
    },
    /// Replace the running cluster's state with a backup's, in one replicated entry: its
    /// workspaces come back (missing containers are made, matching ones left running), and
    /// containers of workspaces made since are left running as orphans for an admin to remove.
    /// Asks for confirmation on a terminal unless --yes.
    Restore(BackupRestoreArgs),
}

/// `admin backup restore (ID | latest | --file FILE) [--yes] [--force]`.
#[derive(Debug, Args)]
pub struct BackupRestoreArgs {
    /// A backup's id (`nexus admin backup list`), or `latest` for the newest any coordinator
    /// holds.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub backup: Option<String>,
    /// A backup file of this machine: uploaded to the leader, then restored.
    #[arg(long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Restore another cluster's backup (made under another CA).
    #[arg(long)]
    pub force: bool,
}
