//! Fleet security's command lines: `nexus admin token ...`, `admin host remove`, `admin user
//! revoke` and `nexus login`. A secret never comes as a flag's value: a token reaches `login`
//! through a file, stdin, `NEXUS_TOKEN` or a prompt, and `token create` prints one only once.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use nexus_protocol::error::InvalidValue;
use nexus_protocol::identity::Role;
use nexus_protocol::join::{DEFAULT_TOKEN_TTL_SECS, TokenId, TokenRole, TokenSpec};
use nexus_protocol::model::parse_key_value;
use nexus_protocol::{HostId, UserName};

use super::{StateArgs, parse_age};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a join token: for a host (`--role agent`), or for one user (`--role user|admin
    /// --name U`). The token is printed this once; the cluster keeps only its secret's hash.
    Create(TokenCreateArgs),
    /// Every token the cluster keeps, with its status and uses; never a secret.
    List,
    /// Revoke a token: it enrols no one from then on (what it enrolled stays).
    Revoke {
        /// Its id, as `token list` shows it.
        #[arg(value_parser = parse_token_id)]
        id: TokenId,
    },
}

/// Who a token lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRoleArg {
    /// A host's agent (it names its own host id when it enrols).
    Agent,
    /// A user, named with --name.
    User,
    /// An admin, named with --name.
    Admin,
}

/// `admin token create --role agent|user|admin [--name U] [--ttl 24h] [--uses N] [--label
/// K=V]...`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[arg(long, value_enum)]
    pub role: TokenRoleArg,
    /// The user the token is for (user and admin tokens only).
    #[arg(long, value_name = "U")]
    pub name: Option<UserName>,
    /// How long the token can be used: 90s, 30m, 24h, 7d (default 24h).
    #[arg(long, value_name = "DUR", value_parser = parse_age)]
    pub ttl: Option<u64>,
    /// How many enrolments it allows (default: any number until it expires).
    #[arg(long, value_name = "N")]
    pub uses: Option<u32>,
    /// A label given to the host that enrols with it, K=V (agent tokens only). Repeat for each.
    #[arg(long = "label", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
}

impl TokenCreateArgs {
    /// The spec to send, checked as the coordinator will check it.
    pub fn spec(&self) -> Result<TokenSpec, InvalidValue> {
        let role = match (self.role, &self.name) {
            (TokenRoleArg::Agent, None) => TokenRole::Agent,
            (TokenRoleArg::Agent, Some(_)) => {
                return Err(InvalidValue(
                    "--name is for user and admin tokens: an agent names its own host id when it enrols".into(),
                ));
            }
            (TokenRoleArg::User | TokenRoleArg::Admin, None) => {
                return Err(InvalidValue(
                    "a user or admin token is for one user: name them with --name U".into(),
                ));
            }
            (TokenRoleArg::User, Some(name)) => TokenRole::User {
                name: name.clone(),
                role: Role::User,
            },
            (TokenRoleArg::Admin, Some(name)) => TokenRole::User {
                name: name.clone(),
                role: Role::Admin,
            },
        };
        if !self.labels.is_empty() && self.role != TokenRoleArg::Agent {
            return Err(InvalidValue(
                "--label is for agent tokens: labels are given to the host that enrols".into(),
            ));
        }
        let spec = TokenSpec {
            role,
            ttl_secs: self.ttl.unwrap_or(DEFAULT_TOKEN_TTL_SECS),
            uses: self.uses,
            labels: self.labels.iter().cloned().collect(),
        };
        spec.check()?;
        Ok(spec)
    }
}

fn parse_token_id(value: &str) -> Result<TokenId, InvalidValue> {
    value.parse()
}

/// `admin host remove H [--force] [--yes]`.
#[derive(Debug, Args)]
pub struct HostRemoveArgs {
    pub host: HostId,
    /// Remove it even though it holds workspaces: they are forgotten with it.
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Shut a user out: every certificate of theirs is refused from now on, at every handshake,
    /// and their open connections are closed. A new user token lets them log in again.
    Revoke {
        name: UserName,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `nexus login [--coordinator ADDR] [--token-file FILE]`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// A file holding the token (`-`: stdin). Without it: NEXUS_TOKEN, else a prompt on a
    /// terminal. Never the token itself on the command line.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The CLI's state directory: the session's key and certificate go in its `login/`
    /// (default: ~/.local/state/nexus, as `nexus up`'s).
    #[arg(long, env = "NEXUS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl LoginArgs {
    pub fn state(&self) -> StateArgs {
        StateArgs {
            state_dir: self.state_dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{AdminCommand, Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nexus").chain(args.iter().copied()))
    }

    fn create(args: &[&str]) -> TokenCreateArgs {
        let mut all = vec!["admin", "token", "create"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Admin(AdminCommand::Token(TokenCommand::Create(create))) => create,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_agent_token_takes_labels_and_no_name() {
        let spec = create(&[
            "--role", "agent", "--ttl", "2h", "--uses", "3", "--label", "zone=a",
        ])
        .spec()
        .unwrap();
        assert_eq!(spec.role, TokenRole::Agent);
        assert_eq!(spec.ttl_secs, 7200);
        assert_eq!(spec.uses, Some(3));
        assert_eq!(spec.labels.get("zone").map(String::as_str), Some("a"));
        let error = create(&["--role", "agent", "--name", "bob"])
            .spec()
            .unwrap_err();
        assert!(error.0.contains("--name is for user and admin"), "{error}");
    }

    #[test]
    fn a_user_token_names_its_user_and_takes_no_labels() {
        let spec = create(&["--role", "admin", "--name", "alice"])
            .spec()
            .unwrap();
        assert_eq!(
            spec.role,
            TokenRole::User {
                name: UserName::new("alice").unwrap(),
                role: Role::Admin
            }
        );
        assert_eq!(spec.ttl_secs, DEFAULT_TOKEN_TTL_SECS);
        assert_eq!(spec.uses, None);
        let error = create(&["--role", "user"]).spec().unwrap_err();
        assert!(error.0.contains("--name U"), "{error}");
        let error = create(&["--role", "user", "--name", "bob", "--label", "a=b"])
            .spec()
            .unwrap_err();
        assert!(error.0.contains("--label is for agent tokens"), "{error}");
    }

    #[test]
    fn a_spec_outside_the_rules_is_refused_before_it_is_sent() {
        assert!(create(&["--role", "agent", "--uses", "0"]).spec().is_err());
        assert!(
            create(&["--role", "agent", "--ttl", "400d"])
                .spec()
                .is_err()
        );
        assert!(parse(&["admin", "token", "create"]).is_err());
        assert!(parse(&["admin", "token", "create", "--role", "root"]).is_err());
    }

    #[test]
    fn a_token_id_is_checked_and_login_takes_no_token_value() {
        assert!(parse(&["admin", "token", "revoke", "0123456789abcdef"]).is_ok());
        assert!(parse(&["admin", "token", "revoke", "nope"]).is_err());
        assert!(parse(&["login", "--token", "NXJT1-x"]).is_err());
        let login = parse(&["login", "--token-file", "-", "--coordinator", "h:1"]).unwrap();
        assert_eq!(login.connection.coordinators, vec!["h:1".to_string()]);
        match login.command {
            Command::Login(args) => {
                assert_eq!(args.token_file, Some(PathBuf::from("-")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn removing_a_host_and_revoking_a_user_parse() {
        let cli = parse(&["admin", "host", "remove", "h1", "--force", "--yes"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Admin(AdminCommand::Host(crate::args::HostCommand::Remove(
                HostRemoveArgs {
                    force: true,
                    yes: true,
                    ..
                }
            )))
        ));
        let cli = parse(&["admin", "user", "revoke", "bob", "-y"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Admin(AdminCommand::User(UserCommand::Revoke { yes: true, .. }))
        ));
        assert!(parse(&["admin", "certs"]).is_ok());
    }
}
