//! `nexus admin ca rotate|status`: replacing the cluster CA, asked of the coordinators, and
//! following its progress. The rendering is `output::ca`'s.
//!
//! `rotate` waits over one connection kept between its looks: a connection made before the old
//! CA is dropped keeps going, so the admin whose certificate is of the old CA sees the rotation
//! finish. Once the new CA signs, it renews this CLI's own certificate over that connection
//! (a key made here) and writes it, its key and the new CA to the files it was given, so the
//! admin's next command connects under the new CA without a new login.

use std::time::{Duration, Instant};

use nexus_protocol::RequestId;
use nexus_protocol::ca_rotation::{CaPhase, CaStatus};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::join::RenewRequest;
use nexus_protocol::message::{AdminRequest, Request, Response, WorkspaceRequest};
use nexus_protocol::pki::{KeyRequest, write_pem};

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
    let mut renewed = false;
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
        let new_ca_signs = done
            || current
                .rotation
                .as_ref()
                .is_some_and(|rotation| rotation.phase == CaPhase::Reissue);
        if new_ca_signs && !renewed {
            renewed = true;
            match renew_own(&mut client, settings, &current, &target).await {
                Ok(()) => {
                    if format == OutputFormat::Table {
                        eprintln!(
                            "renewed this CLI's certificate on the new CA ({})",
                            settings.cert.display()
                        );
                    }
                }
                Err(error) => eprintln!(
                    "warning: cannot renew this CLI's certificate on the new CA: {}; after the rotation, log in again",
                    error.error.message
                ),
            }
        }
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

/// Renews this CLI's certificate over `client`'s connection from the CA that signs now, and
/// writes the key (0600), the certificate and the new CA (the only one this CLI needs to trust:
/// every server presents a certificate of it from the re-issue phase on) to its files.
async fn renew_own(
    client: &mut Client<'_>,
    settings: &Settings,
    status: &CaStatus,
    new_ca: &str,
) -> Result<(), CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError::local(ErrorCode::Internal, e.to_string());
    let ca_pem = nexus_protocol::transport::certificates_pem(&status.trusted_pem)
        .into_iter()
        .find(|(der, _)| nexus_protocol::ca_rotation::fingerprint(der) == new_ca)
        .map(|(_, pem)| pem)
        .ok_or_else(|| failed(&"the cluster's trusted CAs do not hold the new one"))?;
    let key = KeyRequest::generate("nexus CLI (CA rotation)").map_err(|e| failed(&e))?;
    let request = Request::Workspace(WorkspaceRequest::RenewSession(RenewRequest {
        csr_pem: key.csr_pem.clone(),
        names: Vec::new(),
    }));
    let issued = match client
        .request_under(RequestId::random(), request, TIMEOUT)
        .await?
    {
        Response::Issued(issued) => issued,
        other => return Err(CliError::unexpected(&other)),
    };
    let leaf = nexus_protocol::transport::first_certificate_der(&issued.cert_pem)
        .ok_or_else(|| failed(&"the certificate issued cannot be read"))?;
    let ca = nexus_protocol::transport::first_certificate_der(&ca_pem)
        .ok_or_else(|| failed(&"the new CA cannot be read"))?;
    if !nexus_protocol::identity::issued_by(&leaf, &ca) {
        return Err(failed(&"the certificate issued is not the new CA's"));
    }
    // The key first: a crash between leaves a key without its certificate, never the reverse.
    write_pem(&settings.key, key.key_pem.expose(), true).map_err(|e| failed(&e))?;
    write_pem(&settings.cert, &issued.cert_pem, false).map_err(|e| failed(&e))?;
    write_pem(&settings.ca, &ca_pem, false).map_err(|e| failed(&e))
}

fn line_of(status: &CaStatus) -> String {
    ca::progress_line(status).trim_end().to_string()
}
