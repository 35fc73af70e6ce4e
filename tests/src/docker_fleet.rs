//! A fleet of real processes on the real Docker engine, as the end-to-end suites drive it: three
//! `nexus-coordinator`s (host TTL 2 s), `nexus-agent`s with the Docker runtime, and the `nexus` CLI
//! run as a user or an admin, with JSON output.

use std::process::{Output, Stdio};
use std::time::Duration;

use nexus_protocol::identity::Role;
use serde_json::Value;

use crate::cluster::TestCluster;
use crate::docker::{HostCleanup, containers_of};
use crate::eventually;
use crate::pki::{self, TestPki};
use crate::process::{AgentProcess, cli_command};

pub use crate::docker::TEST_IMAGE as IMAGE;

/// A fleet of three coordinators (host TTL 2 s) and Docker agents with small port ranges of
/// their own, so that tests running side by side do not share host ports.
#[derive(Debug)]
pub struct DockerFleet {
    pub pki: TestPki,
    pub cluster: TestCluster,
    pub hosts: Vec<String>,
    pub ranges: Vec<(u16, u16)>,
    /// Each agent, while it runs (a cell: tests kill and restart them while sharing the fleet).
    pub agents: std::sync::Mutex<Vec<Option<AgentProcess>>>,
    /// Flags every agent gets besides the fleet's own.
    agent_flags: Vec<String>,
    _cleanup: Vec<HostCleanup>,
}

impl Drop for DockerFleet {
    /// Stops the agents as an operator would, before the hosts' cleanup: an agent killed with a
    /// ready network's `network create` in flight leaves the engine to finish it after the
    /// cleanup has listed the host's networks, and the network stays behind, in the way of
    /// tests that count networks; a stopped agent waits for it and removes its free ready
    /// networks itself.
    fn drop(&mut self) {
        let agents = self.agents.get_mut().unwrap_or_else(|e| e.into_inner());
        for agent in agents.iter().flatten() {
            agent.process.ask_to_stop();
        }
        let deadline = std::time::Instant::now() + AGENT_STOP_PATIENCE;
        for agent in agents.iter_mut().flatten() {
            agent.process.reap_within(deadline);
        }
    }
}

/// How long an agent of the fleet may take to stop before it is killed.
const AGENT_STOP_PATIENCE: Duration = Duration::from_secs(10);

impl DockerFleet {
    pub async fn start(tag: &str, agents: usize) -> DockerFleet {
        DockerFleet::start_with(tag, agents, &[]).await
    }

    /// [`DockerFleet::start`], every agent with `agent_flags` too (`--stats-interval 1`).
    pub async fn start_with(tag: &str, agents: usize, agent_flags: &[&str]) -> DockerFleet {
        let pki = TestPki::new();
        let cluster = TestCluster::start(&pki, 3, &["--host-ttl", "2"]).await;
        cluster.leader(&pki, Duration::from_secs(20)).await;
        let pid = std::process::id();
        // 20 ports per host; the process id spreads concurrent tests over 22000-29999.
        let base = 22_000 + u16::try_from(pid % 390).unwrap() * 20;
        let hosts: Vec<String> = (0..agents).map(|i| format!("{tag}{i}-{pid}")).collect();
        let ranges = (0..agents)
            .map(|i| {
                let start = base + u16::try_from(i).unwrap() * 10;
                (start, start + 9)
            })
            .collect();
        let fleet = DockerFleet {
            _cleanup: hosts.iter().cloned().map(HostCleanup).collect(),
            agents: std::sync::Mutex::new(hosts.iter().map(|_| None).collect()),
            agent_flags: agent_flags.iter().map(ToString::to_string).collect(),
            pki,
            cluster,
            hosts,
            ranges,
        };
        // No weekly maintenance window: a test's cluster must never prune the shared engine (a
        // run at Sunday 02:00 UTC would), nor show its window's notice (posted a day ahead) to
        // tests that count notices. The leader clears a notice already posted.
        fleet.ok(
            "root",
            Role::Admin,
            &["admin", "maintenance", "schedule", "--off"],
        );
        let fleet_ref = &fleet;
        eventually("no maintenance notice", Duration::from_secs(30), || async {
            let notices = fleet_ref.ok("root", Role::Admin, &["admin", "notice", "list"]);
            notices.as_array()?.is_empty().then_some(())
        })
        .await;
        for index in 0..agents {
            fleet.start_agent(index);
        }
        eventually(
            "every agent registered",
            Duration::from_secs(30),
            || async {
                let hosts = fleet_ref.ok("root", Role::Admin, &["admin", "hosts"]);
                let ready = hosts
                    .as_array()?
                    .iter()
                    .filter(|h| h["status"] == "ready")
                    .count();
                (ready == agents).then_some(())
            },
        )
        .await;
        fleet
    }

    pub fn start_agent(&self, index: usize) {
        let (low, high) = self.ranges[index];
        let range = format!("{low}-{high}");
        let mut flags = vec!["--runtime", "docker", "--port-range", &range];
        flags.extend(self.agent_flags.iter().map(String::as_str));
        self.agents.lock().unwrap()[index] = Some(AgentProcess::start(
            &self.pki,
            &self.hosts[index],
            &self.cluster.live_addresses(),
            &flags,
        ));
    }

    /// SIGKILL of agent `index`, as a crash: it cleans up nothing.
    pub fn kill_agent(&self, index: usize) {
        if let Some(mut agent) = self.agents.lock().unwrap()[index].take() {
            agent.process.kill();
        }
    }

    pub fn command(&self, user: &str, role: Role) -> std::process::Command {
        let identity = pki::user(user, role);
        let home = self.pki.scratch(&format!("home-{user}"));
        cli_command(&self.pki, &identity, &home, &self.cluster.live_addresses())
    }

    pub fn run(&self, user: &str, role: Role, args: &[&str]) -> Output {
        self.command(user, role)
            .args(["-o", "json"])
            .args(args)
            .output()
            .expect("nexus runs")
    }

    /// The JSON a command printed; fails the test if it failed.
    pub fn ok(&self, user: &str, role: Role, args: &[&str]) -> Value {
        let out = self.run(user, role, args);
        assert!(
            out.status.success(),
            "nexus {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The error code a command failed with; fails the test if it succeeded.
    pub fn refused(&self, user: &str, role: Role, args: &[&str]) -> (String, String) {
        let out = self.run(user, role, args);
        assert!(!out.status.success(), "nexus {args:?} succeeded");
        let error: Value = serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (
            error["error"]["code"].as_str().unwrap().to_string(),
            error["error"]["message"].as_str().unwrap().to_string(),
        )
    }

    /// Starts `count` creates of small `sleep` workspaces named PREFIX00.. at once, as Ada,
    /// without waiting for their hosts; answers each one's output, in order.
    pub fn create_at_once(&self, prefix: &str, count: usize) -> Vec<(String, Output)> {
        self.pki.issue(&pki::user("ada", Role::User));
        let children: Vec<_> = (0..count)
            .map(|i| {
                let name = format!("{prefix}{i:02}");
                let child = self
                    .command("ada", Role::User)
                    .args([
                        "-o",
                        "json",
                        "workspace",
                        "create",
                        &name,
                        "--image",
                        IMAGE,
                        "--class",
                        "small",
                        "--no-wait",
                        "--",
                        "sleep",
                        "3600",
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (name, child)
            })
            .collect();
        children
            .into_iter()
            .map(|(name, child)| (name, child.wait_with_output().unwrap()))
            .collect()
    }

    /// Every workspace once all of them run.
    pub async fn all_running(&self, limit: Duration) -> Vec<(String, String, String)> {
        eventually("every workspace running", limit, || async {
            let all = self.workspaces();
            all.iter()
                .all(|(_, state, _)| state == "running")
                .then_some(all)
        })
        .await
    }

    /// Ada's small workspace `name` that sleeps, running.
    pub fn create_sleeper(&self, name: &str) {
        let (user, role) = ("ada", Role::User);
        let created = self.ok(
            user,
            role,
            &[
                "workspace",
                "create",
                name,
                "--image",
                IMAGE,
                "--class",
                "small",
                "--",
                "sleep",
                "1000000",
            ],
        );
        assert_eq!(created["state"], "running");
    }

    /// Every workspace, as an admin lists them: name → (state, host).
    pub fn workspaces(&self) -> Vec<(String, String, String)> {
        self.ok("root", Role::Admin, &["workspace", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["name"].as_str().unwrap().to_string(),
                    w["state"].as_str().unwrap().to_string(),
                    w["host"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }

    pub fn containers(&self) -> usize {
        self.hosts.iter().map(|h| containers_of(h).len()).sum()
    }

    pub fn logs(&self) -> String {
        let agents: String = self
            .agents
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|a| format!("--- agent {}\n{}", a.host_id, a.process.log()))
            .collect();
        format!("{agents}{}", self.cluster.logs())
    }
}
