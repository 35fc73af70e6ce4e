//! The Docker engine that the container suites need: it answers, and the local test image
//! (`deploy/dev/prepare.sh` builds it: no registry is reachable) runs a container.

use std::process::Command;

const IMAGE: &str = "nexus-test/busybox:latest";

#[test]
fn the_engine_answers_and_the_test_image_runs() {
    let version = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .expect("the docker CLI");
    assert!(
        version.status.success(),
        "no Docker engine answers; run deploy/dev/prepare.sh (as root) first: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let name = format!("nexus-engine-check-{}", std::process::id());
    let run = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--name",
            &name,
            "--label",
            "nexus.test=engine",
            IMAGE,
            "sh",
            "-c",
            "echo hello from $(uname -s)",
        ])
        .output()
        .expect("docker run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "hello from Linux"
    );
}
