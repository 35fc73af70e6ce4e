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

/// Workspaces asked for per page: as many as a coordinator answers in one (a page of views is
/// about 500 KB). Each page is a read of its own (a quorum's round for a linearizable one), so
/// fewer, larger pages walk 250,000 workspaces faster: 2,000 a page took 300 ms.
pub const PAGE: u32 = nexus_protocol::message::LIST_PAGE_MAX;

/// Every workspace the caller may see (an admin: all), in name order; `stale` reads the replica
/// of the coordinator reached without asking the leader. `limit` is each page's.
pub async fn workspaces(
    settings: &Settings,
    stale: bool,
    limit: Duration,
) -> Result<Vec<WorkspaceView>, CliError> {
    let mut all = Vec::new();
    each_page(settings, stale, limit, |page| all.extend(page)).await?;
    Ok(all)
}

/// [`workspaces`], handed to `on_page` a page at a time as each arrives, so that a caller may
/// print the first before the last is asked for.
pub async fn each_page(
    settings: &Settings,
    stale: bool,
    limit: Duration,
    mut on_page: impl FnMut(Vec<WorkspaceView>),
) -> Result<(), CliError> {
    let wrap = |request| {
        if stale {
            Request::Stale(StaleRead::Workspace(request))
        } else {
            Request::Workspace(request)
        }
    };
    let mut after = None;
    let mut first = true;
    loop {
        let page = WorkspaceRequest::ListPage {
            after: after.take(),
            limit: PAGE,
        };
        match settings.request(wrap(page), limit).await {
            Ok(Response::WorkspacePage { workspaces, next }) => {
                on_page(workspaces);
                match next {
                    Some(next) => after = Some(next),
                    None => return Ok(()),
                }
            }
            Err(error) if first && error.error.code == ErrorCode::ProtocolError => {
                return match settings
                    .request(wrap(WorkspaceRequest::List), limit)
                    .await?
                {
                    Response::Workspaces(views) => {
                        on_page(views);
                        Ok(())
                    }
                    other => Err(CliError::unexpected(&other)),
                };
            }
            Ok(other) => return Err(CliError::unexpected(&other)),
            Err(error) => return Err(error),
        }
        first = false;
    }
}
