//! A workspace's verdict (`nexus admin workspace health`): healthy, degraded or unhealthy, with
//! the reasons, from what the coordinators want of it and what its agent observes. Pure.
//!
//! Unhealthy: it does not do what it is for. Wanted running but not running (or no container,
//! or its host's agent does not answer), failed or lost, its image's healthcheck says
//! unhealthy, a published port refuses connections, or its files are over their limit. A port
//! that refuses is unhealthy rather than degraded: a port is published so that a client reaches
//! a server there, and from that client's side the workspace is down (a server not started yet
//! is the same to it).
//!
//! Degraded: it works, but something needs a look. Killed for lack of memory or restarted
//! since it was made, a sync session failed or holds conflicts, its healthcheck is still
//! starting, it is on its way between states, or its files are above 90 % of their limit.

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{ContainerHealth, SyncSessionView, WorkspaceHealth};
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::WorkspaceState;
use serde_json::{Value, json};

use super::{Check, EXIT_DEGRADED, EXIT_FAILED, Status, checks_json, checks_table, cut, worst};
use crate::output;

/// Files above this share of their limit make a workspace degraded.
pub const NEAR_LIMIT_PERCENT: u64 = 90;
/// The longest detail a check shows (a healthcheck's output, an engine's error).
const DETAIL: usize = 160;

/// What the coordinators want of the workspace, and where it stands as they know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub desired: DesiredRun,
    pub state: WorkspaceState,
    /// Why it failed, as its agent reported.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Unhealthy => "unhealthy",
        }
    }

    /// The command's exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => EXIT_DEGRADED,
            Verdict::Unhealthy => EXIT_FAILED,
        }
    }
}

/// Every check, the verdict, and the reasons (the checks that were not ok).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub checks: Vec<Check>,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// Judges the workspace from `wanted` and `observed` (its agent's answer, or why there is
/// none), `now`.
pub fn assess(
    wanted: &Wanted,
    observed: Result<&WorkspaceHealth, &str>,
    now: Timestamp,
) -> Assessment {
    let mut checks = vec![state_check(wanted)];
    match observed {
        Err(why) => checks.push(Check::new(
            "agent",
            None,
            Status::Fail,
            format!("its host's agent did not answer: {}", cut(why, DETAIL)),
        )),
        Ok(health) => {
            checks.push(container_check(wanted.desired, health.container.as_ref()));
            if let Some(container) = &health.container {
                checks.extend(engine_checks(container));
                if container.running {
                    checks.extend(health.ports.iter().map(|port| {
                        let target = Some(format!("{}->{}", port.container, port.host));
                        if port.accepting {
                            Check::new(
                                "port",
                                target,
                                Status::Ok,
                                format!("host port {} accepts connections", port.host),
                            )
                        } else {
                            let why = port.error.as_deref().unwrap_or("refused");
                            Check::new("port", target, Status::Fail, cut(why, DETAIL))
                        }
                    }));
                }
            }
            checks.extend(sync_checks(&health.sync, now));
            checks.push(files_check(health));
        }
    }
    let status = worst(&checks);
    let verdict = match status {
        Status::Ok => Verdict::Healthy,
        Status::Warn => Verdict::Degraded,
        Status::Fail => Verdict::Unhealthy,
    };
    let reasons = checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| format!("{}: {}", c.name(), c.detail))
        .collect();
    Assessment {
        checks,
        verdict,
        reasons,
    }
}

fn state_check(wanted: &Wanted) -> Check {
    let (status, detail) = match wanted.state {
        WorkspaceState::Running | WorkspaceState::Stopped => (Status::Ok, String::new()),
        WorkspaceState::Failed => (
            Status::Fail,
            match &wanted.last_error {
                Some(error) => format!("failed: {}", cut(error, DETAIL)),
                None => "failed".to_string(),
            },
        ),
        WorkspaceState::Lost => (
            Status::Fail,
            "lost: its host is down (its files are there)".to_string(),
        ),
        WorkspaceState::Gone => (Status::Ok, "destroyed".to_string()),
        other => (Status::Warn, format!("on its way: {}", other.as_str())),
    };
    let detail = if detail.is_empty() {
        format!(
            "{}, wanted {}",
            wanted.state.as_str(),
            desired_name(wanted.desired)
        )
    } else {
        detail
    };
    Check::new("state", None, status, detail)
}

fn desired_name(desired: DesiredRun) -> &'static str {
    match desired {
        DesiredRun::Running => "running",
        DesiredRun::Stopped => "stopped",
        DesiredRun::Absent => "destroyed",
    }
}

fn container_check(desired: DesiredRun, container: Option<&ContainerHealth>) -> Check {
    let wanted_running = desired == DesiredRun::Running;
    let (status, detail) = match container {
        None if wanted_running => (Status::Fail, "no container on its host".to_string()),
        None => (Status::Ok, "no container".to_string()),
        Some(c) if c.running && wanted_running => (
            Status::Ok,
            match &c.started_at {
                Some(at) => format!("running since {at}"),
                None => "running".to_string(),
            },
        ),
        Some(c) if c.running => (
            Status::Warn,
            format!("running, but wanted {}", desired_name(desired)),
        ),
        Some(c) => {
            let mut detail = format!("not running ({})", c.status);
            if let Some(code) = c.exit_code {
                detail.push_str(&format!(", last exit code {code}"));
            }
            if let Some(error) = &c.error {
                detail.push_str(&format!(": {}", cut(error, DETAIL)));
            }
            if wanted_running {
                (Status::Fail, detail)
            } else {
                (Status::Ok, format!("{detail}, as wanted"))
            }
        }
    };
    Check::new("container", None, status, detail)
}

/// The engine's word beyond running or not: memory, restarts, the image's healthcheck.
fn engine_checks(container: &ContainerHealth) -> Vec<Check> {
    let mut checks = Vec::new();
    if container.oom_killed {
        checks.push(Check::new(
            "memory",
            None,
            Status::Warn,
            "killed for lack of memory at its last exit",
        ));
    }
    if container.restarts > 0 {
        checks.push(Check::new(
            "restarts",
            None,
            Status::Warn,
            format!("restarted {} time(s) by the engine", container.restarts),
        ));
    }
    if let Some((state, output)) = &container.healthcheck {
        let output = output
            .as_deref()
            .map_or(String::new(), |o| format!(": {}", cut(o, DETAIL)));
        let status = match state.as_str() {
            "healthy" => Status::Ok,
            "unhealthy" => Status::Fail,
            _ => Status::Warn,
        };
        // Only a failure's output says something.
        let detail = if status == Status::Ok {
            state.clone()
        } else {
            format!("{state}{output}")
        };
        checks.push(Check::new("healthcheck", None, status, detail));
    }
    checks
}

fn sync_checks(sessions: &[SyncSessionView], now: Timestamp) -> Vec<Check> {
    if sessions.is_empty() {
        return vec![Check::new(
            "sync",
            None,
            Status::Ok,
            "no session reports to its agent",
        )];
    }
    sessions
        .iter()
        .map(|s| {
            let who = s.user.as_ref().map_or("?".to_string(), ToString::to_string);
            let target = Some(format!("{:016x} ({who})", s.session));
            let status = if s.state == "failed" || s.conflicts > 0 {
                Status::Warn
            } else {
                Status::Ok
            };
            let detail = format!(
                "{}, {} conflict(s), {} change(s), last cycle {}",
                s.state,
                s.conflicts,
                s.changes,
                output::ago(s.last_cycle, now)
            );
            Check::new("sync", target, status, detail)
        })
        .collect()
}

fn files_check(health: &WorkspaceHealth) -> Check {
    let Some(bytes) = health.files_bytes else {
        return Check::new("files", None, Status::Ok, "no files directory on its host");
    };
    let at_least = if health.files_partial {
        "at least "
    } else {
        ""
    };
    let (status, detail) = match health.files_limit_bytes {
        None => (
            Status::Ok,
            format!("{at_least}{} (no limit)", output::bytes(bytes)),
        ),
        Some(limit) => {
            let status = if bytes > limit {
                Status::Fail
            } else if u128::from(bytes) * 100 > u128::from(limit) * u128::from(NEAR_LIMIT_PERCENT) {
                Status::Warn
            } else {
                Status::Ok
            };
            (
                status,
                format!(
                    "{at_least}{} of {}",
                    output::bytes(bytes),
                    output::bytes(limit)
                ),
            )
        }
    };
    Check::new("files", None, status, detail)
}

/// `{"workspace", "host", "verdict", "reasons", "checks", "container", "ports", "sync",
/// "files_bytes", "files_limit_bytes", "files_partial"}`.
pub fn json(
    workspace: &str,
    host: Option<&str>,
    assessment: &Assessment,
    health: Option<&WorkspaceHealth>,
) -> Value {
    let container = health.and_then(|h| h.container.as_ref()).map(|c| {
        json!({
            "running": c.running,
            "status": c.status,
            "restarts": c.restarts,
            "exit_code": c.exit_code,
            "oom_killed": c.oom_killed,
            "error": c.error,
            "started_at": c.started_at,
            "finished_at": c.finished_at,
            "healthcheck": c.healthcheck.as_ref().map(|(state, output)| json!({
                "status": state, "output": output,
            })),
        })
    });
    let ports: Vec<Value> = health.map_or_else(Vec::new, |h| {
        h.ports
            .iter()
            .map(|p| {
                json!({
                    "container": p.container,
                    "host": p.host,
                    "accepting": p.accepting,
                    "error": p.error,
                })
            })
            .collect()
    });
    let sync: Vec<Value> =
        health.map_or_else(Vec::new, |h| h.sync.iter().map(session_json).collect());
    json!({
        "workspace": workspace,
        "host": host,
        "verdict": assessment.verdict.as_str(),
        "reasons": assessment.reasons,
        "checks": checks_json(&assessment.checks),
        "container": container,
        "ports": ports,
        "sync": sync,
        "files_bytes": health.and_then(|h| h.files_bytes),
        "files_limit_bytes": health.and_then(|h| h.files_limit_bytes),
        "files_partial": health.is_some_and(|h| h.files_partial),
    })
}

/// A sync session as the agent sees it: `{"session", "user", "provider", "state",
/// "last_cycle", "changes", "conflicts"}` (the session's id in hex, as the table shows it).
pub fn session_json(s: &SyncSessionView) -> Value {
    json!({
        "session": format!("{:016x}", s.session),
        "user": s.user.as_ref().map(ToString::to_string),
        "provider": s.provider,
        "state": s.state,
        "last_cycle": s.last_cycle.map(output::rfc3339),
        "changes": s.changes,
        "conflicts": s.conflicts,
    })
}

/// The checks' table and the verdict with its reasons.
pub fn text(workspace: &str, host: Option<&str>, assessment: &Assessment) -> String {
    let mut text = format!(
        "workspace {workspace}{}\n",
        host.map_or(String::new(), |h| format!(" on {h}"))
    );
    text.push_str(&checks_table(&assessment.checks));
    text.push_str(&format!("verdict: {}\n", assessment.verdict.as_str()));
    for reason in &assessment.reasons {
        text.push_str(&format!("  - {reason}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use nexus_protocol::debug::PortProbe;

    use super::*;

    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    fn wanted(desired: DesiredRun, state: WorkspaceState) -> Wanted {
        Wanted {
            desired,
            state,
            last_error: None,
        }
    }

    fn running() -> ContainerHealth {
        ContainerHealth {
            running: true,
            status: "running".into(),
            restarts: 0,
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: Some("2026-12-03T09:00:00Z".into()),
            finished_at: None,
            healthcheck: None,
        }
    }

    fn exited(code: i64) -> ContainerHealth {
        ContainerHealth {
            running: false,
            status: "exited".into(),
            exit_code: Some(code),
            started_at: None,
            ..running()
        }
    }

    fn port(accepting: bool) -> PortProbe {
        PortProbe {
            container: 3000,
            host: 20001,
            accepting,
            error: (!accepting).then(|| "127.0.0.1:20001 closed the connection at once".into()),
        }
    }

    fn session(state: &str, conflicts: u64) -> SyncSessionView {
        SyncSessionView {
            session: 0xabc,
            user: "ada".parse().ok(),
            provider: "embedded".into(),
            state: state.into(),
            last_cycle: Some(Timestamp(NOW.0 - 4_000)),
            changes: 12,
            conflicts,
        }
    }

    /// A healthy running workspace with one port and a files directory.
    fn healthy() -> WorkspaceHealth {
        WorkspaceHealth {
            workspace: "web".parse().unwrap(),
            container: Some(running()),
            ports: vec![port(true)],
            sync: vec![],
            files_bytes: Some(2048),
            files_limit_bytes: None,
            files_partial: false,
        }
    }

    /// The verdict for `health` of a workspace wanted running, and its reasons.
    fn check(wanted: &Wanted, health: Result<WorkspaceHealth, &str>) -> (Verdict, Vec<String>) {
        let assessment = assess(wanted, health.as_ref().map_err(|e| *e), NOW);
        (assessment.verdict, assessment.reasons)
    }

    fn up() -> Wanted {
        wanted(DesiredRun::Running, WorkspaceState::Running)
    }

    #[test]
    fn verdicts_follow_the_table() {
        use Verdict::*;
        let with = |change: &dyn Fn(&mut WorkspaceHealth)| {
            let mut health = healthy();
            change(&mut health);
            health
        };
        type Observed = Result<WorkspaceHealth, &'static str>;
        let cases: Vec<(&str, Wanted, Observed, Verdict, &str)> = vec![
            ("all well", up(), Ok(healthy()), Healthy, ""),
            (
                "not running but wanted running",
                up(),
                Ok(with(&|h| h.container = Some(exited(3)))),
                Unhealthy,
                "container: not running (exited), last exit code 3",
            ),
            (
                "no container but wanted running",
                up(),
                Ok(with(&|h| h.container = None)),
                Unhealthy,
                "container: no container on its host",
            ),
            (
                "stopped as wanted, ports not tried",
                wanted(DesiredRun::Stopped, WorkspaceState::Stopped),
                Ok(with(&|h| {
                    h.container = Some(exited(143));
                    h.ports = vec![port(false)];
                })),
                Healthy,
                "",
            ),
            (
                "a port refuses",
                up(),
                Ok(with(&|h| h.ports = vec![port(true), port(false)])),
                Unhealthy,
                "port 3000->20001: 127.0.0.1:20001 closed the connection at once",
            ),
            (
                "the image's healthcheck is unhealthy",
                up(),
                Ok(with(&|h| {
                    h.container = Some(ContainerHealth {
                        healthcheck: Some(("unhealthy".into(), Some("curl: (7)".into()))),
                        ..running()
                    })
                })),
                Unhealthy,
                "healthcheck: unhealthy: curl: (7)",
            ),
            (
                "the healthcheck is starting",
                up(),
                Ok(with(&|h| {
                    h.container = Some(ContainerHealth {
                        healthcheck: Some(("starting".into(), None)),
                        ..running()
                    })
                })),
                Degraded,
                "healthcheck: starting",
            ),
            (
                "killed for lack of memory once",
                up(),
                Ok(with(&|h| {
                    h.container = Some(ContainerHealth {
                        oom_killed: true,
                        ..running()
                    })
                })),
                Degraded,
                "memory: killed for lack of memory at its last exit",
            ),
            (
                "restarted",
                up(),
                Ok(with(&|h| {
                    h.container = Some(ContainerHealth {
                        restarts: 2,
                        ..running()
                    })
                })),
                Degraded,
                "restarts: restarted 2 time(s) by the engine",
            ),
            (
                "a sync session failed",
                up(),
                Ok(with(&|h| h.sync = vec![session("failed", 0)])),
                Degraded,
                "sync 0000000000000abc (ada): failed, 0 conflict(s), 12 change(s), last cycle 4s ago",
            ),
            (
                "a sync session holds conflicts",
                up(),
                Ok(with(&|h| h.sync = vec![session("conflicted", 2)])),
                Degraded,
                "sync 0000000000000abc (ada): conflicted, 2 conflict(s), 12 change(s), last cycle 4s ago",
            ),
            (
                "files over their limit",
                up(),
                Ok(with(&|h| h.files_limit_bytes = Some(1024))),
                Unhealthy,
                "files: 2.0 KiB of 1.0 KiB",
            ),
            (
                "files near their limit",
                up(),
                Ok(with(&|h| h.files_limit_bytes = Some(2200))),
                Degraded,
                "files: 2.0 KiB of 2.1 KiB",
            ),
            (
                "files well within their limit",
                up(),
                Ok(with(&|h| h.files_limit_bytes = Some(1 << 30))),
                Healthy,
                "",
            ),
            (
                "the agent does not answer",
                up(),
                Err("connection timed out"),
                Unhealthy,
                "agent: its host's agent did not answer: connection timed out",
            ),
            (
                "failed, with its reason",
                Wanted {
                    last_error: Some("image not found".into()),
                    ..wanted(DesiredRun::Running, WorkspaceState::Failed)
                },
                Ok(with(&|h| h.container = None)),
                Unhealthy,
                "state: failed: image not found",
            ),
            (
                "lost",
                wanted(DesiredRun::Running, WorkspaceState::Lost),
                Err("unreachable"),
                Unhealthy,
                "state: lost: its host is down (its files are there)",
            ),
            (
                "starting",
                wanted(DesiredRun::Running, WorkspaceState::Starting),
                Ok(healthy()),
                Degraded,
                "state: on its way: starting",
            ),
            (
                "running but wanted stopped",
                wanted(DesiredRun::Stopped, WorkspaceState::Stopping),
                Ok(healthy()),
                Degraded,
                "state: on its way: stopping",
            ),
        ];
        for (case, wanted, health, verdict, first_reason) in cases {
            let (got, reasons) = check(&wanted, health);
            assert_eq!(got, verdict, "{case}: {reasons:?}");
            assert_eq!(
                reasons.first().map_or("", String::as_str),
                first_reason,
                "{case}"
            );
        }
    }

    #[test]
    fn the_exit_code_is_zero_only_when_healthy() {
        assert_eq!(Verdict::Healthy.exit_code(), 0);
        assert_eq!(Verdict::Degraded.exit_code(), EXIT_DEGRADED);
        assert_eq!(Verdict::Unhealthy.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn the_report_reads_for_people_and_scripts() {
        let mut health = healthy();
        health.ports.push(PortProbe {
            container: 22,
            host: 20002,
            accepting: false,
            error: Some("connecting to 127.0.0.1:20002: Connection refused".into()),
        });
        health.sync = vec![session("watching", 0)];
        let assessment = assess(&up(), Ok(&health), NOW);
        expect_test::expect![[r#"
            workspace web on h1
            CHECK                        STATUS  DETAIL
            state                        ok      running, wanted running
            container                    ok      running since 2026-12-03T09:00:00Z
            port 3000->20001             ok      host port 20001 accepts connections
            port 22->20002               fail    connecting to 127.0.0.1:20002: Connection refused
            sync 0000000000000abc (ada)  ok      watching, 0 conflict(s), 12 change(s), last cycle 4s ago
            files                        ok      2.0 KiB (no limit)
            verdict: unhealthy
              - port 22->20002: connecting to 127.0.0.1:20002: Connection refused
        "#]]
        .assert_eq(&text("web", Some("h1"), &assessment));
        let json = json("web", Some("h1"), &assessment, Some(&health));
        assert_eq!(json["verdict"], "unhealthy");
        assert_eq!(json["ports"][1]["accepting"], false);
        assert_eq!(json["sync"][0]["session"], "0000000000000abc");
        assert_eq!(json["sync"][0]["last_cycle"], "2023-11-14T22:13:16Z");
        assert_eq!(json["files_bytes"], 2048);
        assert_eq!(json["checks"][3]["status"], "fail");
        assert_eq!(json["container"]["running"], true);
    }
}
