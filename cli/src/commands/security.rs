//! `nexus admin token create|list|revoke`, `admin certs`, `admin host remove` and `admin user
//! revoke`: the fleet's admissions and expulsions, asked of the coordinators. The rendering is
//! `output::security`'s; login is `commands::login`.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, Request, Response};
use serde_json::json;

use nexus_protocol::join::TokenSpec;

use crate::args::{HostRemoveArgs, OutputFormat, TokenCommand, TokenCreateArgs, UserCommand};
use crate::error::CliError;
use crate::output::{self, security};
use crate::settings::Settings;

/// How long a read or a change waits for its answer.
const TIMEOUT: Duration = Duration::from_secs(15);

pub async fn token(
    command: TokenCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        TokenCommand::Create(args) => create_token(spec(&args)?, settings, format).await,
        TokenCommand::List => {
            let request = Request::Admin(AdminRequest::Tokens);
            match settings.request(request, TIMEOUT).await? {
                Response::Tokens(tokens) => {
                    let now = clock::now();
                    output::emit(format, &security::tokens_json(&tokens, now), || {
                        security::tokens_table(&tokens, now)
                    });
                    Ok(())
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
        TokenCommand::Revoke { id } => {
            let request = Request::Admin(AdminRequest::RevokeToken(id.clone()));
            acked(settings.request(request, TIMEOUT).await?)?;
            output::emit(format, &json!({"id": id.as_str(), "revoked": true}), || {
                format!("Revoked token {id}: it enrols no one from now on.\n")
            });
            Ok(())
        }
    }
}

/// The token's spec from the command line, checked as the coordinator will check it: `crate::run`
/// calls it before the settings are even resolved, so a wrong flag is said first.
pub fn spec(args: &TokenCreateArgs) -> Result<TokenSpec, CliError> {
    args.spec()
        .map_err(|e| CliError::local(ErrorCode::InvalidArgument, e.0))
}

pub async fn create_token(
    spec: TokenSpec,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request = Request::Admin(AdminRequest::CreateToken(spec));
    match settings.request(request, TIMEOUT).await? {
        Response::TokenCreated(created) => {
            let coordinator = settings
                .coordinators
                .first()
                .map_or("HOST:PORT", String::as_str);
            output::emit(format, &security::created_token_json(&created), || {
                security::created_token_text(&created, coordinator)
            });
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}

pub async fn certs(settings: &Settings, format: OutputFormat) -> Result<(), CliError> {
    match settings
        .request(Request::Admin(AdminRequest::Certificates), TIMEOUT)
        .await?
    {
        Response::Certificates(certs) => {
            let now = i64::try_from(clock::now().as_millis() / 1000).unwrap_or(i64::MAX);
            output::emit(format, &security::certs_json(&certs, now), || {
                security::certs_table(&certs, now)
            });
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}

pub async fn remove_host(
    args: HostRemoveArgs,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let HostRemoveArgs { host, force, yes } = args;
    let forgotten = if force {
        " Its workspaces, if any, are forgotten with it (their containers are not stopped)."
    } else {
        ""
    };
    confirm(
        &format!(
            "Remove host {host} from the fleet? Its certificate is refused from now on and its agent's connections are closed; it comes back only with a new join token.{forgotten} [y/N] "
        ),
        yes,
    )?;
    let request = Request::Admin(AdminRequest::RemoveHost {
        host: host.clone(),
        force,
    });
    acked(settings.request(request, TIMEOUT).await?)?;
    output::emit(
        format,
        &json!({"host": host.as_str(), "removed": true, "forced": force}),
        || {
            format!(
                "Removed host {host}: its certificate is refused from now on. To bring it back, enrol it again with a new agent token.\n"
            )
        },
    );
    Ok(())
}

pub async fn user(
    command: UserCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let UserCommand::Revoke { name, yes } = command;
    confirm(
        &format!(
            "Revoke user {name}? Every certificate of theirs is refused from now on and their connections are closed. [y/N] "
        ),
        yes,
    )?;
    let request = Request::Admin(AdminRequest::RevokeUser(name.clone()));
    acked(settings.request(request, TIMEOUT).await?)?;
    output::emit(
        format,
        &json!({"user": name.as_str(), "revoked": true}),
        || {
            format!(
                "Revoked user {name}: their certificates are refused from now on. A new user token (`nexus admin token create --role user --name {name}`) lets them log in again.\n"
            )
        },
    );
    Ok(())
}

fn acked(response: Response) -> Result<(), CliError> {
    match response {
        Response::Ack => Ok(()),
        other => Err(CliError::unexpected(&other)),
    }
}

/// Asks `question` on a terminal unless `yes`; without a terminal, `--yes` is required (as
/// `admin backup restore` does).
fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    crate::confirm::confirm(
        crate::confirm::Confirmation {
            question,
            why: "this shuts an identity out of the fleet",
            suggestion: "add --yes to go ahead without being asked",
            declined: "nothing changed: not confirmed",
        },
        yes,
    )
}
