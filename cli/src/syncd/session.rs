//! One sync session, until it is stopped: a task that connects to the workspace's agent, holds a
//! `WaitChange` open beside it, watches the local directory, and runs a cycle when either side
//! changed, when the server asks (a flush or a resolve), or when a look is due. It loops over
//! one [`Event`] at a time. It is not the server (which starts, asks and stops sessions) nor the
//! engine (`nexus_sync::session`, whose cycles it runs).
//!
//! It also measures itself (`nexus_sync::measure`: the initial sync, and each change's latency
//! from the moment either side's watcher noticed it) and tells the agent, which exports the
//! measures as metrics: a second task beside the connection sends a report after each cycle that
//! changed something and every 30 s regardless, off the cycles' path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_sync::endpoint::{EndpointError, MAX_WAIT_MS, RefusalCode};
use nexus_sync::filter::Filter;
use nexus_sync::local_endpoint::LocalEndpoint;
use nexus_sync::measure::Meter;
use nexus_sync::remote::RemoteEndpoint;
use nexus_sync::session::{CycleReport, ResolveError, SessionState, StateFileError, cycle};
use nexus_sync::watch::Coalescer;
use nexus_sync::{RelPath, Side};
use tokio::sync::{Notify, mpsc, oneshot};

use super::control::{ConflictView, SessionConfig, SessionStatus};
use super::lock;
use super::saved::Paths;
use crate::error::CliError;
use crate::sync::AgentCarrier;

/// How often the workspace's side is looked at when its agent cannot say when it changes (an
/// agent older than `WaitChange`, or a wait that failed).
const POLL: Duration = Duration::from_millis(500);
/// How often it is looked at anyway while the agent says when it changes: the safety net.
const POLL_WHILE_TOLD: Duration = Duration::from_secs(10);
/// How long local changes must be still before a cycle, and the longest they wait.
const QUIET: Duration = Duration::from_millis(10);
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Between attempts to reach the workspace's agent.
const RECONNECT: Duration = Duration::from_secs(2);
/// The longest between two reports to the agent: it counts a session silent for 2 minutes gone.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What the server asks of a running session.
pub(super) enum Command {
    Flush(Reply),
    Resolve(RelPath, Side, Reply),
    Pause,
    Resume,
    Stop,
}

/// Where a session answers a flush or a resolve.
pub(super) type Reply = oneshot::Sender<Result<(), SessionError>>;

/// Why a flush or a resolve did not happen.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    #[error("the session is paused")]
    Paused,
    /// The workspace's agent is not connected: the last error says why, when there was one.
    #[error("{}", .last_error.as_deref().unwrap_or("not connected"))]
    NotConnected { last_error: Option<String> },
    #[error("the workspace's agent is not reachable now")]
    Unreachable,
    #[error(transparent)]
    Cycle(EndpointError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Save(#[from] StateFileError),
}

/// A running session, as the server holds it.
pub(super) struct Running {
    pub(super) status: Arc<Mutex<SessionStatus>>,
    pub(super) commands: mpsc::Sender<Command>,
}

/// Starts a session's task.
pub(super) fn start(config: SessionConfig, paths: &Paths) -> Running {
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
        last_sync: None,
    }));
    let (commands, receiver) = mpsc::channel(16);
    let state_path = paths.state(&config.workspace);
    let status_of_task = status.clone();
    tokio::spawn(async move {
        if let Some(session) = Session::open(config, state_path, status_of_task) {
            session.run(receiver).await;
        }
    });
    Running { status, commands }
}

/// What wakes a session.
enum Event {
    /// Something changed on either side (the local watcher, or the agent's answer to a wait).
    Changed,
    /// A cycle the coalescer allows, a look, or a connection attempt is due.
    Due,
    /// The server asks; `None` when it has dropped the session.
    Command(Option<Command>),
}

struct Session {
    config: SessionConfig,
    state_path: PathBuf,
    status: Arc<Mutex<SessionStatus>>,
    state: SessionState,
    local: LocalEndpoint,
    /// Woken by either side's changes.
    changed: Arc<Notify>,
    /// Whether the agent can be waited on now; while it can, the session need not poll.
    told: Arc<AtomicBool>,
    /// The workspace's side, with the tasks beside it (they go together).
    remote_side: Option<(RemoteEndpoint<AgentCarrier>, Beside)>,
    /// What the session measures, and where it stands, for its reports.
    meter: Arc<Mutex<Meter>>,
    /// Wakes the reporter: something worth telling the agent happened.
    news: Arc<Notify>,
    /// The session's id in its reports, random.
    id: u64,
    paused: bool,
    coalescer: Coalescer,
    next_poll: Instant,
    next_connect: Instant,
}

impl Session {
    /// The session's saved state, and its watched local side; `None` (with the error in the
    /// status) when its ignore patterns make no filter.
    fn open(
        config: SessionConfig,
        state_path: PathBuf,
        status: Arc<Mutex<SessionStatus>>,
    ) -> Option<Session> {
        let state = match SessionState::load(&state_path) {
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
                return None;
            }
        };
        let mut local = LocalEndpoint::new(&config.local, filter);
        let changed = Arc::new(Notify::new());
        let notify = changed.clone();
        let meter = Arc::new(Mutex::new(Meter::new(Instant::now())));
        let noticed = meter.clone();
        let woken = move || {
            lock(&noticed).noticed(Instant::now());
            notify.notify_one();
        };
        if let Err(e) = local.watch(woken) {
            // Without events the poll still finds every change, later.
            lock(&status).last_error = Some(e.to_string());
        }
        Some(Session {
            config,
            state_path,
            status,
            state,
            local,
            changed,
            told: Arc::new(AtomicBool::new(false)),
            remote_side: None,
            meter,
            news: Arc::new(Notify::new()),
            id: nexus_protocol::id::random_u64(),
            paused: false,
            coalescer: Coalescer::new(QUIET, MAX_WAIT),
            next_poll: Instant::now(),
            next_connect: Instant::now(),
        })
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            self.connect_when_due().await;
            let due = self.due();
            let event = tokio::select! {
                () = self.changed.notified() => Event::Changed,
                () = tokio::time::sleep_until(due.into()) => Event::Due,
                command = commands.recv() => Event::Command(command),
            };
            let flush = match event {
                Event::Changed => {
                    self.coalescer.noticed(Instant::now());
                    continue;
                }
                Event::Due => None,
                Event::Command(None | Some(Command::Stop)) => return,
                Event::Command(Some(Command::Pause)) => {
                    self.paused = true;
                    lock(&self.meter).paused();
                    self.news.notify_one();
                    continue;
                }
                Event::Command(Some(Command::Resume)) => {
                    self.paused = false;
                    self.next_poll = Instant::now();
                    lock(&self.meter).resumed(Instant::now());
                    self.news.notify_one();
                    continue;
                }
                Event::Command(Some(Command::Flush(reply))) => Some(reply),
                // A resolve is followed by a look, as any wake is: the kept version travels.
                Event::Command(Some(Command::Resolve(path, keep, reply))) => {
                    let _ = reply.send(self.resolve(&path, keep).await);
                    None
                }
            };
            self.look(flush).await;
        }
    }

    /// Connects to the workspace's agent, when not connected nor paused and an attempt is due.
    /// Reconnecting waits its turn: an event storm must not become a connection storm.
    async fn connect_when_due(&mut self) {
        if self.remote_side.is_some() || self.paused || Instant::now() < self.next_connect {
            return;
        }
        self.next_connect = Instant::now() + RECONNECT;
        let reports = Reports {
            meter: self.meter.clone(),
            news: self.news.clone(),
            session: self.id,
        };
        match remote(
            &self.config,
            self.changed.clone(),
            self.told.clone(),
            reports,
        )
        .await
        {
            Ok(remote) => {
                self.remote_side = Some(remote);
                let mut status = lock(&self.status);
                status.state = "watching".into();
                status.last_error = None;
            }
            Err(e) => {
                let mut status = lock(&self.status);
                status.state = "failing".into();
                status.last_error = Some(e.error.message);
                self.next_poll = self.next_connect;
            }
        }
    }

    /// When the session must wake without an event.
    fn due(&self) -> Instant {
        // Without the workspace's side there is nothing to cycle: wait for the next attempt.
        if self.remote_side.is_none() {
            self.next_connect
        } else {
            self.coalescer
                .due()
                .unwrap_or(self.next_poll)
                .min(self.next_poll)
        }
    }

    /// Settles a conflict for the side to `keep`, and saves the state that says so.
    async fn resolve(&mut self, path: &RelPath, keep: Side) -> Result<(), SessionError> {
        let Some((beta, _)) = self.remote_side.as_mut() else {
            return Err(SessionError::Unreachable);
        };
        nexus_sync::session::resolve_conflict(&mut self.state, &mut self.local, beta, path, keep)
            .await?;
        self.state.save(&self.state_path)?;
        Ok(())
    }

    /// A wake: a cycle (cycles until one is quiet, for a flush), unless the session is paused
    /// or has no workspace's side; then the flush, if one asked, hears how it went.
    async fn look(&mut self, flush: Option<Reply>) {
        if self.paused {
            if let Some(reply) = flush {
                let _ = reply.send(Err(SessionError::Paused));
            }
            self.next_poll = Instant::now() + POLL;
            return;
        }
        if self.remote_side.is_none() {
            self.coalescer.ran();
            if let Some(reply) = flush {
                let last_error = lock(&self.status).last_error.clone();
                let _ = reply.send(Err(SessionError::NotConnected { last_error }));
            }
            return;
        }
        self.coalescer.ran();
        let poll = if self.told.load(Ordering::Relaxed) {
            POLL_WHILE_TOLD
        } else {
            POLL
        };
        self.next_poll = Instant::now() + poll;
        let outcome = self.cycles(if flush.is_some() { 10 } else { 1 }).await;
        if let Some(reply) = flush {
            let _ = reply.send(outcome);
        }
    }

    /// Runs up to `most` cycles, until one finds nothing to do, recording each in the status.
    async fn cycles(&mut self, most: usize) -> Result<(), SessionError> {
        let Session {
            state,
            local,
            remote_side,
            status,
            state_path,
            told,
            meter,
            news,
            ..
        } = self;
        for _ in 0..most {
            let Some((beta, _)) = remote_side.as_mut() else {
                break;
            };
            let from = lock(meter).cycle_started(Instant::now());
            let outcome = cycle(state, local, beta).await;
            let ended = Instant::now();
            match outcome {
                Ok(report) => {
                    if lock(meter).cycle_ended(from, ended, &report) {
                        news.notify_one();
                    }
                    let quiet = report.quiet();
                    {
                        let mut status = lock(status);
                        status.cycles += 1;
                        status.changes += report.applied as u64;
                        status.conflicts = conflicts_of(&report);
                        status
                            .refused
                            .splice(0..0, report.refused.iter().map(|r| r.message.clone()));
                        status.refused.truncate(20);
                        status.last_error = None;
                        status.last_sync = Some(nexus_protocol::clock::now());
                    }
                    // Saved when it changed: a quiet cycle every 500 ms would otherwise
                    // rewrite the whole agreed tree each time.
                    if report.ancestor_changed
                        && let Err(e) = state.save(state_path)
                    {
                        lock(status).last_error = Some(e.to_string());
                    }
                    if quiet {
                        break;
                    }
                }
                Err(error) => {
                    if lock(meter).cycle_failed() {
                        news.notify_one();
                    }
                    if let EndpointError::Unavailable(_) = error {
                        *remote_side = None;
                        told.store(false, Ordering::Relaxed);
                    }
                    let mut status = lock(status);
                    status.last_error = Some(error.to_string());
                    status.state = "failing".into();
                    return Err(SessionError::Cycle(error));
                }
            }
        }
        Ok(())
    }
}

/// Connects to the workspace's agent: the remote side of the session, and two tasks beside it.
/// One waits on the agent for changes there and wakes the session for each (`told` says
/// whether the agent can be waited on; until it ends, the session need not poll); the other
/// sends the session's `reports`.
async fn remote(
    config: &SessionConfig,
    changed: Arc<Notify>,
    told: Arc<AtomicBool>,
    reports: Reports,
) -> Result<(RemoteEndpoint<AgentCarrier>, Beside), CliError> {
    let (_, connection) = crate::agents::agent_of(&config.settings, &config.workspace).await?;
    let carrier = AgentCarrier::new(connection, config.workspace.clone());
    let side = |carrier| RemoteEndpoint::new(carrier, config.ignore.clone(), config.ignore_vcs);
    let mut waiting = side(carrier.clone());
    let meter = reports.meter.clone();
    let reporter = tokio::spawn(reports.send(side(carrier.clone())));
    let waiter = tokio::spawn(async move {
        let mut seen = 0;
        loop {
            match waiting.wait_change(seen, MAX_WAIT_MS).await {
                Ok(count) => {
                    told.store(true, Ordering::Relaxed);
                    if count != seen {
                        seen = count;
                        lock(&meter).noticed(Instant::now());
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
    Ok((side(carrier), Beside([waiter, reporter])))
}

/// The tasks beside a connection (the waiter and the reporter); they end with it.
struct Beside([tokio::task::JoinHandle<()>; 2]);

impl Drop for Beside {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What the reporter needs of its session.
struct Reports {
    meter: Arc<Mutex<Meter>>,
    /// Notified when something is worth telling the agent at once.
    news: Arc<Notify>,
    session: u64,
}

impl Reports {
    /// Tells the agent, through `side`, what the session measured and where it stands: at once,
    /// then at each piece of news and every [`REPORT_EVERY`] regardless. On a stream of its own,
    /// so a slow report holds no cycle up; a report that fails is dropped, measures and all
    /// (logged at debug). An agent that cannot read reports (older than them) gets none more on
    /// this connection, and the session goes on as before.
    async fn send(self, mut side: RemoteEndpoint<AgentCarrier>) {
        loop {
            let report = lock(&self.meter).report(self.session);
            match side.report(report).await {
                Ok(()) => {}
                Err(EndpointError::Refused(refusal))
                    if refusal.code == RefusalCode::NotUnderstood =>
                {
                    tracing::debug!(%refusal, "the workspace's agent takes no sync reports");
                    return;
                }
                Err(error) => tracing::debug!(%error, "a sync report was dropped"),
            }
            tokio::select! {
                () = self.news.notified() => {}
                () = tokio::time::sleep(REPORT_EVERY) => {}
            }
        }
    }
}

fn conflicts_of(report: &CycleReport) -> Vec<ConflictView> {
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
