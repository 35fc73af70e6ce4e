//! The simulated runtime: containers that exist only in this process's memory, with configurable
//! start and stop latency and a failure rate. The reconciler drives it exactly as it drives
//! Docker, so one process can run thousands of agents for scale tests (as Kubernetes' kubemark
//! does with hollow nodes). Its state is lost when the process ends, like a host that rebooted.
//! It keeps what an engine would tell of its containers for their health (state, last exit,
//! each published port served while the container runs, unless a test says otherwise) and a
//! bounded record of its events.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::debug::{
    ContainerEvent, ContainerHealth, EngineContainer, EngineInfo, PortProbe,
};
use nexus_protocol::id::random_u64;
use nexus_protocol::model::{ContainerStats, PortBinding};
use nexus_protocol::{HostId, WorkspaceName};
use tokio::sync::{Notify, mpsc};

use super::{
    Container, ContainerStatus, CreateSpec, ErrorKind, ExecOutput, ExitDetails, ImageInfo,
    MAX_EVENTS, NetworkInfo, Runtime, RuntimeError, VolumeInfo, network_name,
};

/// The events a hollow runtime remembers, all workspaces together (an engine's buffer is
/// bounded too).
const REMEMBERED_EVENTS: usize = 1_000;

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
    image: String,
    container: Container,
    exit_code: i64,
    /// Whether it ever stopped (so that its exit code means something).
    exited_once: bool,
}

/// One remembered event: its workspace, and the event.
type Remembered = (WorkspaceName, ContainerEvent);

#[derive(Debug)]
pub struct HollowRuntime {
    host: HostId,
    config: HollowConfig,
    containers: Mutex<BTreeMap<String, HollowContainer>>,
    /// Host ports a test said nothing serves any more.
    unserved: Mutex<BTreeSet<u16>>,
    /// Network bytes each workspace's containers moved, as a test made up ([`HollowRuntime::
    /// add_traffic`]); a container's stats show its workspace's.
    traffic: Mutex<BTreeMap<WorkspaceName, u64>>,
    events: Mutex<VecDeque<Remembered>>,
    changed: Arc<Notify>,
    /// Starts and stops under way now, and the most there ever were at once.
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// A fake engine's images and volumes (host maintenance), as a test sets them.
    images: Mutex<Vec<ImageInfo>>,
    volumes: Mutex<Vec<VolumeInfo>>,
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
            unserved: Mutex::new(BTreeSet::new()),
            traffic: Mutex::new(BTreeMap::new()),
            events: Mutex::new(VecDeque::new()),
            changed: Arc::new(Notify::new()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            images: Mutex::new(Vec::new()),
            volumes: Mutex::new(Vec::new()),
        }
    }

    /// Gives the fake engine these images and volumes (an image's `containers` is counted from
    /// the hollow containers made from it, by id or tag, when it is asked).
    pub fn set_images(&self, images: Vec<ImageInfo>, volumes: Vec<VolumeInfo>) {
        *lock(&self.images) = images;
        *lock(&self.volumes) = volumes;
    }

    /// Simulates `bytes` of traffic on `workspace`'s published ports: its container's network
    /// counters move by that much (received), as the next stats sample shows.
    pub fn add_traffic(&self, workspace: &WorkspaceName, bytes: u64) {
        let mut traffic = self
            .traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counter = traffic.entry(workspace.clone()).or_insert(0);
        *counter = counter.saturating_add(bytes);
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

    /// Remembers that `action` happened to `workspace`'s container `name`.
    fn record(
        &self,
        workspace: &WorkspaceName,
        name: &str,
        action: &str,
        extra: &[(&str, String)],
    ) {
        let mut attributes = vec![("name".to_string(), name.to_string())];
        attributes.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if events.len() == REMEMBERED_EVENTS {
            events.pop_front();
        }
        events.push_back((
            workspace.clone(),
            ContainerEvent {
                at: clock::now(),
                action: action.to_string(),
                attributes,
            },
        ));
    }

    /// Says that nothing serves host port `port` any more (as when the process behind it died),
    /// or that something does again. For tests.
    pub fn serve_port(&self, port: u16, served: bool) {
        let mut unserved = self
            .unserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if served {
            unserved.remove(&port);
        } else {
            unserved.insert(port);
        }
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
        let (workspace, name) = (entry.container.workspace.clone(), entry.name.clone());
        drop(containers);
        if status == ContainerStatus::Running {
            self.record(&workspace, &name, "start", &[]);
        }
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
        entry.exited_once = true;
        let (workspace, name) = (entry.container.workspace.clone(), entry.name.clone());
        drop(containers);
        self.record(
            &workspace,
            &name,
            "die",
            &[("exitCode", exit_code.to_string())],
        );
        self.changed.notify_one();
        true
    }
}

/// A lock whose holder cannot leave it half-changed (each change is one assignment or retain).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.record(
            &spec.workspace,
            &name,
            "create",
            &[("image", spec.image.clone())],
        );
        self.containers().insert(
            id.clone(),
            HollowContainer {
                name,
                image: spec.image.clone(),
                container,
                exit_code: 0,
                exited_once: false,
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
        let mut stopped = None;
        if let Some(entry) = containers.get_mut(id) {
            if entry.container.status == ContainerStatus::Running {
                entry.exit_code = 143;
                entry.exited_once = true;
                stopped = Some((entry.container.workspace.clone(), entry.name.clone()));
            }
            entry.container.status = ContainerStatus::Exited;
        }
        drop(containers);
        if let Some((workspace, name)) = stopped {
            self.record(&workspace, &name, "die", &[("exitCode", "143".into())]);
            self.record(&workspace, &name, "stop", &[]);
        }
        self.changed.notify_one();
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let removed = self.containers().remove(id);
        if let Some(entry) = removed {
            self.record(&entry.container.workspace, &entry.name, "destroy", &[]);
        }
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
        let workspace = self
            .containers()
            .get(id)
            .map(|entry| entry.container.workspace.clone())
            .ok_or_else(|| not_found(id))?;
        let received = self
            .traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&workspace)
            .copied()
            .unwrap_or(0);
        Ok(ContainerStats {
            at: Some(clock::now()),
            network_rx_bytes: received,
            ..ContainerStats::default()
        })
    }

    async fn inspect(&self, id: &str) -> Result<ContainerHealth, RuntimeError> {
        let containers = self.containers();
        let entry = containers.get(id).ok_or_else(|| not_found(id))?;
        let running = entry.container.status == ContainerStatus::Running;
        Ok(ContainerHealth {
            running,
            status: entry.container.status.to_string(),
            restarts: 0,
            exit_code: entry.exited_once.then_some(entry.exit_code),
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            healthcheck: None,
        })
    }

    /// A port is served while its container runs, unless [`HollowRuntime::serve_port`] said
    /// otherwise.
    async fn probe_port(&self, port: PortBinding, _limit: Duration) -> PortProbe {
        let running = self.containers().values().any(|c| {
            c.container.status == ContainerStatus::Running && c.container.ports.contains(&port)
        });
        let unserved = self
            .unserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&port.host);
        let error = if !running {
            Some(format!("no running container publishes port {}", port.host))
        } else if unserved {
            Some(format!(
                "127.0.0.1:{} closed the connection at once: nothing listens behind it",
                port.host
            ))
        } else {
            None
        };
        PortProbe {
            container: port.container,
            host: port.host,
            accepting: error.is_none(),
            error,
        }
    }

    async fn events(
        &self,
        workspace: &WorkspaceName,
        since: Option<Timestamp>,
    ) -> Result<Vec<ContainerEvent>, RuntimeError> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut matching: Vec<ContainerEvent> = events
            .iter()
            .filter(|(w, event)| w == workspace && since.is_none_or(|since| event.at >= since))
            .map(|(_, event)| event.clone())
            .collect();
        let skip = matching.len().saturating_sub(MAX_EVENTS);
        matching.drain(..skip);
        Ok(matching)
    }

    async fn images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let containers = self.containers();
        Ok(lock(&self.images)
            .iter()
            .map(|image| {
                let users = containers
                    .values()
                    .filter(|c| c.image == image.id || image.tags.contains(&c.image))
                    .count() as u64;
                ImageInfo {
                    containers: Some(image.containers.unwrap_or(0) + users),
                    ..image.clone()
                }
            })
            .collect())
    }

    async fn remove_image(&self, id: &str) -> Result<(), RuntimeError> {
        let images = self.images().await?;
        if images
            .iter()
            .any(|i| i.id == id && i.containers.unwrap_or(0) > 0)
        {
            return Err(RuntimeError::new(
                ErrorKind::Conflict,
                format!("image {id} is in use"),
            ));
        }
        lock(&self.images).retain(|i| i.id != id);
        Ok(())
    }

    async fn volumes(&self) -> Result<Vec<VolumeInfo>, RuntimeError> {
        Ok(lock(&self.volumes).clone())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let mut volumes = lock(&self.volumes);
        if volumes
            .iter()
            .any(|v| v.name == name && v.containers.unwrap_or(0) > 0)
        {
            return Err(RuntimeError::new(
                ErrorKind::Conflict,
                format!("volume {name} is in use"),
            ));
        }
        volumes.retain(|v| v.name != name);
        Ok(())
    }

    async fn engine(&self) -> Result<EngineInfo, RuntimeError> {
        let containers = self
            .containers()
            .values()
            .map(|c| EngineContainer {
                name: c.name.clone(),
                image: c.image.clone(),
                state: c.container.status.to_string(),
                workspace: Some(c.container.workspace.clone()),
                generation: Some(c.container.generation),
            })
            .collect();
        Ok(EngineInfo {
            runtime: "hollow".into(),
            version: Some(nexus_protocol::SOFTWARE_VERSION.into()),
            api_version: None,
            os: None,
            arch: None,
            containers,
        })
    }

    async fn watch_events(&self, wake: Arc<Notify>) {
        loop {
            self.changed.notified().await;
            wake.notify_one();
        }
    }
}
