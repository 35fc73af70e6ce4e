//! A Docker engine of the campaign's own, for its Docker agent, so that killing the engine under
//! the agent never touches the machine's shared dockerd: its own socket, data root, exec root,
//! pid file, containerd (dockerd starts one under `<exec root>/containerd` when `--containerd` is
//! not given) and bridge (`nxd<pid hex>-<seq>` with `10.196.N.1/24`), and no iptables rules.
//!
//! Not here: the agent (point it at [`Engine::socket`] with `--docker-socket`; it reads no
//! `DOCKER_HOST`).
//!
//! Measured here: the engine answers about half a second after it starts; SIGKILL of dockerd
//! takes its containerd with it (dockerd starts it with a parent-death signal), while the
//! containers' shims live on. Without live restore (the default, as Debian ships it) the
//! restarted engine finds its containers exited (137); with [`EngineConfig::live_restore`] they
//! keep running through the restart. Published ports work with `--iptables=false` (the userland
//! proxy serves them). Not `--bridge none`: dockerd then deletes any `docker0` it finds, and that
//! is the shared engine's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::net::run;

/// Where image tarballs saved from the shared engine are cached, by image id.
pub const CACHE_DIR: &str = "/var/tmp/nexus-cache";

/// How an engine runs.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// `--live-restore`: containers keep running while dockerd is down and are found again.
    pub live_restore: bool,
}

/// A private dockerd. Dropping it removes its containers, stops it, and removes its bridge,
/// mounts and directories.
#[derive(Debug)]
pub struct Engine {
    dir: tempfile::TempDir,
    bridge: String,
    config: EngineConfig,
    child: Option<Child>,
}

/// How long an engine may take to answer: starting two engines (and their containerds) under
/// load once failed with "timeout waiting for containerd" at dockerd's own limit.
const START_LIMIT: Duration = Duration::from_secs(60);

/// An engine's directory in `/var/tmp` starts with this and the process id.
const DIR_PREFIX: &str = "nexus-engine-";
/// An engine's bridge is this, the process id in hex, `-` and a sequence number.
const BRIDGE_PREFIX: &str = "nxd";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl Engine {
    /// Whether `dockerd` is installed, so a test can say why it skips.
    pub fn available() -> bool {
        Command::new("dockerd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts an engine and loads `images` into it from the shared engine (saved once per image
    /// id into [`CACHE_DIR`]).
    pub fn start(config: EngineConfig, images: &[&str]) -> anyhow::Result<Engine> {
        let pid = std::process::id();
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 100;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{pid}-"))
            .tempdir_in("/var/tmp")
            .context("an engine directory in /var/tmp")?;
        let bridge = format!("{BRIDGE_PREFIX}{pid:x}-{seq}");
        let used = run("ip", &["-4", "-o", "addr", "show"])?;
        let first = (pid + seq) % 250;
        let subnet = (0..250)
            .map(|step| (first + step) % 250)
            .find(|n| !used.contains(&format!("10.196.{n}.")))
            .context("every subnet of 10.196.0.0/16 is in use")?;
        let _ = run("ip", &["link", "del", &bridge]);
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        let mut engine = Engine {
            dir,
            bridge,
            config,
            child: None,
        };
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("10.196.{subnet}.1/24"),
                "dev",
                &engine.bridge,
            ],
        )?;
        run("ip", &["link", "set", &engine.bridge, "up"])?;
        engine.restart()?;
        for image in images {
            engine.load(image)?;
        }
        Ok(engine)
    }

    /// The engine's socket, for an agent's `--docker-socket`.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `unix://…`, for `docker -H` or `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The engine's directory: data and exec roots, `dockerd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `docker` CLI, talking to this engine.
    pub fn cli(&self) -> Command {
        let mut command = Command::new("docker");
        command.arg("-H").arg(self.host());
        command
    }

    /// dockerd's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the engine answers `docker info`.
    pub fn answers(&self) -> bool {
        self.cli()
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGKILLs dockerd and its containerd, as a crash would; the containers' shims live on.
    pub fn kill(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd gives its containerd a parent-death signal; make sure anyway, and wait until
        // it is gone: a new containerd started while the old one holds its metadata store's
        // lock times out ("timeout waiting for containerd to start").
        if let Some(pid) = containerd {
            let deadline = Instant::now() + Duration::from_secs(10);
            while super::net::alive(pid) && Instant::now() < deadline {
                let _ = run("kill", &["-KILL", &pid.to_string()]);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops dockerd as an operator would (SIGTERM), and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = run("kill", &["-TERM", &child.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts dockerd (again, if it ran: killed first) and waits until it answers; tries twice,
    /// as containerd's start has timed out under load.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        if let Err(first) = self.start_once() {
            self.kill();
            self.start_once()
                .with_context(|| format!("after a first failure: {first:#}"))?;
        }
        Ok(())
    }

    fn start_once(&mut self) -> anyhow::Result<()> {
        let root = self.dir.path();
        let log_path = root.join("dockerd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new("dockerd");
        command
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .args([
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip6tables=false",
            ]);
        if self.config.live_restore {
            command.arg("--live-restore");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start dockerd")?;
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "the private dockerd exited ({status}) while starting:\n{}",
                    tail(&log_path)
                );
            }
            if started.elapsed() > START_LIMIT {
                bail!(
                    "the private dockerd did not answer within {START_LIMIT:?}:\n{}",
                    tail(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Copies `image` from the shared engine into this one.
    pub fn load(&self, image: &str) -> anyhow::Result<()> {
        let id = run("docker", &["image", "inspect", "-f", "{{.Id}}", image])
            .with_context(|| format!("the shared engine has no {image} (deploy/dev/prepare.sh)"))?;
        let id = id.trim().trim_start_matches("sha256:");
        let short = id.get(..16).unwrap_or(id);
        std::fs::create_dir_all(CACHE_DIR).with_context(|| format!("creating {CACHE_DIR}"))?;
        let tarball = Path::new(CACHE_DIR).join(format!("image-{short}.tar"));
        if !tarball.exists() {
            // Saved beside, then renamed: a campaign running at the same time never reads half.
            let partial = tarball.with_extension(format!("tar.{}", std::process::id()));
            let partial_text = partial.display().to_string();
            run("docker", &["save", "-o", &partial_text, image])?;
            std::fs::rename(&partial, &tarball)
                .with_context(|| format!("renaming {partial_text}"))?;
        }
        let output = self
            .cli()
            .arg("load")
            .arg("-i")
            .arg(&tarball)
            .output()
            .context("cannot run docker load")?;
        if !output.status.success() {
            bail!(
                "docker load -i {} failed: {}",
                tarball.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    fn containerd_pid(&self) -> Option<u32> {
        let path = self.dir.path().join("exec/containerd/containerd.pid");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

/// Removes what engines of processes that no longer run left behind: their dockerd and
/// containerd (the containers die when their engine restarts without live restore), mounts,
/// directories and bridges. Answers what it removed.
pub fn sweep() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir("/var/tmp").context("listing /var/tmp")? {
        let path = entry.context("listing /var/tmp")?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if super::net::alive(pid) {
            continue;
        }
        // dockerd, containerd and the shims name the directory in their command lines; the
        // containers' processes are in cgroups named by the container ids.
        let containers: Vec<String> = std::fs::read_dir(path.join("data/containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        let root = path.display().to_string();
        for process in std::fs::read_dir("/proc")
            .context("listing /proc")?
            .flatten()
        {
            let Some(pid) = process
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&root)
                || containers.iter().any(|id| cgroup.contains(id.as_str()))
            {
                let _ = run("kill", &["-KILL", &pid.to_string()]);
            }
        }
        unmount_under(&path);
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        removed.push(path.display().to_string());
    }
    let links = run("ip", &["-o", "link", "show"])?;
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        if let Some(pid) = name
            .strip_prefix(BRIDGE_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| u32::from_str_radix(pid, 16).ok())
            && !super::net::alive(pid)
            && run("ip", &["link", "del", name]).is_ok()
        {
            removed.push(format!("link {name}"));
        }
    }
    Ok(removed)
}

/// Unmounts (lazily) every mount under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let root = dir.display().to_string();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let mut targets: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|target| target.starts_with(&root))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for target in targets {
            let _ = run("umount", &["-l", target]);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.child.is_none() {
            // Killed: the containers' shims still run, and only an engine removes them cleanly.
            let _ = self.restart();
        }
        if self.child.is_some()
            && let Ok(ids) = self.cli().args(["ps", "-aq"]).output()
        {
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.cli().args(["rm", "-f", id]).output();
            }
            // And its networks, so that the engine deletes their bridges: left behind, each
            // keeps a kernel route to its /24, which later engines' agents then skip, until a
            // test's pool of them is used up (seen: a chaos run's /20 held by the bridges of
            // earlier runs' engines, and its creates refused for want of a subnet).
            let _ = self.cli().args(["network", "prune", "-f"]).output();
        }
        self.stop();
        self.kill();
        let _ = run("ip", &["link", "del", &self.bridge]);
        // dockerd bind-mounts its data root, and containers' rootfs live under the exec root.
        unmount_under(self.dir.path());
    }
}

/// The last lines of a log, for an error.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
