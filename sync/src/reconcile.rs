//! The three-way reconciliation: alpha (the user's side) and beta (the workspace's) against the
//! ancestor, the state both last agreed on. Pure: trees in, a plan out.
//!
//! The walk goes over every path either side or the ancestor has, in order (a directory before
//! its contents). Where both sides hold a directory, the directory itself agrees and the walk
//! goes on into its contents, so changes are found at the finest level. Anywhere else the two
//! sides differ, the path is decided as a whole, with everything beneath it:
//!
//! - a side whose subtree is as the ancestor had it did not change it, so the other side's
//!   version travels over it;
//! - when both changed it, the mode decides: in `two-way-safe` a modification wins over a
//!   deletion (nothing is lost) and anything else is a conflict, recorded and left alone;
//!   `two-way-resolved` lets alpha win; `one-way-safe` carries alpha's changes to beta without
//!   ever overwriting what beta changed (beta's deletions are undone, beta's extra content is
//!   left alone); `one-way-replica` makes beta a copy of alpha.
//!
//! A change replaces one subtree of one side and carries what that subtree held when planned:
//! the side applies it only if it still holds exactly that, so an edit made meanwhile is never
//! overwritten; it is seen by the next cycle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::path::RelPath;
use crate::tree::{Entry, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    /// Both ways; conflicts that would lose data are left for the user.
    #[default]
    TwoWaySafe,
    /// Both ways; alpha wins every conflict.
    TwoWayResolved,
    /// Alpha to beta, never overwriting beta's own changes.
    OneWaySafe,
    /// Alpha to beta; beta becomes a copy of alpha.
    OneWayReplica,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::TwoWaySafe,
        Mode::TwoWayResolved,
        Mode::OneWaySafe,
        Mode::OneWayReplica,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::TwoWaySafe => "two-way-safe",
            Mode::TwoWayResolved => "two-way-resolved",
            Mode::OneWaySafe => "one-way-safe",
            Mode::OneWayReplica => "one-way-replica",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(value: &str) -> Result<Mode, UnknownMode> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == value)
            .ok_or_else(|| UnknownMode(value.to_string()))
    }
}

/// A name that is no [`Mode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: two-way-safe, two-way-resolved, one-way-safe or one-way-replica")]
pub struct UnknownMode(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Alpha,
    Beta,
}

/// Make `side`'s subtree at `path` hold `desired`, if it still holds `expected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub side: Side,
    pub path: RelPath,
    pub expected: Vec<(RelPath, Entry)>,
    pub desired: Vec<(RelPath, Entry)>,
}

/// Both sides changed `path` in ways the mode does not settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub path: RelPath,
    pub alpha: Option<Entry>,
    pub beta: Option<Entry>,
}

/// What one cycle should do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
    /// The ancestor with every agreement of this cycle recorded. A change, once applied,
    /// records its own ([`Plan::applied`]).
    pub ancestor: Tree,
}

impl Plan {
    /// Records in the ancestor that `change` was applied: both sides now hold its `desired`.
    pub fn applied(&mut self, change: &Change) {
        self.ancestor.replace_subtree(&change.path, &change.desired);
    }

    /// Whether there is nothing to do.
    pub fn is_quiet(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Plans one cycle of `mode` between `alpha` and `beta`, against `ancestor`.
pub fn reconcile(ancestor: &Tree, alpha: &Tree, beta: &Tree, mode: Mode) -> Plan {
    let (planned, edits) = walk(
        ancestor,
        alpha,
        beta,
        mode,
        every_path(ancestor, alpha, beta),
    );
    let mut ancestor = ancestor.clone();
    record(&mut ancestor, edits);
    Plan {
        changes: planned.changes,
        conflicts: planned.conflicts,
        ancestor,
    }
}

/// What [`reconcile_in_place`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Planned {
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
    /// The conflicts' paths: a scoped plan must look at them again (to list them again), with
    /// the paths of the changes that were not applied. Beta's own content that one-way-safe
    /// leaves alone is not listed: it is decided the same way until one side changes it, and
    /// a change brings it into the scope.
    pub unsettled: Vec<RelPath>,
    /// Whether the ancestor recorded an agreement.
    pub recorded: bool,
}

/// Plans as [`reconcile`] does, recording the agreements in `ancestor` itself. With `scope`,
/// only the paths at and beneath those roots are walked (and the directories above them). The
/// caller answers for the rest: every path outside the scope must be as the previous plan left
/// it, agreed (both sides and the ancestor the same) and untouched since. Then the plan is the
/// one a walk of every path makes, at the cost of the scope instead of the trees.
pub fn reconcile_in_place(
    ancestor: &mut Tree,
    alpha: &Tree,
    beta: &Tree,
    mode: Mode,
    scope: Option<&[RelPath]>,
) -> Planned {
    let paths = match scope {
        None => every_path(ancestor, alpha, beta),
        Some(roots) => scoped_paths(ancestor, alpha, beta, roots),
    };
    let (mut planned, edits) = walk(ancestor, alpha, beta, mode, paths);
    planned.recorded = !edits.is_empty();
    record(ancestor, edits);
    planned
}

/// Every path of the three trees, in order, once.
fn every_path<'t>(ancestor: &'t Tree, alpha: &'t Tree, beta: &'t Tree) -> Vec<&'t RelPath> {
    let mut paths: Vec<&RelPath> = ancestor
        .iter()
        .chain(alpha.iter())
        .chain(beta.iter())
        .map(|(p, _)| p)
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The paths of the three trees at and beneath `roots`, and the directories above them, in
/// order, once.
fn scoped_paths<'t>(
    ancestor: &'t Tree,
    alpha: &'t Tree,
    beta: &'t Tree,
    roots: &'t [RelPath],
) -> Vec<&'t RelPath> {
    let trees = [ancestor, alpha, beta];
    let mut paths: Vec<&RelPath> = Vec::new();
    for root in roots {
        let mut above = root.parent();
        while let Some(dir) = above {
            paths.extend(trees.iter().filter_map(|t| t.key(&dir)));
            above = dir.parent();
        }
        for tree in trees {
            paths.extend(tree.subtree_iter(root).map(|(p, _)| p));
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// A change to the ancestor that a walk decided.
enum Record {
    Dir(RelPath),
    Subtree(RelPath, Vec<(RelPath, Entry)>),
}

fn record(ancestor: &mut Tree, records: Vec<Record>) {
    for record in records {
        match record {
            Record::Dir(path) => {
                ancestor.insert(path, Entry::Dir);
            }
            Record::Subtree(path, entries) => ancestor.replace_subtree(&path, &entries),
        }
    }
}

/// The walk over `paths` (in order): the plan, and what the ancestor must record. The records
/// are made after the walk, which reads the ancestor as it was.
fn walk(
    ancestor: &Tree,
    alpha: &Tree,
    beta: &Tree,
    mode: Mode,
    paths: Vec<&RelPath>,
) -> (Planned, Vec<Record>) {
    let mut planned = Planned::default();
    let mut records = Vec::new();
    let mut decided: Option<&RelPath> = None;
    for path in paths {
        if decided.is_some_and(|whole| path.is_within(whole)) {
            continue;
        }
        let (a, b) = (alpha.get(path), beta.get(path));
        if a.is_some_and(Entry::is_dir) && b.is_some_and(Entry::is_dir) {
            // The directory agrees; its contents are walked next.
            if !ancestor.get(path).is_some_and(Entry::is_dir) {
                records.push(Record::Dir(path.clone()));
            }
            continue;
        }
        decided = Some(path);
        if a == b {
            // Agreed (a directory is never one of the two here): nothing beneath it on either
            // side, so the ancestor's subtree is just this entry.
            if !ancestor.subtree_iter(path).eq(a.map(|e| (path, e))) {
                let agreed: Vec<(RelPath, Entry)> =
                    a.map(|e| (path.clone(), e.clone())).into_iter().collect();
                records.push(Record::Subtree(path.clone(), agreed));
            }
            continue;
        }
        let alpha_unchanged = alpha.same_subtree(ancestor, path);
        let beta_unchanged = beta.same_subtree(ancestor, path);
        let to_alpha = || Change {
            side: Side::Alpha,
            path: path.clone(),
            expected: alpha.subtree(path),
            desired: beta.subtree(path),
        };
        let to_beta = || Change {
            side: Side::Beta,
            path: path.clone(),
            expected: beta.subtree(path),
            desired: alpha.subtree(path),
        };
        let conflict = || Conflict {
            path: path.clone(),
            alpha: a.cloned(),
            beta: b.cloned(),
        };
        match decide(
            mode,
            a.is_some(),
            b.is_some(),
            alpha_unchanged,
            beta_unchanged,
        ) {
            Decision::ToAlpha => planned.changes.push(to_alpha()),
            Decision::ToBeta => planned.changes.push(to_beta()),
            Decision::Conflict => {
                planned.conflicts.push(conflict());
                planned.unsettled.push(path.clone());
            }
            Decision::Leave => {}
        }
    }
    (planned, records)
}

enum Decision {
    ToAlpha,
    ToBeta,
    Conflict,
    /// Beta's own extra content, which a one-way mode leaves alone.
    Leave,
}

/// The rule, for one path the sides hold differently (not both as directories).
fn decide(
    mode: Mode,
    alpha_has: bool,
    beta_has: bool,
    alpha_unchanged: bool,
    beta_unchanged: bool,
) -> Decision {
    match mode {
        Mode::TwoWaySafe | Mode::TwoWayResolved => {
            if alpha_unchanged {
                Decision::ToAlpha
            } else if beta_unchanged || mode == Mode::TwoWayResolved {
                // Alpha changed alone, or alpha wins.
                Decision::ToBeta
            } else if !alpha_has {
                // Alpha deleted what beta modified: the modification comes back.
                Decision::ToAlpha
            } else if !beta_has {
                Decision::ToBeta
            } else {
                Decision::Conflict
            }
        }
        Mode::OneWaySafe => {
            if !beta_has || beta_unchanged {
                // New on alpha, changed on alpha, or deleted on beta: alpha's version goes.
                Decision::ToBeta
            } else if !alpha_has && alpha_unchanged {
                Decision::Leave
            } else {
                Decision::Conflict
            }
        }
        Mode::OneWayReplica => Decision::ToBeta,
    }
}

/// Settles a conflict at `path` for the side to `keep`: the ancestor takes the other side's
/// version, so that side looks unchanged and the kept version travels over it in the next
/// cycle. In a one-way mode only alpha's version can be kept (nothing travels to alpha).
pub fn resolve(
    ancestor: &mut Tree,
    alpha: &Tree,
    beta: &Tree,
    mode: Mode,
    path: &RelPath,
    keep: Side,
) -> Result<(), OneWayOnly> {
    let losing = match (keep, mode) {
        (Side::Alpha, _) => beta,
        (Side::Beta, Mode::TwoWaySafe | Mode::TwoWayResolved) => alpha,
        (Side::Beta, _) => return Err(OneWayOnly(mode)),
    };
    ancestor.replace_subtree(path, &losing.subtree(path));
    // The ancestor must stay a tree: the parents the losing side has for it.
    let mut parent = path.parent();
    while let Some(dir) = parent {
        if ancestor.get(&dir).is_none() && losing.get(&dir).is_some_and(Entry::is_dir) {
            ancestor.insert(dir.clone(), Entry::Dir);
        }
        parent = dir.parent();
    }
    Ok(())
}

/// Beta's version cannot be kept in a one-way mode: nothing travels to alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} carries changes to the workspace only: keep the local version, or change it locally")]
pub struct OneWayOnly(pub Mode);
