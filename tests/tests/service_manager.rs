//! The daemons under systemd's notify protocol (`Type=notify`, `WatchdogSec=`), spoken to a
//! socket the test binds where systemd would: each says `READY=1` once it serves, feeds the
//! watchdog at half its timeout while it is live, says `RELOADING=1` then `READY=1` around a
//! SIGHUP's reload, and `STOPPING=1` when told to stop. The unit files themselves are checked by
//! `systemd-analyze` in `deploy_units.rs`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{binary, free_port};

/// The notify socket, read with a deadline.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Manager { socket }
    }

    /// Datagrams until one holds `wanted`, within `limit`; all of them, that one last.
    fn until(&self, wanted: &str, limit: Duration, child: &mut Child) -> Vec<String> {
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while started.elapsed() < limit {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..n]).to_string();
                let done = message.lines().any(|line| line == wanted);
                seen.push(message);
                if done {
                    return seen;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the daemon exited ({status}) before {wanted}: {seen:?}");
            }
        }
        panic!("no {wanted} within {limit:?}: {seen:?}");
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts `program` with `args` as systemd would under `Type=notify` with `WatchdogSec=1`.
fn start(program: &str, args: &[String], socket: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(binary(program))
        .args(args)
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "1000000")
        .env("NEXUS_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Ready, two watchdog pings, a reload, and stopping, from `child` on `manager`.
fn check_lifecycle(manager: &Manager, child: &mut Child, ready_says: &str, log: &Path) {
    let limit = Duration::from_secs(30);
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let seen = manager.until("READY=1", limit, child);
    let ready = seen.last().unwrap();
    assert!(
        ready.contains("STATUS=") && ready.contains(ready_says),
        "{seen:?}\n{}",
        log()
    );
    // WatchdogSec=1: a ping every half second.
    for _ in 0..2 {
        manager.until("WATCHDOG=1", Duration::from_secs(3), child);
    }
    signal(child, "HUP");
    manager.until("RELOADING=1", Duration::from_secs(5), child);
    manager.until("READY=1", Duration::from_secs(5), child);
    signal(child, "TERM");
    manager.until("STOPPING=1", Duration::from_secs(10), child);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < limit, "it stops: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_coordinator_and_an_agent_speak_the_notify_protocol() {
    let pki = TestPki::new();
    pki.issue(&pki::coordinator(1));
    let dir = pki.scratch("service-manager");
    let address = format!("127.0.0.1:{}", free_port());
    let coordinator_args: Vec<String> = [
        "--node-id",
        "1",
        "--listen",
        &address,
        "--data-dir",
        &dir.join("coordinator").display().to_string(),
        "--tls-dir",
        &pki.dir().display().to_string(),
        "--http-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let socket = dir.join("coordinator.notify");
    let manager = Manager::bind(&socket);
    let log = dir.join("coordinator.log");
    let mut coordinator = KillOnDrop(start("nexus-coordinator", &coordinator_args, &socket, &log));
    check_lifecycle(
        &manager,
        &mut coordinator.0,
        &format!("coordinator 1 serving on {address}"),
        &log,
    );

    // The agent, against that coordinator started again (ready without waiting for it: the link
    // keeps trying on its own).
    let _coordinator = KillOnDrop(
        Command::new(binary("nexus-coordinator"))
            .args(&coordinator_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    pki.issue(&pki::agent("notified"));
    let agent_args: Vec<String> = [
        "--host-id",
        "notified",
        "--coordinator",
        &address,
        "--data-dir",
        &dir.join("agent").display().to_string(),
        "--tls-dir",
        &pki.dir().display().to_string(),
        "--runtime",
        "hollow",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let socket = dir.join("agent.notify");
    let manager = Manager::bind(&socket);
    let log = dir.join("agent.log");
    let mut agent = KillOnDrop(start("nexus-agent", &agent_args, &socket, &log));
    check_lifecycle(&manager, &mut agent.0, "agent notified running", &log);
}

/// A child killed with SIGKILL when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
