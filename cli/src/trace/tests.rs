//! The trace's assembly, from records as the daemons would answer them.

use expect_test::expect;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{LogLevel, LogRecord, SpanRecord, WorkspaceEvent};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::{HostId, UserName, WorkspaceName};

use super::*;

const ID: RequestId = RequestId::from_u128(0xabc);
/// 2026-12-03T09:00:00Z, in microseconds.
const T0: u64 = 1_796_288_400_000_000;

fn hop(source: &str, at: u64, name: &str, took: u64, outcome: &str, kind: &str) -> LogRecord {
    let mut fields = vec![("hop".to_string(), name.to_string())];
    if !kind.is_empty() {
        fields.push(("kind".to_string(), kind.to_string()));
    }
    LogRecord {
        at_us: T0 + at,
        level: LogLevel::Info,
        target: "nexus".into(),
        source: source.into(),
        request_id: Some(ID),
        workspace: Some(WorkspaceName::new("api").unwrap()),
        message: String::new(),
        fields,
        span: Some(SpanRecord {
            name: name.into(),
            duration_us: took,
            outcome: (!outcome.is_empty()).then(|| outcome.to_string()),
        }),
    }
}

fn note(source: &str, at: u64, level: LogLevel, message: &str) -> LogRecord {
    LogRecord {
        at_us: T0 + at,
        level,
        target: "nexus_agent::reconcile".into(),
        source: source.into(),
        request_id: Some(ID),
        workspace: Some(WorkspaceName::new("api").unwrap()),
        message: message.into(),
        fields: vec![],
        span: None,
    }
}

fn answer(source: &str, records: Vec<LogRecord>) -> Answer {
    Answer {
        source: source.into(),
        records: Ok(records),
    }
}

fn gathered(answers: Vec<Answer>, record: Option<RequestRecord>) -> Gathered {
    Gathered {
        request_id: ID,
        answers,
        record: Ok(record),
    }
}

/// `(offset_us, source, title, outcome)` of each hop, in order.
fn hops(trace: &Trace) -> Vec<(u64, &str, String, &str)> {
    trace
        .hops
        .iter()
        .map(|h| {
            (
                h.offset_us,
                h.source.as_str(),
                h.title(),
                h.outcome.as_deref().unwrap_or("-"),
            )
        })
        .collect()
}

const PULL_FAILED: &str = "WORKSPACE_START_FAILED: no such image dev:nope";

/// A create that failed on the agent: the coordinators' hops, then the agent's.
fn failed_create() -> Vec<Answer> {
    vec![
        answer(
            "agent-h1",
            vec![
                hop(
                    "agent-h1",
                    9_000,
                    "agent.reconcile",
                    4_000,
                    PULL_FAILED,
                    "launch",
                ),
                hop(
                    "agent-h1",
                    9_100,
                    "agent.step",
                    3_800,
                    PULL_FAILED,
                    "launch",
                ),
                hop(
                    "agent-h1",
                    9_200,
                    "agent.engine",
                    3_500,
                    PULL_FAILED,
                    "pull",
                ),
                note(
                    "agent-h1",
                    12_750,
                    LogLevel::Error,
                    "no such image dev:nope",
                ),
                hop("agent-h1", 14_000, "agent.report", 1_000, "ok", "failed"),
            ],
        ),
        answer(
            "coordinator-2",
            vec![hop(
                "coordinator-2",
                3_000,
                "coordinator.apply",
                50,
                "ok",
                "place",
            )],
        ),
        answer(
            "coordinator-1",
            vec![
                hop(
                    "coordinator-1",
                    0,
                    "coordinator.request",
                    3_500,
                    "ok",
                    "workspace_create",
                ),
                hop(
                    "coordinator-1",
                    200,
                    "coordinator.propose",
                    3_000,
                    "ok",
                    "batch of 1",
                ),
                hop(
                    "coordinator-1",
                    2_900,
                    "coordinator.apply",
                    60,
                    "ok",
                    "place",
                ),
                hop(
                    "coordinator-1",
                    5_000,
                    "coordinator.push",
                    100,
                    "ok",
                    "version 7",
                ),
            ],
        ),
    ]
}

#[test]
fn hops_are_in_order_of_their_start_with_offsets_from_the_first() {
    let trace = assemble(gathered(failed_create(), None));
    assert_eq!(trace.start_us, T0);
    assert_eq!(
        hops(&trace),
        vec![
            (
                0,
                "coordinator-1",
                "coordinator.request (workspace_create)".into(),
                "ok"
            ),
            (
                200,
                "coordinator-1",
                "coordinator.propose (batch of 1)".into(),
                "ok"
            ),
            (
                2_900,
                "coordinator-1",
                "coordinator.apply (place)".into(),
                "ok"
            ),
            (
                3_000,
                "coordinator-2",
                "coordinator.apply (place)".into(),
                "ok"
            ),
            (
                5_000,
                "coordinator-1",
                "coordinator.push (version 7)".into(),
                "ok"
            ),
            (
                9_000,
                "agent-h1",
                "agent.reconcile (launch)".into(),
                PULL_FAILED
            ),
            (9_100, "agent-h1", "agent.step (launch)".into(), PULL_FAILED),
            (9_200, "agent-h1", "agent.engine (pull)".into(), PULL_FAILED),
            (14_000, "agent-h1", "agent.report (failed)".into(), "ok"),
        ]
    );
    assert_eq!(trace.notes.len(), 1);
    assert_eq!(trace.notes[0].offset_us, 12_750);
    assert!(trace.unreachable.is_empty());
}

#[test]
fn a_request_fails_where_its_innermost_failed_hop_ended() {
    let trace = assemble(gathered(failed_create(), None));
    assert_eq!(
        trace.failed,
        Some(Failure {
            source: "agent-h1".into(),
            at: "agent.engine (pull)".into(),
            offset_us: 9_200,
            error: PULL_FAILED.into(),
        })
    );
}

#[test]
fn a_hop_that_failed_then_worked_when_tried_again_is_no_failure() {
    let network = "NETWORK_ERROR: coordinator-1 does not answer";
    let answers = vec![answer(
        "coordinator-2",
        vec![
            hop(
                "coordinator-2",
                0,
                "coordinator.request",
                900,
                "ok",
                "workspace_stop",
            ),
            hop(
                "coordinator-2",
                10,
                "coordinator.forward",
                300,
                network,
                "to coordinator-1",
            ),
            hop(
                "coordinator-2",
                400,
                "coordinator.forward",
                300,
                "ok",
                "to coordinator-1",
            ),
        ],
    )];
    let trace = assemble(gathered(answers, None));
    assert_eq!(trace.failed, None);
    // The same failure with no success after it is where the request failed.
    let answers = vec![answer(
        "coordinator-2",
        vec![
            hop(
                "coordinator-2",
                0,
                "coordinator.request",
                900,
                network,
                "workspace_stop",
            ),
            hop(
                "coordinator-2",
                10,
                "coordinator.forward",
                300,
                network,
                "to coordinator-1",
            ),
            hop(
                "coordinator-2",
                400,
                "coordinator.forward",
                300,
                network,
                "to coordinator-1",
            ),
        ],
    )];
    let failed = assemble(gathered(answers, None)).failed.unwrap();
    assert_eq!(failed.at, "coordinator.forward (to coordinator-1)");
    assert_eq!(failed.offset_us, 400);
}

/// A create whose client first asked coordinator-3 mid-election (refused there, its proposal
/// too) and then asked again at coordinator-1, whose push to the agent was cut by a watch that
/// ended, and made again by coordinator-2 on the agent's next watch.
fn retried_on_other_coordinators() -> Vec<Answer> {
    let not_leader = "NOT_LEADER: no leader is known";
    let cut = "NETWORK_ERROR: host h1's watch ended before the push";
    let mut answers = failed_create();
    answers.push(answer(
        "coordinator-3",
        vec![
            hop(
                "coordinator-3",
                0,
                "coordinator.request",
                400,
                not_leader,
                "workspace_create",
            ),
            hop(
                "coordinator-3",
                10,
                "coordinator.propose",
                300,
                not_leader,
                "batch of 1",
            ),
        ],
    ));
    for answer in &mut answers {
        let shift = |records: &mut Vec<LogRecord>| {
            for record in records {
                record.at_us += 1_000;
            }
        };
        if answer.source == "coordinator-1" || answer.source.starts_with("agent") {
            shift(answer.records.as_mut().unwrap());
        }
        if answer.source == "coordinator-1" {
            answer.records.as_mut().unwrap().push(hop(
                "coordinator-1",
                5_900,
                "coordinator.push",
                100,
                cut,
                "version 7",
            ));
        }
        if answer.source == "coordinator-2" {
            answer.records.as_mut().unwrap().push(hop(
                "coordinator-2",
                8_000,
                "coordinator.push",
                100,
                "ok",
                "version 7",
            ));
        }
    }
    answers
}

#[test]
fn what_failed_on_one_coordinator_and_worked_on_another_is_no_failure() {
    let trace = assemble(gathered(retried_on_other_coordinators(), None));
    let failed = trace.failed.unwrap();
    assert_eq!(failed.source, "agent-h1");
    assert_eq!(failed.at, "agent.engine (pull)");
    assert_eq!(failed.error, PULL_FAILED);
}

#[test]
fn an_agents_failure_before_the_clients_last_attempt_still_counts() {
    // The client asked again (a timeout) after the agent had already failed: the state, not the
    // client's attempt, drove the agent, so its failure stands.
    let mut answers = failed_create();
    answers.push(answer(
        "coordinator-3",
        vec![hop(
            "coordinator-3",
            20_000,
            "coordinator.request",
            100,
            "ok",
            "workspace_create",
        )],
    ));
    let failed = assemble(gathered(answers, None)).failed.unwrap();
    assert_eq!(
        (failed.source.as_str(), failed.offset_us),
        ("agent-h1", 9_200)
    );
    // The follower's refusal, then the agent's failure, the leader that took the retry being
    // dead (its records out of sight): the agent's failure is where it failed.
    let answers = vec![
        answer(
            "coordinator-3",
            vec![hop(
                "coordinator-3",
                0,
                "coordinator.request",
                400,
                "NOT_LEADER: coordinator 3 is not the leader; 1 is",
                "workspace_create",
            )],
        ),
        failed_create().remove(0),
    ];
    let failed = assemble(gathered(answers, None)).failed.unwrap();
    assert_eq!(failed.source, "agent-h1");
    // Without the agent's failure, the earlier attempt's refusal on a coordinator is no failure.
    let answers = vec![
        answer(
            "coordinator-3",
            vec![hop(
                "coordinator-3",
                0,
                "coordinator.request",
                400,
                "NOT_LEADER: no leader is known",
                "workspace_create",
            )],
        ),
        answer(
            "coordinator-1",
            vec![hop(
                "coordinator-1",
                500,
                "coordinator.request",
                400,
                "ok",
                "workspace_create",
            )],
        ),
    ];
    assert_eq!(assemble(gathered(answers, None)).failed, None);
}

#[test]
fn sources_that_did_not_answer_are_named_and_the_rest_is_shown() {
    let mut answers = failed_create();
    answers.push(Answer {
        source: "coordinator-3".into(),
        records: Err(WireError::new(
            ErrorCode::NetworkError,
            "no answer within 5 s",
        )),
    });
    let trace = assemble(Gathered {
        request_id: ID,
        answers,
        record: Err(WireError::new(ErrorCode::Unsupported, "not served yet")),
    });
    assert_eq!(trace.hops.len(), 9);
    assert_eq!(
        trace.unreachable,
        vec![
            (
                "coordinator-3".to_string(),
                "NETWORK_ERROR: no answer within 5 s".to_string()
            ),
            (
                STATE_SOURCE.to_string(),
                "UNSUPPORTED: not served yet".to_string()
            ),
        ]
    );
}

fn event(at_ms: u64, kind: EventKind, error: Option<WireError>) -> (WorkspaceName, WorkspaceEvent) {
    (
        WorkspaceName::new("api").unwrap(),
        WorkspaceEvent {
            seq: 1,
            at: Timestamp::from_millis(at_ms),
            actor: Actor::Identity(Identity::User {
                name: UserName::new("ada").unwrap(),
                role: Role::User,
            }),
            request_id: Some(ID),
            kind,
            reason: None,
            error,
        },
    )
}

#[test]
fn the_states_events_are_instants_on_the_same_timeline() {
    // Proposed a millisecond before the first hop that was kept (the records of the node that
    // took the request were lost with it).
    let answers = vec![answer(
        "coordinator-2",
        vec![hop(
            "coordinator-2",
            1_000,
            "coordinator.apply",
            50,
            "ok",
            "place",
        )],
    )];
    let record = RequestRecord {
        at: Timestamp::from_millis(T0 / 1_000),
        rejected: None,
        events: vec![
            event(
                T0 / 1_000 + 1,
                EventKind::Created {
                    host: HostId::new("h1").unwrap(),
                },
                None,
            ),
            event(
                T0 / 1_000 + 20,
                EventKind::State {
                    from: nexus_protocol::model::WorkspaceState::Starting,
                    to: nexus_protocol::model::WorkspaceState::Failed,
                },
                Some(WireError::new(
                    ErrorCode::WorkspaceStartFailed,
                    "no such image",
                )),
            ),
        ],
    };
    let trace = assemble(gathered(answers, Some(record)));
    assert_eq!(trace.start_us, T0);
    assert_eq!(trace.hops[0].offset_us, 1_000);
    let events: Vec<(u64, &str)> = trace
        .events
        .iter()
        .map(|e| (e.offset_us, e.what.as_str()))
        .collect();
    assert_eq!(
        events,
        vec![
            (1_000, "created on host h1"),
            (20_000, "starting -> failed")
        ]
    );
    // No hop failed: the failure is the event's.
    let failed = trace.failed.unwrap();
    assert_eq!(failed.at, "event api");
    assert_eq!(failed.error, "WORKSPACE_START_FAILED: no such image");
}

#[test]
fn a_request_the_state_refused_failed_there() {
    let record = RequestRecord {
        at: Timestamp::from_millis(T0 / 1_000),
        rejected: Some(WireError::new(
            ErrorCode::WorkspaceAlreadyExists,
            "workspace api exists",
        )),
        events: vec![],
    };
    let trace = assemble(gathered(
        vec![answer("coordinator-1", vec![])],
        Some(record),
    ));
    assert!(!trace.is_empty());
    let failed = trace.failed.unwrap();
    assert_eq!(failed.source, STATE_SOURCE);
    assert_eq!(
        failed.error,
        "WORKSPACE_ALREADY_EXISTS: workspace api exists"
    );
}

#[test]
fn without_a_failed_hop_an_error_record_says_where() {
    let mut ended = note("agent-h1", 7, LogLevel::Debug, "the command ended");
    ended.fields = vec![
        ("request_id".into(), ID.to_string()),
        ("exit_code".into(), "3".into()),
        ("took_ms".into(), "12".into()),
    ];
    let answers = vec![answer(
        "agent-h1",
        vec![
            note("agent-h1", 5, LogLevel::Info, "exec"),
            ended,
            note("agent-h1", 9, LogLevel::Error, "the engine went away"),
        ],
    )];
    let trace = assemble(gathered(answers, None));
    // A note shows its fields, but not those the timeline has columns for.
    assert_eq!(
        trace.notes[1].message,
        "the command ended (exit_code=3, took_ms=12)"
    );
    let failed = trace.failed.unwrap();
    assert_eq!(failed.source, "agent-h1");
    assert_eq!(failed.at, "log");
    assert_eq!(failed.offset_us, 4);
}

#[test]
fn nothing_known_is_an_empty_trace_and_twice_told_is_once() {
    let trace = assemble(gathered(
        vec![answer("coordinator-1", vec![]), answer("agent-h1", vec![])],
        None,
    ));
    assert!(trace.is_empty());
    assert_eq!(trace.failed, None);
    assert_eq!(
        trace_text(&trace),
        "request 00000000000000000000000000000abc: no records found\n"
    );
    // One coordinator reached at two addresses answers twice alike.
    let records = vec![hop("coordinator-1", 0, "coordinator.request", 5, "ok", "")];
    let trace = assemble(gathered(
        vec![
            answer("coordinator-1", records.clone()),
            answer("coordinator-1", records),
        ],
        None,
    ));
    assert_eq!(trace.hops.len(), 1);
}

#[test]
fn the_timeline_reads_for_people_and_scripts() {
    let mut answers = failed_create();
    answers.push(Answer {
        source: "coordinator-3".into(),
        records: Err(WireError::new(ErrorCode::NetworkError, "no answer")),
    });
    let trace = assemble(gathered(answers, None));
    expect![[r#"
        request 00000000000000000000000000000abc, from 2026-12-03T09:00:00Z
        +OFFSET  DURATION  SOURCE         HOP                                           OUTCOME
        +0.000s  3.5ms     coordinator-1  coordinator.request (workspace_create) [api]  ok
        +0.000s  3.0ms     coordinator-1  coordinator.propose (batch of 1) [api]        ok
        +0.002s  60us      coordinator-1  coordinator.apply (place) [api]               ok
        +0.003s  50us      coordinator-2  coordinator.apply (place) [api]               ok
        +0.005s  100us     coordinator-1  coordinator.push (version 7) [api]            ok
        +0.009s  4.0ms     agent-h1       agent.reconcile (launch) [api]                WORKSPACE_START_FAILED: no such image dev:nope
        +0.009s  3.8ms     agent-h1       agent.step (launch) [api]                     WORKSPACE_START_FAILED: no such image dev:nope
        +0.009s  3.5ms     agent-h1       agent.engine (pull) [api]                     WORKSPACE_START_FAILED: no such image dev:nope
        +0.012s            agent-h1       ERROR [api]                                   no such image dev:nope
        +0.014s  1.0ms     agent-h1       agent.report (failed) [api]                   ok
        failed at agent.engine (pull) on agent-h1, +0.009s: WORKSPACE_START_FAILED: no such image dev:nope
        no records from coordinator-3: NETWORK_ERROR: no answer
    "#]]
    .assert_eq(&trace_text(&trace));
    let json = trace_json(&trace);
    expect![[r#"{"detail":"pull","duration_us":3500,"hop":"agent.engine","offset_us":9200,"outcome":"WORKSPACE_START_FAILED: no such image dev:nope","source":"agent-h1","workspace":"api"}"#]]
    .assert_eq(&json["hops"][7].to_string());
    expect![[r#"{"at":"agent.engine (pull)","error":"WORKSPACE_START_FAILED: no such image dev:nope","offset_us":9200,"source":"agent-h1"}"#]]
    .assert_eq(&json["failed"].to_string());
    assert_eq!(json["request_id"], "00000000000000000000000000000abc");
    assert_eq!(json["start"], "2026-12-03T09:00:00Z");
    assert_eq!(json["unreachable"][0]["source"], "coordinator-3");
}
