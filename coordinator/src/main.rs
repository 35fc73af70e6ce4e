//! The `nexus-coordinator` binary: flags, logging (stderr and its log directory), signals;
//! everything else is the library. `nexus-coordinator restore ...` makes a data directory from a
//! backup and exits (with the refusal's code's exit code when it refuses).

use std::io::Write;

use clap::Parser;
use nexus_coordinator::Reloadable;
use nexus_coordinator::config::{Cli, Config, CoordinatorCommand, RestoreArgs, RestorePlan, check};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::{logging, transport::shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(CoordinatorCommand::Restore(args)) = cli.command {
        return restore(args);
    }
    let args = cli.run;
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
        nexus_coordinator::run_reloadable(config?, reloadable, shutdown_signal()).await
    };
    logging::exit("nexus-coordinator", result.await)
}

/// `nexus-coordinator restore`: prints what it made, or the refusal with its code.
fn restore(args: RestoreArgs) -> std::process::ExitCode {
    logging::init("warn");
    let result = RestorePlan::from_args(args)
        .map_err(|error| WireError::new(ErrorCode::InvalidArgument, error.to_string()))
        .and_then(|plan| {
            let header = nexus_coordinator::recover::restore(&plan)?;
            Ok((plan, header))
        });
    match result {
        Ok((plan, header)) => {
            // The result goes to stdout, for scripts; errors and logs to stderr.
            let _ = writeln!(
                std::io::stdout(),
                "restored backup {} (index {}, term {}, {} hosts, {} workspaces) into {} as \
                 coordinator {} of {}; start it with the same --peer flags",
                header.id,
                header.index,
                header.term,
                header.count("hosts"),
                header.count("workspaces"),
                plan.data_dir.display(),
                plan.node_id,
                plan.voters()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("nexus-coordinator restore: error: {}", error.message);
            eprintln!("  code: {} ({})", error.code, error.code.message());
            eprintln!("  try:  {}", error.code.suggestion());
            std::process::ExitCode::from(error.code.exit_code())
        }
    }
}
