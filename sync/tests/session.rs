//! Sessions between two directories: the first cycle copies, a later edit of a large file
//! travels as a delta, and a session restarted from its state file carries on without copying
//! anything again.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use nexus_sync::Mode;
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::session::{CycleReport, SessionState, cycle};

fn endpoints(root: &Path) -> (LocalEndpoint, LocalEndpoint) {
    let filter = || Filter::new(&[], true).unwrap();
    (
        LocalEndpoint::new(root.join("alpha"), filter()),
        LocalEndpoint::new(root.join("beta"), filter()),
    )
}

async fn settle(
    state: &mut SessionState,
    alpha: &mut LocalEndpoint,
    beta: &mut LocalEndpoint,
) -> Vec<CycleReport> {
    let mut reports = vec![];
    for _ in 0..10 {
        let report = cycle(state, alpha, beta).await.unwrap();
        let quiet = report.quiet();
        reports.push(report);
        if quiet {
            return reports;
        }
    }
    panic!("no quiet after 10 cycles: {reports:?}");
}

/// 2 MiB of content that does not repeat.
fn big(seed: u32) -> Vec<u8> {
    (0..2u32 << 20)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[tokio::test]
async fn an_edit_of_a_large_file_travels_as_a_delta_and_a_restart_copies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("alpha"), dir.path().join("beta"));
    fs::create_dir_all(a.join("src")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("src/lib.rs"), "pub fn f() {}").unwrap();
    fs::write(a.join("data.bin"), big(1)).unwrap();
    let state_file = dir.path().join("session.json");
    let mut state = SessionState {
        mode: Mode::TwoWaySafe,
        ..SessionState::default()
    };
    let (mut alpha, mut beta) = endpoints(dir.path());
    let first = settle(&mut state, &mut alpha, &mut beta).await;
    assert_eq!(first[0].applied, 2, "{first:?}");
    assert!(first[0].whole_bytes >= 2 << 20);
    assert_eq!(fs::read(b.join("data.bin")).unwrap(), big(1));
    state.save(&state_file).unwrap();

    // A few bytes change in the middle of the large file: a delta, not 2 MiB.
    let mut edited = big(1);
    edited[1 << 20..(1 << 20) + 6].copy_from_slice(b"edited");
    fs::write(a.join("data.bin"), &edited).unwrap();
    let reports = settle(&mut state, &mut alpha, &mut beta).await;
    assert_eq!(reports[0].applied, 1);
    assert_eq!(reports[0].whole_bytes, 0);
    assert!(
        reports[0].delta_bytes < 8 << 10,
        "{} bytes for a 6-byte edit",
        reports[0].delta_bytes
    );
    assert_eq!(fs::read(b.join("data.bin")).unwrap(), edited);
    state.save(&state_file).unwrap();

    // The session stops; a new one starts from the state file with cold scanners: nothing moves.
    drop((alpha, beta));
    let mut resumed = SessionState::load(&state_file).unwrap().unwrap();
    assert_eq!(resumed, state);
    let (mut alpha, mut beta) = endpoints(dir.path());
    let report = cycle(&mut resumed, &mut alpha, &mut beta).await.unwrap();
    assert!(report.quiet(), "{report:?}");
    assert_eq!(report.whole_bytes + report.delta_bytes, 0);

    // Edits made while it was stopped, on both sides, travel on resume.
    fs::write(b.join("src/lib.rs"), "pub fn f() { g() }").unwrap();
    fs::write(a.join("new.txt"), "hello").unwrap();
    settle(&mut resumed, &mut alpha, &mut beta).await;
    assert_eq!(
        fs::read_to_string(a.join("src/lib.rs")).unwrap(),
        "pub fn f() { g() }"
    );
    assert_eq!(fs::read_to_string(b.join("new.txt")).unwrap(), "hello");
}

#[tokio::test]
async fn a_state_file_that_is_not_ours_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    assert_eq!(SessionState::load(&path).unwrap(), None);
    fs::write(&path, "{\"format\": 99, \"state\": {}}").unwrap();
    assert!(
        SessionState::load(&path)
            .unwrap_err()
            .to_string()
            .contains("format")
    );
    fs::write(&path, "garbage").unwrap();
    assert!(SessionState::load(&path).is_err());
}

#[tokio::test]
async fn a_watched_side_rescans_only_what_changed_and_still_sees_everything() {
    watched_side_sees_everything(None).await;
}

/// With a full scan always running beside the cycles, what they read again and what the full
/// scans find come together into the same trees.
#[tokio::test]
async fn full_scans_beside_the_cycles_lose_no_step() {
    watched_side_sees_everything(Some(std::time::Duration::ZERO)).await;
}

async fn watched_side_sees_everything(full_rescan: Option<std::time::Duration>) {
    use nexus_sync::endpoint::Endpoint;
    use nexus_sync::scan::Scanner;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("alpha");
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/f"), "1").unwrap();
    let filter = || Filter::new(&["*.log".into()], true).unwrap();
    let mut watched = LocalEndpoint::new(&root, filter());
    if let Some(every) = full_rescan {
        watched = watched.with_full_rescan(every);
    }
    watched.watch(|| {}).unwrap();
    let full = |root: &Path| Scanner::new(root).scan(&filter()).unwrap().tree;
    // What a session knows of the side: the whole tree first, then only what changed since the
    // version it saw.
    let mut known = None;
    let first = watched.scan(None).await.unwrap();
    assert_eq!(
        nexus_sync::history::absorb(&mut known, first).unwrap(),
        None
    );
    assert_eq!(known.as_ref().unwrap().1, full(&root));
    type Step = Box<dyn Fn(&Path)>;
    let steps: Vec<Step> = vec![
        Box::new(|r| fs::write(r.join("a/b/f"), "2").unwrap()),
        Box::new(|r| fs::create_dir_all(r.join("new/deep/er")).unwrap()),
        Box::new(|r| fs::write(r.join("new/deep/er/g"), "g").unwrap()),
        Box::new(|r| fs::rename(r.join("new"), r.join("moved")).unwrap()),
        Box::new(|r| fs::write(r.join("x.log"), "ignored").unwrap()),
        Box::new(|r| std::os::unix::fs::symlink("a/b/f", r.join("link")).unwrap()),
        Box::new(|r| fs::remove_dir_all(r.join("a")).unwrap()),
        Box::new(|r| fs::write(r.join("a"), "a file where a directory was").unwrap()),
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&root);
        let want = full(&root);
        let started = std::time::Instant::now();
        loop {
            let since = known.as_ref().map(|(version, _)| *version);
            let answer = watched.scan(since).await.unwrap();
            let changed = nexus_sync::history::absorb(&mut known, answer).unwrap();
            assert!(changed.is_some(), "step {i}: the whole tree came again");
            let got = &known.as_ref().unwrap().1;
            if *got == want {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "step {i}: the watched scan never caught up:\n{got:?}\nwant {want:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A change the watcher cannot see: a file written through a hard link outside the watched
/// root (inotify tells the directory the write went through). Only the full scan finds it, and
/// it runs beside the scans that answer, which go on meanwhile.
#[tokio::test]
async fn the_full_scan_finds_what_the_watcher_missed() {
    use nexus_sync::endpoint::Endpoint;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("alpha");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(root.join("f"), "before").unwrap();
    fs::hard_link(root.join("f"), outside.join("f")).unwrap();
    let filter = || Filter::new(&[], true).unwrap();
    let (woken, wakes) = std::sync::mpsc::channel();
    let mut rare = LocalEndpoint::new(&root, filter()).with_full_rescan(Duration::from_secs(600));
    rare.watch(|| {}).unwrap();
    let mut often =
        LocalEndpoint::new(&root, filter()).with_full_rescan(Duration::from_millis(200));
    often
        .watch(move || {
            let _ = woken.send(());
        })
        .unwrap();
    let mut known_rare = None;
    let mut known_often = None;
    let sees_after = |known: &Option<(nexus_sync::history::Version, nexus_sync::tree::Tree)>| {
        known.as_ref().is_some_and(|(_, tree)| {
            tree.iter().any(|(path, entry)| {
                path.as_str() == "f"
                    && matches!(entry, nexus_sync::tree::Entry::File { size: 5, .. })
            })
        })
    };
    nexus_sync::history::absorb(&mut known_rare, rare.scan(None).await.unwrap()).unwrap();
    nexus_sync::history::absorb(&mut known_often, often.scan(None).await.unwrap()).unwrap();
    fs::write(outside.join("f"), "after").unwrap();
    let started = Instant::now();
    while !sees_after(&known_often) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the full scan never found the change"
        );
        let since = known_often.as_ref().map(|(version, _)| *version);
        nexus_sync::history::absorb(&mut known_often, often.scan(since).await.unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The finished full scan woke the session.
    assert!(wakes.try_iter().count() > 0);
    // Without it, the change stays unseen: the watcher did miss it.
    let since = known_rare.as_ref().map(|(version, _)| *version);
    nexus_sync::history::absorb(&mut known_rare, rare.scan(since).await.unwrap()).unwrap();
    assert!(!sees_after(&known_rare), "the watcher saw the write");
}

/// Files edited and written while a full scan runs, after it read them: the cycles read each
/// edit (and wrote each change), and the full scan's older view of them must not win when it is
/// taken in. A gate holds the scan between its reading the disk and its being taken in.
#[tokio::test]
async fn edits_during_a_full_scan_are_not_undone_by_it() {
    use nexus_sync::endpoint::Endpoint;
    use nexus_sync::scan::Scanner;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("alpha");
    for d in 0..5 {
        fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
        fs::write(root.join(format!("d{d}/edited")), "0").unwrap();
        fs::write(root.join(format!("d{d}/kept")), "k").unwrap();
    }
    let filter = || Filter::new(&[], true).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let mut watched = LocalEndpoint::new(&root, filter())
        .with_full_rescan(Duration::from_millis(300))
        .with_full_scan_gate(gate.clone());
    watched.watch(|| {}).unwrap();
    let mut known = None;
    let mut scan = async |watched: &mut LocalEndpoint| {
        let since = known.as_ref().map(|(version, _)| *version);
        nexus_sync::history::absorb(&mut known, watched.scan(since).await.unwrap()).unwrap();
        known.as_ref().unwrap().1.clone()
    };
    scan(&mut watched).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    // This one starts the full scan beside it; the gate says when it has read the disk.
    scan(&mut watched).await;
    assert!(watched.full_scan_running());
    let waiting = gate.clone();
    tokio::task::spawn_blocking(move || waiting.wait())
        .await
        .unwrap();
    // Now the files change, and the cycles see it, while the scan waits to be taken in.
    for d in 0..5 {
        fs::write(root.join(format!("d{d}/edited")), "edited").unwrap();
    }
    fs::remove_dir_all(root.join("d4")).unwrap();
    let want = Scanner::new(&root).scan(&filter()).unwrap().tree;
    let started = Instant::now();
    while scan(&mut watched).await != want {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cycles never saw the edits"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(watched.full_scan_running());
    // Let it be taken in: the tree must stay what the disk holds.
    let releasing = gate.clone();
    tokio::task::spawn_blocking(move || releasing.wait())
        .await
        .unwrap();
    let started = Instant::now();
    while watched.full_scan_running() {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
        scan(&mut watched).await;
    }
    assert_eq!(scan(&mut watched).await, want);
}

#[test]
fn a_large_tree_is_scanned_whole_less_often() {
    use nexus_sync::local_endpoint::full_rescan_after;
    use std::time::Duration;
    assert_eq!(full_rescan_after(0), Duration::from_secs(10));
    assert_eq!(full_rescan_after(10_000), Duration::from_secs(10));
    assert_eq!(full_rescan_after(100_000), Duration::from_secs(100));
    assert_eq!(full_rescan_after(usize::MAX), Duration::from_secs(600));
}
