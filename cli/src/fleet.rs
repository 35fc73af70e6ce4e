//! Every daemon of the fleet, one by one: the commands that gather from all of them (`admin
//! logs`, `admin trace`, `admin health-check`, `admin support-bundle`) ask the coordinators who
//! the members are and where each agent serves, then ask each daemon directly, all at once, each
//! within its own time. A daemon that does not answer is named in the result, never fatal.

use std::fmt;
use std::time::Duration;

use futures_util::future::join_all;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{AdminRequest, ClusterStatus, Request, Response};
use nexus_protocol::transport::Connection;
use nexus_protocol::{HostId, NodeId, RequestId};

use crate::agents;
use crate::error::CliError;
use crate::settings::Settings;

/// One daemon of the fleet and where it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Daemon {
    Coordinator { id: NodeId, address: String },
    Agent { host: HostId, address: String },
}

impl Daemon {
    /// How its log records name it (`coordinator-1`, `agent-HOST`), and how outputs label it.
    pub fn label(&self) -> String {
        match self {
            Daemon::Coordinator { id, .. } => format!("coordinator-{id}"),
            Daemon::Agent { host, .. } => format!("agent-{host}"),
        }
    }

    pub fn is_agent(&self) -> bool {
        matches!(self, Daemon::Agent { .. })
    }
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Who is in the fleet, as the coordinators say, and who could not be listed (with why).
#[derive(Debug)]
pub struct Roster {
    pub status: ClusterStatus,
    pub daemons: Vec<Daemon>,
    /// Daemons asked for or expected that cannot be asked: a member without a known address,
    /// a node or host that is not in the fleet, or every agent when no leader can say where
    /// they serve (`agents`).
    pub unlisted: Vec<(String, CliError)>,
}

impl Roster {
    /// Every coordinator (from `admin status`) and every agent (from the leader's endpoints), or
    /// only those of `nodes` and `hosts` when either is given. An error only when no coordinator
    /// answers at all.
    pub async fn discover(
        settings: &Settings,
        hosts: &[HostId],
        nodes: &[NodeId],
        limit: Duration,
    ) -> Result<Roster, CliError> {
        let every = hosts.is_empty() && nodes.is_empty();
        let status = match settings
            .request(Request::Admin(AdminRequest::Status), limit)
            .await?
        {
            Response::ClusterStatus(status) => status,
            other => return Err(CliError::unexpected(&other)),
        };
        let mut daemons = Vec::new();
        let mut unlisted = Vec::new();
        for member in &status.members {
            if !every && !nodes.contains(&member.id) {
                continue;
            }
            if member.addr.is_empty() {
                unlisted.push((
                    format!("coordinator-{}", member.id),
                    CliError::local(ErrorCode::NetworkError, "its address is not known"),
                ));
                continue;
            }
            daemons.push(Daemon::Coordinator {
                id: member.id,
                address: member.addr.clone(),
            });
        }
        for id in nodes {
            if !status.members.iter().any(|m| m.id == *id) {
                unlisted.push((
                    format!("coordinator-{id}"),
                    CliError::local(ErrorCode::InvalidArgument, "not a member of the cluster"),
                ));
            }
        }
        if every || !hosts.is_empty() {
            match settings
                .request(Request::Admin(AdminRequest::Endpoints), limit)
                .await
            {
                Ok(Response::Endpoints(endpoints)) => {
                    for (host, address) in &endpoints {
                        if every || hosts.contains(host) {
                            daemons.push(Daemon::Agent {
                                host: host.clone(),
                                address: address.clone(),
                            });
                        }
                    }
                    for host in hosts {
                        if !endpoints.iter().any(|(known, _)| known == host) {
                            unlisted.push((
                                format!("agent-{host}"),
                                CliError::local(
                                    ErrorCode::NetworkError,
                                    "the leader knows no address for its agent (is it connected?)",
                                ),
                            ));
                        }
                    }
                }
                Ok(other) => return Err(CliError::unexpected(&other)),
                // Without the leader no agent can be found; the coordinators still answer.
                Err(error) => unlisted.push(("agents".to_string(), error)),
            }
        }
        Ok(Roster {
            status,
            daemons,
            unlisted,
        })
    }
}

/// Connects to `daemon`, checking that it is who the roster says.
pub async fn connect(settings: &Settings, daemon: &Daemon) -> Result<Connection, CliError> {
    match daemon {
        Daemon::Coordinator { id, address } => {
            let connection = settings.connect_to(address).await?;
            if connection.server() != &Identity::Coordinator(*id) {
                return Err(CliError::local(
                    ErrorCode::AuthenticationFailed,
                    format!(
                        "{address} answered as {}, not as coordinator {id}",
                        connection.server()
                    ),
                ));
            }
            Ok(connection)
        }
        Daemon::Agent { host, address } => agents::connect_agent(settings, host, address).await,
    }
}

/// Asks `daemon` once, on a connection of its own, under `request_id`, within `limit`.
pub async fn ask(
    settings: &Settings,
    daemon: &Daemon,
    request_id: RequestId,
    request: Request,
    limit: Duration,
) -> Result<Response, CliError> {
    let attempt = async {
        let connection = connect(settings, daemon).await?;
        let answer = connection.request_with(request_id, request, limit).await;
        connection.close();
        Ok(answer?)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(answer) => answer,
        Err(_) => Err(CliError::local(
            ErrorCode::Timeout,
            format!("{daemon} did not answer within {} s", limit.as_secs()),
        )),
    }
}

/// Asks every daemon for which `request_for` gives a request, all at once; the answers in the
/// daemons' order.
pub async fn ask_each(
    settings: &Settings,
    daemons: &[Daemon],
    request_id: RequestId,
    limit: Duration,
    request_for: impl Fn(&Daemon) -> Option<Request>,
) -> Vec<(Daemon, Result<Response, CliError>)> {
    let asks = daemons.iter().filter_map(|daemon| {
        let request = request_for(daemon)?;
        Some(async move {
            let answer = ask(settings, daemon, request_id, request, limit).await;
            (daemon.clone(), answer)
        })
    });
    join_all(asks).await
}

/// What a fan-out brought back: each report `report` took from an answer, and, for each daemon
/// that was not listed, did not answer or answered something else, its label and why (`CODE:
/// message`), those `roster` could not list first.
#[derive(Debug)]
pub struct Gathered<T> {
    pub reports: Vec<T>,
    pub failures: Vec<(String, String)>,
}

/// Sorts [`ask_each`]'s answers into reports (what `report` takes from an answer) and failures.
pub fn gather<T>(
    roster: &Roster,
    answers: Vec<(Daemon, Result<Response, CliError>)>,
    report: impl Fn(&Response) -> Option<T>,
) -> Gathered<T> {
    let mut gathered = Gathered {
        reports: Vec::new(),
        failures: roster
            .unlisted
            .iter()
            .map(|(who, error)| (who.clone(), brief(error)))
            .collect(),
    };
    for (daemon, answer) in answers {
        match answer {
            Ok(answer) => match report(&answer) {
                Some(taken) => gathered.reports.push(taken),
                None => gathered
                    .failures
                    .push((daemon.label(), brief(&CliError::unexpected(&answer)))),
            },
            Err(error) => gathered.failures.push((daemon.label(), brief(&error))),
        }
    }
    gathered
}

/// An error in a line: `CODE: message`.
pub fn brief(error: &CliError) -> String {
    format!("{}: {}", error.error.code, error.error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(id: u64) -> Daemon {
        Daemon::Coordinator {
            id: NodeId::new(id).unwrap_or_else(|e| panic!("{e}")),
            address: format!("127.0.0.1:{}", 7000 + id),
        }
    }

    fn agent(host: &str) -> Daemon {
        Daemon::Agent {
            host: host.parse().unwrap_or_else(|e| panic!("{e:?}")),
            address: "127.0.0.1:9000".into(),
        }
    }

    #[test]
    fn labels_are_the_sources_that_log_records_carry() {
        assert_eq!(coordinator(2).label(), "coordinator-2");
        assert_eq!(agent("host-a").label(), "agent-host-a");
    }
}
