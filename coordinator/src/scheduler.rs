//! The scheduler: where a new workspace goes. Pure: the leader's view of the fleet (the
//! replicated [`State`] and the operations in flight per host) and one request in, a placement
//! or a refusal out.
//!
//! **Filter.** A host qualifies when [`State::unfit`] finds nothing against it (ready, below its
//! workspace limit, CPU and memory within capacity × overcommit, enough free ports), it carries
//! every label the workspace asks for, and it has fewer operations in flight than its limit.
//! **Score.** Bin-pack (the default, as Nomad): the host that is fullest after the placement,
//! so whole hosts stay free; spread: the emptiest. Fullness is the larger of the CPU and memory
//! shares promised, in parts per million. **Ties** go to the smaller host id, so every replica
//! and every run choose alike. A pinned request (`spec.host`) considers only that host.
//! **Ports** are the lowest free ones of the host's range.
//!
//! `apply` checks the placement again ([`State::unfit`] and the port table), so two placements
//! chosen from the same view can never overfill a host together: the second is refused.

use std::collections::BTreeMap;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::model::{PortBinding, WorkspaceSpec};
use nexus_protocol::{HostId, WorkspaceName};

pub use nexus_protocol::model::Scoring;

pub use crate::fit::is_in_flight;

use crate::state::{State, Unfit};

/// Where a workspace goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub host: HostId,
    pub ports: Vec<PortBinding>,
}

/// Why a host was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    Unfit(Unfit),
    /// A label the workspace asks for that the host lacks (or has with another value).
    Label {
        key: String,
        wanted: String,
    },
    /// Too many operations under way on the host.
    Busy {
        max: u32,
    },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::Unfit(unfit) => unfit.fmt(f),
            Skipped::Label { key, wanted } => write!(f, "no label {key}={wanted}"),
            Skipped::Busy { max } => write!(f, "{max} operations already under way"),
        }
    }
}

/// Operations under way per host, as the replicated state shows them, counted for a host when
/// first asked (from that host's own workspaces) and kept for one batch of placements, which
/// adds its own.
#[derive(Debug, Default)]
pub struct InFlight(BTreeMap<HostId, u32>);

impl InFlight {
    pub fn on(&mut self, state: &State, host: &HostId) -> u32 {
        *self
            .0
            .entry(host.clone())
            .or_insert_with(|| state.in_flight_on(host))
    }

    /// One more on `host`, placed since it was counted.
    pub fn add(&mut self, host: &HostId) {
        if let Some(count) = self.0.get_mut(host) {
            *count += 1;
        }
    }
}

/// Why `host` cannot take `spec` now, if it cannot.
pub fn skip_reason(
    state: &State,
    in_flight: &mut InFlight,
    host: &HostId,
    spec: &WorkspaceSpec,
    now: Timestamp,
) -> Option<Skipped> {
    let ports = u32::try_from(spec.ports.len()).unwrap_or(u32::MAX);
    if let Some(unfit) = state.unfit(host, spec.class, ports, now) {
        return Some(Skipped::Unfit(unfit));
    }
    let labels = &state.hosts().get(host)?.info.labels;
    for (key, wanted) in &spec.labels {
        if labels.get(key) != Some(wanted) {
            return Some(Skipped::Label {
                key: key.clone(),
                wanted: wanted.clone(),
            });
        }
    }
    let max = state.limits_for(host).max_concurrent_ops_per_host;
    if in_flight.on(state, host) >= max {
        return Some(Skipped::Busy { max });
    }
    None
}

/// How full `host` would be with `spec` on it: the larger of its CPU and memory shares, in parts
/// per million of its capacity.
fn fullness_after(state: &State, host: &HostId, spec: &WorkspaceSpec) -> u64 {
    let (cpu, memory) = state.reserved_on(host);
    let wanted = spec.class.resources();
    let (cpu_capacity, memory_capacity) = state.capacity_of(host);
    let (cpu_capacity, memory_capacity) = (cpu_capacity.max(1), memory_capacity.max(1));
    let share = |used: u64, capacity: u64| {
        u64::try_from(u128::from(used) * 1_000_000 / u128::from(capacity)).unwrap_or(u64::MAX)
    };
    share(cpu + u64::from(wanted.cpu_millis), cpu_capacity)
        .max(share(memory + wanted.memory_bytes, memory_capacity))
}

/// The lowest free host ports of `host`'s range, one per container port of `spec` (skipping
/// ports found held by something else).
fn free_ports(
    state: &State,
    host: &HostId,
    spec: &WorkspaceSpec,
    now: Timestamp,
) -> Option<Vec<PortBinding>> {
    let range = state.hosts().get(host)?.info.port_range;
    let mut free = (range.first..=range.last).filter(|port| state.port_free(host, *port, now));
    spec.ports
        .iter()
        .map(|p| {
            free.next().map(|host_port| PortBinding {
                container: p.container,
                host: host_port,
            })
        })
        .collect()
}

/// A fleet of up to this many hosts is searched whole for the best host.
pub const SEARCH_ALL_UP_TO: usize = 64;

/// A refusal names what stopped at most this many hosts, and counts the rest.
const MAX_REASONS: usize = 8;

/// How many fitting hosts are scored before the best of them is taken: all of them in a fleet of
/// up to [`SEARCH_ALL_UP_TO`] hosts, otherwise about log2 of the fleet's size. This is Nomad's
/// answer to the same problem (its limit iterator scores log2(n) feasible nodes for a service
/// job): checking every host for every create makes placement O(hosts) and a million creates on
/// 20,000 hosts impossible, while the best of a dozen fitting hosts packs nearly as well.
fn options_wanted(hosts: usize) -> usize {
    if hosts <= SEARCH_ALL_UP_TO {
        hosts
    } else {
        usize::try_from(hosts.ilog2()).unwrap_or(usize::MAX) + 1
    }
}

/// The order hosts are considered in: id order in a small fleet; in a large one, id order
/// starting at a host chosen by the workspace's name (FNV-1a, the same on every replica and
/// every version), so that creates arriving together look at different hosts first instead of
/// all queueing for the same one.
fn visiting_order<'a>(
    hosts: &'a [HostId],
    name: &WorkspaceName,
) -> std::iter::Chain<std::slice::Iter<'a, HostId>, std::slice::Iter<'a, HostId>> {
    let start = if hosts.len() <= SEARCH_ALL_UP_TO {
        0
    } else {
        let hash = name
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        usize::try_from(hash % hosts.len() as u64).unwrap_or(0)
    };
    hosts[start..].iter().chain(&hosts[..start])
}

/// Places `spec` on the fleet, or refuses with `RESOURCE_EXHAUSTED` naming, per host, what
/// stopped it (`INVALID_ARGUMENT` for a pin to an unknown host, or more ports than a workspace
/// may have anywhere).
pub fn place(
    state: &State,
    in_flight: &mut InFlight,
    spec: &WorkspaceSpec,
    strategy: Scoring,
    now: Timestamp,
) -> Result<Placement, WireError> {
    let (candidates, enough) = match &spec.host {
        Some(pinned) => {
            if !state.hosts().contains_key(pinned) {
                return Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("no host {pinned}; `nexus admin hosts` lists them"),
                ));
            }
            (std::slice::from_ref(pinned).iter().chain(&[]), 1)
        }
        // Past this many fitting hosts the best of them is taken (see `options_wanted`).
        None => (
            visiting_order(state.host_ids(), &spec.name),
            options_wanted(state.host_ids().len()),
        ),
    };
    let mut options = 0usize;
    let wanted = u32::try_from(spec.ports.len()).unwrap_or(u32::MAX);
    let mut skipped = Vec::new();
    let mut more_skipped = 0usize;
    let mut skip = |reason: String| {
        if skipped.len() < MAX_REASONS {
            skipped.push(reason);
        } else {
            more_skipped += 1;
        }
    };
    let mut too_many_ports_everywhere = true;
    let mut best: Option<(u64, &HostId)> = None;
    for host in candidates {
        if options >= enough {
            break;
        }
        let max_ports = state.limits_for(host).max_ports_per_workspace;
        if wanted > max_ports {
            skip(format!("{host}: {wanted} ports asked, at most {max_ports}"));
            continue;
        }
        too_many_ports_everywhere = false;
        if let Some(reason) = skip_reason(state, in_flight, host, spec, now) {
            skip(format!("{host}: {reason}"));
            continue;
        }
        options += 1;
        let fullness = fullness_after(state, host, spec);
        // Bin-pack wants the largest fullness, spread the smallest; ties keep the first host
        // (hosts come in id order).
        let better = match (best, strategy) {
            (None, _) => true,
            (Some((score, _)), Scoring::BinPack) => fullness > score,
            (Some((score, _)), Scoring::Spread) => fullness < score,
        };
        if better {
            best = Some((fullness, host));
        }
    }
    let Some((_, host)) = best else {
        let code = if too_many_ports_everywhere && !skipped.is_empty() {
            ErrorCode::InvalidArgument
        } else {
            ErrorCode::ResourceExhausted
        };
        let reasons = if skipped.is_empty() {
            "no host has registered".to_string()
        } else if more_skipped > 0 {
            format!("{}; and {more_skipped} more hosts", skipped.join("; "))
        } else {
            skipped.join("; ")
        };
        return Err(WireError::new(
            code,
            format!("no host can take workspace {}: {reasons}", spec.name),
        ));
    };
    let ports = free_ports(state, host, spec, now).ok_or_else(|| {
        WireError::new(
            ErrorCode::Internal,
            format!("host {host} fit but has no free ports"),
        )
    })?;
    Ok(Placement {
        host: host.clone(),
        ports,
    })
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::identity::{Identity, Role};
    use nexus_protocol::model::{
        HostInfo, HostStatus, Labels, PortRange, PortSpec, ResourceClass, WorkspaceState,
    };
    use nexus_protocol::{RequestId, UserName, WorkspaceName};
    use proptest::prelude::*;

    use super::*;
    use std::collections::BTreeSet;

    use crate::state::{Command, LimitsPatch, Outcome, PlaceRequest, Proposal};

    fn host(
        id: &str,
        cpus: u32,
        memory_gib: u64,
        ports: (u16, u16),
        labels: &[(&str, &str)],
    ) -> HostInfo {
        HostInfo {
            host_id: id.parse().unwrap(),
            hostname: id.into(),
            os: "linux".into(),
            cpus,
            memory_bytes: memory_gib << 30,
            disk_bytes: 0,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            port_range: PortRange::new(ports.0, ports.1).unwrap(),
            agent_version: "test".into(),
        }
    }

    fn spec(name: &str, class: ResourceClass, ports: &[u16]) -> WorkspaceSpec {
        WorkspaceSpec {
            name: WorkspaceName::new(name).unwrap(),
            image: "img".into(),
            class,
            ports: ports
                .iter()
                .map(|&container| PortSpec { container })
                .collect(),
            env: Default::default(),
            labels: Default::default(),
            command: vec![],
            host: None,
        }
    }

    struct Fleet {
        state: State,
        next: u128,
    }

    impl Fleet {
        fn new(hosts: Vec<HostInfo>) -> Fleet {
            let mut fleet = Fleet {
                state: State::default(),
                next: 1,
            };
            for info in hosts {
                fleet.apply(Command::RegisterHost(info));
            }
            fleet
        }

        fn apply(&mut self, command: Command) -> Outcome {
            self.next += 1;
            self.state.apply(&Proposal {
                request_id: RequestId::from_u128(self.next),
                at: Timestamp(1_000),
                proposer: Identity::User {
                    name: UserName::new("admin").unwrap(),
                    role: Role::Admin,
                },
                command,
            })
        }

        /// Places and commits, as the leader does (one create in a batch, scheduled at apply);
        /// answers the host, or the refusal's code.
        fn create(&mut self, spec: WorkspaceSpec, strategy: Scoring) -> Result<String, ErrorCode> {
            let name = spec.name.clone();
            let ids = self.create_all(vec![(spec, strategy)]);
            match self.state.outcome_of(ids[0]) {
                Some(Outcome::Applied) => Ok(self.state.workspaces()[&name].host.to_string()),
                Some(Outcome::Rejected(error)) => Err(error.code),
                None => panic!("no outcome journaled"),
            }
        }

        /// Many creates in one batch; answers their request ids.
        fn create_all(&mut self, creates: Vec<(WorkspaceSpec, Scoring)>) -> Vec<RequestId> {
            let requests: Vec<PlaceRequest> = creates
                .into_iter()
                .map(|(spec, strategy)| {
                    self.next += 1;
                    PlaceRequest {
                        request_id: RequestId::from_u128(self.next),
                        owner: UserName::new("ada").unwrap(),
                        spec,
                        scoring: Some(strategy),
                    }
                })
                .collect();
            let ids = requests.iter().map(|r| r.request_id).collect();
            assert_eq!(
                self.apply(Command::PlaceWorkspaces(requests)),
                Outcome::Applied
            );
            ids
        }
    }

    #[test]
    fn a_port_held_by_a_foreign_process_counts_as_taken_when_filtering() {
        use ResourceClass::*;
        // Host a has two ports, host b ten; bin-packing prefers the fuller a.
        let mut fleet = Fleet::new(vec![
            host("a", 8, 64, (20000, 20001), &[]),
            host("b", 8, 64, (20000, 20009), &[]),
        ]);
        assert_eq!(
            fleet.create(spec("w1", Small, &[80]), Scoring::BinPack),
            Ok("a".into())
        );
        // w1's port 20000 turns out to be held by something else: w1 moves to 20001, and
        // 20000 is remembered as foreign, so a has no free port left.
        let conflict = nexus_protocol::message::ObservedWorkspace {
            name: "w1".parse().unwrap(),
            generation: 1,
            state: WorkspaceState::Failed,
            ports: vec![],
            error: Some(
                WireError::new(ErrorCode::PortConflict, "taken")
                    .with_detail(nexus_protocol::error::ErrorDetail::PortConflict { port: 20000 }),
            ),
        };
        fleet.apply(Command::RecordObserved {
            host: "a".parse().unwrap(),
            observed: vec![conflict],
        });
        assert_eq!(
            fleet.state.workspaces()[&"w1".parse().unwrap()].ports[0].host,
            20001
        );
        assert_eq!(
            fleet.create(spec("w2", Small, &[80]), Scoring::BinPack),
            Ok("b".into())
        );
    }

    #[test]
    fn one_batch_fills_the_room_there_is_and_refuses_the_rest() {
        use ResourceClass::*;
        // Two hosts of 2 CPUs at 4× overcommit: room for 8 medium workspaces each.
        let mut fleet = Fleet::new(vec![
            host("a", 2, 64, (20000, 20099), &[]),
            host("b", 2, 64, (20000, 20099), &[]),
        ]);
        let creates = (0..20)
            .map(|i| (spec(&format!("w{i}"), Medium, &[3000]), Scoring::BinPack))
            .collect();
        let ids = fleet.create_all(creates);
        let refused: Vec<ErrorCode> = ids
            .iter()
            .filter_map(|id| match fleet.state.outcome_of(*id) {
                Some(Outcome::Rejected(error)) => Some(error.code),
                _ => None,
            })
            .collect();
        assert_eq!(refused, vec![ErrorCode::ResourceExhausted; 4]);
        for host in ["a", "b"] {
            assert_eq!(fleet.state.workspaces_on(&HostId::new(host).unwrap()), 8);
        }
        // Every placed workspace has its own port on its host.
        let mut ports = BTreeSet::new();
        for w in fleet.state.workspaces().values() {
            assert!(ports.insert((w.host.clone(), w.ports[0].host)));
        }
        // A retried request id in a later batch is answered with its first outcome, not run
        // again: the refused stay refused, the placed are not placed twice.
        let before = fleet.state.clone();
        let again: Vec<PlaceRequest> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PlaceRequest {
                request_id: *id,
                owner: UserName::new("ada").unwrap(),
                spec: spec(&format!("retry{i}"), Small, &[]),
                scoring: None,
            })
            .collect();
        fleet.apply(Command::PlaceWorkspaces(again));
        assert_eq!(fleet.state.workspaces(), before.workspaces());
    }

    #[test]
    fn golden_placements() {
        use ResourceClass::*;
        let hosts = || {
            vec![
                host("a", 2, 4, (20000, 20009), &[("zone", "x")]),
                host("b", 4, 8, (20000, 20009), &[("zone", "y"), ("gpu", "yes")]),
                host("c", 2, 4, (20000, 20001), &[("zone", "y")]),
            ]
        };
        // Bin-pack: the first lands on the host it fills most (a small host), and the next join it.
        let mut fleet = Fleet::new(hosts());
        let placed: Vec<_> = (0..4)
            .map(|i| {
                fleet
                    .create(spec(&format!("w{i}"), Medium, &[3000]), Scoring::BinPack)
                    .unwrap()
            })
            .collect();
        assert_eq!(placed, ["a", "a", "a", "a"]);
        // a is at 4 of 8 CPUs' worth, 8 of 16 GiB: a large one still fits there.
        assert_eq!(
            fleet.create(spec("big", Large, &[]), Scoring::BinPack),
            Ok("a".into())
        );
        // Ports are the lowest free ones of the host's range.
        assert_eq!(
            fleet.state.workspaces()[&WorkspaceName::new("w3").unwrap()].ports[0].host,
            20003
        );

        // Spread: the emptiest after placing, ties to the smaller id: b has twice the room, so
        // it takes one, a (tied with c) one, then b again (tied with c, which is half as big).
        let mut fleet = Fleet::new(hosts());
        let placed: Vec<_> = (0..4)
            .map(|i| {
                fleet
                    .create(spec(&format!("w{i}"), Medium, &[]), Scoring::Spread)
                    .unwrap()
            })
            .collect();
        assert_eq!(placed, ["b", "a", "b", "c"]);

        // Labels constrain; a pin decides; too many ports for any host is the caller's mistake.
        let mut fleet = Fleet::new(hosts());
        let mut gpu = spec("g", Small, &[]);
        gpu.labels.insert("gpu".into(), "yes".into());
        assert_eq!(fleet.create(gpu, Scoring::BinPack), Ok("b".into()));
        let mut pinned = spec("p", Small, &[]);
        pinned.host = Some("c".parse().unwrap());
        assert_eq!(fleet.create(pinned, Scoring::BinPack), Ok("c".into()));
        let mut nowhere = spec("n", Small, &[]);
        nowhere.host = Some("zz".parse().unwrap());
        assert_eq!(
            fleet.create(nowhere, Scoring::BinPack),
            Err(ErrorCode::InvalidArgument)
        );
        let eleven: Vec<u16> = (1..=11).collect();
        assert_eq!(
            fleet.create(spec("e", Small, &eleven), Scoring::BinPack),
            Err(ErrorCode::InvalidArgument)
        );
        // c has two ports: a three-port workspace cannot go there, but can elsewhere.
        let mut three = spec("t", Small, &[1, 2, 3]);
        three.labels.insert("zone".into(), "y".into());
        assert_eq!(fleet.create(three, Scoring::BinPack), Ok("b".into()));
    }

    #[test]
    fn a_refusal_names_what_stopped_it_on_each_host() {
        let mut fleet = Fleet::new(vec![
            host("a", 1, 1, (20000, 20009), &[]),
            host("b", 8, 64, (20000, 20009), &[]),
        ]);
        fleet.apply(Command::SetHostStatus {
            host: "b".parse().unwrap(),
            status: HostStatus::Cordoned,
        });
        fleet
            .create(spec("w1", ResourceClass::Large, &[]), Scoring::BinPack)
            .unwrap();
        let error = place(
            &fleet.state,
            &mut InFlight::default(),
            &spec("w2", ResourceClass::Large, &[]),
            Scoring::BinPack,
            Timestamp(1_000),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::ResourceExhausted);
        assert!(
            error.message.contains("a: memory: 4.0 of 4.0 GiB promised"),
            "{}",
            error.message
        );
        assert!(error.message.contains("b: cordoned"), "{}", error.message);
        // Operations in flight count too.
        fleet.apply(Command::SetHostStatus {
            host: "b".parse().unwrap(),
            status: HostStatus::Ready,
        });
        fleet.apply(Command::SetLimits {
            host: None,
            patch: LimitsPatch {
                max_concurrent_ops_per_host: Some(2),
                ..Default::default()
            },
        });
        let mut busy = InFlight(BTreeMap::from([("b".parse().unwrap(), 2)]));
        let error = place(
            &fleet.state,
            &mut busy,
            &spec("w3", ResourceClass::Small, &[]),
            Scoring::BinPack,
            Timestamp(1_000),
        )
        .unwrap_err();
        assert!(
            error.message.contains("b: 2 operations already under way"),
            "{}",
            error.message
        );
    }

    #[test]
    fn workspaces_on_their_way_count_as_operations_in_flight() {
        let mut fleet = Fleet::new(vec![host("a", 4, 8, (20000, 20009), &[])]);
        fleet
            .create(spec("w1", ResourceClass::Small, &[]), Scoring::BinPack)
            .unwrap();
        fleet
            .create(spec("w2", ResourceClass::Small, &[]), Scoring::BinPack)
            .unwrap();
        let a: HostId = "a".parse().unwrap();
        assert_eq!(fleet.state.in_flight_on(&a), 2);
        fleet.apply(Command::RecordObserved {
            host: a.clone(),
            observed: vec![nexus_protocol::message::ObservedWorkspace {
                name: WorkspaceName::new("w1").unwrap(),
                generation: 1,
                state: nexus_protocol::model::WorkspaceState::Running,
                ports: vec![],
                error: None,
            }],
        });
        assert_eq!(fleet.state.in_flight_on(&a), 1);
    }

    /// Whether `host` can take `spec`, worked out here from the tables alone (not with the
    /// state machine's own check), as the property's oracle.
    fn fits(state: &State, host: &HostId, spec: &WorkspaceSpec) -> bool {
        let record = &state.hosts()[host];
        let limits = state.limits_for(host);
        let mine: Vec<_> = state
            .workspaces()
            .values()
            .filter(|w| &w.host == host)
            .collect();
        let cpu: u64 = mine
            .iter()
            .map(|w| u64::from(w.spec.class.resources().cpu_millis))
            .sum();
        let memory: u64 = mine
            .iter()
            .map(|w| w.spec.class.resources().memory_bytes)
            .sum();
        let wanted = spec.class.resources();
        let range = record.info.port_range;
        let taken = state
            .ports()
            .keys()
            .filter(|(h, p)| h == host && range.contains(*p))
            .count();
        record.status == HostStatus::Ready
            && (mine.len() as u32) < limits.max_workspaces_per_host
            && cpu + u64::from(wanted.cpu_millis) <= u64::from(record.info.cpus) * 4000
            && memory + wanted.memory_bytes <= record.info.memory_bytes * 4
            && range.len() as usize - taken >= spec.ports.len()
    }

    fn fleet_strategy() -> impl Strategy<Value = Vec<HostInfo>> {
        proptest::collection::vec((1u32..5, 1u64..9, 0u16..6), 1..5).prop_map(|hosts| {
            hosts
                .into_iter()
                .enumerate()
                .map(|(i, (cpus, gib, ports))| {
                    host(&format!("h{i}"), cpus, gib, (20000, 20000 + ports), &[])
                })
                .collect()
        })
    }

    fn requests() -> impl Strategy<Value = Vec<(ResourceClass, usize)>> {
        proptest::collection::vec(
            (
                proptest::sample::select(ResourceClass::ALL.to_vec()),
                0usize..3,
            ),
            1..60,
        )
    }

    proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the fleet and the requests: every placement is accepted by the state machine
            /// (which checks every limit), and a refusal happens only when no host fits.
            #[test]
            fn placements_never_break_a_limit(hosts in fleet_strategy(), requests in requests(), spread in any::<bool>()) {
                let strategy = if spread { Scoring::Spread } else { Scoring::BinPack };
                let mut fleet = Fleet::new(hosts);
                for (i, (class, ports)) in requests.into_iter().enumerate() {
                    let ports: Vec<u16> = (0..ports).map(|p| 3000 + p as u16).collect();
                    let spec = spec(&format!("w{i}"), class, &ports);
    let fits_somewhere = fleet.state.hosts().keys().any(|h| fits(&fleet.state, h, &spec));
                    match fleet.create(spec, strategy) {
                        Ok(_) => prop_assert!(fits_somewhere),
                        Err(code) => {
                            prop_assert_eq!(code, ErrorCode::ResourceExhausted);
                            prop_assert!(!fits_somewhere, "refused though a host fits");
                        }
                    }
                    fleet.state.check_invariants().map_err(TestCaseError::fail)?;
                }
            }

            /// On identical hosts with identical workspaces: bin-pack fills one host before it
            /// touches the next; spread keeps every host within one workspace of the others.
            #[test]
            fn bin_pack_packs_and_spread_spreads(count in 1usize..6, workspaces in 1usize..40) {
                for strategy in [Scoring::BinPack, Scoring::Spread] {
                    let hosts = (0..count).map(|i| host(&format!("h{i}"), 2, 4, (20000, 20100), &[])).collect();
                    let mut fleet = Fleet::new(hosts);
                    for i in 0..workspaces {
                        let _ = fleet.create(spec(&format!("w{i}"), ResourceClass::Medium, &[]), strategy);
                    }
                    let loads: Vec<u32> = fleet.state.hosts().keys().map(|h| fleet.state.workspaces_on(h)).collect();
                    let max = *loads.iter().max().unwrap();
                    let min = *loads.iter().min().unwrap();
                    match strategy {
                        // Medium: 1 CPU, 2 GiB; a host takes 8 (both CPU and memory, overcommitted 4x).
                        Scoring::BinPack => prop_assert!(loads.iter().filter(|&&l| l > 0 && l < 8).count() <= 1, "{loads:?}"),
                        Scoring::Spread => prop_assert!(max - min <= 1, "{loads:?}"),
                    }
                }
            }
        }
}
