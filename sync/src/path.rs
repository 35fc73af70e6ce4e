//! A path inside a sync root, relative to it: components joined by `/`, none empty, `.` or `..`,
//! no NUL. Built only through [`RelPath::new`], so a path that names something outside the root
//! (absolute, or climbing with `..`) cannot exist: the side that writes never has to check again.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest component accepted, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// Ordered component by component (as if `/` sorted before every other byte), so a directory's
/// subtree follows it directly, as one range: `foo`, `foo/a`, `foo/a/b`, `foo-b`, `foo.txt`. In
/// plain string order `foo.txt` would come between `foo` and `foo/a`, and a range from `foo` would
/// stop there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl Ord for RelPath {
    fn cmp(&self, other: &RelPath) -> std::cmp::Ordering {
        // A path holds no NUL, so mapping `/` to it keeps distinct paths distinct.
        let key = |b: &u8| if *b == b'/' { 0 } else { *b };
        self.0
            .as_bytes()
            .iter()
            .map(key)
            .cmp(other.0.as_bytes().iter().map(key))
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &RelPath) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("an empty path names the root, not an entry in it")]
    Empty,
    #[error("{0:?} is absolute; paths are relative to the sync root")]
    Absolute(String),
    #[error("{0:?} has an empty, `.` or `..` component")]
    BadComponent(String),
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    #[error(
        "a path of {0} bytes is longer than {MAX_PATH_BYTES}, or has a name longer than {MAX_NAME_BYTES}"
    )]
    TooLong(usize),
}

impl RelPath {
    pub fn new(path: impl Into<String>) -> Result<RelPath, PathError> {
        let path = path.into();
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(path.len()));
        }
        if path.contains('\0') {
            return Err(PathError::Nul(path));
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute(path));
        }
        for component in path.split('/') {
            if component.is_empty() || component == "." || component == ".." {
                return Err(PathError::BadComponent(path));
            }
            if component.len() > MAX_NAME_BYTES {
                return Err(PathError::TooLong(path.len()));
            }
        }
        Ok(RelPath(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/name`, for a name that is one valid component.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::new(format!("{}/{name}", self.0))
    }

    /// The directory holding this entry; `None` for an entry of the root.
    pub fn parent(&self) -> Option<RelPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| RelPath(parent.to_string()))
    }

    /// The last component.
    pub fn name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, name)| name)
    }

    /// Whether `self` is `other` or lies beneath it.
    pub fn is_within(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0.as_bytes()[other.0.len()] == b'/')
    }

    /// How many components deep: 1 for an entry of the root.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(value: String) -> Result<RelPath, PathError> {
        RelPath::new(value)
    }
}

impl From<RelPath> for String {
    fn from(path: RelPath) -> String {
        path.0
    }
}

impl std::str::FromStr for RelPath {
    type Err = PathError;
    fn from_str(value: &str) -> Result<RelPath, PathError> {
        RelPath::new(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_subtree_follows_its_directory_as_one_range() {
        let mut paths: Vec<RelPath> = ["foo.txt", "foo/a/b", "foo", "foo-b", "foo/a", "fo", "g"]
            .iter()
            .map(|p| RelPath::new(*p).unwrap())
            .collect();
        paths.sort();
        let names: Vec<&str> = paths.iter().map(RelPath::as_str).collect();
        assert_eq!(
            names,
            ["fo", "foo", "foo/a", "foo/a/b", "foo-b", "foo.txt", "g"]
        );
    }

    #[test]
    fn only_paths_inside_the_root_exist() {
        for good in ["a", "a/b", "a b/.hidden", "...", "a/..b"] {
            assert!(RelPath::new(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/etc", "a/../b", "..", ".", "a//b", "a/", "a/./b", "a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::new("x".repeat(256)).is_err());
        assert!(RelPath::new("a/".repeat(2100)).is_err());
        // Deserializing checks too: a peer cannot send `../x`.
        assert!(serde_json_like("../x").is_err());
    }

    fn serde_json_like(value: &str) -> Result<RelPath, PathError> {
        RelPath::try_from(value.to_string())
    }

    #[test]
    fn paths_know_their_place() {
        let p = RelPath::new("a/b/c").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.parent().map(|p| p.to_string()), Some("a/b".into()));
        assert_eq!(p.name(), "c");
        assert_eq!(p.depth(), 3);
        let a = RelPath::new("a").unwrap_or_else(|e| panic!("{e}"));
        assert!(p.is_within(&a));
        assert!(a.is_within(&a));
        let ab = RelPath::new("ab").unwrap_or_else(|e| panic!("{e}"));
        assert!(!ab.is_within(&a));
        assert_eq!(a.parent(), None);
    }
}
