//! Every daemon of the fleet, one by one: the commands that gather from all of them (`admin
//! logs`, `admin trace`, `admin health-check`, `admin support-bundle`) ask the coordinators who
//! the members are and where each agent serves, then ask each daemon directly, all at once, each
//! within its own time. A daemon that does not answer is named in the result, never fatal.

use std::fmt;
use std::time::Duration;

use futures_util::future::join_all;
use nexus_protocol::error::ErrorCode;
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

/// Who is in the fleet, as the coordinators say, and what could not be learned.
#[derive(Debug)]
pub struct Roster {
    pub status: ClusterStatus,
    pub daemons: Vec<Daemon>,
    /// Why the agents are missing from `daemons`, if they are (no leader to say where they
    /// serve).
    pub agents_unknown: Option<CliError>,
}

impl Roster {
    /// The members and agents, asked of the coordinators (the agents' addresses need a leader).
    pub async fn discover(settings: &Settings, limit: Duration) -> Result<Roster, CliError> {
        let status = match settings
            .request(Request::Admin(AdminRequest::Status), limit)
            .await?
        {
            Response::ClusterStatus(status) => status,
            other => return Err(CliError::unexpected(&other)),
        };
        let mut daemons: Vec<Daemon> = status
            .members
            .iter()
            .map(|m| Daemon::Coordinator {
                id: m.id,
                address: m.addr.clone(),
            })
            .collect();
        let agents_unknown = match settings
            .request(Request::Admin(AdminRequest::Endpoints), limit)
            .await
        {
            Ok(Response::Endpoints(endpoints)) => {
                daemons.extend(
                    endpoints
                        .into_iter()
                        .map(|(host, address)| Daemon::Agent { host, address }),
                );
                None
            }
            Ok(other) => Some(CliError::unexpected(&other)),
            Err(error) => Some(error),
        };
        Ok(Roster {
            status,
            daemons,
            agents_unknown,
        })
    }

    /// Only the daemons chosen: no choice of either kind keeps that kind whole.
    pub fn select(&mut self, hosts: &[HostId], coordinators: &[NodeId]) {
        if hosts.is_empty() && coordinators.is_empty() {
            return;
        }
        self.daemons.retain(|daemon| match daemon {
            Daemon::Coordinator { id, .. } => coordinators.contains(id),
            Daemon::Agent { host, .. } => hosts.contains(host),
        });
    }
}

/// Connects to `daemon`, checking that it is who the roster says.
pub async fn connect(settings: &Settings, daemon: &Daemon) -> Result<Connection, CliError> {
    match daemon {
        Daemon::Coordinator { address, .. } => settings.connect_to(address).await,
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

    #[test]
    fn selecting_one_kind_drops_the_other_and_no_selection_keeps_all() {
        let status = ClusterStatus {
            node: NodeId::new(1).unwrap_or_else(|e| panic!("{e}")),
            leader: None,
            term: 1,
            commit_index: 0,
            applied_index: 0,
            members: vec![],
        };
        let mut roster = Roster {
            status,
            daemons: vec![coordinator(1), coordinator(2), agent("a"), agent("b")],
            agents_unknown: None,
        };
        roster.select(&[], &[]);
        assert_eq!(roster.daemons.len(), 4);
        roster.select(&["b".parse().unwrap_or_else(|e| panic!("{e:?}"))], &[]);
        assert_eq!(roster.daemons, vec![agent("b")]);
    }
}
