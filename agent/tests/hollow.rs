//! The reconciler on the hollow runtime: the same path as Docker, with simulated containers, so
//! concurrency, retries and restarts can be checked quickly (with tokio's clock paused where a
//! test waits out backoffs).

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Agent, assignment, desired, name, observed, unique_host};
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_agent::runtime::{
    Container, CreateSpec, ErrorKind, ExecOutput, ExitDetails, Runtime, RuntimeError,
};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::ContainerStats;
use nexus_protocol::model::WorkspaceState;
use tokio::sync::{Notify, watch};

fn hollow(test: &str, config: HollowConfig) -> (Arc<HollowRuntime>, nexus_protocol::HostId) {
    let host = unique_host(test);
    (Arc::new(HollowRuntime::new(host.clone(), config)), host)
}

fn state_of(
    reports: &watch::Receiver<Vec<ObservedWorkspace>>,
) -> Option<(WorkspaceState, Option<WireError>)> {
    reports
        .borrow()
        .iter()
        .find(|o| o.name == name("w"))
        .map(|o| (o.state, o.error.clone()))
}

/// Waits until workspace `w` is reported `wanted`; answers its error.
async fn until(
    reports: &watch::Receiver<Vec<ObservedWorkspace>>,
    wanted: WorkspaceState,
) -> Option<WireError> {
    let mut reports = reports.clone();
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some((state, error)) = state_of(&reports)
                && state == wanted
            {
                return error;
            }
            reports.changed().await.unwrap();
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("never {wanted:?}: {:?}", state_of(&reports)))
}

fn running(workspace: &str) -> nexus_protocol::message::Assignment {
    assignment(workspace, 1, DesiredRun::Running, &[], "img", &[])
}

#[tokio::test]
async fn no_more_than_the_configured_operations_run_at_once() {
    let config = HollowConfig {
        start_latency: Duration::from_millis(20),
        ..HollowConfig::default()
    };
    let (runtime, host) = hollow("ops", config);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 7);
    let all = (0..60).map(|i| running(&format!("w{i}"))).collect();
    agent.reconciler.set_desired(desired(1, all));
    let report = agent.settle().await;
    assert_eq!(report.len(), 60);
    assert!(
        report
            .iter()
            .all(|o| o.state == WorkspaceState::Running && o.error.is_none())
    );
    let peak = runtime.peak_concurrency();
    assert!(peak <= 7, "{peak} operations ran at once, at most 7 may");
    assert!(peak > 1, "the operations ran one at a time");
    assert_eq!(runtime.list().await.unwrap().len(), 60);
}

#[tokio::test(start_paused = true)]
async fn a_start_that_keeps_failing_is_retried_three_times_then_failed() {
    let config = HollowConfig {
        failure_rate: 1.0,
        ..HollowConfig::default()
    };
    let (runtime, host) = hollow("retry", config);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let mut reports = agent.reports.clone();
    let (desired_tx, desired_rx) = watch::channel(None);
    let started = tokio::time::Instant::now();
    let loop_task = tokio::spawn(agent.reconciler.run(
        desired_rx,
        Arc::new(Notify::new()),
        std::future::pending(),
    ));
    desired_tx.send_replace(Some(desired(1, vec![running("w")])));
    let mut seen_retrying = false;
    loop {
        reports.changed().await.unwrap();
        let report = reports.borrow_and_update().clone();
        let w = observed(&report, "w");
        let error = w.error.as_ref().expect("a failing start carries its error");
        assert_eq!(error.code, ErrorCode::WorkspaceStartFailed);
        if w.state == WorkspaceState::Starting {
            seen_retrying = true;
        }
        if w.state == WorkspaceState::Failed {
            break;
        }
    }
    assert!(seen_retrying, "reported failed without retrying");
    // Three retries, 1 s, 2 s and 4 s apart (plus up to a fifth of jitter).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    loop_task.abort();
}

#[tokio::test]
async fn a_crash_is_reported_with_its_exit_code_and_not_restarted() {
    let (runtime, host) = hollow("crash", HollowConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let reports = agent.reports.clone();
    let (desired_tx, desired_rx) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let events = nexus_agent::runtime::spawn_events(&runtime, &wake);
    let loop_task = tokio::spawn(
        agent
            .reconciler
            .run(desired_rx, wake, std::future::pending()),
    );
    desired_tx.send_replace(Some(desired(1, vec![running("w")])));
    until(&reports, WorkspaceState::Running).await;
    assert!(runtime.crash(&name("w"), 3));
    // The runtime's event wakes the reconciler: no waiting for the 30 s resync.
    let error = until(&reports, WorkspaceState::Failed)
        .await
        .expect("the crash's error");
    assert_eq!(error.code, ErrorCode::ContainerError);
    match error.detail {
        Some(ErrorDetail::ContainerExited { exit_code, .. }) => assert_eq!(exit_code, 3),
        other => panic!("no exit details: {other:?}"),
    }
    // Not restarted: a crash is the user's to repair.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&reports).unwrap().0, WorkspaceState::Failed);
    // A stop and a start from the coordinator start the same container again.
    desired_tx.send_replace(Some(desired(
        2,
        vec![assignment("w", 1, DesiredRun::Stopped, &[], "img", &[])],
    )));
    assert_eq!(until(&reports, WorkspaceState::Stopped).await, None);
    desired_tx.send_replace(Some(desired(3, vec![running("w")])));
    assert_eq!(until(&reports, WorkspaceState::Running).await, None);
    assert_eq!(runtime.list().await.unwrap().len(), 1);
    loop_task.abort();
    events.abort();
}

#[tokio::test]
async fn a_restarted_agent_carries_on_from_its_saved_state_without_duplicates() {
    let (runtime, host) = hollow("restart", HollowConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let mut first = Agent::new(runtime.clone(), &host, dir.path(), 20);
    first.reconciler.set_desired(desired(
        4,
        vec![
            running("a"),
            assignment("b", 2, DesiredRun::Stopped, &[], "img", &[]),
        ],
    ));
    first.settle().await;
    let before = runtime.list().await.unwrap();
    assert_eq!(before.len(), 1, "b is stopped and was never made");
    drop(first);
    // No coordinator answers: the saved desired state is all the new agent has.
    let mut second = Agent::new(runtime.clone(), &host, dir.path(), 20);
    assert_eq!(second.reconciler.current_desired().unwrap().version, 4);
    let report = second.settle().await;
    assert_eq!(observed(&report, "a").state, WorkspaceState::Running);
    assert_eq!(observed(&report, "b").state, WorkspaceState::Stopped);
    assert_eq!(
        runtime.list().await.unwrap(),
        before,
        "adopted, not made again"
    );
}

#[tokio::test]
async fn without_a_desired_state_nothing_is_touched() {
    let (runtime, host) = hollow("nothing", HollowConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let mut first = Agent::new(runtime.clone(), &host, dir.path(), 20);
    first.reconciler.set_desired(desired(1, vec![running("a")]));
    first.settle().await;
    // The saved state is damaged: the next agent knows nothing, and must not act on nothing.
    std::fs::write(dir.path().join("agent-state.json"), b"garbage").unwrap();
    let mut second = Agent::new(runtime.clone(), &host, dir.path(), 20);
    assert!(second.reconciler.current_desired().is_none());
    assert!(second.settle().await.is_empty());
    let containers = runtime.list().await.unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(
        containers[0].status,
        nexus_agent::runtime::ContainerStatus::Running
    );
}

#[tokio::test]
async fn a_new_generation_replaces_the_container_and_absent_removes_it() {
    let (runtime, host) = hollow("generation", HollowConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler.set_desired(desired(1, vec![running("w")]));
    agent.settle().await;
    let first = runtime.list().await.unwrap();
    agent.reconciler.set_desired(desired(
        2,
        vec![assignment("w", 2, DesiredRun::Running, &[], "img", &[])],
    ));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").generation, 2);
    let second = runtime.list().await.unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].id, first[0].id);
    assert_eq!(second[0].generation, 2);
    agent.reconciler.set_desired(desired(
        3,
        vec![assignment("w", 2, DesiredRun::Absent, &[], "img", &[])],
    ));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Gone);
    assert!(runtime.list().await.unwrap().is_empty());
}

/// The hollow runtime, except that every start takes effect and then answers with an error (as
/// when an engine's answer is lost), and removes fail while `fail_removes` is set.
struct LostAnswers(HollowRuntime, std::sync::atomic::AtomicBool);

impl Runtime for LostAnswers {
    fn name(&self) -> &'static str {
        "lost-answers"
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.0.ping().await
    }
    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        self.0.list().await
    }
    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        self.0.create(spec).await
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.0.start(id).await?;
        Err(RuntimeError::new(ErrorKind::Failed, "the answer was lost"))
    }
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.0.stop(id, grace).await
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RuntimeError::new(
                ErrorKind::Failed,
                "device or resource busy",
            ));
        }
        self.0.remove(id).await
    }
    async fn remove_network(
        &self,
        host: &nexus_protocol::HostId,
        workspace: &nexus_protocol::WorkspaceName,
    ) -> Result<(), RuntimeError> {
        self.0.remove_network(host, workspace).await
    }
    async fn networks(&self) -> Result<Vec<nexus_agent::runtime::NetworkInfo>, RuntimeError> {
        self.0.networks().await
    }
    async fn exit_details(&self, id: &str) -> Result<ExitDetails, RuntimeError> {
        self.0.exit_details(id).await
    }
    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        self.0.logs(id, tail).await
    }
    async fn follow_logs(
        &self,
        id: &str,
        tail: usize,
        lines: tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), RuntimeError> {
        self.0.follow_logs(id, tail, lines).await
    }
    async fn exec(&self, id: &str, command: &[String]) -> Result<ExecOutput, RuntimeError> {
        self.0.exec(id, command).await
    }
    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        self.0.stats(id).await
    }
    async fn watch_events(&self, wake: Arc<Notify>) {
        self.0.watch_events(wake).await;
    }
}

#[tokio::test]
async fn a_step_that_took_effect_despite_its_error_is_reported_as_done() {
    let host = unique_host("lost");
    let runtime = Arc::new(LostAnswers(
        HollowRuntime::new(host.clone(), HollowConfig::default()),
        std::sync::atomic::AtomicBool::new(false),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler.set_desired(desired(1, vec![running("w")]));
    // The start "fails", the next pass finds the container running: nothing is left to do, the
    // failure is forgotten (no retry timer left to spin on), and the report says running.
    let report = agent.settle().await;
    let w = observed(&report, "w");
    assert_eq!((w.state, &w.error), (WorkspaceState::Running, &None));
    assert!(!agent.reconciler.pass().await);
}

#[tokio::test]
async fn an_older_desired_state_is_ignored() {
    let (runtime, host) = hollow("older", HollowConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler.set_desired(desired(
        5,
        vec![assignment("w", 1, DesiredRun::Absent, &[], "img", &[])],
    ));
    agent.settle().await;
    // A new leader a few entries behind offers version 4, where w still runs: not taken.
    agent.reconciler.set_desired(desired(4, vec![running("w")]));
    assert_eq!(agent.reconciler.current_desired().unwrap().version, 5);
    agent.settle().await;
    assert!(runtime.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn after_a_reboot_what_was_running_starts_again_but_a_crash_stays_failed() {
    for rebooted in [true, false] {
        let (runtime, host) = hollow(
            if rebooted { "reboot" } else { "no-reboot" },
            HollowConfig::default(),
        );
        let dir = tempfile::tempdir().unwrap();
        let mut first = Agent::new(runtime.clone(), &host, dir.path(), 20);
        first.reconciler.set_desired(desired(1, vec![running("w")]));
        assert_eq!(
            observed(&first.settle().await, "w").state,
            WorkspaceState::Running
        );
        drop(first);
        // The container stops while no agent runs: a reboot, or a crash.
        assert!(runtime.crash(&name("w"), 143));
        let cache = nexus_agent::cache::Cache::new(dir.path());
        let mut saved = cache.load();
        assert!(saved.running.contains(&(name("w"), 1)), "{saved:?}");
        assert!(saved.boot_id.is_some());
        if rebooted {
            // The agent last listed under another boot.
            saved.boot_id = Some("an-earlier-boot".into());
            cache.save(saved.view()).unwrap();
        }
        let mut second = Agent::new(runtime.clone(), &host, dir.path(), 20);
        let w = observed(&second.settle().await, "w").clone();
        if rebooted {
            assert_eq!((w.state, w.error), (WorkspaceState::Running, None));
        } else {
            assert_eq!(w.state, WorkspaceState::Failed);
            assert_eq!(w.error.unwrap().code, ErrorCode::ContainerError);
        }
    }
}

#[tokio::test]
async fn a_start_whose_answer_was_lost_leaves_no_licence_to_restart_a_later_crash() {
    let host = unique_host("licence");
    let runtime = Arc::new(LostAnswers(
        HollowRuntime::new(host.clone(), HollowConfig::default()),
        std::sync::atomic::AtomicBool::new(false),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    let stopped = || assignment("w", 1, DesiredRun::Stopped, &[], "img", &[]);
    agent.reconciler.set_desired(desired(1, vec![running("w")]));
    agent.settle().await;
    // Stopped on purpose, then started again (the start's answer is lost, the start happens).
    agent.reconciler.set_desired(desired(2, vec![stopped()]));
    agent.settle().await;
    agent.reconciler.set_desired(desired(3, vec![running("w")]));
    assert_eq!(
        observed(&agent.settle().await, "w").state,
        WorkspaceState::Running
    );
    // Later it crashes: that is reported, not restarted.
    assert!(runtime.0.crash(&name("w"), 1));
    let w = observed(&agent.settle().await, "w").clone();
    assert_eq!(w.state, WorkspaceState::Failed);
    assert_eq!(w.error.unwrap().code, ErrorCode::ContainerError);
}

#[tokio::test]
async fn a_destroy_that_keeps_failing_is_never_reported_destroying() {
    let host = unique_host("stuck");
    let runtime = Arc::new(LostAnswers(
        HollowRuntime::new(host.clone(), HollowConfig::default()),
        std::sync::atomic::AtomicBool::new(true),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler.set_desired(desired(
        1,
        vec![
            assignment("w", 1, DesiredRun::Stopped, &[], "img", &[]),
            assignment("x", 1, DesiredRun::Stopped, &[], "img", &[]),
        ],
    ));
    agent.settle().await;
    // Make the container, so that there is something to fail to remove.
    agent.reconciler.set_desired(desired(
        2,
        vec![
            running("w"),
            assignment("x", 1, DesiredRun::Stopped, &[], "img", &[]),
        ],
    ));
    agent.settle().await;
    agent.reconciler.set_desired(desired(
        3,
        vec![
            assignment("w", 1, DesiredRun::Absent, &[], "img", &[]),
            assignment("x", 1, DesiredRun::Stopped, &[], "img", &[]),
        ],
    ));
    agent.reconciler.pass().await;
    let report = agent.report();
    // The coordinator refuses a report naming a state only it sets; the others still go out.
    assert!(
        report.iter().all(|o| o.state != WorkspaceState::Destroying),
        "{report:?}"
    );
    assert_eq!(observed(&report, "x").state, WorkspaceState::Stopped);
}

/// The reconciler counts the operations it runs, by outcome, and the containers by state.
#[tokio::test]
async fn the_reconciler_counts_its_operations_and_the_containers() {
    use nexus_agent::metrics::Metrics;
    use nexus_telemetry::Registry;
    use nexus_telemetry::metrics::Format;

    let (runtime, host) = hollow(
        "metrics",
        HollowConfig {
            failure_rate: 0.0,
            ..HollowConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::new();
    let metrics = Metrics::register(&mut registry);
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent.reconciler = agent
        .reconciler
        .monitored(metrics, Arc::new(nexus_agent::probes::Vitals::default()));
    agent
        .reconciler
        .set_desired(desired(1, vec![running("w"), running("v")]));
    agent.settle().await;
    agent.reconciler.set_desired(desired(
        2,
        vec![
            running("w"),
            assignment("v", 1, DesiredRun::Stopped, &[], "img", &[]),
        ],
    ));
    agent.settle().await;
    let text = registry.encode(Format::Classic);
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    has(r#"nexus_agent_operations_total{op="create",outcome="ok"} 2"#);
    has(r#"nexus_agent_operations_total{op="start",outcome="ok"} 2"#);
    has(r#"nexus_agent_operations_total{op="stop",outcome="ok"} 1"#);
    has(r#"nexus_agent_operation_duration_seconds_count{op="start"} 2"#);
    has("nexus_agent_operations_in_flight 0.0");
    has(r#"nexus_agent_containers{state="running"} 1.0"#);
    has(r#"nexus_agent_containers{state="exited"} 1.0"#);
    has(r#"nexus_agent_containers{state="created"} 0.0"#);
    has("nexus_agent_engine_up 1.0");
    // The hollow runtime has no images to pull, and nothing failed.
    assert!(!text.contains(r#"op="pull""#), "{text}");
    // Every engine-error series is there from the start, at zero.
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("nexus_agent_engine_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 4, "{text}");
    assert!(errors.iter().all(|line| line.ends_with(" 0")), "{text}");
}

/// A failed operation is counted as such, with the engine's error under its code.
#[tokio::test]
async fn a_failed_operation_is_counted_with_its_error_code() {
    use nexus_agent::metrics::Metrics;
    use nexus_telemetry::Registry;
    use nexus_telemetry::metrics::Format;

    let (runtime, host) = hollow(
        "metrics-failed",
        HollowConfig {
            failure_rate: 1.0,
            ..HollowConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::new();
    let metrics = Metrics::register(&mut registry);
    let mut agent = Agent::new(runtime, &host, dir.path(), 20);
    agent.reconciler = agent
        .reconciler
        .monitored(metrics, Arc::new(nexus_agent::probes::Vitals::default()));
    agent.reconciler.set_desired(desired(1, vec![running("w")]));
    agent.settle().await;
    let text = registry.encode(Format::Classic);
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    has(r#"nexus_agent_operations_total{op="create",outcome="failed"} 1"#);
    has(r#"nexus_agent_engine_errors_total{code="WORKSPACE_START_FAILED"} 1"#);
}

#[tokio::test]
async fn traffic_made_up_on_a_hollow_workspace_counts_as_port_traffic() {
    use nexus_agent::activity::{TRAFFIC_THRESHOLD_BYTES, Traffic};
    use nexus_protocol::clock;

    let (runtime, host) = hollow("traffic", HollowConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 20);
    agent
        .reconciler
        .set_desired(desired(1, vec![running("w"), running("quiet")]));
    agent.settle().await;
    let mut traffic = Traffic::default();
    let sample = || nexus_agent::sampler::containers(runtime.as_ref());
    assert!(
        traffic
            .observe(&sample().await, |_| true, clock::now())
            .is_empty()
    );
    runtime.add_traffic(&name("w"), TRAFFIC_THRESHOLD_BYTES + 1);
    runtime.add_traffic(&name("quiet"), 84);
    let busy: Vec<_> = traffic
        .observe(&sample().await, |_| true, clock::now())
        .into_iter()
        .map(|(workspace, _)| workspace)
        .collect();
    assert_eq!(busy, vec![name("w")]);
    assert!(
        traffic
            .observe(&sample().await, |_| true, clock::now())
            .is_empty()
    );
}
