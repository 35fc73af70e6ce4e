//! The coordinator cluster's status as its leader sees it (it alone knows every member's health
//! and progress): `admin status`, `admin cluster members` and `admin health-check` read it.

use std::time::Duration;

use nexus_protocol::message::{AdminRequest, ClusterStatus, Request, Response};

use crate::error::CliError;
use crate::settings::Settings;

/// How long the status may take to come.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

async fn status_of(
    connection: &nexus_protocol::transport::Connection,
) -> Result<ClusterStatus, CliError> {
    match connection
        .request_with(
            nexus_protocol::RequestId::random(),
            Request::Admin(AdminRequest::Status),
            READ_TIMEOUT,
        )
        .await?
    {
        Response::ClusterStatus(status) => Ok(status),
        other => Err(CliError::unexpected(&other)),
    }
}

/// The status as the leader sees it (it alone knows every member's health and progress), or the
/// first coordinator's own view when the leader is unknown or unreachable.
pub async fn leader_status(settings: &Settings) -> Result<ClusterStatus, CliError> {
    let connection = settings.connect().await?;
    let status = status_of(&connection).await?;
    let Some(leader) = status.leader.filter(|leader| *leader != status.node) else {
        return Ok(status);
    };
    let Some(address) = status
        .members
        .iter()
        .find(|m| m.id == leader && !m.addr.is_empty())
        .map(|m| m.addr.clone())
    else {
        return Ok(status);
    };
    match settings.connect_to(&address).await {
        Ok(connection) => Ok(status_of(&connection).await.unwrap_or(status)),
        Err(_) => Ok(status),
    }
}
