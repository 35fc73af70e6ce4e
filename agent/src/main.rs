//! The `nexus-agent` binary: flags, logging, signals; everything else is the library.

use clap::Parser;
use nexus_agent::config::{Args, Config};
use nexus_protocol::{logging, transport::shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logging::init("info");
    let result = async {
        let config = Config::from_args(Args::parse())?;
        nexus_agent::run(config, shutdown_signal()).await
    };
    logging::exit("nexus-agent", result.await)
}
