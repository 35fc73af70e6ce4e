//! A workspace's worktree in `nexus workspace inspect` (issue 24): the repository it was made
//! from, its branch and base commit as the record holds them, and how it stands now as its host
//! says (dirty files, ahead, behind), or that the host did not say.

use nexus_protocol::WorkspaceName;
use nexus_protocol::git::{RepoBase, RepoSource, WorktreeFacts, WorktreeStatus};
use nexus_protocol::message::{Request, Response, WorkspaceRequest};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::settings::Client;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// What the coordinator holds of the worktree and what its host said: `None` from a coordinator
/// that does not know the request.
pub type Worktree = Option<(Option<WorktreeFacts>, Option<WorktreeStatus>)>;

/// Asks the coordinator for the workspace's worktree.
pub async fn for_inspect(
    client: &mut Client<'_>,
    name: &WorkspaceName,
) -> Result<Worktree, CliError> {
    let request = Request::Workspace(WorkspaceRequest::Worktree(name.clone()));
    match client.request(request, TIMEOUT).await {
        Ok(Response::Worktree { facts, status }) => Ok(Some((facts, status))),
        Ok(other) => Err(CliError::unexpected(&other)),
        Err(error) if error.error.code == nexus_protocol::ErrorCode::Unsupported => Ok(None),
        Err(error) => Err(error),
    }
}

fn base(repo: &RepoSource) -> String {
    match &repo.base {
        RepoBase::Default => "the default branch".into(),
        RepoBase::Branch(branch) => format!("branch {branch}"),
        RepoBase::Ref(name) => format!("ref {name}"),
    }
}

/// The worktree's lines of `inspect`'s text.
pub fn text(
    repo: &RepoSource,
    worktree: Option<&(Option<WorktreeFacts>, Option<WorktreeStatus>)>,
) -> String {
    let mut text = format!("repository:  {} (from {})\n", repo.url, base(repo));
    let (facts, status) = worktree.cloned().unwrap_or((None, None));
    match &facts {
        Some(facts) => {
            text.push_str(&format!("branch:      {}\n", facts.branch));
            text.push_str(&format!("base commit: {}\n", facts.base_commit));
        }
        None => text.push_str("branch:      (not made yet: its host has not reported it)\n"),
    }
    match &status {
        Some(status) => {
            let upstream = status
                .upstream
                .as_deref()
                .map(|u| format!(" of {u}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "worktree:    {} dirty file{}, {} ahead, {} behind{upstream}; head {}\n",
                status.dirty_files,
                if status.dirty_files == 1 { "" } else { "s" },
                status.ahead,
                status.behind,
                short(&status.head),
            ));
        }
        None if worktree.is_none() => {
            text.push_str("worktree:    (this coordinator does not serve worktrees)\n");
        }
        None => text.push_str(
            "worktree:    (its host did not answer: dirty files, ahead and behind unknown)\n",
        ),
    }
    text
}

/// `{"url", "base": {"kind", "name"}, "branch", "base_commit", "status": {...} | null}`.
pub fn json(
    repo: &RepoSource,
    worktree: Option<&(Option<WorktreeFacts>, Option<WorktreeStatus>)>,
) -> Value {
    let (kind, name) = match &repo.base {
        RepoBase::Default => ("default", None),
        RepoBase::Branch(branch) => ("branch", Some(branch.clone())),
        RepoBase::Ref(name) => ("ref", Some(name.clone())),
    };
    let (facts, status) = worktree.cloned().unwrap_or((None, None));
    json!({
        "url": repo.url,
        "base": {"kind": kind, "name": name},
        "branch": facts.as_ref().map(|f| f.branch.clone()),
        "base_commit": facts.as_ref().map(|f| f.base_commit.clone()),
        "status": status.map(|s| json!({
            "head": s.head,
            "dirty_files": s.dirty_files,
            "ahead": s.ahead,
            "behind": s.behind,
            "upstream": s.upstream,
            "checked_at": s.checked_at.as_millis(),
        })),
    })
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use nexus_protocol::clock::Timestamp;

    use super::*;

    #[test]
    fn inspect_shows_the_record_and_says_when_the_host_did_not_answer() {
        let repo = RepoSource {
            url: "https://git.example/app.git".into(),
            base: RepoBase::Branch("dev".into()),
        };
        let facts = WorktreeFacts {
            branch: "nexus/api".into(),
            base_commit: "a".repeat(40),
        };
        let status = WorktreeStatus {
            branch: facts.branch.clone(),
            base_commit: facts.base_commit.clone(),
            head: "b".repeat(40),
            dirty_files: 1,
            ahead: 2,
            behind: 3,
            upstream: Some("origin/dev".into()),
            checked_at: Timestamp::from_millis(5),
        };
        let live = text(&repo, Some(&(Some(facts.clone()), Some(status.clone()))));
        for part in [
            "https://git.example/app.git (from branch dev)",
            "branch:      nexus/api",
            &"a".repeat(40),
            "1 dirty file, 2 ahead, 3 behind of origin/dev; head bbbbbbbbbbbb",
        ] {
            assert!(live.contains(part), "{part} in {live}");
        }
        let silent = text(&repo, Some(&(Some(facts.clone()), None)));
        assert!(
            silent.contains("nexus/api") && silent.contains("did not answer"),
            "{silent}"
        );
        let unmade = text(&repo, Some(&(None, None)));
        assert!(unmade.contains("not made yet"), "{unmade}");
        let value = json(&repo, Some(&(Some(facts), Some(status))));
        assert_eq!(value["branch"], "nexus/api");
        assert_eq!(value["status"]["dirty_files"], 1);
        assert_eq!(value["base"]["kind"], "branch");
        assert_eq!(json(&repo, None)["status"], Value::Null);
    }
}
