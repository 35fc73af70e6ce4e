//! The agent's metrics: every handle, registered once by [`Metrics::register`] and cloned (each
//! handle is an `Arc`) into what records them. The names are a contract (`docs/operations.md`):
//! dashboards and alert rules read them.
//!
//! Where each is recorded: the link sets `nexus_agent_connected` and the heartbeat's round trip;
//! the reconciler counts and times the container operations it runs ([`Metrics::begin`]), the
//! engine's errors and the containers by state; the sampler sets the host's gauges; the probes'
//! refresh, just before a scrape, sets the per-workspace series from the last sample and the
//! desired state ([`workspace_series`]), the engine's ping and the ports allocated.

use std::sync::OnceLock;
use std::time::Instant;

use nexus_protocol::message::{DesiredRun, DesiredState};
use nexus_protocol::model::{ContainerStats, HostStats};
use nexus_telemetry::{Counters, Gauge, Gauges, Histograms, Registry};

use crate::runtime::{Container, ContainerStatus, RuntimeError};

/// The operation histogram's upper bounds, in seconds: 1 s is the warm start's target, 15 s a
/// slow cold start; pulls of large images land in the last buckets.
pub const OPERATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
];

/// A container operation the reconciler runs: the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// An image that was missing, pulled before a create.
    Pull,
    /// A container (and its network, when missing) made.
    Create,
    Start,
    Stop,
    Remove,
    /// A destroyed workspace's network removed.
    RemoveNetwork,
    /// How a container that stopped on its own ended, read to report it.
    ReadExit,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Pull => "pull",
            Op::Create => "create",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Remove => "remove",
            Op::RemoveNetwork => "remove_network",
            Op::ReadExit => "read_exit",
        }
    }
}

/// Every container state `nexus_agent_containers` has a series for, 0 or not.
const STATES: [ContainerStatus; 3] = [
    ContainerStatus::Created,
    ContainerStatus::Running,
    ContainerStatus::Exited,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    pub connected: Gauge,
    pub heartbeat_rtt: Gauge,
    operations: Counters<2>,
    operation_duration: Histograms<1>,
    in_flight: Gauge,
    pub engine_up: Gauge,
    engine_errors: Counters<1>,
    containers: Gauges<1>,
    host_cpu: Gauge,
    host_memory_used: Gauge,
    host_memory_total: Gauge,
    /// NaN while the data dir's filesystem is not found: a 0 would read as a full disk, and a
    /// comparison with NaN is false, so no alert fires on it.
    host_disk_free: Gauge,
    workspace_cpu: Gauges<1>,
    workspace_memory: Gauges<1>,
    workspace_memory_limit: Gauges<1>,
    pub ports_allocated: Gauge,
    cert_renewals: Counters<1>,
    /// Identities on the deny list the agent's endpoint enforces.
    pub denied_identities: Gauge,
}

impl Metrics {
    /// Registers every agent metric in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            connected: registry.gauge(
                "nexus_agent_connected",
                "1 while the agent is registered with a coordinator that takes its heartbeats \
                 (the leader), else 0.",
            ),
            heartbeat_rtt: registry.gauge(
                "nexus_agent_heartbeat_rtt_seconds",
                "The round trip to the leader at the last heartbeat it acknowledged: QUIC's \
                 estimate for a quiet heartbeat, measured for one answered.",
            ),
            operations: registry.counters(
                "nexus_agent_operations_total",
                "Container operations the reconciler ran, by operation and outcome (ok, failed).",
                ["op", "outcome"],
            ),
            operation_duration: registry.histograms(
                "nexus_agent_operation_duration_seconds",
                "How long the reconciler's container operations took, failed ones included.",
                ["op"],
                &OPERATION_BUCKETS,
            ),
            in_flight: registry.gauge(
                "nexus_agent_operations_in_flight",
                "Container operations running now.",
            ),
            engine_up: registry.gauge(
                "nexus_agent_engine_up",
                "1 when the container engine answered its last ping, else 0.",
            ),
            engine_errors: registry.counters(
                "nexus_agent_engine_errors_total",
                "Errors the container engine answered the reconciler's calls with, by the error \
                 code the agent reports them under.",
                ["code"],
            ),
            containers: registry.gauges(
                "nexus_agent_containers",
                "This host's workspace containers at the reconciler's last listing, by state.",
                ["state"],
            ),
            host_cpu: registry.gauge(
                "nexus_host_cpu_usage_ratio",
                "The host's CPU use at the last sample, from 0 (idle) to 1 (every CPU busy).",
            ),
            host_memory_used: registry.gauge(
                "nexus_host_memory_used_bytes",
                "The host's memory in use at the last sample.",
            ),
            host_memory_total: registry
                .gauge("nexus_host_memory_total_bytes", "The host's memory."),
            host_disk_free: registry.gauge(
                "nexus_host_disk_free_bytes",
                "Space available on the filesystem of the agent's data dir, at the last sample \
                 (NaN when that filesystem is not found).",
            ),
            workspace_cpu: registry.gauges(
                "nexus_workspace_cpu_usage_ratio",
                "A running workspace's CPU use at the last sample, as a fraction of its CPU limit \
                 (its resource class's CPUs); for a container no assignment names, of all the \
                 host's CPUs.",
                ["workspace"],
            ),
            workspace_memory: registry.gauges(
                "nexus_workspace_memory_bytes",
                "A running workspace's memory in use at the last sample (page cache excluded, \
                 as docker stats shows it).",
                ["workspace"],
            ),
            workspace_memory_limit: registry.gauges(
                "nexus_workspace_memory_limit_bytes",
                "A running workspace's memory limit (0 when unlimited).",
                ["workspace"],
            ),
            ports_allocated: registry.gauge(
                "nexus_ports_allocated",
                "Host ports the desired state gives this host's workspaces (all but those being \
                 destroyed).",
            ),
            cert_renewals: registry.counters(
                "nexus_agent_cert_renewals_total",
                "Renewals of the agent's own certificate, by outcome (ok, failed).",
                ["outcome"],
            ),
            denied_identities: registry.gauge(
                "nexus_agent_denied_identities",
                "Identities on the fleet's deny list, which the agent's endpoint refuses.",
            ),
        };
        for code in RuntimeError::CODES {
            metrics.engine_errors.init([code.as_str()]);
        }
        for state in STATES {
            metrics.containers.set([&state.to_string()], 0.0);
        }
        for outcome in ["ok", "failed"] {
            metrics.cert_renewals.init([outcome]);
        }
        metrics
    }

    /// A renewal of the agent's certificate ended, renewed or not.
    pub fn renewal(&self, renewed: bool) {
        self.cert_renewals
            .inc([if renewed { "ok" } else { "failed" }]);
    }

    /// Handles no registry serves, shared by everything that records without being scraped: the
    /// hollow hosts of a simulated fleet (thousands in one process), and tests.
    pub fn unserved() -> Metrics {
        static UNSERVED: OnceLock<Metrics> = OnceLock::new();
        UNSERVED
            .get_or_init(|| Metrics::register(&mut Registry::new()))
            .clone()
    }

    /// Starts timing `op`, counted in flight until the answer is ended or dropped.
    pub fn begin(&self, op: Op) -> Operation {
        self.in_flight.inc();
        Operation {
            metrics: self.clone(),
            op,
            started: Instant::now(),
        }
    }

    /// Runs `call` as `op`, counted and timed.
    pub async fn time<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        let operation = self.begin(op);
        let result = call.await;
        operation.end(&result);
        result
    }

    /// Counts an error of the engine under the code the agent reports it with.
    pub fn engine_error(&self, error: &RuntimeError) {
        self.engine_errors.inc([error.to_wire().code.as_str()]);
    }

    /// Sets the containers by state from a listing: every state, those with none at 0.
    pub fn containers(&self, listed: &[Container]) {
        for state in STATES {
            let count = listed.iter().filter(|c| c.status == state).count();
            #[allow(clippy::cast_precision_loss)]
            self.containers.set([&state.to_string()], count as f64);
        }
    }

    /// Sets the host's gauges from a sample.
    pub fn host(&self, host: &HostStats) {
        self.host_cpu
            .set((f64::from(host.cpu_percent) / 100.0).clamp(0.0, 1.0));
        #[allow(clippy::cast_precision_loss)]
        {
            self.host_memory_used.set(host.memory_used_bytes as f64);
            self.host_memory_total.set(host.memory_total_bytes as f64);
            self.host_disk_free.set(if host.disk_total_bytes == 0 {
                f64::NAN
            } else {
                host.disk_total_bytes.saturating_sub(host.disk_used_bytes) as f64
            });
        }
    }

    /// Replaces the per-workspace series: a workspace no longer sampled loses its own.
    pub fn workspaces(&self, series: &[WorkspaceSeries]) {
        let names: Vec<(&str, &WorkspaceSeries)> =
            series.iter().map(|s| (s.workspace.as_str(), s)).collect();
        self.workspace_cpu
            .replace(names.iter().map(|(name, s)| ([*name], s.cpu_ratio)));
        self.workspace_memory
            .replace(names.iter().map(|(name, s)| ([*name], s.memory_bytes)));
        self.workspace_memory_limit.replace(
            names
                .iter()
                .map(|(name, s)| ([*name], s.memory_limit_bytes)),
        );
    }
}

/// One operation being timed; see [`Metrics::begin`].
#[derive(Debug)]
pub struct Operation {
    metrics: Metrics,
    op: Op,
    started: Instant,
}

impl Operation {
    /// Counts it with its outcome, its time, and the engine's error if it failed.
    pub fn end<T>(self, result: &Result<T, RuntimeError>) {
        let metrics = &self.metrics;
        let op = self.op.as_str();
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => {
                metrics.engine_error(error);
                "failed"
            }
        };
        metrics.operations.inc([op, outcome]);
        metrics
            .operation_duration
            .observe_duration([op], self.started.elapsed());
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

/// One workspace's series, as exposed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceSeries {
    pub workspace: String,
    pub cpu_ratio: f64,
    pub memory_bytes: f64,
    pub memory_limit_bytes: f64,
}

/// The per-workspace series of a sample. CPU is a fraction of the workspace's limit, which its
/// resource class sets (as the Docker runtime applies it); a container no assignment names is
/// measured against the host's `host_cpus`. The engine reports an unlimited container's memory
/// limit as the host's memory (`host_memory`): that is 0 here.
pub fn workspace_series(
    containers: &[ContainerStats],
    desired: Option<&DesiredState>,
    host_cpus: u32,
    host_memory: u64,
) -> Vec<WorkspaceSeries> {
    containers
        .iter()
        .filter_map(|stats| {
            let workspace = stats.workspace.as_ref()?;
            let cpus = desired
                .into_iter()
                .flat_map(|d| d.assignments.iter())
                .find(|a| &a.spec.name == workspace && a.run != DesiredRun::Absent)
                .map_or(f64::from(host_cpus.max(1)), |a| {
                    f64::from(a.spec.class.resources().cpu_millis) / 1000.0
                });
            let limit = if stats.memory_limit_bytes >= host_memory && host_memory > 0 {
                0
            } else {
                stats.memory_limit_bytes
            };
            #[allow(clippy::cast_precision_loss)]
            Some(WorkspaceSeries {
                workspace: workspace.to_string(),
                cpu_ratio: f64::from(stats.cpu_percent) / 100.0 / cpus,
                memory_bytes: stats.memory_used_bytes as f64,
                memory_limit_bytes: limit as f64,
            })
        })
        .collect()
}

/// Host ports the desired state gives this host's workspaces, but for those being destroyed.
pub fn ports_allocated(desired: Option<&DesiredState>) -> usize {
    desired
        .into_iter()
        .flat_map(|d| d.assignments.iter())
        .filter(|a| a.run != DesiredRun::Absent)
        .map(|a| a.ports.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use nexus_protocol::message::Assignment;
    use nexus_protocol::model::{PortBinding, ResourceClass};
    use nexus_telemetry::metrics::Format;

    use super::*;

    fn assignment(name: &str, class: ResourceClass, run: DesiredRun, ports: u16) -> Assignment {
        Assignment {
            spec: nexus_protocol::model::WorkspaceSpec {
                class,
                ..nexus_fixtures::spec(name)
            },
            owner: "ada".parse().unwrap(),
            generation: 1,
            run,
            ports: (0..ports)
                .map(|i| PortBinding {
                    container: 80 + i,
                    host: 20_000 + i,
                })
                .collect(),
        }
    }

    fn stats(name: &str, cpu_percent: f32, memory: u64, limit: u64) -> ContainerStats {
        ContainerStats {
            workspace: Some(name.parse().unwrap()),
            cpu_percent,
            memory_used_bytes: memory,
            memory_limit_bytes: limit,
            ..ContainerStats::default()
        }
    }

    #[test]
    fn cpu_is_a_fraction_of_the_class_or_else_of_the_host() {
        let desired = DesiredState {
            version: 1,
            assignments: vec![assignment(
                "api",
                ResourceClass::Large,
                DesiredRun::Running,
                0,
            )],
        };
        let large = f64::from(ResourceClass::Large.resources().cpu_millis) / 1000.0;
        let series = workspace_series(
            &[
                stats("api", 100.0, 10, 1 << 30),
                stats("orphan", 200.0, 20, 64 << 30),
            ],
            Some(&desired),
            8,
            64 << 30,
        );
        assert_eq!(
            series,
            vec![
                WorkspaceSeries {
                    workspace: "api".into(),
                    cpu_ratio: 1.0 / large,
                    memory_bytes: 10.0,
                    memory_limit_bytes: f64::from(1u32 << 30),
                },
                // Unlimited: the engine says the host's memory.
                WorkspaceSeries {
                    workspace: "orphan".into(),
                    cpu_ratio: 0.25,
                    memory_bytes: 20.0,
                    memory_limit_bytes: 0.0,
                },
            ]
        );
        // A sample without a workspace (none should be) is left out.
        let unnamed = ContainerStats::default();
        assert!(workspace_series(&[unnamed], None, 2, 1).is_empty());
    }

    #[test]
    fn ports_of_workspaces_being_destroyed_are_not_allocated() {
        let desired = DesiredState {
            version: 1,
            assignments: vec![
                assignment("a", ResourceClass::Small, DesiredRun::Running, 2),
                assignment("b", ResourceClass::Small, DesiredRun::Stopped, 1),
                assignment("c", ResourceClass::Small, DesiredRun::Absent, 3),
            ],
        };
        assert_eq!(ports_allocated(Some(&desired)), 3);
        assert_eq!(ports_allocated(None), 0);
    }

    #[test]
    fn every_state_has_a_series_and_a_gone_workspace_loses_its_own() {
        let mut registry = Registry::new();
        let metrics = Metrics::register(&mut registry);
        let text = registry.encode(Format::Classic);
        for state in ["created", "running", "exited"] {
            assert!(
                text.contains(&format!("nexus_agent_containers{{state=\"{state}\"}} 0.0")),
                "{text}"
            );
        }
        let series = |name: &str| WorkspaceSeries {
            workspace: name.into(),
            cpu_ratio: 0.5,
            memory_bytes: 1.0,
            memory_limit_bytes: 2.0,
        };
        metrics.workspaces(&[series("a"), series("b")]);
        metrics.workspaces(&[series("b")]);
        let text = registry.encode(Format::Classic);
        assert!(!text.contains("workspace=\"a\""), "{text}");
        assert!(
            text.contains("nexus_workspace_memory_limit_bytes{workspace=\"b\"} 2.0"),
            "{text}"
        );
    }

    #[test]
    fn an_operation_counts_its_outcome_time_and_engine_error() {
        let mut registry = Registry::new();
        let metrics = Metrics::register(&mut registry);
        let failed: Result<(), RuntimeError> = Err(RuntimeError::new(
            crate::runtime::ErrorKind::Unavailable,
            "down",
        ));
        let operation = metrics.begin(Op::Start);
        assert!((metrics.in_flight.get() - 1.0).abs() < f64::EPSILON);
        operation.end(&failed);
        metrics.begin(Op::Pull).end(&Ok(()));
        // Dropped without an end (the pass was cancelled): no longer in flight, not counted.
        drop(metrics.begin(Op::Stop));
        assert!(metrics.in_flight.get().abs() < f64::EPSILON);
        assert_eq!(metrics.operations.get(["start", "failed"]), 1);
        assert_eq!(metrics.operations.get(["pull", "ok"]), 1);
        assert_eq!(metrics.operations.get(["stop", "ok"]), 0);
        assert_eq!(metrics.engine_errors.get(["BACKEND_UNAVAILABLE"]), 1);
        let text = registry.encode(Format::Classic);
        assert!(
            text.contains(
                "nexus_agent_operation_duration_seconds_bucket{le=\"1.0\",op=\"start\"} 1"
            ),
            "{text}"
        );
    }
}
