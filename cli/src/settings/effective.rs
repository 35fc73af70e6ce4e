//! Pure: the CLI's effective settings with where each comes from (`nexus config show
//! --origin`), and the checks of a CLI config file (`nexus config validate`, `nexus config
//! edit`). Nothing here reads the disk: callers pass the text, and say which files exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nexus_protocol::settings::at_key;

use super::{FileSettings, parse_coordinator};
use crate::args::{ConnectionArgs, OutputFormat};

/// Where a setting's value comes from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Flag,
    Environment,
    File,
    Default,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::Environment => "environment",
            Origin::File => "file",
            Origin::Default => "default",
        }
    }
}

/// One effective setting: its config file key, its value as shown, and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub key: &'static str,
    pub value: String,
    pub origin: Origin,
}

/// Each setting's flag and environment variable, by its config file key (`config` is the file's
/// own path, which has no key).
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("config", "--config", "NEXUS_CONFIG"),
    ("coordinators", "--coordinator", "NEXUS_COORDINATORS"),
    ("ca", "--ca", "NEXUS_CA"),
    ("cert", "--cert", "NEXUS_CERT"),
    ("key", "--key", "NEXUS_KEY"),
    ("output", "--output", "NEXUS_OUTPUT"),
];

/// The effective settings: `given` says which keys came from a flag or the environment (as
/// clap saw them), `args` and `output` hold those values, `file` the file's at `path`. Paths
/// are shown (a key's path is not a secret; its contents never are read here).
pub fn effective(
    args: &ConnectionArgs,
    output: Option<OutputFormat>,
    given: &BTreeMap<String, Origin>,
    file: &FileSettings,
    path: Option<&Path>,
) -> Vec<Effective> {
    let path_text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let output_text = |o: Option<OutputFormat>| {
        o.map(|o| match o {
            OutputFormat::Table => "table".to_string(),
            OutputFormat::Json => "json".to_string(),
        })
    };
    let list = |l: &[String]| (!l.is_empty()).then(|| l.join(","));
    let pick =
        |key: &'static str, from_args: Option<String>, from_file: Option<String>, default: &str| {
            match (given.get(key), from_args, from_file) {
                (Some(origin), Some(value), _) => Effective {
                    key,
                    value,
                    origin: *origin,
                },
                (_, _, Some(value)) => Effective {
                    key,
                    value,
                    origin: Origin::File,
                },
                _ => Effective {
                    key,
                    value: default.to_string(),
                    origin: Origin::Default,
                },
            }
        };
    let config = match (given.get("config"), path) {
        (Some(origin), Some(path)) => Effective {
            key: "config",
            value: path.display().to_string(),
            origin: *origin,
        },
        (_, path) => Effective {
            key: "config",
            value: path.map_or_else(|| "(none)".to_string(), |p| p.display().to_string()),
            origin: Origin::Default,
        },
    };
    vec![
        config,
        pick(
            "coordinators",
            list(&super::given_coordinators(args)),
            list(&file.coordinators),
            "(none)",
        ),
        pick("ca", path_text(&args.ca), path_text(&file.ca), "(none)"),
        pick(
            "cert",
            path_text(&args.cert),
            path_text(&file.cert),
            "(none)",
        ),
        pick("key", path_text(&args.key), path_text(&file.key), "(none)"),
        pick(
            "output",
            output_text(output),
            output_text(file.output),
            "table",
        ),
    ]
}

/// What is wrong with the CLI config file at `path` holding `text`: syntax and unknown keys
/// (with line and column), addresses that are not HOST:PORT, and files that `exists` says are
/// missing (relative paths are taken from `base`). Empty: valid.
pub fn check_file(
    path: &str,
    text: &str,
    base: &Path,
    exists: impl Fn(&Path) -> bool,
) -> (Option<FileSettings>, Vec<String>) {
    let file: FileSettings = match toml::from_str(text) {
        Ok(file) => file,
        Err(error) => return (None, vec![parse_error(path, text, &error)]),
    };
    let mut problems = Vec::new();
    for address in &file.coordinators {
        // An empty flag or variable names none; an empty entry in the file is a mistake.
        let problem = match address.as_str() {
            "" => Some("\"\" is not HOST:PORT".to_string()),
            address => parse_coordinator(address).err(),
        };
        if let Some(problem) = problem {
            problems.push(at_key(path, text, "coordinators", &problem));
        }
    }
    for (key, file_path) in [("ca", &file.ca), ("cert", &file.cert), ("key", &file.key)] {
        if let Some(file_path) = file_path {
            let full = base.join(file_path);
            if !exists(&full) {
                problems.push(at_key(
                    path,
                    text,
                    key,
                    &format!("{key}: {} does not exist", file_path.display()),
                ));
            }
        }
    }
    (Some(file), problems)
}

/// A TOML error as `FILE:LINE:COLUMN: message`, from its span.
pub fn parse_error(path: &str, text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_string();
    match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{path}:{line}:{column}: {message}")
        }
        None => format!("{path}: {message}"),
    }
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |at| {
        before[at + 1..].chars().count()
    }) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(pairs: &[(&str, Origin)]) -> BTreeMap<String, Origin> {
        pairs.iter().map(|(k, o)| (k.to_string(), *o)).collect()
    }

    fn shown(rows: &[Effective]) -> Vec<String> {
        rows.iter()
            .map(|r| format!("{} = {} ({})", r.key, r.value, r.origin.as_str()))
            .collect()
    }

    #[test]
    fn each_setting_comes_from_the_strongest_source() {
        let args = ConnectionArgs {
            coordinators: vec!["a:1".into(), "b:2".into()],
            ca: Some("/flag/ca.pem".into()),
            cert: None,
            key: Some("/env/k.key".into()),
            config: Some("/etc/nexus.toml".into()),
        };
        let file = FileSettings {
            coordinators: vec!["file:1".into()],
            ca: Some("/file/ca.pem".into()),
            cert: Some("/file/c.pem".into()),
            key: None,
            output: Some(OutputFormat::Json),
        };
        let rows = effective(
            &args,
            None,
            &given(&[
                ("config", Origin::Environment),
                ("coordinators", Origin::Flag),
                ("ca", Origin::Flag),
                ("key", Origin::Environment),
            ]),
            &file,
            Some(Path::new("/etc/nexus.toml")),
        );
        assert_eq!(
            shown(&rows),
            [
                "config = /etc/nexus.toml (environment)",
                "coordinators = a:1,b:2 (flag)",
                "ca = /flag/ca.pem (flag)",
                "cert = /file/c.pem (file)",
                "key = /env/k.key (environment)",
                "output = json (file)",
            ]
        );
        // Nothing anywhere: defaults.
        let rows = effective(
            &ConnectionArgs::default(),
            None,
            &BTreeMap::new(),
            &FileSettings::default(),
            None,
        );
        assert_eq!(
            shown(&rows),
            [
                "config = (none) (default)",
                "coordinators = (none) (default)",
                "ca = (none) (default)",
                "cert = (none) (default)",
                "key = (none) (default)",
                "output = table (default)",
            ]
        );
    }

    #[test]
    fn a_file_is_checked_for_syntax_keys_addresses_and_files() {
        let exists = |p: &Path| p.ends_with("ca.pem") || p.ends_with("me.pem");
        let check = |text: &str| check_file("c.toml", text, Path::new("/home/u"), exists).1;
        // Valid, with a relative path taken from the file's directory.
        assert!(
            check("coordinators = [\"c1:7400\", \"10.0.0.2:7400\"]\nca = \"ca.pem\"\ncert = \"/p/me.pem\"\noutput = \"json\"\n")
                .is_empty()
        );
        // Syntax, with line and column.
        let problems = check("coordinators = [\"c1:7400\"\nca = \"x\"\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("c.toml:2:"), "{problems:?}");
        // An unknown key is refused, where it is.
        let problems = check("ca = \"ca.pem\"\ncoordinator = [\"c1:7400\"]\n");
        assert!(
            problems[0].starts_with("c.toml:2:1: unknown field `coordinator`"),
            "{problems:?}"
        );
        // A bad value's type.
        let problems = check("output = \"yaml\"\n");
        assert!(problems[0].starts_with("c.toml:1:10:"), "{problems:?}");
        // Meaning: an address without a port, a missing file.
        assert_eq!(
            check("coordinators = [\"c1\"]\nkey = \"/nowhere/k.key\"\n"),
            [
                "c.toml:1:1: \"c1\" is not HOST:PORT (an IPv6 address in brackets), e.g. 127.0.0.1:7400",
                "c.toml:2:1: key: /nowhere/k.key does not exist"
            ]
        );
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab\ncd", 99), (2, 3));
    }
}
