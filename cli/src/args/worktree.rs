//! `nexus admin worktree`'s subcommands and flags.

use clap::Subcommand;
use nexus_protocol::HostId;

/// `nexus admin worktree`.
#[derive(Debug, Subcommand)]
pub enum WorktreeCommand {
    /// Check every repository workspace's worktree on every host (or one): its directory, its
    /// links, its branch, its base commit, no lock left. Exits non-zero while anything is broken.
    Verify {
        /// Only this host.
        #[arg(long, value_name = "H")]
        host: Option<HostId>,
        /// Mend what can be mended (git's worktree repair, unlock and prune, or a fresh checkout
        /// of the branch). Never deletes a file a user changed: a damaged worktree's files are
        /// moved aside, and the report says where.
        #[arg(long)]
        repair: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::{AdminCommand, Cli, Command, WorktreeCommand};

    fn parse(args: &[&str]) -> Option<(Option<String>, bool)> {
        let cli = Cli::try_parse_from(args).ok()?;
        match cli.command {
            Command::Admin(AdminCommand::Worktree(WorktreeCommand::Verify { host, repair })) => {
                Some((host.map(|h| h.to_string()), repair))
            }
            _ => None,
        }
    }

    #[test]
    fn verify_takes_a_host_and_repair() {
        assert_eq!(
            parse(&["nexus", "admin", "worktree", "verify"]),
            Some((None, false))
        );
        assert_eq!(
            parse(&[
                "nexus", "admin", "worktree", "verify", "--host", "h1", "--repair"
            ]),
            Some((Some("h1".into()), true))
        );
        assert_eq!(
            parse(&["nexus", "admin", "worktree", "verify", "--host"]),
            None
        );
    }
}
