//! The reconciler on the real Docker engine (`deploy/dev/prepare.sh` starts one and builds the
//! test image). Each test uses a host id of its own, so tests running at once never see each
//! other's containers, and removes what it made when it ends, even when it fails.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Agent, IMAGE, assignment, desired, observed, unique_host};
use nexus_agent::runtime::docker::{DockerRuntime, NetworkPool};
use nexus_agent::runtime::{ContainerStatus, CreateSpec, ErrorKind, Runtime};
use nexus_fixtures::dockerd::{PrivateEngine, Subnet};
use nexus_protocol::HostId;
use nexus_protocol::error::{ErrorCode, ErrorDetail};
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::ResourceClass;
use nexus_protocol::model::WorkspaceState;
use tokio::sync::{Notify, watch};

const SOCKET: &str = "/var/run/docker.sock";

fn docker(args: &[&str]) -> String {
    docker_at(None, args)
}

fn docker_at(socket: Option<&Path>, args: &[&str]) -> String {
    let mut command = Command::new("docker");
    if let Some(socket) = socket {
        command
            .arg("-H")
            .arg(format!("unix://{}", socket.display()));
    }
    let out = command.args(args).output().expect("the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes every container and network of `host` when dropped.
struct Cleanup {
    host: HostId,
    socket: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=nexus.host={}", self.host);
        let socket = self.socket.as_deref();
        let run = |args: &[&str]| {
            let mut command = Command::new("docker");
            if let Some(socket) = socket {
                command
                    .arg("-H")
                    .arg(format!("unix://{}", socket.display()));
            }
            command
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default()
        };
        for id in run(&["ps", "-aq", "--filter", &filter]).split_whitespace() {
            run(&["rm", "-f", id]);
        }
        for id in run(&["network", "ls", "-q", "--filter", &filter]).split_whitespace() {
            run(&["network", "rm", id]);
        }
    }
}

fn engine(test: &str) -> (HostId, Arc<DockerRuntime>, Cleanup) {
    let host = unique_host(test);
    let runtime =
        DockerRuntime::connect(host.clone(), SOCKET, vec![], Some(NetworkPool::DEFAULT), 0)
            .unwrap();
    let cleanup = Cleanup {
        host: host.clone(),
        socket: None,
    };
    (host, Arc::new(runtime), cleanup)
}

/// A host port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

async fn answers(port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn web(
    workspace: &str,
    generation: u64,
    run: DesiredRun,
    port: u16,
) -> nexus_protocol::message::Assignment {
    assignment(
        workspace,
        generation,
        run,
        &[(8080, port)],
        IMAGE,
        &["sh", "-c", "echo ready; exec httpd -f -p 8080"],
    )
}

/// Workspace `w`'s container of `generation`: the image's own command, no ports, no files.
fn plain_spec(host: &HostId, generation: u64) -> CreateSpec {
    CreateSpec {
        host: host.clone(),
        workspace: "w".parse().unwrap(),
        generation,
        owner: "ada".parse().unwrap(),
        image: IMAGE.into(),
        class: ResourceClass::Small,
        env: Default::default(),
        command: vec![],
        ports: vec![],
        files: None,
        mirror: None,
    }
}

/// Waits until `workspace` is reported in a state `done` accepts.
async fn until(
    reports: &watch::Receiver<Vec<ObservedWorkspace>>,
    workspace: &str,
    limit: Duration,
    done: impl Fn(&ObservedWorkspace) -> bool,
) -> ObservedWorkspace {
    let mut reports = reports.clone();
    let found = |reports: &watch::Receiver<Vec<ObservedWorkspace>>| {
        reports
            .borrow()
            .iter()
            .find(|o| o.name.as_str() == workspace)
            .cloned()
    };
    let waited = tokio::time::timeout(limit, async {
        loop {
            if let Some(observed) = found(&reports)
                && done(&observed)
            {
                return observed;
            }
            let _ = reports.changed().await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{workspace} never got there: {:?}", found(&reports)))
}

#[tokio::test]
async fn a_workspace_is_created_started_stopped_started_and_destroyed() {
    let (host, runtime, _cleanup) = engine("lifecycle");
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let port = free_port();

    agent
        .reconciler
        .set_desired(desired(1, vec![web("w", 1, DesiredRun::Running, port)]));
    let report = agent.settle().await;
    let w = observed(&report, "w");
    assert_eq!((w.state, &w.error), (WorkspaceState::Running, &None));
    assert_eq!(w.ports[0].host, port);
    assert!(
        answers(port, Duration::from_secs(5)).await,
        "the published port does not answer"
    );

    let containers = runtime.list().await.unwrap();
    assert_eq!(containers.len(), 1);
    let id = containers[0].id.clone();
    // Labels, init, limits and the network, as the engine has them.
    let inspect = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"nexus.workspace\"}} {{index .Config.Labels \"nexus.generation\"}} {{.HostConfig.Init}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}}",
        &id,
    ]);
    assert_eq!(
        inspect,
        format!("w 1 true {} 500000000 nexus.{host}.w", 1u64 << 30)
    );
    // The workspace's network has a /24 of the agent's pool, not one of Docker's few defaults.
    let subnet = docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        &format!("nexus.{host}.w"),
    ]);
    assert!(
        subnet.starts_with("10.213.") && subnet.ends_with(".0/24"),
        "{subnet}"
    );

    // A create retried after a lost answer finds the first container; a container that merely
    // took a workspace's name (no labels of ours) is refused, not adopted.
    let spec = plain_spec(&host, 1);
    assert_eq!(runtime.create(&spec).await.unwrap(), id);
    let squatter = format!("nexus.{host}.z.g1");
    docker(&["create", "--name", &squatter, IMAGE, "true"]);
    let taken = CreateSpec {
        workspace: "z".parse().unwrap(),
        ..spec.clone()
    };
    let refused = runtime.create(&taken).await.unwrap_err();
    docker(&["rm", "-f", &squatter]);
    docker(&["network", "rm", &format!("nexus.{host}.z")]);
    assert_eq!(refused.kind, ErrorKind::Conflict, "{refused}");

    let exec = runtime
        .exec(
            &id,
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 7".into(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n");
    assert_eq!(runtime.logs(&id, 10).await.unwrap(), ["ready"]);
    runtime.stats(&id).await.unwrap();
    let stats = runtime.stats(&id).await.unwrap();
    assert!(stats.memory_used_bytes > 0);
    assert_eq!(stats.memory_limit_bytes, 1 << 30);

    agent
        .reconciler
        .set_desired(desired(2, vec![web("w", 1, DesiredRun::Stopped, port)]));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Stopped);
    assert_eq!(
        runtime.list().await.unwrap()[0].status,
        ContainerStatus::Exited
    );
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());

    agent
        .reconciler
        .set_desired(desired(3, vec![web("w", 1, DesiredRun::Running, port)]));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Running);
    let containers = runtime.list().await.unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].id, id, "the same container is started again");
    assert!(answers(port, Duration::from_secs(5)).await);

    agent
        .reconciler
        .set_desired(desired(4, vec![web("w", 1, DesiredRun::Absent, port)]));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Gone);
    assert!(runtime.list().await.unwrap().is_empty());
    let filter = format!("label=nexus.host={host}");
    assert_eq!(docker(&["network", "ls", "-q", "--filter", &filter]), "");
}

/// The networks of `host` made ahead (`--ready-networks`), free or not.
fn ready_networks(host: &HostId) -> Vec<String> {
    let filter = format!("label=nexus.ready={host}");
    let listed = docker(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &filter,
    ]);
    let mut names: Vec<String> = listed.lines().map(ToString::to_string).collect();
    names.sort();
    names
}

/// Waits until `host` has `count` ready networks.
async fn until_ready(host: &HostId, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let names = ready_networks(host);
        if names.len() == count {
            return names;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{count} ready networks wanted: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ready_networks_are_taken_by_creates_kept_at_their_number_and_freed_by_destroys() {
    let host = unique_host("ready");
    let _cleanup = Cleanup {
        host: host.clone(),
        socket: None,
    };
    let runtime = Arc::new(
        DockerRuntime::connect(host.clone(), SOCKET, vec![], Some(NetworkPool::DEFAULT), 2)
            .unwrap(),
    );
    runtime.make_ready_networks();
    let made = until_ready(&host, 2).await;
    assert!(
        made.iter()
            .all(|n| n.starts_with(&format!("nexus-ready.{host}."))),
        "{made:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let port = free_port();
    agent
        .reconciler
        .set_desired(desired(1, vec![web("w", 1, DesiredRun::Running, port)]));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Running);
    assert!(
        answers(port, Duration::from_secs(5)).await,
        "the published port"
    );

    // The container is on one of the networks made ahead, and says which; none was made for it.
    let id = runtime.list().await.unwrap()[0].id.clone();
    let on = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NetworkMode}} {{index .Config.Labels \"nexus.network\"}}",
        &id,
    ]);
    let (mode, label) = on.split_once(' ').unwrap();
    assert!(made.contains(&mode.to_string()), "{on} not one of {made:?}");
    assert_eq!(mode, label);
    let filter = format!("name=nexus.{host}.w");
    assert_eq!(docker(&["network", "ls", "-q", "--filter", &filter]), "");
    // Two free again beside the one in use; an admin's listing names its workspace.
    until_ready(&host, 3).await;
    let listed = runtime.networks().await.unwrap();
    let used = listed.iter().find(|n| n.name == mode).unwrap();
    assert_eq!(
        used.workspace.as_ref().map(ToString::to_string).as_deref(),
        Some("w")
    );
    assert_eq!(
        listed.iter().filter(|n| n.workspace.is_none()).count(),
        2,
        "{listed:?}"
    );

    // Destroyed, its network is free again: the engine keeps two of the three, making none.
    let before = until_ready(&host, 3).await;
    agent
        .reconciler
        .set_desired(desired(2, vec![web("w", 1, DesiredRun::Absent, port)]));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Gone);
    let after = until_ready(&host, 2).await;
    assert!(
        after.iter().all(|n| before.contains(n)),
        "{before:?} then {after:?}"
    );
    assert!(runtime.list().await.unwrap().is_empty());

    // One removed behind the agent's back is passed over, not handed to a container.
    docker(&["network", "rm", &after[0]]);
    docker(&["network", "rm", &after[1]]);
    let spec = plain_spec(&host, 3);
    let id = runtime.create(&spec).await.unwrap();
    let mode = docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", &id]);
    assert!(!after.contains(&mode), "{mode}: a network that was removed");
    runtime.remove(&id).await.unwrap();
    runtime
        .remove_network(&host, &spec.workspace)
        .await
        .unwrap();
    until_ready(&host, 2).await;

    // The agent stops: the free ones go with it.
    runtime.remove_free_ready_networks().await;
    assert_eq!(ready_networks(&host), Vec::<String>::new());
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_containers_without_duplicates() {
    let (host, runtime, _cleanup) = engine("adopt");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = Agent::new(runtime.clone(), &host, dir.path(), 20);
    first
        .reconciler
        .set_desired(desired(1, vec![web("w", 1, DesiredRun::Running, port)]));
    first.settle().await;
    let before = runtime.list().await.unwrap();
    drop(first);

    // A new agent process, as after a crash: only its data dir and the engine remember.
    let fresh = Arc::new(
        DockerRuntime::connect(host.clone(), SOCKET, vec![], Some(NetworkPool::DEFAULT), 0)
            .unwrap(),
    );
    let mut second = Agent::new(fresh.clone(), &host, dir.path(), 20);
    let report = second.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Running);
    assert_eq!(fresh.list().await.unwrap(), before);
    let filter = format!("label=nexus.host={host}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &filter]).lines().count(),
        1
    );
}

#[tokio::test]
async fn a_port_held_by_a_foreign_listener_is_reported_with_its_number() {
    let (host, runtime, _cleanup) = engine("port");
    let dir = tempfile::tempdir().unwrap();
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent
        .reconciler
        .set_desired(desired(1, vec![web("w", 1, DesiredRun::Running, port)]));
    let report = agent.settle().await;
    let w = observed(&report, "w");
    assert_eq!(w.state, WorkspaceState::Failed);
    let error = w.error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::PortConflict);
    assert_eq!(error.detail, Some(ErrorDetail::PortConflict { port }));
    assert!(runtime.list().await.unwrap().is_empty(), "nothing was made");
    // Not retried on the same port: the coordinator hands out another (a new generation).
    assert!(!agent.reconciler.pass().await);
    let other = free_port();
    agent
        .reconciler
        .set_desired(desired(2, vec![web("w", 2, DesiredRun::Running, other)]));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Running);
    drop(held);
}

/// The desired-state feed, the reports and the tasks of an agent's loop.
type Running = (
    watch::Sender<Option<nexus_protocol::message::DesiredState>>,
    watch::Receiver<Vec<ObservedWorkspace>>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// Runs an agent's reconcile loop and the engine's event stream in tasks, as the binary does.
fn run_loop(agent: Agent<DockerRuntime>, runtime: &Arc<DockerRuntime>) -> Running {
    // The agent's log, shown with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("nexus_agent=debug")
        .try_init();
    let (desired_tx, desired_rx) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let events = nexus_agent::runtime::spawn_events(runtime, &wake);
    let reports = agent.reports.clone();
    let reconciling = tokio::spawn(
        agent
            .reconciler
            .run(desired_rx, wake, std::future::pending()),
    );
    (desired_tx, reports, vec![events, reconciling])
}

#[tokio::test]
async fn a_container_that_exits_on_its_own_is_reported_with_its_code_and_last_lines() {
    let (host, runtime, _cleanup) = engine("exit");
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let (desired_tx, reports, tasks) = run_loop(agent, &runtime);
    desired_tx.send_replace(Some(desired(
        1,
        vec![assignment(
            "w",
            1,
            DesiredRun::Running,
            &[],
            IMAGE,
            &["sh", "-c", "echo about to fail; sleep 1; exit 3"],
        )],
    )));
    // Well inside the 30 s resync: the engine's "die" event wakes the reconciler.
    let w = until(&reports, "w", Duration::from_secs(15), |o| {
        o.state == WorkspaceState::Failed
    })
    .await;
    let error = w.error.unwrap();
    assert_eq!(error.code, ErrorCode::ContainerError);
    match error.detail {
        Some(ErrorDetail::ContainerExited {
            exit_code,
            oom_killed,
            last_lines,
        }) => {
            assert_eq!(exit_code, 3);
            assert!(!oom_killed);
            assert_eq!(last_lines, ["about to fail"]);
        }
        other => panic!("no exit details: {other:?}"),
    }
    // Left as it is, for the user to look at and repair.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let containers = runtime.list().await.unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].status, ContainerStatus::Exited);
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
}

#[tokio::test]
async fn two_agents_on_one_engine_never_touch_each_other() {
    let (host_a, runtime_a, _cleanup_a) = engine("apart-a");
    let (host_b, runtime_b, _cleanup_b) = engine("apart-b");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Agent::new(runtime_a.clone(), &host_a, dir_a.path(), 20);
    let mut b = Agent::new(runtime_b.clone(), &host_b, dir_b.path(), 20);
    let sleeper = |run| assignment("w", 1, run, &[], IMAGE, &["sleep", "600"]);
    a.reconciler
        .set_desired(desired(1, vec![sleeper(DesiredRun::Running)]));
    b.reconciler
        .set_desired(desired(1, vec![sleeper(DesiredRun::Running)]));
    a.settle().await;
    b.settle().await;
    let (list_a, list_b) = (
        runtime_a.list().await.unwrap(),
        runtime_b.list().await.unwrap(),
    );
    assert_eq!((list_a.len(), list_b.len()), (1, 1));
    assert_ne!(list_a[0].id, list_b[0].id);
    // B destroys its "w", then is told nothing at all: A's "w" runs on, untouched.
    b.reconciler
        .set_desired(desired(2, vec![sleeper(DesiredRun::Absent)]));
    assert_eq!(observed(&b.settle().await, "w").state, WorkspaceState::Gone);
    b.reconciler.set_desired(desired(3, vec![]));
    b.settle().await;
    assert_eq!(runtime_a.list().await.unwrap(), list_a);
    assert!(runtime_b.list().await.unwrap().is_empty());
    assert_eq!(
        observed(&a.settle().await, "w").state,
        WorkspaceState::Running
    );
}

#[tokio::test]
async fn an_engine_that_stops_is_reported_and_its_return_recovers_the_workspaces() {
    let mut engine = PrivateEngine::start(
        Subnet {
            block: 254,
            slot: 0,
        },
        IMAGE,
        None,
    );
    let socket = engine.socket();

    let host = unique_host("outage");
    let _cleanup = Cleanup {
        host: host.clone(),
        socket: Some(socket.clone()),
    };
    let runtime = Arc::new(
        DockerRuntime::connect(
            host.clone(),
            socket.to_str().unwrap(),
            vec![],
            Some(NetworkPool::DEFAULT),
            0,
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let (desired_tx, reports, tasks) = run_loop(agent, &runtime);
    let port = free_port();
    desired_tx.send_replace(Some(desired(
        1,
        vec![web("w", 1, DesiredRun::Running, port)],
    )));
    until(&reports, "w", Duration::from_secs(20), |o| {
        o.state == WorkspaceState::Running && o.error.is_none()
    })
    .await;
    let before = runtime.list().await.unwrap();

    engine.stop();
    let w = until(&reports, "w", Duration::from_secs(20), |o| {
        o.error.is_some()
    })
    .await;
    assert_eq!(w.error.unwrap().code, ErrorCode::BackendUnavailable);

    engine.restart();
    // Retried every 5 s: back within a couple of retries, with the same container started again.
    until(&reports, "w", Duration::from_secs(30), |o| {
        o.state == WorkspaceState::Running && o.error.is_none()
    })
    .await;
    assert!(answers(port, Duration::from_secs(5)).await);
    let after = runtime.list().await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(after[0].status, ContainerStatus::Running);
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    drop(_cleanup);
}

/// Debian's `docker-registry`, serving on a loopback port from a temporary directory.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (deploy/dev/prepare.sh installs it)");
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_image_missing_here_is_pulled_from_the_registry() {
    let registry = Registry::start();
    let (host, runtime, _cleanup) = engine("pull");
    let image = format!(
        "127.0.0.1:{}/nexus-test/pulled-{}:v1",
        registry.port,
        std::process::id()
    );
    docker(&["tag", IMAGE, &image]);
    docker(&["push", &image]);
    docker(&["rmi", &image]);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler.set_desired(desired(
        1,
        vec![assignment(
            "w",
            1,
            DesiredRun::Running,
            &[],
            &image,
            &["sleep", "600"],
        )],
    ));
    let report = agent.settle().await;
    let w = observed(&report, "w");
    assert_eq!((w.state, &w.error), (WorkspaceState::Running, &None));
    assert!(!docker(&["image", "inspect", "-f", "{{.Id}}", &image]).is_empty());
    // An image no registry has is a clear start failure, not a hang.
    let missing = format!("127.0.0.1:{}/nexus-test/absent:v1", registry.port);
    agent.reconciler.set_desired(desired(
        2,
        vec![
            assignment("w", 1, DesiredRun::Running, &[], &image, &["sleep", "600"]),
            assignment(
                "x",
                1,
                DesiredRun::Running,
                &[],
                &missing,
                &["sleep", "600"],
            ),
        ],
    ));
    agent.reconciler.pass().await;
    let report = agent.report();
    let x = observed(&report, "x");
    let error = x.error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::WorkspaceStartFailed);
    assert!(error.message.contains("absent"), "{}", error.message);
    drop(_cleanup);
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

/// The workspace networks of the full-disk test: a pool of their own, whose bridges go when the
/// test ends ([`BridgesOn`]).
const FULL_DISK_POOL: &str = "10.246.0.0/16";

/// Deletes the kernel's bridges on the subnets starting with its prefix when dropped. A network
/// the engine began on a full disk but could not record keeps its bridge (and the route to its
/// /24) after the engine forgot it, so no prune of the engine's removes it.
struct BridgesOn(&'static str);

impl Drop for BridgesOn {
    fn drop(&mut self) {
        let Ok(routes) = Command::new("ip").args(["-o", "route"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&routes.stdout).lines() {
            let mut words = line.split_whitespace();
            if !words.next().is_some_and(|to| to.starts_with(self.0)) {
                continue;
            }
            if let Some(device) = words.skip_while(|word| *word != "dev").nth(1) {
                let _ = Command::new("ip").args(["link", "del", device]).output();
            }
        }
    }
}

#[tokio::test]
async fn a_full_disk_is_reported_as_disk_full() {
    // Dropped after the engine.
    let _bridges = BridgesOn("10.246.");
    // The engine's data on a small tmpfs, filled up once the image is in.
    let engine = PrivateEngine::start(
        Subnet {
            block: 254,
            slot: 1,
        },
        IMAGE,
        Some("48m"),
    );
    let socket = engine.socket();
    let host = unique_host("full");
    let _cleanup = Cleanup {
        host: host.clone(),
        socket: Some(socket.clone()),
    };
    let fill = engine.data_root().join("fill");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", fill.display()))
        .output()
        .unwrap();
    let runtime = Arc::new(
        DockerRuntime::connect(
            host.clone(),
            socket.to_str().unwrap(),
            vec![],
            Some(FULL_DISK_POOL.parse().unwrap()),
            0,
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler.set_desired(desired(
        1,
        vec![assignment(
            "w",
            1,
            DesiredRun::Running,
            &[],
            IMAGE,
            &["sleep", "600"],
        )],
    ));
    let report = agent.settle().await;
    let w = observed(&report, "w");
    let error = w.error.as_ref().expect("an error");
    assert_eq!(error.code, ErrorCode::DiskFull, "{error:?}");
    assert_eq!(w.state, WorkspaceState::Failed, "DISK_FULL is not retried");
    // Room again: a new generation from the coordinator starts it.
    std::fs::remove_file(&fill).unwrap();
    agent.reconciler.set_desired(desired(
        2,
        vec![assignment(
            "w",
            2,
            DesiredRun::Running,
            &[],
            IMAGE,
            &["sleep", "600"],
        )],
    ));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Running);
}

#[tokio::test]
async fn logs_are_followed_as_they_are_written() {
    let (host, runtime, _cleanup) = engine("follow");
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler.set_desired(desired(
        1,
        vec![assignment(
            "w",
            1,
            DesiredRun::Running,
            &[],
            IMAGE,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 8 ]; do echo line $i; i=$((i+1)); sleep 0.2; done",
            ],
        )],
    ));
    agent.settle().await;
    let id = runtime.list().await.unwrap()[0].id.clone();
    let (sender, mut lines) = tokio::sync::mpsc::channel(16);
    let follow = tokio::spawn({
        let runtime = runtime.clone();
        let id = id.clone();
        async move { runtime.follow_logs(&id, 1, sender).await }
    });
    let mut seen = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(10), lines.recv()).await {
        if seen.is_empty() {
            // Lines arrive as they are written, not when the container ends.
            assert_eq!(
                runtime.list().await.unwrap()[0].status,
                ContainerStatus::Running,
                "the first line came only after the container stopped"
            );
        }
        seen.push(line);
    }
    // The tail (one line written before the call) and then the rest as the container wrote it,
    // until it stopped, which ends the follow.
    follow.await.unwrap().unwrap();
    assert_eq!(seen.last().map(String::as_str), Some("line 7"), "{seen:?}");
    assert!(seen.len() >= 6 && seen.len() <= 8, "{seen:?}");
    let numbers: Vec<u32> = seen
        .iter()
        .map(|l| l.trim_start_matches("line ").parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {seen:?}"
    );
}

#[tokio::test]
async fn health_finds_a_port_whose_server_stopped_inside_a_running_container() {
    let (host, runtime, _cleanup) = engine("health");
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let port = free_port();
    // httpd goes to the background; the container lives on in `sleep` after it is killed.
    let served = assignment(
        "w",
        1,
        DesiredRun::Running,
        &[(8080, port)],
        IMAGE,
        &["sh", "-c", "httpd -p 8080; echo ready; exec sleep 600"],
    );
    agent
        .reconciler
        .set_desired(desired(1, vec![served.clone()]));
    agent.settle().await;
    assert!(answers(port, Duration::from_secs(5)).await);
    let files = dir.path().join("workspaces");
    std::fs::create_dir_all(files.join("w")).unwrap();
    std::fs::write(files.join("w").join("a.txt"), [7u8; 1000]).unwrap();

    let health = nexus_agent::health::gather(&*runtime, &served, Some(&files), vec![])
        .await
        .unwrap();
    let container = health.container.as_ref().unwrap();
    assert!(container.running, "{health:?}");
    assert_eq!(
        (container.status.as_str(), container.exit_code),
        ("running", None)
    );
    assert_eq!(container.healthcheck, None, "the test image has none");
    assert_eq!(health.ports.len(), 1);
    assert!(health.ports[0].accepting, "{health:?}");
    assert_eq!(health.files_bytes, Some(1000));

    // The server dies inside; the engine's proxy still listens on the host port.
    let id = runtime.list().await.unwrap()[0].id.clone();
    let killed = runtime
        .exec(&id, &["killall".into(), "httpd".into()])
        .await
        .unwrap();
    assert_eq!(killed.exit_code, 0, "{killed:?}");
    // killall only signals: the server goes a moment later.
    let mut health = None;
    for _ in 0..100 {
        let now = nexus_agent::health::gather(&*runtime, &served, Some(&files), vec![])
            .await
            .unwrap();
        if !now.ports[0].accepting {
            health = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = health.expect("the port to be found not accepting");
    assert!(health.container.as_ref().unwrap().running);
    let probe = &health.ports[0];
    assert!(!probe.accepting, "{health:?}");
    assert_eq!((probe.container, probe.host), (8080, port));
    assert!(probe.error.is_some());

    // What the engine tells of the container: its events, and the engine itself.
    let events = runtime.events(&"w".parse().unwrap(), None).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"create") && actions.contains(&"start"),
        "{actions:?}"
    );
    // An exec's command line never shows.
    assert!(
        actions.iter().all(|a| !a.contains("killall")),
        "{actions:?}"
    );
    let engine = runtime.engine().await.unwrap();
    assert_eq!(engine.runtime, "docker");
    assert!(engine.version.is_some());
    assert_eq!(engine.containers.len(), 1);
    assert_eq!(engine.containers[0].image, IMAGE);
    assert_eq!(engine.containers[0].state, "running");
}
