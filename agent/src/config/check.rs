//! `nexus-agent --check-config`: the configuration checked as the daemon reads it (the same
//! [`Config::from_args`]), then the files it names: the TLS files load and are this host's (or a
//! join token is given to enrol with), the directories exist or can be made. Each problem is printed with where it is in the file
//! (`FILE:LINE:COLUMN:` when the key is there); the exit code is 1 if there is any.

use std::process::ExitCode;

use nexus_protocol::Identity;
use nexus_protocol::settings::{place, report_check, unmakeable};

use super::{Args, Config};
use crate::standing;

/// Checks `args` (and the file they name), prints what is wrong or that all is well, and
/// answers the exit code.
pub fn run(args: Args) -> ExitCode {
    let named = args.config.as_ref().map_or_else(
        || "the flags".to_string(),
        |path| path.display().to_string(),
    );
    report_check(&named, "agent", &problems(args))
}

/// Everything wrong with `args` and the file they name, each placed in the file when it can be.
pub fn problems(args: Args) -> Vec<String> {
    let text = args
        .config
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok());
    let path = args
        .config
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let file = text.as_deref().map(|text| (path.as_str(), text));
    let config = match Config::checked(args) {
        Ok(config) => config,
        // Each placed in the file; a file that does not parse is the one problem, and the
        // parser's own message has the line and column.
        Err(found) => {
            return found
                .iter()
                .map(|error| place(&format!("{error:#}"), file))
                .collect();
        }
    };
    let mut problems = Vec::new();
    let identity = Identity::Agent(config.host_id.clone());
    let now = i64::try_from(nexus_protocol::clock::now().0 / 1000).unwrap_or(i64::MAX);
    let standing = standing::inspect(&config.tls_dir, &identity, now);
    // Without a usable certificate the agent starts only if it can enrol: with a join token.
    if standing::decide(&standing, config.join_token.is_some()) == standing::Decision::Refuse {
        problems.push(place(
            &format!(
                "--tls-dir: {}",
                standing::explain(&standing, &identity, false)
            ),
            file,
        ));
    }
    for (flag, dir) in [("data-dir", &config.data_dir), ("log-dir", &config.log_dir)] {
        if let Some(problem) = unmakeable(dir) {
            problems.push(place(
                &format!("--{flag} {}: {problem}", dir.display()),
                file,
            ));
        }
    }
    problems
}
