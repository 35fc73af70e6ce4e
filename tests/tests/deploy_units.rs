//! The systemd units of `deploy/systemd`, as the packages install them: `systemd-analyze verify`
//! passes on each, `systemd-analyze security` scores them no worse than docs/operations.md says,
//! and on a host with systemd as its init (a Debian container) they run our daemons: the
//! coordinator as the `nexus` user that the sysusers entry makes, each started once it says
//! `READY=1`, reloaded by `systemctl reload` (its status saying so), with the watchdog armed, and
//! stopped cleanly.

use std::time::{Duration, Instant};

use nexus_protocol::identity::Role;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::systemd::{SystemdHost, analyze, binary_mounts, exposure, unit_root, wait_for};

/// The scores docs/operations.md records ("Run the daemons"); a change that loosens a unit's
/// sandbox fails here until the documentation says so.
const COORDINATOR_EXPOSURE: f64 = 1.4;
const AGENT_EXPOSURE: f64 = 2.3;

#[test]
fn the_units_verify_and_keep_their_hardening() {
    let root = unit_root();
    for unit in ["nexus-coordinator.service", "nexus-agent.service"] {
        // The man pages the units name are the packages' (`packages.rs` finds them installed).
        let verified = analyze(root.path(), &["verify", "--man=no", unit]);
        assert!(
            verified.status.success() && verified.stderr.is_empty(),
            "systemd-analyze verify {unit}: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
    }
    let coordinator = exposure(root.path(), "nexus-coordinator.service");
    assert!(coordinator <= COORDINATOR_EXPOSURE, "{coordinator}");
    let agent = exposure(root.path(), "nexus-agent.service");
    assert!(agent <= AGENT_EXPOSURE, "{agent}");
}

const COORDINATOR_CONFIG: &str = r#"node_id = 1
listen = "127.0.0.1:7400"
peers = []
data_dir = "/var/lib/nexus/coordinator"
tls_dir = "/var/lib/nexus/coordinator/pki"
http_listen = "127.0.0.1:7480"
"#;

const AGENT_CONFIG: &str = r#"host_id = "unit-host"
coordinators = ["127.0.0.1:7400"]
data_dir = "/var/lib/nexus/agent"
runtime = "hollow"
heartbeat_interval = 0.5
listen = "127.0.0.1:7401"
http_listen = "127.0.0.1:7481"
"#;

#[test]
fn the_units_run_the_daemons_under_systemd() {
    let pki = TestPki::new();
    pki.issue(&pki::coordinator(1));
    pki.issue(&pki::agent("unit-host"));
    pki.issue(&pki::user("root", Role::Admin));
    let mounts = binary_mounts();
    let mounts: Vec<&str> = mounts.iter().map(String::as_str).collect();
    let host = SystemdHost::start(&format!("nexus-units-{}", std::process::id()), &mounts);
    host.install_units();
    assert!(host.ok(&["id", "nexus"]).contains("(nexus)"));

    // The files an installation lays out: configuration in /etc/nexus, each daemon's PKI in its
    // state directory.
    host.write("/etc/nexus/coordinator.toml", COORDINATOR_CONFIG);
    host.write("/etc/nexus/agent.toml", AGENT_CONFIG);
    for daemon in ["coordinator", "agent"] {
        host.ok(&["mkdir", "-p", &format!("/var/lib/nexus/{daemon}/pki")]);
    }
    let (cert, key) = pki.paths(&pki::coordinator(1));
    for file in [pki.ca_cert_path(), cert, key, pki.dir().join("ca.key")] {
        host.copy_in(&file, "/var/lib/nexus/coordinator/pki/");
    }
    let (cert, key) = pki.paths(&pki::agent("unit-host"));
    for file in [pki.ca_cert_path(), cert, key] {
        host.copy_in(&file, "/var/lib/nexus/agent/pki/");
    }
    host.ok(&["chown", "-R", "nexus:nexus", "/var/lib/nexus/coordinator"]);
    let (cert, key) = pki.paths(&pki::user("root", Role::Admin));
    host.ok(&["mkdir", "-p", "/root/pki"]);
    for file in [pki.ca_cert_path(), cert, key] {
        host.copy_in(&file, "/root/pki/");
    }

    // Type=notify: `systemctl start` returns once the daemon said READY=1.
    for (unit, says) in [
        (
            "nexus-coordinator",
            "coordinator 1 serving on 127.0.0.1:7400",
        ),
        ("nexus-agent", "agent unit-host running"),
    ] {
        let started = host.exec(&["systemctl", "start", unit]);
        assert!(started.status.success(), "{}", host.journal(unit));
        assert_eq!(host.property(unit, "ActiveState"), "active");
        assert_eq!(
            host.property(unit, "StatusText"),
            says,
            "{}",
            host.journal(unit)
        );
    }
    let pid = host.property("nexus-coordinator", "MainPID");
    assert_eq!(host.ok(&["ps", "-o", "user=", "-p", &pid]).trim(), "nexus");

    // The agent registers with the coordinator, through the CLI as an admin on that host.
    let cli = [
        "nexus",
        "--coordinator",
        "127.0.0.1:7400",
        "--ca",
        "/root/pki/ca.pem",
        "--cert",
        "/root/pki/user-root.pem",
        "--key",
        "/root/pki/user-root.key",
        "-o",
        "json",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts = host.exec(&[&cli[..], &["admin", "hosts"]].concat());
        let hosts = String::from_utf8_lossy(&hosts.stdout).to_string();
        if hosts.contains("\"unit-host\"") && hosts.contains("\"ready\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent registers: {hosts}\n{}",
            host.journal("nexus-agent")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A reload is a SIGHUP, not a restart; the watchdog (30 s, fed every 15 s) is armed.
    for unit in ["nexus-coordinator", "nexus-agent"] {
        host.ok(&["systemctl", "reload", unit]);
        // `kill -HUP` returns before the daemon has read its file again: its status says when.
        wait_for(
            "the reload's status",
            Duration::from_secs(10),
            || host.property(unit, "StatusText"),
            |status| status == "serving; configuration reloaded",
        );
        assert_eq!(host.property(unit, "ActiveState"), "active");
        assert_eq!(
            host.property(unit, "NRestarts"),
            "0",
            "{}",
            host.journal(unit)
        );
        assert_eq!(host.property(unit, "WatchdogUSec"), "30s");
    }
    assert_eq!(host.property("nexus-agent", "KillMode"), "process");

    // A stop is clean: SIGTERM, and the daemon exits by itself.
    for unit in ["nexus-agent", "nexus-coordinator"] {
        host.ok(&["systemctl", "stop", unit]);
        assert_eq!(host.property(unit, "ActiveState"), "inactive");
        assert_eq!(
            host.property(unit, "Result"),
            "success",
            "{}",
            host.journal(unit)
        );
    }
}
