//! `nexus-coordinator --check-config`: the configuration checked as the daemon reads it (the same
//! [`Config::from_args`]), then the files it names: the TLS files load and are this node's, the
//! directories exist or can be made. Each problem is printed with where it is in the file
//! (`FILE:LINE:COLUMN:` when the key is there); the exit code is 1 if there is any.

use std::process::ExitCode;

use nexus_protocol::Identity;
use nexus_protocol::settings::{place, report_check, unmakeable};
use nexus_protocol::transport::Credentials;

use super::{Args, Config, ConfigError};

/// Checks `args` (and the file they name), prints what is wrong or that all is well, and
/// answers the exit code.
pub fn run(args: Args) -> ExitCode {
    let named = args.config.as_ref().map_or_else(
        || "the flags".to_string(),
        |path| path.display().to_string(),
    );
    report_check(&named, "coordinator", &problems(args))
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
    let config = match Config::from_args(args) {
        Ok(config) => config,
        // The parser's own message has the line and column.
        Err(error @ ConfigError::ParseFile { .. }) => return vec![error.to_string()],
        Err(error) => return vec![place(&error.to_string(), file)],
    };
    let mut problems = Vec::new();
    let identity = Identity::Coordinator(config.node_id);
    if let Err(error) = Credentials::from_pki_dir(&config.tls_dir, &identity) {
        problems.push(place(&format!("--tls-dir: {error}"), file));
    }
    if let Some(path) = &config.credentials_key_file
        && let Err(error) = nexus_protocol::seal::read_key_file(path)
    {
        problems.push(place(&format!("--credentials-key-file: {error}"), file));
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
