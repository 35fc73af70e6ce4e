//! `nexus admin credentials`'s subcommands and flags. A secret is read only from stdin, never
//! from a flag (argv is visible to every user of the machine).

use std::path::PathBuf;

use clap::Subcommand;
use nexus_protocol::HostId;

/// `nexus admin credentials`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Store a credential (or replace the one of that name), its password read from stdin.
    #[command(subcommand)]
    Set(SetCredential),
    /// Every credential: name, kind, scope, username, key, created, last used. Never a secret.
    List,
    /// Have a host try a credential (a registry login; `git ls-remote`). Exits non-zero when
    /// it fails.
    Check {
        name: String,
        /// The host to try from (default: any ready host).
        #[arg(long, value_name = "H")]
        host: Option<HostId>,
        /// For git: the repository to try, when the credential's prefix names none.
        #[arg(long, value_name = "URL")]
        repo: Option<String>,
    },
    /// Replace a credential's password or token, read from stdin.
    Rotate {
        name: String,
        /// Read the new password from stdin (the only way to give it).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Delete a credential.
    Delete { name: String },
    /// Seal every credential again under the newest key of the leader's key file. Refused if a
    /// coordinator lacks that key.
    RotateKey,
    /// Make a key file (0600) for `--credentials-key-file`, or add a key to one (`--add`). Runs
    /// locally; never overwrites a file.
    NewKey {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Add a new (newest) key to the existing file instead of making one.
        #[arg(long)]
        add: bool,
    },
}

/// `nexus admin credentials set`.
#[derive(Debug, Subcommand)]
pub enum SetCredential {
    /// HTTP basic credentials for git remotes under a URL prefix.
    Git {
        name: String,
        /// The remotes it serves: URLs that start with this at a path boundary.
        #[arg(long, value_name = "P")]
        url_prefix: String,
        #[arg(long, value_name = "U")]
        username: String,
        /// Read the password or token from stdin (the only way to give it).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// A container registry's login.
    Registry {
        name: String,
        /// The registry's server, HOST[:PORT], as images name it.
        #[arg(long, value_name = "S")]
        server: String,
        #[arg(long, value_name = "U")]
        username: String,
        /// Read the password from stdin (the only way to give it).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}
