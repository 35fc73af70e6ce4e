//! What every Nexus binary does at its top: logging to stderr (filtered by `NEXUS_LOG`, in
//! tracing's filter syntax) and turning the outcome into an exit code.

use std::fmt::Display;
use std::process::ExitCode;

/// Logs to stderr, filtered by `NEXUS_LOG`, else by `default` (e.g. `"info"`).
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
