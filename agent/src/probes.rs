//! What `/livez`, `/readyz` and a scrape's refresh ask of the agent.
//!
//! The loops say how they are doing in [`Vitals`]: each loop's pulse (when it last made
//! progress, and whether it is inside work that may take long), the link's registration and
//! its last acknowledged heartbeat. [`AgentProbes`] reads them:
//!
//! - live: `reconcile` and `link`, each loop's pulse recent enough ([`stalled`]);
//! - ready: `registered` (the leader took this host's registration and a heartbeat, and the
//!   link is up), `heartbeat` (one acknowledged within [`heartbeat_ttl`]) and `engine` (the
//!   runtime answers a ping within [`ENGINE_TIMEOUT`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_protocol::message::DesiredState;
use nexus_telemetry::Check;
use nexus_telemetry::http::{PROBE_TIMEOUT, Probes};
use tokio::sync::watch;

use crate::endpoint::syncstats::SyncStats;
use crate::metrics::{self, Metrics};
use crate::runtime::Runtime;
use crate::sampler::Sample;

/// How long the engine may take to answer a probe's ping: under the probe's own timeout, so a
/// slow engine fails its check by name rather than the whole probe.
pub const ENGINE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A loop waiting for work goes round at least this often (the reconciler resyncs every 30 s;
/// the link's slowest step, a request, times out after 30 s): twice that is a stall.
pub const IDLE_STALLED: Duration = Duration::from_secs(90);
/// Work may take longer: an image pull, a stop's grace. A workspace's steps that run this long
/// without finishing are stuck (an engine call that never answers).
pub const BUSY_STALLED: Duration = Duration::from_secs(600);

/// A loop's sign of life.
#[derive(Debug, Default)]
pub struct Pulse {
    /// Milliseconds from the vitals' origin to the last beat.
    last: AtomicU64,
    busy: AtomicBool,
}

/// What the agent's loops say of themselves.
#[derive(Debug)]
pub struct Vitals {
    origin: Instant,
    pub reconcile: Pulse,
    pub link: Pulse,
    registered: AtomicBool,
    /// Milliseconds from the origin to the last acknowledged heartbeat, plus one (0: none yet).
    acknowledged: AtomicU64,
    /// Why the link is down, when it is.
    link_error: Mutex<Option<String>>,
}

impl Default for Vitals {
    fn default() -> Vitals {
        Vitals {
            origin: Instant::now(),
            reconcile: Pulse::default(),
            link: Pulse::default(),
            registered: AtomicBool::new(false),
            acknowledged: AtomicU64::new(0),
            link_error: Mutex::new(None),
        }
    }
}

impl Vitals {
    fn millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn age(&self, millis: u64) -> Duration {
        Duration::from_millis(self.millis().saturating_sub(millis))
    }

    /// `pulse` made progress; `busy`: it is now inside work that may take long.
    pub fn beat(&self, pulse: &Pulse, busy: bool) {
        pulse.last.store(self.millis(), Ordering::Relaxed);
        pulse.busy.store(busy, Ordering::Relaxed);
    }

    /// Why `pulse` counts as stalled, if it does.
    pub fn stalled(&self, pulse: &Pulse, idle_limit: Duration) -> Option<String> {
        stalled(
            self.age(pulse.last.load(Ordering::Relaxed)),
            pulse.busy.load(Ordering::Relaxed),
            idle_limit,
        )
    }

    /// The link registered with the leader (`None`) or lost it (with why).
    pub fn link(&self, down: Option<String>) {
        self.registered.store(down.is_none(), Ordering::Relaxed);
        *self
            .link_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = down;
    }

    pub fn acknowledged(&self) {
        self.acknowledged
            .store(self.millis().saturating_add(1), Ordering::Relaxed);
    }

    /// How long since the last acknowledged heartbeat; `None` before the first.
    pub fn since_acknowledged(&self) -> Option<Duration> {
        match self.acknowledged.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.age(at - 1)),
        }
    }

    /// Why this host is not registered, if it is not.
    pub fn unregistered(&self) -> Option<String> {
        if self.registered.load(Ordering::Relaxed) {
            return None;
        }
        let error = self
            .link_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Some(match error {
            Some(error) => format!("no coordinator link: {error}"),
            None => "not registered with the leader yet".to_string(),
        })
    }
}

/// Why a loop whose last beat is `age` old counts as stalled, if it does: past `idle_limit`
/// while it waits for work, past [`BUSY_STALLED`] (or `idle_limit`, if longer) while it works.
pub fn stalled(age: Duration, busy: bool, idle_limit: Duration) -> Option<String> {
    let limit = if busy {
        BUSY_STALLED.max(idle_limit)
    } else {
        idle_limit
    };
    (age > limit).then(|| {
        let doing = if busy { "working" } else { "waiting" };
        format!(
            "no progress for {} s while {doing} (limit {} s)",
            age.as_secs(),
            limit.as_secs()
        )
    })
}

/// How long after its last acknowledged heartbeat a host still counts as heard: three intervals,
/// and at least the 2 s one heartbeat may take.
pub fn heartbeat_ttl(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(2))
}

/// The `heartbeat` check's failure, if any.
pub fn heartbeat_failure(since: Option<Duration>, ttl: Duration) -> Option<String> {
    match since {
        None => Some("no heartbeat acknowledged yet".to_string()),
        Some(since) if since > ttl => Some(format!(
            "the last acknowledged heartbeat was {:.1} s ago (TTL {:.1} s)",
            since.as_secs_f64(),
            ttl.as_secs_f64()
        )),
        Some(_) => None,
    }
}

/// The agent's answers to the monitoring server.
#[derive(Debug)]
pub struct AgentProbes<R: Runtime> {
    pub runtime: Arc<R>,
    pub metrics: Metrics,
    pub vitals: Arc<Vitals>,
    pub samples: watch::Receiver<Option<Sample>>,
    pub desired: watch::Receiver<Option<DesiredState>>,
    /// The sync sessions' reports, whose gauges are read at each scrape.
    pub sync: SyncStats,
    pub heartbeat_interval: Duration,
    /// This machine's CPUs (not the capacity it reports), which an unlimited container shares.
    pub host_cpus: u32,
}

impl<R: Runtime> AgentProbes<R> {
    /// Pings the engine; records the answer in `nexus_agent_engine_up`.
    async fn ping(&self) -> Option<String> {
        let failure = match tokio::time::timeout(ENGINE_TIMEOUT, self.runtime.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.message),
            Err(_) => Some(format!(
                "the {} engine did not answer a ping within {ENGINE_TIMEOUT:?}",
                self.runtime.name()
            )),
        };
        self.metrics
            .engine_up
            .set(if failure.is_none() { 1.0 } else { 0.0 });
        failure
    }

    /// The link loop's liveness: it beats at every heartbeat, connected or not.
    fn link_live(&self) -> Check {
        let link_limit = IDLE_STALLED.max(self.heartbeat_interval * 3);
        Check::from_failure("link", self.vitals.stalled(&self.vitals.link, link_limit))
    }

    /// What systemd's watchdog is fed on: the link loop alone. A reconcile pass may rightly run
    /// past [`BUSY_STALLED`] (a pull of a large image has no deadline, and reports no progress
    /// while its layers stream); `/livez` says so, but a restart would only cancel the pull and
    /// start it again, for ever.
    pub async fn watchdog(&self) -> Vec<Check> {
        vec![self.link_live()]
    }
}

impl<R: Runtime> Probes for AgentProbes<R> {
    async fn refresh(&self) {
        self.ping().await;
        self.sync.refresh(Instant::now());
        let desired = self.desired.borrow().clone();
        #[allow(clippy::cast_precision_loss)]
        self.metrics
            .ports_allocated
            .set(metrics::ports_allocated(desired.as_ref()) as f64);
        let series = self.samples.borrow().as_ref().map(|sample| {
            metrics::workspace_series(
                &sample.containers,
                desired.as_ref(),
                self.host_cpus,
                sample.host.memory_total_bytes,
            )
        });
        if let Some(series) = series {
            self.metrics.workspaces(&series);
        }
    }

    async fn live(&self) -> Vec<Check> {
        vec![
            Check::from_failure(
                "reconcile",
                self.vitals.stalled(&self.vitals.reconcile, IDLE_STALLED),
            ),
            self.link_live(),
        ]
    }

    async fn ready(&self) -> Vec<Check> {
        vec![
            Check::from_failure("registered", self.vitals.unregistered()),
            Check::from_failure(
                "heartbeat",
                heartbeat_failure(
                    self.vitals.since_acknowledged(),
                    heartbeat_ttl(self.heartbeat_interval),
                ),
            ),
            Check::from_failure("engine", self.ping().await),
        ]
    }
}

// The engine's ping must fail by name before the probe as a whole times out.
const _: () = assert!(ENGINE_TIMEOUT.as_millis() < PROBE_TIMEOUT.as_millis());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_stalls_sooner_waiting_than_working() {
        let idle = Duration::from_secs(90);
        assert_eq!(stalled(Duration::from_secs(89), false, idle), None);
        assert_eq!(
            stalled(Duration::from_secs(91), false, idle).as_deref(),
            Some("no progress for 91 s while waiting (limit 90 s)")
        );
        assert_eq!(stalled(Duration::from_secs(300), true, idle), None);
        assert!(stalled(BUSY_STALLED + Duration::from_secs(1), true, idle).is_some());
        // A limit longer than the busy one (a slow heartbeat) holds for both.
        let long = BUSY_STALLED * 2;
        assert_eq!(stalled(BUSY_STALLED * 2, true, long), None);
    }

    #[test]
    fn a_heartbeat_counts_within_three_intervals_and_at_least_two_seconds() {
        assert_eq!(
            heartbeat_ttl(Duration::from_secs(5)),
            Duration::from_secs(15)
        );
        assert_eq!(
            heartbeat_ttl(Duration::from_millis(200)),
            Duration::from_secs(2)
        );
        let ttl = Duration::from_secs(15);
        assert_eq!(heartbeat_failure(Some(Duration::from_secs(14)), ttl), None);
        assert_eq!(
            heartbeat_failure(Some(Duration::from_secs(16)), ttl).as_deref(),
            Some("the last acknowledged heartbeat was 16.0 s ago (TTL 15.0 s)")
        );
        assert!(heartbeat_failure(None, ttl).is_some());
    }

    #[test]
    fn vitals_say_why_the_host_is_not_registered() {
        let vitals = Vitals::default();
        assert_eq!(
            vitals.unregistered().as_deref(),
            Some("not registered with the leader yet")
        );
        vitals.link(None);
        assert_eq!(vitals.unregistered(), None);
        vitals.link(Some("connection refused".into()));
        assert_eq!(
            vitals.unregistered().as_deref(),
            Some("no coordinator link: connection refused")
        );
        assert_eq!(vitals.since_acknowledged(), None);
        vitals.acknowledged();
        assert!(vitals.since_acknowledged() < Some(Duration::from_secs(1)));
        vitals.beat(&vitals.reconcile, true);
        assert_eq!(vitals.stalled(&vitals.reconcile, Duration::ZERO), None);
    }
}
