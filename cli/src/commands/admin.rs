//! `nexus admin ...`: the fleet as admins see it.

use nexus_protocol::clock;
use nexus_protocol::message::{AdminRequest, Request, Response};

use crate::args::{AdminCommand, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;

pub async fn run(
    command: AdminCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let connection = settings.connect().await?;
    match command {
        AdminCommand::Hosts => match connection
            .request(Request::Admin(AdminRequest::Hosts))
            .await?
        {
            Response::Hosts(hosts) => {
                output::emit(format, &output::hosts_json(&hosts), || {
                    output::hosts_table(&hosts, clock::now())
                });
                Ok(())
            }
            other => Err(CliError::unexpected(&other)),
        },
    }
}
