//! The Ansible role of `deploy/ansible`, run by `ansible-playbook` against real hosts with
//! systemd as their init: five Debian containers on a network of their own, three coordinators
//! and two agents (whose workspaces go to this machine's engine through its socket), reached
//! through Ansible's docker connection. One run from fresh hosts gives a fleet: every unit active,
//! three healthy members, two Ready hosts, and a workspace created through the CLI runs. A second
//! run changes nothing. A rolling upgrade to rebuilt packages keeps two members up at every moment
//! and loses no workspace.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nexus_tests::docker::{HostCleanup, TEST_IMAGE, containers_of};
use nexus_tests::systemd::{SystemdHost, build_packages, deploy_dir, text};
use serde_json::Value;

const COORDINATORS: usize = 3;
const AGENTS: usize = 2;

/// A docker network, removed when dropped (after the hosts on it).
struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// A directory of this machine's, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fleet {
    // Field order is drop order: the agents' hosts (so that no agent makes a workspace again),
    // their workspaces, the coordinators, then the network.
    agents: Vec<SystemdHost>,
    _cleanups: Vec<HostCleanup>,
    coordinators: Vec<SystemdHost>,
    _network: Network,
    _scratch: Scratch,
    inventory: PathBuf,
    packages: PathBuf,
}

impl Fleet {
    fn start() -> Fleet {
        let id = std::process::id();
        let network = format!("nexus-ansible-{id}");
        let made = Command::new("docker")
            .args(["network", "create", &network])
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", text(&made));
        let network = Network(network);
        // The agents' data directories are this machine's, at the same path in their hosts:
        // the engine they drive mounts workspace files from there. Not under /tmp or /var/tmp,
        // which the agent's unit makes private.
        let scratch = Scratch(PathBuf::from(format!("/srv/nexus-ansible-{id}")));
        let packages = scratch.0.join("packages");
        std::fs::create_dir_all(&packages).unwrap();
        let coordinators: Vec<SystemdHost> = (1..=COORDINATORS)
            .map(|n| SystemdHost::start(&format!("nxc{n}-{id}"), &["--network", &network.0]))
            .collect();
        let mut cleanups = vec![];
        let agents: Vec<SystemdHost> = (1..=AGENTS)
            .map(|n| {
                let name = format!("nxa{n}-{id}");
                let data = scratch.0.join(&name);
                std::fs::create_dir_all(&data).unwrap();
                let data_mount = format!("{0}:{0}", data.display());
                cleanups.push(HostCleanup(name.clone()));
                SystemdHost::start(
                    &name,
                    &[
                        "--network",
                        &network.0,
                        "-v",
                        "/var/run/docker.sock:/var/run/docker.sock",
                        "-v",
                        &data_mount,
                    ],
                )
            })
            .collect();
        let mut inventory = String::from("[nexus_coordinators]\n");
        for (n, host) in coordinators.iter().enumerate() {
            inventory.push_str(&format!("{} nexus_node_id={}\n", host.name, n + 1));
        }
        inventory.push_str("\n[nexus_agents]\n");
        for host in &agents {
            inventory.push_str(&format!(
                "{0} nexus_host_id={0} nexus_agent_data_dir={1}\n",
                host.name,
                scratch.0.join(&host.name).display()
            ));
        }
        inventory.push_str(&format!(
            "\n[all:vars]\nansible_connection=community.docker.docker\n\
             ansible_python_interpreter=/usr/bin/python3\n\
             nexus_packages_dir={}\n\
             nexus_host_ttl=10.0\nnexus_agent_heartbeat_interval=1.0\n\
             nexus_agent_port_range=22700-22799\n",
            packages.display()
        ));
        let inventory_path = scratch.0.join("inventory.ini");
        std::fs::write(&inventory_path, inventory).unwrap();
        Fleet {
            _cleanups: cleanups,
            coordinators,
            agents,
            _network: network,
            _scratch: scratch,
            inventory: inventory_path,
            packages,
        }
    }

    /// `ansible-playbook site.yml` with `extra` vars; its output, which must say it succeeded.
    fn play(&self, extra: &[&str]) -> String {
        let mut command = Command::new("ansible-playbook");
        command
            .arg("-i")
            .arg(&self.inventory)
            .arg(deploy_dir().join("ansible/site.yml"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            // One exec per task instead of several (copy the module, run it, remove it).
            .env("ANSIBLE_PIPELINING", "True");
        for var in extra {
            command.args(["-e", var]);
        }
        let played = command.output().unwrap();
        let out = text(&played);
        assert!(played.status.success(), "ansible-playbook failed:\n{out}");
        out
    }

    /// The CLI on the first coordinator, as the role's admin, with JSON output.
    fn admin(&self, args: &[&str]) -> Value {
        let pki = "/var/lib/nexus/coordinator/pki";
        let mut all = vec![
            "nexus".to_string(),
            "--coordinator".into(),
            "127.0.0.1:7400".into(),
            "--ca".into(),
            format!("{pki}/ca.pem"),
            "--cert".into(),
            format!("{pki}/user-ansible.pem"),
            "--key".into(),
            format!("{pki}/user-ansible.key"),
            "-o".into(),
            "json".into(),
        ];
        all.extend(args.iter().map(ToString::to_string));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        serde_json::from_str(&self.coordinators[0].ok(&all)).unwrap()
    }
}

/// Whether a unit is active on each of some hosts, sampled every 100 ms inside each host by one
/// long-lived `docker exec` running a shell loop. (A `docker exec` of `systemctl is-active` per
/// host per sample, as this test did before, started a docker CLI, a runc exec and a systemctl
/// three times a round, a round every few hundred milliseconds for the whole upgrade.)
struct ActiveWatch {
    hosts: Vec<String>,
    loops: Vec<Child>,
    readers: Vec<JoinHandle<Vec<(Instant, bool)>>>,
}

/// The file whose presence ends a host's sampling loop.
const WATCH_STOP: &str = "/run/nexus-test-watch.stop";

impl ActiveWatch {
    fn start(hosts: &[&SystemdHost], unit: &str) -> ActiveWatch {
        let script = format!(
            "while [ ! -e {WATCH_STOP} ]; do \
               if systemctl is-active --quiet {unit}; then echo 1; else echo 0; fi; sleep 0.1; \
             done"
        );
        let mut loops = vec![];
        let mut readers = vec![];
        for host in hosts {
            let mut child = Command::new("docker")
                .args(["exec", &host.name, "sh", "-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            readers.push(std::thread::spawn(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .map(|line| (Instant::now(), line.trim() == "1"))
                    .collect()
            }));
            loops.push(child);
        }
        ActiveWatch {
            hosts: hosts.iter().map(|h| h.name.clone()).collect(),
            loops,
            readers,
        }
    }

    /// Ends the loops; the fewest hosts whose unit was active at once, over the whole watch
    /// (a host counts as active until its first sample).
    fn least_active(self) -> usize {
        for name in &self.hosts {
            let stopped = Command::new("docker")
                .args(["exec", name, "touch", WATCH_STOP])
                .status()
                .unwrap();
            assert!(stopped.success(), "the watch's stop in {name}");
        }
        let mut samples = vec![];
        let watched = self.hosts.iter().zip(self.loops).zip(self.readers);
        for (index, ((name, mut child), reader)) in watched.enumerate() {
            assert!(
                child.wait().unwrap().success(),
                "the watch's loop in {name}"
            );
            let taken = reader.join().unwrap();
            // Every host sampled throughout, or the watch proves nothing.
            assert!(taken.len() >= 10, "{name} sampled {} times", taken.len());
            samples.extend(taken.into_iter().map(|(at, up)| (at, index, up)));
        }
        samples.sort_by_key(|(at, _, _)| *at);
        let mut active: Vec<bool> = vec![true; self.hosts.len()];
        let mut least = active.len();
        for (_, index, up) in samples {
            active[index] = up;
            least = least.min(active.iter().filter(|a| **a).count());
        }
        least
    }
}

/// The play's recap: `changed=N` summed over the hosts.
fn changed(recap: &str) -> usize {
    recap
        .lines()
        .filter_map(|line| line.split("changed=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse::<usize>().ok())
        .sum()
}

#[test]
fn the_role_makes_a_fleet_changes_nothing_twice_and_upgrades_rolling() {
    let fleet = Fleet::start();
    build_packages(&fleet.packages, 1);

    // From fresh hosts to a fleet in one run.
    fleet.play(&["nexus_version=0.1.0-1"]);
    for host in fleet.coordinators.iter() {
        assert_eq!(host.property("nexus-coordinator", "ActiveState"), "active");
    }
    for host in fleet.agents.iter() {
        assert_eq!(host.property("nexus-agent", "ActiveState"), "active");
    }
    let status = fleet.admin(&["admin", "status"]);
    let members = status["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(members.len(), COORDINATORS, "{status}");
    assert!(members.iter().all(|m| m["healthy"] == true), "{status}");
    let hosts = fleet.admin(&["admin", "hosts"]);
    let ready: Vec<&Value> = hosts
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["status"] == "ready")
        .collect();
    assert_eq!(ready.len(), AGENTS, "{hosts}");

    // A workspace through the CLI, on one of the agents, running on this machine's engine.
    fleet.admin(&[
        "workspace",
        "create",
        "web",
        "--image",
        TEST_IMAGE,
        "--class",
        "small",
        "--",
        "sleep",
        "1000000",
    ]);
    let running = |fleet: &Fleet| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = fleet.admin(&["workspace", "list"]);
            if listed[0]["state"] == "running" {
                return listed[0]["host"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "{listed}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let host = running(&fleet);
    let containers = containers_of(&host);
    assert_eq!(containers.len(), 1, "{containers:?}");

    // A second run changes nothing.
    let again = fleet.play(&["nexus_version=0.1.0-1"]);
    assert_eq!(changed(&again), 0, "{again}");

    // A rolling upgrade to rebuilt packages: every daemon restarted on the new one, and at every
    // moment two members up.
    build_packages(&fleet.packages, 2);
    let started = |fleet: &Fleet| -> Vec<String> {
        let coordinators = fleet.coordinators.iter().map(|h| (h, "nexus-coordinator"));
        let agents = fleet.agents.iter().map(|h| (h, "nexus-agent"));
        coordinators
            .chain(agents)
            .map(|(host, unit)| host.property(unit, "ExecMainStartTimestampMonotonic"))
            .collect()
    };
    let before = started(&fleet);
    let coordinators: Vec<&SystemdHost> = fleet.coordinators.iter().collect();
    let watch = ActiveWatch::start(&coordinators, "nexus-coordinator");
    let upgrade = fleet.play(&["nexus_version=0.1.0-2"]);
    let least_up = watch.least_active();
    assert!(
        least_up >= 2,
        "a quorum throughout ({least_up} up at least):\n{upgrade}"
    );
    for host in fleet.coordinators.iter().chain(&fleet.agents) {
        let version = host.ok(&["dpkg-query", "-W", "-f=${Version}", "nexus"]);
        assert_eq!(version, "0.1.0-2", "{}", host.name);
    }
    let after = started(&fleet);
    for (was, is) in before.iter().zip(&after) {
        assert_ne!(
            was, is,
            "every daemon restarted on its new package:\n{upgrade}"
        );
    }
    assert_eq!(running(&fleet), host);
    assert_eq!(
        containers_of(&host),
        containers,
        "the workspace's container was kept"
    );
}
