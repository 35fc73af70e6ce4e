//! The whole list as one stream of pages (`WorkspaceRequest::ListStream`): one read of the state,
//! then its pages sent one after another off the Raft thread. A walk by `ListPage` waits on a
//! round trip and a read (a quorum's round) per page, 50 of them at 250,000 workspaces; here the
//! next page is made while the last one travels.
//!
//! The read takes a copy of the workspaces' map, which shares everything with the live state (a
//! persistent map: the copy costs one reference count), so the stream sees one state from its
//! first page to its last and the Raft thread does nothing per page.
//!
//! What a stream may hold is bounded: its maker is a task, not a thread, and waits for room in a
//! channel of [`AHEAD`], so a client that stops reading holds a parked task, the pages in the
//! channel and the one being written, and its copy of the map (the nodes changed since). At most
//! [`STREAMS_AT_ONCE`] are made at once on a coordinator; one more is refused with
//! `RESOURCE_EXHAUSTED`, and the CLI walks pages instead.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{LIST_PAGE_MAX, Response};
use nexus_protocol::model::WorkspaceView;
use nexus_protocol::transport::{Peer, Reply, Update};

use super::Service;
use super::checks::denied;
use super::views::{list_page, view_of};
use crate::cluster::Consistency;
use crate::state::{Records, WorkspaceRecord};

/// Pages made ahead of the one being written: enough that the client never waits on the next
/// one's making, and no more held in memory than that.
const AHEAD: usize = 2;

/// The most streams of the list a coordinator makes at once. A whole list of 250,000 takes about
/// 200 ms, so these are for a fleet's admins and scripts at once; a client that stops reading
/// holds one until its connection ends.
pub(super) const STREAMS_AT_ONCE: usize = 8;

/// The streams being made, one permit each ([`STREAMS_AT_ONCE`]).
pub(super) fn streams() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(STREAMS_AT_ONCE))
}

impl Service {
    pub(super) async fn list_stream(&self, peer: &Peer, consistency: Consistency) -> Reply {
        let Identity::User { name: user, role } = &peer.identity else {
            return Reply::Once(Err(denied(peer, "only users manage workspaces")));
        };
        let (admin, user) = (*role == Role::Admin, user.clone());
        let Ok(permit) = self.list_streams.clone().try_acquire_owned() else {
            return Reply::Once(Err(WireError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{STREAMS_AT_ONCE} lists are being streamed from this coordinator; ask for \
                     the list by pages"
                ),
            )));
        };
        let records = match self
            .cluster
            .read(consistency, |state| state.workspaces().map_copy())
            .await
        {
            Ok(records) => records,
            Err(error) => return Reply::Once(Err(error)),
        };
        let (pages, receiver) = mpsc::channel(AHEAD);
        tokio::spawn(send_pages(
            Arc::new(records),
            LIST_PAGE_MAX as usize,
            move |w| admin || w.owner == user,
            pages,
            permit,
        ));
        Reply::Stream(receiver)
    }
}

/// Every page of `records` that `visible` lets through, `limit` a page, in name order, as
/// `ListPage` walks them, until the last (no `next`) or the client goes away; `_permit` is held
/// as long. Each page is made on a blocking thread (5,000 views take milliseconds), and sent
/// once the channel has room.
async fn send_pages(
    records: Arc<Records>,
    limit: usize,
    visible: impl Fn(&WorkspaceRecord) -> bool + Clone + Send + 'static,
    pages: mpsc::Sender<Update>,
    _permit: OwnedSemaphorePermit,
) {
    let mut after = None;
    loop {
        let made = tokio::task::spawn_blocking({
            let (records, visible, after) = (records.clone(), visible.clone(), after.take());
            move || page_after(&records, after.as_ref(), limit, visible)
        })
        .await;
        let Ok((workspaces, next)) = made else {
            let failed = WireError::new(ErrorCode::Internal, "making a page of the list failed");
            let _ = pages.send(Box::new(Err(failed))).await;
            return;
        };
        let last = next.is_none();
        let page = Response::WorkspacePage {
            workspaces,
            next: next.clone(),
        };
        if pages.send(Box::new(Ok(page))).await.is_err() || last {
            return;
        }
        after = next;
    }
}

/// The page after `after`, as views, and its `next`.
fn page_after(
    records: &Records,
    after: Option<&WorkspaceName>,
    limit: usize,
    visible: impl Fn(&WorkspaceRecord) -> bool,
) -> (Vec<WorkspaceView>, Option<WorkspaceName>) {
    let (page, next) = list_page(records, after, limit, |w| visible(w));
    (page.into_iter().map(|w| view_of(w)).collect(), next)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::RequestId;
    use nexus_protocol::error::{ErrorCode, WireError};
    use nexus_protocol::message::{Request, StaleRead, WorkspaceRequest};
    use nexus_protocol::transport::Handler;

    use super::*;
    use crate::service::testing::{
        Pages, agent, ask, named, one_node_with_four_workspaces, one_node_with_h1, walk_pages,
        workspace_spec, ws,
    };

    fn page_of(update: Result<Response, WireError>) -> (Vec<String>, Option<String>) {
        match update {
            Ok(Response::WorkspacePage { workspaces, next }) => (
                workspaces.into_iter().map(|w| w.name.to_string()).collect(),
                next.map(|n| n.to_string()),
            ),
            other => panic!("not a page: {other:?}"),
        }
    }

    /// Every update of the stream `request` is answered with.
    async fn stream(service: &Service, peer: &Peer, request: Request) -> Pages {
        match service.handle(peer, RequestId::random(), request).await {
            Reply::Stream(mut updates) => {
                let mut pages = Vec::new();
                while let Some(update) = updates.recv().await {
                    pages.push(page_of(*update));
                }
                pages
            }
            Reply::Once(answer) => panic!("not a stream: {answer:?}"),
        }
    }

    /// Each caller's stream holds what the walk by pages does, in the same pages (an admin's:
    /// all), stale or not; it ends with the page that has no `next`. An agent may not ask.
    #[tokio::test]
    async fn the_stream_is_the_walk_by_pages_for_each_caller() {
        let (_dir, node, service, [ada, bob, admin]) = one_node_with_four_workspaces().await;
        for who in [&ada, &bob, &admin] {
            let streamed = stream(&service, who, ws(WorkspaceRequest::ListStream)).await;
            assert_eq!(streamed, walk_pages(&service, who, LIST_PAGE_MAX).await);
            assert_eq!(streamed.last().unwrap().1, None, "{streamed:?}");
            let stale = Request::Stale(StaleRead::Workspace(WorkspaceRequest::ListStream));
            assert_eq!(stream(&service, who, stale).await, streamed);
        }
        let all = stream(&service, &admin, ws(WorkspaceRequest::ListStream)).await;
        assert_eq!(
            all,
            [(
                vec!["a1".into(), "a2".into(), "b1".into(), "b2".into()],
                None
            )]
        );
        match service
            .handle(
                &agent("h1"),
                RequestId::random(),
                ws(WorkspaceRequest::ListStream),
            )
            .await
        {
            Reply::Once(Err(error)) => assert_eq!(error.code, ErrorCode::PermissionDenied),
            Reply::Once(Ok(answer)) => panic!("an agent listed workspaces: {answer:?}"),
            Reply::Stream(_) => panic!("an agent was given the stream"),
        }
        // Asked as one request, it says how it is asked.
        let once = ask(&service, &admin, ws(WorkspaceRequest::ListStream)).await;
        assert_eq!(once.unwrap_err().code, ErrorCode::InvalidArgument);
        node.stop().await.unwrap();
    }

    /// While the most streams at once are being made, one more is refused with
    /// `RESOURCE_EXHAUSTED` (the CLI then walks pages), and served again once one ends.
    #[tokio::test]
    async fn one_stream_more_than_the_most_at_once_is_refused_until_one_ends() {
        let (_dir, node, service) = one_node_with_h1().await;
        let admin = named("root", Role::Admin);
        let held: Vec<_> = (0..STREAMS_AT_ONCE)
            .map(|_| service.list_streams.clone().try_acquire_owned().unwrap())
            .collect();
        match service
            .handle(
                &admin,
                RequestId::random(),
                ws(WorkspaceRequest::ListStream),
            )
            .await
        {
            Reply::Once(Err(error)) => assert_eq!(error.code, ErrorCode::ResourceExhausted),
            Reply::Once(Ok(answer)) => panic!("answered past the limit: {answer:?}"),
            Reply::Stream(_) => panic!("streamed past the limit"),
        }
        drop(held);
        assert_eq!(
            stream(&service, &admin, ws(WorkspaceRequest::ListStream)).await,
            [(vec![], None)]
        );
        node.stop().await.unwrap();
    }

    /// Pages of several: the stream's pages are the walk's, with the same `next`s (a filtered
    /// page may be empty and still have one), and the maker stops when the client goes away.
    #[tokio::test]
    async fn the_pages_follow_the_walk_and_stop_when_the_client_goes() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, bob) = (named("ada", Role::User), named("bob", Role::User));
        // As many as h1 holds, owners interleaved.
        for i in 0..4 {
            let owner = if i % 3 == 0 { &bob } else { &ada };
            let create = ws(WorkspaceRequest::Create(workspace_spec(
                &format!("w{i}"),
                &[],
            )));
            ask(&service, owner, create).await.unwrap();
        }
        let records = service
            .cluster
            .read(Consistency::Linearizable, |state| {
                state.workspaces().map_copy()
            })
            .await
            .unwrap();
        let permits = streams();
        let sent = |limit: usize, owner: &'static str, room: usize| {
            let records = Arc::new(records.clone());
            let permit = permits.clone().try_acquire_owned().unwrap();
            let (pages, mut updates) = mpsc::channel(room);
            let maker = tokio::spawn(send_pages(
                records,
                limit,
                move |w: &WorkspaceRecord| w.owner.as_str() == owner,
                pages,
                permit,
            ));
            async move {
                let mut got = Vec::new();
                while let Some(update) = updates.recv().await {
                    got.push(page_of(*update));
                }
                maker.await.unwrap();
                got
            }
        };
        for (who, owner) in [(&ada, "ada"), (&bob, "bob")] {
            for limit in [1, 2, 3, 100] {
                assert_eq!(
                    sent(limit, owner, 1).await,
                    walk_pages(&service, who, limit as u32).await,
                    "{owner}, {limit} a page"
                );
            }
        }
        assert_eq!(
            permits.available_permits(),
            STREAMS_AT_ONCE,
            "each given back"
        );
        // The client reads one page and stops reading: the maker waits for room, holding its
        // permit; once the client goes, the maker ends and gives it back.
        let (pages, mut updates) = mpsc::channel(1);
        let permit = permits.clone().try_acquire_owned().unwrap();
        let maker = tokio::spawn(send_pages(Arc::new(records), 1, |_| true, pages, permit));
        page_of(*updates.recv().await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!maker.is_finished(), "the maker waits for the client");
        assert_eq!(permits.available_permits(), STREAMS_AT_ONCE - 1);
        drop(updates);
        tokio::time::timeout(Duration::from_secs(10), maker)
            .await
            .expect("the maker stops once its client is gone")
            .unwrap();
        assert_eq!(permits.available_permits(), STREAMS_AT_ONCE);
        node.stop().await.unwrap();
    }
}
