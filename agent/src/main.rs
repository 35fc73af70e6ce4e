//! The `nexus-agent` binary: flags, logging (stderr and its log directory), signals; everything
//! else is the library.

use clap::Parser;
use nexus_agent::config::{Args, Config};
use nexus_protocol::{logging, transport::shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::from_args(Args::parse());
    // Kept to the end: dropping it writes out the log's last lines.
    let _log = logging::init_daemon(
        "info",
        config.as_ref().ok().map(Config::daemon_log).as_ref(),
    );
    let result = async { nexus_agent::run(config?, shutdown_signal()).await };
    logging::exit("nexus-agent", result.await)
}
