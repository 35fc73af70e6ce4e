//! A workspace's worktree: made from its repository's mirror on its own branch
//! (`nexus/<workspace>`) in its files directory, kept across restarts, and removed at destroy
//! with its branch kept if it holds commits found nowhere else.

use std::path::Path;

use nexus_protocol::WorkspaceName;
use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::credentials::GrantedCredential;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::{KeptBranch, RepoSource, workspace_branch};

use super::layout::io_error;
use super::layout::{Layout, WorktreeRecord};
use super::mirror::{Mirrors, commit_of};
use super::run::{LOCAL_TIMEOUT, git};

/// What [`make`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// A new worktree, from a fresh fetch.
    New(WorktreeRecord),
    /// The worktree the host had already made for the workspace, left as it is.
    Kept(WorktreeRecord),
}

impl Made {
    pub fn record(&self) -> &WorktreeRecord {
        match self {
            Made::New(record) | Made::Kept(record) => record,
        }
    }
}

/// What to do with a workspace's files directory before a worktree is made in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The host already made this workspace's worktree of this repository there: keep it (a
    /// restart, a recreated container: the user's files are not touched).
    Keep,
    /// Make a worktree there.
    Make,
    /// Move what a checkout cut short left there aside, then make a worktree.
    Redo,
    /// Refuse, saying why.
    Refuse(String),
}

/// What the files directory's state means (pure): `record` is the host's record of the
/// workspace's worktree, `files_empty` whether the directory is absent or empty, `linked`
/// whether it holds a `.git` link file.
pub fn plan(record: Option<&WorktreeRecord>, url: &str, files_empty: bool, linked: bool) -> Plan {
    match record {
        Some(record) if record.url != url => Plan::Refuse(format!(
            "the files directory holds a worktree of another repository ({}); destroy the \
             workspace and create it again",
            record.url
        )),
        Some(_) if linked => Plan::Keep,
        // The record outlived its worktree, which left nothing behind: made again.
        Some(_) if files_empty => Plan::Make,
        Some(_) => Plan::Refuse(
            "the host's record names a worktree that is not there any more; run `nexus admin \
             worktree verify --repair`"
                .into(),
        ),
        None if files_empty => Plan::Make,
        // A checkout cut short before its record was written (a restart, a deadline): the
        // container never ran on it, so nothing in it is a user's; set aside and made again.
        None if linked => Plan::Redo,
        None => Plan::Refuse(
            "the workspace's files directory is not empty and is no worktree; destroy the \
             workspace and create it again"
                .into(),
        ),
    }
}

/// What [`plan`] says of `workspace`'s files directory now, with the host's record of it.
pub fn current(
    layout: &Layout,
    workspace: &WorkspaceName,
    url: &str,
) -> Result<(Plan, Option<WorktreeRecord>), WireError> {
    let files = layout.worktree(workspace);
    let record = layout.read_record(workspace).map_err(io_error)?;
    let empty = std::fs::read_dir(&files).map_or(true, |mut entries| entries.next().is_none());
    let linked = files.join(".git").is_file();
    Ok((plan(record.as_ref(), url, empty, linked), record))
}

/// Makes (or keeps) `workspace`'s worktree of `repo`. The fetch runs under the mirror's lock,
/// with `auth` if any; the record is written once the worktree is there.
pub async fn make(
    mirrors: &Mirrors,
    workspace: &WorkspaceName,
    repo: &RepoSource,
    auth: Option<&GrantedCredential>,
) -> Result<Made, WireError> {
    repo.check()
        .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.0))?;
    let layout = mirrors.layout();
    let files = layout.worktree(workspace);
    match current(layout, workspace, &repo.url)? {
        (Plan::Keep, Some(record)) => return Ok(Made::Kept(record)),
        (Plan::Refuse(why), _) => return Err(WireError::new(ErrorCode::GitFailed, why)),
        (Plan::Redo, _) => {
            let aside = layout.aside(workspace, clock::now());
            super::layout::move_aside(&files, &aside).map_err(io_error)?;
            tracing::warn!(%workspace, aside = %aside.display(), "a checkout cut short was set aside; checking out again");
        }
        _ => {}
    }
    let mirror = layout.mirror(&repo.url);
    let lock = mirrors.lock(&mirror);
    let _held = lock.lock().await;
    let (mirror, resolved) = mirrors
        .fetch_and_resolve(&repo.url, &repo.base, auth)
        .await?;
    // Git's record of this workspace's worktree, its directory gone (a destroy cut short),
    // would refuse the path: pruned first. Only then, so that other workspaces' damaged
    // worktrees stay as they are for `admin worktree verify` to find.
    if mirror.join("worktrees").join(workspace.as_str()).exists() {
        git(Some(&mirror), ["worktree", "prune"], None, LOCAL_TIMEOUT).await?;
    }
    let branch = workspace_branch(workspace);
    set_aside_old_branch(layout, &mirror, workspace, &branch).await?;
    // git makes the directory; an empty one left by an earlier attempt goes first.
    let _ = std::fs::remove_dir(&files);
    if let Some(parent) = files.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    git(
        Some(&mirror),
        [
            "worktree".as_ref(),
            "add".as_ref(),
            "--quiet".as_ref(),
            "-b".as_ref(),
            branch.as_ref(),
            files.as_os_str(),
            resolved.commit.as_ref(),
        ] as [&std::ffi::OsStr; 7],
        None,
        // A checkout of a large tree takes as long as a fetch may.
        super::run::FETCH_TIMEOUT,
    )
    .await?;
    let record = WorktreeRecord {
        workspace: workspace.clone(),
        url: repo.url.clone(),
        branch,
        base_commit: resolved.commit,
        upstream: resolved.upstream,
        mirror,
        made_at: clock::now(),
    };
    layout.write_record(&record).map_err(io_error)?;
    tracing::info!(%workspace, url = %record.url, branch = %record.branch, base = %record.base_commit, "worktree made");
    Ok(Made::New(record))
}

/// A branch `nexus/<workspace>` left by an earlier workspace of the same name (a destroy kept
/// it, or was cut short) is deleted if it holds nothing of its own, else renamed
/// `nexus-kept/<workspace>-<millis>`, and the kept list follows, so that the new workspace gets a
/// branch of its own and the old commits stay.
async fn set_aside_old_branch(
    layout: &Layout,
    mirror: &Path,
    workspace: &WorkspaceName,
    branch: &str,
) -> Result<(), WireError> {
    let full = format!("refs/heads/{branch}");
    if commit_of(mirror, &full).await?.is_none() {
        return Ok(());
    }
    if unique_commits(mirror, &full).await? == 0 {
        // `branch -D` refuses a branch some worktree has checked out: nothing is lost.
        git(
            Some(mirror),
            ["branch", "--quiet", "-D", branch],
            None,
            LOCAL_TIMEOUT,
        )
        .await?;
        tracing::info!(%workspace, %branch, "an earlier workspace's branch, with nothing of its own, deleted");
        return Ok(());
    }
    let renamed = format!("nexus-kept/{workspace}-{}", clock::now().as_millis());
    git(
        Some(mirror),
        ["branch", "--quiet", "-m", branch, &renamed],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    let mut kept = layout.kept();
    for entry in &mut kept {
        if entry.workspace == *workspace && entry.branch == branch {
            entry.branch.clone_from(&renamed);
        }
    }
    layout.write_kept(&kept).map_err(io_error)?;
    tracing::warn!(%workspace, old = %branch, new = %renamed, "an earlier workspace's kept branch renamed");
    Ok(())
}

/// Removes `workspace`'s worktree (uncommitted changes go with it, as a destroy's files do),
/// prunes the mirror's record of it and deletes its branch, unless the branch holds commits that
/// no other ref of the mirror has: then it is kept, added to the kept list and returned. Does
/// nothing (and returns `None`) when the host made no worktree for the workspace.
pub async fn destroy(
    mirrors: &Mirrors,
    workspace: &WorkspaceName,
    at: Timestamp,
) -> Result<Option<KeptBranch>, WireError> {
    let layout = mirrors.layout();
    let Some(record) = layout.read_record(workspace).map_err(io_error)? else {
        return Ok(None);
    };
    let files = layout.worktree(workspace);
    // Where the mirror is now (the record's path may predate a moved data directory).
    let mirror = layout.mirror(&record.url);
    let lock = mirrors.lock(&mirror);
    let _held = lock.lock().await;
    if !mirror.join("HEAD").exists() {
        tracing::warn!(%workspace, mirror = %mirror.display(), "the worktree's mirror is gone; nothing of git to remove");
        layout.remove_record(workspace).map_err(io_error)?;
        return Ok(None);
    }
    // Commits made on a detached HEAD are on no branch: found before the worktree goes.
    let admin = mirror.join("worktrees").join(workspace.as_str());
    let head = if admin.join("HEAD").is_file() {
        super::run::git_worktree(
            &files,
            &admin,
            &mirror,
            ["rev-parse", "--verify", "--quiet", "HEAD"],
            LOCAL_TIMEOUT,
        )
        .await
        .ok()
        .map(|out| out.trim().to_string())
        .filter(|head| nexus_protocol::git::is_commit_id(head))
    } else {
        None
    };
    if files.join(".git").exists()
        && let Err(error) = git(
            Some(&mirror),
            [
                "worktree".as_ref(),
                "remove".as_ref(),
                "--force".as_ref(),
                "--force".as_ref(),
                files.as_os_str(),
            ] as [&std::ffi::OsStr; 5],
            None,
            LOCAL_TIMEOUT,
        )
        .await
    {
        tracing::warn!(%workspace, "git worktree remove failed; removing the files and pruning: {}", error.message);
    }
    match std::fs::remove_dir_all(&files) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io_error(error)),
        _ => {}
    }
    git(Some(&mirror), ["worktree", "prune"], None, LOCAL_TIMEOUT).await?;
    let detached = match head {
        Some(head) => keep_detached(layout, &mirror, workspace, &record.url, &head, at).await?,
        None => None,
    };
    let full = format!("refs/heads/{}", record.branch);
    let kept = if commit_of(&mirror, &full).await?.is_none() {
        None
    } else {
        // Counted only once the worktree is gone: its HEAD would otherwise count as another ref.
        let unique = unique_commits(&mirror, &full).await?;
        if unique == 0 {
            git(
                Some(&mirror),
                ["update-ref", "-d", &full],
                None,
                LOCAL_TIMEOUT,
            )
            .await?;
            None
        } else {
            let kept = KeptBranch {
                workspace: workspace.clone(),
                url: record.url.clone(),
                branch: record.branch.clone(),
                unique_commits: unique,
                at,
            };
            let mut list = layout.kept();
            list.retain(|k| !(k.url == kept.url && k.branch == kept.branch));
            list.push(kept.clone());
            layout.write_kept(&list).map_err(io_error)?;
            tracing::warn!(%workspace, url = %kept.url, branch = %kept.branch, commits = unique, "the workspace's branch holds commits found nowhere else: kept in the mirror");
            Some(kept)
        }
    };
    layout.remove_record(workspace).map_err(io_error)?;
    tracing::info!(%workspace, url = %record.url, "worktree removed");
    Ok(kept.or(detached))
}

/// A worktree's `head` that no branch, remote branch or tag reaches (commits made on a detached
/// HEAD) gets a branch `nexus-kept/<workspace>-<millis>`, added to the kept list and returned.
async fn keep_detached(
    layout: &Layout,
    mirror: &Path,
    workspace: &WorkspaceName,
    url: &str,
    head: &str,
    at: Timestamp,
) -> Result<Option<KeptBranch>, WireError> {
    let out = git(
        Some(mirror),
        [
            "rev-list",
            "--count",
            head,
            "--not",
            "--branches",
            "--remotes",
            "--tags",
        ],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    let unique: u32 = out.trim().parse().unwrap_or(0);
    if unique == 0 {
        return Ok(None);
    }
    let branch = format!("nexus-kept/{workspace}-{}", at.as_millis());
    git(
        Some(mirror),
        ["update-ref", &format!("refs/heads/{branch}"), head],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    let kept = KeptBranch {
        workspace: workspace.clone(),
        url: url.to_string(),
        branch,
        unique_commits: unique,
        at,
    };
    let mut list = layout.kept();
    list.push(kept.clone());
    layout.write_kept(&list).map_err(io_error)?;
    tracing::warn!(%workspace, branch = %kept.branch, commits = unique, "commits made on a detached HEAD kept on a branch of their own");
    Ok(Some(kept))
}

/// The commits on `full` that no other ref of `mirror` has.
async fn unique_commits(mirror: &Path, full: &str) -> Result<u32, WireError> {
    let out = git(
        Some(mirror),
        [
            "rev-list",
            "--count",
            full,
            "--not",
            &format!("--exclude={full}"),
            "--all",
        ],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    out.trim().parse().map_err(|_| {
        WireError::new(
            ErrorCode::GitFailed,
            format!("git rev-list gave no count: {out:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn record(url: &str) -> WorktreeRecord {
        WorktreeRecord {
            workspace: "api".parse().unwrap(),
            url: url.into(),
            branch: "nexus/api".into(),
            base_commit: "a".repeat(40),
            upstream: None,
            mirror: PathBuf::from("/m.git"),
            made_at: Timestamp::from_millis(1),
        }
    }

    #[test]
    fn a_worktree_is_made_only_in_an_empty_directory_and_kept_when_it_is_ours() {
        let ours = record("https://h/r.git");
        let cases = [
            (None, true, false, "make"),
            (None, false, false, "refuse"),
            // A checkout cut short before its record: set aside and made again.
            (None, false, true, "redo"),
            (Some(&ours), false, true, "keep"),
            // A record whose worktree left nothing behind: made again.
            (Some(&ours), true, false, "make"),
            (Some(&ours), false, false, "refuse"),
        ];
        for (record, empty, linked, expected) in cases {
            let got = match plan(record, "https://h/r.git", empty, linked) {
                Plan::Keep => "keep",
                Plan::Make => "make",
                Plan::Redo => "redo",
                Plan::Refuse(_) => "refuse",
            };
            assert_eq!(got, expected, "{record:?} {empty} {linked}");
        }
        let other = plan(Some(&ours), "https://h/other.git", false, true);
        assert!(matches!(other, Plan::Refuse(why) if why.contains("another repository")));
    }
}
