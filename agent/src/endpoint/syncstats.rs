//! What the sync sessions this agent serves report of themselves ([`Request::Report`]), as
//! metrics: the spec's two sync SLIs as histograms (`nexus_sync_latency_seconds`,
//! `nexus_initial_sync_duration_seconds`, as each session measured them: see
//! `nexus_sync::measure`), and the sessions heard from lately by state
//! (`nexus_sync_sessions{state}`) with the conflicts they hold (`nexus_sync_conflicts`).
//!
//! A report is untrusted network input: [`check`] bounds it before anything is kept. The table of
//! sessions is pure (time comes in), bounded, and forgets a session silent for [`LIVE`]; the
//! gauges are set from it by [`SyncStats::refresh`], which the agent's scrape calls.
//!
//! The table also answers `nexus admin workspace sync-status` ([`SyncStats::sessions`]): each
//! session's user (who reported), its state and conflicts as last reported, the changes it
//! carried, and its last cycle. A report carries no count of changes nor the time of a cycle,
//! so both are the agent's own: *changes* counts the latencies the session reported, one per
//! cycle that carried changes after its initial sync (a lower bound of the files moved); the
//! *last cycle* is when the agent last served a scan to that user for that workspace, which
//! every cycle begins with ([`SyncStats::scanned`]).
//!
//! [`Request::Report`]: nexus_sync::endpoint::Request::Report

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::SyncSessionView;
use nexus_protocol::{UserName, WorkspaceName};
use nexus_sync::endpoint::{
    MAX_REPORTED_CONFLICTS, MAX_REPORTED_LATENCIES, MAX_REPORTED_MS, SessionReport, SyncState,
};
use nexus_telemetry::metrics::{Gauge, Gauges, Histogram, Registry};

/// How long a session counts after its last report. Sessions report at least every 30 s, so a
/// live one is never dropped for a lost report or two.
pub const LIVE: Duration = Duration::from_secs(120);
/// The most sessions the table holds; a new one beyond it evicts the one silent longest.
pub const MAX_SESSIONS: usize = 1_000;

/// Buckets at the spec's thresholds: sync latency p50 < 200 ms, and an alert on p95 > 500 ms.
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Initial sync p50 < 5 s.
const INITIAL_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Why a report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReport {
    #[error("a report carries at most {MAX_REPORTED_LATENCIES} latencies, not {0}")]
    TooManyLatencies(usize),
    #[error("a reported duration is at most {MAX_REPORTED_MS} ms, not {0}")]
    TooLong(u32),
    #[error("a report counts at most {MAX_REPORTED_CONFLICTS} conflicts, not {0}")]
    TooManyConflicts(u32),
}

/// Whether `report` is within the bounds every session keeps.
pub fn check(report: &SessionReport) -> Result<(), BadReport> {
    if report.latencies_ms.len() > MAX_REPORTED_LATENCIES {
        return Err(BadReport::TooManyLatencies(report.latencies_ms.len()));
    }
    if report.conflicts > MAX_REPORTED_CONFLICTS {
        return Err(BadReport::TooManyConflicts(report.conflicts));
    }
    let longest = report
        .latencies_ms
        .iter()
        .chain(&report.initial_sync_ms)
        .copied()
        .max();
    match longest {
        Some(ms) if ms > MAX_REPORTED_MS => Err(BadReport::TooLong(ms)),
        _ => Ok(()),
    }
}

/// A session: its workspace (whose owner alone may report on it) and its own id.
type Key = (WorkspaceName, u64);

/// Who may hold sessions of a workspace: the workspace and a user.
type Scanner = (WorkspaceName, UserName);

/// What the agent last heard from a session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Heard {
    at: Instant,
    user: UserName,
    state: SyncState,
    conflicts: u32,
    /// Cycles that carried changes, as reported since the agent first heard of the session.
    changes: u64,
}

/// The sessions heard from within [`LIVE`], at most [`MAX_SESSIONS`], and when each user last
/// began a cycle on each workspace. Pure.
#[derive(Debug, Default)]
pub struct SessionTable {
    sessions: HashMap<Key, Heard>,
    scans: HashMap<Scanner, (Instant, Timestamp)>,
}

/// What the sessions report: by the embedded engine's sessions alone (a Mutagen session does
/// not speak to the agent).
pub const PROVIDER: &str = "embedded";

/// The sessions by state (every state, in [`SyncState::ALL`]'s order) and their conflicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub sessions: [(SyncState, usize); SyncState::ALL.len()],
    pub conflicts: u64,
}

impl SessionTable {
    /// A session of `workspace` said `report` through `user`, heard `now`.
    pub fn heard(
        &mut self,
        workspace: &WorkspaceName,
        user: &UserName,
        report: &SessionReport,
        now: Instant,
    ) {
        let key = (workspace.clone(), report.session);
        if !self.sessions.contains_key(&key) && self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, heard)| heard.at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        let before = self.sessions.get(&key).map_or(0, |heard| heard.changes);
        self.sessions.insert(
            key,
            Heard {
                at: now,
                user: user.clone(),
                state: report.state,
                conflicts: report.conflicts,
                changes: before.saturating_add(report.latencies_ms.len() as u64),
            },
        );
    }

    /// `user` began a cycle on `workspace` (the agent served it a scan), `now`, which is `wall`
    /// on the wall clock.
    pub fn scanned(
        &mut self,
        workspace: &WorkspaceName,
        user: &UserName,
        now: Instant,
        wall: Timestamp,
    ) {
        let key = (workspace.clone(), user.clone());
        if !self.scans.contains_key(&key) && self.scans.len() >= MAX_SESSIONS {
            let oldest = self
                .scans
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.scans.remove(&oldest);
            }
        }
        self.scans.insert(key, (now, wall));
    }

    /// Forgets the sessions silent for [`LIVE`] at `now`.
    pub fn expire(&mut self, now: Instant) {
        self.sessions
            .retain(|_, heard| now.saturating_duration_since(heard.at) < LIVE);
        self.scans
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < LIVE);
    }

    /// The sessions of `workspace`, by id.
    pub fn sessions(&self, workspace: &WorkspaceName) -> Vec<SyncSessionView> {
        let mut views: Vec<SyncSessionView> = self
            .sessions
            .iter()
            .filter(|((w, _), _)| w == workspace)
            .map(|((_, session), heard)| SyncSessionView {
                session: *session,
                user: Some(heard.user.clone()),
                provider: PROVIDER.to_string(),
                state: heard.state.name().to_string(),
                last_cycle: self
                    .scans
                    .get(&(workspace.clone(), heard.user.clone()))
                    .map(|(_, wall)| *wall),
                changes: heard.changes,
                conflicts: u64::from(heard.conflicts),
            })
            .collect();
        views.sort_by_key(|view| view.session);
        views
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn tally(&self) -> Tally {
        let mut sessions = SyncState::ALL.map(|state| (state, 0));
        let mut conflicts = 0;
        for heard in self.sessions.values() {
            if let Some((_, count)) = sessions.iter_mut().find(|(s, _)| *s == heard.state) {
                *count += 1;
            }
            conflicts += u64::from(heard.conflicts);
        }
        Tally {
            sessions,
            conflicts,
        }
    }
}

/// The sync sessions' metrics, shared by the endpoint (which records reports) and the scrape
/// (which refreshes the gauges). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncStats(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    latency: Histogram,
    initial: Histogram,
    sessions: Gauges<1>,
    conflicts: Gauge,
    table: Mutex<SessionTable>,
}

impl SyncStats {
    pub fn register(registry: &mut Registry) -> SyncStats {
        let stats = SyncStats(Arc::new(Inner {
            latency: registry.histogram(
                "nexus_sync_latency_seconds",
                "From a change noticed on either side of a sync session to the end of the cycle that carried it, as the sessions this agent serves measured it.",
                &LATENCY_BUCKETS,
            ),
            initial: registry.histogram(
                "nexus_initial_sync_duration_seconds",
                "From a sync session's start to the end of its first complete cycle, as the sessions this agent serves measured it.",
                &INITIAL_BUCKETS,
            ),
            sessions: registry.gauges(
                "nexus_sync_sessions",
                "Sync sessions this agent served that reported within the last 2 minutes, by their last reported state.",
                ["state"],
            ),
            conflicts: registry.gauge(
                "nexus_sync_conflicts",
                "Conflicts the live sync sessions of this agent last reported, summed.",
            ),
            table: Mutex::new(SessionTable::default()),
        }));
        stats.refresh(Instant::now());
        stats
    }

    /// Keeps a `report` (already [`check`]ed) of a session of `workspace`, from `user`, heard
    /// `now`.
    pub fn record(
        &self,
        workspace: &WorkspaceName,
        user: &UserName,
        report: &SessionReport,
        now: Instant,
    ) {
        let seconds = |ms: u32| f64::from(ms) / 1_000.0;
        if let Some(ms) = report.initial_sync_ms {
            self.0.initial.observe(seconds(ms));
        }
        for ms in &report.latencies_ms {
            self.0.latency.observe(seconds(*ms));
        }
        self.table().heard(workspace, user, report, now);
    }

    /// `user` began a cycle on `workspace`: see [`SessionTable::scanned`].
    pub fn scanned(
        &self,
        workspace: &WorkspaceName,
        user: &UserName,
        now: Instant,
        wall: Timestamp,
    ) {
        self.table().scanned(workspace, user, now, wall);
    }

    /// The live sessions of `workspace` at `now`.
    pub fn sessions(&self, workspace: &WorkspaceName, now: Instant) -> Vec<SyncSessionView> {
        let mut table = self.table();
        table.expire(now);
        table.sessions(workspace)
    }

    /// Sets the gauges from the sessions live at `now`.
    pub fn refresh(&self, now: Instant) {
        let tally = {
            let mut table = self.table();
            table.expire(now);
            table.tally()
        };
        self.0.sessions.replace(
            tally
                .sessions
                .iter()
                .map(|(state, count)| ([state.name()], *count as f64)),
        );
        self.0.conflicts.set(tally.conflicts as f64);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, SessionTable> {
        // Each change is one insert or retain: a panic cannot leave the table half-made.
        self.0.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use nexus_telemetry::metrics::Format;

    use super::*;

    fn workspace(name: &str) -> WorkspaceName {
        name.parse().unwrap()
    }

    fn ada() -> UserName {
        "ada".parse().unwrap()
    }

    fn report(session: u64, state: SyncState) -> SessionReport {
        SessionReport {
            session,
            state,
            conflicts: 0,
            initial_sync_ms: None,
            latencies_ms: vec![],
        }
    }

    fn count(tally: &Tally, state: SyncState) -> usize {
        tally
            .sessions
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }

    #[test]
    fn reports_within_bounds_pass_and_the_rest_are_refused() {
        let mut good = report(1, SyncState::Watching);
        good.latencies_ms = vec![MAX_REPORTED_MS; MAX_REPORTED_LATENCIES];
        good.initial_sync_ms = Some(MAX_REPORTED_MS);
        good.conflicts = MAX_REPORTED_CONFLICTS;
        assert_eq!(check(&good), Ok(()));

        let mut many = good.clone();
        many.latencies_ms.push(1);
        assert_eq!(
            check(&many),
            Err(BadReport::TooManyLatencies(MAX_REPORTED_LATENCIES + 1))
        );
        let mut long = good.clone();
        long.latencies_ms[3] = MAX_REPORTED_MS + 1;
        assert_eq!(check(&long), Err(BadReport::TooLong(MAX_REPORTED_MS + 1)));
        let mut long_initial = good.clone();
        long_initial.initial_sync_ms = Some(u32::MAX);
        assert_eq!(check(&long_initial), Err(BadReport::TooLong(u32::MAX)));
        let mut conflicted = good;
        conflicted.conflicts = MAX_REPORTED_CONFLICTS + 1;
        assert_eq!(
            check(&conflicted),
            Err(BadReport::TooManyConflicts(MAX_REPORTED_CONFLICTS + 1))
        );
    }

    #[test]
    fn a_session_counts_by_its_last_state_until_it_is_silent_for_two_minutes() {
        let t0 = Instant::now();
        let mut table = SessionTable::default();
        let web = workspace("web");
        table.heard(&web, &ada(), &report(1, SyncState::Syncing), t0);
        let conflicted = SessionReport {
            conflicts: 3,
            ..report(1, SyncState::Conflicted)
        };
        table.heard(&web, &ada(), &conflicted, t0 + Duration::from_secs(30));
        table.heard(
            &workspace("api"),
            &ada(),
            &report(1, SyncState::Watching),
            t0,
        );
        let tally = table.tally();
        assert_eq!(count(&tally, SyncState::Conflicted), 1);
        assert_eq!(count(&tally, SyncState::Watching), 1);
        assert_eq!(count(&tally, SyncState::Syncing), 0);
        assert_eq!(tally.conflicts, 3);

        table.expire(t0 + LIVE - Duration::from_millis(1));
        assert_eq!(table.len(), 2);
        table.expire(t0 + LIVE);
        assert_eq!(table.len(), 1, "api went silent");
        table.expire(t0 + Duration::from_secs(30) + LIVE);
        assert!(table.is_empty());
        assert_eq!(table.tally().conflicts, 0);
    }

    #[test]
    fn the_table_holds_at_most_its_bound_and_evicts_the_longest_silent() {
        let t0 = Instant::now();
        let mut table = SessionTable::default();
        let web = workspace("web");
        for n in 0..MAX_SESSIONS as u64 {
            let at = t0 + Duration::from_millis(n);
            table.heard(&web, &ada(), &report(n, SyncState::Watching), at);
        }
        // Session 0 speaks again: it is no longer the longest silent.
        table.heard(
            &web,
            &ada(),
            &report(0, SyncState::Paused),
            t0 + Duration::from_secs(5),
        );
        table.heard(
            &web,
            &ada(),
            &report(5_000, SyncState::Failed),
            t0 + Duration::from_secs(6),
        );
        assert_eq!(table.len(), MAX_SESSIONS);
        let tally = table.tally();
        assert_eq!(count(&tally, SyncState::Paused), 1);
        assert_eq!(count(&tally, SyncState::Failed), 1);
        assert_eq!(count(&tally, SyncState::Watching), MAX_SESSIONS - 2);
        assert!(!table.sessions.contains_key(&(web, 1)));
    }

    #[test]
    fn the_metrics_show_every_state_and_what_the_sessions_measured() {
        let mut registry = Registry::new();
        let stats = SyncStats::register(&mut registry);
        let text = registry.encode(Format::Classic);
        for state in SyncState::ALL {
            let line = format!("nexus_sync_sessions{{state=\"{}\"}} 0", state.name());
            assert!(text.contains(&line), "{line} in\n{text}");
        }

        let t0 = Instant::now();
        let mut first = report(9, SyncState::Conflicted);
        first.conflicts = 2;
        first.initial_sync_ms = Some(1_500);
        first.latencies_ms = vec![150, 700];
        stats.record(&workspace("web"), &ada(), &first, t0);
        stats.refresh(t0);
        let text = registry.encode(Format::Classic);
        for line in [
            "nexus_sync_sessions{state=\"conflicted\"} 1",
            "nexus_sync_sessions{state=\"watching\"} 0",
            "nexus_sync_conflicts 2",
            "nexus_initial_sync_duration_seconds_count 1",
            "nexus_initial_sync_duration_seconds_bucket{le=\"1.0\"} 0",
            "nexus_initial_sync_duration_seconds_bucket{le=\"2.5\"} 1",
            "nexus_sync_latency_seconds_count 2",
            "nexus_sync_latency_seconds_bucket{le=\"0.2\"} 1",
            "nexus_sync_latency_seconds_bucket{le=\"0.5\"} 1",
            "nexus_sync_latency_seconds_bucket{le=\"1.0\"} 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }

        stats.refresh(t0 + LIVE);
        let text = registry.encode(Format::Classic);
        assert!(text.contains("nexus_sync_sessions{state=\"conflicted\"} 0"));
        assert!(text.contains("nexus_sync_conflicts 0"));
        // The histograms keep what was observed.
        assert!(text.contains("nexus_sync_latency_seconds_count 2"));
    }

    #[test]
    fn a_workspaces_sessions_say_who_what_and_when_they_last_cycled() {
        let t0 = Instant::now();
        let wall = Timestamp::from_millis(1_700_000_000_000);
        let mut table = SessionTable::default();
        let (web, api) = (workspace("web"), workspace("api"));
        let bob: UserName = "bob".parse().unwrap();
        let mut first = report(7, SyncState::Watching);
        first.latencies_ms = vec![100, 200];
        table.heard(&web, &ada(), &first, t0);
        let mut second = report(7, SyncState::Conflicted);
        second.latencies_ms = vec![50];
        second.conflicts = 2;
        table.heard(&web, &ada(), &second, t0 + Duration::from_secs(1));
        table.heard(&web, &bob, &report(3, SyncState::Failed), t0);
        table.heard(&api, &ada(), &report(9, SyncState::Watching), t0);
        table.scanned(&web, &ada(), t0 + Duration::from_secs(2), wall);
        table.scanned(&api, &bob, t0, wall);

        let sessions = table.sessions(&web);
        assert_eq!(
            sessions,
            vec![
                SyncSessionView {
                    session: 3,
                    user: Some(bob),
                    provider: PROVIDER.into(),
                    state: "failed".into(),
                    last_cycle: None,
                    changes: 0,
                    conflicts: 0,
                },
                SyncSessionView {
                    session: 7,
                    user: Some(ada()),
                    provider: PROVIDER.into(),
                    state: "conflicted".into(),
                    last_cycle: Some(wall),
                    changes: 3,
                    conflicts: 2,
                },
            ]
        );
        assert_eq!(table.sessions(&workspace("db")), vec![]);
        // Scans are forgotten with the sessions' silence.
        table.expire(t0 + Duration::from_secs(2) + LIVE);
        assert!(table.sessions(&web).is_empty());
        assert!(table.scans.is_empty());
    }
}
