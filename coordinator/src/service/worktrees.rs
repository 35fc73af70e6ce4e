//! `nexus admin worktree verify [--host H] [--repair]` on the leader: every host's (or the one
//! named) `HostRequest::Worktrees`, asked at once as this coordinator (agents take the request
//! from a coordinator only), each report answered as its host gave it. A host that cannot be
//! asked (down, no endpoint, no answer in time) gets a report with its `error`: the admin sees it
//! was not verified.

use std::time::Duration;

use nexus_protocol::HostId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::WorktreeReport;
use nexus_protocol::identity::{Identity, IdentityKind};
use nexus_protocol::message::{HostRequest, Request, Response};
use nexus_protocol::transport::Peer;

use super::Service;
use super::checks::require;
use super::maintenance::ask_daemon;
use crate::cluster::Consistency;
use crate::locks::lock;

/// How long one host's verification (and repair) may take.
const HOST_LIMIT: Duration = Duration::from_secs(300);

impl Service {
    /// Every host's worktree report, or `only`'s.
    pub(super) async fn verify_worktrees(
        &self,
        peer: &Peer,
        only: Option<HostId>,
        repair: bool,
    ) -> Result<Response, WireError> {
        require(peer, &[IdentityKind::Admin])?;
        // Agents tell the leader where they serve.
        self.cluster.require_leader().await?;
        let connector = self.daemon_connector()?;
        let known: Vec<HostId> = self
            .cluster
            .read(Consistency::Linearizable, |state| {
                state.hosts().keys().cloned().collect()
            })
            .await?;
        let hosts: Vec<HostId> = match only {
            Some(host) if known.contains(&host) => vec![host],
            Some(host) => {
                return Err(WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("no host is named {host}: see `nexus admin hosts`"),
                ));
            }
            None => known,
        };
        let asks = hosts.into_iter().map(|host| {
            let address = lock(&self.endpoints).get(&host).cloned();
            let connector = connector.clone();
            async move {
                let Some(address) = address else {
                    return unreachable(
                        host.clone(),
                        WireError::new(
                            ErrorCode::BackendUnavailable,
                            format!(
                                "host {host}'s agent has not said where it serves (it is down, or runs with --listen off)"
                            ),
                        ),
                    );
                };
                let asked = ask_daemon(
                    &connector,
                    &address,
                    Identity::Agent(host.clone()),
                    Request::Host(HostRequest::Worktrees { repair }),
                    HOST_LIMIT,
                )
                .await;
                answered(host, asked)
            }
        });
        let reports = futures_util::future::join_all(asks).await;
        let broken: usize = reports
            .iter()
            .map(|r| r.checks.iter().filter(|c| !c.healthy()).count())
            .sum();
        let failed = reports.iter().filter(|r| r.error.is_some()).count();
        tracing::info!(
            by = %peer.identity,
            repair,
            hosts = reports.len(),
            broken,
            failed,
            "worktrees verified"
        );
        Ok(Response::Worktrees(reports))
    }
}

/// A host's report from its answer: its own report, or one that says why there is none.
fn answered(host: HostId, asked: Result<Response, WireError>) -> WorktreeReport {
    match asked {
        Ok(Response::Worktrees(reports)) => {
            match reports.into_iter().find(|report| report.host == host) {
                Some(report) => report,
                None => unreachable(
                    host,
                    WireError::new(
                        ErrorCode::ProtocolError,
                        "the agent answered without its own report",
                    ),
                ),
            }
        }
        Ok(other) => unreachable(
            host,
            WireError::new(
                ErrorCode::ProtocolError,
                format!("an unexpected answer: {other:?}")
                    .chars()
                    .take(200)
                    .collect::<String>(),
            ),
        ),
        Err(error) => unreachable(host, error),
    }
}

fn unreachable(host: HostId, error: WireError) -> WorktreeReport {
    WorktreeReport {
        host,
        checks: Vec::new(),
        kept: Vec::new(),
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::git::{WorktreeCheck, WorktreeProblem};
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::AdminRequest;

    use super::*;
    use crate::service::testing::{ask, code, one_node_with_h1, user};

    fn h(name: &str) -> HostId {
        name.parse().unwrap()
    }

    #[test]
    fn each_answer_becomes_the_hosts_report_or_says_why_not() {
        let own = WorktreeReport {
            host: h("h1"),
            checks: vec![WorktreeCheck {
                workspace: "a".parse().unwrap(),
                url: "file:///r.git".into(),
                branch: "nexus/a".into(),
                problems: vec![WorktreeProblem::Locked],
                repairs: Vec::new(),
                moved_aside: None,
                remaining: vec![WorktreeProblem::Locked],
            }],
            kept: Vec::new(),
            error: None,
        };
        let other = WorktreeReport {
            host: h("h2"),
            ..unreachable(h("h2"), WireError::new(ErrorCode::Internal, "x"))
        };
        assert_eq!(
            answered(
                h("h1"),
                Ok(Response::Worktrees(vec![other.clone(), own.clone()]))
            ),
            own
        );
        let wrong = answered(h("h1"), Ok(Response::Worktrees(vec![other])));
        assert_eq!(wrong.error.unwrap().code, ErrorCode::ProtocolError);
        let odd = answered(h("h1"), Ok(Response::Ack));
        assert_eq!(odd.error.unwrap().code, ErrorCode::ProtocolError);
        let down = answered(
            h("h1"),
            Err(WireError::new(ErrorCode::Timeout, "no answer within 300 s")),
        );
        assert_eq!(down.host, h("h1"));
        assert!(down.checks.is_empty());
        assert_eq!(down.error.unwrap().code, ErrorCode::Timeout);
    }

    #[tokio::test]
    async fn admins_only_and_the_host_must_exist() {
        let (_dir, _node, service) = one_node_with_h1().await;
        let verify = |host: Option<&str>| {
            Request::Admin(AdminRequest::VerifyWorktrees {
                host: host.map(h),
                repair: false,
            })
        };
        assert_eq!(
            code(ask(&service, &user(Role::User), verify(None)).await),
            Some(ErrorCode::PermissionDenied)
        );
        // This test's service has no connector to ask agents with.
        assert_eq!(
            code(ask(&service, &user(Role::Admin), verify(Some("h1"))).await),
            Some(ErrorCode::Unsupported)
        );
    }
}
