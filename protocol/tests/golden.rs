//! Golden bytes of the wire format. A failure here means a change would break compatibility with
//! deployed peers: make it a new variant at the end of its enum (or raise `PROTOCOL_VERSION` and
//! write down why in docs/protocol.md), never an edit of an old one. Regenerate only on purpose,
//! with `UPDATE_EXPECT=1 cargo nextest run -p nexus-protocol --test golden`.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use expect_test::{Expect, expect};
use nexus_protocol::clock::Timestamp;
use nexus_protocol::codec::{self, CodecConfig, HELLO_MAGIC, HELLO_REPLY_MAGIC};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::{Identity, IdentityKind, Role};
use nexus_protocol::message::*;
use nexus_protocol::model::*;
use nexus_protocol::policy::*;
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes `message`, compares the bytes with `expect`, and decodes them back to the same value.
fn check<T>(message: &T, expect: Expect)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = codec::encode(message, CodecConfig::default()).unwrap();
    expect.assert_eq(&hex(&frame));
    let (payload, _) = codec::split_frame(&frame, CodecConfig::default())
        .unwrap()
        .unwrap();
    assert_eq!(&codec::decode::<T>(payload).unwrap(), message);
}

fn request(request: Request) -> RequestFrame {
    RequestFrame {
        request_id: RequestId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
        request,
    }
}

fn spec() -> WorkspaceSpec {
    WorkspaceSpec {
        ports: nexus_fixtures::ports(&[3000]),
        env: BTreeMap::from([("K".into(), "V".into())]),
        command: nexus_fixtures::command(&["sleep", "1"]),
        host: Some(nexus_fixtures::host_id("h1")),
        ..nexus_fixtures::spec("api")
    }
}

#[test]
fn hello() {
    let hello = Hello {
        software: "0.1.0".into(),
        role: IdentityKind::Agent,
    };
    let frame = codec::encode_versioned(HELLO_MAGIC, 1, &hello, CodecConfig::default()).unwrap();
    expect!["0000000d4e58484900010530 2e312e3001"].assert_eq(&spaced(&frame, 12));
    let reply = HelloReply::Refused(
        WireError::new(ErrorCode::VersionMismatch, "no")
            .with_detail(ErrorDetail::VersionMismatch { ours: 1, theirs: 2 }),
    );
    let frame =
        codec::encode_versioned(HELLO_REPLY_MAGIC, 1, &reply, CodecConfig::default()).unwrap();
    expect!["000000104e584f4b00010112 026e6f0102010200"].assert_eq(&spaced(&frame, 12));
}

/// Hex with a space after `at` bytes, to show where the fixed prefix ends.
fn spaced(bytes: &[u8], at: usize) -> String {
    format!("{} {}", hex(&bytes[..at]), hex(&bytes[at..]))
}

#[test]
fn requests() {
    check(
        &request(Request::Ping),
        expect!["00000012fe100f0e0d0c0b0a09080706050403020100"],
    );
    check(
        &request(Request::Workspace(WorkspaceRequest::Create(spec()))),
        expect![
            "0000003bfe100f0e0d0c0b0a0908070605040302010200036170690a6465763a6c61746573740001fbb80b01014b0156000205736c65657001310102683100"
        ],
    );
    check(
        &request(Request::Agent(AgentRequest::Heartbeat {
            sequence: 7,
            stats: None,
        })),
        expect!["00000015fe100f0e0d0c0b0a09080706050403020101010700"],
    );
    check(
        &request(Request::Admin(AdminRequest::Hosts)),
        expect!["00000013fe100f0e0d0c0b0a0908070605040302010301"],
    );
    check(
        &request(Request::Stale(StaleRead::Admin(AdminRequest::Hosts))),
        expect!["00000014fe100f0e0d0c0b0a090807060504030201050001"],
    );
    check(
        &request(Request::Peer(PeerRequest::Raft(vec![vec![8, 1], vec![]]))),
        expect!["00000018fe100f0e0d0c0b0a09080706050403020104000202080100"],
    );
    check(
        &request(Request::Admin(AdminRequest::SetHostStatus {
            host: HostId::new("dev-01").unwrap(),
            status: HostStatus::Cordoned,
        })),
        expect!["0000001bfe100f0e0d0c0b0a0908070605040302010305066465762d303103"],
    );
    check(
        &request(Request::Agent(AgentRequest::ContainerStats(vec![
            ContainerStats {
                workspace: Some(WorkspaceName::new("api").unwrap()),
                at: Some(Timestamp(1)),
                cpu_percent: 12.5,
                memory_used_bytes: 1 << 20,
                memory_limit_bytes: 1 << 30,
                network_rx_bytes: 1,
                network_tx_bytes: 2,
                block_read_bytes: 3,
                block_write_bytes: 4,
            },
        ]))),
        expect![
            "0000002dfe100f0e0d0c0b0a0908070605040302010104010103617069010100004841fc00001000fc0000004001020304"
        ],
    );
    check(
        &request(Request::Workspace(WorkspaceRequest::CreateWith {
            spec: spec(),
            scoring: Some(Scoring::Spread),
        })),
        expect![
            "0000003dfe100f0e0d0c0b0a090807060504030201020a036170690a6465763a6c61746573740001fbb80b01014b0156000205736c656570013101026831000101"
        ],
    );
    check(
        &request(Request::Workspace(WorkspaceRequest::Describe(
            WorkspaceName::new("api").unwrap(),
        ))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201020b03617069"],
    );
    check(
        &request(Request::Admin(AdminRequest::SetLimits {
            host: Some(HostId::new("dev-01").unwrap()),
            patch: LimitsPatch {
                max_workspaces_per_host: Some(30),
                scoring: None,
                ..LimitsPatch::default()
            },
        })),
        expect!["00000022fe100f0e0d0c0b0a090807060504030201030801066465762d3031011e0000000000"],
    );
    check(
        &request(Request::Admin(AdminRequest::Limits)),
        expect!["00000013fe100f0e0d0c0b0a0908070605040302010307"],
    );
    check(
        &request(Request::Admin(AdminRequest::Stats)),
        expect!["00000013fe100f0e0d0c0b0a0908070605040302010309"],
    );
    check(
        &request(Request::Admin(AdminRequest::Top)),
        expect!["00000013fe100f0e0d0c0b0a090807060504030201030a"],
    );
}

/// Logs and exec, asked of a workspace's agent, and where the agent serves them.
#[test]
fn host_requests_and_answers() {
    let web = || WorkspaceName::new("web").unwrap();
    check(
        &request(Request::Host(HostRequest::Logs {
            workspace: web(),
            tail: 100,
            follow: true,
        })),
        expect!["00000019fe100f0e0d0c0b0a0908070605040302010600037765626401"],
    );
    check(
        &request(Request::Host(HostRequest::Exec {
            workspace: web(),
            command: vec!["echo".into(), "hi".into()],
        })),
        expect!["00000020fe100f0e0d0c0b0a09080706050403020106010377656202046563686f026869"],
    );
    check(
        &request(Request::Agent(AgentRequest::Serving(
            "10.0.0.5:7401".into(),
        ))),
        expect!["00000021fe100f0e0d0c0b0a09080706050403020101050d31302e302e302e353a37343031"],
    );
    check(
        &request(Request::Workspace(WorkspaceRequest::Endpoint(web()))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201020c03776562"],
    );
    let frame = |result| ResponseFrame {
        request_id: RequestId::from_u128(1),
        result,
    };
    check(
        &frame(Ok(Response::LogLines(vec!["a".into(), "b".into()]))),
        expect!["0000000801000d0201610162"],
    );
    check(
        &frame(Ok(Response::Exec(ExecResult {
            exit_code: 3,
            stdout: b"out\n".to_vec(),
            stderr: vec![],
            truncated: false,
        }))),
        expect!["0000000b01000e06046f75740a0000"],
    );
    check(
        &frame(Ok(Response::Endpoint {
            host: HostId::new("dev-01").unwrap(),
            address: "dev-01:7401".into(),
        })),
        expect!["0000001601000f066465762d30310b6465762d30313a37343031"],
    );
    check(
        &request(Request::Host(HostRequest::Networks)),
        expect!["00000013fe100f0e0d0c0b0a0908070605040302010602"],
    );
    check(
        &request(Request::Admin(AdminRequest::Endpoints)),
        expect!["00000013fe100f0e0d0c0b0a090807060504030201030b"],
    );
    check(
        &frame(Ok(Response::Networks(vec![NetworkView {
            name: "nexus.dev-01.web".into(),
            workspace: Some(web()),
            subnet: Some("10.213.7.0/24".into()),
        }]))),
        expect![
            "0000002901001001106e657875732e6465762d30312e7765620103776562010d31302e3231332e372e302f3234"
        ],
    );
    check(
        &frame(Ok(Response::Endpoints(vec![(
            HostId::new("dev-01").unwrap(),
            "dev-01:7401".into(),
        )]))),
        expect!["0000001701001101066465762d30310b6465762d30313a37343031"],
    );
    check(
        &request(Request::Host(HostRequest::Sync {
            workspace: web(),
            payload: vec![0, 1],
        })),
        expect!["0000001afe100f0e0d0c0b0a090807060504030201060303776562020001"],
    );
    check(
        &frame(Ok(Response::Sync(vec![4]))),
        expect!["000000050100120104"],
    );
}

/// The answers added with the Workspaces issue: limits, fleet stats, usage and a workspace's
/// detail.
#[test]
fn workspace_issue_responses() {
    let frame = |result| ResponseFrame {
        request_id: RequestId::from_u128(1),
        result,
    };
    let host = HostId::new("dev-01").unwrap();
    check(
        &frame(Ok(Response::Limits(LimitsView {
            cluster: Limits::default(),
            hosts: vec![HostLimits {
                host: host.clone(),
                overrides: LimitsPatch {
                    scoring: Some(Scoring::Spread),
                    ..LimitsPatch::default()
                },
                effective: Limits::default(),
            }],
        }))),
        expect![
            "00000026010009320a14fb9001fb90010001066465762d303100000000000101320a14fb9001fb900100"
        ],
    );
    check(
        &frame(Ok(Response::FleetStats(FleetStats {
            hosts: vec![(HostStatus::Ready, 2)],
            workspaces: vec![(WorkspaceState::Running, 3)],
            cpu_promised_millis: 1500,
            cpu_capacity_millis: 64_000,
            memory_promised_bytes: 1 << 30,
            memory_capacity_bytes: 1 << 36,
            ports_allocated: 4,
            ports_total: 24_002,
            operations_in_flight: 1,
        }))),
        expect!["0000002201000a010002010303fbdc05fb00fafc00000040fd000000001000000004fbc25d01"],
    );
    check(
        &frame(Ok(Response::Usage(vec![WorkspaceUsage {
            host: host.clone(),
            owner: Some(UserName::new("ada").unwrap()),
            stats: ContainerStats {
                workspace: Some(WorkspaceName::new("api").unwrap()),
                at: Some(Timestamp(1)),
                cpu_percent: 1.0,
                memory_used_bytes: 1,
                memory_limit_bytes: 2,
                network_rx_bytes: 3,
                network_tx_bytes: 4,
                block_read_bytes: 5,
                block_write_bytes: 6,
            },
        }]))),
        expect!["0000002101000b01066465762d30310103616461010361706901010000803f010203040506"],
    );
    check(
        &frame(Ok(Response::WorkspaceDetail(Box::new(WorkspaceDetail {
            view: WorkspaceView {
                name: WorkspaceName::new("api").unwrap(),
                owner: UserName::new("ada").unwrap(),
                state: WorkspaceState::Failed,
                host: Some(host),
                image: "dev:latest".into(),
                class: ResourceClass::Small,
                ports: vec![PortBinding {
                    container: 3000,
                    host: 20001,
                }],
                created_at: Timestamp(2),
            },
            spec: spec(),
            desired: DesiredRun::Running,
            generation: 3,
            updated_at: Timestamp(4),
            last_error: Some(WireError::new(
                ErrorCode::PortConflict,
                "port 20000 is in use",
            )),
            port_reassigned: true,
        })))),
        expect![
            "0000006d01000c03617069036164610601066465762d30310a6465763a6c61746573740001fbb80bfb214e02036170690a6465763a6c61746573740001fbb80b01014b0156000205736c65657001310102683100000304010314706f727420323030303020697320696e20757365000001"
        ],
    );
}

#[test]
fn responses() {
    let id = RequestId::from_u128(1);
    check(
        &ResponseFrame {
            request_id: id,
            result: Ok(Response::Pong(Pong {
                software: "0.1.0".into(),
                server: Identity::Coordinator(NodeId::new(1).unwrap()),
                client: Identity::User {
                    name: UserName::new("alice").unwrap(),
                    role: Role::Admin,
                },
                time: Timestamp(1_700_000_000_000),
            })),
        },
        expect!["0000001c01000005302e312e3000010205616c69636501fd0068e5cf8b010000"],
    );
    check(
        &ResponseFrame {
            request_id: id,
            result: Err(
                WireError::new(ErrorCode::PortConflict, "port 20001 is taken")
                    .with_detail(ErrorDetail::PortConflict { port: 20001 })
                    .with_request_id(id),
            ),
        },
        expect!["0000001e01010313706f72742032303030312069732074616b656e0100fb214e0101"],
    );
    check(
        &ResponseFrame {
            request_id: id,
            result: Ok(Response::Desired(DesiredState {
                version: 3,
                assignments: vec![Assignment {
                    spec: spec(),
                    owner: UserName::new("bob").unwrap(),
                    generation: 2,
                    run: DesiredRun::Running,
                    ports: vec![PortBinding {
                        container: 3000,
                        host: 20001,
                    }],
                }],
            })),
        },
        expect![
            "0000003a0100030301036170690a6465763a6c61746573740001fbb80b01014b0156000205736c6565700131010268310003626f62020001fbb80bfb214e"
        ],
    );
    check(
        &ResponseFrame {
            request_id: id,
            result: Err(
                WireError::new(ErrorCode::ContainerError, "exited").with_detail(
                    ErrorDetail::ContainerExited {
                        exit_code: 3,
                        oom_killed: false,
                        last_lines: vec!["boom".into()],
                    },
                ),
            ),
        },
        expect!["0000001501010606657869746564010306000104626f6f6d00"],
    );
    check(
        &ResponseFrame {
            request_id: id,
            result: Ok(Response::Desired(DesiredState {
                version: 4,
                assignments: vec![Assignment {
                    spec: spec(),
                    owner: UserName::new("bob").unwrap(),
                    generation: 2,
                    run: DesiredRun::Absent,
                    ports: vec![],
                }],
            })),
        },
        expect![
            "000000340100030401036170690a6465763a6c61746573740001fbb80b01014b0156000205736c6565700131010268310003626f62020200"
        ],
    );
}

#[test]
fn configuration_reloads() {
    use nexus_protocol::debug::{ChangedSetting, ReloadReport};
    check(
        &request(Request::Admin(AdminRequest::ReloadConfig)),
        expect!["00000013fe100f0e0d0c0b0a0908070605040302010316"],
    );
    check(
        &request(Request::Host(HostRequest::ReloadConfig)),
        expect!["00000013fe100f0e0d0c0b0a090807060504030201060c"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Reloaded(ReloadReport {
                source: "agent-h".into(),
                applied: vec![ChangedSetting {
                    key: "log_filter".into(),
                    old: "info".into(),
                    new: "debug".into(),
                }],
                needs_restart: vec!["listen".into()],
                errors: vec!["bad".into()],
            })),
        },
        expect![
            "0000002f010020076167656e742d68010a6c6f675f66696c74657204696e666f05646562756701066c697374656e0103626164"
        ],
    );
}

#[test]
fn lifecycle_activity_and_notices() {
    let name: WorkspaceName = "api".parse().unwrap();
    let activity = Activity {
        at: Timestamp::from_millis(5),
        kind: ActivityKind::Exec,
    };
    check(
        &request(Request::Agent(AgentRequest::Activity(vec![(
            name.clone(),
            activity,
        )]))),
        expect!["0000001afe100f0e0d0c0b0a090807060504030201010701036170690502"],
    );
    check(
        &request(Request::Workspace(WorkspaceRequest::Notices)),
        expect!["00000013fe100f0e0d0c0b0a090807060504030201020f"],
    );
    check(
        &request(Request::Workspace(WorkspaceRequest::Lifecycle(
            name.clone(),
        ))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201021003617069"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Notices(vec![Notice {
                id: 7,
                text: "maintenance".into(),
                audience: NoticeAudience::User("alice".parse().unwrap()),
                source: NoticeSource::Policy {
                    workspace: name.clone(),
                },
                posted_at: Timestamp::from_millis(1),
                until: Some(Timestamp::from_millis(9)),
            }])),
        },
        expect!["0000002001002101070b6d61696e74656e616e63650105616c6963650103617069010109"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Lifecycle(Box::new(LifecycleView {
                workspace: name.clone(),
                last_activity: activity,
                held: true,
                policy: Policy::default(),
                policy_override: PolicyPatch {
                    max_lifetime_secs: Some(0),
                    ..PolicyPatch::default()
                },
                extended_secs: 60,
                next: Some(NextAction {
                    action: PolicyAction::Stop,
                    at: Timestamp::from_millis(9),
                    reason: "inactive for 7 d".into(),
                }),
            }))),
        },
        expect![
            "0000003601002203617069050201fc803a0900fc008d2700fc80510100fb100e00010000003c01000910696e61637469766520666f7220372064"
        ],
    );
}

#[test]
fn lifecycle_events() {
    let event = |seq, kind| nexus_protocol::debug::WorkspaceEvent {
        seq,
        at: Timestamp::from_millis(3),
        actor: nexus_protocol::debug::Actor::Policy("lifetime".into()),
        request_id: None,
        kind,
        reason: Some("r".into()),
        error: None,
    };
    use nexus_protocol::debug::EventKind;
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Events(vec![
                event(1, EventKind::Held),
                event(2, EventKind::Released),
                event(3, EventKind::Extended { by_secs: 60 }),
                event(4, EventKind::Noticed),
            ])),
        },
        expect![
            "0000004d01001604010302086c69666574696d65000601017200020302086c69666574696d65000701017200030302086c69666574696d6500083c01017200040302086c69666574696d65000901017200"
        ],
    );
}

#[test]
fn lifecycle_policies_and_holds() {
    let name: WorkspaceName = "api".parse().unwrap();
    let patch = PolicyPatch {
        inactive_stop_after_secs: Some(30),
        max_lifetime_secs: None,
        first_notice_secs: Some(3),
        last_notice_secs: None,
    };
    check(
        &request(Request::Workspace(WorkspaceRequest::Hold(name.clone()))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201021103617069"],
    );
    check(
        &request(Request::Workspace(WorkspaceRequest::Release(name.clone()))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201021203617069"],
    );
    check(
        &request(Request::Admin(AdminRequest::Policies)),
        expect!["00000013fe100f0e0d0c0b0a090807060504030201031c"],
    );
    check(
        &request(Request::Admin(AdminRequest::SetPolicy {
            scope: PolicyScope::Workspace(name.clone()),
            patch,
        })),
        expect!["0000001efe100f0e0d0c0b0a090807060504030201031d0203617069011e00010300"],
    );
    check(
        &request(Request::Admin(AdminRequest::SetPolicy {
            scope: PolicyScope::Host("h1".parse().unwrap()),
            patch,
        })),
        expect!["0000001dfe100f0e0d0c0b0a090807060504030201031d01026831011e00010300"],
    );
    check(
        &request(Request::Admin(AdminRequest::ExtendLifetime {
            name: name.clone(),
            by_secs: 86_400,
        })),
        expect!["0000001cfe100f0e0d0c0b0a090807060504030201031e03617069fc80510100"],
    );
    check(
        &request(Request::Admin(AdminRequest::StopIdle {
            idle_for_secs: 86_400,
        })),
        expect!["00000018fe100f0e0d0c0b0a090807060504030201031ffc80510100"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Policies(Box::new(PoliciesView {
                cluster: Policy::default(),
                hosts: vec![("h1".parse().unwrap(), patch)],
                workspaces: vec![(name, PolicyPatch::default())],
            }))),
        },
        expect![
            "00000028010025fc803a0900fc008d2700fc80510100fb100e01026831011e00010300010361706900000000"
        ],
    );
}

#[test]
fn host_maintenance() {
    use nexus_protocol::maintenance::*;
    let asked = MaintenanceRequest {
        prune_images: true,
        prune_volumes: false,
        compact: true,
        dry_run: true,
    };
    check(
        &request(Request::Host(HostRequest::Maintain(asked))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201060d01000101"],
    );
    check(
        &request(Request::Admin(AdminRequest::Maintain(asked))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201031701000101"],
    );
    check(
        &request(Request::Admin(AdminRequest::MaintenanceSchedule(Some(
            MaintenanceSchedule {
                at: Some(WeeklyTime {
                    day: Weekday::Sun,
                    hour: 2,
                    minute: 0,
                }),
            },
        )))),
        expect!["00000018fe100f0e0d0c0b0a09080706050403020103180101060200"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Maintained(MaintenanceReport {
                source: "agent-h".into(),
                dry_run: false,
                removed: vec![Reclaimed {
                    kind: ReclaimedKind::Image,
                    name: "sha256:ab".into(),
                    bytes: 300,
                }],
                kept: 2,
                errors: vec!["busy".into()],
                at: Timestamp::from_millis(5),
                unlisted: 1,
                unlisted_bytes: 7,
            })),
        },
        expect![
            "00000025010023076167656e742d68000100097368613235363a6162fb2c0102010462757379050107"
        ],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Maintenance(MaintenanceStatus {
                schedule: MaintenanceSchedule { at: None },
                next: None,
                last: Some(MaintenanceSummary {
                    at: Timestamp::from_millis(5),
                    daemons: vec![
                        ("agent-h".into(), Ok(300)),
                        ("coordinator-1".into(), Err("TIMEOUT".into())),
                    ],
                }),
            })),
        },
        expect![
            "0000002b0100240000010502076167656e742d6800fb2c010d636f6f7264696e61746f722d31010754494d454f5554"
        ],
    );
}

#[test]
fn admin_notices() {
    check(
        &request(Request::Admin(AdminRequest::PostNotice {
            text: "maintenance".into(),
            until: Some(Timestamp::from_millis(9)),
            user: Some("alice".parse().unwrap()),
        })),
        expect![
            "00000028fe100f0e0d0c0b0a09080706050403020103190b6d61696e74656e616e636501090105616c696365"
        ],
    );
    check(
        &request(Request::Admin(AdminRequest::Notices)),
        expect!["00000013fe100f0e0d0c0b0a090807060504030201031a"],
    );
    check(
        &request(Request::Admin(AdminRequest::ClearNotices(Some(vec![3, 7])))),
        expect!["00000017fe100f0e0d0c0b0a090807060504030201031b01020307"],
    );
    check(
        &request(Request::Admin(AdminRequest::ClearNotices(None))),
        expect!["00000014fe100f0e0d0c0b0a090807060504030201031b00"],
    );
}

/// Git worktrees and the credential store (issue 24).
#[test]
fn worktrees_and_credentials() {
    use nexus_protocol::credentials::*;
    use nexus_protocol::git::*;
    let source = RepoSource {
        url: "http://h/r.git".into(),
        base: RepoBase::Branch("main".into()),
    };
    let mut with_repo = spec();
    with_repo.repo = Some(source);
    check(
        &request(Request::Workspace(WorkspaceRequest::Create(with_repo))),
        expect![
            "00000050fe100f0e0d0c0b0a0908070605040302010200036170690a6465763a6c61746573740001fbb80b01014b0156000205736c656570013101026831010e687474703a2f2f682f722e67697401046d61696e"
        ],
    );
    let spec = CredentialSpec {
        name: "ci".into(),
        kind: CredentialKind::Git,
        scope: "http://h/".into(),
        username: "bot".into(),
    };
    check(
        &request(Request::Admin(AdminRequest::SetCredential {
            spec: spec.clone(),
            secret: Secret::new("pw".into()),
        })),
        expect![
            "00000028fe100f0e0d0c0b0a09080706050403020103200263690009687474703a2f2f682f03626f74027077"
        ],
    );
    check(
        &request(Request::Agent(AgentRequest::Credential(CredentialAsk {
            workspace: "api".parse().unwrap(),
            purpose: CredentialPurpose::Registry {
                server: "r:5".into(),
            },
        }))),
        expect!["0000001cfe100f0e0d0c0b0a0908070605040302010108036170690103723a35"],
    );
    check(
        &request(Request::Host(HostRequest::Worktrees { repair: true })),
        expect!["00000014fe100f0e0d0c0b0a090807060504030201060f01"],
    );
    check(
        &request(Request::Admin(AdminRequest::VerifyWorktrees {
            host: None,
            repair: false,
        })),
        expect!["00000015fe100f0e0d0c0b0a09080706050403020103270000"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Credential(Some(GrantedCredential {
                name: "ci".into(),
                username: "bot".into(),
                secret: Secret::new("pw".into()),
            }))),
        },
        expect!["0000000e0100260102636903626f74027077"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Worktree {
                facts: Some(WorktreeFacts {
                    branch: "nexus/api".into(),
                    base_commit: "ab".into(),
                }),
                status: None,
            }),
        },
        expect!["0000001201002c01096e657875732f61706902616200"],
    );
}

/// Workspaces from a repository (issue 24): a kept branch's notice.
#[test]
fn kept_branch_notices() {
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::Notices(vec![Notice {
                id: 3,
                text: "kept".into(),
                audience: NoticeAudience::User("alice".parse().unwrap()),
                source: NoticeSource::KeptBranch {
                    workspace: "api".parse().unwrap(),
                    host: "h1".parse().unwrap(),
                },
                posted_at: Timestamp::from_millis(1),
                until: None,
            }])),
        },
        expect!["0000001b0100210103046b6570740105616c69636503036170690268310100"],
    );
}

/// Backups after a CA rotation: the cluster's identity, asked by the CLI.
#[test]
fn cluster_identity() {
    check(
        &request(Request::Admin(AdminRequest::ClusterIdentity)),
        expect!["00000013fe100f0e0d0c0b0a0908070605040302010331"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::ClusterIdentity("ab".into())),
        },
        expect!["00000006010035026162"],
    );
}

/// Log entries of a newer version only once every member applies them: a member's answer.
#[test]
fn entry_version() {
    check(
        &request(Request::Peer(PeerRequest::EntryVersion)),
        expect!["00000013fe100f0e0d0c0b0a0908070605040302010403"],
    );
    check(
        &ResponseFrame {
            request_id: RequestId::from_u128(1),
            result: Ok(Response::EntryVersion(2)),
        },
        expect!["0000000401003602"],
    );
}
