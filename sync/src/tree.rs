//! What a side holds: a flat, ordered map from path to entry. A directory's contents are the
//! paths beneath it, which in this order follow it directly, so a subtree is one range.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::path::RelPath;

/// A file's content digest (SHA-256 where files are scanned).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One entry, as far as sync cares: two entries are the same exactly when they are equal. A
/// file's modification time is not part of it (a scan uses it to skip hashing, nothing more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    File {
        digest: Digest,
        size: u64,
        executable: bool,
    },
    Dir,
    /// The link's target as written; the scanner keeps only targets that stay inside the root.
    Symlink {
        target: String,
    },
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Dir)
    }

    /// `file`, `directory` or `symlink`.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::File { .. } => "file",
            Entry::Dir => "directory",
            Entry::Symlink { .. } => "symlink",
        }
    }
}

/// The entries of one side, or of the ancestor. The root itself is implied (always a directory).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tree {
    entries: BTreeMap<RelPath, Entry>,
}

/// A change was planned against what a side held, and the side holds something else now (it
/// changed meanwhile): nothing was changed; the next cycle plans again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} changed since the plan was made")]
pub struct Stale {
    pub path: RelPath,
}

/// An entry whose parent is not a directory of its tree (see [`Tree::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} has no parent directory")]
pub struct NoParent(pub RelPath);

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The tree's own copy of `path`, if it holds an entry there.
    pub fn key(&self, path: &RelPath) -> Option<&RelPath> {
        self.entries.get_key_value(path).map(|(p, _)| p)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &Entry)> {
        self.entries.iter()
    }

    /// Adds or replaces one entry. The caller keeps the tree whole (a parent directory for
    /// every entry); [`Tree::check`] says whether it is.
    pub fn insert(&mut self, path: RelPath, entry: Entry) -> Option<Entry> {
        self.entries.insert(path, entry)
    }

    /// `path` and everything beneath it, in order.
    pub fn subtree(&self, path: &RelPath) -> Vec<(RelPath, Entry)> {
        self.subtree_iter(path)
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    /// [`Tree::subtree`], borrowed.
    pub fn subtree_iter<'a>(
        &'a self,
        path: &'a RelPath,
    ) -> impl Iterator<Item = (&'a RelPath, &'a Entry)> {
        self.entries
            .range(path.clone()..)
            .take_while(move |(p, _)| p.is_within(path))
    }

    /// Whether `self` and `other` hold the same at and beneath `path`.
    pub fn same_subtree(&self, other: &Tree, path: &RelPath) -> bool {
        self.subtree_iter(path).eq(other.subtree_iter(path))
    }

    /// Replaces what is at and beneath `path` with `entries` (all at or beneath `path`).
    pub fn replace_subtree(&mut self, path: &RelPath, entries: &[(RelPath, Entry)]) {
        let old: Vec<RelPath> = self.subtree_iter(path).map(|(p, _)| p.clone()).collect();
        for p in old {
            self.entries.remove(&p);
        }
        for (p, entry) in entries {
            self.entries.insert(p.clone(), entry.clone());
        }
    }

    /// Removes `path` and everything beneath it.
    pub fn remove_subtree(&mut self, path: &RelPath) {
        self.replace_subtree(path, &[]);
    }

    /// Applies a change as a side would: only if the side still holds what the plan saw, and
    /// (to put something there) still has the directory to put it in.
    pub fn apply(
        &mut self,
        path: &RelPath,
        expected: &[(RelPath, Entry)],
        desired: &[(RelPath, Entry)],
    ) -> Result<(), Stale> {
        let stale = || Err(Stale { path: path.clone() });
        if !self
            .subtree_iter(path)
            .eq(expected.iter().map(|(p, e)| (p, e)))
        {
            return stale();
        }
        if !desired.is_empty()
            && let Some(parent) = path.parent()
            && !self.get(&parent).is_some_and(Entry::is_dir)
        {
            return stale();
        }
        self.replace_subtree(path, desired);
        Ok(())
    }

    /// Whether every entry's parent is a directory of the tree.
    pub fn check(&self) -> Result<(), NoParent> {
        for path in self.entries.keys() {
            if let Some(parent) = path.parent()
                && !self.entries.get(&parent).is_some_and(Entry::is_dir)
            {
                return Err(NoParent(path.clone()));
            }
        }
        Ok(())
    }
}

impl FromIterator<(RelPath, Entry)> for Tree {
    fn from_iter<I: IntoIterator<Item = (RelPath, Entry)>>(iter: I) -> Tree {
        Tree {
            entries: iter.into_iter().collect(),
        }
    }
}
