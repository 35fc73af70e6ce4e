//! Users' workspace requests: list, inspect, create (through the placer's batches), start, stop,
//! restart, repair, switch, destroy, clean up, and where a workspace's host serves logs and exec.
//! Users see and change their own workspaces; admins all of them.

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{DesiredRun, LIST_PAGE_MAX, Response, WorkspaceRequest};
use nexus_protocol::model::{WorkspaceSpec, WorkspaceState, WorkspaceView};
use nexus_protocol::transport::Peer;
use nexus_protocol::{RequestId, UserName, WorkspaceName};

use super::Service;
use super::checks::{check_repo_access, check_spec, denied, too_many};
use super::views::{detail_of, list_page, view_of};
use crate::cluster::Consistency;
use crate::locks::lock;
use crate::scheduler::Scoring;
use crate::state::{Command, OWNED_ENTRIES, PlaceRequest};

impl Service {
    /// A user's (or an admin's) workspace request. Users see and change their own workspaces;
    /// admins all of them.
    pub(super) async fn workspace(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: WorkspaceRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        let Identity::User { name: user, role } = &peer.identity else {
            return Err(denied(peer, "only users manage workspaces"));
        };
        let admin = *role == Role::Admin;
        let reading = matches!(
            request,
            WorkspaceRequest::List
                | WorkspaceRequest::ListPage { .. }
                | WorkspaceRequest::ListStream
                | WorkspaceRequest::Watch(_)
                | WorkspaceRequest::Inspect(_)
                | WorkspaceRequest::Describe(_)
                | WorkspaceRequest::Endpoint(_)
                | WorkspaceRequest::Events(_)
                | WorkspaceRequest::Notices
                | WorkspaceRequest::Lifecycle(_)
                | WorkspaceRequest::Worktree(_)
        );
        if consistency == Consistency::Stale && !reading {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "only reads may be stale; send the change without --stale",
            ));
        }
        match request {
            WorkspaceRequest::List => {
                let user = user.clone();
                let views = self
                    .cluster
                    .read(consistency, move |state| {
                        state
                            .workspaces()
                            .values()
                            .filter(|w| admin || w.owner == user)
                            .map(view_of)
                            .collect()
                    })
                    .await?;
                Ok(Response::Workspaces(views))
            }
            WorkspaceRequest::ListStream | WorkspaceRequest::Watch(_) => Err(WireError::new(
                ErrorCode::InvalidArgument,
                "a stream is answered as one; open it as a subscription",
            )),
            WorkspaceRequest::ListPage { after, limit } => {
                let user = user.clone();
                let limit = limit.clamp(1, LIST_PAGE_MAX) as usize;
                self.cluster
                    .read(consistency, move |state| {
                        let (workspaces, next) =
                            list_page(state.workspaces(), after.as_ref(), limit, |w| {
                                admin || w.owner == user
                            });
                        Response::WorkspacePage {
                            workspaces: workspaces.into_iter().map(|w| view_of(w)).collect(),
                            next,
                        }
                    })
                    .await
            }
            WorkspaceRequest::Inspect(name) => Ok(Response::Workspace(
                self.owned(peer, &name, admin, consistency).await?,
            )),
            WorkspaceRequest::Describe(name) => {
                self.owned(peer, &name, admin, consistency).await?;
                let wanted = name.clone();
                self.cluster
                    .read(consistency, move |state| {
                        state
                            .workspaces()
                            .get(&wanted)
                            .map(|w| Box::new(detail_of(w)))
                    })
                    .await?
                    .map(Response::WorkspaceDetail)
                    .ok_or_else(|| {
                        WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
                    })
            }
            WorkspaceRequest::Events(name) => self.events(peer, &name, admin, consistency).await,
            WorkspaceRequest::Lifecycle(name) => {
                self.owned(peer, &name, admin, consistency).await?;
                self.lifecycle(&name, (request_id, peer), None, consistency)
                    .await
            }
            WorkspaceRequest::Hold(ref name) | WorkspaceRequest::Release(ref name) => {
                let held = matches!(request, WorkspaceRequest::Hold(_));
                let name = name.clone();
                self.owned(peer, &name, admin, Consistency::Linearizable)
                    .await?;
                let command = self.as_owner(Command::HoldWorkspace {
                    name: name.clone(),
                    held,
                });
                let by = (request_id, peer);
                self.lifecycle(&name, by, Some(command), Consistency::Linearizable)
                    .await
            }
            WorkspaceRequest::Worktree(name) => {
                self.owned(peer, &name, admin, consistency).await?;
                self.worktree(&name, consistency).await
            }
            WorkspaceRequest::RenewSession(renewal) => {
                self.renew_session(peer, request_id, renewal).await
            }
            WorkspaceRequest::Notices => {
                let user = user.clone();
                let now = clock::now();
                let notices = self
                    .cluster
                    .read(consistency, move |state| {
                        state.notices().for_user(&user, now)
                    })
                    .await?;
                Ok(Response::Notices(notices))
            }
            WorkspaceRequest::Endpoint(name) => {
                let view = self
                    .owned(peer, &name, admin, Consistency::Linearizable)
                    .await?;
                let host = view.host.ok_or_else(|| {
                    WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("workspace {name} has no host"),
                    )
                })?;
                // Only the leader hears agents (a former leader's book may be stale): a
                // follower sends the client there.
                self.cluster.require_leader().await?;
                if let Some(address) = lock(&self.endpoints).get(&host).cloned() {
                    return Ok(Response::Endpoint { host, address });
                }
                Err(WireError::new(
                    ErrorCode::BackendUnavailable,
                    format!("host {host}'s agent has not said where it serves logs and exec"),
                ))
            }
            WorkspaceRequest::Create(spec) => {
                check_repo_access(&spec, admin)?;
                self.create(request_id, user, spec, None).await
            }
            WorkspaceRequest::CreateWith { spec, scoring } => {
                check_repo_access(&spec, admin)?;
                self.create(request_id, user, spec, scoring).await
            }
            WorkspaceRequest::Start(name) => {
                self.set_run(peer, request_id, &name, admin, DesiredRun::Running)
                    .await
            }
            WorkspaceRequest::Stop(name) => {
                self.set_run(peer, request_id, &name, admin, DesiredRun::Stopped)
                    .await
            }
            WorkspaceRequest::Destroy(name) => {
                let command = Command::DestroyWorkspace { name: name.clone() };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Restart(name) => {
                let command = Command::RestartWorkspace { name: name.clone() };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Repair(name) => {
                let command = Command::RepairWorkspace { name: name.clone() };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Switch(name) => {
                // In the owner's context: an admin switching a user's workspace stops that
                // user's others, not the admin's.
                let owner = self
                    .owned(peer, &name, admin, Consistency::Linearizable)
                    .await?
                    .owner;
                let command = Command::SwitchWorkspace {
                    owner,
                    name: name.clone(),
                };
                self.change(peer, request_id, &name, admin, command).await
            }
            WorkspaceRequest::Cleanup { older_than_secs } => {
                self.cleanup(peer, request_id, Some(user.clone()), older_than_secs)
                    .await
            }
            WorkspaceRequest::CleanupOf {
                owner,
                older_than_secs,
            } => {
                if !admin {
                    return Err(denied(peer, "only admins clean up others' workspaces"));
                }
                self.cleanup(peer, request_id, owner, older_than_secs).await
            }
        }
    }

    /// Destroys the stopped workspaces (of `owner`, or everyone's) unchanged for
    /// `older_than_secs`; answers them, being destroyed.
    async fn cleanup(
        &self,
        peer: &Peer,
        request_id: RequestId,
        owner: Option<UserName>,
        older_than_secs: u64,
    ) -> Result<Response, WireError> {
        let horizon = clock::now()
            .as_millis()
            .saturating_sub(older_than_secs.saturating_mul(1000));
        let names: Vec<WorkspaceName> = self
            .cluster
            .read(Consistency::Linearizable, move |state| {
                state
                    .workspaces()
                    .values()
                    .filter(|w| {
                        owner.as_ref().is_none_or(|owner| &w.owner == owner)
                            && w.state == WorkspaceState::Stopped
                            && w.desired == DesiredRun::Stopped
                            && w.updated_at.as_millis() <= horizon
                    })
                    .map(|w| w.spec.name.clone())
                    .collect()
            })
            .await?;
        too_many(names.len())?;
        let command = self.as_owner(Command::DestroyStopped {
            names: names.clone(),
        });
        self.cluster
            .propose(request_id, peer.identity.clone(), command)
            .await?;
        let views = self
            .cluster
            .read(Consistency::Linearizable, move |state| {
                names
                    .iter()
                    .filter_map(|name| state.workspaces().get(name))
                    .filter(|w| w.state == WorkspaceState::Destroying)
                    .map(view_of)
                    .collect()
            })
            .await?;
        Ok(Response::Workspaces(views))
    }

    /// Checks that `peer` may change `name`, proposes `command`, and answers the workspace as it
    /// is after.
    async fn change(
        &self,
        peer: &Peer,
        request_id: RequestId,
        name: &WorkspaceName,
        admin: bool,
        command: Command,
    ) -> Result<Response, WireError> {
        self.owned(peer, name, admin, Consistency::Linearizable)
            .await?;
        let command = self.as_owner(command);
        // The answer is the workspace as this change left it, read as its entry is applied: a
        // read after the proposal could find a destroyed workspace already gone (a fast agent
        // reported it) and answer WORKSPACE_NOT_FOUND for a destroy that succeeded.
        let wanted = name.clone();
        self.cluster
            .propose_and_read(request_id, peer.identity.clone(), command, move |state| {
                state.workspaces().get(&wanted).map(view_of)
            })
            .await?
            .map(Response::Workspace)
            .ok_or_else(|| {
                WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
            })
    }

    async fn set_run(
        &self,
        peer: &Peer,
        request_id: RequestId,
        name: &WorkspaceName,
        admin: bool,
        run: DesiredRun,
    ) -> Result<Response, WireError> {
        let command = Command::SetDesiredRun {
            name: name.clone(),
            run,
        };
        self.change(peer, request_id, name, admin, command).await
    }

    /// `command`, a user's change of their workspaces, as it is proposed: checked again against
    /// the workspaces' owner when it is applied ([`Command::Owned`]) once every member applies
    /// such entries, as itself before (a member of an older build could not read it).
    fn as_owner(&self, command: Command) -> Command {
        if self.cluster.entry_version() >= OWNED_ENTRIES {
            Command::Owned(Box::new(command))
        } else {
            command
        }
    }

    /// The workspace `name`, if `peer` may see it: `WORKSPACE_NOT_FOUND` or
    /// `PERMISSION_DENIED` otherwise.
    pub(super) async fn owned(
        &self,
        peer: &Peer,
        name: &WorkspaceName,
        admin: bool,
        consistency: Consistency,
    ) -> Result<WorkspaceView, WireError> {
        let wanted = name.clone();
        let view = self
            .cluster
            .read(consistency, move |state| {
                state.workspaces().get(&wanted).map(view_of)
            })
            .await?
            .ok_or_else(|| {
                WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
            })?;
        if let Identity::User { name: user, .. } = &peer.identity
            && (admin || &view.owner == user)
        {
            return Ok(view);
        }
        Err(denied(peer, &format!("workspace {name} is not theirs")))
    }

    /// Places and commits a new workspace, on the leader, through the placer: concurrent creates
    /// share log entries, and each is scheduled at apply against the state the ones before it
    /// left, so none is refused for room another host had and none overfills a host. A retried
    /// request is answered with its first outcome.
    async fn create(
        &self,
        request_id: RequestId,
        user: &UserName,
        spec: WorkspaceSpec,
        scoring: Option<Scoring>,
    ) -> Result<Response, WireError> {
        check_spec(&spec)?;
        self.cluster.require_leading().await?;
        tracing::debug!(workspace = %spec.name, %request_id, "placing");
        self.placer
            .place(PlaceRequest {
                request_id,
                owner: user.clone(),
                spec,
                scoring,
            })
            .await
            .map(Response::Workspace)
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::error::ErrorCode;
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{
        AgentRequest, DesiredRun, ObservedWorkspace, Request, Response, WorkspaceRequest,
    };
    use nexus_protocol::model::{PortRange, WorkspaceState};
    use nexus_protocol::transport::Peer;
    use nexus_protocol::{HostId, RequestId, UserName, WorkspaceName};

    use crate::cluster::Consistency;
    use crate::service::testing::{
        agent, ask, code, named, one_node_with_four_workspaces, one_node_with_h1, walk_pages,
        workspace_spec, ws,
    };
    use crate::state::Command;

    /// What the fastest agent there is reports: `state` for `name`, each time h1's desired
    /// state changes, straight into Raft.
    type FastReport = std::sync::Arc<std::sync::Mutex<Option<(WorkspaceName, WorkspaceState)>>>;

    fn fast_agent(
        service: &std::sync::Arc<crate::service::Service>,
        report: &FastReport,
    ) -> tokio::task::JoinHandle<()> {
        let (service, report) = (service.clone(), report.clone());
        let h1 = HostId::new("h1").unwrap();
        tokio::spawn(async move {
            let mut changes = service.cluster.desired_changes(&h1);
            while changes.changed().await.is_ok() {
                let Some((name, state)) = report.lock().unwrap().clone() else {
                    continue;
                };
                let wanted = name.clone();
                let generation = service
                    .cluster
                    .read(Consistency::Stale, move |state| {
                        state.workspaces().get(&wanted).map(|w| w.generation)
                    })
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(1);
                let observed = Command::RecordObserved {
                    host: h1.clone(),
                    observed: vec![ObservedWorkspace {
                        name,
                        generation,
                        state,
                        ports: vec![],
                        error: None,
                    }],
                };
                let _ = service
                    .cluster
                    .propose(RequestId::random(), agent("h1").identity, observed)
                    .await;
            }
        })
    }

    /// A fast agent may report a destroyed workspace gone before the destroy is answered: the
    /// answer is what the destroy's own entry made (`Destroying`), never WORKSPACE_NOT_FOUND.
    #[tokio::test]
    async fn a_destroy_is_answered_from_its_own_entry_however_fast_the_agent() {
        let (_dir, node, service) = one_node_with_h1().await;
        let service = std::sync::Arc::new(service);
        let report = FastReport::default();
        let fast_agent = fast_agent(&service, &report);
        let ada = named("ada", Role::User);
        for i in 0..20 {
            let name: WorkspaceName = format!("w{i}").parse().unwrap();
            let create = ws(WorkspaceRequest::Create(workspace_spec(name.as_str(), &[])));
            ask(&service, &ada, create).await.unwrap();
            *report.lock().unwrap() = Some((name.clone(), WorkspaceState::Gone));
            match ask(&service, &ada, ws(WorkspaceRequest::Destroy(name.clone()))).await {
                Ok(Response::Workspace(view)) => {
                    assert_eq!(view.state, WorkspaceState::Destroying, "{name}");
                }
                other => panic!("destroy {i}: {other:?}"),
            }
        }
        fast_agent.abort();
        node.stop().await.unwrap();
    }

    /// Likewise a create: its answer is the workspace as its batch's entry left it (scheduled
    /// on its host), read as the entry applies, not whatever a report made of it after.
    #[tokio::test]
    async fn a_create_is_answered_from_its_own_entry_however_fast_the_agent() {
        let (_dir, node, service) = one_node_with_h1().await;
        let service = std::sync::Arc::new(service);
        let report = FastReport::default();
        let fast_agent = fast_agent(&service, &report);
        let ada = named("ada", Role::User);
        // As many as h1 holds.
        for i in 0..4 {
            let name: WorkspaceName = format!("w{i}").parse().unwrap();
            *report.lock().unwrap() = Some((name.clone(), WorkspaceState::Running));
            let create = ws(WorkspaceRequest::Create(workspace_spec(name.as_str(), &[])));
            match ask(&service, &ada, create).await {
                Ok(Response::Workspace(view)) => {
                    assert_eq!(view.state, WorkspaceState::Scheduled, "{name}");
                    assert_eq!(view.host.as_ref().map(HostId::as_str), Some("h1"));
                }
                other => panic!("create {i}: {other:?}"),
            }
        }
        fast_agent.abort();
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn users_create_see_and_change_only_their_own_workspaces() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, bob, admin) = (
            named("ada", Role::User),
            named("bob", Role::User),
            named("root", Role::Admin),
        );
        let create = ws(WorkspaceRequest::Create(workspace_spec("w", &[3000])));
        let id = RequestId::random();
        let first = service.answer(&ada, id, create.clone()).await.unwrap();
        let Response::Workspace(view) = &first else {
            panic!("{first:?}");
        };
        assert_eq!(view.owner.as_str(), "ada");
        assert_eq!(view.host.as_ref().map(HostId::as_str), Some("h1"));
        assert_eq!(view.state, WorkspaceState::Scheduled);
        assert_eq!(view.ports[0].host, PortRange::DEFAULT.first);

        // The host is full now; a retry of the same request still gets its first answer.
        service
            .cluster
            .propose(
                RequestId::random(),
                admin.identity.clone(),
                Command::SetLimits {
                    host: None,
                    patch: crate::state::LimitsPatch {
                        max_workspaces_per_host: Some(1),
                        ..Default::default()
                    },
                },
            )
            .await
            .unwrap();
        assert_eq!(
            service.answer(&ada, id, create.clone()).await.unwrap(),
            first
        );
        let refused = ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("x", &[]))),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceExhausted);
        assert!(
            refused.message.contains("h1: holds its maximum of 1"),
            "{}",
            refused.message
        );
        assert_eq!(
            code(ask(&service, &ada, create.clone()).await),
            Some(ErrorCode::WorkspaceAlreadyExists)
        );
        let eleven: Vec<u16> = (1..=11).collect();
        assert_eq!(
            code(
                ask(
                    &service,
                    &ada,
                    ws(WorkspaceRequest::Create(workspace_spec("y", &eleven)))
                )
                .await
            ),
            Some(ErrorCode::InvalidArgument)
        );

        // Each sees their own; an admin sees all.
        let list = |who: Peer| {
            let service = &service;
            async move {
                match ask(service, &who, ws(WorkspaceRequest::List))
                    .await
                    .unwrap()
                {
                    Response::Workspaces(views) => views.len(),
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(
            (
                list(ada.clone()).await,
                list(bob.clone()).await,
                list(admin.clone()).await
            ),
            (1, 0, 1)
        );
        let name: WorkspaceName = "w".parse().unwrap();
        for request in [
            WorkspaceRequest::Inspect(name.clone()),
            WorkspaceRequest::Describe(name.clone()),
            WorkspaceRequest::Stop(name.clone()),
            WorkspaceRequest::Restart(name.clone()),
            WorkspaceRequest::Repair(name.clone()),
            WorkspaceRequest::Switch(name.clone()),
            WorkspaceRequest::Destroy(name.clone()),
        ] {
            assert_eq!(
                code(ask(&service, &bob, ws(request)).await),
                Some(ErrorCode::PermissionDenied)
            );
        }
        assert_eq!(
            code(ask(&service, &agent("h1"), ws(WorkspaceRequest::List)).await),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(
                ask(
                    &service,
                    &ada,
                    ws(WorkspaceRequest::Inspect("nope".parse().unwrap()))
                )
                .await
            ),
            Some(ErrorCode::WorkspaceNotFound)
        );

        // The owner stops it, an admin destroys it.
        ask(&service, &ada, ws(WorkspaceRequest::Stop(name.clone())))
            .await
            .unwrap();
        let desired = service
            .cluster
            .read(Consistency::Linearizable, |state| {
                state.desired_for(&HostId::new("h1").unwrap())
            })
            .await
            .unwrap();
        assert_eq!(desired.assignments[0].run, DesiredRun::Stopped);
        match ask(&service, &admin, ws(WorkspaceRequest::Destroy(name)))
            .await
            .unwrap()
        {
            Response::Workspace(view) => assert_eq!(view.state, WorkspaceState::Destroying),
            other => panic!("{other:?}"),
        }
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_spec_too_large_for_the_log_is_refused() {
        let (_dir, node, service) = one_node_with_h1().await;
        let mut spec = workspace_spec("big", &[]);
        spec.env.insert("BLOB".into(), "x".repeat(100 << 10));
        let refused = ask(
            &service,
            &named("ada", Role::User),
            ws(WorkspaceRequest::Create(spec)),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidArgument);
        assert!(refused.message.contains("at most 65536"), "{refused:?}");
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn owners_learn_where_the_host_serves_logs_and_exec() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, bob) = (named("ada", Role::User), named("bob", Role::User));
        let h1 = agent("h1");
        ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
        )
        .await
        .unwrap();
        let endpoint = || ws(WorkspaceRequest::Endpoint("w".parse().unwrap()));
        assert_eq!(
            code(ask(&service, &ada, endpoint()).await),
            Some(ErrorCode::BackendUnavailable),
            "before the agent has said"
        );
        for bad in ["nope", ":7401", "h:0", "h:99999"] {
            let serving = Request::Agent(AgentRequest::Serving(bad.into()));
            assert_eq!(
                code(ask(&service, &h1, serving).await),
                Some(ErrorCode::InvalidArgument),
                "{bad}"
            );
        }
        let serving = Request::Agent(AgentRequest::Serving("10.0.0.5:7401".into()));
        ask(&service, &h1, serving).await.unwrap();
        match ask(&service, &ada, endpoint()).await.unwrap() {
            Response::Endpoint { host, address } => {
                assert_eq!((host.as_str(), address.as_str()), ("h1", "10.0.0.5:7401"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code(ask(&service, &bob, endpoint()).await),
            Some(ErrorCode::PermissionDenied)
        );
        let logs = Request::Host(nexus_protocol::message::HostRequest::Logs {
            workspace: "w".parse().unwrap(),
            tail: 1,
            follow: false,
        });
        assert_eq!(
            code(ask(&service, &ada, logs).await),
            Some(ErrorCode::InvalidArgument)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn cleanup_destroys_only_the_callers_old_stopped_workspaces() {
        let (_dir, node, service) = one_node_with_h1().await;
        let h1 = agent("h1");
        let (ada, bob) = (named("ada", Role::User), named("bob", Role::User));
        ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
        )
        .await
        .unwrap();
        ask(
            &service,
            &bob,
            ws(WorkspaceRequest::Create(workspace_spec("v", &[]))),
        )
        .await
        .unwrap();
        for (who, name) in [(&ada, "w"), (&bob, "v")] {
            ask(
                &service,
                who,
                ws(WorkspaceRequest::Stop(name.parse().unwrap())),
            )
            .await
            .unwrap();
        }
        let stopped = |name: &str| ObservedWorkspace {
            name: name.parse().unwrap(),
            generation: 1,
            state: WorkspaceState::Stopped,
            ports: vec![],
            error: None,
        };
        ask(
            &service,
            &h1,
            Request::Agent(AgentRequest::ReportObserved(vec![
                stopped("w"),
                stopped("v"),
            ])),
        )
        .await
        .unwrap();
        let cleanup = |older_than_secs| ws(WorkspaceRequest::Cleanup { older_than_secs });
        // Nothing is a day old yet.
        match ask(&service, &ada, cleanup(86_400)).await.unwrap() {
            Response::Workspaces(views) => assert!(views.is_empty(), "{views:?}"),
            other => panic!("{other:?}"),
        }
        match ask(&service, &ada, cleanup(0)).await.unwrap() {
            Response::Workspaces(views) => {
                let names: Vec<_> = views.iter().map(|v| v.name.to_string()).collect();
                assert_eq!(names, ["w"]);
                assert_eq!(views[0].state, WorkspaceState::Destroying);
            }
            other => panic!("{other:?}"),
        }
        match ask(
            &service,
            &bob,
            ws(WorkspaceRequest::Inspect("v".parse().unwrap())),
        )
        .await
        .unwrap()
        {
            Response::Workspace(view) => assert_eq!(view.state, WorkspaceState::Stopped),
            other => panic!("{other:?}"),
        }
        // Others' workspaces: admins only, one owner's or everyone's.
        let of_bob = ws(WorkspaceRequest::CleanupOf {
            owner: Some(UserName::new("bob").unwrap()),
            older_than_secs: 0,
        });
        assert_eq!(
            code(ask(&service, &ada, of_bob.clone()).await),
            Some(ErrorCode::PermissionDenied)
        );
        match ask(&service, &named("root", Role::Admin), of_bob)
            .await
            .unwrap()
        {
            Response::Workspaces(views) => {
                let names: Vec<_> = views.iter().map(|v| v.name.to_string()).collect();
                assert_eq!(names, ["v"]);
            }
            other => panic!("{other:?}"),
        }
        node.stop().await.unwrap();
    }

    /// Pages of the list: each caller's own (an admin: all), in name order, each once, and the
    /// same as the one-request list.
    #[tokio::test]
    async fn the_list_in_pages_is_the_list() {
        let (_dir, node, service, [ada, bob, admin]) = one_node_with_four_workspaces().await;
        let walk = |who: Peer, limit: u32| {
            let service = &service;
            async move {
                let pages = walk_pages(service, &who, limit).await;
                let count = pages.len();
                let names: Vec<String> = pages.into_iter().flat_map(|(names, _)| names).collect();
                (names, count)
            }
        };
        // The last page is empty: after a2 come bob's, which the page looks at but leaves out.
        assert_eq!(
            walk(ada.clone(), 1).await,
            (vec!["a1".into(), "a2".into()], 3)
        );
        let (all, pages) = walk(admin.clone(), 0).await;
        assert_eq!(all, ["a1", "a2", "b1", "b2"]);
        assert_eq!(pages, 4, "a limit of 0 is one a page");
        assert_eq!(
            walk(bob.clone(), 100).await,
            (vec!["b1".into(), "b2".into()], 1)
        );
        let Response::Workspaces(listed) = ask(&service, &admin, ws(WorkspaceRequest::List))
            .await
            .unwrap()
        else {
            panic!("not a list")
        };
        let listed: Vec<String> = listed.into_iter().map(|w| w.name.to_string()).collect();
        assert_eq!(listed, all);
        node.stop().await.unwrap();
    }
}
