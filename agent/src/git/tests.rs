//! The host's git with real git: mirrors, worktrees, their status and their removal.

use std::path::Path;

use nexus_fixtures::githttp::{GitServer, make_repo, run_git};
use nexus_protocol::WorkspaceName;
use nexus_protocol::credentials::{GrantedCredential, Secret};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::git::{RepoBase, RepoSource};

use super::host::GitHost;
use super::layout::Layout;
use super::mirror::Mirrors;
use super::worktree::{self, Made};

fn ws(name: &str) -> WorkspaceName {
    name.parse().unwrap()
}

/// A host's data dir and a repository (`file://`), with its commits (main's first, main, dev).
fn setup() -> (tempfile::TempDir, String, [String; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let commits = make_repo(&dir.path().join("upstream/app.git"));
    let url = format!("file://{}", dir.path().join("upstream/app.git").display());
    (dir, url, commits)
}

fn repo(url: &str, base: RepoBase) -> RepoSource {
    RepoSource {
        url: url.into(),
        base,
    }
}

fn data(dir: &Path) -> std::path::PathBuf {
    dir.join("data")
}

#[tokio::test]
async fn two_worktrees_share_one_object_store_and_start_where_asked() {
    let (dir, url, [first, main, dev]) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    let a = host
        .prepare(&ws("a"), &repo(&url, RepoBase::Default))
        .await
        .unwrap();
    let b = host
        .prepare(&ws("b"), &repo(&url, RepoBase::Branch("dev".into())))
        .await
        .unwrap();
    let c = host
        .prepare(&ws("c"), &repo(&url, RepoBase::Ref("v1".into())))
        .await
        .unwrap();
    let d = host
        .prepare(&ws("d"), &repo(&url, RepoBase::Ref(first[..10].into())))
        .await
        .unwrap();
    assert_eq!(
        (a.base_commit.as_str(), a.upstream.as_deref()),
        (main.as_str(), Some("origin/main"))
    );
    assert_eq!(
        (b.base_commit.as_str(), b.upstream.as_deref()),
        (dev.as_str(), Some("origin/dev"))
    );
    assert_eq!(
        (c.base_commit.as_str(), c.upstream.as_deref()),
        (first.as_str(), Some("origin/main"))
    );
    assert_eq!(d.base_commit, first);
    assert_eq!(a.mirror, b.mirror);
    assert_eq!(a.branch, "nexus/a");
    let layout = host.layout();
    let mirrors: Vec<_> = std::fs::read_dir(layout.mirrors_dir()).unwrap().collect();
    assert_eq!(mirrors.len(), 1);
    assert!(a.mirror.join("objects").is_dir());
    for name in ["a", "b", "c", "d"] {
        let files = layout.worktree(&ws(name));
        assert!(files.join(".git").is_file(), "{name}'s .git is a link");
        assert!(!files.join("objects").exists() && !files.join(".git/objects").exists());
        assert!(files.join("README.md").is_file());
        assert_eq!(
            run_git(&files, &["rev-parse", "--abbrev-ref", "HEAD"]),
            format!("nexus/{name}")
        );
        assert!(layout.read_record(&ws(name)).unwrap().is_some());
    }
    assert!(layout.worktree(&ws("b")).join("dev.txt").is_file());
    assert!(!layout.worktree(&ws("a")).join("dev.txt").exists());
    // The worktree's status: clean and level, then an edit and a commit.
    let status = host.status(&ws("a")).await.unwrap();
    assert_eq!((status.dirty_files, status.ahead, status.behind), (0, 0, 0));
    assert_eq!(status.head, main);
    let files = layout.worktree(&ws("a"));
    std::fs::write(files.join("new.txt"), "x").unwrap();
    std::fs::write(files.join("README.md"), "changed").unwrap();
    assert_eq!(host.status(&ws("a")).await.unwrap().dirty_files, 2);
    run_git(&files, &["add", "-A"]);
    run_git(&files, &["commit", "--quiet", "-m", "mine"]);
    let status = host.status(&ws("a")).await.unwrap();
    assert_eq!((status.dirty_files, status.ahead, status.behind), (0, 1, 0));
    let c = host.status(&ws("c")).await.unwrap();
    assert_eq!((c.ahead, c.behind), (0, 1));
    let missing = host.status(&ws("zz")).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::WorkspaceNotFound);
}

#[tokio::test]
async fn a_missing_branch_or_ref_is_a_git_failure_naming_it() {
    let (dir, url, _) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    for base in [
        RepoBase::Branch("nope".into()),
        RepoBase::Ref("v9".into()),
        RepoBase::Ref("deadbeef".into()),
    ] {
        let error = host
            .prepare(&ws("a"), &repo(&url, base.clone()))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::GitFailed, "{base:?}");
        assert!(
            error.message.contains(base.name().unwrap()),
            "{}",
            error.message
        );
        assert!(host.layout().read_record(&ws("a")).unwrap().is_none());
    }
    let error = host
        .prepare(
            &ws("a"),
            &repo("file:///nonexistent/x.git", RepoBase::Default),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::GitFailed);
    // After the failures, the workspace still gets its worktree.
    host.prepare(&ws("a"), &repo(&url, RepoBase::Default))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restart_keeps_the_users_files_and_a_stranger_directory_is_refused() {
    let (dir, url, _) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    let source = repo(&url, RepoBase::Default);
    let made = host.prepare(&ws("a"), &source).await.unwrap();
    let files = host.layout().worktree(&ws("a"));
    std::fs::write(files.join("README.md"), "my edit").unwrap();
    // A new agent (a restart), and the upstream moved on: the worktree stays as the user left it.
    let upstream = dir.path().join("upstream/app.git");
    let work = tempfile::tempdir().unwrap();
    run_git(
        work.path(),
        &["clone", "--quiet", upstream.to_str().unwrap(), "."],
    );
    std::fs::write(work.path().join("later.txt"), "later").unwrap();
    run_git(work.path(), &["add", "later.txt"]);
    run_git(
        work.path(),
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "--quiet",
            "-m",
            "later",
        ],
    );
    run_git(work.path(), &["push", "--quiet", "origin", "main"]);
    let again = GitHost::new(&data(dir.path()), None);
    let mirrors = Mirrors::new(Layout::new(&data(dir.path())));
    let kept = worktree::make(&mirrors, &ws("a"), &source, None)
        .await
        .unwrap();
    assert_eq!(kept, Made::Kept(made.clone()));
    assert_eq!(again.prepare(&ws("a"), &source).await.unwrap(), made);
    assert_eq!(
        std::fs::read_to_string(files.join("README.md")).unwrap(),
        "my edit"
    );
    assert!(!files.join("later.txt").exists());
    // Files that are no worktree of ours are not taken over.
    let other = host.layout().worktree(&ws("b"));
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("mine.txt"), "x").unwrap();
    let error = host.prepare(&ws("b"), &source).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::GitFailed);
    assert!(other.join("mine.txt").exists());
    // Nor one of another repository.
    let error = host
        .prepare(
            &ws("a"),
            &repo("file:///elsewhere/x.git", RepoBase::Default),
        )
        .await
        .unwrap_err();
    assert!(
        error.message.contains("another repository"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn destroy_keeps_a_branch_with_its_own_commits_and_deletes_the_others() {
    let (dir, url, _) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    let source = repo(&url, RepoBase::Default);
    let owner = "alice".parse().unwrap();
    let plain = host.prepare(&ws("plain"), &source).await.unwrap();
    let busy = host.prepare(&ws("busy"), &source).await.unwrap();
    let files = host.layout().worktree(&ws("busy"));
    std::fs::write(files.join("work.txt"), "work").unwrap();
    run_git(&files, &["add", "work.txt"]);
    run_git(&files, &["commit", "--quiet", "-m", "work"]);
    std::fs::write(host.layout().worktree(&ws("plain")).join("scratch"), "x").unwrap();

    assert_eq!(host.destroy(&ws("plain"), &owner).await.unwrap(), None);
    let kept = host.destroy(&ws("busy"), &owner).await.unwrap().unwrap();
    assert_eq!(
        (kept.branch.as_str(), kept.unique_commits),
        ("nexus/busy", 1)
    );
    let mirror = &plain.mirror;
    let branches = run_git(mirror, &["branch", "--list", "--format=%(refname:short)"]);
    assert_eq!(branches, "nexus/busy");
    assert_eq!(
        run_git(mirror, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    for name in ["plain", "busy"] {
        assert!(!host.layout().worktree(&ws(name)).exists());
        assert!(host.layout().read_record(&ws(name)).unwrap().is_none());
    }
    assert_eq!(host.layout().kept(), vec![kept.clone()]);
    assert_eq!(busy.mirror, *mirror);
    // Destroying again, or a workspace without a worktree, does nothing.
    assert_eq!(host.destroy(&ws("busy"), &owner).await.unwrap(), None);
    // A new workspace of the same name gets a branch of its own; the old commits stay.
    host.prepare(&ws("busy"), &source).await.unwrap();
    let kept_now = host.layout().kept();
    assert!(
        kept_now[0].branch.starts_with("nexus-kept/busy-"),
        "{kept_now:?}"
    );
    run_git(mirror, &["rev-parse", "--verify", &kept_now[0].branch]);
    assert_eq!(host.status(&ws("busy")).await.unwrap().ahead, 0);
}

#[tokio::test]
async fn commits_made_on_a_detached_head_are_kept_on_a_branch_of_their_own() {
    let (dir, url, _) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    let source = repo(&url, RepoBase::Default);
    let made = host.prepare(&ws("lab"), &source).await.unwrap();
    let files = host.layout().worktree(&ws("lab"));
    run_git(&files, &["checkout", "--quiet", "--detach"]);
    std::fs::write(files.join("experiment.txt"), "try").unwrap();
    run_git(&files, &["add", "experiment.txt"]);
    run_git(&files, &["commit", "--quiet", "-m", "experiment"]);
    let head = run_git(&files, &["rev-parse", "HEAD"]);

    let kept = host
        .destroy(&ws("lab"), &"alice".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(kept.branch.starts_with("nexus-kept/lab-"), "{kept:?}");
    assert_eq!(kept.unique_commits, 1);
    assert_eq!(run_git(&made.mirror, &["rev-parse", &kept.branch]), head);
    assert_eq!(host.layout().kept(), vec![kept]);
}

/// A container writes the mirror; the agent runs git as root. Hooks and an fsmonitor planted in
/// the mirror (as a container could before its config was read-only), and a worktree's
/// `commondir` pointed at a repository of the container's, run nothing.
#[tokio::test]
async fn nothing_planted_in_the_mirror_runs_as_the_agent() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, url, _) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    let source = repo(&url, RepoBase::Default);
    let made = host.prepare(&ws("first"), &source).await.unwrap();
    let marker = dir.path().join("ran");
    let script = dir.path().join("evil.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hooks = made.mirror.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    for hook in ["post-checkout", "reference-transaction", "pre-auto-gc"] {
        std::fs::copy(&script, hooks.join(hook)).unwrap();
    }
    run_git(
        &made.mirror,
        &["config", "core.fsmonitor", script.to_str().unwrap()],
    );
    // The first worktree's record points its common directory at one the container made.
    let evil = dir.path().join("evil.git");
    run_git(
        dir.path(),
        &["init", "--quiet", "--bare", evil.to_str().unwrap()],
    );
    run_git(
        &evil,
        &["config", "core.fsmonitor", script.to_str().unwrap()],
    );
    std::fs::write(
        made.mirror.join("worktrees/first/commondir"),
        format!("{}\n", evil.display()),
    )
    .unwrap();

    host.prepare(&ws("second"), &source).await.unwrap();
    host.status(&ws("second")).await.unwrap();
    let _ = host.status(&ws("first")).await;
    assert!(!marker.exists(), "a planted program ran as the agent");
}

#[tokio::test]
async fn a_password_protected_remote_takes_only_the_credential_it_wants() {
    let server = GitServer::start();
    let url = server.repo("app");
    server.require("bot", "pw");
    let dir = tempfile::tempdir().unwrap();
    let host = GitHost::new(dir.path(), None);
    let error = host
        .prepare(&ws("a"), &repo(&url, RepoBase::Default))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::GitAuthFailed, "{}", error.message);
    assert!(
        error.message.contains("none is stored"),
        "{}",
        error.message
    );
    // With a credential: refused when wrong, taken when right, and after a rotation only the
    // new one is.
    let mirrors = Mirrors::new(Layout::new(dir.path()));
    let source = repo(&url, RepoBase::Default);
    let granted = |password: &str| GrantedCredential {
        name: "ci".into(),
        username: "bot".into(),
        secret: Secret::new(password.into()),
    };
    let error = worktree::make(&mirrors, &ws("a"), &source, Some(&granted("wrong")))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::GitAuthFailed);
    assert!(
        error.message.contains("stored credential was refused"),
        "{}",
        error.message
    );
    assert!(!error.message.contains("wrong"));
    worktree::make(&mirrors, &ws("a"), &source, Some(&granted("pw")))
        .await
        .unwrap();
    server.require("bot", "rotated");
    let error = worktree::make(&mirrors, &ws("b"), &source, Some(&granted("pw")))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::GitAuthFailed);
    worktree::make(&mirrors, &ws("b"), &source, Some(&granted("rotated")))
        .await
        .unwrap();
    // The secret is on no disk of the host's git state.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("rotated") && !text.contains("Ym90Oi"),
            "{}",
            entry.display()
        );
    }
    server.open();
    host.prepare(&ws("c"), &repo(&url, RepoBase::Default))
        .await
        .unwrap();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn workspaces_made_at_once_take_turns_at_the_mirror() {
    let (dir, url, _) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    let source = repo(&url, RepoBase::Default);
    let names: Vec<WorkspaceName> = (0..6).map(|i| ws(&format!("w{i}"))).collect();
    let made =
        futures_util::future::join_all(names.iter().map(|name| host.prepare(name, &source))).await;
    for (name, result) in names.iter().zip(made) {
        let record = result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(host.layout().worktree(name).join(".git").is_file());
        assert_eq!(record.branch, format!("nexus/{name}"));
    }
    let mirror = host.layout().mirror(&url);
    let listed = run_git(&mirror, &["worktree", "list", "--porcelain"]);
    assert_eq!(
        listed.matches("\nbranch refs/heads/nexus/w").count(),
        6,
        "{listed}"
    );
}

#[tokio::test]
async fn a_destroy_cut_short_does_not_block_the_next_workspace_of_the_name() {
    let (dir, url, _) = setup();
    let host = GitHost::new(&data(dir.path()), None);
    let source = repo(&url, RepoBase::Default);
    host.prepare(&ws("a"), &source).await.unwrap();
    // The files and the host's record went, git's record of the worktree and its branch stayed.
    std::fs::remove_dir_all(host.layout().worktree(&ws("a"))).unwrap();
    host.layout().remove_record(&ws("a")).unwrap();
    let made = host.prepare(&ws("a"), &source).await.unwrap();
    assert_eq!(made.branch, "nexus/a");
    assert!(host.layout().worktree(&ws("a")).join("README.md").is_file());
    // The old branch held nothing of its own: it is gone, not set aside.
    let branches = run_git(
        &made.mirror,
        &["branch", "--list", "--format=%(refname:short)"],
    );
    assert_eq!(branches, "nexus/a");
}
