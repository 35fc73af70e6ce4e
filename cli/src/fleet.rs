//! Every daemon of the fleet, one by one: the commands that gather from all of them (`admin
//! logs`, `admin trace`, `admin health-check`, `admin support-bundle`) ask the coordinators who
//! the members are and where each agent serves, then ask each daemon directly, all at once, each
//! within its own time. A daemon that does not answer is named in the result, never fatal.

use std::fmt;
use std::time::Duration;

use futures_util::future::join_all;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{AdminRequest, ClusterStatus, HostView, Request, Response};
use nexus_protocol::model::HostStatus;
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
            let (endpoints, state) = tokio::join!(
                settings.request(Request::Admin(AdminRequest::Endpoints), limit),
                settings.request(Request::Admin(AdminRequest::Hosts), limit),
            );
            match endpoints {
                Ok(Response::Endpoints(endpoints)) => {
                    for (host, address) in &endpoints {
                        if every || hosts.contains(host) {
                            daemons.push(Daemon::Agent {
                                host: host.clone(),
                                address: address.clone(),
                            });
                        }
                    }
                    let state = match state {
                        Ok(Response::Hosts(state)) => Some(state),
                        Ok(other) => return Err(CliError::unexpected(&other)),
                        Err(error) => {
                            unlisted.push(("hosts".to_string(), error));
                            None
                        }
                    };
                    unlisted.extend(unheard(state.as_deref(), &endpoints, hosts));
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

/// The agents expected, every host of the replicated `state` (or those `asked` for), that the
/// leader knows no address for, each with why. The leader learns an agent's address from its
/// heartbeats, and keeps it in memory only: a new leader knows none until each agent's next
/// heartbeat, and a command run then must name the agents it cannot ask, never skip them.
pub fn unheard(
    state: Option<&[HostView]>,
    endpoints: &[(HostId, String)],
    asked: &[HostId],
) -> Vec<(String, CliError)> {
    let expected: Vec<&HostId> = if asked.is_empty() {
        state
            .unwrap_or_default()
            .iter()
            .map(|h| &h.info.host_id)
            .collect()
    } else {
        asked.iter().collect()
    };
    expected
        .into_iter()
        .filter(|host| !endpoints.iter().any(|(known, _)| known == *host))
        .map(|host| {
            let status =
                state.map(|s| s.iter().find(|h| h.info.host_id == *host).map(|h| h.status));
            let error = match status {
                None => CliError::local(
                    ErrorCode::NetworkError,
                    "the leader knows no address for its agent (is it connected?)",
                ),
                Some(None) => {
                    CliError::local(ErrorCode::InvalidArgument, "not a host of the fleet")
                        .suggest("list the hosts with `nexus admin hosts`")
                }
                Some(Some(HostStatus::Down)) => CliError::local(
                    ErrorCode::NetworkError,
                    "its host is down: the leader has not heard from its agent",
                ),
                Some(Some(_)) => CliError::local(
                    ErrorCode::NetworkError,
                    "the leader has not heard from its agent yet (a new leader learns each \
                     agent's address at its next heartbeat)",
                )
                .suggest(
                    "ask again in a few seconds; `nexus admin hosts` shows its last heartbeat",
                ),
            };
            (format!("agent-{host}"), error)
        })
        .collect()
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
    /// The code of the first of `failures`: what a command that reached fewer daemons than it
    /// should ends with (a transport code for one not reached, `INVALID_ARGUMENT` for one not in
    /// the fleet, or the error a daemon answered instead of doing its part: `UNSUPPORTED` from
    /// one of an earlier release, say).
    pub unreached: Option<ErrorCode>,
}

impl<T> Gathered<T> {
    /// The code a fan-out that did not go well everywhere ends with: why the first daemon not
    /// reached was not, else `refused`, the code of a daemon's own refusal of its part.
    pub fn failure_code(&self, refused: ErrorCode) -> ErrorCode {
        self.unreached.unwrap_or(refused)
    }
}

/// Sorts [`ask_each`]'s answers into reports (what `report` takes from an answer) and failures.
pub fn gather<T>(
    roster: &Roster,
    answers: Vec<(Daemon, Result<Response, CliError>)>,
    report: impl Fn(&Response) -> Option<T>,
) -> Gathered<T> {
    let mut gathered = Gathered {
        reports: Vec::new(),
        failures: Vec::new(),
        unreached: None,
    };
    let mut failed = |who: String, error: &CliError| {
        gathered.unreached.get_or_insert(error.error.code);
        gathered.failures.push((who, brief(error)));
    };
    for (who, error) in &roster.unlisted {
        failed(who.clone(), error);
    }
    let mut reports = Vec::new();
    for (daemon, answer) in answers {
        match answer {
            Ok(answer) => match report(&answer) {
                Some(taken) => reports.push(taken),
                None => failed(daemon.label(), &CliError::unexpected(&answer)),
            },
            Err(error) => failed(daemon.label(), &error),
        }
    }
    gathered.reports = reports;
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

    fn view(host: &str, status: HostStatus) -> HostView {
        HostView {
            info: nexus_fixtures::host(host),
            status,
            workspaces: 0,
            stats: None,
            last_heartbeat: None,
        }
    }

    /// `unheard`'s answer as (label, code, message).
    fn unheard_of(
        state: Option<&[HostView]>,
        endpoints: &[(&str, &str)],
        asked: &[&str],
    ) -> Vec<(String, String, String)> {
        let endpoints: Vec<(HostId, String)> = endpoints
            .iter()
            .map(|(host, address)| (host.parse().unwrap(), (*address).to_string()))
            .collect();
        let asked: Vec<HostId> = asked.iter().map(|h| h.parse().unwrap()).collect();
        unheard(state, &endpoints, &asked)
            .into_iter()
            .map(|(who, error)| (who, error.error.code.to_string(), error.error.message))
            .collect()
    }

    #[test]
    fn every_host_of_the_state_without_an_address_is_named_with_why() {
        let state = [
            view("a", HostStatus::Ready),
            view("b", HostStatus::Ready),
            view("c", HostStatus::Down),
            view("d", HostStatus::Cordoned),
        ];
        let found = unheard_of(Some(&state), &[("a", "127.0.0.1:1")], &[]);
        let labels: Vec<&str> = found.iter().map(|(who, _, _)| who.as_str()).collect();
        assert_eq!(labels, ["agent-b", "agent-c", "agent-d"]);
        assert!(
            found[0]
                .2
                .starts_with("the leader has not heard from its agent yet")
        );
        assert_eq!(found[0].1, "NETWORK_ERROR");
        assert!(found[1].2.starts_with("its host is down"));
        assert!(
            found[2]
                .2
                .starts_with("the leader has not heard from its agent yet")
        );
        // Every agent known: nothing to name.
        let all: Vec<(&str, &str)> = ["a", "b", "c", "d"].map(|h| (h, "127.0.0.1:1")).to_vec();
        assert!(unheard_of(Some(&state), &all, &[]).is_empty());
    }

    #[test]
    fn hosts_asked_for_are_named_when_unknown_or_unheard() {
        let state = [view("a", HostStatus::Ready), view("b", HostStatus::Ready)];
        let found = unheard_of(Some(&state), &[("a", "127.0.0.1:1")], &["a", "b", "zz"]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, "agent-b");
        assert_eq!(
            (found[1].0.as_str(), found[1].1.as_str()),
            ("agent-zz", "INVALID_ARGUMENT")
        );
        // Without the hosts' list, only those asked for can be named.
        let found = unheard_of(None, &[("a", "127.0.0.1:1")], &["a", "b"]);
        assert_eq!(found.len(), 1);
        assert!(found[0].2.contains("is it connected"));
        assert!(unheard_of(None, &[], &[]).is_empty());
    }

    #[test]
    fn a_fan_out_ends_with_why_the_first_daemon_was_not_reached() {
        let roster = |unlisted: Vec<(String, CliError)>| Roster {
            status: ClusterStatus {
                node: NodeId::new(1).unwrap(),
                leader: None,
                term: 1,
                commit_index: 0,
                applied_index: 0,
                members: vec![],
            },
            daemons: vec![coordinator(1), agent("a")],
            unlisted,
        };
        let refused = ErrorCode::InvalidArgument;
        let report = |answer: &Response| matches!(answer, Response::Ack).then_some(());
        // Every daemon answered: a daemon's own refusal is the code.
        let all = gather(
            &roster(vec![]),
            vec![
                (coordinator(1), Ok(Response::Ack)),
                (agent("a"), Ok(Response::Ack)),
            ],
            report,
        );
        assert_eq!((all.reports.len(), all.failure_code(refused)), (2, refused));
        // One not reached: its transport code, not the refusal's.
        let timeout = CliError::local(ErrorCode::Timeout, "agent-a did not answer within 30 s");
        let one = gather(
            &roster(vec![]),
            vec![
                (coordinator(1), Ok(Response::Ack)),
                (agent("a"), Err(timeout)),
            ],
            report,
        );
        assert_eq!(one.failure_code(refused), ErrorCode::Timeout);
        assert_eq!(one.failures[0].0, "agent-a");
        assert!(
            one.failures[0].1.starts_with("TIMEOUT: "),
            "{:?}",
            one.failures
        );
        // One that could not even be listed comes first.
        let unknown = CliError::local(ErrorCode::NetworkError, "no address");
        let first = gather(
            &roster(vec![("agent-b".into(), unknown)]),
            vec![(coordinator(1), Ok(Response::EntryVersion(2)))],
            report,
        );
        assert_eq!(first.failure_code(refused), ErrorCode::NetworkError);
        assert_eq!(first.failures.len(), 2, "{:?}", first.failures);
    }

    #[test]
    fn labels_are_the_sources_that_log_records_carry() {
        assert_eq!(coordinator(2).label(), "coordinator-2");
        assert_eq!(agent("host-a").label(), "agent-host-a");
    }
}
