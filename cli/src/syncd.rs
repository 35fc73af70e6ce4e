//! The per-user sync daemon: it runs a user's sync sessions in the background, so that they
//! outlive the command that started them, and answers the `nexus workspace sync` commands over a
//! Unix socket (one JSON request per line, one JSON answer per line). Each session is a task:
//! it connects to the workspace's agent, watches the local directory (changes coalesced into a
//! cycle), looks at the workspace's side every [`POLL`], and saves what both sides agree on
//! after every cycle, so a daemon started again carries on without copying anything again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;
use nexus_sync::endpoint::{EndpointError, MAX_WAIT_MS};
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::remote::RemoteEndpoint;
use nexus_sync::session::{SessionState, cycle};
use nexus_sync::watch::Coalescer;
use nexus_sync::{Mode, RelPath, Side};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::settings::Settings;
use crate::sync::AgentCarrier;

/// How often the workspace's side is looked at when its agent cannot say when it changes (an
/// agent older than `WaitChange`, or a wait that failed).
pub const POLL: Duration = Duration::from_millis(500);
/// How often it is looked at anyway while the agent says when it changes: the safety net.
const POLL_WHILE_TOLD: Duration = Duration::from_secs(10);
/// How long local changes must be still before a cycle, and the longest they wait.
const QUIET: Duration = Duration::from_millis(10);
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Between attempts to reach the workspace's agent.
const RECONNECT: Duration = Duration::from_secs(2);

/// What a session is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    pub workspace: WorkspaceName,
    pub local: PathBuf,
    pub mode: Mode,
    pub ignore: Vec<String>,
    pub ignore_vcs: bool,
    pub settings: Settings,
}

/// A session as `sync status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub workspace: WorkspaceName,
    pub local: PathBuf,
    pub mode: Mode,
    /// connecting, watching, paused or failing.
    pub state: String,
    pub cycles: u64,
    pub changes: u64,
    pub conflicts: Vec<ConflictView>,
    pub last_error: Option<String>,
    /// Changes refused for good (they would leave a root), most recent first.
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictView {
    pub path: String,
    pub local: Option<String>,
    pub remote: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    Start(SessionConfig),
    Status,
    Flush(WorkspaceName),
    Resolve {
        workspace: WorkspaceName,
        path: RelPath,
        keep: Side,
    },
    Pause(WorkspaceName),
    Resume(WorkspaceName),
    Stop(WorkspaceName),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlAnswer {
    Sessions(Vec<SessionStatus>),
    Session(SessionStatus),
    Error { code: ErrorCode, message: String },
}

enum Command {
    Flush(oneshot::Sender<Result<(), String>>),
    Resolve(RelPath, Side, oneshot::Sender<Result<(), String>>),
    Pause,
    Resume,
    Stop,
}

struct Running {
    status: Arc<Mutex<SessionStatus>>,
    commands: mpsc::Sender<Command>,
}

/// Where the daemon keeps its socket and its sessions.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("daemon.sock")
    }

    fn config(&self, workspace: &WorkspaceName) -> PathBuf {
        self.dir.join(format!("{workspace}.session.json"))
    }

    fn state(&self, workspace: &WorkspaceName) -> PathBuf {
        self.dir.join(format!("{workspace}.state.json"))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update is a single assignment: a panic cannot leave one half-made.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the daemon until it has no sessions left (after at least one request).
pub async fn run(paths: Paths) -> Result<(), String> {
    std::fs::create_dir_all(&paths.dir)
        .map_err(|e| format!("cannot make {}: {e}", paths.dir.display()))?;
    let socket = paths.socket();
    if UnixStream::connect(&socket).await.is_ok() {
        return Err(format!(
            "a sync daemon already answers at {}",
            socket.display()
        ));
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    // A daemon whose directory is removed has nothing left to keep: it goes too.
    let dir = paths.dir.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !dir.is_dir() {
                std::process::exit(0);
            }
        }
    });
    let mut sessions: BTreeMap<WorkspaceName, Running> = BTreeMap::new();
    // Sessions saved by an earlier daemon carry on.
    for config in saved_sessions(&paths) {
        let name = config.workspace.clone();
        sessions.insert(name, start(config, &paths));
    }
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("cannot accept on {}: {e}", socket.display()))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let answer = match serde_json::from_str::<Control>(&line) {
                Ok(control) => handle(control, &mut sessions, &paths).await,
                Err(e) => error(
                    ErrorCode::InvalidArgument,
                    format!("not a sync request: {e}"),
                ),
            };
            let mut text = serde_json::to_string(&answer).unwrap_or_default();
            text.push('\n');
            if write.write_all(text.as_bytes()).await.is_err() {
                break;
            }
        }
        if sessions.is_empty() {
            let _ = std::fs::remove_file(&socket);
            return Ok(());
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ControlAnswer {
    ControlAnswer::Error {
        code,
        message: message.into(),
    }
}

fn saved_sessions(paths: &Paths) -> Vec<SessionConfig> {
    let Ok(entries) = std::fs::read_dir(&paths.dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".session.json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

async fn handle(
    control: Control,
    sessions: &mut BTreeMap<WorkspaceName, Running>,
    paths: &Paths,
) -> ControlAnswer {
    let status_of = |running: &Running| ControlAnswer::Session(lock(&running.status).clone());
    match control {
        Control::Start(config) => {
            if let Some(running) = sessions.get(&config.workspace) {
                return status_of(running);
            }
            if !config.local.is_dir() {
                return error(
                    ErrorCode::InvalidArgument,
                    format!("{} is not a directory", config.local.display()),
                );
            }
            if let Err(e) = Filter::new(&config.ignore, config.ignore_vcs) {
                return error(ErrorCode::InvalidArgument, e.to_string());
            }
            // Only the user reads it: it says where the user's key is.
            let saved = serde_json::to_vec(&config)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(paths.config(&config.workspace))
                        .map_err(|e| e.to_string())?;
                    std::io::Write::write_all(&mut file, &bytes).map_err(|e| e.to_string())
                });
            if let Err(e) = saved {
                return error(
                    ErrorCode::SyncSessionFailed,
                    format!("cannot save the session: {e}"),
                );
            }
            let name = config.workspace.clone();
            let running = start(config, paths);
            let answer = status_of(&running);
            sessions.insert(name, running);
            answer
        }
        Control::Status => {
            ControlAnswer::Sessions(sessions.values().map(|r| lock(&r.status).clone()).collect())
        }
        Control::Flush(name) => {
            let Some(running) = sessions.get(&name) else {
                return no_session(&name);
            };
            if lock(&running.status).state == "paused" {
                return error(
                    ErrorCode::SyncPaused,
                    format!("the sync of {name} is paused"),
                );
            }
            let (reply, answer) = oneshot::channel();
            let _ = running.commands.send(Command::Flush(reply)).await;
            match answer.await {
                Ok(Ok(())) => {
                    let status = lock(&running.status).clone();
                    if status.conflicts.is_empty() {
                        ControlAnswer::Session(status)
                    } else {
                        error(
                            ErrorCode::SyncConflict,
                            format!(
                                "{} conflict(s) in the sync of {name}; see `nexus workspace sync conflicts {name}`",
                                status.conflicts.len()
                            ),
                        )
                    }
                }
                Ok(Err(e)) => error(ErrorCode::SyncSessionFailed, e),
                Err(_) => error(ErrorCode::SyncSessionFailed, "the session ended"),
            }
        }
        Control::Resolve {
            workspace,
            path,
            keep,
        } => {
            let Some(running) = sessions.get(&workspace) else {
                return no_session(&workspace);
            };
            let (reply, answer) = oneshot::channel();
            let _ = running
                .commands
                .send(Command::Resolve(path, keep, reply))
                .await;
            match answer.await {
                Ok(Ok(())) => status_of(running),
                Ok(Err(e)) => error(ErrorCode::InvalidArgument, e),
                Err(_) => error(ErrorCode::SyncSessionFailed, "the session ended"),
            }
        }
        Control::Pause(ref name) | Control::Resume(ref name) => {
            let Some(running) = sessions.get(name) else {
                return no_session(name);
            };
            let pause = matches!(control, Control::Pause(_));
            let command = if pause {
                Command::Pause
            } else {
                Command::Resume
            };
            let _ = running.commands.send(command).await;
            lock(&running.status).state = if pause { "paused" } else { "watching" }.into();
            status_of(running)
        }
        Control::Stop(name) => {
            let Some(running) = sessions.remove(&name) else {
                return no_session(&name);
            };
            let _ = running.commands.send(Command::Stop).await;
            let _ = std::fs::remove_file(paths.config(&name));
            let _ = std::fs::remove_file(paths.state(&name));
            let mut status = lock(&running.status).clone();
            status.state = "stopped".into();
            ControlAnswer::Session(status)
        }
    }
}

fn no_session(name: &WorkspaceName) -> ControlAnswer {
    error(
        ErrorCode::WorkspaceNotFound,
        format!(
            "no sync session for {name}; start one with `nexus workspace sync start {name} --local DIR`"
        ),
    )
}

fn start(config: SessionConfig, paths: &Paths) -> Running {
    let status = Arc::new(Mutex::new(SessionStatus {
        workspace: config.workspace.clone(),
        local: config.local.clone(),
        mode: config.mode,
        state: "connecting".into(),
        cycles: 0,
        changes: 0,
        conflicts: vec![],
        last_error: None,
        refused: vec![],
    }));
    let (commands, receiver) = mpsc::channel(16);
    let state_path = paths.state(&config.workspace);
    tokio::spawn(session(config, state_path, status.clone(), receiver));
    Running { status, commands }
}

/// Connects to the workspace's agent: the remote side of the session, and a task beside it
/// that waits on the agent for changes there and wakes the session for each (`told` says
/// whether the agent can be waited on; until it ends, the session need not poll).
async fn remote(
    config: &SessionConfig,
    changed: Arc<Notify>,
    told: Arc<AtomicBool>,
) -> Result<(RemoteEndpoint<AgentCarrier>, Waiter), String> {
    let (_, connection) = crate::commands::host::agent_of(&config.settings, &config.workspace)
        .await
        .map_err(|e| e.error.message.clone())?;
    let carrier = AgentCarrier::new(connection, config.workspace.clone());
    let side = |carrier| RemoteEndpoint::new(carrier, config.ignore.clone(), config.ignore_vcs);
    let mut waiting = side(carrier.clone());
    let waiter = tokio::spawn(async move {
        let mut seen = 0;
        loop {
            match waiting.wait_change(seen, MAX_WAIT_MS).await {
                Ok(count) => {
                    told.store(true, Ordering::Relaxed);
                    if count != seen {
                        seen = count;
                        changed.notify_one();
                    }
                }
                // An agent that cannot wait (older than `WaitChange`), or a lost connection,
                // which the session notices on its own: it polls meanwhile.
                Err(_) => {
                    told.store(false, Ordering::Relaxed);
                    return;
                }
            }
        }
    });
    Ok((side(carrier), Waiter(waiter)))
}

/// The task that waits on the agent; it ends with its session's connection.
struct Waiter(tokio::task::JoinHandle<()>);

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn conflicts_of(report: &nexus_sync::session::CycleReport) -> Vec<ConflictView> {
    report
        .conflicts
        .iter()
        .map(|c| ConflictView {
            path: c.path.to_string(),
            local: c.alpha.as_ref().map(|e| e.kind().to_string()),
            remote: c.beta.as_ref().map(|e| e.kind().to_string()),
        })
        .collect()
}

/// One session, until it is stopped.
async fn session(
    config: SessionConfig,
    state_path: PathBuf,
    status: Arc<Mutex<SessionStatus>>,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut state = match SessionState::load(&state_path) {
        Ok(Some(state)) => state,
        Ok(None) => SessionState {
            mode: config.mode,
            ..SessionState::default()
        },
        Err(e) => {
            lock(&status).last_error = Some(e.to_string());
            SessionState {
                mode: config.mode,
                ..SessionState::default()
            }
        }
    };
    let filter = match Filter::new(&config.ignore, config.ignore_vcs) {
        Ok(filter) => filter,
        Err(e) => {
            lock(&status).last_error = Some(e.to_string());
            return;
        }
    };
    let mut local = LocalEndpoint::new(&config.local, filter);
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    if let Err(e) = local.watch(move || notify.notify_one()) {
        // Without events the poll still finds every change, later.
        lock(&status).last_error = Some(e.to_string());
    }
    let mut paused = false;
    let told = Arc::new(AtomicBool::new(false));
    // The workspace's side, with the task that waits on it (they go together).
    let mut remote_side: Option<(RemoteEndpoint<AgentCarrier>, Waiter)> = None;
    let mut coalescer = Coalescer::new(QUIET, MAX_WAIT);
    let mut next_poll = Instant::now();
    let mut next_connect = Instant::now();
    loop {
        // Reconnecting waits its turn: an event storm must not become a connection storm.
        if remote_side.is_none() && !paused && Instant::now() >= next_connect {
            next_connect = Instant::now() + RECONNECT;
            match remote(&config, changed.clone(), told.clone()).await {
                Ok(remote) => {
                    remote_side = Some(remote);
                    let mut status = lock(&status);
                    status.state = "watching".into();
                    status.last_error = None;
                }
                Err(e) => {
                    let mut status = lock(&status);
                    status.state = "failing".into();
                    status.last_error = Some(e);
                    next_poll = next_connect;
                }
            }
        }
        // Without the workspace's side there is nothing to cycle: wait for the next attempt.
        let due = if remote_side.is_none() {
            next_connect
        } else {
            coalescer.due().unwrap_or(next_poll).min(next_poll)
        };
        let mut flush: Option<oneshot::Sender<Result<(), String>>> = None;
        tokio::select! {
            () = changed.notified() => {
                coalescer.noticed(Instant::now());
                continue;
            }
            () = tokio::time::sleep_until(due.into()) => {}
            command = commands.recv() => match command {
                None | Some(Command::Stop) => return,
                Some(Command::Pause) => { paused = true; continue; }
                Some(Command::Resume) => { paused = false; next_poll = Instant::now(); continue; }
                Some(Command::Flush(reply)) => flush = Some(reply),
                Some(Command::Resolve(path, keep, reply)) => {
                    let answer = match remote_side.as_mut().map(|(side, _)| side) {
                        None => Err("the workspace's agent is not reachable now".to_string()),
                        Some(beta) => resolve(&mut state, &mut local, beta, &path, keep)
                            .await
                            .and_then(|()| state.save(&state_path).map_err(|e| e.to_string())),
                    };
                    let _ = reply.send(answer);
                }
            },
        }
        if paused {
            if let Some(reply) = flush {
                let _ = reply.send(Err("the session is paused".into()));
            }
            next_poll = Instant::now() + POLL;
            continue;
        }
        let Some((beta, _)) = remote_side.as_mut() else {
            coalescer.ran();
            if let Some(reply) = flush {
                let _ = reply.send(Err(lock(&status)
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not connected".into())));
            }
            continue;
        };
        coalescer.ran();
        let poll = if told.load(Ordering::Relaxed) {
            POLL_WHILE_TOLD
        } else {
            POLL
        };
        next_poll = Instant::now() + poll;
        // A flush runs cycles until one finds nothing to do.
        let mut outcome = Ok(());
        for _ in 0..if flush.is_some() { 10 } else { 1 } {
            match cycle(&mut state, &mut local, beta).await {
                Ok(report) => {
                    let quiet = report.quiet();
                    {
                        let mut status = lock(&status);
                        status.cycles += 1;
                        status.changes += report.applied as u64;
                        status.conflicts = conflicts_of(&report);
                        status
                            .refused
                            .splice(0..0, report.refused.iter().map(|r| r.message.clone()));
                        status.refused.truncate(20);
                        status.last_error = None;
                    }
                    // Saved when it changed: a quiet cycle every 500 ms would otherwise
                    // rewrite the whole agreed tree each time.
                    if report.ancestor_changed
                        && let Err(e) = state.save(&state_path)
                    {
                        lock(&status).last_error = Some(e.to_string());
                    }
                    if quiet {
                        break;
                    }
                }
                Err(error) => {
                    if let EndpointError::Unavailable(_) = error {
                        remote_side = None;
                        told.store(false, Ordering::Relaxed);
                    }
                    let mut status = lock(&status);
                    status.last_error = Some(error.to_string());
                    status.state = "failing".into();
                    outcome = Err(error.to_string());
                    break;
                }
            }
        }
        if let Some(reply) = flush {
            let _ = reply.send(outcome);
        }
    }
}

async fn resolve(
    state: &mut SessionState,
    local: &mut LocalEndpoint,
    beta: &mut RemoteEndpoint<AgentCarrier>,
    path: &RelPath,
    keep: Side,
) -> Result<(), String> {
    nexus_sync::session::resolve_conflict(state, local, beta, path, keep)
        .await
        .map_err(|e| e.to_string())
}

/// Sends one request to the daemon at `socket` and reads its answer.
pub async fn ask(socket: &Path, control: &Control) -> Result<ControlAnswer, std::io::Error> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(control).map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await?
        .ok_or_else(|| std::io::Error::other("the sync daemon closed the connection"))?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
