//! Hosts with systemd as their init: Docker containers of [`SYSTEMD_IMAGE`] (a Debian rootfs with
//! systemd, made by `deploy/dev/prepare.sh`) running `/sbin/init`, into which a test installs
//! our binaries, units and files as the packages would and drives `systemctl`. And the unit
//! files' checks by `systemd-analyze`, in a root the test lays out.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::binary;

/// The image of a Debian host with systemd (`deploy/dev/prepare.sh` makes it).
pub const SYSTEMD_IMAGE: &str = "nexus-test/systemd:bookworm-3";

/// Where the repository's deployment files are.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// A command's standard output and error, for a failure's message.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `docker run` arguments that put our binaries at `/usr/bin` in a host (read-only bind mounts
/// of the ones cargo built), as the packages would.
pub fn binary_mounts() -> Vec<String> {
    ["nexus-coordinator", "nexus-agent", "nexus"]
        .into_iter()
        .flat_map(|program| {
            [
                "-v".to_string(),
                format!("{}:/usr/bin/{program}:ro", binary(program).display()),
            ]
        })
        .collect()
}

/// A container with systemd as PID 1, removed when dropped.
#[derive(Debug)]
pub struct SystemdHost {
    pub name: String,
}

impl SystemdHost {
    /// Starts `name` from [`SYSTEMD_IMAGE`] with `extra` `docker run` arguments (e.g.
    /// [`binary_mounts`]), and waits until systemd says the system runs.
    pub fn start(name: &str, extra: &[&str]) -> SystemdHost {
        let _ = run(Command::new("docker").args(["rm", "-f", name]));
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            // What systemd as PID 1 needs here (`--privileged` is refused on these machines).
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(ToString::to_string));
        args.extend([SYSTEMD_IMAGE.to_string(), "/sbin/init".to_string()]);
        let started = run(Command::new("docker").args(&args));
        assert!(started.status.success(), "docker run: {}", text(&started));
        let host = SystemdHost {
            name: name.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = host.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            // `degraded`: a unit of the image's own failed (none of ours is installed yet).
            if state == "running" || state == "degraded" {
                return host;
            }
            assert!(
                Instant::now() < deadline,
                "systemd in {name} did not come up: {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` in the host.
    pub fn exec(&self, args: &[&str]) -> Output {
        run(Command::new("docker").args(["exec", &self.name]).args(args))
    }

    /// Runs `args` in the host and fails the test unless it succeeds; its output.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.exec(args);
        assert!(
            output.status.success(),
            "{args:?} in {}: {}",
            self.name,
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Copies `from` (a file or a directory) on this machine to `to` in the host.
    pub fn copy_in(&self, from: &Path, to: &str) {
        let copied = run(Command::new("docker")
            .arg("cp")
            .arg(from)
            .arg(format!("{}:{to}", self.name)));
        assert!(copied.status.success(), "docker cp: {}", text(&copied));
    }

    /// Writes `contents` to `path` in the host, making its directory if it must.
    pub fn write(&self, path: &str, contents: &str) {
        if let Some(parent) = Path::new(path).parent() {
            self.ok(&["mkdir", "-p", &parent.display().to_string()]);
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, contents).unwrap();
        self.copy_in(&file, path);
    }

    /// Installs the units, the sysusers and tmpfiles entries from `deploy/systemd` where the
    /// packages put them (`<package>.service`, `.sysusers`, `.tmpfile`, as debhelper and
    /// cargo-deb name them), and applies them as the packages' scripts do.
    pub fn install_units(&self) {
        let systemd = deploy_dir().join("systemd");
        for unit in ["nexus-coordinator.service", "nexus-agent.service"] {
            self.copy_in(
                &systemd.join(unit),
                &format!("/usr/lib/systemd/system/{unit}"),
            );
        }
        self.ok(&["mkdir", "-p", "/usr/lib/sysusers.d", "/usr/lib/tmpfiles.d"]);
        self.copy_in(
            &systemd.join("nexus-coordinator.sysusers"),
            "/usr/lib/sysusers.d/nexus-coordinator.conf",
        );
        for daemon in ["nexus-coordinator", "nexus-agent"] {
            self.copy_in(
                &systemd.join(format!("{daemon}.tmpfile")),
                &format!("/usr/lib/tmpfiles.d/{daemon}.conf"),
            );
        }
        self.ok(&["systemd-sysusers", "nexus-coordinator.conf"]);
        self.ok(&[
            "systemd-tmpfiles",
            "--create",
            "nexus-coordinator.conf",
            "nexus-agent.conf",
        ]);
        self.ok(&["systemctl", "daemon-reload"]);
    }

    /// `systemctl show UNIT -p PROPERTY`'s value.
    pub fn property(&self, unit: &str, property: &str) -> String {
        let shown = self.ok(&["systemctl", "show", unit, "-p", property, "--value"]);
        shown.trim().to_string()
    }

    /// The unit's journal, for a failure's message.
    pub fn journal(&self, unit: &str) -> String {
        text(&self.exec(&["journalctl", "-u", unit, "--no-pager", "-n", "60"]))
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").args(["rm", "-f", &self.name]));
    }
}

/// A root for `systemd-analyze --root`: the units of `deploy/systemd` where the packages put
/// them, this machine's own units beside them (the targets ours name), and the programs they
/// run. `systemd-analyze verify` checks that each unit's programs exist and run.
pub fn unit_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), units.join(entry.file_name())).unwrap();
        }
    }
    let systemd = deploy_dir().join("systemd");
    for unit in ["nexus-coordinator.service", "nexus-agent.service"] {
        std::fs::copy(systemd.join(unit), units.join(unit)).unwrap();
    }
    let bin = root.path().join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let place = |from: &Path, to: &Path| {
        // A link where the root is on the same file system; else a copy.
        if std::fs::hard_link(from, to).is_err() {
            std::fs::copy(from, to).unwrap();
        }
    };
    for program in ["nexus-coordinator", "nexus-agent"] {
        place(&binary(program), &bin.join(program));
    }
    place(Path::new("/usr/bin/kill"), &bin.join("kill"));
    root
}

/// `systemd-analyze ARGS --root ROOT`.
pub fn analyze(root: &Path, args: &[&str]) -> Output {
    run(Command::new("systemd-analyze")
        .args(args)
        .arg(format!("--root={}", root.display())))
}

/// The overall exposure `systemd-analyze security --offline=yes` gives `unit` (0 to 10, lower is
/// safer).
pub fn exposure(root: &Path, unit: &str) -> f64 {
    let scored = analyze(root, &["security", "--offline=yes", "--no-pager", unit]);
    let out = text(&scored);
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score for {unit}: {out}"));
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line}"))
}

/// The Debian packages of `deploy/packages/build.sh`, from the dev build the test run made, at
/// Debian revision `revision` (`0.1.0-N`), into `out`.
pub fn build_packages(out: &Path, revision: u32) {
    // The target dir the test's binaries are in (`<target>/debug/<binary>`).
    let target = binary("nexus")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let built = run(Command::new(deploy_dir().join("packages/build.sh"))
        .args(["--from-dev-build", "--revision", &revision.to_string()])
        .arg(out)
        .env("CARGO_TARGET_DIR", &target));
    assert!(built.status.success(), "build.sh: {}", text(&built));
}

/// Waits until `check` holds, for at most `limit`; fails the test with `what` and the last value.
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = probe();
        if check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {value:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
