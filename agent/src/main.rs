//! The `nexus-agent` binary: flags, logging (stderr and its log directory), signals; everything
//! else is the library.

use clap::Parser;
use nexus_agent::Reloadable;
use nexus_agent::config::{Args, Config, check};
use nexus_protocol::{logging, transport::shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.check_config {
        return check::run(args);
    }
    let config = Config::from_args(args.clone());
    let filter = config
        .as_ref()
        .map_or_else(|_| logging::ambient_filter("info"), Config::log_filter);
    // Kept to the end: dropping it writes out the log's last lines.
    let (_log, log_filter) = logging::init_daemon_with(
        &filter,
        config.as_ref().ok().map(Config::daemon_log).as_ref(),
    );
    let result = async {
        let reloadable = Reloadable { args, log_filter };
        nexus_agent::run_reloadable(config?, Some(reloadable), shutdown_signal()).await
    };
    logging::exit("nexus-agent", result.await)
}
