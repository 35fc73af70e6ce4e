//! What is wrong with one workspace's worktree, and what a repair does about it. Pure: what was
//! observed ([`Seen`]) → the problems and the steps ([`verdict`]).
//!
//! The steps, in the order they run:
//!
//! 1. [`Step::RepairLinks`]: `git worktree repair <dir>` in the mirror, when the directory is a
//!    worktree of this mirror whose links disagree (it was moved, or the mirror was);
//! 2. [`Step::Unlock`]: `git worktree unlock <dir>`, when git's record is locked (after the links
//!    are mended, so that git finds the record by the directory's path);
//! 3. [`Step::MoveAside`]: the directory holds files but is no usable worktree (no `.git`, a
//!    broken one, one of another repository, or git's record of it is gone): every entry of it is
//!    moved into the aside directory, which is reported. Nothing is deleted; the directory itself
//!    stays (a running container's mount of it stays valid);
//! 4. [`Step::Prune`]: `git worktree prune`, when the worktree must be made afresh and git still
//!    keeps a record of the old one;
//! 5. [`Step::RecreateBranch`]: the workspace's branch is gone: made again at the base commit
//!    (the worktree's files, if any, stay as they are: their changes show as uncommitted);
//! 6. [`Step::Add`]: `git worktree add <dir> <branch>`, a fresh checkout, when the directory holds
//!    no worktree (it is missing, empty, or its files were moved aside).
//!
//! A missing or damaged mirror is not mended here (that needs a fetch, with credentials): it is
//! reported, and nothing of the workspace is touched. Neither is a base commit the mirror lost.

use nexus_protocol::git::WorktreeProblem;

/// The mirror, as seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSeen {
    Missing,
    /// It exists but git does not take it as a repository.
    Broken,
    Sane,
}

/// The workspace's files directory, as seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirSeen {
    Absent,
    /// It exists and holds nothing.
    Empty,
    /// It holds files; what its `.git` is says whether they are a worktree.
    Files(DotGit),
}

/// The directory's `.git`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotGit {
    /// There is none.
    Absent,
    /// A directory (a clone of its own), or a file that names no git directory.
    NotALink,
    /// It names git's record of this workspace in this mirror (`<mirror>/worktrees/<ws>`).
    Ours,
    /// It names another place whose last part is this workspace's record's name (the mirror was
    /// moved): `git worktree repair` finds the record by that name.
    Moved,
    /// It names something else altogether.
    Foreign,
}

/// Where git's record of the worktree (`<mirror>/worktrees/<ws>/gitdir`) says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackLink {
    /// There is no record, or it names no place.
    Absent,
    /// At this workspace's directory.
    Here,
    /// Elsewhere: the worktree was moved.
    Elsewhere,
}

/// What was observed of one workspace's worktree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub mirror: MirrorSeen,
    pub dir: DirSeen,
    /// Git's record of the worktree in the mirror (`worktrees/<ws>`) exists.
    pub record: bool,
    pub back_link: BackLink,
    /// The record holds a `locked` file (or `git worktree list` says `locked`).
    pub locked: bool,
    /// `git worktree list` says the record is `prunable`.
    pub prunable: bool,
    /// The branch `nexus/<ws>` exists in the mirror.
    pub branch: bool,
    /// The base commit is in the mirror and some ref reaches it.
    pub base: bool,
}

impl Seen {
    /// A sound worktree.
    pub const HEALTHY: Seen = Seen {
        mirror: MirrorSeen::Sane,
        dir: DirSeen::Files(DotGit::Ours),
        record: true,
        back_link: BackLink::Here,
        locked: false,
        prunable: false,
        branch: true,
        base: true,
    };
}

/// One repair step; see the module's notes for the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    RepairLinks,
    Unlock,
    MoveAside,
    Prune,
    RecreateBranch,
    Add,
}

impl Step {
    /// The step, in words, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Step::RepairLinks => "git worktree repair (the worktree's links mended)",
            Step::Unlock => "git worktree unlock (a stale lock removed)",
            Step::MoveAside => "the damaged worktree's files moved aside",
            Step::Prune => "git worktree prune (git's record of the old worktree removed)",
            Step::RecreateBranch => "the workspace's branch made again at its base commit",
            Step::Add => "git worktree add (the branch checked out afresh)",
        }
    }
}

/// What is wrong, and what a repair does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub problems: Vec<WorktreeProblem>,
    pub steps: Vec<Step>,
}

/// The problems of what was `seen`, and the steps that mend them (empty when nothing is wrong,
/// or nothing can be done here).
pub fn verdict(seen: &Seen) -> Verdict {
    let mut problems = Vec::new();
    let no_worktree = matches!(
        seen.dir,
        DirSeen::Absent | DirSeen::Empty | DirSeen::Files(DotGit::Absent)
    );
    if seen.mirror != MirrorSeen::Sane {
        if no_worktree {
            problems.push(WorktreeProblem::Missing);
        }
        problems.push(WorktreeProblem::MirrorBroken);
        return Verdict {
            problems,
            steps: Vec::new(),
        };
    }
    // Whether the directory is a worktree of this mirror, its links mendable by git.
    let linked = match seen.dir {
        DirSeen::Files(DotGit::Ours) => seen.record,
        DirSeen::Files(DotGit::Moved) => seen.record,
        _ => false,
    };
    let links_wrong =
        linked && (seen.dir == DirSeen::Files(DotGit::Moved) || seen.back_link != BackLink::Here);
    if no_worktree {
        problems.push(WorktreeProblem::Missing);
    } else if !linked || links_wrong {
        problems.push(WorktreeProblem::LinkBroken);
    }
    if !seen.branch {
        problems.push(WorktreeProblem::BranchMissing);
    }
    if !seen.base {
        problems.push(WorktreeProblem::BaseUnreachable);
    }
    if seen.locked {
        problems.push(WorktreeProblem::Locked);
    }
    if seen.prunable {
        problems.push(WorktreeProblem::Prunable);
    }

    let mut steps = Vec::new();
    if links_wrong {
        steps.push(Step::RepairLinks);
    }
    if seen.locked {
        steps.push(Step::Unlock);
    }
    let fresh = !linked;
    if fresh && matches!(seen.dir, DirSeen::Files(_)) {
        steps.push(Step::MoveAside);
    }
    // After a move aside, a record that named the directory is prunable too.
    if (fresh && seen.record) || (seen.prunable && !linked) {
        steps.push(Step::Prune);
    }
    let branch = seen.branch || seen.base;
    if !seen.branch && seen.base {
        steps.push(Step::RecreateBranch);
    }
    if fresh && branch {
        steps.push(Step::Add);
    }
    if problems.is_empty() {
        steps.clear();
    }
    Verdict { problems, steps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorktreeProblem as P;

    #[test]
    fn every_case_has_its_problems_and_its_mending() {
        let healthy = Seen::HEALTHY;
        let cases: Vec<(&str, Seen, Vec<P>, Vec<Step>)> = vec![
            ("healthy", healthy, vec![], vec![]),
            (
                "deleted worktree: git's record is prunable",
                Seen {
                    dir: DirSeen::Absent,
                    back_link: BackLink::Here,
                    prunable: true,
                    ..healthy
                },
                vec![P::Missing, P::Prunable],
                vec![Step::Prune, Step::Add],
            ),
            (
                "deleted and locked: not prunable until unlocked",
                Seen {
                    dir: DirSeen::Absent,
                    locked: true,
                    ..healthy
                },
                vec![P::Missing, P::Locked],
                vec![Step::Unlock, Step::Prune, Step::Add],
            ),
            (
                "emptied directory, record already pruned",
                Seen {
                    dir: DirSeen::Empty,
                    record: false,
                    back_link: BackLink::Absent,
                    ..healthy
                },
                vec![P::Missing],
                vec![Step::Add],
            ),
            (
                "files without a .git: moved aside, checked out afresh",
                Seen {
                    dir: DirSeen::Files(DotGit::Absent),
                    prunable: true,
                    ..healthy
                },
                vec![P::Missing, P::Prunable],
                vec![Step::MoveAside, Step::Prune, Step::Add],
            ),
            (
                "moved worktree: the mirror's record names the old place",
                Seen {
                    back_link: BackLink::Elsewhere,
                    prunable: true,
                    ..healthy
                },
                vec![P::LinkBroken, P::Prunable],
                vec![Step::RepairLinks],
            ),
            (
                "moved worktree whose old place holds something else",
                Seen {
                    back_link: BackLink::Elsewhere,
                    ..healthy
                },
                vec![P::LinkBroken],
                vec![Step::RepairLinks],
            ),
            (
                "moved mirror: the .git names the old mirror",
                Seen {
                    dir: DirSeen::Files(DotGit::Moved),
                    back_link: BackLink::Elsewhere,
                    prunable: true,
                    ..healthy
                },
                vec![P::LinkBroken, P::Prunable],
                vec![Step::RepairLinks],
            ),
            (
                "moved and locked",
                Seen {
                    back_link: BackLink::Elsewhere,
                    locked: true,
                    ..healthy
                },
                vec![P::LinkBroken, P::Locked],
                vec![Step::RepairLinks, Step::Unlock],
            ),
            (
                "stale lock",
                Seen {
                    locked: true,
                    ..healthy
                },
                vec![P::Locked],
                vec![Step::Unlock],
            ),
            (
                "a broken .git: files moved aside",
                Seen {
                    dir: DirSeen::Files(DotGit::NotALink),
                    ..healthy
                },
                vec![P::LinkBroken],
                vec![Step::MoveAside, Step::Prune, Step::Add],
            ),
            (
                "a .git of another repository",
                Seen {
                    dir: DirSeen::Files(DotGit::Foreign),
                    record: false,
                    back_link: BackLink::Absent,
                    ..healthy
                },
                vec![P::LinkBroken],
                vec![Step::MoveAside, Step::Add],
            ),
            (
                "a worktree whose record git lost",
                Seen {
                    record: false,
                    back_link: BackLink::Absent,
                    ..healthy
                },
                vec![P::LinkBroken],
                vec![Step::MoveAside, Step::Add],
            ),
            (
                "branch deleted under a sound worktree",
                Seen {
                    branch: false,
                    ..healthy
                },
                vec![P::BranchMissing],
                vec![Step::RecreateBranch],
            ),
            (
                "branch deleted and worktree deleted",
                Seen {
                    dir: DirSeen::Absent,
                    branch: false,
                    prunable: true,
                    ..healthy
                },
                vec![P::Missing, P::BranchMissing, P::Prunable],
                vec![Step::Prune, Step::RecreateBranch, Step::Add],
            ),
            (
                "base unreachable: reported, nothing to do",
                Seen {
                    base: false,
                    ..healthy
                },
                vec![P::BaseUnreachable],
                vec![],
            ),
            (
                "branch and base both gone: no fresh checkout possible",
                Seen {
                    dir: DirSeen::Absent,
                    record: false,
                    back_link: BackLink::Absent,
                    branch: false,
                    base: false,
                    ..healthy
                },
                vec![P::Missing, P::BranchMissing, P::BaseUnreachable],
                vec![],
            ),
            (
                "mirror missing: the files are left alone",
                Seen {
                    mirror: MirrorSeen::Missing,
                    dir: DirSeen::Files(DotGit::Ours),
                    record: false,
                    back_link: BackLink::Absent,
                    branch: false,
                    base: false,
                    ..healthy
                },
                vec![P::MirrorBroken],
                vec![],
            ),
            (
                "mirror damaged and worktree deleted",
                Seen {
                    mirror: MirrorSeen::Broken,
                    dir: DirSeen::Absent,
                    ..healthy
                },
                vec![P::Missing, P::MirrorBroken],
                vec![],
            ),
        ];
        for (name, seen, problems, steps) in cases {
            let verdict = verdict(&seen);
            assert_eq!(verdict.problems, problems, "{name}");
            assert_eq!(verdict.steps, steps, "{name}");
        }
    }

    #[test]
    fn a_plan_never_moves_files_of_a_sound_worktree_aside() {
        for locked in [false, true] {
            for branch in [false, true] {
                for back_link in [BackLink::Here, BackLink::Elsewhere] {
                    let seen = Seen {
                        locked,
                        branch,
                        back_link,
                        ..Seen::HEALTHY
                    };
                    assert!(!verdict(&seen).steps.contains(&Step::MoveAside), "{seen:?}");
                }
            }
        }
    }
}
