//! The agent's configuration: command-line flags, or a TOML file with the same keys (flags win).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use nexus_protocol::HostId;
use nexus_protocol::model::{Labels, PortRange};
use nexus_protocol::transport::TransportConfig;
use serde::Deserialize;

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

#[derive(Debug, Parser, Default)]
#[command(
    name = "nexus-agent",
    version,
    about = "The Nexus agent: runs a host's workspaces and reports on it"
)]
pub struct Args {
    /// This host's id, as in its certificate (nexus://agent/<host-id>).
    #[arg(long)]
    pub host_id: Option<HostId>,
    /// Coordinators to reach, as HOST:PORT, comma-separated or repeated.
    #[arg(long = "coordinator", value_delimiter = ',')]
    pub coordinators: Vec<String>,
    /// The `nexus pki` directory with ca.pem and agent-<host-id>.pem/.key.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Where this agent keeps its state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
    /// Host ports to publish workspaces on, FIRST-LAST.
    #[arg(long)]
    pub port_range: Option<PortRange>,
    /// A label for scheduling constraints, K=V. Repeat for each.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Seconds between heartbeats.
    #[arg(long)]
    pub heartbeat_interval: Option<f64>,
    /// A TOML file with any of the settings above (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, val)) if !key.is_empty() => Ok((key.to_string(), val.to_string())),
        _ => Err(format!("invalid label {value:?}: expected KEY=VALUE")),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host_id: Option<String>,
    #[serde(default)]
    coordinators: Vec<String>,
    tls_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    runtime: Option<RuntimeKind>,
    port_range: Option<String>,
    #[serde(default)]
    labels: Labels,
    heartbeat_interval: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host_id: HostId,
    pub coordinators: Vec<String>,
    pub tls_dir: PathBuf,
    pub data_dir: PathBuf,
    pub runtime: RuntimeKind,
    pub port_range: PortRange,
    pub labels: Labels,
    pub heartbeat_interval: Duration,
}

impl Config {
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let host_id = match (args.host_id, file.host_id) {
            (Some(id), _) => id,
            (None, Some(id)) => HostId::from_str(&id)?,
            (None, None) => bail!("--host-id is required (this host's id, as in its certificate)"),
        };
        let coordinators = if args.coordinators.is_empty() {
            file.coordinators
        } else {
            args.coordinators
        };
        if coordinators.is_empty() {
            bail!("--coordinator is required, e.g. --coordinator 127.0.0.1:7400");
        }
        let port_range = match (args.port_range, file.port_range) {
            (Some(range), _) => range,
            (None, Some(text)) => text.parse().map_err(anyhow::Error::msg)?,
            (None, None) => PortRange::DEFAULT,
        };
        let mut labels = file.labels;
        labels.extend(args.labels);
        let interval = args
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(5.0);
        if !(0.05..=3600.0).contains(&interval) {
            bail!("--heartbeat-interval must be between 0.05 and 3600 seconds, not {interval}");
        }
        Ok(Config {
            host_id,
            coordinators,
            tls_dir: args
                .tls_dir
                .or(file.tls_dir)
                .context("--tls-dir is required (a `nexus pki` directory)")?,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .context("--data-dir is required")?,
            runtime: args.runtime.or(file.runtime).unwrap_or(RuntimeKind::Docker),
            port_range,
            labels,
            heartbeat_interval: Duration::from_secs_f64(interval),
        })
    }

    pub fn transport(&self) -> TransportConfig {
        TransportConfig::default()
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> anyhow::Result<Config> {
        let args =
            Args::try_parse_from(std::iter::once("nexus-agent").chain(list.iter().copied()))?;
        Config::from_args(args)
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
        ])
        .unwrap();
        assert_eq!(config.coordinators, ["127.0.0.1:1", "127.0.0.1:2", "c3:3"]);
        assert_eq!(config.runtime, RuntimeKind::Hollow);
        assert_eq!(config.port_range.len(), 11);
        assert_eq!(config.labels.get("gpu").map(String::as_str), Some("no"));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
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
        assert!(args(&["--host-id", "bad/id"]).is_err());
        assert!(
            args(&["--host-id", "h"])
                .unwrap_err()
                .to_string()
                .contains("--coordinator is required")
        );
    }
}
