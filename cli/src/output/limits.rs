//! The scheduler's limits as `nexus admin limits show` prints them: the cluster's, and each host
//! whose overrides differ. Pure: the view in, text out.

use nexus_protocol::message::LimitsView;
use nexus_protocol::model::{Limits, LimitsPatch};
use serde_json::{Value, json};

use super::table;

fn limits_json(limits: &Limits) -> Value {
    json!({
        "max_workspaces_per_host": limits.max_workspaces_per_host,
        "max_ports_per_workspace": limits.max_ports_per_workspace,
        "max_concurrent_ops_per_host": limits.max_concurrent_ops_per_host,
        "cpu_overcommit_percent": limits.cpu_overcommit_percent,
        "memory_overcommit_percent": limits.memory_overcommit_percent,
        "scoring": limits.scoring.as_str(),
    })
}

fn patch_json(patch: &LimitsPatch) -> Value {
    let mut map = serde_json::Map::new();
    let numbers = [
        ("max_workspaces_per_host", patch.max_workspaces_per_host),
        ("max_ports_per_workspace", patch.max_ports_per_workspace),
        (
            "max_concurrent_ops_per_host",
            patch.max_concurrent_ops_per_host,
        ),
        ("cpu_overcommit_percent", patch.cpu_overcommit_percent),
        ("memory_overcommit_percent", patch.memory_overcommit_percent),
    ];
    for (key, value) in numbers {
        if let Some(value) = value {
            map.insert(key.into(), json!(value));
        }
    }
    if let Some(scoring) = patch.scoring {
        map.insert("scoring".into(), json!(scoring.as_str()));
    }
    Value::Object(map)
}

/// `admin limits` as JSON: `{"cluster": {...}, "hosts": [{"host", "overrides", "effective"}]}`.
pub fn limits_view_json(view: &LimitsView) -> Value {
    json!({
        "cluster": limits_json(&view.cluster),
        "hosts": view.hosts.iter().map(|h| json!({
            "host": h.host.as_str(),
            "overrides": patch_json(&h.overrides),
            "effective": limits_json(&h.effective),
        })).collect::<Vec<_>>(),
    })
}

/// `admin limits show`: one row for the cluster and one per host; a host's overridden values
/// are marked `*`.
pub fn limits_table(view: &LimitsView) -> String {
    let row = |name: String, limits: &Limits, patch: &LimitsPatch| {
        let mark = |value: u32, set: Option<u32>| {
            if set.is_some() {
                format!("{value}*")
            } else {
                value.to_string()
            }
        };
        vec![
            name,
            mark(
                limits.max_workspaces_per_host,
                patch.max_workspaces_per_host,
            ),
            mark(
                limits.max_ports_per_workspace,
                patch.max_ports_per_workspace,
            ),
            mark(
                limits.max_concurrent_ops_per_host,
                patch.max_concurrent_ops_per_host,
            ),
            format!(
                "{}%{}",
                limits.cpu_overcommit_percent,
                if patch.cpu_overcommit_percent.is_some() {
                    "*"
                } else {
                    ""
                }
            ),
            format!(
                "{}%{}",
                limits.memory_overcommit_percent,
                if patch.memory_overcommit_percent.is_some() {
                    "*"
                } else {
                    ""
                }
            ),
            limits.scoring.to_string(),
        ]
    };
    let mut rows = vec![row(
        "(cluster)".into(),
        &view.cluster,
        &LimitsPatch::default(),
    )];
    rows.extend(
        view.hosts
            .iter()
            .filter(|h| !h.overrides.is_empty())
            .map(|h| row(h.host.to_string(), &h.effective, &h.overrides)),
    );
    let mut text = table(
        &[
            "SCOPE",
            "WORKSPACES/HOST",
            "PORTS/WORKSPACE",
            "OPS/HOST",
            "CPU OVERCOMMIT",
            "MEMORY OVERCOMMIT",
            "SCORING",
        ],
        rows,
    );
    if view.hosts.iter().any(|h| !h.overrides.is_empty()) {
        text.push_str("* set for that host; other hosts follow the cluster\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::HostId;

    use super::*;

    #[test]
    fn limits_show_the_cluster_and_the_hosts_that_differ() {
        use nexus_protocol::message::HostLimits;
        let patch = LimitsPatch {
            max_workspaces_per_host: Some(30),
            cpu_overcommit_percent: Some(200),
            ..LimitsPatch::default()
        };
        let view = LimitsView {
            cluster: Limits::default(),
            hosts: vec![
                HostLimits {
                    host: HostId::new("dev-01").unwrap(),
                    overrides: patch,
                    effective: Limits {
                        max_workspaces_per_host: 30,
                        cpu_overcommit_percent: 200,
                        ..Limits::default()
                    },
                },
                HostLimits {
                    host: HostId::new("dev-02").unwrap(),
                    overrides: LimitsPatch::default(),
                    effective: Limits::default(),
                },
            ],
        };
        expect![[r#"
            SCOPE      WORKSPACES/HOST  PORTS/WORKSPACE  OPS/HOST  CPU OVERCOMMIT  MEMORY OVERCOMMIT  SCORING
            (cluster)  50               10               20        400%            400%               binpack
            dev-01     30*              10               20        200%*           400%               binpack
            * set for that host; other hosts follow the cluster
        "#]]
        .assert_eq(&limits_table(&view));
        expect![[r#"{"cluster":{"cpu_overcommit_percent":400,"max_concurrent_ops_per_host":20,"max_ports_per_workspace":10,"max_workspaces_per_host":50,"memory_overcommit_percent":400,"scoring":"binpack"},"hosts":[{"effective":{"cpu_overcommit_percent":200,"max_concurrent_ops_per_host":20,"max_ports_per_workspace":10,"max_workspaces_per_host":30,"memory_overcommit_percent":400,"scoring":"binpack"},"host":"dev-01","overrides":{"cpu_overcommit_percent":200,"max_workspaces_per_host":30}},{"effective":{"cpu_overcommit_percent":400,"max_concurrent_ops_per_host":20,"max_ports_per_workspace":10,"max_workspaces_per_host":50,"memory_overcommit_percent":400,"scoring":"binpack"},"host":"dev-02","overrides":{}}]}"#]]
        .assert_eq(&limits_view_json(&view).to_string());
    }
}
