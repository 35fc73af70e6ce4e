//! Pure: a configuration as its settings (config file key → the value as shown, secrets already
//! redacted), what a reload changes, and where a key sits in a TOML file. The coordinator, the
//! agent and the CLI each say which of their keys are hot (applied while running); everything
//! else that changes waits for a restart.

use std::collections::BTreeMap;

use crate::debug::ChangedSetting;

/// Settings by their config file key, each value as shown (a TOML value's text).
pub type Shown = BTreeMap<String, String>;

/// What a new configuration changes against the one in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Hot settings whose value changed: applied together.
    pub hot: Vec<ChangedSetting>,
    /// Settings that changed but are read only at start.
    pub needs_restart: Vec<String>,
}

/// Compares `new` with `old`, key by key (a key on one side only counts as a change, to or from
/// `(unset)`), and sorts each change into hot (`hot` names it) or needs-restart.
pub fn diff(old: &Shown, new: &Shown, hot: &[&str]) -> Changes {
    let unset = "(unset)".to_string();
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes = Changes::default();
    for key in keys {
        let before = old.get(key).unwrap_or(&unset);
        let after = new.get(key).unwrap_or(&unset);
        if before == after {
            continue;
        }
        if hot.contains(&key.as_str()) {
            changes.hot.push(ChangedSetting {
                key: key.clone(),
                old: before.clone(),
                new: after.clone(),
            });
        } else {
            changes.needs_restart.push(key.clone());
        }
    }
    changes
}

/// Where `key` is first assigned at the top level of a TOML `text` (before any `[table]`
/// header), as 1-based line and column: for errors about a value that parses but makes no sense.
pub fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            return None;
        }
        let Some(rest) = trimmed.strip_prefix(key) else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with('=') {
            return Some((index + 1, line.len() - trimmed.len() + 1));
        }
    }
    None
}

/// `message` about `key` of the file `path` holding `text`, prefixed with where the key is when
/// it can be found: `FILE:LINE:COLUMN: message`.
pub fn at_key(path: &str, text: &str, key: &str, message: &str) -> String {
    match locate(text, key) {
        Some((line, column)) => format!("{path}:{line}:{column}: {message}"),
        None => format!("{path}: {message}"),
    }
}

/// The config file key of the first `--flag` a message names (`--host-ttl must be ...` →
/// `host_ttl`): the daemons' messages name flags, and a file's keys are the flags' names.
pub fn key_in_message(message: &str) -> Option<String> {
    let start = message.find("--")? + 2;
    let flag: String = message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!flag.is_empty()).then(|| flag.replace('-', "_"))
}

/// A configuration's problems, gathered as it is read so that a check names every one, not
/// only the first (`nexus config validate`, `--check-config`, a daemon's refusal to start).
#[derive(Debug)]
pub struct Problems<E> {
    found: Vec<E>,
}

impl<E> Default for Problems<E> {
    fn default() -> Problems<E> {
        Problems { found: Vec::new() }
    }
}

impl<E> Problems<E> {
    pub fn push(&mut self, problem: impl Into<E>) {
        self.found.push(problem.into());
    }

    /// `result`'s value, or `None` with its error kept.
    pub fn take<T, F: Into<E>>(&mut self, result: Result<T, F>) -> Option<T> {
        result.map_err(|problem| self.push(problem)).ok()
    }

    /// `result`'s value, or `fallback` with its error kept: for a setting whose later checks
    /// need a value to go on with.
    pub fn or<T, F: Into<E>>(&mut self, result: Result<T, F>, fallback: T) -> T {
        self.take(result).unwrap_or(fallback)
    }

    /// `value` when nothing was found, else every problem in the order found.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<E>> {
        match value {
            Some(value) if self.found.is_empty() => Ok(value),
            _ => Err(self.found),
        }
    }
}

/// A daemon's complaint about its configuration, placed in its file when the key it names is
/// there: `FILE:LINE:COLUMN: message`, else the message as it is.
pub fn place(message: &str, file: Option<(&str, &str)>) -> String {
    match (key_in_message(message), file) {
        (Some(key), Some((path, text))) if locate(text, &key).is_some() => {
            at_key(path, text, &key, message)
        }
        _ => message.to_string(),
    }
}

/// How a daemon's `--check-config` ends: each problem on stderr, then a verdict naming `named`
/// (the file, or "the flags") and the `daemon`; the exit code says which.
pub fn report_check(named: &str, daemon: &str, problems: &[String]) -> std::process::ExitCode {
    if problems.is_empty() {
        eprintln!("{named}: a valid {daemon} configuration");
        return std::process::ExitCode::SUCCESS;
    }
    for problem in problems {
        eprintln!("{problem}");
    }
    eprintln!(
        "{named}: {} problem(s); the {daemon} would not start",
        problems.len()
    );
    std::process::ExitCode::FAILURE
}

/// Why `dir` cannot be a directory a daemon makes or uses, if it cannot: it, or the nearest of
/// its parents that exists, is not a directory.
pub fn unmakeable(dir: &std::path::Path) -> Option<String> {
    let mut at = dir;
    loop {
        if at.exists() {
            return (!at.is_dir()).then(|| format!("{} is not a directory", at.display()));
        }
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(pairs: &[(&str, &str)]) -> Shown {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn changes_are_sorted_into_hot_and_needs_restart() {
        let hot = ["log_filter", "host_ttl"];
        let check = |old: &[(&str, &str)], new: &[(&str, &str)]| {
            let changes = diff(&shown(old), &shown(new), &hot);
            let applied: Vec<String> = changes
                .hot
                .iter()
                .map(|c| format!("{}: {} -> {}", c.key, c.old, c.new))
                .collect();
            (applied, changes.needs_restart)
        };
        // Nothing changed.
        assert_eq!(
            check(&[("log_filter", "info")], &[("log_filter", "info")]),
            (vec![], vec![])
        );
        // One hot change.
        assert_eq!(
            check(&[("log_filter", "info")], &[("log_filter", "debug")]),
            (vec!["log_filter: info -> debug".to_string()], vec![])
        );
        // A cold change beside a hot one: both reported, each where it belongs.
        assert_eq!(
            check(
                &[
                    ("log_filter", "info"),
                    ("listen", "a:1"),
                    ("host_ttl", "14.0")
                ],
                &[
                    ("log_filter", "warn"),
                    ("listen", "a:2"),
                    ("host_ttl", "14.0")
                ]
            ),
            (
                vec!["log_filter: info -> warn".to_string()],
                vec!["listen".to_string()]
            )
        );
        // A key that appears or disappears is a change.
        assert_eq!(
            check(&[], &[("host_ttl", "3.0"), ("advertise", "x:1")]),
            (
                vec!["host_ttl: (unset) -> 3.0".to_string()],
                vec!["advertise".to_string()]
            )
        );
        assert_eq!(
            check(&[("advertise", "x:1")], &[]),
            (vec![], vec!["advertise".to_string()])
        );
    }

    #[test]
    fn keys_are_located_at_the_top_level_only() {
        let text = "# a comment\nnode_id = 1\n  host_ttl=3\nhost_ttl_extra = 2\n[table]\nlog_filter = \"x\"\n";
        assert_eq!(locate(text, "node_id"), Some((2, 1)));
        assert_eq!(locate(text, "host_ttl"), Some((3, 3)));
        assert_eq!(locate(text, "host_ttl_extra"), Some((4, 1)));
        assert_eq!(locate(text, "log_filter"), None, "inside a table");
        assert_eq!(locate(text, "missing"), None);
        assert_eq!(
            at_key("c.toml", text, "host_ttl", "too small"),
            "c.toml:3:3: too small"
        );
        assert_eq!(at_key("c.toml", text, "nope", "bad"), "c.toml: bad");
    }

    #[test]
    fn a_message_is_placed_at_the_key_its_flag_names() {
        assert_eq!(
            key_in_message("--host-ttl must be between 0.2 and 86400 seconds, not 0"),
            Some("host_ttl".into())
        );
        assert_eq!(key_in_message("no flag here"), None);
        assert_eq!(key_in_message("a bare -- dash"), None);
        let text = "node_id = 1\nhost_ttl = 0\n";
        assert_eq!(
            place("--host-ttl must be positive", Some(("c.toml", text))),
            "c.toml:2:1: --host-ttl must be positive"
        );
        // A flag given on the command line, not in the file: no place.
        assert_eq!(
            place("--listen is required", Some(("c.toml", text))),
            "--listen is required"
        );
        assert_eq!(place("--host-ttl bad", None), "--host-ttl bad");
    }
}
