//! The fleet's invariants, checked over the snapshots a campaign took (every list answered
//! during the run, and the final state) and over its history. Pure: values in, a list of
//! [`InvariantViolation`]s out.
//!
//! - At every snapshot ([`check_snapshots`]): no host holds more workspaces, CPU or memory than
//!   its limits allow (the coordinator's fit rules, `coordinator::fit`: workspaces being
//!   destroyed still count until they are gone), no host port is given to two workspaces, and
//!   every host port is in its host's range.
//! - At the end ([`check_final`]): every acknowledged create not later destroyed exists, once;
//!   no workspace exists whose every create was refused; every existing workspace wanted running
//!   runs on exactly one host, its own (given which hosts hold which containers); no container
//!   is left of a workspace that is gone.
//!
//! That every unknown outcome resolved one way, consistently, is the linearizability checker's
//! part ([`super::linear`]): the final reads are the history's last operations, so an unknown
//! create must have taken effect or not in a way that every later read agrees with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use nexus_protocol::message::{HostView, LimitsView};
use nexus_protocol::model::{Limits, PortRange, WorkspaceState, WorkspaceView};
use nexus_protocol::{HostId, WorkspaceName};

use super::history::{FinalState, History, Observed, Op, OpId, OpKind, Outcome, Run};

/// What one host may hold, as the coordinator's fit rules weigh it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapacity {
    pub host: HostId,
    pub max_workspaces: u32,
    /// Its CPUs times the CPU overcommit, in thousandths of a core.
    pub cpu_millis: u64,
    /// Its memory times the memory overcommit.
    pub memory_bytes: u64,
    pub ports: PortRange,
}

impl HostCapacity {
    /// A host's capacity from its registration and the limits in force there.
    pub fn of(host: &HostView, limits: &Limits) -> HostCapacity {
        let times = |amount: u64, percent: u32| {
            u64::try_from(u128::from(amount) * u128::from(percent) / 100).unwrap_or(u64::MAX)
        };
        HostCapacity {
            host: host.info.host_id.clone(),
            max_workspaces: limits.max_workspaces_per_host,
            cpu_millis: times(
                u64::from(host.info.cpus) * 1000,
                limits.cpu_overcommit_percent,
            ),
            memory_bytes: times(host.info.memory_bytes, limits.memory_overcommit_percent),
            ports: host.info.port_range,
        }
    }
}

/// Every host's capacity, from `nexus admin hosts` and `nexus admin limits` (a host without
/// overrides has the cluster's limits).
pub fn capacities(hosts: &[HostView], limits: &LimitsView) -> Vec<HostCapacity> {
    hosts
        .iter()
        .map(|host| {
            let effective = limits
                .hosts
                .iter()
                .find(|h| h.host == host.info.host_id)
                .map_or(limits.cluster, |h| h.effective);
            HostCapacity::of(host, &effective)
        })
        .collect()
}

/// Which invariant was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A host holds more workspaces, CPU or memory than its limits allow.
    HostOverLimit,
    /// One host port of one host given to two workspaces.
    PortGivenTwice,
    /// A host port outside its host's range.
    PortOutOfRange,
    /// A snapshot names a workspace on a host it does not know.
    UnknownHost,
    /// A list shows one name twice.
    NameListedTwice,
    /// An acknowledged create, not destroyed since, is missing at the end.
    AcknowledgedCreateLost,
    /// A workspace exists whose every create was refused.
    RefusedCreateExists,
    /// A workspace wanted running does not run on exactly one host (its own), or a stopped one
    /// has containers elsewhere.
    NotOnOneHost,
    /// A container is left of a workspace that is gone.
    ContainerOfGoneWorkspace,
    /// The final state could not be read (the cluster did not answer after healing).
    FinalStateUnread,
}

/// One broken invariant, with the operations it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantViolation {
    pub rule: Rule,
    /// The workspace concerned, when one is.
    pub name: Option<WorkspaceName>,
    /// The operations involved: the list that showed it, the creates and destroys concerned.
    pub ops: Vec<OpId>,
    /// What was wrong, for people.
    pub detail: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<String> = self.ops.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{:?}: {} (ops {})",
            self.rule,
            self.detail,
            ops.join(", ")
        )
    }
}

/// Checks every list the history holds (its answered [`Observed::Listed`] snapshots) against the
/// hosts' capacities.
pub fn check_snapshots(history: &History, hosts: &[HostCapacity]) -> Vec<InvariantViolation> {
    history
        .ops
        .iter()
        .filter_map(|op| match &op.outcome {
            Outcome::Ok(Observed::Listed(views)) => Some((op.id, views)),
            _ => None,
        })
        .flat_map(|(id, views)| check_snapshot(id, views, hosts))
        .collect()
}

/// Checks one snapshot of the workspaces (answered by operation `id`).
pub fn check_snapshot(
    id: OpId,
    views: &[WorkspaceView],
    hosts: &[HostCapacity],
) -> Vec<InvariantViolation> {
    let mut found = Vec::new();
    let violation = |rule, name: Option<&WorkspaceName>, detail: String| InvariantViolation {
        rule,
        name: name.cloned(),
        ops: vec![id],
        detail,
    };
    let mut names = BTreeSet::new();
    let mut usage: BTreeMap<&HostId, (u32, u64, u64)> = BTreeMap::new();
    let mut ports: BTreeMap<(&HostId, u16), &WorkspaceName> = BTreeMap::new();
    for view in views {
        if !names.insert(&view.name) {
            found.push(violation(
                Rule::NameListedTwice,
                Some(&view.name),
                format!("workspace {} is listed twice", view.name),
            ));
        }
        let Some(host) = &view.host else { continue };
        let Some(capacity) = hosts.iter().find(|h| &h.host == host) else {
            found.push(violation(
                Rule::UnknownHost,
                Some(&view.name),
                format!(
                    "workspace {} is on host {host}, which is not known",
                    view.name
                ),
            ));
            continue;
        };
        let resources = view.class.resources();
        let used = usage.entry(host).or_default();
        used.0 += 1;
        used.1 += u64::from(resources.cpu_millis);
        used.2 += resources.memory_bytes;
        for binding in &view.ports {
            if !capacity.ports.contains(binding.host) {
                found.push(violation(
                    Rule::PortOutOfRange,
                    Some(&view.name),
                    format!(
                        "workspace {} has port {} of host {host}, outside its range {}",
                        view.name, binding.host, capacity.ports
                    ),
                ));
            }
            if let Some(other) = ports.insert((host, binding.host), &view.name) {
                found.push(violation(
                    Rule::PortGivenTwice,
                    Some(&view.name),
                    format!(
                        "port {} of host {host} is given to {other} and {}",
                        binding.host, view.name
                    ),
                ));
            }
        }
    }
    for (host, (count, cpu, memory)) in usage {
        let Some(capacity) = hosts.iter().find(|h| &h.host == host) else {
            continue;
        };
        let mut over = Vec::new();
        if count > capacity.max_workspaces {
            over.push(format!(
                "{count} workspaces of at most {}",
                capacity.max_workspaces
            ));
        }
        if cpu > capacity.cpu_millis {
            over.push(format!("{cpu} CPU millis of {}", capacity.cpu_millis));
        }
        if memory > capacity.memory_bytes {
            over.push(format!(
                "{memory} bytes of memory of {}",
                capacity.memory_bytes
            ));
        }
        if !over.is_empty() {
            found.push(violation(
                Rule::HostOverLimit,
                None,
                format!("host {host} holds {}", over.join(", ")),
            ));
        }
    }
    found
}

/// Checks the end of a campaign: `history` (which holds the final reads), the final state they
/// read, and `containers`, which hosts actually hold a container of each workspace (after
/// healing and once the agents have caught up: a runner polls this until it passes or its
/// patience ends).
pub fn check_final(
    history: &History,
    final_state: &FinalState,
    containers: &BTreeMap<WorkspaceName, Vec<HostId>>,
) -> Vec<InvariantViolation> {
    let mut found = Vec::new();
    let Some(listed) = &final_state.listed else {
        return vec![InvariantViolation {
            rule: Rule::FinalStateUnread,
            name: None,
            ops: final_state.ops.clone(),
            detail: "no final list was answered".into(),
        }];
    };
    let list_op = final_state.ops.iter().rev().copied().find(|id| {
        history
            .op(*id)
            .is_some_and(|op| op.kind() == OpKind::List && op.outcome.is_ok())
    });
    let list_ops: Vec<OpId> = list_op.into_iter().collect();
    let mut by_name: BTreeMap<&WorkspaceName, Vec<&WorkspaceView>> = BTreeMap::new();
    for view in listed {
        by_name.entry(&view.name).or_default().push(view);
    }
    let names: BTreeSet<&WorkspaceName> = final_state
        .reads
        .keys()
        .chain(history.ops.iter().filter_map(Op::name))
        .chain(by_name.keys().copied())
        .chain(containers.keys())
        .collect();
    for name in names {
        let ops: Vec<&Op> = history.on(name).collect();
        let views = by_name.get(name).map_or(&[][..], Vec::as_slice);
        let read = final_state.reads.get(name).cloned().flatten();
        if final_state.reads.contains_key(name) && read.is_none() {
            found.push(InvariantViolation {
                rule: Rule::FinalStateUnread,
                name: Some(name.clone()),
                ops: list_ops.clone(),
                detail: format!("workspace {name} was never answered after healing"),
            });
        }
        if views.len() > 1 {
            found.push(InvariantViolation {
                rule: Rule::NameListedTwice,
                name: Some(name.clone()),
                ops: list_ops.clone(),
                detail: format!("workspace {name} is listed {} times", views.len()),
            });
        }
        // Every acknowledged create not destroyed since exists.
        if let Some(create) = ops
            .iter()
            .rfind(|op| op.kind() == OpKind::Create && op.outcome.is_ok())
        {
            let destroys: Vec<&&Op> = ops
                .iter()
                .filter(|op| op.kind() == OpKind::Destroy && may_have_happened(op))
                .filter(|op| completes_after(op, create.invoked))
                .collect();
            if destroys.is_empty() && views.is_empty() {
                found.push(InvariantViolation {
                    rule: Rule::AcknowledgedCreateLost,
                    name: Some(name.clone()),
                    ops: [create.id].into_iter().chain(list_ops.clone()).collect(),
                    detail: format!(
                        "workspace {name} was created (acknowledged) and never destroyed, and is gone"
                    ),
                });
            }
        }
        // No workspace exists whose every create was refused.
        let exists = !views.is_empty();
        let creates: Vec<&&Op> = ops
            .iter()
            .filter(|op| op.kind() == OpKind::Create)
            .collect();
        if exists && !creates.iter().any(|op| may_have_happened(op)) {
            found.push(InvariantViolation {
                rule: Rule::RefusedCreateExists,
                name: Some(name.clone()),
                ops: creates
                    .iter()
                    .map(|op| op.id)
                    .chain(list_ops.clone())
                    .collect(),
                detail: format!("workspace {name} exists, but every create of it was refused"),
            });
        }
        // Where it runs.
        let held: &[HostId] = containers.get(name).map_or(&[], Vec::as_slice);
        match views.first() {
            None if !held.is_empty() => found.push(InvariantViolation {
                rule: Rule::ContainerOfGoneWorkspace,
                name: Some(name.clone()),
                ops: list_ops.clone(),
                detail: format!("workspace {name} is gone, but hosts {held:?} hold its container"),
            }),
            None => {}
            Some(view) => {
                let own = view.host.as_ref();
                let elsewhere = held.iter().any(|h| Some(h) != own);
                let wanted_running = read == Some(Observed::Present(Run::Running))
                    && view.state != WorkspaceState::Destroying;
                let on_one = held.len() == 1 && own == held.first();
                if (wanted_running && !on_one) || elsewhere || held.len() > 1 {
                    found.push(InvariantViolation {
                        rule: Rule::NotOnOneHost,
                        name: Some(name.clone()),
                        ops: list_ops.clone(),
                        detail: format!(
                            "workspace {name} ({}, placed on {}) has containers on {held:?}",
                            view.state,
                            own.map_or("no host", HostId::as_str)
                        ),
                    });
                }
            }
        }
    }
    found
}

/// Whether `op` may have taken effect: acknowledged, or unknown.
fn may_have_happened(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok(_) | Outcome::Unknown(..))
}

/// Whether `op` may have taken effect after `at` (an unknown one completes at infinity).
fn completes_after(op: &Op, at: std::time::Duration) -> bool {
    match (&op.outcome, op.completed) {
        (Outcome::Unknown(..), _) | (_, None) => true,
        (_, Some(completed)) => completed > at,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::UserName;
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::error::ErrorCode;
    use nexus_protocol::model::{PortBinding, ResourceClass};

    use super::*;
    use crate::chaos::history::{Call, FinalState};

    fn name(text: &str) -> WorkspaceName {
        text.parse().unwrap()
    }

    fn host(text: &str) -> HostId {
        text.parse().unwrap()
    }

    fn capacity(id: &str, max: u32, cpus: u64) -> HostCapacity {
        HostCapacity {
            host: host(id),
            max_workspaces: max,
            cpu_millis: cpus * 1000,
            memory_bytes: 64 << 30,
            ports: PortRange {
                first: 20_000,
                last: 20_099,
            },
        }
    }

    fn view(workspace: &str, on: &str, port: u16) -> WorkspaceView {
        WorkspaceView {
            name: name(workspace),
            owner: UserName::new("chaos").unwrap(),
            state: WorkspaceState::Running,
            host: Some(host(on)),
            image: "dev:latest".into(),
            class: ResourceClass::Small,
            ports: vec![PortBinding {
                container: 8080,
                host: port,
            }],
            created_at: Timestamp(0),
        }
    }

    fn op(client: usize, call: Call, from: u64, to: u64, outcome: Outcome) -> Op {
        Op {
            id: OpId(0),
            client,
            call,
            invoked: Duration::from_secs(from),
            completed: Some(Duration::from_secs(to)),
            outcome,
        }
    }

    fn rules(found: &[InvariantViolation]) -> Vec<Rule> {
        found.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_snapshot_within_limits_passes_and_each_excess_is_named() {
        let hosts = [capacity("a", 2, 1), capacity("b", 5, 8)];
        let good = [
            view("w1", "a", 20_000),
            view("w2", "a", 20_001),
            view("w3", "b", 20_000),
        ];
        assert_eq!(check_snapshot(OpId(7), &good, &hosts), []);
        let bad = [
            view("w1", "a", 20_000),
            view("w2", "a", 20_000),
            view("w3", "a", 20_500),
            view("w4", "c", 20_000),
        ];
        let found = check_snapshot(OpId(7), &bad, &hosts);
        assert_eq!(
            rules(&found),
            [
                Rule::PortGivenTwice,
                Rule::PortOutOfRange,
                Rule::UnknownHost,
                Rule::HostOverLimit
            ],
            "{found:?}"
        );
        assert!(
            found[3].detail.contains("3 workspaces of at most 2"),
            "{}",
            found[3]
        );
        assert!(
            found[3].detail.contains("1500 CPU millis of 1000"),
            "{}",
            found[3]
        );
        assert_eq!(found[0].ops, [OpId(7)]);
        // Found in a history's lists too.
        let history = History::from_ops(vec![op(
            0,
            Call::List,
            0,
            1,
            Outcome::Ok(Observed::Listed(bad.to_vec())),
        )]);
        assert_eq!(check_snapshots(&history, &hosts).len(), 4);
    }

    fn final_state(listed: Vec<WorkspaceView>, reads: &[(&str, Observed)]) -> FinalState {
        FinalState {
            reads: reads
                .iter()
                .map(|(n, o)| (name(n), Some(o.clone())))
                .collect(),
            listed: Some(listed),
            ops: vec![],
        }
    }

    const RUNNING: Observed = Observed::Present(Run::Running);

    #[test]
    fn the_end_state_must_keep_acknowledged_creates_and_no_refused_ones() {
        let history = History::from_ops(vec![
            op(
                0,
                Call::Create(name("kept")),
                0,
                1,
                Outcome::Ok(Observed::Done),
            ),
            op(
                0,
                Call::Create(name("lost")),
                2,
                3,
                Outcome::Ok(Observed::Done),
            ),
            op(
                1,
                Call::Create(name("refused")),
                4,
                5,
                Outcome::Failed(ErrorCode::ResourceExhausted),
            ),
            op(
                1,
                Call::Create(name("gone")),
                6,
                7,
                Outcome::Ok(Observed::Done),
            ),
            op(
                1,
                Call::Destroy(name("gone")),
                8,
                9,
                Outcome::Unknown(ErrorCode::Timeout, "t".into()),
            ),
        ]);
        let containers: BTreeMap<WorkspaceName, Vec<HostId>> = [
            (name("kept"), vec![host("a")]),
            (name("refused"), vec![host("a")]),
        ]
        .into_iter()
        .collect();
        let end = final_state(
            vec![view("kept", "a", 20_000), view("refused", "a", 20_001)],
            &[
                ("kept", RUNNING),
                ("lost", Observed::Absent),
                ("refused", RUNNING),
                ("gone", Observed::Absent),
            ],
        );
        let found = check_final(&history, &end, &containers);
        assert_eq!(
            rules(&found),
            [Rule::AcknowledgedCreateLost, Rule::RefusedCreateExists],
            "{found:?}"
        );
        assert_eq!(found[0].ops, [OpId(1)]);
        assert_eq!(found[1].ops, [OpId(2)]);
    }

    #[test]
    fn every_workspace_wanted_running_runs_on_exactly_its_own_host() {
        let history = History::from_ops(vec![
            op(
                0,
                Call::Create(name("one")),
                0,
                1,
                Outcome::Ok(Observed::Done),
            ),
            op(
                0,
                Call::Create(name("two")),
                0,
                1,
                Outcome::Ok(Observed::Done),
            ),
            op(
                0,
                Call::Create(name("none")),
                0,
                1,
                Outcome::Ok(Observed::Done),
            ),
            op(
                0,
                Call::Create(name("stopped")),
                0,
                1,
                Outcome::Ok(Observed::Done),
            ),
        ]);
        let end = final_state(
            vec![
                view("one", "a", 20_000),
                view("two", "a", 20_001),
                view("none", "a", 20_002),
                view("stopped", "a", 20_003),
            ],
            &[
                ("one", RUNNING),
                ("two", RUNNING),
                ("none", RUNNING),
                ("stopped", Observed::Present(Run::Stopped)),
            ],
        );
        let mut containers: BTreeMap<WorkspaceName, Vec<HostId>> = [
            (name("one"), vec![host("a")]),
            (name("two"), vec![host("a"), host("b")]),
        ]
        .into_iter()
        .collect();
        let found = check_final(&history, &end, &containers);
        let named: Vec<String> = found.iter().map(|v| v.detail.clone()).collect();
        assert_eq!(
            rules(&found),
            [Rule::NotOnOneHost, Rule::NotOnOneHost],
            "{named:?}"
        );
        assert!(named[0].starts_with("workspace none "), "{named:?}");
        assert!(named[1].starts_with("workspace two "), "{named:?}");
        // A container left of a workspace that is gone.
        containers.insert(name("ghost"), vec![host("b")]);
        let found = check_final(&history, &end, &containers);
        assert!(
            rules(&found).contains(&Rule::ContainerOfGoneWorkspace),
            "{found:?}"
        );
        // Nothing read at all.
        let unread = FinalState::default();
        assert_eq!(
            rules(&check_final(&history, &unread, &containers)),
            [Rule::FinalStateUnread]
        );
    }
}
