//! How the CLI waits for a workspace's host (`nexus_cli::commands::workspace::wait_for`), against
//! a stand-in coordinator on loopback (real QUIC and mTLS): it watches the workspace and asks
//! nothing more while the watch tells it; it asks when a watch is quiet, and asks from then on
//! when a watch ends or cannot start (an earlier release, the most watches at once). A refusal a
//! request would meet too is the answer, with nothing asked, and so is a workspace gone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_cli::commands::workspace::{Goal, wait_for};
use nexus_cli::error::CliError;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{DesiredRun, Request, Response, WorkspaceDetail, WorkspaceRequest};
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::transport::{Handler, Peer, Reply, Update};
use nexus_protocol::{RequestId, clock};
use nexus_tests::pki::TestPki;
use nexus_tests::stand_in;

/// How the stand-in answers a watch. Asked for the workspace, it says `scheduled` the first time
/// and `running` after.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// `scheduled`, then `running`.
    Tells,
    /// `scheduled`, then nothing, the stream kept open.
    GoesQuiet,
    /// `scheduled`, then the stream ends.
    Ends,
    /// Refused with this code.
    Refused(ErrorCode),
    /// `scheduled`, then `WORKSPACE_NOT_FOUND`: the workspace is gone.
    Gone,
}

struct StandIn {
    watch: Watch,
    /// Each request as it came: `watch`, `describe`.
    asked: Mutex<Vec<&'static str>>,
    /// The quiet watches' senders, kept so their streams stay open.
    quiet: Mutex<Vec<tokio::sync::mpsc::Sender<Update>>>,
}

fn detail(state: WorkspaceState) -> Response {
    let spec = nexus_fixtures::spec("w");
    Response::WorkspaceDetail(Box::new(WorkspaceDetail {
        view: nexus_protocol::model::WorkspaceView {
            name: spec.name.clone(),
            owner: "alice".parse().unwrap(),
            state,
            host: Some(nexus_fixtures::host_id("h1")),
            image: spec.image.clone(),
            class: spec.class,
            ports: Vec::new(),
            created_at: clock::now(),
        },
        spec,
        desired: DesiredRun::Running,
        generation: 1,
        updated_at: clock::now(),
        last_error: None,
        port_reassigned: false,
    }))
}

impl Handler for StandIn {
    async fn handle(&self, _peer: &Peer, _id: RequestId, request: Request) -> Reply {
        let asked = |what| {
            let mut asked = self.asked.lock().unwrap();
            asked.push(what);
            asked.iter().filter(|a| **a == what).count()
        };
        match request {
            Request::Workspace(WorkspaceRequest::Watch(_)) => {
                asked("watch");
                let updates: Vec<Result<Response, WireError>> = match self.watch {
                    Watch::Tells => vec![
                        Ok(detail(WorkspaceState::Scheduled)),
                        Ok(detail(WorkspaceState::Running)),
                    ],
                    Watch::GoesQuiet | Watch::Ends => vec![Ok(detail(WorkspaceState::Scheduled))],
                    Watch::Gone => vec![
                        Ok(detail(WorkspaceState::Scheduled)),
                        Err(WireError::new(
                            ErrorCode::WorkspaceNotFound,
                            "no workspace w",
                        )),
                    ],
                    Watch::Refused(code) => {
                        return Reply::Once(Err(WireError::new(code, "refused by the stand-in")));
                    }
                };
                let (sender, stream) = tokio::sync::mpsc::channel::<Update>(8);
                for update in updates {
                    sender.try_send(Box::new(update)).unwrap();
                }
                if self.watch == Watch::GoesQuiet {
                    self.quiet.lock().unwrap().push(sender);
                }
                Reply::Stream(stream)
            }
            Request::Workspace(WorkspaceRequest::Describe(_)) => {
                let state = if asked("describe") == 1 {
                    WorkspaceState::Scheduled
                } else {
                    WorkspaceState::Running
                };
                Reply::Once(Ok(detail(state)))
            }
            _ => Reply::Once(Err(WireError::new(ErrorCode::Unsupported, "not here"))),
        }
    }
}

/// The CLI's wait for `w` to run against a stand-in whose watch goes as `watch`: its outcome,
/// what the stand-in was asked and how long it took.
async fn waited(
    pki: &TestPki,
    watch: Watch,
) -> (
    Result<WorkspaceState, CliError>,
    Vec<&'static str>,
    Duration,
) {
    let (outcome, asked, took) = waited_for(pki, watch, Goal::Running).await;
    (
        outcome.map(|detail| detail.unwrap().view.state),
        asked,
        took,
    )
}

/// The CLI's wait for `w` to reach `goal`: the detail it ended with (`None`: gone), what the
/// stand-in was asked and how long it took.
async fn waited_for(
    pki: &TestPki,
    watch: Watch,
    goal: Goal,
) -> (
    Result<Option<WorkspaceDetail>, CliError>,
    Vec<&'static str>,
    Duration,
) {
    let stand_in = Arc::new(StandIn {
        watch,
        asked: Mutex::new(Vec::new()),
        quiet: Mutex::new(Vec::new()),
    });
    let served = stand_in::serve(pki, stand_in.clone());
    let mut client = served.settings.client().unwrap();
    let started = Instant::now();
    let name = "w".parse().unwrap();
    let outcome = wait_for(&mut client, &name, goal, Duration::from_secs(10), |_, _| {}).await;
    let took = started.elapsed();
    let asked = stand_in.asked.lock().unwrap().clone();
    (outcome, asked, took)
}

#[tokio::test]
async fn the_cli_waits_on_a_watch_and_asks_when_it_cannot() {
    let pki = TestPki::new();

    // The watch tells it all: nothing asked beside it.
    let (outcome, asked, _) = waited(&pki, Watch::Tells).await;
    assert_eq!(outcome.unwrap(), WorkspaceState::Running);
    assert_eq!(asked, ["watch"]);

    // A quiet watch: asked after a second of quiet, not before.
    let (outcome, asked, took) = waited(&pki, Watch::GoesQuiet).await;
    assert_eq!(outcome.unwrap(), WorkspaceState::Running);
    assert_eq!(asked, ["watch", "describe", "describe"]);
    assert!(took >= Duration::from_millis(1_900), "{took:?}");

    // A watch that ends, or that a coordinator cannot serve: asked every 50 ms instead.
    for watch in [
        Watch::Ends,
        Watch::Refused(ErrorCode::ProtocolError),
        Watch::Refused(ErrorCode::ResourceExhausted),
        Watch::Refused(ErrorCode::NotLeader),
    ] {
        let (outcome, asked, _) = waited(&pki, watch).await;
        assert_eq!(outcome.unwrap(), WorkspaceState::Running);
        assert_eq!(asked, ["watch", "describe", "describe"]);
    }

    // Gone, as the watch says: a wait for it ends there, a wait to run fails as a request's.
    let (outcome, asked, _) = waited_for(&pki, Watch::Gone, Goal::Gone).await;
    assert_eq!(outcome.unwrap(), None);
    assert_eq!(asked, ["watch"]);
    let (outcome, asked, _) = waited(&pki, Watch::Gone).await;
    let error = outcome.unwrap_err();
    assert_eq!(error.error.code, ErrorCode::WorkspaceNotFound, "{error:?}");
    assert_eq!(asked, ["watch"]);

    // A refusal a request would meet too is the answer.
    let (outcome, asked, _) = waited(&pki, Watch::Refused(ErrorCode::PermissionDenied)).await;
    let error = outcome.unwrap_err();
    assert_eq!(error.error.code, ErrorCode::PermissionDenied, "{error:?}");
    assert_eq!(asked, ["watch"]);
}
