//! Printing results: one JSON document, or a table for people. The render functions are pure
//! (data and the current time in, text out) so their output is tested as golden text.

use std::io::Write;

use comfy_table::{Table, presets};
use nexus_protocol::HostId;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::message::{ClusterStatus, HostView, PortAllocation};
use nexus_protocol::model::{HostStatus, WorkspaceView};
use serde_json::{Value, json};

use crate::args::OutputFormat;

/// Writes `text` to stdout. A closed stdout (`nexus ... | head`) is not an error worth a panic.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints `json` or `text` as the format asks.
pub fn emit(format: OutputFormat, json: &Value, text: impl FnOnce() -> String) {
    match format {
        OutputFormat::Json => print(&format!("{json}\n")),
        OutputFormat::Table => print(&text()),
    }
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = table
        .to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    text
}

fn status_name(status: HostStatus) -> &'static str {
    match status {
        HostStatus::Ready => "ready",
        HostStatus::Down => "down",
        HostStatus::Draining => "draining",
        HostStatus::Cordoned => "cordoned",
    }
}

/// `1.5 GiB`, `512 MiB`.
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = value as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// `3s ago`, `2m ago`, `never`.
pub fn ago(then: Option<Timestamp>, now: Timestamp) -> String {
    let Some(then) = then else {
        return "never".into();
    };
    let seconds = now.saturating_since(then).as_secs();
    match seconds {
        0..=119 => format!("{seconds}s ago"),
        120..=7199 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

/// `admin status`: `{"leader", "term", "members": [{"id", "addr", "role", "healthy", ...}], ...}`.
pub fn status_json(status: &ClusterStatus) -> Value {
    json!({
        "node": status.node.get(),
        "leader": status.leader.map(|l| l.get()),
        "term": status.term,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "members": status.members.iter().map(|m| json!({
            "id": m.id.get(),
            "addr": m.addr,
            "role": m.role.as_str(),
            "healthy": m.healthy,
            "last_contact_ms": m.last_contact_ms,
            "matched_index": m.matched_index,
        })).collect::<Vec<_>>(),
    })
}

pub fn status_table(status: &ClusterStatus) -> String {
    let leader = status.leader.map_or("none".to_string(), |l| l.to_string());
    let mut text = format!(
        "leader {leader}, term {}; as seen by coordinator {}: commit {}, applied {}\n\n",
        status.term, status.node, status.commit_index, status.applied_index
    );
    let rows = status
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.addr.clone(),
                m.role.as_str().to_string(),
                if m.healthy { "yes" } else { "no" }.to_string(),
                m.last_contact_ms
                    .map_or("never".to_string(), |ms| format!("{ms} ms ago")),
                m.matched_index.map_or("-".to_string(), |i| i.to_string()),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "ID",
            "ADDRESS",
            "ROLE",
            "HEALTHY",
            "LAST CONTACT",
            "MATCHED",
        ],
        rows,
    ));
    text
}

/// A workspace as `--output json` prints it (the contract: name, owner, state, host, image,
/// ports, created_at; plus class).
pub fn workspace_json(view: &WorkspaceView) -> Value {
    json!({
        "name": view.name.as_str(),
        "owner": view.owner.as_str(),
        "state": view.state.as_str(),
        "host": view.host.as_ref().map(HostId::as_str),
        "image": view.image,
        "class": view.class.as_str(),
        "ports": view.ports.iter().map(|p| json!({"container": p.container, "host": p.host})).collect::<Vec<_>>(),
        "created_at": rfc3339(view.created_at),
    })
}

/// A time as RFC 3339, in UTC.
pub fn rfc3339(at: Timestamp) -> String {
    at.to_offset_date_time()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.as_millis().to_string())
}

pub fn workspaces_table(views: &[WorkspaceView]) -> String {
    if views.is_empty() {
        return "no workspaces\n".to_string();
    }
    let rows = views
        .iter()
        .map(|v| {
            vec![
                v.name.to_string(),
                v.state.to_string(),
                v.host.as_ref().map_or("-".to_string(), ToString::to_string),
                v.image.clone(),
                v.class.to_string(),
                if v.ports.is_empty() {
                    "-".to_string()
                } else {
                    v.ports
                        .iter()
                        .map(|p| format!("{}:{}", p.host, p.container))
                        .collect::<Vec<_>>()
                        .join(",")
                },
                v.owner.to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "STATE", "HOST", "IMAGE", "CLASS", "PORTS", "OWNER"],
        rows,
    )
}

/// `nexus admin ports` as JSON: `[{"host", "port", "workspace", "container"}]`.
pub fn ports_json(ports: &[PortAllocation]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                json!({
                    "host": p.host.as_str(),
                    "port": p.port,
                    "workspace": p.workspace.as_str(),
                    "container": p.container,
                })
            })
            .collect(),
    )
}

pub fn ports_table(ports: &[PortAllocation]) -> String {
    if ports.is_empty() {
        return "no ports allocated\n".to_string();
    }
    let rows = ports
        .iter()
        .map(|p| {
            vec![
                p.host.to_string(),
                p.port.to_string(),
                p.workspace.to_string(),
                p.container.map_or("-".to_string(), |c| c.to_string()),
            ]
        })
        .collect();
    table(&["HOST", "PORT", "WORKSPACE", "CONTAINER PORT"], rows)
}

pub fn hosts_json(hosts: &[HostView]) -> Value {
    Value::Array(
        hosts
            .iter()
            .map(|host| {
                json!({
                    "host_id": host.info.host_id.as_str(),
                    "status": status_name(host.status),
                    "workspaces": host.workspaces,
                    "capacity": {
                        "cpus": host.info.cpus,
                        "memory_bytes": host.info.memory_bytes,
                        "disk_bytes": host.info.disk_bytes,
                        "port_range": host.info.port_range.to_string(),
                    },
                    "stats": host.stats.map(|s| json!({
                        "cpu_percent": s.cpu_percent,
                        "memory_used_bytes": s.memory_used_bytes,
                        "disk_used_bytes": s.disk_used_bytes,
                        "network_rx_bytes": s.network_rx_bytes,
                        "network_tx_bytes": s.network_tx_bytes,
                        "load_average_1m": s.load_average_1m,
                    })),
                    "hostname": host.info.hostname,
                    "labels": host.info.labels,
                    "agent_version": host.info.agent_version,
                    "last_heartbeat_ms": host.last_heartbeat.map(Timestamp::as_millis),
                })
            })
            .collect(),
    )
}

pub fn hosts_table(hosts: &[HostView], now: Timestamp) -> String {
    if hosts.is_empty() {
        return "No hosts have registered yet.\n".into();
    }
    let rows = hosts
        .iter()
        .map(|host| {
            vec![
                host.info.host_id.to_string(),
                status_name(host.status).into(),
                host.workspaces.to_string(),
                host.info.cpus.to_string(),
                bytes(host.info.memory_bytes),
                host.info.port_range.to_string(),
                host.info.agent_version.clone(),
                ago(host.last_heartbeat, now),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "STATUS",
            "WORKSPACES",
            "CPUS",
            "MEMORY",
            "PORTS",
            "AGENT",
            "HEARTBEAT",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::HostId;
    use nexus_protocol::model::{HostInfo, PortRange};

    use super::*;

    fn host(id: &str, heartbeat: Option<u64>) -> HostView {
        HostView {
            info: HostInfo {
                host_id: HostId::new(id).unwrap(),
                hostname: format!("{id}.example.com"),
                os: "linux".into(),
                cpus: 16,
                memory_bytes: 64 << 30,
                disk_bytes: 1 << 40,
                labels: [("zone".to_string(), "a".to_string())].into(),
                port_range: PortRange::DEFAULT,
                agent_version: "0.1.0".into(),
            },
            status: HostStatus::Ready,
            workspaces: 3,
            stats: None,
            last_heartbeat: heartbeat.map(Timestamp),
        }
    }

    #[test]
    fn hosts_render_as_a_table() {
        let now = Timestamp(1_000_000);
        let hosts = [host("dev-01", Some(997_000)), host("dev-02", None)];
        expect![[r#"
             HOST    STATUS  WORKSPACES  CPUS  MEMORY    PORTS        AGENT  HEARTBEAT
             dev-01  ready   3           16    64.0 GiB  20000-32000  0.1.0  3s ago
             dev-02  ready   3           16    64.0 GiB  20000-32000  0.1.0  never
        "#]]
        .assert_eq(&hosts_table(&hosts, now));
        expect!["No hosts have registered yet.\n"].assert_eq(&hosts_table(&[], now));
    }

    #[test]
    fn hosts_render_as_json() {
        expect![[r#"[{"agent_version":"0.1.0","capacity":{"cpus":16,"disk_bytes":1099511627776,"memory_bytes":68719476736,"port_range":"20000-32000"},"host_id":"dev-01","hostname":"dev-01.example.com","labels":{"zone":"a"},"last_heartbeat_ms":5,"stats":null,"status":"ready","workspaces":3}]"#]]
        .assert_eq(&hosts_json(&[host("dev-01", Some(5))]).to_string());
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(ago(Some(Timestamp(0)), Timestamp(7_200_000)), "2h ago");
        assert_eq!(ago(Some(Timestamp(0)), Timestamp(300_000)), "5m ago");
    }
}
