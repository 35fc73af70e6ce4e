//! `nexus-agent`: the per-host daemon. It registers its host with the coordinators, keeps a
//! heartbeat, watches the host's desired state and makes the host's containers match it.
//!
//! - [`activity`]: what the agent sees its workspaces used for (exec, logs, sync, port
//!   traffic), kept for the link to report.
//! - [`config`]: flags and TOML.
//! - [`link`]: the coordinator link (register, heartbeat, watch, reports, stats; follows the
//!   leader, reconnects with backoff).
//! - [`reconcile`] and [`plan`]: the level-triggered reconcile loop and its pure plan.
//! - [`runtime`]: Docker (bollard) and the hollow simulation, behind one trait.
//! - [`ports`]: the bind check before publishing.
//! - [`stats`] and [`sampler`]: host stats (sysinfo) and container stats.
//! - [`cache`]: the desired state on disk.
//! - [`endpoint`]: users' `logs`, `exec` and file sync sessions, served straight from this host.
//! - [`health`]: a workspace's health as this host sees it (container, ports, sync, files).
//! - [`orphans`]: which containers no workspace of the desired state names, and whether one
//!   may be removed on an admin's word.
//! - [`metrics`] and [`probes`]: what `/metrics`, `/livez` and `/readyz` show over HTTP;
//!   [`diagnostics`]: what admins ask of the agent itself (config, metrics, certificates,
//!   readiness, engine); [`reload`]: re-reading its configuration while it runs.
//! - [`enrol`] and [`standing`]: a certificate from a join token at start; [`names`]: what the
//!   agent advertises and which names its certificate should hold; [`renewal`]: a fresh
//!   certificate two thirds into each one's life, put in force without a restart; [`denials`]:
//!   the fleet's deny list, enforced by the users' endpoint; [`trust`]: the CA certificates the
//!   cluster trusts, followed through a CA rotation.

pub mod activity;
pub mod asker;
pub mod cache;
pub mod config;
pub mod denials;
pub mod diagnostics;
pub mod endpoint;
pub mod enrol;
pub mod git;
pub mod health;
pub mod hops;
pub mod link;
pub mod maintenance;
pub mod metrics;
pub mod names;
pub mod orphans;
pub mod plan;
pub mod ports;
pub mod probes;
pub mod prune;
pub mod reconcile;
pub mod reload;
pub mod renewal;
pub mod runtime;
pub mod sampler;
pub mod standing;
pub mod stats;
pub mod trust;

use std::sync::Arc;

use anyhow::Context;
use nexus_protocol::Identity;
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::transport::{AcceptPolicy, Connector, Credentials, Gate, Server};
use nexus_telemetry::Registry;
use nexus_telemetry::http::{Monitor, Running};
use nexus_telemetry::systemd::{Notifier, watchdog_interval_from_env};
use tokio::sync::{Notify, watch};

pub use config::Config;
use config::RuntimeKind;
use runtime::Runtime;
use runtime::docker::DockerRuntime;
use runtime::hollow::HollowRuntime;

/// Runs an agent with the configured runtime until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_reloadable(config, None, shutdown).await
}

/// What an agent needs to reload its configuration: the flags it started with (the file is read
/// again under them) and the handle of its log filter.
#[derive(Debug)]
pub struct Reloadable {
    pub args: config::Args,
    pub log_filter: nexus_protocol::logging::LogFilter,
}

/// [`run`], and with `reloadable`, reloading its configuration on SIGHUP and when an admin asks.
pub async fn run_reloadable(
    config: Config,
    reloadable: Option<Reloadable>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // The agent's own requests to the coordinators (credentials, worktrees), over the link.
    let asker = asker::Asker::default();
    match config.runtime {
        RuntimeKind::Docker => {
            warn_of_agent_toml_registries(&config);
            let runtime = DockerRuntime::connect(
                config.host_id.clone(),
                &config.docker_socket,
                config.registries.clone(),
                config.network_pool,
                config.ready_networks,
            )?
            .with_asker(asker.clone());
            match runtime.ping().await {
                Ok(()) => runtime.make_ready_networks(),
                Err(error) => {
                    tracing::warn!(socket = %config.docker_socket, "the Docker engine does not answer yet; workspaces wait for it: {error}");
                }
            }
            let registries = runtime.registries();
            let runtime = Arc::new(runtime);
            let ran = run_inner(
                config,
                runtime.clone(),
                reloadable,
                Some(registries),
                asker,
                shutdown,
            )
            .await;
            // Stopped cleanly: the free ready networks go, so that a host whose agent is
            // stopped or removed keeps none of them; the next start makes them again.
            runtime.remove_free_ready_networks().await;
            ran
        }
        RuntimeKind::Hollow => {
            let runtime = HollowRuntime::new(config.host_id.clone(), config.hollow);
            run_inner(config, Arc::new(runtime), reloadable, None, asker, shutdown).await
        }
    }
}

/// `agent.toml`'s `[[registry]]` still works, but its passwords belong in the credential store.
pub fn warn_of_agent_toml_registries(config: &Config) {
    if !config.registries.is_empty() {
        let servers: Vec<&str> = config
            .registries
            .iter()
            .map(|r| r.server.as_str())
            .collect();
        tracing::warn!(
            ?servers,
            "agent.toml's `registry` credentials are deprecated: move it into the credential store: nexus admin credentials set registry NAME --server S --username U --password-stdin (the store's credential wins when both have one)"
        );
    }
}

/// Runs an agent on `runtime` until `shutdown` completes. What runs keeps running when it stops.
pub async fn run_with<R: Runtime>(
    config: Config,
    runtime: Arc<R>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_inner(
        config,
        runtime,
        None,
        None,
        asker::Asker::default(),
        shutdown,
    )
    .await
}

async fn run_inner<R: Runtime>(
    config: Config,
    runtime: Arc<R>,
    reloadable: Option<Reloadable>,
    registries: Option<runtime::docker::Registries>,
    asker: asker::Asker,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    tokio::pin!(shutdown);
    // systemd (`Type=notify`): ready once enrolled and serving (not once a coordinator answers:
    // the link keeps trying on its own); the watchdog is fed while the liveness checks pass.
    let notifier = Notifier::from_env();
    let machine_name = stats::host_name();
    notifier.status("enrolling, if it must");
    tokio::select! {
        ensured = enrol::ensure(&config, machine_name.as_deref()) => ensured?,
        () = &mut shutdown => {
            tracing::info!("nexus-agent stopped before it enrolled");
            return Ok(());
        }
    }
    let identity = Identity::Agent(config.host_id.clone());
    let credentials = Credentials::from_pki_dir(&config.tls_dir, &identity).with_context(|| {
        format!(
            "cannot load this agent's TLS files from {}",
            config.tls_dir.display()
        )
    })?;
    let host_name = machine_name
        .clone()
        .unwrap_or_else(|| config.host_id.to_string());
    // Before anything starts: an address the certificate lacks fails the start (checked again
    // with the port bound).
    if let Some(listen) = config.listen {
        names::advertise(
            listen,
            config.advertise.as_deref(),
            &host_name,
            &credentials.own_names(),
        )
        .map_err(|mismatch| anyhow::Error::new(mismatch.to_wire()))?;
    }
    let (mut registry, metrics, common) = registry(&credentials);
    let log_filter = reloadable.as_ref().map_or_else(
        || nexus_protocol::logging::LogFilter::detached(&config.log_filter()),
        |r| r.log_filter.clone(),
    );
    let intervals = reload::Intervals::of(&config);
    let heartbeat_interval = intervals.heartbeat.subscribe();
    let stats_interval = intervals.stats.subscribe();
    let sync_stats = endpoint::syncstats::SyncStats::register(&mut registry);
    let maintenance = nexus_telemetry::maintenance::MaintenanceMetrics::register(&mut registry);
    let vitals = Arc::new(probes::Vitals::default());
    let connector =
        Connector::new(&credentials, config.transport()).context("cannot set up QUIC")?;
    let mut host_sampler =
        stats::HostSampler::new(&config.data_dir).context("cannot read this host's facts")?;
    let mut info = host_sampler.describe(&config);
    info.labels = enrol::with_token_labels(enrol::token_labels(&config.data_dir), &info.labels);
    tracing::info!(host = %config.host_id, runtime = runtime.name(), coordinators = ?config.coordinators, cpus = info.cpus, memory = info.memory_bytes, "nexus-agent starting");

    let (reconciler, reports) = reconcile::Reconciler::new(
        runtime.clone(),
        config.host_id.clone(),
        config.max_concurrent_ops,
        cache::Cache::new(&config.data_dir),
    );
    let (causes_sender, causes) = watch::channel(hops::Causes::default());
    // The agent's own requests to the coordinators (credentials for fetches and pulls, worktrees'
    // facts) go over the link's session: one asker, shared with the runtime's pulls.
    let git_host = git::host::GitHost::new(&config.data_dir, Some(asker.clone()));
    let reconciler = reconciler
        .with_files(config.data_dir.join("workspaces"))
        .with_git(git_host.clone())
        .monitored(metrics.clone(), vitals.clone())
        .with_causes(causes);
    let (desired_sender, desired) = watch::channel(reconciler.current_desired());
    let (sample_sender, samples) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let events = runtime::spawn_events(&runtime, &wake);
    let sampling = tokio::spawn(sampler::run(
        runtime.clone(),
        host_sampler,
        stats_interval,
        sample_sender,
        metrics.clone(),
    ));
    let activities = activity::Activities::default();
    let traffic = tokio::spawn(activity::watch_traffic(
        samples.clone(),
        desired.clone(),
        activities.clone(),
    ));
    let (stop, stopped) = watch::channel(false);
    let stopped_for = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let probes = probes::AgentProbes {
        runtime: runtime.clone(),
        metrics: metrics.clone(),
        vitals: vitals.clone(),
        samples: samples.clone(),
        desired: desired.clone(),
        sync: sync_stats.clone(),
        heartbeat_interval: config.heartbeat_interval,
        host_cpus: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
    };
    let probes = Arc::new(probes);
    let monitor = Arc::new(Monitor::new(Arc::new(registry), probes.clone()));
    let monitoring = Running::start_monitor(config.http_listen, monitor.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve HTTP monitoring on {} (--http-listen, or `off`)",
                config.http_listen
            )
        })?;
    let mut link = link::Link::new(
        connector,
        config.clone(),
        info,
        desired_sender,
        reports,
        samples,
    )
    .monitored(metrics.clone(), vitals)
    .with_causes(causes_sender)
    .with_heartbeat_interval(heartbeat_interval)
    .with_activity(activities.clone())
    .with_asker(asker.clone());
    let diagnostics = Arc::new(diagnostics::Diagnostics::new(
        &config,
        &credentials,
        monitor,
    ));
    let renewer = renewal::Renewer::new(
        credentials.clone(),
        config.tls_dir.clone(),
        asker.clone(),
        names::wanted(
            config.listen,
            config.advertise.as_deref(),
            machine_name.as_deref(),
        ),
    )
    .monitored(metrics.clone(), common.clone());
    let trusting = tokio::spawn(
        trust::TrustFollower {
            asker: asker.clone(),
            credentials: credentials.clone(),
            tls_dir: config.tls_dir.clone(),
            renew_now: renewer.renew_now(),
        }
        .run(stopped_for(stopped.clone())),
    );
    let reloader = reloadable.map(|reloadable| {
        Arc::new(
            reload::Reloader::new(
                reloadable.args,
                config.clone(),
                log_filter,
                credentials.clone(),
                intervals,
            )
            .with_registries(registries)
            .showing(Some(diagnostics.clone()), common),
        )
    });
    let hangups = reloader.clone().map(|reloader| {
        let notifier = notifier.clone();
        tokio::spawn(nexus_protocol::transport::on_hangup(move || {
            notifier.reloading();
            let report = reloader.reload("SIGHUP");
            notifier.ready(&report.status_line());
        }))
    });
    let gate = Gate::new();
    // What the last run was told, in force before the leader says it again.
    gate.update(denials::load(&config.data_dir));
    let serving = match config.listen {
        Some(listen) => {
            let server = Server::bind(
                listen,
                &credentials,
                // Coordinators too: the leader's scheduled maintenance (`Maintain` only). Users
                // come here straight, so the fleet's deny list is enforced here too.
                AcceptPolicy::only(&[
                    IdentityKind::User,
                    IdentityKind::Admin,
                    IdentityKind::Coordinator,
                ])
                .with_gate(gate.clone()),
                config.transport(),
            )
            .with_context(|| format!("cannot serve users on {listen} (--listen, or `off`)"))?;
            let bound = server.local_addr().context("the endpoint's address")?;
            let advertise = names::advertise(
                bound,
                config.advertise.as_deref(),
                &host_name,
                &credentials.own_names(),
            )
            .map_err(|mismatch| anyhow::Error::new(mismatch.to_wire()))?;
            tracing::info!(%bound, %advertise, "serving users' logs and exec");
            link = link.serving(advertise);
            let mut handler =
                endpoint::Endpoint::new(identity.clone(), runtime.clone(), desired.clone())
                    .with_files(config.data_dir.join("workspaces"))
                    .with_worktrees(git::verify::Verifier::of(git_host.clone()))
                    .with_git(git_host)
                    .with_sync_stats(sync_stats)
                    .with_logs(config.daemon_log().files())
                    .with_diagnostics(diagnostics)
                    .with_maintenance(maintenance)
                    .with_activity(activities);
            if let Some(reloader) = &reloader {
                handler = handler.with_reloader(reloader.clone());
            }
            let handler = Arc::new(handler);
            let denials = tokio::spawn(denials::follow(
                asker.clone(),
                gate,
                metrics.clone(),
                config.data_dir.clone(),
                stopped_for(stopped.clone()),
            ));
            Some((
                tokio::spawn(server.serve(handler, stopped_for(stopped.clone()))),
                denials,
            ))
        }
        None => None,
    };
    let reconciling = tokio::spawn(reconciler.run(desired, wake, stopped_for(stopped.clone())));
    let renewing = tokio::spawn(renewer.run(stopped_for(stopped.clone())));
    let linking = tokio::spawn(link.run(stopped_for(stopped)));
    notifier.ready(&format!("agent {} running", config.host_id));
    let watchdog = watchdog_interval_from_env().map(|interval| {
        tokio::spawn(notifier.clone().watchdog(interval, move || {
            let probes = probes.clone();
            async move { probes.watchdog().await }
        }))
    });
    shutdown.await;
    notifier.stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let _ = stop.send(true);
    let _ = linking.await;
    let _ = reconciling.await;
    let _ = renewing.await;
    let _ = trusting.await;
    if let Some((serving, denials)) = serving {
        let _ = serving.await;
        let _ = denials.await;
    }
    if let Some(monitoring) = monitoring {
        monitoring.stop().await;
    }
    events.abort();
    sampling.abort();
    traffic.abort();
    if let Some(hangups) = hangups {
        hangups.abort();
    }
    tracing::info!("nexus-agent stopped; workspaces keep running");
    Ok(())
}

/// One hollow host of a simulated fleet (as Kubernetes' kubemark runs hollow kubelets): the real
/// reconciler, desired-state cache and coordinator link on the [`HollowRuntime`], with its own
/// identity and connection (`connector`, which may share a UDP socket with other hosts' through
/// [`Connector::sharing`]). What a process of thousands of them cannot afford each is left out:
/// host sampling (heartbeats carry a fixed `stats` sample instead), container stats and the
/// users' endpoint. Runs until `shutdown` completes; dropping the future is the host dying.
pub async fn run_hollow_host(
    config: Config,
    runtime: Arc<HollowRuntime>,
    connector: Connector,
    info: nexus_protocol::model::HostInfo,
    stats: nexus_protocol::model::HostStats,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    let (reconciler, reports) = reconcile::Reconciler::new(
        runtime.clone(),
        config.host_id.clone(),
        config.max_concurrent_ops,
        cache::Cache::new(&config.data_dir),
    );
    let (causes_sender, causes) = watch::channel(hops::Causes::default());
    let reconciler = reconciler.with_causes(causes);
    let (desired_sender, desired) = watch::channel(reconciler.current_desired());
    let (_samples, samples) = watch::channel(Some(sampler::Sample {
        host: stats,
        containers: Vec::new(),
    }));
    let wake = Arc::new(Notify::new());
    let events = runtime::spawn_events(&runtime, &wake);
    let link = link::Link::new(connector, config, info, desired_sender, reports, samples)
        .with_causes(causes_sender);
    let (stop, stopped) = watch::channel(false);
    let stopped_for = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let reconciling = reconciler.run(desired, wake, stopped_for(stopped.clone()));
    let linking = link.run(stopped_for(stopped));
    let stopping = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(reconciling, linking, stopping);
    events.abort();
    Ok(())
}

/// The registry `/metrics` serves, with the agent's metrics and the certificates' expiries.
fn registry(credentials: &Credentials) -> (Registry, metrics::Metrics, nexus_telemetry::Common) {
    let (mut registry, common) = Registry::for_daemon("agent", nexus_protocol::SOFTWARE_VERSION);
    let expiries = credentials.expiries();
    common.set_cert_expiries(expiries.own, expiries.ca);
    let metrics = metrics::Metrics::register(&mut registry);
    (registry, metrics, common)
}
