//! Workspace events as people and scripts read them (`workspace inspect`, `admin workspace
//! events`), and the summary of `admin workspace repair --all`. Pure, like the rest of
//! [`crate::output`]; the JSON is built here field by field, so that it does not move with the
//! wire types.

use nexus_protocol::WorkspaceName;
use nexus_protocol::debug::{Actor, EventKind, WorkspaceEvent};
use nexus_protocol::error::WireError;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{DesiredRun, WorkspaceDetail};
use serde_json::{Value, json};

use super::{rfc3339, table, workspace_detail_json, workspace_detail_text};

/// How many of its newest events `inspect` shows.
pub const INSPECT_EVENTS: usize = 5;

/// `inspect` with the newest [`INSPECT_EVENTS`] events under the detail.
pub fn workspace_inspect_text(detail: &WorkspaceDetail, events: &[WorkspaceEvent]) -> String {
    let mut text = workspace_detail_text(detail);
    let newest = newest(events);
    if !newest.is_empty() {
        text.push_str(&format!(
            "\nevents (the last {} of {}, oldest first):\n",
            newest.len(),
            events.len()
        ));
        text.push_str(&events_table(newest));
    }
    text
}

/// `inspect --output json`: the detail's fields and `events`, the newest [`INSPECT_EVENTS`].
pub fn workspace_inspect_json(detail: &WorkspaceDetail, events: &[WorkspaceEvent]) -> Value {
    let mut json = workspace_detail_json(detail);
    if let Value::Object(map) = &mut json {
        map.insert("events".into(), events_json(newest(events)));
    }
    json
}

fn newest(events: &[WorkspaceEvent]) -> &[WorkspaceEvent] {
    &events[events.len().saturating_sub(INSPECT_EVENTS)..]
}

/// Events as a table, oldest first: `TIME ACTOR EVENT REASON REQUEST`.
pub fn events_table(events: &[WorkspaceEvent]) -> String {
    if events.is_empty() {
        return "no events\n".into();
    }
    table(
        &["TIME", "ACTOR", "EVENT", "REASON", "REQUEST"],
        events.iter().map(event_row).collect(),
    )
}

/// One event as a line of the table's columns, for a followed history (`--follow` prints each
/// new event as it comes, without realigning what was printed).
pub fn event_line(event: &WorkspaceEvent) -> String {
    let mut line = event_row(event).join("  ");
    line.push('\n');
    line
}

fn event_row(event: &WorkspaceEvent) -> Vec<String> {
    vec![
        rfc3339(event.at),
        actor_text(&event.actor),
        kind_text(&event.kind),
        reason_text(event),
        event.request_id.map_or("-".into(), |id| id.to_string()),
    ]
}

/// Events as a JSON array, oldest first (see [`event_json`]).
pub fn events_json(events: &[WorkspaceEvent]) -> Value {
    Value::Array(events.iter().map(event_json).collect())
}

/// `{"seq", "at", "actor": {"kind", "name"}, "request_id", "kind", ..., "reason", "error"}`; the
/// kind's own fields beside it: `host` (created), `wanted` (running, stopped or destroyed),
/// `from` and `to` (state), `generation` (repair).
pub fn event_json(event: &WorkspaceEvent) -> Value {
    let mut json = json!({
        "seq": event.seq,
        "at": rfc3339(event.at),
        "actor": actor_json(&event.actor),
        "request_id": event.request_id.map(|id| id.to_string()),
        "reason": event.reason,
        "error": event.error.as_ref().map(|e| json!({
            "code": e.code.as_str(),
            "message": e.message,
        })),
    });
    if let Value::Object(map) = &mut json {
        let (kind, fields) = match &event.kind {
            EventKind::Created { host } => ("created", vec![("host", json!(host.as_str()))]),
            EventKind::Wanted(run) => ("wanted", vec![("wanted", json!(wanted_name(*run)))]),
            EventKind::State { from, to } => (
                "state",
                vec![("from", json!(from.as_str())), ("to", json!(to.as_str()))],
            ),
            EventKind::Restart => ("restart", vec![]),
            EventKind::Repair { generation } => ("repair", vec![("generation", json!(generation))]),
            EventKind::PortsReassigned => ("ports_reassigned", vec![]),
            EventKind::Held => ("held", vec![]),
            EventKind::Released => ("released", vec![]),
            EventKind::Extended { by_secs } => ("extended", vec![("by_secs", json!(by_secs))]),
            EventKind::Noticed => ("noticed", vec![]),
        };
        map.insert("kind".into(), json!(kind));
        for (key, value) in fields {
            map.insert(key.into(), value);
        }
    }
    json
}

fn wanted_name(run: DesiredRun) -> &'static str {
    match run {
        DesiredRun::Running => "running",
        DesiredRun::Stopped => "stopped",
        DesiredRun::Absent => "destroyed",
    }
}

/// `ada`, `root (admin)`, `agent h1`, `coordinator 1`, `detector`, `policy NAME`.
fn actor_text(actor: &Actor) -> String {
    match actor {
        Actor::Identity(Identity::User {
            name,
            role: Role::User,
        }) => name.to_string(),
        Actor::Identity(Identity::User {
            name,
            role: Role::Admin,
        }) => format!("{name} (admin)"),
        Actor::Identity(Identity::Agent(host)) => format!("agent {host}"),
        Actor::Identity(Identity::Coordinator(node)) => format!("coordinator {node}"),
        Actor::Detector => "detector".into(),
        Actor::Policy(name) => format!("policy {name}"),
    }
}

fn actor_json(actor: &Actor) -> Value {
    let (kind, name) = match actor {
        Actor::Identity(Identity::User { name, role }) => (
            match role {
                Role::User => "user",
                Role::Admin => "admin",
            },
            Some(name.to_string()),
        ),
        Actor::Identity(Identity::Agent(host)) => ("agent", Some(host.to_string())),
        Actor::Identity(Identity::Coordinator(node)) => ("coordinator", Some(node.to_string())),
        Actor::Detector => ("detector", None),
        Actor::Policy(name) => ("policy", Some(name.clone())),
    };
    json!({"kind": kind, "name": name})
}

fn kind_text(kind: &EventKind) -> String {
    match kind {
        EventKind::Created { host } => format!("created on {host}"),
        EventKind::Wanted(run) => format!("wanted {}", wanted_name(*run)),
        EventKind::State { from, to } => format!("{from} -> {to}"),
        EventKind::Restart => "restart".into(),
        EventKind::Repair { generation } => format!("repair (generation {generation})"),
        EventKind::PortsReassigned => "ports reassigned".into(),
        EventKind::Held => "held".into(),
        EventKind::Released => "released".into(),
        EventKind::Extended { by_secs } => format!(
            "lifetime extended by {}",
            nexus_protocol::policy::Secs(*by_secs)
        ),
        EventKind::Noticed => "owner noticed".into(),
    }
}

/// The reason, after the error's code when there is one.
fn reason_text(event: &WorkspaceEvent) -> String {
    let reason = event
        .reason
        .clone()
        .or_else(|| event.error.as_ref().map(|e| e.message.clone()));
    match (&event.error, reason) {
        (Some(error), Some(reason)) => format!("{}: {reason}", error.code),
        (Some(error), None) => error.code.to_string(),
        (None, Some(reason)) => reason,
        (None, None) => "-".into(),
    }
}

/// What `admin workspace repair --all` did: the workspaces it chose, those repaired (running
/// again, or accepted with `--no-wait`), and those not, with why.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RepairSummary {
    pub selected: usize,
    pub repaired: Vec<WorkspaceName>,
    pub failed: Vec<(WorkspaceName, WireError)>,
}

/// `repaired N, failed M`, then each failure with its error.
pub fn repair_summary_text(summary: &RepairSummary) -> String {
    if summary.selected == 0 {
        return "no workspace to repair\n".into();
    }
    let mut text = format!(
        "repaired {}, failed {}\n",
        summary.repaired.len(),
        summary.failed.len()
    );
    for (name, error) in &summary.failed {
        text.push_str(&format!("  {name}: {}: {}\n", error.code, error.message));
    }
    text
}

/// `{"selected", "repaired": [NAME], "failed": [{"name", "code", "message", "request_id"}]}`.
pub fn repair_summary_json(summary: &RepairSummary) -> Value {
    json!({
        "selected": summary.selected,
        "repaired": summary.repaired.iter().map(WorkspaceName::as_str).collect::<Vec<_>>(),
        "failed": summary.failed.iter().map(|(name, error)| json!({
            "name": name.as_str(),
            "code": error.code.as_str(),
            "message": error.message,
            "request_id": error.request_id.map(|id| id.to_string()),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::error::ErrorCode;
    use nexus_protocol::model::WorkspaceState;
    use nexus_protocol::{HostId, NodeId, RequestId};

    use super::*;

    fn event(seq: u64, actor: Actor, kind: EventKind) -> WorkspaceEvent {
        WorkspaceEvent {
            seq,
            at: Timestamp(1_700_000_000_000 + seq * 1000),
            actor,
            request_id: Some(RequestId::from_u128(0xabc0 + u128::from(seq % 3))),
            kind,
            reason: None,
            error: None,
        }
    }

    fn life() -> Vec<WorkspaceEvent> {
        let ada = Actor::Identity(Identity::User {
            name: "ada".parse().unwrap(),
            role: Role::User,
        });
        let root = Actor::Identity(Identity::User {
            name: "root".parse().unwrap(),
            role: Role::Admin,
        });
        let h1 = HostId::new("dev-01").unwrap();
        let agent = Actor::Identity(Identity::Agent(h1.clone()));
        let state = |from, to| EventKind::State { from, to };
        use WorkspaceState::*;
        let mut failed = event(3, agent.clone(), state(Starting, Failed));
        failed.error = Some(WireError::new(
            ErrorCode::ContainerError,
            "exited with code 127",
        ));
        failed.reason = Some("exited with code 127".into());
        let mut lost = event(7, Actor::Detector, state(Running, Lost));
        lost.reason = Some("host dev-01 is down".into());
        let mut moved = event(9, agent.clone(), EventKind::PortsReassigned);
        moved.request_id = None;
        vec![
            event(1, ada.clone(), EventKind::Created { host: h1 }),
            event(2, agent.clone(), state(Scheduled, Starting)),
            failed,
            event(4, root.clone(), EventKind::Repair { generation: 2 }),
            event(5, agent.clone(), state(Scheduled, Running)),
            event(6, ada, EventKind::Wanted(DesiredRun::Stopped)),
            lost,
            event(8, root, EventKind::Restart),
            moved,
            event(
                10,
                Actor::Identity(Identity::Coordinator(NodeId::new(1).unwrap())),
                EventKind::Wanted(DesiredRun::Absent),
            ),
            event(
                11,
                Actor::Policy("idle".into()),
                EventKind::Wanted(DesiredRun::Running),
            ),
        ]
    }

    #[test]
    fn events_render_as_a_table_oldest_first() {
        expect![[r#"
            TIME                  ACTOR          EVENT                  REASON                                 REQUEST
            2023-11-14T22:13:21Z  ada            created on dev-01      -                                      0000000000000000000000000000abc1
            2023-11-14T22:13:22Z  agent dev-01   scheduled -> starting  -                                      0000000000000000000000000000abc2
            2023-11-14T22:13:23Z  agent dev-01   starting -> failed     CONTAINER_ERROR: exited with code 127  0000000000000000000000000000abc0
            2023-11-14T22:13:24Z  root (admin)   repair (generation 2)  -                                      0000000000000000000000000000abc1
            2023-11-14T22:13:25Z  agent dev-01   scheduled -> running   -                                      0000000000000000000000000000abc2
            2023-11-14T22:13:26Z  ada            wanted stopped         -                                      0000000000000000000000000000abc0
            2023-11-14T22:13:27Z  detector       running -> lost        host dev-01 is down                    0000000000000000000000000000abc1
            2023-11-14T22:13:28Z  root (admin)   restart                -                                      0000000000000000000000000000abc2
            2023-11-14T22:13:29Z  agent dev-01   ports reassigned       -                                      -
            2023-11-14T22:13:30Z  coordinator 1  wanted destroyed       -                                      0000000000000000000000000000abc1
            2023-11-14T22:13:31Z  policy idle    wanted running         -                                      0000000000000000000000000000abc2
        "#]]
        .assert_eq(&events_table(&life()));
        expect!["no events\n"].assert_eq(&events_table(&[]));
        expect![[r#"
            2023-11-14T22:13:23Z  agent dev-01  starting -> failed  CONTAINER_ERROR: exited with code 127  0000000000000000000000000000abc0
        "#]]
        .assert_eq(&event_line(&life()[2]));
    }

    #[test]
    fn events_render_as_json_with_each_kinds_fields() {
        let events = life();
        let json: Vec<String> = events.iter().map(|e| event_json(e).to_string()).collect();
        expect![[r#"
            {"actor":{"kind":"user","name":"ada"},"at":"2023-11-14T22:13:21Z","error":null,"host":"dev-01","kind":"created","reason":null,"request_id":"0000000000000000000000000000abc1","seq":1}
            {"actor":{"kind":"agent","name":"dev-01"},"at":"2023-11-14T22:13:22Z","error":null,"from":"scheduled","kind":"state","reason":null,"request_id":"0000000000000000000000000000abc2","seq":2,"to":"starting"}
            {"actor":{"kind":"agent","name":"dev-01"},"at":"2023-11-14T22:13:23Z","error":{"code":"CONTAINER_ERROR","message":"exited with code 127"},"from":"starting","kind":"state","reason":"exited with code 127","request_id":"0000000000000000000000000000abc0","seq":3,"to":"failed"}
            {"actor":{"kind":"admin","name":"root"},"at":"2023-11-14T22:13:24Z","error":null,"generation":2,"kind":"repair","reason":null,"request_id":"0000000000000000000000000000abc1","seq":4}
            {"actor":{"kind":"agent","name":"dev-01"},"at":"2023-11-14T22:13:25Z","error":null,"from":"scheduled","kind":"state","reason":null,"request_id":"0000000000000000000000000000abc2","seq":5,"to":"running"}
            {"actor":{"kind":"user","name":"ada"},"at":"2023-11-14T22:13:26Z","error":null,"kind":"wanted","reason":null,"request_id":"0000000000000000000000000000abc0","seq":6,"wanted":"stopped"}
            {"actor":{"kind":"detector","name":null},"at":"2023-11-14T22:13:27Z","error":null,"from":"running","kind":"state","reason":"host dev-01 is down","request_id":"0000000000000000000000000000abc1","seq":7,"to":"lost"}
            {"actor":{"kind":"admin","name":"root"},"at":"2023-11-14T22:13:28Z","error":null,"kind":"restart","reason":null,"request_id":"0000000000000000000000000000abc2","seq":8}
            {"actor":{"kind":"agent","name":"dev-01"},"at":"2023-11-14T22:13:29Z","error":null,"kind":"ports_reassigned","reason":null,"request_id":null,"seq":9}
            {"actor":{"kind":"coordinator","name":"1"},"at":"2023-11-14T22:13:30Z","error":null,"kind":"wanted","reason":null,"request_id":"0000000000000000000000000000abc1","seq":10,"wanted":"destroyed"}
            {"actor":{"kind":"policy","name":"idle"},"at":"2023-11-14T22:13:31Z","error":null,"kind":"wanted","reason":null,"request_id":"0000000000000000000000000000abc2","seq":11,"wanted":"running"}
        "#]]
        .assert_eq(&(json.join("\n") + "\n"));
    }

    #[test]
    fn inspect_shows_the_last_few_events_under_the_detail() {
        let detail = crate::output::tests::detail();
        let text = workspace_inspect_text(&detail, &life());
        let under = text.split_once("\n\n").map(|(_, events)| events).unwrap();
        expect![[r#"
            events (the last 5 of 11, oldest first):
            TIME                  ACTOR          EVENT             REASON               REQUEST
            2023-11-14T22:13:27Z  detector       running -> lost   host dev-01 is down  0000000000000000000000000000abc1
            2023-11-14T22:13:28Z  root (admin)   restart           -                    0000000000000000000000000000abc2
            2023-11-14T22:13:29Z  agent dev-01   ports reassigned  -                    -
            2023-11-14T22:13:30Z  coordinator 1  wanted destroyed  -                    0000000000000000000000000000abc1
            2023-11-14T22:13:31Z  policy idle    wanted running    -                    0000000000000000000000000000abc2
        "#]]
        .assert_eq(under);
        assert!(text.starts_with(&workspace_detail_text(&detail)));
        assert_eq!(
            workspace_inspect_text(&detail, &[]),
            workspace_detail_text(&detail),
            "nothing under the detail without events"
        );
        let json = workspace_inspect_json(&detail, &life());
        let seqs: Vec<u64> = json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [7, 8, 9, 10, 11]);
        assert_eq!(json["name"], "api", "the detail's fields stay");
    }

    #[test]
    fn a_repair_summary_names_each_failure() {
        let summary = RepairSummary {
            selected: 3,
            repaired: vec!["a".parse().unwrap()],
            failed: vec![
                (
                    "b".parse().unwrap(),
                    WireError::new(
                        ErrorCode::BackendUnavailable,
                        "host h3 of workspace b is down; its files live there",
                    ),
                ),
                (
                    "c".parse().unwrap(),
                    WireError::new(
                        ErrorCode::WorkspaceStartFailed,
                        "workspace c failed to start: exited with code 1",
                    ),
                ),
            ],
        };
        expect![[r#"
            repaired 1, failed 2
              b: BACKEND_UNAVAILABLE: host h3 of workspace b is down; its files live there
              c: WORKSPACE_START_FAILED: workspace c failed to start: exited with code 1
        "#]]
        .assert_eq(&repair_summary_text(&summary));
        expect![[r#"{"failed":[{"code":"BACKEND_UNAVAILABLE","message":"host h3 of workspace b is down; its files live there","name":"b","request_id":null},{"code":"WORKSPACE_START_FAILED","message":"workspace c failed to start: exited with code 1","name":"c","request_id":null}],"repaired":["a"],"selected":3}"#]]
        .assert_eq(&repair_summary_json(&summary).to_string());
        expect!["no workspace to repair\n"]
            .assert_eq(&repair_summary_text(&RepairSummary::default()));
    }
}
