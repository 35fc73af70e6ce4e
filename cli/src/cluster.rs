//! The coordinator cluster's status as its leader sees it (it alone knows every member's health
//! and progress): `admin status`, `admin cluster members` and `admin health-check` read it.
//!
//! During a failover the leader a follower names may be dead, and a handshake with it waits out
//! the transport's timeout (5 s); so may one with a dead coordinator early in the configured list.
//! So every configured coordinator is asked at once, and the leader named by the first answers
//! too; the leader's own view wins as soon as it comes, and it is waited for only until
//! [`LEADER_WAIT`] after the start (or [`MIN_LEADER_HOP`] after it was first asked). Past that the
//! command answers with the view of a node it reached, saying how far that view vouches for its
//! leader ([`LeaderState`]) rather than naming a dead node as if it led.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use nexus_protocol::message::{AdminRequest, ClusterStatus, Request, Response};
use tokio::time::Instant;

use crate::error::CliError;
pub use crate::leader::{LEADER_WAIT, LeaderState, StatusSeen};
use crate::settings::Settings;

/// How long the status may take to come from a node reached (it answers from memory).
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The least the leader is given after the first answer or after it was first asked, however
/// late those came (a loaded machine), so that a live leader is not reported unreachable.
const MIN_LEADER_HOP: Duration = Duration::from_millis(150);

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

/// The status as the leader sees it (it alone knows every member's health and progress), or a
/// reached coordinator's own view when the leader is unknown or does not answer in time.
pub async fn leader_status(settings: &Settings) -> Result<ClusterStatus, CliError> {
    Ok(leader_view(settings).await?.status)
}

/// [`leader_status`], saying whether the leader itself answered.
pub async fn leader_view(settings: &Settings) -> Result<StatusSeen, CliError> {
    let started = Instant::now();
    let ask = |address: String| async move {
        let connection = settings.connect_to(&address).await?;
        // The command's notices, asked beside its first request (the first connection only).
        crate::notices::ask(&connection);
        status_of(&connection).await
    };
    let mut asked: Vec<String> = settings.coordinators.clone();
    let mut asking: FuturesUnordered<_> = asked.iter().cloned().map(ask).collect();
    let mut reached: Option<ClusterStatus> = None;
    let mut leader_deadline = started + LEADER_WAIT;
    let mut last_error = None;
    loop {
        let answer = tokio::select! {
            answer = asking.next() => answer,
            () = tokio::time::sleep_until(leader_deadline), if reached.is_some() => None,
        };
        let Some(answer) = answer else {
            // Out of time for the leader, or nobody left to ask.
            break;
        };
        match answer {
            // The leader's own view: the best there is.
            Ok(status) if status.leader == Some(status.node) => {
                return Ok(StatusSeen::of(status, true));
            }
            Ok(status) => {
                // The leader it names, asked too unless it already was.
                if let Some(address) = status.leader.and_then(|leader| {
                    status
                        .members
                        .iter()
                        .find(|m| m.id == leader && !m.addr.is_empty())
                        .map(|m| m.addr.clone())
                }) && !asked.contains(&address)
                {
                    asked.push(address.clone());
                    asking.push(ask(address));
                    leader_deadline = leader_deadline.max(Instant::now() + MIN_LEADER_HOP);
                }
                // A first answer that came late still leaves the leader a moment to answer.
                if reached.is_none() {
                    leader_deadline = leader_deadline.max(Instant::now() + MIN_LEADER_HOP);
                }
                // The first view that knows a leader is kept over one that knows none.
                if reached
                    .as_ref()
                    .is_none_or(|kept| kept.leader.is_none() && status.leader.is_some())
                {
                    reached = Some(status);
                }
            }
            Err(error) => last_error = Some(error),
        }
    }
    match (reached, last_error) {
        (Some(status), _) => Ok(StatusSeen::of(status, false)),
        (None, Some(error)) => Err(error),
        (None, None) => Err(CliError::local(
            nexus_protocol::ErrorCode::NetworkError,
            "no coordinator configured",
        )),
    }
}
