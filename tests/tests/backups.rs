//! Backups with real processes: made on the leader and fetched by the CLI, listed, inspected and
//! verified; damaged copies (a flipped byte, a truncated file, newer formats, another cluster's)
//! refused with their codes by `admin backup inspect|verify FILE` and by `nexus-coordinator
//! restore`, which changes nothing when it refuses; the schedule keeping exactly its number; and
//! the total loss: every coordinator killed and its data deleted, three new members restored from
//! the file, and the fleet whole again with the agent's containers untouched.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nexus_protocol::backup;
use nexus_protocol::error::{ErrorCode, ErrorDetail};
use nexus_protocol::identity::Role;
use nexus_protocol::message::{AdminRequest, Request};
use nexus_tests::backups::damaged_copies;
use nexus_tests::cluster::{TestCluster, admin_request};
use nexus_tests::docker::containers_of;
use nexus_tests::docker_fleet::DockerFleet;
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{binary, cli_command};
use serde_json::Value;

/// `nexus-coordinator restore` of `file` into `data_dir` as node `node` with `peers`.
fn restore(pki: &TestPki, file: &Path, data_dir: &Path, node: u64, peers: &[String]) -> Output {
    let mut command = std::process::Command::new(binary("nexus-coordinator"));
    command
        .arg("restore")
        .arg("--from")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--node-id", &node.to_string()])
        .arg("--tls-dir")
        .arg(pki.dir());
    for peer in peers {
        command.args(["--peer", peer]);
    }
    command.output().expect("nexus-coordinator runs")
}

/// The addresses of `members`.
fn members_addresses(members: &[nexus_tests::cluster::Member]) -> Vec<std::net::SocketAddr> {
    members.iter().map(|m| m.address).collect()
}

/// Runs the block of docs/runbooks.md's disaster recovery that follows `<!-- dr-step: STEP -->`
/// with bash, as an admin's shell would: `nexus` and `nexus-coordinator` on the PATH, the CLI's
/// settings (coordinators, CA, an admin's certificate) in its environment, and `vars` set.
/// Fails the test if any command of the block fails.
fn runbook_step(
    pki: &TestPki,
    coordinators: &[std::net::SocketAddr],
    step: &str,
    vars: &[(&str, String)],
) -> Output {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbooks.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let marker = format!("<!-- dr-step: {step} -->");
    let (_, after) = text
        .split_once(&marker)
        .unwrap_or_else(|| panic!("{} has no {marker}", page.display()));
    let (_, block) = after
        .split_once("```sh\n")
        .expect("a sh block after the marker");
    let (block, _) = block.split_once("```").expect("the block's end");
    let admin = pki::user("root", Role::Admin);
    let (cert, key) = pki.paths(&admin);
    if !cert.exists() {
        pki.issue(&admin);
    }
    let bin = binary("nexus");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let list: Vec<String> = coordinators.iter().map(ToString::to_string).collect();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .env("PATH", path)
        .env("HOME", pki.scratch("home-runbook"))
        .env("NEXUS_COORDINATORS", list.join(","))
        .env("NEXUS_CA", pki.ca_cert_path())
        .env("NEXUS_CERT", cert)
        .env("NEXUS_KEY", key)
        .env_remove("NEXUS_CONFIG")
        .env_remove("NEXUS_OUTPUT")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the runbook's {step} step failed:\n{block}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The admin CLI against `cluster`, with JSON output.
fn admin(pki: &TestPki, cluster: &TestCluster, args: &[&str]) -> Output {
    let home = pki.scratch("home-root");
    cli_command(
        pki,
        &pki::user("root", Role::Admin),
        &home,
        &cluster.live_addresses(),
    )
    .args(["-o", "json"])
    .args(args)
    .output()
    .expect("nexus runs")
}

fn ok(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The code a CLI command failed with, checked against its exit code.
fn refused_with(out: &Output) -> String {
    assert!(!out.status.success(), "it succeeded");
    let error: Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let code = error["error"]["code"].as_str().unwrap().to_string();
    let known = ErrorCode::ALL
        .into_iter()
        .find(|c| c.as_str() == code)
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(known.exit_code())));
    code
}

#[tokio::test]
async fn backups_are_fetched_checked_and_damaged_ones_refused_everywhere() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    // No scheduled backup may come in between: an emptied directory is one due at once.
    ok(
        &admin(
            &pki,
            &cluster,
            &["admin", "backup", "schedule", "--every", "0"],
        ),
        "schedule off",
    );
    let work = pki.scratch("work");
    let file = work.join("fleet.nxbackup");

    let made = ok(
        &admin(
            &pki,
            &cluster,
            &[
                "admin",
                "backup",
                "create",
                "--file",
                file.to_str().unwrap(),
            ],
        ),
        "create",
    );
    let mut keys: Vec<&str> = made
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "id", "index", "sha256", "size_bytes", "term"]
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, made["size_bytes"].as_u64().unwrap());
    let decoded = backup::decode(&bytes, u32::MAX).unwrap();
    assert_eq!(decoded.sha256, made["sha256"]);
    assert_eq!(decoded.header.id, made["id"]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never replaced.
    let again = admin(
        &pki,
        &cluster,
        &[
            "admin",
            "backup",
            "create",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(refused_with(&again), "INVALID_ARGUMENT");

    let id = made["id"].as_str().unwrap();
    let listed = ok(&admin(&pki, &cluster, &["admin", "backup", "list"]), "list");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == id && b["location"] == 1),
        "{listed}"
    );
    for args in [
        ["admin", "backup", "inspect", id],
        ["admin", "backup", "verify", id],
        ["admin", "backup", "inspect", file.to_str().unwrap()],
        ["admin", "backup", "verify", file.to_str().unwrap()],
    ] {
        ok(&admin(&pki, &cluster, &args), &args.join(" "));
    }

    // Uploaded to a coordinator that lost it, the file is kept and verified there; a damaged
    // copy is refused with its code and nothing is kept.
    let backups_dir = cluster.members[0].data_dir.join("backups");
    std::fs::remove_file(backups_dir.join(format!("{id}.nxbackup"))).unwrap();
    let settings = nexus_cli::settings::Settings {
        coordinators: cluster
            .live_addresses()
            .iter()
            .map(ToString::to_string)
            .collect(),
        ca: pki.ca_cert_path(),
        cert: pki.paths(&pki::user("root", Role::Admin)).0,
        key: pki.paths(&pki::user("root", Role::Admin)).1,
        request_id: None,
    };
    let coordinator = nexus_cli::fleet::Daemon::Coordinator {
        id: nexus_protocol::NodeId::new(1).unwrap(),
        address: cluster.members[0].address.to_string(),
    };
    let kept = nexus_cli::commands::restore::upload(&settings, &coordinator, &bytes)
        .await
        .unwrap();
    assert_eq!(kept.header.id, id);
    assert_eq!(kept.verified, Some(true));
    // What the directory holds before and after (the schedule is off: see above).
    let names = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&backups_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = names();
    let damaged = &damaged_copies(&bytes)[0];
    let refused = nexus_cli::commands::restore::upload(&settings, &coordinator, &damaged.1)
        .await
        .unwrap_err();
    assert_eq!(refused.error.code, damaged.2);
    assert_eq!(names(), before, "the refused upload kept nothing");
    ok(
        &admin(&pki, &cluster, &["admin", "backup", "verify", id]),
        "verify the upload",
    );

    // Each damaged copy: refused by inspect, verify and restore, with its code; the restore
    // leaves no data dir behind.
    pki.issue(&pki::coordinator(2));
    for (damage, copy, code) in damaged_copies(&bytes) {
        let path = work.join(format!("{damage:?}.nxbackup"));
        std::fs::write(&path, &copy).unwrap();
        for verb in ["inspect", "verify"] {
            let out = admin(
                &pki,
                &cluster,
                &["admin", "backup", verb, path.to_str().unwrap()],
            );
            assert_eq!(refused_with(&out), code.as_str(), "{verb} {damage:?}");
        }
        let data_dir = work.join(format!("restored-{damage:?}"));
        let out = restore(&pki, &path, &data_dir, 2, &[]);
        assert_eq!(
            out.status.code(),
            Some(i32::from(code.exit_code())),
            "restore {damage:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(code.as_str()),
            "{damage:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!data_dir.exists(), "{damage:?} left {}", data_dir.display());
    }

    // A data dir that holds anything is never written into.
    let busy = pki.scratch("busy");
    std::fs::write(busy.join("keep.txt"), b"mine").unwrap();
    let out = restore(&pki, &file, &busy, 2, &[]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(ErrorCode::InvalidArgument.exit_code()))
    );
    let left: Vec<_> = std::fs::read_dir(&busy).unwrap().collect();
    assert_eq!(left.len(), 1);
    assert_eq!(std::fs::read(busy.join("keep.txt")).unwrap(), b"mine");

    // The good file restores.
    let out = restore(&pki, &file, &work.join("restored"), 2, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(work.join("restored/raft").is_dir());
}

#[tokio::test]
async fn scheduled_backups_keep_exactly_their_number_each_verifiable() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 1, &[]).await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let schedule = ok(
        &admin(
            &pki,
            &cluster,
            &["admin", "backup", "schedule", "--every", "1", "--keep", "2"],
        ),
        "schedule",
    );
    assert_eq!(schedule, serde_json::json!({"every_secs": 1, "keep": 2}));
    // Backups come and go: once five different ones were seen, at least three were pruned.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually(
        "five scheduled backups",
        Duration::from_secs(30),
        || async {
            let listed = ok(&admin(&pki, &cluster, &["admin", "backup", "list"]), "list");
            let mut seen = seen.lock().unwrap();
            for backup in listed.as_array().unwrap() {
                seen.insert(backup["id"].as_str().unwrap().to_string());
            }
            (seen.len() >= 5).then_some(())
        },
    )
    .await;
    ok(
        &admin(
            &pki,
            &cluster,
            &["admin", "backup", "schedule", "--every", "0"],
        ),
        "schedule off",
    );
    // A round under way when the schedule was turned off still prunes after it writes.
    let ids: Vec<String> = eventually("the newest two kept", Duration::from_secs(10), || async {
        let listed = ok(&admin(&pki, &cluster, &["admin", "backup", "list"]), "list");
        let ids: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect();
        (ids.len() == 2).then_some(ids)
    })
    .await;
    for id in &ids {
        let verified = ok(
            &admin(&pki, &cluster, &["admin", "backup", "verify", id]),
            "verify",
        );
        assert_eq!(verified[0]["ok"], true, "{verified}");
    }
}

/// A coordinator that does not lead prunes its own backup directory to the schedule's `keep`
/// (here as it starts, a follower): a former leader's backups do not stay beyond it.
#[tokio::test]
async fn a_coordinator_that_does_not_lead_prunes_its_backups_too() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster
        .leader(&pki, Duration::from_secs(20))
        .await
        .node
        .get();
    ok(
        &admin(
            &pki,
            &cluster,
            &["admin", "backup", "schedule", "--every", "0", "--keep", "2"],
        ),
        "schedule",
    );
    // A second apart, so that their ids sort by time as text.
    for _ in 0..4 {
        ok(
            &admin(&pki, &cluster, &["admin", "backup", "create"]),
            "create",
        );
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    let backups_of =
        |cluster: &TestCluster, index: usize| cluster.members[index].data_dir.join("backups");
    let made: Vec<std::path::PathBuf> =
        std::fs::read_dir(backups_of(&cluster, cluster.index_of(leader)))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == backup::EXTENSION))
            .collect();
    assert_eq!(made.len(), 4, "{made:?}");
    // A follower that holds them all, as a former leader would.
    let follower = cluster.members.iter().position(|m| m.id != leader).unwrap();
    cluster.kill(follower);
    let dir = backups_of(&cluster, follower);
    std::fs::create_dir_all(&dir).unwrap();
    for path in &made {
        std::fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
    }
    cluster.restart(&pki, follower).await;
    let mut newest: Vec<String> = made
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    newest.sort();
    let newest = newest.split_off(2);
    eventually(
        "the follower pruned to two",
        Duration::from_secs(20),
        || {
            let mut kept: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(&format!(".{}", backup::EXTENSION)))
                .collect();
            kept.sort();
            let done = kept == newest;
            async move { done.then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_fleet_that_lost_every_coordinator_comes_back_from_a_backup_file() {
    let mut fleet = DockerFleet::start("bkp", 1).await;
    let host = fleet.hosts[0].clone();
    for name in ["alpha", "beta", "gamma"] {
        fleet.create_sleeper(name);
    }
    let before = fleet.workspaces();
    let mut containers = containers_of(&host);
    containers.sort();
    assert_eq!(containers.len(), 3, "{containers:?}");
    let file = fleet.pki.scratch("offsite").join("fleet.nxbackup");
    let made = fleet.ok(
        "root",
        Role::Admin,
        &[
            "admin",
            "backup",
            "create",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert!(file.is_file(), "{made}");

    // Every coordinator dies, and every data directory is lost.
    for index in 0..fleet.cluster.members.len() {
        fleet.cluster.kill(index);
    }
    for member in &fleet.cluster.members {
        std::fs::remove_dir_all(&member.data_dir).unwrap();
    }

    // docs/runbooks.md's disaster recovery, as written: its blocks run by bash, with the CLI's
    // settings in the environment and the runbook's variables set. Step 1: check the file, then
    // make each new member's data directory from it, on the old members' addresses.
    let members = fleet.cluster.members.clone();
    let shell = |step: &str, vars: &[(&str, String)]| {
        runbook_step(&fleet.pki, &members_addresses(&members), step, vars)
    };
    shell("check", &[("BACKUP", file.display().to_string())]);
    for member in &members {
        let peers: Vec<String> = members
            .iter()
            .filter(|m| m.id != member.id)
            .map(|m| format!("{}={}", m.id, m.address))
            .collect();
        shell(
            "each-member",
            &[
                ("BACKUP", file.display().to_string()),
                ("DATA_DIR", member.data_dir.display().to_string()),
                ("NODE_ID", member.id.to_string()),
                ("PEER_A", peers[0].clone()),
                ("PEER_B", peers[1].clone()),
                ("PKI_DIR", fleet.pki.dir().display().to_string()),
            ],
        );
    }
    // The runbook starts them with systemd; here, the harness on the same flags.
    for index in 0..members.len() {
        fleet.cluster.restart(&fleet.pki, index).await;
    }
    let leader = fleet
        .cluster
        .leader(&fleet.pki, Duration::from_secs(20))
        .await
        .node;

    // Only the leader makes backups: a follower names it.
    let follower = members.iter().find(|m| m.id != leader.get()).unwrap();
    eventually(
        "a follower naming the leader",
        Duration::from_secs(10),
        || async {
            let refused = admin_request(
                &fleet.pki,
                follower.address,
                Request::Admin(AdminRequest::BackupCreate),
            )
            .await
            .unwrap_err();
            assert_eq!(refused.code, ErrorCode::NotLeader, "{refused:?}");
            matches!(
                refused.detail,
                Some(ErrorDetail::NotLeader { leader: Some(named), .. }) if named == leader
            )
            .then_some(())
        },
    )
    .await;

    // The fleet is whole: the same workspaces, running, on the same host; the agent is back.
    let after = fleet.all_running(Duration::from_secs(60)).await;
    assert_eq!(after, before);
    let mut hosts = Value::Null;
    let heard = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            hosts = fleet.ok("root", Role::Admin, &["admin", "hosts"]);
            let heard = hosts.as_array().into_iter().flatten().any(|h| {
                h["host_id"] == host.as_str()
                    && h["status"] == "ready"
                    && !h["last_heartbeat_ms"].is_null()
            });
            if heard {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        heard.is_ok(),
        "the agent not heard again in 30 s: {hosts}\n{}",
        fleet.logs()
    );
    // Step 4 of the runbook: every command of it succeeds (health-check included: no orphans).
    // The disk check judges this machine's own disk, which the restore does not touch (a CI
    // machine with 4 % free failed it): it may not fail the step.
    shell("validate", &[("NEXUS_DISK_FAIL_BELOW", "0".to_string())]);
    // Its containers were kept, not made again.
    let mut kept = containers_of(&host);
    kept.sort();
    assert_eq!(kept, containers, "{}", fleet.logs());
    assert!(
        fleet.agents.lock().unwrap()[0]
            .as_mut()
            .unwrap()
            .process
            .exited()
            .is_none(),
        "the agent kept running"
    );
}

#[test]
fn the_cli_checks_files_against_the_state_format_the_coordinator_writes() {
    assert_eq!(
        nexus_cli::commands::restore::STATE_FORMAT,
        nexus_coordinator::state::STATE_FORMAT
    );
}
