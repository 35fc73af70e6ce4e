//! How a workspace's worktree stands: its head, its uncommitted files, and how far it is ahead
//! of and behind the remote branch it started from (as the mirror last fetched it).

use nexus_protocol::WorkspaceName;
use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::WorktreeStatus;

use super::layout::Layout;
use super::run::{LOCAL_TIMEOUT, git_worktree};

/// The worktree's status, or WORKSPACE_NOT_FOUND if the host made none for the workspace.
pub async fn status(
    layout: &Layout,
    workspace: &WorkspaceName,
) -> Result<WorktreeStatus, WireError> {
    let record = layout
        .read_record(workspace)
        .map_err(|e| WireError::new(ErrorCode::GitFailed, format!("the host's git state: {e}")))?
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::WorkspaceNotFound,
                format!("workspace {workspace} has no worktree on this host"),
            )
        })?;
    let files = layout.worktree(workspace);
    let mirror = layout.mirror(&record.url);
    let admin = mirror.join("worktrees").join(workspace.as_str());
    let git =
        |args: &'static [&'static str]| git_worktree(&files, &admin, &mirror, args, LOCAL_TIMEOUT);
    let head = git(&["rev-parse", "HEAD"]).await?.trim().to_string();
    let porcelain = git(&["status", "--porcelain", "--untracked-files=all"]).await?;
    let (ahead, behind) = match &record.upstream {
        Some(upstream) => {
            let range = format!("HEAD...refs/remotes/{upstream}");
            let out = git_worktree(
                &files,
                &admin,
                &mirror,
                ["rev-list", "--left-right", "--count", &range],
                LOCAL_TIMEOUT,
            )
            .await?;
            parse_counts(&out).ok_or_else(|| {
                WireError::new(
                    ErrorCode::GitFailed,
                    format!("git rev-list gave no counts: {out:?}"),
                )
            })?
        }
        None => (0, 0),
    };
    Ok(WorktreeStatus {
        branch: record.branch,
        base_commit: record.base_commit,
        head,
        dirty_files: dirty_files(&porcelain),
        ahead,
        behind,
        upstream: record.upstream,
        checked_at: clock::now(),
    })
}

/// The files `status --porcelain` lists: one a line (a rename is one line).
pub fn dirty_files(porcelain: &str) -> u32 {
    u32::try_from(porcelain.lines().filter(|l| !l.trim().is_empty()).count()).unwrap_or(u32::MAX)
}

/// `rev-list --left-right --count A...B`'s answer: `<left>\t<right>`.
pub fn parse_counts(out: &str) -> Option<(u32, u32)> {
    let mut parts = out.split_whitespace();
    let left = parts.next()?.parse().ok()?;
    let right = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((left, right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_lines_are_counted() {
        let cases = [
            ("", 0),
            (" M a.txt\n", 1),
            (" M a.txt\n?? b\nR  c -> d\n", 3),
            ("\n", 0),
        ];
        for (out, expected) in cases {
            assert_eq!(dirty_files(out), expected, "{out:?}");
        }
    }

    #[test]
    fn left_right_counts_are_two_numbers() {
        let cases = [
            ("2\t3\n", Some((2, 3))),
            ("0\t0", Some((0, 0))),
            ("1", None),
            ("a\tb", None),
            ("1\t2\t3", None),
            ("", None),
        ];
        for (out, expected) in cases {
            assert_eq!(parse_counts(out), expected, "{out:?}");
        }
    }
}
