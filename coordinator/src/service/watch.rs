//! Agents' desired-state watches: each pushes its host's desired state when it changes, for as
//! long as this node leads; a newer watch of the same host replaces an older one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use nexus_protocol::HostId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::Response;
use nexus_protocol::transport::{Peer, Reply};

use super::Service;
use super::checks::denied;
use crate::cluster::{Cluster, Consistency};
use crate::locks::lock;

/// How often a desired-state watch checks that a newer watch has not replaced it. It also wakes
/// when its host's desired state changes and when this node's leadership does: a watch on a
/// node that lost the lead ends with `NOT_LEADER`, naming the new leader, and the agent moves
/// there.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

impl Service {
    /// An agent's watch of its host's desired state: the state now (unless the agent has that
    /// version already), then again after every change, for as long as this node leads.
    pub(super) async fn watch_desired(&self, peer: &Peer, known_version: Option<u64>) -> Reply {
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
        lock(&self.watches).insert(host.clone(), generation);
        let watch = Watch {
            cluster: self.cluster.clone(),
            host: host.clone(),
            generation,
            watches: self.watches.clone(),
        };
        tokio::spawn(watch.run(known_version, sender));
        Reply::Stream(updates)
    }
}

/// One agent's watch of its host's desired state.
struct Watch {
    cluster: Cluster,
    host: HostId,
    /// Which of the host's watches this is; a newer one ends it.
    generation: u64,
    watches: Arc<Mutex<BTreeMap<HostId, u64>>>,
}

impl Watch {
    fn replaced(&self) -> bool {
        lock(&self.watches).get(&self.host) != Some(&self.generation)
    }

    async fn run(self, sent: Option<u64>, updates: mpsc::Sender<Result<Response, WireError>>) {
        watch_desired(&self, sent, &updates).await;
        let mut watches = lock(&self.watches);
        if watches.get(&self.host) == Some(&self.generation) {
            watches.remove(&self.host);
        }
    }
}

async fn watch_desired(
    watch: &Watch,
    mut sent: Option<u64>,
    updates: &mpsc::Sender<Result<Response, WireError>>,
) {
    let Watch { cluster, host, .. } = watch;
    let mut changes = cluster.desired_changes(host);
    let mut leadership = cluster.leadership();
    let mut first = true;
    // Whether the host's desired state may have changed since the last look.
    let mut dirty = true;
    loop {
        changes.borrow_and_update();
        let leading = leadership.borrow_and_update().leading;
        if watch.replaced() {
            let _ = updates
                .send(Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("a newer watch of host {host} replaced this one"),
                )))
                .await;
            return;
        }
        // The driver is asked only at the start and when the lead seems lost (the answer names
        // the new leader); otherwise the driver's published leadership is enough.
        if (first || !leading)
            && let Err(error) = cluster.require_leader().await
        {
            let _ = updates.send(Err(error)).await;
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
                    (push.then(|| state.desired_for(&wanted)), ahead)
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
                Ok(Some(desired)) => {
                    sent = Some(desired.version);
                    if updates.send(Ok(Response::Desired(desired))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    let _ = updates.send(Err(error)).await;
                    return;
                }
            }
        }
        dirty = false;
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() { return }
                dirty = true;
            }
            changed = leadership.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(LEADERSHIP_CHECK) => {}
            () = updates.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::RequestId;
    use nexus_protocol::error::{ErrorCode, WireError};
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{AgentRequest, Request, Response};
    use nexus_protocol::transport::{Handler, Reply};

    use crate::service::testing::{agent, code, one_node_with_h1, user};

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
}
