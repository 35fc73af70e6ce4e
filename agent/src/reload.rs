//! Re-reading the agent's configuration while it runs (`nexus config reload --host`, SIGHUP).
//! The file is read again under the flags the process started with (they still win), all of it
//! is checked, and then every hot setting that changed is put in force at once, or, when
//! anything is wrong, none is and the old settings stay.
//!
//! Hot ([`HOT`]): `log_filter`, `heartbeat_interval`, `stats_interval`, the registries'
//! credentials (`registry`, compared apart since they are shown redacted), and the certificate
//! and key in `tls_dir`, read again at each reload (reported as `certificate`): new connections,
//! served or made to coordinators, present the new one; connections already open keep theirs.
//! Lifecycle policies (issue 23) are the coordinators' and reload there. Every other setting that
//! changed is reported as needing a restart, and stays as it was.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nexus_protocol::debug::{ChangedSetting, ReloadReport};
use nexus_protocol::logging::{self, LogFilter};
use nexus_protocol::settings::{self, Changes};
use nexus_protocol::transport::Credentials;
use nexus_telemetry::Common;
use tokio::sync::watch;

use crate::config::{Args, Config};
use crate::diagnostics::{self, REDACTED};
use crate::runtime::docker::Registries;

/// The settings a reload puts in force; the file keys of [`diagnostics::shown`].
pub const HOT: &[&str] = &[
    "log_filter",
    "heartbeat_interval",
    "stats_interval",
    "registry",
];

/// The intervals the loops read, which a reload changes.
#[derive(Debug)]
pub struct Intervals {
    pub heartbeat: watch::Sender<Duration>,
    pub stats: watch::Sender<Duration>,
}

impl Intervals {
    pub fn of(config: &Config) -> Intervals {
        Intervals {
            heartbeat: watch::Sender::new(config.heartbeat_interval),
            stats: watch::Sender::new(config.stats_interval),
        }
    }
}

/// A ticker every `period`, its first tick at once, late ticks delayed rather than bunched.
pub fn pace(period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// What a reload reads again and what it changes.
pub struct Reloader {
    args: Args,
    source: String,
    /// The configuration in force: the start's, with the hot settings of each reload since.
    in_force: Mutex<Config>,
    log_filter: LogFilter,
    credentials: Credentials,
    intervals: Intervals,
    registries: Option<Registries>,
    diagnostics: Option<std::sync::Arc<diagnostics::Diagnostics>>,
    expiries: Option<Common>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(
        args: Args,
        config: Config,
        log_filter: LogFilter,
        credentials: Credentials,
        intervals: Intervals,
    ) -> Reloader {
        Reloader {
            args,
            source: format!("agent-{}", config.host_id),
            in_force: Mutex::new(config),
            log_filter,
            credentials,
            intervals,
            registries: None,
            diagnostics: None,
            expiries: None,
        }
    }

    /// Replaces the Docker engine's registry credentials on a reload.
    pub fn with_registries(mut self, registries: Option<Registries>) -> Reloader {
        self.registries = registries;
        self
    }

    /// Also shows the new settings in `diagnostics` and the new certificate's expiry in
    /// `expiries`' metric.
    pub fn showing(
        mut self,
        diagnostics: Option<std::sync::Arc<diagnostics::Diagnostics>>,
        expiries: Common,
    ) -> Reloader {
        self.diagnostics = diagnostics;
        self.expiries = Some(expiries);
        self
    }

    /// The intervals' receivers, for the link and the sampler.
    pub fn heartbeat_interval(&self) -> watch::Receiver<Duration> {
        self.intervals.heartbeat.subscribe()
    }

    pub fn stats_interval(&self) -> watch::Receiver<Duration> {
        self.intervals.stats.subscribe()
    }

    /// Reads the configuration again and applies it (all its hot changes, or nothing), logging
    /// what it did; `why` says who asked (`SIGHUP`, an admin's request).
    pub fn reload(&self, why: &str) -> ReloadReport {
        let mut in_force = self.in_force.lock().unwrap_or_else(PoisonError::into_inner);
        let report = self.reload_into(&mut in_force);
        logging::reloaded(&report, why);
        report
    }

    fn reload_into(&self, in_force: &mut Config) -> ReloadReport {
        let mut report = ReloadReport {
            source: self.source.clone(),
            ..ReloadReport::default()
        };
        // Everything that can fail, first: nothing changes until all of it passed.
        let new = match Config::from_args(self.args.clone()) {
            Ok(new) => new,
            Err(error) => {
                report.errors.push(format!("{error:#}"));
                return report;
            }
        };
        let Changes {
            mut hot,
            needs_restart,
        } = settings::diff(
            &diagnostics::shown(in_force),
            &diagnostics::shown(&new),
            HOT,
        );
        report.needs_restart = needs_restart;
        if new.registries != in_force.registries && !hot.iter().any(|c| c.key == "registry") {
            // The same servers, other credentials: shown redacted, changed all the same.
            hot.push(ChangedSetting {
                key: "registry".into(),
                old: REDACTED.into(),
                new: format!("{REDACTED} (changed)"),
            });
        }
        let rotation = match self.credentials.prepare_rotation(&in_force.tls_dir) {
            Ok(rotation) => rotation,
            Err(error) => {
                report.errors.push(format!("the certificate: {error}"));
                return report;
            }
        };
        // Then all of it at once.
        for change in &hot {
            match change.key.as_str() {
                "log_filter" => {
                    if let Err(error) = self.log_filter.set(&new.log_filter()) {
                        report.errors.push(error);
                    }
                    in_force.log_filter = new.log_filter.clone();
                }
                "heartbeat_interval" => {
                    self.intervals
                        .heartbeat
                        .send_replace(new.heartbeat_interval);
                    in_force.heartbeat_interval = new.heartbeat_interval;
                }
                "stats_interval" => {
                    self.intervals.stats.send_replace(new.stats_interval);
                    in_force.stats_interval = new.stats_interval;
                }
                "registry" => {
                    if let Some(registries) = &self.registries {
                        *registries.write().unwrap_or_else(PoisonError::into_inner) =
                            new.registries.clone();
                    }
                    in_force.registries = new.registries.clone();
                }
                _ => {}
            }
        }
        report.applied = hot;
        crate::warn_of_agent_toml_registries(in_force);
        if let Some(rotation) = rotation {
            match rotation.commit(&self.credentials) {
                Ok(change) => report.applied.push(change),
                Err(error) => report.errors.push(format!("the certificate: {error}")),
            }
            if let Some(expiries) = &self.expiries {
                let now = self.credentials.expiries();
                expiries.set_cert_expiries(now.own, now.ca);
            }
        }
        if let Some(diagnostics) = &self.diagnostics {
            diagnostics.set_config(in_force);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, RwLock};

    use clap::Parser;
    use nexus_protocol::clock;
    use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, PkiDir, SubjectName, Validity};
    use nexus_protocol::{HostId, Identity};

    use super::*;

    fn reloader(dir: &Path, text: &str) -> (Reloader, std::path::PathBuf, Registries) {
        let pki = PkiDir::new(dir.join("pki"));
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
        let identity = Identity::Agent(HostId::new("h1").unwrap());
        let validity = Validity::starting(clock::now(), Duration::from_secs(3600));
        pki.issue(
            &identity,
            &[SubjectName::Dns("localhost".into())],
            validity,
            true,
        )
        .unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(&file, text).unwrap();
        let args = Args::try_parse_from([
            "nexus-agent",
            "--host-id",
            "h1",
            "--coordinator",
            "127.0.0.1:7400",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
            "--tls-dir",
            dir.join("pki").to_str().unwrap(),
            "--heartbeat-interval",
            "0.5",
            "--config",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let config = Config::from_args(args.clone()).unwrap();
        let credentials = Credentials::from_pki_dir(&dir.join("pki"), &identity).unwrap();
        let registries: Registries = Arc::new(RwLock::new(config.registries.clone()));
        let reloader = Reloader::new(
            args,
            config.clone(),
            LogFilter::detached(&config.log_filter()),
            credentials,
            Intervals::of(&config),
        )
        .with_registries(Some(registries.clone()));
        (reloader, file, registries)
    }

    const REGISTRY: &str =
        "[[registry]]\nserver = \"r:5000\"\nusername = \"u\"\npassword = \"old-secret\"\n";

    #[test]
    fn intervals_and_registry_credentials_reload_and_secrets_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("stats_interval = 10.0\n{REGISTRY}");
        let (reloader, file, registries) = reloader(dir.path(), &base);
        let stats = reloader.stats_interval();
        let heartbeat = reloader.heartbeat_interval();
        // A new password and stats interval; a heartbeat interval its flag overrides; a label
        // (registered once: needs a restart).
        let text = format!(
            "stats_interval = 2.5\nheartbeat_interval = 9.0\nlabels = {{ zone = \"b\" }}\n{}",
            REGISTRY.replace("old-secret", "new-secret")
        );
        std::fs::write(&file, text).unwrap();
        let report = reloader.reload("a test");
        assert!(report.errors.is_empty(), "{report:?}");
        let applied: Vec<String> = report
            .applied
            .iter()
            .map(|c| format!("{}: {} -> {}", c.key, c.old, c.new))
            .collect();
        assert_eq!(
            applied,
            [
                "stats_interval: 10.0 -> 2.5",
                "registry: (redacted) -> (redacted) (changed)"
            ]
        );
        assert_eq!(report.needs_restart, ["labels"]);
        assert!(!format!("{report:?}").contains("secret"), "{report:?}");
        assert_eq!(*stats.borrow(), Duration::from_millis(2500));
        assert_eq!(*heartbeat.borrow(), Duration::from_millis(500));
        assert_eq!(registries.read().unwrap()[0].password, "new-secret");
        // A broken file: nothing moves.
        std::fs::write(&file, "stats_interval = 0.0\n").unwrap();
        let report = reloader.reload("a test");
        assert!(report.errors[0].contains("--stats-interval"), "{report:?}");
        assert_eq!(*stats.borrow(), Duration::from_millis(2500));
        assert_eq!(registries.read().unwrap()[0].password, "new-secret");
    }
}
