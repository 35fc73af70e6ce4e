//! The coordinator's configuration: command-line flags, or a TOML file with the same keys (flags
//! win). It checks what it is given and says what is wrong ([`ConfigError`]); it does not open
//! files other than the one `--config` names, nor anything the settings point to.

pub mod check;
pub mod lifetimes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use nexus_protocol::NodeId;
use nexus_protocol::id::InvalidId;
use nexus_protocol::logging::{self, DaemonLog, Rotation};
use nexus_protocol::settings::Problems;
use nexus_protocol::transport::TransportConfig;
use nexus_telemetry::http::{InvalidListen, Listen};
use serde::Deserialize;

use crate::cluster::DriverConfig;

/// A complete, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub listen: SocketAddr,
    pub peers: Vec<(NodeId, String)>,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub max_frame_bytes: usize,
    pub join: bool,
    pub advertise: Option<String>,
    pub driver: DriverConfig,
    /// How long a host may be silent before the leader marks it down.
    pub host_ttl: Duration,
    /// Where to serve `/metrics`, `/livez` and `/readyz` over plain HTTP, if anywhere.
    pub http_listen: Listen,
    /// Where the structured log goes (default `DATA_DIR/logs`), and how much of it to keep.
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
    /// Where this node keeps its backups (default `DATA_DIR/backups`).
    pub backup_dir: PathBuf,
    /// The log filter from a flag or the file (checked); `None`: `NEXUS_LOG`, else `info`.
    pub log_filter: Option<String>,
    /// The credential store's key file (`nexus admin credentials new-key`); without it, every
    /// credential operation answers `CREDENTIALS_KEY_MISSING`. Hot: read again at each reload.
    pub credentials_key_file: Option<PathBuf>,
    /// How long the agents' and coordinators' certificates this node signs live. Hot.
    pub cert_lifetime: Duration,
    /// How long users' certificates (login sessions) this node signs live. Hot.
    pub user_cert_lifetime: Duration,
}

/// Where a coordinator serves its monitoring HTTP by default (loopback: nothing there is secret,
/// but exposing it is the operator's choice).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7480";

impl Config {
    /// Merges the flags over the config file they name, and checks the result: every problem
    /// found, in one error ([`ConfigError::Several`] when there are more than one).
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        Config::checked(args).map_err(ConfigError::from_many)
    }

    /// As [`Config::from_args`], with each problem apart. A file that cannot be read or parsed
    /// is the one problem found: its settings are unknown.
    pub fn checked(args: Args) -> Result<Config, Vec<ConfigError>> {
        let file = match &args.config {
            Some(path) => read_file(path).map_err(|error| vec![error])?,
            None => FileConfig::default(),
        };
        let mut problems = Problems::<ConfigError>::default();
        let file_peers: Vec<(NodeId, String)> = file
            .peers
            .iter()
            .filter_map(|peer| problems.take(parse_peer(peer)))
            .collect();
        let node_id = match (args.node_id, file.node_id) {
            (Some(id), _) => Some(id),
            (None, Some(id)) => problems.take(NodeId::new(id)),
            (None, None) => {
                problems.push(ConfigError::Missing(
                    "--node-id is required (a positive number, unique in the cluster)",
                ));
                None
            }
        };
        let peers = if args.peers.is_empty() {
            file_peers
        } else {
            args.peers
        };
        if let Some(node_id) = node_id
            && peers.iter().any(|(id, _)| *id == node_id)
        {
            problems.push(ConfigError::Invalid(format!(
                "--peer lists this node's own id {node_id}: list only the other coordinators"
            )));
        }
        let mut driver = DriverConfig::default();
        if let Some(ms) = args.tick_ms.or(file.tick_ms) {
            if (1..=10_000).contains(&ms) {
                driver.tick = Duration::from_millis(ms);
            } else {
                problems.push(ConfigError::Invalid(format!(
                    "--tick-ms must be between 1 and 10000, not {ms}"
                )));
            }
        }
        if let Some(ticks) = args.election_ticks.or(file.election_ticks) {
            driver.raft.election_ticks = ticks;
        }
        if let Some(ticks) = args.heartbeat_ticks.or(file.heartbeat_ticks) {
            driver.raft.heartbeat_ticks = ticks;
        }
        if driver.raft.heartbeat_ticks == 0
            || driver.raft.election_ticks <= driver.raft.heartbeat_ticks
        {
            problems.push(ConfigError::Invalid(format!(
                "--election-ticks ({}) must be more than --heartbeat-ticks ({}), which must be positive",
                driver.raft.election_ticks, driver.raft.heartbeat_ticks
            )));
        }
        if let Some(every) = args.snapshot_every.or(file.snapshot_every) {
            driver.raft.snapshot_every = every;
        }
        let join = args.join || file.join;
        if join && peers.is_empty() {
            problems.push(ConfigError::Invalid(
                "--join needs at least one --peer: a member of the cluster to join".into(),
            ));
        }
        let host_ttl = args
            .host_ttl
            .or(file.host_ttl)
            .unwrap_or(crate::detector::DEFAULT_HOST_TTL.as_secs_f64());
        if !(0.2..=86_400.0).contains(&host_ttl) {
            problems.push(ConfigError::Invalid(format!(
                "--host-ttl must be between 0.2 and 86400 seconds, not {host_ttl}"
            )));
        }
        let http_listen = match args.http_listen.or(file.http_listen) {
            Some(listen) => Some(listen),
            None => problems.take(
                DEFAULT_HTTP_LISTEN
                    .parse()
                    .map_err(|error: InvalidListen| ConfigError::Invalid(error.to_string())),
            ),
        };
        let log_max_bytes = args
            .log_max_bytes
            .or(file.log_max_bytes)
            .unwrap_or(Rotation::DEFAULT_TOTAL_BYTES);
        if log_max_bytes < Rotation::MIN_TOTAL_BYTES {
            problems.push(ConfigError::Invalid(format!(
                "--log-max-bytes must be at least {} (1 MiB), not {log_max_bytes}",
                Rotation::MIN_TOTAL_BYTES
            )));
        }
        let log_filter = args.log_filter.or(file.log_filter);
        if let Some(filter) = &log_filter
            && let Err(error) = logging::check_filter(filter)
        {
            problems.push(ConfigError::Invalid(format!("--log-filter: {error}")));
        }
        let data_dir = problems.take(
            args.data_dir
                .or(file.data_dir)
                .ok_or(ConfigError::Missing("--data-dir is required")),
        );
        let lifetimes = lifetimes::lifetimes(
            (
                args.cert_lifetime.as_deref(),
                args.user_cert_lifetime.as_deref(),
            ),
            (
                file.cert_lifetime.as_deref(),
                file.user_cert_lifetime.as_deref(),
            ),
            &mut problems,
        );
        let listen = problems.take(args.listen.or(file.listen).ok_or(ConfigError::Missing(
            "--listen is required, e.g. --listen 127.0.0.1:7400",
        )));
        let tls_dir = problems.take(args.tls_dir.or(file.tls_dir).ok_or(ConfigError::Missing(
            "--tls-dir is required (a `nexus pki` directory)",
        )));
        let (
            Some(node_id),
            Some(http_listen),
            Some(data_dir),
            Some(lifetimes),
            Some(listen),
            Some(tls_dir),
        ) = (node_id, http_listen, data_dir, lifetimes, listen, tls_dir)
        else {
            return problems.finish(None);
        };
        problems.finish(Some(Config {
            cert_lifetime: lifetimes.node,
            user_cert_lifetime: lifetimes.user,
            credentials_key_file: args.credentials_key_file.or(file.credentials_key_file),
            backup_dir: args
                .backup_dir
                .or(file.backup_dir)
                .unwrap_or_else(|| data_dir.join("backups")),
            log_filter,
            log_dir: args
                .log_dir
                .or(file.log_dir)
                .unwrap_or_else(|| data_dir.join("logs")),
            log_max_bytes,
            data_dir,
            http_listen,
            host_ttl: Duration::from_secs_f64(host_ttl),
            join,
            advertise: args.advertise.or(file.advertise),
            driver,
            node_id,
            listen,
            peers,
            tls_dir,
            max_frame_bytes: args
                .max_frame_bytes
                .or(file.max_frame_bytes)
                .unwrap_or(nexus_protocol::codec::DEFAULT_MAX_FRAME_LEN),
        }))
    }

    /// The log filter in force: `--log-filter` or the file's, else `NEXUS_LOG`, else `info`.
    pub fn log_filter(&self) -> String {
        self.log_filter
            .clone()
            .unwrap_or_else(|| logging::ambient_filter("info"))
    }

    /// Where and as whom this node writes its structured log.
    pub fn daemon_log(&self) -> DaemonLog {
        DaemonLog {
            dir: self.log_dir.clone(),
            source: format!("coordinator-{}", self.node_id),
            rotation: Rotation::for_total(self.log_max_bytes),
        }
    }

    /// The address others reach this node at.
    pub fn advertise(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Connections to peers notice a dead peer within seconds (QUIC's idle timeout is the smaller
    /// of both sides'), not after the 30 s clients get: a connection cached to a process that was
    /// killed would otherwise swallow Raft messages to its successor on the same address and
    /// delay the next election.
    pub fn peer_transport(&self) -> TransportConfig {
        TransportConfig {
            idle_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            ..self.transport()
        }
    }

    /// A batch of Raft messages not acknowledged within a heartbeat interval counts as lost (Raft
    /// sends again); the connection is then dropped and made anew.
    pub fn peer_batch_timeout(&self) -> Duration {
        let heartbeat = self
            .driver
            .tick
            .saturating_mul(u32::try_from(self.driver.raft.heartbeat_ticks).unwrap_or(u32::MAX));
        heartbeat.max(Duration::from_millis(200))
    }

    pub fn transport(&self) -> TransportConfig {
        let codec =
            nexus_protocol::codec::CodecConfig::new(self.max_frame_bytes).unwrap_or_default();
        TransportConfig {
            codec,
            idle_timeout: Duration::from_secs(30),
            // Thousands of agents' connections, each quiet: a send buffer of one datagram each.
            segmentation_offload: false,
            ..TransportConfig::default()
        }
    }
}

/// Why flags and a config file do not make a configuration. Each message names the flag (or the
/// file) to fix. The file's own error is part of the message rather than a `source()`: a binary
/// that prints the chain would otherwise say it twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config file {}: {error}", path.display())]
    ParseFile {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("invalid peer {0:?}: expected ID=HOST:PORT")]
    InvalidPeer(String),
    #[error(transparent)]
    InvalidNodeId(#[from] InvalidId),
    /// A required setting is missing; the message says what it is.
    #[error("{0}")]
    Missing(&'static str),
    /// A setting is out of its range or contradicts another; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// More than one of the above, in the order found, one to a line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// One error for the problems `checked` found: the one, or [`ConfigError::Several`].
    fn from_many(mut problems: Vec<ConfigError>) -> ConfigError {
        match problems.len() {
            1 => problems.remove(0),
            0 => ConfigError::Invalid("the configuration is not valid".into()),
            _ => ConfigError::Several(problems),
        }
    }
}

/// The command line: the daemon's flags (as every script starts it), or a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "nexus-coordinator",
    version,
    about = "The Nexus coordinator: the fleet's state, its scheduler and its API",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CoordinatorCommand>,
    #[command(flatten)]
    pub run: Args,
}

#[derive(Debug, clap::Subcommand)]
pub enum CoordinatorCommand {
    /// Make a fresh data directory from a backup file, for one member of a new cluster (after
    /// losing every coordinator): each member is made from the same file, with the same
    /// `--peer`s it will be started with, then all are started. Refuses a data directory that is
    /// not empty, and a damaged, newer or other cluster's backup.
    Restore(RestoreArgs),
}

/// `nexus-coordinator restore`'s flags; `--config` names the same TOML file the daemon reads.
#[derive(Debug, clap::Args, Default)]
pub struct RestoreArgs {
    /// The backup file (`nexus admin backup create --file`, or a coordinator's backup directory).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// This member's Raft id.
    #[arg(long)]
    pub node_id: Option<NodeId>,
    /// The data directory to make (absent or empty).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The other members of the new cluster, as ID=HOST:PORT, as the daemon will be started.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(NodeId, String)>,
    /// The `nexus pki` directory: the backup must be of this CA's cluster.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// The daemon's TOML file, for whatever the flags leave out.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// What a restore needs, checked.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub from: PathBuf,
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub peers: Vec<(NodeId, String)>,
    pub tls_dir: PathBuf,
}

impl RestorePlan {
    pub fn from_args(args: RestoreArgs) -> Result<RestorePlan, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let node_id = match (args.node_id, file.node_id) {
            (Some(id), _) => id,
            (None, Some(id)) => NodeId::new(id)?,
            (None, None) => return Err(ConfigError::Missing("--node-id is required")),
        };
        let peers = if args.peers.is_empty() {
            file.peers
                .iter()
                .map(|peer| parse_peer(peer))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            args.peers
        };
        if peers.iter().any(|(id, _)| *id == node_id) {
            return Err(ConfigError::Invalid(format!(
                "--peer lists this node's own id {node_id}: list only the other coordinators"
            )));
        }
        Ok(RestorePlan {
            from: args.from,
            node_id,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .ok_or(ConfigError::Missing("--data-dir is required"))?,
            peers,
            tls_dir: args.tls_dir.or(file.tls_dir).ok_or(ConfigError::Missing(
                "--tls-dir is required (the cluster's `nexus pki` directory)",
            ))?,
        })
    }

    /// The new cluster's voters: this node and its peers.
    pub fn voters(&self) -> Vec<NodeId> {
        std::iter::once(self.node_id)
            .chain(self.peers.iter().map(|(id, _)| *id))
            .collect()
    }
}

/// Flags, as the command line gives them. Every field may also come from `--config FILE`.
#[derive(Debug, Clone, Parser, Default)]
#[command(
    name = "nexus-coordinator",
    version,
    about = "The Nexus coordinator: the fleet's state, its scheduler and its API"
)]
pub struct Args {
    /// This node's Raft id (a positive number, unique in the cluster).
    #[arg(long)]
    pub node_id: Option<NodeId>,
    /// The UDP address to serve QUIC on, e.g. 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Another coordinator, as ID=HOST:PORT. Repeat for each. None: a one-node cluster.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(NodeId, String)>,
    /// Where this node keeps its state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The `nexus pki` directory with ca.pem and coordinator-<ID>.pem/.key.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// A TOML file with any of the settings above (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The largest message frame accepted, in bytes.
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// Start as a new member of an existing cluster (`--peer` lists members to reach); an admin
    /// then adds it with `nexus admin cluster add`. Without it, a first start founds a cluster of
    /// this node and its `--peer`s.
    #[arg(long)]
    pub join: bool,
    /// The address peers and clients use to reach this node, if not `--listen`'s.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Milliseconds between Raft ticks.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Ticks without a leader before an election (randomised in [this, 1.5 × this)).
    #[arg(long)]
    pub election_ticks: Option<usize>,
    /// Ticks between a leader's heartbeats.
    #[arg(long)]
    pub heartbeat_ticks: Option<usize>,
    /// Snapshot the state and truncate the log after at least this many entries (and at least
    /// as many bytes of them as the last snapshot took; a quarter more on node 2, 5, ..., a half
    /// more on node 3, 6, ..., so that members do not snapshot together).
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Seconds without a heartbeat before the leader marks a host down (default 14: three
    /// heartbeats of 5 s, less a second, so a dead host is marked down within 15 s).
    #[arg(long)]
    pub host_ttl: Option<f64>,
    /// Where to serve /metrics, /livez and /readyz over HTTP, IP:PORT (default 127.0.0.1:7480),
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
    /// Where this node writes and keeps its backups (default DATA_DIR/backups). Backups hold the
    /// fleet's whole state: the directory is made 0700 and each file 0600.
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// What to log, in tracing's filter syntax (`info`, `nexus_coordinator=debug,info`); default
    /// `NEXUS_LOG`, else `info`. Hot: a reload applies the file's.
    #[arg(long)]
    pub log_filter: Option<String>,
    /// The credential store's key file (made by `nexus admin credentials new-key`, mode 0600,
    /// the newest key last). Every coordinator needs the same keys; keep it out of backups. Hot:
    /// read again at each reload.
    #[arg(long)]
    pub credentials_key_file: Option<PathBuf>,
    /// How long the certificates this node signs for agents and coordinators live (`90d`,
    /// `24h`, `20s`; default 90d); each renews itself at two thirds of it. Hot.
    #[arg(long, value_name = "DURATION")]
    pub cert_lifetime: Option<String>,
    /// How long a user's session (the certificate `nexus login` gets) lives (default 12h). Hot.
    #[arg(long, value_name = "DURATION")]
    pub user_cert_lifetime: Option<String>,
    /// Check the configuration (the flags and the `--config` file, and the TLS files it names)
    /// and exit: 0 if it would start, 1 with each problem and where it is.
    #[arg(long)]
    pub check_config: bool,
}

/// The keys a `--config` file may hold.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    listen: Option<SocketAddr>,
    #[serde(default)]
    peers: Vec<String>,
    data_dir: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    max_frame_bytes: Option<usize>,
    #[serde(default)]
    join: bool,
    advertise: Option<String>,
    tick_ms: Option<u64>,
    election_ticks: Option<usize>,
    heartbeat_ticks: Option<usize>,
    snapshot_every: Option<u64>,
    host_ttl: Option<f64>,
    #[serde(default, deserialize_with = "listen_from_text")]
    http_listen: Option<Listen>,
    log_dir: Option<PathBuf>,
    log_max_bytes: Option<u64>,
    backup_dir: Option<PathBuf>,
    log_filter: Option<String>,
    credentials_key_file: Option<PathBuf>,
    cert_lifetime: Option<String>,
    user_cert_lifetime: Option<String>,
}

fn listen_from_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Listen>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn parse_peer(value: &str) -> Result<(NodeId, String), ConfigError> {
    let (id, address) = value
        .split_once('=')
        .ok_or_else(|| ConfigError::InvalidPeer(value.to_string()))?;
    let id = id.parse::<NodeId>()?;
    if !address.contains(':') {
        return Err(ConfigError::InvalidPeer(value.to_string()));
    }
    Ok((id, address.to_string()))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::ReadFile {
        path: path.to_path_buf(),
        error,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::ParseFile {
        path: path.to_path_buf(),
        error: Box::new(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("nexus-coordinator").chain(list.iter().copied()))
            .unwrap()
    }

    /// A config from the required flags and `extra`.
    fn with(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut list = vec![
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7400",
            "--data-dir",
            "/d",
            "--tls-dir",
            "/t",
        ];
        list.extend_from_slice(extra);
        Config::from_args(args(&list))
    }

    #[test]
    fn flags_make_a_config() {
        let config = with(&["--peer", "2=10.0.0.2:7400", "--peer", "3=coord3:7400"]).unwrap();
        assert_eq!(config.node_id.get(), 1);
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.peers[1].1, "coord3:7400");
        assert_eq!(
            config.http_listen,
            Listen::At("127.0.0.1:7480".parse().unwrap())
        );
    }

    #[test]
    fn monitoring_http_comes_from_a_flag_or_the_file_and_can_be_off() {
        assert_eq!(
            with(&["--http-listen", "off"]).unwrap().http_listen,
            Listen::Off
        );
        assert!(
            Args::try_parse_from(["nexus-coordinator", "--http-listen", "everywhere"]).is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "http_listen = \"0.0.0.0:9100\"\n").unwrap();
        let config = with(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(
            config.http_listen,
            Listen::At("0.0.0.0:9100".parse().unwrap())
        );
        std::fs::write(&path, "http_listen = \"everywhere\"\n").unwrap();
        let error = with(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("IP:PORT"), "{error}");
    }

    #[test]
    fn the_log_goes_under_the_data_dir_unless_told_otherwise() {
        let config = with(&[]).unwrap();
        let log = config.daemon_log();
        assert_eq!(log.dir, Path::new("/d/logs"));
        assert_eq!(log.source, "coordinator-1");
        assert_eq!(log.rotation, Rotation::default());
        let config = with(&["--log-dir", "/var/log/nexus", "--log-max-bytes", "8388608"]).unwrap();
        assert_eq!(config.log_dir, Path::new("/var/log/nexus"));
        assert_eq!(config.daemon_log().rotation.max_file_bytes, 1 << 20);
        let error = with(&["--log-max-bytes", "1000"]).unwrap_err().to_string();
        assert!(error.contains("at least"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "log_dir = \"/l\"\nlog_max_bytes = 2097152\n").unwrap();
        let config = with(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(config.log_dir, Path::new("/l"));
        assert_eq!(config.log_max_bytes, 2 << 20);
    }

    #[test]
    fn backups_go_under_the_data_dir_unless_told_otherwise() {
        assert_eq!(with(&[]).unwrap().backup_dir, Path::new("/d/backups"));
        let config = with(&["--backup-dir", "/b"]).unwrap();
        assert_eq!(config.backup_dir, Path::new("/b"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "backup_dir = \"/srv/nexus-backups\"\n").unwrap();
        let config = with(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(config.backup_dir, Path::new("/srv/nexus-backups"));
    }

    #[test]
    fn certificate_lifetimes_come_from_flags_or_the_file() {
        let config = with(&[]).unwrap();
        assert_eq!(config.cert_lifetime, Duration::from_secs(90 * 86_400));
        assert_eq!(config.user_cert_lifetime, Duration::from_secs(12 * 3600));
        let config = with(&["--cert-lifetime", "20s", "--user-cert-lifetime", "5m"]).unwrap();
        assert_eq!(config.cert_lifetime, Duration::from_secs(20));
        assert_eq!(config.user_cert_lifetime, Duration::from_secs(300));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "cert_lifetime = \"2h\"\n").unwrap();
        let config = with(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(config.cert_lifetime, Duration::from_secs(7200));
        let error = with(&["--cert-lifetime", "0"]).unwrap_err().to_string();
        assert!(error.contains("--cert-lifetime"), "{error}");
    }

    #[test]
    fn a_file_fills_what_flags_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "node_id = 2\nlisten = \"127.0.0.1:1\"\ndata_dir = \"/d\"\ntls_dir = \"/t\"\npeers = [\"1=a:1\"]\n").unwrap();
        let config = Config::from_args(args(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2",
        ]))
        .unwrap();
        assert_eq!(config.node_id.get(), 2);
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.peers.len(), 1);
        std::fs::write(&path, "node_id = 2\nbogus = 1\n").unwrap();
        let error = Config::from_args(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/coordinator.toml"
        );
        let config = Config::from_args(args(&["--config", example])).unwrap();
        assert_eq!(config.node_id.get(), 1);
        assert_eq!(config.listen.port(), 7400);
        assert_eq!(
            config.max_frame_bytes,
            nexus_protocol::codec::DEFAULT_MAX_FRAME_LEN
        );
    }

    #[test]
    fn the_daemon_starts_with_flags_only_and_restore_is_a_subcommand() {
        let cli = Cli::try_parse_from([
            "nexus-coordinator",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7400",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.node_id.unwrap().get(), 1);
        let cli = Cli::try_parse_from([
            "nexus-coordinator",
            "restore",
            "--from",
            "b.nxbackup",
            "--data-dir",
            "/d",
            "--node-id",
            "2",
            "--peer",
            "1=a:1",
            "--peer",
            "3=c:1",
            "--tls-dir",
            "/t",
        ])
        .unwrap();
        let Some(CoordinatorCommand::Restore(args)) = cli.command else {
            panic!("not a restore")
        };
        let plan = RestorePlan::from_args(args).unwrap();
        assert_eq!(plan.node_id.get(), 2);
        assert_eq!(
            plan.voters().iter().map(|id| id.get()).collect::<Vec<_>>(),
            [2, 1, 3]
        );
        // Not both: a daemon's flag before the subcommand is refused.
        assert!(
            Cli::try_parse_from([
                "nexus-coordinator",
                "--node-id",
                "1",
                "restore",
                "--from",
                "f"
            ])
            .is_err()
        );
        let missing = RestorePlan::from_args(RestoreArgs {
            from: "f".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(missing.to_string().contains("--node-id"), "{missing}");
    }

    #[test]
    fn bad_flags_are_explained() {
        let missing = Config::from_args(args(&["--listen", "127.0.0.1:1"])).unwrap_err();
        assert!(missing.to_string().contains("--node-id is required"));
        assert!(Args::try_parse_from(["c", "--peer", "x"]).is_err());
        assert!(Args::try_parse_from(["c", "--node-id", "0"]).is_err());
        let own = Config::from_args(args(&[
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "d",
            "--tls-dir",
            "t",
            "--peer",
            "1=a:1",
        ]));
        assert!(own.unwrap_err().to_string().contains("own id"));
        // Every problem, not only the first: one a line.
        let several = Config::from_args(args(&["--tick-ms", "0", "--host-ttl", "0"])).unwrap_err();
        let lines: Vec<String> = several.to_string().lines().map(str::to_string).collect();
        assert!(matches!(several, ConfigError::Several(_)), "{several}");
        assert_eq!(lines.len(), 6, "{lines:#?}");
        for (line, start) in lines.iter().zip([
            "--node-id is required",
            "--tick-ms",
            "--host-ttl",
            "--data-dir",
            "--listen",
            "--tls-dir",
        ]) {
            assert!(line.starts_with(start), "{line:?} is not {start:?}…");
        }
    }
}
