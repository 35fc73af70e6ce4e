//! A side's history: a version for each state of its tree, and the subtrees each step changed.
//! Whoever saw one version is then told only what changed since: the workspace's side sends
//! those subtrees across the network instead of its whole tree, and a cycle plans only their
//! paths. A version this side cannot answer from its history (another epoch, too old) gets the
//! whole tree.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::path::RelPath;
use crate::tree::{Entry, Tree};

/// One state of one side's tree. The epoch is drawn when the side starts keeping history (a
/// restarted agent draws a new one), so a version from another life never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub epoch: u64,
    pub number: u64,
}

/// What a side has to say to one who saw an earlier version of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seen {
    /// The whole tree: the version asked about is not in the history (or none was given).
    Whole(Tree),
    /// Each subtree that may have changed since, as it is now (empty: gone), none beneath
    /// another.
    Changed(Vec<(RelPath, Vec<(RelPath, Entry)>)>),
}

/// A side's answer to "what is your tree since this version?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub version: Version,
    pub seen: Seen,
}

/// The most steps remembered; one who is further behind gets the whole tree.
const MAX_STEPS: usize = 256;
/// The most changed paths remembered over all steps.
const MAX_ROOTS: usize = 100_000;

#[derive(Debug)]
pub struct History {
    epoch: u64,
    number: u64,
    /// The roots each remembered step changed, oldest first; the last led to `number`.
    steps: VecDeque<Vec<RelPath>>,
    roots: usize,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        let mut bytes = [0u8; 8];
        // Without the OS's randomness, the standard library's hash keys (seeded once per
        // process, then counted up) still tell two lives apart.
        if getrandom::getrandom(&mut bytes).is_err() {
            use std::hash::BuildHasher;
            bytes = std::collections::hash_map::RandomState::new()
                .hash_one(0u8)
                .to_le_bytes();
        }
        History {
            epoch: u64::from_le_bytes(bytes),
            number: 0,
            steps: VecDeque::new(),
            roots: 0,
        }
    }

    pub fn version(&self) -> Version {
        Version {
            epoch: self.epoch,
            number: self.number,
        }
    }

    /// A step that changed the subtrees at `roots`; none is no step.
    pub fn record(&mut self, roots: Vec<RelPath>) {
        if roots.is_empty() {
            return;
        }
        self.number += 1;
        self.roots += roots.len();
        self.steps.push_back(roots);
        while self.steps.len() > MAX_STEPS || self.roots > MAX_ROOTS {
            match self.steps.pop_front() {
                Some(old) => self.roots -= old.len(),
                None => break,
            }
        }
    }

    /// A step that may have changed anything: no earlier version can be answered with changes.
    pub fn record_everything(&mut self) {
        self.number += 1;
        self.steps.clear();
        self.roots = 0;
    }

    /// The roots changed since `since` (none beneath another), or `None` when this history
    /// cannot say.
    pub fn since(&self, since: Option<Version>) -> Option<Vec<RelPath>> {
        let since = since?;
        if since.epoch != self.epoch || since.number > self.number {
            return None;
        }
        let behind = usize::try_from(self.number - since.number).ok()?;
        if behind > self.steps.len() {
            return None;
        }
        let roots = self
            .steps
            .iter()
            .skip(self.steps.len() - behind)
            .flatten()
            .cloned()
            .collect();
        Some(minimal(roots))
    }

    /// What one who saw `since` is told of `tree` (this side's tree now): the changed subtrees,
    /// or the whole tree when the history cannot say or the changes are most of it.
    pub fn answer(&self, tree: &Tree, since: Option<Version>) -> Since {
        let seen = match self.since(since) {
            Some(roots) => {
                let changed: Vec<(RelPath, Vec<(RelPath, Entry)>)> = roots
                    .into_iter()
                    .map(|root| {
                        let subtree = tree.subtree(&root);
                        (root, subtree)
                    })
                    .collect();
                let entries: usize = changed.iter().map(|(_, s)| s.len() + 1).sum();
                if entries > tree.len() / 2 + 64 {
                    Seen::Whole(tree.clone())
                } else {
                    Seen::Changed(changed)
                }
            }
            None => Seen::Whole(tree.clone()),
        };
        Since {
            version: self.version(),
            seen,
        }
    }
}

/// Takes a side's `answer` into `slot`, what one knows of that side: answers the roots that
/// changed, or `None` when the whole tree came. An answer that does not fit (changes to a tree
/// never sent, entries outside their root) empties the slot, so the next ask gets the whole
/// tree.
pub fn absorb(
    slot: &mut Option<(Version, Tree)>,
    answer: Since,
) -> Result<Option<Vec<RelPath>>, AbsorbError> {
    match (answer.seen, slot.as_mut()) {
        (Seen::Whole(tree), _) => {
            *slot = Some((answer.version, tree));
            Ok(None)
        }
        (Seen::Changed(changed), Some((version, tree))) => {
            // Each subtree must lie beneath its root (the other side may be across a network).
            if let Some((root, _)) = changed
                .iter()
                .find(|(root, entries)| entries.iter().any(|(p, _)| !p.is_within(root)))
            {
                let error = AbsorbError::Outside(root.clone());
                *slot = None;
                return Err(error);
            }
            *version = answer.version;
            let mut roots = Vec::with_capacity(changed.len());
            for (root, entries) in changed {
                tree.replace_subtree(&root, &entries);
                roots.push(root);
            }
            Ok(Some(roots))
        }
        (Seen::Changed(_), None) => Err(AbsorbError::NoTree),
    }
}

/// An answer that does not fit what one knows of the side (see [`absorb`]). The side may be
/// across a network, so this is its fault, not a bug here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbsorbError {
    /// A changed subtree came with entries outside its root.
    #[error("the other side sent entries outside {0} as its changes there")]
    Outside(RelPath),
    /// Changes came to a tree one never had.
    #[error("the other side sent changes to a tree it never sent")]
    NoTree,
}

/// `paths` in order, without duplicates or any beneath another.
pub fn minimal(mut paths: Vec<RelPath>) -> Vec<RelPath> {
    paths.sort();
    let mut roots: Vec<RelPath> = Vec::with_capacity(paths.len());
    for path in paths {
        if !roots.last().is_some_and(|root| path.is_within(root)) {
            roots.push(path);
        }
    }
    roots
}

/// The roots where `old` and `new` differ: the step a full rescan made.
pub fn differences(old: &Tree, new: &Tree) -> Vec<RelPath> {
    let mut changed = Vec::new();
    let mut olds = old.iter().peekable();
    let mut news = new.iter().peekable();
    loop {
        match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some((path, _)), None) => {
                changed.push((*path).clone());
                olds.next();
            }
            (None, Some((path, _))) => {
                changed.push((*path).clone());
                news.next();
            }
            (Some((a, x)), Some((b, y))) => match a.cmp(b) {
                std::cmp::Ordering::Less => {
                    changed.push((*a).clone());
                    olds.next();
                }
                std::cmp::Ordering::Greater => {
                    changed.push((*b).clone());
                    news.next();
                }
                std::cmp::Ordering::Equal => {
                    if x != y {
                        changed.push((*a).clone());
                    }
                    olds.next();
                    news.next();
                }
            },
        }
    }
    minimal(changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn path(p: &str) -> RelPath {
        p.parse().unwrap()
    }

    fn tree(paths: &[(&str, Entry)]) -> Tree {
        paths.iter().map(|(p, e)| (path(p), e.clone())).collect()
    }

    fn file(content: u8) -> Entry {
        Entry::File {
            digest: crate::tree::Digest([content; 32]),
            size: 1,
            executable: false,
        }
    }

    #[test]
    fn changes_since_a_version_are_the_union_of_the_steps_after_it() {
        let mut history = History::new();
        let start = history.version();
        history.record(vec![path("a/x")]);
        let middle = history.version();
        history.record(vec![path("b"), path("a")]);
        history.record(Vec::new());
        assert_eq!(history.version().number, start.number + 2);
        assert_eq!(
            history.since(Some(start)).unwrap(),
            vec![path("a"), path("b")]
        );
        assert_eq!(
            history.since(Some(middle)).unwrap(),
            vec![path("a"), path("b")]
        );
        assert_eq!(history.since(Some(history.version())).unwrap(), vec![]);
        assert_eq!(history.since(None), None);
        // Another life's version, or one from the future, is not answered with changes.
        let other = History::new();
        assert_eq!(history.since(Some(other.version())), None);
        let ahead = Version {
            number: history.version().number + 1,
            ..history.version()
        };
        assert_eq!(history.since(Some(ahead)), None);
    }

    #[test]
    fn a_step_that_may_have_changed_anything_or_one_forgotten_answers_the_whole_tree() {
        let mut history = History::new();
        let start = history.version();
        history.record_everything();
        assert_eq!(history.since(Some(start)), None);
        let after = history.version();
        for i in 0..=MAX_STEPS {
            history.record(vec![path(&format!("f{i}"))]);
        }
        assert_eq!(history.since(Some(after)), None, "too far behind");
        let current = tree(&[("x", file(1))]);
        assert_eq!(
            history.answer(&current, Some(after)).seen,
            Seen::Whole(current.clone())
        );
    }

    #[test]
    fn the_answer_carries_each_changed_subtree_as_it_is_now() {
        let mut history = History::new();
        let seen = history.version();
        let files: Vec<(String, Entry)> = (0..200).map(|i| (format!("d/f{i}"), file(1))).collect();
        let mut current: Tree = files.iter().map(|(p, e)| (path(p), e.clone())).collect();
        current.insert(path("d"), Entry::Dir);
        current.insert(path("e"), Entry::Dir);
        current.insert(path("e/new"), file(2));
        history.record(vec![path("e"), path("gone")]);
        let answer = history.answer(&current, Some(seen));
        assert_eq!(answer.version, history.version());
        assert_eq!(
            answer.seen,
            Seen::Changed(vec![
                (
                    path("e"),
                    vec![(path("e"), Entry::Dir), (path("e/new"), file(2))]
                ),
                (path("gone"), vec![]),
            ])
        );
    }

    #[test]
    fn differences_are_the_roots_where_two_trees_differ() {
        let old = tree(&[
            ("a", Entry::Dir),
            ("a/x", file(1)),
            ("a/y", file(1)),
            ("b", file(1)),
            ("c", Entry::Dir),
            ("c/z", file(1)),
        ]);
        let new = tree(&[
            ("a", Entry::Dir),
            ("a/x", file(2)),
            ("a/y", file(1)),
            ("b", Entry::Dir),
            ("b/w", file(1)),
            ("d", file(1)),
        ]);
        assert_eq!(
            differences(&old, &new),
            vec![path("a/x"), path("b"), path("c"), path("d")]
        );
        assert_eq!(differences(&old, &old), Vec::<RelPath>::new());
    }
}
