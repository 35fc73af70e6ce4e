//! Images and volumes for host maintenance: what the engine holds, who uses each, and removal
//! without force (the engine refuses what a container uses, whatever this agent believed).

use std::collections::{HashMap, HashSet};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};

use super::convert::{classify, status_of};
use crate::runtime::{ImageInfo, RuntimeError, VolumeInfo};

/// Every container of the engine (any host's, or none's): the image ids and volume names in use.
async fn in_use(
    docker: &Docker,
) -> Result<(HashMap<String, u64>, HashMap<String, u64>), RuntimeError> {
    let options = ListContainersOptionsBuilder::new().all(true).build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| classify(&e, "cannot list the engine's containers"))?;
    let mut images: HashMap<String, u64> = HashMap::new();
    let mut volumes: HashMap<String, u64> = HashMap::new();
    for container in containers {
        if let Some(id) = container.image_id {
            *images.entry(id).or_default() += 1;
        }
        for mount in container.mounts.unwrap_or_default() {
            if let Some(name) = mount.name {
                *volumes.entry(name).or_default() += 1;
            }
        }
    }
    Ok((images, volumes))
}

fn bytes(size: i64) -> u64 {
    u64::try_from(size).unwrap_or(0)
}

pub(super) async fn images(docker: &Docker) -> Result<Vec<ImageInfo>, RuntimeError> {
    let listed = docker
        .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
        .await
        .map_err(|e| classify(&e, "cannot list the engine's images"))?;
    // With the intermediate images of builds: the parents' sizes, and which images are a
    // parent (the engine refuses to remove those).
    let every = docker
        .list_images(Some(ListImagesOptionsBuilder::new().all(true).build()))
        .await
        .map_err(|e| classify(&e, "cannot list the engine's images"))?;
    let (used, _) = in_use(docker).await?;
    let sizes: HashMap<&str, i64> = every.iter().map(|i| (i.id.as_str(), i.size)).collect();
    let parents: HashSet<&str> = every.iter().map(|i| i.parent_id.as_str()).collect();
    Ok(listed
        .iter()
        .map(|image| {
            // What removing it gives back: its size less its parent's (the layers it shares),
            // when the engine names the parent (the classic builder does); else its whole size.
            let shared = sizes.get(image.parent_id.as_str()).copied().unwrap_or(0);
            let containers = used.get(&image.id).copied().unwrap_or(0)
                + u64::from(parents.contains(image.id.as_str()));
            ImageInfo {
                id: image.id.clone(),
                tags: image
                    .repo_tags
                    .iter()
                    .filter(|t| t.as_str() != "<none>:<none>")
                    .cloned()
                    .collect(),
                digests: image
                    .repo_digests
                    .iter()
                    .filter(|d| d.as_str() != "<none>@<none>")
                    .cloned()
                    .collect(),
                bytes: bytes(image.size.saturating_sub(shared)),
                containers: Some(containers),
            }
        })
        .collect())
}

pub(super) async fn remove_image(docker: &Docker, id: &str) -> Result<(), RuntimeError> {
    let options = RemoveImageOptionsBuilder::new()
        .force(false)
        .noprune(false)
        .build();
    match docker.remove_image(id, Some(options), None).await {
        Ok(_) => Ok(()),
        Err(error) if status_of(&error) == Some(404) => Ok(()),
        Err(error) => Err(classify(&error, &format!("cannot remove image {id}"))),
    }
}

pub(super) async fn volumes(docker: &Docker) -> Result<Vec<VolumeInfo>, RuntimeError> {
    let listed = docker
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .map_err(|e| classify(&e, "cannot list the engine's volumes"))?;
    let (_, used) = in_use(docker).await?;
    Ok(listed
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|volume| VolumeInfo {
            bytes: volume.usage_data.as_ref().map_or(0, |u| bytes(u.size)),
            containers: Some(used.get(&volume.name).copied().unwrap_or(0)),
            name: volume.name,
        })
        .collect())
}

pub(super) async fn remove_volume(docker: &Docker, name: &str) -> Result<(), RuntimeError> {
    let options = RemoveVolumeOptionsBuilder::new().force(false).build();
    match docker.remove_volume(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) if status_of(&error) == Some(404) => Ok(()),
        Err(error) => Err(classify(&error, &format!("cannot remove volume {name}"))),
    }
}
