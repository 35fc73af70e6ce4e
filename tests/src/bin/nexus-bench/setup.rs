//! What the scenarios share to bring a cluster up and drive it: three coordinators with a hollow
//! fleet, an agent's registration, the one write that the Raft scenarios time, and the fleet's
//! counts as a coordinator has applied them. It measures nothing itself; the numbers are
//! `measure`'s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nexus_protocol::RequestId;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{
    AdminRequest, AgentRequest, FleetStats, Request, Response, StaleRead,
};
use nexus_protocol::model::HostStatus;
use nexus_protocol::transport::Connection;
use nexus_protocol::{HostId, WireError};
use nexus_tests::cluster::{self, TestCluster};
use nexus_tests::fleet::{FleetOptions, HollowFleet};
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::connect;

/// The coordinators' flags for a scenario's `--election-ticks`: `extra`, then the ticks if
/// given (their default, 10, otherwise).
pub(crate) fn coordinator_flags(extra: &[&str], election_ticks: Option<usize>) -> Vec<String> {
    let mut flags: Vec<String> = extra.iter().map(ToString::to_string).collect();
    if let Some(ticks) = election_ticks {
        flags.extend(["--election-ticks".to_string(), ticks.to_string()]);
    }
    flags
}

/// Three coordinators with `extra` flags, and a hollow fleet of `hosts` heartbeating every
/// `heartbeat` seconds and started `start_rate` a second, all registered and ready. Answers how
/// long the fleet took to come up.
pub(crate) async fn cluster_and_fleet(
    pki: &TestPki,
    hosts: usize,
    heartbeat: f64,
    start_rate: usize,
    extra: &[&str],
) -> (TestCluster, HollowFleet, Duration) {
    let cluster = TestCluster::start(pki, 3, extra).await;
    cluster.leader(pki, Duration::from_secs(30)).await;
    let options = FleetOptions {
        prefix: "h".into(),
        hosts,
        heartbeat_interval: Duration::from_secs_f64(heartbeat),
        start_rate,
        ..FleetOptions::default()
    };
    // Connected before the fleet: at 20,000 hosts a handshake behind theirs outlived its 5 s.
    let observer = connect(
        pki,
        &pki::user("observer", Role::Admin),
        cluster.members[0].address,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let fleet = HollowFleet::start(pki, &cluster.live_addresses(), &options).await;
    until_count(
        &observer,
        "hosts ready",
        hosts,
        Duration::from_secs(600),
        |s| count_of(&s.hosts, &HostStatus::Ready),
    )
    .await;
    let up = started.elapsed();
    println!(
        "{hosts} hollow hosts registered and ready in {:.1} s",
        up.as_secs_f64()
    );
    (cluster, fleet, up)
}

/// Waits until the agent of `host` has registered with `coordinator`.
pub(crate) async fn until_registered(coordinator: &InProcessCoordinator, host: &HostId) {
    let registered = || async {
        let id = host.clone();
        coordinator
            .read(move |state| state.hosts().contains_key(&id))
            .await
            .then_some(())
    };
    nexus_tests::eventually("the agent to register", Duration::from_secs(30), registered).await;
}

/// One write: a host's agent (re-)registers it, which the cluster applies through Raft. An
/// attempt waits up to `limit`, and ends sooner when the coordinator's process is gone (its
/// address refuses a probe), as the CLI's client's attempts do.
pub(crate) async fn register_once(
    connection: &Connection,
    request_id: RequestId,
    limit: Duration,
) -> Result<(), WireError> {
    let host = match connection.client() {
        nexus_protocol::Identity::Agent(host) => host.clone(),
        other => panic!("{other} is not an agent"),
    };
    match connection
        .request_unless_gone(
            request_id,
            Request::Agent(AgentRequest::Register(cluster::host_info(host.as_str()))),
            limit,
        )
        .await?
    {
        Response::Registered { .. } => Ok(()),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The fleet in numbers, as the coordinator at the other end of `connection` has applied it (a
/// stale read: no round to the leader, and any replica answers).
pub(crate) async fn fleet_stats(connection: &Connection) -> Option<FleetStats> {
    match connection
        .request_with(
            RequestId::random(),
            Request::Stale(StaleRead::Admin(AdminRequest::Stats)),
            Duration::from_secs(30),
        )
        .await
    {
        Ok(Response::FleetStats(stats)) => Some(stats),
        _ => None,
    }
}

/// Waits until `count` of the fleet's stats reaches `wanted`; answers how long it took. Panics
/// after `limit`: for waits the scenario cannot go on without.
pub(crate) async fn until_count(
    connection: &Connection,
    what: &str,
    wanted: usize,
    limit: Duration,
    count: impl Fn(&FleetStats) -> usize,
) -> Duration {
    match count_within(connection, what, wanted, limit, count).await {
        Ok(took) => took,
        Err(last) => panic!("{what}: not {wanted} after {limit:?}: {last:?}"),
    }
}

/// Waits until `count` of the fleet's stats reaches `wanted`, for at most `limit`: how long it
/// took, or the last stats read when the limit passed.
pub(crate) async fn count_within(
    connection: &Connection,
    what: &str,
    wanted: usize,
    limit: Duration,
    count: impl Fn(&FleetStats) -> usize,
) -> Result<Duration, Option<FleetStats>> {
    let started = Instant::now();
    let mut last = None;
    let mut told = Instant::now();
    loop {
        if let Some(stats) = fleet_stats(connection).await {
            if count(&stats) >= wanted {
                return Ok(started.elapsed());
            }
            last = Some(stats);
        }
        if told.elapsed() > Duration::from_secs(10) {
            println!("  waiting for {what}: {last:?}");
            told = Instant::now();
        }
        if started.elapsed() >= limit {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many of the fleet's hosts or workspaces are in state `what`, from a count by state.
pub(crate) fn count_of<T: PartialEq>(counts: &[(T, u32)], what: &T) -> usize {
    counts
        .iter()
        .filter(|(state, _)| state == what)
        .map(|(_, n)| *n as usize)
        .sum()
}

/// An admin's connection to watch the fleet through: to `first` (the leader a scenario began
/// with), or to any member that answers when that one does not (at 20,000 hosts a busy leader
/// took new connections too slowly, or stepped down, by the end of the creates; after a
/// failover, the new leader did not answer within 5 s). Tries for two minutes.
pub(crate) async fn observe(pki: &TestPki, cluster: &TestCluster, first: SocketAddr) -> Connection {
    let admin = pki::user("observer", Role::Admin);
    let mut addresses = vec![first];
    addresses.extend(cluster.members.iter().map(|m| m.address));
    let started = Instant::now();
    let mut last = None;
    for address in addresses.iter().cycle() {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        match connect(pki, &admin, *address).await {
            Ok(connection) => return connection,
            Err(error) => {
                println!("  the observer could not connect to {address}: {error}");
                last = Some(error);
            }
        }
    }
    panic!("no coordinator took the observer's connection in two minutes: {last:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_election_ticks_follow_the_other_flags_only_when_given() {
        assert_eq!(
            coordinator_flags(&["--host-ttl", "86400"], Some(40)),
            ["--host-ttl", "86400", "--election-ticks", "40"]
        );
        assert_eq!(
            coordinator_flags(&["--host-ttl", "86400"], None),
            ["--host-ttl", "86400"]
        );
        assert!(coordinator_flags(&[], None).is_empty());
    }
}
