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
    let config = match Config::checked(args) {
        Ok(config) => config,
        Err(found) => {
            return found
                .iter()
                .map(|error| match error {
                    // The parser's own message has the line and column.
                    ConfigError::ParseFile { .. } => error.to_string(),
                    _ => place(&error.to_string(), file),
                })
                .collect();
        }
    };
    let mut problems = Vec::new();
    let identity = Identity::Coordinator(config.node_id);
    if let Err(error) = Credentials::from_pki_dir(&config.tls_dir, &identity) {
        problems.push(place(&format!("--tls-dir: {error}"), file));
    }
    // The CA key is optional (without it the node does not sign), but one that is there must load.
    let pki = nexus_protocol::pki::PkiDir::new(&config.tls_dir);
    if pki.ca_key().exists()
        && let Err(error) = pki.load_ca()
    {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::clock;
    use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, PkiDir, SubjectName, Validity};
    use nexus_protocol::{Identity, NodeId};

    use super::*;

    #[test]
    fn a_ca_key_that_is_there_must_load() {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir::new(dir.path().join("pki"));
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
        let validity = Validity::starting(clock::now(), Duration::from_secs(3600));
        let identity = Identity::Coordinator(NodeId::new(1).unwrap());
        pki.issue(
            &identity,
            &[SubjectName::parse("127.0.0.1")],
            validity,
            false,
        )
        .unwrap();
        let args = || Args {
            node_id: Some(NodeId::new(1).unwrap()),
            listen: Some("127.0.0.1:7400".parse().unwrap()),
            data_dir: Some(dir.path().join("data")),
            tls_dir: Some(pki.path().to_path_buf()),
            ..Args::default()
        };
        assert_eq!(problems(args()), Vec::<String>::new());
        std::fs::write(pki.ca_key(), "not a key").unwrap();
        let found = problems(args());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("ca.key"), "{found:?}");
        // Without it, the node starts (and does not sign).
        std::fs::remove_file(pki.ca_key()).unwrap();
        assert_eq!(problems(args()), Vec::<String>::new());
    }

    #[test]
    fn every_problem_of_a_file_is_named_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(
            &path,
            "node_id = 1\nlisten = \"127.0.0.1:7400\"\ntick_ms = 0\nhost_ttl = 0.01\n\
             log_max_bytes = 5\ncert_lifetime = \"1s\"\n",
        )
        .unwrap();
        let found = problems(Args {
            config: Some(path.clone()),
            ..Args::default()
        });
        let shown = path.display().to_string();
        let expected = [
            format!("{shown}:3:1: --tick-ms"),
            format!("{shown}:4:1: --host-ttl"),
            format!("{shown}:5:1: --log-max-bytes"),
            "--data-dir is required".to_string(),
            format!("{shown}:6:1: --cert-lifetime"),
            "--tls-dir is required".to_string(),
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (problem, start) in found.iter().zip(&expected) {
            assert!(problem.starts_with(start), "{problem:?} is not {start:?}…");
        }
        // A file that does not parse is the one problem: its settings are unknown.
        std::fs::write(&path, "node_id = \n").unwrap();
        let found = problems(Args {
            config: Some(path),
            ..Args::default()
        });
        assert_eq!(found.len(), 1, "{found:#?}");
    }
}
