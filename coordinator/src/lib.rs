//! `nexus-coordinator`: keeps the fleet's state and serves agents, users and admins over QUIC with
//! mutual TLS.
//!
//! What exists today: the configuration ([`config`]), the endpoint and its request handler
//! ([`service`]) with an in-memory registry of agents' hosts (soft state, as heartbeats will stay).
//! The Raft-replicated state on RocksDB, the scheduler and the watch hub arrive with the
//! Coordinator and Workspaces issues; until then every request they serve is answered
//! `UNSUPPORTED`.

pub mod config;
pub mod consensus;
pub mod service;
pub mod state;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use nexus_protocol::Identity;
use nexus_protocol::transport::{AcceptPolicy, Credentials, Server};

pub use config::Config;
pub use service::Service;

/// Runs a coordinator until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    let identity = Identity::Coordinator(config.node_id);
    let credentials = Credentials::from_pki_dir(&config.tls_dir, &identity).with_context(|| {
        format!(
            "cannot load this coordinator's TLS files from {}",
            config.tls_dir.display()
        )
    })?;
    if credentials.identity() != Some(&identity) {
        anyhow::bail!(
            "the certificate in {} is for {}, not {identity}",
            config.tls_dir.display(),
            credentials
                .identity()
                .map_or("nobody".to_string(), ToString::to_string)
        );
    }
    let server = Server::bind(
        config.listen,
        &credentials,
        AcceptPolicy::everyone(),
        config.transport(),
    )
    .context("cannot start the endpoint")?;
    let address = server
        .local_addr()
        .context("cannot read the bound address")?;
    if !config.peers.is_empty() {
        tracing::warn!(
            peers = config.peers.len(),
            "peers are configured, but this build runs a one-node coordinator: clustering arrives with Raft"
        );
    }
    tracing::info!(node_id = %config.node_id, %address, "nexus-coordinator listening");
    server
        .serve(Arc::new(Service::new(identity)), shutdown)
        .await;
    tracing::info!("nexus-coordinator stopped");
    Ok(())
}
