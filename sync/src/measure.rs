//! What a sync session measures for the metrics its workspace's agent exports (the spec's two
//! sync SLIs), and where it stands. Pure: time comes in as monotonic [`Instant`]s, so every case
//! is tested here. The session's loop (the CLI's sync daemon) tells the [`Meter`] what happens
//! and sends its [`Meter::report`]s beside the cycles ([`crate::endpoint::Request::Report`]).
//!
//! As measured:
//! - **Initial sync duration**: from the session's start (the meter's making; or the resume, for
//!   a session paused before its initial sync ended: paused time is not sync time) to the end of
//!   its first *complete* cycle, one that ended without an error and with no change left stale,
//!   so both sides agree but for conflicts and refused changes. Those wait for the user, and
//!   would otherwise hold the measure open without bound. Reaching the agent counts. Measured
//!   once per session; a session resumed from a saved state measures it too (its first cycle
//!   then has little to do).
//! - **Sync latency**: one sample for each cycle after the initial sync that made at least one
//!   change: from when the first change it carried was noticed to the end of that cycle. Noticed
//!   means the earliest watcher event on either side (the local watcher's, or the agent's answer
//!   to a `WaitChange`) since the previous cycle started, or, when there was none, the cycle's
//!   own start (a change that a poll found). Coalescing and transfer count; how late a watcher's
//!   event itself came does not (nothing can know it). A change noticed while paused counts from
//!   the resume. A change noticed during a cycle counts towards the next cycle, which makes no
//!   sample if it finds nothing to do because this one carried the change.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::endpoint::{
    MAX_REPORTED_CONFLICTS, MAX_REPORTED_LATENCIES, MAX_REPORTED_MS, SessionReport, SyncState,
};
use crate::session::CycleReport;

/// A session's measures between reports, and where it stands.
#[derive(Debug)]
pub struct Meter {
    started: Instant,
    initial: Initial,
    /// The earliest change noticed since the last cycle started.
    noticed: Option<Instant>,
    /// Latencies not yet reported, the latest [`MAX_REPORTED_LATENCIES`].
    latencies: VecDeque<u32>,
    state: SyncState,
    conflicts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Initial {
    Running,
    Ended(u32),
    Reported,
}

impl Meter {
    /// A session that starts `now`.
    pub fn new(now: Instant) -> Meter {
        Meter {
            started: now,
            initial: Initial::Running,
            noticed: None,
            latencies: VecDeque::new(),
            state: SyncState::Syncing,
            conflicts: 0,
        }
    }

    /// A change was noticed `at` (a watcher's event on either side).
    pub fn noticed(&mut self, at: Instant) {
        self.noticed = Some(self.noticed.map_or(at, |earlier| earlier.min(at)));
    }

    /// A cycle starts `now`: what its latency counts from (give it to [`Meter::cycle_ended`]).
    pub fn cycle_started(&mut self, now: Instant) -> Instant {
        self.noticed.take().map_or(now, |noticed| noticed.min(now))
    }

    /// The cycle that counts from `from` ended `now` with `report`. True when the agent should
    /// hear of it now: a measure was taken, or the state or the conflicts changed.
    pub fn cycle_ended(&mut self, from: Instant, now: Instant, report: &CycleReport) -> bool {
        let before = (self.state, self.conflicts);
        let complete = report.stale == 0;
        let mut measured = false;
        if self.initial == Initial::Running {
            if complete {
                self.initial = Initial::Ended(millis(now.saturating_duration_since(self.started)));
                measured = true;
            }
        } else if report.applied > 0 {
            if self.latencies.len() == MAX_REPORTED_LATENCIES {
                self.latencies.pop_front();
            }
            self.latencies
                .push_back(millis(now.saturating_duration_since(from)));
            measured = true;
        }
        self.conflicts = u32::try_from(report.conflicts.len())
            .unwrap_or(u32::MAX)
            .min(MAX_REPORTED_CONFLICTS);
        self.state = if !complete {
            SyncState::Syncing
        } else if self.conflicts > 0 {
            SyncState::Conflicted
        } else {
            SyncState::Watching
        };
        measured || (self.state, self.conflicts) != before
    }

    /// A cycle failed. True when that changed the state.
    pub fn cycle_failed(&mut self) -> bool {
        std::mem::replace(&mut self.state, SyncState::Failed) != SyncState::Failed
    }

    /// The user paused the session.
    pub fn paused(&mut self) {
        self.state = SyncState::Paused;
    }

    /// The user resumed the session `now`; it syncs again.
    pub fn resumed(&mut self, now: Instant) {
        if self.state != SyncState::Paused {
            return;
        }
        self.state = SyncState::Syncing;
        if self.initial == Initial::Running {
            self.started = now;
        }
        if self.noticed.is_some() {
            self.noticed = Some(now);
        }
    }

    pub fn state(&self) -> SyncState {
        self.state
    }

    /// The report to send now, as `session`: it takes the measures that were waiting (a report
    /// that fails to arrive loses them).
    pub fn report(&mut self, session: u64) -> SessionReport {
        let initial_sync_ms = match self.initial {
            Initial::Ended(ms) => {
                self.initial = Initial::Reported;
                Some(ms)
            }
            Initial::Running | Initial::Reported => None,
        };
        SessionReport {
            session,
            state: self.state,
            conflicts: self.conflicts,
            initial_sync_ms,
            latencies_ms: self.latencies.drain(..).collect(),
        }
    }
}

/// A duration in whole milliseconds, within what a report carries.
fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis())
        .unwrap_or(u32::MAX)
        .min(MAX_REPORTED_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{Refusal, RefusalCode};
    use crate::reconcile::Conflict;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn applied(n: usize) -> CycleReport {
        CycleReport {
            applied: n,
            ..CycleReport::default()
        }
    }

    fn conflicts(n: usize) -> CycleReport {
        let conflict = Conflict {
            path: "a".parse().unwrap_or_else(|e| panic!("{e}")),
            alpha: None,
            beta: None,
        };
        CycleReport {
            conflicts: vec![conflict; n],
            ..CycleReport::default()
        }
    }

    /// A meter whose initial sync ended at `t0 + 1 s` and was reported.
    fn caught_up(t0: Instant) -> Meter {
        let mut meter = Meter::new(t0);
        let from = meter.cycle_started(t0 + ms(400));
        meter.cycle_ended(from, t0 + ms(1_000), &applied(10));
        meter.report(1);
        meter
    }

    #[test]
    fn the_initial_sync_runs_from_the_start_to_the_first_complete_cycle_and_is_reported_once() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0);
        assert_eq!(meter.state(), SyncState::Syncing);
        // A cycle that left a change stale is not complete.
        let from = meter.cycle_started(t0 + ms(100));
        let stale = CycleReport {
            applied: 3,
            stale: 1,
            ..CycleReport::default()
        };
        assert!(!meter.cycle_ended(from, t0 + ms(900), &stale));
        assert_eq!(meter.report(7).initial_sync_ms, None);
        // The next one is; its changes are the initial sync's, not latencies.
        let from = meter.cycle_started(t0 + ms(1_000));
        assert!(meter.cycle_ended(from, t0 + ms(2_500), &applied(1)));
        let report = meter.report(7);
        assert_eq!(
            report,
            SessionReport {
                session: 7,
                state: SyncState::Watching,
                conflicts: 0,
                initial_sync_ms: Some(2_500),
                latencies_ms: vec![],
            }
        );
        assert_eq!(meter.report(7).initial_sync_ms, None);
    }

    #[test]
    fn conflicts_and_refusals_do_not_hold_the_initial_sync_open() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0);
        let from = meter.cycle_started(t0);
        let mut report = conflicts(2);
        report.refused = vec![Refusal::new(RefusalCode::TooLarge, "big")];
        assert!(meter.cycle_ended(from, t0 + ms(300), &report));
        let report = meter.report(1);
        assert_eq!(
            (report.state, report.conflicts, report.initial_sync_ms),
            (SyncState::Conflicted, 2, Some(300))
        );
    }

    #[test]
    fn a_latency_runs_from_the_earliest_notice_to_the_end_of_the_cycle_that_carried_it() {
        let t0 = Instant::now();
        let mut meter = caught_up(t0);
        meter.noticed(t0 + ms(5_030));
        meter.noticed(t0 + ms(5_000));
        meter.noticed(t0 + ms(5_060));
        let from = meter.cycle_started(t0 + ms(5_100));
        assert_eq!(from, t0 + ms(5_000));
        assert!(meter.cycle_ended(from, t0 + ms(5_180), &applied(2)));
        // Found by a poll: from the cycle's start.
        let from = meter.cycle_started(t0 + ms(9_000));
        assert!(meter.cycle_ended(from, t0 + ms(9_040), &applied(1)));
        assert_eq!(meter.report(1).latencies_ms, [180, 40]);
        assert!(meter.report(1).latencies_ms.is_empty());
    }

    #[test]
    fn a_quiet_cycle_makes_no_sample_and_drops_what_it_was_told() {
        let t0 = Instant::now();
        let mut meter = caught_up(t0);
        meter.noticed(t0 + ms(5_000));
        let from = meter.cycle_started(t0 + ms(5_050));
        assert!(!meter.cycle_ended(from, t0 + ms(5_060), &applied(0)));
        // The notice went with that cycle: the next counts from its own start.
        let from = meter.cycle_started(t0 + ms(8_000));
        meter.cycle_ended(from, t0 + ms(8_010), &applied(1));
        assert_eq!(meter.report(1).latencies_ms, [10]);
    }

    #[test]
    fn a_report_holds_the_latest_latencies_only() {
        let t0 = Instant::now();
        let mut meter = caught_up(t0);
        for n in 0..(MAX_REPORTED_LATENCIES as u64 + 10) {
            let start = t0 + Duration::from_secs(10 + n);
            let from = meter.cycle_started(start);
            meter.cycle_ended(from, start + ms(n), &applied(1));
        }
        let latencies = meter.report(1).latencies_ms;
        assert_eq!(latencies.len(), MAX_REPORTED_LATENCIES);
        assert_eq!(latencies[0], 10);
    }

    #[test]
    fn durations_and_counts_stay_within_what_a_report_carries() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0);
        let from = meter.cycle_started(t0);
        meter.cycle_ended(from, t0 + Duration::from_secs(10 * 86_400), &conflicts(0));
        assert_eq!(meter.report(1).initial_sync_ms, Some(MAX_REPORTED_MS));
        assert_eq!(millis(Duration::from_secs(u64::MAX)), MAX_REPORTED_MS);
    }

    #[test]
    fn paused_time_is_neither_initial_sync_nor_latency() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0);
        meter.paused();
        assert_eq!(meter.state(), SyncState::Paused);
        meter.resumed(t0 + ms(60_000));
        let from = meter.cycle_started(t0 + ms(60_000));
        meter.cycle_ended(from, t0 + ms(60_700), &applied(4));
        assert_eq!(meter.report(1).initial_sync_ms, Some(700));

        meter.noticed(t0 + ms(61_000));
        meter.paused();
        meter.resumed(t0 + ms(90_000));
        let from = meter.cycle_started(t0 + ms(90_010));
        meter.cycle_ended(from, t0 + ms(90_050), &applied(1));
        assert_eq!(meter.report(1).latencies_ms, [50]);
    }

    #[test]
    fn a_failed_cycle_says_so_once_and_the_next_good_one_clears_it() {
        let t0 = Instant::now();
        let mut meter = caught_up(t0);
        assert!(meter.cycle_failed());
        assert!(!meter.cycle_failed());
        assert_eq!(meter.report(1).state, SyncState::Failed);
        let from = meter.cycle_started(t0 + ms(3_000));
        assert!(meter.cycle_ended(from, t0 + ms(3_001), &applied(0)));
        assert_eq!(meter.state(), SyncState::Watching);
    }
}
