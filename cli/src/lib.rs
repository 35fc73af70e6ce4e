//! `nexus`: the command line for users and admins. The binary is `main.rs`, which calls [`main`];
//! everything lives here so that it can be tested.

pub mod agents;
pub mod args;
pub mod bundle;
pub mod cluster;
pub mod commands;
pub mod confirm;
pub mod error;
pub mod fleet;
pub mod fleetlogs;
pub mod health;
pub mod leader;
pub mod listing;
pub mod logfollow;
pub mod notices;
pub mod output;
pub mod progress;
pub mod session;
pub mod settings;
pub mod sync;
pub mod syncd;
pub mod trace;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::args::{Cli, Command, OutputFormat};
use crate::error::CliError;
use crate::settings::Settings;

/// Parses the command line, runs the command, prints the result or the error, and returns the
/// exit code (stable per error code).
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let given = given(&matches, cli.output);
    // Kept to the end: dropping it writes out the sync daemon's last lines.
    let _log = match &cli.command {
        Command::SyncDaemon { dir } => Some(nexus_protocol::logging::init_file(
            "warn",
            syncd::Paths { dir: dir.clone() }.log(),
            nexus_protocol::logging::Rotation::for_total(syncd::LOG_MAX_BYTES),
        )),
        _ => {
            nexus_protocol::logging::init("warn");
            None
        }
    };
    let mut format = cli.output.unwrap_or(OutputFormat::Table);
    let result = (|| {
        // The config commands check and edit the file: a broken one is what they are for.
        let file = match &cli.command {
            Command::Config(command) if !commands::config::needs_fleet(command) => {
                settings::load(&cli.connection).unwrap_or_default()
            }
            _ => settings::load(&cli.connection)?,
        };
        format = cli.output.or(file.output).unwrap_or(OutputFormat::Table);
        let runtime = tokio::runtime::Runtime::new().map_err(|e| {
            CliError::local(
                nexus_protocol::ErrorCode::Internal,
                format!("cannot start the runtime: {e}"),
            )
        })?;
        let ids = CommandId {
            request_id: cli
                .request_id
                .unwrap_or_else(nexus_protocol::RequestId::random),
            verbose: cli.verbose,
        };
        // A user's notices, asked beside the command's first request (`notices`); not for the
        // commands that ask no coordinator, nor the sync daemon, nor the admin's notice commands
        // (which print the notices themselves).
        let shows_notices = !matches!(
            cli.command,
            Command::Completions { .. }
                | Command::Up(_)
                | Command::Down(_)
                | Command::Pki(_)
                | Command::Login(_)
                | Command::SyncDaemon { .. }
                | Command::Admin(args::AdminCommand::Notice(_))
                | Command::Admin(args::AdminCommand::Credentials(
                    args::CredentialsCommand::NewKey { .. }
                ))
        ) && !notices::silenced(std::env::var_os(notices::SILENCE).as_deref());
        if shows_notices {
            notices::enable();
        }
        let result = run_command(
            cli.command,
            &cli.connection,
            file,
            format,
            ids,
            &given,
            &runtime,
        );
        if shows_notices {
            let shown = runtime.block_on(notices::collect(notices::WAIT));
            // A failed command's JSON error is stderr's whole content: tools parse it.
            if result.is_ok() || format == OutputFormat::Table {
                eprint!("{}", output::notices::banner(&shown));
            }
        }
        result
    })();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let text = match format {
                OutputFormat::Json => format!("{}\n", error.render_json()),
                OutputFormat::Table => error.render_text(),
            };
            eprint!("{text}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs a parsed command to its exit code.
fn run_command(
    command: Command,
    connection: &args::ConnectionArgs,
    file: settings::FileSettings,
    format: OutputFormat,
    ids: CommandId,
    given: &commands::config::Given,
    runtime: &tokio::runtime::Runtime,
) -> Result<u8, CliError> {
    if let Command::Config(command) = command {
        commands::config::check(&command)?;
        if !commands::config::needs_fleet(&command) {
            return commands::config::run_local(command, connection, given, format).map(|()| 0);
        }
        let settings = ids.settings(connection, file)?;
        return runtime
            .block_on(commands::config::run_fleet(command, &settings, format))
            .map_err(|error| error.under_request(ids.request_id))
            .map(|()| 0);
    }
    runtime.block_on(run(command, connection, file, format, ids))
}

/// Which settings the command line or the environment gave (for `nexus config show --origin`).
fn given(matches: &clap::ArgMatches, output: Option<OutputFormat>) -> commands::config::Given {
    use clap::parser::ValueSource;
    use settings::effective::Origin;
    let ids = [
        ("config", "config"),
        ("coordinators", "coordinators"),
        ("ca", "ca"),
        ("cert", "cert"),
        ("key", "key"),
        ("output", "output"),
    ];
    let origins = ids
        .iter()
        .filter_map(|(key, id)| {
            let origin = match matches
                .try_get_raw(id)
                .ok()
                .flatten()
                .and(matches.value_source(id))
            {
                Some(ValueSource::CommandLine) => Origin::Flag,
                Some(ValueSource::EnvVariable) => Origin::Environment,
                _ => return None,
            };
            Some((key.to_string(), origin))
        })
        .collect();
    commands::config::Given { origins, output }
}

/// The request id a command's requests go under, and whether to say it.
#[derive(Debug, Clone, Copy)]
struct CommandId {
    request_id: nexus_protocol::RequestId,
    verbose: bool,
}

impl CommandId {
    /// The settings of a command that asks the fleet: every request goes under the command's
    /// id (said on stderr with `--verbose`), and every error names it.
    fn settings(
        self,
        connection: &args::ConnectionArgs,
        file: settings::FileSettings,
    ) -> Result<Settings, CliError> {
        let settings = Settings::resolve(connection, file)?.with_request_id(self.request_id);
        if self.verbose {
            eprintln!("request id: {}", self.request_id);
        }
        Ok(settings)
    }

    /// An error of the command's, naming the request it happened under: the server's answer
    /// does; an error the CLI found itself (a wait that ended in a failure) gets the command's.
    fn name<T>(self, result: Result<T, CliError>) -> Result<T, CliError> {
        result.map_err(|error| error.under_request(self.request_id))
    }
}

async fn run(
    command: Command,
    connection: &args::ConnectionArgs,
    file: settings::FileSettings,
    format: OutputFormat,
    ids: CommandId,
) -> Result<u8, CliError> {
    let done = match command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nexus", &mut script);
            output::print(&String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Up(args) => commands::up::up(args, format).await,
        Command::Down(args) => commands::up::down(args, format).await,
        Command::Pki(command) => commands::pki::run(command, format),
        // Before a session exists: no certificate to connect with, only the token.
        Command::Login(args) => commands::login::run(args, connection, file, format).await,
        // Local: the key file never crosses the wire.
        Command::Admin(args::AdminCommand::Credentials(args::CredentialsCommand::NewKey {
            out,
            add,
        })) => commands::credentials::new_key(&out, add, format),
        Command::Ping => {
            let settings = ids.settings(connection, file)?;
            ids.name(commands::ping::run(&settings, format).await)
        }
        // Their exit code says how healthy: 0 only when it is (see `health`).
        Command::Admin(args::AdminCommand::HealthCheck(checks)) => {
            let limits = commands::health::disk_limits(checks)?;
            let settings = ids.settings(connection, file)?;
            return ids.name(commands::health::health_check(&settings, limits, format).await);
        }
        Command::Admin(args::AdminCommand::Workspace(args::AdminWorkspaceCommand::Health {
            name,
        })) => {
            let settings = ids.settings(connection, file)?;
            return ids.name(commands::health::workspace_health(&settings, name, format).await);
        }
        Command::Admin(args::AdminCommand::Workspace(args::AdminWorkspaceCommand::Exec {
            name,
            debug,
            command,
        })) => {
            let settings = ids.settings(connection, file)?;
            let exec = commands::trace::exec(&settings, name, command, debug, format);
            return ids.name(exec.await);
        }
        Command::Admin(args::AdminCommand::Token(args::TokenCommand::Create(create))) => {
            // A wrong flag is said before a missing setting.
            let spec = commands::security::spec(&create)?;
            let settings = ids.settings(connection, file)?;
            ids.name(commands::security::create_token(spec, &settings, format).await)
        }
        Command::Admin(command) => {
            let settings = ids.settings(connection, file)?;
            ids.name(commands::admin::run(command, &settings, format).await)
        }
        Command::Workspace(args::WorkspaceCommand::Sync(command)) => {
            commands::sync::run(command, Settings::resolve(connection, file), format).await
        }
        Command::Workspace(command) => {
            let settings = ids.settings(connection, file)?;
            return ids.name(commands::workspace::run(command, &settings, format).await);
        }
        Command::Config(command) => {
            let settings = ids.settings(connection, file)?;
            ids.name(commands::config::run_fleet(command, &settings, format).await)
        }
        Command::SyncDaemon { dir } => crate::syncd::run(crate::syncd::Paths { dir })
            .await
            .map_err(|e| {
                CliError::local(nexus_protocol::ErrorCode::SyncSessionFailed, e.to_string())
            }),
    };
    done.map(|()| 0)
}
