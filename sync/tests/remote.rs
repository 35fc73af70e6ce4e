//! A session whose beta is served across a (loopback) carrier, every request and answer going
//! through serialization as on the wire: files larger than a message travel in pieces both ways,
//! and requests naming paths through a symlink, or outside the root, get nothing.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::sync::{Arc, Mutex};

use nexus_sync::Mode;
use nexus_sync::endpoint::{Answer, CHUNK, EndpointError, Request};
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::remote::{Carrier, RemoteEndpoint, Served};
use nexus_sync::session::{SessionState, cycle};

/// Serves in the same process, through JSON both ways as a wire would (except file pieces,
/// whose bytes would only make the test slow).
struct Loopback(Arc<Mutex<Option<Served>>>);

fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(value: T) -> T {
    serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap()
}

impl Carrier for Loopback {
    async fn call(&mut self, request: Request) -> Result<Answer, EndpointError> {
        let request = match request {
            Request::Stage { .. } => request,
            other => through_json(other),
        };
        let mut served = self.0.lock().unwrap().take().unwrap();
        let answer = served.serve(request).await;
        *self.0.lock().unwrap() = Some(served);
        Ok(match answer {
            Answer::Bytes(_) => answer,
            other => through_json(other),
        })
    }
}

fn large(seed: u8) -> Vec<u8> {
    (0..(CHUNK * 2 + 12_345) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed)
        .collect()
}

#[tokio::test]
async fn large_files_travel_in_pieces_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("alpha"), dir.path().join("beta"));
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("up.bin"), large(1)).unwrap();
    let served = Arc::new(Mutex::new(Some(Served::new(&b))));
    let mut alpha = LocalEndpoint::new(&a, Filter::new(&[], true).unwrap());
    let mut beta = RemoteEndpoint::new(Loopback(served.clone()), vec![], true);
    let mut state = SessionState {
        mode: Mode::TwoWaySafe,
        ..SessionState::default()
    };
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(fs::read(b.join("up.bin")).unwrap(), large(1));

    // The other way: written on beta's side, read back in pieces.
    fs::write(b.join("down.bin"), large(2)).unwrap();
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(fs::read(a.join("down.bin")).unwrap(), large(2));
    assert!(
        cycle(&mut state, &mut alpha, &mut beta)
            .await
            .unwrap()
            .quiet()
    );
}

#[tokio::test]
async fn nothing_is_read_through_a_symlink_or_from_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "do not read").unwrap();
    let root = dir.path().join("beta");
    fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
    let mut served = Served::new(&root);
    let scan = served
        .serve(Request::Scan {
            ignore: vec![],
            ignore_vcs: false,
        })
        .await;
    assert_eq!(
        scan,
        Answer::Tree(Default::default()),
        "the escaping link is left out"
    );
    for request in [
        Request::Read {
            path: "out/secret".parse().unwrap(),
            offset: 0,
            len: 100,
        },
        Request::Signature {
            path: "out/secret".parse().unwrap(),
        },
    ] {
        let answer = served.serve(request).await;
        assert!(
            matches!(answer, Answer::Refused(_) | Answer::Stale(_)),
            "{answer:?}"
        );
    }
    // A path that climbs cannot even be decoded.
    let climbing = r#"{"Read":{"path":"../etc/passwd","offset":0,"len":10}}"#;
    assert!(serde_json::from_str::<Request>(climbing).is_err());
}
