//! The fleet's workspaces, page by page (`WorkspaceRequest::ListPage`): every command that lists
//! them goes through here, so that no answer passes a frame however large the fleet (250,000
//! workspaces made about 25 MB in one). A coordinator too old to know pages refuses the first
//! one as a request it cannot read; it then gets the one-request list it knows.

use std::time::Duration;

use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{Request, Response, StaleRead, WorkspaceRequest};
use nexus_protocol::model::WorkspaceView;

use crate::error::CliError;
use crate::settings::Settings;

/// Workspaces asked for per page (a page of views is about 200 KB).
pub const PAGE: u32 = 2_000;

/// Every workspace the caller may see (an admin: all), in name order; `stale` reads the replica
/// of the coordinator reached without asking the leader. `limit` is each page's.
pub async fn workspaces(
    settings: &Settings,
    stale: bool,
    limit: Duration,
) -> Result<Vec<WorkspaceView>, CliError> {
    let wrap = |request| {
        if stale {
            Request::Stale(StaleRead::Workspace(request))
        } else {
            Request::Workspace(request)
        }
    };
    let mut all = Vec::new();
    let mut after = None;
    let mut first = true;
    loop {
        let page = WorkspaceRequest::ListPage {
            after: after.take(),
            limit: PAGE,
        };
        match settings.request(wrap(page), limit).await {
            Ok(Response::WorkspacePage { workspaces, next }) => {
                all.extend(workspaces);
                match next {
                    Some(next) => after = Some(next),
                    None => return Ok(all),
                }
            }
            Err(error) if first && error.error.code == ErrorCode::ProtocolError => {
                return match settings
                    .request(wrap(WorkspaceRequest::List), limit)
                    .await?
                {
                    Response::Workspaces(views) => Ok(views),
                    other => Err(CliError::unexpected(&other)),
                };
            }
            Ok(other) => return Err(CliError::unexpected(&other)),
            Err(error) => return Err(error),
        }
        first = false;
    }
}
