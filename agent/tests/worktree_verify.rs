//! `worktree verify [--repair]` through the agent's endpoint, with real git in temporary
//! directories laid out as `nexus_agent::git::layout` says: a deleted worktree, a moved one, a
//! stale lock, a broken `.git`, a deleted branch and a missing mirror are each found; repair mends
//! what can be mended, keeps a user's uncommitted edits (in the mended worktree, or in the aside
//! directory it reports), and a second verification finds nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::common::{assignment, desired, unique_host};
use nexus_agent::endpoint::Endpoint;
use nexus_agent::git::layout::{Layout, WorktreeRecord};
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::git::{RepoBase, RepoSource, WorktreeCheck, WorktreeProblem as P};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{Assignment, DesiredRun, HostRequest, Request, Response};
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{NodeId, RequestId, WorkspaceName};
use tokio::sync::watch;

fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A host's data directory, a source repository, and its mirror.
struct Host {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    layout: Layout,
    url: String,
    mirror: PathBuf,
    base: String,
    host: nexus_protocol::HostId,
}

impl Host {
    fn new(test: &str) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let source = root.join("source");
        std::fs::create_dir_all(source.join("src")).unwrap();
        run_git(&root, &["init", "--quiet", "-b", "main", "source"]);
        std::fs::write(source.join("README.md"), "hello\n").unwrap();
        std::fs::write(source.join("src/main.rs"), "fn main() {}\n").unwrap();
        run_git(&source, &["add", "."]);
        run_git(&source, &["commit", "--quiet", "-m", "first"]);
        let url = format!("file://{}", source.display());
        let layout = Layout::new(&root.join("data"));
        let mirror = layout.mirror(&url);
        std::fs::create_dir_all(mirror.parent().unwrap()).unwrap();
        run_git(
            &root,
            &["init", "--quiet", "--bare", mirror.to_str().unwrap()],
        );
        run_git(&mirror, &["remote", "add", "origin", &url]);
        run_git(
            &mirror,
            &[
                "fetch",
                "--quiet",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        );
        let base = run_git(&mirror, &["rev-parse", "refs/remotes/origin/main"]);
        Host {
            _tmp: tmp,
            root,
            layout,
            url,
            mirror,
            base,
            host: unique_host(test),
        }
    }

    /// The workspace's worktree, made as the host makes it (at `at`, the layout's place unless
    /// a test moves it later), and its record.
    fn worktree_at(&self, workspace: &str, at: &Path) {
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        run_git(
            &self.mirror,
            &[
                "worktree",
                "add",
                "--quiet",
                "-b",
                &format!("nexus/{workspace}"),
                at.to_str().unwrap(),
                &self.base,
            ],
        );
        self.layout
            .write_record(&WorktreeRecord {
                workspace: ws(workspace),
                url: self.url.clone(),
                branch: format!("nexus/{workspace}"),
                base_commit: self.base.clone(),
                upstream: Some("origin/main".into()),
                mirror: self.mirror.clone(),
                made_at: Timestamp::from_millis(1),
            })
            .unwrap();
    }

    fn worktree(&self, workspace: &str) -> PathBuf {
        let at = self.dir(workspace);
        self.worktree_at(workspace, &at);
        at
    }

    fn dir(&self, workspace: &str) -> PathBuf {
        self.layout.worktree(&ws(workspace))
    }

    fn assigned(&self, workspace: &str) -> Assignment {
        let mut a = assignment(workspace, 1, DesiredRun::Running, &[], "img", &[]);
        a.spec.repo = Some(RepoSource {
            url: self.url.clone(),
            base: RepoBase::Default,
        });
        a
    }

    fn endpoint(&self, assignments: Vec<Assignment>) -> Endpoint<HollowRuntime> {
        self.endpoint_with(self.layout.clone(), assignments)
    }

    fn endpoint_with(
        &self,
        layout: Layout,
        assignments: Vec<Assignment>,
    ) -> Endpoint<HollowRuntime> {
        let runtime = Arc::new(HollowRuntime::new(
            self.host.clone(),
            HollowConfig::default(),
        ));
        let (_tx, rx) = watch::channel(Some(desired(1, assignments)));
        // The sender may go: the receiver keeps the last value.
        Endpoint::new(Identity::Agent(self.host.clone()), runtime, rx)
            .with_worktrees(nexus_agent::git::verify::Verifier::new(layout))
    }
}

fn ws(name: &str) -> WorkspaceName {
    name.parse().unwrap()
}

fn peer(identity: Identity) -> Peer {
    Peer {
        identity,
        address: "127.0.0.1:1".parse().unwrap(),
        software: "test".into(),
    }
}

fn coordinator() -> Peer {
    peer(Identity::Coordinator(NodeId::new(1).unwrap()))
}

async fn ask(
    endpoint: &Endpoint<HollowRuntime>,
    who: &Peer,
    repair: bool,
) -> Result<Vec<WorktreeCheck>, nexus_protocol::error::WireError> {
    match endpoint
        .handle(
            who,
            RequestId::from_u128(1),
            Request::Host(HostRequest::Worktrees { repair }),
        )
        .await
    {
        Reply::Once(Ok(Response::Worktrees(mut reports))) => {
            assert_eq!(reports.len(), 1);
            let report = reports.pop().unwrap();
            assert_eq!(report.error, None);
            Ok(report.checks)
        }
        Reply::Once(Ok(other)) => panic!("unexpected {other:?}"),
        Reply::Once(Err(error)) => Err(error),
        Reply::Stream(_) => panic!("a stream"),
    }
}

async fn check(endpoint: &Endpoint<HollowRuntime>, repair: bool) -> WorktreeCheck {
    let mut checks = ask(endpoint, &coordinator(), repair).await.unwrap();
    assert_eq!(checks.len(), 1, "{checks:?}");
    checks.pop().unwrap()
}

/// A user's uncommitted work: a tracked file changed, a new file.
fn edit(dir: &Path) {
    std::fs::write(dir.join("README.md"), "hello, edited\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine\n").unwrap();
}

fn edits_kept(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("README.md")).unwrap(),
        "hello, edited\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine\n"
    );
}

/// The worktree is a sound checkout of its branch, and a second verification finds nothing.
async fn sound(endpoint: &Endpoint<HollowRuntime>, host: &Host, workspace: &str) {
    let again = check(endpoint, false).await;
    assert_eq!(again.problems, vec![], "{again:?}");
    let dir = host.dir(workspace);
    assert_eq!(
        run_git(&dir, &["rev-parse", "--abbrev-ref", "HEAD"]),
        format!("nexus/{workspace}")
    );
    assert!(dir.join("src/main.rs").is_file());
}

#[tokio::test]
async fn a_sound_worktree_passes_and_only_a_coordinator_may_ask() {
    let host = Host::new("wt-sound");
    host.worktree("api");
    // A record of a workspace the host no longer holds: reported, left alone.
    host.worktree("gone");
    let endpoint = host.endpoint(vec![host.assigned("api"), host.assigned("fresh")]);
    for who in [
        peer(Identity::User {
            name: "ada".parse().unwrap(),
            role: Role::Admin,
        }),
        peer(Identity::Agent(host.host.clone())),
    ] {
        let error = ask(&endpoint, &who, true).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::PermissionDenied);
    }
    let checks = ask(&endpoint, &coordinator(), true).await.unwrap();
    let by: Vec<(&str, &[P], &[P])> = checks
        .iter()
        .map(|c| {
            (
                c.workspace.as_str(),
                c.problems.as_slice(),
                c.remaining.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        by,
        vec![
            ("api", &[][..], &[][..]),
            // Assigned with a repository, never made: missing, and not a repair's to make.
            ("fresh", &[P::Missing][..], &[P::Missing][..]),
            ("gone", &[P::NotAssigned][..], &[][..]),
        ]
    );
    assert!(host.dir("gone").join(".git").is_file());
    assert!(checks.iter().all(|c| c.repairs.is_empty()));
}

#[tokio::test]
async fn a_deleted_worktree_is_found_and_checked_out_again() {
    let host = Host::new("wt-deleted");
    let dir = host.worktree("api");
    std::fs::remove_dir_all(&dir).unwrap();
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    let found = check(&endpoint, false).await;
    assert_eq!(found.problems, vec![P::Missing, P::Prunable]);
    assert_eq!(found.remaining, found.problems);
    assert!(found.repairs.is_empty());
    assert!(
        !dir.exists(),
        "a verification without --repair changes nothing"
    );
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.problems, vec![P::Missing, P::Prunable]);
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    assert_eq!(mended.repairs.len(), 2, "{mended:?}");
    assert_eq!(mended.moved_aside, None);
    sound(&endpoint, &host, "api").await;
}

#[tokio::test]
async fn a_moved_worktree_is_relinked_with_the_users_edits_in_place() {
    let host = Host::new("wt-moved");
    // Made elsewhere (an old data directory), then moved to where the layout wants it.
    let old = host.root.join("old-data/workspaces/api");
    host.worktree_at("api", &old);
    edit(&old);
    let dir = host.dir("api");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::rename(&old, &dir).unwrap();
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    let found = check(&endpoint, false).await;
    assert_eq!(found.problems, vec![P::LinkBroken, P::Prunable]);
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    assert_eq!(mended.moved_aside, None);
    edits_kept(&dir);
    let status = run_git(&dir, &["status", "--porcelain"]);
    assert!(status.contains("M README.md"), "{status}");
    assert!(status.contains("?? notes.txt"), "{status}");
    sound(&endpoint, &host, "api").await;
}

#[tokio::test]
async fn a_stale_lock_is_removed_and_the_edits_stay() {
    let host = Host::new("wt-locked");
    let dir = host.worktree("api");
    edit(&dir);
    run_git(
        &host.mirror,
        &[
            "worktree",
            "lock",
            "--reason",
            "crashed",
            dir.to_str().unwrap(),
        ],
    );
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    assert_eq!(check(&endpoint, false).await.problems, vec![P::Locked]);
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    edits_kept(&dir);
    sound(&endpoint, &host, "api").await;
}

#[tokio::test]
async fn a_deleted_and_locked_worktree_is_unlocked_pruned_and_made_again() {
    let host = Host::new("wt-dellock");
    let dir = host.worktree("api");
    run_git(&host.mirror, &["worktree", "lock", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    assert_eq!(
        check(&endpoint, false).await.problems,
        vec![P::Missing, P::Locked]
    );
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    sound(&endpoint, &host, "api").await;
}

#[tokio::test]
async fn a_broken_link_moves_the_files_aside_and_checks_out_afresh() {
    let host = Host::new("wt-broken");
    let dir = host.worktree("api");
    edit(&dir);
    std::fs::write(dir.join(".git"), "not a link at all\n").unwrap();
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    assert_eq!(check(&endpoint, false).await.problems, vec![P::LinkBroken]);
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    let aside = PathBuf::from(mended.moved_aside.clone().expect("moved aside"));
    assert!(
        aside.starts_with(host.root.join("data/git/aside")),
        "{aside:?}"
    );
    edits_kept(&aside);
    assert!(aside.join("src/main.rs").is_file());
    // The fresh checkout is clean: the edits live in the aside directory only.
    assert_eq!(run_git(&dir, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(dir.join("README.md")).unwrap(),
        "hello\n"
    );
    sound(&endpoint, &host, "api").await;
}

#[tokio::test]
async fn a_deleted_branch_is_made_again_at_the_base() {
    let host = Host::new("wt-branch");
    let dir = host.worktree("api");
    edit(&dir);
    run_git(&host.mirror, &["update-ref", "-d", "refs/heads/nexus/api"]);
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    assert_eq!(
        check(&endpoint, false).await.problems,
        vec![P::BranchMissing]
    );
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    assert_eq!(run_git(&dir, &["rev-parse", "HEAD"]), host.base);
    edits_kept(&dir);
    sound(&endpoint, &host, "api").await;
}

#[tokio::test]
async fn a_missing_mirror_is_reported_and_nothing_is_touched() {
    let host = Host::new("wt-mirror");
    let dir = host.worktree("api");
    edit(&dir);
    std::fs::remove_dir_all(&host.mirror).unwrap();
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.problems, vec![P::MirrorBroken]);
    assert_eq!(mended.remaining, vec![P::MirrorBroken]);
    assert!(mended.repairs.is_empty());
    edits_kept(&dir);
    assert!(dir.join(".git").is_file());
}

#[tokio::test]
async fn a_moved_data_directory_is_relinked_with_the_users_edits_in_place() {
    let host = Host::new("wt-datamove");
    let dir = host.worktree("api");
    edit(&dir);
    // The admin moves the whole data directory: mirror and worktree both.
    let moved = host.root.join("data-new");
    std::fs::rename(host.root.join("data"), &moved).unwrap();
    let layout = Layout::new(&moved);
    let endpoint = host.endpoint_with(layout.clone(), vec![host.assigned("api")]);
    let found = check(&endpoint, false).await;
    assert_eq!(found.problems, vec![P::LinkBroken, P::Prunable]);
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    assert_eq!(mended.moved_aside, None);
    let dir = layout.worktree(&ws("api"));
    edits_kept(&dir);
    assert_eq!(check(&endpoint, false).await.problems, vec![]);
    assert_eq!(
        run_git(&dir, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "nexus/api"
    );
}

#[tokio::test]
async fn a_record_that_lost_its_back_link_is_relinked() {
    let host = Host::new("wt-gitdir");
    let dir = host.worktree("api");
    edit(&dir);
    std::fs::remove_file(host.mirror.join("worktrees/api/gitdir")).unwrap();
    let endpoint = host.endpoint(vec![host.assigned("api")]);
    assert_eq!(check(&endpoint, false).await.problems, vec![P::LinkBroken]);
    let mended = check(&endpoint, true).await;
    assert_eq!(mended.remaining, vec![], "{mended:?}");
    assert_eq!(mended.moved_aside, None);
    edits_kept(&dir);
    sound(&endpoint, &host, "api").await;
}
