//! Agents' requests: registration (a Raft write), heartbeats and container samples (soft state
//! on the leader, see [`super::liveness`]), reports of what runs (Raft writes, unless a report
//! repeats what the state holds: `State::repeats_the_state`; otherwise only its entries that
//! change the state: `State::report_changes`), and where the
//! agent serves logs and exec. The desired-state watch is [`super::watch`]; activity reports are
//! [`super::activity`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{AgentRequest, ObservedWorkspace, Response};
use nexus_protocol::model::HostStatus;
use nexus_protocol::transport::Peer;
use nexus_protocol::{HostId, RequestId};

use super::Service;
use super::checks::{check_endpoint, check_report, denied, too_many};
use super::liveness::Liveness;
use crate::cluster::Consistency;
use crate::locks::lock;
use crate::state::Command;

impl Service {
    /// What of `observed` from `host` to propose: `None` when it repeats what the leader's
    /// applied state holds, so that acknowledging it needs no entry; else the entries that
    /// change the state (`State::report_changes`), or the whole report. Read at once from the
    /// replica as it is: what it applied is committed. Only a leader answers so: a follower
    /// forwards the whole report as before, since its replica may lag behind a change (a host
    /// marked down) that the leader would refuse the report for. The report goes to the read
    /// and comes back.
    ///
    /// A report the same as the host's last repeat, while none of the host's workspaces has
    /// changed since ([`State::report_epoch`](crate::state::State::report_epoch)), is a repeat
    /// without a look at its workspaces: at a million workspaces, those lookups by name were
    /// most of the leader's Raft thread.
    async fn to_propose(
        &self,
        host: &HostId,
        observed: Vec<ObservedWorkspace>,
    ) -> Result<Option<Vec<ObservedWorkspace>>, WireError> {
        if !self.cluster.leadership().borrow().leading {
            return Ok(Some(observed));
        }
        let digest = self.repeats.digest(&observed);
        let known = self.repeats.known(host);
        let wanted = host.clone();
        let (changes, epoch, observed) = self
            .cluster
            .read(Consistency::Stale, move |state| {
                let Some(epoch) = state.report_epoch(&wanted) else {
                    return (None, None, observed);
                };
                if known == Some(Repeat { digest, epoch }) {
                    return (Some(Vec::new()), Some(epoch), observed);
                }
                let changes = state.report_changes(&wanted, &observed);
                (changes, Some(epoch), observed)
            })
            .await?;
        match (changes, epoch) {
            (Some(changes), Some(epoch)) if changes.is_empty() => {
                self.repeats.keep(host, Repeat { digest, epoch });
                Ok(None)
            }
            (Some(changes), _) => {
                self.repeats.forget(host);
                Ok(Some(changes))
            }
            (None, _) => {
                self.repeats.forget(host);
                Ok(Some(observed))
            }
        }
    }

    /// Refuses `host`'s `what` with `HOST_DOWN` while this replica has the host marked down, as
    /// the state machine refuses its workspace reports: its agent sends it again once a
    /// heartbeat has returned the host. Read from the published roster before proposing, not at
    /// apply: a host marked down between the two still has its report taken, which is harmless
    /// (what it reports is true of its workspaces), and changing the apply would need a new
    /// version of entries.
    fn refuse_if_down(&self, host: &HostId, what: &str) -> Result<(), WireError> {
        let status = self.cluster.roster_hosts().get(host).map(|h| h.status);
        if status == Some(HostStatus::Down) {
            return Err(WireError::new(
                ErrorCode::HostDown,
                format!(
                    "host {host} is marked down; its {what} is taken once a heartbeat returns it"
                ),
            ));
        }
        Ok(())
    }

    /// Takes a heartbeat. Liveness is the leader's to judge: agents heartbeat the leader. At
    /// thousands a second this is the leader's commonest request, so it asks the driver nothing
    /// but a down host's return: whether this node leads is the driver's published word, and
    /// whether the host is in the fleet and not down was read at an earlier heartbeat and holds
    /// while the roster's number has not moved ([`Cluster::roster`](crate::cluster::Cluster::roster)).
    /// A host marked down moves it, so its next heartbeat reads the published roster, finds it
    /// down and returns it. When hundreds are marked at once, every heartbeat of the fleet reads
    /// again: from the published copy, not through the Raft thread that is applying the
    /// markings (through it, each waited out that apply, and live hosts fell silent in turn).
    async fn heartbeat(
        &self,
        host: &HostId,
        stats: Option<nexus_protocol::model::HostStats>,
    ) -> Result<(), WireError> {
        self.cluster.require_leading().await?;
        let roster = self.cluster.roster();
        let standing = self.liveness().get(host).and_then(|l| l.roster) == Some(roster);
        if !standing {
            // As of the number read above, or newer; the driver is not asked, so a busy Raft
            // thread (a mass marking being applied) never holds the fleet's heartbeats.
            let status = self.cluster.roster_hosts().get(host).map(|h| h.status);
            match status {
                None => {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("host {host} has not registered; register first"),
                    ));
                }
                Some(HostStatus::Down) => {
                    // Back: its workspaces return from lost to what its agent reports. The
                    // return moves the roster, so the next heartbeat reads again.
                    tracing::info!(%host, "a host that was down heartbeats again");
                    self.cluster
                        .propose(
                            RequestId::random(),
                            self.identity.clone(),
                            Command::HostReturned { host: host.clone() },
                        )
                        .await?;
                }
                Some(_) => {}
            }
        }
        let now = clock::now();
        let mut liveness = self.liveness();
        let entry = liveness.entry(host.clone()).or_insert(Liveness {
            at: now,
            stats: None,
            containers: Vec::new(),
            roster: None,
        });
        entry.at = now;
        if !standing {
            entry.roster = Some(roster);
        }
        if stats.is_some() {
            entry.stats = stats;
        }
        drop(liveness);
        self.cluster.metrics().heartbeats.inc();
        Ok(())
    }

    pub(super) async fn agent(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AgentRequest,
    ) -> Result<Response, WireError> {
        let Identity::Agent(host_id) = &peer.identity else {
            return Err(denied(peer, "only agents speak for hosts"));
        };
        match request {
            AgentRequest::Register(info) => {
                if &info.host_id != host_id {
                    return Err(denied(
                        peer,
                        &format!(
                            "an agent may speak only for its own host, not {}",
                            info.host_id
                        ),
                    ));
                }
                // An agent registers at every connection: after a failover, the whole fleet
                // at once. One whose facts this replica has applied already (so committed)
                // needs no entry, and its session goes on without waiting on the Raft thread.
                // (Facts changed and changed back within one commit's time, while the change
                // is still unapplied, keep the change: an agent's facts do not flap so fast.)
                let known = self
                    .cluster
                    .roster_hosts()
                    .get(host_id)
                    .is_some_and(|known| known.info == info);
                if !known {
                    self.cluster
                        .propose(
                            request_id,
                            peer.identity.clone(),
                            Command::RegisterHost(info),
                        )
                        .await?;
                }
                // Liveness starts with the first heartbeat, which only the leader takes: a
                // follower that forwarded the registration keeps no record of the host's health.
                Ok(Response::Registered {
                    host_id: host_id.clone(),
                })
            }
            AgentRequest::Heartbeat { sequence: _, stats } => {
                self.heartbeat(host_id, stats).await?;
                Ok(Response::Ack)
            }
            AgentRequest::ReportObserved(observed) => {
                too_many(observed.len())?;
                check_report(&observed)?;
                let reports = &self.cluster.metrics().reports;
                let Some(observed) = self.to_propose(host_id, observed).await? else {
                    reports.inc(["repeat"]);
                    return Ok(Response::Ack);
                };
                reports.inc(["change"]);
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::RecordObserved {
                            host: host_id.clone(),
                            observed,
                        },
                    )
                    .await?;
                Ok(Response::Ack)
            }
            AgentRequest::ContainerStats(containers) => {
                too_many(containers.len())?;
                self.cluster.require_leading().await?;
                if let Some(entry) = self.liveness().get_mut(host_id) {
                    entry.containers = containers;
                }
                Ok(Response::Ack)
            }
            AgentRequest::Serving(address) => {
                check_endpoint(&address)?;
                self.cluster.require_leader().await?;
                lock(&self.endpoints).insert(host_id.clone(), address);
                Ok(Response::Ack)
            }
            AgentRequest::WatchDesired { .. } | AgentRequest::WatchDesiredCauses { .. } => {
                Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    "a desired-state watch is a subscription; open it as one",
                ))
            }
            AgentRequest::Activity(reported) => {
                self.refuse_if_down(host_id, "activity")?;
                self.activity(peer, request_id, host_id, reported).await
            }
            AgentRequest::Credential(ask) => self.grant_credential(peer, host_id, ask).await,
            AgentRequest::Worktree { workspace, facts } => {
                self.refuse_if_down(host_id, "worktree report")?;
                self.record_worktree(request_id, peer, host_id, workspace, facts)
                    .await
            }
            AgentRequest::KeptBranch { owner, kept } => {
                self.kept_branch(host_id, owner, kept).await
            }
            AgentRequest::Renew(renewal) => self.renew(peer, request_id, renewal).await,
            AgentRequest::WatchDenyList | AgentRequest::WatchTrust => Err(WireError::new(
                ErrorCode::InvalidArgument,
                "a watch is a subscription; open it as one",
            )),
            AgentRequest::TrustsCa { new_ca } => self.trusts_ca(peer, new_ca).await,
        }
    }
}

/// A report found a repeat: its digest, and the epoch of its host's workspaces when it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Repeat {
    digest: u64,
    epoch: u64,
}

/// Each host's last report found a repeat. Digests are keyed afresh in each process, so an
/// agent cannot make two different reports of its own collide; a host's entry is replaced by its
/// next report, and one per host at most is kept.
#[derive(Debug, Default)]
pub(super) struct Repeats {
    keys: RandomState,
    by_host: Mutex<HashMap<HostId, Repeat>>,
}

impl Repeats {
    fn digest(&self, observed: &[ObservedWorkspace]) -> u64 {
        self.keys.hash_one(observed)
    }

    fn known(&self, host: &HostId) -> Option<Repeat> {
        lock(&self.by_host).get(host).copied()
    }

    fn keep(&self, host: &HostId, repeat: Repeat) {
        lock(&self.by_host).insert(host.clone(), repeat);
    }

    fn forget(&self, host: &HostId) {
        lock(&self.by_host).remove(host);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::HostId;
    use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{AgentRequest, ObservedWorkspace, Request, Response};
    use nexus_protocol::model::{HostStatus, WorkspaceState};

    use crate::service::testing::{
        agent, ask, code, info, leading, mark_down, one_node, one_node_with_h1, register, user,
    };
    use crate::state::Command;

    #[tokio::test]
    async fn agents_speak_only_for_their_own_host() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let register = |host: &'static str| Request::Agent(AgentRequest::Register(info(host)));
        assert_eq!(
            code(ask(&service, &agent("h1"), register("h2")).await),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(ask(&service, &user(Role::Admin), register("h1")).await),
            Some(ErrorCode::PermissionDenied)
        );
        let heartbeat = Request::Agent(AgentRequest::Heartbeat {
            sequence: 1,
            stats: None,
        });
        assert_eq!(
            code(ask(&service, &agent("h1"), heartbeat.clone()).await),
            Some(ErrorCode::InvalidArgument)
        );
        assert!(matches!(
            ask(&service, &agent("h1"), register("h1")).await,
            Ok(Response::Registered { .. })
        ));
        assert!(matches!(
            ask(&service, &agent("h1"), heartbeat).await,
            Ok(Response::Ack)
        ));
        node.stop().await.unwrap();
    }

    fn report(state: WorkspaceState, error: Option<WireError>) -> Request {
        Request::Agent(AgentRequest::ReportObserved(vec![ObservedWorkspace {
            name: "w".parse().unwrap(),
            generation: 1,
            state,
            ports: vec![],
            error,
        }]))
    }

    #[tokio::test]
    async fn reports_an_agent_may_not_send_are_refused() {
        let (_dir, node, service) = one_node_with_h1().await;
        let h1 = agent("h1");
        // States only the coordinator sets.
        for state in [
            WorkspaceState::Destroying,
            WorkspaceState::Lost,
            WorkspaceState::Scheduled,
        ] {
            assert_eq!(
                code(ask(&service, &h1, report(state, None)).await),
                Some(ErrorCode::InvalidArgument),
                "{state}"
            );
        }
        // Errors longer than the state keeps.
        let long = WireError::new(ErrorCode::ContainerError, "x".repeat(5_000));
        assert_eq!(
            code(ask(&service, &h1, report(WorkspaceState::Failed, Some(long))).await),
            Some(ErrorCode::InvalidArgument)
        );
        let lines = WireError::new(ErrorCode::ContainerError, "exited").with_detail(
            ErrorDetail::ContainerExited {
                exit_code: 1,
                oom_killed: false,
                last_lines: vec!["y".into(); 51],
            },
        );
        assert_eq!(
            code(ask(&service, &h1, report(WorkspaceState::Failed, Some(lines))).await),
            Some(ErrorCode::InvalidArgument)
        );
        // A report of a workspace the state does not know changes nothing, and is fine.
        assert!(matches!(
            ask(&service, &h1, report(WorkspaceState::Running, None)).await,
            Ok(Response::Ack)
        ));
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn an_agents_activity_moves_its_own_workspaces_last_activity_only() {
        use nexus_protocol::clock::{self, Timestamp};
        use nexus_protocol::message::WorkspaceRequest;
        use nexus_protocol::model::{Activity, ActivityKind};
        use std::time::Duration;

        use crate::service::testing::{one_node_with_w_on_h1, ws};

        let (_dir, node, service) = one_node_with_w_on_h1().await;
        // A granularity of a millisecond (the host TTL's), so that the test need not wait.
        *crate::locks::lock(&service.host_ttl_handle()) = Duration::from_millis(1);
        let last = || async {
            match ask(
                &service,
                &user(Role::User),
                ws(WorkspaceRequest::Lifecycle("w".parse().unwrap())),
            )
            .await
            {
                Ok(Response::Lifecycle(view)) => view.last_activity,
                other => panic!("{other:?}"),
            }
        };
        let created = last().await;
        assert_eq!(created.kind, ActivityKind::Created);
        let report = |kind, at| {
            Request::Agent(AgentRequest::Activity(vec![(
                "w".parse().unwrap(),
                Activity { at, kind },
            )]))
        };
        tokio::time::sleep(Duration::from_millis(5)).await;

        // Another host's agent does not speak for it.
        register(&service, "h2").await;
        let exec = report(ActivityKind::Exec, clock::now());
        assert!(matches!(
            ask(&service, &agent("h2"), exec.clone()).await,
            Ok(Response::Ack)
        ));
        assert_eq!(last().await, created, "h2 spoke for h1's workspace");

        // Its own host's agent does.
        assert!(matches!(
            ask(&service, &agent("h1"), exec).await,
            Ok(Response::Ack)
        ));
        let used = last().await;
        assert_eq!(used.kind, ActivityKind::Exec);
        assert!(used.at > created.at);

        // A time an hour ahead is recorded as the leader's now.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ahead = Timestamp::from_millis(clock::now().as_millis() + 3_600_000);
        ask(
            &service,
            &agent("h1"),
            report(ActivityKind::PortTraffic, ahead),
        )
        .await
        .unwrap();
        let traffic = last().await;
        assert_eq!(traffic.kind, ActivityKind::PortTraffic);
        assert!(
            traffic.at > used.at && traffic.at <= clock::now(),
            "{traffic:?}"
        );

        // Too many entries are refused.
        let many = Request::Agent(AgentRequest::Activity(vec![
            (
                "w".parse().unwrap(),
                Activity {
                    at: clock::now(),
                    kind: ActivityKind::Logs,
                },
            );
            1_001
        ]));
        assert_eq!(
            code(ask(&service, &agent("h1"), many).await),
            Some(ErrorCode::InvalidArgument)
        );

        // A host marked down has its activity refused (and recorded nothing) until a heartbeat
        // returns it.
        crate::service::testing::mark_down(&service, "h1").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let logs = || report(ActivityKind::Logs, clock::now());
        assert_eq!(
            code(ask(&service, &agent("h1"), logs()).await),
            Some(ErrorCode::HostDown)
        );
        assert_eq!(last().await, traffic);
        let beat = Request::Agent(AgentRequest::Heartbeat {
            sequence: 1,
            stats: None,
        });
        ask(&service, &agent("h1"), beat).await.unwrap();
        ask(&service, &agent("h1"), logs()).await.unwrap();
        assert_eq!(last().await.kind, ActivityKind::Logs);
        node.stop().await.unwrap();
    }

    /// A report the leader found a repeat is answered as one again only while none of its
    /// host's workspaces changed: a change that came another way (here a report forwarded by a
    /// follower, proposed as it is) makes the same report a change again.
    #[tokio::test]
    async fn a_known_repeat_is_looked_at_again_once_its_hosts_workspaces_change() {
        use nexus_protocol::RequestId;
        use nexus_protocol::identity::Identity;

        use crate::cluster::Consistency;
        use crate::service::testing::one_node_with_w_on_h1;

        let (_dir, node, service) = one_node_with_w_on_h1().await;
        let h1 = agent("h1");
        let state_of_w = || async {
            service
                .cluster
                .read(Consistency::Stale, |state| {
                    state
                        .workspaces()
                        .get(&"w".parse::<nexus_protocol::WorkspaceName>().unwrap())
                        .map(|w| w.state)
                })
                .await
                .unwrap()
        };
        let counted = |kind: &str| service.cluster.metrics().reports.get([kind]);
        let running = report(WorkspaceState::Running, None);
        ask(&service, &h1, running.clone()).await.unwrap();
        assert_eq!(state_of_w().await, Some(WorkspaceState::Running));
        let changes = counted("change");
        for _ in 0..3 {
            ask(&service, &h1, running.clone()).await.unwrap();
        }
        assert_eq!(counted("change"), changes, "the same report three times");
        assert!(service.repeats.known(&HostId::new("h1").unwrap()).is_some());

        // The workspace fails by a route that does not pass the leader's check.
        service
            .cluster
            .propose(
                RequestId::random(),
                Identity::Agent("h1".parse().unwrap()),
                Command::RecordObserved {
                    host: "h1".parse().unwrap(),
                    observed: vec![ObservedWorkspace {
                        name: "w".parse().unwrap(),
                        generation: 1,
                        state: WorkspaceState::Failed,
                        ports: vec![],
                        error: None,
                    }],
                },
            )
            .await
            .unwrap();
        assert_eq!(state_of_w().await, Some(WorkspaceState::Failed));
        ask(&service, &h1, running).await.unwrap();
        assert_eq!(counted("change"), changes + 1);
        assert_eq!(state_of_w().await, Some(WorkspaceState::Running));
        node.stop().await.unwrap();
    }

    /// A heartbeat never waits on the Raft thread: with the roster moved (another host
    /// registered) and the driver held by a read, a host's heartbeat is still answered, from
    /// the roster the driver published.
    #[tokio::test]
    async fn a_heartbeat_is_answered_while_the_raft_thread_is_held() {
        let (_dir, node, service) = one_node_with_h1().await;
        let beat = Request::Agent(AgentRequest::Heartbeat {
            sequence: 1,
            stats: None,
        });
        ask(&service, &agent("h1"), beat.clone()).await.unwrap();
        let read_at = service.cluster.roster();
        register(&service, "h2").await;
        assert!(
            service.cluster.roster() > read_at,
            "a registration moves the roster"
        );
        let (entered, holding) = tokio::sync::oneshot::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let hold = tokio::spawn({
            let cluster = service.cluster.clone();
            async move {
                cluster
                    .read(crate::cluster::Consistency::Stale, move |_| {
                        let _ = entered.send(());
                        let _ = held.recv_timeout(Duration::from_secs(20));
                    })
                    .await
            }
        });
        holding.await.unwrap();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            ask(&service, &agent("h1"), beat.clone()),
        )
        .await;
        release.send(()).unwrap();
        assert!(
            matches!(answer, Ok(Ok(Response::Ack))),
            "the heartbeat waited on the held driver: {answer:?}"
        );
        hold.await.unwrap().unwrap();
        node.stop().await.unwrap();
    }

    /// A reconnecting agent registers again; when its facts are the ones applied, nothing is
    /// written, and when they changed, they are.
    #[tokio::test]
    async fn registering_again_unchanged_writes_nothing_and_a_change_is_written() {
        let (_dir, node, service) = one_node_with_h1().await;
        let registration = |info| Request::Agent(AgentRequest::Register(info));
        let applied = || async { service.cluster.view().await.unwrap().applied_index };
        let before = applied().await;
        for _ in 0..3 {
            assert!(matches!(
                ask(&service, &agent("h1"), registration(info("h1"))).await,
                Ok(Response::Registered { .. })
            ));
        }
        assert_eq!(
            applied().await,
            before,
            "no entry for facts already applied"
        );
        let mut changed = info("h1");
        changed.agent_version = "9.9.9".into();
        ask(&service, &agent("h1"), registration(changed.clone()))
            .await
            .unwrap();
        assert!(applied().await > before);
        let kept = || async {
            service
                .cluster
                .read(crate::cluster::Consistency::Linearizable, |state| {
                    state.hosts()[&HostId::new("h1").unwrap()].info.clone()
                })
                .await
                .unwrap()
        };
        assert_eq!(kept().await, changed);
        // And back: the facts compared are the ones applied last, not the roster's.
        ask(&service, &agent("h1"), registration(info("h1")))
            .await
            .unwrap();
        assert_eq!(kept().await, info("h1"));
        node.stop().await.unwrap();
    }

    /// The heartbeat's shortcut (no read while the roster's number stands) never hides a
    /// change of the roster: a host marked down is returned by its next heartbeat, and a host
    /// removed from the fleet is told to register.
    #[tokio::test]
    async fn a_heartbeat_returns_a_host_marked_down_since_the_last_one() {
        let (_dir, node, service) = one_node_with_h1().await;
        let beat = || {
            Request::Agent(AgentRequest::Heartbeat {
                sequence: 1,
                stats: None,
            })
        };
        let status = |service: &crate::service::Service| {
            let cluster = service.cluster.clone();
            async move {
                cluster
                    .read(crate::cluster::Consistency::Linearizable, |state| {
                        state
                            .hosts()
                            .get(&HostId::new("h1").unwrap())
                            .map(|h| h.status)
                    })
                    .await
                    .unwrap()
            }
        };
        for _ in 0..3 {
            assert!(matches!(
                ask(&service, &agent("h1"), beat()).await,
                Ok(Response::Ack)
            ));
        }
        let read_at = service.cluster.roster();
        for round in 0..2 {
            mark_down(&service, "h1").await;
            assert_eq!(
                status(&service).await,
                Some(HostStatus::Down),
                "round {round}"
            );
            assert!(service.cluster.roster() > read_at);
            ask(&service, &agent("h1"), beat()).await.unwrap();
            assert_eq!(
                status(&service).await,
                Some(HostStatus::Ready),
                "round {round}"
            );
        }
        service
            .propose_own(Command::RemoveHost {
                host: HostId::new("h1").unwrap(),
                force: false,
                by: "test".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            code(ask(&service, &agent("h1"), beat()).await),
            Some(ErrorCode::InvalidArgument)
        );
        node.stop().await.unwrap();
    }
}
