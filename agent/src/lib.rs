//! `nexus-agent`: the per-host daemon. It registers its host with the coordinators, keeps a
//! heartbeat, and (with the Agent issue) runs the workspaces it is assigned on Docker.
//!
//! What exists today: the configuration ([`config`]), the host's facts ([`host`]) and the
//! coordinator link ([`link`]): connect to any coordinator, pass the mTLS hello, register, heartbeat,
//! and reconnect with exponential backoff and jitter. Containers, ports, stats and the reconcile
//! loop arrive with the Agent issue.

pub mod config;
pub mod host;
pub mod link;

use anyhow::Context;
use nexus_protocol::Identity;
use nexus_protocol::transport::{Connector, Credentials};

pub use config::Config;

/// Runs an agent until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    let identity = Identity::Agent(config.host_id.clone());
    let credentials = Credentials::from_pki_dir(&config.tls_dir, &identity).with_context(|| {
        format!(
            "cannot load this agent's TLS files from {}",
            config.tls_dir.display()
        )
    })?;
    let connector =
        Connector::new(&credentials, config.transport()).context("cannot set up QUIC")?;
    let info = host::describe(&config);
    tracing::info!(host = %config.host_id, runtime = %config.runtime, coordinators = ?config.coordinators, "nexus-agent starting");
    link::Link::new(connector, config, info).run(shutdown).await;
    tracing::info!("nexus-agent stopped");
    Ok(())
}
