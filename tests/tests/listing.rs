//! How the CLI gets the whole list (`nexus_cli::listing`), against a stand-in coordinator on
//! loopback (real QUIC and mTLS) that serves seven workspaces two a page: as one stream of pages;
//! by pages after a stream that breaks, from where it broke; by pages from a coordinator that
//! cannot read the stream (an earlier release) or streams its most already; and in one request
//! from one that knows no pages. Each way lists every workspace once, in order. A refusal the
//! walk would only meet again is the answer, with nothing walked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_cli::error::CliError;
use nexus_cli::listing;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{Request, Response, WorkspaceRequest};
use nexus_protocol::model::{ResourceClass, WorkspaceState, WorkspaceView};
use nexus_protocol::transport::{Handler, Peer, Reply, Update};
use nexus_protocol::{RequestId, WorkspaceName, clock};
use nexus_tests::pki::TestPki;
use nexus_tests::stand_in;

const NAMES: [&str; 7] = ["w0", "w1", "w2", "w3", "w4", "w5", "w6"];
const PAGE: usize = 2;

/// What the stand-in knows of the list's requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Streams the whole list.
    Streams,
    /// Streams this many pages, then the stream ends without its last page.
    BreaksAfter(usize),
    /// Knows pages, not the stream.
    Pages,
    /// Knows only the one-request list.
    OneRequest,
    /// Refuses the stream with this code, and serves pages.
    Refuses(ErrorCode),
}

struct StandIn {
    release: Release,
    /// Each list request as it came: `stream`, `page after X`, `list`.
    asked: Mutex<Vec<String>>,
}

fn view(name: &str) -> WorkspaceView {
    WorkspaceView {
        name: name.parse().unwrap(),
        owner: "alice".parse().unwrap(),
        state: WorkspaceState::Running,
        host: None,
        image: "nexus-test:latest".into(),
        class: ResourceClass::Small,
        ports: Vec::new(),
        created_at: clock::now(),
    }
}

/// The page after `after`, as a coordinator pages: `PAGE` names and the last of them as next.
fn page_after(after: Option<&WorkspaceName>) -> Response {
    let rest: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|name| after.is_none_or(|after| *name > after.as_str()))
        .collect();
    let page: Vec<&str> = rest.iter().copied().take(PAGE).collect();
    let next = (rest.len() > PAGE).then(|| page[PAGE - 1].parse().unwrap());
    Response::WorkspacePage {
        workspaces: page.into_iter().map(view).collect(),
        next,
    }
}

fn not_read() -> WireError {
    WireError::new(
        ErrorCode::ProtocolError,
        "a request this release cannot read",
    )
}

impl Handler for StandIn {
    async fn handle(&self, _peer: &Peer, _id: RequestId, request: Request) -> Reply {
        let Request::Workspace(request) = request else {
            // The CLI's notices, asked beside its first request.
            return Reply::Once(Err(WireError::new(ErrorCode::Unsupported, "not here")));
        };
        let asked = |what: String| self.asked.lock().unwrap().push(what);
        match request {
            WorkspaceRequest::ListStream => {
                asked("stream".into());
                let pages = match self.release {
                    Release::Streams => usize::MAX,
                    Release::BreaksAfter(pages) => pages,
                    Release::Pages | Release::OneRequest => return Reply::Once(Err(not_read())),
                    Release::Refuses(code) => {
                        return Reply::Once(Err(WireError::new(code, "refused by the stand-in")));
                    }
                };
                let (sender, updates) = tokio::sync::mpsc::channel::<Update>(8);
                let mut after: Option<WorkspaceName> = None;
                for _ in 0..pages {
                    let page = page_after(after.as_ref());
                    let Response::WorkspacePage { next, .. } = &page else {
                        unreachable!()
                    };
                    after = next.clone();
                    sender.try_send(Box::new(Ok(page))).unwrap();
                    if after.is_none() {
                        break;
                    }
                }
                Reply::Stream(updates)
            }
            WorkspaceRequest::ListPage { after, .. } => {
                asked(format!(
                    "page after {}",
                    after.as_ref().map_or("-", |a| a.as_str())
                ));
                if self.release == Release::OneRequest {
                    return Reply::Once(Err(not_read()));
                }
                Reply::Once(Ok(page_after(after.as_ref())))
            }
            WorkspaceRequest::List => {
                asked("list".into());
                Reply::Once(Ok(Response::Workspaces(
                    NAMES.iter().copied().map(view).collect(),
                )))
            }
            _ => Reply::Once(Err(WireError::new(ErrorCode::Unsupported, "not here"))),
        }
    }
}

/// The CLI's whole list from a stand-in of `release`, and what the stand-in was asked.
async fn listed(pki: &TestPki, release: Release) -> (Vec<String>, Vec<String>) {
    let (listed, asked) = asking(pki, release).await;
    (listed.unwrap(), asked)
}

/// [`listed`], or the CLI's error.
async fn asking(pki: &TestPki, release: Release) -> (Result<Vec<String>, CliError>, Vec<String>) {
    let stand_in = Arc::new(StandIn {
        release,
        asked: Mutex::new(Vec::new()),
    });
    let served = stand_in::serve(pki, stand_in.clone());
    let names = listing::workspaces(&served.settings, false, Duration::from_secs(10))
        .await
        .map(|views| views.into_iter().map(|v| v.name.to_string()).collect());
    let asked = stand_in.asked.lock().unwrap().clone();
    (names, asked)
}

#[tokio::test]
async fn the_cli_lists_every_workspace_once_from_every_release() {
    let pki = TestPki::new();
    let all: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();

    let (names, asked) = listed(&pki, Release::Streams).await;
    assert_eq!(names, all);
    assert_eq!(asked, ["stream"], "no page asked beside a whole stream");

    // Two pages came (w0..w3), then the stream ended: the rest by pages after w3.
    let (names, asked) = listed(&pki, Release::BreaksAfter(2)).await;
    assert_eq!(names, all);
    assert_eq!(asked, ["stream", "page after w3", "page after w5"]);

    // A stream that ends before its first page: every page, from the start.
    let (names, asked) = listed(&pki, Release::BreaksAfter(0)).await;
    assert_eq!(names, all);
    assert_eq!(
        asked,
        [
            "stream",
            "page after -",
            "page after w1",
            "page after w3",
            "page after w5"
        ]
    );

    let (names, asked) = listed(&pki, Release::Pages).await;
    assert_eq!(names, all);
    assert_eq!(asked[0], "stream");
    assert_eq!(asked.len(), 5, "{asked:?}");

    let (names, asked) = listed(&pki, Release::OneRequest).await;
    assert_eq!(names, all);
    assert_eq!(asked, ["stream", "page after -", "list"]);

    // Its most streams at once: the walk.
    let (names, asked) = listed(&pki, Release::Refuses(ErrorCode::ResourceExhausted)).await;
    assert_eq!(names, all);
    assert_eq!(asked.len(), 5, "{asked:?}");

    // A refusal the walk would meet again is the answer.
    let (listed, asked) = asking(&pki, Release::Refuses(ErrorCode::PermissionDenied)).await;
    let error = listed.unwrap_err();
    assert_eq!(error.error.code, ErrorCode::PermissionDenied, "{error:?}");
    assert_eq!(asked, ["stream"]);
}
