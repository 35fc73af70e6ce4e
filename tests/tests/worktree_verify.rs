//! `nexus admin worktree verify [--host H] [--repair]` on real processes: a coordinator and a
//! hollow `nexus-agent`, driven through the `nexus` CLI. Two workspaces are made from one
//! repository; the agent checks both out of one mirror. One worktree is then deleted, the other locked with a user's edit
//! in it: verify finds both and exits non-zero, `--repair` mends both, keeps the edit and exits
//! 0, and a verification of the one host finds nothing; once the agent is gone, its host is
//! reported as not asked and the command fails.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nexus_agent::git::layout::Layout;
use nexus_protocol::git::{RepoBase, RepoSource};
use nexus_protocol::identity::Role;
use nexus_protocol::message::{Request, Response, WorkspaceRequest};
use nexus_protocol::{HostId, RequestId};
use nexus_tests::cluster::TestCluster;
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, cli_command, connect};
use serde_json::Value;

fn git(dir: &Path, args: &[&str]) -> String {
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

struct Run {
    ok: bool,
    json: Value,
    stderr: String,
}

fn verify(pki: &TestPki, cluster: &TestCluster, args: &[&str]) -> Run {
    let identity = pki::user("root", Role::Admin);
    let home = pki.scratch("home-root");
    let out = cli_command(pki, &identity, &home, &cluster.live_addresses())
        .args(["-o", "json", "admin", "worktree", "verify"])
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The check of `workspace` in a verification's JSON.
fn check<'a>(run: &'a Value, workspace: &str) -> &'a Value {
    run["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|h| h["checks"].as_array().unwrap())
        .find(|c| c["workspace"] == workspace)
        .unwrap_or_else(|| panic!("no check of {workspace} in {run}"))
}

#[tokio::test]
async fn verify_finds_a_deleted_and_a_locked_worktree_and_repair_mends_them() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let host = format!("t{}-wtv", std::process::id());
    let mut agent = AgentProcess::start(&pki, &host, &cluster.live_addresses(), &[]);

    // The repository, served from the test's scratch directory.
    let scratch = pki.scratch("repo");
    let source = scratch.join("source");
    std::fs::create_dir_all(&source).unwrap();
    git(&scratch, &["init", "--quiet", "-b", "main", "source"]);
    std::fs::write(source.join("README.md"), "hello\n").unwrap();
    git(&source, &["add", "."]);
    git(&source, &["commit", "--quiet", "-m", "first"]);
    let url = format!("file://{}", source.display());

    // Two workspaces with the repository, on the agent's host.
    let leader = cluster.live_addresses()[0];
    let user = eventually("the agent registered", Duration::from_secs(20), || async {
        let user = connect(&pki, &pki::user("ada", Role::Admin), leader)
            .await
            .ok()?;
        let mut spec = nexus_fixtures::spec("wt-a");
        spec.host = Some(HostId::new(&host).unwrap());
        spec.repo = Some(RepoSource {
            url: url.clone(),
            base: RepoBase::Branch("main".into()),
        });
        let created = user
            .request_with(
                RequestId::random(),
                Request::Workspace(WorkspaceRequest::Create(spec)),
                Duration::from_secs(15),
            )
            .await
            .ok()?;
        assert!(matches!(created, Response::Workspace(_)), "{created:?}");
        Some(user)
    })
    .await;
    let mut spec = nexus_fixtures::spec("wt-b");
    spec.host = Some(HostId::new(&host).unwrap());
    spec.repo = Some(RepoSource {
        url: url.clone(),
        base: RepoBase::Default,
    });
    user.request_with(
        RequestId::random(),
        Request::Workspace(WorkspaceRequest::Create(spec)),
        Duration::from_secs(15),
    )
    .await
    .unwrap();

    // The agent makes both worktrees of one mirror; verify finds them sound.
    let healthy = eventually(
        "both workspaces' worktrees made and sound",
        Duration::from_secs(60),
        || async {
            let run = verify(&pki, &cluster, &[]);
            let sound = run.json["hosts"]
                .as_array()?
                .iter()
                .flat_map(|h| h["checks"].as_array().unwrap())
                .filter(|c| c["status"] == "ok")
                .count();
            (sound == 2).then_some(run)
        },
    )
    .await;
    assert!(healthy.ok, "{}\n{}", healthy.stderr, healthy.json);
    let layout = Layout::new(&agent.data_dir);
    let mirror = layout.mirror(&url);

    // wt-a: a user's edit, then a stale lock. wt-b: deleted.
    let a = layout.worktree(&"wt-a".parse().unwrap());
    std::fs::write(a.join("README.md"), "hello, edited\n").unwrap();
    std::fs::write(a.join("notes.txt"), "mine\n").unwrap();
    git(&mirror, &["worktree", "lock", a.to_str().unwrap()]);
    let b = layout.worktree(&"wt-b".parse().unwrap());
    std::fs::remove_dir_all(&b).unwrap();

    let broken = verify(&pki, &cluster, &[]);
    assert!(!broken.ok, "{}", broken.json);
    assert!(broken.stderr.contains("--repair"), "{}", broken.stderr);
    assert_eq!(check(&broken.json, "wt-a")["status"], "broken");
    assert_eq!(check(&broken.json, "wt-a")["problems"][0], "locked");
    assert_eq!(check(&broken.json, "wt-b")["status"], "broken");
    assert_eq!(check(&broken.json, "wt-b")["problems"][0], "missing");
    assert_eq!(broken.json["broken"], 2);
    assert!(
        !b.exists(),
        "a verification without --repair changes nothing"
    );

    let repaired = verify(&pki, &cluster, &["--repair"]);
    assert!(
        repaired.ok,
        "{}\n{}\n--- agent\n{}",
        repaired.stderr,
        repaired.json,
        agent.process.log()
    );
    assert_eq!(check(&repaired.json, "wt-a")["status"], "repaired");
    assert_eq!(check(&repaired.json, "wt-b")["status"], "repaired");
    assert_eq!(
        std::fs::read_to_string(a.join("README.md")).unwrap(),
        "hello, edited\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("notes.txt")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("README.md")).unwrap(),
        "hello\n"
    );

    let again = verify(&pki, &cluster, &["--host", &host]);
    assert!(again.ok, "{}\n{}", again.stderr, again.json);
    assert_eq!(check(&again.json, "wt-a")["status"], "ok");
    assert_eq!(check(&again.json, "wt-b")["status"], "ok");

    let nobody = verify(&pki, &cluster, &["--host", "nosuch"]);
    assert!(!nobody.ok);
    assert!(
        nobody.stderr.contains("no host is named"),
        "{}",
        nobody.stderr
    );

    // A host that does not answer is reported, and the command fails.
    agent.process.kill();
    let down = verify(&pki, &cluster, &[]);
    assert!(!down.ok, "{}", down.json);
    assert_eq!(down.json["unreachable"], 1, "{}", down.json);
    assert!(
        down.json["hosts"][0]["error"]["code"].is_string(),
        "{}",
        down.json
    );
    assert!(down.stderr.contains("not asked"), "{}", down.stderr);
}
