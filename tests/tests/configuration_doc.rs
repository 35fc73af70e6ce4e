//! docs/configuration.md in step with the code: for the coordinator, the agent and the CLI, the
//! page's table has a row for every key the program's file accepts and no other, each row's flag
//! is one of the program's flags (and every flag that is a setting has its row), and a row says
//! `hot` exactly when the daemon's reload applies the key.
//!
//! The keys come from the programs themselves: a file with an unknown key is refused with the
//! list of the keys it accepts (serde's `expected one of ...`), so a key added to a config
//! struct shows up here without anyone listing it twice.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::CommandFactory;

/// One row of a table: key, flag, environment, default, reload, meaning.
#[derive(Debug)]
struct Row {
    key: String,
    flag: String,
    environment: String,
    reload: String,
}

fn page() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of the table under the `## {section}` heading.
fn rows(section: &str) -> Vec<Row> {
    let page = page();
    let start = page
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("no section {section}"));
    let body = &page[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |end| end + 3)];
    body.lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect();
            assert_eq!(cells.len(), 6, "a row of six cells: {line}");
            Row {
                key: cells[0].clone(),
                flag: cells[1].clone(),
                environment: cells[2].clone(),
                reload: cells[4].clone(),
            }
        })
        .collect()
}

/// The keys a refusal of `zzz_not_a_key` lists as accepted.
fn accepted_keys(refusal: &str) -> BTreeSet<String> {
    let list = refusal
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of keys in: {refusal}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// A config file with only an unknown key.
fn unknown_key_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "zzz_not_a_key = 1\n").unwrap();
    let path = file.to_str().unwrap().to_string();
    (dir, path)
}

/// The long flags of `command` that are settings (not `--config`, `--check-config`, help or
/// version).
fn setting_flags(command: &clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !["config", "check-config", "help", "version"].contains(long))
        .map(|long| format!("--{long}"))
        .collect()
}

/// The page's table for a daemon agrees with its keys, flags and hot keys.
fn check_daemon(section: &str, keys: BTreeSet<String>, flags: BTreeSet<String>, hot: &[&str]) {
    let rows = rows(section);
    let documented: BTreeSet<String> = rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(documented.len(), rows.len(), "{section}: a key twice");
    assert_eq!(
        documented, keys,
        "{section}: the page's keys (left) and the file's (right)"
    );
    let documented_flags: BTreeSet<String> = rows
        .iter()
        .filter(|r| !r.flag.is_empty())
        .map(|r| r.flag.clone())
        .collect();
    assert_eq!(
        documented_flags, flags,
        "{section}: the page's flags (left) and the program's (right)"
    );
    for row in &rows {
        let is_hot = hot.contains(&row.key.as_str());
        let expected = match (is_hot, row.key.as_str()) {
            (true, _) => "hot",
            (false, "tls_dir") => "restart (files: hot)",
            (false, _) => "restart",
        };
        assert_eq!(row.reload, expected, "{section}: {}", row.key);
        let environment = match row.key.as_str() {
            "log_filter" => "NEXUS_LOG",
            "join_token_file" => "NEXUS_JOIN_TOKEN",
            _ => "",
        };
        assert_eq!(row.environment, environment, "{section}: {}", row.key);
    }
}

#[test]
fn the_coordinators_settings_are_on_the_page() {
    use nexus_coordinator::config::{Args, Config};
    let (_dir, path) = unknown_key_file();
    let args = Args {
        config: Some(path.into()),
        ..Args::default()
    };
    let refusal = Config::from_args(args).unwrap_err().to_string();
    check_daemon(
        "Coordinator",
        accepted_keys(&refusal),
        setting_flags(&Args::command()),
        nexus_coordinator::reload::HOT,
    );
}

#[test]
fn the_agents_settings_are_on_the_page() {
    use nexus_agent::config::{Args, Config};
    let (_dir, path) = unknown_key_file();
    let args = Args {
        config: Some(path.into()),
        ..Args::default()
    };
    let refusal = format!("{:#}", Config::from_args(args).unwrap_err());
    check_daemon(
        "Agent",
        accepted_keys(&refusal),
        setting_flags(&Args::command()),
        nexus_agent::reload::HOT,
    );
}

#[test]
fn the_clis_settings_are_on_the_page() {
    use nexus_cli::settings::FileSettings;
    use nexus_cli::settings::effective::SETTINGS;
    let refusal = toml::from_str::<FileSettings>("zzz_not_a_key = 1\n")
        .unwrap_err()
        .to_string();
    let rows = rows("CLI");
    let documented: BTreeSet<String> = rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(documented, accepted_keys(&refusal));
    for row in &rows {
        let (_, flag, environment) = SETTINGS
            .iter()
            .find(|(key, _, _)| *key == row.key)
            .unwrap_or_else(|| panic!("{} is not among the CLI's settings", row.key));
        assert_eq!(row.flag, *flag, "{}", row.key);
        assert_eq!(row.environment, *environment, "{}", row.key);
        assert_eq!(row.reload, "each command", "{}", row.key);
    }
}
