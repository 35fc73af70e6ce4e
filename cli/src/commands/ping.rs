//! `nexus ping`: does a coordinator answer, who is it, and who does it think we are.

use std::time::Instant;

use nexus_protocol::message::{Request, Response};
use serde_json::json;

use crate::args::OutputFormat;
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;

pub async fn run(settings: &Settings, format: OutputFormat) -> Result<(), CliError> {
    let connection = settings.connect().await?;
    let started = Instant::now();
    let pong = match connection.request(Request::Ping).await? {
        Response::Pong(pong) => pong,
        other => return Err(CliError::unexpected(&other)),
    };
    let round_trip = started.elapsed();
    let address = connection.remote_address();
    let json = json!({
        "server": pong.server.uri(),
        "software": pong.software,
        "address": address.to_string(),
        "client": pong.client.uri(),
        "round_trip_ms": round_trip.as_secs_f64() * 1000.0,
    });
    output::emit(format, &json, || {
        format!(
            "{} (nexus {}) at {address} answered in {:.1} ms; you are {}\n",
            pong.server,
            pong.software,
            round_trip.as_secs_f64() * 1000.0,
            pong.client
        )
    });
    Ok(())
}
