//! The workspaces' table, which notes each host whose workspaces it changes.
//!
//! Every change to a workspace goes through [`Workspaces::get_mut`], [`Workspaces::insert`],
//! [`Workspaces::remove`] or [`Workspaces::update_where`], and each gives the workspace's host a
//! new *epoch*, a number drawn from one counter of the process. Reads go through `Deref` to the
//! map. A host's epoch unchanged is then proof that none of its workspaces changed, which is what
//! lets the leader answer an agent's repeated report without looking at its workspaces one by
//! one ([`super::State::report_epoch`]).
//!
//! A workspace never changes host, so bumping its host when the record is handed out covers
//! every change made through the reference. The epochs are a note for this process, not
//! replicated state: never serialized, never compared. A table made, read or restored draws a
//! base epoch of its own for hosts it has not changed, so an epoch seen in one table never
//! vouches for another's workspaces.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nexus_protocol::{HostId, WorkspaceName};
use serde::{Deserialize, Serialize};

use super::{Map, WorkspaceRecord};

/// The process's epoch counter: every bump, in every table, draws the next number.
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

fn next_epoch() -> u64 {
    NEXT_EPOCH.fetch_add(1, Ordering::Relaxed)
}

/// The workspaces by name, each record behind a pointer of its own: the map's nodes hold sixteen
/// entries inline and are half full after the splits that in-order names cause, so a record
/// inline (624 bytes) cost about 1.3 KiB of node per workspace, and a node copied while a
/// snapshot's copy shared it copied sixteen whole records. Serialized as the records themselves,
/// so the snapshot's bytes are as they were.
pub type Records = Map<WorkspaceName, Arc<WorkspaceRecord>>;

/// The workspaces by name, serialized as the map alone (the snapshot's bytes are the map's).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Workspaces {
    map: Records,
    #[serde(skip)]
    epochs: Epochs,
}

/// Each host's epoch: the number drawn when one of its workspaces last changed, or the table's
/// base for a host none of whose workspaces changed since the table was made.
#[derive(Clone)]
struct Epochs {
    base: u64,
    by_host: HashMap<HostId, u64>,
}

impl Default for Epochs {
    fn default() -> Epochs {
        Epochs {
            base: next_epoch(),
            by_host: HashMap::new(),
        }
    }
}

impl Epochs {
    fn bump(&mut self, host: &HostId) {
        let epoch = next_epoch();
        match self.by_host.get_mut(host) {
            Some(kept) => *kept = epoch,
            None => {
                self.by_host.insert(host.clone(), epoch);
            }
        }
    }
}

impl Workspaces {
    /// The epoch of `host`'s workspaces: it moves whenever one of them changes (or comes, or
    /// goes), and only then.
    pub fn epoch(&self, host: &HostId) -> u64 {
        self.epochs
            .by_host
            .get(host)
            .copied()
            .unwrap_or(self.epochs.base)
    }

    /// The map alone, in constant time (shared with the table until either changes): for a
    /// copy read off the Raft thread, which needs no epochs.
    pub fn map_copy(&self) -> Records {
        self.map.clone()
    }

    /// `name`'s record. (The map's own `get`, through `Deref`, gives the pointer.)
    pub fn get<Q>(&self, name: &Q) -> Option<&WorkspaceRecord>
    where
        Q: Ord + ?Sized,
        WorkspaceName: std::borrow::Borrow<Q>,
    {
        self.map.get(name).map(Arc::as_ref)
    }

    /// The records, in the names' order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &WorkspaceRecord> + '_ {
        self.map.values().map(Arc::as_ref)
    }

    /// The names and their records, in the names' order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Entry<'_>> + '_ {
        self.into_iter()
    }

    /// `name`'s record to change; its host's epoch moves.
    pub fn get_mut(&mut self, name: &WorkspaceName) -> Option<&mut WorkspaceRecord> {
        let record = self.map.get_mut(name)?;
        self.epochs.bump(&record.host);
        Some(Arc::make_mut(record))
    }

    /// Adds (or replaces) `name`'s record; the host's epoch moves (the old record's too).
    pub fn insert(&mut self, name: WorkspaceName, record: WorkspaceRecord) {
        self.epochs.bump(&record.host);
        if let Some(old) = self.map.insert(name, Arc::new(record)) {
            self.epochs.bump(&old.host);
        }
    }

    /// Removes `name`'s record; its host's epoch moves.
    pub fn remove(&mut self, name: &WorkspaceName) -> Option<WorkspaceRecord> {
        let gone = self.map.remove(name)?;
        self.epochs.bump(&gone.host);
        Some(Arc::unwrap_or_clone(gone))
    }

    /// Changes with `change` every workspace that `wanted` picks: those only, for a change
    /// copies the path to each record it touches while a snapshot's copy shares it.
    pub fn update_where(
        &mut self,
        wanted: impl Fn(&WorkspaceName, &WorkspaceRecord) -> bool,
        mut change: impl FnMut(&WorkspaceName, &mut WorkspaceRecord),
    ) {
        let names: Vec<WorkspaceName> = self
            .map
            .iter()
            .filter(|(name, record)| wanted(name, record))
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            if let Some(record) = self.get_mut(&name) {
                change(&name, record);
            }
        }
    }
}

impl Deref for Workspaces {
    type Target = Records;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// A name and its record, as the table's readers see them (the record, not its pointer).
pub(crate) type Entry<'a> = (&'a WorkspaceName, &'a WorkspaceRecord);

fn entry<'a>((name, record): (&'a WorkspaceName, &'a Arc<WorkspaceRecord>)) -> Entry<'a> {
    (name, record)
}

impl<'a> IntoIterator for &'a Workspaces {
    type Item = Entry<'a>;
    type IntoIter = std::iter::Map<
        <&'a Records as IntoIterator>::IntoIter,
        fn((&'a WorkspaceName, &'a Arc<WorkspaceRecord>)) -> Entry<'a>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        (&self.map).into_iter().map(entry)
    }
}

impl From<Records> for Workspaces {
    fn from(map: Records) -> Workspaces {
        Workspaces {
            map,
            epochs: Epochs::default(),
        }
    }
}

impl FromIterator<(WorkspaceName, WorkspaceRecord)> for Workspaces {
    fn from_iter<I: IntoIterator<Item = (WorkspaceName, WorkspaceRecord)>>(iter: I) -> Workspaces {
        Workspaces::from(
            iter.into_iter()
                .map(|(name, record)| (name, Arc::new(record)))
                .collect::<Records>(),
        )
    }
}

/// Two tables are equal when their workspaces are: the epochs are this process's notes.
impl PartialEq for Workspaces {
    fn eq(&self, other: &Workspaces) -> bool {
        self.map == other.map
    }
}

impl std::fmt::Debug for Workspaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

/// A workspace `w1` on `host`, for the tests of the table and of what follows its epochs.
#[cfg(test)]
pub(crate) fn test_record(host: &str) -> WorkspaceRecord {
    use nexus_protocol::clock::Timestamp;
    let at = Timestamp::from_millis(1);
    WorkspaceRecord {
        spec: nexus_fixtures::spec("w1"),
        owner: "alice".parse().unwrap(),
        host: host.parse().unwrap(),
        ports: Vec::new(),
        desired: nexus_protocol::message::DesiredRun::Running,
        state: nexus_protocol::model::WorkspaceState::Scheduled,
        generation: 1,
        created_at: at,
        updated_at: at,
        last_error: None,
        restart_pending: false,
        port_reassigned: false,
        lifecycle: crate::state::Lifecycle::created(at),
        worktree: None,
    }
}

#[cfg(test)]
mod tests {
    use super::test_record as record;
    use super::*;

    #[test]
    fn every_change_moves_only_its_hosts_epoch() {
        let a: HostId = "a".parse().unwrap();
        let b: HostId = "b".parse().unwrap();
        let mut table = Workspaces::default();
        let (a0, b0) = (table.epoch(&a), table.epoch(&b));
        table.insert("w1".parse().unwrap(), record("a"));
        let a1 = table.epoch(&a);
        assert_ne!(a1, a0);
        assert_eq!(table.epoch(&b), b0, "b's workspaces did not change");
        let _ = table.get("w1".parse::<WorkspaceName>().as_ref().unwrap());
        assert_eq!(table.epoch(&a), a1, "a read moves nothing");
        table
            .get_mut(&"w1".parse().unwrap())
            .unwrap()
            .restart_pending = true;
        let a2 = table.epoch(&a);
        assert_ne!(a2, a1);
        table.update_where(|_, _| true, |_, w| w.port_reassigned = true);
        let a3 = table.epoch(&a);
        assert_ne!(a3, a2);
        table.update_where(|_, _| false, |_, w| w.port_reassigned = false);
        assert_eq!(table.epoch(&a), a3, "nothing picked, nothing moved");
        table.remove(&"w1".parse().unwrap());
        assert_ne!(table.epoch(&a), a3);
        assert_eq!(table.epoch(&b), b0);
    }

    #[test]
    fn a_table_made_again_never_shares_an_epoch_with_the_one_before() {
        let a: HostId = "a".parse().unwrap();
        let mut table = Workspaces::default();
        table.insert("w1".parse().unwrap(), record("a"));
        let bytes = serde_json::to_vec(&table).unwrap();
        let read: Workspaces = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(read, table, "the same workspaces");
        assert_ne!(read.epoch(&a), table.epoch(&a));
        let fresh = Workspaces::default();
        assert_ne!(fresh.epoch(&a), Workspaces::default().epoch(&a));
        assert_eq!(
            serde_json::to_string(&table).unwrap(),
            serde_json::to_string(&*table).unwrap(),
            "serialized as the map alone"
        );
    }
}
