//! Host maintenance's metrics, the same on agents and coordinators (each daemon counts its own
//! runs: an agent's prunes, a coordinator's compactions).

use crate::metrics::{Counter, Counters, Gauge, Registry};

/// The `outcome` label's values: `ok`, or `failed` when any part of the run failed.
pub const OUTCOMES: [&str; 2] = ["ok", "failed"];

#[derive(Debug, Clone)]
pub struct MaintenanceMetrics {
    runs: Counters<1>,
    reclaimed: Counter,
    last_run: Gauge,
}

impl MaintenanceMetrics {
    pub fn register(registry: &mut Registry) -> MaintenanceMetrics {
        let metrics = MaintenanceMetrics {
            runs: registry.counters(
                "nexus_maintenance_runs_total",
                "Maintenance runs on this daemon (dry runs not counted), by outcome (ok, failed).",
                ["outcome"],
            ),
            reclaimed: registry.counter(
                "nexus_maintenance_reclaimed_bytes_total",
                "Bytes maintenance runs gave back: pruned images and volumes, a compacted store.",
            ),
            last_run: registry.gauge(
                "nexus_maintenance_last_run_timestamp_seconds",
                "When the last maintenance run on this daemon ended (0: never since it started).",
            ),
        };
        for outcome in OUTCOMES {
            metrics.runs.init([outcome]);
        }
        metrics
    }

    /// One run that ended at `at_secs` (seconds since the epoch), having given back `bytes`.
    pub fn record(&self, ok: bool, bytes: u64, at_secs: f64) {
        self.runs.inc([if ok { OUTCOMES[0] } else { OUTCOMES[1] }]);
        self.reclaimed.inc_by(bytes);
        self.last_run.set(at_secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_counted_with_its_bytes_and_time() {
        let mut registry = Registry::new();
        let metrics = MaintenanceMetrics::register(&mut registry);
        metrics.record(true, 300, 12.0);
        metrics.record(false, 5, 13.0);
        assert_eq!(metrics.runs.get(["ok"]), 1);
        assert_eq!(metrics.runs.get(["failed"]), 1);
        assert_eq!(metrics.reclaimed.get(), 305);
        assert!((metrics.last_run.get() - 13.0).abs() < f64::EPSILON);
    }
}
