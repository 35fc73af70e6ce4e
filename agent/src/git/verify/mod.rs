//! `nexus admin worktree verify [--repair]` on one host: for every workspace of the host's
//! desired state that has a repository, what is wrong with its worktree ([`verdict`], pure) and,
//! when asked, its repair: the steps run with [`crate::git::run::git`], then the worktree is
//! observed again and what is still wrong is reported as `remaining`.
//!
//! Which worktrees: the desired state's workspaces with `spec.repo`, cross-checked with the
//! host's [`WorktreeRecord`]s. A record of a workspace this host no longer holds is reported
//! (`NotAssigned`) and never touched; a workspace with a repository and no record is `Missing`
//! (the agent makes it when it reconciles the workspace: that is not a repair's job).
//!
//! Nothing a user changed is deleted: a damaged worktree's files are moved, entry by entry, into
//! `git/aside/<ws>-<millis>` (the directory itself stays, so a running container's mount of it
//! stays valid), and the report says where.

pub mod verdict;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::layout::io_error;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::{WorktreeCheck, WorktreeProblem, WorktreeReport, workspace_branch};
use nexus_protocol::message::DesiredState;
use nexus_protocol::{HostId, WorkspaceName, clock};
use tokio::sync::Mutex;

use self::verdict::{BackLink, DirSeen, DotGit, MirrorSeen, Seen, Step, verdict};
use super::layout::{Layout, WorktreeRecord};
use super::run::{LOCAL_TIMEOUT, git};

/// The most of a `.git` file or a record's `gitdir` read.
const LINK_MAX: u64 = 4096;

/// A host's verifier: its layout, and one verification at a time.
#[derive(Debug)]
pub struct Verifier {
    layout: Layout,
    running: Mutex<()>,
    /// The mirrors' locks that making and removing worktrees hold: each workspace is checked
    /// and mended under its mirror's, so that a repair never races a checkout or a destroy.
    mirrors: Option<std::sync::Arc<crate::git::host::GitHost>>,
}

impl Verifier {
    pub fn new(layout: Layout) -> Verifier {
        Verifier {
            layout,
            running: Mutex::new(()),
            mirrors: None,
        }
    }

    /// A verifier of `git`'s worktrees, under its mirrors' locks.
    pub fn of(git: std::sync::Arc<crate::git::host::GitHost>) -> Verifier {
        Verifier {
            layout: git.layout().clone(),
            running: Mutex::new(()),
            mirrors: Some(git),
        }
    }

    /// This host's report: see the module's notes. Without a desired state yet, the report says
    /// so in its `error` and nothing is touched.
    pub async fn report(
        &self,
        host: HostId,
        desired: Option<&DesiredState>,
        repair: bool,
    ) -> WorktreeReport {
        let _one = self.running.lock().await;
        let mut report = WorktreeReport {
            host,
            checks: Vec::new(),
            kept: self.layout.kept(),
            error: None,
        };
        let Some(desired) = desired else {
            report.error = Some(WireError::new(
                ErrorCode::BackendUnavailable,
                "this agent has no desired state yet (it has not heard from the coordinators)",
            ));
            return report;
        };
        let assigned: BTreeMap<WorkspaceName, String> = desired
            .assignments
            .iter()
            .filter_map(|a| {
                a.spec
                    .repo
                    .as_ref()
                    .map(|repo| (a.spec.name.clone(), repo.url.clone()))
            })
            .collect();
        let mut records: BTreeMap<WorkspaceName, WorktreeRecord> = self
            .layout
            .records()
            .into_iter()
            .map(|r| (r.workspace.clone(), r))
            .collect();
        let held: Vec<WorkspaceName> = desired
            .assignments
            .iter()
            .map(|a| a.spec.name.clone())
            .collect();
        for (workspace, url) in assigned {
            let check = match records.remove(&workspace) {
                Some(record) => {
                    let lock = self
                        .mirrors
                        .as_ref()
                        .map(|git| git.mirrors().lock(&self.layout.mirror(&record.url)));
                    let _held = match &lock {
                        Some(lock) => Some(lock.lock().await),
                        None => None,
                    };
                    verify(&self.layout, &record, repair).await
                }
                None => WorktreeCheck {
                    branch: workspace_branch(&workspace),
                    workspace,
                    url,
                    problems: vec![WorktreeProblem::Missing],
                    repairs: Vec::new(),
                    moved_aside: None,
                    remaining: vec![WorktreeProblem::Missing],
                },
            };
            report.checks.push(check);
        }
        for (workspace, record) in records {
            // A workspace held without a repository now keeps its record's worktree as it is.
            if held.contains(&workspace) {
                continue;
            }
            report.checks.push(WorktreeCheck {
                workspace,
                url: record.url,
                branch: record.branch,
                problems: vec![WorktreeProblem::NotAssigned],
                repairs: Vec::new(),
                moved_aside: None,
                remaining: Vec::new(),
            });
        }
        report
    }
}

/// One workspace's check, and its repair when `repair`.
pub async fn verify(layout: &Layout, record: &WorktreeRecord, repair: bool) -> WorktreeCheck {
    let target = Target::of(layout, record);
    if let Err(error) = nexus_protocol::git::check_ref(&target.branch) {
        // Never so for a valid workspace name; but nothing unchecked reaches git's argv.
        let problem = WorktreeProblem::Other(error.0);
        return WorktreeCheck {
            workspace: record.workspace.clone(),
            url: record.url.clone(),
            branch: target.branch,
            problems: vec![problem.clone()],
            repairs: Vec::new(),
            moved_aside: None,
            remaining: vec![problem],
        };
    }
    let seen = observe(&target).await;
    let found = verdict(&seen);
    let mut check = WorktreeCheck {
        workspace: record.workspace.clone(),
        url: record.url.clone(),
        branch: target.branch.clone(),
        problems: found.problems.clone(),
        repairs: Vec::new(),
        moved_aside: None,
        remaining: found.problems.clone(),
    };
    if !repair || found.steps.is_empty() {
        return check;
    }
    for step in found.steps {
        match run_step(layout, &target, step).await {
            Ok(aside) => {
                if let Some(aside) = aside {
                    check.moved_aside = Some(aside.display().to_string());
                }
                check.repairs.push(step.describe().to_string());
            }
            Err(error) => {
                tracing::warn!(workspace = %record.workspace, ?step, "worktree repair step failed: {}", error.message);
                check
                    .repairs
                    .push(format!("{} failed: {}", step.describe(), error.message));
                break;
            }
        }
    }
    check.remaining = verdict(&observe(&target).await).problems;
    tracing::info!(workspace = %record.workspace, repairs = ?check.repairs, remaining = ?check.remaining, moved_aside = ?check.moved_aside, "worktree repaired");
    check
}

/// The paths and names one workspace's check works with.
#[derive(Debug)]
struct Target {
    workspace: WorkspaceName,
    mirror: PathBuf,
    dir: PathBuf,
    /// Git's record of the worktree: `<mirror>/worktrees/<ws>`.
    record: PathBuf,
    branch: String,
    /// The base commit, if the record's is a commit id at all.
    base: Option<String>,
}

impl Target {
    fn of(layout: &Layout, record: &WorktreeRecord) -> Target {
        let mirror = layout.mirror(&record.url);
        let base = record.base_commit.clone();
        let hex = nexus_protocol::git::is_commit_id(&base);
        Target {
            workspace: record.workspace.clone(),
            record: mirror.join("worktrees").join(record.workspace.as_str()),
            dir: layout.worktree(&record.workspace),
            mirror,
            branch: workspace_branch(&record.workspace),
            base: hex.then_some(base),
        }
    }

    fn local_branch(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }
}

/// What is there now.
async fn observe(target: &Target) -> Seen {
    let mirror = if !target.mirror.is_dir() {
        MirrorSeen::Missing
    } else if git(
        Some(&target.mirror),
        ["rev-parse", "--git-dir"],
        None,
        LOCAL_TIMEOUT,
    )
    .await
    .is_err()
    {
        MirrorSeen::Broken
    } else {
        MirrorSeen::Sane
    };
    let dir = match std::fs::read_dir(&target.dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => DirSeen::Absent,
        Err(_) => DirSeen::Files(DotGit::NotALink),
        Ok(mut entries) => match entries.next() {
            None => DirSeen::Empty,
            Some(_) => DirSeen::Files(dot_git(target)),
        },
    };
    let record = target.record.is_dir();
    let back_link = match read_link(&target.record.join("gitdir"), &target.record) {
        None => BackLink::Absent,
        Some(path) if same_path(&path, &target.dir.join(".git")) => BackLink::Here,
        Some(_) => BackLink::Elsewhere,
    };
    let mut seen = Seen {
        mirror,
        dir,
        record,
        back_link,
        locked: target.record.join("locked").exists(),
        prunable: false,
        branch: false,
        base: false,
    };
    if mirror != MirrorSeen::Sane {
        return seen;
    }
    if record && let Some((locked, prunable)) = listed(target).await {
        seen.locked |= locked;
        seen.prunable = prunable;
    }
    seen.branch = git(
        Some(&target.mirror),
        [
            "show-ref",
            "--verify",
            "--quiet",
            target.local_branch().as_str(),
        ],
        None,
        LOCAL_TIMEOUT,
    )
    .await
    .is_ok();
    if let Some(base) = &target.base {
        let present = git(
            Some(&target.mirror),
            ["cat-file", "-e", format!("{base}^{{commit}}").as_str()],
            None,
            LOCAL_TIMEOUT,
        )
        .await
        .is_ok();
        seen.base = present
            && git(
                Some(&target.mirror),
                ["for-each-ref", "--count=1", "--contains", base.as_str()],
                None,
                LOCAL_TIMEOUT,
            )
            .await
            .is_ok_and(|out| !out.trim().is_empty());
    }
    seen
}

/// What the directory's `.git` is.
fn dot_git(target: &Target) -> DotGit {
    let path = target.dir.join(".git");
    match std::fs::symlink_metadata(&path) {
        Err(_) => DotGit::Absent,
        Ok(meta) if !meta.is_file() => DotGit::NotALink,
        Ok(_) => match read_link(&path, &target.dir) {
            None => DotGit::NotALink,
            Some(named) if same_path(&named, &target.record) => DotGit::Ours,
            Some(named)
                if named.file_name() == Some(target.workspace.as_str().as_ref())
                    && target.record.is_dir() =>
            {
                DotGit::Moved
            }
            Some(_) => DotGit::Foreign,
        },
    }
}

/// The path a `.git` file (`gitdir: P`) or a record's `gitdir` (`P`) names, relative ones taken
/// from `base`.
fn read_link(path: &Path, base: &Path) -> Option<PathBuf> {
    use std::io::Read as _;
    let mut text = String::new();
    // A container may put anything there: only a regular file is read (a FIFO would block).
    if !std::fs::symlink_metadata(path).ok()?.is_file() {
        return None;
    }
    std::fs::File::open(path)
        .ok()?
        .take(LINK_MAX)
        .read_to_string(&mut text)
        .ok()?;
    let line = text.lines().next()?.trim();
    let named = line.strip_prefix("gitdir:").unwrap_or(line).trim();
    if named.is_empty() {
        return None;
    }
    Some(base.join(named))
}

/// Whether two paths name the same place (through symbolic links where both exist).
fn same_path(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => normal(a) == normal(b),
    }
}

fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What `git worktree list --porcelain` says of the worktree git's record names: (locked,
/// prunable), if it lists it.
async fn listed(target: &Target) -> Option<(bool, bool)> {
    let named = read_link(&target.record.join("gitdir"), &target.record)?;
    let place = named.parent()?.to_path_buf();
    let out = git(
        Some(&target.mirror),
        ["worktree", "list", "--porcelain"],
        None,
        LOCAL_TIMEOUT,
    )
    .await
    .ok()?;
    porcelain(&out)
        .into_iter()
        .find(|entry| same_path(Path::new(&entry.path), &place))
        .map(|entry| (entry.locked, entry.prunable))
}

/// One worktree of `git worktree list --porcelain`.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    path: String,
    locked: bool,
    prunable: bool,
}

fn porcelain(out: &str) -> Vec<Listed> {
    let mut listed: Vec<Listed> = Vec::new();
    for line in out.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            listed.push(Listed {
                path: path.to_string(),
                locked: false,
                prunable: false,
            });
        } else if let Some(last) = listed.last_mut() {
            if line == "locked" || line.starts_with("locked ") {
                last.locked = true;
            } else if line == "prunable" || line.starts_with("prunable ") {
                last.prunable = true;
            }
        }
    }
    listed
}

/// Runs one step; a move aside returns where the files went.
async fn run_step(
    layout: &Layout,
    target: &Target,
    step: Step,
) -> Result<Option<PathBuf>, WireError> {
    let mirror = Some(target.mirror.as_path());
    let dir = target.dir.as_os_str();
    match step {
        Step::RepairLinks => {
            git(
                mirror,
                [
                    OsStr::new("worktree"),
                    OsStr::new("repair"),
                    OsStr::new("--"),
                    dir,
                ],
                None,
                LOCAL_TIMEOUT,
            )
            .await?;
        }
        Step::Unlock => {
            let by_git = git(
                mirror,
                [
                    OsStr::new("worktree"),
                    OsStr::new("unlock"),
                    OsStr::new("--"),
                    dir,
                ],
                None,
                LOCAL_TIMEOUT,
            )
            .await;
            // Git finds the record by the path it names; when that is not this directory, the
            // lock is removed as git would remove it.
            if by_git.is_err() {
                remove_if_there(&target.record.join("locked")).map_err(io_error)?;
            }
        }
        Step::MoveAside => {
            let aside = layout.aside(&target.workspace, clock::now());
            super::layout::move_aside(&target.dir, &aside).map_err(io_error)?;
            return Ok(Some(aside));
        }
        Step::Prune => {
            git(mirror, ["worktree", "prune"], None, LOCAL_TIMEOUT).await?;
        }
        Step::RecreateBranch => {
            let base = target.base.as_deref().ok_or_else(|| {
                WireError::new(
                    ErrorCode::GitFailed,
                    "the record's base commit is no commit id",
                )
            })?;
            // The empty old value: only if the branch does not exist.
            git(
                mirror,
                [
                    "update-ref",
                    "-m",
                    "nexus worktree verify --repair",
                    target.local_branch().as_str(),
                    base,
                    "",
                ],
                None,
                LOCAL_TIMEOUT,
            )
            .await?;
        }
        Step::Add => {
            if let Some(parent) = target.dir.parent() {
                std::fs::create_dir_all(parent).map_err(io_error)?;
            }
            git(
                mirror,
                [
                    OsStr::new("worktree"),
                    OsStr::new("add"),
                    OsStr::new("--"),
                    dir,
                    OsStr::new(&target.branch),
                ],
                None,
                LOCAL_TIMEOUT,
            )
            .await?;
        }
    }
    Ok(None)
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_porcelain_listing_says_which_are_locked_or_prunable() {
        let out = "worktree /m.git\nbare\n\nworktree /w/a\nHEAD 1\nbranch refs/heads/nexus/a\nlocked\n\nworktree /w/b\nHEAD 2\nbranch refs/heads/nexus/b\nprunable gitdir file points to non-existent location\n\nworktree /w/c\nHEAD 3\nlocked because\n";
        assert_eq!(
            porcelain(out),
            vec![
                Listed {
                    path: "/m.git".into(),
                    locked: false,
                    prunable: false
                },
                Listed {
                    path: "/w/a".into(),
                    locked: true,
                    prunable: false
                },
                Listed {
                    path: "/w/b".into(),
                    locked: false,
                    prunable: true
                },
                Listed {
                    path: "/w/c".into(),
                    locked: true,
                    prunable: false
                },
            ]
        );
    }

    #[test]
    fn links_are_read_whole_or_relative_to_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".git");
        std::fs::write(&file, "gitdir: /m.git/worktrees/a\n").unwrap();
        assert_eq!(
            read_link(&file, dir.path()),
            Some(PathBuf::from("/m.git/worktrees/a"))
        );
        std::fs::write(&file, "../x/.git\n").unwrap();
        assert!(same_path(
            &read_link(&file, dir.path()).unwrap(),
            &dir.path().parent().unwrap().join("x/.git")
        ));
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(read_link(&file, dir.path()), None);
    }

    #[test]
    fn moving_aside_keeps_every_file_and_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("ws");
        std::fs::create_dir_all(files.join("src")).unwrap();
        std::fs::write(files.join("src/main.rs"), "edited").unwrap();
        std::fs::write(files.join(".git"), "gitdir: /nowhere").unwrap();
        let aside = dir.path().join("aside/ws-1");
        crate::git::layout::move_aside(&files, &aside).unwrap();
        assert!(files.is_dir());
        assert_eq!(std::fs::read_dir(&files).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_to_string(aside.join("src/main.rs")).unwrap(),
            "edited"
        );
        assert!(aside.join(".git.aside").is_file());
        assert!(!aside.join(".git").exists());
    }
}
