//! The fit rules: whether a host can take one more workspace, and if not, why ([`Unfit`]).
//!
//! The scheduler asks these questions to choose a host, and `apply` asks the same ones again of
//! a placement it is given, so a placement the scheduler chose never fails in `apply` for a
//! reason the scheduler did not see. The rules weigh one host as [`HostFacts`] tell it: its
//! status, the limits in force there, what its workspaces add up to ([`Usage`]), and its CPU and
//! memory times the overcommit. Free ports and operations in flight are counted by the caller,
//! which holds the tables they come from; the rules only say what the counts must be.
//!
//! A leaf: it imports neither the state nor the scheduler, and reads no clock. Not here: which
//! fitting host is best (the scheduler's score), the port table and the journal (the state's).

use nexus_protocol::model::{HostInfo, HostStatus, Labels, Limits, ResourceClass, WorkspaceState};
use serde::{Deserialize, Serialize};

/// Why a host cannot take a workspace. The scheduler and `apply` ask the same question here, so
/// a placement the scheduler chose never fails `apply` for a reason the scheduler did not see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    NotReady(HostStatus),
    Workspaces {
        max: u32,
    },
    Cpu {
        reserved_millis: u64,
        capacity_millis: u64,
    },
    Memory {
        reserved_bytes: u64,
        capacity_bytes: u64,
    },
    Ports {
        free: u32,
        needed: u32,
    },
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const GIB: f64 = (1u64 << 30) as f64;
        match self {
            Unfit::NotReady(status) => write!(f, "{}", format!("{status:?}").to_lowercase()),
            Unfit::Workspaces { max } => write!(f, "holds its maximum of {max} workspaces"),
            Unfit::Cpu {
                reserved_millis,
                capacity_millis,
            } => write!(
                f,
                "CPU: {:.1} of {:.1} cores promised",
                *reserved_millis as f64 / 1000.0,
                *capacity_millis as f64 / 1000.0
            ),
            Unfit::Memory {
                reserved_bytes,
                capacity_bytes,
            } => write!(
                f,
                "memory: {:.1} of {:.1} GiB promised",
                *reserved_bytes as f64 / GIB,
                *capacity_bytes as f64 / GIB
            ),
            Unfit::Ports { free, needed } => write!(f, "{free} free ports, {needed} needed"),
        }
    }
}

/// What one host's workspaces add up to. Part of the replicated state's snapshot (an index the
/// state keeps where workspaces come and go), so its fields are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub workspaces: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Usage {
    /// One more workspace of `class`.
    pub(crate) fn add(&mut self, class: ResourceClass) {
        let r = class.resources();
        self.workspaces += 1;
        self.cpu_millis += u64::from(r.cpu_millis);
        self.memory_bytes += r.memory_bytes;
    }

    /// One workspace of `class` fewer.
    pub(crate) fn remove(&mut self, class: ResourceClass) {
        let r = class.resources();
        self.workspaces = self.workspaces.saturating_sub(1);
        self.cpu_millis = self.cpu_millis.saturating_sub(u64::from(r.cpu_millis));
        self.memory_bytes = self.memory_bytes.saturating_sub(r.memory_bytes);
    }
}

/// One host as the fit rules weigh it.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    /// What its agent registered: CPUs, memory, labels, port range.
    pub info: &'a HostInfo,
    /// What the scheduler goes by: `Down` while the host is silent, else what its admins set.
    pub status: HostStatus,
    /// The limits in force on the host: its overrides over the cluster's.
    pub limits: Limits,
    /// What its workspaces add up to.
    pub usage: Usage,
}

impl HostFacts<'_> {
    /// What the host may be promised: (CPU millis, memory bytes), its own times its overcommit.
    pub fn capacity(&self) -> (u64, u64) {
        let times = |amount: u64, percent: u32| {
            u64::try_from(u128::from(amount) * u128::from(percent) / 100).unwrap_or(u64::MAX)
        };
        (
            times(
                u64::from(self.info.cpus) * 1000,
                self.limits.cpu_overcommit_percent,
            ),
            times(
                self.info.memory_bytes,
                self.limits.memory_overcommit_percent,
            ),
        )
    }

    /// Whether the host can take one more workspace of `class` with `ports` host ports; the
    /// first reason it cannot, if not. `free_ports` counts the host's ports that may be handed
    /// out now; it is asked last, and only when everything else fits, because it is the one
    /// question that walks a table.
    pub fn unfit(
        &self,
        class: ResourceClass,
        ports: u32,
        free_ports: impl FnOnce() -> u32,
    ) -> Option<Unfit> {
        if self.status != HostStatus::Ready {
            return Some(Unfit::NotReady(self.status));
        }
        if self.usage.workspaces >= self.limits.max_workspaces_per_host {
            return Some(Unfit::Workspaces {
                max: self.limits.max_workspaces_per_host,
            });
        }
        let (cpu, memory) = (self.usage.cpu_millis, self.usage.memory_bytes);
        let wanted = class.resources();
        let (cpu_capacity, memory_capacity) = self.capacity();
        if cpu + u64::from(wanted.cpu_millis) > cpu_capacity {
            return Some(Unfit::Cpu {
                reserved_millis: cpu,
                capacity_millis: cpu_capacity,
            });
        }
        if memory + wanted.memory_bytes > memory_capacity {
            return Some(Unfit::Memory {
                reserved_bytes: memory,
                capacity_bytes: memory_capacity,
            });
        }
        let free = free_ports();
        if free < ports {
            return Some(Unfit::Ports {
                free,
                needed: ports,
            });
        }
        None
    }

    /// The first of the `wanted` labels that the host lacks, or has with another value: its key
    /// and the value wanted.
    pub fn missing_label<'w>(&self, wanted: &'w Labels) -> Option<(&'w String, &'w String)> {
        wanted
            .iter()
            .find(|(key, value)| self.info.labels.get(*key) != Some(*value))
    }

    /// Whether `in_flight` operations under way on the host leave it no room for another.
    pub fn busy(&self, in_flight: u32) -> bool {
        in_flight >= self.limits.max_concurrent_ops_per_host
    }
}

/// Whether a workspace in `state` is on its way somewhere (scheduled, starting, stopping, being
/// destroyed) and its agent has not reported it arrived: an operation under way on its host.
pub fn is_in_flight(state: WorkspaceState) -> bool {
    matches!(
        state,
        WorkspaceState::Scheduled
            | WorkspaceState::Starting
            | WorkspaceState::Stopping
            | WorkspaceState::Destroying
    )
}

#[cfg(test)]
mod tests {
    use nexus_protocol::model::PortRange;

    use super::*;

    /// A host of 2 CPUs and 4 GiB, labelled zone=x.
    fn info() -> HostInfo {
        HostInfo {
            memory_bytes: 4 << 30,
            labels: [("zone".to_string(), "x".to_string())].into(),
            port_range: PortRange::new(20000, 20009).unwrap(),
            ..nexus_fixtures::host("h")
        }
    }

    /// `info`'s host, ready, holding workspaces of the `held` classes, under the cluster's
    /// default limits (4× overcommit: 8 cores' and 16 GiB's worth may be promised).
    fn facts<'a>(info: &'a HostInfo, held: &[ResourceClass]) -> HostFacts<'a> {
        let mut usage = Usage::default();
        for class in held {
            usage.add(*class);
        }
        HostFacts {
            info,
            status: HostStatus::Ready,
            limits: Limits::default(),
            usage,
        }
    }

    /// The reason `facts` refuses one more `class` workspace with `ports` ports when
    /// `free_ports` are free, as the refusal reads.
    fn check(facts: &HostFacts<'_>, class: ResourceClass, ports: u32, free_ports: u32) -> String {
        facts
            .unfit(class, ports, || free_ports)
            .map_or("fits".into(), |unfit| unfit.to_string())
    }

    #[test]
    fn capacity_is_the_hosts_own_times_its_overcommit() {
        let info = info();
        let mut host = facts(&info, &[]);
        assert_eq!(host.capacity(), (8_000, 16 << 30));
        host.limits.cpu_overcommit_percent = 150;
        host.limits.memory_overcommit_percent = 100;
        assert_eq!(host.capacity(), (3_000, 4 << 30));
    }

    #[test]
    fn the_first_reason_a_host_cannot_take_a_workspace_is_given() {
        use ResourceClass::*;
        let info = info();
        assert_eq!(check(&facts(&info, &[]), Large, 2, 10), "fits");
        // Ports are counted last, and only when everything else fits.
        let host = facts(&info, &[Large; 4]);
        let unasked = host.unfit(Large, 1, || panic!("ports counted for a full host"));
        assert_eq!(
            unasked.map(|unfit| unfit.to_string()).as_deref(),
            Some("CPU: 8.0 of 8.0 cores promised")
        );
        assert_eq!(
            check(&facts(&info, &[]), Small, 3, 2),
            "2 free ports, 3 needed"
        );
        let mut memory = facts(&info, &[Small; 15]);
        memory.limits.cpu_overcommit_percent = 1_000;
        assert_eq!(
            check(&memory, Medium, 0, 10),
            "memory: 15.0 of 16.0 GiB promised"
        );
        let mut count = facts(&info, &[Small]);
        count.limits.max_workspaces_per_host = 1;
        assert_eq!(
            check(&count, Small, 0, 10),
            "holds its maximum of 1 workspaces"
        );
        count.status = HostStatus::Draining;
        assert_eq!(check(&count, Small, 0, 10), "draining");
    }

    #[test]
    fn labels_and_operations_in_flight() {
        let info = info();
        let host = facts(&info, &[]);
        let wanted: Labels = [("zone".to_string(), "x".to_string())].into();
        assert_eq!(host.missing_label(&wanted), None);
        let wanted: Labels = [
            ("gpu".to_string(), "yes".to_string()),
            ("zone".to_string(), "y".to_string()),
        ]
        .into();
        let (key, value) = host.missing_label(&wanted).unwrap();
        assert_eq!((key.as_str(), value.as_str()), ("gpu", "yes"));
        assert!(!host.busy(19));
        assert!(host.busy(20));
        assert!(is_in_flight(WorkspaceState::Destroying));
        assert!(!is_in_flight(WorkspaceState::Running));
    }
}
