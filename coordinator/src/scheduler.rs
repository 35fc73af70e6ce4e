//! The scheduler: where a new workspace goes. Pure: a view of the fleet ([`FleetView`]), the
//! operations already under way per host ([`InFlight`]), one workspace's spec and the time in; a
//! placement or a refusal out. It reads no clock, RNG, disk or socket.
//!
//! It runs inside `apply`, on every replica: creates reach the Raft log as one
//! `Command::PlaceWorkspaces` batch, and the state machine schedules each create of the batch
//! here, against the replicated state as the creates before it left it (the state is the
//! [`FleetView`]). So every replica places alike, and two creates can never both take a host's
//! last room. The leader does not schedule; its placer only gathers creates into batches.
//!
//! **Filter.** A host qualifies when the fit rules ([`crate::fit`]) find nothing against it
//! (ready, below its workspace limit, CPU and memory within capacity × overcommit, enough free
//! ports), it carries every label the workspace asks for, and it has fewer operations in flight
//! than its limit. **Score.** Bin-pack (the default, as Nomad): the host that is fullest after
//! the placement, so whole hosts stay free; spread: the emptiest. Fullness is the larger of the
//! CPU and memory shares promised, in parts per million. **Ties** go to the host seen first, so
//! every replica and every run choose alike: hosts are seen in id order, in a fleet of more than
//! [`SEARCH_ALL_UP_TO`] hosts starting at one chosen by the workspace's name, and there only the
//! best of about log2(n) fitting hosts is taken. A view that keeps the hosts below their
//! workspace limit apart ([`FleetView::with_room`]) has only those visited, in the same order:
//! the same host is chosen, without reading every full host of a nearly full fleet. A pinned
//! request (`spec.host`) considers only that host. **Ports** are the lowest free ones of the
//! host's range.
//!
//! Not here: the fit rules (`fit`), the tables the view is read from (`state`), and the batching
//! of creates into log entries (`placer`).

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::model::{PortBinding, WorkspaceSpec};
use nexus_protocol::{HostId, WorkspaceName};

pub use nexus_protocol::model::Scoring;

pub use crate::fit::is_in_flight;
use crate::fit::{HostFacts, Unfit};

/// The scheduler's view of the fleet: the hosts it may consider and what the fit rules need of
/// each. The replicated state implements it; so does the small fleet of this module's tests.
pub trait FleetView {
    /// Every host's id, in order. Each is a host that [`FleetView::host`] knows; one that is
    /// not is passed over.
    fn host_ids(&self) -> &[HostId];

    /// What the fit rules need of `host` (its facts, status, limits and usage), if it is known.
    fn host(&self, host: &HostId) -> Option<HostFacts<'_>>;

    /// Whether `port` on `host` may be handed out at `now`: not allocated, and not recently
    /// found held by something else.
    fn port_free(&self, host: &HostId, port: u16, now: Timestamp) -> bool;

    /// How many operations are under way on `host` (see [`is_in_flight`]).
    fn in_flight_on(&self, host: &HostId) -> u32;

    /// The hosts below their workspace limit, if the view keeps them apart: ids of
    /// [`FleetView::host_ids`] in the same order, and every host not in it one the fit rules
    /// pass over. `None` (the default): every host is visited. Near a full fleet the walk would
    /// visit nearly every host for each create.
    fn with_room(&self) -> Option<&BTreeSet<HostId>> {
        None
    }

    /// How many ports of `host`'s range may be handed out at `now`. The default counts them one
    /// by one; an implementation with an index of allocated ports answers the same faster.
    fn free_ports_on(&self, host: &HostId, now: Timestamp) -> u32 {
        let Some(facts) = self.host(host) else {
            return 0;
        };
        let range = facts.info.port_range;
        let free = (range.first..=range.last)
            .filter(|port| self.port_free(host, *port, now))
            .count();
        u32::try_from(free).unwrap_or(u32::MAX)
    }
}

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

/// Operations under way per host, as the fleet view shows them, counted for a host when first
/// asked (from that host's own workspaces) and kept for one batch of placements, which adds its
/// own.
#[derive(Debug, Default)]
pub struct InFlight(pub(crate) BTreeMap<HostId, u32>);

impl InFlight {
    pub fn on(&mut self, fleet: &impl FleetView, host: &HostId) -> u32 {
        *self
            .0
            .entry(host.clone())
            .or_insert_with(|| fleet.in_flight_on(host))
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
    fleet: &impl FleetView,
    in_flight: &mut InFlight,
    host: &HostId,
    spec: &WorkspaceSpec,
    now: Timestamp,
) -> Option<Skipped> {
    let facts = fleet.host(host)?;
    skip_reason_with(fleet, &facts, in_flight, host, spec, now)
}

/// [`skip_reason`] with `host`'s facts already read.
fn skip_reason_with(
    fleet: &impl FleetView,
    facts: &HostFacts<'_>,
    in_flight: &mut InFlight,
    host: &HostId,
    spec: &WorkspaceSpec,
    now: Timestamp,
) -> Option<Skipped> {
    let ports = u32::try_from(spec.ports.len()).unwrap_or(u32::MAX);
    if let Some(unfit) = facts.unfit(spec.class, ports, || fleet.free_ports_on(host, now)) {
        return Some(Skipped::Unfit(unfit));
    }
    if let Some((key, wanted)) = facts.missing_label(&spec.labels) {
        return Some(Skipped::Label {
            key: key.clone(),
            wanted: wanted.clone(),
        });
    }
    if facts.busy(in_flight.on(fleet, host)) {
        return Some(Skipped::Busy {
            max: facts.limits.max_concurrent_ops_per_host,
        });
    }
    None
}

/// A host passed over, kept as found and told only if no host can take the workspace: most
/// creates find one, and formatting every busy host they passed cost the apply dearly.
enum Passed<'a> {
    TooManyPorts {
        host: &'a HostId,
        wanted: u32,
        max: u32,
    },
    Skipped {
        host: &'a HostId,
        why: Skipped,
    },
}

impl std::fmt::Display for Passed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Passed::TooManyPorts { host, wanted, max } => {
                write!(f, "{host}: {wanted} ports asked, at most {max}")
            }
            Passed::Skipped { host, why } => write!(f, "{host}: {why}"),
        }
    }
}

/// How full the host would be with `spec` on it: the larger of its CPU and memory shares, in
/// parts per million of its capacity.
fn fullness_after(facts: &HostFacts<'_>, spec: &WorkspaceSpec) -> u64 {
    let (cpu, memory) = (facts.usage.cpu_millis, facts.usage.memory_bytes);
    let wanted = spec.class.resources();
    let (cpu_capacity, memory_capacity) = facts.capacity();
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
    fleet: &impl FleetView,
    host: &HostId,
    spec: &WorkspaceSpec,
    now: Timestamp,
) -> Option<Vec<PortBinding>> {
    let range = fleet.host(host)?.info.port_range;
    let mut free = (range.first..=range.last).filter(|port| fleet.port_free(host, *port, now));
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
    let start = first_index(hosts, name);
    hosts[start..].iter().chain(&hosts[..start])
}

/// Where [`visiting_order`] starts.
fn first_index(hosts: &[HostId], name: &WorkspaceName) -> usize {
    if hosts.len() <= SEARCH_ALL_UP_TO {
        0
    } else {
        let hash = nexus_protocol::hash::fnv1a_64(name.as_str().as_bytes());
        usize::try_from(hash % hosts.len() as u64).unwrap_or(0)
    }
}

/// The host [`visiting_order`] considers first, if there is any.
fn first_visited<'a>(hosts: &'a [HostId], name: &WorkspaceName) -> Option<&'a HostId> {
    hosts.get(first_index(hosts, name))
}

/// The best of the first `enough` hosts of `candidates` that can take `spec`, or the refusal
/// naming what stopped each host passed over.
fn choose<'a>(
    fleet: &impl FleetView,
    in_flight: &mut InFlight,
    spec: &WorkspaceSpec,
    strategy: Scoring,
    now: Timestamp,
    candidates: impl IntoIterator<Item = &'a HostId>,
    enough: usize,
) -> Result<&'a HostId, WireError> {
    let mut options = 0usize;
    let wanted = u32::try_from(spec.ports.len()).unwrap_or(u32::MAX);
    let mut skipped: Vec<Passed> = Vec::new();
    let mut more_skipped = 0usize;
    let mut skip = |passed| {
        if skipped.len() < MAX_REASONS {
            skipped.push(passed);
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
        let Some(facts) = fleet.host(host) else {
            continue;
        };
        let max_ports = facts.limits.max_ports_per_workspace;
        if wanted > max_ports {
            skip(Passed::TooManyPorts {
                host,
                wanted,
                max: max_ports,
            });
            continue;
        }
        too_many_ports_everywhere = false;
        if let Some(why) = skip_reason_with(fleet, &facts, in_flight, host, spec, now) {
            skip(Passed::Skipped { host, why });
            continue;
        }
        options += 1;
        let fullness = fullness_after(&facts, spec);
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
        } else {
            let told: Vec<String> = skipped.iter().map(ToString::to_string).collect();
            if more_skipped > 0 {
                format!("{}; and {more_skipped} more hosts", told.join("; "))
            } else {
                told.join("; ")
            }
        };
        return Err(WireError::new(
            code,
            format!("no host can take workspace {}: {reasons}", spec.name),
        ));
    };
    Ok(host)
}

/// Places `spec` on the fleet, or refuses with `RESOURCE_EXHAUSTED` naming, per host, what
/// stopped it (`INVALID_ARGUMENT` for a pin to an unknown host, or more ports than a workspace
/// may have anywhere).
pub fn place(
    fleet: &impl FleetView,
    in_flight: &mut InFlight,
    spec: &WorkspaceSpec,
    strategy: Scoring,
    now: Timestamp,
) -> Result<Placement, WireError> {
    let host = match &spec.host {
        Some(pinned) => {
            if fleet.host(pinned).is_none() {
                return Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("no host {pinned}; `nexus admin hosts` lists them"),
                ));
            }
            choose(fleet, in_flight, spec, strategy, now, [pinned], 1)?
        }
        None => {
            let ids = fleet.host_ids();
            // Past this many fitting hosts the best of them is taken (see `options_wanted`).
            let enough = options_wanted(ids.len());
            // The hosts with room, in the walk's order: the walk passes every other host over
            // (at its workspace limit), so both find the same host. A refusal walks the whole
            // fleet again, to name what stopped each host as it always has.
            let found = match (fleet.with_room(), first_visited(ids, &spec.name)) {
                (Some(room), Some(first)) => {
                    let order = room.range(first..).chain(room.range(..first));
                    choose(fleet, in_flight, spec, strategy, now, order, enough).ok()
                }
                _ => None,
            };
            match found {
                Some(host) => host,
                None => {
                    let order = visiting_order(ids, &spec.name);
                    choose(fleet, in_flight, spec, strategy, now, order, enough)?
                }
            }
        }
    };
    let ports = free_ports(fleet, host, spec, now).ok_or_else(|| {
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
pub(crate) mod tests {
    //! The scheduler over a fleet of plain tables: what it reads, and nothing it does not. The
    //! tests that place through the state machine (a whole `State`) are in `state::placement`.

    use std::collections::{BTreeMap, BTreeSet};

    use nexus_protocol::model::{HostInfo, HostStatus, Limits, PortRange, PortSpec, ResourceClass};

    use super::*;
    use crate::fit::Usage;

    /// One host of the test fleet.
    struct TestHost {
        info: HostInfo,
        status: HostStatus,
        usage: Usage,
        in_flight: u32,
    }

    /// A fleet as plain tables, with the cluster's default limits on every host.
    #[derive(Default)]
    struct TestFleet {
        ids: Vec<HostId>,
        hosts: BTreeMap<HostId, TestHost>,
        limits: Limits,
        taken: BTreeSet<(HostId, u16)>,
    }

    impl TestFleet {
        /// Hosts of `cpus` CPUs, `gib` GiB of memory and ports 20000..=20000 + `ports` - 1.
        fn new(hosts: &[(&str, u32, u64, u16)]) -> TestFleet {
            let mut fleet = TestFleet::default();
            for &(id, cpus, gib, ports) in hosts {
                let host_id = HostId::new(id).unwrap();
                let info = HostInfo {
                    cpus,
                    memory_bytes: gib << 30,
                    port_range: PortRange::new(20000, 20000 + ports - 1).unwrap(),
                    ..nexus_fixtures::host(id)
                };
                let host = TestHost {
                    info,
                    status: HostStatus::Ready,
                    usage: Usage::default(),
                    in_flight: 0,
                };
                fleet.ids.push(host_id.clone());
                fleet.hosts.insert(host_id, host);
            }
            fleet.ids.sort();
            fleet
        }

        fn host_mut(&mut self, id: &str) -> &mut TestHost {
            self.hosts.get_mut(&HostId::new(id).unwrap()).unwrap()
        }

        /// `host` holds one more workspace of `class`.
        fn load(&mut self, host: &HostId, class: ResourceClass) {
            self.hosts.get_mut(host).unwrap().usage.add(class);
        }

        /// Places `spec` with `scoring`: the host's id, or the refusal's code and message.
        fn place(
            &self,
            spec: &WorkspaceSpec,
            scoring: Scoring,
        ) -> Result<String, (ErrorCode, String)> {
            place(self, &mut InFlight::default(), spec, scoring, Timestamp(0))
                .map(|placement| placement.host.to_string())
                .map_err(|error| (error.code, error.message))
        }
    }

    impl FleetView for TestFleet {
        fn host_ids(&self) -> &[HostId] {
            &self.ids
        }

        fn host(&self, host: &HostId) -> Option<HostFacts<'_>> {
            let test = self.hosts.get(host)?;
            Some(HostFacts {
                info: &test.info,
                status: test.status,
                limits: self.limits,
                usage: test.usage,
            })
        }

        fn port_free(&self, host: &HostId, port: u16, _: Timestamp) -> bool {
            !self.taken.contains(&(host.clone(), port))
        }

        fn in_flight_on(&self, host: &HostId) -> u32 {
            self.hosts.get(host).map_or(0, |test| test.in_flight)
        }
    }

    /// A workspace of `class` publishing `ports`; the placement tests of `state` use it too.
    pub(crate) fn spec(name: &str, class: ResourceClass, ports: &[u16]) -> WorkspaceSpec {
        WorkspaceSpec {
            image: "img".into(),
            class,
            ports: nexus_fixtures::ports(ports),
            ..nexus_fixtures::spec(name)
        }
    }

    #[test]
    fn bin_pack_takes_the_fullest_host_spread_the_emptiest_and_ties_the_first() {
        use ResourceClass::*;
        let mut fleet = TestFleet::new(&[("a", 2, 4, 10), ("b", 2, 4, 10), ("c", 4, 8, 10)]);
        let one = spec("w", Medium, &[]);
        // All empty: bin-pack fills a small host, the first of the two; spread the big one.
        assert_eq!(fleet.place(&one, Scoring::BinPack), Ok("a".into()));
        assert_eq!(fleet.place(&one, Scoring::Spread), Ok("c".into()));
        // b holds a workspace: it is the fullest after placing, and no longer the emptiest.
        fleet.host_mut("b").usage.add(Medium);
        assert_eq!(fleet.place(&one, Scoring::BinPack), Ok("b".into()));
        assert_eq!(fleet.place(&one, Scoring::Spread), Ok("c".into()));
    }

    #[test]
    fn a_refusal_names_each_hosts_reason() {
        use ResourceClass::*;
        let mut fleet = TestFleet::new(&[
            ("busy", 8, 64, 10),
            ("down", 8, 64, 10),
            ("full", 8, 64, 10),
            ("small", 1, 64, 10),
            ("unlabelled", 8, 64, 10),
        ]);
        fleet.limits.max_workspaces_per_host = 3;
        fleet.limits.max_concurrent_ops_per_host = 3;
        fleet.host_mut("busy").in_flight = 3;
        fleet.host_mut("down").status = HostStatus::Down;
        for _ in 0..3 {
            fleet.host_mut("full").usage.add(Small);
        }
        fleet.host_mut("small").usage.add(Large);
        fleet.host_mut("small").usage.add(Small);
        for host in ["busy", "down", "full", "small"] {
            fleet
                .host_mut(host)
                .info
                .labels
                .insert("zone".into(), "x".into());
        }
        let mut wanted = spec("w", Large, &[]);
        wanted.labels.insert("zone".into(), "x".into());
        let (code, message) = fleet.place(&wanted, Scoring::BinPack).unwrap_err();
        assert_eq!(code, ErrorCode::ResourceExhausted);
        assert_eq!(
            message,
            "no host can take workspace w: busy: 3 operations already under way; down: down; \
             full: holds its maximum of 3 workspaces; small: CPU: 2.5 of 4.0 cores promised; \
             unlabelled: no label zone=x"
        );
        // Too many ports for every host is the caller's mistake, not a full fleet.
        let eleven: Vec<u16> = (1..=11).collect();
        let (code, _) = fleet
            .place(&spec("e", Small, &eleven), Scoring::BinPack)
            .unwrap_err();
        assert_eq!(code, ErrorCode::InvalidArgument);
        // An empty fleet says so.
        let (code, message) = TestFleet::default()
            .place(&spec("w", Small, &[]), Scoring::BinPack)
            .unwrap_err();
        assert_eq!(code, ErrorCode::ResourceExhausted);
        assert!(message.ends_with("no host has registered"), "{message}");
    }

    #[test]
    fn ports_are_the_lowest_free_ones_and_a_pin_decides() {
        let mut fleet = TestFleet::new(&[("a", 8, 64, 10), ("b", 8, 64, 3)]);
        for port in [20000, 20002] {
            fleet.taken.insert((HostId::new("b").unwrap(), port));
        }
        let mut pinned = spec("w", ResourceClass::Small, &[80]);
        pinned.host = Some(HostId::new("b").unwrap());
        let placement = place(
            &fleet,
            &mut InFlight::default(),
            &pinned,
            Scoring::BinPack,
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(placement.host.as_str(), "b");
        assert_eq!(
            placement.ports,
            [PortBinding {
                container: 80,
                host: 20001
            }]
        );
        // b has one free port: two do not fit, and the pin keeps the workspace from a.
        pinned.ports.push(PortSpec { container: 81 });
        let (code, message) = fleet.place(&pinned, Scoring::BinPack).unwrap_err();
        assert_eq!(code, ErrorCode::ResourceExhausted);
        assert!(message.contains("b: 1 free ports, 2 needed"), "{message}");
        pinned.host = Some(HostId::new("nowhere").unwrap());
        let (code, _) = fleet.place(&pinned, Scoring::BinPack).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn a_large_fleet_scores_about_log2_fitting_hosts_from_where_the_name_points() {
        let ids: Vec<String> = (0..100).map(|i| format!("h{i:03}")).collect();
        let hosts: Vec<_> = ids.iter().map(|id| (id.as_str(), 8, 64, 10)).collect();
        let mut fleet = TestFleet::new(&hosts);
        assert_eq!(options_wanted(100), 7);
        let name = WorkspaceName::new("w").unwrap();
        let order: Vec<HostId> = visiting_order(&fleet.ids, &name).cloned().collect();
        assert_eq!(order.len(), 100);
        assert_ne!(order[0], fleet.ids[0], "this name starts elsewhere");
        // All alike: the first host visited.
        let small = spec("w", ResourceClass::Small, &[]);
        let placed = |fleet: &TestFleet| fleet.place(&small, Scoring::BinPack).unwrap();
        assert_eq!(placed(&fleet), order[0].as_str());
        // The seventh fitting host is scored; the eighth is not.
        fleet.load(&order[7], ResourceClass::Large);
        assert_eq!(placed(&fleet), order[0].as_str());
        fleet.load(&order[6], ResourceClass::Large);
        assert_eq!(placed(&fleet), order[6].as_str());
        // A host that does not fit is not an option: the search goes one further.
        fleet.hosts.get_mut(&order[0]).unwrap().status = HostStatus::Cordoned;
        fleet.load(&order[7], ResourceClass::Large);
        assert_eq!(placed(&fleet), order[7].as_str());
    }

    #[test]
    fn operations_in_flight_are_counted_once_and_then_added_to() {
        let mut fleet = TestFleet::new(&[("a", 8, 64, 10)]);
        fleet.host_mut("a").in_flight = 2;
        let a = HostId::new("a").unwrap();
        let mut in_flight = InFlight::default();
        in_flight.add(&a);
        assert_eq!(
            in_flight.on(&fleet, &a),
            2,
            "not counted yet: nothing to add to"
        );
        in_flight.add(&a);
        fleet.host_mut("a").in_flight = 0;
        assert_eq!(
            in_flight.on(&fleet, &a),
            3,
            "counted once, for the whole batch"
        );
    }
}
