//! Reaching a workspace's agent: a coordinator says which host runs the workspace and where its
//! agent serves (telling only the workspace's owner or an admin); the CLI connects there over
//! QUIC with mTLS and checks that the answer comes from that host's agent. `logs`, `exec`,
//! `admin networks`, Mutagen and the sync daemon all start here.

use std::time::Duration;

use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, IdentityKind};
use nexus_protocol::message::{Request, Response, WorkspaceRequest};
use nexus_protocol::transport::{Connection, TransportConfig, resolve};
use nexus_protocol::{HostId, WorkspaceName};

use crate::error::CliError;
use crate::settings::Settings;

/// How long a read of a coordinator or an agent may take.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the agent of `name`'s host, as the coordinators name it.
pub(crate) async fn agent_of(
    settings: &Settings,
    name: &WorkspaceName,
) -> Result<(HostId, Connection), CliError> {
    let (host, address) = endpoint_of(settings, name).await?;
    let connection = connect_agent(settings, &host, &address).await?;
    Ok((host, connection))
}

/// Where `name` runs: its host, and its agent's address. The coordinator tells only the
/// workspace's owner or an admin.
pub(crate) async fn endpoint_of(
    settings: &Settings,
    name: &WorkspaceName,
) -> Result<(HostId, String), CliError> {
    let request = Request::Workspace(WorkspaceRequest::Endpoint(name.clone()));
    match settings.request(request, READ_TIMEOUT).await? {
        Response::Endpoint { host, address } => Ok((host, address)),
        other => Err(CliError::unexpected(&other)),
    }
}

/// How the CLI's connections to agents are made.
pub fn agent_transport() -> TransportConfig {
    TransportConfig {
        // A sync session keeps this connection for hours: a dead agent (killed, rebooted) must
        // be noticed in seconds, not at the default 30 s idle timeout.
        idle_timeout: Duration::from_secs(5),
        keep_alive: Duration::from_secs(1),
        // A sync's batch of changes reaches the agent one whole change after another, so that
        // it applies each while the next travels.
        fair_streams: false,
        ..TransportConfig::default()
    }
}

/// Connects to the agent at `address` and checks that it is `host`'s.
pub(crate) async fn connect_agent(
    settings: &Settings,
    host: &HostId,
    address: &str,
) -> Result<Connection, CliError> {
    // Only an agent that does not answer is sent to its --listen and --advertise; a refused
    // certificate (an expired session, a name the agent's certificate lacks) says its own fix.
    let unreachable = |error: nexus_protocol::WireError| {
        if !matches!(error.code, ErrorCode::NetworkError | ErrorCode::Timeout) {
            return crate::session::explain(error);
        }
        CliError::from(error).suggest(&format!(
            "host {host}'s agent serves logs and exec at {address}: check that it runs and that this machine reaches it (its --listen and --advertise)"
        ))
    };
    let (socket, server_name) = resolve(address).await.map_err(unreachable)?;
    let connection = settings
        .connector_with(agent_transport())?
        .connect(socket, &server_name, &[IdentityKind::Agent])
        .await
        .map_err(unreachable)?;
    if connection.server() != &Identity::Agent(host.clone()) {
        return Err(CliError::local(
            ErrorCode::AuthenticationFailed,
            format!(
                "{address} answered as {}, not as host {host}'s agent",
                connection.server()
            ),
        )
        .suggest(
            "an agent advertises an address another host holds: check the agents' --advertise",
        ));
    }
    Ok(connection)
}
