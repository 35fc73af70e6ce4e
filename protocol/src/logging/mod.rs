//! What every Nexus binary does at its top: logging (to stderr, filtered by `NEXUS_LOG` in
//! tracing's filter syntax, and for the daemons also to files), and turning the outcome into an
//! exit code. Also what the daemons' logs are on disk and how they are read back.
//!
//! - [`init`]: stderr only (the CLI, tools);
//! - [`init_daemon`]: stderr in the human format (for journald) and JSON lines in the daemon's
//!   log directory ([`layer`] makes each line, [`record`] is its format, [`file`] rotates the
//!   files);
//! - [`init_file`]: the human format to a rotated file only (the sync daemon's `daemon.log`);
//! - [`read`] and [`serve`]: a `DaemonLogs` query over those files, and its answer.
//!
//! The file's filter is the stderr's, widened to `info`: whatever `NEXUS_LOG` lets through
//! reaches the file too, and the file always gets `info` and above, so a daemon started with
//! `NEXUS_LOG=warn` still keeps its history on disk.
//!
//! A daemon's filter can change while it runs ([`init_daemon_with`] answers a [`LogFilter`]):
//! its configuration's `log_filter`, applied again on each reload.

pub mod file;
pub mod layer;
pub mod read;
pub mod record;
pub mod serve;

use std::fmt::{self as stdfmt, Display};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

pub use file::{LogFiles, Rotation, SinkGuard};
pub use read::{BadQuery, check as check_query};

use crate::debug::{LogLevel, LogRecord};

/// The environment variable that filters logs.
const FILTER_VARIABLE: &str = "NEXUS_LOG";

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env(FILTER_VARIABLE).unwrap_or_else(|_| EnvFilter::new(default))
}

/// Logs to stderr, filtered by `NEXUS_LOG`, else by `default` (e.g. `"info"`).
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr)
        .init();
}

/// Where and under what name a daemon writes its structured log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonLog {
    pub dir: PathBuf,
    /// Who writes it, stamped on every line: `coordinator-1`, `agent-host-a`.
    pub source: String,
    pub rotation: Rotation,
}

impl DaemonLog {
    /// The files it writes.
    pub fn files(&self) -> LogFiles {
        LogFiles::for_source(&self.dir, &self.source)
    }
}

/// The filter a daemon starts with when its configuration names none: `NEXUS_LOG`, else
/// `default`.
pub fn ambient_filter(default: &str) -> String {
    std::env::var(FILTER_VARIABLE)
        .ok()
        .filter(|text| EnvFilter::try_new(text).is_ok())
        .unwrap_or_else(|| default.to_string())
}

/// Whether `text` is a filter in tracing's syntax (`info`, `nexus_agent=debug,warn`); the
/// parser's complaint if not.
pub fn check_filter(text: &str) -> Result<(), String> {
    EnvFilter::try_new(text)
        .map(drop)
        .map_err(|error| format!("invalid log filter {text:?}: {error}"))
}

/// Changes a running daemon's log filter (stderr and, widened to `info`, its files). Clones
/// change the same filter.
#[derive(Clone)]
pub struct LogFilter {
    current: Arc<Mutex<String>>,
    setters: Arc<Vec<Setter>>,
}

type Setter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

impl stdfmt::Debug for LogFilter {
    fn fmt(&self, f: &mut stdfmt::Formatter<'_>) -> stdfmt::Result {
        f.debug_tuple("LogFilter").field(&self.current()).finish()
    }
}

impl LogFilter {
    /// A filter that changes nothing but its own text: for daemons run inside another process
    /// (tests, tools), whose logging is that process's.
    pub fn detached(text: &str) -> LogFilter {
        LogFilter {
            current: Arc::new(Mutex::new(text.to_string())),
            setters: Arc::new(Vec::new()),
        }
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `text` in force, or, if it is not a filter, says why and changes nothing.
    pub fn set(&self, text: &str) -> Result<(), String> {
        check_filter(text)?;
        for set in self.setters.iter() {
            let filter = EnvFilter::try_new(text).map_err(|e| e.to_string())?;
            set(filter)?;
        }
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = text.to_string();
        Ok(())
    }
}

/// A filter that [`LogFilter::set`] can replace, and its setter.
fn reloadable<S>(text: &str) -> (reload::Layer<EnvFilter, S>, Setter)
where
    S: tracing::Subscriber + 'static,
{
    let (layer, handle) = reload::Layer::new(EnvFilter::new(text));
    let set: Setter = Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()));
    (layer, set)
}

/// Logs to stderr and, with `log`, to its directory as JSON lines, as [`init_daemon`] does, but
/// filtered by `filter` (a checked filter: see [`check_filter`]) and answering the handle that
/// changes it. Keep the guard until the end of `main`.
pub fn init_daemon_with(filter: &str, log: Option<&DaemonLog>) -> (Option<SinkGuard>, LogFilter) {
    let (stderr_filter, set_stderr) = reloadable(filter);
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(stderr_filter);
    let current = Arc::new(Mutex::new(filter.to_string()));
    let Some(log) = log else {
        tracing_subscriber::registry().with(stderr).init();
        let handle = LogFilter {
            current,
            setters: Arc::new(vec![set_stderr]),
        };
        return (None, handle);
    };
    let (disk_filter, set_disk) = reloadable(filter);
    let (to_disk, guard) = to_disk(log, disk_filter);
    tracing_subscriber::registry()
        .with(stderr)
        .with(to_disk)
        .init();
    let handle = LogFilter {
        current,
        setters: Arc::new(vec![set_stderr, set_disk]),
    };
    (Some(guard), handle)
}

/// Logs to stderr as [`init`] does and, with `log`, also to its directory as JSON lines. Keep
/// the guard until the end of `main`: dropping it writes out what is queued.
pub fn init_daemon(default: &str, log: Option<&DaemonLog>) -> Option<SinkGuard> {
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter(default));
    let Some(log) = log else {
        tracing_subscriber::registry().with(stderr).init();
        return None;
    };
    let (to_disk, guard) = to_disk(log, filter(default));
    tracing_subscriber::registry()
        .with(stderr)
        .with(to_disk)
        .init();
    Some(guard)
}

/// The layer that writes `log`, letting through what `stderr` does and everything from `info`.
fn to_disk<S>(log: &DaemonLog, stderr: impl Filter<S> + 'static) -> (impl Layer<S>, SinkGuard)
where
    S: tracing::Subscriber + for<'l> tracing_subscriber::registry::LookupSpan<'l>,
{
    let file = file::RotatingFile::open(log.files(), log.rotation);
    let source = log.source.clone();
    let (sink, guard) = file::Sink::spawn(
        file,
        Box::new(move |count| dropped_note(&source, count).into_bytes()),
    );
    let layer =
        layer::FileLayer::new(log.source.clone(), sink).with_filter(stderr.or(LevelFilter::INFO));
    (layer, guard)
}

/// Logs in the human format to `files` only (rotated), filtered as [`init`] does: for a
/// process whose stderr nobody reads.
pub fn init_file(default: &str, files: LogFiles, rotation: Rotation) -> SinkGuard {
    let (sink, guard) = file::Sink::spawn(
        file::RotatingFile::open(files, rotation),
        Box::new(|count| {
            format!("nexus: {count} log lines were dropped: the disk was behind\n").into_bytes()
        }),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_ansi(false)
        .with_writer(sink)
        .init();
    guard
}

/// Says in the log what a configuration reload did; `why` says who asked (`SIGHUP`, an admin's
/// request).
pub fn reloaded(report: &crate::debug::ReloadReport, why: &str) {
    if report.failed() {
        tracing::error!(errors = ?report.errors, "configuration reload ({why}) refused; the settings in force are unchanged");
        return;
    }
    for change in &report.applied {
        tracing::info!(key = %change.key, old = %change.old, new = %change.new, "configuration reload ({why}): applied");
    }
    if !report.needs_restart.is_empty() {
        tracing::warn!(keys = ?report.needs_restart, "configuration reload ({why}): these settings changed but take effect only at the next start");
    }
    if report.applied.is_empty() && report.needs_restart.is_empty() {
        tracing::info!("configuration reload ({why}): nothing changed");
    }
}

/// The record written in place of lines the disk could not keep up with.
fn dropped_note(source: &str, count: u64) -> String {
    record::to_line(&LogRecord {
        at_us: crate::clock::now_us(),
        level: LogLevel::Warn,
        target: module_path!().to_string(),
        source: source.to_string(),
        request_id: None,
        workspace: None,
        message: format!("{count} log lines were dropped: the disk was behind"),
        fields: vec![("dropped".to_string(), count.to_string())],
        span: None,
    })
}

/// A daemon's exit: success, or the error's whole chain (alternate `Display`, as `anyhow` prints
/// it) logged and printed on stderr as `PROGRAM: reason`, and exit code 1.
pub fn exit(program: &str, result: Result<(), impl Display>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("{program}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The levels written to disk under a `NEXUS_LOG` of `stderr`.
    fn levels_on_disk(stderr: &str) -> Vec<LogLevel> {
        let dir = tempfile::tempdir().unwrap();
        let log = DaemonLog {
            dir: dir.path().to_path_buf(),
            source: "coordinator-1".into(),
            rotation: Rotation::default(),
        };
        let (layer, guard) = to_disk(&log, EnvFilter::new(stderr));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!("i");
            tracing::warn!("w");
            tracing::error!("e");
        });
        drop(guard);
        std::fs::read_to_string(log.files().current())
            .unwrap()
            .lines()
            .map(|line| record::from_line(line).unwrap().level)
            .collect()
    }

    #[test]
    fn a_new_filter_is_in_force_at_once_and_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = DaemonLog {
            dir: dir.path().to_path_buf(),
            source: "agent-h".into(),
            rotation: Rotation::default(),
        };
        let (filter, set) = reloadable("info");
        let (layer, guard) = to_disk(&log, filter);
        let handle = LogFilter {
            current: Arc::new(Mutex::new("info".into())),
            setters: Arc::new(vec![set]),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("before");
            handle.set("debug").unwrap();
            tracing::debug!("after");
            let error = handle.set("nexus=notalevel").unwrap_err();
            assert!(error.contains("invalid log filter"), "{error}");
            tracing::debug!("still");
        });
        assert_eq!(handle.current(), "debug");
        drop(guard);
        let messages: Vec<String> = std::fs::read_to_string(log.files().current())
            .unwrap()
            .lines()
            .map(|line| record::from_line(line).unwrap().message)
            .collect();
        assert_eq!(messages, ["after", "still"]);
        assert!(check_filter("nexus_agent=debug,warn").is_ok());
        assert!(check_filter("[[[").is_err());
    }

    #[test]
    fn the_disk_gets_what_stderr_gets_and_at_least_info() {
        use LogLevel::*;
        assert_eq!(levels_on_disk("warn"), vec![Info, Warn, Error]);
        assert_eq!(levels_on_disk("off"), vec![Info, Warn, Error]);
        assert_eq!(levels_on_disk("info"), vec![Info, Warn, Error]);
        assert_eq!(levels_on_disk("debug"), vec![Debug, Info, Warn, Error]);
        assert_eq!(
            levels_on_disk(&format!("{}=trace", module_path!())),
            vec![Trace, Debug, Info, Warn, Error]
        );
        assert_eq!(levels_on_disk("nexus_agent=trace"), vec![Info, Warn, Error]);
    }
}
