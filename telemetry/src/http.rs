//! The monitoring HTTP server, the one home of `axum`: `GET /metrics`, `/livez` and `/readyz`
//! (each health probe with `?verbose`), read-only, on its own listener beside the daemon's QUIC
//! endpoint (`--http-listen ADDR`, or `off`), with bounds on its connections ([`guard`]).

mod guard;

pub use guard::Bounds;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::health::{self, Check};
use crate::metrics::{Format, Registry};

/// How long a probe may take before it counts as failed: a stalled loop must not stall the
/// probe that should report it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where to serve, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl Listen {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(addr) => Some(addr),
        }
    }
}

impl FromStr for Listen {
    type Err = InvalidListen;
    fn from_str(value: &str) -> Result<Listen, InvalidListen> {
        if value == "off" {
            return Ok(Listen::Off);
        }
        value
            .parse()
            .map(Listen::At)
            .map_err(|_| InvalidListen(value.to_string()))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::At(addr) => addr.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address to serve HTTP on: give IP:PORT (e.g. 127.0.0.1:7480) or `off`")]
pub struct InvalidListen(pub String);

/// What a daemon tells the server: its health, and the gauges it reads from its state just before
/// a scrape.
pub trait Probes: Send + Sync + 'static {
    /// Brings the gauges read from the daemon's state up to date.
    fn refresh(&self) -> impl Future<Output = ()> + Send;
    /// Whether the process's loops (and storage) are not stalled.
    fn live(&self) -> impl Future<Output = Vec<Check>> + Send;
    /// Whether it can do its job now.
    fn ready(&self) -> impl Future<Output = Vec<Check>> + Send;
}

/// What the server answers, for the daemon to read too (its diagnostics ask the same): the
/// registry and the probes, with one scrape at a time.
pub struct Monitor<P> {
    registry: Arc<Registry>,
    probes: Arc<P>,
    /// One scrape at a time: a refresh replaces whole families, which a second scrape must not
    /// see half done.
    scrape: tokio::sync::Mutex<()>,
}

impl<P> fmt::Debug for Monitor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl<P: Probes> Monitor<P> {
    pub fn new(registry: Arc<Registry>, probes: Arc<P>) -> Monitor<P> {
        Monitor {
            registry,
            probes,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// The exposition in `format`, after the probes' refresh (given [`PROBE_TIMEOUT`]; older
    /// values are served past it).
    pub async fn metrics(&self, format: Format) -> String {
        let _one = self.scrape.lock().await;
        if tokio::time::timeout(PROBE_TIMEOUT, self.probes.refresh())
            .await
            .is_err()
        {
            tracing::warn!("the metrics refresh took over {PROBE_TIMEOUT:?}; serving older values");
        }
        self.registry.encode(format)
    }

    /// `/livez`'s answer.
    pub async fn live(&self, verbose: bool) -> health::Answer {
        probe_answer("livez", self.probes.live(), verbose).await
    }

    /// `/readyz`'s answer.
    pub async fn ready(&self, verbose: bool) -> health::Answer {
        probe_answer("readyz", self.probes.ready(), verbose).await
    }
}

/// A server bound to its address, not yet serving.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    bounds: Bounds,
}

impl Bound {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
        Ok(Bound {
            listener: tokio::net::TcpListener::bind(addr).await?,
            bounds: Bounds::DEFAULT,
        })
    }

    /// The same server, with these bounds on its connections rather than [`Bounds::DEFAULT`].
    #[must_use]
    pub fn with_bounds(mut self, bounds: Bounds) -> Bound {
        self.bounds = bounds;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve<P: Probes>(
        self,
        registry: Arc<Registry>,
        probes: Arc<P>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_monitor(Arc::new(Monitor::new(registry, probes)), shutdown)
            .await
    }

    /// Serves `monitor` until `shutdown` completes.
    pub async fn serve_monitor<P: Probes>(
        self,
        shared: Arc<Monitor<P>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = Router::new()
            .route("/metrics", get(metrics::<P>))
            .route("/livez", get(livez::<P>))
            .route("/readyz", get(readyz::<P>))
            .fallback(not_found)
            .with_state(shared);
        axum::serve(guard::Guarded::new(self.listener, self.bounds), router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// A server serving on its own task until [`Running::stop`]: how a daemon runs it.
#[derive(Debug)]
pub struct Running {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// How long [`Running::stop`] lets open connections finish before dropping them.
    pub const STOP_GRACE: Duration = Duration::from_secs(5);

    /// Binds `listen` and serves; `None` when it is `off`. A bind failure is the caller's to
    /// report (it names its flag).
    pub async fn start<P: Probes>(
        listen: Listen,
        registry: Arc<Registry>,
        probes: Arc<P>,
    ) -> std::io::Result<Option<Running>> {
        Running::start_monitor(listen, Arc::new(Monitor::new(registry, probes))).await
    }

    /// [`Running::start`] with a monitor the daemon keeps too.
    pub async fn start_monitor<P: Probes>(
        listen: Listen,
        monitor: Arc<Monitor<P>>,
    ) -> std::io::Result<Option<Running>> {
        let Some(addr) = listen.addr() else {
            tracing::info!("HTTP monitoring is off (--http-listen off)");
            return Ok(None);
        };
        let bound = Bound::bind(addr).await?;
        let address = bound.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve_monitor(monitor, async move {
            let _ = stopped.await;
        }));
        tracing::info!("serving HTTP monitoring on {address}");
        Ok(Some(Running {
            address,
            stop,
            task,
        }))
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving: a scraper that holds its connection open past [`Running::STOP_GRACE`] is
    /// dropped, so it never holds up the daemon's stop.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(Running::STOP_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!("the monitoring server failed: {error}"),
            Ok(Err(_)) | Err(_) => task.abort(),
        }
    }
}

async fn metrics<P: Probes>(State(shared): State<Arc<Monitor<P>>>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(
        headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .unwrap_or(""),
    );
    let text = shared.metrics(format).await;
    ([(header::CONTENT_TYPE, format.content_type())], text).into_response()
}

async fn livez<P: Probes>(
    State(shared): State<Arc<Monitor<P>>>,
    RawQuery(query): RawQuery,
) -> Response {
    respond(shared.live(verbose(query.as_deref())).await)
}

async fn readyz<P: Probes>(
    State(shared): State<Arc<Monitor<P>>>,
    RawQuery(query): RawQuery,
) -> Response {
    respond(shared.ready(verbose(query.as_deref())).await)
}

/// The answer to a probe's `checks`, which must come within [`PROBE_TIMEOUT`].
async fn probe_answer(
    what: &str,
    checks: impl Future<Output = Vec<Check>>,
    verbose: bool,
) -> health::Answer {
    let checks = match tokio::time::timeout(PROBE_TIMEOUT, checks).await {
        Ok(checks) => checks,
        Err(_) => vec![Check::failed(
            "probes",
            format!("the checks did not answer within {PROBE_TIMEOUT:?}"),
        )],
    };
    health::answer(what, &checks, verbose)
}

fn respond(answer: health::Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        answer.body,
    )
        .into_response()
}

/// `?verbose`, `?verbose=1` or `?verbose=true`, among other parameters or alone.
fn verbose(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query.split('&').any(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            key == "verbose" && !matches!(value, "0" | "false")
        })
    })
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: this server answers GET /metrics, /livez and /readyz (with ?verbose)\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_an_address_or_off() {
        assert_eq!("off".parse::<Listen>(), Ok(Listen::Off));
        assert_eq!(
            "127.0.0.1:7480".parse::<Listen>().map(Listen::addr),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 7480))))
        );
        let error = "localhost".parse::<Listen>().unwrap_err().to_string();
        assert!(
            error.contains("IP:PORT") && error.contains("off"),
            "{error}"
        );
        assert_eq!(Listen::Off.to_string(), "off");
    }

    #[test]
    fn verbose_is_a_flag_among_parameters() {
        assert!(verbose(Some("verbose")));
        assert!(verbose(Some("exclude=x&verbose=true")));
        assert!(!verbose(Some("verbose=0")));
        assert!(!verbose(Some("verbosity")));
        assert!(!verbose(None));
    }
}
