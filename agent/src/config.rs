//! The agent's configuration: command-line flags, or a TOML file with the same keys (flags win).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub mod check;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use nexus_protocol::HostId;
use nexus_protocol::logging::{self, DaemonLog, Rotation};
use nexus_protocol::model::{Labels, PortRange, parse_key_value};
use nexus_protocol::settings::Problems;
use nexus_protocol::transport::TransportConfig;
use nexus_telemetry::http::Listen;
use serde::Deserialize;

use crate::runtime::docker::{NetworkPool, RegistryAuth};
use crate::runtime::hollow::HollowConfig;

/// Which container runtime runs the workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The real Docker engine.
    Docker,
    /// Containers simulated in memory, for scale tests.
    Hollow,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Hollow => "hollow",
        })
    }
}

#[derive(Debug, Clone, Parser, Default)]
#[command(
    name = "nexus-agent",
    version,
    about = "The Nexus agent: runs a host's workspaces and reports on it"
)]
pub struct Args {
    /// This host's id, as in its certificate (nexus://agent/<host-id>). Default: this machine's
    /// hostname, when it is a valid host id.
    #[arg(long)]
    pub host_id: Option<HostId>,
    /// Coordinators to reach, as HOST:PORT, comma-separated or repeated.
    #[arg(long = "coordinator", value_delimiter = ',')]
    pub coordinators: Vec<String>,
    /// The `nexus pki` directory with ca.pem and agent-<host-id>.pem/.key (default
    /// DATA_DIR/pki; an enrolment writes them there).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// A file holding a join token (`-`: read it from stdin), used only when this host has no
    /// certificate yet or its certificate expired: the agent makes its key here and asks the
    /// coordinators for a certificate. The environment variable NEXUS_JOIN_TOKEN works too; the
    /// token itself never goes on the command line, which every user of the machine can read.
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// Where this agent keeps its state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
    /// Host ports to publish workspaces on, FIRST-LAST.
    #[arg(long)]
    pub port_range: Option<PortRange>,
    /// A label for scheduling constraints, K=V. Repeat for each.
    #[arg(long = "label", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Seconds between heartbeats.
    #[arg(long)]
    pub heartbeat_interval: Option<f64>,
    /// Seconds between samples of host and container stats.
    #[arg(long)]
    pub stats_interval: Option<f64>,
    /// At most this many container operations at once.
    #[arg(long)]
    pub max_concurrent_ops: Option<u32>,
    /// The Docker engine's socket.
    #[arg(long)]
    pub docker_socket: Option<String>,
    /// Where workspace networks take their /24 subnets from, as a CIDR (default 10.213.0.0/16,
    /// 256 networks); `docker` leaves it to the engine's own pools (about 30 networks by
    /// default).
    #[arg(long)]
    pub network_pool: Option<String>,
    /// Workspace networks kept made ahead of the workspaces that will take them (default 2, 0
    /// to 16): a create then spends no time making its network.
    #[arg(long)]
    pub ready_networks: Option<u32>,
    /// Report this many CPUs instead of the host's count (what the scheduler may fill).
    #[arg(long)]
    pub capacity_cpus: Option<u32>,
    /// Report this much memory, in MiB, instead of the host's.
    #[arg(long)]
    pub capacity_memory_mib: Option<u64>,
    /// Hollow runtime: milliseconds a simulated start takes.
    #[arg(long)]
    pub hollow_start_ms: Option<u64>,
    /// Hollow runtime: milliseconds a simulated stop takes.
    #[arg(long)]
    pub hollow_stop_ms: Option<u64>,
    /// Hollow runtime: the chance, 0 to 1, that a simulated create or start fails.
    #[arg(long)]
    pub hollow_failure_rate: Option<f64>,
    /// Where to serve users' `nexus workspace logs|exec`, HOST:PORT (default 0.0.0.0:7401), or
    /// `off`.
    #[arg(long)]
    pub listen: Option<String>,
    /// The HOST:PORT users reach that endpoint at (a name or address this agent's certificate
    /// holds). Default: the listen address, or this host's name when listening on every
    /// interface.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where to serve /metrics, /livez and /readyz over HTTP, IP:PORT (default 127.0.0.1:7481),
    /// or `off`.
    #[arg(long)]
    pub http_listen: Option<Listen>,
    /// Where to write the structured log, as JSON lines (default DATA_DIR/logs).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// The most bytes of log to keep, in files of an eighth of it (at most 8 MiB each; default
    /// 64 MiB): the oldest go first.
    #[arg(long)]
    pub log_max_bytes: Option<u64>,
    /// What to log, in tracing's filter syntax (`info`, `nexus_agent=debug,info`); default
    /// `NEXUS_LOG`, else `info`. Hot: a reload applies the file's.
    #[arg(long)]
    pub log_filter: Option<String>,
    /// A TOML file with any of the settings above (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Check the configuration (the flags and the `--config` file, and the TLS files it names)
    /// and exit: 0 if it would start, 1 with each problem and where it is.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host_id: Option<String>,
    #[serde(default)]
    coordinators: Vec<String>,
    tls_dir: Option<PathBuf>,
    join_token_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    runtime: Option<RuntimeKind>,
    port_range: Option<String>,
    #[serde(default)]
    labels: Labels,
    heartbeat_interval: Option<f64>,
    stats_interval: Option<f64>,
    max_concurrent_ops: Option<u32>,
    docker_socket: Option<String>,
    network_pool: Option<String>,
    ready_networks: Option<u32>,
    capacity_cpus: Option<u32>,
    capacity_memory_mib: Option<u64>,
    hollow_start_ms: Option<u64>,
    hollow_stop_ms: Option<u64>,
    hollow_failure_rate: Option<f64>,
    listen: Option<String>,
    advertise: Option<String>,
    http_listen: Option<String>,
    log_dir: Option<PathBuf>,
    log_max_bytes: Option<u64>,
    log_filter: Option<String>,
    /// Credentials for private registries (file only: secrets do not belong on a command line).
    #[serde(default)]
    registry: Vec<RegistryAuth>,
}

/// How many workspace networks an agent keeps made ahead, unless told.
pub const DEFAULT_READY_NETWORKS: u32 = 2;

/// The default Docker socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug, Clone)]
pub struct Config {
    pub host_id: HostId,
    pub coordinators: Vec<String>,
    pub tls_dir: PathBuf,
    /// Where a join token comes from, if one was given (read only when an enrolment needs it).
    pub join_token: Option<TokenSource>,
    pub data_dir: PathBuf,
    pub runtime: RuntimeKind,
    pub port_range: PortRange,
    pub labels: Labels,
    pub heartbeat_interval: Duration,
    pub stats_interval: Duration,
    pub max_concurrent_ops: usize,
    pub docker_socket: String,
    pub network_pool: Option<NetworkPool>,
    /// Workspace networks kept made ahead (Docker runtime).
    pub ready_networks: usize,
    pub capacity_cpus: Option<u32>,
    pub capacity_memory_bytes: Option<u64>,
    pub hollow: HollowConfig,
    pub registries: Vec<RegistryAuth>,
    /// Where users' logs and exec are served; `None`: not at all.
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    /// Where to serve `/metrics`, `/livez` and `/readyz` over plain HTTP, if anywhere.
    pub http_listen: Listen,
    /// Where the structured log goes (default `DATA_DIR/logs`), and how much of it to keep.
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
    /// The log filter from a flag or the file (checked); `None`: `NEXUS_LOG`, else `info`.
    pub log_filter: Option<String>,
}

/// The environment variable a join token may come in (never a flag: argv is world-readable).
pub const JOIN_TOKEN_ENV: &str = "NEXUS_JOIN_TOKEN";

/// Where a join token comes from. Only the place is kept here: the secret is read when an
/// enrolment needs it, and never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file (`--join-token-file PATH`, or the file's `join_token_file`).
    File(PathBuf),
    /// Standard input (`--join-token-file -`).
    Stdin,
    /// The environment variable [`JOIN_TOKEN_ENV`].
    Environment,
}

impl TokenSource {
    /// The flag, else the file's key, else the environment (`env_set`: the variable is set and
    /// not empty).
    pub fn choose(
        flag: Option<PathBuf>,
        file: Option<PathBuf>,
        env_set: bool,
    ) -> Option<TokenSource> {
        match flag.or(file) {
            Some(path) if path.as_os_str() == "-" => Some(TokenSource::Stdin),
            Some(path) => Some(TokenSource::File(path)),
            None if env_set => Some(TokenSource::Environment),
            None => None,
        }
    }
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(path) => write!(f, "{}", path.display()),
            TokenSource::Stdin => f.write_str("-"),
            TokenSource::Environment => write!(f, "${JOIN_TOKEN_ENV}"),
        }
    }
}

/// This machine's hostname as the kernel has it (what `hostname` prints), on Linux; `None`
/// elsewhere or when it cannot be read. Read here rather than through `stats` (which reads
/// the host with `sysinfo` and depends on this module).
fn machine_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// This machine's hostname as a host id, for an agent started without `--host-id`.
fn host_id_from_hostname(hostname: Option<String>) -> anyhow::Result<HostId> {
    let Some(hostname) = hostname else {
        bail!(
            "--host-id is required (this host's id, as in its certificate): this machine's hostname cannot be read"
        );
    };
    HostId::from_str(&hostname).map_err(|error| {
        anyhow::anyhow!(
            "--host-id is required (this host's id, as in its certificate): this machine's hostname {hostname:?} is not a valid host id ({error})"
        )
    })
}

/// Where an agent serves its monitoring HTTP by default.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7481";

/// Where an agent serves users by default.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7401";

/// Seconds from a flag or file, checked against a range.
fn seconds(
    name: &str,
    value: f64,
    range: std::ops::RangeInclusive<f64>,
) -> anyhow::Result<Duration> {
    if !range.contains(&value) {
        bail!(
            "--{name} must be between {} and {} seconds, not {value}",
            range.start(),
            range.end()
        );
    }
    Ok(Duration::from_secs_f64(value))
}

impl Config {
    /// Merges the flags over the config file they name, and checks the result: every problem
    /// found, one to a line.
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        Config::checked(args).map_err(|found| {
            let lines: Vec<String> = found.iter().map(|error| format!("{error:#}")).collect();
            anyhow::anyhow!(lines.join("\n"))
        })
    }

    /// As [`Config::from_args`], with each problem apart. A file that cannot be read or parsed
    /// is the one problem found: its settings are unknown.
    pub fn checked(args: Args) -> Result<Config, Vec<anyhow::Error>> {
        let file = match &args.config {
            Some(path) => read_file(path).map_err(|error| vec![error])?,
            None => FileConfig::default(),
        };
        let mut problems = Problems::<anyhow::Error>::default();
        let host_id = match (args.host_id, file.host_id) {
            (Some(id), _) => Some(id),
            (None, Some(id)) => problems.take(HostId::from_str(&id)),
            (None, None) => problems.take(host_id_from_hostname(machine_hostname())),
        };
        let coordinators = if args.coordinators.is_empty() {
            file.coordinators
        } else {
            args.coordinators
        };
        if coordinators.is_empty() {
            problems.push(anyhow!(
                "--coordinator is required, e.g. --coordinator 127.0.0.1:7400"
            ));
        }
        let port_range = match (args.port_range, file.port_range) {
            (Some(range), _) => range,
            (None, Some(text)) => {
                problems.or(text.parse().map_err(anyhow::Error::msg), PortRange::DEFAULT)
            }
            (None, None) => PortRange::DEFAULT,
        };
        let mut labels = file.labels;
        labels.extend(args.labels);
        let heartbeat_interval = problems.or(
            seconds(
                "heartbeat-interval",
                args.heartbeat_interval
                    .or(file.heartbeat_interval)
                    .unwrap_or(5.0),
                0.05..=3600.0,
            ),
            Duration::ZERO,
        );
        let stats_interval = problems.or(
            seconds(
                "stats-interval",
                args.stats_interval.or(file.stats_interval).unwrap_or(10.0),
                0.2..=3600.0,
            ),
            Duration::ZERO,
        );
        let max_concurrent_ops = args
            .max_concurrent_ops
            .or(file.max_concurrent_ops)
            .unwrap_or(20);
        if !(1..=1000).contains(&max_concurrent_ops) {
            problems.push(anyhow!(
                "--max-concurrent-ops must be between 1 and 1000, not {max_concurrent_ops}"
            ));
        }
        let ready_networks = args
            .ready_networks
            .or(file.ready_networks)
            .unwrap_or(DEFAULT_READY_NETWORKS);
        if ready_networks > 16 {
            problems.push(anyhow!(
                "--ready-networks must be between 0 and 16, not {ready_networks}"
            ));
        }
        let failure_rate = args
            .hollow_failure_rate
            .or(file.hollow_failure_rate)
            .unwrap_or(0.0);
        if !(0.0..=1.0).contains(&failure_rate) {
            problems.push(anyhow!(
                "--hollow-failure-rate must be between 0 and 1, not {failure_rate}"
            ));
        }
        let defaults = HollowConfig::default();
        let hollow = HollowConfig {
            start_latency: args
                .hollow_start_ms
                .or(file.hollow_start_ms)
                .map_or(defaults.start_latency, Duration::from_millis),
            stop_latency: args
                .hollow_stop_ms
                .or(file.hollow_stop_ms)
                .map_or(defaults.stop_latency, Duration::from_millis),
            failure_rate,
        };
        let capacity_memory_bytes = match args.capacity_memory_mib.or(file.capacity_memory_mib) {
            Some(0) => {
                problems.push(anyhow!("--capacity-memory-mib must be positive"));
                None
            }
            Some(mib) => problems.take(
                mib.checked_mul(1 << 20)
                    .context("--capacity-memory-mib is too large"),
            ),
            None => None,
        };
        let network_pool = match args.network_pool.or(file.network_pool).as_deref() {
            None => Some(NetworkPool::DEFAULT),
            Some("docker") => None,
            Some(cidr) => problems.take(cidr.parse().map_err(anyhow::Error::msg)),
        };
        let listen = match args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string())
            .as_str()
        {
            "off" => None,
            address => problems.take(
                address
                    .parse::<SocketAddr>()
                    .map_err(|_| anyhow!("--listen takes IP:PORT or `off`, not {address:?}")),
            ),
        };
        let http_listen = match (args.http_listen, file.http_listen) {
            (Some(listen), _) => Some(listen),
            (None, Some(text)) => problems.take(text.parse::<Listen>()),
            (None, None) => problems.take(DEFAULT_HTTP_LISTEN.parse::<Listen>()),
        };
        let advertise = args.advertise.or(file.advertise);
        if let Some(address) = &advertise
            && address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
        {
            problems.push(anyhow!("--advertise takes HOST:PORT, not {address:?}"));
        }
        let capacity_cpus = args.capacity_cpus.or(file.capacity_cpus);
        if capacity_cpus == Some(0) {
            problems.push(anyhow!("--capacity-cpus must be positive"));
        }
        let log_max_bytes = args
            .log_max_bytes
            .or(file.log_max_bytes)
            .unwrap_or(Rotation::DEFAULT_TOTAL_BYTES);
        if log_max_bytes < Rotation::MIN_TOTAL_BYTES {
            problems.push(anyhow!(
                "--log-max-bytes must be at least {} (1 MiB), not {log_max_bytes}",
                Rotation::MIN_TOTAL_BYTES
            ));
        }
        let log_filter = args.log_filter.or(file.log_filter);
        if let Some(filter) = &log_filter
            && let Err(error) = logging::check_filter(filter)
        {
            problems.push(anyhow!("--log-filter: {error}"));
        }
        let data_dir = problems.take(
            args.data_dir
                .or(file.data_dir)
                .context("--data-dir is required"),
        );
        let (Some(host_id), Some(http_listen), Some(data_dir)) = (host_id, http_listen, data_dir)
        else {
            return problems.finish(None);
        };
        problems.finish(Some(Config {
            log_filter,
            log_dir: args
                .log_dir
                .or(file.log_dir)
                .unwrap_or_else(|| data_dir.join("logs")),
            log_max_bytes,
            host_id,
            coordinators,
            tls_dir: args
                .tls_dir
                .or(file.tls_dir)
                .unwrap_or_else(|| data_dir.join("pki")),
            join_token: TokenSource::choose(
                args.join_token_file,
                file.join_token_file,
                std::env::var_os(JOIN_TOKEN_ENV).is_some_and(|value| !value.is_empty()),
            ),
            data_dir,
            runtime: args.runtime.or(file.runtime).unwrap_or(RuntimeKind::Docker),
            port_range,
            labels,
            heartbeat_interval,
            stats_interval,
            max_concurrent_ops: usize::try_from(max_concurrent_ops).unwrap_or(20),
            docker_socket: args
                .docker_socket
                .or(file.docker_socket)
                .unwrap_or_else(|| DEFAULT_DOCKER_SOCKET.to_string()),
            network_pool,
            ready_networks: usize::try_from(ready_networks).unwrap_or(0),
            capacity_cpus,
            capacity_memory_bytes,
            hollow,
            registries: file.registry,
            listen,
            advertise,
            http_listen,
        }))
    }

    pub fn transport(&self) -> TransportConfig {
        link_transport()
    }

    /// The log filter in force: `--log-filter` or the file's, else `NEXUS_LOG`, else `info`.
    pub fn log_filter(&self) -> String {
        self.log_filter
            .clone()
            .unwrap_or_else(|| logging::ambient_filter("info"))
    }

    /// Where and as whom this agent writes its structured log.
    pub fn daemon_log(&self) -> DaemonLog {
        DaemonLog {
            dir: self.log_dir.clone(),
            source: format!("agent-{}", self.host_id),
            rotation: Rotation::for_total(self.log_max_bytes),
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The transport of an agent's connections. Its heartbeats keep its link to the leader busy, so
/// QUIC's own keep-alive waits half the idle timeout: at the default 5 s it fired between
/// heartbeats, a second packet (and its acknowledgement) every interval for nothing. It still
/// keeps a link alive under a heartbeat interval longer than that. The coordinators are asked to
/// acknowledge each packet at once: a quiet heartbeat is then one wakeup of the leader's, not two.
///
/// An agent waits twice a client's usual time for a coordinator's first answer: a coordinator
/// that is gone is found so at once (its address refuses a probe), so a silent one is mostly a
/// leader busy with a fleet's reconnections, which leaves new clients unanswered until it has a
/// place for them. A client that gives up on one throws away the handshake the leader began
/// late in its wait, and starts another.
pub fn link_transport() -> TransportConfig {
    let transport = TransportConfig::default();
    TransportConfig {
        keep_alive: transport.idle_timeout / 2,
        immediate_acks: true,
        handshake_timeout: transport.handshake_timeout * 2,
        ..transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> anyhow::Result<Config> {
        let args =
            Args::try_parse_from(std::iter::once("nexus-agent").chain(list.iter().copied()))?;
        Config::from_args(args)
    }

    /// A config from the required flags and `extra`.
    fn with(extra: &[&str]) -> anyhow::Result<Config> {
        let mut list = vec![
            "--host-id",
            "h",
            "--coordinator",
            "c:1",
            "--tls-dir",
            "/t",
            "--data-dir",
            "/d",
        ];
        list.extend_from_slice(extra);
        args(&list)
    }

    #[test]
    fn the_users_endpoint_listens_by_default_and_can_be_turned_off() {
        let config = with(&[]).unwrap();
        assert_eq!(config.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert_eq!(config.advertise, None);
        assert_eq!(with(&["--listen", "off"]).unwrap().listen, None);
        let config = with(&["--listen", "127.0.0.1:0", "--advertise", "dev-01:7401"]).unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.advertise.as_deref(), Some("dev-01:7401"));
        let error = with(&["--listen", "everywhere"]).unwrap_err().to_string();
        assert!(error.contains("IP:PORT or `off`"), "{error}");
        let error = with(&["--advertise", "dev-01"]).unwrap_err().to_string();
        assert!(error.contains("HOST:PORT"), "{error}");
    }

    #[test]
    fn a_join_token_comes_from_a_file_stdin_or_the_environment_never_a_flag() {
        let file = |path: &str| Some(PathBuf::from(path));
        assert_eq!(
            TokenSource::choose(file("/t"), file("/f"), true),
            Some(TokenSource::File("/t".into()))
        );
        assert_eq!(
            TokenSource::choose(None, file("/f"), true),
            Some(TokenSource::File("/f".into()))
        );
        assert_eq!(
            TokenSource::choose(file("-"), None, false),
            Some(TokenSource::Stdin)
        );
        assert_eq!(
            TokenSource::choose(None, None, true),
            Some(TokenSource::Environment)
        );
        assert_eq!(TokenSource::choose(None, None, false), None);
        let config = with(&["--join-token-file", "/run/token"]).unwrap();
        assert_eq!(
            config.join_token,
            Some(TokenSource::File("/run/token".into()))
        );
        // No flag takes the token itself.
        assert!(with(&["--join-token", "NXJT1-x"]).is_err());
    }

    #[test]
    fn the_tls_dir_defaults_to_the_data_dirs_and_the_host_id_to_the_hostname() {
        let config = args(&["--coordinator", "c:1", "--data-dir", "/d", "--host-id", "h"]).unwrap();
        assert_eq!(config.tls_dir, Path::new("/d/pki"));
        assert_eq!(
            host_id_from_hostname(Some("dev-01".into()))
                .unwrap()
                .as_str(),
            "dev-01"
        );
        let error = host_id_from_hostname(Some("bad/name".into()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--host-id is required") && error.contains("bad/name"),
            "{error}"
        );
        let error = host_id_from_hostname(None).unwrap_err().to_string();
        assert!(error.contains("--host-id is required"), "{error}");
    }

    #[test]
    fn the_log_goes_under_the_data_dir_unless_told_otherwise() {
        let log = with(&[]).unwrap().daemon_log();
        assert_eq!(log.dir, Path::new("/d/logs"));
        assert_eq!(log.source, "agent-h");
        assert_eq!(log.rotation, Rotation::default());
        let config = with(&["--log-dir", "/var/log/nexus", "--log-max-bytes", "2097152"]).unwrap();
        assert_eq!(config.log_dir, Path::new("/var/log/nexus"));
        assert_eq!(config.log_max_bytes, 2 << 20);
        let error = with(&["--log-max-bytes", "10"]).unwrap_err().to_string();
        assert!(error.contains("at least"), "{error}");
    }

    #[test]
    fn monitoring_http_is_on_loopback_by_default_and_can_be_turned_off() {
        assert_eq!(
            with(&[]).unwrap().http_listen,
            Listen::At("127.0.0.1:7481".parse().unwrap())
        );
        assert_eq!(
            with(&["--http-listen", "off"]).unwrap().http_listen,
            Listen::Off
        );
        let error = with(&["--http-listen", "7481"]).unwrap_err().to_string();
        assert!(
            error.contains("IP:PORT") && error.contains("`off`"),
            "{error}"
        );
    }

    #[test]
    fn flags_make_a_config() {
        let config = args(&[
            "--host-id",
            "dev-01",
            "--coordinator",
            "127.0.0.1:1,127.0.0.1:2",
            "--coordinator",
            "c3:3",
            "--tls-dir",
            "/t",
            "--data-dir",
            "/d",
            "--runtime",
            "hollow",
            "--port-range",
            "30000-30010",
            "--label",
            "gpu=no",
            "--heartbeat-interval",
            "0.5",
            "--stats-interval",
            "2",
            "--max-concurrent-ops",
            "5",
            "--docker-socket",
            "/run/d.sock",
            "--network-pool",
            "docker",
            "--ready-networks",
            "0",
            "--capacity-cpus",
            "4",
            "--capacity-memory-mib",
            "1024",
            "--hollow-start-ms",
            "7",
            "--hollow-failure-rate",
            "0.25",
        ])
        .unwrap();
        assert_eq!(config.coordinators, ["127.0.0.1:1", "127.0.0.1:2", "c3:3"]);
        assert_eq!(config.runtime, RuntimeKind::Hollow);
        assert_eq!(config.port_range.len(), 11);
        assert_eq!(config.labels.get("gpu").map(String::as_str), Some("no"));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(config.stats_interval, Duration::from_secs(2));
        assert_eq!(config.max_concurrent_ops, 5);
        assert_eq!(config.docker_socket, "/run/d.sock");
        assert_eq!(config.network_pool, None);
        assert_eq!(config.ready_networks, 0);
        assert_eq!(config.capacity_cpus, Some(4));
        assert_eq!(config.capacity_memory_bytes, Some(1 << 30));
        assert_eq!(config.hollow.start_latency, Duration::from_millis(7));
        assert!((config.hollow.failure_rate - 0.25).abs() < f64::EPSILON);
    }

    #[test]
    fn the_shipped_example_parses() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/agent.toml");
        let config = args(&["--config", example]).unwrap();
        assert_eq!(config.host_id.as_str(), "dev-01");
        assert_eq!(config.coordinators.len(), 3);
        assert_eq!(config.runtime, RuntimeKind::Docker);
        assert_eq!(config.port_range, PortRange::DEFAULT);
        assert_eq!(
            config.labels.get("zone").map(String::as_str),
            Some("eu-west-1a")
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let base = [
            "--host-id",
            "h",
            "--coordinator",
            "a:1",
            "--tls-dir",
            "t",
            "--data-dir",
            "d",
        ];
        let with = |extra: &[&str]| args(&[&base[..], extra].concat());
        assert!(with(&["--port-range", "9-1"]).is_err());
        assert!(with(&["--runtime", "podman"]).is_err());
        assert!(with(&["--label", "novalue"]).is_err());
        assert!(
            with(&["--heartbeat-interval", "0"])
                .unwrap_err()
                .to_string()
                .contains("between")
        );
        assert!(with(&["--max-concurrent-ops", "0"]).is_err());
        assert!(with(&["--network-pool", "10.0.0.0/30"]).is_err());
        assert_eq!(
            with(&[]).unwrap().network_pool,
            Some(NetworkPool::DEFAULT),
            "the default pool"
        );
        assert_eq!(with(&[]).unwrap().ready_networks, 2, "two ready networks");
        assert!(
            with(&["--ready-networks", "17"])
                .unwrap_err()
                .to_string()
                .contains("between 0 and 16")
        );
        assert!(with(&["--hollow-failure-rate", "1.5"]).is_err());
        assert!(with(&["--capacity-cpus", "0"]).is_err());
        assert!(with(&["--stats-interval", "0.01"]).is_err());
        assert!(args(&["--host-id", "bad/id"]).is_err());
        assert!(
            args(&["--host-id", "h"])
                .unwrap_err()
                .to_string()
                .contains("--coordinator is required")
        );
        // Every problem, not only the first, each on its own line: a file's are placed where
        // they are by `--check-config` (`config::check`).
        let several = with(&[
            "--heartbeat-interval",
            "0",
            "--max-concurrent-ops",
            "0",
            "--listen",
            "nowhere",
        ])
        .unwrap_err()
        .to_string();
        let lines: Vec<&str> = several.lines().collect();
        assert_eq!(lines.len(), 3, "{several}");
        for (line, start) in
            lines
                .iter()
                .zip(["--heartbeat-interval", "--max-concurrent-ops", "--listen"])
        {
            assert!(line.starts_with(start), "{line:?} is not {start:?}…");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "host_id = \"h\"\ncoordinators = [\"a:1\"]\ndata_dir = \"/d\"\n\
             stats_interval = 0.01\nready_networks = 17\n",
        )
        .unwrap();
        let found = check::problems(Args {
            config: Some(path.clone()),
            ..Args::default()
        });
        let shown = path.display();
        assert!(found.len() >= 2, "{found:#?}");
        assert!(
            found[0].starts_with(&format!("{shown}:4:1: --stats-interval")),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with(&format!("{shown}:5:1: --ready-networks")),
            "{found:#?}"
        );
    }
}
