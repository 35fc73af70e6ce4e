//! The `nexus-coordinator` binary: flags, logging, signals; everything else is the library.

use clap::Parser;
use nexus_coordinator::config::{Args, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = async {
        let config = Config::from_args(Args::parse())?;
        nexus_coordinator::run(config, nexus_protocol::transport::shutdown_signal()).await
    };
    match result.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("nexus-coordinator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
