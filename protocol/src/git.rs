//! Workspaces from a git repository: what a user asks for ([`RepoSource`]), what the host made of
//! it ([`WorktreeFacts`]), how a worktree stands ([`WorktreeStatus`]) and what a verification found
//! ([`WorktreeReport`]).
//!
//! Every name here reaches `git`'s argv on a host, so each is checked before it crosses the wire
//! and again where it is read ([`RepoSource::check`]): a URL of a known scheme with no secret in
//! it, a branch or ref that `git check-ref-format` would accept and that cannot be read as an
//! option.

use serde::{Deserialize, Serialize};

use crate::WorkspaceName;
use crate::clock::Timestamp;
use crate::error::InvalidValue;

/// The longest repository URL taken.
pub const MAX_URL_LEN: usize = 2048;
/// The longest branch or ref name taken.
pub const MAX_REF_LEN: usize = 255;
/// The prefix of every workspace's own branch: `nexus/<workspace>`.
pub const BRANCH_PREFIX: &str = "nexus/";

/// A repository and where in it a workspace starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoSource {
    /// `https://`, `http://`, `ssh://`, `git://` or `file://`, without a user's password.
    pub url: String,
    pub base: RepoBase,
}

/// Where a workspace's own branch starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RepoBase {
    /// The remote's default branch (its `HEAD`).
    Default,
    /// The tip of this remote branch, when the workspace is made.
    Branch(String),
    /// A tag or commit.
    Ref(String),
}

impl RepoBase {
    /// The name as the user gave it, or `None` for the default branch.
    pub fn name(&self) -> Option<&str> {
        match self {
            RepoBase::Default => None,
            RepoBase::Branch(name) | RepoBase::Ref(name) => Some(name),
        }
    }
}

impl RepoSource {
    /// Checks the URL and the base; see the module's notes.
    pub fn check(&self) -> Result<(), InvalidValue> {
        check_url(&self.url)?;
        if let Some(name) = self.base.name() {
            check_ref(name)?;
        }
        Ok(())
    }
}

/// The branch a workspace works on, of its own: `nexus/<workspace>`.
pub fn workspace_branch(workspace: &WorkspaceName) -> String {
    format!("{BRANCH_PREFIX}{workspace}")
}

/// A repository URL Nexus will hand to git: a known scheme, no user's password (credentials live
/// in the credential store), no whitespace or control characters, no leading `-`.
pub fn check_url(url: &str) -> Result<(), InvalidValue> {
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(InvalidValue(format!(
            "a repository URL must be 1 to {MAX_URL_LEN} bytes long"
        )));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue(
            "a repository URL must not contain whitespace or control characters".into(),
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(InvalidValue(format!(
            "{url:?} is not a URL (expected https://, http://, ssh://, git:// or file://)"
        )));
    };
    if !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
        return Err(InvalidValue(format!(
            "unsupported repository scheme {scheme:?} (expected https, http, ssh, git or file)"
        )));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        // Over HTTP a user part is a token as often as a name (`https://TOKEN@host/`), and the
        // URL is kept in the replicated state, shown, logged and put on git's command line.
        // ssh's and git's user part is a login name (`ssh://git@host/`), never a password.
        if userinfo.contains(':') || matches!(scheme, "https" | "http") {
            return Err(InvalidValue(
                "a repository URL must not carry a user, token or password: store it with `nexus admin credentials set git`"
                    .into(),
            ));
        }
    }
    if scheme != "file" && authority.is_empty() {
        return Err(InvalidValue(format!("{url:?} names no host")));
    }
    Ok(())
}

/// A branch, tag or commit name git accepts (`git check-ref-format --allow-onelevel`'s rules) and
/// that no command line could read as an option.
pub fn check_ref(name: &str) -> Result<(), InvalidValue> {
    let bad = |why: &str| {
        Err(InvalidValue(format!(
            "{name:?} is not a valid git ref: {why}"
        )))
    };
    if name.is_empty() || name.len() > MAX_REF_LEN {
        return bad(&format!("it must be 1 to {MAX_REF_LEN} bytes long"));
    }
    if name.starts_with('-') {
        return bad("it must not start with '-'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return bad("it must not start or end with '/' or end with '.'");
    }
    if name.contains("..") || name.contains("//") || name.contains("@{") || name == "@" {
        return bad("it must not contain '..', '//' or '@{'");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return bad("it must not contain spaces, control characters or any of ~^:?*[\\");
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return bad("no part may start with '.' or end with '.lock'");
    }
    Ok(())
}

/// Whether `text` is a full commit id: 40 hex digits (SHA-1) or 64 (SHA-256), lowercase.
pub fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a host made of a workspace's repository: recorded in the workspace's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeFacts {
    /// The workspace's own branch.
    pub branch: String,
    /// The commit the branch started from (40 hex digits).
    pub base_commit: String,
}

/// How a workspace's worktree stands now, as its host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeStatus {
    pub branch: String,
    pub base_commit: String,
    /// The commit checked out.
    pub head: String,
    /// Files changed, added or deleted and not committed (untracked ones included).
    pub dirty_files: u32,
    /// Commits on the branch that its upstream does not have, and the other way round. The
    /// upstream is the remote branch the workspace started from (the default branch for a ref).
    pub ahead: u32,
    pub behind: u32,
    /// The remote branch counted against, as the mirror last fetched it.
    pub upstream: Option<String>,
    pub checked_at: Timestamp,
}

/// One thing wrong with a worktree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorktreeProblem {
    /// The workspace's files directory holds no worktree at all.
    Missing,
    /// The worktree's `.git` link and the mirror's record of it disagree (the worktree was moved,
    /// or the mirror was).
    LinkBroken,
    /// The workspace's branch does not exist in the mirror.
    BranchMissing,
    /// The base commit is not in the mirror.
    BaseUnreachable,
    /// Git's record of the worktree is locked (a `locked` file left behind).
    Locked,
    /// Git would prune the worktree's record (its directory is gone).
    Prunable,
    /// The mirror itself is missing or damaged.
    MirrorBroken,
    /// Something else, in git's words.
    Other(String),
    // worktree verify (issue 24, item 3):
    /// The host keeps a worktree record of a workspace it no longer holds: reported, never
    /// touched (a coordinator restored from an old backup must not cost anyone their files).
    NotAssigned,
}

impl WorktreeProblem {
    pub fn as_str(&self) -> &str {
        match self {
            WorktreeProblem::Missing => "missing",
            WorktreeProblem::LinkBroken => "link-broken",
            WorktreeProblem::BranchMissing => "branch-missing",
            WorktreeProblem::BaseUnreachable => "base-unreachable",
            WorktreeProblem::Locked => "locked",
            WorktreeProblem::Prunable => "prunable",
            WorktreeProblem::MirrorBroken => "mirror-broken",
            WorktreeProblem::Other(text) => text,
            WorktreeProblem::NotAssigned => "not-assigned",
        }
    }
}

/// What a verification found for one workspace, and what a repair did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeCheck {
    pub workspace: WorkspaceName,
    pub url: String,
    pub branch: String,
    /// What was wrong when the check began.
    pub problems: Vec<WorktreeProblem>,
    /// What a repair did, in words (empty without `--repair`).
    pub repairs: Vec<String>,
    /// Where a damaged worktree's files were moved aside, with user's changes kept.
    pub moved_aside: Option<String>,
    /// What is still wrong after the check (and the repair, if asked for).
    pub remaining: Vec<WorktreeProblem>,
}

impl WorktreeCheck {
    /// Whether the worktree is sound now.
    pub fn healthy(&self) -> bool {
        self.remaining.is_empty()
    }
}

/// A branch a destroy kept because it holds commits that exist nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBranch {
    pub workspace: WorkspaceName,
    pub url: String,
    pub branch: String,
    /// Commits on it that no other branch or remote branch of the mirror has.
    pub unique_commits: u32,
    pub at: Timestamp,
}

/// One host's answer to a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeReport {
    pub host: crate::HostId,
    pub checks: Vec<WorktreeCheck>,
    /// Branches destroys kept on this host, still in its mirrors.
    pub kept: Vec<KeptBranch>,
    /// The host could not be asked (down, or it failed): why.
    pub error: Option<crate::WireError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_known_schemes_without_passwords_are_taken() {
        for url in [
            "https://git.example.com/team/app.git",
            "http://127.0.0.1:8080/app.git",
            "ssh://git@example.com/app.git",
            "file:///srv/git/app.git",
            "git://example.com/app",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
        for url in [
            "",
            "app.git",
            "-uhttps://x/y",
            "ftp://example.com/app.git",
            "https://user:secret@example.com/app.git",
            "https://ghp_token@github.com/o/r.git",
            "ssh://git:pw@example.com/app.git",
            "https://example.com/a b.git",
            "https:///app.git",
            "https://example.com/\napp.git",
        ] {
            assert!(check_url(url).is_err(), "{url:?}");
        }
        assert!(check_url(&format!("https://x/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn refs_follow_gits_rules_and_are_never_options() {
        for name in ["main", "release/1.2", "v1.0.0", "feature-x", "0123abcd"] {
            assert!(check_ref(name).is_ok(), "{name}");
        }
        for name in [
            "",
            "-b",
            "--upload-pack=evil",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "/main",
            "main/",
            "main.",
            "a//b",
            ".hidden",
            "x/.y",
            "main.lock",
            "@",
            "a@{1}",
            "a\\b",
            "a*",
        ] {
            assert!(check_ref(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn a_source_checks_its_url_and_base() {
        let source = RepoSource {
            url: "https://example.com/app.git".into(),
            base: RepoBase::Branch("-x".into()),
        };
        assert!(source.check().is_err());
        let source = RepoSource {
            url: "https://example.com/app.git".into(),
            base: RepoBase::Default,
        };
        assert!(source.check().is_ok());
        assert!(is_commit_id(&"a".repeat(40)) && is_commit_id(&"0".repeat(64)));
        assert!(
            !is_commit_id(&"A".repeat(40))
                && !is_commit_id("abc")
                && !is_commit_id(&"g".repeat(40))
        );
        assert_eq!(
            workspace_branch(&"api".parse().unwrap()),
            "nexus/api".to_string()
        );
    }
}
