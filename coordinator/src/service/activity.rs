//! Agents' activity reports (`AgentRequest::Activity`): what each agent saw its workspaces used
//! for, recorded through Raft (`Command::RecordActivity`) for the lifecycle policies.
//!
//! Only the leader takes a report, and proposes only what is worth an entry ([`worth_recording`],
//! pure): an agent speaks for its own host's workspaces alone; a time from the future is the
//! leader's now (an agent's clock may run ahead; a workspace must not look busy for days to
//! come); and an activity within [`granularity`] of the one recorded is skipped, so that a busy
//! fleet does not write every exec into the log. The policies thus see a workspace's last use at
//! most one granularity early, never late.

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::WireError;
use nexus_protocol::message::Response;
use nexus_protocol::model::{Activity, ActivityKind};
use nexus_protocol::transport::Peer;
use nexus_protocol::{HostId, RequestId, WorkspaceName};

use super::Service;
use super::checks::too_many;
use crate::cluster::Consistency;
use crate::state::Command;

/// The coarsest granularity of recorded activity.
pub(super) const GRANULARITY_MAX: Duration = Duration::from_secs(60);

/// How much newer than the recorded activity a reported one must be to be recorded: the host
/// TTL (14 s by default; the finest time the leader judges a host by), at most
/// [`GRANULARITY_MAX`]. A fleet's agents report every 30 s by default, so a busy workspace costs
/// about an entry's line every 30 s; a test's fleet with a TTL of a second or two records its
/// activity within that.
pub(super) fn granularity(host_ttl: Duration) -> Duration {
    host_ttl.min(GRANULARITY_MAX)
}

/// What of `reported` by `host`'s agent is worth recording, given each reported workspace's host
/// and recorded activity in `known` (absent: no such workspace), at `now`: each workspace of the
/// host once, at its latest, clamped to `now`, and only when at least `granularity` newer than
/// what is recorded. Kinds the coordinator records itself (created, start) are not an agent's to
/// report, and are dropped.
pub(super) fn worth_recording(
    host: &HostId,
    reported: &[(WorkspaceName, Activity)],
    known: &BTreeMap<WorkspaceName, (HostId, Activity)>,
    now: Timestamp,
    granularity: Duration,
) -> Vec<(WorkspaceName, Activity)> {
    let step = u64::try_from(granularity.as_millis()).unwrap_or(u64::MAX);
    let mut latest: BTreeMap<&WorkspaceName, Activity> = BTreeMap::new();
    for (workspace, activity) in reported {
        if matches!(activity.kind, ActivityKind::Created | ActivityKind::Start) {
            continue;
        }
        let Some((on, recorded)) = known.get(workspace) else {
            continue;
        };
        if on != host {
            continue;
        }
        let activity = Activity {
            at: activity.at.min(now),
            kind: activity.kind,
        };
        if activity.at.as_millis() < recorded.at.as_millis().saturating_add(step.max(1)) {
            continue;
        }
        match latest.get(workspace) {
            Some(kept) if kept.at > activity.at => {}
            _ => {
                latest.insert(workspace, activity);
            }
        }
    }
    latest
        .into_iter()
        .map(|(workspace, activity)| (workspace.clone(), activity))
        .collect()
}

impl Service {
    /// An agent's activity report: the leader proposes what is worth recording.
    pub(super) async fn activity(
        &self,
        peer: &Peer,
        request_id: RequestId,
        host: &HostId,
        reported: Vec<(WorkspaceName, Activity)>,
    ) -> Result<Response, WireError> {
        too_many(reported.len())?;
        self.cluster.require_leader().await?;
        let names: Vec<WorkspaceName> = reported.iter().map(|(name, _)| name.clone()).collect();
        let known = self
            .cluster
            .read(Consistency::Stale, move |state| {
                let workspaces = state.workspaces();
                names
                    .into_iter()
                    .filter_map(|name| {
                        let record = workspaces.get(&name)?;
                        Some((name, (record.host.clone(), record.lifecycle.last_activity)))
                    })
                    .collect::<BTreeMap<_, _>>()
            })
            .await?;
        let entries = worth_recording(
            host,
            &reported,
            &known,
            clock::now(),
            granularity(self.host_ttl()),
        );
        if entries.is_empty() {
            return Ok(Response::Ack);
        }
        self.cluster
            .propose(
                request_id,
                peer.identity.clone(),
                Command::RecordActivity {
                    host: host.clone(),
                    activity: entries,
                },
            )
            .await?;
        Ok(Response::Ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> WorkspaceName {
        text.parse().unwrap()
    }

    fn host(text: &str) -> HostId {
        HostId::new(text).unwrap()
    }

    fn at(seconds: u64, kind: ActivityKind) -> Activity {
        Activity {
            at: Timestamp::from_millis(seconds * 1_000),
            kind,
        }
    }

    /// `api` and `db` on h1 (recorded at 100 s), `web` on h2.
    fn known() -> BTreeMap<WorkspaceName, (HostId, Activity)> {
        [
            ("api", "h1", at(100, ActivityKind::Created)),
            ("db", "h1", at(100, ActivityKind::Exec)),
            ("web", "h2", at(100, ActivityKind::Created)),
        ]
        .into_iter()
        .map(|(w, h, a)| (name(w), (host(h), a)))
        .collect()
    }

    fn check(reported: &[(&str, Activity)], now: u64) -> Vec<(String, Activity)> {
        let reported: Vec<_> = reported.iter().map(|(w, a)| (name(w), *a)).collect();
        worth_recording(
            &host("h1"),
            &reported,
            &known(),
            Timestamp::from_millis(now * 1_000),
            Duration::from_secs(10),
        )
        .into_iter()
        .map(|(w, a)| (w.to_string(), a))
        .collect()
    }

    #[test]
    fn activity_newer_by_the_granularity_is_recorded() {
        let exec = at(110, ActivityKind::Exec);
        assert_eq!(check(&[("api", exec)], 200), vec![("api".into(), exec)]);
    }

    #[test]
    fn activity_within_the_granularity_of_the_recorded_is_skipped() {
        assert_eq!(check(&[("api", at(109, ActivityKind::Exec))], 200), vec![]);
        assert_eq!(check(&[("api", at(50, ActivityKind::Logs))], 200), vec![]);
        // Exactly one granularity newer counts.
        assert_eq!(check(&[("db", at(110, ActivityKind::Logs))], 200).len(), 1);
    }

    #[test]
    fn an_agent_speaks_only_for_its_own_hosts_known_workspaces() {
        let exec = at(150, ActivityKind::Exec);
        assert_eq!(
            check(&[("web", exec), ("gone", exec), ("api", exec)], 200),
            vec![("api".into(), exec)]
        );
    }

    #[test]
    fn a_time_from_the_future_is_the_leaders_now() {
        assert_eq!(
            check(&[("api", at(9_999, ActivityKind::PortTraffic))], 200),
            vec![("api".into(), at(200, ActivityKind::PortTraffic))]
        );
    }

    #[test]
    fn kinds_the_coordinator_records_itself_are_dropped() {
        assert_eq!(
            check(
                &[
                    ("api", at(150, ActivityKind::Start)),
                    ("db", at(150, ActivityKind::Created))
                ],
                200
            ),
            vec![]
        );
    }

    #[test]
    fn a_workspace_named_twice_is_recorded_once_at_its_latest() {
        assert_eq!(
            check(
                &[
                    ("api", at(170, ActivityKind::SyncCycle)),
                    ("api", at(150, ActivityKind::Exec)),
                ],
                200
            ),
            vec![("api".into(), at(170, ActivityKind::SyncCycle))]
        );
    }

    #[test]
    fn the_granularity_is_the_host_ttl_up_to_a_minute() {
        assert_eq!(
            granularity(Duration::from_secs(14)),
            Duration::from_secs(14)
        );
        assert_eq!(granularity(Duration::from_secs(600)), GRANULARITY_MAX);
    }
}
