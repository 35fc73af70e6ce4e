//! A real agent's link (a hollow host) against a stand-in leader over real QUIC: a report
//! refused because the cluster has the host marked down (`HOST_DOWN`, a report that raced the
//! marking) is not lost. The agent keeps it, and sends it again on the same session once a
//! heartbeat sent after the refusal has returned the host.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{
    AgentRequest, Assignment, DesiredRun, DesiredState, Request, Response,
};
use nexus_protocol::transport::{AcceptPolicy, Handler, Peer, Reply, Server, TransportConfig};
use nexus_protocol::{RequestId, UserName};
use nexus_tests::eventually;
use nexus_tests::fleet::{FleetOptions, HollowFleet};
use nexus_tests::pki::{self, TestPki};
use tokio::sync::mpsc;

/// What the stand-in leader saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Register,
    Heartbeat,
    /// A heartbeat that returned the host from down.
    Returned,
    Refused,
    Taken,
}

/// A leader that assigns one workspace, marks the host down as the first report arrives (the
/// report loses the race and is refused), and returns the host at its next heartbeat.
#[derive(Default)]
struct StandIn {
    seen: Mutex<Vec<Seen>>,
    down: AtomicBool,
    refused_one: AtomicBool,
}

impl StandIn {
    fn saw(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Handler for StandIn {
    async fn handle(&self, _peer: &Peer, _id: RequestId, request: Request) -> Reply {
        let Request::Agent(request) = request else {
            return Reply::Once(Err(WireError::new(ErrorCode::Unsupported, "agents only")));
        };
        match request {
            AgentRequest::Register(info) => {
                self.saw(Seen::Register);
                Reply::Once(Ok(Response::Registered {
                    host_id: info.host_id,
                }))
            }
            AgentRequest::Heartbeat { .. } => {
                if self.down.swap(false, Ordering::SeqCst) {
                    self.saw(Seen::Returned);
                } else {
                    self.saw(Seen::Heartbeat);
                }
                Reply::Once(Ok(Response::Ack))
            }
            AgentRequest::WatchDesired { .. } | AgentRequest::WatchDesiredCauses { .. } => {
                let (send, receive) = mpsc::channel(2);
                tokio::spawn(async move {
                    let state = DesiredState {
                        version: 1,
                        assignments: vec![Assignment {
                            spec: nexus_fixtures::spec("w"),
                            owner: UserName::new("ada").unwrap(),
                            generation: 1,
                            run: DesiredRun::Running,
                            ports: vec![],
                        }],
                    };
                    let push = Response::DesiredWithCauses {
                        state,
                        causes: vec![],
                    };
                    if send.send(Box::new(Ok(push))).await.is_ok() {
                        send.closed().await;
                    }
                });
                Reply::Stream(receive)
            }
            AgentRequest::ReportObserved(observed) if !observed.is_empty() => {
                if !self.refused_one.swap(true, Ordering::SeqCst) {
                    // The host is marked down just before this report is applied.
                    self.down.store(true, Ordering::SeqCst);
                }
                if self.down.load(Ordering::SeqCst) {
                    self.saw(Seen::Refused);
                    return Reply::Once(Err(WireError::new(
                        ErrorCode::HostDown,
                        "host is marked down",
                    )));
                }
                self.saw(Seen::Taken);
                Reply::Once(Ok(Response::Ack))
            }
            _ => Reply::Once(Ok(Response::Ack)),
        }
    }
}

#[tokio::test]
async fn a_report_refused_for_a_down_host_is_sent_again_after_the_next_heartbeat() {
    let pki = TestPki::new();
    let credentials = pki.issue(&pki::coordinator(1));
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &credentials,
        AcceptPolicy::everyone(),
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    let leader = std::sync::Arc::new(StandIn::default());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(leader.clone(), async {
        let _ = stopped.await;
    }));
    let options = FleetOptions {
        prefix: "reports".into(),
        hosts: 1,
        heartbeat_interval: Duration::from_millis(300),
        ..FleetOptions::default()
    };
    let _fleet = HollowFleet::start(&pki, &[address], &options).await;
    // Well within the unchanged report's 30 s refresh: a few heartbeats.
    let seen = eventually(
        "the refused report taken after the host returned",
        Duration::from_secs(15),
        || async {
            let seen = leader.seen();
            seen.contains(&Seen::Taken).then_some(seen)
        },
    )
    .await;
    let refused = seen.iter().position(|s| *s == Seen::Refused).unwrap();
    let returned = seen.iter().position(|s| *s == Seen::Returned).unwrap();
    let taken = seen.iter().position(|s| *s == Seen::Taken).unwrap();
    assert!(refused < returned && returned < taken, "{seen:?}");
    assert_eq!(
        seen.iter().filter(|s| **s == Seen::Register).count(),
        1,
        "sent again on the same session, not after reconnecting: {seen:?}"
    );
}
