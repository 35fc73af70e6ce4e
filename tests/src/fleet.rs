//! A hollow fleet: thousands of agents in this one process, as Kubernetes' kubemark runs hollow
//! kubelets. Each host is the real agent code ([`nexus_agent::run_hollow_host`]: reconciler,
//! desired-state cache, coordinator link) on the hollow runtime, with its own certificate, its own
//! QUIC connection to the coordinators and its own heartbeat. Hosts share UDP sockets (a few
//! hundred per socket) and this process's threads. Killing a host drops its tasks at once: it
//! stops heartbeating, as a host that lost power.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nexus_agent::runtime::Runtime;
use nexus_agent::runtime::hollow::HollowRuntime;
use nexus_agent::{Config, config::Args};
use nexus_protocol::model::{HostInfo, HostStats};
use nexus_protocol::transport::Connector;
use nexus_protocol::{HostId, WorkspaceName};

use crate::pki::TestPki;

/// What the fleet's hosts are like.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Host ids are `PREFIX-00001` and on.
    pub prefix: String,
    pub hosts: usize,
    pub heartbeat_interval: Duration,
    pub cpus: u32,
    pub memory_mib: u64,
    /// How long a simulated container takes to start.
    pub start_latency: Duration,
    /// Hosts started per second: a whole fleet at once is a thundering herd of handshakes, which
    /// no real fleet produces except after a datacenter-wide power cut.
    pub start_rate: usize,
    pub hosts_per_socket: usize,
}

impl Default for FleetOptions {
    fn default() -> FleetOptions {
        FleetOptions {
            prefix: "hollow".into(),
            hosts: 10,
            heartbeat_interval: Duration::from_secs(5),
            cpus: 64,
            memory_mib: 256 * 1024,
            start_latency: Duration::from_millis(50),
            start_rate: 2_000,
            hosts_per_socket: 256,
        }
    }
}

/// One hollow host.
#[derive(Debug)]
pub struct HollowHost {
    pub id: HostId,
    pub runtime: Arc<HollowRuntime>,
    /// Where its agent keeps its state (the desired state it acts on).
    pub data_dir: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl HollowHost {
    pub fn alive(&self) -> bool {
        !self.task.is_finished()
    }
}

/// Many hollow hosts in this process; all die when it is dropped.
#[derive(Debug)]
pub struct HollowFleet {
    pub hosts: Vec<HollowHost>,
    /// The hosts' data dirs, when in memory; removed with the fleet.
    _scratch: Option<tempfile::TempDir>,
}

impl HollowFleet {
    /// Issues each host's certificate and starts the hosts against `coordinators`, at
    /// `options.start_rate` per second. Returns once every host is started (not registered).
    pub async fn start(
        pki: &TestPki,
        coordinators: &[SocketAddr],
        options: &FleetOptions,
    ) -> HollowFleet {
        let ids: Vec<HostId> = (1..=options.hosts)
            .map(|i| HostId::new(format!("{}-{i:05}", options.prefix)).expect("a valid host id"))
            .collect();
        let credentials = pki.issue_agents_in_memory(&ids);
        let list: Vec<String> = coordinators.iter().map(ToString::to_string).collect();
        let mut scratch = None;
        // Each host keeps its desired state on disk with two fsyncs per change, as a real agent
        // does; thousands of hosts on one disk would measure this machine's disk, not Nexus.
        // Memory-backed where the machine has it (fsync is free there).
        let shm = std::path::Path::new("/dev/shm");
        let data = if shm.is_dir() {
            let dir = tempfile::Builder::new()
                .prefix("nexus-fleet-")
                .tempdir_in(shm)
                .expect("a directory in /dev/shm");
            let path = dir.path().to_path_buf();
            scratch = Some(dir);
            path
        } else {
            pki.scratch(&format!("fleet-{}", options.prefix))
        };
        let batch = options.start_rate.max(1).div_ceil(20);
        let mut hosts = Vec::with_capacity(ids.len());
        let mut socket: Option<Connector> = None;
        for (index, (id, credentials)) in ids.into_iter().zip(credentials).enumerate() {
            if index % options.hosts_per_socket.max(1) == 0 {
                socket = None;
            }
            let connector = match &socket {
                Some(shared) => shared.sharing(&credentials),
                None => Connector::new(&credentials, nexus_agent::config::link_transport()),
            }
            .expect("a connector");
            socket.get_or_insert_with(|| connector.clone());
            let config = host_config(&id, &list, &data, options);
            let data_dir = config.data_dir.clone();
            let runtime = Arc::new(HollowRuntime::new(id.clone(), config.hollow));
            let info = host_info(&config, options);
            let stats = HostStats {
                memory_total_bytes: info.memory_bytes,
                ..HostStats::default()
            };
            let host = nexus_agent::run_hollow_host(
                config,
                runtime.clone(),
                connector,
                info,
                stats,
                std::future::pending(),
            );
            // Its logs (NEXUS_LOG) name the host.
            let host =
                tracing::Instrument::instrument(host, tracing::info_span!("hollow", host = %id));
            let task = tokio::spawn(async move {
                if let Err(error) = host.await {
                    panic!("a hollow host failed: {error:#}");
                }
            });
            hosts.push(HollowHost {
                id,
                runtime,
                data_dir,
                task,
            });
            if (index + 1) % batch == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        HollowFleet {
            hosts,
            _scratch: scratch,
        }
    }

    /// Kills host `index`: its link, reconciler and containers are gone at once.
    pub fn kill(&self, index: usize) {
        self.hosts[index].task.abort();
    }

    /// Every workspace container of the live hosts, with the hosts that hold one.
    pub async fn containers(&self) -> BTreeMap<WorkspaceName, Vec<HostId>> {
        let mut found: BTreeMap<WorkspaceName, Vec<HostId>> = BTreeMap::new();
        for host in self.hosts.iter().filter(|h| h.alive()) {
            for container in host.runtime.list().await.expect("a hollow list") {
                found
                    .entry(container.workspace)
                    .or_default()
                    .push(host.id.clone());
            }
        }
        found
    }
}

impl Drop for HollowFleet {
    fn drop(&mut self) {
        for host in &self.hosts {
            host.task.abort();
        }
    }
}

/// The agent's own configuration, parsed from flags as `nexus-agent` parses them.
fn host_config(
    id: &HostId,
    coordinators: &[String],
    data: &std::path::Path,
    options: &FleetOptions,
) -> Config {
    let data_dir = data.join(id.as_str());
    let args = Args::try_parse_from([
        "nexus-agent".to_string(),
        "--host-id".into(),
        id.to_string(),
        "--coordinator".into(),
        coordinators.join(","),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--tls-dir".into(),
        data.display().to_string(),
        "--runtime".into(),
        "hollow".into(),
        "--heartbeat-interval".into(),
        options.heartbeat_interval.as_secs_f64().to_string(),
        "--capacity-cpus".into(),
        options.cpus.to_string(),
        "--capacity-memory-mib".into(),
        options.memory_mib.to_string(),
        "--hollow-start-ms".into(),
        options.start_latency.as_millis().to_string(),
        "--listen".into(),
        "off".into(),
        "--http-listen".into(),
        "off".into(),
    ])
    .expect("valid agent flags");
    Config::from_args(args).expect("a valid agent configuration")
}

fn host_info(config: &Config, options: &FleetOptions) -> HostInfo {
    HostInfo {
        os: "hollow".into(),
        cpus: options.cpus,
        memory_bytes: options.memory_mib * 1024 * 1024,
        disk_bytes: 1 << 40,
        labels: config.labels.clone(),
        port_range: config.port_range,
        agent_version: nexus_protocol::SOFTWARE_VERSION.to_string(),
        ..nexus_fixtures::host(config.host_id.as_str())
    }
}
