//! The stats loop: at the stats interval, one sample of the host (sysinfo) and of each running
//! workspace container (the runtime), published for the link to send. Cheap by construction:
//! sysinfo refreshes only what is reported, and each container's CPU % comes from the difference
//! to its previous one-shot sample rather than from a second, blocking read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nexus_protocol::model::{ContainerStats, HostStats};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::runtime::{ContainerStatus, Runtime};
use crate::stats::HostSampler;

/// At most this many container stats calls at once.
const STATS_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    pub host: HostStats,
    pub containers: Vec<ContainerStats>,
}

/// Samples every `interval` forever, publishing each sample on `out` and the host's in
/// `metrics`.
pub async fn run<R: Runtime>(
    runtime: Arc<R>,
    mut sampler: HostSampler,
    interval: Duration,
    out: watch::Sender<Option<Sample>>,
    metrics: Metrics,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let host = sampler.sample();
        metrics.host(&host);
        let containers = containers(runtime.as_ref()).await;
        out.send_replace(Some(Sample { host, containers }));
    }
}

/// One sample of every running container of this host; containers that fail to answer are
/// left out of this sample (the engine's outage is the reconciler's to report).
pub async fn containers<R: Runtime>(runtime: &R) -> Vec<ContainerStats> {
    let Ok(list) = runtime.list().await else {
        return Vec::new();
    };
    futures_util::stream::iter(
        list.into_iter()
            .filter(|c| c.status == ContainerStatus::Running),
    )
    .map(|container| async move {
        match runtime.stats(&container.id).await {
            Ok(mut stats) => {
                stats.workspace = Some(container.workspace);
                Some(stats)
            }
            Err(error) => {
                tracing::debug!(container = %container.id, "no stats: {error}");
                None
            }
        }
    })
    .buffer_unordered(STATS_CONCURRENCY)
    .filter_map(std::future::ready)
    .collect()
    .await
}
