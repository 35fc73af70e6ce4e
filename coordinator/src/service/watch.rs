//! Agents' desired-state watches: each pushes its host's desired state when it changes, for as
//! long as this node leads; a newer watch of the same host replaces an older one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{DesiredState, Response};
use nexus_protocol::transport::{Peer, Reply, Update};
use nexus_protocol::{HostId, RequestId, WorkspaceName};

use super::Service;
use super::checks::denied;
use crate::cluster::{Cluster, Consistency};
use crate::hops;
use crate::locks::lock;
use crate::state::State;

/// The newest desired-state watch of each host. A watch wakes only when something happened to
/// it: its host's desired state changed, this node's leadership changed (a watch on a node that
/// lost the lead ends with `NOT_LEADER`, naming the new leader, and the agent moves there), its
/// agent went, or a newer watch of its host replaced it. None wakes on a timer: at 20,000 hosts,
/// a look each second per watch was 20,000 wakeups a second on the leader for nothing.
pub(super) type Watches = Arc<Mutex<BTreeMap<HostId, Newest>>>;

/// A host's newest watch: its number, and the sender whose drop (when a newer watch takes its
/// place, or it ends) wakes it.
#[derive(Debug)]
pub(super) struct Newest {
    generation: u64,
    _replaced: oneshot::Sender<()>,
}

impl Service {
    /// An agent's watch of its host's desired state: the state now (unless the agent has that
    /// version already), then again after every change, for as long as this node leads. With
    /// `with_causes` (`WatchDesiredCauses`), each push also names the request that last changed
    /// each workspace ([`Response::DesiredWithCauses`]); without, it is the older
    /// [`Response::Desired`], which agents of an earlier version read.
    pub(super) async fn watch_desired(
        &self,
        peer: &Peer,
        known_version: Option<u64>,
        with_causes: bool,
    ) -> Reply {
        let Identity::Agent(host) = &peer.identity else {
            return Reply::Once(Err(denied(
                peer,
                "only agents watch a host's desired state",
            )));
        };
        if let Err(error) = self.cluster.require_leader().await {
            return Reply::Once(Err(error));
        }
        let (sender, updates) = mpsc::channel(2);
        // Numbers never reused (a host's entry goes when its watch ends), so a stale watch can
        // never mistake a newer one for itself.
        let generation = self
            .watch_numbers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (replaced, replacement) = oneshot::channel();
        // The older watch's sender drops here, which wakes it to end.
        lock(&self.watches).insert(
            host.clone(),
            Newest {
                generation,
                _replaced: replaced,
            },
        );
        let watch = Watch {
            cluster: self.cluster.clone(),
            host: host.clone(),
            generation,
            watches: self.watches.clone(),
            with_causes,
        };
        tokio::spawn(watch.run(known_version, sender, replacement));
        Reply::Stream(updates)
    }
}

/// One agent's watch of its host's desired state.
struct Watch {
    cluster: Cluster,
    host: HostId,
    /// Which of the host's watches this is; a newer one ends it.
    generation: u64,
    watches: Watches,
    /// Whether the agent asked for each workspace's cause with every push.
    with_causes: bool,
}

impl Watch {
    fn replaced(&self) -> bool {
        lock(&self.watches)
            .get(&self.host)
            .is_none_or(|newest| newest.generation != self.generation)
    }

    async fn run(
        self,
        sent: Option<u64>,
        updates: mpsc::Sender<Update>,
        replacement: oneshot::Receiver<()>,
    ) {
        watch_desired(&self, sent, &updates, replacement).await;
        let mut watches = lock(&self.watches);
        if watches
            .get(&self.host)
            .is_some_and(|newest| newest.generation == self.generation)
        {
            watches.remove(&self.host);
        }
    }
}

async fn watch_desired(
    watch: &Watch,
    mut sent: Option<u64>,
    updates: &mpsc::Sender<Update>,
    mut replacement: oneshot::Receiver<()>,
) {
    let Watch {
        cluster,
        host,
        with_causes,
        ..
    } = watch;
    // Subscribed before the first look, so a change applied from then on is seen.
    let mut changes = Changes::new(cluster.desired_changes(host));
    // The causes the last push carried: a push is a hop of each request whose cause is new.
    let mut pushed_causes: BTreeMap<WorkspaceName, RequestId> = BTreeMap::new();
    let mut leadership = cluster.leadership();
    let mut first = true;
    loop {
        let dirty = changes.due();
        let leading = leadership.borrow_and_update().leading;
        if watch.replaced() {
            let _ = updates
                .send(Box::new(Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("a newer watch of host {host} replaced this one"),
                ))))
                .await;
            return;
        }
        // The driver is asked only at the start and when the lead seems lost (the answer names
        // the new leader); otherwise the driver's published leadership is enough.
        if (first || !leading)
            && let Err(error) = cluster.require_leader().await
        {
            let _ = updates.send(Box::new(Err(error))).await;
            return;
        }
        if dirty {
            let wanted = host.clone();
            let last = sent;
            // The first look is linearizable (the replica has applied everything committed when
            // it was asked); later ones read the leader's own replica, which only moves forward.
            let consistency = if first {
                Consistency::Linearizable
            } else {
                Consistency::Stale
            };
            let update = cluster
                .read(consistency, move |state| {
                    // Only ever forward: what an earlier leader sent is not sent back in time.
                    let version = state.desired_version(&wanted);
                    let ahead = last.is_some_and(|last| version < last);
                    let push = last.is_none_or(|last| version > last) || (first && ahead);
                    let desired = push.then(|| {
                        let desired = state.desired_for(&wanted);
                        let causes = causes_of(state, &desired);
                        (desired, causes)
                    });
                    (desired, ahead)
                })
                .await;
            let update = match update {
                Ok((desired, ahead)) => {
                    if first && ahead {
                        // Even a current replica is behind the agent: this is another history
                        // (the cluster's data was rebuilt). Say so on both sides; the agent
                        // keeps what it has until someone removes its saved state.
                        tracing::warn!(%host, agent_version = ?last, "an agent holds a newer desired state than this cluster has ever made; was the cluster rebuilt? (the agent ignores older ones)");
                    }
                    Ok(desired)
                }
                Err(error) => Err(error),
            };
            first = false;
            match update {
                Ok(Some((desired, causes))) => {
                    sent = Some(desired.version);
                    let hops = push_hops(host, desired.version, &causes, &pushed_causes);
                    let response = if *with_causes {
                        Response::DesiredWithCauses {
                            state: desired,
                            causes: causes.clone(),
                        }
                    } else {
                        Response::Desired(desired)
                    };
                    let delivered = updates.send(Box::new(Ok(response))).await.is_ok();
                    for span in &hops {
                        if delivered {
                            hop::ok(span);
                        } else {
                            hop::failed(
                                span,
                                &WireError::new(
                                    ErrorCode::NetworkError,
                                    format!("host {host}'s watch ended before the push"),
                                ),
                            );
                        }
                    }
                    if !delivered {
                        return;
                    }
                    pushed_causes = causes.into_iter().collect();
                }
                Ok(None) => {}
                Err(error) => {
                    let _ = updates.send(Box::new(Err(error))).await;
                    return;
                }
            }
        }
        tokio::select! {
            changed = changes.changed() => if !changed { return },
            changed = leadership.changed() => if changed.is_err() { return },
            // Its sender dropped: a newer watch took this one's place (checked at the top).
            _ = &mut replacement, if !replacement.is_terminated() => {}
            () = updates.closed() => return,
        }
    }
}

/// Whether a host's desired state may have changed since the watch last read it: the host's
/// signal, and a change already taken from it but not yet read.
///
/// The watch's wait ends on a change, on the leadership check's timer, on a change of leadership
/// or when the agent goes. However it ends, a change the signal holds must lead to a read:
/// marking the signal seen without reading (as the watch once did at the top of each round)
/// loses a change that landed while the wait was ending another way, and the host's agent then
/// never hears of it (a workspace placed on a live host that stays `Scheduled`, seen 1 in 50,000
/// at fleet scale).
struct Changes {
    signal: tokio::sync::watch::Receiver<()>,
    /// A change taken from the signal and not yet read (the first look counts as one).
    taken: bool,
}

impl Changes {
    fn new(signal: tokio::sync::watch::Receiver<()>) -> Changes {
        Changes {
            signal,
            taken: true,
        }
    }

    /// Whether to read the desired state now: the first time, and whenever the signal changed
    /// since the last read, whichever way the last wait ended. Marks the change seen.
    fn due(&mut self) -> bool {
        let pending = self.signal.has_changed().unwrap_or(false);
        self.signal.mark_unchanged();
        std::mem::take(&mut self.taken) || pending
    }

    /// Waits for a change; `false` once the signal is gone (the node is shutting down).
    async fn changed(&mut self) -> bool {
        let changed = self.signal.changed().await.is_ok();
        self.taken |= changed;
        changed
    }
}

/// Waits, for as long as this node leads, until `changes` changes: `true` then. `false` when the
/// watch must end: its source or its asker gone, or the lead lost (the asker told, with
/// `NOT_LEADER` naming the leader). Shared by the watches that push one value again at every
/// change (the deny list, the trusted CAs).
pub(super) async fn next_change_while_leading<T>(
    cluster: &Cluster,
    changes: &mut tokio::sync::watch::Receiver<T>,
    leadership: &mut tokio::sync::watch::Receiver<crate::cluster::Leadership>,
    updates: &mpsc::Sender<Update>,
) -> bool {
    loop {
        tokio::select! {
            changed = changes.changed() => return changed.is_ok(),
            changed = leadership.changed() => if changed.is_err() { return false },
            () = updates.closed() => return false,
        }
        if !leadership.borrow_and_update().leading
            && let Err(error) = cluster.require_leader().await
        {
            let _ = updates.send(Box::new(Err(error))).await;
            return false;
        }
    }
}

/// The request that last changed each of `desired`'s workspaces, where the state knows it.
fn causes_of(state: &State, desired: &DesiredState) -> Vec<(WorkspaceName, RequestId)> {
    desired
        .assignments
        .iter()
        .filter_map(|a| Some((a.spec.name.clone(), state.cause_of(&a.spec.name)?)))
        .collect()
}

/// One [`hops::PUSH`] per workspace whose cause differs from what the watch pushed last: the
/// push that carries that request's change to the host.
fn push_hops(
    host: &HostId,
    version: u64,
    causes: &[(WorkspaceName, RequestId)],
    pushed: &BTreeMap<WorkspaceName, RequestId>,
) -> Vec<tracing::Span> {
    let kind = format!("version {version}");
    causes
        .iter()
        .filter(|(name, id)| pushed.get(name) != Some(id))
        .map(|(name, id)| {
            Hop::new(hops::PUSH, Some(*id))
                .workspace(name)
                .kind(&kind)
                .host(host.as_str())
                .info()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::RequestId;
    use nexus_protocol::error::{ErrorCode, WireError};
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{AgentRequest, Request, Response};
    use nexus_protocol::transport::{Handler, Reply};

    use crate::service::testing::{agent, code, named, one_node_with_h1, user, workspace_spec, ws};

    async fn next_update(reply: &mut Reply) -> Option<Result<Response, WireError>> {
        update_within(reply, Duration::from_millis(500)).await
    }

    async fn update_within(
        reply: &mut Reply,
        limit: Duration,
    ) -> Option<Result<Response, WireError>> {
        let Reply::Stream(updates) = reply else {
            panic!("not a stream");
        };
        tokio::time::timeout(limit, updates.recv())
            .await
            .ok()
            .flatten()
            .map(|update| *update)
    }

    /// The lost wakeup behind "a placed workspace sometimes never runs at fleet scale": a change
    /// that lands while the watch's wait ends another way (its one-second leadership check)
    /// must still be read.
    #[tokio::test]
    async fn a_change_that_lands_as_the_wait_ends_otherwise_is_read() {
        let signal = tokio::sync::watch::Sender::new(());
        let mut changes = super::Changes::new(signal.subscribe());
        assert!(changes.due(), "the first look reads");
        assert!(!changes.due(), "nothing changed since");
        // The wait ends on the timer, and the change lands before the watch looks again.
        tokio::select! {
            biased;
            () = std::future::ready(()) => {}
            _ = changes.changed() => panic!("no change yet"),
        }
        signal.send(()).unwrap();
        assert!(changes.due(), "the change is read, not just marked seen");
        assert!(!changes.due());
        // Both ready at once, and the timer's branch taken.
        signal.send(()).unwrap();
        tokio::select! {
            biased;
            () = std::future::ready(()) => {}
            _ = changes.changed() => {}
        }
        assert!(changes.due());
        // A change the wait took is read too.
        signal.send(()).unwrap();
        assert!(changes.changed().await);
        assert!(changes.due());
        assert!(!changes.due());
        drop(signal);
        assert!(!changes.changed().await, "the signal is gone");
    }

    #[tokio::test]
    async fn a_watch_pushes_only_newer_versions_and_a_new_watch_replaces_the_old() {
        let (_dir, node, service) = one_node_with_h1().await;
        let h1 = agent("h1");
        let watch = |known_version| Request::Agent(AgentRequest::WatchDesired { known_version });
        let mut first = service.handle(&h1, RequestId::random(), watch(None)).await;
        match next_update(&mut first).await {
            Some(Ok(Response::Desired(desired))) => assert_eq!(desired.version, 0),
            other => panic!("{other:?}"),
        }
        // An agent ahead of even a linearizable read holds another history (a rebuilt
        // cluster): it is told the current state once (it ignores it, and says so), then only
        // newer ones.
        let mut ahead = service
            .handle(&h1, RequestId::random(), watch(Some(5)))
            .await;
        match next_update(&mut ahead).await {
            Some(Ok(Response::Desired(desired))) => assert_eq!(desired.version, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(next_update(&mut ahead).await, None);
        // The newer watch replaced the first, which ends with a reason.
        assert_eq!(
            code(
                update_within(&mut first, Duration::from_secs(3))
                    .await
                    .expect("an end within the watch's leadership check (1 s)")
            ),
            Some(ErrorCode::InvalidArgument)
        );
        // Only agents watch.
        let mut refused = service
            .handle(&user(Role::Admin), RequestId::random(), watch(None))
            .await;
        let Reply::Once(result) = &mut refused else {
            panic!("a refusal is one answer");
        };
        assert_eq!(
            result.as_ref().err().map(|e| e.code),
            Some(ErrorCode::PermissionDenied)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_watch_with_causes_pushes_the_state_with_each_workspaces_cause() {
        use nexus_protocol::message::WorkspaceRequest;
        let (_dir, node, service) = one_node_with_h1().await;
        let h1 = agent("h1");
        let watch = Request::Agent(AgentRequest::WatchDesiredCauses {
            known_version: None,
        });
        let mut updates = service.handle(&h1, RequestId::random(), watch).await;
        match next_update(&mut updates).await {
            Some(Ok(Response::DesiredWithCauses { state, causes })) => {
                assert_eq!(state.version, 0);
                assert!(state.assignments.is_empty());
                assert!(causes.is_empty(), "{causes:?}");
            }
            other => panic!("{other:?}"),
        }
        let create = RequestId::random();
        let ada = named("ada", Role::User);
        let answer = service
            .handle(
                &ada,
                create,
                ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
            )
            .await;
        let Reply::Once(Ok(Response::Workspace(_))) = answer else {
            panic!("the create failed: {answer:?}");
        };
        match update_within(&mut updates, Duration::from_secs(5)).await {
            Some(Ok(Response::DesiredWithCauses { state, causes })) => {
                assert!(state.version > 0);
                assert_eq!(state.assignments.len(), 1);
                // The workspace, and the request that changed it.
                assert_eq!(causes, vec![("w".parse().unwrap(), create)]);
            }
            other => panic!("{other:?}"),
        }
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_create_leaves_its_hops_under_its_request_id() {
        use nexus_protocol::hop::{OUTCOME_FIELD, REQUEST_ID_FIELD, capture};
        use nexus_protocol::message::WorkspaceRequest;
        // The driver applies on a thread of its own: capture everywhere (each test is a process
        // of its own under nextest; elsewhere, the hops are told apart by request id).
        let (subscriber, captured) = capture::subscriber();
        let _ = tracing::subscriber::set_global_default(subscriber);
        let (_dir, node, service) = one_node_with_h1().await;
        let watch = Request::Agent(AgentRequest::WatchDesiredCauses {
            known_version: None,
        });
        let mut updates = service
            .handle(&agent("h1"), RequestId::random(), watch)
            .await;
        assert!(next_update(&mut updates).await.is_some());
        let ada = named("ada", Role::User);
        let create = RequestId::random();
        let request = ws(WorkspaceRequest::Create(workspace_spec("w", &[])));
        let answer = service.handle(&ada, create, request.clone()).await;
        assert!(matches!(answer, Reply::Once(Ok(_))), "{answer:?}");
        // The push that carries the create to h1's agent, under the create's id.
        assert!(
            update_within(&mut updates, Duration::from_secs(5))
                .await
                .is_some()
        );
        let again = RequestId::random();
        let refused = service.handle(&ada, again, request).await;
        assert!(matches!(refused, Reply::Once(Err(_))), "{refused:?}");
        let hops_of = |id: RequestId| -> Vec<(String, Option<String>, Option<String>)> {
            captured
                .hops()
                .into_iter()
                .filter(|hop| hop.field(REQUEST_ID_FIELD) == Some(id.to_string().as_str()))
                .map(|hop| {
                    (
                        hop.name().to_string(),
                        hop.field("kind").map(String::from),
                        hop.field(OUTCOME_FIELD).map(String::from),
                    )
                })
                .collect()
        };
        let hops = hops_of(create);
        let has = |hops: &[(String, Option<String>, Option<String>)], name: &str, kind: &str| {
            hops.iter()
                .find(|(n, k, _)| n == name && k.as_deref() == Some(kind))
                .and_then(|(_, _, outcome)| outcome.clone())
        };
        assert_eq!(
            has(&hops, "coordinator.request", "workspace_create").as_deref(),
            Some("ok"),
            "{hops:?}"
        );
        assert_eq!(
            has(&hops, "coordinator.propose", "batch of 1").as_deref(),
            Some("ok"),
            "{hops:?}"
        );
        assert_eq!(
            has(&hops, "coordinator.apply", "place").as_deref(),
            Some("ok"),
            "{hops:?}"
        );
        // The push's hop closes once the update is handed over, just after it arrives here.
        let mut pushed = None;
        for _ in 0..100 {
            pushed = hops_of(create)
                .into_iter()
                .find(|(name, _, _)| name == "coordinator.push");
            if pushed.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, kind, outcome) = pushed.expect("a push hop under the create's id");
        assert!(kind.is_some_and(|kind| kind.starts_with("version ")));
        assert_eq!(outcome.as_deref(), Some("ok"));
        // The second create of the same name fails where the state refuses it, and says why.
        let hops = hops_of(again);
        let apply = has(&hops, "coordinator.apply", "place").unwrap_or_default();
        assert!(apply.starts_with("WORKSPACE_ALREADY_EXISTS: "), "{hops:?}");
        let request = has(&hops, "coordinator.request", "workspace_create").unwrap_or_default();
        assert!(
            request.starts_with("WORKSPACE_ALREADY_EXISTS: "),
            "{hops:?}"
        );
        node.stop().await.unwrap();
    }
}
