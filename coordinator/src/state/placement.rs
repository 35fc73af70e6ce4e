//! Scheduling at apply: each create of a [`PlaceWorkspaces`] batch is placed by the
//! pure scheduler over the state itself (the state is the scheduler's [`FleetView`]), created,
//! and journaled under its own request id, in the batch's order.
//!
//! The tests here are the scheduler's through the state machine: they build a whole [`State`]
//! and place through `apply`, as the coordinator does. The scheduler's own tests use a small
//! in-test fleet instead.
//!
//! Not here: the scheduler's filter and score (`scheduler`), the fit rules (`fit`), and the
//! creation checks every placement passes (`State::create`).
//!
//! [`PlaceWorkspaces`]: super::Command::PlaceWorkspaces

use std::collections::BTreeSet;

use nexus_protocol::HostId;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};

use super::{Origin, Outcome, PlaceRequest, State, reject};
use crate::fit::HostFacts;
use crate::scheduler::{FleetView, InFlight, place};

impl State {
    /// Schedules and creates each of `requests` in order (see [`super::Command::PlaceWorkspaces`]).
    pub(super) fn place_all(&mut self, at: Timestamp, requests: &[PlaceRequest]) {
        let mut in_flight = InFlight::default();
        for request in requests {
            if self.journal.contains_key(&request.request_id) {
                continue;
            }
            let spec = &request.spec;
            let outcome = if self.workspaces.contains_key(&spec.name) {
                reject(
                    ErrorCode::WorkspaceAlreadyExists,
                    format!("workspace {} already exists", spec.name),
                )
            } else {
                let scoring = request.scoring.unwrap_or(self.cluster_limits().scoring);
                match place(&*self, &mut in_flight, spec, scoring, at) {
                    Ok(placement) => {
                        // Each create is its own request, asked by its owner (the log does not
                        // say whether they are an admin: creates are recorded as a user's).
                        let asker = Identity::User {
                            name: request.owner.clone(),
                            role: Role::User,
                        };
                        let origin = Origin {
                            request_id: request.request_id,
                            at,
                            proposer: &asker,
                        };
                        let outcome = self.create(
                            origin,
                            spec,
                            &request.owner,
                            &placement.host,
                            &placement.ports,
                        );
                        if outcome == Outcome::Applied {
                            in_flight.add(&placement.host);
                        }
                        outcome
                    }
                    Err(error) => Outcome::rejected(error),
                }
            };
            self.remember(request.request_id, at, outcome);
        }
    }
}

/// The scheduler sees the replicated state through its own queries.
impl FleetView for State {
    fn host_ids(&self) -> &[HostId] {
        State::host_ids(self)
    }

    fn with_room(&self) -> Option<&BTreeSet<HostId>> {
        Some(&self.room)
    }

    fn host(&self, host: &HostId) -> Option<HostFacts<'_>> {
        self.facts(host)
    }

    fn port_free(&self, host: &HostId, port: u16, now: Timestamp) -> bool {
        State::port_free(self, host, port, now)
    }

    fn in_flight_on(&self, host: &HostId) -> u32 {
        State::in_flight_on(self, host)
    }

    /// Counted from the port table's entries for `host`, not port by port.
    fn free_ports_on(&self, host: &HostId, now: Timestamp) -> u32 {
        State::free_ports_on(self, host, now)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::error::{ErrorCode, WireError};
    use nexus_protocol::identity::{Identity, Role};
    use nexus_protocol::model::{
        HostInfo, HostStatus, Labels, PortRange, ResourceClass, WorkspaceSpec, WorkspaceState,
    };
    use nexus_protocol::{HostId, RequestId, UserName, WorkspaceName};
    use proptest::prelude::*;

    use crate::fit::HostFacts;
    use crate::scheduler::tests::spec;
    use crate::scheduler::{FleetView, InFlight, Scoring, place};
    use crate::state::{Command, LimitsPatch, Outcome, PlaceRequest, Proposal, State};

    fn host(
        id: &str,
        cpus: u32,
        memory_gib: u64,
        ports: (u16, u16),
        labels: &[(&str, &str)],
    ) -> HostInfo {
        HostInfo {
            cpus,
            memory_bytes: memory_gib << 30,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            port_range: PortRange::new(ports.0, ports.1).unwrap(),
            ..nexus_fixtures::host(id)
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
            fleet.state.workspaces()[&"w1".parse::<nexus_protocol::WorkspaceName>().unwrap()].ports
                [0]
            .host,
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

    /// The state as the scheduler saw it before the index of hosts with room: every host
    /// visited.
    struct WalkAll<'a>(&'a State);

    impl FleetView for WalkAll<'_> {
        fn host_ids(&self) -> &[HostId] {
            FleetView::host_ids(self.0)
        }

        fn host(&self, host: &HostId) -> Option<HostFacts<'_>> {
            FleetView::host(self.0, host)
        }

        fn port_free(&self, host: &HostId, port: u16, now: Timestamp) -> bool {
            FleetView::port_free(self.0, host, port, now)
        }

        fn in_flight_on(&self, host: &HostId) -> u32 {
            FleetView::in_flight_on(self.0, host)
        }

        fn free_ports_on(&self, host: &HostId, now: Timestamp) -> u32 {
            FleetView::free_ports_on(self.0, host, now)
        }
    }

    /// What happens to the fleet between two creates, in [`the_hosts_with_room_place_as_the_whole_walk`].
    #[derive(Debug, Clone)]
    enum Step {
        Create {
            class: ResourceClass,
            ports: u16,
            spread: bool,
        },
        /// The `n`th workspace (of those there are) destroyed and reported gone by its agent.
        Destroy(usize),
        /// The cluster's workspace limit.
        ClusterMax(u32),
        /// The `n`th host's own workspace limit.
        HostMax(usize, u32),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            6 => (proptest::sample::select(ResourceClass::ALL.to_vec()), 0u16..3, any::<bool>())
                .prop_map(|(class, ports, spread)| Step::Create { class, ports, spread }),
            2 => any::<usize>().prop_map(Step::Destroy),
            1 => (1u32..5).prop_map(Step::ClusterMax),
            1 => (any::<usize>(), 1u32..5).prop_map(|(host, max)| Step::HostMax(host, max)),
        ];
        proptest::collection::vec(step, 1..150)
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
                    fleet.state.check_invariants().map_err(|broken| TestCaseError::fail(broken.to_string()))?;
                }
            }

            /// Whatever the fleet's workspaces and limits: a create placed through the index of
            /// hosts with room lands where the walk over every host would put it, and is refused
            /// exactly when the walk refuses; the index stays the hosts' own (`check_invariants`).
            /// Hosts differ in CPUs, memory and ports, so hosts with room are passed over for
            /// other reasons too. Past 64 hosts the walk starts at a host chosen by the
            /// workspace's name.
            #[test]
            fn the_hosts_with_room_place_as_the_whole_walk(hosts in 1usize..90, steps in steps()) {
                let infos = (0..hosts)
                    .map(|i| {
                        let (cpus, gib, ports) = (1 + i as u32 % 4, 2 + i as u64 % 3, i as u16 % 6);
                        host(&format!("h{i:02}"), cpus, gib, (20000, 20000 + ports), &[])
                    })
                    .collect();
                let mut fleet = Fleet::new(infos);
                let now = Timestamp(1_000);
                for (i, step) in steps.into_iter().enumerate() {
                    match step {
                        Step::Create { class, ports, spread } => {
                            let strategy = if spread { Scoring::Spread } else { Scoring::BinPack };
                            let ports: Vec<u16> = (0..ports).map(|p| 3000 + p).collect();
                            let spec = spec(&format!("w{i}"), class, &ports);
                            let indexed = place(&fleet.state, &mut InFlight::default(), &spec, strategy, now);
                            let walked = place(&WalkAll(&fleet.state), &mut InFlight::default(), &spec, strategy, now);
                            prop_assert_eq!(&indexed, &walked);
                            let created = fleet.create(spec, strategy);
                            prop_assert_eq!(created.ok(), indexed.ok().map(|p| p.host.to_string()));
                        }
                        Step::Destroy(n) => {
                            let names: Vec<WorkspaceName> = fleet.state.workspaces().keys().cloned().collect();
                            if names.is_empty() {
                                continue;
                            }
                            let name = names[n % names.len()].clone();
                            let (host, generation) = {
                                let record = &fleet.state.workspaces()[&name];
                                (record.host.clone(), record.generation)
                            };
                            fleet.apply(Command::DestroyWorkspace { name: name.clone() });
                            let gone = nexus_protocol::message::ObservedWorkspace {
                                name,
                                generation,
                                state: WorkspaceState::Gone,
                                ports: vec![],
                                error: None,
                            };
                            fleet.apply(Command::RecordObserved { host, observed: vec![gone] });
                        }
                        Step::ClusterMax(max) => {
                            let patch = LimitsPatch { max_workspaces_per_host: Some(max), ..LimitsPatch::default() };
                            fleet.apply(Command::SetLimits { host: None, patch });
                        }
                        Step::HostMax(n, max) => {
                            let host = fleet.state.host_ids()[n % hosts].clone();
                            let patch = LimitsPatch { max_workspaces_per_host: Some(max), ..LimitsPatch::default() };
                            fleet.apply(Command::SetLimits { host: Some(host), patch });
                        }
                    }
                    fleet.state.check_invariants().map_err(|broken| TestCaseError::fail(broken.to_string()))?;
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
