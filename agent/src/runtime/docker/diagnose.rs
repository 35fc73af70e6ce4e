//! What the engine tells about a workspace's container for its health and for the support
//! bundle: the container's state as inspected, the engine's events about it, the engine's
//! version and the containers it holds. The calls are here, beside their translations (pure,
//! tested below); what is said never includes a container's environment, and an exec's command
//! line (which the engine puts in its events) is cut off, as arguments may carry secrets.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, EventMessage,
    HealthStatusEnum,
};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use nexus_protocol::WorkspaceName;
use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::debug::{ContainerEvent, ContainerHealth, EngineContainer, EngineInfo};

use super::DockerRuntime;
use super::convert::classify;
use crate::runtime::{
    ErrorKind, HEALTHCHECK_OUTPUT_BYTES, LABEL_GENERATION, LABEL_HOST, LABEL_WORKSPACE, MAX_EVENTS,
    REPORTED_MESSAGE_BYTES, RuntimeError, truncate,
};

/// How long reading the engine's past events may take.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(10);
/// The most attributes one event keeps, and the longest value.
const MAX_ATTRIBUTES: usize = 32;
const ATTRIBUTE_BYTES: usize = 256;
/// The attributes an event keeps besides our labels: nothing else (image labels, say) is known
/// to be safe to show.
const KEPT_ATTRIBUTES: [&str; 4] = ["name", "image", "exitCode", "signal"];
/// Docker's time for "never" (a container never started or never stopped).
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl DockerRuntime {
    pub(super) async fn inspect_health(&self, id: &str) -> Result<ContainerHealth, RuntimeError> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| classify(&e, &format!("cannot inspect container {id}")))?;
        Ok(health_from(inspect))
    }

    pub(super) async fn workspace_events(
        &self,
        workspace: &WorkspaceName,
        since: Option<Timestamp>,
    ) -> Result<Vec<ContainerEvent>, RuntimeError> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![
                    format!("{LABEL_HOST}={}", self.host),
                    format!("{LABEL_WORKSPACE}={workspace}"),
                ],
            ),
        ]);
        // From the epoch's first second when no time is given: the engine keeps a bounded
        // buffer of past events, which is then all of it.
        let since = since.map_or(1_000, Timestamp::as_millis);
        let options = EventsOptionsBuilder::new()
            .since(&seconds(since))
            .until(&seconds(clock::now().as_millis()))
            .filters(&filters)
            .build();
        let mut stream = self.docker.events(Some(options));
        let mut events = VecDeque::new();
        let read = async {
            while let Some(message) = stream.next().await {
                let message =
                    message.map_err(|e| classify(&e, "cannot read the engine's events"))?;
                if !ours(&message, self.host.as_str(), workspace.as_str()) {
                    continue;
                }
                if let Some(event) = event_from(message) {
                    if events.len() == MAX_EVENTS {
                        events.pop_front();
                    }
                    events.push_back(event);
                }
            }
            Ok::<(), RuntimeError>(())
        };
        tokio::time::timeout(EVENTS_TIMEOUT, read)
            .await
            .map_err(|_| {
                RuntimeError::new(
                    ErrorKind::Unavailable,
                    format!("the engine's events did not end within {EVENTS_TIMEOUT:?}"),
                )
            })??;
        Ok(events.into())
    }

    pub(super) async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| classify(&e, "cannot read the engine's version"))?;
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&self.label_filter())
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| classify(&e, "cannot list containers"))?;
        Ok(EngineInfo {
            runtime: "docker".into(),
            version: version.version,
            api_version: version.api_version,
            os: version.os,
            arch: version.arch,
            containers: containers.into_iter().map(engine_container).collect(),
        })
    }
}

/// Milliseconds since the epoch as the engine's `SECONDS.NANOS`.
fn seconds(millis: u64) -> String {
    format!("{}.{:09}", millis / 1_000, (millis % 1_000) * 1_000_000)
}

/// Whether the event is about `host`'s container of `workspace` (the engine filtered already;
/// this holds even if an older engine ignored a filter).
fn ours(message: &EventMessage, host: &str, workspace: &str) -> bool {
    let attributes = message.actor.as_ref().and_then(|a| a.attributes.as_ref());
    attributes.is_some_and(|a| {
        a.get(LABEL_HOST).map(String::as_str) == Some(host)
            && a.get(LABEL_WORKSPACE).map(String::as_str) == Some(workspace)
    })
}

/// A time as the engine gives it, or `None` for its "never".
fn time_of(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty() && t != ZERO_TIME)
}

pub(super) fn health_from(inspect: ContainerInspectResponse) -> ContainerHealth {
    let state = inspect.state.unwrap_or_default();
    let status = state.status.map_or_else(String::new, |s| s.to_string());
    let finished_at = time_of(state.finished_at);
    let healthcheck = state
        .health
        .filter(|h| {
            !matches!(
                h.status,
                None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY)
            )
        })
        .map(|health| {
            let output = health
                .log
                .and_then(|log| log.into_iter().last())
                .and_then(|result| result.output)
                .map(|output| truncate(output.trim(), HEALTHCHECK_OUTPUT_BYTES));
            let status = health.status.map_or_else(String::new, |s| s.to_string());
            (status, output)
        });
    ContainerHealth {
        running: state.status == Some(ContainerStateStatusEnum::RUNNING),
        status,
        restarts: inspect
            .restart_count
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        // Only once it has ended at least once: a container never stopped has no last exit.
        exit_code: finished_at.as_ref().and(state.exit_code),
        oom_killed: state.oom_killed.unwrap_or(false),
        error: state
            .error
            .filter(|e| !e.is_empty())
            .map(|e| truncate(&e, REPORTED_MESSAGE_BYTES)),
        started_at: time_of(state.started_at),
        finished_at,
        healthcheck,
    }
}

/// An engine event as a [`ContainerEvent`]: the action without an exec's command line, and only
/// the attributes known to be safe (ours and a few of the engine's), bounded.
pub(super) fn event_from(message: EventMessage) -> Option<ContainerEvent> {
    let action = message.action?;
    // `exec_create: sh -c 'echo $TOKEN'`: the command may carry secrets.
    let action = action
        .split_once(':')
        .map_or(action.as_str(), |(verb, _)| verb)
        .trim()
        .to_string();
    let millis = match (message.time_nano, message.time) {
        (Some(nanos), _) => u64::try_from(nanos / 1_000_000).ok()?,
        (None, Some(seconds)) => u64::try_from(seconds).ok()?.saturating_mul(1_000),
        (None, None) => return None,
    };
    let mut attributes: Vec<(String, String)> = message
        .actor
        .and_then(|actor| actor.attributes)
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key.starts_with("nexus.") || KEPT_ATTRIBUTES.contains(&key.as_str()))
        .map(|(key, value)| (key, truncate(&value, ATTRIBUTE_BYTES)))
        .collect();
    attributes.sort();
    attributes.truncate(MAX_ATTRIBUTES);
    Some(ContainerEvent {
        at: Timestamp::from_millis(millis),
        action,
        attributes,
    })
}

pub(super) fn engine_container(summary: ContainerSummary) -> EngineContainer {
    let labels = summary.labels.unwrap_or_default();
    EngineContainer {
        name: summary
            .names
            .and_then(|names| names.into_iter().next())
            .map(|name| name.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: summary.image.unwrap_or_default(),
        state: summary.state.map_or_else(String::new, |s| s.to_string()),
        workspace: labels.get(LABEL_WORKSPACE).and_then(|w| w.parse().ok()),
        generation: labels.get(LABEL_GENERATION).and_then(|g| g.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        ContainerState, ContainerSummaryStateEnum, EventActor, Health, HealthcheckResult,
    };

    use super::*;

    #[test]
    fn an_inspected_container_says_its_state_exit_and_healthcheck() {
        let running = ContainerInspectResponse {
            restart_count: Some(2),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                exit_code: Some(0),
                oom_killed: Some(false),
                error: Some(String::new()),
                started_at: Some("2026-12-03T09:00:00.5Z".into()),
                finished_at: Some(ZERO_TIME.into()),
                health: Some(Health {
                    status: Some(HealthStatusEnum::UNHEALTHY),
                    log: Some(vec![
                        HealthcheckResult {
                            output: Some("old".into()),
                            ..Default::default()
                        },
                        HealthcheckResult {
                            output: Some("curl: (7) refused\n".into()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            health_from(running),
            ContainerHealth {
                running: true,
                status: "running".into(),
                restarts: 2,
                exit_code: None,
                oom_killed: false,
                error: None,
                started_at: Some("2026-12-03T09:00:00.5Z".into()),
                finished_at: None,
                healthcheck: Some(("unhealthy".into(), Some("curl: (7) refused".into()))),
            }
        );

        let killed = ContainerInspectResponse {
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::EXITED),
                exit_code: Some(137),
                oom_killed: Some(true),
                finished_at: Some("2026-12-03T09:01:00Z".into()),
                health: Some(Health {
                    status: Some(HealthStatusEnum::NONE),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let health = health_from(killed);
        assert!(!health.running);
        assert_eq!((health.exit_code, health.oom_killed), (Some(137), true));
        assert_eq!(health.healthcheck, None, "no healthcheck of its own");
        assert_eq!(health.status, "exited");
    }

    fn event(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            time: Some(1_700_000_000),
            time_nano: Some(1_700_000_000_250_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn events_keep_only_safe_attributes_and_no_exec_command() {
        let die = event(
            "die",
            &[
                ("exitCode", "3"),
                ("nexus.workspace", "web"),
                ("nexus.host", "h1"),
                ("maintainer", "someone"),
                ("image", "dev:latest"),
            ],
        );
        assert!(ours(&die, "h1", "web"));
        assert!(!ours(&die, "h2", "web"));
        assert!(!ours(&die, "h1", "api"));
        assert_eq!(
            event_from(die),
            Some(ContainerEvent {
                at: Timestamp::from_millis(1_700_000_000_250),
                action: "die".into(),
                attributes: vec![
                    ("exitCode".into(), "3".into()),
                    ("image".into(), "dev:latest".into()),
                    ("nexus.host".into(), "h1".into()),
                    ("nexus.workspace".into(), "web".into()),
                ],
            })
        );
        let exec = event_from(event("exec_create: sh -c echo $TOKEN", &[])).unwrap();
        assert_eq!(exec.action, "exec_create");
        let long = event_from(event("start", &[("name", &"n".repeat(5_000))])).unwrap();
        assert!(long.attributes[0].1.len() <= ATTRIBUTE_BYTES);
        let mut timeless = event("start", &[]);
        timeless.time_nano = None;
        timeless.time = None;
        assert_eq!(event_from(timeless), None);
        assert_eq!(seconds(1_700_000_000_250), "1700000000.250000000");
    }

    #[test]
    fn an_engine_container_is_named_without_its_slash() {
        let summary = ContainerSummary {
            names: Some(vec!["/nexus.h1.web.g2".into()]),
            image: Some("dev:latest".into()),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            labels: Some(HashMap::from([
                (LABEL_WORKSPACE.to_string(), "web".to_string()),
                (LABEL_GENERATION.to_string(), "2".to_string()),
            ])),
            ..Default::default()
        };
        assert_eq!(
            engine_container(summary),
            EngineContainer {
                name: "nexus.h1.web.g2".into(),
                image: "dev:latest".into(),
                state: "running".into(),
                workspace: "web".parse().ok(),
                generation: Some(2),
            }
        );
    }
}
