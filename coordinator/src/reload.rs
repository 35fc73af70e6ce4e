//! Re-reading the coordinator's configuration while it runs (`nexus config reload`, SIGHUP). The
//! file is read again under the flags the process started with (they still win), all of it is
//! checked, and then every hot setting that changed is put in force at once, or, when anything is
//! wrong, none is and the old settings stay.
//!
//! Hot ([`HOT`]): `log_filter`, `host_ttl`, and the certificate and key in `tls_dir`, read again
//! at each reload (reported as `certificate`): new connections, served or made to peers, present
//! the new one; connections already open keep theirs. Lifecycle policies (issue 23) belong here
//! when they exist: their keys in [`HOT`], their apply beside the others in [`Reloader::reload`].
//! Every other setting that changed is reported as needing a restart, and stays as it was.

use std::sync::{Arc, Mutex};

use nexus_protocol::debug::ReloadReport;
use nexus_protocol::logging::{self, LogFilter};
use nexus_protocol::settings::{self, Changes};
use nexus_protocol::transport::Credentials;
use nexus_telemetry::Common;

use crate::config::{Args, Config};
use crate::diagnostics::{self, Diagnostics};
use crate::locks::lock;

/// The host TTL in force, shared by the service's detector loop and the reloader that changes it.
pub type HostTtl = Arc<Mutex<std::time::Duration>>;

/// The settings a reload puts in force; the file keys of [`diagnostics::shown`].
pub const HOT: &[&str] = &["log_filter", "host_ttl"];

/// What a reload reads again and what it changes.
#[derive(Debug)]
pub struct Reloader {
    args: Args,
    source: String,
    /// The configuration in force: the start's, with the hot settings of each reload since.
    in_force: Mutex<Config>,
    log_filter: LogFilter,
    credentials: Credentials,
    host_ttl: HostTtl,
    diagnostics: Option<Arc<Diagnostics>>,
    expiries: Option<Common>,
}

impl Reloader {
    /// A reloader for a coordinator started with `args` into `config`, changing the filter, the
    /// credentials and the TTL given here.
    pub fn new(
        args: Args,
        config: Config,
        log_filter: LogFilter,
        credentials: Credentials,
        host_ttl: HostTtl,
    ) -> Reloader {
        Reloader {
            args,
            source: format!("coordinator-{}", config.node_id),
            in_force: Mutex::new(config),
            log_filter,
            credentials,
            host_ttl,
            diagnostics: None,
            expiries: None,
        }
    }

    /// Also shows the new settings in `diagnostics` and the new certificate's expiry in
    /// `expiries`' metric.
    pub fn showing(mut self, diagnostics: Arc<Diagnostics>, expiries: Common) -> Reloader {
        self.diagnostics = Some(diagnostics);
        self.expiries = Some(expiries);
        self
    }

    /// Reads the configuration again and applies it (all its hot changes, or nothing), logging
    /// what it did; `why` says who asked (`SIGHUP`, an admin's request).
    pub fn reload(&self, why: &str) -> ReloadReport {
        let mut in_force = lock(&self.in_force);
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
                report.errors.push(error.to_string());
                return report;
            }
        };
        let Changes { hot, needs_restart } = settings::diff(
            &diagnostics::shown(in_force),
            &diagnostics::shown(&new),
            HOT,
        );
        report.needs_restart = needs_restart;
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
                "host_ttl" => {
                    *lock(&self.host_ttl) = new.host_ttl;
                    in_force.host_ttl = new.host_ttl;
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
