//! The `status-failover` scenario: what an on-call admin sees who runs `nexus admin status` right
//! after the leader died. Three coordinators; the leader killed with SIGKILL K times; at once one
//! `nexus admin status -o json` (every coordinator configured, in the members' order, so the dead
//! one is sometimes first), timed from spawn to exit, and what it answered: whether it named the
//! dead node as a confirmed leader. The same command with every member up is timed before each
//! kill, for comparison. `--nexus-binary` times another build of the CLI against the same
//! coordinators (the one before a change, say).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_protocol::identity::Role;
use nexus_tests::cluster::{self, TestCluster};
use nexus_tests::pki::{self, TestPki};
use serde::Serialize;

use crate::measure::Percentiles;

/// The scenario's flags; what it measures is told in `cli::Scenario`, the help's source.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 20)]
    pub(crate) kills: usize,
    /// The `nexus` binary to time (default: the one built beside this bench).
    #[arg(long)]
    pub(crate) nexus_binary: Option<PathBuf>,
}

/// What the `status-failover` scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The CLI timed.
    pub(crate) binary: String,
    /// `admin status` with every member up, before each kill.
    pub(crate) healthy: Percentiles,
    /// Answers with every member up that did not confirm the leader (`leader_state` other than
    /// `confirmed`): a live leader reported unreachable. Must be 0.
    pub(crate) healthy_unconfirmed: usize,
    /// `admin status` sent right after the leader's SIGKILL.
    pub(crate) after_kill: Percentiles,
    /// Answers after a kill that named the dead node as the leader and did not say it was not
    /// reached (its `leader_state` not `unreachable`, or no such field: an older CLI).
    pub(crate) named_dead_leader: usize,
    /// How the answers after a kill described the leader: `leader_state` values and their
    /// counts (`absent`: the CLI prints no such field).
    pub(crate) leader_states: Vec<(String, usize)>,
    /// Commands that failed (no answer at all).
    pub(crate) failed: usize,
}

pub(crate) async fn run(args: Args) -> Report {
    let kills = args.kills.max(1);
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &["--host-ttl", "3600"]).await;
    cluster.leader(&pki, Duration::from_secs(30)).await;
    let addresses: Vec<std::net::SocketAddr> = cluster.members.iter().map(|m| m.address).collect();
    let admin = pki::user("oncall", Role::Admin);
    let home = pki.scratch("home-oncall");
    let binary = args
        .nexus_binary
        .clone()
        .unwrap_or_else(|| nexus_tests::process::binary("nexus"));
    let status = || {
        let template = nexus_tests::process::cli_command(&pki, &admin, &home, &addresses);
        let mut command = std::process::Command::new(&binary);
        command.args(template.get_args());
        for (name, value) in template.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command.args(["admin", "status", "-o", "json"]);
        let started = Instant::now();
        let out = command.output().unwrap();
        let took = started.elapsed();
        let answer: Option<serde_json::Value> = out
            .status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten();
        (took, answer)
    };
    // The binary and the CLI's files into the page cache.
    status();

    let mut healthy = Vec::with_capacity(kills);
    let mut after_kill = Vec::with_capacity(kills);
    let mut named_dead_leader = 0;
    let mut failed = 0;
    let mut healthy_unconfirmed = 0;
    let mut states: std::collections::BTreeMap<String, usize> = Default::default();
    for round in 0..kills {
        let leader = cluster.leader(&pki, Duration::from_secs(30)).await;
        cluster::wait_healthy(&pki, &cluster, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (took, answer) = status();
        healthy.push(took);
        if answer
            .as_ref()
            .and_then(|a| a["leader_state"].as_str())
            .is_some_and(|state| state != "confirmed")
        {
            healthy_unconfirmed += 1;
            println!("round {round}: with every member up, admin status said {answer:?}");
        }
        let victim = cluster.index_of(leader.node.get());
        cluster.kill(victim);
        let (took, answer) = status();
        after_kill.push(took);
        let said = match &answer {
            None => {
                failed += 1;
                "failed".to_string()
            }
            Some(answer) => {
                let state = answer["leader_state"].as_str().unwrap_or("absent");
                *states.entry(state.to_string()).or_default() += 1;
                let named = answer["leader"].as_u64() == Some(leader.node.get());
                if named && state != "unreachable" {
                    named_dead_leader += 1;
                }
                format!(
                    "leader {} ({state}, last heard {} ms ago) from node {}",
                    answer["leader"], answer["leader_last_heard_ms"], answer["node"]
                )
            }
        };
        println!(
            "round {round}: leader {} killed; admin status answered in {:.0} ms: {said}",
            leader.node,
            took.as_secs_f64() * 1000.0
        );
        cluster.leader(&pki, Duration::from_secs(30)).await;
        cluster.restart(&pki, victim).await;
    }
    Report {
        binary: binary.display().to_string(),
        healthy: Percentiles::of(healthy),
        healthy_unconfirmed,
        after_kill: Percentiles::of(after_kill),
        named_dead_leader,
        leader_states: states.into_iter().collect(),
        failed,
    }
}
