//! Host maintenance on the coordinators: an admin's compaction of this node's store
//! (`AdminRequest::Maintain`), the weekly schedule (read and set), and the leader's loop that
//! follows it: a notice ahead of each window, then, in it, its own compaction and every other
//! coordinator's and every agent's run, recorded in the state (`maintenance status`), logged and
//! counted. When a window is due and its notice is the pure `nexus_protocol::maintenance`'s.

use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::maintenance::{
    self, Due, MaintenanceReport, MaintenanceRequest, MaintenanceSchedule, MaintenanceStatus,
    MaintenanceSummary, Reclaimed, ReclaimedKind,
};
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use nexus_protocol::model::{NoticeAudience, NoticeSource};
use nexus_protocol::transport::{Connector, Peer};
use nexus_protocol::{HostId, NodeId, RequestId};
use nexus_telemetry::maintenance::MaintenanceMetrics;

use super::Service;
use crate::cluster::Consistency;
use crate::locks::lock;
use crate::state::{Command, State};
use crate::store::RocksStore;

/// How long one daemon has for its part of a scheduled run (an engine removing many images).
const DAEMON_LIMIT: Duration = Duration::from_secs(600);

/// What a coordinator needs for maintenance: its store (compacted), its metrics, and a
/// connector as itself to ask the other daemons on the schedule.
#[derive(Debug)]
pub struct Maintainer {
    store: RocksStore,
    metrics: MaintenanceMetrics,
    connector: Option<Connector>,
}

impl Maintainer {
    /// The connector it asks other daemons with, as this coordinator, if it has one.
    pub(super) fn connector(&self) -> Option<Connector> {
        self.connector.clone()
    }

    pub fn new(
        store: RocksStore,
        metrics: MaintenanceMetrics,
        connector: Option<Connector>,
    ) -> Maintainer {
        Maintainer {
            store,
            metrics,
            connector,
        }
    }
}

fn unsupported() -> WireError {
    WireError::new(
        ErrorCode::Unsupported,
        "this coordinator was started without a store it can compact",
    )
}

#[allow(clippy::cast_precision_loss)]
fn seconds(at: Timestamp) -> f64 {
    at.as_millis() as f64 / 1000.0
}

impl Service {
    /// The same service, compacting `maintainer`'s store and following the schedule with it.
    pub fn with_maintenance(mut self, maintainer: Maintainer) -> Service {
        self.maintainer = Some(Arc::new(maintainer));
        self
    }

    /// Admins' (and the leader's) maintenance requests.
    pub(super) async fn maintenance(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        match request {
            AdminRequest::Maintain(asked) => {
                let report = self.compact(asked, &peer.identity.to_string()).await?;
                Ok(Response::Maintained(report))
            }
            AdminRequest::MaintenanceSchedule(change) => {
                let now = clock::now();
                let status = self
                    .cluster
                    .change_then_read(
                        request_id,
                        peer.identity.clone(),
                        change.map(Command::SetMaintenanceSchedule),
                        consistency,
                        move |state| status(state, now),
                    )
                    .await?;
                Ok(Response::Maintenance(status))
            }
            _ => Err(WireError::new(
                ErrorCode::Internal,
                "not a maintenance request",
            )),
        }
    }

    /// The connector, as this coordinator, to ask the other daemons; without it, `UNSUPPORTED`.
    pub(super) fn daemon_connector(&self) -> Result<Connector, WireError> {
        self.maintainer
            .as_ref()
            .and_then(|m| m.connector.clone())
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::Unsupported,
                    "this coordinator was started without a way to ask the agents",
                )
            })
    }

    /// This node's compaction (when `asked.compact`), logged and counted.
    async fn compact(
        &self,
        asked: MaintenanceRequest,
        by: &str,
    ) -> Result<MaintenanceReport, WireError> {
        let maintainer = self.maintainer.clone().ok_or_else(unsupported)?;
        let mut report = MaintenanceReport {
            source: format!("coordinator-{}", self.cluster.id()),
            dry_run: asked.dry_run,
            ..MaintenanceReport::default()
        };
        if asked.compact {
            let store = maintainer.store.clone();
            let dry_run = asked.dry_run;
            let done = tokio::task::spawn_blocking(move || {
                let bytes = if dry_run {
                    store.compactable_bytes()
                } else {
                    store.compact()
                };
                bytes.map(|bytes| (store.path(), bytes))
            })
            .await;
            match done {
                Ok(Ok((path, bytes))) => report.removed.push(Reclaimed {
                    kind: ReclaimedKind::Store,
                    name: path,
                    bytes,
                }),
                Ok(Err(error)) => report.errors.push(error.to_string()),
                Err(error) => report
                    .errors
                    .push(format!("the compaction stopped: {error}")),
            }
        }
        report.at = clock::now();
        let bytes = report.bytes();
        if asked.dry_run {
            tracing::info!(
                bytes,
                by,
                "maintenance dry run: the store's compaction would give back about this"
            );
        } else {
            if report.failed() {
                tracing::warn!(bytes, errors = ?report.errors, by, "maintenance: the store's compaction failed");
            } else {
                tracing::info!(bytes, by, "maintenance: the store compacted");
            }
            maintainer
                .metrics
                .record(!report.failed(), bytes, seconds(report.at));
        }
        Ok(report)
    }

    /// The schedule, for as long as the process runs: every `period`, a
    /// [`Service::scheduled_maintenance`] round.
    pub async fn follow_maintenance_schedule(&self, period: Duration) {
        if self.maintainer.is_none() {
            return;
        }
        let mut ran: Option<Timestamp> = None;
        loop {
            tokio::time::sleep(period).await;
            self.scheduled_maintenance(&mut ran).await;
        }
    }

    /// One round: while this node leads, post the next window's notice when it is due (once),
    /// and run the window that is open and has not run (`ran`: the window this leader last
    /// ran, so that a failed record does not run it twice).
    pub async fn scheduled_maintenance(&self, ran: &mut Option<Timestamp>) {
        if self.cluster.require_leader().await.is_err() {
            return;
        }
        let now = clock::now();
        let Ok((schedule, last, noticed)) = self
            .cluster
            .read(Consistency::Stale, move |state| {
                let noticed: Vec<(u64, Option<Timestamp>)> = state
                    .notices()
                    .all()
                    .filter(|n| n.source == NoticeSource::Maintenance && n.is_current(now))
                    .map(|n| (n.id, n.until))
                    .collect();
                (
                    state.maintenance().schedule,
                    state.maintenance().last.as_ref().map(|l| l.at),
                    noticed,
                )
            })
            .await
        else {
            return;
        };
        self.post_window_notice(&schedule, &noticed, now).await;
        let last = last.max(*ran);
        let Due::Run { window } = maintenance::due(&schedule, last, now) else {
            return;
        };
        *ran = Some(now);
        // Recorded as started before it runs (a run can take minutes): a leader elected
        // meanwhile, or this one after a failed record, must not run the window again.
        let started = MaintenanceSummary {
            at: now,
            daemons: Vec::new(),
        };
        if let Err(error) = self.propose_own(Command::RecordMaintenance(started)).await {
            tracing::warn!(code = %error.code, "cannot record the maintenance window's start; not running it now: {}", error.message);
            *ran = None;
            return;
        }
        tracing::info!(window = window.as_millis(), "scheduled maintenance starts");
        let summary = self.run_everywhere().await;
        for (who, result) in &summary.daemons {
            match result {
                Ok(bytes) => {
                    tracing::info!(daemon = %who, bytes, "scheduled maintenance: reclaimed")
                }
                Err(error) => {
                    tracing::warn!(daemon = %who, "scheduled maintenance failed: {error}")
                }
            }
        }
        if let Err(error) = self.propose_own(Command::RecordMaintenance(summary)).await {
            tracing::warn!(code = %error.code, "cannot record the maintenance run: {}", error.message);
        }
    }

    /// The next window's notice, if it is due and not posted yet; and the notices of windows
    /// that will not be (the schedule changed or was turned off) cleared.
    async fn post_window_notice(
        &self,
        schedule: &MaintenanceSchedule,
        noticed: &[(u64, Option<Timestamp>)],
        now: Timestamp,
    ) {
        let window = maintenance::next_window(schedule, now);
        let due = window.and_then(|window| maintenance::notice_due(window, now));
        let expected = due.as_ref().map(|(_, until)| *until);
        let stale: Vec<u64> = noticed
            .iter()
            .filter(|(_, until)| *until != expected)
            .map(|(id, _)| *id)
            .collect();
        if !stale.is_empty()
            && let Err(error) = self.propose_own(Command::ClearNotices(stale)).await
        {
            tracing::warn!(code = %error.code, "cannot clear an old maintenance notice: {}", error.message);
        }
        let Some((text, until)) = due else {
            return;
        };
        if noticed.iter().any(|(_, noticed)| *noticed == Some(until)) {
            return;
        }
        let posted = self
            .propose_own(Command::PostNotice {
                text,
                audience: NoticeAudience::Everyone,
                source: NoticeSource::Maintenance,
                until: Some(until),
            })
            .await;
        if let Err(error) = posted {
            tracing::warn!(code = %error.code, "cannot post the maintenance notice: {}", error.message);
        }
    }

    /// The scheduled run: this node's compaction, then every other coordinator's and every
    /// agent's run, all at once, each within [`DAEMON_LIMIT`].
    async fn run_everywhere(&self) -> MaintenanceSummary {
        let by = self.identity.to_string();
        let mut daemons = Vec::new();
        let own = format!("coordinator-{}", self.cluster.id());
        match self.compact(MaintenanceRequest::ALL, &by).await {
            Ok(report) => daemons.push((own, outcome(&report))),
            Err(error) => daemons.push((own, Err(error.to_string()))),
        }
        let Some(connector) = self.maintainer.as_ref().and_then(|m| m.connector.clone()) else {
            return MaintenanceSummary {
                at: clock::now(),
                daemons,
            };
        };
        let members: Vec<(NodeId, String)> = match self.status().await {
            Ok(status) => status
                .members
                .into_iter()
                .filter(|m| m.id != self.cluster.id() && !m.addr.is_empty())
                .map(|m| (m.id, m.addr))
                .collect(),
            Err(_) => Vec::new(),
        };
        let agents: Vec<(HostId, String)> = lock(&self.endpoints)
            .iter()
            .map(|(host, address)| (host.clone(), address.clone()))
            .collect();
        let coordinators = members.into_iter().map(|(id, address)| {
            let connector = connector.clone();
            async move {
                let asked = ask(
                    &connector,
                    &address,
                    Identity::Coordinator(id),
                    Request::Admin(AdminRequest::Maintain(MaintenanceRequest::ALL)),
                )
                .await;
                (format!("coordinator-{id}"), asked)
            }
        });
        let hosts = agents.into_iter().map(|(host, address)| {
            let connector = connector.clone();
            async move {
                let asked = ask(
                    &connector,
                    &address,
                    Identity::Agent(host.clone()),
                    Request::Host(HostRequest::Maintain(MaintenanceRequest::ALL)),
                )
                .await;
                (format!("agent-{host}"), asked)
            }
        });
        let (coordinators, hosts) = tokio::join!(
            futures_util::future::join_all(coordinators),
            futures_util::future::join_all(hosts)
        );
        daemons.extend(coordinators);
        daemons.extend(hosts);
        MaintenanceSummary {
            at: clock::now(),
            daemons,
        }
    }
}

/// A report as a summary's line: the bytes, or its errors.
fn outcome(report: &MaintenanceReport) -> Result<u64, String> {
    if report.failed() {
        Err(report.errors.join("; "))
    } else {
        Ok(report.bytes())
    }
}

/// Asks the daemon at `address`, which must be `who`, for its run.
async fn ask(
    connector: &Connector,
    address: &str,
    who: Identity,
    request: Request,
) -> Result<u64, String> {
    match ask_daemon(connector, address, who, request, DAEMON_LIMIT).await {
        Ok(Response::Maintained(report)) => outcome(&report),
        Ok(other) => Err(format!("an unexpected answer: {other:?}")
            .chars()
            .take(200)
            .collect()),
        Err(error) => Err(format!("{}: {}", error.code, error.message)),
    }
}

/// Asks the daemon at `address`, which must be `who`, one request, within `limit`: the fan-out
/// of maintenance runs and worktree verifications.
pub(super) async fn ask_daemon(
    connector: &Connector,
    address: &str,
    who: Identity,
    request: Request,
    limit: Duration,
) -> Result<Response, WireError> {
    let attempt = async {
        let (socket, name) = nexus_protocol::transport::resolve(address).await?;
        let connection = connector.connect(socket, &name, &[who.kind()]).await?;
        if connection.server() != &who {
            return Err(WireError::new(
                ErrorCode::AuthenticationFailed,
                format!(
                    "{address} answered as {}, not as {who}",
                    connection.server()
                ),
            ));
        }
        let answer = connection.request(request).await;
        connection.close();
        answer
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(answer) => answer,
        Err(_) => Err(WireError::new(
            ErrorCode::Timeout,
            format!("no answer within {} s", limit.as_secs()),
        )),
    }
}

/// The schedule, its next window from `now`, and the last scheduled run.
fn status(state: &State, now: Timestamp) -> MaintenanceStatus {
    let kept = state.maintenance();
    MaintenanceStatus {
        schedule: kept.schedule,
        next: maintenance::next_window(&kept.schedule, now),
        last: kept.last.clone(),
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::identity::Role;
    use nexus_protocol::maintenance::WeeklyTime;
    use nexus_protocol::message::WorkspaceRequest;

    use super::*;
    use crate::service::testing::{ask, code, leading, one_node, peer, user};

    fn admin() -> Peer {
        user(Role::Admin)
    }

    async fn maintaining() -> (tempfile::TempDir, crate::Node, Service) {
        let (dir, node, service) = one_node().await;
        let mut registry = nexus_telemetry::Registry::new();
        let metrics = MaintenanceMetrics::register(&mut registry);
        let service = service.with_maintenance(Maintainer::new(node.store.clone(), metrics, None));
        leading(&service).await;
        (dir, node, service)
    }

    fn compact(dry_run: bool) -> Request {
        Request::Admin(AdminRequest::Maintain(MaintenanceRequest {
            compact: true,
            dry_run,
            ..MaintenanceRequest::default()
        }))
    }

    #[tokio::test]
    async fn admins_and_coordinators_compact_the_store_and_users_may_not() {
        let (_dir, node, service) = maintaining().await;
        assert_eq!(
            code(ask(&service, &user(Role::User), compact(false)).await),
            Some(ErrorCode::PermissionDenied)
        );
        for (who, dry_run) in [
            (admin(), true),
            (admin(), false),
            (peer(Identity::Coordinator(NodeId::new(2).unwrap())), false),
        ] {
            let Ok(Response::Maintained(report)) = ask(&service, &who, compact(dry_run)).await
            else {
                panic!("no report for {}", who.identity);
            };
            assert_eq!(report.source, "coordinator-1");
            assert_eq!(report.dry_run, dry_run);
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            assert_eq!(report.removed.len(), 1);
            assert_eq!(report.removed[0].kind, ReclaimedKind::Store);
        }
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn without_a_store_compaction_is_unsupported() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        assert_eq!(
            code(ask(&service, &admin(), compact(false)).await),
            Some(ErrorCode::Unsupported)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_schedule_is_replicated_and_defaults_to_sunday_two() {
        let (_dir, node, service) = maintaining().await;
        let schedule = |change| Request::Admin(AdminRequest::MaintenanceSchedule(change));
        let Ok(Response::Maintenance(status)) = ask(&service, &admin(), schedule(None)).await
        else {
            panic!("no status");
        };
        assert_eq!(status.schedule.at, Some(WeeklyTime::DEFAULT));
        assert!(status.next.is_some());
        assert_eq!(status.last, None);
        assert_eq!(
            code(
                ask(
                    &service,
                    &user(Role::User),
                    schedule(Some(MaintenanceSchedule { at: None }))
                )
                .await
            ),
            Some(ErrorCode::PermissionDenied)
        );
        let Ok(Response::Maintenance(status)) = ask(
            &service,
            &admin(),
            schedule(Some(MaintenanceSchedule { at: None })),
        )
        .await
        else {
            panic!("no status");
        };
        assert_eq!(status.schedule.at, None);
        assert_eq!(status.next, None);
        node.stop().await.unwrap();
    }

    /// A window open now: it started this minute.
    fn open_now() -> MaintenanceSchedule {
        MaintenanceSchedule {
            at: Some(WeeklyTime::of(clock::now())),
        }
    }

    #[tokio::test]
    async fn the_leader_runs_an_open_window_once_records_it_and_notices_it() {
        let (_dir, node, service) = maintaining().await;
        let set = Request::Admin(AdminRequest::MaintenanceSchedule(Some(open_now())));
        ask(&service, &admin(), set).await.unwrap();
        let mut ran = None;
        service.scheduled_maintenance(&mut ran).await;
        let first = ran;
        assert!(first.is_some(), "the open window did not run");
        let status = |service: &Service| {
            let service = service.cluster.clone();
            async move {
                service
                    .read(Consistency::Linearizable, |state| {
                        state.maintenance().last.clone()
                    })
                    .await
                    .unwrap()
            }
        };
        let Some(last) = status(&service).await else {
            panic!("the run was not recorded");
        };
        assert_eq!(last.daemons.len(), 1);
        assert_eq!(last.daemons[0].0, "coordinator-1");
        assert!(last.daemons[0].1.is_ok(), "{:?}", last.daemons[0].1);
        // Once: a second round in the same window runs nothing.
        service.scheduled_maintenance(&mut ran).await;
        assert_eq!(ran, first);
        assert_eq!(status(&service).await, Some(last));
        // Everyone is told, until the window ends.
        let Ok(Response::Notices(notices)) = ask(
            &service,
            &user(Role::User),
            Request::Workspace(WorkspaceRequest::Notices),
        )
        .await
        else {
            panic!("no notices");
        };
        let maintenance: Vec<_> = notices
            .iter()
            .filter(|n| n.source == NoticeSource::Maintenance)
            .collect();
        assert_eq!(maintenance.len(), 1, "{notices:?}");
        assert!(maintenance[0].text.contains("host maintenance"));
        // Turned off, the window will not be: its notice goes at the next round.
        let off = Request::Admin(AdminRequest::MaintenanceSchedule(Some(
            MaintenanceSchedule { at: None },
        )));
        ask(&service, &admin(), off).await.unwrap();
        service.scheduled_maintenance(&mut ran).await;
        let Ok(Response::Notices(notices)) = ask(
            &service,
            &user(Role::User),
            Request::Workspace(WorkspaceRequest::Notices),
        )
        .await
        else {
            panic!("no notices");
        };
        assert!(
            notices
                .iter()
                .all(|n| n.source != NoticeSource::Maintenance),
            "{notices:?}"
        );
        node.stop().await.unwrap();
    }
}
