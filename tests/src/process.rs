//! Our binaries as real processes: started with free loopback ports and fresh data dirs, their
//! output captured to a log file, and killed with SIGKILL when dropped.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nexus_protocol::identity::{Identity, IdentityKind, Role};
use nexus_protocol::message::{AdminRequest, HostView, Request, Response};
use nexus_protocol::transport::{Connection, Connector, TransportConfig};
use nexus_protocol::{HostId, NodeId};

use crate::pki::{self, TestPki};

/// The path of one of our binaries, built by cargo beside this test executable, or in
/// `NEXUS_BIN_DIR` when that is set.
pub fn binary(name: &str) -> PathBuf {
    // Several checkouts that share one target dir overwrite each other's binaries there; each
    // can copy its own aside and name the copy.
    if let Some(dir) = std::env::var_os("NEXUS_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(
            path.is_file(),
            "{} is missing (NEXUS_BIN_DIR)",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // A test runs from target/<profile>/deps/, a benchmark binary from target/<profile>/.
    let mut profile_dir = exe.parent().expect("a target directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("a target directory");
    }
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (nextest builds it when run with --workspace)",
        path.display()
    );
    path
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    pick_port("UDP", |port| UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a daemon's monitoring HTTP).
pub fn free_tcp_port() -> u16 {
    pick_port("TCP", |port| {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// Where the harness picks the ports it gives daemons: below Linux's ephemeral range (32768 and
/// up by default), from which the kernel hands a port to every socket bound to port 0 — each
/// QUIC client, CLI and agent of every test running. A port found free there and released was
/// sometimes handed to such a socket before the daemon bound it ("Address already in use").
/// Below it, only another of the harness's picks, random among ten thousand, can take it.
/// Docker fleets publish workspaces' ports from 22000 up (see `docker_fleet`).
const DAEMON_PORTS: std::ops::Range<u16> = 12_000..22_000;

/// A port of [`DAEMON_PORTS`] that `free` finds free and this process could reserve, tried
/// from a random one on.
fn pick_port(kind: &str, free: impl Fn(u16) -> bool) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let span = DAEMON_PORTS.end - DAEMON_PORTS.start;
    // A fresh random key per call (std's hash keys), so that tests started together differ.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let first = u16::try_from(random % u64::from(span)).expect("below the span");
    (0..span)
        .map(|step| DAEMON_PORTS.start + (first + step) % span)
        .find(|port| free(*port) && reserve(*port))
        .unwrap_or_else(|| panic!("no free {kind} port in {DAEMON_PORTS:?}"))
}

/// Takes `port` for this process until it exits: an exclusive lock on a file named for it in
/// the temporary directory, which every test process of a run shares. Two tests running at
/// once each found the same port free before either's daemon had bound it, and one daemon
/// failed with "Address already in use" (CI, December 2026); the lock lets only one of them
/// have it. The lock goes with the process (the kernel drops it at exit, even a SIGKILL), and
/// a port whose daemon is still bound fails `free` anyway.
fn reserve(port: u16) -> bool {
    static HELD: std::sync::Mutex<Vec<File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("nexus-harness-ports");
    if let Err(error) = std::fs::create_dir_all(&dir) {
        panic!("cannot make {}: {error}", dir.display());
    }
    let path = dir.join(port.to_string());
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
    match file.try_lock() {
        Ok(()) => {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
            true
        }
        Err(std::fs::TryLockError::WouldBlock) => false,
        Err(std::fs::TryLockError::Error(error)) => {
            panic!("cannot lock {}: {error}", path.display())
        }
    }
}

/// `--http-listen` on a free loopback port, unless `extra` names another; and where the daemon
/// serves its monitoring HTTP then (`None`: `extra` chose, or turned it off).
fn http_listen(extra: &[&str], args: &mut Vec<String>) -> Option<SocketAddr> {
    if extra.contains(&"--http-listen") {
        return None;
    }
    let http: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    args.extend(["--http-listen".into(), http.to_string()]);
    Some(http)
}

/// A child process of one of our binaries. Dropping it kills it with SIGKILL.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: PathBuf,
    /// Stopped by [`Process::pause`] and not yet resumed.
    paused: std::sync::atomic::AtomicBool,
}

impl Process {
    pub fn spawn(name: &str, args: &[String], log: PathBuf) -> Process {
        Process::spawn_program(&binary(name), args, log)
    }

    /// Any program (a peer's server, say), logging like ours.
    pub fn spawn_program(program: &Path, args: &[String], log: PathBuf) -> Process {
        Process::spawn_launched(program, args, log, &Launch::default())
    }

    /// `program` run through `launch`'s wrapper with its environment, logging like ours.
    pub fn spawn_launched(
        program: &Path,
        args: &[String],
        log: PathBuf,
        launch: &Launch,
    ) -> Process {
        let name = program.display();
        let out = File::create(&log).expect("a log file");
        let err = out.try_clone().expect("a log file handle");
        let mut command = match launch.wrapper.split_first() {
            Some((wrapper, wrapper_args)) => {
                let mut command = Command::new(wrapper);
                command.args(wrapper_args).arg(program);
                command
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("NEXUS_LOG", daemon_log())
            // Plain text: tests search these logs for fields such as `peer=2`.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            child,
            log,
            paused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed while stopped, it is gone all the same: nothing is left to continue.
        self.paused
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// SIGTERM, as an operator's stop; [`Process::reap_within`] waits for it.
    pub fn ask_to_stop(&self) {
        if self.paused.load(std::sync::atomic::Ordering::Relaxed) {
            self.resume();
        }
        self.send("-TERM");
    }

    /// Reaps the process once it has exited, or SIGKILLs it at `deadline`. Whether it exited by
    /// itself.
    pub fn reap_within(&mut self, deadline: std::time::Instant) -> bool {
        loop {
            if self.exited().is_some() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stops where it is, sockets open, as a long GC pause or a frozen VM.
    /// Returns once every thread has stopped (see [`wait_stopped`]).
    pub fn pause(&self) {
        self.signal("-STOP");
        self.paused
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(error) = wait_stopped(self.child.id()) {
            panic!("{error:#}");
        }
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
        self.paused
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn signal(&self, signal: &str) {
        assert!(self.send(signal), "kill {signal} {}", self.child.id());
    }

    /// `kill SIGNAL` of the process; whether it was delivered (not to one already reaped).
    fn send(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; SIGCONT first all the same, so that nothing that
        // waits on it (its parent's wait, a socket's peer) meets it stopped.
        if self.paused.load(std::sync::atomic::Ordering::Relaxed) {
            self.resume();
        }
        self.kill();
    }
}

/// How long a stopped process's threads may take to stop before a test gives up on them.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Waits until every thread of process `pid` has stopped (state `T` in `/proc`), after a
/// SIGSTOP. `kill` returns once the signal is queued, not once it took: one thread takes it and
/// only then stops the others, and until the scheduler runs that thread the rest go on. On a
/// loaded two-core runner a follower "paused" so acknowledged a leader's append afterwards, and
/// a test of a leader without its quorum saw its write committed (CI, 2026-12-07).
pub fn wait_stopped(pid: u32) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let running = running_threads(pid)?;
        if running.is_empty() {
            return Ok(());
        }
        if started.elapsed() > STOP_PATIENCE {
            anyhow::bail!(
                "process {pid}: threads {running:?} still running {STOP_PATIENCE:?} after SIGSTOP"
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The threads of process `pid` that are neither stopped nor gone.
fn running_threads(pid: u32) -> anyhow::Result<Vec<u32>> {
    use anyhow::Context;
    let tasks = format!("/proc/{pid}/task");
    let mut running = Vec::new();
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let task = task?;
        // A thread that ended between the listing and the read is not running.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `tid (comm) S ...`: the command may hold spaces and parentheses; the state follows
        // the last `)`.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't' | 'Z' | 'X')) {
            running.push(task.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    Ok(running)
}

/// The log filter daemons start with, once [`log_daemons_at`] set it: `debug` unless told.
static DAEMON_LOG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Starts every daemon from now on with `filter` as its `NEXUS_LOG`, instead of `debug` (which
/// the tests search). The bench measures the daemons as they ship: `info`. Only the first call
/// counts.
pub fn log_daemons_at(filter: &str) {
    let _ = DAEMON_LOG.set(filter.to_string());
}

fn daemon_log() -> &'static str {
    DAEMON_LOG.get().map_or("debug", String::as_str)
}

/// How a process is started beyond its flags: through a wrapper that then runs it (`ip netns
/// exec NS`, which execs it in place, so the process id stays the program's), with more
/// environment (libfaketime's), and where its log goes.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// A program and its arguments, before ours.
    pub wrapper: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The log file; `None`: `coordinator.log` in the data dir.
    pub log: Option<PathBuf>,
}

/// How long a coordinator started by a test may take to answer before the test fails.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(20);

/// A `nexus-coordinator` process.
#[derive(Debug)]
pub struct CoordinatorProcess {
    pub process: Process,
    pub node_id: NodeId,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    /// Where it serves `/metrics`, `/livez` and `/readyz`.
    pub http: Option<SocketAddr>,
}

impl CoordinatorProcess {
    /// Issues the coordinator's certificate, starts it on a free port, and waits until it answers.
    pub async fn start(pki: &TestPki, node_id: u64) -> CoordinatorProcess {
        let identity = pki::coordinator(node_id);
        pki.issue(&identity);
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let data_dir = pki.scratch(&format!("coordinator-{node_id}"));
        CoordinatorProcess::start_at(pki, node_id, address, data_dir).await
    }

    /// Starts a coordinator on a given address and data dir (as after a crash), with the
    /// certificate already issued, and waits until it answers.
    pub async fn start_at(
        pki: &TestPki,
        node_id: u64,
        address: SocketAddr,
        data_dir: PathBuf,
    ) -> CoordinatorProcess {
        CoordinatorProcess::start_with(pki, node_id, address, data_dir, &[], &[]).await
    }

    /// Starts a coordinator with `peers` (id and address of each other member) and `extra`
    /// flags, and waits until it answers.
    pub async fn start_with(
        pki: &TestPki,
        node_id: u64,
        address: SocketAddr,
        data_dir: PathBuf,
        peers: &[(u64, SocketAddr)],
        extra: &[&str],
    ) -> CoordinatorProcess {
        let mut coordinator = CoordinatorProcess::spawn_launched(
            pki,
            node_id,
            address,
            data_dir,
            peers,
            extra,
            &Launch::default(),
        );
        coordinator.wait_until_answering(pki).await;
        coordinator
    }

    /// Starts a coordinator like [`CoordinatorProcess::start_with`], through `launch`, and
    /// does not wait for it to answer.
    pub fn spawn_launched(
        pki: &TestPki,
        node_id: u64,
        address: SocketAddr,
        data_dir: PathBuf,
        peers: &[(u64, SocketAddr)],
        extra: &[&str],
        launch: &Launch,
    ) -> CoordinatorProcess {
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            node_id.to_string(),
            "--listen".into(),
            address.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--tls-dir".into(),
            pki.dir().display().to_string(),
        ];
        for (id, peer) in peers {
            args.push("--peer".into());
            args.push(format!("{id}={peer}"));
        }
        let http = http_listen(extra, &mut args);
        args.extend(extra.iter().map(ToString::to_string));
        let log = launch
            .log
            .clone()
            .unwrap_or_else(|| data_dir.join("coordinator.log"));
        let process = Process::spawn_launched(&binary("nexus-coordinator"), &args, log, launch);
        CoordinatorProcess {
            process,
            node_id: NodeId::new(node_id).expect("a positive node id"),
            address,
            data_dir,
            http,
        }
    }

    /// Waits until a ping succeeds; fails the test with the log if the process died first.
    ///
    /// Each try is a fresh connection within a short limit that doubles from try to try. A QUIC
    /// client whose first packet reached the port before the process had bound it sends it again
    /// only after about a second (quinn's first retransmission: three times its initial RTT
    /// estimate of 333 ms), so one unbounded try made while the process starts cost every start
    /// a second; a slow handshake still gets its time from the growing limit.
    pub async fn wait_until_answering(&mut self, pki: &TestPki) {
        self.wait_answering_within(pki, STARTUP_PATIENCE).await;
    }

    /// [`CoordinatorProcess::wait_until_answering`], failing the test only after `patience`.
    pub async fn wait_answering_within(&mut self, pki: &TestPki, patience: Duration) {
        let admin = pki::user("harness", Role::Admin);
        let started = std::time::Instant::now();
        let mut limit = Duration::from_millis(100);
        loop {
            if let Some(status) = self.process.exited() {
                panic!(
                    "nexus-coordinator exited ({status}) while starting:\n{}",
                    self.process.log()
                );
            }
            let ping = async {
                let connection = connect(pki, &admin, self.address).await.ok()?;
                let answer = connection.request(Request::Ping).await.ok()?;
                matches!(answer, Response::Pong(_)).then_some(())
            };
            if let Ok(Some(())) = tokio::time::timeout(limit, ping).await {
                return;
            }
            limit = (limit * 2).min(Duration::from_secs(5));
            assert!(
                started.elapsed() < patience,
                "nexus-coordinator did not answer:\n{}",
                self.process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hosts it knows, asked as an admin.
    pub async fn hosts(&self, pki: &TestPki) -> Result<Vec<HostView>, nexus_protocol::WireError> {
        let connection = connect(pki, &pki::user("harness", Role::Admin), self.address).await?;
        match connection
            .request(Request::Admin(AdminRequest::Hosts))
            .await?
        {
            Response::Hosts(hosts) => Ok(hosts),
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

/// A `nexus-agent` process.
#[derive(Debug)]
pub struct AgentProcess {
    pub process: Process,
    pub host_id: HostId,
    pub data_dir: PathBuf,
    /// Where it serves `/metrics`, `/livez` and `/readyz`.
    pub http: Option<SocketAddr>,
}

impl AgentProcess {
    /// Issues the agent's certificate and starts it against `coordinators`, with a fast heartbeat,
    /// the hollow runtime (unless `extra` names one) and any `extra` flags.
    pub fn start(
        pki: &TestPki,
        host: &str,
        coordinators: &[SocketAddr],
        extra: &[&str],
    ) -> AgentProcess {
        let identity = pki::agent(host);
        pki.issue(&identity);
        let data_dir = pki.scratch(&format!("agent-{host}"));
        let mut args = vec!["--tls-dir".into(), pki.dir().display().to_string()];
        args.extend(extra.iter().map(ToString::to_string));
        AgentProcess::spawn(host, coordinators, data_dir, &args)
    }

    /// Starts an agent with no certificate from the test's PKI: it enrols with the join token in
    /// `token_file` and keeps its key and certificate in `<data dir>/pki`. The data dir is the
    /// host's scratch directory `agent-<host>`, so a restart finds what the last run kept.
    pub fn enrol(
        pki: &TestPki,
        host: &str,
        coordinators: &[SocketAddr],
        token_file: Option<&Path>,
        extra: &[&str],
    ) -> AgentProcess {
        let data_dir = pki.scratch(&format!("agent-{host}"));
        let mut args: Vec<String> = Vec::new();
        if let Some(file) = token_file {
            args.extend(["--join-token-file".into(), file.display().to_string()]);
        }
        args.extend(extra.iter().map(ToString::to_string));
        AgentProcess::spawn(host, coordinators, data_dir, &args)
    }

    fn spawn(
        host: &str,
        coordinators: &[SocketAddr],
        data_dir: PathBuf,
        extra: &[String],
    ) -> AgentProcess {
        let list: Vec<String> = coordinators.iter().map(ToString::to_string).collect();
        let mut args: Vec<String> = vec![
            "--host-id".into(),
            host.into(),
            "--coordinator".into(),
            list.join(","),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--heartbeat-interval".into(),
            "0.2".into(),
        ];
        // The hollow runtime unless the test asks for another.
        if !extra.iter().any(|a| a == "--runtime") {
            args.extend(["--runtime".into(), "hollow".into()]);
        }
        // Users' endpoint on a free loopback port, unless the test asks for another.
        if !extra.iter().any(|a| a == "--listen") {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        let http = http_listen(&extra_refs, &mut args);
        args.extend(extra.iter().cloned());
        let process = Process::spawn("nexus-agent", &args, data_dir.join("agent.log"));
        AgentProcess {
            process,
            host_id: HostId::new(host).expect("a valid host id"),
            data_dir,
            http,
        }
    }
}

/// Connects to a coordinator at `address` as `identity` (issuing its certificate if needed).
pub async fn connect(
    pki: &TestPki,
    identity: &Identity,
    address: SocketAddr,
) -> Result<Connection, nexus_protocol::WireError> {
    let (cert, _) = pki.paths(identity);
    let credentials = if cert.exists() {
        nexus_protocol::transport::Credentials::from_pki_dir(pki.dir(), identity)
            .expect("credentials")
    } else {
        pki.issue(identity)
    };
    let connector = Connector::new(&credentials, TransportConfig::default()).expect("a connector");
    connector
        .connect(address, "127.0.0.1", &[IdentityKind::Coordinator])
        .await
}

/// Runs the `nexus` CLI as `identity` (issuing its certificate if needed) against `coordinator`,
/// with `home` as its home directory and no settings from the environment.
pub fn cli_as(
    pki: &TestPki,
    identity: &Identity,
    home: &std::path::Path,
    coordinator: SocketAddr,
    args: &[&str],
) -> std::process::Output {
    cli_command(pki, identity, home, &[coordinator])
        .args(args)
        .output()
        .expect("nexus runs")
}

/// The `nexus` CLI as `identity` against `coordinators`, ready for its arguments: run it, or spawn
/// many at once.
pub fn cli_command(
    pki: &TestPki,
    identity: &Identity,
    home: &std::path::Path,
    coordinators: &[SocketAddr],
) -> std::process::Command {
    let (cert, key) = pki.paths(identity);
    if !cert.exists() {
        pki.issue(identity);
    }
    let list: Vec<String> = coordinators.iter().map(ToString::to_string).collect();
    let mut command = std::process::Command::new(binary("nexus"));
    command
        .args(["--coordinator", &list.join(",")])
        .arg("--ca")
        .arg(pki.ca_cert_path())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .env("HOME", home)
        .env_remove("NEXUS_CONFIG")
        .env_remove("NEXUS_COORDINATORS")
        .env_remove("NEXUS_OUTPUT")
        .env_remove("NEXUS_NO_NOTICES");
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picked_port_is_not_picked_again_while_this_process_lives() {
        let port = free_tcp_port();
        assert!(!reserve(port), "{port} was reserved twice");
        let picks: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert!(!picks.contains(&port));
        let mut unique = picks.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            picks.len(),
            "a port was picked twice: {picks:?}"
        );
    }
}
