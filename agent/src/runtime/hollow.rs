//! The simulated runtime: containers that exist only in this process's memory, with configurable
//! start and stop latency and a failure rate. The reconciler drives it exactly as it drives
//! Docker, so one process can run thousands of agents for scale tests (as Kubernetes' kubemark
//! does with hollow nodes). Its state is lost when the process ends, like a host that rebooted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::id::random_u64;
use nexus_protocol::model::ContainerStats;
use nexus_protocol::{HostId, WorkspaceName};
use tokio::sync::{Notify, mpsc};

use super::{
    Container, ContainerStatus, CreateSpec, ErrorKind, ExecOutput, ExitDetails, NetworkInfo,
    Runtime, RuntimeError, network_name,
};

/// How the simulation behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HollowConfig {
    pub start_latency: Duration,
    pub stop_latency: Duration,
    /// The chance, 0–1, that a create or a start fails.
    pub failure_rate: f64,
}

impl Default for HollowConfig {
    fn default() -> HollowConfig {
        HollowConfig {
            start_latency: Duration::from_millis(50),
            stop_latency: Duration::from_millis(20),
            failure_rate: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
struct HollowContainer {
    name: String,
    container: Container,
    exit_code: i64,
}

#[derive(Debug)]
pub struct HollowRuntime {
    host: HostId,
    config: HollowConfig,
    containers: Mutex<BTreeMap<String, HollowContainer>>,
    changed: Arc<Notify>,
    /// Starts and stops under way now, and the most there ever were at once.
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts one operation in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HollowRuntime {
    pub fn new(host: HostId, config: HollowConfig) -> HollowRuntime {
        HollowRuntime {
            host,
            config,
            containers: Mutex::new(BTreeMap::new()),
            changed: Arc::new(Notify::new()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    fn begin(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }

    /// The most starts and stops that were ever under way at once.
    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HollowContainer>> {
        // Every change is a single insert, remove or field update.
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn roll_failure(&self, what: &str) -> Result<(), RuntimeError> {
        #[allow(clippy::cast_precision_loss)]
        let roll = random_u64() as f64 / u64::MAX as f64;
        if roll < self.config.failure_rate {
            return Err(RuntimeError::new(
                ErrorKind::Failed,
                format!("simulated failure to {what}"),
            ));
        }
        Ok(())
    }

    fn set_status(&self, id: &str, status: ContainerStatus) -> Result<(), RuntimeError> {
        let mut containers = self.containers();
        let entry = containers.get_mut(id).ok_or_else(|| not_found(id))?;
        entry.container.status = status;
        drop(containers);
        self.changed.notify_one();
        Ok(())
    }

    /// Makes a running container exit on its own with `exit_code`, as a crash would. For tests.
    pub fn crash(&self, workspace: &WorkspaceName, exit_code: i64) -> bool {
        let mut containers = self.containers();
        let Some(entry) = containers
            .values_mut()
            .find(|c| &c.container.workspace == workspace)
        else {
            return false;
        };
        entry.container.status = ContainerStatus::Exited;
        entry.exit_code = exit_code;
        drop(containers);
        self.changed.notify_one();
        true
    }
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::new(ErrorKind::NotFound, format!("no such container {id}"))
}

impl Runtime for HollowRuntime {
    fn name(&self) -> &'static str {
        "hollow"
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        Ok(self
            .containers()
            .values()
            .map(|c| c.container.clone())
            .collect())
    }

    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let name = spec.container_name();
        if let Some(existing) = self.containers().values().find(|c| c.name == name) {
            return Ok(existing.container.id.clone());
        }
        self.roll_failure("create the container")?;
        let id = format!("hollow-{:016x}", random_u64());
        let container = Container {
            id: id.clone(),
            workspace: spec.workspace.clone(),
            generation: spec.generation,
            status: ContainerStatus::Created,
            ports: spec.ports.clone(),
        };
        self.containers().insert(
            id.clone(),
            HollowContainer {
                name,
                container,
                exit_code: 0,
            },
        );
        debug_assert_eq!(spec.host, self.host);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        if !self.containers().contains_key(id) {
            return Err(not_found(id));
        }
        let _counted = self.begin();
        tokio::time::sleep(self.config.start_latency).await;
        self.roll_failure("start the container")?;
        self.set_status(id, ContainerStatus::Running)
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let _counted = self.begin();
        tokio::time::sleep(self.config.stop_latency).await;
        let mut containers = self.containers();
        if let Some(entry) = containers.get_mut(id) {
            if entry.container.status == ContainerStatus::Running {
                entry.exit_code = 143;
            }
            entry.container.status = ContainerStatus::Exited;
        }
        drop(containers);
        self.changed.notify_one();
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.containers().remove(id);
        self.changed.notify_one();
        Ok(())
    }

    async fn remove_network(
        &self,
        _host: &HostId,
        _workspace: &WorkspaceName,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// A simulated network per workspace that has a container, without a subnet.
    async fn networks(&self) -> Result<Vec<NetworkInfo>, RuntimeError> {
        let workspaces: std::collections::BTreeSet<WorkspaceName> = self
            .containers()
            .values()
            .map(|c| c.container.workspace.clone())
            .collect();
        Ok(workspaces
            .into_iter()
            .map(|workspace| NetworkInfo {
                name: network_name(&self.host, &workspace),
                workspace: Some(workspace),
                subnet: None,
            })
            .collect())
    }

    async fn exit_details(&self, id: &str) -> Result<ExitDetails, RuntimeError> {
        let containers = self.containers();
        let entry = containers.get(id).ok_or_else(|| not_found(id))?;
        Ok(ExitDetails {
            exit_code: entry.exit_code,
            oom_killed: false,
            last_lines: vec![format!("hollow container {} exited", entry.name)],
        })
    }

    async fn logs(&self, id: &str, _tail: usize) -> Result<Vec<String>, RuntimeError> {
        let containers = self.containers();
        let entry = containers.get(id).ok_or_else(|| not_found(id))?;
        Ok(vec![format!("hollow container {}", entry.name)])
    }

    async fn follow_logs(
        &self,
        id: &str,
        tail: usize,
        lines: mpsc::Sender<String>,
    ) -> Result<(), RuntimeError> {
        // A hollow container writes one line and nothing more.
        for line in self.logs(id, tail).await? {
            if lines.send(line).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<ExecOutput, RuntimeError> {
        let containers = self.containers();
        let entry = containers.get(id).ok_or_else(|| not_found(id))?;
        if entry.container.status != ContainerStatus::Running {
            return Err(RuntimeError::new(
                ErrorKind::Conflict,
                format!("container {id} is not running"),
            ));
        }
        Ok(ExecOutput {
            exit_code: 0,
            stdout: command.join(" ").into_bytes(),
            stderr: Vec::new(),
        })
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        if !self.containers().contains_key(id) {
            return Err(not_found(id));
        }
        Ok(ContainerStats {
            at: Some(clock::now()),
            ..ContainerStats::default()
        })
    }

    async fn watch_events(&self, wake: Arc<Notify>) {
        loop {
            self.changed.notified().await;
            wake.notify_one();
        }
    }
}
