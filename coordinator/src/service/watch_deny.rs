//! Agents' deny-list watches: the fleet's deny list now and after every change, for as long as
//! this node leads, so that an agent's own endpoint (logs, exec, sync) shuts a revoked identity
//! out within about a second, as the coordinators do. Like the desired-state watch
//! ([`super::watch`]), it ends with `NOT_LEADER` (naming the leader) when the lead moves.

use tokio::sync::mpsc;

use nexus_protocol::identity::Identity;
use nexus_protocol::message::Response;
use nexus_protocol::transport::{Peer, Reply, Update};

use super::Service;
use super::checks::denied;
use super::watch::next_change_while_leading;
use crate::cluster::{Cluster, Consistency};

impl Service {
    pub(super) async fn watch_deny_list(&self, peer: &Peer) -> Reply {
        if !matches!(peer.identity, Identity::Agent(_)) {
            return Reply::Once(Err(denied(peer, "only agents watch the deny list")));
        }
        if let Err(error) = self.cluster.require_leader().await {
            return Reply::Once(Err(error));
        }
        let (sender, updates) = mpsc::channel(2);
        tokio::spawn(push_deny_list(self.cluster.clone(), sender));
        Reply::Stream(updates)
    }
}

async fn push_deny_list(cluster: Cluster, updates: mpsc::Sender<Update>) {
    let mut changes = cluster.deny_list();
    let mut leadership = cluster.leadership();
    // Marked seen before the read, so a change applied while it runs is pushed after it.
    changes.borrow_and_update();
    // The first push is linearizable: this replica has applied every denial committed so far.
    let first = cluster
        .read(Consistency::Linearizable, |state| {
            state.security().deny_list().clone()
        })
        .await;
    let mut list = match first {
        Ok(list) => list,
        Err(error) => {
            let _ = updates.send(Box::new(Err(error))).await;
            return;
        }
    };
    loop {
        if updates
            .send(Box::new(Ok(Response::DenyList(list))))
            .await
            .is_err()
        {
            return;
        }
        if !next_change_while_leading(&cluster, &mut changes, &mut leadership, &updates).await {
            return;
        }
        list = changes.borrow_and_update().clone();
    }
}
