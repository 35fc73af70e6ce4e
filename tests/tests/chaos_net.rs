//! The fault campaign's network and process layer, on its own: coordinators in network namespaces
//! of their own, cut off and healed; one with a skewed clock; one with a full disk; and a private
//! Docker engine killed and restarted.
//!
//! - Three coordinators in namespaces elect a leader the root namespace reaches; isolating it
//!   gives a new leader among the other two, and the old one cannot be reached; healed, all three
//!   are healthy; a one-way drop, random loss and a slow link apply and heal; dropped, nothing of
//!   the network is left.
//! - A member whose wall clock is 30 s ahead runs and rejoins; one an hour behind (before its
//!   certificates' start) cannot talk with anyone.
//! - A paused leader is replaced; resumed, it follows.
//! - A follower's disk full: the others keep acknowledging writes; freed (and restarted if it
//!   stopped), it catches up.
//! - The private engine runs a container, is killed, restarted, and runs one again.
//! - Hollow hosts' quiet heartbeats cross a link that drops a fifth of its packets, and no host
//!   is marked down.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::model::HostStatus;
use nexus_tests::chaos::engine::{self, Engine, EngineConfig};
use nexus_tests::chaos::members::{self, Members, Wait};
use nexus_tests::chaos::net::{self, Host, Net, Slow};
use nexus_tests::cluster::{admin_to_leader, register, replica_hosts, status};
use nexus_tests::docker::TEST_IMAGE;
use nexus_tests::fleet::{FleetOptions, HollowFleet};
use nexus_tests::pki::TestPki;
use nexus_tests::{eventually, exposition, http};

const ELECTION: Duration = Duration::from_secs(15);

/// The namespaces of this process's networks.
fn our_namespaces() -> Vec<String> {
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let marker = format!("-{}-", std::process::id());
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(net::PREFIX) && n.contains(&marker))
        .map(str::to_string)
        .collect()
}

/// Node `index`'s filter rules, as `iptables -S` prints them.
fn rules(net: &Net, index: usize) -> String {
    let ns = &net.node(index).unwrap().ns;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the leader reports every member healthy.
async fn all_healthy(pki: &TestPki, members: &Members) {
    eventually("every member healthy", ELECTION * 2, || async {
        let (_, status) = members.leader(pki, ELECTION).await.ok()?;
        (status.members.len() == members.len() && status.members.iter().all(|m| m.healthy))
            .then_some(())
    })
    .await;
}

/// How long a status request to member `index` takes, the median of five. Each opens a QUIC
/// connection, whose handshake carries certificate chains of a few kilobytes: at 100 kbit that
/// took 2.3 s, so each may take up to 10 s (`Members::status` allows 3).
async fn status_time(pki: &TestPki, members: &Members, index: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let request = status(pki, members.address(index));
        tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("a status request within 10 s")
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times[2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_cut_and_heal_coordinators_in_namespaces() {
    // What a campaign killed outright left behind (its process is gone).
    net::sweep(net::PREFIX).unwrap();
    members::sweep_mounts().unwrap();
    let pki = TestPki::new();
    let started = Instant::now();
    let mut network = Net::create("part").unwrap();
    let members = Members::start(&pki, &mut network, 3, &[]).await.unwrap();
    eprintln!(
        "Net::create and 3 members (until one leads): {:?}",
        started.elapsed()
    );
    assert_eq!(our_namespaces().len(), 3);

    // Isolating the leader: another leads, and the old one is out of reach.
    let (old, _) = members.leader(&pki, ELECTION).await.unwrap();
    let cut = Instant::now();
    network.isolate(old).unwrap();
    let (new, _) = members.leader(&pki, ELECTION).await.unwrap();
    eprintln!(
        "a new leader {:?} after the leader's isolation",
        cut.elapsed()
    );
    assert_ne!(new, old);
    assert!(members.status(&pki, old).await.is_err());
    network.heal().unwrap();
    all_healthy(&pki, &members).await;

    // One way, from the root to a follower: the follower is out of reach, yet healthy.
    let (leader, _) = members.leader(&pki, ELECTION).await.unwrap();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    network
        .drop_one_way(Host::Root, Host::Node(follower))
        .unwrap();
    network
        .drop_one_way(Host::Root, Host::Node(follower))
        .unwrap();
    assert!(members.status(&pki, follower).await.is_err());
    assert_eq!(
        rules(&network, follower).matches("-j DROP").count(),
        1,
        "idempotent:\n{}",
        rules(&network, follower)
    );
    // And between two followers, only at the receiver.
    network
        .drop_one_way(Host::Node(other), Host::Node(follower))
        .unwrap();
    let ip = network.node(other).unwrap().ip;
    assert!(rules(&network, follower).contains(&format!("-s {ip}/32")));
    assert!(!rules(&network, other).contains("DROP"));
    network.heal().unwrap();
    assert!(members.status(&pki, follower).await.is_ok());

    // Random loss: requests still get through (QUIC sends again), and it heals.
    network.loss(follower, 20).unwrap();
    assert!(rules(&network, follower).contains("statistic"));
    eventually(
        "an answer through 20% loss",
        Duration::from_secs(10),
        || async { members.status(&pki, follower).await.ok() },
    )
    .await;
    network.heal().unwrap();
    assert!(!rules(&network, follower).contains("DROP"));

    // A slow link: how much longer a status request takes.
    let before = status_time(&pki, &members, follower).await;
    let slow = Slow {
        rate_kbit: 100,
        max_queue: Duration::from_secs(2),
    };
    network.slow(follower, slow).unwrap();
    let during = status_time(&pki, &members, follower).await;
    network.heal().unwrap();
    let after = status_time(&pki, &members, follower).await;
    eprintln!(
        "a status request (a fresh QUIC connection each): {before:?}, at 100 kbit {during:?}, healed {after:?}"
    );
    assert!(during > before, "{before:?} then {during:?}");
    all_healthy(&pki, &members).await;

    drop(members);
    drop(network);
    assert_eq!(our_namespaces(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_skewed_clock_runs_and_rejoins() {
    let pki = TestPki::new();
    let mut network = Net::create("skew").unwrap();
    let mut members = Members::start(&pki, &mut network, 3, &[]).await.unwrap();
    let (leader, _) = members.leader(&pki, ELECTION).await.unwrap();
    let follower = (leader + 1) % 3;

    members.skew(&pki, follower, 30).await.unwrap();
    assert_eq!(members.skew_of(follower), 30);
    all_healthy(&pki, &members).await;

    // An hour behind, the member's clock is before its peers' certificates start (a minute
    // before they were issued): it refuses them, they refuse it, and the harness's connections
    // fail too. So it never answers, and the other two lead without it.
    members
        .restart_with(&pki, follower, -3600, Wait::No)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(members.running(follower), "{}", members.logs());
    assert!(members.status(&pki, follower).await.is_err());
    let (leader, status) = members.leader(&pki, ELECTION).await.unwrap();
    assert_ne!(leader, follower);
    let view = status
        .members
        .iter()
        .find(|m| m.id.get() == members.id(follower))
        .unwrap();
    assert!(!view.healthy, "{status:?}");

    members.restart(&pki, follower).await.unwrap();
    all_healthy(&pki, &members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_rejoins_when_resumed() {
    let pki = TestPki::new();
    let mut network = Net::create("pause").unwrap();
    let mut members = Members::start(&pki, &mut network, 3, &[]).await.unwrap();
    let (old, _) = members.leader(&pki, ELECTION).await.unwrap();

    members.pause(old).unwrap();
    assert!(members.paused(old));
    assert!(members.status(&pki, old).await.is_err());
    let (new, _) = members.leader(&pki, ELECTION).await.unwrap();
    assert_ne!(new, old);

    members.resume(old).unwrap();
    all_healthy(&pki, &members).await;
    let (leader, _) = members.leader(&pki, ELECTION).await.unwrap();
    assert_eq!(leader, new, "the resumed member took the lead back");

    // Paused when dropped: resumed and killed, so no stopped coordinator lingers.
    members.pause(old).unwrap();
    let dir = members.dir().to_path_buf();
    drop(members);
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_full_disk_catches_up_once_freed() {
    let pki = TestPki::new();
    let mut network = Net::create("disk").unwrap();
    let mut members = Members::start(&pki, &mut network, 3, &[]).await.unwrap();
    let (leader, _) = members.leader(&pki, ELECTION).await.unwrap();
    let follower = (leader + 1) % 3;

    let filled = members.fill_disk(follower).unwrap();
    assert!(filled > 0);
    let mut acknowledged = BTreeSet::new();
    // Enough that the follower's log outgrows the slack in its files' last pages.
    for n in 0..30 {
        let host = format!("disk-{n}");
        eventually("a write through the other two", ELECTION, || async {
            let (leader, _) = members.leader(&pki, ELECTION).await.ok()?;
            register(&pki, &host, members.address(leader)).await.ok()
        })
        .await;
        acknowledged.insert(host);
    }
    let exited = members.exited(follower);
    let log = members.logs();
    eprintln!(
        "after {filled} bytes filled the follower's disk: exited {exited:?}; \
         ENOSPC in the logs: {}",
        log.contains("No space left")
    );

    members.free_disk(follower).unwrap();
    // Restarted whether or not it has exited yet: a follower that met ENOSPC stops (a failed
    // durable write is fatal), and one that was still stopping when looked at was left
    // stopped by a restart only if it was not running (a CI run lost that race).
    members.restart(&pki, follower).await.unwrap();
    let address = members.address(follower);
    eventually(
        "the follower to catch up",
        Duration::from_secs(20),
        || async {
            let hosts: BTreeSet<String> = replica_hosts(&pki, address)
                .await
                .ok()?
                .into_iter()
                .map(|h| h.to_string())
                .collect();
            acknowledged.is_subset(&hosts).then_some(())
        },
    )
    .await;
}

#[test]
fn the_private_engine_runs_is_killed_and_comes_back() {
    if !Engine::available() {
        eprintln!("SKIPPED: dockerd is not installed (deploy/dev/prepare.sh installs it)");
        return;
    }
    engine::sweep().unwrap();
    let mut engine = Engine::start(EngineConfig::default(), &[TEST_IMAGE]).unwrap();
    let run = |engine: &Engine| {
        let out = engine
            .cli()
            .args(["run", "--rm", TEST_IMAGE, "echo", "hello"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    };
    run(&engine);
    let out = engine
        .cli()
        .args(["run", "-d", "--init", TEST_IMAGE, "sleep", "600"])
        .output()
        .unwrap();
    assert!(out.status.success());

    engine.kill();
    assert!(!engine.answers());
    engine.restart().unwrap();
    assert!(engine.answers());
    // Without live restore, the container died with its engine.
    let ps = engine.cli().args(["ps", "-q"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "");
    run(&engine);
    let dir = engine.dir().to_path_buf();
    drop(engine);
    assert!(!dir.exists());
}

/// An agent's heartbeats go in quiet datagrams, which nothing sends again when one is lost: a
/// heartbeat QUIC has not acknowledged within half its deadline is asked again on a stream, which
/// QUIC does send again. With a fifth of the packets into and out of the coordinator's namespace
/// dropped for 30 s and a TTL of four heartbeats, no host is marked down (without the stream,
/// four datagrams lost in a row somewhere among five hosts in 30 s is more likely than not), and
/// the coordinator takes each host's heartbeats all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_heartbeats_keep_hosts_up_across_a_lossy_link() {
    net::sweep(net::PREFIX).unwrap();
    members::sweep_mounts().unwrap();
    let pki = TestPki::new();
    let mut network = Net::create("loss").unwrap();
    let members = Members::start(&pki, &mut network, 1, &["--host-ttl", "2"])
        .await
        .unwrap();
    let options = FleetOptions {
        prefix: "lossy".into(),
        hosts: 5,
        heartbeat_interval: Duration::from_millis(500),
        start_latency: Duration::from_millis(20),
        ..FleetOptions::default()
    };
    let fleet = HollowFleet::start(&pki, &members.addresses(), &options).await;
    let (pki_ref, address) = (&pki, members.address(0));
    let all_ready = || async move {
        let request = Request::Admin(AdminRequest::Hosts);
        match admin_to_leader(pki_ref, address, request).await {
            Ok(Response::Hosts(hosts))
                if hosts.len() == 5 && hosts.iter().all(|h| h.status == HostStatus::Ready) =>
            {
                Some(())
            }
            _ => None,
        }
    };
    eventually("every host ready", Duration::from_secs(30), all_ready).await;
    let metrics = members.http(0);
    let counts = || async move {
        let (code, text) = http::get(metrics, "/metrics").await;
        assert_eq!(code, 200, "{text}");
        let count = |name| exposition::value(&text, name, &[]).unwrap_or_default();
        (
            count("nexus_heartbeats_total"),
            count("nexus_hosts_marked_down_total"),
        )
    };
    let (heartbeats, marked) = counts().await;
    assert_eq!(marked, 0.0);

    network.loss(0, 20).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (heartbeats_after, marked_after) = counts().await;
    network.heal().unwrap();
    assert_eq!(
        marked_after, 0.0,
        "hosts were marked down across the lossy link"
    );
    // Five hosts, two heartbeats a second each: 300 in 30 s, each taken once whether it came in
    // its datagram or on the stream after it.
    let taken = heartbeats_after - heartbeats;
    assert!(taken >= 240.0, "only {taken} heartbeats taken in 30 s");
    eventually("every host ready", Duration::from_secs(10), all_ready).await;
    drop(fleet);
}
