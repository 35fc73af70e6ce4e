//! The agent's link to the coordinators: connect to one, register the host, then, until the
//! connection fails, at once:
//!
//! - watch this host's desired state (a subscription the leader pushes to) and hand each version
//!   to the reconciler;
//! - heartbeat every interval, with the latest host stats;
//! - report what the reconciler observed whenever it changes (a report refused because the
//!   cluster has the host marked down, `HOST_DOWN`, is kept and sent again once a heartbeat sent
//!   after the refusal is acknowledged: that heartbeat is what returns the host);
//! - send container stats at the stats interval;
//! - report what the workspaces were used for ([`crate::activity`]) every six heartbeats (30 s
//!   by default): each workspace's latest activity, kept for the next session when a report
//!   does not get through.
//!
//! Heartbeats, stats and the watch are the leader's: a follower answers `NOT_LEADER` with the
//! leader's address, and the link goes there next. When a connection fails the link backs off
//! (exponentially, with jitter, so a thousand agents that lost the same coordinator do not
//! return in step) and tries the next coordinator.
//!
//! Losing the link never touches workspaces: what runs keeps running, and the reconciler carries
//! on with the last desired state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::id::random_u64;
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::{AgentRequest, DesiredState, ObservedWorkspace, Request, Response};
use nexus_protocol::model::HostInfo;
use nexus_protocol::transport::{self, Connection, Connector, Subscription, resolve};
use tokio::sync::watch;

use crate::activity::Activities;
use crate::asker::Asker;
use crate::config::Config;
use crate::hops::{self, Causes};
use crate::metrics::Metrics;
use crate::probes::Vitals;
use crate::sampler::Sample;

mod heartbeat;

use heartbeat::{Beats, beat, heartbeat};

/// The first retry waits about this long; each failure doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A report is a Raft write: it may wait for a new leader to be elected.
const REPORT_DEADLINE: Duration = Duration::from_secs(15);
/// An unchanged report is sent again this often.
const REPORT_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Link {
    connector: Connector,
    config: Config,
    info: HostInfo,
    failures: u32,
    desired: watch::Sender<Option<DesiredState>>,
    /// The request that last changed each workspace, as the coordinator names them with the
    /// desired state (kept beside it, not on disk).
    causes: watch::Sender<Causes>,
    reports: watch::Receiver<Vec<ObservedWorkspace>>,
    samples: watch::Receiver<Option<Sample>>,
    /// Where this agent serves users' logs and exec, told to every coordinator it registers with.
    serving: Option<String>,
    monitor: Monitor,
    /// The heartbeat interval in force (a reload may change it).
    heartbeat_interval: watch::Receiver<Duration>,
    /// What the workspaces were used for, to report.
    activities: Activities,
    /// Where the agent's own requests go: handed each registered session.
    asker: Asker,
}

/// What the link shows the monitoring: its metrics, and its vitals for the probes.
#[derive(Debug, Clone)]
struct Monitor {
    metrics: Metrics,
    vitals: Arc<Vitals>,
}

impl Monitor {
    /// The loop made progress.
    fn beat(&self) {
        self.vitals.beat(&self.vitals.link, false);
    }

    /// The leader acknowledged a heartbeat after `rtt`.
    fn acknowledged(&self, rtt: Duration) {
        self.beat();
        self.vitals.acknowledged();
        self.metrics.heartbeat_rtt.set(rtt.as_secs_f64());
    }

    /// Registered with the leader, or (with why) no longer.
    fn registered(&self, down: Option<&WireError>) {
        let up = down.is_none();
        self.metrics.connected.set(if up { 1.0 } else { 0.0 });
        self.vitals
            .link(down.map(|error| format!("{}: {}", error.code, error.message)));
    }
}

impl Link {
    pub fn new(
        connector: Connector,
        config: Config,
        info: HostInfo,
        desired: watch::Sender<Option<DesiredState>>,
        reports: watch::Receiver<Vec<ObservedWorkspace>>,
        samples: watch::Receiver<Option<Sample>>,
    ) -> Link {
        Link {
            connector,
            info,
            failures: 0,
            desired,
            causes: watch::Sender::new(Causes::default()),
            reports,
            samples,
            serving: None,
            monitor: Monitor {
                metrics: Metrics::unserved(),
                vitals: Arc::default(),
            },
            heartbeat_interval: watch::channel(config.heartbeat_interval).1,
            activities: Activities::default(),
            asker: Asker::default(),
            config,
        }
    }

    /// Serves the agent's own requests made through `asker` over each session.
    pub fn with_asker(mut self, asker: Asker) -> Link {
        self.asker = asker;
        self
    }

    /// Reports the activity noted in `activities`.
    pub fn with_activity(mut self, activities: Activities) -> Link {
        self.activities = activities;
        self
    }

    /// Heartbeats at the interval `interval` holds, changing pace when it changes.
    pub fn with_heartbeat_interval(mut self, interval: watch::Receiver<Duration>) -> Link {
        self.heartbeat_interval = interval;
        self
    }

    /// Records into `metrics`, and shows its state to the probes in `vitals`.
    pub fn monitored(mut self, metrics: Metrics, vitals: Arc<Vitals>) -> Link {
        self.monitor = Monitor { metrics, vitals };
        self
    }

    /// Keeps the causes the coordinator sends with each desired state in `causes` (the
    /// reconciler's receiver traces each workspace's steps under them).
    pub fn with_causes(mut self, causes: watch::Sender<Causes>) -> Link {
        self.causes = causes;
        self
    }

    /// Tells each coordinator, after registering, where this agent serves users.
    pub fn serving(mut self, address: String) -> Link {
        self.serving = Some(address);
        self
    }

    /// Keeps the link up until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut index = 0usize;
        let mut leader_hint: Option<String> = None;
        // How many answers in a row said that no leader is known yet.
        let mut leaderless = 0u32;
        // The leader a coordinator named, while tries at it fail before a session begins.
        let mut named: Option<Named> = None;
        loop {
            let target = leader_hint.take().unwrap_or_else(|| {
                self.config.coordinators[index % self.config.coordinators.len()].clone()
            });
            self.monitor.beat();
            tokio::select! {
                (error, healthy) = self.session(&target) => {
                    self.monitor.registered(Some(&error));
                    // A session that worked for a while starts the count afresh; one that failed
                    // early (however far it got) counts as one more failure, so an error that
                    // recurs right after connecting backs off like any other.
                    self.failures = if healthy { 1 } else { self.failures.saturating_add(1) };
                    let was_leaderless = std::mem::take(&mut leaderless);
                    if let Some(ErrorDetail::NotLeader { address: Some(address), .. }) = &error.detail {
                        tracing::info!(coordinator = %target, leader = %address, "following the leader");
                        leader_hint = Some(address.clone());
                        named = Some(Named::new(address));
                        // A hint is worth following at once, but two nodes that name each other
                        // mid-election must not make the link spin.
                        self.failures = self.failures.min(1);
                    } else if error.code == ErrorCode::NotLeader {
                        // An election under way (or a cluster just started): not a failure of
                        // this link, but nothing to follow yet. The coordinator answered, so it
                        // lives and will soon know the leader: ask it again a few times before
                        // moving on (the next in the list may be the one that just died, and a
                        // dead one costs the handshake timeout, past a new leader's grace).
                        leaderless = was_leaderless.saturating_add(1);
                        tracing::info!(coordinator = %target, failures = self.failures, "no leader yet; trying again: {}", error.message);
                        index = after_leaderless(&self.config.coordinators, &target, index, leaderless);
                    } else {
                        tracing::warn!(coordinator = %target, code = %error.code, failures = self.failures, "coordinator link lost: {}", error.message);
                        let silent = !healthy && transport::unanswered(&error);
                        if ask_named_again(&mut named, &target, silent) {
                            leader_hint = Some(target);
                        } else {
                            index = next_after(&self.config.coordinators, &target, index);
                        }
                    }
                }
                () = &mut shutdown => return,
            }
            let delay = backoff(self.failures, random_u64());
            self.monitor.beat();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// One connection's life. Returns only with the error that ended it, and whether the
    /// session got as far as a heartbeat the coordinator acknowledged.
    async fn session(&mut self, target: &str) -> (WireError, bool) {
        let healthy = AtomicBool::new(false);
        let error = self.connected(target, &healthy).await;
        (error, healthy.load(Ordering::Relaxed))
    }

    async fn connected(&mut self, target: &str, healthy: &AtomicBool) -> WireError {
        let (address, server_name) = match resolve(target).await {
            Ok(resolved) => resolved,
            Err(error) => return error,
        };
        let connection = match self
            .connector
            .connect(address, &server_name, &[IdentityKind::Coordinator])
            .await
        {
            Ok(connection) => connection,
            Err(error) => return error,
        };
        self.monitor.beat();
        match connection
            .request(Request::Agent(AgentRequest::Register(self.info.clone())))
            .await
        {
            Ok(Response::Registered { .. }) => {}
            Ok(other) => return unexpected(&other),
            Err(error) => return error,
        }
        self.monitor.beat();
        if let Some(address) = &self.serving {
            let serving = Request::Agent(AgentRequest::Serving(address.clone()));
            match connection.request(serving).await {
                Ok(Response::Ack) => {}
                Ok(other) => return unexpected(&other),
                Err(error) => return error,
            }
        }
        // A heartbeat first, answered: only the leader takes one (a follower refuses with
        // NOT_LEADER, and the session ends before a report goes out), and it returns the host
        // if the leader had it marked down, so the session's first report is not refused with
        // HOST_DOWN. It also tells a new leader at once that this host is alive, rather than one
        // interval later.
        // A coordinator killed outright sends nothing, so a heartbeat must not wait out the
        // connection's idle timeout: two intervals (at least 2 s) is plenty for a live one.
        let interval = *self.heartbeat_interval.borrow();
        let deadline = (interval * 2).max(Duration::from_secs(2));
        self.monitor.beat();
        match beat(&connection, 0, &self.samples, deadline).await {
            Ok(rtt) => self.monitor.acknowledged(rtt),
            Err(error) => return error,
        }
        healthy.store(true, Ordering::Relaxed);
        self.monitor.registered(None);
        let watching = Watching {
            connection: &connection,
            desired: &self.desired,
            causes: &self.causes,
        };
        let (subscription, known_version) = match watching.open(true).await {
            Ok(watching) => watching,
            Err(error) => return error,
        };
        tracing::info!(coordinator = %connection.server(), %address, ?known_version, "registered; watching the desired state");
        let mut reports = self.reports.clone();
        // Whatever was observed before this connection is news to this coordinator.
        reports.mark_changed();
        let mut samples = self.samples.clone();
        samples.mark_unchanged();
        let rewatch = rewatch_interval(interval);
        self.asker.connected(Some(connection.clone()));
        // The first heartbeat (number 0) was acknowledged above.
        let beats = watch::Sender::new(Beats::default());
        let ended = tokio::select! {
            error = watching.refreshed(subscription, rewatch) => error,
            error = heartbeat(&connection, self.heartbeat_interval.clone(), deadline, self.samples.clone(), healthy, &self.monitor, &beats) => error,
            error = report(&connection, reports, self.causes.subscribe(), &beats) => error,
            error = container_stats(&connection, deadline, samples) => error,
            error = activity(&connection, self.heartbeat_interval.clone(), &self.activities) => error,
        };
        self.asker.connected(None);
        ended
    }
}

/// How long one desired-state watch runs before the agent asks afresh: 120 heartbeats (ten
/// minutes by default), give or take a sixth at random so a fleet's agents do not ask at once.
/// A safety net only (see [`Watching::refreshed`]): at twelve heartbeats, the renewals of 5,000
/// agents were a third of the leader's idle load once heartbeats went quiet.
fn rewatch_interval(heartbeat: Duration) -> Duration {
    let base = heartbeat.saturating_mul(120).max(Duration::from_secs(1));
    let spread = base / 3;
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
    base - spread / 2 + Duration::from_millis(random_u64() % spread_ms)
}

/// One session's desired-state watch: the connection, and where what it pushes goes.
struct Watching<'a> {
    connection: &'a Connection,
    desired: &'a watch::Sender<Option<DesiredState>>,
    causes: &'a watch::Sender<Causes>,
}

/// How one watch ended: its error, and whether any update came before it.
struct Ended {
    error: WireError,
    answered: bool,
}

impl Watching<'_> {
    /// Watches the desired state, and every `every` starts the watch again from the version
    /// held. A watch sends only what changed, so a push lost on the way would leave the host
    /// behind for good. One was seen at fleet scale (a workspace placed on a live host whose
    /// agent never heard of it: a lost wakeup in the coordinator's watch, since fixed). Asking
    /// afresh bounds any such loss to one interval, and the agent logs what a renewal caught up.
    ///
    /// The watch asks for each workspace's cause with the state (`WatchDesiredCauses`); a
    /// coordinator of an earlier version cannot read that request, and is asked the older
    /// `WatchDesired` for the rest of the session.
    async fn refreshed(&self, first: Subscription, every: Duration) -> WireError {
        let mut with_causes = true;
        let mut subscription = first;
        let mut held = None;
        loop {
            match tokio::time::timeout(every, self.watch(subscription, held)).await {
                Ok(ended) if with_causes && !ended.answered && unreadable(&ended.error) => {
                    tracing::info!(
                        "the coordinator does not know the watch with causes; using the older watch (the agent's work is not traced under users' requests)"
                    );
                    with_causes = false;
                }
                Ok(ended) => return ended.error,
                Err(_) => {}
            }
            let known_version;
            (subscription, known_version) = match self.open(with_causes).await {
                Ok(watching) => watching,
                Err(error) => return error,
            };
            tracing::debug!(?known_version, "renewed the desired-state watch");
            held = Some(known_version);
        }
    }

    /// Asks for the desired state from the version held on: the subscription, and that version.
    async fn open(&self, with_causes: bool) -> Result<(Subscription, Option<u64>), WireError> {
        let known_version = self.desired.borrow().as_ref().map(|d| d.version);
        let request = if with_causes {
            AgentRequest::WatchDesiredCauses { known_version }
        } else {
            AgentRequest::WatchDesired { known_version }
        };
        let subscription = self.connection.subscribe(Request::Agent(request)).await?;
        Ok((subscription, known_version))
    }

    /// Hands every desired state the coordinator pushes to the reconciler, its causes first.
    /// `refreshed` holds the version the agent had when it asked afresh: anything newer in the
    /// first answer is a change the previous watch never sent.
    async fn watch(&self, mut subscription: Subscription, refreshed: Option<Option<u64>>) -> Ended {
        let mut first = true;
        let ended = |error, first: bool| Ended {
            error,
            answered: !first,
        };
        loop {
            let (state, causes) = match subscription.next().await {
                Some(Ok(Response::DesiredWithCauses { state, causes })) => (state, causes),
                Some(Ok(Response::Desired(state))) => (state, Vec::new()),
                Some(Ok(other)) => return ended(unexpected(&other), first),
                Some(Err(error)) => return ended(error, first),
                None => {
                    let error = WireError::new(
                        ErrorCode::NetworkError,
                        "the coordinator ended the desired-state watch",
                    );
                    return ended(error, first);
                }
            };
            if first
                && let Some(held) = refreshed
                && held.is_none_or(|held| state.version > held)
            {
                // Mostly a change made just as the watch was renewed (its push died with the
                // old watch): 38 of 5,000 hosts' renewals during a burst of 50,000 creates. So
                // info, not a warning; a host that lags for a whole interval shows here too.
                tracing::info!(
                    version = state.version,
                    held = ?held,
                    "a renewed watch of the desired state brought a version the previous watch had not sent"
                );
            }
            first = false;
            tracing::debug!(
                version = state.version,
                causes = causes.len(),
                "desired state received"
            );
            let version = state.version;
            self.causes.send_if_modified(|held| {
                let replace = held.replaced_by(version);
                if replace {
                    *held = Causes::new(version, causes);
                }
                replace
            });
            self.desired.send_replace(Some(state));
        }
    }
}

/// Whether a coordinator could not read the request at all: one of an earlier version, which
/// knows no `WatchDesiredCauses`.
fn unreadable(error: &WireError) -> bool {
    matches!(
        error.code,
        ErrorCode::ProtocolError | ErrorCode::Unsupported
    )
}

/// Sends the reconciler's report whenever it changes, and again every [`REPORT_REFRESH`] (a
/// report forwarded through a node that lost the lead may be applied after a newer one; the
/// next refresh puts the newer one back). A report the cluster could not commit in time is sent
/// again a little later; one the coordinator refuses is logged and not sent again until it
/// changes: neither ends the connection. One refused because the host is marked down
/// (`HOST_DOWN`: it raced the marking) is kept and sent again, with anything newer, once a
/// heartbeat sent after the refusal is acknowledged (`beats`): the leader returns a down host
/// when it takes a heartbeat, so a host's report is not lost when it comes back.
async fn report(
    connection: &Connection,
    mut reports: watch::Receiver<Vec<ObservedWorkspace>>,
    causes: watch::Receiver<Causes>,
    beats: &watch::Sender<Beats>,
) -> WireError {
    let mut refresh = tokio::time::interval(REPORT_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    let mut refused: Option<Vec<ObservedWorkspace>> = None;
    // What the coordinators last acknowledged: a report is a hop of each workspace's cause
    // whose entry changed since.
    let mut acknowledged: Vec<ObservedWorkspace> = Vec::new();
    loop {
        tokio::select! {
            changed = reports.changed() => if changed.is_err() {
                // The reconciler stopped: the agent is shutting down. Keep the connection
                // until then.
                std::future::pending::<()>().await;
            },
            _ = refresh.tick() => {}
        }
        let observed = reports.borrow_and_update().clone();
        if observed.is_empty() || refused.as_ref() == Some(&observed) {
            continue;
        }
        let hops = report_hops(&observed, &acknowledged, &causes.borrow());
        let request = Request::Agent(AgentRequest::ReportObserved(observed.clone()));
        let answer = connection
            .request_with(RequestId::random(), request, REPORT_DEADLINE)
            .await;
        for span in &hops {
            hop::record(span, &answer);
        }
        drop(hops);
        match answer {
            Ok(Response::Ack) => {
                refused = None;
                acknowledged = observed;
            }
            Ok(other) => return unexpected(&other),
            Err(error) if error.code == ErrorCode::Timeout => {
                tracing::warn!(
                    "the coordinator did not confirm a report in time; sending it again"
                );
                reports.mark_changed();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) if error.code == ErrorCode::InvalidArgument => {
                tracing::error!(code = %error.code, "the coordinator refused a report; not sending it again until it changes: {}", error.message);
                refused = Some(observed);
            }
            Err(error) if error.code == ErrorCode::HostDown => {
                let refused_at = *beats.borrow();
                beats.send_modify(|beats| beats.want_answer_after(refused_at));
                tracing::info!(
                    "the cluster has this host marked down; reporting again after the next heartbeat: {}",
                    error.message
                );
                if beats
                    .subscribe()
                    .wait_for(|now| now.acknowledged_since(refused_at))
                    .await
                    .is_err()
                {
                    // The session is ending: its heartbeats stopped.
                    std::future::pending::<()>().await;
                }
                reports.mark_changed();
            }
            Err(error) => return error,
        }
    }
}

/// One [`hops::REPORT`] per workspace whose observed entry changed since the last
/// acknowledged report, under its cause's request id, if it has one.
fn report_hops(
    observed: &[ObservedWorkspace],
    acknowledged: &[ObservedWorkspace],
    causes: &Causes,
) -> Vec<tracing::Span> {
    observed
        .iter()
        .filter(|entry| !acknowledged.contains(entry))
        .filter_map(|entry| {
            let cause = causes.by_workspace.get(&entry.name)?;
            let state = entry.state.to_string();
            Some(
                Hop::new(hops::REPORT, Some(*cause))
                    .workspace(&entry.name)
                    .kind(&state)
                    .info(),
            )
        })
        .collect()
}

async fn container_stats(
    connection: &Connection,
    deadline: Duration,
    mut samples: watch::Receiver<Option<Sample>>,
) -> WireError {
    loop {
        if samples.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let containers = samples
            .borrow_and_update()
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let request = Request::Agent(AgentRequest::ContainerStats(containers));
        match connection
            .request_with(RequestId::random(), request, deadline)
            .await
        {
            Ok(Response::Ack) => {}
            Ok(other) => return unexpected(&other),
            Err(error) => return error,
        }
    }
}

/// How often activity is reported: every six heartbeats (30 s at the default 5 s), at least a
/// second and at most five minutes apart. Derived rather than a setting of its own: it follows
/// the heartbeat's reloads, and a test's fast heartbeat makes a fast report.
fn activity_interval(heartbeat: Duration) -> Duration {
    heartbeat
        .saturating_mul(6)
        .clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// Reports the workspaces' activity at [`activity_interval`]. What a report could not deliver
/// (the connection failed, the cluster did not commit in time) is put back for the next one, in
/// this session or the next; what a coordinator refuses or cannot read (one of an earlier
/// version) is dropped, with a log line: it would be refused again.
async fn activity(
    connection: &Connection,
    mut heartbeat: watch::Receiver<Duration>,
    activities: &Activities,
) -> WireError {
    let mut ticker = crate::reload::pace(activity_interval(*heartbeat.borrow_and_update()));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Ok(()) = heartbeat.changed() => {
                ticker = crate::reload::pace(activity_interval(*heartbeat.borrow_and_update()));
                ticker.tick().await;
                continue;
            }
        }
        let entries = activities.drain();
        if entries.is_empty() {
            continue;
        }
        // Put back unless delivered, even when the session ends while the report is under way.
        let mut unsent = Unsent {
            entries: Some(entries.clone()),
            activities,
        };
        let request = Request::Agent(AgentRequest::Activity(entries));
        let answer = connection
            .request_with(RequestId::random(), request, REPORT_DEADLINE)
            .await;
        match (activity_fate(&answer), answer) {
            (ActivityFate::Delivered, _) => {
                unsent.delivered();
            }
            (ActivityFate::Dropped, Err(error)) => {
                let entries = unsent.delivered();
                tracing::warn!(code = %error.code, workspaces = entries, "the coordinator refused an activity report; dropped: {}", error.message);
            }
            (ActivityFate::Kept, Err(error)) if error.code == ErrorCode::HostDown => {
                tracing::info!(
                    "the cluster has this host marked down; its activity goes again with the next report: {}",
                    error.message
                );
            }
            (ActivityFate::Kept, _) => {
                tracing::warn!(
                    "the coordinator did not confirm an activity report in time; it goes again with the next"
                );
            }
            (_, Ok(other)) => return unexpected(&other),
            (_, Err(error)) => return error,
        }
    }
}

/// What becomes of an activity report's entries, by the coordinator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActivityFate {
    Delivered,
    /// Refused, or not understood (a coordinator of an earlier version): it would be again.
    Dropped,
    /// Put back for the next report: not confirmed in time, or the host is marked down (its
    /// next heartbeat returns it).
    Kept,
    /// The session ends with the answer (put back, for the next session).
    Ends,
}

fn activity_fate(answer: &Result<Response, WireError>) -> ActivityFate {
    match answer {
        Ok(Response::Ack) => ActivityFate::Delivered,
        Ok(_) => ActivityFate::Ends,
        Err(error) => match error.code {
            ErrorCode::InvalidArgument | ErrorCode::Unsupported | ErrorCode::ProtocolError => {
                ActivityFate::Dropped
            }
            ErrorCode::Timeout | ErrorCode::HostDown => ActivityFate::Kept,
            _ => ActivityFate::Ends,
        },
    }
}

/// A report's entries until it is delivered: put back into the book when dropped before.
struct Unsent<'a> {
    entries: Option<
        Vec<(
            nexus_protocol::WorkspaceName,
            nexus_protocol::model::Activity,
        )>,
    >,
    activities: &'a Activities,
}

impl Unsent<'_> {
    /// Delivered (or dropped for good): nothing to put back. Answers how many entries it had.
    fn delivered(&mut self) -> usize {
        self.entries.take().map_or(0, |entries| entries.len())
    }
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(entries) = self.entries.take() {
            self.activities.put_back(entries);
        }
    }
}

fn unexpected(response: &Response) -> WireError {
    WireError::new(
        ErrorCode::ProtocolError,
        format!("unexpected answer from the coordinator: {response:?}"),
    )
}

/// The wait after `failures` consecutive failures: exponential from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], then jittered to between half and all of that, from `random`.
pub fn backoff(failures: u32, random: u64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let half = ceiling_ms / 2;
    Duration::from_millis(half + random % (half + 1))
}

/// The index of the coordinator to try after `target` failed: the one after it in the list. A
/// leader reached through a hint is not where `index` points, and stepping `index` on from there
/// could land on the very coordinator that just died (trying it then costs the handshake
/// timeout, past a new leader's grace for the hosts it has not heard from).
fn next_after(coordinators: &[String], target: &str, index: usize) -> usize {
    coordinators
        .iter()
        .position(|coordinator| coordinator == target)
        .unwrap_or(index)
        .wrapping_add(1)
}

/// How many more tries the agent gives a coordinator another one named as the leader, when it
/// did not answer at all (`transport::unanswered`), before it goes on down the list. A new
/// leader is the one coordinator every agent needs after a failover, and thousands reconnect to
/// it at once: a try that finds it too busy to answer in time, and goes on to the next in the
/// list, costs a follower a handshake only to be named the same leader again (about half of the
/// 100,000 handshakes tried after a failover at 20,000 hosts went to the follower). A leader
/// that is gone (its address refuses a probe), refuses, or fails the handshake is left at once.
/// Cost: a named leader cut off from this agent holds it three first waits (30 s) before the
/// next coordinator.
const NAMED_TRIES: u32 = 2;

/// The leader a coordinator named, and how many tries at it in a row went unanswered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    address: String,
    failed: u32,
}

impl Named {
    fn new(address: &str) -> Named {
        Named {
            address: address.to_string(),
            failed: 0,
        }
    }
}

/// Whether the agent tries `target` again after a try at it failed (`silent`: it did not answer
/// at all, and no session had begun): when `target` is the leader another coordinator named, the
/// try was silent, and fewer than [`NAMED_TRIES`] tries at it went so since it was named.
/// Forgets the named leader otherwise.
fn ask_named_again(named: &mut Option<Named>, target: &str, silent: bool) -> bool {
    let again = named
        .as_mut()
        .filter(|named| named.address == target && silent)
        .is_some_and(|named| {
            named.failed += 1;
            named.failed <= NAMED_TRIES
        });
    if !again {
        *named = None;
    }
    again
}

/// How many times in a row the agent asks a live coordinator that knows no leader yet before
/// trying the next one: an election takes one to two seconds, and the backoff between tries
/// (about 0.2, 0.4, 0.8 s) spans it; a coordinator cut off from the majority is left after that.
const LEADERLESS_TRIES: u32 = 3;

/// The index of the coordinator to try after `target` answered, for the `leaderless`-th time in a
/// row, that it knows no leader: `target` again until [`LEADERLESS_TRIES`], then the next.
fn after_leaderless(coordinators: &[String], target: &str, index: usize, leaderless: u32) -> usize {
    let next = next_after(coordinators, target, index);
    if leaderless < LEADERLESS_TRIES {
        next.wrapping_sub(1)
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_a_hop_of_each_changed_workspaces_cause() {
        use nexus_protocol::hop::capture;
        use nexus_protocol::model::WorkspaceState;
        let entry = |name: &str, state| ObservedWorkspace {
            name: name.parse().unwrap(),
            generation: 1,
            state,
            ports: vec![],
            error: None,
        };
        let create = RequestId::from_u128(1);
        let causes = Causes::new(
            4,
            vec![
                ("api".parse().unwrap(), create),
                ("db".parse().unwrap(), RequestId::from_u128(2)),
            ],
        );
        let acknowledged = vec![
            entry("api", WorkspaceState::Starting),
            entry("db", WorkspaceState::Running),
        ];
        let observed = vec![
            entry("api", WorkspaceState::Running),
            entry("db", WorkspaceState::Running),
            entry("web", WorkspaceState::Running),
        ];
        let (subscriber, captured) = capture::subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let spans = report_hops(&observed, &acknowledged, &causes);
            for span in &spans {
                hop::ok(span);
            }
        });
        // `db` did not change, `web` has no cause: only `api`'s report is traced.
        let hops = captured.hops();
        assert_eq!(hops.len(), 1, "{hops:?}");
        assert_eq!(hops[0].name(), "agent.report");
        assert_eq!(hops[0].field("workspace"), Some("api"));
        assert_eq!(hops[0].field("kind"), Some("running"));
        assert_eq!(
            hops[0].field("request_id"),
            Some(create.to_string().as_str())
        );
    }

    #[test]
    fn activity_is_kept_for_the_next_report_while_its_host_is_marked_down() {
        let refused = |code| Err(WireError::new(code, "no"));
        assert_eq!(activity_fate(&Ok(Response::Ack)), ActivityFate::Delivered);
        assert_eq!(
            activity_fate(&refused(ErrorCode::HostDown)),
            ActivityFate::Kept
        );
        assert_eq!(
            activity_fate(&refused(ErrorCode::Timeout)),
            ActivityFate::Kept
        );
        assert_eq!(
            activity_fate(&refused(ErrorCode::InvalidArgument)),
            ActivityFate::Dropped
        );
        assert_eq!(
            activity_fate(&refused(ErrorCode::ProtocolError)),
            ActivityFate::Dropped
        );
        // The connection's trouble ends the session; the entries wait for the next.
        assert_eq!(
            activity_fate(&refused(ErrorCode::NetworkError)),
            ActivityFate::Ends
        );
        assert_eq!(
            activity_fate(&refused(ErrorCode::NotLeader)),
            ActivityFate::Ends
        );
        assert_eq!(
            activity_fate(&Ok(Response::EntryVersion(2))),
            ActivityFate::Ends
        );
    }

    #[test]
    fn a_report_refused_for_a_down_host_waits_for_a_heartbeat_sent_after_it() {
        let refused = beats(4, 3);
        // Heartbeat 4 was under way at the refusal: the leader may have judged it before the
        // marking, so its answer does not mean the host is back.
        let in_flight = beats(4, 4);
        assert!(!in_flight.acknowledged_since(refused));
        assert!(!beats(5, 4).acknowledged_since(refused));
        assert!(beats(5, 5).acknowledged_since(refused));
        // Nothing under way at the refusal: the next one.
        let idle = beats(3, 3);
        assert!(!idle.acknowledged_since(idle));
        assert!(beats(4, 4).acknowledged_since(idle));
    }

    fn beats(sent: u64, acknowledged: u64) -> Beats {
        Beats {
            sent,
            acknowledged,
            wanted: 0,
        }
    }

    /// Quiet heartbeats are acknowledged by QUIC, not answered: after a refusal, heartbeats are
    /// asked aloud until one sent after it is answered, and no longer.
    #[test]
    fn a_refused_report_wants_heartbeats_answered_until_one_after_it_is() {
        let mut now = beats(4, 3);
        assert!(!now.answer_wanted());
        let refused = now;
        now.want_answer_after(refused);
        assert!(now.answer_wanted());
        // Heartbeat 4's answer came back (sent before the refusal): still wanted.
        now.acknowledged = 4;
        assert!(now.answer_wanted() && !now.acknowledged_since(refused));
        // A second refusal before it changes nothing earlier.
        now.want_answer_after(beats(3, 3));
        now.sent = 5;
        now.acknowledged = 5;
        assert!(!now.answer_wanted() && now.acknowledged_since(refused));
    }

    /// Heartbeats go aloud while a refused report waits, after a lost packet and every twelfth;
    /// else quietly.
    #[test]
    fn a_heartbeat_goes_aloud_when_an_answer_is_wanted_after_a_loss_and_now_and_then() {
        use super::heartbeat::aloud;
        assert!(!aloud(1, beats(1, 0), false));
        assert!(!aloud(13, beats(13, 0), false));
        assert!(aloud(12, beats(12, 0), false));
        assert!(aloud(24, beats(24, 12), false));
        assert!(aloud(5, beats(5, 0), true));
        let mut waiting = beats(5, 0);
        waiting.want_answer_after(beats(4, 0));
        assert!(aloud(5, waiting, false));
    }

    #[test]
    fn after_a_lost_coordinator_the_next_one_in_the_list_is_tried() {
        let list: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        // Reached through the list: the next in it.
        assert_eq!(next_after(&list, "a:1", 0) % 3, 1);
        assert_eq!(next_after(&list, "c:3", 2) % 3, 0);
        // Reached through a leader's hint while the list pointed at "a:1": never "b:2" again,
        // which just failed.
        assert_eq!(next_after(&list, "b:2", 0) % 3, 2);
        // A hint naming an address not in the list: the list goes on from where it was.
        assert_eq!(next_after(&list, "d:4", 0) % 3, 1);
    }

    #[test]
    fn a_silent_named_leader_is_tried_again_until_its_tries_run_out() {
        // Another coordinator failed: not the one named; the name is forgotten.
        let mut other = Some(Named::new("b:2"));
        assert!(!ask_named_again(&mut other, "c:3", true));
        assert_eq!(other, None);
        let mut named = Some(Named::new("b:2"));
        for _ in 0..NAMED_TRIES {
            assert!(ask_named_again(&mut named, "b:2", true));
        }
        assert!(!ask_named_again(&mut named, "b:2", true));
        assert_eq!(named, None);
        // Gone, refusing, or a session that began and broke: the list goes on at once.
        let mut named = Some(Named::new("b:2"));
        assert!(!ask_named_again(&mut named, "b:2", false));
        assert_eq!(named, None);
        // Nobody named: the list goes on.
        assert!(!ask_named_again(&mut None, "b:2", true));
    }

    #[test]
    fn a_live_coordinator_without_a_leader_is_asked_again_before_the_next() {
        let list = vec!["a:1".to_string(), "b:2".to_string(), "c:3".to_string()];
        assert_eq!(after_leaderless(&list, "b:2", 0, 1) % 3, 1);
        assert_eq!(after_leaderless(&list, "b:2", 1, 2) % 3, 1);
        assert_eq!(after_leaderless(&list, "b:2", 1, LEADERLESS_TRIES) % 3, 2);
        // Reached through a hint, the index is elsewhere: the coordinator asked is kept.
        assert_eq!(after_leaderless(&list, "c:3", 0, 1) % 3, 2);
    }

    #[test]
    fn the_watch_is_renewed_every_120_heartbeats_give_or_take_a_sixth() {
        for _ in 0..100 {
            let every = rewatch_interval(Duration::from_secs(5));
            assert!(
                every >= Duration::from_secs(500) && every < Duration::from_secs(700),
                "{every:?}"
            );
        }
        assert!(rewatch_interval(Duration::ZERO) >= Duration::from_millis(800));
    }

    #[test]
    fn activity_is_reported_every_six_heartbeats_within_bounds() {
        assert_eq!(
            activity_interval(Duration::from_secs(5)),
            Duration::from_secs(30)
        );
        assert_eq!(
            activity_interval(Duration::from_millis(200)),
            Duration::from_millis(1_200)
        );
        assert_eq!(
            activity_interval(Duration::from_millis(50)),
            Duration::from_secs(1)
        );
        assert_eq!(
            activity_interval(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn a_report_not_delivered_goes_back_into_the_book() {
        use nexus_protocol::clock::Timestamp;
        use nexus_protocol::model::ActivityKind;
        let activities = Activities::default();
        let at = Timestamp::from_millis(7);
        activities.note(&"api".parse().unwrap(), ActivityKind::Exec, at);
        activities.note(&"web".parse().unwrap(), ActivityKind::Logs, at);
        let entries = activities.drain();
        assert_eq!(entries.len(), 2);
        drop(Unsent {
            entries: Some(entries),
            activities: &activities,
        });
        let again = activities.drain();
        assert_eq!(again.len(), 2, "put back when dropped undelivered");
        let mut delivered = Unsent {
            entries: Some(again),
            activities: &activities,
        };
        assert_eq!(delivered.delivered(), 2);
        drop(delivered);
        assert!(
            activities.drain().is_empty(),
            "a delivered report is not sent again"
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert_eq!(backoff(1, 0), Duration::from_millis(100));
        assert_eq!(
            backoff(1, u64::MAX),
            Duration::from_millis(100 + u64::MAX % 101)
        );
        assert!(backoff(1, 100) <= FIRST_BACKOFF);
        assert_eq!(backoff(3, 0), Duration::from_millis(400));
        for failures in [10, 100, u32::MAX] {
            for random in [0, 7, u64::MAX] {
                let wait = backoff(failures, random);
                assert!(
                    wait >= MAX_BACKOFF / 2 && wait <= MAX_BACKOFF,
                    "{failures} {random} {wait:?}"
                );
            }
        }
        // Zero failures (a clean end) still waits a little rather than spinning.
        assert!(backoff(0, 0) > Duration::ZERO);
    }
}
