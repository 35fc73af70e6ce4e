//! Backups as people and scripts read them (`admin backup create|list|inspect|verify|schedule`),
//! and the merge of every coordinator's list. Pure, like the rest of [`crate::output`]; the JSON
//! is built here field by field, so that it does not move with the wire types.

use nexus_protocol::backup::{BackupInfo, BackupSchedule};
use serde_json::{Value, json};

use super::{bytes, rfc3339, table};

/// What `create --output json` prints: exactly these six fields (the contract of issue 22).
pub fn created_json(info: &BackupInfo) -> Value {
    json!({
        "id": info.header.id,
        "index": info.header.index,
        "term": info.header.term,
        "created_at": rfc3339(info.header.created_at),
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
    })
}

pub fn created_text(info: &BackupInfo, file: Option<&std::path::Path>) -> String {
    let mut text = format!(
        "backup {} made on coordinator {} (index {}, term {}, {}), verified\n",
        info.header.id,
        info.location,
        info.header.index,
        info.header.term,
        bytes(info.size_bytes)
    );
    if let Some(file) = file {
        text.push_str(&format!("written to {}\n", file.display()));
    }
    text
}

/// Every coordinator's backups as one list: newest first, then by where they are.
pub fn merge(answers: Vec<Vec<BackupInfo>>) -> Vec<BackupInfo> {
    let mut all: Vec<BackupInfo> = answers.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        b.header
            .created_at
            .cmp(&a.header.created_at)
            .then_with(|| b.header.id.cmp(&a.header.id))
            .then_with(|| a.location.cmp(&b.location))
    });
    all
}

/// Whether a listed backup is known damaged, verified, or not checked for this answer.
fn status(info: &BackupInfo) -> &'static str {
    match info.verified {
        Some(true) => "verified",
        Some(false) => "damaged",
        None => "ok",
    }
}

fn backup_json(info: &BackupInfo) -> Value {
    let counts: serde_json::Map<String, Value> = info
        .header
        .counts
        .iter()
        .map(|(table, rows)| (table.clone(), json!(rows)))
        .collect();
    json!({
        "id": info.header.id,
        "created_at": rfc3339(info.header.created_at),
        "index": info.header.index,
        "term": info.header.term,
        "cluster": info.header.cluster,
        "node": info.header.node.get(),
        "software": info.header.software,
        "state_format": info.header.state_format,
        "counts": counts,
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "location": info.location.get(),
        "status": status(info),
    })
}

pub fn list_json(backups: &[BackupInfo]) -> Value {
    Value::Array(backups.iter().map(backup_json).collect())
}

pub fn list_table(backups: &[BackupInfo]) -> String {
    let rows = backups
        .iter()
        .map(|info| {
            let damaged = info.verified == Some(false);
            let or_dash = |value: String| if damaged { "-".to_string() } else { value };
            vec![
                info.header.id.clone(),
                or_dash(rfc3339(info.header.created_at)),
                or_dash(info.header.index.to_string()),
                bytes(info.size_bytes),
                or_dash(info.header.count("hosts").to_string()),
                or_dash(info.header.count("workspaces").to_string()),
                format!("coordinator-{}", info.location),
                status(info).to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "CREATED",
            "INDEX",
            "SIZE",
            "HOSTS",
            "WORKSPACES",
            "LOCATION",
            "STATUS",
        ],
        rows,
    )
}

/// One backup's header and checksum, as `inspect` shows it (`where_` says where it was read).
pub fn inspect_json(info: &BackupInfo, where_: &str) -> Value {
    let mut value = backup_json(info);
    value["source"] = json!(where_);
    value
}

pub fn inspect_text(info: &BackupInfo, where_: &str) -> String {
    let header = &info.header;
    let mut text = String::new();
    let mut line = |key: &str, value: String| text.push_str(&format!("{key:<14}{value}\n"));
    line("id", header.id.clone());
    line("source", where_.to_string());
    line("created", rfc3339(header.created_at));
    line("index", header.index.to_string());
    line("term", header.term.to_string());
    line("cluster", header.cluster.clone());
    line("made by", format!("coordinator-{}", header.node));
    line("software", header.software.clone());
    line("state format", header.state_format.to_string());
    line(
        "size",
        format!("{} ({} bytes)", bytes(info.size_bytes), info.size_bytes),
    );
    line("sha256", format!("{} ({})", info.sha256, status(info)));
    for (table, rows) in &header.counts {
        line(table, rows.to_string());
    }
    text
}

/// `verify`'s verdict on each copy: where, and good or why not.
pub fn verified_json(results: &[(String, Result<BackupInfo, String>)]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|(location, result)| match result {
                Ok(info) => json!({
                    "location": location,
                    "id": info.header.id,
                    "ok": true,
                    "sha256": info.sha256,
                }),
                Err(why) => json!({"location": location, "ok": false, "error": why}),
            })
            .collect(),
    )
}

pub fn verified_text(results: &[(String, Result<BackupInfo, String>)]) -> String {
    let rows = results
        .iter()
        .map(|(location, result)| match result {
            Ok(info) => vec![
                location.clone(),
                info.header.id.clone(),
                "ok".to_string(),
                info.sha256.clone(),
            ],
            Err(why) => vec![
                location.clone(),
                String::new(),
                "FAILED".to_string(),
                why.clone(),
            ],
        })
        .collect();
    table(&["LOCATION", "ID", "RESULT", "SHA256 / ERROR"], rows)
}

pub fn schedule_json(schedule: &BackupSchedule) -> Value {
    json!({"every_secs": schedule.every_secs, "keep": schedule.keep})
}

pub fn schedule_text(schedule: &BackupSchedule) -> String {
    if schedule.every_secs == 0 {
        format!(
            "scheduled backups are off; each coordinator keeps {}\n",
            schedule.keep
        )
    } else {
        format!(
            "a backup every {} on the leader; each coordinator keeps the newest {}\n",
            duration(schedule.every_secs),
            schedule.keep
        )
    }
}

/// Seconds in the largest unit that divides them (`parse_age`'s units).
fn duration(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::NodeId;
    use nexus_protocol::backup::BackupHeader;
    use nexus_protocol::clock::Timestamp;

    use super::*;

    fn info(id: &str, at: u64, location: u64, verified: Option<bool>) -> BackupInfo {
        BackupInfo {
            header: BackupHeader {
                id: id.to_string(),
                cluster: "ab".repeat(4),
                node: NodeId::new(1).unwrap(),
                index: 42,
                term: 3,
                created_at: Timestamp(at),
                software: "0.1.0".to_string(),
                state_format: 4,
                counts: vec![
                    ("hosts".to_string(), 2),
                    ("workspaces".to_string(), 3),
                    ("events".to_string(), 9),
                ],
            },
            size_bytes: 20_480,
            sha256: "0f".repeat(4),
            location: NodeId::new(location).unwrap(),
            verified,
        }
    }

    const NOON: u64 = 1_796_299_200_000;

    #[test]
    fn create_prints_exactly_the_contracts_fields() {
        let json = created_json(&info("20261203T120000Z-i42", NOON, 1, Some(true)));
        expect![[r#"{"created_at":"2026-12-03T12:00:00Z","id":"20261203T120000Z-i42","index":42,"sha256":"0f0f0f0f","size_bytes":20480,"term":3}"#]]
            .assert_eq(&json.to_string());
    }

    #[test]
    fn lists_merge_newest_first_with_damage_shown() {
        let merged = merge(vec![
            vec![info("20261203T120000Z-i42", NOON, 1, None)],
            vec![
                info("20261203T130000Z-i50", NOON + 3_600_000, 2, None),
                info("20261203T120000Z-i42", NOON, 2, None),
            ],
            vec![info("20261203T140000Z-i60", 0, 3, Some(false))],
        ]);
        expect![[r#"
            ID                    CREATED               INDEX  SIZE      HOSTS  WORKSPACES  LOCATION       STATUS
            20261203T130000Z-i50  2026-12-03T13:00:00Z  42     20.0 KiB  2      3           coordinator-2  ok
            20261203T120000Z-i42  2026-12-03T12:00:00Z  42     20.0 KiB  2      3           coordinator-1  ok
            20261203T120000Z-i42  2026-12-03T12:00:00Z  42     20.0 KiB  2      3           coordinator-2  ok
            20261203T140000Z-i60  -                     -      20.0 KiB  -      -           coordinator-3  damaged
        "#]]
        .assert_eq(&list_table(&merged));
    }

    #[test]
    fn inspect_shows_the_header_and_counts() {
        expect![[r#"
            id            20261203T120000Z-i42
            source        backup.nxbackup
            created       2026-12-03T12:00:00Z
            index         42
            term          3
            cluster       abababab
            made by       coordinator-1
            software      0.1.0
            state format  4
            size          20.0 KiB (20480 bytes)
            sha256        0f0f0f0f (verified)
            hosts         2
            workspaces    3
            events        9
        "#]]
        .assert_eq(&inspect_text(
            &info("20261203T120000Z-i42", NOON, 1, Some(true)),
            "backup.nxbackup",
        ));
    }

    #[test]
    fn schedules_read_in_units() {
        let text = |every_secs, keep| schedule_text(&BackupSchedule { every_secs, keep });
        assert_eq!(
            text(3600, 24),
            "a backup every 1h on the leader; each coordinator keeps the newest 24\n"
        );
        assert_eq!(
            text(90, 3),
            "a backup every 90s on the leader; each coordinator keeps the newest 3\n"
        );
        assert_eq!(
            text(0, 5),
            "scheduled backups are off; each coordinator keeps 5\n"
        );
        assert_eq!(duration(86_400 * 2), "2d");
        assert_eq!(duration(1800), "30m");
    }
}
