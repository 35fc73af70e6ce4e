//! The CLI's config file as `nexus up` and `nexus login` write it. They never overwrite a file
//! they did not write: a file they write begins with a marker line, and only a file that begins
//! with one (or no file at all) is rewritten. A user's own file is left alone, and the command
//! says how to use the settings it wrote beside it instead.

use std::fs;
use std::path::{Path, PathBuf};

use nexus_protocol::error::ErrorCode;

use super::{FileSettings, read_file};
use crate::error::CliError;

/// The first line of a config file that `nexus up` or `nexus login` wrote and may rewrite.
pub const MARKER: &str = "# Written by `nexus up` or `nexus login`; they rewrite this file. Remove this line to keep your edits.";

/// The markers earlier versions wrote: their files are ours too.
const EARLIER_MARKERS: &[&str] =
    &["# Written by `nexus up`; it rewrites this file. Remove this line to keep your edits."];

/// Whether a config file's text is one a nexus command wrote.
pub fn is_ours(text: &str) -> bool {
    std::iter::once(MARKER)
        .chain(EARLIER_MARKERS.iter().copied())
        .any(|marker| text.starts_with(marker))
}

/// The file's text, marker first.
pub fn text_of(settings: &FileSettings) -> Result<String, CliError> {
    let body = toml::to_string(settings)
        .map_err(|e| CliError::local(ErrorCode::Internal, e.to_string()))?;
    Ok(format!("{MARKER}\n{body}"))
}

/// Where the settings went: the file the CLI will read, and a hint when the user's own config
/// file was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub file: PathBuf,
    pub hint: Option<String>,
}

/// Writes `settings` to `own` (a file in the command's own state directory, always rewritten)
/// and to `config` (the file the CLI reads) when that is absent or ours. `what` names what the
/// settings are for, in the hint: "fleet", "session".
pub fn write_settings(
    own: &Path,
    config: Option<&Path>,
    settings: &FileSettings,
    what: &str,
) -> Result<Written, CliError> {
    let text = text_of(settings)?;
    if let Some(parent) = own.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error("create", parent, &e))?;
    }
    fs::write(own, &text).map_err(|e| io_error("write", own, &e))?;
    let use_own = format!("to use this {what}: export NEXUS_CONFIG={}", own.display());
    let Some(config) = config else {
        return Ok(Written {
            file: own.to_path_buf(),
            hint: Some(use_own),
        });
    };
    if config == own {
        return Ok(Written {
            file: own.to_path_buf(),
            hint: None,
        });
    }
    let ours = match fs::read_to_string(config) {
        Ok(existing) => is_ours(&existing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io_error("read", config, &e)),
    };
    if !ours {
        return Ok(Written {
            file: own.to_path_buf(),
            hint: Some(format!("kept your own {}; {use_own}", config.display())),
        });
    }
    if let Some(parent) = config.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error("create", parent, &e))?;
    }
    fs::write(config, &text).map_err(|e| io_error("write", config, &e))?;
    // Read it back as the CLI will, so a broken file fails here and not on the next command.
    read_file(config)?;
    Ok(Written {
        file: config.to_path_buf(),
        hint: None,
    })
}

fn io_error(what: &str, path: &Path, error: &std::io::Error) -> CliError {
    CliError::local(
        ErrorCode::Internal,
        format!("cannot {what} {}: {error}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cert: &str) -> FileSettings {
        FileSettings {
            coordinators: vec!["127.0.0.1:7400".into()],
            ca: Some("/s/ca.pem".into()),
            cert: Some(cert.into()),
            key: Some("/s/user-u.key".into()),
            output: None,
        }
    }

    #[test]
    fn a_missing_or_own_config_is_written_and_a_foreign_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("state/login/cli.toml");
        let config = dir.path().join("config/nexus/config.toml");
        // Missing: written, marker first, readable.
        let written =
            write_settings(&own, Some(&config), &settings("/s/a.pem"), "session").unwrap();
        assert_eq!(
            written,
            Written {
                file: config.clone(),
                hint: None
            }
        );
        let text = fs::read_to_string(&config).unwrap();
        assert!(text.starts_with(MARKER));
        assert_eq!(read_file(&config).unwrap(), Some(settings("/s/a.pem")));
        assert_eq!(fs::read_to_string(&own).unwrap(), text);
        // Ours (and `nexus up`'s older marker): rewritten.
        write_settings(&own, Some(&config), &settings("/s/b.pem"), "session").unwrap();
        assert_eq!(read_file(&config).unwrap(), Some(settings("/s/b.pem")));
        fs::write(
            &config,
            format!("{}\ncoordinators = []\n", EARLIER_MARKERS[0]),
        )
        .unwrap();
        write_settings(&own, Some(&config), &settings("/s/c.pem"), "session").unwrap();
        assert_eq!(read_file(&config).unwrap(), Some(settings("/s/c.pem")));
        // The user's own: never touched; the hint says how to use ours.
        let foreign = "# mine\ncoordinators = [\"10.0.0.1:7400\"]\n";
        fs::write(&config, foreign).unwrap();
        let written =
            write_settings(&own, Some(&config), &settings("/s/d.pem"), "session").unwrap();
        assert_eq!(fs::read_to_string(&config).unwrap(), foreign);
        assert_eq!(written.file, own);
        let hint = written.hint.unwrap();
        assert!(hint.starts_with("kept your own"), "{hint}");
        assert!(hint.contains(&format!("export NEXUS_CONFIG={}", own.display())));
        assert_eq!(read_file(&own).unwrap(), Some(settings("/s/d.pem")));
        // No config path at all (no HOME): only the own file, and the hint.
        let written = write_settings(&own, None, &settings("/s/e.pem"), "fleet").unwrap();
        assert!(written.hint.unwrap().starts_with("to use this fleet"));
    }
}
