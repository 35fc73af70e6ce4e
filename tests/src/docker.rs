//! The shared Docker engine, through the `docker` CLI: cleaning up what an agent of a test or a
//! benchmark made; and a private engine a test may stop.

use std::process::Command;

pub use nexus_fixtures::dockerd::PrivateEngine;
use nexus_fixtures::dockerd::Subnet;

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

/// A dockerd of the test's own, with [`TEST_IMAGE`]: the harness's engines take subnets of
/// 10.253.0.0/16, so that they never meet the agent suite's (10.254.0.0/16) when both run.
pub fn private_engine() -> PrivateEngine {
    PrivateEngine::start(
        Subnet {
            block: 253,
            slot: 0,
        },
        TEST_IMAGE,
        None,
    )
}
