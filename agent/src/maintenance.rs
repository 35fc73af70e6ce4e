//! Host maintenance on this agent's engine (`nexus admin maintenance run`, and the leader's
//! weekly schedule): dangling images and unused volumes removed, as [`crate::prune`] decides,
//! with what each gave back. An engine's refusal of one removal is reported and the run goes on.

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::maintenance::{
    MaintenanceReport, MaintenanceRequest, Reclaimed, ReclaimedKind,
};
use nexus_protocol::message::DesiredState;
use nexus_telemetry::maintenance::MaintenanceMetrics;

use crate::prune;
use crate::runtime::Runtime;

/// Runs `request` on `runtime` for `source` (`agent-HOST`). `desired` is the host's desired
/// state: without one, no image is pruned (a workspace's spec might name it).
pub async fn run<R: Runtime>(
    runtime: &R,
    source: String,
    desired: Option<&DesiredState>,
    request: MaintenanceRequest,
) -> MaintenanceReport {
    let mut report = MaintenanceReport {
        source,
        dry_run: request.dry_run,
        ..MaintenanceReport::default()
    };
    if request.prune_images {
        match desired {
            None => report.errors.push(
                "no desired state from the coordinators yet: images kept (a spec might name one)"
                    .into(),
            ),
            Some(desired) => {
                let named: Vec<String> = desired
                    .assignments
                    .iter()
                    .map(|a| a.spec.image.clone())
                    .collect();
                match runtime.images().await {
                    Err(error) => report.errors.push(error.to_string()),
                    Ok(images) => {
                        let remove = prune::images(&images, &named);
                        report.kept += count(images.len() - remove.len());
                        let remove = remove.iter().map(|i| (i.id.clone(), i.bytes)).collect();
                        remove_each(&mut report, ReclaimedKind::Image, remove, |id| async move {
                            runtime.remove_image(&id).await
                        })
                        .await;
                    }
                }
            }
        }
    }
    if request.prune_volumes {
        match runtime.volumes().await {
            Err(error) => report.errors.push(error.to_string()),
            Ok(volumes) => {
                let remove = prune::volumes(&volumes);
                report.kept += count(volumes.len() - remove.len());
                let remove = remove.iter().map(|v| (v.name.clone(), v.bytes)).collect();
                remove_each(
                    &mut report,
                    ReclaimedKind::Volume,
                    remove,
                    |name| async move { runtime.remove_volume(&name).await },
                )
                .await;
            }
        }
    }
    report.at = clock::now();
    report
}

/// Removes each of `items` (a name and its bytes) with `remove`, or only lists them in a dry
/// run: what went is added to `report` as `kind`, and an engine's refusal to its errors.
async fn remove_each<F, Removed, E>(
    report: &mut MaintenanceReport,
    kind: ReclaimedKind,
    items: Vec<(String, u64)>,
    remove: F,
) where
    F: Fn(String) -> Removed,
    Removed: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    for (name, bytes) in items {
        let removed = if report.dry_run {
            Ok(())
        } else {
            remove(name.clone()).await
        };
        match removed {
            Ok(()) => report.removed.push(Reclaimed { kind, name, bytes }),
            Err(error) => report.errors.push(error.to_string()),
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Logs the run with what it gave back, and counts it in `metrics` (a dry run is logged only).
/// Then cuts the answer to what one carries ([`MaintenanceReport::bounded`]).
pub fn record(report: &mut MaintenanceReport, metrics: Option<&MaintenanceMetrics>, by: &str) {
    let bytes = report.bytes();
    let images = report
        .removed
        .iter()
        .filter(|r| r.kind == ReclaimedKind::Image)
        .count();
    let volumes = report.removed.len() - images;
    if report.dry_run {
        tracing::info!(
            images,
            volumes,
            bytes,
            kept = report.kept,
            by,
            "maintenance dry run: would remove"
        );
    } else if report.failed() {
        tracing::warn!(images, volumes, bytes, kept = report.kept, errors = ?report.errors, by, "maintenance run with errors");
    } else {
        tracing::info!(
            images,
            volumes,
            bytes,
            kept = report.kept,
            by,
            "maintenance run"
        );
    }
    if !report.dry_run
        && let Some(metrics) = metrics
    {
        #[allow(clippy::cast_precision_loss)]
        metrics.record(!report.failed(), bytes, seconds(report.at));
    }
    *report = std::mem::take(report).bounded();
}

#[allow(clippy::cast_precision_loss)]
fn seconds(at: Timestamp) -> f64 {
    at.as_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use nexus_protocol::message::Assignment;
    use nexus_protocol::model::DesiredRun;

    use super::*;

    /// An anonymous volume's name (the engine's own).
    const FREE: &str = "f00df00df00df00df00df00df00df00df00df00df00df00df00df00df00df00d";
    use crate::runtime::hollow::{HollowConfig, HollowRuntime};
    use crate::runtime::{ImageInfo, VolumeInfo};

    fn image(id: &str, tags: &[&str]) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            tags: tags.iter().map(ToString::to_string).collect(),
            digests: Vec::new(),
            bytes: 1000,
            containers: Some(0),
        }
    }

    fn desired(images: &[&str]) -> DesiredState {
        let assignments = images
            .iter()
            .enumerate()
            .map(|(n, image)| {
                let mut spec = nexus_fixtures::spec(&format!("ws{n}"));
                spec.image = (*image).to_string();
                Assignment {
                    spec,
                    owner: "alice".parse().unwrap_or_else(|e| panic!("{e:?}")),
                    generation: 1,
                    run: DesiredRun::Running,
                    ports: Vec::new(),
                }
            })
            .collect();
        DesiredState {
            version: 1,
            assignments,
        }
    }

    fn hollow() -> HollowRuntime {
        let runtime = HollowRuntime::new(
            "h1".parse().unwrap_or_else(|e| panic!("{e:?}")),
            HollowConfig::default(),
        );
        runtime.set_images(
            vec![
                image("sha256:dangling", &[]),
                image("sha256:named", &[]),
                image("sha256:tagged", &["dev:latest"]),
            ],
            vec![
                VolumeInfo {
                    name: FREE.into(),
                    bytes: 7,
                    containers: Some(0),
                },
                VolumeInfo {
                    name: "mounted".into(),
                    bytes: 7,
                    containers: Some(1),
                },
            ],
        );
        runtime
    }

    fn names(report: &MaintenanceReport) -> Vec<&str> {
        report.removed.iter().map(|r| r.name.as_str()).collect()
    }

    #[tokio::test]
    async fn a_run_removes_what_no_one_uses_and_a_dry_run_nothing() {
        let runtime = hollow();
        let desired = desired(&["sha256:named", "dev:latest"]);
        let dry = MaintenanceRequest {
            dry_run: true,
            ..MaintenanceRequest::ALL
        };
        let report = run(&runtime, "agent-h1".into(), Some(&desired), dry).await;
        assert_eq!(names(&report), ["sha256:dangling", FREE]);
        assert_eq!(report.bytes(), 1007);
        assert_eq!(report.kept, 3);
        assert_eq!(runtime.images().await.map(|i| i.len()).ok(), Some(3));

        let report = run(
            &runtime,
            "agent-h1".into(),
            Some(&desired),
            MaintenanceRequest::ALL,
        )
        .await;
        assert_eq!(names(&report), ["sha256:dangling", FREE]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let left: Vec<String> = runtime
            .images()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(left, ["sha256:named", "sha256:tagged"]);
        let volumes: Vec<String> = runtime
            .volumes()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(volumes, ["mounted"]);
    }

    #[tokio::test]
    async fn without_a_desired_state_no_image_goes() {
        let runtime = hollow();
        let only_images = MaintenanceRequest {
            prune_images: true,
            ..MaintenanceRequest::default()
        };
        let report = run(&runtime, "agent-h1".into(), None, only_images).await;
        assert!(report.removed.is_empty());
        assert_eq!(report.errors.len(), 1);
    }
}
