//! `nexus workspace create`'s repository flags (issue 24).

use clap::Args;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::git::{RepoBase, RepoSource};

use crate::error::CliError;

/// A workspace from a git repository: checked out in its files directory (/workspace) on a
/// branch of its own, `nexus/<name>`.
#[derive(Debug, Clone, Default, Args)]
pub struct RepoArgs {
    /// The repository's URL (https://, http://, ssh://, git://, or file:// for admins); credentials come
    /// from the credential store, never the URL.
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// Start from the tip of this remote branch (default: the remote's default branch).
    #[arg(long, value_name = "B", requires = "repo", conflicts_with = "git_ref")]
    pub branch: Option<String>,
    /// Start from this tag or commit.
    #[arg(long = "ref", id = "git_ref", value_name = "R", requires = "repo")]
    pub git_ref: Option<String>,
}

impl RepoArgs {
    /// The repository asked for, checked, if any.
    pub fn source(&self) -> Result<Option<RepoSource>, CliError> {
        let Some(url) = &self.repo else {
            return Ok(None);
        };
        let base = match (&self.branch, &self.git_ref) {
            (Some(branch), _) => RepoBase::Branch(branch.clone()),
            (None, Some(name)) => RepoBase::Ref(name.clone()),
            (None, None) => RepoBase::Default,
        };
        let source = RepoSource {
            url: url.clone(),
            base,
        };
        source
            .check()
            .map_err(|e| CliError::local(ErrorCode::InvalidArgument, e.0))?;
        Ok(Some(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(repo: Option<&str>, branch: Option<&str>, git_ref: Option<&str>) -> RepoArgs {
        RepoArgs {
            repo: repo.map(Into::into),
            branch: branch.map(Into::into),
            git_ref: git_ref.map(Into::into),
        }
    }

    #[test]
    fn the_repository_flags_make_a_checked_source() {
        let url = Some("https://git.example/app.git");
        let cases = [
            (args(None, None, None), Ok(None)),
            (args(url, None, None), Ok(Some(RepoBase::Default))),
            (
                args(url, Some("dev"), None),
                Ok(Some(RepoBase::Branch("dev".into()))),
            ),
            (
                args(url, None, Some("v1")),
                Ok(Some(RepoBase::Ref("v1".into()))),
            ),
            (args(url, Some("-x"), None), Err(ErrorCode::InvalidArgument)),
            (
                args(Some("ftp://h/x"), None, None),
                Err(ErrorCode::InvalidArgument),
            ),
            (
                args(Some("https://u:pw@h/x.git"), None, None),
                Err(ErrorCode::InvalidArgument),
            ),
        ];
        for (given, expected) in cases {
            let got = given
                .source()
                .map(|s| s.map(|s| s.base))
                .map_err(|e| e.error.code);
            assert_eq!(got, expected, "{given:?}");
        }
    }
}
