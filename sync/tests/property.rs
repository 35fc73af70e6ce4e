//! Any interleaving of edits on both sides and sync cycles (some edits landing while a cycle's
//! changes travel), then quiet: the two trees agree except beneath recorded conflicts (and, one
//! way, beta's own extra content), and no safe mode ever overwrote an edit (the session model
//! checks every change it applies).

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Session, file, path};
use nexus_sync::{Entry, Mode, RelPath, Tree};
use proptest::prelude::*;

// `a.b` and `a-c/d` sort between `a` and `a/x` in plain string order: a subtree must still be one
// range.
const PATHS: [&str; 8] = ["a", "b", "a/x", "a/y", "a/x/z", "b/w", "a.b", "a-c/d"];

#[derive(Debug, Clone)]
enum Edit {
    Write(usize, u8),
    Mkdir(usize),
    Delete(usize),
    Link(usize),
    ToggleExecutable(usize),
}

#[derive(Debug, Clone)]
enum Step {
    Alpha(Edit),
    Beta(Edit),
    Cycle,
    /// A cycle with an edit landing between its plan and its changes.
    CycleWhile(bool, Edit),
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0..PATHS.len();
    prop_oneof![
        3 => (at.clone(), 1u8..5).prop_map(|(p, c)| Edit::Write(p, c)),
        1 => at.clone().prop_map(Edit::Mkdir),
        2 => at.clone().prop_map(Edit::Delete),
        1 => at.clone().prop_map(Edit::Link),
        1 => at.prop_map(Edit::ToggleExecutable),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => edit().prop_map(Step::Alpha),
        3 => edit().prop_map(Step::Beta),
        2 => Just(Step::Cycle),
        1 => (any::<bool>(), edit()).prop_map(|(alpha, e)| Step::CycleWhile(alpha, e)),
    ]
}

/// Makes `path`'s parents directories, as `mkdir -p` would; false if a parent is not one.
fn parents(tree: &mut Tree, at: &RelPath) -> bool {
    let mut chain = Vec::new();
    let mut next = at.parent();
    while let Some(parent) = next {
        next = parent.parent();
        chain.push(parent);
    }
    for parent in chain.into_iter().rev() {
        match tree.get(&parent) {
            Some(Entry::Dir) => {}
            Some(_) => return false,
            None => {
                tree.insert(parent, Entry::Dir);
            }
        }
    }
    true
}

/// A user's edit, as a filesystem would allow it.
fn apply(tree: &mut Tree, edit: &Edit) {
    let index = match edit {
        Edit::Write(p, _) | Edit::Mkdir(p) | Edit::Delete(p) | Edit::Link(p) => *p,
        Edit::ToggleExecutable(p) => *p,
    };
    let at = path(PATHS[index]);
    match edit {
        Edit::Delete(_) => tree.remove_subtree(&at),
        Edit::ToggleExecutable(_) => {
            if let Some(Entry::File {
                digest,
                size,
                executable,
            }) = tree.get(&at).cloned()
            {
                tree.insert(
                    at,
                    Entry::File {
                        digest,
                        size,
                        executable: !executable,
                    },
                );
            }
        }
        Edit::Write(_, content) => {
            if parents(tree, &at) {
                tree.replace_subtree(&at, &[(at.clone(), file(*content))]);
            }
        }
        Edit::Mkdir(_) => {
            if parents(tree, &at) && !tree.get(&at).is_some_and(Entry::is_dir) {
                tree.replace_subtree(&at, &[(at.clone(), Entry::Dir)]);
            }
        }
        Edit::Link(_) => {
            if parents(tree, &at) {
                let link = Entry::Symlink { target: "t".into() };
                tree.replace_subtree(&at, &[(at.clone(), link)]);
            }
        }
    }
}

fn under_conflict(session: &Session, at: &RelPath) -> bool {
    session.conflicts.iter().any(|c| at.is_within(&c.path))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn quiet_sides_agree_except_for_recorded_conflicts(
        mode in proptest::sample::select(Mode::ALL.to_vec()),
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let mut session = Session::new(Tree::new(), Tree::new(), Tree::new(), mode);
        for step in &steps {
            match step {
                Step::Alpha(e) => apply(&mut session.alpha, e),
                Step::Beta(e) => apply(&mut session.beta, e),
                Step::Cycle => {
                    session.cycle(|_, _| {});
                }
                Step::CycleWhile(alpha, e) => {
                    session.cycle(|a, b| apply(if *alpha { a } else { b }, e));
                }
            }
        }
        session.settle(10);
        let paths: Vec<RelPath> = session
            .alpha
            .iter()
            .chain(session.beta.iter())
            .map(|(p, _)| p.clone())
            .collect();
        for at in paths {
            if under_conflict(&session, &at) {
                continue;
            }
            let (a, b) = (session.alpha.get(&at), session.beta.get(&at));
            match mode {
                // Beta's own extra content is left alone, one way.
                Mode::OneWaySafe if a.is_none() => {}
                _ => prop_assert_eq!(a, b, "{} differs after quiet ({})", at, mode),
            }
        }
        match mode {
            Mode::TwoWayResolved | Mode::OneWayReplica => {
                prop_assert!(session.conflicts.is_empty());
                prop_assert_eq!(&session.alpha, &session.beta);
            }
            _ => {}
        }
        for conflict in &session.conflicts {
            prop_assert_ne!(session.alpha.get(&conflict.path), session.beta.get(&conflict.path));
        }
        if session.conflicts.is_empty() && session.alpha == session.beta {
            prop_assert_eq!(&session.ancestor, &session.alpha);
        }
    }
}

/// Applies a user's edit to `tree`, noting where it changed in `roots`.
fn edit_noted(tree: &mut Tree, edit: &Edit, roots: &mut Vec<RelPath>) {
    let before = tree.clone();
    apply(tree, edit);
    roots.extend(nexus_sync::history::differences(&before, tree));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// A plan that walks only the paths changed since the last one (with those it left
    /// unsettled and those whose change did not land) is the plan of every path, and records
    /// the same ancestor: what lets a session plan at the cost of a change, not of the tree.
    #[test]
    fn a_plan_of_the_changed_paths_is_the_plan_of_every_path(
        mode in proptest::sample::select(Mode::ALL.to_vec()),
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let (mut alpha, mut beta) = (Tree::new(), Tree::new());
        let (mut ancestor, mut scoped_ancestor) = (Tree::new(), Tree::new());
        let mut roots: Vec<RelPath> = Vec::new();
        let mut first = true;
        for step in steps.iter().chain([Step::Cycle, Step::Cycle].iter()) {
            let between = match step {
                Step::Alpha(e) => {
                    edit_noted(&mut alpha, e, &mut roots);
                    continue;
                }
                Step::Beta(e) => {
                    edit_noted(&mut beta, e, &mut roots);
                    continue;
                }
                Step::Cycle => None,
                Step::CycleWhile(on_alpha, e) => Some((*on_alpha, e)),
            };
            let mut full = nexus_sync::reconcile(&ancestor, &alpha, &beta, mode);
            let scope = nexus_sync::history::minimal(std::mem::take(&mut roots));
            let planned = nexus_sync::reconcile_in_place(
                &mut scoped_ancestor,
                &alpha,
                &beta,
                mode,
                (!first).then_some(scope.as_slice()),
            );
            first = false;
            prop_assert_eq!(&planned.changes, &full.changes);
            prop_assert_eq!(&planned.conflicts, &full.conflicts);
            prop_assert_eq!(&scoped_ancestor, &full.ancestor);
            roots.extend(planned.unsettled);
            if let Some((on_alpha, e)) = between {
                edit_noted(if on_alpha { &mut alpha } else { &mut beta }, e, &mut roots);
            }
            for change in &planned.changes {
                let target = match change.side {
                    nexus_sync::Side::Alpha => &mut alpha,
                    nexus_sync::Side::Beta => &mut beta,
                };
                if target.apply(&change.path, &change.expected, &change.desired).is_ok() {
                    full.applied(change);
                    scoped_ancestor.replace_subtree(&change.path, &change.desired);
                }
                // Landed (the target changed there) or not (still to do): walked next time.
                roots.push(change.path.clone());
            }
            ancestor = full.ancestor;
        }
    }
}
