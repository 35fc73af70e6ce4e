//! A campaign's coordinators: real `nexus-coordinator` processes, each inside its node's network
//! namespace (see `net`), and what a nemesis does to a process: SIGKILL and restart, SIGSTOP and
//! SIGCONT, a skewed wall clock, a full disk.
//!
//! Not here: faults of the network (`net`), or choosing when to make them.
//!
//! Member `i` is node `i` of the network and coordinator id `i + 1`; it listens on
//! `10.197.N.(10+i):7000` and serves its monitoring HTTP on port 9100 of that address. Its
//! certificate names that address beside loopback's (coordinators dial each other by address and
//! verify the name; the harness's own connections name 127.0.0.1). Its data dir is a tmpfs of
//! [`DISK_SIZE`] that [`Members::fill_disk`] fills. Its log files, one per start, are kept in
//! the campaign's directory under `/var/tmp` when the test fails (the directory is kept if the
//! members are dropped while the thread panics, and its path printed).
//!
//! A clock skew is libfaketime (Debian's `faketime`) preloaded with `DONT_FAKE_MONOTONIC=1`: the
//! wall clock (`CLOCK_REALTIME`, what `SystemTime` reads: certificates' validity, timestamps
//! stamped into commands) is off, while the monotonic clock that tokio's timers, quinn and Raft's
//! ticks use is true, as on a host whose NTP is wrong. The certificates the harness issues are
//! valid from a minute before they are issued, so a clock more than that behind (or past their
//! end) makes the member refuse its peers' and clients' certificates, and theirs its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};
use nexus_protocol::message::ClusterStatus;
use nexus_protocol::pki::SubjectName;

use super::net::{Net, NodeNet, alive, run};
use crate::pki::{self, TestPki};
use crate::process::{CoordinatorProcess, Launch};

/// The size of each member's data dir (a tmpfs).
pub const DISK_SIZE: &str = "512m";
/// The port every member listens on, in its own namespace.
pub const PORT: u16 = 7000;
/// The port of every member's monitoring HTTP.
pub const HTTP_PORT: u16 = 9100;
/// Where Debian's `faketime` package puts the library.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// The campaign directory's name in `/var/tmp` starts with this and the process id.
const DIR_PREFIX: &str = "nexus-chaos-";
/// The source name of members' tmpfs mounts is this and the process id (see [`sweep_mounts`]).
const MOUNT_SOURCE: &str = "nexus-chaos-";

/// Whether a (re)start waits until the member answers the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until it answers a ping from the root namespace (up to 20 s; an error after).
    UntilAnswering,
    /// Not at all: the member may be cut off from the root namespace.
    No,
}

/// The coordinators of one campaign. Dropping it kills them (resuming paused ones first) and
/// unmounts their data dirs.
#[derive(Debug)]
pub struct Members {
    members: Vec<Member>,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Member {
    id: u64,
    node: NodeNet,
    address: SocketAddr,
    data_dir: PathBuf,
    mounted: bool,
    process: Option<CoordinatorProcess>,
    paused: bool,
    /// The wall clock's offset of the running process, in seconds.
    skew: i64,
    starts: u32,
}

impl Members {
    /// Starts `count` (3 to 7) coordinators as nodes `0..count` of `net`, with `extra` flags
    /// each, and waits until each answers and one leads.
    pub async fn start(
        pki: &TestPki,
        net: &mut Net,
        count: usize,
        extra: &[&str],
    ) -> anyhow::Result<Members> {
        if !(1..=7).contains(&count) {
            bail!("a campaign runs 1 to 7 coordinators, not {count}");
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in("/var/tmp")
            .context("a campaign directory in /var/tmp")?;
        let mut members = Members {
            members: Vec::new(),
            extra: extra.iter().map(ToString::to_string).collect(),
            dir,
        };
        for index in 0..count {
            let node = net.add_node(index)?;
            let id = u64::try_from(index + 1).context("a small id")?;
            let mut names = pki::loopback();
            names.push(SubjectName::Ip(node.ip.into()));
            pki.issue_with_names(&pki::coordinator(id), &names, pki::default_validity());
            let data_dir = members.dir.path().join(format!("coordinator-{id}"));
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let source = format!("{MOUNT_SOURCE}{}", std::process::id());
            run(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={DISK_SIZE}"),
                    &source,
                    &data_dir.display().to_string(),
                ],
            )?;
            members.members.push(Member {
                id,
                address: SocketAddr::new(node.ip.into(), PORT),
                node,
                data_dir,
                mounted: true,
                process: None,
                paused: false,
                skew: 0,
                starts: 0,
            });
        }
        for index in 0..count {
            members.spawn(pki, index, 0)?;
        }
        for index in 0..count {
            members.wait_answering(pki, index).await?;
        }
        members.leader(pki, Duration::from_secs(20)).await?;
        Ok(members)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `index`'s Raft node id (`index + 1`).
    pub fn id(&self, index: usize) -> u64 {
        self.members[index].id
    }

    /// The index of the member with node id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// Where member `index` listens.
    pub fn address(&self, index: usize) -> SocketAddr {
        self.members[index].address
    }

    /// Every member's address, in order: what clients and agents are given.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.address).collect()
    }

    /// Where member `index` serves `/metrics`, `/livez` and `/readyz`.
    pub fn http(&self, index: usize) -> SocketAddr {
        SocketAddr::new(self.members[index].node.ip.into(), HTTP_PORT)
    }

    pub fn ip(&self, index: usize) -> Ipv4Addr {
        self.members[index].node.ip
    }

    /// Member `index`'s data dir (a tmpfs).
    pub fn data_dir(&self, index: usize) -> &Path {
        &self.members[index].data_dir
    }

    /// The campaign's directory: data dirs and logs (`coordinator-<id>.<start>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether member `index`'s process runs (paused counts as running).
    pub fn running(&mut self, index: usize) -> bool {
        self.exited(index).is_none() && self.members[index].process.is_some()
    }

    /// How member `index`'s process ended, if it did by itself (a SIGKILL of ours forgets it).
    pub fn exited(&mut self, index: usize) -> Option<ExitStatus> {
        self.members[index]
            .process
            .as_mut()
            .and_then(|p| p.process.exited())
    }

    pub fn paused(&self, index: usize) -> bool {
        self.members[index].paused
    }

    /// The wall-clock offset member `index` runs with, in seconds.
    pub fn skew_of(&self, index: usize) -> i64 {
        self.members[index].skew
    }

    /// SIGKILLs member `index` (resuming it first if paused, so it does not linger stopped).
    pub fn kill(&mut self, index: usize) {
        let member = &mut self.members[index];
        if let Some(mut process) = member.process.take() {
            if member.paused {
                let _ = signal(process.process.pid(), "CONT");
            }
            process.process.kill();
        }
        member.paused = false;
    }

    /// Kills member `index` if it runs and starts it again on its id, address and data dir with a
    /// true clock, waiting until it answers.
    pub async fn restart(&mut self, pki: &TestPki, index: usize) -> anyhow::Result<()> {
        self.restart_with(pki, index, 0, Wait::UntilAnswering).await
    }

    /// Restarts member `index` with its wall clock `seconds` off (negative: behind), waiting
    /// until it answers.
    pub async fn skew(&mut self, pki: &TestPki, index: usize, seconds: i64) -> anyhow::Result<()> {
        self.restart_with(pki, index, seconds, Wait::UntilAnswering)
            .await
    }

    /// Kills member `index` if it runs, and starts it with its wall clock `skew` seconds off.
    pub async fn restart_with(
        &mut self,
        pki: &TestPki,
        index: usize,
        skew: i64,
        wait: Wait,
    ) -> anyhow::Result<()> {
        self.kill(index);
        self.spawn(pki, index, skew)?;
        if wait == Wait::UntilAnswering {
            self.wait_answering(pki, index).await?;
        }
        Ok(())
    }

    /// SIGSTOPs member `index`: it holds its sockets and state, and answers nothing.
    pub fn pause(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        let process = member
            .process
            .as_ref()
            .with_context(|| format!("member {index} is not running"))?;
        signal(process.process.pid(), "STOP")?;
        member.paused = true;
        crate::process::wait_stopped(process.process.pid())?;
        Ok(())
    }

    /// SIGCONTs member `index`.
    pub fn resume(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        if let Some(process) = &member.process {
            signal(process.process.pid(), "CONT")?;
        }
        member.paused = false;
        Ok(())
    }

    /// Fills member `index`'s data dir with a file until the tmpfs has no space left; answers
    /// the bytes written. RocksDB's next write fails with ENOSPC.
    pub fn fill_disk(&self, index: usize) -> anyhow::Result<u64> {
        use std::io::Write;
        let path = self.fill_path(index);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let chunk = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) if error.raw_os_error() == Some(28) => break,
                Err(error) => {
                    return Err(error).with_context(|| format!("filling {}", path.display()));
                }
            }
        }
        let _ = file.sync_all();
        Ok(written)
    }

    /// Frees what [`Members::fill_disk`] took.
    pub fn free_disk(&self, index: usize) -> anyhow::Result<()> {
        let path = self.fill_path(index);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    fn fill_path(&self, index: usize) -> PathBuf {
        self.members[index].data_dir.join("chaos-fill")
    }

    /// The cluster as member `index` sees it (within 3 s).
    pub async fn status(&self, pki: &TestPki, index: usize) -> anyhow::Result<ClusterStatus> {
        let address = self.members[index].address;
        tokio::time::timeout(Duration::from_secs(3), crate::cluster::status(pki, address))
            .await
            .with_context(|| format!("member {index} did not answer within 3 s"))?
            .with_context(|| format!("member {index}'s status"))
    }

    /// Waits up to `limit` until a running member reports that it leads itself (asked from the
    /// root namespace); answers its index and status.
    pub async fn leader(
        &self,
        pki: &TestPki,
        limit: Duration,
    ) -> anyhow::Result<(usize, ClusterStatus)> {
        let started = std::time::Instant::now();
        loop {
            for (index, member) in self.members.iter().enumerate() {
                if member.process.is_none() || member.paused {
                    continue;
                }
                let Ok(Ok(status)) = tokio::time::timeout(
                    Duration::from_millis(1500),
                    crate::cluster::status(pki, member.address),
                )
                .await
                else {
                    continue;
                };
                if status.leader == Some(status.node) {
                    return Ok((index, status));
                }
            }
            if started.elapsed() > limit {
                bail!("no member led within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every running member's log of its latest start, for a failing test's message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .filter_map(|m| m.process.as_ref())
            .map(|p| format!("--- coordinator {} ---\n{}", p.node_id, p.process.log()))
            .collect()
    }

    fn spawn(&mut self, pki: &TestPki, index: usize, skew: i64) -> anyhow::Result<()> {
        let peers: Vec<(u64, SocketAddr)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, m)| (m.id, m.address))
            .collect();
        let log_dir = self.dir.path().to_path_buf();
        let member = &mut self.members[index];
        member.starts += 1;
        let mut launch = Launch {
            wrapper: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                member.node.ns.clone(),
            ],
            env: Vec::new(),
            log: Some(log_dir.join(format!("coordinator-{}.{}.log", member.id, member.starts))),
        };
        if skew != 0 {
            if !Path::new(LIBFAKETIME).exists() {
                bail!("{LIBFAKETIME} is missing: install Debian's faketime package");
            }
            launch.env = vec![
                ("LD_PRELOAD".into(), LIBFAKETIME.into()),
                ("FAKETIME".into(), format!("{skew:+}")),
                ("DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
        }
        let http = SocketAddr::new(member.node.ip.into(), HTTP_PORT).to_string();
        let mut extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        if !extra.contains(&"--http-listen") {
            extra.extend(["--http-listen", &http]);
        }
        member.process = Some(CoordinatorProcess::spawn_launched(
            pki,
            member.id,
            member.address,
            member.data_dir.clone(),
            &peers,
            &extra,
            &launch,
        ));
        member.skew = skew;
        member.paused = false;
        Ok(())
    }

    /// Waits until member `index` answers a ping; an error with its log if it exits first or
    /// does not answer within 20 s.
    async fn wait_answering(&mut self, pki: &TestPki, index: usize) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let address = self.members[index].address;
        loop {
            if let Some(status) = self.exited(index) {
                bail!(
                    "coordinator {} exited ({status}) while starting:\n{}",
                    self.members[index].id,
                    self.log_of(index)
                );
            }
            let ping = async {
                let admin = pki::user("harness", nexus_protocol::identity::Role::Admin);
                let connection = crate::process::connect(pki, &admin, address).await.ok()?;
                let answer = connection
                    .request(nexus_protocol::message::Request::Ping)
                    .await
                    .ok()?;
                matches!(answer, nexus_protocol::message::Response::Pong(_)).then_some(())
            };
            if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(1500), ping).await {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!(
                    "coordinator {} did not answer within 20 s:\n{}",
                    self.members[index].id,
                    self.log_of(index)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_of(&self, index: usize) -> String {
        self.members[index]
            .process
            .as_ref()
            .map(|p| p.process.log())
            .unwrap_or_default()
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
        for member in &mut self.members {
            if member.mounted {
                let path = member.data_dir.display().to_string();
                if run("umount", &[&path]).is_err() {
                    let _ = run("umount", &["-l", &path]);
                }
                member.mounted = false;
            }
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "the coordinators' logs are kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// Unmounts members' data dirs that campaigns whose process no longer runs left mounted; answers
/// the mount points. The campaigns' directories (`/var/tmp/nexus-chaos-<pid>-…`) stay: their
/// logs are what tells why a campaign was killed.
pub fn sweep_mounts() -> anyhow::Result<Vec<String>> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let mut removed = Vec::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        if let Some(pid) = source.strip_prefix(MOUNT_SOURCE)
            && let Ok(pid) = pid.parse::<u32>()
            && !alive(pid)
        {
            run("umount", &["-l", target])?;
            removed.push(target.to_string());
        }
    }
    Ok(removed)
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    run("kill", &[&format!("-{name}"), &pid.to_string()]).map(|_| ())
}
