//! What a session leaves out: the user's patterns, in `.gitignore` syntax, after sensible
//! defaults (editors' swap files, macOS's `.DS_Store`, our own temporary files), and with
//! `--ignore-vcs` the version-control directories. Both sides of a session use the same filter,
//! so an ignored path is neither sent nor deleted.

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::path::RelPath;

/// The prefix of the temporary files a side writes before renaming them into place.
pub const TEMP_PREFIX: &str = ".nexus-sync-";

/// Always left out.
pub const DEFAULTS: [&str; 6] = [
    ".nexus-sync-*",
    ".DS_Store",
    "*.swp",
    "*.swx",
    "*~",
    // vim writes it to check that a directory is writable.
    "4913",
];

/// Left out with `--ignore-vcs`. `.git` as a file too: a git worktree's link to its repository
/// (a workspace from a repository), which names a path on the workspace's host.
pub const VCS: [&str; 5] = [".git", ".svn/", ".hg/", ".bzr/", "_darcs/"];

#[derive(Debug, Clone)]
pub struct Filter {
    rules: Gitignore,
}

impl Filter {
    /// The defaults, the VCS directories if asked, then `patterns` (later lines win, and `!`
    /// re-includes, as in `.gitignore`).
    pub fn new(patterns: &[String], ignore_vcs: bool) -> Result<Filter, FilterError> {
        let mut builder = GitignoreBuilder::new("/");
        let vcs: &[&'static str] = if ignore_vcs { &VCS } else { &[] };
        for line in DEFAULTS.iter().chain(vcs) {
            builder
                .add_line(None, line)
                .map_err(|e| FilterError::Default {
                    pattern: line,
                    reason: e.to_string(),
                })?;
        }
        for line in patterns {
            if line.contains('\n') {
                return Err(FilterError::Multiline(line.clone()));
            }
            builder
                .add_line(None, line)
                .map_err(|e| FilterError::Invalid {
                    pattern: line.clone(),
                    reason: e.to_string(),
                })?;
        }
        let rules = builder
            .build()
            .map_err(|e| FilterError::Build(e.to_string()))?;
        Ok(Filter { rules })
    }

    /// Whether `path` (a directory if `is_dir`) is left out, by itself or by a parent.
    pub fn ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        self.rules
            .matched_path_or_any_parents(path.as_str(), is_dir)
            .is_ignore()
    }
}

/// Patterns that make no filter. The reasons are the matcher's words, as text: its error type
/// stays inside this module (the one home of the `ignore` crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The user's pattern does not parse.
    #[error("invalid ignore pattern {pattern:?}: {reason}")]
    Invalid { pattern: String, reason: String },
    /// A pattern holds a line break: each `--ignore` is one pattern.
    #[error("{0:?}: one pattern per --ignore")]
    Multiline(String),
    /// One of our own defaults does not parse: a bug here, not the user's doing.
    #[error("default pattern {pattern:?}: {reason}")]
    Default {
        pattern: &'static str,
        reason: String,
    },
    /// The matcher refused the patterns as a whole.
    #[error("{0}")]
    Build(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> RelPath {
        RelPath::new(path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_patterns_and_vcs_leave_out_what_they_say() {
        let filter = Filter::new(
            &["target/".into(), "*.log".into(), "!keep.log".into()],
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for ignored in [
            (".DS_Store", false),
            ("src/.main.rs.swp", false),
            (".nexus-sync-1234", false),
            ("target", true),
            ("target/debug/app", false),
            ("a/b.log", false),
            (".git", true),
            (".git", false),
            (".git/HEAD", false),
            ("sub/.git", false),
        ] {
            assert!(filter.ignored(&p(ignored.0), ignored.1), "{ignored:?}");
        }
        for kept in [
            ("src/main.rs", false),
            ("keep.log", false),
            ("target", false),
        ] {
            assert!(!filter.ignored(&p(kept.0), kept.1), "{kept:?}");
        }
        let without_vcs = Filter::new(&[], false).unwrap_or_else(|e| panic!("{e}"));
        assert!(!without_vcs.ignored(&p(".git/HEAD"), false));
        assert!(Filter::new(&["a\nb".into()], false).is_err());
    }
}
