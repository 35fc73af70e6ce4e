//! A real fleet watched as an operator watches it: three `nexus-coordinator`s and a Docker
//! `nexus-agent` scraped by the test and by a real Prometheus server (Debian's, on loopback, with
//! Nexus' alert rules loaded). Every metric the alert rules and the Grafana dashboard read is
//! exported, `promtool check metrics` finds nothing wrong in any daemon's output, and starting
//! workspaces moves the SLI histograms and counters.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use nexus_protocol::identity::Role;
use nexus_tests::docker_fleet::DockerFleet;
use nexus_tests::eventually;
use nexus_tests::exposition::{families, value};
use nexus_tests::http::get;
use nexus_tests::monitoring::{alert_files, alert_rules, promtool, referenced_metrics};
use nexus_tests::prometheus::Prometheus;

/// Ada's `verb` (stop, start, switch) of her workspace `name`, waited for.
fn workspace(fleet: &DockerFleet, verb: &str, name: &str) {
    fleet.ok("ada", Role::User, &["workspace", verb, name]);
}

#[tokio::test]
async fn a_scraped_fleet_exports_what_the_alerts_and_the_dashboard_read() {
    let fleet = DockerFleet::start("scrape", 1).await;
    let coordinators: Vec<SocketAddr> = fleet
        .cluster
        .running
        .iter()
        .flatten()
        .map(|member| member.http.expect("a coordinator's HTTP address"))
        .collect();
    let agent = fleet.agents.lock().unwrap()[0]
        .as_ref()
        .and_then(|agent| agent.http)
        .expect("the agent's HTTP address");

    // Two cold starts, a context switch (a stopped, b running: switch to a), a warm start of b.
    fleet.create_sleeper("scrape-a");
    fleet.create_sleeper("scrape-b");
    workspace(&fleet, "stop", "scrape-a");
    workspace(&fleet, "switch", "scrape-a");
    workspace(&fleet, "start", "scrape-b");

    // The SLIs are the leader's: it records a start when the agent's report of it is applied.
    let leader = fleet
        .cluster
        .leader(&fleet.pki, Duration::from_secs(10))
        .await;
    let leader_http = fleet.cluster.running[fleet.cluster.index_of(leader.leader.unwrap().get())]
        .as_ref()
        .unwrap()
        .http
        .unwrap();
    let text = eventually("every start measured", Duration::from_secs(20), || async {
        let (_, text) = get(leader_http, "/metrics").await;
        let count = |kind| {
            value(
                &text,
                "nexus_workspace_start_duration_seconds_count",
                &[("kind", kind)],
            )
            .unwrap_or(0.0)
        };
        (count("cold") >= 2.0 && count("switch") >= 1.0 && count("warm") >= 1.0).then_some(text)
    })
    .await;
    // Each start counted once: no retry or repeated report adds one.
    for (kind, starts) in [("cold", 2.0), ("warm", 1.0), ("switch", 1.0)] {
        assert_eq!(
            value(
                &text,
                "nexus_workspace_starts_total",
                &[("kind", kind), ("outcome", "ok")]
            ),
            Some(starts),
            "{kind}: {text}"
        );
    }
    assert_eq!(
        value(&text, "nexus_raft_is_leader", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "nexus_hosts", &[("status", "ready")]),
        Some(1.0),
        "{text}"
    );
    assert!(value(&text, "nexus_api_requests_total", &[("code", "OK")]).unwrap_or(0.0) >= 1.0);
    // Each of the five commands waited on a watch of its workspace, on the coordinator its
    // change went to (the leader, or a follower that forwarded it).
    let mut watches = 0.0;
    for coordinator in &coordinators {
        let (_, text) = get(*coordinator, "/metrics").await;
        let ok = [("kind", "workspace_watch"), ("code", "OK")];
        watches += value(&text, "nexus_api_requests_total", &ok).unwrap_or(0.0);
    }
    assert!(watches >= 5.0, "{watches} watches opened for five waits");

    // The agent's per-workspace series come with its next stats sample (every 10 s).
    let agent_text = eventually(
        "the agent's workspace series",
        Duration::from_secs(30),
        || async {
            let (_, text) = get(agent, "/metrics").await;
            let running = value(&text, "nexus_agent_containers", &[("state", "running")]);
            let memory = value(
                &text,
                "nexus_workspace_memory_bytes",
                &[("workspace", "scrape-a")],
            );
            // Both workspaces sampled: one can start after the sample that saw the other.
            let sampled = value(
                &text,
                "nexus_workspace_memory_limit_bytes",
                &[("workspace", "scrape-b")],
            );
            (running == Some(2.0) && memory.is_some_and(|bytes| bytes > 0.0) && sampled.is_some())
                .then_some(text)
        },
    )
    .await;
    assert_eq!(
        value(
            &agent_text,
            "nexus_workspace_memory_limit_bytes",
            &[("workspace", "scrape-b")]
        ),
        Some(f64::from(1u32 << 30)),
        "the small class's limit: {agent_text}"
    );

    // Every daemon's output passes promtool's lint, and together they export every metric the
    // rules and the dashboard name.
    let mut exported = BTreeSet::new();
    for address in coordinators.iter().chain([&agent]) {
        let (status, text) = get(*address, "/metrics").await;
        assert_eq!(status, 200);
        promtool(&["check", "metrics"], Some(&text)).unwrap_or_else(|problems| {
            panic!("promtool check metrics on {address}: {problems}\n{text}")
        });
        exported.extend(families(&text));
    }
    let [rules, dashboard] = alert_files();
    for file in [&rules, &dashboard] {
        let text = std::fs::read_to_string(file).unwrap();
        let missing: Vec<String> = referenced_metrics(&text)
            .into_iter()
            .filter(|name| !exported.contains(name))
            .collect();
        assert!(
            missing.is_empty(),
            "{} reads metrics no daemon exports: {missing:?}",
            file.display()
        );
    }

    // A real Prometheus scrapes them all, loads the rules, and counts the fleet's hosts.
    let prometheus = Prometheus::start(
        &fleet.pki.scratch("prometheus"),
        &[
            ("nexus-coordinator", coordinators.clone()),
            ("nexus-agent", vec![agent]),
        ],
        &rules,
    );
    let targets = coordinators.len() + 1;
    eventually(
        "every target up in Prometheus",
        Duration::from_secs(30),
        || async {
            let up = prometheus.query("up == 1").await?;
            (up.len() == targets).then_some(())
        },
    )
    .await;
    let hosts = eventually(
        "the fleet's host count",
        Duration::from_secs(15),
        || async {
            let result = prometheus
                .query("max(sum by (instance) (nexus_hosts{job=\"nexus-coordinator\"}))")
                .await?;
            result.first()?["value"][1].as_str().map(str::to_string)
        },
    )
    .await;
    assert_eq!(hosts, "1", "{}", prometheus.log());
    let mut loaded = prometheus.alert_rules().await.unwrap_or_default();
    let mut written: Vec<String> = alert_rules(&std::fs::read_to_string(&rules).unwrap())
        .into_iter()
        .map(|rule| rule.name)
        .collect();
    loaded.sort();
    written.sort();
    assert_eq!(loaded, written, "{}", prometheus.log());

    // A healthy fleet raises no alert, not even a pending one: an expression true on a healthy
    // fleet (a gauge read as 0, a ratio over the wrong traffic) would page on every fleet. Left
    // out: the rules on this machine's own load and disk (a busy CI machine may meet them), and
    // on certificates, whose validity is the test PKI's choice.
    let machine = [
        "NexusHighCpuUsage",
        "NexusHighMemoryUsage",
        "NexusHostDiskAlmostFull",
        "NexusHostDiskFillingUp",
        "NexusCertificateExpiryImminent",
        "NexusCertificateExpiringSoon",
    ];
    tokio::time::sleep(Duration::from_secs(5)).await;
    let alerts = prometheus.query("ALERTS").await.unwrap_or_default();
    let raised: Vec<String> = alerts
        .iter()
        .filter_map(|alert| alert["metric"]["alertname"].as_str().map(str::to_string))
        .filter(|name| !machine.contains(&name.as_str()))
        .collect();
    assert!(raised.is_empty(), "a healthy fleet raised {alerts:?}");
}
