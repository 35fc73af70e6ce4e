//! The fleet's workspaces, page by page: every command that lists them goes through here, so
//! that no answer passes a frame however large the fleet (250,000 workspaces made about 25 MB in
//! one). The list is first asked as one stream of pages (`WorkspaceRequest::ListStream`), which
//! waits on no round trip per page; a coordinator that cannot stream it (an earlier release), or
//! a stream that breaks, leaves the rest to a walk of `WorkspaceRequest::ListPage`s from where it
//! stopped, which asks again elsewhere as every request does. A coordinator too old to know pages
//! refuses the first one as a request it cannot read; it then gets the one-request list it knows.

use std::time::Duration;

use nexus_protocol::WorkspaceName;
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
    match streamed(settings, stale, limit, &mut on_page).await? {
        Streamed::Whole => Ok(()),
        Streamed::Until(after) => paged(settings, stale, limit, after, on_page).await,
    }
}

/// How far the stream of pages went.
enum Streamed {
    /// To its last page.
    Whole,
    /// Not to the end: the rest is after this name (from the start: `None`).
    Until(Option<WorkspaceName>),
}

fn wrap(stale: bool, request: WorkspaceRequest) -> Request {
    if stale {
        Request::Stale(StaleRead::Workspace(request))
    } else {
        Request::Workspace(request)
    }
}

/// Asks for the list as one stream and hands `on_page` each page as it comes. What the stream
/// cannot finish is left to the walk by pages, from where it stopped: a coordinator that cannot
/// stream the list (an earlier release: `PROTOCOL_ERROR`; its most streams at once:
/// `RESOURCE_EXHAUSTED`), one that knows no leader (an election: `NOT_LEADER`), a connection
/// lost or a coordinator found gone, a stream that ends before its last page, and a wait past
/// `limit`: the walk asks again as every request does. Any other refusal (a permission, a read
/// the cluster could not serve) is the answer: the walk would only be refused again after as
/// long a wait.
async fn streamed(
    settings: &Settings,
    stale: bool,
    limit: Duration,
    on_page: &mut impl FnMut(Vec<WorkspaceView>),
) -> Result<Streamed, CliError> {
    let connection = settings.connect().await?;
    let request = wrap(stale, WorkspaceRequest::ListStream);
    let mut after = None;
    let mut pages = match tokio::time::timeout(
        limit,
        connection.subscribe_with(settings.next_request_id(), request),
    )
    .await
    {
        Ok(Ok(pages)) => pages,
        _ => return Ok(Streamed::Until(after)),
    };
    loop {
        match tokio::time::timeout(limit, pages.next_unless_gone()).await {
            Ok(Some(Ok(Response::WorkspacePage { workspaces, next }))) => {
                on_page(workspaces);
                match next {
                    Some(next) => after = Some(next),
                    None => return Ok(Streamed::Whole),
                }
            }
            Ok(Some(Err(error))) if !left_to_the_walk(error.code) => {
                return Err(crate::session::explain(error));
            }
            _ => return Ok(Streamed::Until(after)),
        }
    }
}

/// Whether the stream's error `code` leaves the rest to the walk by pages ([`streamed`]).
fn left_to_the_walk(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ProtocolError
            | ErrorCode::ResourceExhausted
            | ErrorCode::NotLeader
            | ErrorCode::NetworkError
    )
}

/// The list by pages, from after `after`.
async fn paged(
    settings: &Settings,
    stale: bool,
    limit: Duration,
    mut after: Option<WorkspaceName>,
    mut on_page: impl FnMut(Vec<WorkspaceView>),
) -> Result<(), CliError> {
    let mut first = after.is_none();
    loop {
        let page = WorkspaceRequest::ListPage {
            after: after.take(),
            limit: PAGE,
        };
        match settings.request(wrap(stale, page), limit).await {
            Ok(Response::WorkspacePage { workspaces, next }) => {
                on_page(workspaces);
                match next {
                    Some(next) => after = Some(next),
                    None => return Ok(()),
                }
            }
            Err(error) if first && error.error.code == ErrorCode::ProtocolError => {
                return match settings
                    .request(wrap(stale, WorkspaceRequest::List), limit)
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
