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

pub mod file;
pub mod layer;
pub mod read;
pub mod record;
pub mod serve;

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
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
fn to_disk<S>(log: &DaemonLog, stderr: EnvFilter) -> (impl Layer<S>, SinkGuard)
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
