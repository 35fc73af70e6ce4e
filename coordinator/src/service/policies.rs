//! The lifecycle policies as a service: admins read and set them, extend a lifetime and stop
//! idle workspaces in bulk; users read a workspace's lifecycle; and the leader's loop, which
//! looks at the fleet every few seconds, asks [`crate::policy::decide`] what is due and proposes
//! each action through Raft with its reason. The decision itself is not here.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{AdminRequest, DesiredRun, Response};
use nexus_protocol::model::{NoticeAudience, NoticeSource, WorkspaceState};
use nexus_protocol::policy::{POLICY_SECS_MAX, PolicyAction, Secs};
use nexus_protocol::transport::Peer;
use nexus_protocol::{RequestId, WorkspaceName};

use super::Service;
use super::views::view_of;
use crate::cluster::Consistency;
use crate::policy::{self, Action};
use crate::state::Command;

/// The loop's period while no policy is in force, and its longest.
const PERIOD_MAX: Duration = Duration::from_secs(60);
/// The loop's shortest period, however short a policy.
const PERIOD_MIN: Duration = Duration::from_millis(200);
/// How often the loop reads the policies to learn its period: a policy made shorter takes
/// effect within this, not a long period later.
const PACE_CHECK: Duration = Duration::from_secs(1);

/// How often the loop looks: a tenth of the shortest policy duration in force, within
/// [`PERIOD_MIN`]..=[`PERIOD_MAX`]. An action is then at most a tenth of its duration late,
/// and a fleet on the defaults (7 d, 30 d, 24 h, 1 h) is looked at once a minute.
pub(super) fn loop_period(shortest_secs: Option<u64>) -> Duration {
    shortest_secs.map_or(PERIOD_MAX, |secs| {
        (Duration::from_secs(secs) / 10).clamp(PERIOD_MIN, PERIOD_MAX)
    })
}

impl Service {
    /// The policies loop, for as long as the process runs: on the leader only (a follower
    /// looks every [`PACE_CHECK`] whether it leads, and reads nothing). It reads its
    /// period from the policies every [`PACE_CHECK`] (so that an admin's change to seconds is
    /// followed at once) and looks at the fleet once a period.
    pub async fn follow_policies(&self) {
        let mut last_round: Option<tokio::time::Instant> = None;
        loop {
            // A follower reads nothing: the pace is the leader's to learn.
            if !self.cluster.leadership().borrow().leading {
                last_round = None;
                tokio::time::sleep(PACE_CHECK).await;
                continue;
            }
            let pace = self
                .cluster
                .read(Consistency::Stale, |state| state.shortest_policy_secs())
                .await
                .map(loop_period)
                .unwrap_or(PERIOD_MAX);
            tokio::time::sleep(pace.min(PACE_CHECK)).await;
            if last_round.is_some_and(|at| at.elapsed() < pace) {
                continue;
            }
            if self.cluster.require_leader().await.is_err() {
                last_round = None;
                continue;
            }
            last_round = Some(tokio::time::Instant::now());
            if let Err(error) = self.policy_round().await {
                tracing::debug!(code = %error.code, "the policy loop could not read the state: {}", error.message);
            }
        }
    }

    /// One look: decides from this leader's state what is due now and proposes it. Returns how
    /// long to wait before the next look. The Raft thread only copies what the decision reads
    /// (in constant time); the look at every workspace is made on a blocking thread, for at a
    /// million workspaces it took the Raft thread a second once a minute.
    pub async fn policy_round(&self) -> Result<Duration, WireError> {
        let now = clock::now();
        let (copy, shortest) = self
            .cluster
            .read(Consistency::Stale, |state| {
                (state.policy_copy(), state.shortest_policy_secs())
            })
            .await?;
        let actions = tokio::task::spawn_blocking(move || policy::decide(copy.subjects(), now))
            .await
            .map_err(|error| {
                WireError::new(
                    ErrorCode::Internal,
                    format!("the policy look did not finish: {error}"),
                )
            })?;
        let mut stops = Vec::new();
        for action in actions {
            match action {
                Action::Stop {
                    name,
                    idle_for_secs,
                    reason,
                } => {
                    tracing::info!(workspace = %name, "{reason}");
                    stops.push((name, idle_for_secs));
                }
                other => self.carry_out(other).await,
            }
        }
        if !stops.is_empty() {
            let count = stops.len() as u64;
            let command = Command::StopIdle {
                stops,
                by_policy: true,
            };
            if self.propose_policy(command).await {
                self.cluster
                    .metrics()
                    .policy_actions
                    .inc_by([PolicyAction::Stop.as_str()], count);
            }
        }
        Ok(loop_period(shortest))
    }

    async fn carry_out(&self, action: Action) {
        let kind = action.kind();
        let command = match action {
            Action::Notice {
                name,
                owner,
                text,
                until,
            } => {
                tracing::info!(workspace = %name, %owner, "policy notice: {text}");
                Command::PostNotice {
                    text,
                    audience: NoticeAudience::User(owner),
                    source: NoticeSource::Policy { workspace: name },
                    until: Some(until),
                }
            }
            Action::Destroy { name, reason } => {
                tracing::warn!(workspace = %name, "{reason}");
                Command::PolicyDestroy { name, reason }
            }
            Action::Withdraw { name, ids } => {
                tracing::info!(workspace = %name, "withdrawing the notices of a destroy no longer due");
                Command::ClearNotices(ids)
            }
            Action::Stop { .. } => return,
        };
        if self.propose_policy(command).await {
            self.cluster
                .metrics()
                .policy_actions
                .inc_by([kind.as_str()], 1);
        }
    }

    /// Proposes a policy's command as this coordinator; a refusal (the workspace was held or
    /// started since) is expected now and then, and only logged.
    async fn propose_policy(&self, command: Command) -> bool {
        let result = self.propose_own(command).await;
        match result {
            Ok(()) => true,
            Err(error) => {
                tracing::info!(code = %error.code, "a policy action was not applied: {}", error.message);
                false
            }
        }
    }

    /// `name`'s lifecycle, its next action as of now: as `change` (proposed by `peer` under
    /// `request_id`) left it, if there is one (read as its entry applies, as workspace changes
    /// are answered: a destroy landing right after it does not turn a change that was made into
    /// WORKSPACE_NOT_FOUND), else read at `consistency`.
    pub(super) async fn lifecycle(
        &self,
        name: &WorkspaceName,
        (request_id, peer): (RequestId, &Peer),
        change: Option<Command>,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        let wanted = name.clone();
        self.cluster
            .change_then_read(
                request_id,
                peer.identity.clone(),
                change,
                consistency,
                move |state| state.lifecycle_view(&wanted),
            )
            .await?
            .map(|view| Response::Lifecycle(Box::new(view)))
            .ok_or_else(|| {
                WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
            })
    }

    /// An admin's policy request (the caller is checked an admin by `admin`).
    pub(super) async fn policy_admin(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        match request {
            AdminRequest::Policies => {
                let view = self
                    .cluster
                    .read(consistency, |state| state.policies_view())
                    .await?;
                Ok(Response::Policies(Box::new(view)))
            }
            AdminRequest::SetPolicy { scope, patch } => {
                if patch.is_empty() {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "no policy to set",
                    ));
                }
                patch
                    .check()
                    .map_err(|why| WireError::new(ErrorCode::InvalidArgument, why.to_string()))?;
                let view = self
                    .cluster
                    .change_then_read(
                        request_id,
                        peer.identity.clone(),
                        Some(Command::SetPolicy { scope, patch }),
                        consistency,
                        |state| state.policies_view(),
                    )
                    .await?;
                Ok(Response::Policies(Box::new(view)))
            }
            AdminRequest::ExtendLifetime { name, by_secs } => {
                if by_secs == 0 || by_secs > POLICY_SECS_MAX {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!(
                            "extend by more than 0 and at most {}",
                            Secs(POLICY_SECS_MAX)
                        ),
                    ));
                }
                let command = Command::ExtendLifetime {
                    name: name.clone(),
                    by_secs,
                };
                let by = (request_id, peer);
                self.lifecycle(&name, by, Some(command), Consistency::Linearizable)
                    .await
            }
            AdminRequest::StopIdle { idle_for_secs } => {
                if idle_for_secs == 0 {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "--idle-for 0 would stop every running workspace; give a duration such as 24h",
                    ));
                }
                self.stop_idle(peer, request_id, idle_for_secs).await
            }
            _ => Err(WireError::new(
                ErrorCode::InvalidArgument,
                "not a policy request",
            )),
        }
    }

    /// Stops every running workspace idle at least `idle_for_secs`, held ones excepted, and
    /// answers with those it stopped.
    async fn stop_idle(
        &self,
        peer: &Peer,
        request_id: RequestId,
        idle_for_secs: u64,
    ) -> Result<Response, WireError> {
        let now = clock::now();
        let idle: Vec<(WorkspaceName, u64)> = self
            .cluster
            .read(Consistency::Linearizable, move |state| {
                state
                    .workspaces()
                    .iter()
                    .filter(|(_, w)| {
                        w.desired == DesiredRun::Running
                            && w.state != WorkspaceState::Destroying
                            && !w.lifecycle.held
                            && now.saturating_since(w.lifecycle.last_activity.at).as_secs()
                                >= idle_for_secs
                    })
                    .map(|(name, _)| (name.clone(), idle_for_secs))
                    .collect()
            })
            .await?;
        if idle.is_empty() {
            return Ok(Response::Workspaces(Vec::new()));
        }
        let names: Vec<WorkspaceName> = idle.iter().map(|(name, _)| name.clone()).collect();
        let command = Command::StopIdle {
            stops: idle,
            by_policy: false,
        };
        let stopped = self
            .cluster
            .change_then_read(
                request_id,
                peer.identity.clone(),
                Some(command),
                Consistency::Linearizable,
                move |state| {
                    names
                        .iter()
                        .filter_map(|name| state.workspaces().get(name))
                        .filter(|w| w.desired == DesiredRun::Stopped)
                        .map(view_of)
                        .collect()
                },
            )
            .await?;
        Ok(Response::Workspaces(stopped))
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{Request, WorkspaceRequest};
    use nexus_protocol::policy::{PolicyPatch, PolicyScope};

    use super::*;
    use crate::service::testing::{ask, named, one_node_with_h1, user, workspace_spec, ws};

    #[tokio::test]
    async fn a_round_posts_the_notices_then_destroys_and_stops_the_idle() {
        let (_dir, node, service) = one_node_with_h1().await;
        let alice = named("alice", Role::User);
        for name in ["old", "kept"] {
            let create = ws(WorkspaceRequest::Create(workspace_spec(name, &[])));
            ask(&service, &alice, create).await.unwrap();
        }
        ask(
            &service,
            &alice,
            ws(WorkspaceRequest::Hold("kept".parse().unwrap())),
        )
        .await
        .unwrap();
        let set = AdminRequest::SetPolicy {
            scope: PolicyScope::Cluster,
            patch: PolicyPatch {
                inactive_stop_after_secs: Some(1),
                max_lifetime_secs: Some(1),
                first_notice_secs: Some(0),
                last_notice_secs: Some(0),
            },
        };
        ask(&service, &user(Role::Admin), Request::Admin(set))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // Stop and first notice; then the last; then the destroy.
        for _ in 0..3 {
            let period = service.policy_round().await.unwrap();
            assert_eq!(period, PERIOD_MIN);
        }
        let (old, kept) = service
            .cluster
            .read(Consistency::Linearizable, |state| {
                let of = |name: &str| {
                    let w = &state.workspaces()[&name.parse::<WorkspaceName>().unwrap()];
                    (w.state, w.desired)
                };
                (of("old"), of("kept"))
            })
            .await
            .unwrap();
        assert_eq!(old, (WorkspaceState::Destroying, DesiredRun::Stopped));
        assert_eq!(kept.1, DesiredRun::Running);
        let metrics = service.cluster.metrics();
        assert_eq!(
            metrics.policy_actions.get([PolicyAction::Notice.as_str()]),
            2
        );
        assert_eq!(
            metrics.policy_actions.get([PolicyAction::Destroy.as_str()]),
            1
        );
        assert_eq!(metrics.policy_actions.get([PolicyAction::Stop.as_str()]), 1);
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn only_the_owner_or_an_admin_holds_and_only_an_admin_sets_policies() {
        let (_dir, node, service) = one_node_with_h1().await;
        let alice = named("alice", Role::User);
        let bob = named("bob", Role::User);
        let create = ws(WorkspaceRequest::Create(workspace_spec("api", &[])));
        ask(&service, &alice, create).await.unwrap();
        let hold = || ws(WorkspaceRequest::Hold("api".parse().unwrap()));
        let denied = ask(&service, &bob, hold()).await.unwrap_err();
        assert_eq!(denied.code, ErrorCode::PermissionDenied);
        let Response::Lifecycle(view) = ask(&service, &alice, hold()).await.unwrap() else {
            panic!("not a lifecycle");
        };
        assert!(view.held);
        assert_eq!(view.next, None);
        let set = Request::Admin(AdminRequest::SetPolicy {
            scope: PolicyScope::Workspace("api".parse().unwrap()),
            patch: PolicyPatch {
                max_lifetime_secs: Some(0),
                ..PolicyPatch::default()
            },
        });
        let refused = ask(&service, &alice, set.clone()).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied);
        let Response::Policies(policies) = ask(&service, &user(Role::Admin), set).await.unwrap()
        else {
            panic!("not policies");
        };
        assert_eq!(policies.workspaces.len(), 1);
        let empty = Request::Admin(AdminRequest::SetPolicy {
            scope: PolicyScope::Cluster,
            patch: PolicyPatch::default(),
        });
        let refused = ask(&service, &user(Role::Admin), empty).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidArgument);
        node.stop().await.unwrap();
    }

    #[test]
    fn the_loop_looks_a_tenth_of_the_shortest_policy_within_bounds() {
        assert_eq!(loop_period(None), PERIOD_MAX);
        assert_eq!(loop_period(Some(604_800)), PERIOD_MAX);
        assert_eq!(loop_period(Some(30)), Duration::from_secs(3));
        assert_eq!(loop_period(Some(1)), PERIOD_MIN);
    }
}
