//! The shared Docker engine, through the `docker` CLI: cleaning up what an agent of a test or a
//! benchmark made; and a private engine a test may stop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image the container suites run (`deploy/dev/prepare.sh` builds it: no registry is
/// reachable).
pub const TEST_IMAGE: &str = "nexus-test/busybox:latest";

fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// The ids of every container labelled for `host`, in any state.
pub fn containers_of(host: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=nexus.host={host}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// Removes every container and network labelled for `host`. Stop the agent first, or it makes
/// them again.
pub fn remove_host(host: &str) {
    for id in containers_of(host) {
        docker(&["rm", "-f", &id]);
    }
    let filter = format!("label=nexus.host={host}");
    for id in docker(&["network", "ls", "-q", "--filter", &filter]).split_whitespace() {
        docker(&["network", "rm", id]);
    }
}

/// Removes `host`'s containers and networks when dropped, so a failing test leaves nothing.
#[derive(Debug)]
pub struct HostCleanup(pub String);

impl Drop for HostCleanup {
    fn drop(&mut self) {
        remove_host(&self.0);
    }
}

/// A dockerd of the test's own (socket, data and state dirs in a temporary directory, a bridge
/// interface of its own, no iptables rules), so stopping it disturbs no other test. The agent's
/// own suite (`agent/tests/docker.rs`) has its twin, which this harness cannot lend it; this one
/// takes subnets of 10.253.0.0/16, that one of 10.254.0.0/16.
///
/// Not `--bridge none`: dockerd then deletes any `docker0` it finds, and that is the shared
/// engine's.
#[derive(Debug)]
pub struct PrivateEngine {
    dir: tempfile::TempDir,
    bridge: String,
    child: Option<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateEngine {
    /// Starts one, with [`TEST_IMAGE`] loaded from the shared engine.
    pub fn start() -> PrivateEngine {
        let dir = tempfile::Builder::new()
            .prefix("nexus-dockerd-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let id = std::process::id();
        let bridge = format!("nxtp{}", id % 100_000);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.253.{}.1/24", id % 250),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        let mut engine = PrivateEngine {
            dir,
            bridge,
            child: None,
        };
        engine.restart();
        engine.load_test_image();
        engine
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn cli(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()));
        command
    }

    fn load_test_image(&self) {
        let mut save = Command::new("docker")
            .args(["save", TEST_IMAGE])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let load = self
            .cli()
            .arg("load")
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success());
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
    }

    /// Starts it (again) and waits until it answers.
    pub fn restart(&mut self) {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .args(["--bridge", &self.bridge, "--iptables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.child = Some(child);
        let started = Instant::now();
        while self
            .cli()
            .arg("info")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the private dockerd did not come up: {}",
                std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it as an operator would (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // Its containers go with it: remove them while it runs, so no mount outlives it.
        if self.child.is_some() {
            let ids = self.cli().args(["ps", "-aq"]).output();
            if let Ok(ids) = ids {
                for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                    let _ = self.cli().args(["rm", "-f", id]).output();
                }
            }
        }
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
