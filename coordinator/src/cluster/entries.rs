//! Which version of log entries every member of the cluster applies, so that a coordinator
//! proposes an entry of a newer version ([`ENTRY_VERSION`]) only once no member would be handed
//! one it cannot read. During a rolling upgrade the upgraded members keep proposing entries of
//! the version the others read; once every member answers that it applies the newer one, they
//! move to it. A member asked answers `PeerRequest::EntryVersion`; a build from before the
//! question answers `PROTOCOL_ERROR`, which is version 1. A member that cannot be asked counts
//! as version 1 too, until it answers: it may come back as an older build.
//!
//! Rolling back a member below the version its cluster agreed is not supported (the log may
//! hold entries it cannot read, and it would stop at the first), as with etcd's cluster version.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nexus_protocol::NodeId;
use nexus_protocol::error::{ErrorCode, WireError};

use super::Cluster;
use crate::locks::lock;
use crate::state::ENTRY_VERSION;

/// How long a member has to answer.
const ASK_LIMIT: Duration = Duration::from_secs(2);
/// How often the members are asked while some of them have not said they apply this build's
/// entries, and once they all have (a member may be replaced by an older build).
const ASK_WHILE_BEHIND: Duration = Duration::from_secs(2);
const ASK_WHILE_AGREED: Duration = Duration::from_secs(10);

/// The members' answers, and the version they agree on.
#[derive(Debug)]
pub(super) struct EntryVersions {
    agreed: AtomicU32,
    answers: Mutex<BTreeMap<NodeId, u32>>,
}

impl Default for EntryVersions {
    fn default() -> EntryVersions {
        EntryVersions {
            agreed: AtomicU32::new(1),
            answers: Mutex::new(BTreeMap::new()),
        }
    }
}

impl EntryVersions {
    /// The newest version of entries every member applies, as last learned (1 until then).
    pub(super) fn agreed(&self) -> u32 {
        self.agreed.load(Ordering::Relaxed)
    }
}

/// The newest version every one of `members` applies: this build's own for `me`, a member's
/// answer for the others (1 for one that has not answered).
pub(super) fn agreed(me: NodeId, members: &[NodeId], answers: &BTreeMap<NodeId, u32>) -> u32 {
    members
        .iter()
        .filter(|member| **member != me)
        .map(|member| answers.get(member).copied().unwrap_or(1))
        .fold(ENTRY_VERSION, u32::min)
}

impl Cluster {
    /// The newest version of log entries every member applies (see the module's text).
    pub fn entry_version(&self) -> u32 {
        self.entries.agreed()
    }

    /// Refuses a new member `id` at `address` that applies older entries than this build
    /// (`VERSION_MISMATCH`): the log may hold entries of this build's version already, and it
    /// would stop at the first it could not read. Against this build's version, not the agreed
    /// one: that is an estimate, 1 after a restart or while a member does not answer, when the
    /// log may hold newer entries all the same.
    pub(super) async fn check_new_member(
        &self,
        id: NodeId,
        address: &str,
    ) -> Result<(), WireError> {
        let ours = ENTRY_VERSION;
        let theirs = self.peers.entry_version_at(id, address, ASK_LIMIT).await?;
        if theirs >= ours {
            return Ok(());
        }
        Err(WireError::new(
            ErrorCode::VersionMismatch,
            format!(
                "coordinator {id} at {address} applies log entries up to version {theirs}, and \
                 this leader's build writes version {ours}: run this build there before adding it"
            ),
        ))
    }

    /// Asks the members which entries they apply, for as long as the node runs.
    pub async fn follow_entry_versions(&self) {
        loop {
            let agreed = self.ask_entry_versions().await;
            let pause = if agreed < ENTRY_VERSION {
                ASK_WHILE_BEHIND
            } else {
                ASK_WHILE_AGREED
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One round: asks every other member, and answers the version they agree on now.
    async fn ask_entry_versions(&self) -> u32 {
        let Ok(view) = self.view().await else {
            return self.entries.agreed();
        };
        let members: Vec<NodeId> = view.members.iter().map(|member| member.id).collect();
        for &member in members.iter().filter(|member| **member != self.id) {
            let answer = self.peers.entry_version(member, ASK_LIMIT).await.ok();
            let mut answers = lock(&self.entries.answers);
            match answer {
                Some(version) => answers.insert(member, version),
                None => answers.remove(&member),
            };
        }
        let mut answers = lock(&self.entries.answers);
        answers.retain(|member, _| members.contains(member));
        let agreed = agreed(self.id, &members, &answers);
        drop(answers);
        let before = self.entries.agreed.swap(agreed, Ordering::Relaxed);
        if before != agreed {
            tracing::info!(
                before,
                agreed,
                "every member of the cluster now applies log entries of version {agreed}"
            );
        }
        agreed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> NodeId {
        NodeId::new(id).unwrap()
    }

    #[test]
    fn the_agreed_version_is_the_oldest_any_member_applies() {
        let me = node(1);
        let members = [node(1), node(2), node(3)];
        let mut answers = BTreeMap::new();
        // Alone, a node applies its own entries.
        assert_eq!(agreed(me, &[me], &answers), ENTRY_VERSION);
        // A member that has not answered may be an older build.
        assert_eq!(agreed(me, &members, &answers), 1);
        answers.insert(node(2), ENTRY_VERSION);
        assert_eq!(agreed(me, &members, &answers), 1);
        answers.insert(node(3), ENTRY_VERSION);
        assert_eq!(agreed(me, &members, &answers), ENTRY_VERSION);
        // A newer member does not raise the cluster past this build.
        answers.insert(node(3), ENTRY_VERSION + 1);
        assert_eq!(agreed(me, &members, &answers), ENTRY_VERSION);
        // One older member holds every member back; its own answer is not asked of itself.
        answers.insert(node(2), 1);
        assert_eq!(agreed(me, &members, &answers), 1);
        answers.insert(node(1), ENTRY_VERSION);
        assert_eq!(agreed(node(2), &members, &answers), ENTRY_VERSION);
    }
}
