//! An online restore on a real fleet: three `nexus-coordinator`s and a Docker `nexus-agent`,
//! driven through the `nexus` CLI. Three workspaces are backed up; one is destroyed and a fourth
//! made; the backup is restored on the running cluster. The three come back running (the
//! destroyed one made again), the two that ran all along keep their containers (same ids, never
//! restarted), the fourth's container keeps running and is reported as an orphan (by `admin
//! workspace orphans` and `admin health-check`) until an admin removes it. Before that, another
//! cluster's backup and a damaged file are refused with their codes, and nothing changes; with
//! `--force` the other cluster's backup is restored.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use nexus_protocol::backup;
use nexus_protocol::identity::Role;
use nexus_tests::docker_fleet::DockerFleet;
use nexus_tests::eventually;
use serde_json::Value;

const ADMIN: &str = "root";
/// The newest state format the coordinators of this build read.
const STATE_FORMAT: u32 = nexus_coordinator::state::STATE_FORMAT;

fn admin(fleet: &DockerFleet, args: &[&str]) -> Value {
    fleet.ok(ADMIN, Role::Admin, args)
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The ids of `workspace`'s containers on `host`, in any state (by the agent's labels).
fn containers_of(host: &str, workspace: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=nexus.host={host}"),
        "--filter",
        &format!("label=nexus.workspace={workspace}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// A container's (running, started at) as the engine says.
fn started(id: &str) -> (bool, String) {
    let text = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.StartedAt}}",
        id,
    ]);
    let (running, at) = text.split_once(' ').unwrap_or_else(|| panic!("{text:?}"));
    (running == "true", at.to_string())
}

/// Each workspace's only container on `host`, with whether it runs and when it started.
fn the_container(host: &str, workspace: &str) -> (String, bool, String) {
    let ids = containers_of(host, workspace);
    assert_eq!(ids.len(), 1, "{workspace} has one container: {ids:?}");
    let (running, at) = started(&ids[0]);
    (ids[0].clone(), running, at)
}

/// Workspace names and states, as an admin lists them.
fn states(fleet: &DockerFleet) -> BTreeMap<String, String> {
    fleet
        .workspaces()
        .into_iter()
        .map(|(name, state, _)| (name, state))
        .collect()
}

fn orphans(fleet: &DockerFleet) -> Vec<Value> {
    admin(fleet, &["admin", "workspace", "orphans"])["orphans"]
        .as_array()
        .unwrap()
        .clone()
}

/// The health check `kind` of `target` in `admin health-check`'s JSON.
fn health_check(fleet: &DockerFleet, kind: &str, target: &str) -> Value {
    let out = fleet.run(ADMIN, Role::Admin, &["admin", "health-check"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == kind && c["target"] == target)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} {target} in {report}"))
}

#[tokio::test]
async fn an_online_restore_brings_the_backup_back_and_leaves_newer_containers_as_orphans() {
    let fleet = DockerFleet::start("rst", 1).await;
    let host = fleet.hosts[0].clone();
    for name in ["alpha", "bravo", "charlie"] {
        fleet.create_sleeper(name);
    }
    let dir = fleet.pki.scratch("backups");
    let file = dir.join("backup.nxbackup");
    let created = admin(
        &fleet,
        &[
            "admin",
            "backup",
            "create",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();

    // After the backup: charlie destroyed, delta made.
    fleet.ok("ada", Role::User, &["workspace", "destroy", "charlie"]);
    fleet.create_sleeper("delta");
    assert!(containers_of(&host, "charlie").is_empty());
    let before: BTreeMap<&str, (String, bool, String)> = ["alpha", "bravo", "delta"]
        .into_iter()
        .map(|name| (name, the_container(&host, name)))
        .collect();
    assert!(before.values().all(|(_, running, _)| *running));
    let states_before = states(&fleet);

    // Another cluster's backup (another CA's fingerprint), without --force: refused, nothing
    // changes. The CLI uploads it; the coordinator refuses it.
    let bytes = std::fs::read(&file).unwrap();
    let decoded = backup::decode(&bytes, STATE_FORMAT).unwrap();
    let mut theirs = decoded.header.clone();
    theirs.cluster = "0".repeat(64);
    theirs.id = format!("{}-7", decoded.header.id);
    let foreign = dir.join("foreign.nxbackup");
    std::fs::write(&foreign, backup::encode(&theirs, decoded.payload).unwrap()).unwrap();
    let (code, message) = fleet.refused(
        ADMIN,
        Role::Admin,
        &[
            "admin",
            "backup",
            "restore",
            "--file",
            foreign.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(code, "BACKUP_CLUSTER_MISMATCH", "{message}");
    // A damaged file: refused before anything is sent.
    let mut damaged = bytes.clone();
    let at = damaged.len() - 100;
    damaged[at] ^= 0x20;
    let damaged_file = dir.join("damaged.nxbackup");
    std::fs::write(&damaged_file, &damaged).unwrap();
    let (code, message) = fleet.refused(
        ADMIN,
        Role::Admin,
        &[
            "admin",
            "backup",
            "restore",
            "--file",
            damaged_file.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(code, "BACKUP_CORRUPT", "{message}");
    // Without a terminal and without --yes: refused.
    let (code, message) = fleet.refused(ADMIN, Role::Admin, &["admin", "backup", "restore", &id]);
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains("terminal"), "{message}");
    assert_eq!(states(&fleet), states_before, "nothing changed");
    for (name, container) in &before {
        assert_eq!(&the_container(&host, name), container);
    }

    // The restore.
    let restored = admin(&fleet, &["admin", "backup", "restore", &id, "--yes"]);
    assert_eq!(restored["restored"], true, "{restored}");
    assert_eq!(restored["id"], id.as_str());
    let expected: BTreeMap<String, String> = ["alpha", "bravo", "charlie"]
        .into_iter()
        .map(|name| (name.to_string(), "running".to_string()))
        .collect();
    eventually(
        "the backup's three workspaces running",
        Duration::from_secs(60),
        || async { (states(&fleet) == expected).then_some(()) },
    )
    .await;
    let charlie = eventually(
        "charlie's container made again",
        Duration::from_secs(30),
        || async {
            let ids = containers_of(&host, "charlie");
            (ids.len() == 1 && started(&ids[0]).0).then(|| ids[0].clone())
        },
    )
    .await;
    // No container duplicated, none of those that ran restarted, the orphan still running.
    for name in ["alpha", "bravo", "delta"] {
        assert_eq!(
            the_container(&host, name),
            before[name],
            "{name}'s container is the same, never restarted"
        );
    }
    assert_eq!(
        nexus_tests::docker::containers_of(&host).len(),
        4,
        "one container per workspace, and the orphan"
    );
    let events = admin(&fleet, &["admin", "workspace", "events", "charlie"]);
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("restored from backup {id}")),
        "{last}"
    );

    // The orphan: listed, and warned about by the health check.
    let found = eventually(
        "delta's container an orphan",
        Duration::from_secs(20),
        || async {
            let found = orphans(&fleet);
            (found.len() == 1).then_some(found)
        },
    )
    .await;
    assert_eq!(found[0]["workspace"], "delta");
    assert_eq!(found[0]["host"], host.as_str());
    assert_eq!(found[0]["state"], "running");
    let container = found[0]["container"].as_str().unwrap().to_string();
    let check = health_check(&fleet, "orphans", &host);
    assert_eq!(check["status"], "warn", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains(&container),
        "{check}"
    );

    // A workspace the host runs is not an orphan: refused, nothing removed.
    let (code, message) = fleet.refused(
        ADMIN,
        Role::Admin,
        &[
            "admin",
            "workspace",
            "orphans",
            "--remove",
            &format!("nexus.{host}.alpha.g1"),
            "--host",
            &host,
        ],
    );
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains("not an orphan"), "{message}");

    // On an admin's word, the orphan goes; nothing else does.
    admin(
        &fleet,
        &[
            "admin",
            "workspace",
            "orphans",
            "--remove",
            &container,
            "--host",
            &host,
        ],
    );
    assert!(containers_of(&host, "delta").is_empty());
    assert!(orphans(&fleet).is_empty());
    assert_eq!(health_check(&fleet, "orphans", &host)["status"], "ok");
    for name in ["alpha", "bravo"] {
        assert_eq!(the_container(&host, name), before[name]);
    }
    assert_eq!(the_container(&host, "charlie").0, charlie);
    assert_eq!(states(&fleet), expected);

    // With --force, the other cluster's backup (the same fleet, under another name; the leader
    // kept the upload) is restored: nothing to make, nothing restarted.
    let forced = admin(
        &fleet,
        &[
            "admin",
            "backup",
            "restore",
            "--file",
            foreign.to_str().unwrap(),
            "--yes",
            "--force",
        ],
    );
    assert_eq!(forced["id"], theirs.id.as_str(), "{forced}");
    assert_eq!(states(&fleet), expected);
    for name in ["alpha", "bravo"] {
        assert_eq!(the_container(&host, name), before[name]);
    }
    assert_eq!(the_container(&host, "charlie").0, charlie);
    assert!(orphans(&fleet).is_empty());
}
