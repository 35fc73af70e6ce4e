//! A deterministic simulation of 3- and 5-node clusters in one thread, over the real RocksDB store
//! (unsynced, in temporary directories): seeded message drops, delays and reordering, partitions,
//! and crash-restarts (the database is closed and reopened, and the node recovers from its
//! snapshot and log as after a real crash). Snapshots are taken every 64 entries, so nodes that
//! were away catch up from the leader's snapshot; each is written off the node's thread, as in
//! production, and waited for before the next step, so that a seed replays alike. For each seed it checks:
//! - at most one leader per term;
//! - no two replicas ever apply different entries at one index (so no committed entry is lost or
//!   replaced);
//! - once healed, every replica converges to the same applied index and the same state, and every
//!   write that was acknowledged to a client is in it.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use nexus_coordinator::consensus::{RaftConfig, RaftMessage, RaftNode, carries_snapshot};
use nexus_coordinator::state::{Command, Proposal, State};
use nexus_coordinator::store::{Durability, FORMAT_VERSION, RocksStore, StoreIdentity};
use nexus_protocol::clock::Timestamp;
use nexus_protocol::identity::Identity;
use nexus_protocol::model::HostInfo;
use nexus_protocol::{NodeId, RequestId};

/// xorshift64*: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Copy)]
struct Faults {
    drop_percent: u64,
    max_delay_ticks: u64,
    crash_percent: u64,
    restart_percent: u64,
    partition_percent: u64,
    heal_percent: u64,
}

const CALM: Faults = Faults {
    drop_percent: 0,
    max_delay_ticks: 1,
    crash_percent: 0,
    restart_percent: 100,
    partition_percent: 0,
    heal_percent: 100,
};

struct Sim {
    rng: Rng,
    config: RaftConfig,
    nodes: Vec<Option<RaftNode<RocksStore>>>,
    dir: tempfile::TempDir,
    voters: Vec<NodeId>,
    in_flight: Vec<(u64, RaftMessage)>,
    /// Nodes cut off from everyone else.
    isolated: BTreeSet<usize>,
    now: u64,
    leaders_by_term: BTreeMap<u64, NodeId>,
    /// Every entry any replica applied: index → request id.
    applied_at: BTreeMap<u64, RequestId>,
    next_request: u128,
    /// Proposals and the node they were proposed to; acknowledged once that node applies them.
    proposed_to: BTreeMap<RequestId, usize>,
    acknowledged: BTreeSet<RequestId>,
    snapshots_restored: u64,
}

fn node_id(index: usize) -> NodeId {
    NodeId::new(index as u64 + 1).unwrap()
}

impl Sim {
    fn new(size: usize, seed: u64) -> Sim {
        let voters: Vec<NodeId> = (0..size).map(node_id).collect();
        let config = RaftConfig {
            snapshot_every: 64,
            ..RaftConfig::default()
        };
        let mut sim = Sim {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            config,
            nodes: (0..size).map(|_| None).collect(),
            dir: tempfile::tempdir().unwrap(),
            voters,
            in_flight: vec![],
            isolated: BTreeSet::new(),
            now: 0,
            leaders_by_term: BTreeMap::new(),
            applied_at: BTreeMap::new(),
            next_request: 1,
            proposed_to: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
            snapshots_restored: 0,
        };
        for i in 0..size {
            sim.restart(i);
        }
        sim
    }

    fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Drops the node and closes its database, as a crash of its process would.
    fn crash(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            self.snapshots_restored += node.snapshots_restored();
        }
    }

    /// Reopens the node's database and recovers: the state machine from its snapshot, the rest
    /// from the log.
    fn restart(&mut self, i: usize) {
        if self.nodes[i].is_none() {
            let identity = StoreIdentity {
                format: FORMAT_VERSION,
                cluster: "sim".into(),
                node: node_id(i),
            };
            let path = self.dir.path().join(format!("node-{i}"));
            let store =
                RocksStore::open(&path, &identity, &self.voters, Durability::Unsynced).unwrap();
            let (state, applied) = store.state_snapshot().unwrap();
            self.nodes[i] =
                Some(RaftNode::new(node_id(i), store, state, applied, &self.config).unwrap());
        }
    }

    fn inject_faults(&mut self, faults: Faults) {
        let size = self.size() as u64;
        let down = self.nodes.iter().filter(|n| n.is_none()).count();
        if self.rng.percent(faults.crash_percent) && down < self.size() / 2 {
            let victim = self.rng.below(size) as usize;
            self.crash(victim);
        }
        for i in 0..self.size() {
            if self.nodes[i].is_none() && self.rng.percent(faults.restart_percent) {
                self.restart(i);
            }
        }
        if self.rng.percent(faults.partition_percent) && self.isolated.len() < self.size() / 2 {
            self.isolated.insert(self.rng.below(size) as usize);
        }
        if self.rng.percent(faults.heal_percent) {
            self.isolated.clear();
        }
    }

    fn step(&mut self, faults: Faults) {
        self.now += 1;
        self.inject_faults(faults);
        for node in self.nodes.iter_mut().flatten() {
            node.tick();
        }
        // Clients write to whichever node they believe leads.
        let leader =
            (0..self.size()).find(|&i| self.nodes[i].as_ref().is_some_and(RaftNode::is_leader));
        if let Some(i) = leader
            && self.rng.percent(40)
        {
            let request_id = RequestId::from_u128(self.next_request);
            self.next_request += 1;
            let proposal = Proposal {
                request_id,
                at: Timestamp(self.now),
                proposer: Identity::Coordinator(node_id(i)),
                command: Command::RegisterHost(host(request_id)),
            };
            if self.nodes[i].as_mut().unwrap().propose(&proposal).is_ok() {
                self.proposed_to.insert(request_id, i);
            }
        }
        self.deliver(faults);
        self.process_ready(faults);
        self.check_leaders();
    }

    fn deliver(&mut self, faults: Faults) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.in_flight = later;
        for (_, message) in due {
            let (from, to) = (message.from as usize - 1, message.to as usize - 1);
            let cut = self.isolated.contains(&from) != self.isolated.contains(&to);
            let lost = cut || self.rng.percent(faults.drop_percent) || self.nodes[to].is_none();
            // As the real transport does: the sender learns the fate of every snapshot, and of
            // every message it could not send.
            if let Some(sender) = self.nodes[from].as_mut() {
                if carries_snapshot(&message) {
                    sender.report_snapshot(node_id(to), !lost);
                } else if lost {
                    sender.report_unreachable(node_id(to));
                }
            }
            if lost {
                continue;
            }
            if let Some(node) = self.nodes[to].as_mut() {
                node.step(message);
            }
        }
    }

    fn process_ready(&mut self, faults: Faults) {
        for i in 0..self.size() {
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            let output = node.process_ready().unwrap();
            // A snapshot is written off the Raft thread; waiting for it here keeps a seed's run
            // the same every time.
            node.settle_snapshot().unwrap();
            for message in output.messages {
                let delay = 1 + self.rng.below(faults.max_delay_ticks.max(1));
                self.in_flight.push((self.now + delay, message));
            }
            for applied in output.applied {
                if let Some(earlier) = self.applied_at.insert(applied.index, applied.request_id) {
                    assert_eq!(
                        earlier, applied.request_id,
                        "two replicas applied different entries at index {}",
                        applied.index
                    );
                }
                if self.proposed_to.get(&applied.request_id) == Some(&i) {
                    self.acknowledged.insert(applied.request_id);
                }
            }
        }
    }

    fn check_leaders(&mut self) {
        for node in self.nodes.iter().flatten().filter(|n| n.is_leader()) {
            let first = *self.leaders_by_term.entry(node.term()).or_insert(node.id());
            assert_eq!(first, node.id(), "two leaders in term {}", node.term());
        }
    }
}

fn host(request_id: RequestId) -> HostInfo {
    HostInfo {
        hostname: "sim".into(),
        cpus: 1,
        memory_bytes: 1,
        agent_version: "sim".into(),
        ..nexus_fixtures::host(&format!("h{}", request_id.as_u128()))
    }
}

/// Runs `chaos_ticks` under `faults`, then heals everything and runs until every replica has
/// applied the same index (or fails after a bound).
fn run(size: usize, seed: u64, faults: Faults, chaos_ticks: u64) -> Sim {
    let mut sim = Sim::new(size, seed);
    for _ in 0..chaos_ticks {
        sim.step(faults);
    }
    for i in 0..size {
        sim.restart(i);
    }
    sim.isolated.clear();
    // Quiet: stop writing new entries only once everyone has converged; bounded.
    for _ in 0..2_000 {
        sim.step(CALM);
        let indexes: BTreeSet<u64> = sim
            .nodes
            .iter()
            .flatten()
            .map(RaftNode::applied_index)
            .collect();
        let commits: BTreeSet<u64> = sim
            .nodes
            .iter()
            .flatten()
            .map(RaftNode::commit_index)
            .collect();
        if indexes.len() == 1 && commits.len() == 1 && sim.in_flight.is_empty() {
            break;
        }
    }
    for i in 0..size {
        if let Some(node) = sim.nodes[i].as_ref() {
            sim.snapshots_restored += node.snapshots_restored();
        }
    }
    let states: Vec<&State> = sim.nodes.iter().flatten().map(RaftNode::state).collect();
    let indexes: BTreeSet<u64> = sim
        .nodes
        .iter()
        .flatten()
        .map(RaftNode::applied_index)
        .collect();
    assert_eq!(
        indexes.len(),
        1,
        "seed {seed}: replicas did not converge: {indexes:?}"
    );
    for state in &states[1..] {
        assert!(
            *state == states[0],
            "seed {seed}: replicas hold different states"
        );
    }
    for request_id in &sim.acknowledged {
        assert!(
            states[0].outcome_of(*request_id).is_some(),
            "seed {seed}: acknowledged write {request_id} was lost"
        );
    }
    sim
}

const CHAOS: Faults = Faults {
    drop_percent: 10,
    max_delay_ticks: 4,
    crash_percent: 2,
    restart_percent: 5,
    partition_percent: 2,
    heal_percent: 3,
};

#[test]
fn a_calm_cluster_elects_one_leader_and_commits_every_write() {
    for size in [1, 3, 5] {
        let sim = run(size, 7, CALM, 300);
        assert_eq!(
            sim.leaders_by_term.len(),
            1,
            "{size} nodes: one election, one term"
        );
        assert!(
            sim.acknowledged.len() > 50,
            "{size} nodes: {} writes acknowledged",
            sim.acknowledged.len()
        );
        assert_eq!(
            sim.acknowledged.len(),
            sim.proposed_to.len(),
            "{size} nodes: without faults every proposal commits"
        );
    }
}

#[test]
fn three_nodes_stay_safe_under_drops_partitions_and_crashes() {
    let mut acknowledged = 0;
    let mut terms = 0;
    let mut restored = 0;
    for seed in 1..=12 {
        let sim = run(3, seed, CHAOS, 2_000);
        acknowledged += sim.acknowledged.len();
        terms += sim.leaders_by_term.len();
        restored += sim.snapshots_restored;
    }
    assert!(
        restored > 0,
        "no node caught up from a leader's snapshot: the path went untested"
    );
    // The faults really happened and the cluster still made progress.
    assert!(
        terms > 12 * 2,
        "only {terms} terms across seeds: the faults did not bite"
    );
    assert!(
        acknowledged > 12 * 100,
        "only {acknowledged} writes acknowledged across seeds"
    );
}

#[test]
fn five_nodes_stay_safe_under_drops_partitions_and_crashes() {
    let mut acknowledged = 0;
    for seed in 100..=105 {
        let sim = run(5, seed, CHAOS, 2_000);
        acknowledged += sim.acknowledged.len();
    }
    assert!(
        acknowledged > 6 * 100,
        "only {acknowledged} writes acknowledged across seeds"
    );
}
