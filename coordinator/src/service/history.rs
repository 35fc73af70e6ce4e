//! What the replicated state remembers, as answers: a workspace's recent events (its owner's or
//! an admin's to read) and a request's record (admins', for `nexus admin trace`). Both are reads,
//! served stale when asked, like `inspect`: any coordinator answers from its own replica.
//!
//! Not here: what is recorded (`state::events`), nor the routing of the requests (`workspaces`,
//! `admin`).

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::Response;
use nexus_protocol::transport::Peer;
use nexus_protocol::{RequestId, WorkspaceName};

use super::Service;
use crate::cluster::Consistency;

impl Service {
    /// `name`'s events, oldest first, if `peer` may see the workspace.
    pub(super) async fn events(
        &self,
        peer: &Peer,
        name: &WorkspaceName,
        admin: bool,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        self.owned(peer, name, admin, consistency).await?;
        let wanted = name.clone();
        self.cluster
            .read(consistency, move |state| state.events_of(&wanted))
            .await?
            .map(Response::Events)
            .ok_or_else(|| {
                WireError::new(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"))
            })
    }

    /// What the state remembers of request `id` (`None` once the journal has forgotten it).
    /// Admins only: the caller checked.
    pub(super) async fn request_record(
        &self,
        id: RequestId,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        let record = self
            .cluster
            .read(consistency, move |state| state.request_record(id))
            .await?;
        Ok(Response::RequestRecord(record))
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::debug::{Actor, EventKind};
    use nexus_protocol::error::ErrorCode;
    use nexus_protocol::identity::{Identity, Role};
    use nexus_protocol::message::{
        AdminRequest, AgentRequest, DesiredRun, ObservedWorkspace, Request, Response, StaleRead,
        WorkspaceRequest,
    };
    use nexus_protocol::model::WorkspaceState;
    use nexus_protocol::{HostId, RequestId};

    use crate::service::testing::{agent, ask, code, named, one_node_with_h1, workspace_spec, ws};

    #[tokio::test]
    async fn owners_and_admins_read_a_workspaces_events_oldest_first() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, bob, root) = (
            named("ada", Role::User),
            named("bob", Role::User),
            named("root", Role::Admin),
        );
        let create = RequestId::random();
        service
            .answer(
                &ada,
                create,
                ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
            )
            .await
            .unwrap();
        let running = ObservedWorkspace {
            name: "w".parse().unwrap(),
            generation: 1,
            state: WorkspaceState::Running,
            ports: vec![],
            error: None,
        };
        let report = Request::Agent(AgentRequest::ReportObserved(vec![running]));
        ask(&service, &agent("h1"), report).await.unwrap();
        let stop = RequestId::random();
        service
            .answer(&ada, stop, ws(WorkspaceRequest::Stop("w".parse().unwrap())))
            .await
            .unwrap();

        let events = WorkspaceRequest::Events("w".parse().unwrap());
        let stale = Request::Stale(StaleRead::Workspace(events.clone()));
        for (who, request) in [(&ada, ws(events.clone())), (&root, stale)] {
            let Response::Events(events) = ask(&service, who, request).await.unwrap() else {
                panic!("not events");
            };
            let seen: Vec<_> = events
                .iter()
                .map(|e| (e.seq, e.kind.clone(), e.request_id, e.actor.clone()))
                .collect();
            let h1 = HostId::new("h1").unwrap();
            assert_eq!(
                seen,
                [
                    (
                        1,
                        EventKind::Created { host: h1.clone() },
                        Some(create),
                        Actor::Identity(Identity::User {
                            name: "ada".parse().unwrap(),
                            role: Role::User
                        })
                    ),
                    (
                        2,
                        EventKind::State {
                            from: WorkspaceState::Scheduled,
                            to: WorkspaceState::Running
                        },
                        Some(create),
                        Actor::Identity(Identity::Agent(h1))
                    ),
                    (
                        3,
                        EventKind::Wanted(DesiredRun::Stopped),
                        Some(stop),
                        Actor::Identity(ada.identity.clone())
                    ),
                ]
            );
        }
        assert_eq!(
            code(ask(&service, &bob, ws(events)).await),
            Some(ErrorCode::PermissionDenied)
        );
        let nope = ws(WorkspaceRequest::Events("nope".parse().unwrap()));
        assert_eq!(
            code(ask(&service, &root, nope).await),
            Some(ErrorCode::WorkspaceNotFound)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn admins_read_what_the_state_remembers_of_a_request() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, root) = (named("ada", Role::User), named("root", Role::Admin));
        let create = RequestId::random();
        service
            .answer(
                &ada,
                create,
                ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
            )
            .await
            .unwrap();
        let refused = RequestId::random();
        let again = ws(WorkspaceRequest::Create(workspace_spec("w", &[])));
        let error = service.answer(&ada, refused, again).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::WorkspaceAlreadyExists);

        let record = |id| Request::Admin(AdminRequest::RequestRecord(id));
        let Response::RequestRecord(Some(found)) =
            ask(&service, &root, record(create)).await.unwrap()
        else {
            panic!("the create is remembered");
        };
        assert_eq!(found.rejected, None);
        let names: Vec<_> = found
            .events
            .iter()
            .map(|(n, e)| (n.as_str(), e.seq))
            .collect();
        assert_eq!(names, [("w", 1)]);
        let stale = Request::Stale(StaleRead::Admin(AdminRequest::RequestRecord(refused)));
        let Response::RequestRecord(Some(rejected)) = ask(&service, &root, stale).await.unwrap()
        else {
            panic!("the refused create is remembered");
        };
        assert_eq!(
            rejected.rejected.map(|e| e.code),
            Some(ErrorCode::WorkspaceAlreadyExists)
        );
        assert!(rejected.events.is_empty());
        assert_eq!(
            ask(&service, &root, record(RequestId::random()))
                .await
                .unwrap(),
            Response::RequestRecord(None)
        );
        assert_eq!(
            code(ask(&service, &ada, record(create)).await),
            Some(ErrorCode::PermissionDenied)
        );
        node.stop().await.unwrap();
    }
}
