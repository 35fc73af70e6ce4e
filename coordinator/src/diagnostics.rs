//! What a coordinator tells an admin about itself (`AdminRequest::Diagnostic`), for the support
//! bundle and `nexus admin health-check`: its configuration, metrics, certificates and
//! readiness. Always this node's own, never forwarded to the leader.
//!
//! The configuration is written by allow-list ([`redacted_config`]): only settings known to hold
//! no secret, in the config file's keys; a setting added to [`Config`] stays out until it is
//! added here. The TLS directory's path is shown, never what its files hold.

use std::sync::{Arc, PoisonError, RwLock};

use nexus_protocol::debug::{CertificateInfo, Diagnostic};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::settings::Shown;
use nexus_protocol::transport::Credentials;
use nexus_telemetry::http::Monitor;
use nexus_telemetry::metrics::Format;
use toml::{Table, Value};

use crate::config::Config;
use crate::probes::Probes;

/// What a coordinator answers diagnostics from: made at its start; a reload replaces the
/// configuration, and the certificates are read from the credentials in force.
#[derive(Debug)]
pub struct Diagnostics {
    config: RwLock<String>,
    credentials: Credentials,
    monitor: Arc<Monitor<Probes>>,
}

impl Diagnostics {
    pub fn new(
        config: &Config,
        credentials: &Credentials,
        monitor: Arc<Monitor<Probes>>,
    ) -> Diagnostics {
        Diagnostics {
            config: RwLock::new(redacted_config(config)),
            credentials: credentials.clone(),
            monitor,
        }
    }

    /// Shows `config` from now on (after a reload).
    pub fn set_config(&self, config: &Config) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = redacted_config(config);
    }

    /// `diagnostic` as text.
    pub async fn answer(&self, diagnostic: Diagnostic) -> Result<String, WireError> {
        Ok(match diagnostic {
            Diagnostic::Config => self
                .config
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            Diagnostic::Metrics => self.monitor.metrics(Format::Classic).await,
            Diagnostic::Certificates => {
                let expiries = self.credentials.expiries();
                let certificates =
                    CertificateInfo::of(self.credentials.identity(), expiries.own, expiries.ca);
                serde_json::to_string_pretty(&certificates)
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
            }
            Diagnostic::Readiness => self.monitor.ready(true).await.body,
            Diagnostic::Engine => {
                return Err(WireError::new(
                    ErrorCode::Unsupported,
                    "a coordinator runs no container engine; ask a host's agent",
                ));
            }
        })
    }
}

/// The effective configuration as TOML, in the config file's keys, with only the settings known
/// to be safe to show.
pub fn redacted_config(config: &Config) -> String {
    toml::to_string(&redacted_table(config))
        .unwrap_or_else(|e| format!("# the configuration cannot be shown: {e}\n"))
}

/// The settings of [`redacted_config`], each value as TOML shows it (a string without its
/// quotes): what a reload compares.
pub fn shown(config: &Config) -> Shown {
    redacted_table(config)
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            (key, text)
        })
        .collect()
}

/// The allow-list: every setting of [`Config`] that is safe to show, under its file key.
fn redacted_table(config: &Config) -> Table {
    let mut table = Table::new();
    let mut put = |key: &str, value: Value| {
        table.insert(key.to_string(), value);
    };
    let text = |s: String| Value::String(s);
    let number = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    put("node_id", number(config.node_id.get()));
    put("listen", text(config.listen.to_string()));
    put(
        "peers",
        Value::Array(
            config
                .peers
                .iter()
                .map(|(id, address)| text(format!("{id}={address}")))
                .collect(),
        ),
    );
    put("data_dir", text(config.data_dir.display().to_string()));
    put("tls_dir", text(config.tls_dir.display().to_string()));
    put("max_frame_bytes", number(config.max_frame_bytes as u64));
    put("join", Value::Boolean(config.join));
    if let Some(advertise) = &config.advertise {
        put("advertise", text(advertise.clone()));
    }
    let driver = &config.driver;
    put(
        "tick_ms",
        number(u64::try_from(driver.tick.as_millis()).unwrap_or(u64::MAX)),
    );
    put("election_ticks", number(driver.raft.election_ticks as u64));
    put(
        "heartbeat_ticks",
        number(driver.raft.heartbeat_ticks as u64),
    );
    put("snapshot_every", number(driver.raft.snapshot_every));
    put("host_ttl", Value::Float(config.host_ttl.as_secs_f64()));
    put("http_listen", text(config.http_listen.to_string()));
    put("log_dir", text(config.log_dir.display().to_string()));
    put("log_max_bytes", number(config.log_max_bytes));
    put("backup_dir", text(config.backup_dir.display().to_string()));
    put("log_filter", text(config.log_filter()));
    if let Some(path) = &config.credentials_key_file {
        put("credentials_key_file", text(path.display().to_string()));
    }
    let lifetime = |d| text(crate::config::lifetimes::show(d));
    put("cert_lifetime", lifetime(config.cert_lifetime));
    put("user_cert_lifetime", lifetime(config.user_cert_lifetime));
    table
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::Parser;

    use super::*;
    use crate::config::Args;

    /// A config from the required flags (node 2) and `extra`.
    fn with(extra: &[&str]) -> Config {
        let required = [
            "nexus-coordinator",
            "--node-id",
            "2",
            "--listen",
            "127.0.0.1:7400",
            "--data-dir",
            "/var/lib/nexus",
            "--tls-dir",
            "/etc/nexus/pki",
        ];
        let args = Args::try_parse_from(required.iter().chain(extra)).unwrap();
        Config::from_args(args).unwrap()
    }

    /// A config read from a file holding `text` alone.
    fn from_file(text: &str) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("coordinator.toml");
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap();
        Config::from_args(Args::try_parse_from(["nexus-coordinator", "--config", path]).unwrap())
    }

    #[test]
    fn the_configuration_reads_back_with_the_files_keys() {
        let config = with(&["--peer", "1=10.0.0.1:7400", "--host-ttl", "9.5"]);
        let text = redacted_config(&config);
        for shown in [
            "node_id = 2",
            "peers = [\"1=10.0.0.1:7400\"]",
            "tls_dir = \"/etc/nexus/pki\"",
            "host_ttl = 9.5",
            "http_listen = \"127.0.0.1:7480\"",
        ] {
            assert!(text.contains(shown), "{shown} in\n{text}");
        }
        // The same keys as a config file: it is one.
        assert_eq!(redacted_config(&from_file(&text).unwrap()), text);
    }

    /// Every key a config file may hold is shown: a setting added to the file and not to the
    /// allow-list (which keeps it out of support bundles) fails here rather than going missing.
    #[test]
    fn every_key_of_the_file_is_shown() {
        let refusal = from_file("not_a_key = 1\n").unwrap_err();
        let keys = nexus_fixtures::keys_expected(&refusal.to_string());
        assert!(keys.len() > 20, "{keys:?} from {refusal}");
        // Every optional setting given, so that each has a value to show.
        let every = with(&[
            "--advertise",
            "coord-2.example:7400",
            "--credentials-key-file",
            "/etc/nexus/credentials.key",
        ]);
        let shown: BTreeSet<String> = redacted_table(&every).keys().cloned().collect();
        assert_eq!(shown, keys);
    }
}
