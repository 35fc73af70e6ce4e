//! Workspaces from a repository, end to end: three `nexus-coordinator`s, a Docker `nexus-agent`
//! and the `nexus` CLI, against a git server on loopback (git's `http-backend`). Two workspaces
//! of one repository on one host share one mirror (one object store), each on a branch of its
//! own; the container sees the checkout at /workspace with a `.git` link that holds inside it;
//! `inspect` shows the repository, branch and base commit, and the dirty files after an edit
//! made through `exec`, kept through a repair (a new container); a missing branch fails the create with GIT_FAILED; destroy removes the
//! worktree, deletes a branch with nothing of its own and keeps (and tells the owner of) one
//! holding a commit found nowhere else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_fixtures::githttp::{GitServer, run_git};
use nexus_protocol::identity::Role;
use nexus_tests::docker_fleet::{DockerFleet, IMAGE};
use nexus_tests::eventually;
use serde_json::Value;

const ADA: (&str, Role) = ("ada", Role::User);

fn create(fleet: &DockerFleet, name: &str, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "workspace",
        "create",
        name,
        "--image",
        IMAGE,
        "--class",
        "small",
        "--repo",
        url,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sleep", "1000000"]);
    fleet.run(ADA.0, ADA.1, &args)
}

fn exec(fleet: &DockerFleet, name: &str, script: &str) -> String {
    let out = fleet
        .command(ADA.0, ADA.1)
        .args(["workspace", "exec", name, "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exec {script:?} in {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn worktree(fleet: &DockerFleet, name: &str) -> Value {
    fleet.ok(ADA.0, ADA.1, &["workspace", "inspect", name])["worktree"].clone()
}

/// The `gitdir:` a worktree's `.git` file names.
fn gitdir(files: &Path) -> PathBuf {
    let link = std::fs::read_to_string(files.join(".git")).unwrap();
    PathBuf::from(link.trim().strip_prefix("gitdir: ").unwrap())
}

#[tokio::test]
async fn workspaces_of_one_repository_share_a_mirror_and_keep_what_destroy_must_not_lose() {
    let server = GitServer::start();
    let url = server.repo("app");
    let main = run_git(&server.path("app"), &["rev-parse", "main"]);
    let dev = run_git(&server.path("app"), &["rev-parse", "dev"]);
    let fleet = DockerFleet::start_with("gitwt", 1, &["--network-pool", "10.252.0.0/16"]).await;
    let data = fleet.agents.lock().unwrap()[0]
        .as_ref()
        .unwrap()
        .data_dir
        .clone();

    for (name, extra) in [("alpha", &[][..]), ("beta", &["--branch", "dev"][..])] {
        let out = create(&fleet, name, &url, extra);
        assert!(
            out.status.success(),
            "create {name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            fleet.logs()
        );
    }
    // One mirror, one object store; each worktree's `.git` is a link into it.
    let mirrors: Vec<_> = std::fs::read_dir(data.join("git/mirrors"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    let mirror = mirrors[0].path();
    assert!(mirror.join("objects").is_dir());
    for name in ["alpha", "beta"] {
        let files = data.join("workspaces").join(name);
        assert!(files.join(".git").is_file(), "{name}'s .git is a file");
        assert!(!files.join(".git/objects").exists());
        assert!(gitdir(&files).starts_with(&mirror));
        // Inside the container: the checkout at /workspace, and the link's target there too.
        assert_eq!(exec(&fleet, name, "cat /workspace/README.md"), "hello");
        let target = gitdir(&files);
        let seen = exec(
            &fleet,
            name,
            &format!(
                "test -f {0}/HEAD && test -f {0}/commondir && echo ok",
                target.display()
            ),
        );
        assert_eq!(
            seen, "ok",
            "the .git link's target inside {name}'s container"
        );
    }
    assert_eq!(exec(&fleet, "beta", "cat /workspace/dev.txt"), "dev");

    // Inspect: the record's repository, branch and base, and the host's live status.
    let fleet_ref = &fleet;
    let alpha = eventually(
        "alpha's worktree status",
        Duration::from_secs(30),
        || async {
            let wt = worktree(fleet_ref, "alpha");
            (!wt["status"].is_null() && !wt["branch"].is_null()).then_some(wt)
        },
    )
    .await;
    assert_eq!(alpha["url"], url.as_str());
    assert_eq!(alpha["branch"], "nexus/alpha");
    assert_eq!(alpha["base_commit"], main.as_str());
    assert_eq!(alpha["status"]["dirty_files"], 0);
    let beta = worktree(&fleet, "beta");
    assert_eq!(
        (beta["base_commit"].as_str(), beta["base"]["name"].as_str()),
        (Some(dev.as_str()), Some("dev"))
    );
    exec(
        &fleet,
        "alpha",
        "echo edit > /workspace/README.md && echo new > /workspace/new.txt",
    );
    let dirty = worktree(&fleet, "alpha")["status"]["dirty_files"].clone();
    assert_eq!(dirty, 2);

    // A repair recreates the container: the worktree and the user's edits stay as they were.
    fleet.ok(ADA.0, ADA.1, &["workspace", "repair", "alpha"]);
    assert_eq!(exec(&fleet, "alpha", "cat /workspace/README.md"), "edit");
    assert_eq!(worktree(&fleet, "alpha")["status"]["dirty_files"], 2);

    // A branch the repository does not have: the create fails with GIT_FAILED, naming it.
    let out = create(&fleet, "gamma", &url, &["--branch", "nope", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let error = eventually("gamma's git failure", Duration::from_secs(30), || async {
        let view = fleet_ref.ok(ADA.0, ADA.1, &["workspace", "inspect", "gamma"]);
        let error = view["last_error"].clone();
        (error["code"] == "GIT_FAILED").then_some(error)
    })
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("nope"),
        "{error}"
    );

    // A commit on beta's branch, made on the host: beta's destroy keeps the branch and tells
    // Ada; alpha's (edits, no commit) deletes its branch.
    let beta_files = data.join("workspaces/beta");
    std::fs::write(beta_files.join("mine.txt"), "mine\n").unwrap();
    run_git(&beta_files, &["add", "mine.txt"]);
    run_git(&beta_files, &["commit", "--quiet", "-m", "mine"]);
    for name in ["alpha", "beta", "gamma"] {
        fleet.ok(ADA.0, ADA.1, &["workspace", "destroy", name]);
    }
    for name in ["alpha", "beta"] {
        assert!(
            !data.join("workspaces").join(name).exists(),
            "{name}'s files are gone"
        );
        assert!(
            !mirror.join("worktrees").join(name).exists(),
            "{name}'s worktree is pruned"
        );
        assert!(!data.join(format!("git/worktrees/{name}.json")).exists());
    }
    let branches = run_git(&mirror, &["branch", "--list", "--format=%(refname:short)"]);
    assert_eq!(branches, "nexus/beta");
    let kept: Value =
        serde_json::from_slice(&std::fs::read(data.join("git/kept.json")).unwrap()).unwrap();
    assert_eq!(kept[0]["branch"], "nexus/beta");
    assert_eq!(kept[0]["unique_commits"], 1);
    let notice = eventually(
        "the kept branch's notice",
        Duration::from_secs(30),
        || async {
            let out = fleet_ref.run(ADA.0, ADA.1, &["workspace", "list"]);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            stderr.contains("nexus/beta").then_some(stderr)
        },
    )
    .await;
    assert!(
        notice.contains("1 commit") && notice.contains(&fleet.hosts[0]),
        "{notice}"
    );
}
