//! What the agent sees its workspaces used for, kept until the link reports it to the leader
//! (`AgentRequest::Activity`), which records each workspace's last activity for the lifecycle
//! policies: an exec, logs read, a sync session's start or a sync cycle that moved changes (the
//! endpoint notes them as it serves them), and traffic on its published ports (the container's
//! network counters moving by more than [`TRAFFIC_THRESHOLD_BYTES`] between two samples).
//!
//! The [`Book`] keeps each workspace's latest activity only: a busy workspace costs one entry
//! however busy it is. [`Traffic`] compares each sample's counters with the previous one's. Both
//! are pure (time comes in with the activity or the sample); [`Activities`] shares a book
//! between the endpoint, the traffic watch and the link.
//!
//! Not here: how often the link reports (`crate::link`), nor what the coordinator keeps of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use nexus_protocol::WorkspaceName;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::message::DesiredState;
use nexus_protocol::model::{Activity, ActivityKind, ContainerStats};
use tokio::sync::watch;

use crate::sampler::Sample;

/// Bytes (received and sent together) a container's network counters must move by between two
/// samples to count as traffic on its ports. Below it is the background an idle container sees
/// on its bridge network: ARP requests and replies (42 bytes each, a few a minute at most),
/// and the odd neighbour probe. One HTTP request with its answer and TCP's handshake is a few
/// hundred bytes; a page a person loads, or a terminal kept busy over a published port, is far
/// more than this in any sampling interval (10 s by default).
pub const TRAFFIC_THRESHOLD_BYTES: u64 = 4 << 10;

/// The most workspaces a book holds: far more than a host runs (50 by default). Past it, the
/// oldest activity goes first.
pub const BOOK_MAX: usize = 10_000;

/// The most entries one report carries (the coordinator refuses more).
pub const REPORT_MAX: usize = 1_000;

/// Each workspace's latest activity not yet reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Book {
    latest: BTreeMap<WorkspaceName, Activity>,
}

impl Book {
    /// Keeps `activity` of `workspace` unless an activity as late or later is kept already.
    pub fn note(&mut self, workspace: &WorkspaceName, activity: Activity) {
        match self.latest.get_mut(workspace) {
            Some(kept) if kept.at > activity.at => {}
            Some(kept) => *kept = activity,
            None => {
                if self.latest.len() >= BOOK_MAX {
                    let oldest = self
                        .latest
                        .iter()
                        .min_by_key(|(_, kept)| kept.at)
                        .map(|(name, _)| name.clone());
                    if let Some(oldest) = oldest {
                        self.latest.remove(&oldest);
                    }
                }
                self.latest.insert(workspace.clone(), activity);
            }
        }
    }

    /// Takes out up to `most` workspaces' latest activity, the oldest first (the rest wait for
    /// the next report).
    pub fn drain(&mut self, most: usize) -> Vec<(WorkspaceName, Activity)> {
        let mut all: Vec<(WorkspaceName, Activity)> =
            std::mem::take(&mut self.latest).into_iter().collect();
        all.sort_by_key(|(name, activity)| (activity.at, name.clone()));
        let rest = all.split_off(all.len().min(most));
        self.latest = rest.into_iter().collect();
        all
    }

    /// Puts back what a report could not deliver, for the next one: an activity noted since
    /// (newer) wins.
    pub fn put_back(&mut self, unsent: Vec<(WorkspaceName, Activity)>) {
        for (workspace, activity) in unsent {
            self.note(&workspace, activity);
        }
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Whether a container's counters moved from `previous` to `current` (bytes received and sent
/// together) by more than `threshold`. A counter that went back is a new container (a restart, a
/// recreate): no traffic, only a new baseline; so is a first sample.
pub fn moved(previous: Option<u64>, current: u64, threshold: u64) -> bool {
    previous.is_some_and(|previous| current.saturating_sub(previous) > threshold)
}

/// The network counters each running workspace had at the previous sample.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Traffic {
    counters: BTreeMap<WorkspaceName, u64>,
}

impl Traffic {
    /// The workspaces whose counters moved past the threshold since the previous sample, with
    /// the sample's time (`now` when it has none). Workspaces absent from `containers` (not
    /// running) are forgotten: their next sample is a new baseline.
    ///
    /// Only workspaces that `publish` ports count: a workspace without any is reached by no
    /// one, and its traffic is its own (a download, a fetch loop), not a person using it.
    pub fn observe(
        &mut self,
        containers: &[ContainerStats],
        publish: impl Fn(&WorkspaceName) -> bool,
        now: Timestamp,
    ) -> Vec<(WorkspaceName, Timestamp)> {
        let mut seen = BTreeMap::new();
        let mut busy = Vec::new();
        for stats in containers {
            let Some(workspace) = &stats.workspace else {
                continue;
            };
            let current = stats
                .network_rx_bytes
                .saturating_add(stats.network_tx_bytes);
            let previous = self.counters.get(workspace).copied();
            if moved(previous, current, TRAFFIC_THRESHOLD_BYTES) && publish(workspace) {
                busy.push((workspace.clone(), stats.at.unwrap_or(now)));
            }
            seen.insert(workspace.clone(), current);
        }
        self.counters = seen;
        busy
    }
}

/// A book shared by what notes activity and the link that reports it.
#[derive(Debug, Default, Clone)]
pub struct Activities {
    book: Arc<Mutex<Book>>,
}

impl Activities {
    /// Notes that `workspace` was used, as `kind`, at `at`.
    pub fn note(&self, workspace: &WorkspaceName, kind: ActivityKind, at: Timestamp) {
        self.book().note(workspace, Activity { at, kind });
    }

    /// What the next report carries: [`Book::drain`] of at most [`REPORT_MAX`].
    pub fn drain(&self) -> Vec<(WorkspaceName, Activity)> {
        self.book().drain(REPORT_MAX)
    }

    /// [`Book::put_back`].
    pub fn put_back(&self, unsent: Vec<(WorkspaceName, Activity)>) {
        self.book().put_back(unsent);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // Every change is one insert, remove or replacement: a poisoned book is still whole.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Notes port traffic from every sample the sampler publishes, until it stops, for the
/// workspaces whose assignment in `desired` publishes ports.
pub async fn watch_traffic(
    mut samples: watch::Receiver<Option<Sample>>,
    desired: watch::Receiver<Option<DesiredState>>,
    activities: Activities,
) {
    let mut traffic = Traffic::default();
    while samples.changed().await.is_ok() {
        let containers = samples
            .borrow_and_update()
            .as_ref()
            .map(|sample| sample.containers.clone())
            .unwrap_or_default();
        let publishing: BTreeSet<WorkspaceName> = desired
            .borrow()
            .iter()
            .flat_map(|state| &state.assignments)
            .filter(|assignment| !assignment.ports.is_empty())
            .map(|assignment| assignment.spec.name.clone())
            .collect();
        let publish = |workspace: &WorkspaceName| publishing.contains(workspace);
        for (workspace, at) in traffic.observe(&containers, publish, nexus_protocol::clock::now()) {
            tracing::debug!(%workspace, "traffic on the workspace's ports");
            activities.note(&workspace, ActivityKind::PortTraffic, at);
        }
    }
}

/// What a sync step says of the workspace's use: a session's first scan (it has no version of
/// this side yet) starts it; reading, staging or applying files is a cycle that moves changes.
/// Scans since a version and waits for changes are a session idling, and count for nothing; so
/// does the older whole-tree `Scan`, which a session of an earlier CLI sends at every cycle, idle
/// or not (its cycles that move changes still count).
pub fn of_sync(request: &nexus_sync::endpoint::Request) -> Option<ActivityKind> {
    use nexus_sync::endpoint::Request;
    match request {
        Request::ScanSince { since: None, .. } => Some(ActivityKind::SyncStart),
        Request::Read { .. }
        | Request::Signature { .. }
        | Request::Stage { .. }
        | Request::Apply { .. } => Some(ActivityKind::SyncCycle),
        Request::Scan { .. }
        | Request::ScanSince { since: Some(_), .. }
        | Request::WaitChange { .. }
        | Request::Report(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> WorkspaceName {
        text.parse().unwrap()
    }

    fn at(millis: u64, kind: ActivityKind) -> Activity {
        Activity {
            at: Timestamp::from_millis(millis),
            kind,
        }
    }

    #[test]
    fn the_book_keeps_each_workspaces_latest_activity() {
        let mut book = Book::default();
        book.note(&name("api"), at(10, ActivityKind::Exec));
        book.note(&name("api"), at(30, ActivityKind::Logs));
        // Late news of an older activity changes nothing.
        book.note(&name("api"), at(20, ActivityKind::SyncCycle));
        book.note(&name("web"), at(5, ActivityKind::PortTraffic));
        // The same instant: the later note wins.
        book.note(&name("web"), at(5, ActivityKind::SyncStart));
        assert_eq!(
            book.drain(REPORT_MAX),
            vec![
                (name("web"), at(5, ActivityKind::SyncStart)),
                (name("api"), at(30, ActivityKind::Logs)),
            ]
        );
        assert!(book.is_empty(), "drained");
    }

    #[test]
    fn a_drain_takes_the_oldest_first_and_leaves_the_rest() {
        let mut book = Book::default();
        for (i, workspace) in ["a", "b", "c"].iter().enumerate() {
            book.note(&name(workspace), at(30 - i as u64 * 10, ActivityKind::Exec));
        }
        let first = book.drain(2);
        assert_eq!(
            first.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["c", "b"]
        );
        assert_eq!(book.len(), 1);
        assert_eq!(book.drain(2), vec![(name("a"), at(30, ActivityKind::Exec))]);
    }

    #[test]
    fn what_could_not_be_sent_waits_for_the_next_report_unless_newer_came() {
        let mut book = Book::default();
        book.note(&name("api"), at(10, ActivityKind::Exec));
        book.note(&name("web"), at(10, ActivityKind::Exec));
        let unsent = book.drain(REPORT_MAX);
        book.note(&name("api"), at(40, ActivityKind::Logs));
        book.put_back(unsent);
        assert_eq!(
            book.drain(REPORT_MAX),
            vec![
                (name("web"), at(10, ActivityKind::Exec)),
                (name("api"), at(40, ActivityKind::Logs)),
            ]
        );
    }

    #[test]
    fn the_book_is_bounded_and_forgets_the_oldest() {
        let mut book = Book::default();
        for i in 0..BOOK_MAX as u64 {
            book.note(&name(&format!("w{i}")), at(i + 1, ActivityKind::Exec));
        }
        book.note(&name("late"), at(1_000_000, ActivityKind::Exec));
        assert_eq!(book.len(), BOOK_MAX);
        let drained = book.drain(BOOK_MAX);
        assert!(
            !drained.iter().any(|(n, _)| n.as_str() == "w0"),
            "oldest gone"
        );
        assert_eq!(drained.last().unwrap().0, name("late"));
    }

    #[test]
    fn counters_count_as_traffic_only_past_the_threshold() {
        let t = TRAFFIC_THRESHOLD_BYTES;
        let cases = [
            // (previous, current, traffic)
            (None, 1_000_000, false),         // a first sample is a baseline
            (Some(1_000), 1_000, false),      // still
            (Some(1_000), 1_000 + 84, false), // an ARP request and its reply
            (Some(1_000), 1_000 + t, false),  // exactly the threshold: not past it
            (Some(1_000), 1_001 + t, true),
            (Some(1_000_000), 500, false), // the counters went back: a new container
        ];
        for (previous, current, expected) in cases {
            assert_eq!(
                moved(previous, current, t),
                expected,
                "{previous:?} -> {current}"
            );
        }
    }

    fn sample(workspace: &str, rx: u64, tx: u64, millis: u64) -> ContainerStats {
        ContainerStats {
            workspace: Some(name(workspace)),
            at: Some(Timestamp::from_millis(millis)),
            network_rx_bytes: rx,
            network_tx_bytes: tx,
            ..ContainerStats::default()
        }
    }

    #[test]
    fn traffic_compares_each_workspace_with_its_previous_sample() {
        let now = Timestamp::from_millis(99);
        let all = |_: &WorkspaceName| true;
        let mut traffic = Traffic::default();
        assert_eq!(
            traffic.observe(
                &[sample("api", 100, 100, 1), sample("web", 0, 0, 1)],
                all,
                now
            ),
            vec![]
        );
        // Sent and received count together; ARP-sized noise does not count.
        let busy = traffic.observe(
            &[sample("api", 3_000, 3_000, 2), sample("web", 42, 42, 2)],
            all,
            now,
        );
        assert_eq!(busy, vec![(name("api"), Timestamp::from_millis(2))]);
        // A workspace that stopped is forgotten: back, its first sample is a baseline.
        assert_eq!(
            traffic.observe(&[sample("web", 84, 84, 3)], all, now),
            vec![]
        );
        assert_eq!(
            traffic.observe(
                &[sample("api", 900_000, 0, 4), sample("web", 84, 84, 4)],
                all,
                now
            ),
            vec![]
        );
        // A sample without a workspace or a time.
        let unnamed = ContainerStats {
            network_rx_bytes: 1 << 30,
            ..ContainerStats::default()
        };
        let mut timeless = sample("api", 2_000_000, 0, 0);
        timeless.at = None;
        assert_eq!(
            traffic.observe(&[unnamed, timeless], all, now),
            vec![(name("api"), now)]
        );
        // A workspace that publishes no port: its own traffic is not someone using it.
        let only_web = |workspace: &WorkspaceName| workspace.as_str() == "web";
        assert_eq!(
            traffic.observe(&[sample("api", 9_000_000, 0, 5)], only_web, now),
            vec![]
        );
    }

    #[test]
    fn a_sessions_first_scan_starts_it_and_idling_counts_for_nothing() {
        let scan = |since| nexus_sync::endpoint::Request::ScanSince {
            ignore: vec![],
            ignore_vcs: true,
            since,
        };
        assert_eq!(of_sync(&scan(None)), Some(ActivityKind::SyncStart));
        assert_eq!(
            of_sync(&nexus_sync::endpoint::Request::Scan {
                ignore: vec![],
                ignore_vcs: true
            }),
            None
        );
        assert_eq!(
            of_sync(&nexus_sync::endpoint::Request::Signature {
                path: "src/main.rs".parse().unwrap()
            }),
            Some(ActivityKind::SyncCycle)
        );
        let version = nexus_sync::history::Version {
            epoch: 1,
            number: 2,
        };
        assert_eq!(of_sync(&scan(Some(version))), None);
        assert_eq!(
            of_sync(&nexus_sync::endpoint::Request::WaitChange {
                seen: 3,
                within_ms: 1_000
            }),
            None
        );
    }
}
