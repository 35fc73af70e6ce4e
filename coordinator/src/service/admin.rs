//! Admins' requests: hosts, ports, limits, fleet statistics and usage, and the cluster's
//! membership and status. Not the views' shapes ([`super::views`]) nor who may ask
//! ([`super::checks`]).

use std::time::Duration;

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::{
    AdminRequest, ClusterStatus, PortAllocation, Response, WorkspaceUsage,
};
use nexus_protocol::model::{ContainerStats, HostStatus};
use nexus_protocol::transport::{Peer, Reply};
use nexus_protocol::{HostId, RequestId};

use super::Service;
use super::checks::require;
use super::views::{cluster_status, fleet_stats, host_views, limits_view};
use crate::cluster::Consistency;
use crate::locks::lock;
use crate::state::Command;

/// How long a membership change or leader transfer may take before it is answered `TIMEOUT`.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

impl Service {
    /// The cluster as this node sees it.
    pub async fn status(&self) -> Result<ClusterStatus, WireError> {
        let view = self.cluster.view().await?;
        Ok(cluster_status(
            &view,
            &self.cluster.peers().addresses(),
            self.cluster.config().health_window(),
        ))
    }

    pub(super) async fn admin(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: AdminRequest,
        consistency: Consistency,
    ) -> Result<Response, WireError> {
        require(peer, &[IdentityKind::Admin, IdentityKind::Coordinator])?;
        let write = matches!(
            request,
            AdminRequest::ClusterAdd { .. }
                | AdminRequest::ClusterRemove(_)
                | AdminRequest::TransferLeader(_)
                | AdminRequest::SetHostStatus { .. }
                | AdminRequest::SetLimits { .. }
                | AdminRequest::BackupCreate
                | AdminRequest::BackupUpload { .. }
                | AdminRequest::BackupRestore { .. }
                | AdminRequest::BackupSchedule(Some(_))
                | AdminRequest::Maintain(_)
                | AdminRequest::MaintenanceSchedule(Some(_))
                | AdminRequest::PostNotice { .. }
                | AdminRequest::ClearNotices(_)
                | AdminRequest::SetPolicy { .. }
                | AdminRequest::ExtendLifetime { .. }
                | AdminRequest::StopIdle { .. }
                | AdminRequest::SetCredential { .. }
                | AdminRequest::RotateCredential { .. }
                | AdminRequest::DeleteCredential(_)
                | AdminRequest::RotateCredentialsKey
                | AdminRequest::CreateToken(_)
                | AdminRequest::RevokeToken(_)
                | AdminRequest::RemoveHost { .. }
                | AdminRequest::RevokeUser(_)
                | AdminRequest::RotateCa
                | AdminRequest::FinishCaRotation
        );
        if consistency == Consistency::Stale && write {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "only reads may be stale; send the change without --stale",
            ));
        }
        match request {
            AdminRequest::Hosts => {
                // Heartbeats live on the leader (agents send them there): a follower's answer
                // would say no host was ever heard. It sends the asker to the leader instead,
                // unless a stale answer (this replica's own view) was asked for.
                if consistency == Consistency::Linearizable {
                    self.cluster.require_leader().await?;
                }
                let liveness = self.liveness().clone();
                let hosts = self
                    .cluster
                    .read(consistency, move |state| host_views(state, &liveness))
                    .await?;
                Ok(Response::Hosts(hosts))
            }
            AdminRequest::Status => Ok(Response::ClusterStatus(self.status().await?)),
            AdminRequest::ClusterAdd { id, address } => {
                nexus_protocol::transport::resolve(&address).await?;
                self.cluster
                    .add_member(id, address, MEMBERSHIP_TIMEOUT)
                    .await?;
                Ok(Response::ClusterStatus(self.status().await?))
            }
            AdminRequest::ClusterRemove(id) => {
                self.cluster.remove_member(id, MEMBERSHIP_TIMEOUT).await?;
                Ok(Response::ClusterStatus(self.status().await?))
            }
            AdminRequest::TransferLeader(to) => {
                self.cluster.transfer_leader(to, MEMBERSHIP_TIMEOUT).await?;
                Ok(Response::ClusterStatus(self.status().await?))
            }
            AdminRequest::SetHostStatus { host, status } => {
                if status == HostStatus::Down {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "a host is marked down by the failure detector, not by hand; cordon it",
                    ));
                }
                // The answer lists the hosts with their heartbeats, which only the leader has.
                self.cluster.require_leader().await?;
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::SetHostStatus { host, status },
                    )
                    .await?;
                let liveness = self.liveness().clone();
                let hosts = self
                    .cluster
                    .read(Consistency::Linearizable, move |state| {
                        host_views(state, &liveness)
                    })
                    .await?;
                Ok(Response::Hosts(hosts))
            }
            AdminRequest::Ports => {
                let ports = self
                    .cluster
                    .read(consistency, |state| {
                        state
                            .ports()
                            .iter()
                            .map(|((host, port), workspace)| PortAllocation {
                                host: host.clone(),
                                port: *port,
                                workspace: workspace.clone(),
                                container: state.workspaces().get(workspace).and_then(|w| {
                                    w.ports
                                        .iter()
                                        .find(|b| b.host == *port)
                                        .map(|b| b.container)
                                }),
                            })
                            .collect()
                    })
                    .await?;
                Ok(Response::Ports(ports))
            }
            AdminRequest::Limits => Ok(Response::Limits(
                self.cluster.read(consistency, limits_view).await?,
            )),
            AdminRequest::SetLimits { host, patch } => {
                if patch.is_empty() {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "no limit given; `nexus admin limits set --help` lists them",
                    ));
                }
                patch
                    .check()
                    .map_err(|why| WireError::new(ErrorCode::InvalidArgument, why.to_string()))?;
                if host.is_some() && patch.scoring.is_some() {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        "scoring chooses between hosts, so it is cluster-wide; drop --host",
                    ));
                }
                self.cluster
                    .propose(
                        request_id,
                        peer.identity.clone(),
                        Command::SetLimits { host, patch },
                    )
                    .await?;
                Ok(Response::Limits(
                    self.cluster
                        .read(Consistency::Linearizable, limits_view)
                        .await?,
                ))
            }
            AdminRequest::Stats => Ok(Response::FleetStats(
                self.cluster.read(consistency, fleet_stats).await?,
            )),
            // The handler answers it first (it may be a stream); here only as one answer.
            AdminRequest::DaemonLogs(query) => match self.daemon_logs(peer, query).await {
                Reply::Once(result) => result,
                Reply::Stream(_) => Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    "a followed log is a subscription; open it as one",
                )),
            },
            AdminRequest::Diagnostic(diagnostic) => match &self.diagnostics {
                Some(diagnostics) => {
                    Ok(Response::Diagnostic(diagnostics.answer(diagnostic).await?))
                }
                None => Err(WireError::new(
                    ErrorCode::Unsupported,
                    "this coordinator keeps no diagnostics",
                )),
            },
            AdminRequest::ReloadConfig => match &self.reloader {
                Some(reloader) => Ok(Response::Reloaded(reloader.reload("an admin's request"))),
                None => Err(WireError::new(
                    ErrorCode::Unsupported,
                    "this coordinator was not started from a configuration it can read again",
                )),
            },
            AdminRequest::RequestRecord(id) => self.request_record(id, consistency).await,
            AdminRequest::Endpoints => {
                self.cluster.require_leader().await?;
                let endpoints = lock(&self.endpoints)
                    .iter()
                    .map(|(host, address)| (host.clone(), address.clone()))
                    .collect();
                Ok(Response::Endpoints(endpoints))
            }
            AdminRequest::Top => {
                // Samples live on the leader (agents send them there).
                if consistency == Consistency::Linearizable {
                    self.cluster.require_leader().await?;
                }
                let samples: Vec<(HostId, ContainerStats)> = self
                    .liveness()
                    .iter()
                    .flat_map(|(host, live)| {
                        live.containers.iter().map(|c| (host.clone(), c.clone()))
                    })
                    .collect();
                let usage = self
                    .cluster
                    .read(consistency, move |state| {
                        samples
                            .into_iter()
                            .map(|(host, stats)| WorkspaceUsage {
                                owner: stats
                                    .workspace
                                    .as_ref()
                                    .and_then(|name| state.workspaces().get(name))
                                    .map(|w| w.owner.clone()),
                                host,
                                stats,
                            })
                            .collect()
                    })
                    .await?;
                Ok(Response::Usage(usage))
            }
            AdminRequest::BackupRestore { id, force } => {
                self.restore_backup(peer, request_id, &id, force).await
            }
            request @ (AdminRequest::Maintain(_) | AdminRequest::MaintenanceSchedule(_)) => {
                self.maintenance(peer, request_id, request, consistency)
                    .await
            }
            AdminRequest::PostNotice { text, until, user } => {
                self.post_notice(peer, request_id, text, until, user).await
            }
            AdminRequest::Notices => self.notices(consistency).await,
            AdminRequest::ClearNotices(ids) => self.clear_notices(peer, request_id, ids).await,
            request @ (AdminRequest::BackupCreate
            | AdminRequest::BackupList
            | AdminRequest::BackupVerify(_)
            | AdminRequest::BackupRead { .. }
            | AdminRequest::BackupUpload { .. }
            | AdminRequest::BackupSchedule(_)
            | AdminRequest::ClusterIdentity) => {
                self.backups(peer, request_id, request, consistency).await
            }
            request @ (AdminRequest::Policies
            | AdminRequest::SetPolicy { .. }
            | AdminRequest::ExtendLifetime { .. }
            | AdminRequest::StopIdle { .. }) => {
                self.policy_admin(peer, request_id, request, consistency)
                    .await
            }
            // worktree verify (issue 24, item 3):
            AdminRequest::VerifyWorktrees { host, repair } => {
                self.verify_worktrees(peer, host, repair).await
            }
            AdminRequest::SetCredential { .. }
            | AdminRequest::RotateCredential { .. }
            | AdminRequest::DeleteCredential(_)
            | AdminRequest::Credentials
            | AdminRequest::CheckCredential { .. }
            | AdminRequest::RotateCredentialsKey
            | AdminRequest::CredentialKeys => {
                self.credentials_admin(peer, request_id, request, consistency)
                    .await
            }
            request @ (AdminRequest::CreateToken(_)
            | AdminRequest::Tokens
            | AdminRequest::RevokeToken(_)
            | AdminRequest::Certificates
            | AdminRequest::RemoveHost { .. }
            | AdminRequest::RevokeUser(_)) => {
                self.security_admin(peer, request_id, request, consistency)
                    .await
            }
            request @ (AdminRequest::RotateCa
            | AdminRequest::CaStatus
            | AdminRequest::FinishCaRotation) => {
                self.ca_admin(peer, request_id, request, consistency).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::error::ErrorCode;
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{
        AdminRequest, ClusterStatus, MemberRole, Request, Response, StaleRead, WorkspaceRequest,
    };
    use nexus_protocol::model::{HostStatus, WorkspaceState};
    use nexus_protocol::{HostId, NodeId};

    use crate::scheduler::Scoring;
    use crate::service::Service;
    use crate::service::testing::{
        agent, ask, code, leading, named, one_node, one_node_with_h1, user, workspace_spec, ws,
    };

    #[tokio::test]
    async fn only_admins_read_and_set_limits_and_limits_bind_creates() {
        let (_dir, node, service) = one_node_with_h1().await;
        let (ada, admin) = (named("ada", Role::User), named("root", Role::Admin));
        let admin_request = |request| Request::Admin(request);
        let one = nexus_protocol::model::LimitsPatch {
            max_workspaces_per_host: Some(1),
            ..Default::default()
        };
        for request in [
            AdminRequest::Limits,
            AdminRequest::Stats,
            AdminRequest::Top,
            AdminRequest::SetLimits {
                host: None,
                patch: one,
            },
        ] {
            assert_eq!(
                code(ask(&service, &ada, admin_request(request)).await),
                Some(ErrorCode::PermissionDenied)
            );
        }
        let zero = nexus_protocol::model::LimitsPatch {
            max_workspaces_per_host: Some(0),
            ..Default::default()
        };
        let per_host_scoring = nexus_protocol::model::LimitsPatch {
            scoring: Some(Scoring::Spread),
            ..Default::default()
        };
        for (host, patch) in [
            (None, zero),
            (Some(HostId::new("h1").unwrap()), per_host_scoring),
        ] {
            assert_eq!(
                code(
                    ask(
                        &service,
                        &admin,
                        admin_request(AdminRequest::SetLimits { host, patch })
                    )
                    .await
                ),
                Some(ErrorCode::InvalidArgument)
            );
        }
        let set = AdminRequest::SetLimits {
            host: Some(HostId::new("h1").unwrap()),
            patch: one,
        };
        match ask(&service, &admin, admin_request(set)).await.unwrap() {
            Response::Limits(view) => {
                assert_eq!(view.cluster.max_workspaces_per_host, 50);
                assert_eq!(view.hosts[0].effective.max_workspaces_per_host, 1);
            }
            other => panic!("{other:?}"),
        }
        ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("a", &[]))),
        )
        .await
        .unwrap();
        let refused = ask(
            &service,
            &ada,
            ws(WorkspaceRequest::Create(workspace_spec("b", &[]))),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceExhausted, "{refused:?}");
        match ask(&service, &admin, admin_request(AdminRequest::Stats))
            .await
            .unwrap()
        {
            Response::FleetStats(stats) => {
                assert_eq!(stats.hosts, vec![(HostStatus::Ready, 1)]);
                assert_eq!(stats.workspaces, vec![(WorkspaceState::Scheduled, 1)]);
            }
            other => panic!("{other:?}"),
        }
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn only_admins_list_hosts_and_writes_are_never_stale() {
        let (_dir, node, service) = one_node_with_h1().await;
        let hosts = Request::Admin(AdminRequest::Hosts);
        assert_eq!(
            code(ask(&service, &user(Role::User), hosts.clone()).await),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(ask(&service, &agent("h1"), hosts.clone()).await),
            Some(ErrorCode::PermissionDenied)
        );
        for request in [hosts, Request::Stale(StaleRead::Admin(AdminRequest::Hosts))] {
            match ask(&service, &user(Role::Admin), request).await {
                Ok(Response::Hosts(list)) => assert_eq!(list.len(), 1),
                other => panic!("{other:?}"),
            }
        }
        let stale_write = Request::Stale(StaleRead::Admin(AdminRequest::ClusterRemove(
            NodeId::new(1).unwrap(),
        )));
        assert_eq!(
            code(ask(&service, &user(Role::Admin), stale_write).await),
            Some(ErrorCode::InvalidArgument)
        );
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_last_voter_cannot_be_removed() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let remove = Request::Admin(AdminRequest::ClusterRemove(NodeId::new(1).unwrap()));
        assert_eq!(
            code(ask(&service, &user(Role::Admin), remove).await),
            Some(ErrorCode::InvalidArgument)
        );
        // Refused before it reached the log: the node still leads, and its driver still runs.
        let status = admin_status(&service).await;
        assert_eq!(status.leader, NodeId::new(1).ok());
        assert_eq!(status.members.len(), 1);
        node.stop().await.unwrap();
    }

    async fn admin_status(service: &Service) -> ClusterStatus {
        match ask(
            service,
            &user(Role::Admin),
            Request::Admin(AdminRequest::Status),
        )
        .await
        {
            Ok(Response::ClusterStatus(status)) => status,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn status_names_the_one_node_as_leader() {
        let (_dir, node, service) = one_node().await;
        leading(&service).await;
        let status = admin_status(&service).await;
        assert_eq!(status.leader, Some(NodeId::new(1).unwrap()));
        assert_eq!(status.members.len(), 1);
        assert_eq!(status.members[0].role, MemberRole::Leader);
        assert!(status.members[0].healthy);
        assert!(status.applied_index >= 2, "{status:?}");
        node.stop().await.unwrap();
    }
}
