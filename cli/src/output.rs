//! Printing results: one JSON document, or a table for people. The render functions are pure
//! (data and the current time in, text out) so their output is tested as golden text.

use std::io::Write;

use comfy_table::{Table, presets};
use nexus_protocol::HostId;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::message::{
    ClusterStatus, DesiredRun, FleetStats, HostView, NetworkView, PortAllocation, WorkspaceDetail,
    WorkspaceUsage,
};
use nexus_protocol::model::{HostStatus, WorkspaceView};
use serde_json::{Value, json};

use crate::args::OutputFormat;
use crate::leader::{LEADER_WAIT, LeaderState, StatusSeen};

pub mod backups;
pub mod ca;
pub mod events;
pub mod limits;
pub mod notices;
pub mod policies;
pub mod security;

pub use limits::{limits_table, limits_view_json};

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

/// A JSON array written an element at a time, byte for byte what printing the whole array as
/// one [`Value`] would (compact, then a newline), so that a list of 250,000 is neither built
/// whole nor held as one string. A write that fails (a closed pipe) ends the writing quietly,
/// as [`print`] does.
#[derive(Debug)]
pub struct JsonArray<W: Write> {
    out: Option<W>,
    empty: bool,
}

impl<W: Write> JsonArray<W> {
    pub fn new(out: W) -> JsonArray<W> {
        JsonArray {
            out: Some(out),
            empty: true,
        }
    }

    pub fn push(&mut self, element: &impl serde::Serialize) {
        let opening: &[u8] = if self.empty { b"[" } else { b"," };
        self.empty = false;
        self.write(|out| {
            out.write_all(opening)?;
            serde_json::to_writer(out, element).map_err(std::io::Error::from)
        });
    }

    /// Sends what is buffered on, so that a reader sees each page as it comes.
    pub fn flush(&mut self) {
        self.write(Write::flush);
    }

    /// Closes the array (`[]` if nothing was pushed) and answers the writer.
    pub fn finish(mut self) -> Option<W> {
        let closing: &[u8] = if self.empty { b"[]\n" } else { b"]\n" };
        self.write(|out| {
            out.write_all(closing)?;
            out.flush()
        });
        self.out.take()
    }

    fn write(&mut self, step: impl FnOnce(&mut W) -> std::io::Result<()>) {
        if let Some(out) = &mut self.out
            && step(out).is_err()
        {
            self.out = None;
        }
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

pub fn status_name(status: HostStatus) -> &'static str {
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

/// `admin status` as a command saw it: [`status_json`] and what it knows of the leader,
/// `leader_state` (`confirmed`, `unreachable`, `unknown`) and `leader_last_heard_ms`.
pub fn status_seen_json(seen: &StatusSeen) -> Value {
    let mut json = status_json(&seen.status);
    json["leader_state"] = json!(seen.leader_state.as_str());
    json["leader_last_heard_ms"] = json!(seen.leader_last_heard_ms);
    json
}

/// `admin status` as a table; its first line says how far the leader named was confirmed.
pub fn status_seen_table(seen: &StatusSeen) -> String {
    let status = &seen.status;
    let heard = seen
        .leader_last_heard_ms
        .map_or("never heard".to_string(), |ms| {
            format!("last heard {ms} ms ago")
        });
    let leader = match (status.leader, seen.leader_state) {
        (Some(leader), LeaderState::Confirmed) => leader.to_string(),
        (Some(leader), _) => format!(
            "{leader}? (did not answer within {} ms; {heard})",
            LEADER_WAIT.as_millis()
        ),
        (None, _) => "none".to_string(),
    };
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
    serde_json::to_value(WorkspaceJson::of(view)).unwrap_or(Value::Null)
}

/// A workspace as `--output json` shows it, written straight to JSON (a list of 250,000 is
/// printed without a [`Value`] each). The fields are in name order, as a [`Value`]'s keys
/// print, so that both forms are the same bytes.
#[derive(Debug, serde::Serialize)]
pub struct WorkspaceJson<'a> {
    class: &'a str,
    created_at: String,
    host: Option<&'a str>,
    image: &'a str,
    name: &'a str,
    owner: &'a str,
    ports: Vec<PortJson>,
    state: &'a str,
}

#[derive(Debug, serde::Serialize)]
struct PortJson {
    container: u16,
    host: u16,
}

impl<'a> WorkspaceJson<'a> {
    pub fn of(view: &'a WorkspaceView) -> WorkspaceJson<'a> {
        WorkspaceJson {
            class: view.class.as_str(),
            created_at: rfc3339(view.created_at),
            host: view.host.as_ref().map(HostId::as_str),
            image: &view.image,
            name: view.name.as_str(),
            owner: view.owner.as_str(),
            ports: view
                .ports
                .iter()
                .map(|p| PortJson {
                    container: p.container,
                    host: p.host,
                })
                .collect(),
            state: view.state.as_str(),
        }
    }
}

/// Seconds since the epoch as RFC 3339 (or the number, if out of range).
pub fn time_of(secs: i64) -> String {
    u64::try_from(secs)
        .ok()
        .and_then(|secs| secs.checked_mul(1000))
        .map_or_else(
            || secs.to_string(),
            |millis| rfc3339(nexus_protocol::clock::Timestamp::from_millis(millis)),
        )
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

fn desired_name(desired: DesiredRun) -> &'static str {
    match desired {
        DesiredRun::Running => "running",
        DesiredRun::Stopped => "stopped",
        DesiredRun::Absent => "absent",
    }
}

/// `workspace inspect` as JSON: the contract's fields (as [`workspace_json`]) and the detail.
pub fn workspace_detail_json(detail: &WorkspaceDetail) -> Value {
    let mut json = workspace_json(&detail.view);
    if let Value::Object(map) = &mut json {
        map.insert("desired".into(), json!(desired_name(detail.desired)));
        map.insert("generation".into(), json!(detail.generation));
        map.insert("updated_at".into(), json!(rfc3339(detail.updated_at)));
        map.insert("env".into(), json!(detail.spec.env));
        map.insert("labels".into(), json!(detail.spec.labels));
        map.insert("command".into(), json!(detail.spec.command));
        map.insert(
            "pinned_host".into(),
            json!(detail.spec.host.as_ref().map(HostId::as_str)),
        );
        map.insert("port_reassigned".into(), json!(detail.port_reassigned));
        map.insert(
            "last_error".into(),
            json!(detail.last_error.as_ref().map(|e| json!({
                "code": e.code.as_str(),
                "message": e.message,
                "suggestion": e.code.suggestion(),
            }))),
        );
    }
    json
}

/// `workspace inspect` for people: one `key: value` per line.
pub fn workspace_detail_text(detail: &WorkspaceDetail) -> String {
    let view = &detail.view;
    let mut lines = vec![
        ("name", view.name.to_string()),
        ("owner", view.owner.to_string()),
        (
            "state",
            format!("{} (wanted: {})", view.state, desired_name(detail.desired)),
        ),
        (
            "host",
            view.host.as_ref().map_or("-".into(), ToString::to_string),
        ),
        ("image", view.image.clone()),
        ("class", view.class.to_string()),
        (
            "ports",
            if view.ports.is_empty() {
                "-".into()
            } else {
                view.ports
                    .iter()
                    .map(|p| format!("{} -> {}", p.host, p.container))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("created", rfc3339(view.created_at)),
        ("updated", rfc3339(detail.updated_at)),
        ("generation", detail.generation.to_string()),
    ];
    if !detail.spec.command.is_empty() {
        lines.push(("command", detail.spec.command.join(" ")));
    }
    if !detail.spec.env.is_empty() {
        let env = detail.spec.env.iter().map(|(k, v)| format!("{k}={v}"));
        lines.push(("env", env.collect::<Vec<_>>().join(" ")));
    }
    if !detail.spec.labels.is_empty() {
        let labels = detail.spec.labels.iter().map(|(k, v)| format!("{k}={v}"));
        lines.push(("labels", labels.collect::<Vec<_>>().join(" ")));
    }
    if detail.port_reassigned {
        lines.push((
            "note",
            "a host port was reassigned after a PORT_CONFLICT".into(),
        ));
    }
    if let Some(error) = &detail.last_error {
        lines.push(("last error", format!("{}: {}", error.code, error.message)));
        lines.push(("what to do", error.code.suggestion().to_string()));
    }
    lines
        .into_iter()
        .map(|(key, value)| format!("{:<12}{value}\n", format!("{key}:")))
        .collect()
}

/// `admin networks` as JSON: `{"networks": [{"host", "name", "workspace", "subnet"}],
/// "unreachable": [{"host", "error"}]}`.
pub fn networks_json(rows: &[(HostId, NetworkView)], unreachable: &[(HostId, String)]) -> Value {
    json!({
        "networks": rows.iter().map(|(host, n)| json!({
            "host": host.as_str(),
            "name": n.name,
            "workspace": n.workspace.as_ref().map(|w| w.as_str()),
            "subnet": n.subnet,
        })).collect::<Vec<_>>(),
        "unreachable": unreachable.iter().map(|(host, error)| json!({
            "host": host.as_str(),
            "error": error,
        })).collect::<Vec<_>>(),
    })
}

pub fn networks_table(rows: &[(HostId, NetworkView)], unreachable: &[(HostId, String)]) -> String {
    let mut text = if rows.is_empty() {
        "no workspace networks\n".to_string()
    } else {
        table(
            &["HOST", "NETWORK", "WORKSPACE", "SUBNET"],
            rows.iter()
                .map(|(host, n)| {
                    vec![
                        host.to_string(),
                        n.name.clone(),
                        n.workspace.as_ref().map_or("-".into(), ToString::to_string),
                        n.subnet.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        )
    };
    for (host, error) in unreachable {
        text.push_str(&format!("{host}: unreachable: {error}\n"));
    }
    text
}

/// `admin stats` as JSON.
pub fn fleet_stats_json(stats: &FleetStats) -> Value {
    let counts = |pairs: Vec<(&str, u32)>| {
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        )
    };
    json!({
        "hosts": counts(stats.hosts.iter().map(|(s, n)| (status_name(*s), *n)).collect()),
        "workspaces": counts(stats.workspaces.iter().map(|(s, n)| (s.as_str(), *n)).collect()),
        "cpu_promised_millis": stats.cpu_promised_millis,
        "cpu_capacity_millis": stats.cpu_capacity_millis,
        "memory_promised_bytes": stats.memory_promised_bytes,
        "memory_capacity_bytes": stats.memory_capacity_bytes,
        "ports_allocated": stats.ports_allocated,
        "ports_total": stats.ports_total,
        "operations_in_flight": stats.operations_in_flight,
    })
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

pub fn fleet_stats_text(stats: &FleetStats) -> String {
    let list = |pairs: Vec<String>| {
        if pairs.is_empty() {
            "none".to_string()
        } else {
            pairs.join(", ")
        }
    };
    let total = |pairs: &[u32]| pairs.iter().map(|n| u64::from(*n)).sum::<u64>();
    let hosts: Vec<u32> = stats.hosts.iter().map(|(_, n)| *n).collect();
    let workspaces: Vec<u32> = stats.workspaces.iter().map(|(_, n)| *n).collect();
    format!(
        "hosts:       {} ({})\nworkspaces:  {} ({})\ncpu:         {:.1} of {:.1} cores promised ({})\nmemory:      {} of {} promised ({})\nports:       {} of {} allocated\nin flight:   {} operations\n",
        total(&hosts),
        list(
            stats
                .hosts
                .iter()
                .map(|(s, n)| format!("{n} {}", status_name(*s)))
                .collect()
        ),
        total(&workspaces),
        list(
            stats
                .workspaces
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect()
        ),
        stats.cpu_promised_millis as f64 / 1000.0,
        stats.cpu_capacity_millis as f64 / 1000.0,
        percent(stats.cpu_promised_millis, stats.cpu_capacity_millis),
        bytes(stats.memory_promised_bytes),
        bytes(stats.memory_capacity_bytes),
        percent(stats.memory_promised_bytes, stats.memory_capacity_bytes),
        stats.ports_allocated,
        stats.ports_total,
        stats.operations_in_flight,
    )
}

/// `admin top` as JSON: `[{"workspace", "host", "owner", "cpu_percent", ...}]`.
pub fn usage_json(usage: &[WorkspaceUsage]) -> Value {
    Value::Array(
        usage
            .iter()
            .map(|u| {
                json!({
                    "workspace": u.stats.workspace.as_ref().map(|w| w.as_str()),
                    "host": u.host.as_str(),
                    "owner": u.owner.as_ref().map(|o| o.as_str()),
                    "cpu_percent": u.stats.cpu_percent,
                    "memory_used_bytes": u.stats.memory_used_bytes,
                    "memory_limit_bytes": u.stats.memory_limit_bytes,
                    "network_rx_bytes": u.stats.network_rx_bytes,
                    "network_tx_bytes": u.stats.network_tx_bytes,
                    "block_read_bytes": u.stats.block_read_bytes,
                    "block_write_bytes": u.stats.block_write_bytes,
                    "at_ms": u.stats.at.map(Timestamp::as_millis),
                })
            })
            .collect(),
    )
}

pub fn usage_table(usage: &[WorkspaceUsage], now: Timestamp) -> String {
    if usage.is_empty() {
        return "no workspace has reported stats yet\n".into();
    }
    let rows = usage
        .iter()
        .map(|u| {
            vec![
                u.stats
                    .workspace
                    .as_ref()
                    .map_or("-".into(), ToString::to_string),
                u.host.to_string(),
                u.owner.as_ref().map_or("-".into(), ToString::to_string),
                format!("{:.1}%", u.stats.cpu_percent),
                format!(
                    "{} / {}",
                    bytes(u.stats.memory_used_bytes),
                    bytes(u.stats.memory_limit_bytes)
                ),
                format!(
                    "{} / {}",
                    bytes(u.stats.network_rx_bytes),
                    bytes(u.stats.network_tx_bytes)
                ),
                ago(u.stats.at, now),
            ]
        })
        .collect();
    table(
        &[
            "WORKSPACE",
            "HOST",
            "OWNER",
            "CPU",
            "MEMORY",
            "NET RX / TX",
            "SAMPLED",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::HostId;
    use nexus_protocol::model::HostInfo;

    use super::*;

    /// The streamed array is byte for byte the whole array printed at once: the `--output json`
    /// contract of `workspace list` did not change when it began to stream.
    #[test]
    fn a_streamed_array_prints_as_the_whole_array_would() {
        let elements = [
            json!({"name": "a", "ports": [], "host": null}),
            json!({"name": "b\"q", "ports": [{"container": 80, "host": 20000}]}),
            json!("x"),
        ];
        for n in 0..=elements.len() {
            let whole = format!("{}\n", Value::Array(elements[..n].to_vec()));
            let mut streamed = JsonArray::new(Vec::new());
            for element in &elements[..n] {
                streamed.push(element);
                streamed.flush();
            }
            let bytes = streamed.finish().unwrap();
            assert_eq!(String::from_utf8(bytes).unwrap(), whole, "{n} elements");
        }
    }

    /// A reader gone (`| head`) ends the writing without a panic or an error.
    #[test]
    fn a_streamed_array_stops_quietly_at_a_closed_pipe() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut streamed = JsonArray::new(Closed);
        streamed.push(&json!(1));
        streamed.push(&json!(2));
        assert!(streamed.finish().is_none());
    }

    /// What `workspace list` streams is what `workspace inspect` and every other list build as a
    /// [`Value`]: the same bytes.
    #[test]
    fn a_workspace_streams_as_its_json_value_prints() {
        let mut view = detail().view;
        let mut views = vec![view.clone()];
        view.host = None;
        view.image = "registry.local/dev:\"quoted\" \u{e9}".into();
        view.ports = vec![
            nexus_protocol::model::PortBinding {
                container: 80,
                host: 20_001,
            },
            nexus_protocol::model::PortBinding {
                container: 8080,
                host: 20_002,
            },
        ];
        views.push(view);
        for view in &views {
            assert_eq!(
                serde_json::to_string(&WorkspaceJson::of(view)).unwrap(),
                workspace_json(view).to_string()
            );
        }
        let keys: Vec<String> = workspace_json(&views[0])
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "class",
                "created_at",
                "host",
                "image",
                "name",
                "owner",
                "ports",
                "state"
            ]
        );
    }

    #[test]
    fn seconds_read_as_rfc3339_or_stay_a_number() {
        assert_eq!(time_of(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_of(-5), "-5");
    }

    fn host(id: &str, heartbeat: Option<u64>) -> HostView {
        HostView {
            info: HostInfo {
                hostname: format!("{id}.example.com"),
                cpus: 16,
                memory_bytes: 64 << 30,
                disk_bytes: 1 << 40,
                labels: [("zone".to_string(), "a".to_string())].into(),
                agent_version: "0.1.0".into(),
                ..nexus_fixtures::host(id)
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

    /// A failed workspace's detail, for the renderers' tests here and in the submodules.
    pub(super) fn detail() -> WorkspaceDetail {
        use nexus_protocol::error::{ErrorCode, WireError};
        use nexus_protocol::model::{PortBinding, ResourceClass, WorkspaceSpec, WorkspaceState};
        let name = nexus_protocol::WorkspaceName::new("api").unwrap();
        WorkspaceDetail {
            view: WorkspaceView {
                name: name.clone(),
                owner: "ada".parse().unwrap(),
                state: WorkspaceState::Failed,
                host: Some(HostId::new("dev-01").unwrap()),
                image: "dev:latest".into(),
                class: ResourceClass::Small,
                ports: vec![PortBinding {
                    container: 3000,
                    host: 20001,
                }],
                created_at: Timestamp(1_700_000_000_000),
            },
            spec: WorkspaceSpec {
                name,
                ports: nexus_fixtures::ports(&[3000]),
                env: [("A".to_string(), "b".to_string())].into(),
                command: nexus_fixtures::command(&["httpd", "-f"]),
                ..nexus_fixtures::spec("w")
            },
            desired: DesiredRun::Running,
            generation: 2,
            updated_at: Timestamp(1_700_000_060_000),
            last_error: Some(WireError::new(ErrorCode::ContainerError, "exited with 127")),
            port_reassigned: true,
        }
    }

    #[test]
    fn a_workspace_inspects_for_people_and_scripts() {
        expect![[r#"
            name:       api
            owner:      ada
            state:      failed (wanted: running)
            host:       dev-01
            image:      dev:latest
            class:      small
            ports:      20001 -> 3000
            created:    2023-11-14T22:13:20Z
            updated:    2023-11-14T22:14:20Z
            generation: 2
            command:    httpd -f
            env:        A=b
            note:       a host port was reassigned after a PORT_CONFLICT
            last error: CONTAINER_ERROR: exited with 127
            what to do: look at `nexus workspace logs NAME`, then run `nexus workspace repair NAME`
        "#]]
        .assert_eq(&workspace_detail_text(&detail()));
        expect![[r#"{"class":"small","command":["httpd","-f"],"created_at":"2023-11-14T22:13:20Z","desired":"running","env":{"A":"b"},"generation":2,"host":"dev-01","image":"dev:latest","labels":{},"last_error":{"code":"CONTAINER_ERROR","message":"exited with 127","suggestion":"look at `nexus workspace logs NAME`, then run `nexus workspace repair NAME`"},"name":"api","owner":"ada","pinned_host":null,"port_reassigned":true,"ports":[{"container":3000,"host":20001}],"state":"failed","updated_at":"2023-11-14T22:14:20Z"}"#]]
        .assert_eq(&workspace_detail_json(&detail()).to_string());
    }

    #[test]
    fn fleet_stats_and_top_read_well() {
        use nexus_protocol::model::{ContainerStats, WorkspaceState};
        let stats = FleetStats {
            hosts: vec![(HostStatus::Ready, 2), (HostStatus::Down, 1)],
            workspaces: vec![(WorkspaceState::Running, 3), (WorkspaceState::Lost, 1)],
            cpu_promised_millis: 2_500,
            cpu_capacity_millis: 16_000,
            memory_promised_bytes: 3 << 30,
            memory_capacity_bytes: 64 << 30,
            ports_allocated: 4,
            ports_total: 36_003,
            operations_in_flight: 1,
        };
        expect![[r#"
            hosts:       3 (2 ready, 1 down)
            workspaces:  4 (3 running, 1 lost)
            cpu:         2.5 of 16.0 cores promised (16%)
            memory:      3.0 GiB of 64.0 GiB promised (5%)
            ports:       4 of 36003 allocated
            in flight:   1 operations
        "#]]
        .assert_eq(&fleet_stats_text(&stats));
        expect![[r#"{"cpu_capacity_millis":16000,"cpu_promised_millis":2500,"hosts":{"down":1,"ready":2},"memory_capacity_bytes":68719476736,"memory_promised_bytes":3221225472,"operations_in_flight":1,"ports_allocated":4,"ports_total":36003,"workspaces":{"lost":1,"running":3}}"#]]
        .assert_eq(&fleet_stats_json(&stats).to_string());
        let usage = [WorkspaceUsage {
            host: HostId::new("dev-01").unwrap(),
            owner: Some("ada".parse().unwrap()),
            stats: ContainerStats {
                workspace: Some("api".parse().unwrap()),
                at: Some(Timestamp(995_000)),
                cpu_percent: 12.5,
                memory_used_bytes: 256 << 20,
                memory_limit_bytes: 1 << 30,
                network_rx_bytes: 2048,
                network_tx_bytes: 512,
                block_read_bytes: 0,
                block_write_bytes: 0,
            },
        }];
        expect![[r#"
            WORKSPACE  HOST    OWNER  CPU    MEMORY               NET RX / TX      SAMPLED
            api        dev-01  ada    12.5%  256.0 MiB / 1.0 GiB  2.0 KiB / 512 B  5s ago
        "#]]
        .assert_eq(&usage_table(&usage, Timestamp(1_000_000)));
        expect!["no workspace has reported stats yet\n"].assert_eq(&usage_table(&[], Timestamp(0)));
    }

    #[test]
    fn networks_list_by_host_and_say_which_hosts_did_not_answer() {
        let rows = vec![(
            HostId::new("dev-01").unwrap(),
            NetworkView {
                name: "nexus.dev-01.api".into(),
                workspace: Some("api".parse().unwrap()),
                subnet: Some("10.213.7.0/24".into()),
            },
        )];
        let unreachable = vec![(HostId::new("dev-02").unwrap(), "timed out".to_string())];
        expect![[r#"
            HOST    NETWORK           WORKSPACE  SUBNET
            dev-01  nexus.dev-01.api  api        10.213.7.0/24
            dev-02: unreachable: timed out
        "#]]
        .assert_eq(&networks_table(&rows, &unreachable));
        expect![[r#"{"networks":[{"host":"dev-01","name":"nexus.dev-01.api","subnet":"10.213.7.0/24","workspace":"api"}],"unreachable":[{"error":"timed out","host":"dev-02"}]}"#]]
        .assert_eq(&networks_json(&rows, &unreachable).to_string());
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(ago(Some(Timestamp(0)), Timestamp(7_200_000)), "2h ago");
        assert_eq!(ago(Some(Timestamp(0)), Timestamp(300_000)), "5m ago");
    }
}
