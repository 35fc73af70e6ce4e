//! What a daemon shows an operator: its metrics in the Prometheus text formats and its health,
//! over plain HTTP beside the QUIC endpoint (`docs/operations.md`, "Monitoring").
//!
//! - [`metrics`]: the registry and typed metric handles (the home of `prometheus-client`).
//! - [`process`]: the process's own metrics, from `/proc`.
//! - [`health`]: checks, and how `/livez` and `/readyz` answer them.
//! - [`http`]: the server (the home of `axum`), and what a daemon implements for it
//!   ([`http::Probes`]).
//! - [`systemd`]: what a daemon tells its service manager (`READY=1`, the watchdog's pings).
//!
//! Each daemon starts from [`Registry::for_daemon`], which holds what every Nexus daemon exposes,
//! and registers its own metrics beside them.

pub mod health;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod process;
pub mod systemd;

pub use health::Check;
pub use metrics::{Counter, Counters, Gauge, Gauges, Histogram, Histograms, Registry};

/// What every daemon exposes besides its own metrics.
#[derive(Debug, Clone)]
pub struct Common {
    /// When each of the daemon's certificates expires, in seconds since the epoch, by `cert`:
    /// `node` (its own) and `ca`.
    pub cert_expiry: Gauges<1>,
}

impl Common {
    /// Sets when the daemon's own certificate and its CA expire, in seconds since the epoch
    /// (those not known are left out).
    pub fn set_cert_expiries(&self, own: Option<i64>, ca: Option<i64>) {
        for (cert, expiry) in [("node", own), ("ca", ca)] {
            if let Some(expiry) = expiry {
                #[allow(clippy::cast_precision_loss)]
                self.cert_expiry.set([cert], expiry as f64);
            }
        }
    }
}

impl Registry {
    /// A registry with what every daemon exposes: `nexus_build_info{version,role}`, the
    /// process's metrics, and the certificate expiries (which the daemon sets, through
    /// [`Common`]).
    pub fn for_daemon(role: &'static str, version: &'static str) -> (Registry, Common) {
        let mut registry = Registry::new();
        registry
            .gauges(
                "nexus_build_info",
                "Always 1, labelled with the version and role of this daemon.",
                ["version", "role"],
            )
            .set([version, role], 1.0);
        registry.collect(process::Process);
        let cert_expiry = registry.gauges(
            "nexus_cert_expiry_timestamp_seconds",
            "When this daemon's certificate (cert=\"node\") or its CA's (cert=\"ca\") expires, \
             in seconds since the epoch.",
            ["cert"],
        );
        (registry, Common { cert_expiry })
    }
}
