//! The monitoring files an operator deploys, read as data: where they are, which metrics their
//! PromQL names, and small readers for what the suites check in them (the alert rules' labels
//! and annotations, the alerts a promtool test file expects to fire, a Markdown file's heading
//! anchors). Pure functions over text, apart from the paths.
//!
//! The YAML readers understand the subset the two files under `deploy/prometheus/` are written
//! in (block mappings and lists, one key per line, quoted or plain scalars, `>-` and `|` blocks,
//! whole-line comments), not YAML at large: the workspace has no YAML parser, and promtool
//! itself checks that the files are valid (the suite compares its rule count with ours).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The alert rules, relative to the repository's root.
pub const ALERT_RULES: &str = "deploy/prometheus/nexus-alerts.yml";
/// Their promtool unit tests.
pub const ALERT_TESTS: &str = "deploy/prometheus/nexus-alerts.test.yml";
/// The example Prometheus configuration for a fleet.
pub const SCRAPE_CONFIG: &str = "deploy/prometheus/prometheus.yml";
/// The Grafana dashboard.
pub const DASHBOARD: &str = "deploy/grafana/nexus-fleet.json";
/// One section per alert; each alert's `runbook_url` points at one.
pub const RUNBOOKS: &str = "docs/runbooks.md";
/// Where every `runbook_url` points, before the `#anchor`.
pub const RUNBOOK_URL: &str = "https://github.com/nexus-fleet/nexus/blob/main/docs/runbooks.md";

/// The repository's root: the parent of this crate's directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository's root")
        .to_path_buf()
}

/// The files whose PromQL names metrics: the alert rules and the dashboard. Every name that
/// [`referenced_metrics`] finds in them must be exported by a live fleet.
pub fn alert_files() -> [PathBuf; 2] {
    let root = repo_root();
    [root.join(ALERT_RULES), root.join(DASHBOARD)]
}

/// The metric names a text references, as the names of their metric families.
///
/// A name is a maximal run of `[A-Za-z0-9_:]` that starts with `nexus_` or `process_` (a JSON or
/// YAML escape such as `\n` before it is a separator). Label names are not told apart from metric
/// names; none of ours starts with those prefixes.
///
/// A histogram is queried through its series, `X_bucket`, `X_sum` and `X_count`, while the
/// exposition's `# TYPE` line names the family `X`. So:
/// - `X_bucket` becomes `X`: only a histogram's series end so (the exposition formats reserve
///   the suffix);
/// - `X_sum` and `X_count` become `X` when they are a histogram's: when the same text names
///   `X_bucket`, or `X` ends in a base unit (`_seconds`, `_bytes`). By the naming rules a counter
///   ends in `_total` and a gauge in its unit, so `..._seconds_count` can be nothing else. Any
///   other name ending in `_sum` or `_count` is kept as it is.
///
/// Applied to a daemon's `/metrics` text, it returns every family named on a `# TYPE` line and
/// every sample's name (with counters' `_total`), histograms as their base name; so a file's
/// references are exported exactly when they are a subset of that.
pub fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let text = text.replace("\\n", " ").replace("\\t", " ");
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let names: BTreeSet<&str> = text
        .split(|c: char| !is_name_char(c))
        .filter(|token| token.starts_with("nexus_") || token.starts_with("process_"))
        .collect();
    names
        .iter()
        .map(|name| family_name(name, &names).to_string())
        .collect()
}

/// A name's family: see [`referenced_metrics`].
fn family_name<'a>(name: &'a str, names: &BTreeSet<&str>) -> &'a str {
    if let Some(base) = name.strip_suffix("_bucket") {
        return base;
    }
    for suffix in ["_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            let histogram = names.contains(format!("{base}_bucket").as_str())
                || base.ends_with("_seconds")
                || base.ends_with("_bytes");
            if histogram {
                return base;
            }
        }
    }
    name
}

/// An alerting rule as the rules file states it (`expr` and `for` left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Every `- alert: NAME` of a Prometheus rules file, in order, with its `labels` and
/// `annotations` (values unquoted; a `>-` or `|` block joined into one line).
pub fn alert_rules(text: &str) -> Vec<AlertRule> {
    #[derive(Clone, Copy)]
    enum Section {
        Labels,
        Annotations,
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut rules: Vec<AlertRule> = vec![];
    // The mapping being read, and the indent of its key (`labels:`).
    let mut section: Option<(Section, usize)> = None;
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        at += 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = indent_of(line);
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push(AlertRule {
                name: unquote(name.trim()),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            });
            section = None;
            continue;
        }
        if section.is_some_and(|(_, key_indent)| indent <= key_indent) {
            section = None;
        }
        match (trimmed, section) {
            ("labels:", _) => section = Some((Section::Labels, indent)),
            ("annotations:", _) => section = Some((Section::Annotations, indent)),
            (_, Some((which, key_indent))) if indent == key_indent + 2 => {
                let Some((key, value)) = trimmed.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                let value = if matches!(value, ">" | ">-" | "|" | "|-") {
                    let mut block = vec![];
                    while at < lines.len()
                        && (lines[at].trim().is_empty() || indent_of(lines[at]) > indent)
                    {
                        block.push(lines[at].trim());
                        at += 1;
                    }
                    block
                        .into_iter()
                        .filter(|part| !part.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    unquote(value)
                };
                if let Some(rule) = rules.last_mut() {
                    let map = match which {
                        Section::Labels => &mut rule.labels,
                        Section::Annotations => &mut rule.annotations,
                    };
                    map.insert(key.trim().to_string(), value);
                }
            }
            _ => {}
        }
    }
    rules
}

/// The alerts that a promtool test file expects to fire in at least one case: an
/// `alert_rule_test` item whose `alertname` is the alert and whose `exp_alerts` lists an alert
/// (not `[]`, not absent).
pub fn alerts_expected_to_fire(text: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = text.lines().collect();
    let blank = |line: &str| line.trim().is_empty() || line.trim_start().starts_with('#');
    let mut firing = BTreeSet::new();
    for (at, line) in lines.iter().enumerate() {
        let indent = indent_of(line);
        let trimmed = line.trim_start();
        // The indent of the case's keys, and what this line says.
        let (key_indent, rest) = match trimmed.strip_prefix("- ") {
            Some(rest) => (indent + 2, rest),
            None => (indent, trimmed),
        };
        let Some(name) = rest.strip_prefix("alertname:") else {
            continue;
        };
        // The case: from its `- ` line to the first line less indented than its keys.
        let start = key_indent
            .checked_sub(2)
            .and_then(|item_indent| {
                (0..=at).rev().find(|&j| {
                    indent_of(lines[j]) == item_indent && lines[j].trim_start().starts_with("- ")
                })
            })
            .unwrap_or(at);
        let end = (at + 1..lines.len())
            .find(|&j| !blank(lines[j]) && indent_of(lines[j]) < key_indent)
            .unwrap_or(lines.len());
        let case = &lines[start..end];
        let expects_one = case.iter().enumerate().any(|(k, line)| {
            case_key(line, key_indent) == Some("exp_alerts:")
                && case[k + 1..].iter().any(|inner| {
                    indent_of(inner) > key_indent && inner.trim_start().starts_with("- ")
                })
        });
        if expects_one {
            firing.insert(unquote(name.trim()));
        }
    }
    firing
}

/// The anchors GitHub gives a Markdown file's headings (outside code blocks): lowercased, with
/// everything but letters, digits, `-` and `_` dropped and spaces made `-`; a repeated heading
/// gets `-1`, `-2`, ...
pub fn markdown_anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if in_code || !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let anchor: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let count = seen.entry(anchor.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            anchor
        } else {
            format!("{anchor}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// A line's key, when it is a key of a list item whose keys are at `key_indent`: on a line of
/// its own, or on the item's `- ` line.
fn case_key(line: &str, key_indent: usize) -> Option<&str> {
    let trimmed = line.trim();
    match indent_of(line) {
        indent if indent == key_indent => Some(trimmed),
        indent if indent + 2 == key_indent => trimmed.strip_prefix("- "),
        _ => None,
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A YAML scalar without its quotes: `'it''s'` is `it's`, `"a \"b\""` is `a "b"`.
fn unquote(value: &str) -> String {
    if let Some(inner) = value
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
    {
        return inner.replace("''", "'");
    }
    if let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        return inner.replace("\\\"", "\"").replace("\\\\", "\\");
    }
    value.to_string()
}

/// Runs promtool with `args` from the repository's root, feeding it `stdin` if given: what it
/// printed, as `Ok` when it succeeded. Fails the test when promtool is not installed (Debian's
/// `prometheus` package brings it; `deploy/dev/prepare.sh` installs it): a skip would hide a
/// machine that cannot check the rules.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: run deploy/dev/prepare.sh as root (it installs Debian's \
             prometheus package, which brings promtool)"
        ),
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .expect("promtool reads its input");
    }
    let output = child.wait_with_output().expect("promtool runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(printed)
    } else {
        Err(printed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        referenced_metrics(text).into_iter().collect()
    }

    #[test]
    fn referenced_metrics_are_family_names() {
        let cases: [(&str, &str, &[&str]); 10] = [
            (
                "a plain gauge",
                "nexus_raft_has_leader == 0",
                &["nexus_raft_has_leader"],
            ),
            (
                "a counter keeps its _total",
                "rate(nexus_heartbeats_total[5m])",
                &["nexus_heartbeats_total"],
            ),
            (
                "a histogram's buckets are its family",
                r#"histogram_quantile(0.99, rate(nexus_storage_sync_duration_seconds_bucket{le="1"}[5m]))"#,
                &["nexus_storage_sync_duration_seconds"],
            ),
            (
                "its _sum and _count too, by their unit",
                "rate(nexus_api_request_duration_seconds_sum[5m]) / rate(nexus_api_request_duration_seconds_count[5m])",
                &["nexus_api_request_duration_seconds"],
            ),
            (
                "or because the text names its buckets",
                "nexus_widgets_count + nexus_widgets_bucket",
                &["nexus_widgets"],
            ),
            (
                "a _count that is no histogram's stays",
                "nexus_widgets_count > 3",
                &["nexus_widgets_count"],
            ),
            (
                "process metrics, labels and the up metric",
                r#"process_open_fds{job="nexus-agent"} and up{job="nexus-coordinator"}"#,
                &["process_open_fds"],
            ),
            (
                "names inside JSON strings, after an escape",
                r#"{"expr": "sum(nexus_hosts{status=\"down\"})\nnexus_workspaces"}"#,
                &["nexus_hosts", "nexus_workspaces"],
            ),
            (
                "not a longer word that merely contains the prefix",
                "my_nexus_thing + unprocess_x + nexus-alerts.yml + NexusNoLeader",
                &[],
            ),
            (
                "an exposition: families and samples",
                "# TYPE nexus_heartbeats counter\nnexus_heartbeats_total 3\n\
                 # TYPE nexus_raft_commit_duration_seconds histogram\n\
                 nexus_raft_commit_duration_seconds_bucket{le=\"0.1\"} 1\n\
                 nexus_raft_commit_duration_seconds_sum 0.02\n\
                 nexus_raft_commit_duration_seconds_count 1\n",
                &[
                    "nexus_heartbeats",
                    "nexus_heartbeats_total",
                    "nexus_raft_commit_duration_seconds",
                ],
            ),
        ];
        for (what, text, expected) in cases {
            assert_eq!(names(text), expected.to_vec(), "{what}");
        }
    }

    const RULES: &str = r#"
groups:
  - name: g
    rules:
      # A comment.
      - alert: First
        expr: |
          up == 0
        for: 1m
        labels:
          severity: P2
        annotations:
          summary: '{{ $value }} of them, it''s bad'
          description: >-
            Two lines
            joined.

          runbook_url: "https://example.com/r.md#first"
      - alert: Second
        expr: x > 1
        labels:
          severity: P4
          team: "ops"
        annotations:
          summary: plain text
"#;

    #[test]
    fn alert_rules_read_labels_and_annotations() {
        let rules = alert_rules(RULES);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].name, "First");
        assert_eq!(rules[0].labels["severity"], "P2");
        assert_eq!(
            rules[0].annotations["summary"],
            "{{ $value }} of them, it's bad"
        );
        assert_eq!(rules[0].annotations["description"], "Two lines joined.");
        assert_eq!(
            rules[0].annotations["runbook_url"],
            "https://example.com/r.md#first"
        );
        assert_eq!(rules[1].name, "Second");
        assert_eq!(rules[1].labels.len(), 2);
        assert_eq!(rules[1].labels["team"], "ops");
        assert_eq!(rules[1].annotations.len(), 1);
    }

    #[test]
    fn alerts_expected_to_fire_need_an_expected_alert() {
        let text = r#"
tests:
  - interval: 1m
    alert_rule_test:
      - eval_time: 1m
        alertname: Quiet
        exp_alerts: []
      - eval_time: 2m
        alertname: Loud
        exp_alerts:
          - exp_labels:
              severity: P1
      - alertname: Absent
        eval_time: 3m
      - exp_alerts:
          - exp_labels: {}
        eval_time: 4m
        alertname: KeysInAnotherOrder
      - eval_time: 5m
        alertname: QuietAgain
        exp_alerts: []
  - interval: 1m
    alert_rule_test:
      - eval_time: 1m
        alertname: Quiet
        exp_alerts: []
"#;
        assert_eq!(
            alerts_expected_to_fire(text)
                .into_iter()
                .collect::<Vec<_>>(),
            ["KeysInAnotherOrder", "Loud"]
        );
    }

    #[test]
    fn markdown_anchors_are_githubs() {
        let text = "# Runbooks\n## Set up a cluster's PKI\n```sh\n# not a heading\n```\n\
                    ### NexusNoLeader\n## Sync\n## Sync\n#not-a-heading\n";
        assert_eq!(
            markdown_anchors(text).into_iter().collect::<Vec<_>>(),
            [
                "nexusnoleader",
                "runbooks",
                "set-up-a-clusters-pki",
                "sync",
                "sync-1"
            ]
        );
    }
}
