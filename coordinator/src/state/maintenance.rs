//! Host maintenance's replicated facts: the weekly window every leader follows, and what the
//! last scheduled run did (`nexus admin maintenance status`). Bounded: a summary keeps at most
//! [`SUMMARY_DAEMONS`] daemons, each error cut to [`SUMMARY_ERROR_BYTES`].

use nexus_protocol::maintenance::{MaintenanceSchedule, MaintenanceSummary};
use serde::{Deserialize, Serialize};

use super::{Outcome, State};

/// The most daemons one summary names (a fleet's agents and coordinators).
pub(super) const SUMMARY_DAEMONS: usize = 10_000;
/// The longest error a summary keeps for one daemon.
pub(super) const SUMMARY_ERROR_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Maintenance {
    pub schedule: MaintenanceSchedule,
    pub last: Option<MaintenanceSummary>,
}

/// `summary` within the bounds the state keeps.
pub(super) fn bounded(summary: &MaintenanceSummary) -> MaintenanceSummary {
    MaintenanceSummary {
        at: summary.at,
        daemons: summary
            .daemons
            .iter()
            .take(SUMMARY_DAEMONS)
            .map(|(who, result)| {
                let result = result.clone().map_err(|error| cut(&error));
                (cut(who), result)
            })
            .collect(),
    }
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(SUMMARY_ERROR_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl State {
    /// The maintenance window and the last scheduled run.
    pub fn maintenance(&self) -> &Maintenance {
        &self.maintenance
    }

    pub(super) fn set_maintenance_schedule(&mut self, schedule: &MaintenanceSchedule) -> Outcome {
        self.maintenance.schedule = *schedule;
        Outcome::Applied
    }

    pub(super) fn record_maintenance(&mut self, summary: &MaintenanceSummary) -> Outcome {
        self.maintenance.last = Some(bounded(summary));
        Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;

    use super::*;

    #[test]
    fn a_summary_is_kept_within_bounds() {
        let long = "é".repeat(SUMMARY_ERROR_BYTES);
        let summary = MaintenanceSummary {
            at: Timestamp::from_millis(1),
            daemons: (0..SUMMARY_DAEMONS + 5)
                .map(|n| (format!("agent-{n}"), Err(long.clone())))
                .collect(),
        };
        let kept = bounded(&summary);
        assert_eq!(kept.daemons.len(), SUMMARY_DAEMONS);
        let Err(error) = &kept.daemons[0].1 else {
            panic!("an error became a success");
        };
        assert!(error.len() <= SUMMARY_ERROR_BYTES);
        assert!(long.starts_with(error.as_str()));
    }
}
