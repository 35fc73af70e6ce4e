//! `nexus admin ca rotate|status`: replacing the cluster CA, asked of the coordinators, and
//! following its progress. The rendering is `output::ca`'s.
//!
//! `rotate` waits over one connection kept between its looks: a connection made before the old
//! CA is dropped keeps going, so the admin whose certificate is of the old CA sees the rotation
//! finish (a new connection would be refused; see docs/operations.md for what follows).

use std::time::{Duration, Instant};

use nexus_protocol::ca_rotation::CaStatus;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, Request, Response};

use crate::args::{CaCommand, CaRotateArgs, OutputFormat};
use crate::error::CliError;
use crate::output::{self, ca};
use crate::settings::{Client, Settings};

/// How long one request waits for its answer.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How often `rotate` looks at the rotation's progress.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(
    command: CaCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        CaCommand::Status => {
            let status = status(&mut settings.client()?).await?;
            output::emit(format, &ca::status_json(&status), || {
                ca::status_text(&status)
            });
            Ok(())
        }
        CaCommand::Rotate(args) => rotate(args, settings, format).await,
    }
}

async fn status(client: &mut Client<'_>) -> Result<CaStatus, CliError> {
    match client
        .request(Request::Admin(AdminRequest::CaStatus), TIMEOUT)
        .await?
    {
        Response::CaStatus(status) => Ok(*status),
        other => Err(CliError::unexpected(&other)),
    }
}

async fn rotate(
    args: CaRotateArgs,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let mut client = settings.client()?;
    let request = if args.finish {
        AdminRequest::FinishCaRotation
    } else {
        AdminRequest::RotateCa
    };
    let started = match client.request(Request::Admin(request), TIMEOUT).await? {
        Response::CaStatus(status) => *status,
        other => return Err(CliError::unexpected(&other)),
    };
    let target = started
        .rotation
        .as_ref()
        .map(|rotation| rotation.new_ca.clone())
        .or_else(|| started.last.as_ref().map(|last| last.new_ca.clone()))
        .unwrap_or_default();
    if args.no_wait || args.finish {
        output::emit(format, &ca::status_json(&started), || {
            ca::status_text(&started)
        });
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut shown = String::new();
    let mut current = started;
    loop {
        let line = ca::progress_line(&current);
        if format == OutputFormat::Table && line != shown {
            eprint!("{line}");
            shown = line;
        }
        let done = current.rotation.is_none()
            && current
                .last
                .as_ref()
                .is_some_and(|last| last.new_ca == target);
        if done {
            output::emit(format, &ca::status_json(&current), || {
                ca::status_text(&current)
            });
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::local(
                ErrorCode::Timeout,
                format!(
                    "the rotation is not done after {}s: {}",
                    args.timeout,
                    line_of(&current)
                ),
            )
            .suggest("it goes on without this command: follow it with `nexus admin ca status`; a host that stays down holds it up (bring it back, or `nexus admin ca rotate --finish --force`)"));
        }
        tokio::time::sleep(POLL).await;
        current = match status(&mut client).await {
            Ok(status) => status,
            Err(error) if error.error.code == ErrorCode::AuthenticationFailed => {
                return Err(old_ca_refused(error, &current));
            }
            Err(error) => return Err(error),
        };
    }
}

/// A new connection refused while the rotation was under way: the old CA (this CLI's
/// certificate's) was most likely dropped as the rotation finished.
fn old_ca_refused(error: CliError, last: &CaStatus) -> CliError {
    let mut error = error;
    error.error.message = format!(
        "{} (the rotation was last seen at: {}; it has most likely finished, dropping the old CA this CLI's certificate is of)",
        error.error.message,
        line_of(last)
    );
    error.suggest("log in again with a token made after the rotation (`nexus login --token-file`), or issue yourself a certificate on a coordinator's host (`nexus pki issue user --dir TLS-DIR ...`); then `nexus admin ca status`")
}

fn line_of(status: &CaStatus) -> String {
    ca::progress_line(status).trim_end().to_string()
}
