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

/// Samples every `interval` (as it holds it: a reload may change it) forever, publishing each sample on `out` and the host's in
/// `metrics`.
pub async fn run<R: Runtime>(
    runtime: Arc<R>,
    mut sampler: HostSampler,
    mut interval: watch::Receiver<Duration>,
    out: watch::Sender<Option<Sample>>,
    metrics: Metrics,
) {
    let mut ticker = crate::reload::pace(*interval.borrow_and_update());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Ok(()) = interval.changed() => {
                // A reload changed the pace: a sample now, then at the new interval.
                ticker = crate::reload::pace(*interval.borrow_and_update());
                continue;
            }
        }
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
