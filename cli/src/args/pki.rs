//! `nexus pki`'s subcommands and flags: the cluster's CA and certificates made by hand.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use nexus_protocol::error::InvalidValue;
use nexus_protocol::identity::Role;
use nexus_protocol::{HostId, NodeId, UserName};

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

fn parse_role(value: &str) -> Result<Role, InvalidValue> {
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
