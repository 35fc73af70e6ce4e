//! A session whose beta is served across a (loopback) carrier, every request and answer going
//! through serialization as on the wire: files larger than a message travel in pieces both ways,
//! so do directories whose files together are, a cycle's many changes travel in flight
//! together and each lands once, and requests naming paths through a symlink, or outside the
//! root, get nothing; a file rewritten after its scan is never sent as the version scanned.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::sync::{Arc, Mutex};

use nexus_sync::Mode;
use nexus_sync::endpoint::{Answer, CHUNK, Content, EndpointError, Request};
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::remote::{Carrier, RemoteEndpoint, Served};
use nexus_sync::session::{SessionState, cycle};

/// Serves in the same process, through JSON both ways as a wire would (except file pieces,
/// whose bytes would only make the test slow). Like a wire, it refuses a message that carries
/// more than a chunk of file content: the transport's frame (16 MiB) holds a chunk with room to
/// spare, and no more than a few.
#[derive(Clone)]
struct Loopback(Arc<Mutex<Option<Served>>>);

fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(value: T) -> T {
    serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap()
}

impl Carrier for Loopback {
    async fn call(&mut self, request: Request) -> Result<Answer, EndpointError> {
        check_size(&request)?;
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

fn check_size(request: &Request) -> Result<(), EndpointError> {
    let carried: usize = match request {
        Request::Apply { contents, .. } => contents
            .values()
            .map(|content| match content {
                Content::Whole(bytes) => bytes.len(),
                Content::Delta { ops, .. } => nexus_sync::delta::literal_bytes(ops),
            })
            .sum(),
        Request::Stage { bytes, .. } => bytes.len(),
        _ => 0,
    };
    if carried > CHUNK {
        return Err(EndpointError::Unavailable(format!(
            "a message of {carried} bytes of content is past the frame's bound"
        )));
    }
    Ok(())
}

/// Serves beside other calls: each call yields once before it is served, so that calls made
/// together are all in flight at once, and the most in flight at a time is counted.
#[derive(Clone)]
struct Concurrent {
    served: Arc<tokio::sync::Mutex<Served>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
}

impl Carrier for Concurrent {
    async fn call(&mut self, request: Request) -> Result<Answer, EndpointError> {
        use std::sync::atomic::Ordering::SeqCst;
        check_size(&request)?;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::task::yield_now().await;
        let answer = self.served.lock().await.serve(through_json(request)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(through_json(answer))
    }
}

/// `len` bytes of content that differs with `seed`.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed)
        .collect()
}

/// A file larger than a message.
fn large(seed: u8) -> Vec<u8> {
    content(CHUNK * 2 + 12_345, seed)
}

/// Cycles until they have applied `wanted` changes between them (at most 5 s): what they
/// applied and found stale. A change on the served side is seen once its watcher has reported
/// it, which under load comes after the write by a while; a cycle before that finds nothing new,
/// and the session's next cycle (woken by that report) brings it.
async fn cycles_until<C: Carrier>(
    wanted: usize,
    state: &mut SessionState,
    alpha: &mut LocalEndpoint,
    beta: &mut RemoteEndpoint<C>,
) -> (usize, usize) {
    // Well inside the served side's full rescan (10 s), which would find the change even if its
    // watcher had lost it.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (mut applied, mut stale) = (0, 0);
    loop {
        let report = cycle(state, alpha, beta).await.unwrap();
        applied += report.applied;
        stale += report.stale;
        if applied >= wanted || std::time::Instant::now() >= until {
            return (applied, stale);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One more cycle finds nothing to do.
async fn assert_quiet<C: Carrier>(
    state: &mut SessionState,
    alpha: &mut LocalEndpoint,
    beta: &mut RemoteEndpoint<C>,
) {
    let report = cycle(state, alpha, beta).await.unwrap();
    assert!(report.quiet(), "{report:?}");
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
    let applied = cycles_until(1, &mut state, &mut alpha, &mut beta).await;
    assert_eq!(applied, (1, 0));
    assert_eq!(fs::read(a.join("down.bin")).unwrap(), large(2));
    assert_quiet(&mut state, &mut alpha, &mut beta).await;
}

#[tokio::test]
async fn a_directory_whose_files_together_pass_a_message_travels_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("alpha"), dir.path().join("beta"));
    // Three files of three quarters of a chunk each: none too large alone, too many together
    // for one message (at the frame's size: five of four MiB).
    let piece = |seed: u8| content(CHUNK * 3 / 4, seed);
    fs::create_dir_all(a.join("images")).unwrap();
    for seed in 0..3u8 {
        fs::write(a.join(format!("images/{seed}.bin")), piece(seed)).unwrap();
    }
    let served = Arc::new(Mutex::new(Some(Served::new(&b))));
    let mut alpha = LocalEndpoint::new(&a, Filter::new(&[], true).unwrap());
    let mut beta = RemoteEndpoint::new(Loopback(served), vec![], true);
    let mut state = SessionState::default();
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    for seed in 0..3u8 {
        assert_eq!(
            fs::read(b.join(format!("images/{seed}.bin"))).unwrap(),
            piece(seed)
        );
    }
    assert_quiet(&mut state, &mut alpha, &mut beta).await;
}

#[tokio::test]
async fn a_cycles_changes_travel_together_and_each_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("alpha"), dir.path().join("beta"));
    // More directories than one batch holds, with a large file among them.
    for d in 0..150 {
        fs::create_dir_all(a.join(format!("d{d}"))).unwrap();
        for f in 0..3 {
            fs::write(a.join(format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    fs::write(a.join("d7/large.bin"), large(3)).unwrap();
    let concurrent = Concurrent {
        served: Arc::new(tokio::sync::Mutex::new(Served::new(&b))),
        in_flight: Arc::default(),
        most: Arc::default(),
    };
    let mut alpha = LocalEndpoint::new(&a, Filter::new(&[], true).unwrap());
    let mut beta = RemoteEndpoint::new(concurrent.clone(), vec![], true);
    let mut state = SessionState::default();
    let report = cycle(&mut state, &mut alpha, &mut beta).await.unwrap();
    assert_eq!((report.applied, report.stale), (150, 0), "{report:?}");
    assert!(
        concurrent.most.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "the changes went one at a time"
    );
    for d in 0..150 {
        for f in 0..3 {
            assert_eq!(
                fs::read_to_string(b.join(format!("d{d}/f{f}"))).unwrap(),
                format!("{d}/{f}")
            );
        }
    }
    assert_eq!(fs::read(b.join("d7/large.bin")).unwrap(), large(3));
    // Both ways at once: changes on each side, and nothing travels twice.
    fs::write(a.join("d1/f0"), "alpha's edit").unwrap();
    fs::write(b.join("d2/f0"), "beta's edit").unwrap();
    fs::remove_dir_all(b.join("d3")).unwrap();
    let applied = cycles_until(3, &mut state, &mut alpha, &mut beta).await;
    assert_eq!(applied, (3, 0));
    assert_eq!(fs::read_to_string(b.join("d1/f0")).unwrap(), "alpha's edit");
    assert_eq!(fs::read_to_string(a.join("d2/f0")).unwrap(), "beta's edit");
    assert!(!a.join("d3").exists());
    assert_quiet(&mut state, &mut alpha, &mut beta).await;
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

/// A sending side reads what it sends after its scan: a file rewritten in between (the same
/// size, at once, so its times may not even move) is never sent as the version scanned, and a
/// file that became a symlink is not followed.
#[tokio::test]
async fn a_file_rewritten_after_its_scan_is_not_sent_as_the_version_scanned() {
    use nexus_sync::endpoint::Endpoint;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "before").unwrap();
    fs::write(dir.path().join("notes.txt"), "before").unwrap();
    fs::write(dir.path().join("kept.txt"), "before").unwrap();
    fs::write(dir.path().join("link"), "before").unwrap();
    let mut side = LocalEndpoint::new(dir.path(), Filter::new(&[], true).unwrap());
    side.scan(None).await.unwrap();
    fs::write(dir.path().join("notes.txt"), "after!").unwrap();
    fs::remove_file(dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    let before = nexus_sync::scan::digest_bytes(b"before");
    for path in ["notes.txt", "link"] {
        let read = side.read(&path.parse().unwrap(), &before).await;
        assert!(
            matches!(read, Err(EndpointError::Stale(_))),
            "{path}: {read:?}"
        );
    }
    let kept = side.read(&"kept.txt".parse().unwrap(), &before).await;
    assert_eq!(kept.unwrap(), b"before");
}
