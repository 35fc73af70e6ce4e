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
