//! What the agent tells an admin about itself (`HostRequest::Diagnostic`), for the support
//! bundle and `nexus admin health-check`: its configuration, metrics, certificates, readiness
//! and engine.
//!
//! The configuration is redacted by allow-list ([`redacted_config`]): only the settings known
//! to hold no secret are written; a registry's credentials show as `(redacted)`; a setting added
//! to [`Config`] stays out until it is added here. Paths of key files are shown, never what they
//! hold. The engine's answer names containers, images and states, never an environment.

use std::sync::{Arc, PoisonError, RwLock};

use futures_util::future::BoxFuture;
use nexus_protocol::debug::{CertificateInfo, Diagnostic};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::settings::Shown;
use nexus_protocol::transport::Credentials;
use nexus_telemetry::http::{Monitor, Probes};
use nexus_telemetry::metrics::Format;
use toml::{Table, Value};

use crate::config::Config;
use crate::runtime::Runtime;

/// What a redacted secret reads as.
pub const REDACTED: &str = "(redacted)";

/// What the monitoring server answers, read by the agent itself: the exposition and the
/// readiness (a [`Monitor`] of the agent's probes, whatever their type).
pub trait Monitored: Send + Sync {
    fn metrics(&self) -> BoxFuture<'_, String>;
    fn readiness(&self) -> BoxFuture<'_, String>;
}

impl<P: Probes> Monitored for Monitor<P> {
    fn metrics(&self) -> BoxFuture<'_, String> {
        Box::pin(Monitor::metrics(self, Format::Classic))
    }

    fn readiness(&self) -> BoxFuture<'_, String> {
        Box::pin(async { self.ready(true).await.body })
    }
}

/// What the agent answers diagnostics from: made at its start; a reload replaces the
/// configuration, and the certificates are read from the credentials in force.
pub struct Diagnostics {
    /// The configuration, redacted ([`redacted_config`]).
    config: RwLock<String>,
    credentials: Credentials,
    monitor: Arc<dyn Monitored>,
}

impl std::fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diagnostics").finish_non_exhaustive()
    }
}

impl Diagnostics {
    pub fn new(
        config: &Config,
        credentials: &Credentials,
        monitor: Arc<dyn Monitored>,
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

    /// `diagnostic` as text; the engine's through `runtime`.
    pub async fn answer<R: Runtime>(
        &self,
        diagnostic: Diagnostic,
        runtime: &R,
    ) -> Result<String, WireError> {
        Ok(match diagnostic {
            Diagnostic::Config => self
                .config
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            Diagnostic::Metrics => self.monitor.metrics().await,
            Diagnostic::Certificates => {
                let expiries = self.credentials.expiries();
                json(&CertificateInfo::of(
                    self.credentials.identity(),
                    expiries.own,
                    expiries.ca,
                ))
            }
            Diagnostic::Readiness => self.monitor.readiness().await,
            Diagnostic::Engine => json(&runtime.engine().await.map_err(|e| e.to_wire())?),
        })
    }
}

/// `value` as pretty JSON (our own plain types: it cannot fail, and would say so if it did).
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Why a diagnostic is refused: only admins ask.
pub fn admins_only() -> WireError {
    WireError::new(
        ErrorCode::PermissionDenied,
        "only admins ask an agent about itself",
    )
}

/// The effective configuration as TOML, in the config file's keys, with only the settings known
/// to be safe to show.
pub fn redacted_config(config: &Config) -> String {
    toml::to_string(&redacted_table(config))
        .unwrap_or_else(|e| format!("# the configuration cannot be shown: {e}\n"))
}

/// The settings of [`redacted_config`], each value as TOML shows it (a string without its
/// quotes): what a reload compares. Registries' credentials are redacted here too, so a reload
/// compares them apart ([`crate::reload`]).
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
    let text = |s: &str| Value::String(s.to_string());
    let seconds = |d: std::time::Duration| Value::Float(d.as_secs_f64());
    let number = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    put("host_id", text(config.host_id.as_str()));
    put(
        "coordinators",
        Value::Array(config.coordinators.iter().map(|c| text(c)).collect()),
    );
    put("tls_dir", text(&config.tls_dir.display().to_string()));
    if let Some(source) = &config.join_token {
        // Where the token comes from, never the token.
        put("join_token_file", text(&source.to_string()));
    }
    put("data_dir", text(&config.data_dir.display().to_string()));
    put("runtime", text(&config.runtime.to_string()));
    put("port_range", text(&config.port_range.to_string()));
    put(
        "labels",
        Value::Table(
            config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect(),
        ),
    );
    put("heartbeat_interval", seconds(config.heartbeat_interval));
    put("stats_interval", seconds(config.stats_interval));
    put(
        "max_concurrent_ops",
        number(config.max_concurrent_ops as u64),
    );
    put("docker_socket", text(&config.docker_socket));
    put(
        "network_pool",
        text(
            &config
                .network_pool
                .map_or_else(|| "docker".to_string(), |pool| pool.to_string()),
        ),
    );
    put("ready_networks", number(config.ready_networks as u64));
    if let Some(cpus) = config.capacity_cpus {
        put("capacity_cpus", number(u64::from(cpus)));
    }
    if let Some(bytes) = config.capacity_memory_bytes {
        put("capacity_memory_mib", number(bytes >> 20));
    }
    let hollow = config.hollow;
    put(
        "hollow_start_ms",
        number(u64::try_from(hollow.start_latency.as_millis()).unwrap_or(u64::MAX)),
    );
    put(
        "hollow_stop_ms",
        number(u64::try_from(hollow.stop_latency.as_millis()).unwrap_or(u64::MAX)),
    );
    put("hollow_failure_rate", Value::Float(hollow.failure_rate));
    put(
        "listen",
        text(
            &config
                .listen
                .map_or_else(|| "off".to_string(), |l| l.to_string()),
        ),
    );
    if let Some(advertise) = &config.advertise {
        put("advertise", text(advertise));
    }
    put("http_listen", text(&config.http_listen.to_string()));
    put("log_dir", text(&config.log_dir.display().to_string()));
    put("log_max_bytes", number(config.log_max_bytes));
    put("log_filter", text(&config.log_filter()));
    put(
        "registry",
        Value::Array(
            config
                .registries
                .iter()
                .map(|registry| {
                    Value::Table(Table::from_iter([
                        ("server".to_string(), text(&registry.server)),
                        ("username".to_string(), text(REDACTED)),
                        ("password".to_string(), text(REDACTED)),
                    ]))
                })
                .collect(),
        ),
    );
    table
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Args;

    #[test]
    fn the_configuration_shows_settings_and_never_a_registry_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            r#"
                host_id = "dev-01"
                coordinators = ["10.0.0.1:7400"]
                tls_dir = "/etc/nexus/pki"
                data_dir = "/var/lib/nexus"
                labels = { zone = "a" }
                [[registry]]
                server = "registry.example:5000"
                username = "robot-user-7"
                password = "planted-secret-hunter2"
            "#,
        )
        .unwrap();
        let args = Args::try_parse_from([
            "nexus-agent",
            "--config",
            file.to_str().unwrap(),
            "--heartbeat-interval",
            "2.5",
        ])
        .unwrap();
        let config = Config::from_args(args).unwrap();
        let text = redacted_config(&config);
        assert!(!text.contains("planted-secret-hunter2"), "{text}");
        assert!(!text.contains("robot-user-7"), "{text}");
        for shown in [
            "host_id = \"dev-01\"",
            "coordinators = [\"10.0.0.1:7400\"]",
            "tls_dir = \"/etc/nexus/pki\"",
            "heartbeat_interval = 2.5",
            "server = \"registry.example:5000\"",
            "password = \"(redacted)\"",
            "zone = \"a\"",
            "runtime = \"docker\"",
        ] {
            assert!(text.contains(shown), "{shown} in\n{text}");
        }
        // It reads back as TOML.
        let back: Table = toml::from_str(&text).unwrap();
        assert_eq!(back["host_id"].as_str(), Some("dev-01"));
    }

    /// Every key a config file may hold is shown: a setting added to the file and not to the
    /// allow-list (which keeps it out of support bundles) fails here rather than going missing.
    #[test]
    fn every_key_of_the_file_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        let config = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let path = file.to_str().unwrap();
            Config::from_args(Args::try_parse_from(["nexus-agent", "--config", path]).unwrap())
        };
        let refusal = config("not_a_key = 1\n").unwrap_err();
        // The whole chain: the parser's message is under the file's name.
        let keys = nexus_fixtures::keys_expected(&format!("{refusal:#}"));
        assert!(keys.len() > 20, "{keys:?} from {refusal:#}");
        // Every optional setting given, so that each has a value to show.
        let every = config(
            r#"
                host_id = "dev-01"
                coordinators = ["10.0.0.1:7400"]
                tls_dir = "/etc/nexus/pki"
                data_dir = "/var/lib/nexus"
                join_token_file = "/etc/nexus/join-token"
                capacity_cpus = 4
                capacity_memory_mib = 2048
                advertise = "dev-01.example:7401"
            "#,
        )
        .unwrap();
        let shown: std::collections::BTreeSet<String> =
            redacted_table(&every).keys().cloned().collect();
        assert_eq!(shown, keys);
    }
}
