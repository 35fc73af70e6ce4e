//! Configuration on real processes: a coordinator and an agent started with config files; the
//! log filter changed in the file and reloaded (`nexus config reload` on one, SIGHUP on the
//! other) is in force at once, a flag still wins over the file, the agent's certificate is
//! rotated without a restart (new connections present the new one, an open one keeps working),
//! and a broken file is refused with the old settings still in force and the error named.
//! Beside them, `nexus config validate` and `nexus config edit` on files.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nexus_protocol::identity::{IdentityKind, Role};
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::transport::{Connection, Connector, Credentials, TransportConfig};
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, CoordinatorProcess, cli_command, connect, free_port};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Lines the daemon's stderr (its process log) wrote at DEBUG.
fn debug_lines(log: &str) -> usize {
    log.lines().filter(|line| line.contains(" DEBUG ")).count()
}

/// The agent's users' endpoint, as the coordinator knows it.
async fn agent_address(pki: &TestPki, coordinator: SocketAddr) -> SocketAddr {
    let admin = pki::user("harness", Role::Admin);
    eventually("the agent's endpoint", Duration::from_secs(20), || async {
        let connection = connect(pki, &admin, coordinator).await.ok()?;
        match connection
            .request(Request::Admin(AdminRequest::Endpoints))
            .await
        {
            Ok(Response::Endpoints(endpoints)) => endpoints
                .first()
                .and_then(|(_, address)| address.parse().ok()),
            _ => None,
        }
    })
    .await
}

/// A fresh connection to the agent at `address` as an admin.
async fn to_agent(pki: &TestPki, address: SocketAddr) -> Connection {
    let admin = pki::user("harness", Role::Admin);
    let credentials = Credentials::from_pki_dir(pki.dir(), &admin).expect("admin credentials");
    Connector::new(&credentials, TransportConfig::default())
        .expect("a connector")
        .connect(address, "127.0.0.1", &[IdentityKind::Agent])
        .await
        .expect("the agent answers")
}

#[tokio::test]
async fn a_reload_applies_the_filter_rotates_a_certificate_and_refuses_a_broken_file() {
    let pki = TestPki::new();
    let files = pki.scratch("config");
    let coordinator_file = files.join("coordinator.toml");
    let agent_file = files.join("agent.toml");
    // The harness sets NEXUS_LOG=debug; the files' filter wins over it.
    std::fs::write(&coordinator_file, "log_filter = \"info\"\n").unwrap();
    std::fs::write(
        &agent_file,
        "log_filter = \"info\"\nstats_interval = 10.0\n",
    )
    .unwrap();
    pki.issue(&pki::coordinator(1));
    let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let coordinator = CoordinatorProcess::start_with(
        &pki,
        1,
        address,
        pki.scratch("coordinator-1"),
        &[],
        &["--config", coordinator_file.to_str().unwrap()],
    )
    .await;
    let agent = AgentProcess::start(
        &pki,
        "h1",
        &[address],
        &["--config", agent_file.to_str().unwrap()],
    );
    let admin = pki::user("ops", Role::Admin);
    let home = pki.scratch("home-ops");
    let nexus = |args: &[&str]| -> Output {
        cli_command(&pki, &admin, &home, &[address])
            .args(args)
            .output()
            .expect("nexus runs")
    };
    let agent_at = agent_address(&pki, address).await;

    // The daemons' own configuration, as an admin sees it: the file's filter.
    let shown = nexus(&["config", "show", "--host", "h1"]);
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(
        text(&shown).contains("log_filter = \"info\""),
        "{}",
        text(&shown)
    );
    let shown = nexus(&["config", "show", "--node", "1"]);
    assert!(
        text(&shown).contains("log_filter = \"info\""),
        "{}",
        text(&shown)
    );
    // Connections come and go (each ends with a DEBUG line when it is let through): none yet.
    for _ in 0..3 {
        assert!(nexus(&["ping"]).status.success());
        to_agent(&pki, agent_at).await.close();
    }
    assert_eq!(debug_lines(&coordinator.process.log()), 0);
    assert_eq!(debug_lines(&agent.process.log()), 0);

    // The coordinator: a new filter in the file, reloaded by request, in force at once.
    std::fs::write(&coordinator_file, "log_filter = \"debug\"\n").unwrap();
    let reloaded = nexus(&["config", "reload", "--node", "1"]);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    assert!(
        text(&reloaded).contains("coordinator-1: applied log_filter: info -> debug"),
        "{}",
        text(&reloaded)
    );
    eventually(
        "DEBUG lines from the coordinator",
        Duration::from_secs(10),
        || async {
            assert!(nexus(&["ping"]).status.success());
            (debug_lines(&coordinator.process.log()) > 0).then_some(())
        },
    )
    .await;

    // The agent: a new filter and stats interval, and a heartbeat interval that its flag
    // (--heartbeat-interval 0.2, from the harness) overrides: reloaded by SIGHUP.
    std::fs::write(
        &agent_file,
        "log_filter = \"debug\"\nstats_interval = 2.0\nheartbeat_interval = 3.0\n",
    )
    .unwrap();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &agent.process.pid().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    eventually(
        "the agent's reload in its log",
        Duration::from_secs(10),
        || async {
            let log = agent.process.log();
            (log.contains("configuration reload (SIGHUP): applied")
                && log.contains("stats_interval"))
            .then_some(())
        },
    )
    .await;
    let log = agent.process.log();
    assert!(
        !log.contains("key=heartbeat_interval"),
        "the flag wins over the file:\n{log}"
    );
    eventually(
        "DEBUG lines from the agent",
        Duration::from_secs(10),
        || async {
            to_agent(&pki, agent_at).await.close();
            (debug_lines(&agent.process.log()) > 0).then_some(())
        },
    )
    .await;
    let shown = text(&nexus(&["config", "show", "--host", "h1"]));
    assert!(shown.contains("log_filter = \"debug\""), "{shown}");
    assert!(shown.contains("stats_interval = 2.0"), "{shown}");
    assert!(shown.contains("heartbeat_interval = 0.2"), "{shown}");

    // The agent's certificate: issued anew into the same files, reloaded, and presented by new
    // connections without a restart; a connection opened before keeps working.
    let pid = agent.process.pid();
    let before = to_agent(&pki, agent_at).await;
    let old = before.server_certificate().expect("a certificate");
    let fresh = pki.issue(&pki::agent("h1"));
    let new = fresh.own_certificate().expect("the new certificate");
    assert_ne!(old, new);
    let reloaded = nexus(&["config", "reload", "--host", "h1"]);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    assert!(
        text(&reloaded).contains("agent-h1: applied certificate"),
        "{}",
        text(&reloaded)
    );
    let after = to_agent(&pki, agent_at).await;
    assert_eq!(after.server_certificate().as_ref(), Some(&new));
    assert_eq!(agent.process.pid(), pid);
    assert!(matches!(
        before.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));

    // A broken file: refused, the error named, the old settings still in force.
    std::fs::write(&agent_file, "log_filter = \"warn\"\nbogus_key = 1\n").unwrap();
    let refused = nexus(&["config", "reload", "--host", "h1"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("bogus_key"), "{}", text(&refused));
    assert!(
        text(&refused).contains("agent-h1: nothing changed"),
        "{}",
        text(&refused)
    );
    let shown = text(&nexus(&["config", "show", "--host", "h1"]));
    assert!(shown.contains("log_filter = \"debug\""), "{shown}");
    // A value out of its range, on the coordinator: refused, the flag-named error in the answer.
    std::fs::write(&coordinator_file, "log_filter = \"warn\"\nhost_ttl = 0.0\n").unwrap();
    let refused = nexus(&["config", "reload", "--node", "1"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("--host-ttl must be between"),
        "{}",
        text(&refused)
    );
    let shown = text(&nexus(&["config", "show", "--node", "1"]));
    assert!(shown.contains("log_filter = \"debug\""), "{shown}");
    // What needs a restart is said, and not applied.
    std::fs::write(
        &coordinator_file,
        "log_filter = \"debug\"\nhost_ttl = 20.0\nmax_frame_bytes = 1048576\n",
    )
    .unwrap();
    let reloaded = text(&nexus(&["config", "reload", "--all"]));
    assert!(
        reloaded.contains("coordinator-1: applied host_ttl"),
        "{reloaded}"
    );
    assert!(
        reloaded.contains("coordinator-1: needs a restart: max_frame_bytes"),
        "{reloaded}"
    );
    assert!(reloaded.contains("agent-h1: refused"), "{reloaded}");
}

/// Runs `nexus` with no fleet: only a config file and `args`.
fn nexus_offline(home: &Path, args: &[&str]) -> Output {
    std::process::Command::new(nexus_tests::process::binary("nexus"))
        .args(args)
        .env("HOME", home)
        .env_remove("NEXUS_CONFIG")
        .env_remove("NEXUS_COORDINATORS")
        .env_remove("NEXUS_CA")
        .env_remove("NEXUS_CERT")
        .env_remove("NEXUS_KEY")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .expect("nexus runs")
}

#[test]
fn validate_names_each_problem_where_it_is_and_fails() {
    let pki = TestPki::new();
    let home = pki.scratch("home");
    let dir = pki.scratch("files");
    // A daemon's file, checked by the daemon's own binary.
    let file = dir.join("coordinator.toml");
    std::fs::write(
        &file,
        format!(
            "node_id = 1\nlisten = \"127.0.0.1:7400\"\ndata_dir = \"{}\"\ntls_dir = \"{}\"\nhost_ttl = 0.0\ntick_ms = 0\n",
            dir.join("data").display(),
            pki.dir().display()
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = nexus_offline(
        &home,
        &["config", "validate", "--kind", "coordinator", path],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{path}:5:1: --host-ttl must be between")),
        "{}",
        text(&out)
    );
    // Every problem, not only the first.
    assert!(
        text(&out).contains(&format!("{path}:6:1: --tick-ms must be between")),
        "{}",
        text(&out)
    );
    // Fixed, but the TLS directory holds no certificate for node 1.
    let fixed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("host_ttl = 0.0", "host_ttl = 9.0")
        .replace("tick_ms = 0", "tick_ms = 100");
    std::fs::write(&file, &fixed).unwrap();
    let out = nexus_offline(
        &home,
        &["config", "validate", "--kind", "coordinator", path],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains(":4:1: --tls-dir"), "{}", text(&out));
    pki.issue(&pki::coordinator(1));
    let out = nexus_offline(
        &home,
        &["config", "validate", "--kind", "coordinator", path],
    );
    assert!(out.status.success(), "{}", text(&out));
    // An agent's file with an unknown key: refused with its line and column.
    let agent = dir.join("agent.toml");
    std::fs::write(&agent, "host_id = \"h1\"\nheartbeat = 5\n").unwrap();
    let out = nexus_offline(
        &home,
        &[
            "config",
            "validate",
            "--kind",
            "agent",
            agent.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("line 2, column 1"), "{}", text(&out));
    assert!(
        text(&out).contains("unknown field `heartbeat`"),
        "{}",
        text(&out)
    );
    // The CLI's own file, the default kind.
    let cli = dir.join("cli.toml");
    std::fs::write(&cli, "coordinators = [\"c1\"]\n").unwrap();
    let out = nexus_offline(&home, &["config", "validate", cli.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{}:1:1: \"c1\" is not HOST:PORT", cli.display())),
        "{}",
        text(&out)
    );
}

#[test]
fn edit_saves_a_valid_file_and_an_aborted_edit_changes_nothing() {
    let pki = TestPki::new();
    let home = pki.scratch("home");
    let dir = pki.scratch("files");
    let config = dir.join("config.toml");
    std::fs::write(&config, "coordinators = [\"c1:7400\"]\n").unwrap();
    // An "editor" that writes what $NEW holds into the file it is given.
    let editor = dir.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nprintf '%s' \"$NEW\" > \"$1\"\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", editor.to_str().unwrap()])
        .status()
        .unwrap();
    let edit = |new: &str, answer: &str| -> Output {
        use std::io::Write;
        let mut child = std::process::Command::new(nexus_tests::process::binary("nexus"))
            .args(["--config", config.to_str().unwrap(), "config", "edit"])
            .env("HOME", &home)
            .env_remove("VISUAL")
            .env("EDITOR", &editor)
            .env("NEW", new)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Invalid, then aborted: shown with its place, and the file as it was.
    let out = edit("coordinators = [\"c1:7400\"]\nbogus = 1\n", "a\n");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(":2:1: unknown field `bogus`"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "coordinators = [\"c1:7400\"]\n"
    );
    // Valid: saved.
    let out = edit("coordinators = [\"c2:7400\"]\noutput = \"json\"\n", "");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "coordinators = [\"c2:7400\"]\noutput = \"json\"\n"
    );
    // No copy left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".edit-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // And `config show --origin` says where each setting comes from.
    let out = std::process::Command::new(nexus_tests::process::binary("nexus"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--output",
            "table",
            "config",
            "show",
            "--origin",
        ])
        .env("HOME", &home)
        .env("NEXUS_CA", "/env/ca.pem")
        .env_remove("NEXUS_COORDINATORS")
        .env_remove("NEXUS_CERT")
        .env_remove("NEXUS_KEY")
        .env_remove("NEXUS_OUTPUT")
        .output()
        .unwrap();
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let row = |key: &str| {
        shown
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {shown}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("config")[2], "flag", "{shown}");
    assert_eq!(row("coordinators")[1..], ["c2:7400", "file"], "{shown}");
    assert_eq!(row("ca")[1..], ["/env/ca.pem", "environment"], "{shown}");
    assert_eq!(row("key")[1..], ["(none)", "default"], "{shown}");
    assert_eq!(row("output")[1..], ["table", "flag"], "{shown}");
}
