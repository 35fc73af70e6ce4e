//! A watch of one workspace (`WorkspaceRequest::Watch`): its detail now, then again each time it
//! changes on this replica, until it is gone, the client goes or [`LIFE`] has passed. What a
//! command that waits for a workspace's host (a create, until running) reads instead of asking
//! every 50 ms: it hears of the host's report as this replica applies it, not up to a poll later.
//!
//! The watch waits on its workspace's host's signal, raised when any of that host's workspaces
//! changed ([`crate::cluster::HostSignals::raise_workspaces`]: a host holds at most its limit of
//! them), then reads the workspace on this replica and sends it if it differs from what it sent
//! last. Each look reads this replica, which only goes forward; the first comes after a
//! linearizable read (unless asked stale) that finds the workspace and who may see it, so the
//! stream starts from a state at least as new as the request. A replica cut off from its leader
//! sends nothing new: the CLI asks with a read of its own when a watch has been quiet for a
//! while. A workspace destroyed and made again under the same name (by anyone) is another one:
//! the watch ends at it as at a workspace gone.
//!
//! What a watch may hold is bounded: a parked task, the detail last sent and one in the channel.
//! At most [`WATCHES_AT_ONCE`] run on a coordinator, and [`WATCHES_PER_USER`] of one user's; one
//! more is refused with `RESOURCE_EXHAUSTED`, and the CLI asks again and again instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{Response, WorkspaceDetail};
use nexus_protocol::transport::{Peer, Reply, Update};
use nexus_protocol::{UserName, WorkspaceName};

use super::Service;
use super::checks::denied;
use super::views::detail_of;
use crate::cluster::{Cluster, Consistency};
use crate::locks::lock;
use crate::state::WorkspaceRecord;

/// The most workspace watches a coordinator keeps at once: each is a parked task and a detail,
/// a few KiB, and one is held by each command waiting for its workspace.
pub(super) const WATCHES_AT_ONCE: usize = 1024;

/// How long a watch lasts at most; past it the stream ends and a client still waiting asks
/// again. A waiting command's own limit is minutes; this frees what a forgotten client holds.
const LIFE: Duration = Duration::from_secs(3600);

/// The most watches of one user a coordinator keeps at once: more than a command waits on
/// (`admin workspace repair --all` waits on 8), and few enough that one client cannot hold them
/// all and leave everyone else asking.
pub(super) const WATCHES_PER_USER: usize = 64;

/// The watches being kept: a permit each of [`WATCHES_AT_ONCE`], and a count for each user.
#[derive(Debug, Clone)]
pub(super) struct Watches {
    all: Arc<Semaphore>,
    users: Arc<Mutex<HashMap<UserName, usize>>>,
}

/// The watches of a new coordinator: none.
pub(super) fn watches() -> Watches {
    Watches {
        all: Arc::new(Semaphore::new(WATCHES_AT_ONCE)),
        users: Arc::default(),
    }
}

impl Watches {
    /// A place for one more of `user`'s watches, or the refusal that names the bound.
    fn take(&self, user: &UserName) -> Result<Slot, WireError> {
        let mut users = lock(&self.users);
        let held = users.get(user).copied().unwrap_or(0);
        if held >= WATCHES_PER_USER {
            return Err(WireError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{user} watches {WATCHES_PER_USER} workspaces on this coordinator already; \
                     ask for the workspace instead"
                ),
            ));
        }
        let Ok(permit) = self.all.clone().try_acquire_owned() else {
            return Err(WireError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{WATCHES_AT_ONCE} workspaces are being watched on this coordinator; ask for \
                     the workspace instead"
                ),
            ));
        };
        *users.entry(user.clone()).or_insert(0) += 1;
        Ok(Slot {
            _permit: permit,
            user: user.clone(),
            users: self.users.clone(),
        })
    }
}

/// One watch's place, given back when it is dropped (its task ends).
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    user: UserName,
    users: Arc<Mutex<HashMap<UserName, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut users = lock(&self.users);
        if let Some(held) = users.get_mut(&self.user) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                users.remove(&self.user);
            }
        }
    }
}

impl Service {
    pub(super) async fn watch_workspace(
        &self,
        peer: &Peer,
        name: WorkspaceName,
        consistency: Consistency,
    ) -> Reply {
        let Identity::User { name: user, role } = &peer.identity else {
            return Reply::Once(Err(denied(peer, "only users manage workspaces")));
        };
        let admin = *role == Role::Admin;
        let slot = match self.workspace_watches.take(user) {
            Ok(slot) => slot,
            Err(refused) => return Reply::Once(Err(refused)),
        };
        // Who may see it, and its host (a workspace never changes host), as of the request.
        let view = match self.owned(peer, &name, admin, consistency).await {
            Ok(view) => view,
            Err(error) => return Reply::Once(Err(error)),
        };
        let instance = Instance {
            owner: view.owner,
            created_at: view.created_at,
        };
        let Some(host) = view.host else {
            let unplaced = WireError::new(
                ErrorCode::Internal,
                format!("workspace {name} has no host to watch"),
            );
            return Reply::Once(Err(unplaced));
        };
        // Subscribed before the first look that is sent: no change after it is missed.
        let changes = self.cluster.workspace_changes(&host);
        let (updates, receiver) = mpsc::channel(1);
        let watched = (name, instance);
        tokio::spawn(watch(self.cluster.clone(), watched, changes, updates, slot));
        Reply::Stream(receiver)
    }
}

/// Which workspace of its name a watch is of: names are the fleet's, so one destroyed may be
/// made again, by anyone, between two looks; that one is not shown to this watch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    owner: UserName,
    created_at: Timestamp,
}

impl Instance {
    fn is(&self, record: &WorkspaceRecord) -> bool {
        record.owner == self.owner && record.created_at == self.created_at
    }
}

/// Sends `name`'s detail as this replica holds it, then again after each of its host's changes
/// that changed it, until it is gone (or another `instance` holds the name), the client goes or
/// [`LIFE`] has passed; `_slot` is held as long. Every wake leads to a read: the signal is
/// marked seen before it, so a change that lands during the read wakes the next round.
async fn watch(
    cluster: Cluster,
    (name, instance): (WorkspaceName, Instance),
    mut changes: tokio::sync::watch::Receiver<()>,
    updates: mpsc::Sender<Update>,
    _slot: Slot,
) {
    let life = tokio::time::sleep(LIFE);
    tokio::pin!(life);
    let mut sent: Option<WorkspaceDetail> = None;
    loop {
        changes.borrow_and_update();
        let (wanted, instance) = (name.clone(), instance.clone());
        let look = cluster
            .read(Consistency::Stale, move |state| {
                let record = state.workspaces().get(&wanted);
                record.filter(|record| instance.is(record)).map(detail_of)
            })
            .await;
        let update = match look {
            Ok(Some(detail)) if sent.as_ref() == Some(&detail) => None,
            Ok(Some(detail)) => {
                sent = Some(detail.clone());
                Some(Ok(Response::WorkspaceDetail(Box::new(detail))))
            }
            Ok(None) => Some(Err(WireError::new(
                ErrorCode::WorkspaceNotFound,
                format!("no workspace {name}"),
            ))),
            Err(error) => Some(Err(error)),
        };
        if let Some(update) = update {
            let last = update.is_err();
            if updates.send(Box::new(update)).await.is_err() || last {
                return;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = updates.closed() => return,
            () = &mut life => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::RequestId;
    use nexus_protocol::message::{
        AgentRequest, ObservedWorkspace, Request, StaleRead, WorkspaceRequest,
    };
    use nexus_protocol::model::WorkspaceState;
    use nexus_protocol::transport::Handler;

    use super::*;
    use crate::service::testing::{
        agent, ask, named, one_node_with_w_on_h1, user, workspace_spec, ws,
    };

    fn watch_of(name: &str) -> Request {
        ws(WorkspaceRequest::Watch(name.parse().unwrap()))
    }

    /// The stream `request` is answered with; panics if it is answered once.
    async fn watching(service: &Service, peer: &Peer, request: Request) -> mpsc::Receiver<Update> {
        match service.handle(peer, RequestId::random(), request).await {
            Reply::Stream(updates) => updates,
            Reply::Once(answer) => panic!("not a stream: {answer:?}"),
        }
    }

    /// The refusal `request` is answered with; panics if it is a stream or an answer.
    async fn refused(service: &Service, peer: &Peer, request: Request) -> ErrorCode {
        match service.handle(peer, RequestId::random(), request).await {
            Reply::Once(Err(error)) => error.code,
            Reply::Once(Ok(answer)) => panic!("answered: {answer:?}"),
            Reply::Stream(_) => panic!("given a stream"),
        }
    }

    /// The next update, within a few seconds.
    async fn next(updates: &mut mpsc::Receiver<Update>) -> Option<Result<Response, WireError>> {
        tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("the watch said nothing for 5 s")
            .map(|update| *update)
    }

    fn state_of(update: Option<Result<Response, WireError>>) -> WorkspaceState {
        generation_and_state(update).1
    }

    fn generation_and_state(update: Option<Result<Response, WireError>>) -> (u64, WorkspaceState) {
        match update {
            Some(Ok(Response::WorkspaceDetail(detail))) => (detail.generation, detail.view.state),
            other => panic!("not a detail: {other:?}"),
        }
    }

    /// Its agent's report of `name`'s container of `generation`.
    fn observed(name: &str, generation: u64, state: WorkspaceState) -> Request {
        Request::Agent(AgentRequest::ReportObserved(vec![ObservedWorkspace {
            name: name.parse().unwrap(),
            generation,
            state,
            ports: vec![],
            error: None,
        }]))
    }

    /// The detail now, then each change the host's agent reports as it is applied, nothing for
    /// a change of another workspace on the same host, and `WORKSPACE_NOT_FOUND` as the last
    /// update once it is gone; stale or not.
    #[tokio::test]
    async fn a_watch_sends_each_change_of_its_workspace_until_it_is_gone() {
        let (_dir, node, service) = one_node_with_w_on_h1().await;
        let (owner, h1) = (user(Role::User), agent("h1"));
        let stale = Request::Stale(StaleRead::Workspace(WorkspaceRequest::Watch(
            "w".parse().unwrap(),
        )));
        for request in [watch_of("w"), stale] {
            let mut updates = watching(&service, &owner, request).await;
            let (generation, state) = generation_and_state(next(&mut updates).await);
            assert_eq!(state, WorkspaceState::Scheduled);
            // Its host's other workspace changes: w does not, and nothing is sent for it.
            let other = ws(WorkspaceRequest::Create(workspace_spec("v", &[])));
            ask(&service, &owner, other).await.unwrap();
            ask(
                &service,
                &h1,
                observed("w", generation, WorkspaceState::Running),
            )
            .await
            .unwrap();
            assert_eq!(state_of(next(&mut updates).await), WorkspaceState::Running);
            let destroy = ws(WorkspaceRequest::Destroy("w".parse().unwrap()));
            ask(&service, &owner, destroy).await.unwrap();
            assert_eq!(
                state_of(next(&mut updates).await),
                WorkspaceState::Destroying
            );
            ask(
                &service,
                &h1,
                observed("w", generation, WorkspaceState::Gone),
            )
            .await
            .unwrap();
            let gone = next(&mut updates).await.unwrap().unwrap_err();
            assert_eq!(gone.code, ErrorCode::WorkspaceNotFound, "{gone}");
            assert!(next(&mut updates).await.is_none(), "the stream went on");
            // Again, for the stale watch: v goes too, w comes back.
            let destroy = ws(WorkspaceRequest::Destroy("v".parse().unwrap()));
            ask(&service, &owner, destroy).await.unwrap();
            let v_generation = service
                .cluster
                .read(Consistency::Linearizable, move |state| {
                    let v: WorkspaceName = "v".parse().unwrap();
                    state.workspaces().get(&v).map(|v| v.generation)
                })
                .await
                .unwrap()
                .unwrap();
            ask(
                &service,
                &h1,
                observed("v", v_generation, WorkspaceState::Gone),
            )
            .await
            .unwrap();
            let again = ws(WorkspaceRequest::Create(workspace_spec("w", &[])));
            ask(&service, &owner, again).await.unwrap();
        }
        node.stop().await.unwrap();
    }

    /// A workspace made again under the watched one's name is another: the watch ends as at one
    /// gone and shows nothing of it (here: the name held by another owner, or made later).
    #[tokio::test]
    async fn a_watch_ends_at_another_workspace_of_its_name() {
        let (_dir, node, service) = one_node_with_w_on_h1().await;
        let describe = ws(WorkspaceRequest::Describe("w".parse().unwrap()));
        let view = match ask(&service, &user(Role::User), describe).await {
            Ok(Response::WorkspaceDetail(detail)) => detail.view,
            other => panic!("{other:?}"),
        };
        let same = Instance {
            owner: view.owner.clone(),
            created_at: view.created_at,
        };
        let others = [
            Instance {
                owner: "ada".parse().unwrap(),
                ..same.clone()
            },
            Instance {
                created_at: Timestamp::from_millis(view.created_at.as_millis() + 1),
                ..same.clone()
            },
        ];
        let host = view.host.unwrap();
        for instance in others.into_iter().chain([same.clone()]) {
            let (updates, mut receiver) = mpsc::channel(1);
            tokio::spawn(watch(
                service.cluster.clone(),
                (view.name.clone(), instance.clone()),
                service.cluster.workspace_changes(&host),
                updates,
                watches().take(&view.owner).unwrap(),
            ));
            let first = next(&mut receiver).await;
            if instance == same {
                assert_eq!(state_of(first), WorkspaceState::Scheduled);
            } else {
                let gone = first.unwrap().unwrap_err();
                assert_eq!(gone.code, ErrorCode::WorkspaceNotFound, "{gone}");
                assert!(next(&mut receiver).await.is_none(), "the stream went on");
            }
        }
        node.stop().await.unwrap();
    }

    /// One user's watches past their bound are refused with `RESOURCE_EXHAUSTED` while another
    /// user's are kept, and a place given back is taken again.
    #[tokio::test]
    async fn one_user_holds_no_more_than_their_share_of_the_watches() {
        let (_dir, node, service) = one_node_with_w_on_h1().await;
        let (owner, admin) = (user(Role::User), named("root", Role::Admin));
        let alice: UserName = "alice".parse().unwrap();
        let mut held: Vec<_> = (0..WATCHES_PER_USER)
            .map(|_| service.workspace_watches.take(&alice).unwrap())
            .collect();
        assert_eq!(
            refused(&service, &owner, watch_of("w")).await,
            ErrorCode::ResourceExhausted
        );
        let mut updates = watching(&service, &admin, watch_of("w")).await;
        assert_eq!(
            state_of(next(&mut updates).await),
            WorkspaceState::Scheduled
        );
        held.pop();
        let mut updates = watching(&service, &owner, watch_of("w")).await;
        assert_eq!(
            state_of(next(&mut updates).await),
            WorkspaceState::Scheduled
        );
        node.stop().await.unwrap();
    }

    /// Only who may see a workspace watches it, only a workspace that exists is watched, and a
    /// watch asked as one request says how it is asked.
    #[tokio::test]
    async fn a_watch_is_refused_as_a_read_of_the_workspace_is() {
        let (_dir, node, service) = one_node_with_w_on_h1().await;
        let cases = [
            (named("bob", Role::User), "w", ErrorCode::PermissionDenied),
            (agent("h1"), "w", ErrorCode::PermissionDenied),
            (user(Role::User), "nope", ErrorCode::WorkspaceNotFound),
        ];
        for (peer, name, code) in cases {
            assert_eq!(
                refused(&service, &peer, watch_of(name)).await,
                code,
                "{name}"
            );
        }
        let admin = named("root", Role::Admin);
        let mut updates = watching(&service, &admin, watch_of("w")).await;
        assert_eq!(
            state_of(next(&mut updates).await),
            WorkspaceState::Scheduled
        );
        let once = ask(&service, &admin, watch_of("w")).await;
        assert_eq!(once.unwrap_err().code, ErrorCode::InvalidArgument);
        node.stop().await.unwrap();
    }

    /// Past the most watches at once one more is refused with `RESOURCE_EXHAUSTED` (the CLI
    /// then asks instead); a watch whose client goes ends and gives its place back.
    #[tokio::test]
    async fn a_watch_holds_its_place_until_its_client_goes() {
        let (_dir, node, service) = one_node_with_w_on_h1().await;
        let owner = user(Role::User);
        let held: Vec<_> = (0..WATCHES_AT_ONCE - 1)
            .map(|_| {
                service
                    .workspace_watches
                    .all
                    .clone()
                    .try_acquire_owned()
                    .unwrap()
            })
            .collect();
        let mut updates = watching(&service, &owner, watch_of("w")).await;
        assert_eq!(
            state_of(next(&mut updates).await),
            WorkspaceState::Scheduled
        );
        assert_eq!(
            refused(&service, &owner, watch_of("w")).await,
            ErrorCode::ResourceExhausted
        );
        drop(held);
        drop(updates);
        for _ in 0..500 {
            if service.workspace_watches.all.available_permits() == WATCHES_AT_ONCE
                && lock(&service.workspace_watches.users).is_empty()
            {
                node.stop().await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the watch kept its place after its client went");
    }
}
