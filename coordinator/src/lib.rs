//! `nexus-coordinator`: keeps the fleet's state, replicated with Raft on RocksDB, and serves
//! agents, users, admins and its peers over QUIC with mutual TLS.
//!
//! The parts: the configuration ([`config`]); the pure state machine ([`state`]), scheduler
//! ([`scheduler`]) and the fit rules both apply ([`fit`]); the Raft node without I/O
//! ([`consensus`]) over the RocksDB store ([`store`]); the node's handle and the driver that owns
//! it ([`cluster`]); the other coordinators ([`peers`]); the batching of creates ([`placer`]); the
//! failure detector's pure decision ([`detector`]); and the request handler ([`service`]), which
//! runs the detector's loop. Beside them, what an operator watches: the metrics ([`metrics`]), the
//! start SLIs measured from the log ([`starts`]), and the health probes and scrape-time gauges
//! ([`probes`]) that the monitoring HTTP server (`nexus-telemetry`) serves; what it tells admins
//! of itself ([`diagnostics`]); re-reading its configuration while it runs ([`reload`]); and the
//! credential store's keys from its key file ([`credential_keys`]); following a CA rotation
//! ([`trust`]).

pub mod background;
pub mod backups;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod credential_keys;
pub mod detector;
pub mod diagnostics;
pub mod files;
pub mod fit;
pub mod hops;
mod locks;
pub mod metrics;
pub mod peers;
pub mod placer;
pub mod policy;
pub mod probes;
pub mod recover;
pub mod reload;
pub mod renewal;
pub mod scheduler;
pub mod service;
pub mod signing;
pub mod starts;
pub mod state;
pub mod store;
pub mod trust;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use nexus_protocol::Identity;
use nexus_protocol::transport::{AcceptPolicy, Connector, Credentials, Gate, Server};
use nexus_telemetry::Registry;
use nexus_telemetry::http::{Monitor, Probes as _, Running};
use nexus_telemetry::systemd::{Notifier, watchdog_interval_from_env};
use tokio::sync::oneshot;

pub use config::Config;
pub use service::Service;

use crate::cluster::Cluster;
use crate::consensus::{RaftNode, StoreError};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::probes::Probes;
use crate::store::{Durability, RocksStore, StoreIdentity};

/// The cluster's identity, which the data dir and backups are bound to: `cluster-id` in the
/// `--tls-dir` once a CA rotation wrote it, else the fingerprint of the CA certificates there.
pub fn cluster_id(config: &Config, credentials: &Credentials) -> anyhow::Result<String> {
    nexus_protocol::pki::PkiDir::new(&config.tls_dir)
        .cluster_id(credentials.ca_fingerprint())
        .context("cannot read the cluster's identity (cluster-id in --tls-dir)")
}

/// How often the leader looks whether a scheduled backup is due.
const BACKUP_SCHEDULE_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the leader looks whether a maintenance notice or run is due: a read of its own
/// replica, cheap enough to do often (a window lasts an hour).
const MAINTENANCE_SCHEDULE_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// A running Raft node: its handle, and what stops it.
#[derive(Debug)]
pub struct Node {
    pub cluster: Cluster,
    /// The store the driver writes, shared for host maintenance's compaction.
    pub store: RocksStore,
    driver: Driver,
}

/// The Raft driver's thread, seen from its node: told to stop and waited for when dropped, so
/// that a node dropped without [`Node::stop`] (a test's, an early return) never leaves the
/// driver writing RocksDB while the process exits (RocksDB then aborts: "pthread lock: Invalid
/// argument").
#[derive(Debug)]
struct Driver {
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<Result<(), StoreError>>>,
    /// The task that asks the members which log entries they apply
    /// ([`Cluster::follow_entry_versions`]), ended with the driver.
    entry_versions: tokio::task::JoinHandle<()>,
}

impl Driver {
    /// Stops the driver and waits for it.
    async fn stop(mut self) -> Result<(), StoreError> {
        self.entry_versions.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.stopped.take() {
            Some(stopped) => stopped.await.unwrap_or_else(|_| Err(driver_died())),
            None => Ok(()),
        }
    }

    /// Completes when the driver stops by itself (its store failed), with why.
    async fn finished(&mut self) -> Result<(), StoreError> {
        let result = match self.stopped.as_mut() {
            Some(stopped) => stopped.await.unwrap_or_else(|_| Err(driver_died())),
            None => std::future::pending().await,
        };
        self.stopped = None;
        result
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.entry_versions.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            // Waited for on a thread of its own: this may run inside an async runtime, where a
            // blocking receive is refused. The driver runs on its own thread and runtime, and
            // returns at once when told to stop.
            let _ = std::thread::spawn(move || stopped.blocking_recv()).join();
        }
    }
}

fn driver_died() -> StoreError {
    StoreError("the driver thread died".into())
}

impl Node {
    /// Opens the store in `config.data_dir` (bootstrapping it on first start) and starts the
    /// driver. Must be called within a tokio runtime (the peer senders run on it).
    pub fn start(config: &Config, credentials: &Credentials) -> anyhow::Result<Node> {
        Node::start_with(config, credentials, Metrics::detached())
    }

    /// [`Node::start`], recording into `metrics`.
    pub fn start_with(
        config: &Config,
        credentials: &Credentials,
        metrics: Metrics,
    ) -> anyhow::Result<Node> {
        let identity = StoreIdentity {
            format: store::FORMAT_VERSION,
            cluster: cluster_id(config, credentials)?,
            node: config.node_id,
        };
        // Founders start as voters of the same first configuration; a joining node starts empty
        // and learns the configuration from the leader's snapshot.
        let voters: Vec<_> = if config.join {
            vec![]
        } else {
            std::iter::once(config.node_id)
                .chain(config.peers.iter().map(|(id, _)| *id))
                .collect()
        };
        let dir = config.data_dir.join("raft");
        let store = RocksStore::open(&dir, &identity, &voters, Durability::Synced)
            .with_context(|| format!("cannot open the store in {}", dir.display()))?
            .timing_syncs(metrics.storage_sync_duration.clone());
        let (state, applied) = store.state_snapshot()?;
        let shared = store.clone();
        let node = RaftNode::new(config.node_id, store, state, applied, &config.driver.raft)?;
        let mut addresses: BTreeMap<_, _> = config.peers.iter().cloned().collect();
        addresses.insert(config.node_id, config.advertise());
        let connector = Connector::new(credentials, config.peer_transport())
            .context("cannot set up connections to peers")?;
        let (peers, deliveries) = Peers::new(
            config.node_id,
            connector,
            addresses,
            config.peer_batch_timeout(),
            config.max_frame_bytes,
            tokio::runtime::Handle::current(),
            metrics.peer_rtt.clone(),
        );
        let (stop, stop_signal) = oneshot::channel();
        let (cluster, stopped) = cluster::start(
            node,
            peers,
            deliveries,
            config.driver.clone(),
            metrics,
            stop_signal,
        )
        .context("cannot start the raft driver")?;
        let entry_versions = tokio::spawn({
            let cluster = cluster.clone();
            async move { cluster.follow_entry_versions().await }
        });
        Ok(Node {
            cluster,
            store: shared,
            driver: Driver {
                stop: Some(stop),
                stopped: Some(stopped),
                entry_versions,
            },
        })
    }

    /// Stops the driver and waits for it.
    pub async fn stop(self) -> Result<(), StoreError> {
        self.driver.stop().await
    }
}

/// Runs a coordinator until `shutdown` completes, or until its store fails (an error).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with(config, shutdown, |_, _| {}).await
}

/// What a coordinator needs to reload its configuration: the flags it started with (the file
/// is read again under them) and the handle of its log filter.
#[derive(Debug)]
pub struct Reloadable {
    pub args: config::Args,
    pub log_filter: nexus_protocol::logging::LogFilter,
}

/// [`run`], reloading its configuration on SIGHUP and when an admin asks.
pub async fn run_reloadable(
    config: Config,
    reloadable: Reloadable,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_inner(config, Some(reloadable), shutdown, |_, _| {}).await
}

/// [`run`], telling `ready` the bound address and the cluster's handle once the node serves: for
/// tools and tests that run a coordinator in their own process and act on its Raft node directly.
pub async fn run_with(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
    ready: impl FnOnce(std::net::SocketAddr, Cluster) + Send,
) -> anyhow::Result<()> {
    run_inner(config, None, shutdown, ready).await
}

async fn run_inner(
    config: Config,
    reloadable: Option<Reloadable>,
    shutdown: impl std::future::Future<Output = ()> + Send,
    ready: impl FnOnce(std::net::SocketAddr, Cluster) + Send,
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
    let lifetimes: signing::LifetimesHandle =
        Arc::new(std::sync::Mutex::new(config::lifetimes::Lifetimes {
            node: config.cert_lifetime,
            user: config.user_cert_lifetime,
        }));
    let cluster_id = cluster_id(&config, &credentials)?;
    let signing = Arc::new(
        signing::Signing::load(&config.tls_dir, &credentials, lifetimes.clone()).with_context(
            || {
                format!(
                    "cannot load the cluster CA from {} (--tls-dir)",
                    config.tls_dir.display()
                )
            },
        )?,
    );
    if signing.holds_key() {
        tracing::info!("this coordinator holds the CA key: it enrols, renews and signs");
    } else {
        tracing::warn!(
            "no ca.key in {}: this coordinator refuses enrolments and renewals (UNSUPPORTED)",
            config.tls_dir.display()
        );
    }
    // Every handshake is checked against the replicated deny list; clients without a
    // certificate may connect only to enrol.
    let gate = Gate::new();
    let server = Server::bind(
        config.listen,
        &credentials,
        AcceptPolicy::everyone()
            .with_gate(gate.clone())
            .with_enrolment(),
        config.transport(),
    )
    .context("cannot start the endpoint")?;
    let address = server
        .local_addr()
        .context("cannot read the bound address")?;
    let (mut registry, common) =
        Registry::for_daemon("coordinator", nexus_protocol::SOFTWARE_VERSION);
    let metrics = Metrics::register(&mut registry);
    let maintenance = nexus_telemetry::maintenance::MaintenanceMetrics::register(&mut registry);
    let Node {
        cluster,
        store,
        mut driver,
    } = Node::start_with(&config, &credentials, metrics.clone())?;
    gate.update(cluster.deny_list().borrow().clone());
    let gatekeeper = tokio::spawn(renewal::keep_gate(cluster.deny_list(), gate));
    let renew_now = Arc::new(tokio::sync::Notify::new());
    let own_certificate = tokio::spawn(
        renewal::OwnCertificate {
            node_id: config.node_id,
            tls_dir: config.tls_dir.clone(),
            credentials: credentials.clone(),
            signing: signing.clone(),
            cluster: cluster.clone(),
            expiries: common.clone(),
            renew_now: renew_now.clone(),
        }
        .run(),
    );
    let expiries = credentials.expiries();
    common.set_cert_expiries(expiries.own, expiries.ca);
    let probes = Arc::new(Probes::new(cluster.clone(), metrics));
    let monitor = Arc::new(Monitor::new(Arc::new(registry), probes.clone()));
    let monitoring = Running::start_monitor(config.http_listen, monitor.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve HTTP monitoring on {} (--http-listen)",
                config.http_listen
            )
        })?;
    tracing::info!(node_id = %config.node_id, %address, peers = config.peers.len(), "nexus-coordinator listening");
    ready(address, cluster.clone());
    let diagnostics = Arc::new(diagnostics::Diagnostics::new(
        &config,
        &credentials,
        monitor,
    ));
    let credential_keys =
        credential_keys::CredentialKeys::read(config.credentials_key_file.as_deref())
            .context("cannot read the credentials key file (--credentials-key-file)")?;
    if let Some(keys) = &credential_keys {
        tracing::info!(keys = ?keys.ids(), "the credential store's keys are loaded");
    }
    let credential_keys = Arc::new(credential_keys::CredentialKeys::new(credential_keys));
    let ca_follower = tokio::spawn(
        trust::CaFollower {
            node_id: config.node_id,
            tls_dir: config.tls_dir.clone(),
            credentials: credentials.clone(),
            signing: signing.clone(),
            cluster: cluster.clone(),
            keys: credential_keys.clone(),
            cluster_id: cluster_id.clone(),
            renew_now,
        }
        .run(),
    );
    let credential_store = Arc::new(service::CredentialStore::new(
        credential_keys.clone(),
        // As itself, to ask an agent to try a credential.
        Connector::new(&credentials, config.transport())
            .map_err(|error| tracing::warn!("no credential checks on agents: {error}"))
            .ok(),
    ));
    let mut service = Service::new(identity, cluster)
        .with_signing(signing)
        .with_credentials(credential_store.clone())
        .with_host_ttl(config.host_ttl)
        .with_logs(config.daemon_log().files())
        .with_diagnostics(diagnostics.clone())
        .with_backups(service::Backups::new(
            backups::BackupDir::new(&config.backup_dir, config.node_id),
            cluster_id.clone(),
        ))
        .with_maintenance(service::Maintainer::new(
            store,
            maintenance,
            // As itself, to ask the other coordinators and the agents on the schedule.
            Connector::new(&credentials, config.transport())
                .map_err(|error| {
                    tracing::warn!("no scheduled maintenance of the other daemons: {error}")
                })
                .ok(),
        ));
    // systemd (`Type=notify`): ready once the endpoint is bound and the node runs, not once the
    // cluster has a leader (coordinators started one by one would each wait for the others);
    // the watchdog is fed while the liveness checks (`/livez`) pass.
    let notifier = Notifier::from_env();
    let mut hangups = None;
    if let Some(Reloadable { args, log_filter }) = reloadable {
        let reloader = Arc::new(
            reload::Reloader::new(
                args,
                config.clone(),
                log_filter,
                credentials.clone(),
                service.host_ttl_handle(),
            )
            .showing(diagnostics, common)
            .keeping_keys(credential_keys)
            .signing_for(lifetimes),
        );
        service = service.with_reloader(reloader.clone());
        let notifier = notifier.clone();
        hangups = Some(tokio::spawn(nexus_protocol::transport::on_hangup(
            move || {
                notifier.reloading();
                let report = reloader.reload("SIGHUP");
                notifier.ready(&report.status_line());
            },
        )));
    }
    let service = Arc::new(service);
    let detector = tokio::spawn({
        let service = service.clone();
        async move { service.detect_failures().await }
    });
    let schedule = tokio::spawn({
        let service = service.clone();
        async move { service.follow_backup_schedule(BACKUP_SCHEDULE_PERIOD).await }
    });
    let maintenance = tokio::spawn({
        let service = service.clone();
        async move {
            service
                .follow_maintenance_schedule(MAINTENANCE_SCHEDULE_PERIOD)
                .await
        }
    });
    let policies = tokio::spawn({
        let service = service.clone();
        async move { service.follow_policies().await }
    });
    let mut failure = None;
    let until = async {
        tokio::select! {
            () = shutdown => {}
            result = driver.finished() => failure = Some(result),
        }
    };
    notifier.ready(&format!(
        "coordinator {} serving on {address}",
        config.node_id
    ));
    let watchdog = watchdog_interval_from_env().map(|interval| {
        tokio::spawn(notifier.clone().watchdog(interval, move || {
            let probes = probes.clone();
            async move { probes.live().await }
        }))
    });
    server.serve(service, until).await;
    notifier.stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    detector.abort();
    schedule.abort();
    maintenance.abort();
    policies.abort();
    gatekeeper.abort();
    own_certificate.abort();
    ca_follower.abort();
    if let Some(hangups) = hangups {
        hangups.abort();
    }
    if let Some(monitoring) = monitoring {
        monitoring.stop().await;
    }
    let result = match failure {
        Some(result) => result,
        None => driver.stop().await,
    };
    result.context("the raft node failed")?;
    tracing::info!("nexus-coordinator stopped");
    Ok(())
}
