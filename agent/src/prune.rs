//! Pure: what host maintenance may remove. An image goes only when it is dangling (no tag), no
//! container uses it (any host's, or none's: the engine's own count), and no workspace's spec on
//! this host names it (by id, short id, digest or tag); a volume goes only when no container
//! mounts it. When the engine does not say who uses a thing, it is kept.

use crate::runtime::{ImageInfo, VolumeInfo};

/// Whether the image reference `named` (a spec's `image`) names `image`.
pub fn names(named: &str, image: &ImageInfo) -> bool {
    let named = named.trim();
    if named.is_empty() {
        return false;
    }
    let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
    let bare = named.strip_prefix("sha256:").unwrap_or(named);
    let short_id =
        bare.len() >= 12 && bare.bytes().all(|b| b.is_ascii_hexdigit()) && hex.starts_with(bare);
    let tagged =
        |tag: &String| tag == named || (!named.contains(':') && *tag == format!("{named}:latest"));
    image.id == named
        || short_id
        || image.digests.iter().any(|d| d == named)
        || image.tags.iter().any(tagged)
}

/// The images to remove, of `images`, given the images the host's workspaces' specs name.
pub fn images<'a>(images: &'a [ImageInfo], named: &[String]) -> Vec<&'a ImageInfo> {
    images
        .iter()
        .filter(|image| image.tags.is_empty())
        .filter(|image| image.containers == Some(0))
        .filter(|image| !named.iter().any(|n| names(n, image)))
        .collect()
}

/// The volumes to remove, of `volumes`.
pub fn volumes(volumes: &[VolumeInfo]) -> Vec<&VolumeInfo> {
    volumes
        .iter()
        .filter(|volume| volume.containers == Some(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], containers: Option<u64>) -> ImageInfo {
        ImageInfo {
            id: format!("sha256:{id}"),
            tags: tags.iter().map(ToString::to_string).collect(),
            digests: vec![format!("repo@sha256:{id}")],
            bytes: 100,
            containers,
        }
    }

    #[test]
    fn only_dangling_unused_unnamed_images_go() {
        let long = "0123456789abcdef0123";
        let cases: &[(&str, ImageInfo, &[&str], bool)] = &[
            ("dangling, unused", image("aa11", &[], Some(0)), &[], true),
            (
                "tagged",
                image("aa11", &["dev:latest"], Some(0)),
                &[],
                false,
            ),
            (
                "a container uses it",
                image("aa11", &[], Some(1)),
                &[],
                false,
            ),
            (
                "the engine did not say",
                image("aa11", &[], None),
                &[],
                false,
            ),
            (
                "a spec names it by id",
                image("aa11", &[], Some(0)),
                &["sha256:aa11"],
                false,
            ),
            (
                "a spec names it by short id",
                image(long, &[], Some(0)),
                &["0123456789ab"],
                false,
            ),
            (
                "too short an id is no name",
                image(long, &[], Some(0)),
                &["0123"],
                true,
            ),
            (
                "a spec names it by digest",
                image("aa11", &[], Some(0)),
                &["repo@sha256:aa11"],
                false,
            ),
            (
                "a spec names another image",
                image("aa11", &[], Some(0)),
                &["dev:latest", "sha256:bb22"],
                true,
            ),
        ];
        for (name, candidate, named, removed) in cases {
            let named: Vec<String> = named.iter().map(ToString::to_string).collect();
            let list = [candidate.clone()];
            assert_eq!(images(&list, &named).len() == 1, *removed, "{name}");
        }
    }

    #[test]
    fn a_tag_without_one_means_latest() {
        let tagged = image("aa11", &["dev:latest"], Some(0));
        assert!(names("dev", &tagged));
        assert!(names("dev:latest", &tagged));
        assert!(!names("dev:1", &tagged));
        assert!(!names("", &tagged));
    }

    #[test]
    fn only_volumes_no_container_mounts_go() {
        let volume = |name: &str, containers| VolumeInfo {
            name: name.into(),
            bytes: 1,
            containers,
        };
        let list = [
            volume("free", Some(0)),
            volume("mounted", Some(2)),
            volume("unknown", None),
        ];
        let names: Vec<&str> = volumes(&list).iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["free"]);
    }
}
