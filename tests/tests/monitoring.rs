//! The monitoring files an operator deploys: the alert rules (checked and unit-tested by
//! promtool), their runbooks, the example scrape config, the Grafana dashboard, and the metrics
//! table of `docs/operations.md`. None of these starts a daemon; that every metric they name is
//! exported by a live fleet is the end-to-end suite's to check (`monitoring::alert_files`).
//!
//! promtool comes with Debian's `prometheus` package, which `deploy/dev/prepare.sh` installs; a
//! machine without it fails these tests rather than skipping them.

use std::collections::BTreeSet;

use nexus_tests::monitoring::{
    ALERT_RULES, ALERT_TESTS, AlertRule, DASHBOARD, RUNBOOK_URL, RUNBOOKS, SCRAPE_CONFIG,
    alert_files, alert_rules, alerts_expected_to_fire, markdown_anchors, referenced_metrics,
    repo_root,
};
use serde_json::Value;

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

fn rules() -> Vec<AlertRule> {
    let rules = alert_rules(&read(ALERT_RULES));
    assert!(!rules.is_empty(), "no alert found in {ALERT_RULES}");
    rules
}

/// Runs promtool from the repository's root and returns what it printed; fails the test if it
/// fails.
fn promtool(args: &[&str]) -> String {
    nexus_tests::monitoring::promtool(args, None)
        .unwrap_or_else(|printed| panic!("promtool {} failed:\n{printed}", args.join(" ")))
}

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    let printed = promtool(&["check", "rules", ALERT_RULES]);
    // "SUCCESS: 29 rules found": promtool's count, against what this suite's reader found, so
    // an alert the reader missed cannot escape the checks below.
    let found: usize = printed
        .split("SUCCESS: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in promtool's output:\n{printed}"));
    assert_eq!(
        found,
        rules().len(),
        "promtool found {found} rules in {ALERT_RULES}; every rule should be an alert this suite reads"
    );
}

#[test]
fn every_alert_fires_in_a_promtool_unit_test() {
    promtool(&["test", "rules", ALERT_TESTS]);
    let firing = alerts_expected_to_fire(&read(ALERT_TESTS));
    let untested: Vec<String> = rules()
        .into_iter()
        .map(|rule| rule.name)
        .filter(|name| !firing.contains(name))
        .collect();
    assert!(
        untested.is_empty(),
        "alerts without a case in {ALERT_TESTS} that expects them to fire: {untested:?}"
    );
}

#[test]
fn the_example_scrape_config_passes_promtool_check_config() {
    let printed = promtool(&["check", "config", SCRAPE_CONFIG]);
    assert!(
        printed.contains("nexus-alerts.yml"),
        "{SCRAPE_CONFIG} should load the alert rules:\n{printed}"
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_section() {
    let anchors = markdown_anchors(&read(RUNBOOKS));
    let mut problems = vec![];
    let mut names = BTreeSet::new();
    for rule in rules() {
        let name = &rule.name;
        if !names.insert(name.clone()) {
            problems.push(format!("{name}: defined twice"));
        }
        match rule.labels.get("severity").map(String::as_str) {
            Some("P1" | "P2" | "P3" | "P4") => {}
            other => problems.push(format!("{name}: severity {other:?}, not P1 to P4")),
        }
        for annotation in ["summary", "description"] {
            if rule
                .annotations
                .get(annotation)
                .is_none_or(String::is_empty)
            {
                problems.push(format!("{name}: no {annotation}"));
            }
        }
        let url = rule
            .annotations
            .get("runbook_url")
            .cloned()
            .unwrap_or_default();
        match url.split_once('#') {
            Some((page, anchor)) if page == RUNBOOK_URL => {
                if !anchors.contains(anchor) {
                    problems.push(format!("{name}: {RUNBOOKS} has no heading #{anchor}"));
                }
                if anchor != name.to_lowercase() {
                    problems.push(format!(
                        "{name}: runbook anchor #{anchor} is not the alert's"
                    ));
                }
            }
            _ => problems.push(format!(
                "{name}: runbook_url {url:?} is not {RUNBOOK_URL}#..."
            )),
        }
    }
    // And no runbook for an alert that no longer exists.
    let alert_anchors: BTreeSet<String> = names.iter().map(|name| name.to_lowercase()).collect();
    for anchor in &anchors {
        if anchor.starts_with("nexus") && !alert_anchors.contains(anchor) {
            problems.push(format!("{RUNBOOKS}: #{anchor} is no alert's runbook"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn operations_md_lists_every_alert_with_its_severity_and_runbook() {
    let operations = read("docs/operations.md");
    for rule in rules() {
        let row = format!(
            "| {} | {} |",
            rule.name,
            rule.labels.get("severity").cloned().unwrap_or_default()
        );
        let link = format!("(runbooks.md#{})", rule.name.to_lowercase());
        assert!(
            operations
                .lines()
                .any(|line| line.starts_with(&row) && line.contains(&link)),
            "docs/operations.md should list {} in its alerts table: a row starting {row} with a \
             link {link}",
            rule.name
        );
    }
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = vec![];
    walk(&dashboard["panels"], &mut out);
    out
}

#[test]
fn the_dashboard_is_json_and_every_panel_queries_prometheus() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|error| panic!("{DASHBOARD} is not JSON: {error}"));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "{DASHBOARD} should have a Prometheus `datasource` variable"
    );
    let mut problems = vec![];
    let mut queried = 0;
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        for target in targets {
            if target["expr"]
                .as_str()
                .is_none_or(|expr| expr.trim().is_empty())
            {
                problems.push(format!("{title}: a target without an expr"));
            }
            if target["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{title}: a target not on ${{datasource}}"));
            }
            queried += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(queried > 0, "{DASHBOARD} queries nothing");
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_read_is_in_the_metrics_table() {
    let documented = referenced_metrics(&read("docs/operations.md"));
    for file in alert_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let referenced = referenced_metrics(&text);
        assert!(!referenced.is_empty(), "{} names no metric", file.display());
        let missing: Vec<&String> = referenced.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "{} reads metrics that docs/operations.md does not list (renamed, or a typo?): \
             {missing:?}",
            file.display()
        );
    }
}
