//! One bare mirror per repository URL ([`Layout::mirror`]), fetched on demand, one fetch at a
//! time per mirror: an async lock per mirror path, shared by every workspace of the host.
//!
//! The mirror's remote `origin` is the URL; its branches are fetched into
//! `refs/remotes/origin/*` and its tags into `refs/tags/*`. A workspace's own branch lives in
//! `refs/heads/nexus/<workspace>`, so a fetch (which prunes only `refs/remotes/origin/*`) never
//! touches it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nexus_protocol::credentials::GrantedCredential;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::{RepoBase, check_ref, check_url};

use super::layout::Layout;
use super::run::{FETCH_TIMEOUT, LOCAL_TIMEOUT, git};

/// Where a workspace's branch starts, resolved in a freshly fetched mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit (40 hex digits).
    pub commit: String,
    /// The remote branch counted against (`origin/<branch>`): the branch asked for, or the
    /// remote's default branch for the default and for a ref.
    pub upstream: Option<String>,
}

/// The host's mirrors and their fetch locks.
#[derive(Debug)]
pub struct Mirrors {
    layout: Layout,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirrors {
    pub fn new(layout: Layout) -> Mirrors {
        Mirrors {
            layout,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The lock of the mirror at `path`: held for a fetch, and for anything that must not see a
    /// fetch half done.
    pub fn lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }

    /// Makes the mirror of `url` if it is missing, fetches it (with `auth`, if any) and resolves
    /// `base` in it. The caller holds the mirror's lock ([`Mirrors::lock`]).
    pub async fn fetch_and_resolve(
        &self,
        url: &str,
        base: &RepoBase,
        auth: Option<&GrantedCredential>,
    ) -> Result<(PathBuf, Resolved), WireError> {
        check_url(url).map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.0))?;
        if let Some(name) = base.name() {
            check_ref(name).map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.0))?;
        }
        let mirror = self.layout.mirror(url);
        ensure(&mirror, url).await?;
        git(
            Some(&mirror),
            ["fetch", "--quiet", "--force", "--prune", "--tags", "origin"],
            auth,
            FETCH_TIMEOUT,
        )
        .await?;
        let default = match base {
            RepoBase::Branch(_) => None,
            RepoBase::Default | RepoBase::Ref(_) => default_branch(&mirror, auth).await?,
        };
        let resolved = match base {
            RepoBase::Default => {
                let Some(branch) = default else {
                    return Err(WireError::new(
                        ErrorCode::GitFailed,
                        format!("{url} has no default branch (an empty repository?)"),
                    ));
                };
                let commit = commit_of(&mirror, &format!("refs/remotes/origin/{branch}"))
                    .await?
                    .ok_or_else(|| missing(url, "default branch", &branch))?;
                Resolved {
                    commit,
                    upstream: Some(format!("origin/{branch}")),
                }
            }
            RepoBase::Branch(branch) => {
                let commit = commit_of(&mirror, &format!("refs/remotes/origin/{branch}"))
                    .await?
                    .ok_or_else(|| missing(url, "branch", branch))?;
                Resolved {
                    commit,
                    upstream: Some(format!("origin/{branch}")),
                }
            }
            RepoBase::Ref(name) => {
                let tag = commit_of(&mirror, &format!("refs/tags/{name}")).await?;
                let commit = match tag {
                    Some(commit) => Some(commit),
                    None if looks_like_commit(name) => commit_of(&mirror, name).await?,
                    None => None,
                }
                .ok_or_else(|| missing(url, "tag or commit", name))?;
                Resolved {
                    commit,
                    upstream: default.map(|branch| format!("origin/{branch}")),
                }
            }
        };
        Ok((mirror, resolved))
    }
}

/// Makes the bare mirror at `path` with `origin` = `url`, if it is not there yet.
async fn ensure(path: &Path, url: &str) -> Result<(), WireError> {
    if !path.join("HEAD").exists() {
        std::fs::create_dir_all(path).map_err(|e| {
            WireError::new(
                ErrorCode::GitFailed,
                format!("cannot make the mirror {}: {e}", path.display()),
            )
        })?;
        git(
            Some(path),
            ["init", "--quiet", "--bare", "."],
            None,
            LOCAL_TIMEOUT,
        )
        .await?;
    }
    for (key, value) in [
        ("remote.origin.url", url),
        ("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
        // Objects stay in the mirror even when no branch points at them any more (a worktree's
        // commits are on its own branch, which keeps them).
        ("gc.auto", "0"),
    ] {
        git(Some(path), ["config", key, value], None, LOCAL_TIMEOUT).await?;
    }
    Ok(())
}

/// The remote's default branch, asked of it (`ls-remote --symref origin HEAD`).
async fn default_branch(
    mirror: &Path,
    auth: Option<&GrantedCredential>,
) -> Result<Option<String>, WireError> {
    let out = git(
        Some(mirror),
        ["ls-remote", "--symref", "origin", "HEAD"],
        auth,
        FETCH_TIMEOUT,
    )
    .await?;
    Ok(parse_symref(&out))
}

/// The branch `ls-remote --symref <remote> HEAD` says HEAD points at: its line
/// `ref: refs/heads/<branch>\tHEAD`. `None` if there is none or it is not a valid name.
pub fn parse_symref(out: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let (target, name) = line.strip_prefix("ref: ")?.split_once('\t')?;
        let branch = target.strip_prefix("refs/heads/")?;
        (name.trim() == "HEAD" && check_ref(branch).is_ok()).then(|| branch.to_string())
    })
}

/// Whether `name` could be a commit id (an abbreviated one included): 4 to 40 hex digits.
pub fn looks_like_commit(name: &str) -> bool {
    (4..=40).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `name` names in `repo`, or `None` if it names none.
pub async fn commit_of(repo: &Path, name: &str) -> Result<Option<String>, WireError> {
    match git(
        Some(repo),
        [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{name}^{{commit}}"),
        ],
        None,
        LOCAL_TIMEOUT,
    )
    .await
    {
        Ok(out) => Ok(Some(out.trim().to_string())),
        Err(error) if error.code == ErrorCode::GitFailed => Ok(None),
        Err(error) => Err(error),
    }
}

fn missing(url: &str, what: &str, name: &str) -> WireError {
    WireError::new(
        ErrorCode::GitFailed,
        format!("{url} has no {what} {name:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_branch_is_read_from_the_symref_line() {
        let cases = [
            ("ref: refs/heads/main\tHEAD\nabc\tHEAD\n", Some("main")),
            ("ref: refs/heads/dev/x\tHEAD\n", Some("dev/x")),
            ("abc\tHEAD\n", None),
            ("", None),
            ("ref: refs/tags/v1\tHEAD\n", None),
            ("ref: refs/heads/-x\tHEAD\n", None),
            ("ref: refs/heads/main\trefs/heads/other\n", None),
        ];
        for (out, expected) in cases {
            assert_eq!(parse_symref(out).as_deref(), expected, "{out:?}");
        }
    }

    #[test]
    fn only_hex_names_are_taken_for_commits() {
        let cases = [
            ("abcd", true),
            ("0123456789abcdef0123456789abcdef01234567", true),
            ("abc", false),
            ("v1.0", false),
            ("main", false),
            (&"a".repeat(41), false),
        ];
        for (name, expected) in cases {
            assert_eq!(looks_like_commit(name), expected, "{name}");
        }
    }
}
