//! The real runtime: the Docker engine through bollard, over its local socket.
//!
//! One network per workspace (a bridge named after host and workspace, or one of a few made ahead:
//! `networks`), containers with an init
//! process (a shell as PID 1 ignores SIGTERM), CPU and memory limits from the resource class,
//! ports published on all interfaces, and images pulled when missing (with progress in the log and
//! optional registry credentials). The translations of the engine's types are in `convert`, the
//! address pool of workspace networks in `pool`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding as DockerPortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{ContainerEvent, ContainerHealth, EngineInfo, PortProbe};
use nexus_protocol::model::{ContainerStats, PortBinding};
use nexus_protocol::{HostId, WorkspaceName};
use tokio::sync::{Notify, mpsc};

mod auth;
mod convert;
mod diagnose;
mod images;
mod networks;
mod pool;

pub use convert::{cpu_percent, split_image};
pub use pool::{NetworkPool, Subnet};

use self::convert::{classify, cpu_sample, describe, lines_of, stats_from, status_from, status_of};
use super::{
    Container, ContainerStatus, CreateSpec, ErrorKind, ExecOutput, ExitDetails, FILES_MOUNT,
    LABEL_HOST, LABEL_WORKSPACE, NetworkInfo, Runtime, RuntimeError, container_from_labels,
    network_name, probe,
};

/// The answer to one API call may take this long before the engine counts as unresponsive.
/// Pulls and stops are given longer (the stop's grace, the pull's progress keeps it alive).
const CALL_TIMEOUT: u64 = 30;

/// The longest line a followed log hands on; longer output without a newline is cut there.
const FOLLOWED_LINE_BYTES: usize = 64 << 10;

/// How long after an event the reconciler is woken a second time.
const EVENT_FOLLOW_UP: Duration = Duration::from_millis(500);

/// Credentials for one registry, e.g. `127.0.0.1:5000`. Its `Debug` never shows the password
/// (the agent's configuration is logged and debugged whole).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The registries' credentials in force, shared with what reloads them (a pull reads them
/// afresh each time).
pub type Registries = std::sync::Arc<std::sync::RwLock<Vec<RegistryAuth>>>;

#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    host: HostId,
    socket: String,
    registries: Registries,
    /// Where a pull asks the coordinators for the credential store's registry credential.
    asker: Option<crate::asker::Asker>,
    /// Where workspace networks get their subnets (`None`: Docker's own address pools).
    network_pool: Option<NetworkPool>,
    /// The networks made ahead of workspaces.
    ready: networks::Ready,
    /// Each container's previous CPU sample (total usage, system usage), for CPU %.
    cpu_samples: Mutex<HashMap<String, (u64, u64)>>,
}

impl DockerRuntime {
    /// Connects to the engine at `socket` (a unix socket path). Does not wait for it to answer: an
    /// engine that is down now is retried by the reconciler.
    pub fn connect(
        host: HostId,
        socket: &str,
        registries: Vec<RegistryAuth>,
        network_pool: Option<NetworkPool>,
        ready_networks: usize,
    ) -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_unix(socket, CALL_TIMEOUT, bollard::API_DEFAULT_VERSION)
            .map_err(|e| classify(&e, &format!("cannot use the Docker socket {socket}")))?;
        Ok(DockerRuntime {
            ready: networks::Ready::new(docker.clone(), host.clone(), network_pool, ready_networks),
            docker,
            host,
            socket: socket.to_string(),
            registries: std::sync::Arc::new(std::sync::RwLock::new(registries)),
            asker: None,
            network_pool,
            cpu_samples: Mutex::new(HashMap::new()),
        })
    }

    /// Pulls ask the coordinators through `asker` for the credential store's credential of the
    /// image's registry (it wins over `agent.toml`'s).
    pub fn with_asker(mut self, asker: crate::asker::Asker) -> DockerRuntime {
        self.asker = Some(asker);
        self
    }

    /// The registries' credentials, to replace on a reload.
    pub fn registries(&self) -> Registries {
        self.registries.clone()
    }

    fn label_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_HOST}={}", self.host)],
        )])
    }

    /// Makes the ready networks (`--ready-networks`) in the background, if they are not made.
    pub fn make_ready_networks(&self) {
        self.ready.settle_soon();
    }

    /// Removes the ready networks no container is on, as the agent stops (each failure logged).
    pub async fn remove_free_ready_networks(&self) {
        if let Err(error) = self.ready.remove_free(Duration::from_secs(5)).await {
            tracing::warn!("free ready networks not removed: {error}");
        }
    }

    /// The network `spec`'s container goes on, and whether it is a ready network lent to it:
    /// the workspace's named one if it exists (made before ready networks, or when none was
    /// free), else a ready network, else a named one made now. A later generation, made after
    /// its predecessor's container is removed, may go on another ready network than it.
    async fn ensure_network(
        &self,
        spec: &CreateSpec,
    ) -> Result<(String, Option<networks::Lending<'_>>), RuntimeError> {
        let name = network_name(&spec.host, &spec.workspace);
        match self.docker.inspect_network(&name, None).await {
            Ok(_) => return Ok((name, None)),
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => return Err(classify(&error, &format!("cannot inspect network {name}"))),
        }
        // Taken: another is made once its container has started (`start`). One removed behind
        // the agent's back (`docker network prune` removes the free ones) is given back and the
        // next tried; the settling it asks for forgets it.
        while let Some(ready) = self.ready.take() {
            let lending = networks::Lending::new(&self.ready, &ready);
            match self.docker.inspect_network(&ready, None).await {
                Ok(_) => return Ok((ready, Some(lending))),
                Err(error) if status_of(&error) == Some(404) => drop(lending),
                Err(error) => {
                    return Err(classify(&error, &format!("cannot inspect network {ready}")));
                }
            }
        }
        // None left: make more for the next creates.
        if self.ready.keeps_any() {
            self.ready.settle_soon();
        }
        let labels: HashMap<String, String> = spec.labels().into_iter().collect();
        networks::make(&self.docker, self.network_pool, &name, labels).await?;
        Ok((name, None))
    }

    /// Pulls `image` if it is missing, for `workspace` (whose credential the store may hold);
    /// answers whether it did.
    async fn ensure_image(
        &self,
        image: &str,
        workspace: Option<&WorkspaceName>,
    ) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(false),
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => return Err(classify(&error, &format!("cannot inspect image {image}"))),
        }
        let (repository, tag) = split_image(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(repository)
            .tag(tag)
            .build();
        // The store's credential wins over agent.toml's; it lives as long as this pull.
        let stored = match (&self.asker, workspace) {
            (Some(asker), Some(workspace)) => auth::stored(asker, workspace, image).await,
            _ => None,
        };
        let credentials = stored.or_else(|| self.credentials_for(repository));
        tracing::info!(image, "pulling the image");
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        let mut last_status = String::new();
        while let Some(update) = progress.next().await {
            match update {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        let message = detail.message.unwrap_or_default();
                        return Err(RuntimeError::new(
                            ErrorKind::Image,
                            format!("cannot pull image {image}: {message}"),
                        ));
                    }
                    let status = info.status.unwrap_or_default();
                    if status != last_status {
                        tracing::info!(image, layer = ?info.id, "pull: {status}");
                        last_status = status;
                    }
                }
                Err(error) => {
                    let kind = classify(&error, "").kind;
                    let kind = if kind == ErrorKind::Unavailable {
                        kind
                    } else {
                        ErrorKind::Image
                    };
                    return Err(RuntimeError::new(
                        kind,
                        format!("cannot pull image {image}: {}", describe(&error)),
                    ));
                }
            }
        }
        tracing::info!(image, "pulled");
        Ok(true)
    }

    fn credentials_for(&self, repository: &str) -> Option<DockerCredentials> {
        let registry = repository.split('/').next().unwrap_or_default();
        let registries = self
            .registries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let auth = registries.iter().find(|r| r.server == registry)?;
        Some(DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.server.clone()),
            ..Default::default()
        })
    }
}

/// The most bytes of a container's logs one answer carries (the newest).
const LOGS_MAX_BYTES: usize = 8 << 20;
/// The most bytes of each of an exec's streams kept (the answer carries 4 MiB).
const EXEC_MAX_BYTES: usize = nexus_protocol::message::ExecResult::MAX_OUTPUT;

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker.ping().await.map(|_| ()).map_err(|e| {
            classify(
                &e,
                &format!("the Docker engine at {} does not answer", self.socket),
            )
        })
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&self.label_filter())
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| classify(&e, "cannot list containers"))?;
        Ok(summaries
            .into_iter()
            .filter_map(|summary| {
                let id = summary.id?;
                let labels = summary.labels.unwrap_or_default();
                container_from_labels(&self.host, id, &labels, status_from(summary.state))
            })
            .collect())
    }

    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        // A ready network lent is returned however the create ends (made, failed, or dropped
        // mid-way).
        let (network, lending) = self.ensure_network(spec).await?;
        let mut labels: HashMap<String, String> = spec.labels().into_iter().collect();
        if lending.is_some() {
            labels.insert(networks::LABEL_NETWORK.to_string(), network.clone());
        }
        // Pulled before the create as a rule (the reconciler's own step); this covers a caller
        // that did not.
        self.ensure_image(&spec.image, Some(&spec.workspace))
            .await?;
        if let Some(files) = &spec.files {
            std::fs::create_dir_all(files).map_err(|e| {
                let kind = if e.raw_os_error() == Some(28) {
                    ErrorKind::DiskFull
                } else {
                    ErrorKind::Failed
                };
                RuntimeError::new(kind, format!("cannot make {}: {e}", files.display()))
            })?;
        }
        let resources = spec.class.resources();
        let mut bindings = HashMap::new();
        let mut exposed = Vec::new();
        for port in &spec.ports {
            let key = format!("{}/tcp", port.container);
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![DockerPortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some(port.host.to_string()),
                }]),
            );
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            hostname: Some(spec.workspace.to_string()),
            host_config: Some(HostConfig {
                init: Some(true),
                nano_cpus: Some(i64::from(resources.cpu_millis) * 1_000_000),
                memory: i64::try_from(resources.memory_bytes).ok(),
                port_bindings: Some(bindings),
                network_mode: Some(network),
                binds: spec.files.as_ref().map(|dir| {
                    let mut binds = vec![format!("{}:{FILES_MOUNT}", dir.display())];
                    // The worktree's `.git` names the mirror by its host path: mounted at the
                    // same path, the link holds inside the container too.
                    if let Some(mirror) = &spec.mirror {
                        binds.push(format!("{0}:{0}", mirror.display()));
                        for part in crate::git::layout::MIRROR_READ_ONLY {
                            let path = mirror.join(part);
                            if path.exists() {
                                binds.push(format!("{0}:{0}:ro", path.display()));
                            }
                        }
                    }
                    binds
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = spec.container_name();
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(response) => {
                if let Some(lending) = lending {
                    lending.made();
                }
                Ok(response.id)
            }
            Err(error) if status_of(&error) == Some(409) => {
                // An earlier attempt made it: answer that container, if it is truly ours for
                // this very workspace and generation (a container that only took the name is
                // not touched).
                let existing = self
                    .docker
                    .inspect_container(&name, None)
                    .await
                    .map_err(|e| classify(&e, &format!("cannot inspect container {name}")))?;
                let labels = existing
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                let id = existing.id.unwrap_or_default();
                let ours = container_from_labels(
                    &self.host,
                    id.clone(),
                    &labels,
                    ContainerStatus::Created,
                )
                .is_some_and(|c| c.workspace == spec.workspace && c.generation == spec.generation);
                if ours && !id.is_empty() {
                    Ok(id)
                } else {
                    Err(RuntimeError::new(
                        ErrorKind::Conflict,
                        format!(
                            "a container named {name} exists and is not this workspace's; remove or rename it"
                        ),
                    ))
                }
            }
            Err(error) => Err(classify(
                &error,
                &format!("cannot create workspace {}'s container", spec.workspace),
            )),
        }
    }

    async fn pull(&self, image: &str) -> Result<bool, RuntimeError> {
        self.ensure_image(image, None).await
    }

    async fn pull_for(&self, image: &str, workspace: &WorkspaceName) -> Result<bool, RuntimeError> {
        self.ensure_image(image, Some(workspace)).await
    }

    async fn registry_login(
        &self,
        server: &str,
        username: &str,
        secret: &nexus_protocol::credentials::Secret,
    ) -> Result<(), nexus_protocol::WireError> {
        auth::login(&self.socket, server, username, secret).await
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let started = match self.docker.start_container(id, None).await {
            // 304: already running.
            Ok(()) => Ok(()),
            Err(error) if status_of(&error) == Some(304) => Ok(()),
            Err(error) => Err(classify(&error, &format!("cannot start container {id}"))),
        };
        self.ready.settle_if_wanted();
        started
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if matches!(status_of(&error), Some(304 | 404)) => Ok(()),
            Err(error) => Err(classify(&error, &format!("cannot stop container {id}"))),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.cpu_samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if status_of(&error) == Some(404) => Ok(()),
            Err(error) => Err(classify(&error, &format!("cannot remove container {id}"))),
        }
    }

    async fn networks(&self) -> Result<Vec<NetworkInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_HOST}={}", self.host)],
        )]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&filters)
            .build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| classify(&e, "cannot list networks"))?;
        // A ready network's workspace is the one whose container is on it, if any.
        let in_use = networks::in_use(&self.docker, &self.host).await?;
        let mut listed: Vec<NetworkInfo> = networks
            .into_iter()
            .map(|network| NetworkInfo {
                workspace: network
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(LABEL_WORKSPACE))
                    .or_else(|| in_use.get(network.name.as_ref()?))
                    .and_then(|name| name.parse().ok()),
                subnet: network
                    .ipam
                    .and_then(|ipam| ipam.config)
                    .and_then(|config| config.into_iter().find_map(|c| c.subnet)),
                name: network.name.unwrap_or_default(),
            })
            .collect();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    async fn remove_network(
        &self,
        host: &HostId,
        workspace: &WorkspaceName,
    ) -> Result<(), RuntimeError> {
        let name = network_name(host, workspace);
        // A ready network the workspace was on, its containers gone, is free: ready again for
        // the next workspace, or removed if enough are.
        self.ready.settle_soon();
        match self.docker.remove_network(&name).await {
            Ok(()) => Ok(()),
            Err(error) if status_of(&error) == Some(404) => Ok(()),
            Err(error) => Err(classify(&error, &format!("cannot remove network {name}"))),
        }
    }

    async fn exit_details(&self, id: &str) -> Result<ExitDetails, RuntimeError> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| classify(&e, &format!("cannot inspect container {id}")))?;
        let state = inspect.state.unwrap_or_default();
        Ok(ExitDetails {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
            last_lines: self.logs(id, 20).await.unwrap_or_default(),
        })
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        // The newest bytes only, however long the lines: the oldest chunks go first.
        let mut chunks = std::collections::VecDeque::new();
        let mut kept = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(&e, &format!("cannot read {id}'s logs")))?;
            kept += chunk.as_ref().len();
            chunks.push_back(chunk);
            while kept > LOGS_MAX_BYTES && chunks.len() > 1 {
                kept -= chunks.pop_front().map_or(0, |c| c.as_ref().len());
            }
        }
        Ok(lines_of(chunks.into_iter().collect()))
    }

    async fn follow_logs(
        &self,
        id: &str,
        tail: usize,
        lines: mpsc::Sender<String>,
    ) -> Result<(), RuntimeError> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        // Frames are not lines: keep each stream's partial line, as bytes (a character may be
        // split across frames), until its end arrives; a line longer than the cap is cut.
        let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let decode = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .trim_end_matches(['\n', '\r'])
                .to_string()
        };
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                // Nobody reads any more: stop following rather than wait for output.
                () = lines.closed() => return Ok(()),
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| classify(&e, &format!("cannot follow {id}'s logs")))?;
            let (index, bytes) = match chunk {
                LogOutput::StdErr { message } => (1, message),
                other => (0, other.into_bytes()),
            };
            let buffer = &mut partial[index];
            buffer.extend_from_slice(&bytes);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if lines.send(decode(&line)).await.is_err() {
                    return Ok(());
                }
            }
            if buffer.len() > FOLLOWED_LINE_BYTES {
                let line: Vec<u8> = std::mem::take(buffer);
                if lines.send(decode(&line)).await.is_err() {
                    return Ok(());
                }
            }
        }
        for buffer in partial {
            if !buffer.is_empty() && lines.send(decode(&buffer)).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<ExecOutput, RuntimeError> {
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id, options)
            .await
            .map_err(|e| classify(&e, &format!("cannot exec in container {id}")))?;
        let started = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| classify(&e, &format!("cannot exec in container {id}")))?;
        let mut output = ExecOutput {
            exit_code: -1,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = started
        {
            // Read to the end (the command runs until then) but keep at most a little over
            // the answer's cap of each stream: the caller cuts and says so.
            let keep = |buffer: &mut Vec<u8>, bytes: &[u8]| {
                let room = (EXEC_MAX_BYTES + 1).saturating_sub(buffer.len());
                buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
            };
            while let Some(chunk) = stream.next().await {
                match chunk.map_err(|e| classify(&e, "exec output"))? {
                    LogOutput::StdErr { message } => keep(&mut output.stderr, &message),
                    other => keep(&mut output.stdout, &other.into_bytes()),
                }
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| classify(&e, "cannot read the exec's exit code"))?;
        output.exit_code = inspect.exit_code.unwrap_or(-1);
        Ok(output)
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(id, Some(options));
        let sample = match stream.next().await {
            Some(Ok(sample)) => sample,
            Some(Err(error)) => return Err(classify(&error, &format!("cannot read {id}'s stats"))),
            None => {
                return Err(RuntimeError::new(
                    ErrorKind::Failed,
                    format!("no stats for container {id}"),
                ));
            }
        };
        let current = cpu_sample(&sample);
        let previous = {
            let mut samples = self
                .cpu_samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            samples.insert(id.to_string(), current)
        };
        Ok(stats_from(&sample, previous))
    }

    async fn inspect(&self, id: &str) -> Result<ContainerHealth, RuntimeError> {
        self.inspect_health(id).await
    }

    /// Ports are published on every interface: loopback reaches them as any client would
    /// (through the engine's proxy, which [`probe::tcp`] sees through).
    async fn probe_port(&self, port: PortBinding, limit: Duration) -> PortProbe {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port.host));
        let outcome = probe::tcp(address, limit).await;
        PortProbe {
            container: port.container,
            host: port.host,
            accepting: outcome.is_ok(),
            error: outcome.err(),
        }
    }

    async fn events(
        &self,
        workspace: &WorkspaceName,
        since: Option<Timestamp>,
    ) -> Result<Vec<ContainerEvent>, RuntimeError> {
        self.workspace_events(workspace, since).await
    }

    async fn images(&self) -> Result<Vec<super::ImageInfo>, RuntimeError> {
        images::images(&self.docker).await
    }

    async fn remove_image(&self, id: &str) -> Result<(), RuntimeError> {
        images::remove_image(&self.docker, id).await
    }

    async fn volumes(&self) -> Result<Vec<super::VolumeInfo>, RuntimeError> {
        images::volumes(&self.docker).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        images::remove_volume(&self.docker, name).await
    }

    async fn engine(&self) -> Result<EngineInfo, RuntimeError> {
        self.engine_info().await
    }

    async fn watch_events(&self, wake: Arc<Notify>) {
        let mut filters = self.label_filter();
        filters.insert("type".into(), vec!["container".into()]);
        let mut failures: u32 = 0;
        loop {
            let options = EventsOptionsBuilder::new().filters(&filters).build();
            let mut events = self.docker.events(Some(options));
            // A (re)connected stream may have missed events: have the reconciler re-list.
            wake.notify_one();
            // The engine reports an event a moment before its container list shows it (a "die"
            // can come while the list still says running): wake the reconciler again shortly
            // after the last event.
            let mut again: Option<tokio::time::Instant> = None;
            loop {
                let follow_up = async {
                    match again {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            failures = 0;
                            tracing::debug!(action = ?event.action, "container event");
                            wake.notify_one();
                            again = Some(tokio::time::Instant::now() + EVENT_FOLLOW_UP);
                        }
                        Some(Err(error)) => {
                            tracing::debug!("the Docker event stream failed: {}", describe(&error));
                            break;
                        }
                        None => break,
                    },
                    () = follow_up => {
                        again = None;
                        wake.notify_one();
                    }
                }
            }
            // The stream ends when dockerd stops or restarts.
            failures = failures.saturating_add(1);
            let wait = Duration::from_millis(250 * u64::from(failures.min(20)));
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RegistryAuth;

    #[test]
    fn a_registry_password_never_shows_in_debug() {
        let auth = RegistryAuth {
            server: "127.0.0.1:5000".into(),
            username: "ci".into(),
            password: "hunter2-secret".into(),
        };
        let shown = format!("{auth:?} {:?}", vec![auth.clone()]);
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(
            shown.contains("ci") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
