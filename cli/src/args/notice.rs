//! `nexus admin notice`'s subcommands and flags.

use clap::Subcommand;
use nexus_protocol::UserName;

/// `nexus admin notice`.
#[derive(Debug, Subcommand)]
pub enum NoticeCommand {
    /// Post a notice, for every user or for one, shown on stderr by each of their commands.
    Set {
        /// What users read (at most 1024 bytes).
        text: String,
        /// Shown until then: a time (RFC 3339, 2026-12-24T08:00:00Z) or a duration from now
        /// (90m, 2h, 7d). Without it, until cleared.
        #[arg(long, value_name = "TS|DUR")]
        until: Option<String>,
        /// Only this user sees it.
        #[arg(long, value_name = "U")]
        user: Option<UserName>,
    },
    /// Every notice, with its id, audience, source, when it was posted and until when.
    List,
    /// Clear notices by id, or all of them.
    Clear {
        /// The notices' ids, as `list` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every notice, whoever posted it.
        #[arg(long)]
        all: bool,
    },
}
