//! Two real directories kept in sync by the engine, on this machine: scans, the plan, and
//! changes applied to disk with content read from the other side. Creation, modification,
//! deletion, type changes and the executable bit travel; conflicts stay; symlinks that escape,
//! and changes that would write through a symlink or outside the root, are refused.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nexus_sync::filter::Filter;
use nexus_sync::local::{self, ApplyError, DirectorySource};
use nexus_sync::scan::{self, Scanner};
use nexus_sync::{Change, Conflict, Entry, Mode, RelPath, Side, Tree, reconcile};

struct Pair {
    _dirs: tempfile::TempDir,
    alpha: Scanner,
    beta: Scanner,
    ancestor: Tree,
    filter: Filter,
    mode: Mode,
}

impl Pair {
    fn new(mode: Mode, ignore: &[&str]) -> Pair {
        let dirs = tempfile::tempdir().unwrap();
        for side in ["alpha", "beta"] {
            fs::create_dir(dirs.path().join(side)).unwrap();
        }
        let patterns: Vec<String> = ignore.iter().map(ToString::to_string).collect();
        Pair {
            alpha: Scanner::new(dirs.path().join("alpha")),
            beta: Scanner::new(dirs.path().join("beta")),
            _dirs: dirs,
            ancestor: Tree::new(),
            filter: Filter::new(&patterns, true).unwrap(),
            mode,
        }
    }

    fn alpha_dir(&self) -> &Path {
        self.alpha.root()
    }

    fn beta_dir(&self) -> &Path {
        self.beta.root()
    }

    /// Cycles until quiet; answers the conflicts left.
    fn settle(&mut self) -> Vec<Conflict> {
        for _ in 0..10 {
            let alpha = self.alpha.scan(&self.filter).unwrap().tree;
            let beta = self.beta.scan(&self.filter).unwrap().tree;
            let mut plan = reconcile(&self.ancestor, &alpha, &beta, self.mode);
            if plan.is_quiet() {
                self.ancestor = plan.ancestor;
                return plan.conflicts;
            }
            for change in plan.changes.clone() {
                let (scanner, from) = match change.side {
                    Side::Alpha => (&mut self.alpha, self.beta.root().to_path_buf()),
                    Side::Beta => (&mut self.beta, self.alpha.root().to_path_buf()),
                };
                local::apply(
                    scanner,
                    &self.filter,
                    &change,
                    &mut DirectorySource::new(from),
                )
                .unwrap();
                plan.applied(&change);
            }
            self.ancestor = plan.ancestor;
        }
        panic!("no quiet after 10 cycles");
    }
}

fn write(dir: &Path, path: &str, content: &str) {
    let full = dir.join(path);
    fs::create_dir_all(full.parent().unwrap()).unwrap();
    fs::write(full, content).unwrap();
}

fn read(dir: &Path, path: &str) -> Option<String> {
    fs::read_to_string(dir.join(path)).ok()
}

/// Every file, directory and link beneath `dir`, with contents, for comparing two sides.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for item in fs::read_dir(&next).unwrap() {
            let item = item.unwrap();
            let path = item.path();
            let relative = path.strip_prefix(dir).unwrap().display().to_string();
            let kind = item.file_type().unwrap();
            if kind.is_symlink() {
                out.push(format!(
                    "{relative} -> {}",
                    fs::read_link(&path).unwrap().display()
                ));
            } else if kind.is_dir() {
                out.push(format!("{relative}/"));
                stack.push(path);
            } else {
                let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o111;
                out.push(format!(
                    "{relative} = {} ({mode:o})",
                    fs::read_to_string(&path).unwrap()
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn changes_travel_both_ways_and_conflicts_stay() {
    let mut pair = Pair::new(Mode::TwoWaySafe, &["*.log"]);
    let (a, b) = (
        pair.alpha_dir().to_path_buf(),
        pair.beta_dir().to_path_buf(),
    );
    write(&a, "src/main.rs", "fn main() {}");
    write(&a, "README", "hello");
    write(&b, "notes/todo.txt", "buy milk");
    write(&a, "build.log", "ignored");
    std::os::unix::fs::symlink("src/main.rs", a.join("entry")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", a.join("escape")).unwrap();
    fs::set_permissions(a.join("README"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(pair.settle().is_empty());
    assert_eq!(read(&b, "src/main.rs").as_deref(), Some("fn main() {}"));
    assert_eq!(read(&a, "notes/todo.txt").as_deref(), Some("buy milk"));
    assert_eq!(
        fs::read_link(b.join("entry")).unwrap(),
        Path::new("src/main.rs")
    );
    assert!(
        fs::symlink_metadata(b.join("escape")).is_err(),
        "an escaping link travelled"
    );
    assert_eq!(read(&b, "build.log"), None, "an ignored file travelled");
    assert_eq!(
        fs::metadata(b.join("README")).unwrap().permissions().mode() & 0o111,
        0o111
    );
    let without_ours = |dir: &Path| {
        listing(dir)
            .into_iter()
            .filter(|l| !l.starts_with("build.log") && !l.starts_with("escape"))
            .collect::<Vec<_>>()
    };
    assert_eq!(without_ours(&a), without_ours(&b));

    // Modify, delete, change a directory into a file, in both directions.
    write(&b, "src/main.rs", "fn main() { run() }");
    fs::remove_file(a.join("README")).unwrap();
    fs::remove_dir_all(b.join("notes")).unwrap();
    write(&b, "notes", "now a file");
    assert!(pair.settle().is_empty());
    assert_eq!(
        read(&a, "src/main.rs").as_deref(),
        Some("fn main() { run() }")
    );
    assert_eq!(read(&b, "README"), None);
    assert_eq!(read(&a, "notes").as_deref(), Some("now a file"));
    assert_eq!(without_ours(&a), without_ours(&b));

    // Both sides edit one file: a conflict, and neither edit is lost.
    write(&a, "src/main.rs", "alpha's");
    write(&b, "src/main.rs", "beta's");
    let conflicts = pair.settle();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].path.as_str(), "src/main.rs");
    assert_eq!(read(&a, "src/main.rs").as_deref(), Some("alpha's"));
    assert_eq!(read(&b, "src/main.rs").as_deref(), Some("beta's"));
    // No temporary file is left anywhere.
    assert!(
        !listing(&a)
            .iter()
            .chain(&listing(&b))
            .any(|l| l.contains(".nexus-sync-"))
    );
}

#[test]
fn a_change_is_refused_where_it_would_write_outside_the_root() {
    let pair = Pair::new(Mode::TwoWaySafe, &[]);
    let outside = tempfile::tempdir().unwrap();
    let beta = pair.beta_dir().to_path_buf();
    // A link to a directory outside: left out of scans, and never written through.
    std::os::unix::fs::symlink(outside.path(), beta.join("out")).unwrap();
    let mut scanner = Scanner::new(&beta);
    let scan = scanner.scan(&pair.filter).unwrap();
    assert!(scan.tree.is_empty());
    assert_eq!(scan.refused.len(), 1, "{:?}", scan.refused);

    let file = Entry::File {
        digest: nexus_sync::scan::digest_bytes(b"x"),
        size: 1,
        executable: false,
    };
    let through_link = Change {
        side: Side::Beta,
        path: "out/x".parse().unwrap(),
        expected: vec![],
        desired: vec![("out/x".parse().unwrap(), file.clone())],
    };
    struct Bytes;
    impl local::Source for Bytes {
        fn content(&mut self, _: &RelPath, _: &nexus_sync::Digest) -> std::io::Result<Vec<u8>> {
            Ok(b"x".to_vec())
        }
    }
    let refused = local::apply(&mut scanner, &pair.filter, &through_link, &mut Bytes).unwrap_err();
    assert!(matches!(refused, ApplyError::Unsafe { .. }), "{refused}");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

    // A desired entry outside the change's own path, and a symlink that escapes.
    let smuggled = Change {
        side: Side::Beta,
        path: "a".parse().unwrap(),
        expected: vec![],
        desired: vec![("b".parse().unwrap(), file)],
    };
    assert!(matches!(
        local::apply(&mut scanner, &pair.filter, &smuggled, &mut Bytes).unwrap_err(),
        ApplyError::Unsafe { .. }
    ));
    let escaping = Change {
        side: Side::Beta,
        path: "l".parse().unwrap(),
        expected: vec![],
        desired: vec![(
            "l".parse().unwrap(),
            Entry::Symlink {
                target: "../../x".into(),
            },
        )],
    };
    assert!(matches!(
        local::apply(&mut scanner, &pair.filter, &escaping, &mut Bytes).unwrap_err(),
        ApplyError::Unsafe { .. }
    ));
    assert!(fs::symlink_metadata(beta.join("l")).is_err());
    // Content that does not match its digest is not written.
    let wrong = Change {
        side: Side::Beta,
        path: "w".parse().unwrap(),
        expected: vec![],
        desired: vec![(
            "w".parse().unwrap(),
            Entry::File {
                digest: nexus_sync::Digest([0; 32]),
                size: 1,
                executable: false,
            },
        )],
    };
    assert!(matches!(
        local::apply(&mut scanner, &pair.filter, &wrong, &mut Bytes).unwrap_err(),
        ApplyError::Content(_)
    ));
    assert!(read(&beta, "w").is_none());
}

#[test]
fn a_file_edited_after_the_plan_is_not_overwritten() {
    let mut pair = Pair::new(Mode::TwoWaySafe, &[]);
    let (a, b) = (
        pair.alpha_dir().to_path_buf(),
        pair.beta_dir().to_path_buf(),
    );
    write(&a, "f", "one");
    assert!(pair.settle().is_empty());
    write(&a, "f", "two");
    let alpha = pair.alpha.scan(&pair.filter).unwrap().tree;
    let beta = pair.beta.scan(&pair.filter).unwrap().tree;
    let plan = reconcile(&pair.ancestor, &alpha, &beta, pair.mode);
    assert_eq!(plan.changes.len(), 1);
    // Beta's user edits f after the plan and before the change lands.
    write(&b, "f", "beta's own");
    let stale = local::apply(
        &mut pair.beta,
        &pair.filter,
        &plan.changes[0],
        &mut DirectorySource::new(&a),
    )
    .unwrap_err();
    assert!(matches!(stale, ApplyError::Stale(_)), "{stale}");
    assert_eq!(read(&b, "f").as_deref(), Some("beta's own"));
    let conflicts = pair.settle();
    assert_eq!(conflicts.len(), 1);
}

#[test]
fn a_rescan_reads_only_what_changed() {
    let pair = Pair::new(Mode::TwoWaySafe, &[]);
    let a = pair.alpha_dir().to_path_buf();
    for i in 0..50 {
        write(&a, &format!("d/{i}"), &i.to_string());
    }
    // Past the files' timestamp tick, so that their digests may be kept.
    std::thread::sleep(scan::TICK * 2);
    let mut scanner = Scanner::new(&a);
    assert_eq!(scanner.scan(&pair.filter).unwrap().hashed, 50);
    assert_eq!(scanner.scan(&pair.filter).unwrap().hashed, 0);
    write(&a, "d/7", "changed");
    std::thread::sleep(scan::TICK * 2);
    let scan = scanner.scan(&pair.filter).unwrap();
    assert_eq!(scan.hashed, 1);
    assert_eq!(scan.tree.len(), 51);
    assert_eq!(scanner.scan(&pair.filter).unwrap().hashed, 0);
}

/// A file read within its change's timestamp tick is read again at every scan until a read
/// begins after the tick: a second write of the same size in that tick would leave the same
/// size and times, and a digest kept from the first read would hide it for good. A file whose
/// modification time lies before its change time needs no wait: any later write moves it.
#[test]
fn a_file_read_within_its_change_tick_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let filter = Filter::new(&[], true).unwrap();
    write(dir.path(), "notes.txt", "before");
    // A tick of an hour: every read here is within the file's.
    let mut scanner = Scanner::with_tick(dir.path(), Duration::from_secs(3600));
    assert_eq!(scanner.scan(&filter).unwrap().hashed, 1);
    assert_eq!(scanner.scan(&filter).unwrap().hashed, 1);
    assert_eq!(scanner.scan(&filter).unwrap().hashed, 1);
    let path = dir.path().join("notes.txt");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime - Duration::from_secs(1))
        .unwrap();
    assert_eq!(scanner.scan(&filter).unwrap().hashed, 1);
    assert_eq!(scanner.scan(&filter).unwrap().hashed, 0);
    // A fresh scanner that trusts every read keeps the digest from the first.
    let mut trusting = Scanner::with_tick(dir.path(), Duration::ZERO);
    write(dir.path(), "notes.txt", "after!");
    assert_eq!(trusting.scan(&filter).unwrap().hashed, 1);
    assert_eq!(trusting.scan(&filter).unwrap().hashed, 0);
}

#[test]
fn what_a_change_wrote_is_not_read_again_by_the_next_scan() {
    let mut pair = Pair::new(Mode::TwoWaySafe, &[]);
    let a = pair.alpha_dir().to_path_buf();
    for i in 0..20 {
        write(&a, &format!("d/{i}"), &i.to_string());
    }
    let alpha = pair.alpha.scan(&pair.filter).unwrap().tree;
    let beta = pair.beta.scan(&pair.filter).unwrap().tree;
    let plan = reconcile(&pair.ancestor, &alpha, &beta, pair.mode);
    for change in &plan.changes {
        local::apply(
            &mut pair.beta,
            &pair.filter,
            change,
            &mut DirectorySource::new(&a),
        )
        .unwrap();
    }
    // Beta's scanner wrote the 20 files, and knows their digests without reading them.
    let scan = pair.beta.scan(&pair.filter).unwrap();
    assert_eq!((scan.hashed, scan.tree), (0, alpha));
    // A file changed after it was written is read again.
    write(pair.beta_dir(), "d/3", "edited");
    assert_eq!(pair.beta.scan(&pair.filter).unwrap().hashed, 1);
}

/// A rewrite of the same size that puts the old modification time back (`cp -p`, a tool
/// restoring times) is still read again: the digest cache's stamp holds the change time, which
/// no one can put back.
#[test]
fn a_same_size_rewrite_with_the_old_mtime_is_seen_by_its_change_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut scanner = Scanner::new(dir.path());
    let filter = Filter::new(&[], true).unwrap();
    write(dir.path(), "notes.txt", "before");
    let first = scanner.scan(&filter).unwrap().tree;
    let path = dir.path().join("notes.txt");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    // Rewritten in place (the same inode), the same size, and the old mtime put back.
    fs::write(&path, "after!").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "after!");
    let second = scanner.scan(&filter).unwrap();
    assert_eq!(second.hashed, 1, "the file was read again");
    assert_ne!(second.tree, first);
    // As a fresh scanner, without the cache, sees it.
    let fresh = Scanner::new(dir.path()).scan(&filter).unwrap().tree;
    assert_eq!(fresh, second.tree);
}

/// A scan with many files to read reads them on several threads: each file still gets its own
/// digest, whatever thread read it and in whatever order they finished.
#[test]
fn a_scan_of_many_new_files_gives_each_its_own_digest() {
    let dir = tempfile::tempdir().unwrap();
    let filter = Filter::new(&[], true).unwrap();
    let contents: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("d{}/f{i}", i % 7),
                format!("{i}:").repeat(1 + i % 50),
            )
        })
        .collect();
    for (path, content) in &contents {
        write(dir.path(), path, content);
    }
    let scan = Scanner::new(dir.path()).scan(&filter).unwrap();
    assert_eq!(scan.hashed, contents.len());
    for (path, content) in &contents {
        match scan.tree.get(&RelPath::new(path).unwrap()) {
            Some(Entry::File { digest, size, .. }) => {
                assert_eq!(*digest, scan::digest_bytes(content.as_bytes()), "{path}");
                assert_eq!(*size, content.len() as u64, "{path}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
}

/// What a sending side may send without hashing it again: bytes read from a file that kept,
/// before and after the read, the very stamp under which the scanner took a digest it may
/// reuse. A digest read within its file's tick, another stamp, another digest: hashed.
#[test]
fn a_read_is_known_only_as_the_settled_digest_of_the_same_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let filter = Filter::new(&[], true).unwrap();
    write(dir.path(), "notes.txt", "before");
    let path = RelPath::new("notes.txt").unwrap();
    let full = dir.path().join("notes.txt");
    let stamps = || {
        let before = fs::File::open(&full).unwrap().metadata().unwrap();
        (before, fs::symlink_metadata(&full).unwrap())
    };
    let digest = scan::digest_bytes(b"before");
    let mut trusting = Scanner::with_tick(dir.path(), Duration::ZERO);
    trusting.scan(&filter).unwrap();
    let (before, after) = stamps();
    assert!(trusting.knows(&path, &before, &after, &digest));
    assert!(!trusting.knows(&path, &before, &after, &scan::digest_bytes(b"after!")));
    assert!(!trusting.knows(&RelPath::new("other").unwrap(), &before, &after, &digest));
    // Rewritten in place with the same size: a new stamp, which the scanner has not hashed.
    fs::write(&full, "after!").unwrap();
    fs::File::options()
        .write(true)
        .open(&full)
        .unwrap()
        .set_modified(before.modified().unwrap() + Duration::from_secs(1))
        .unwrap();
    let (rewritten, now) = stamps();
    assert!(!trusting.knows(&path, &rewritten, &now, &digest));
    // Changed during the read: the stamps before and after differ.
    assert!(!trusting.knows(&path, &before, &now, &digest));
    // Within its tick (an hour here), a digest is never reused, so no read is known.
    let mut wary = Scanner::with_tick(dir.path(), Duration::from_secs(3600));
    wary.scan(&filter).unwrap();
    let (before, after) = stamps();
    let digest = scan::digest_bytes(b"after!");
    assert!(!wary.knows(&path, &before, &after, &digest));
    trusting.scan(&filter).unwrap();
    assert!(trusting.knows(&path, &before, &after, &digest));
}

/// A change of many new files writes them on several threads: every one lands whole, with its
/// executable bit, none read back by the next scan; and a file whose content does not match its
/// digest fails the change at the first such file in the change's order, and is not written.
#[test]
fn a_directory_of_many_new_files_lands_whole_and_a_bad_one_is_named() {
    let mut pair = Pair::new(Mode::TwoWaySafe, &[]);
    let a = pair.alpha_dir().to_path_buf();
    for i in 0..150 {
        write(
            &a,
            &format!("d/sub{}/f{i:03}", i % 3),
            &format!("{i}.").repeat(i),
        );
    }
    fs::set_permissions(a.join("d/sub1/f100"), fs::Permissions::from_mode(0o755)).unwrap();
    let alpha = pair.alpha.scan(&pair.filter).unwrap().tree;
    let beta = pair.beta.scan(&pair.filter).unwrap().tree;
    let plan = reconcile(&pair.ancestor, &alpha, &beta, pair.mode);
    assert_eq!(plan.changes.len(), 1, "the directory is one change");
    local::apply(
        &mut pair.beta,
        &pair.filter,
        &plan.changes[0],
        &mut DirectorySource::new(&a),
    )
    .unwrap();
    assert_eq!(listing(pair.beta_dir()), listing(&a));
    let scan = pair.beta.scan(&pair.filter).unwrap();
    assert_eq!((scan.hashed, scan.tree), (0, alpha.clone()));

    // The same change onto a fresh side, with two files' content wrong.
    struct Spoiled(DirectorySource);
    impl local::Source for Spoiled {
        fn content(
            &mut self,
            path: &RelPath,
            digest: &nexus_sync::Digest,
        ) -> std::io::Result<Vec<u8>> {
            let bytes = self.0.content(path, digest)?;
            Ok(match path.as_str() {
                "d/sub0/f090" | "d/sub2/f020" => b"spoiled".to_vec(),
                _ => bytes,
            })
        }
    }
    let fresh = tempfile::tempdir().unwrap();
    let mut scanner = Scanner::new(fresh.path());
    let failed = local::apply(
        &mut scanner,
        &pair.filter,
        &plan.changes[0],
        &mut Spoiled(DirectorySource::new(&a)),
    )
    .unwrap_err();
    match failed {
        ApplyError::Content(path) => assert_eq!(path.as_str(), "d/sub0/f090"),
        other => panic!("{other}"),
    }
    assert!(read(fresh.path(), "d/sub0/f090").is_none());
    assert!(read(fresh.path(), "d/sub2/f020").is_none());
}
